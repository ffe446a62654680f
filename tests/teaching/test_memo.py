"""Specifications of kvmmu.teaching.memo and of the lesson functions it caches: a cached result
is the uncached one, a revisit returns the same values, and no caller can change what the
next one gets."""

from __future__ import annotations

import pandas as pd
import pytest

from kvmmu.errors import KvmmuError
from kvmmu.teaching import memo
from kvmmu.teaching.experiments import GIB, MIB, ExperimentError, batch_summary
from kvmmu.teaching.lessons import l03_mmu_page_role as l03
from kvmmu.teaching.lessons import l05_write_protection as l05
from kvmmu.teaching.problems import ExerciseError


@pytest.fixture(autouse=True)
def empty_caches() -> None:
    memo.clear()


def test_a_pure_function_runs_once_per_distinct_argument_until_cleared() -> None:
    calls: list[tuple[object, ...]] = []

    @memo.pure(maxsize=2)
    def square(x: int, *, plus: int = 0) -> int:
        calls.append((x, plus))
        return x * x + plus

    assert [square(3), square(3), square(3, plus=1), square(3)] == [9, 9, 10, 9]
    assert calls == [(3, 0), (3, 1)]
    square(4)  # a third entry pushes out the least recently used one, (3, plus=1)
    square(3, plus=1)
    assert calls[-1] == (3, 1) and len(calls) == 4
    memo.clear()
    square(4)
    assert calls[-1] == (4, 0) and len(calls) == 5


def test_bools_ints_and_unhashable_arguments_are_not_confused() -> None:
    seen: list[object] = []

    @memo.pure()
    def kind(value: object) -> str:
        seen.append(value)
        if isinstance(value, bool):
            raise KvmmuError(f"value must be an int, got {value!r}")
        return type(value).__name__

    assert kind(1) == "int"
    with pytest.raises(KvmmuError, match="got True"):
        kind(True)  # not the cached kind(1): equal, but typed apart
    with pytest.raises(KvmmuError):
        kind(True)  # errors are not cached: the check runs again
    assert kind([1, 2]) == "list" and kind([1, 2]) == "list"  # unhashable: runs uncached
    assert seen == [1, True, True, [1, 2], [1, 2]]


def test_each_caller_gets_its_own_copy() -> None:
    first = l03.setup_shadow_pages("4-level")
    first.loc[first.index[0], "level"] = 99
    first["extra"] = 1
    again = l03.setup_shadow_pages("4-level")
    assert "extra" not in again.columns
    assert again["level"].max() == 4
    counters = l05.table_write_workload(10)
    counters[:] = -1
    assert (l05.table_write_workload(10) >= 0).all()
    summary = batch_summary("shadow-4k", 64 * MIB)
    summary.pages.clear()
    assert batch_summary("shadow-4k", 64 * MIB).n_pages > 0


SETUPS = [
    (mode, wp, tdp, large, huge)
    for mode in ("paging off", "32-bit", "PAE", "4-level", "5-level")
    for wp in (True, False)
    for tdp in (False, True)
    for large in (False, True)
    for huge in (True, False)
]


def test_cached_setups_equal_uncached_ones_and_revisits_return_the_same() -> None:
    uncached = l03.setup_shadow_pages.__wrapped__  # type: ignore[attr-defined]
    for setup in SETUPS:
        first = l03.setup_shadow_pages(*setup)
        pd.testing.assert_frame_equal(first, uncached(*setup))
        pd.testing.assert_frame_equal(l03.setup_shadow_pages(*setup), first)


@pytest.mark.parametrize(
    ("pte", "pde", "unsync"), [(0, 0, False), (10, 0, False), (100, 20, False), (37, 5, True)]
)
def test_cached_table_writes_equal_uncached_ones(pte: int, pde: int, unsync: bool) -> None:
    uncached = l05.table_write_workload.__wrapped__  # type: ignore[attr-defined]
    first = l05.table_write_workload(pte, pde, unsync=unsync)
    pd.testing.assert_series_equal(first, uncached(pte, pde, unsync=unsync))
    pd.testing.assert_series_equal(l05.table_write_workload(pte, pde, unsync=unsync), first)
    counters = l05.table_write_counters.__wrapped__  # type: ignore[attr-defined]
    pd.testing.assert_series_equal(
        l05.table_write_counters(pte, pde, unsync=unsync), counters(pte, pde, unsync=unsync)
    )


@pytest.mark.parametrize("scenario", ["tdp-4k", "tdp-huge", "shadow-4k", "shadow-2m"])
def test_cached_batch_summaries_equal_uncached_ones(scenario: str) -> None:
    uncached = batch_summary.__wrapped__  # type: ignore[attr-defined]
    for size in (2 * MIB, 64 * MIB, GIB + 2 * MIB):
        first = batch_summary(scenario, size)
        assert first == uncached(scenario, size)
        assert batch_summary(scenario, size) == first
        assert batch_summary(scenario, size).memory().equals(first.memory())


def test_cached_functions_still_refuse_bad_arguments() -> None:
    l05.table_write_workload(1)
    with pytest.raises(ExerciseError, match="pte_rate"):
        l05.table_write_workload(True)
    with pytest.raises(ExerciseError, match="pte_rate"):
        l05.table_write_workload([1])  # type: ignore[arg-type]
    with pytest.raises(ExperimentError, match="scenario must be one of"):
        batch_summary(["tdp-4k"], GIB)  # type: ignore[arg-type]
    with pytest.raises(KvmmuError, match="mode"):
        l03.setup_shadow_pages("6-level")
