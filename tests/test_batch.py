"""Batch paths (kvmmu.teaching.batch): the same shadow pages as one fault per page, built at once.

Each equivalence test runs the real fault path (``full_touch``) on a small guest and the batch
path on an identical fresh guest, then compares: the set of (level, gfn, role) pages, for every
leaf spte the gfn it maps (``get_gfn``) and its rights and flags, the gfns arrays, parent links,
rmap, counters, and bytes by era.
"""

import pytest

from kvmmu.hw.memory import MemslotFlag
from kvmmu.hw.x86 import PagingMode
from kvmmu.kvm.accounting import memory_by_era
from kvmmu.kvm.vcpu import Vm
from kvmmu.teaching.batch import (
    BatchError,
    build_direct,
    build_shadow,
    iter_leaves,
    plan_direct,
    plan_shadow,
    summary_of_mmu,
)
from kvmmu.teaching.workloads import fast_identity_tables, full_touch, identity_guest

MIB = 1 << 20
FLAGS = (1 << 63) | 0xFFF  # everything but the host frame number


def _pages(vm: Vm) -> set[tuple[int, int, int]]:
    return {(sp.level, sp.gfn, sp.role.word) for sp in vm.mmu.by_pfn.values()}


def _leaves(vm: Vm) -> set[tuple[int, int, int, int, int]]:
    return {
        (sp.level, sp.gfn, sp.role.word, i, g, int(sp.spt[i]) & FLAGS)
        for sp, i, g in iter_leaves(vm)
    }


def _links(vm: Vm) -> set[tuple[int, int, int, int, int, int]]:
    out = set()
    for sp in vm.mmu.by_pfn.values():
        for parent, index in sp.parent_ptes:
            out.add((parent.level, parent.gfn, parent.role.word, index, sp.gfn, sp.role.word))
    return out


def _gfns(vm: Vm) -> dict[tuple[int, int, int], tuple[int, ...] | None]:
    return {
        (sp.level, sp.gfn, sp.role.word): None if sp.gfns is None else tuple(sp.gfns.tolist())
        for sp in vm.mmu.by_pfn.values()
    }


def _rmap(vm: Vm) -> set[tuple[int, int, int, int, int]]:
    return {
        (level, gfn, sp.gfn, sp.role.word, index)
        for (level, gfn), head in vm.mmu.rmap.items()
        for sp, index in head
    }


def assert_same_mmu(a: Vm, b: Vm) -> None:
    assert _pages(a) == _pages(b)
    assert _leaves(a) == _leaves(b)
    assert _links(a) == _links(b)
    assert _gfns(a) == _gfns(b)
    assert _rmap(a) == _rmap(b)
    assert a.mmu.write_tracked == b.mmu.write_tracked
    assert a.mmu.lpage_disallowed == b.mmu.lpage_disallowed
    assert a.stats.pf_fixed == b.stats.pf_fixed
    assert a.stats.mmu_cache_miss == b.stats.mmu_cache_miss
    assert a.mmu.n_used_mmu_pages == b.mmu.n_used_mmu_pages
    assert memory_by_era(a).equals(memory_by_era(b))
    assert summary_of_mmu(a) == summary_of_mmu(b)


CASES = [
    # (size, mode, tdp, guest page size, host huge pages)
    (4 * MIB, PagingMode.LEVEL4, True, 4096, False),
    (4 * MIB, PagingMode.LEVEL4, True, 4096, True),
    (8 * MIB, PagingMode.LEVEL4, False, 4096, False),
    (8 * MIB, PagingMode.LEVEL4, False, 4096, True),
    (16 * MIB, PagingMode.LEVEL4, False, 2 * MIB, True),
    (16 * MIB, PagingMode.LEVEL4, False, 2 * MIB, False),
    (8 * MIB, PagingMode.LEVEL5, False, 4096, False),
]


