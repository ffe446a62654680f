"""Specification of ``kvmmu.kvm.rmap``: the reverse map and parent pointers.

Rules from ``arch/x86/kvm/mmu/mmu.c``: ``rmap_add`` files a leaf spte under the gfn that
``kvm_mmu_page_get_gfn`` gives for it, in the rmap of its page size (``gfn_to_rmap``: a large
spte is found under the first gfn of its large page); ``rmap_remove`` takes it out the same way;
``mmu_page_add_parent_pte`` / ``mmu_page_remove_parent_pte`` keep each child's parent list.
"""

from dataclasses import replace

import pytest

from kvmmu.errors import KvmmuError
from kvmmu.hw.guest import GuestPageTables
from kvmmu.hw.x86 import Access, PagingMode
from kvmmu.kvm import spte as S
from kvmmu.kvm.page import MmuPage, standalone_page
from kvmmu.kvm.rmap import Rmap, add_parent_pte, level_base, remove_parent_pte, sptep_of
from kvmmu.kvm.vcpu import Vm

MiB = 1 << 20


def _page_in_frame(pfn: int, gfn: int, level: int = 1) -> MmuPage:
    """A standalone direct page in host frame ``pfn``: an rmap holds sptes by their address,
    so pages filed side by side need frames of their own."""
    return replace(standalone_page(gfn, level, direct=True), pfn=pfn)


@pytest.mark.parametrize(
    ("gfn", "level", "base"),
    [(0x12345, 1, 0x12345), (0x12345, 2, 0x12200), (0x12345, 3, 0x00000), (0x40123, 3, 0x40000)],
)
def test_level_base_rounds_down_to_the_page_of_that_level(gfn: int, level: int, base: int) -> None:
    """``gfn_round_for_level``: 512 frames per 2 MiB page, 512 * 512 per 1 GiB page."""
    assert level_base(gfn, level) == base


def test_add_files_a_direct_spte_under_its_computed_gfn() -> None:
    """``rmap_add`` reads the gfn through ``get_gfn``: for a direct page, computed."""
    rmap = Rmap()
    sp = standalone_page(0x400, 1, direct=True)
    assert rmap.add(sp, 7) == 0x407
    assert rmap.sptes(0x407, 1) == [(sp, 7)]
    assert rmap.sptes(0x406, 1) == []
    assert len(rmap) == 1


def test_add_files_an_indirect_spte_under_its_stored_gfn() -> None:
    """For an indirect page the gfn is whatever ``set_gfn`` stored for that index."""
    rmap = Rmap()
    sp = standalone_page(0x3FC3, 1, direct=False)
    sp.set_gfn(2, 0xABC)
    assert rmap.add(sp, 2) == 0xABC
    assert rmap.sptes(0xABC, 1) == [(sp, 2)]
    assert rmap.all_levels(0xABC) == [(sp, 2)]


def test_large_spte_is_found_from_every_gfn_it_covers() -> None:
    """A level-2 spte maps 512 frames and is filed once, under ``(2, base gfn)``; looking up
    any gfn inside finds it at level 2 and not at level 1."""
    rmap = Rmap()
    sp = standalone_page(0, 2, direct=True)  # spte 3 maps gfns 0x600..0x7ff
    assert rmap.add(sp, 3) == 0x600
    for gfn in (0x600, 0x601, 0x7FF):
        assert rmap.sptes(gfn, 2) == [(sp, 3)]
        assert rmap.sptes(gfn, 1) == []
        assert rmap.all_levels(gfn) == [(sp, 3)]
    assert rmap.sptes(0x800, 2) == []
    assert {key: list(head) for key, head in rmap.items()} == {(2, 0x600): [(sp, 3)]}


def test_a_head_counts_and_orders_its_sptes_from_the_first_to_the_last() -> None:
    """``pte_list_add`` returns how many sptes the head held before (what
    ``max_mmu_rmap_size`` peaks on): 0 for a lone spte, also when the same spte is filed again,
    then 1, 2; the sptes come back in the order they were filed, through every view of the
    rmap, and removing the first leaves the others in order."""
    rmap = Rmap()
    pages = [_page_in_frame(pfn, 0x400) for pfn in (5, 6, 7)]
    assert rmap.pte_list_add(pages[0], 1, 0x401) == 0
    assert rmap.pte_list_add(pages[0], 1, 0x401) == 0 and rmap.count(0x401, 1) == 1
    assert list(rmap.items()) == [((1, 0x401), ((pages[0], 1),))]
    assert [rmap.pte_list_add(sp, 1, 0x401) for sp in pages[1:]] == [1, 2]
    want = [(sp, 1) for sp in pages]
    assert rmap.sptes(0x401, 1) == want and rmap.all_levels(0x401) == want
    assert [list(head) for _, head in rmap.items()] == [want] and len(rmap) == 3
    rmap.remove(pages[0], 1)
    assert rmap.sptes(0x401, 1) == want[1:] and rmap.count(0x401, 1) == 2


