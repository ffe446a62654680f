"""Specification of ``kvmmu.kvm.sync`` and the CR3 paths around it: unsync pages, ``sync_page``,
invlpg, root sync, the previous-roots cache, fast zap, and dirty logging.

Rules from ``arch/x86/kvm/mmu/mmu.c`` (``mmu_try_to_unsync_pages``, ``kvm_unsync_page``,
``mmu_sync_children``, ``kvm_mmu_sync_roots``, ``kvm_mmu_new_pgd`` with
``KVM_MMU_NUM_PREV_ROOTS``, ``kvm_mmu_zap_all_fast``), ``paging_tmpl.h`` (``FNAME(sync_spte)``)
and ``virt/kvm/kvm_main.c`` (``KVM_GET_DIRTY_LOG``). The architectural contract behind unsync:
a guest that changes a PTE may keep seeing the old translation until it flushes the TLB entry
(INVLPG) or loads CR3 (SDM vol. 3 4.10.4).
"""

import pytest

from kvmmu.errors import MemslotError
from kvmmu.hw.guest import GuestPageTables
from kvmmu.hw.memory import MemslotFlag
from kvmmu.hw.x86 import Access, PagingMode, Pte
from kvmmu.kvm import spte as S
from kvmmu.kvm.page import MmuPage
from kvmmu.kvm.sync import sync_page
from kvmmu.kvm.vcpu import KVM_MMU_NUM_PREV_ROOTS, Vcpu, Vm

MiB = 1 << 20
ADDR = ((1 << 52) - 1) & ~0xFFF
PTE = int(Pte.PRESENT | Pte.WRITABLE | Pte.ACCESSED | Pte.DIRTY)
WINDOW = 0x40000000  # where the guest maps its own leaf page table


def _unsync_guest(allow_unsync: bool = True) -> tuple[Vm, GuestPageTables, Vcpu, MmuPage]:
    """Pages 0x400000..0x403fff -> 0x100000..; the leaf table mapped writable at WINDOW."""
    vm = Vm(64 * MiB, allow_unsync=allow_unsync)
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4)
    pt.map(0x400000, 0x100000, length=0x4000, writable=True, dirty=True, accessed=True)
    leaf_table = pt.entry(0x400000, 2) & ADDR
    pt.map(WINDOW, leaf_table, writable=True, dirty=True, accessed=True)
    vcpu = vm.create_vcpu(pt.cpu())
    for gva in range(0x400000, 0x404000, 0x1000):
        assert vcpu.access(gva) == 0x100000 + gva - 0x400000
    (sp,) = vm.mmu.page_hash[leaf_table >> 12]
    return vm, pt, vcpu, sp


def test_guest_write_to_a_leaf_table_makes_it_unsync() -> None:
    """``mmu_try_to_unsync_pages``: with unsync allowed, the guest's first write to a shadowed
    leaf table maps the table writable and marks its shadow page unsync (``mmu_unsync``);
    the parents record it in ``unsync_child_bitmap``; later writes do not exit."""
    vm, _, vcpu, sp = _unsync_guest()
    assert not sp.unsync
    assert vcpu.write(WINDOW + 8, 0x200000 | PTE) is None
    assert sp.unsync and vm.mmu.stats.mmu_unsync == 1
    parent, index = sp.parent_ptes[0]
    assert index in parent.unsync_child_bitmap and parent.unsync_children == 1
    emulated = vm.mmu.stats.pf_emulate
    assert vcpu.write(WINDOW + 16, 0x300000 | PTE) is None
    assert vm.mmu.stats.pf_emulate == emulated and vm.mmu.stats.mmu_pte_write == 0


def test_without_unsync_the_leaf_table_stays_write_protected() -> None:
    """``allow_unsync=False``: every write to the table is emulated and tracked."""
    vm, _, vcpu, sp = _unsync_guest(allow_unsync=False)
    vcpu.write(WINDOW + 8, 0x200000 | PTE)
    vcpu.write(WINDOW + 16, 0x300000 | PTE)
    assert not sp.unsync and vm.mmu.stats.mmu_unsync == 0
    assert vm.mmu.stats.mmu_pte_write == 2


def test_old_translation_stays_until_invlpg() -> None:
    """The architectural contract unsync relies on (SDM 4.10.4.3): after the guest edits a
    PTE, the old translation may still be used, even after a TLB miss, because the unsync
    spte still holds it; INVLPG syncs that spte and the new translation appears."""
    _, _, vcpu, sp = _unsync_guest()
    vcpu.write(WINDOW + 8, 0x200000 | PTE)  # guest PTE 1: 0x101000 -> 0x200000
    assert vcpu.access(0x401000) == 0x101000  # a TLB hit
    vcpu.tlb.flush()
    assert vcpu.access(0x401000) == 0x101000  # a TLB miss, still the stale spte
    assert sp.get_gfn(1) == 0x101
    vcpu.invlpg(0x401000)
    assert vcpu.access(0x401000) == 0x200000
    assert sp.get_gfn(1) == 0x200
    # invlpg of one address syncs only that spte
    vcpu.write(WINDOW + 16, 0x300000 | PTE)
    vcpu.invlpg(0x401000)
    vcpu.tlb.flush()
    assert vcpu.access(0x402000) == 0x102000


