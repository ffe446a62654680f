"""kvmmu: the Linux KVM x86 shadow MMU, in Python, for teaching.

Each module mirrors one kernel concept; see README.md for the map from modules to
``arch/x86/kvm/mmu/`` files.
"""

__version__ = "0.1.0"
