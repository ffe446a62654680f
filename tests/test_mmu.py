"""Specification of ``kvmmu.kvm.mmu``: the shadow page fault, write protection, emulated writes to
guest page tables, reclaim and MMIO.

Rules from ``arch/x86/kvm/mmu/mmu.c`` and ``paging_tmpl.h``: ``FNAME(page_fault)``,
``FNAME(fetch)``, ``kvm_mmu_get_shadow_page``, ``account_shadowed``,
``kvm_mmu_hugepage_adjust``/``kvm_mmu_max_mapping_level``, ``kvm_mmu_track_write``
(``detect_write_misaligned``, ``detect_write_flooding``), ``FNAME(protect_clean_gpte)``,
``kvm_mmu_zap_oldest_mmu_pages``, ``mark_mmio_spte``/``handle_mmio_page_fault``; and the
architecture (SDM vol. 3 4.6 for CR0.WP, 4.8 for the dirty flag).
"""

import pytest

from kvmmu.hw.guest import GuestPageTables
from kvmmu.hw.memory import MemslotFlag
from kvmmu.hw.walk import PageFault
from kvmmu.hw.x86 import Acc, Access, PagingMode, Pte
from kvmmu.kvm import spte as S
from kvmmu.kvm.fault import get_shadow_page
from kvmmu.kvm.mmu import MmuBudgetError, shadow_path
from kvmmu.kvm.page import MmuPage
from kvmmu.kvm.page_track import track_write
from kvmmu.kvm.vcpu import Translation, Vcpu, Vm

MiB = 1 << 20
ADDR = ((1 << 52) - 1) & ~0xFFF
P, W, U, A, D = (int(b) for b in (Pte.PRESENT, Pte.WRITABLE, Pte.USER, Pte.ACCESSED, Pte.DIRTY))


def _guest(**vm_kw: object) -> tuple[Vm, GuestPageTables]:
    vm = Vm(64 * MiB, **vm_kw)  # type: ignore[arg-type]
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4, table_gfns=range(0x3000, 0x3100))
    return vm, pt


def _leaf(vcpu: Vcpu, gva: int) -> tuple[MmuPage, int, int]:
    """The last shadow page on ``gva``'s path, the index, and the spte there."""
    sp, index = shadow_path(vcpu, gva)[-1]
    return sp, index, int(sp.spt[index])


def _frame(entry: int) -> int:
    return (entry & ADDR) >> 12


# --------------------------------------------------------------------------------------------
# FNAME(fetch): one indirect page per guest table, direct pages below guest large pages
# --------------------------------------------------------------------------------------------


def test_one_indirect_page_per_guest_table_with_the_walks_role() -> None:
    """``FNAME(fetch)``: each guest table on the walk gets an indirect shadow page whose gfn is
    the table's frame and whose role is the parent's child role with the walk's access."""
    vm, pt = _guest()
    pt.map(0x400000, 0x100000, user=True)
    vcpu = vm.create_vcpu(pt.cpu())
    assert vcpu.access(0x400000, cpl=3) == 0x100000
    path = shadow_path(vcpu, 0x400000)
    tables = [pt.cr3 >> 12, *(_frame(pt.entry(0x400000, lv)) for lv in (4, 3, 2))]
    assert [sp.gfn for sp, _ in path] == tables
    assert [sp.level for sp, _ in path] == [4, 3, 2, 1]
    for sp, _ in path:
        assert not sp.direct and sp.gfns is not None
        assert vm.mmu.page_hash[sp.gfn] == [sp]
        assert sp.role.cr0_wp and sp.role.efer_nx and not sp.role.has_4_byte_gpte
        assert sp.role.access == int(Acc.ALL)
    leaf_sp, index, spte = _leaf(vcpu, 0x400000)
    assert leaf_sp.get_gfn(index) == 0x100
    assert S.spte_to_pfn(spte) == vm.memory.gfn_to_pfn(0x100)
    assert vm.mmu.stats.mmu_cache_miss == 4