def test_sync_page_drops_an_spte_whose_gpte_names_another_gfn() -> None:
    """``FNAME(sync_spte)``: the gfn recorded for the spte (``get_gfn``) is compared with the
    guest PTE; if the guest now names another frame the spte is dropped, not redirected, and
    the next access faults it in afresh."""
    vm, _, vcpu, sp = _unsync_guest()
    vcpu.write(WINDOW + 16, 0x300000 | PTE)
    assert sp.get_gfn(2) == 0x102 and S.is_shadow_present(int(sp.spt[2]))
    rmapped = len(vm.mmu.rmap)
    assert sync_page(vcpu, sp)
    assert int(sp.spt[2]) == 0
    assert len(vm.mmu.rmap) == rmapped - 1
    assert S.is_shadow_present(int(sp.spt[1]))  # unchanged entries stay
    vcpu.tlb.flush()
    assert vcpu.access(0x402000) == 0x300000
    assert sp.get_gfn(2) == 0x300


def test_sync_page_applies_a_rights_change_in_place() -> None:
    """A guest PTE that names the same frame with fewer rights is updated, not dropped."""
    vm, _, vcpu, sp = _unsync_guest()
    vcpu.write(WINDOW + 8, vm.memory.read(sp.gfn << 12 | 8) & ~int(Pte.WRITABLE))
    vcpu.access(0x401000, Access.WRITE)  # stale: still writable before the sync
    assert sync_page(vcpu, sp)
    spte = int(sp.spt[1])
    assert S.is_shadow_present(spte) and not S.is_writable(spte)
    assert sp.get_gfn(1) == 0x101


def test_cr3_load_syncs_unsync_pages_reachable_from_the_root() -> None:
    """``kvm_mmu_sync_roots`` on a CR3 load: every unsync page below the root is synced and
    becomes write-protected again; the bitmaps are cleared."""
    vm, _, vcpu, sp = _unsync_guest()
    vcpu.write(WINDOW + 24, 0x380000 | PTE)
    assert sp.unsync
    vcpu.tlb.flush()
    assert vcpu.access(0x403000) == 0x103000  # stale until the guest flushes
    vcpu.set_cr3(vcpu.cpu.cr3)
    assert not sp.unsync and vm.mmu.stats.mmu_unsync == 0
    assert vcpu.access(0x403000) == 0x380000
    assert vcpu.root is not None and not vcpu.root.unsync_child_bitmap
    parent, index = sp.parent_ptes[0]
    assert index not in parent.unsync_child_bitmap
    # synced means write-protected again: the next guest write exits and unsyncs again
    assert vm.mmu.stats.sync_pages >= 1
    vcpu.write(WINDOW + 32, 0)
    assert sp.unsync


# --------------------------------------------------------------------------------------------
# Root cache and fast zap
# --------------------------------------------------------------------------------------------


def _address_spaces(vm: Vm, count: int) -> list[GuestPageTables]:
    spaces = []
    for k in range(count):
        pt = GuestPageTables(
            vm.memory, PagingMode.LEVEL4, table_gfns=range(0x3000 + 16 * k, 0x3010 + 16 * k)
        )
        pt.map(0x400000, 0x100000 + (k << 12))
        spaces.append(pt)
    return spaces


def test_switching_among_four_cr3s_hits_the_root_cache() -> None:
    """``kvm_mmu_new_pgd``: the current root and ``KVM_MMU_NUM_PREV_ROOTS`` (3) cached ones;
    switching back to a cached CR3 reuses its root (``root_cache_hits``), builds nothing."""
    assert KVM_MMU_NUM_PREV_ROOTS == 3
    vm = Vm(64 * MiB)
    spaces = _address_spaces(vm, 4)
    vcpu = vm.create_vcpu(spaces[0].cpu())
    roots = {}
    for k, pt in enumerate(spaces):
        vcpu.set_cr3(pt.cr3)
        assert vcpu.access(0x400000) == 0x100000 + (k << 12)
        roots[pt.cr3] = vcpu.root
    stats = vm.mmu.stats
    built, hits = stats.mmu_cache_miss, stats.root_cache_hits
    for _ in range(3):
        for k, pt in enumerate(spaces):
            vcpu.set_cr3(pt.cr3)
            assert vcpu.root is roots[pt.cr3]
            assert vcpu.access(0x400000) == 0x100000 + (k << 12)
    assert stats.root_cache_hits - hits == 12
    assert stats.mmu_cache_miss == built
    assert len(vcpu.prev_roots) == 3


