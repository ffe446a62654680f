"""KVM's MMU counters under the kernel's names (``kvm_vm_stats_desc``, ``kvm_vcpu_stats_desc``).

From today's ``kvm_vm_stats_desc`` (``x86.c``): ``mmu_cache_miss`` shadow pages created because
none matched, ``mmu_pte_write`` emulated writes to shadowed guest tables, ``mmu_pde_zapped``
non-leaf sptes zapped by such a write, ``mmu_flooded`` pages zapped for write flooding or a
misaligned write, ``mmu_shadow_zapped`` pages zapped, ``mmu_recycled`` pages reclaimed to stay
under the page budget, ``mmu_unsync`` pages unsync now (an instant counter), and
``max_mmu_rmap_size`` the longest rmap seen (a peak). From ``kvm_vcpu_stats_desc``, summed over
the VM's vCPUs: ``pf_fixed`` faults fixed by installing an spte, ``pf_guest`` faults reflected
into the guest, ``pf_emulate`` faults that needed instruction emulation,
``pf_mmio_spte_created`` MMIO sptes made, ``mmio_exits``, ``invlpg`` INVLPGs and ``tlb_flush``
TLB flushes on the guest's behalf (``kvm_vcpu_flush_tlb_guest``). ``pf_taken`` counts every
fault that reaches ``kvm_mmu_do_page_fault`` (not the MMIO-spte fast path,
``handle_mmio_page_fault``), and ``pf_spurious`` those that found the spte already right
(``RET_PF_SPURIOUS``): ``pf_fixed`` counts only faults that changed an spte. The VM-wide
``pages_4k``, ``pages_2m`` and ``pages_1g`` are gauges: present leaf sptes per level, kept by
``kvm_update_page_stats`` wherever a leaf spte is installed or dropped.

``mmu_pte_updated`` is a 2010-era counter: sptes refreshed in place by an emulated PTE write
(``mmu_pte_write_new_pte``), which kvmmu does only with ``Vm(update_pte=True)``; today's kernel
zaps the spte and has neither the refresh nor the counter. ``shadow_pages`` and the counters
after it are kvmmu's own (``shadow_pages`` is ``kvm->arch.n_used_mmu_pages``, which KVM does not
export as a stat). Not here because kvmmu does
not model what they count: ``pf_fast`` (``fast_page_fault``), ``nx_lpage_splits`` (the NX huge
page mitigation) and ``max_mmu_page_hash_collisions`` (kvmmu's page hash is keyed by the gfn
itself, KVM's by ``hash_64`` of it into 4096 buckets).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd


@dataclass(slots=True)
class MmuStats:
    """Counters of one VM's MMU (``struct kvm_vm_stat`` plus the vCPU fault counters)."""

    pf_taken: int = 0
    pf_fixed: int = 0
    pf_spurious: int = 0
    pf_guest: int = 0
    pf_emulate: int = 0
    pf_mmio_spte_created: int = 0
    mmu_cache_miss: int = 0
    mmu_pte_write: int = 0
    mmu_pte_updated: int = 0  # 2010-era
    mmu_pde_zapped: int = 0
    mmu_flooded: int = 0
    mmu_shadow_zapped: int = 0
    mmu_recycled: int = 0
    mmu_unsync: int = 0
    max_mmu_rmap_size: int = 0
    mmio_exits: int = 0
    invlpg: int = 0
    tlb_flush: int = 0
    pages_4k: int = 0
    pages_2m: int = 0
    pages_1g: int = 0
    # kvmmu's own counters
    shadow_pages: int = 0
    tlb_hits: int = 0
    tlb_misses: int = 0
    sync_pages: int = 0
    root_cache_hits: int = 0
    root_cache_misses: int = 0

    def as_series(self) -> pd.Series:
        """The counters as a pandas Series indexed by name.

        The values KVM's debugfs stats files show.
        """
        return pd.Series(asdict(self), dtype="int64", name="count")

    def reset(self) -> None:
        """Zero every event counter; the gauges of state (:data:`GAUGES`) stay.

        ``max_mmu_rmap_size`` is a peak: zeroed, as writing 0 to its stats file does.
        """
        for name in asdict(self):
            if name not in GAUGES:
                setattr(self, name, 0)


GAUGES = ("shadow_pages", "mmu_unsync", "pages_4k", "pages_2m", "pages_1g")

LEAF_PAGES = {1: "pages_4k", 2: "pages_2m", 3: "pages_1g"}
"""The gauge of present leaf sptes per shadow level (``kvm_update_page_stats``)."""