def test_same_guest_table_reached_with_other_rights_gets_another_page() -> None:
    """The role's ``access`` is the rights of the levels above (``walker->pt_access``): one
    guest page directory reached through a user and a supervisor-only PDPTE is shadowed by two
    pages of the same gfn."""
    vm, pt = _guest()
    pt.map(0x400000, 0x100000, user=True)
    directory = pt.entry(0x400000, 3)
    pt.set_entry(0x40000000, 3, (directory & ADDR) | P | W)  # the same directory, no U
    vcpu = vm.create_vcpu(pt.cpu())
    assert vcpu.access(0x400000, cpl=3) == 0x100000
    assert vcpu.access(0x40400000, cpl=0) == 0x100000
    assert isinstance(vcpu.access(0x40400000, cpl=3), PageFault)
    pages = vm.mmu.page_hash[_frame(directory)]
    assert sorted(sp.role.access for sp in pages) == [int(Acc.EXEC | Acc.WRITE), int(Acc.ALL)]
    assert {sp.level for sp in pages} == {2}


def test_guest_2m_page_on_4k_host_pages_gets_a_direct_page() -> None:
    """``kvm_mmu_hugepage_adjust``: when the host cannot map a guest 2 MiB page large
    (``huge_pages=False``), ``FNAME(fetch)`` puts a *direct* level-1 page under the guest PDE:
    its gfn is the large page's first frame and its sptes follow ``gfn + i``."""
    vm, pt = _guest(huge_pages=False)
    pt.map(0x40000000, 0x1000000, "2M", writable=True, dirty=True)
    vcpu = vm.create_vcpu(pt.cpu())
    assert vcpu.access(0x40012345, Access.WRITE) == 0x1012345
    sp, index, spte = _leaf(vcpu, 0x40012345)
    assert sp.direct and sp.level == 1 and sp.gfns is None
    assert sp.gfn == 0x1000 and index == 0x12 and sp.get_gfn(index) == 0x1012
    assert S.spte_to_pfn(spte) == vm.memory.gfn_to_pfn(0x1012)
    (parent, pindex) = sp.parent_ptes[0]
    assert not parent.direct and parent.level == 2
    assert parent.gfn == _frame(pt.entry(0x40000000, 3)) and pindex == 0
    # another access inside the same guest 2 MiB page reuses the direct page
    assert vcpu.access(0x401FF000) == 0x11FF000
    assert [s for s in vm.mmu.active if s.direct] == [sp]


def test_guest_2m_page_on_huge_host_pages_gets_a_large_spte() -> None:
    """With huge host pages the same guest page is one large spte in the indirect level-2
    page (``PT_PAGE_SIZE_MASK``), no direct page."""
    vm, pt = _guest(huge_pages=True)
    pt.map(0x40000000, 0x1000000, "2M", writable=True, dirty=True)
    vcpu = vm.create_vcpu(pt.cpu())
    assert vcpu.access(0x40012345, Access.WRITE) == 0x1012345
    sp, index, spte = _leaf(vcpu, 0x40012345)
    assert sp.level == 2 and not sp.direct and S.is_large(spte)
    assert sp.get_gfn(index) == 0x1000 and S.spte_to_pfn(spte) == vm.memory.gfn_to_pfn(0x1000)
    assert not any(s.direct for s in vm.mmu.active)


# --------------------------------------------------------------------------------------------
# account_shadowed: write protection of guest tables
# --------------------------------------------------------------------------------------------