def test_a_fifth_cr3_evicts_the_oldest_cached_root() -> None:
    """With four roots in use, a fifth CR3 is a miss and the least recently used root leaves
    the cache (its root reference is dropped, the page itself stays in the hash)."""
    vm = Vm(64 * MiB)
    spaces = _address_spaces(vm, 5)
    vcpu = vm.create_vcpu(spaces[0].cpu())
    for pt in spaces[:4]:
        vcpu.set_cr3(pt.cr3)
        vcpu.access(0x400000)
    oldest = next(sp for sp in vcpu.prev_roots if sp.gfn == spaces[0].cr3 >> 12)
    misses = vm.mmu.stats.root_cache_misses
    vcpu.set_cr3(spaces[4].cr3)
    assert vcpu.access(0x400000) == 0x104000
    assert vm.mmu.stats.root_cache_misses == misses + 1
    assert oldest not in vcpu.prev_roots and oldest.root_count == 0
    assert [sp.gfn for sp in vcpu.prev_roots] == [pt.cr3 >> 12 for pt in spaces[3:0:-1]]
    hits = vm.mmu.stats.root_cache_hits
    vcpu.set_cr3(spaces[0].cr3)
    assert vm.mmu.stats.root_cache_hits == hits
    assert vm.mmu.stats.root_cache_misses == misses + 2


def test_fast_zap_makes_roots_obsolete_and_vcpus_rebuild() -> None:
    """``kvm_mmu_zap_all_fast``: the generation moves, every page of the old one is obsolete
    and zapped; a root still in use stays, invalid, until its vCPU loads a new root at the
    next access and lets the old one go."""
    vm, _, vcpu, _ = _unsync_guest()
    old_root = vcpu.root
    assert old_root is not None
    old_pages = [sp for sp in vm.mmu.active if sp is not old_root]
    vm.mmu.zap_all_fast()
    assert vm.mmu.is_obsolete(old_root) and old_root.role.invalid
    assert old_root.root_count == 1 and not old_root.spt_array.any()
    assert all(sp.role.invalid for sp in old_pages)
    assert not vm.mmu.active
    assert vcpu.access(0x401000) == 0x101000
    assert vcpu.root is not old_root and vcpu.root is not None
    assert not vm.mmu.is_obsolete(vcpu.root)
    assert old_root.root_count == 0  # released, and freed:
    assert vm.mmu.by_pfn.get(old_root.pfn) is not old_root
    assert all(old_root not in bucket for bucket in vm.mmu.page_hash.values())
    assert vm.mmu.n_used_mmu_pages == len(vm.mmu.active) == 4


# --------------------------------------------------------------------------------------------
# Dirty logging
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tdp", [False, True])
def test_dirty_log_reports_exactly_the_written_pages(tdp: bool) -> None:
    """``KVM_GET_DIRTY_LOG``: after logging starts, the bitmap holds the gfns written since the
    last call; the call clears it and write-protects those pages again, so a later write to
    the same page is logged again. Reads are never logged."""
    vm = Vm(64 * MiB, tdp=tdp)
    slot = vm.add_memslot(0x10000, 16)
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4)
    pt.map(0x400000, 0x10000000, length=16 << 12, writable=True)
    vcpu = vm.create_vcpu(pt.cpu())
    for i in range(16):
        vcpu.write(0x400000 + (i << 12), i)  # every page writable in the MMU first
    vm.set_memslot_flags(slot.slot_id, MemslotFlag.LOG_DIRTY_PAGES)
    assert vm.get_dirty_log(slot.slot_id) == []
    for i in (1, 3, 5):
        vcpu.write(0x400000 + (i << 12) + 8, 0xD1)
    for i in range(16):
        vcpu.read(0x400000 + (i << 12))
    assert vm.get_dirty_log(slot.slot_id) == [0x10001, 0x10003, 0x10005]
    assert vm.get_dirty_log(slot.slot_id) == []
    vcpu.write(0x400000 + (3 << 12), 1)
    vcpu.write(0x400000 + (3 << 12) + 8, 2)
    assert vm.get_dirty_log(slot.slot_id) == [0x10003]
    assert vm.memory.read(0x10003000) == 1 and vm.memory.read(0x10003008) == 2


def test_dirty_log_needs_logging_enabled() -> None:
    """Asking for the log of a slot that does not log is a typed error that says what to do."""
    vm = Vm(64 * MiB)
    with pytest.raises(MemslotError, match="LOG_DIRTY_PAGES"):
        vm.get_dirty_log(0)


def test_fast_zap_toggles_the_generation_between_0_and_1() -> None:
    """``kvm_mmu_zap_all_fast`` toggles ``mmu_valid_gen`` between 0 and 1: every page of the
    old generation is zapped at once (a root in use stays, invalid), so no page can carry the
    generation that comes round again and look valid."""
    vm, _, vcpu, _ = _unsync_guest()
    gens = []
    for _ in range(3):
        vm.mmu.zap_all_fast()
        gens.append(vm.mmu.mmu_valid_gen)
        assert vcpu.access(0x401000) == 0x101000
        assert vcpu.root is not None and not vm.mmu.is_obsolete(vcpu.root)
        assert all(sp.mmu_valid_gen == vm.mmu.mmu_valid_gen for sp in vm.mmu.active)
    assert gens == [1, 0, 1]
