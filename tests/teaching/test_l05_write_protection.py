"""Specifications of kvmmu.teaching.lessons.l05_write_protection: a guest writing its own page
tables, the counters its stores move, the table-write view and widget, the counters exercise."""

from __future__ import annotations

import base64

from widget_output import controls, shown

from kvmmu.teaching.lessons import l05_write_protection as lesson
from kvmmu.teaching.ui import figure_png


def test_write_flooding_zaps_the_page_directory_on_the_third_store() -> None:
    c = lesson.table_write_counters(0, 4)
    assert c["mmu_pde_zapped"] == 2 and c["mmu_flooded"] == 1
    assert c["pf_emulate"] == 3  # the fourth store finds the table unshadowed: no emulation
    assert c["pf_fixed"] == 1


def test_pte_store_of_zero_is_not_an_update() -> None:
    assert lesson.table_write_counters(2, 0)["mmu_pte_updated"] == 2
    cleared = lesson.table_write_counters(2, 0, clear=True)
    assert cleared["mmu_pte_updated"] == 0 and cleared["mmu_pte_write"] == 2


def test_table_write_view_counts_one_emulation_per_pte_store() -> None:
    frame, fig = lesson.table_write_view(10, 0, False)
    assert frame.loc["pf_emulate", "count"] == 20  # 200 reads, 10 stores per 100
    assert frame.loc["mmu_pte_updated", "count"] == 20
    assert fig.axes[0].get_xlabel() == "events in 200 guest reads"


def test_table_write_widget_shows_the_counters_for_the_chosen_rates() -> None:
    widget = lesson.make_table_write_widget()
    frame, _ = lesson.table_write_view(10, 0, False)
    texts = shown(widget)
    assert texts[0] == frame.to_string() and texts[1].startswith("<IPython.core.display.Image")
    pte, _pde, unsync = controls(widget)
    pte.value, unsync.value = 30, True
    frame, _ = lesson.table_write_view(30, 0, True)
    assert shown(widget)[0] == frame.to_string()
    assert frame.loc["pf_emulate", "count"] == 0 and frame.loc["mmu_unsync", "count"] == 1


def test_table_write_widget_draws_what_the_view_draws() -> None:
    # the widget keeps one figure and redraws its changing parts: the same PNG as the view's
    widget = lesson.make_table_write_widget()
    pte, pde, unsync = controls(widget)
    for setting in ((10, 0, False), (100, 20, False), (100, 20, True), (0, 0, True)):
        pte.value, pde.value, unsync.value = setting
        image = widget.children[-1].outputs[1]["data"]["image/png"]
        assert base64.b64decode(image) == figure_png(lesson.table_write_view(*setting)[1])


def test_counters_match_the_mmu_and_hint_names_the_counter() -> None:
    p = next(
        lesson.counters_problem(s) for s in range(50) if lesson.counters_problem(s).pde_writes >= 3
    )
    right = dict(p._counters)
    assert right["mmu_flooded"] == 1 and right["mmu_pde_zapped"] == 2
    assert lesson.check_counters(p, right).passed
    msg = lesson.check_counters(p, {**right, "mmu_flooded": 0}).message
    assert msg.startswith("1 counter(s) wrong") and "third time" in msg
    msg = lesson.check_counters(p, {**right, "mmu_pte_updated": 99}).message
    assert "write a present entry" in msg
    assert "missing: mmu_pte_write," in lesson.check_counters(p, {"pf_emulate": 1}).message


def test_unsync_removes_the_pte_store_exits() -> None:
    wp = lesson.table_write_workload(20)
    unsync = lesson.table_write_workload(20, unsync=True)
    assert wp["pf_emulate"] == 40 and wp["mmu_pte_updated"] == 40
    assert unsync["pf_emulate"] == 0 and unsync["mmu_unsync"] == 1


def test_pte_updated_hint_follows_the_kind_of_store() -> None:
    seen = set()
    for seed in range(40):
        p = lesson.counters_problem(seed)
        wrong = dict(p._counters)
        wrong["mmu_pte_updated"] += 1
        message = lesson.check_counters(p, wrong).message
        assert ("write zero" in message) == p.clear
        assert ("write a present entry" in message) == (not p.clear)
        seen.add(p.clear)
    assert seen == {True, False}


def test_leaf_table_gfn_is_the_frame_the_pde_points_at() -> None:
    g = lesson.table_writer()
    sps = g.vm.mmu.pages_of(g.leaf_table_gfn())
    assert [sp.level for sp in sps] == [1]