def test_new_indirect_page_write_protects_its_gfn() -> None:
    """``account_shadowed`` -> ``kvm_mmu_slot_gfn_write_protect``: when a frame becomes a
    shadowed guest table, every writable spte mapping it loses W (and MMU-writable), the
    4 KiB ones and the large ones; afterwards no large spte may cover it
    (``kvm_mmu_gfn_disallow_lpage``), so a new 2 MiB mapping of it is split."""
    vm, pt = _guest(allow_unsync=False)
    big = 0x1000000
    pt.map(0x1000, big + 0x5000, writable=True, dirty=True)  # a 4 KiB alias of the frame
    pt.map(0x80000000, big, "2M", writable=True, dirty=True)  # a 2 MiB page over it
    vcpu = vm.create_vcpu(pt.cpu())
    vcpu.access(0x1000, Access.WRITE)
    vcpu.access(0x80005000, Access.WRITE)
    small, large = _leaf(vcpu, 0x1000)[2], _leaf(vcpu, 0x80005000)[2]
    assert S.is_writable(small) and S.is_writable(large) and S.is_large(large)
    # the guest writes a PTE into frame big+0x5000 and links it as a page table
    assert vcpu.write(0x80005000 + 8 * 3, 0x100000 | P | A) is None
    pt.set_entry(0x40000000, 2, (big + 0x5000) | P | W)
    assert vcpu.access(0x40003000) == 0x100000
    assert [sp.level for sp in vm.mmu.page_hash[(big >> 12) + 5]] == [1]
    small, large = _leaf(vcpu, 0x1000)[2], _leaf(vcpu, 0x80005000)[2]
    for spte in (small, large):
        assert S.is_shadow_present(spte)
        assert not spte & (S.WRITABLE | S.MMU_WRITABLE)
    assert S.is_large(large)
    # writes to the table are now emulated
    t = vcpu.translate(0x1008, Access.WRITE)
    assert isinstance(t, Translation) and t.emulated
    # a new 2 MiB mapping over the shadowed frame is mapped with 4 KiB sptes
    pt.map(0xC0000000, big, "2M", writable=True, dirty=True)
    assert vcpu.access(0xC0007000) == big + 0x7000
    sp, _, spte = _leaf(vcpu, 0xC0007000)
    assert sp.level == 1 and sp.direct and not S.is_large(spte)


# --------------------------------------------------------------------------------------------
# kvm_mmu_track_write: emulated writes to shadowed guest tables
# --------------------------------------------------------------------------------------------

WINDOW = 0x8000000000  # a gva whose path shares no table below the root with the data


def _tables_guest(**vm_kw: object) -> tuple[Vm, GuestPageTables, Vcpu, int, int]:
    """A guest with pages at 0x400000.. whose leaf table and directory it maps at WINDOW and
    WINDOW + 4 KiB; leaf tables stay write-protected (no unsync)."""
    vm, pt = _guest(allow_unsync=False, **vm_kw)
    pt.map(0x400000, 0x100000, length=0x4000, writable=True, dirty=True, accessed=True)
    leaf_table = pt.entry(0x400000, 2) & ADDR
    directory = pt.entry(0x400000, 3) & ADDR
    pt.map(WINDOW, leaf_table, writable=True, dirty=True)
    pt.map(WINDOW + 0x1000, directory, writable=True, dirty=True)
    vcpu = vm.create_vcpu(pt.cpu())
    for gva in range(0x400000, 0x404000, 0x1000):
        vcpu.access(gva)
    return vm, pt, vcpu, leaf_table, directory


def test_guest_pte_write_zaps_the_leaf_spte_as_todays_kernel_does() -> None:
    """``kvm_mmu_track_write`` today: the spte of the written guest PTE is zapped, not
    refreshed; the next access faults it back in from the new entry."""
    vm, _, vcpu, _leaf_table, _ = _tables_guest()
    sp, index, _ = _leaf(vcpu, 0x401000)
    assert vcpu.write(WINDOW + 8 * 1, 0x200000 | P | W | A | D) is None
    assert int(sp.spt[index]) == 0
    assert vm.mmu.stats.mmu_pte_write == 1 and vm.mmu.stats.mmu_pte_updated == 0
    fixed = vm.mmu.stats.pf_fixed
    assert vcpu.access(0x401000) == 0x200000
    assert vm.mmu.stats.pf_fixed == fixed + 1
    assert sp.get_gfn(1) == 0x200


def test_guest_pte_write_updates_the_leaf_spte_in_the_2010_kernel() -> None:
    """``Vm(update_pte=True)``: a write to a shadowed leaf table is emulated, and the spte of
    the written entry is refreshed from the new guest PTE at once (``mmu_pte_updated``)."""
    vm, _, vcpu, leaf_table, _ = _tables_guest(update_pte=True)
    before = vm.mmu.stats.as_series()
    assert vcpu.write(WINDOW + 8 * 1, 0x200000 | P | W | A | D) is None
    after = vm.mmu.stats.as_series()
    assert after["mmu_pte_write"] - before["mmu_pte_write"] == 1
    assert after["mmu_pte_updated"] - before["mmu_pte_updated"] == 1
    assert after["pf_emulate"] - before["pf_emulate"] == 1
    sp, index, spte = _leaf(vcpu, 0x401000)
    assert sp.gfn == leaf_table >> 12 and index == 1
    assert sp.get_gfn(1) == 0x200 and S.spte_to_pfn(spte) == vm.memory.gfn_to_pfn(0x200)
    assert vm.memory.read(leaf_table + 8) == 0x200000 | P | W | A | D


