"""The reference tables in kvmmu/data/ load, are well-formed, and are what the experiments use."""

from pathlib import Path

import pytest

from kvmmu import reference
from kvmmu.kvm import accounting
from kvmmu.reference import ReferenceDataError, Scenario, kernel_eras, scenario, scenarios
from kvmmu.teaching import experiments


def test_eras_are_the_three_kernel_eras_in_order() -> None:
    assert list(kernel_eras().index) == ["pre-2010", "2010 seed", "today"]
    assert accounting.ERAS == ("pre-2010", "2010 seed", "today")


def test_only_the_pre_2010_era_gives_direct_pages_a_gfns_array() -> None:
    """The seed change (2032a93d66fa): direct pages stop getting gfns from v2.6.36 on."""
    eras = kernel_eras()
    assert eras["gfns_for_direct_pages"].to_dict() == {
        "pre-2010": True,
        "2010 seed": False,
        "today": False,
    }
    assert (eras["gfns_bytes_indirect"] == 512 * 8).all()
    assert eras.loc["2010 seed", "since"] == "2032a93d66fa"


def test_accounting_uses_the_struct_sizes_of_the_table() -> None:
    for era, size in kernel_eras()["struct_bytes_approx"].items():
        assert accounting.STRUCT_BYTES[str(era)] == size
        assert accounting.page_bytes(str(era), direct=False) == 4096 + 4096 + size


def test_every_era_row_cites_its_source() -> None:
    assert all(len(s) > 40 for s in kernel_eras()["source"])


def test_scenarios_table_drives_the_experiments() -> None:
    assert tuple(scenarios().index) == experiments.SCENARIOS
    assert scenario("shadow-2m") == Scenario(
        "shadow-2m", False, True, 2 << 20, scenarios().loc["shadow-2m", "description"]
    )
    assert scenario("tdp-4k").tdp and not scenario("tdp-4k").host_huge_pages


def test_unknown_scenario_names_the_known_ones() -> None:
    with pytest.raises(ReferenceDataError, match="tdp-4k"):
        scenario("tdp-16k")


def test_missing_table_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(reference, "DATA_DIR", tmp_path)
    kernel_eras.cache_clear()
    try:
        with pytest.raises(ReferenceDataError, match="reinstall it"):
            kernel_eras()
    finally:
        kernel_eras.cache_clear()


def test_a_bad_yes_no_cell_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "workloads").mkdir()
    (tmp_path / "workloads" / "scenarios.csv").write_text(
        "scenario,tdp,host_huge_pages,guest_page_size,description\nx,maybe,no,4096,d\n"
    )
    monkeypatch.setattr(reference, "DATA_DIR", tmp_path)
    scenarios.cache_clear()
    try:
        with pytest.raises(ReferenceDataError, match="'maybe'"):
            scenarios()
    finally:
        scenarios.cache_clear()
