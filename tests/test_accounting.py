"""Memory per shadow page by kernel era (kvmmu.kvm.accounting, ``kvm_mmu_alloc_page``)."""

import pytest

from kvmmu.errors import KvmmuError
from kvmmu.kvm.accounting import (
    ERAS,
    STRUCT_BYTES,
    EraError,
    expected_bytes,
    gfns_bytes,
    memory_by_era,
    memory_from_counts,
    page_bytes,
)
from kvmmu.teaching.workloads import full_touch


def test_pre_2010_allocated_a_gfns_page_for_every_page() -> None:
    assert gfns_bytes("pre-2010", True) == gfns_bytes("pre-2010", False) == 4096


def test_the_seed_change_drops_gfns_for_direct_pages_only() -> None:
    assert gfns_bytes("2010 seed", True) == 0
    assert gfns_bytes("2010 seed", False) == 4096


def test_today_indirect_pages_hold_shadowed_translation_of_512_u64() -> None:
    assert gfns_bytes("today", False) == 512 * 8
    assert gfns_bytes("today", True) == 0


def test_page_bytes_is_spt_plus_gfns_plus_struct() -> None:
    for era in ERAS:
        assert page_bytes(era, True) == 4096 + gfns_bytes(era, True) + STRUCT_BYTES[era]
    assert page_bytes("pre-2010", True) - page_bytes("2010 seed", True) == 4096


def test_expected_bytes_closed_form_by_hand() -> None:
    # 515 direct pages: 2010 saves exactly 515 gfns pages against pre-2010
    saved = expected_bytes(515, 0, "pre-2010") - expected_bytes(515, 0, "2010 seed")
    assert saved == 515 * 4096
    assert expected_bytes(0, 10, "2010 seed") == 10 * (8192 + 160)


def test_unknown_era_and_bad_counts_raise_typed_errors() -> None:
    with pytest.raises(EraError, match="pass one of"):
        page_bytes("2015", True)
    with pytest.raises(KvmmuError, match="non-negative"):
        expected_bytes(-1, 0, "today")


def test_memory_by_era_of_a_touched_tdp_guest_matches_the_formula() -> None:
    result = full_touch(4 << 20, tdp=True)  # 2 L1 + L2 + L3 + root: 5 direct pages
    frame = memory_by_era(result.vm)
    assert list(frame.index) == list(ERAS)
    assert frame.loc["pre-2010", "direct pages"] == 5
    assert frame.loc["2010 seed", "gfns bytes"] == 0  # measured from the simulated pages
    assert frame.loc["2010 seed", "saved vs pre-2010"] == 5 * 4096
    for era in ERAS:
        assert frame.loc[era, "total bytes"] == expected_bytes(5, 0, era)
    assert frame.equals(memory_from_counts(5, 0))


def test_memory_by_era_of_shadow_pages_saves_nothing_in_2010() -> None:
    result = full_touch(4 << 20, tdp=False)
    frame = memory_by_era(result.vm)
    assert frame.loc["2010 seed", "indirect pages"] == 5
    assert frame.loc["2010 seed", "gfns bytes"] == 5 * 4096
    assert frame.loc["2010 seed", "saved vs pre-2010"] == 0


def test_memory_by_era_rejects_other_objects() -> None:
    with pytest.raises(KvmmuError, match="pass a Vm or an Mmu"):
        memory_by_era(42)