def test_guest_pde_write_zaps_the_upper_spte() -> None:
    """A non-zero write to a shadowed upper-level table zaps the sptes that shadow that entry
    (``mmu_pde_zapped``); the next access rebuilds them from the new entry."""
    vm, _, vcpu, _, directory = _tables_guest()
    dir_sp = vm.mmu.page_hash[directory >> 12][0]
    index = 2  # 0x400000 >> 21
    assert S.is_shadow_present(int(dir_sp.spt[index]))
    old_pde = vm.memory.read(directory + 8 * index)
    assert vcpu.write(WINDOW + 0x1000 + 8 * index, old_pde) is None
    assert int(dir_sp.spt[index]) == 0
    assert vm.mmu.stats.mmu_pde_zapped == 1
    assert vcpu.access(0x401000) == 0x101000
    assert S.is_shadow_present(int(dir_sp.spt[index]))


def test_writing_zero_to_a_pde_zaps_without_counting() -> None:
    """``kvm_mmu_track_write`` counts ``mmu_pde_zapped`` only for a non-zero new entry
    (``if (gentry && sp->role.level != PG_LEVEL_4K)``); the spte is zapped either way."""
    vm, _, vcpu, _, directory = _tables_guest()
    dir_sp = vm.mmu.page_hash[directory >> 12][0]
    assert vcpu.write(WINDOW + 0x1000 + 8 * 2, 0) is None
    assert int(dir_sp.spt[2]) == 0
    assert vm.mmu.stats.mmu_pde_zapped == 0
    assert isinstance(vcpu.access(0x401000), PageFault)


def test_three_writes_to_an_unused_upper_table_zap_it() -> None:
    """``detect_write_flooding``: the third emulated write to an upper-level table that the
    guest has not walked through since the first one zaps the page (``mmu_flooded``)."""
    vm, _, vcpu, _, directory = _tables_guest()
    dir_sp = vm.mmu.page_hash[directory >> 12][0]
    for n in range(3):
        assert dir_sp in vm.mmu.active and not dir_sp.role.invalid
        assert vcpu.write(WINDOW + 0x1000 + 8 * (100 + n), 0) is None
    assert dir_sp not in vm.mmu.active and dir_sp.role.invalid
    assert vm.mmu.stats.mmu_flooded == 1
    assert vcpu.access(0x401000) == 0x101000  # rebuilt on demand


def test_using_the_table_between_writes_resets_the_flood_count() -> None:
    """``clear_sp_write_flooding_count``: a fault that walks through the page shows the guest
    still uses it, so writes interleaved with use never flood."""
    vm, _, vcpu, _, directory = _tables_guest()
    dir_sp = vm.mmu.page_hash[directory >> 12][0]
    for n in range(6):
        assert vcpu.write(WINDOW + 0x1000 + 8 * (100 + n), 0) is None
        vcpu.write(WINDOW + 0x1000 + 8 * 2, vm.memory.read(directory + 16))  # zaps spte 2
        vcpu.tlb.flush()
        assert vcpu.access(0x400000) == 0x100000  # a fault through dir_sp
    assert dir_sp in vm.mmu.active and vm.mmu.stats.mmu_flooded == 0


def test_leaf_tables_never_flood() -> None:
    """Write flooding applies to upper levels only: a leaf table is updated, not zapped."""
    vm, _, vcpu, leaf_table, _ = _tables_guest()
    leaf_sp = vm.mmu.page_hash[leaf_table >> 12][0]
    for n in range(5):
        vcpu.write(WINDOW + 8 * (200 + n), 0)
    assert leaf_sp in vm.mmu.active and vm.mmu.stats.mmu_flooded == 0