def test_remove_undoes_add_and_drops_empty_heads() -> None:
    """``rmap_remove``: the spte goes; a head with nothing left disappears."""
    rmap = Rmap()
    a, b = _page_in_frame(5, 0x400), _page_in_frame(6, 0x400)
    rmap.add(a, 1)
    rmap.add(b, 1)
    assert sorted(id(sp) for sp, _ in rmap.sptes(0x401, 1)) == sorted([id(a), id(b)])
    assert rmap.remove(a, 1) == 0x401
    assert rmap.sptes(0x401, 1) == [(b, 1)]
    rmap.remove(b, 1)
    assert rmap.sptes(0x401, 1) == [] and len(rmap) == 0
    assert list(rmap.items()) == []


def test_a_head_holds_the_address_of_its_spte() -> None:
    """``rmap_head->val`` is a ``u64 *sptep``: the spte's host address, its page's frame
    ``<< 12`` plus ``index * 8``; the rmap turns it back into the page through the frames it
    was given (``sptep_to_sp``, here the MMU's ``by_pfn``)."""
    sp = _page_in_frame(0x1234, 0x400)
    assert sptep_of(sp, 7) == 0x1234 << 12 | 7 * 8
    rmap = Rmap({0x1234: sp})
    rmap.add(sp, 7)
    assert rmap.sptes(0x407, 1) == [(sp, 7)]
    assert list(rmap._heads.values()) == [sptep_of(sp, 7)]


def test_an_mmu_rmap_finds_pages_through_by_pfn() -> None:
    """The MMU's rmap resolves sptes through ``by_pfn``: every spte it lists is one of the
    MMU's live pages, at the index that maps the gfn."""
    vm = Vm(4 * MiB, tdp=True, huge_pages=False)
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4)
    pt.map(0x40_0000, 0x10_0000)
    vcpu = vm.create_vcpu(pt.cpu())
    assert isinstance(vcpu.access(0x40_0000), int)
    [(sp, index)] = vm.mmu.rmap.sptes(0x100, 1)
    assert vm.mmu.by_pfn[sp.pfn] is sp and sp.get_gfn(index) == 0x100


def test_pages_of_an_rmap_without_an_mmu_need_frames_of_their_own() -> None:
    """An rmap made without pages remembers each page by its frame; a second page in the same
    frame would make two sptes one address, so it is refused with a message that says why."""
    rmap = Rmap()
    rmap.add(_page_in_frame(5, 0x400), 1)
    with pytest.raises(KvmmuError, match="frames of their own"):
        rmap.add(_page_in_frame(5, 0x800), 1)


def test_pte_list_add_many_files_each_spte_as_pte_list_add_does() -> None:
    """The prefetch's batch of ``rmap_add`` calls: each spte under its own gfn, the same heads
    in the same order as one ``pte_list_add`` per spte, and the largest earlier count."""
    one, many = Rmap(), Rmap()
    sp, others = _page_in_frame(5, 0x400), [_page_in_frame(pfn, 0x400) for pfn in (6, 7)]
    for rmap in (one, many):
        for other in others:
            rmap.pte_list_add(other, 3, 0x403)
    assert [one.pte_list_add(sp, i, 0x400 + i) for i in (1, 2, 3, 4)] == [0, 0, 2, 0]
    assert many.pte_list_add_many(sp, [1, 2, 3, 4], 0x400) == 2
    assert list(many.items()) == list(one.items()) and len(many) == len(one) == 6
    assert many.pte_list_add_many(sp, [], 0x400) == 0
    with pytest.raises(KvmmuError, match="level-1 page"):
        many.pte_list_add_many(_page_in_frame(8, 0, level=2), [0], 0)


def test_parent_ptes_add_and_remove() -> None:
    """``mmu_page_add_parent_pte`` / ``mmu_page_remove_parent_pte``: one entry per parent spte
    that points to the child; a child shared by two parents lists both."""
    child = standalone_page(0x10, 1, direct=False)
    p1, p2 = standalone_page(0x20, 2, direct=False), standalone_page(0x21, 2, direct=False)
    add_parent_pte(child, p1, 4)
    add_parent_pte(child, p2, 9)
    assert child.parent_ptes == [(p1, 4), (p2, 9)]
    remove_parent_pte(child, p1, 4)
    assert child.parent_ptes == [(p2, 9)]
    with pytest.raises(ValueError):
        remove_parent_pte(child, p1, 4)


