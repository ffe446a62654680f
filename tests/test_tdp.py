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
