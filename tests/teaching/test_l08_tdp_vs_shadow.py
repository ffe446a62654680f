"""Specifications of kvmmu.teaching.lessons.l08_tdp_vs_shadow: the walk-cost and exit figures, the
cost model, the mode view and widget, and the mode exercise."""

from __future__ import annotations

import pytest
from widget_output import controls, shown

from kvmmu.errors import KvmmuError
from kvmmu.teaching import experiments as X
from kvmmu.teaching.lessons import l08_tdp_vs_shadow as lesson


def test_lesson_8_figures_have_labelled_axes() -> None:
    ax = lesson.walk_cost_figure(X.walk_costs()).axes[0]
    assert ax.get_xlabel() == "memory references per TLB miss"
    exits = X.pte_write_exits((0.0, 0.2), ops=60)
    ax = lesson.pte_exit_figure(exits).axes[0]
    assert len(ax.patches) == 3 * len(exits) and ax.get_xlabel() == "exits per 1000 operations"
    names = [t.get_text() for t in ax.get_legend().get_texts()]
    assert names == list(lesson.EXIT_CAUSES.values()) and names[2].startswith("other")
    # TDP's bars are its other exits alone, at their absolute size
    tdp = exits.xs("TDP", level="paging")
    assert (tdp["exits on pte writes"] == 0).all() and (tdp["other exits"] > 0).any()


def test_mode_view_rejects_bad_input() -> None:
    with pytest.raises(KvmmuError, match="non-negative"):
        lesson.mode_view(-1, 0, 0)


def test_mode_widget_states_the_model_and_the_winner() -> None:
    widget = lesson.make_mode_widget()
    text, table, _ = lesson.mode_view(2000, 20, 10)
    texts = shown(widget)
    assert texts[0] == text + "\n" and texts[1] == table.to_string()
    tlb, writes, _cr3 = controls(widget)
    tlb.value, writes.value = 100, 400
    assert shown(widget)[0].endswith("cheaper: tdp\n")


def test_mode_costs_and_problem() -> None:
    c = lesson.mode_costs(1000, 0, 0)
    assert c.loc["tdp", "walk cycles"] == 1000 * 24 * lesson.REF_CYCLES
    assert c.loc["shadow", "walk cycles"] == 1000 * 4 * lesson.REF_CYCLES
    c5 = lesson.mode_costs(1000, 10, 2, guest_levels=5, tdp_levels=5)
    assert c5.loc["tdp", "walk cycles"] == 1000 * 35 * lesson.REF_CYCLES
    assert c5.loc["shadow", "exit cycles"] == 12 * lesson.EXIT_CYCLES
    assert lesson.mode_winner(10000, 0, 0) == "shadow" and lesson.mode_winner(100, 50, 10) == "tdp"
    p = next(
        lesson.mode_problem(s)
        for s in range(50)
        if lesson.mode_winner(
            lesson.mode_problem(s).tlb_misses,
            lesson.mode_problem(s).pt_writes,
            lesson.mode_problem(s).cr3_loads,
        )
        == "shadow"
    )
    assert lesson.check_mode(p, "shadow").passed
    assert "weigh the walks" in lesson.check_mode(p, "tdp").message
    assert "no answer yet" in lesson.check_mode(p, "").message
    with pytest.raises(KvmmuError):
        lesson.check_mode(p, "ept")


def test_mode_view_keeps_one_absolute_scale() -> None:
    small = lesson.mode_view(100, 0, 0)[2].axes[0].get_xlim()
    large = lesson.mode_view(20000, 500, 200)[2].axes[0].get_xlim()
    assert small == large == (0.0, lesson.MODE_SCALE_KCYCLES)
