"""Specifications of kvmmu.teaching.ui: the Output a widget refreshes, and every lesson's widget
updating fast."""

from __future__ import annotations

import time

import pandas as pd
from widget_output import controls

from kvmmu.teaching import ui
from kvmmu.teaching.lessons import l01_guest_page_tables as l01
from kvmmu.teaching.lessons import l02_shadow_paging as l02
from kvmmu.teaching.lessons import l03_mmu_page_role as l03
from kvmmu.teaching.lessons import l04_lazy_gfns as l04
from kvmmu.teaching.lessons import l05_write_protection as l05
from kvmmu.teaching.lessons import l06_unsync as l06
from kvmmu.teaching.lessons import l07_memory_savings as l07
from kvmmu.teaching.lessons import l08_tdp_vs_shadow as l08


def test_render_into_shows_series_as_a_table_and_tuples_in_order() -> None:
    import ipywidgets

    out = ipywidgets.Output()
    ui.render_into(out, lambda: ("first", pd.Series({"a": 1}, name="n")))
    assert [o["output_type"] for o in out.outputs] == ["stream", "display_data"]
    ui.render_into(out, lambda: "again")
    assert len(out.outputs) == 1


def test_each_widget_update_is_fast_at_its_default_size(guest) -> None:  # type: ignore[no-untyped-def]
    memory, pt = guest
    walk_widget = l01.make_walk_widget(memory, pt.cpu())
    steps_widget = l02.make_shadow_steps_widget()
    role_widget = l03.make_role_widget()
    gfn_widget = l04.make_gfn_widget()
    updates = [
        (controls(walk_widget)[0], "0x400000"),
        (controls(steps_widget)[0], len(l02.DEMO_PROGRAM)),
        (controls(role_widget)[0], "5-level"),
        (controls(gfn_widget)[1], 300),
    ]
    for control, value in updates:
        start = time.perf_counter()
        control.value = value
        assert time.perf_counter() - start < 1.0  # the target is 100 ms; 1 s is a loose bound


def test_lessons_5_to_8_widget_updates_are_fast() -> None:
    for produce in (
        lambda: l05.table_write_view(10, 0, False),
        lambda: l06.sync_view(("edit", "access", "invlpg", "access")),
        lambda: l08.mode_view(2000, 20, 10),
        lambda: l07.savings_view(4, "TDP", "4 KiB"),
    ):
        start = time.perf_counter()
        produce()
        assert time.perf_counter() - start < 1.0  # loose bound; measured well under 0.1 s