@pytest.mark.parametrize(("size", "mode", "tdp", "page_size", "huge"), CASES)
def test_batch_equals_fault_path(
    size: int, mode: PagingMode, tdp: bool, page_size: int, huge: bool
) -> None:
    faulted = full_touch(size, mode, tdp, page_size, huge_pages=huge).vm
    vm, vcpu, _ = identity_guest(size, mode, tdp=tdp, page_size=page_size, huge_pages=huge)
    summary = build_direct(vcpu) if tdp else build_shadow(vcpu)
    assert_same_mmu(faulted, vm)
    assert summary == summary_of_mmu(vm)


def test_batch_sets_the_guest_accessed_bits_the_walks_set() -> None:
    faulted = full_touch(8 * MIB, PagingMode.LEVEL4, False, 2 * MIB, huge_pages=True)
    vm, vcpu, _ = identity_guest(8 * MIB, page_size=2 * MIB, huge_pages=True)
    build_shadow(vcpu)
    assert faulted.tables is not None
    for gfn in faulted.tables.tables:
        assert (faulted.vm.memory.page(gfn) == vm.memory.page(gfn)).all()


def test_two_memslots_give_a_mix_of_leaf_sizes() -> None:
    # slot 1 starts 12 KiB past a 2 MiB boundary and is 6 MiB long: 4 KiB and 2 MiB leaves
    def make() -> Vm:
        vm = Vm(4 * MIB, tdp=True, huge_pages=True)
        vm.add_memslot((8 * MIB >> 12) + 3, (6 * MIB) >> 12)
        return vm

    faulted = make()
    vcpu = faulted.create_vcpu()
    for slot in faulted.memory.slots:
        for gfn in range(slot.base_gfn, slot.end_gfn):
            assert isinstance(vcpu.access(gfn << 12), int)
    batch = make()
    build_direct(batch.create_vcpu())
    assert_same_mmu(faulted, batch)
    assert {lv for lv, _, _ in _pages(batch)} == {1, 2, 3, 4}
    leaf_levels = {lv for lv, *_ in _leaves(batch)}
    assert leaf_levels == {1, 2}


def test_one_gib_leaves_where_a_whole_aligned_gib_is_backed() -> None:
    vm = Vm(1 << 30, tdp=True, huge_pages=True)
    vcpu = vm.create_vcpu()
    assert isinstance(vcpu.access(0x1234_5678), int)  # one fault maps the whole GiB
    batch = Vm(1 << 30, tdp=True, huge_pages=True)
    build_direct(batch.create_vcpu())
    assert_same_mmu(vm, batch)
    assert summary_of_mmu(batch).leaves == {3: 1}


def test_max_level_caps_the_leaf_size() -> None:
    vm = Vm(1 << 30, tdp=True, huge_pages=True)
    summary = build_direct(vm.create_vcpu(), max_level=2)
    assert summary.leaves == {2: 512}
    assert summary.pages == {(4, True): 1, (3, True): 1, (2, True): 1}


def test_dirty_logging_forces_4k_leaves_and_logs_writable_ones() -> None:
    def make() -> Vm:
        vm = Vm(4 * MIB, tdp=True, huge_pages=True)
        vm.set_memslot_flags(0, MemslotFlag.LOG_DIRTY_PAGES)
        return vm

    faulted = make()
    vcpu = faulted.create_vcpu()
    for gfn in range(1024):
        assert isinstance(vcpu.access(gfn << 12), int)
    batch = make()
    build_direct(batch.create_vcpu())
    assert_same_mmu(faulted, batch)
    assert batch.get_dirty_log(0) == faulted.get_dirty_log(0)


def test_paging_off_direct_map_matches_the_fault_path() -> None:
    faulted = Vm(4 * MIB, huge_pages=True)
    vcpu = faulted.create_vcpu()
    for gfn in range(1024):
        vcpu.access(gfn << 12)
    batch = Vm(4 * MIB, huge_pages=True)
    build_direct(batch.create_vcpu())
    assert_same_mmu(faulted, batch)