@pytest.mark.parametrize(
    ("offset", "size"),
    [(2, 2), (4, 8), (5, 4), (6, 2)],
    ids=["2-byte-inside", "8-byte-straddling", "4-byte-straddling", "2-byte-at-end"],
)
def test_misaligned_write_zaps_the_page(offset: int, size: int) -> None:
    """``detect_write_misaligned``: a write narrower than 4 bytes or crossing a guest entry
    cannot be applied to one spte, so the page is zapped (``mmu_flooded``)."""
    vm, _, vcpu, leaf_table, _ = _tables_guest()
    leaf_sp = vm.mmu.page_hash[leaf_table >> 12][0]
    assert vcpu.write(WINDOW + 8 + offset, 0, size) is None
    assert leaf_sp.role.invalid and leaf_sp not in vm.mmu.active
    assert vm.mmu.stats.mmu_flooded == 1


@pytest.mark.parametrize(("offset", "size"), [(4, 4), (1, 4), (0, 8)])
def test_writes_of_4_bytes_or_more_inside_one_entry_are_not_misaligned(
    offset: int, size: int
) -> None:
    """``detect_write_misaligned``: a write of at least 4 bytes that stays inside one guest
    entry (a 32-bit half of a PAE entry, say) is applied to that entry's spte."""
    vm, _, vcpu, leaf_table, _ = _tables_guest(update_pte=True)
    leaf_sp = vm.mmu.page_hash[leaf_table >> 12][0]
    value = vm.memory.read(leaf_table + 8 + offset, size)
    assert vcpu.write(WINDOW + 8 + offset, value, size) is None
    assert leaf_sp in vm.mmu.active and vm.mmu.stats.mmu_flooded == 0
    assert vm.mmu.stats.mmu_pte_updated == 1


def test_one_byte_write_at_an_entry_start_is_not_misaligned() -> None:
    """``detect_write_misaligned``: Linux clears PTE bits with ``andb`` on the low byte, so a
    one-byte write at the start of an entry is handled in place."""
    vm, _, vcpu, leaf_table, _ = _tables_guest()
    leaf_sp = vm.mmu.page_hash[leaf_table >> 12][0]
    low = vm.memory.read(leaf_table + 8, 1)
    assert vcpu.write(WINDOW + 8, low & ~W & 0xFF, 1) is None
    assert leaf_sp in vm.mmu.active and vm.mmu.stats.mmu_flooded == 0
    _, _, spte = _leaf(vcpu, 0x401000)
    assert not S.is_writable(spte)
    fault = vcpu.access(0x401000, Access.WRITE, cpl=0)  # CR0.WP=1: the new R/W=0 counts
    assert isinstance(fault, PageFault) and fault.error_code == Pte.PRESENT | Pte.WRITABLE


# --------------------------------------------------------------------------------------------
# Rights: the clean-gpte rule, CR0.WP=0, read-only memslots
# --------------------------------------------------------------------------------------------


def test_first_write_to_a_clean_page_faults_and_sets_the_guest_dirty_bit() -> None:
    """``FNAME(protect_clean_gpte)``: a read maps a clean guest page read-only, so the first
    write faults and the walker sets the guest's D bit (SDM 4.8) before W is granted."""
    vm, pt = _guest()
    pt.map(0x400000, 0x100000, writable=True, user=True)
    vcpu = vm.create_vcpu(pt.cpu())
    assert vcpu.access(0x400000, cpl=3) == 0x100000
    assert not pt.entry(0x400000, 1) & D
    _, _, spte = _leaf(vcpu, 0x400000)
    assert not S.is_writable(spte)
    fixed = vm.mmu.stats.pf_fixed
    assert vcpu.access(0x400000, Access.WRITE, cpl=3) == 0x100000
    assert vm.mmu.stats.pf_fixed == fixed + 1
    assert pt.entry(0x400000, 1) & D
    _, _, spte = _leaf(vcpu, 0x400000)
    assert S.is_writable(spte) and spte & S.DIRTY


