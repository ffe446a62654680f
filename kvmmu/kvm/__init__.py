"""The KVM layer: the x86 shadow MMU of ``arch/x86/kvm/mmu/``, one module per kernel concept.

Roles (``role``), shadow pages (``page``), sptes (``spte``), reverse maps (``rmap``), the fault
path, fetch, write tracking, zapping and reclaim (``mmu``), unsync pages and ``sync_page``
(``sync``), the vCPU with its TLB and root cache (``vcpu``), TDP (``tdp``), counters (``stats``),
trace events (``trace``), invariants (``audit``) and memory by kernel era (``accounting``). It
imports the hardware layer and never the host or teaching layers.
"""
