"""KVM-like MMU counters, as KVM exposes them in debugfs (``kvm_vm_stat``, ``kvm_vcpu_stat``).

Names are the kernel's: ``pf_fixed`` counts faults the MMU fixed by installing an spte,
``pf_guest`` faults reflected into the guest, ``pf_emulate`` faults that needed instruction
emulation, ``mmu_cache_miss`` shadow pages created because none matched, ``mmu_pte_write``
emulated writes to shadowed guest tables, ``mmu_pte_updated`` sptes refreshed in place by such a
write, ``mmu_pde_zapped`` non-leaf sptes zapped by one, ``mmu_flooded`` pages zapped for write
flooding or misaligned writes, ``mmu_shadow_zapped`` pages zapped, ``mmu_recycled`` pages
reclaimed to stay under the page budget, ``mmu_unsync`` pages unsync now (a gauge, as in KVM),
``pages`` shadow pages in use. The rest are kvmmu's own and say so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd


@dataclass(slots=True)
class MmuStats:
    """Counters of one VM's MMU (``struct kvm_vm_stat`` plus the vCPU fault counters)."""

    pf_fixed: int = 0
    pf_guest: int = 0
    pf_emulate: int = 0
    pf_mmio_spte_created: int = 0
    mmu_cache_miss: int = 0
    mmu_pte_write: int = 0
    mmu_pte_updated: int = 0
    mmu_pde_zapped: int = 0
    mmu_flooded: int = 0
    mmu_shadow_zapped: int = 0
    mmu_recycled: int = 0
    mmu_unsync: int = 0
    pages: int = 0
    # kvmmu's own counters
    tlb_hits: int = 0
    tlb_misses: int = 0
    mmio_exits: int = 0
    sync_pages: int = 0
    root_cache_hits: int = 0
    root_cache_misses: int = 0

    def as_series(self) -> pd.Series:
        """The counters as a pandas Series indexed by name.

        The values KVM's debugfs stats files show.
        """
        return pd.Series(asdict(self), dtype="int64", name="count")

    def reset(self) -> None:
        """Zero every event counter; ``pages`` and ``mmu_unsync`` are gauges of state and stay."""
        for name in asdict(self):
            if name not in GAUGES:
                setattr(self, name, 0)


GAUGES = ("pages", "mmu_unsync")