def test_cr0_wp_0_supervisor_write_to_a_read_only_page() -> None:
    """SDM 4.6: with CR0.WP=0 supervisor writes ignore R/W. The hardware runs the shadow
    tables with WP=1, so KVM makes the spte writable but supervisor-only; a user access then
    faults in the shadow tables and is handled by the guest's real rights."""
    vm, pt = _guest()
    pt.map(0x400000, 0x100000, writable=False, user=True)
    vcpu = vm.create_vcpu(pt.cpu(wp=False))
    assert vcpu.access(0x400000, Access.WRITE, cpl=0) == 0x100000
    sp, _, spte = _leaf(vcpu, 0x400000)
    assert not sp.role.cr0_wp
    assert S.is_writable(spte) and not spte & S.USER
    assert isinstance(vcpu.access(0x400000, Access.WRITE, cpl=3), PageFault)
    assert vcpu.access(0x400000, cpl=3) == 0x100000
    _, _, spte = _leaf(vcpu, 0x400000)
    assert spte & S.USER and not S.is_writable(spte)


def test_cr0_wp_1_supervisor_write_to_a_read_only_page_faults() -> None:
    """With CR0.WP=1 the same write is a protection fault for the guest."""
    vm, pt = _guest()
    pt.map(0x400000, 0x100000, writable=False, user=True)
    vcpu = vm.create_vcpu(pt.cpu(wp=True))
    fault = vcpu.access(0x400000, Access.WRITE, cpl=0)
    assert isinstance(fault, PageFault) and fault.error_code == Pte.PRESENT | Pte.WRITABLE


@pytest.mark.parametrize("tdp", [False, True])
def test_write_to_a_readonly_memslot_is_an_mmio_exit(tdp: bool) -> None:
    """A read-only memslot (``KVM_MEM_READONLY``) is readable; a write exits to userspace
    as MMIO and leaves memory unchanged."""
    vm, pt = _guest(tdp=tdp)
    vm.add_memslot(0x9000, 16, MemslotFlag.READONLY)
    vm.memory.write(0x9000000, 0xABC)
    pt.map(0x500000, 0x9000000, writable=True, dirty=True)
    vcpu = vm.create_vcpu(pt.cpu())
    assert vcpu.read(0x500000) == 0xABC
    t = vcpu.translate(0x500000, Access.WRITE)
    assert isinstance(t, Translation) and t.mmio and t.gpa == 0x9000000
    assert vcpu.write(0x500000, 77) is None
    assert vm.memory.read(0x9000000) == 0xABC


# --------------------------------------------------------------------------------------------
# Reclaim
# --------------------------------------------------------------------------------------------


def test_reclaim_zaps_the_oldest_non_root_pages() -> None:
    """``make_mmu_pages_available`` -> ``kvm_mmu_zap_oldest_mmu_pages``: with fewer than 5
    pages free, the oldest pages that are no root are zapped (up to 25 free), counted in
    ``mmu_recycled``; roots survive; the budget is never exceeded."""
    vm, pt = _guest(n_max_mmu_pages=64)
    n = 100  # 100 guest page tables, each a shadow page: more than the budget
    for k in range(n):
        pt.map(0x40000000 + (k << 21), 0x100000 + (k << 12))
    vcpu = vm.create_vcpu(pt.cpu())
    root = None
    zapped_batches: list[tuple[list[int], list[int]]] = []
    for k in range(n):
        before = list(vm.mmu.active)
        assert vcpu.access(0x40000000 + (k << 21)) == 0x100000 + (k << 12)
        root = root or vcpu.root
        assert vm.mmu.n_used_mmu_pages <= 64
        gone = [sp.serial for sp in before if sp not in vm.mmu.active]
        if gone:
            oldest = [sp.serial for sp in before if not sp.root_count][: len(gone)]
            zapped_batches.append((gone, oldest))
    assert zapped_batches
    for gone, oldest in zapped_batches:
        assert gone == oldest
    assert vm.mmu.stats.mmu_recycled == sum(len(g) for g, _ in zapped_batches)
    assert vm.mmu.stats.mmu_recycled > n + 3 - 64
    assert root is not None and vcpu.root is root and root in vm.mmu.active
    assert not root.role.invalid


def test_budget_below_the_kernel_minimum_is_refused() -> None:
    """``KVM_MIN_ALLOC_MMU_PAGES`` is 64: a smaller budget is a typed error."""
    with pytest.raises(MmuBudgetError, match="64"):
        Vm(64 * MiB, n_max_mmu_pages=10)