# --------------------------------------------------------------------------------------------
# The rmap and parent pointers the MMU keeps
# --------------------------------------------------------------------------------------------


def _leaf_sptes(vm: Vm) -> set[tuple[int, int, int]]:
    """(level, get_gfn, id(sp) * 512 + index) of every present leaf spte in the MMU."""
    out = set()
    for sp in vm.mmu.active:
        for i in sp.present_indices().tolist():
            spte = int(sp.spt[i])
            if S.is_shadow_present(spte) and S.is_last(spte, sp.level):
                out.add((sp.level, sp.get_gfn(i), id(sp) * 512 + i))
    return out


def _rmap_entries(vm: Vm) -> set[tuple[int, int, int]]:
    return {
        (level, gfn, id(sp) * 512 + i)
        for (level, gfn), head in vm.mmu.rmap.items()
        for sp, i in head
    }


@pytest.mark.parametrize("tdp", [False, True])
def test_mmu_rmap_holds_exactly_the_present_leaf_sptes(tdp: bool) -> None:
    """After faults (4 KiB, 2 MiB guest pages, large sptes) and a zap, the rmap holds each
    present leaf spte exactly once, under ``(level, get_gfn(i))``."""
    vm = Vm(64 * MiB, tdp=tdp)
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4)
    pt.map(0x400000, 0x100000, length=0x8000, writable=True)
    pt.map(0x40000000, 0x1000000, "2M", length=4 * MiB, writable=True)
    vcpu = vm.create_vcpu(pt.cpu())
    for gva in [*range(0x400000, 0x408000, 0x1000), 0x40000000, 0x40234000, 0x40345000]:
        vcpu.access(gva, Access.WRITE)
    assert _rmap_entries(vm) == _leaf_sptes(vm)
    assert any(level == 2 for level, _, _ in _rmap_entries(vm))  # a large spte is there
    victim = min((sp for sp in vm.mmu.active if not sp.root_count), key=lambda sp: sp.level)
    assert any(sp is victim for head in dict(vm.mmu.rmap.items()).values() for sp, _ in head)
    vm.mmu.zap_page(victim)
    assert _rmap_entries(vm) == _leaf_sptes(vm)
    assert not any(sp is victim for head in dict(vm.mmu.rmap.items()).values() for sp, _ in head)
    assert len(vm.mmu.rmap) == len(_leaf_sptes(vm))


def test_rmap_lookup_finds_the_large_spte_of_a_guest_2m_page() -> None:
    """A guest 2 MiB page mapped by a large spte is found from a gfn in its middle."""
    vm = Vm(64 * MiB)
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4)
    pt.map(0x40000000, 0x1000000, "2M", writable=True, dirty=True)
    vcpu = vm.create_vcpu(pt.cpu())
    vcpu.access(0x40000000 + 0x12345)
    (hit,) = vm.mmu.rmap.all_levels(0x1000 + 0x77)
    sp, index = hit
    assert sp.level == 2 and S.is_large(int(sp.spt[index]))
    assert sp.get_gfn(index) == 0x1000


def test_mmu_parent_ptes_point_back_at_the_linking_spte() -> None:
    """Every non-root page lists in ``parent_ptes`` the sptes that point to it, and only
    those: ``parent.spt[index]`` is a table spte with the child's pfn."""
    vm = Vm(64 * MiB)
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4)
    pt.map(0x400000, 0x100000, length=0x3000)
    pt.map(0x7F0000000000, 0x200000)
    vcpu = vm.create_vcpu(pt.cpu())
    for gva in (0x400000, 0x401000, 0x402000, 0x7F0000000000):
        vcpu.access(gva)
    links = 0
    for sp in vm.mmu.active:
        for i in sp.present_indices().tolist():
            spte = int(sp.spt[i])
            if not S.is_last(spte, sp.level):
                child = vm.mmu.child_of(spte)
                assert (sp, i) in child.parent_ptes
                links += 1
    assert links == sum(len(sp.parent_ptes) for sp in vm.mmu.active) == 6  # two L3, two L2, two L1
    for sp in vm.mmu.active:
        for parent, i in sp.parent_ptes:
            assert S.spte_to_pfn(int(parent.spt[i])) == sp.pfn
    assert vcpu.root is not None and vcpu.root.parent_ptes == []
