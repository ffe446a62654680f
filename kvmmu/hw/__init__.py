"""The hardware layer: what an x86 CPU and a guest OS do, with no hypervisor in sight.

x86 bits and paging modes (``x86``), guest-physical memory with memslots and host frames
(``memory``), the architectural page walker (``walk``, SDM vol. 3 ch. 4), the guest OS's
page-table builder (``guest``) and real Linux guests' page tables (``capture``). Nothing here
imports the KVM, host or teaching layers.
"""