# --------------------------------------------------------------------------------------------
# MMIO sptes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tdp", [False, True])
def test_mmio_spte_caches_no_memslot_until_the_memslots_change(tdp: bool) -> None:
    """``mark_mmio_spte``: an access to a gfn without memslot installs an MMIO spte stamped
    with the memslot generation; later accesses fault with PFERR.RSVD and exit at once
    (``handle_mmio_page_fault``) without a new spte; adding a memslot moves the generation,
    so the spte is stale and the next access maps the new memory."""
    vm, pt = _guest(tdp=tdp)
    pt.map(0x400000, 0x8000000, writable=True, dirty=True)  # 128 MiB: no memslot
    vcpu = vm.create_vcpu(pt.cpu())
    t = vcpu.translate(0x400000)
    assert isinstance(t, Translation) and t.mmio and t.gpa == 0x8000000
    assert vm.mmu.stats.pf_mmio_spte_created == 1
    _, _, spte = _leaf(vcpu, 0x8000000 if tdp else 0x400000)
    assert S.is_mmio(spte) and S.mmio_gfn(spte) == 0x8000
    assert S.mmio_generation(spte) == vm.memory.slots.generation
    sptes_before = {id(s): s.spt_array.copy() for s in vm.mmu.active}
    for _ in range(3):
        assert vcpu.read(0x400000) == (1 << 64) - 1  # MMIO reads see no device
        assert vcpu.write(0x400000, 5) is None
    assert vm.mmu.stats.pf_mmio_spte_created == 1
    assert vm.mmu.stats.mmio_exits == 7
    assert all((s.spt_array == sptes_before[id(s)]).all() for s in vm.mmu.active)
    vm.add_memslot(0x8000, 16)
    t = vcpu.translate(0x400000, Access.WRITE)
    assert isinstance(t, Translation) and not t.mmio
    _, _, spte = _leaf(vcpu, 0x8000000 if tdp else 0x400000)
    assert S.is_shadow_present(spte) and S.spte_to_pfn(spte) == vm.memory.gfn_to_pfn(0x8000)
    assert vcpu.write(0x400000, 0x1234) is None and vm.memory.read(0x8000000) == 0x1234


# --------------------------------------------------------------------------------------------
# The write-tracking short cut, one-byte writes, and when the flood count clears
# --------------------------------------------------------------------------------------------


def test_not_present_write_to_a_tracked_table_installs_the_read_only_spte() -> None:
    """``page_fault_handle_page_track`` takes the short cut only for a write fault on a
    *present* spte (``fault->present && fault->write``). A first write through a fresh mapping
    of a write-tracked table goes through ``FNAME(fetch)``: ``make_spte`` finds the gfn
    tracked and installs a read-only spte, and the write is emulated (``RET_PF_EMULATE``)."""
    _, _, vcpu, _, directory = _tables_guest()
    got = vcpu.translate(WINDOW + 0x1000 + 8 * 100, Access.WRITE)
    assert isinstance(got, Translation) and got.emulated and got.gpa == directory + 8 * 100
    sp, index, spte = _leaf(vcpu, WINDOW + 0x1000)
    assert S.is_shadow_present(spte) and not S.is_writable(spte)
    assert sp.get_gfn(index) == directory >> 12
    # the second write finds the spte present: now the short cut, and the spte stays
    got = vcpu.translate(WINDOW + 0x1000 + 8 * 101, Access.WRITE)
    assert isinstance(got, Translation) and got.emulated
    assert int(sp.spt[index]) == spte


def test_one_byte_write_zaps_the_spte_instead_of_updating_it() -> None:
    """``mmu_pte_write_fetch_gpte`` reads the new guest entry only for 4- and 8-byte writes; a
    one-byte ``andb`` gives no entry, so ``kvm_mmu_track_write`` zaps the spte and the next
    access faults it back in: nothing is refreshed in place (``mmu_pte_updated`` stays 0)."""
    vm, _, vcpu, leaf_table, _ = _tables_guest()
    low = vm.memory.read(leaf_table + 8, 1)
    assert vcpu.write(WINDOW + 8, low & ~A & 0xFF, 1) is None
    sp, _, spte = _leaf(vcpu, 0x401000)
    assert sp.gfn == leaf_table >> 12 and spte == 0
    assert vm.mmu.stats.mmu_pte_updated == 0 and vm.mmu.stats.mmu_flooded == 0
    assert vcpu.access(0x401000) == 0x101000
    assert vm.memory.read(leaf_table + 8) & A  # the walk set the accessed bit again


