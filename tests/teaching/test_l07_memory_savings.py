"""Specifications of kvmmu.teaching.lessons.l07_memory_savings: the savings figure, one guest
priced by era and its widget."""

from __future__ import annotations

import pytest
from widget_output import controls, shown

from kvmmu.errors import KvmmuError
from kvmmu.teaching import experiments as X
from kvmmu.teaching.lessons import l07_memory_savings as lesson


def test_lesson_7_figure_has_labelled_axes() -> None:
    sizes = X.savings_by_size("tdp-4k", sizes=(1 << 30, 4 << 30))
    ax = lesson.savings_figure(sizes).axes[0]
    assert ax.get_xlabel() == "guest memory (GiB)" and "MiB" in ax.get_ylabel()
    assert len(ax.lines) == 3  # one line per era


def test_savings_view_rejects_bad_input() -> None:
    with pytest.raises(KvmmuError, match="size_gib"):
        lesson.savings_view(0, "TDP", "4 KiB")
    with pytest.raises(KvmmuError, match="mode must be"):
        lesson.savings_view(4, "EPT", "4 KiB")


def test_savings_widget_prices_the_chosen_guest() -> None:
    widget = lesson.make_savings_widget()
    text, table, _ = lesson.savings_view(4, "TDP", "4 KiB")
    assert shown(widget)[0] == text + "\n" and "agrees" in text
    _size, mode, _pages = controls(widget)
    mode.value = "shadow"
    text, table, _ = lesson.savings_view(4, "shadow", "4 KiB")
    assert shown(widget)[0] == text + "\n"
    assert table.loc["2010 seed", "saved vs pre-2010"] == "0 B"  # no direct pages to save on


def test_small_savings_print_in_kib_and_today_is_drawn_dashed() -> None:
    _, table, _ = lesson.savings_view(1, "shadow", "2 MiB")
    assert not any(str(v).startswith("0.0") for v in table["saved vs pre-2010"])
    sizes = X.savings_by_size("tdp-4k")
    lines = {line.get_label(): line for line in lesson.savings_figure(sizes).axes[0].get_lines()}
    today = next(line for label, line in lines.items() if label.startswith("today"))
    assert today.get_linestyle() == "--" and lines["2010 seed"].get_linestyle() == "-"


@pytest.mark.parametrize("page_size", ["4 KiB", "2 MiB"])
def test_shadow_guests_are_priced_from_the_batch_path_counts(page_size: str) -> None:
    scenario = {"4 KiB": "shadow-4k", "2 MiB": "shadow-2m"}[page_size]
    summary = X.batch_summary(scenario, 2 << 30)
    text, table, _ = lesson.savings_view(2, "shadow", page_size)
    assert f"{summary.n_direct} direct and {summary.n_indirect} indirect" in text
    assert list(table["shadow pages"]) == list(summary.memory()["pages"])
