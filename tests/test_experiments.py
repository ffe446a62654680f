"""Experiments of notebooks 7 and 8 (kvmmu.teaching.experiments), checked against hand
calculations."""

import pytest

from kvmmu.teaching.experiments import (
    ExperimentError,
    batch_summary,
    expected_pages,
    formula_table,
    pte_write_exits,
    savings_by_size,
    savings_scenarios,
    tdp_vs_shadow_memory,
    walk_costs,
)

GIB = 1 << 30
MIB = 1 << 20


def test_one_gib_tdp_guest_with_4k_leaves_needs_515_direct_pages() -> None:
    # by hand: 512 level-1 + 1 level-2 + 1 level-3 + 1 root; all direct
    s = batch_summary("tdp-4k", GIB)
    assert s.pages == {(1, True): 512, (2, True): 1, (3, True): 1, (4, True): 1}
    mem = s.memory()
    assert mem.loc["2010 seed", "saved vs pre-2010"] == 515 * 4096


def test_shadow_4k_guest_is_all_indirect_and_saves_nothing() -> None:
    s = batch_summary("shadow-4k", GIB)
    assert (s.n_direct, s.n_indirect) == (0, 515)
    assert s.memory().loc["2010 seed", "saved vs pre-2010"] == 0


def test_shadow_2m_guest_has_one_direct_page_under_its_tables() -> None:
    s = batch_summary("shadow-2m", 4 * GIB)
    # 4 PDs + PDPT + PML4 shadowed; the 2 MiB page holding the 6 tables is split
    assert (s.n_direct, s.n_indirect) == (1, 6)
    assert s.leaves == {2: 4 * 512 - 1, 1: 512}


def test_savings_by_size_matches_the_closed_form_up_to_64_gib() -> None:
    table = savings_by_size("tdp-4k")
    assert table["match"].all()
    assert table.loc[64.0, "pages"] == 32768 + 64 + 1 + 1
    assert table.loc[64.0, "saved by 2010"] == 32834 * 4096


@pytest.mark.parametrize("scenario", ["tdp-huge", "shadow-4k", "shadow-2m"])
def test_every_scenario_matches_its_formula(scenario: str) -> None:
    table = savings_by_size(scenario, sizes=(GIB, 3 * GIB + 2 * MIB))
    assert table["match"].all()


def test_expected_pages_by_hand() -> None:
    assert expected_pages("tdp-huge", 3 * GIB + 2 * MIB) == (1 + 1 + 1, 0)
    assert expected_pages("shadow-2m", 64 * GIB) == (1, 66)


def test_formula_table_equals_batch_memory() -> None:
    assert formula_table("tdp-4k", 2 * GIB).equals(batch_summary("tdp-4k", 2 * GIB).memory())


def test_savings_scenarios_is_complete() -> None:
    """Complete and exact; its speed is measured by ``benchmarks/``, not asserted here."""
    table = savings_scenarios()
    scenarios = set(table.index.get_level_values("scenario"))
    assert scenarios == {"tdp-4k", "tdp-huge", "shadow-4k", "shadow-2m", "4 processes"}
    # 64 MiB TDP with 4 KiB leaves: 32 + 1 + 1 + 1 direct pages
    assert table.loc[("tdp-4k", "2010 seed"), "saved vs pre-2010"] == 35 * 4096


def test_bad_arguments_raise() -> None:
    with pytest.raises(ExperimentError, match="scenario"):
        batch_summary("ept", GIB)
    with pytest.raises(ExperimentError, match="multiple of 2 MiB"):
        batch_summary("tdp-4k", GIB + 4096)


def test_walk_costs_agree() -> None:
    assert walk_costs()["match"].all()


def test_pte_write_exits_tdp_has_none_from_pte_stores() -> None:
    table = pte_write_exits(rates=(0.0, 0.3), ops=60)
    assert (table.xs("TDP", level="paging")["exits on pte writes"] == 0).all()
    assert (table.loc[0.0, "pte writes"] == 0).all()
    no_unsync = table.loc[(0.3, "shadow, no unsync")]
    assert no_unsync["exits on pte writes"] >= no_unsync["pte writes"]


def test_tdp_vs_shadow_memory_by_hand() -> None:
    table = tdp_vs_shadow_memory(GIB)
    assert table.loc["tdp-4k", "pages"] == 515
    assert table.loc["tdp-huge", "pages"] == 2  # root + one level-3 page with a 1 GiB leaf
    assert table.loc["shadow-4k", "bytes today"] == 515 * (4096 + 4096 + 184)
