"""Two-dimensional walk cost (kvmmu.kvm.tdp, concepts of ``tdp_mmu.c``)."""

import pytest

from kvmmu.hw.guest import GuestPageTables
from kvmmu.hw.x86 import PagingMode
from kvmmu.kvm.tdp import (
    WalkCostError,
    measure_refs,
    shadow_refs,
    two_dimensional_refs,
    walk_cost_table,
)
from kvmmu.kvm.vcpu import Vm


def test_formula_gives_24_for_4_on_4_and_35_for_5_on_5() -> None:
    assert two_dimensional_refs(4, 4) == 24
    assert two_dimensional_refs(5, 5) == 35
    assert two_dimensional_refs(4, 5) == 29


def test_shadow_miss_reads_one_entry_per_level() -> None:
    assert shadow_refs(4) == 4


@pytest.mark.parametrize("bad", [0, 6, True, "4"])
def test_bad_levels_raise(bad: object) -> None:
    with pytest.raises(WalkCostError, match="from 1 to 5"):
        two_dimensional_refs(bad, 4)  # type: ignore[arg-type]


def _guest(tdp: bool, tdp_levels: int = 4, huge: bool = False) -> Vm:
    vm = Vm(4 << 20, tdp=tdp, tdp_levels=tdp_levels, huge_pages=huge)
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4)
    pt.map(0x400000, 0x100000)
    vm.create_vcpu(pt.cpu())
    return vm


def test_measured_tdp_miss_is_24_references() -> None:
    assert measure_refs(_guest(True), 0x400123) == 24


def test_measured_shadow_miss_is_4_references() -> None:
    assert measure_refs(_guest(False), 0x400123) == 4


def test_large_tdp_leaves_shorten_every_nested_walk() -> None:
    # 2 MiB TDP leaves: each of the 5 nested walks takes 3 steps instead of 4
    assert measure_refs(_guest(True, huge=True), 0x400123) == 4 * 4 + 3


def test_walk_cost_table_formula_matches_simulation() -> None:
    table = walk_cost_table()
    assert table["match"].all()
    assert table.loc[("TDP", 5, 5), "measured"] == 35


def test_measure_refs_needs_a_vcpu() -> None:
    with pytest.raises(WalkCostError, match="Vcpu"):
        measure_refs(Vm(4 << 20), 0)


def test_tdp_walks_keep_the_path_to_a_level_1_table_until_a_flush() -> None:
    """SDM 28.4.3: the CPU may keep the EPT entries above a level-1 table (paging-structure
    caches) until an INVEPT, which KVM issues with every TLB flush. A level-2 TDP entry cleared
    behind the MMU's back goes unnoticed by the next walks of that 2 MiB; after a flush the
    walk reads it again and takes a TDP fault."""
    vm = Vm(4 << 20, tdp=True, huge_pages=False)
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4)
    for page in range(3):
        pt.map(0x400000 + page * 0x1000, 0x100000 + page * 0x1000)
    vcpu = vm.create_vcpu(pt.cpu())
    assert vcpu.access(0x400000) == 0x100000  # maps gfns 0x100.. (prefetch: 0x101, 0x102)
    [(leaf, _)] = vm.mmu.rmap.sptes(0x101, 1)
    [(pde_page, pde_index)] = leaf.parent_ptes
    pde_page.spt[pde_index] = 0  # behind the MMU's back: no flush
    taken = vm.stats.pf_taken
    assert vcpu.access(0x401000) == 0x101000 and vm.stats.pf_taken == taken  # the kept path
    vcpu.tlb.flush()
    assert vcpu.access(0x402000) == 0x102000 and vm.stats.pf_taken > taken  # read again


def test_tdp_walks_keep_the_guest_physical_mappings_of_guest_tables_until_a_flush() -> None:
    """SDM 28.4.1: the TLB caches guest-physical mappings, those of the guest's own page tables
    among them, until an INVEPT (KVM's TLB flush). A TDP leaf for the guest's PML4 cleared
    behind the MMU's back goes unnoticed by the next walks; after a flush the walk translates
    the PML4's gpa again and takes a TDP fault."""
    vm = Vm(4 << 20, tdp=True, huge_pages=False)
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4)
    for page in range(3):
        pt.map(0x400000 + page * 0x1000, 0x100000 + page * 0x1000)
    vcpu = vm.create_vcpu(pt.cpu())
    assert vcpu.access(0x400000) == 0x100000
    [(leaf, index)] = vm.mmu.rmap.sptes(vcpu.cpu.cr3 >> 12, 1)  # the PML4's frame
    leaf.spt[index] = 0  # behind the MMU's back: no flush
    taken = vm.stats.pf_taken
    assert vcpu.access(0x401000) == 0x101000 and vm.stats.pf_taken == taken  # kept
    assert vcpu.last_refs == 24  # counted all the same
    vcpu.tlb.flush()
    assert vcpu.access(0x402000) == 0x102000 and vm.stats.pf_taken > taken  # read again