@pytest.mark.parametrize(("page_size", "huge"), [(4096, False), (4096, True), (2 * MIB, True)])
def test_summary_counts_equal_the_object_level_build(page_size: int, huge: bool) -> None:
    size = 128 * MIB

    def make() -> Vm:
        return Vm(size, huge_pages=huge, n_max_mmu_pages=4096)

    built = make()
    build_shadow(fast_identity_tables(built, size, page_size))
    counted = make()
    summary = plan_shadow(fast_identity_tables(counted, size, page_size), detail=False).summary()
    assert summary == summary_of_mmu(built)
    assert summary.memory().equals(memory_by_era(built))


@pytest.mark.parametrize("max_level", [1, 2, 3])
def test_direct_summary_equals_object_level_build(max_level: int) -> None:
    built = Vm(256 * MIB, tdp=True, n_max_mmu_pages=4096)
    build_direct(built.create_vcpu(), max_level=max_level)
    counted = Vm(256 * MIB, tdp=True, n_max_mmu_pages=4096)
    summary = plan_direct(counted.create_vcpu(), max_level=max_level, detail=False).summary()
    assert summary == summary_of_mmu(built)


def test_fast_tables_equal_the_guest_builder() -> None:
    vm, vcpu, _pt = identity_guest(16 * MIB)
    fast = Vm(16 * MIB)
    fast_vcpu = fast_identity_tables(fast, 16 * MIB, 4096)
    build_shadow(vcpu)
    build_shadow(fast_vcpu)
    assert summary_of_mmu(vm) == summary_of_mmu(fast)
    assert sorted(g for *_, g, _ in _leaves(vm)) == sorted(g for *_, g, _ in _leaves(fast))


def test_64_gib_guests_count_exactly() -> None:
    """The 64 GiB counts the lessons show; how long they take is ``bench_mmu.py``'s batch rows."""
    vm = Vm(64 << 30, tdp=True, n_max_mmu_pages=1 << 20)
    tdp = plan_direct(vm.create_vcpu(), max_level=1, detail=False).summary()
    shadow_vm = Vm(64 << 30, n_max_mmu_pages=1 << 20)
    shadow = plan_shadow(fast_identity_tables(shadow_vm, 64 << 30, 4096), detail=False).summary()
    assert tdp.pages == {(4, True): 1, (3, True): 1, (2, True): 64, (1, True): 32768}
    assert shadow.pages == {(4, False): 1, (3, False): 1, (2, False): 64, (1, False): 32768}
    assert tdp.leaves == shadow.leaves == {1: 1 << 24}


def test_batch_refuses_a_used_mmu() -> None:
    _vm, vcpu, _ = identity_guest(4 * MIB)
    vcpu.access(0x1000)
    with pytest.raises(BatchError, match="fresh MMU"):
        build_shadow(vcpu)


def test_batch_refuses_writable_dirty_tables() -> None:
    _vm, vcpu, _ = identity_guest(4 * MIB, dirty=True)
    with pytest.raises(BatchError, match="guest page table"):
        plan_shadow(vcpu)


def test_batch_refuses_the_wrong_kind_of_guest() -> None:
    _vm, vcpu, _ = identity_guest(4 * MIB, tdp=True)
    with pytest.raises(BatchError, match="shadow-paging guest"):
        plan_shadow(vcpu)
    _vm, vcpu, _ = identity_guest(4 * MIB)
    with pytest.raises(BatchError, match="TDP Vm or a guest with paging off"):
        plan_direct(vcpu)
    with pytest.raises(BatchError, match="max_level"):
        plan_direct(vcpu, max_level=4)


def test_batch_refuses_a_budget_it_would_exceed() -> None:
    vm = Vm(256 * MIB, tdp=True, huge_pages=False, n_max_mmu_pages=64)  # needs 131
    with pytest.raises(BatchError, match="budget"):
        build_direct(vm.create_vcpu())
