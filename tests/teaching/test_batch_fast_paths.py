"""Specifications of the batch path's bulk copies: the guest tables ``fast_identity_tables``
writes, and the accessed bits and writable leaves the summary mode of ``plan_shadow`` finds,
are those of the builders and walks that go one page at a time."""

from __future__ import annotations

import numpy as np
import pytest

from kvmmu.hw.capture import ptdump
from kvmmu.hw.guest import GuestPageTables
from kvmmu.hw.memory import MemslotFlag
from kvmmu.hw.x86 import PagingMode
from kvmmu.kvm.vcpu import Vm
from kvmmu.teaching import batch
from kvmmu.teaching.batch import BatchError, build_shadow, plan_shadow
from kvmmu.teaching.workloads import fast_identity_tables, identity_guest

MIB = 1 << 20


def table_frames(vm: Vm) -> dict[int, bytes]:
    """Every non-zero guest frame of ``vm``, by gfn: the guest's tables and what they hold."""
    frames = {}
    for slot in vm.memory.slots:
        for gfn in range(slot.base_gfn, slot.end_gfn):
            page = vm.memory.page(gfn)
            if page.any():
                frames[gfn] = page.tobytes()
    return frames


@pytest.mark.parametrize(
    ("page_size", "size"),
    [(4096, 18 * MIB), (2 * MIB, 1024 * MIB + 6 * MIB)],  # 2 MiB: a second, partly used PD
)
def test_fast_tables_map_what_the_guest_builder_maps(page_size: int, size: int) -> None:
    slow, _, pt = identity_guest(size, page_size=page_size, writable=True)
    assert pt is not None
    fast = Vm(size)
    fast_vcpu = fast_identity_tables(fast, size, page_size)
    columns = ["gva", "level", "page_size", "pte"]
    want = ptdump(slow.memory, pt.cpu())[columns]
    got = ptdump(fast.memory, fast_vcpu.cpu)[columns]
    assert len(got) == size // page_size
    assert got.reset_index(drop=True).equals(want.reset_index(drop=True))


def test_fast_tables_are_the_entries_of_one_table_per_2_mib() -> None:
    vm = Vm(8 * MIB)
    fast_identity_tables(vm, 8 * MIB, 4096)
    npages = (8 * MIB) >> 12
    first_pt = npages - 4  # root, PDPT, one PD, then the four page tables
    for k in range(4):
        words = vm.memory.page(first_pt + k)
        expect = (np.arange(512, dtype=np.uint64) + np.uint64(512 * k)) << np.uint64(12)
        assert (words == (expect | np.uint64(0b11))).all()


@pytest.mark.parametrize("chunk", [512, 3])
def test_summary_mode_sets_the_accessed_bits_of_the_full_build(
    chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batch, "_LEAF_CHUNK", chunk)  # 3: many chunks, and a short last one
    size = 40 * MIB
    built, counted = Vm(size, n_max_mmu_pages=4096), Vm(size, n_max_mmu_pages=4096)
    for vm in (built, counted):
        vm.set_memslot_flags(0, MemslotFlag.LOG_DIRTY_PAGES)
    full = build_shadow(fast_identity_tables(built, size, 4096))
    summary = plan_shadow(fast_identity_tables(counted, size, 4096), detail=False).summary()
    assert summary == full
    assert table_frames(counted) == table_frames(built)
    logged = counted.get_dirty_log(0)
    assert logged == built.get_dirty_log(0)
    assert len(logged) == 20 + 3  # the walks set A in 20 page tables, the PD, PDPT and root


def guest_with_dirty_data(vm: Vm) -> GuestPageTables:
    """Tables at the bottom of memory; 8 MiB of dirty writable user data well above them."""
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4)
    pt.map(0x4000_0000, 16 * MIB, length=8 * MIB, user=True, dirty=True)
    pt.map(0x5000_0000, 4 * MIB, length=2 * MIB, writable=False, user=True)
    return pt


def test_summary_mode_finds_the_writable_leaves_the_full_build_maps() -> None:
    built, counted = Vm(32 * MIB), Vm(32 * MIB)
    full = build_shadow(built.create_vcpu(guest_with_dirty_data(built).cpu()))
    pt = guest_with_dirty_data(counted)
    summary = plan_shadow(counted.create_vcpu(pt.cpu()), detail=False).summary()
    assert summary == full
    assert table_frames(counted) == table_frames(built)


def test_summary_mode_refuses_dirty_writable_leaves_over_a_guest_table() -> None:
    _vm, vcpu, _ = identity_guest(8 * MIB, dirty=True)
    with pytest.raises(BatchError, match="hold a guest page table"):
        plan_shadow(vcpu, detail=False)


@pytest.mark.parametrize("page_size", [4096, 2 * MIB])
@pytest.mark.parametrize("host_huge_pages", [False, True])
@pytest.mark.parametrize("size", [2 * MIB, 6 * MIB, 1024 * MIB, 1024 * MIB + 2 * MIB])
def test_identity_layout_counts_equal_the_batch_path(
    page_size: int, host_huge_pages: bool, size: int
) -> None:
    # 2 MiB: one region, which holds the tables; 1 GiB + 2 MiB: a second PD with one entry
    vm = Vm(size, huge_pages=host_huge_pages, n_max_mmu_pages=1 << 16)
    planned = plan_shadow(fast_identity_tables(vm, size, page_size), detail=False).summary()
    assert batch.identity_shadow_summary(size, page_size, host_huge_pages) == planned


def test_identity_layout_counts_refuse_what_the_layout_cannot_build() -> None:
    with pytest.raises(BatchError, match="multiple of 2 MiB"):
        batch.identity_shadow_summary(3 * MIB, 4096, True)
    with pytest.raises(BatchError, match="page_size"):
        batch.identity_shadow_summary(4 * MIB, 8192, True)
    with pytest.raises(BatchError, match="host_huge_pages"):
        batch.identity_shadow_summary(4 * MIB, 4096, "yes")  # type: ignore[arg-type]
