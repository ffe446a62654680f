"""The machine's own KVM beside kvmmu's model: a small VMM over ``/dev/kvm``, one guest program
run on both machines, and which MMU the host uses.

Modules: :mod:`kvmmu.host.kvm` (the VMM: ioctls of ``include/uapi/linux/kvm.h``),
:mod:`kvmmu.host.asm` (labels over iced-x86), :mod:`kvmmu.host.kernel` (the tiny guest
kernel), :mod:`kvmmu.host.program` (programs, runs, comparisons, captures) and
:mod:`kvmmu.host.detect` (shadow paging, TDP legacy MMU or TDP MMU). Needs the ``[host]``
extra (``iced-x86``) to assemble guest code; detection works without it.
"""