def test_fetch_clears_the_flood_count_of_the_page_holding_the_leaf_spte() -> None:
    """``FNAME(fetch)`` clears the write-flooding count of every shadow page it walks, the one
    at the guest's level (here the directory that holds a 2 MiB guest page) included."""
    vm, pt = _guest(allow_unsync=False)
    pt.map(0x400000, 0x100000, length=0x2000, writable=True)
    pt.set_entry(0x20_0000, 2, 0x60_0000 | P | W | A | Pte.PAGE_SIZE)  # clean: read-only spte
    directory = pt.entry(0x400000, 3) & ADDR
    vcpu = vm.create_vcpu(pt.cpu())
    assert vcpu.access(0x20_0123) == 0x60_0123
    dir_sp = vm.mmu.page_hash[directory >> 12][0]
    for n in range(2):
        vm.memory.write(directory + 8 * (300 + n), 0)
        track_write(vcpu, directory + 8 * (300 + n), 8)
    assert dir_sp.write_flooding_count == 2
    assert vcpu.access(0x20_0123, Access.WRITE) == 0x60_0123  # a fault through dir_sp's spte
    assert dir_sp.write_flooding_count == 0
    track_write(vcpu, directory + 8 * 302, 8)
    assert dir_sp in vm.mmu.active and vm.mmu.stats.mmu_flooded == 0


def test_new_pgd_and_hash_hits_clear_the_flood_count() -> None:
    """``kvm_mmu_new_pgd`` clears the new root's count, and ``kvm_mmu_find_shadow_page``
    clears it on a hash hit (``__clear_sp_write_flooding_count``)."""
    vm, pt = _guest()
    pt.map(0x400000, 0x100000, writable=True)
    other = GuestPageTables(vm.memory, PagingMode.LEVEL4, table_gfns=range(0x3100, 0x3140))
    other.map(0x400000, 0x100000, writable=True)
    vcpu = vm.create_vcpu(pt.cpu())
    assert vcpu.access(0x400000) == 0x100000
    root = vcpu.root
    assert root is not None
    root.write_flooding_count = 2
    assert vcpu.set_cr3(other.cr3) is None and vcpu.set_cr3(pt.cr3) is None
    assert vcpu.root is root and root.write_flooding_count == 0
    leaf = shadow_path(vcpu, 0x400000)[-1][0]
    leaf.write_flooding_count = 2
    assert get_shadow_page(vcpu, leaf.gfn, leaf.role) is leaf
    assert leaf.write_flooding_count == 0


def test_zap_collapsible_sptes_also_collapses_2m_into_1g() -> None:
    """``kvm_rmap_zap_collapsible_sptes`` walks the rmaps of levels 4K up to
    ``KVM_MAX_HUGEPAGE_LEVEL - 1``: a 2 MiB spte of a direct page that a 1 GiB page could
    replace is zapped too (``sp->role.level < kvm_mmu_max_mapping_level``)."""
    vm = Vm(2 << 30, tdp=True)
    vcpu = vm.create_vcpu()
    slot = vm.memory.slots.find(0x40000)
    assert slot is not None
    vm.mmu.lpage_disallowed[(3, 0x40000)] = 1  # as KVM's lpage_info: no 1 GiB page here yet
    assert vcpu.access(0x4000_1000) == 0x4000_1000
    sp, index, spte = _leaf(vcpu, 0x4000_1000)
    assert sp.level == 2 and S.is_large(spte)
    del vm.mmu.lpage_disallowed[(3, 0x40000)]
    vm.mmu.zap_collapsible_sptes(slot)
    assert int(sp.spt[index]) == 0
    assert vcpu.access(0x4000_1000) == 0x4000_1000
    sp, _, spte = _leaf(vcpu, 0x4000_1000)
    assert sp.level == 3 and S.is_large(spte)
