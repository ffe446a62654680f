"""Specifications of kvmmu.teaching.widgets: each widget shows what its pure function computes."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd

from kvmmu.teaching import viz, widgets


def _shown(widget: Any) -> list[str]:
    """The text the widget's Output holds: stdout text and the plain-text form of tables."""
    out = widget.children[-1]
    shown = []
    for item in out.outputs:
        if item["output_type"] == "stream":
            shown.append(item["text"])
        else:
            shown.append(item["data"]["text/plain"])
    return shown


def _controls(widget: Any) -> list[Any]:
    return list(widget.children[0].children)


def test_walk_widget_shows_the_walk_for_the_typed_address(guest) -> None:  # type: ignore[no-untyped-def]
    memory, pt = guest
    cpu = pt.cpu()
    widget = widgets.make_walk_widget(memory, cpu)
    assert _shown(widget) == [viz.walk_text(memory, cpu, "0x400123", "read", 3) + "\n"]
    address, access, cpl = _controls(widget)
    address.value = "0x500000"
    access.value = "write"
    cpl.value = 0
    assert _shown(widget) == [viz.walk_text(memory, cpu, "0x500000", "write", 0) + "\n"]


def test_walk_widget_shows_a_typing_error_instead_of_a_traceback(guest) -> None:  # type: ignore[no-untyped-def]
    memory, pt = guest
    widget = widgets.make_walk_widget(memory, pt.cpu())
    _controls(widget)[0].value = "0xZZ"
    (text,) = _shown(widget)
    assert text.startswith("error: could not read '0xZZ'")


def test_walk_widget_can_draw_the_chain(guest) -> None:  # type: ignore[no-untyped-def]
    memory, pt = guest
    widget = widgets.make_walk_widget(memory, pt.cpu(), draw=True)
    kinds = [item["output_type"] for item in widget.children[-1].outputs]
    assert kinds == ["stream", "display_data"]
    assert "image/png" in widget.children[-1].outputs[1]["data"]


def test_shadow_steps_widget_follows_the_slider_and_the_next_button() -> None:
    widget = widgets.make_shadow_steps_widget()
    slider, step, reset = _controls(widget)

    def expected(k: int) -> list[str]:
        text, pages, counters = viz.shadow_step_view(k)
        return [text + "\n", repr(pages), repr(counters)]

    assert _shown(widget) == expected(0)
    step.click()
    step.click()
    assert slider.value == 2
    assert _shown(widget) == expected(2)
    slider.value = len(viz.DEMO_PROGRAM)
    step.click()  # already at the end: stays
    assert _shown(widget) == expected(len(viz.DEMO_PROGRAM))
    reset.click()
    assert _shown(widget) == expected(0)


def test_role_widget_shows_the_pages_of_the_chosen_setup() -> None:
    widget = widgets.make_role_widget()
    mode, wp, tdp, large, huge = _controls(widget)
    assert _shown(widget) == [repr(viz.setup_shadow_pages("4-level"))]
    mode.value = "32-bit"
    large.value = True
    huge.value = False
    wp.value = False
    assert _shown(widget) == [repr(viz.setup_shadow_pages("32-bit", False, False, True, False))]
    tdp.value = True
    assert _shown(widget) == [repr(viz.setup_shadow_pages("32-bit", False, True, True, False))]


def test_gfn_widget_shows_get_gfn_of_the_chosen_page_and_index() -> None:
    vm = viz.demo_mixed_vm()
    widget = widgets.make_gfn_widget(vm)
    page, index = _controls(widget)
    direct = next(sp for sp in vm.mmu.active if sp.direct)
    page.value = direct.serial
    index.value = 77
    assert _shown(widget) == [viz.gfn_lookup(vm, direct.serial, 77) + "\n"]
    assert "nothing stored" in _shown(widget)[0]


def test_render_into_shows_series_as_a_table_and_tuples_in_order() -> None:
    import ipywidgets

    out = ipywidgets.Output()
    widgets.render_into(out, lambda: ("first", pd.Series({"a": 1}, name="n")))
    assert [o["output_type"] for o in out.outputs] == ["stream", "display_data"]
    widgets.render_into(out, lambda: "again")
    assert len(out.outputs) == 1


def test_each_widget_update_is_fast_at_its_default_size(guest) -> None:  # type: ignore[no-untyped-def]
    memory, pt = guest
    walk_widget = widgets.make_walk_widget(memory, pt.cpu())
    steps_widget = widgets.make_shadow_steps_widget()
    role_widget = widgets.make_role_widget()
    gfn_widget = widgets.make_gfn_widget()
    updates = [
        (_controls(walk_widget)[0], "0x400000"),
        (_controls(steps_widget)[0], len(viz.DEMO_PROGRAM)),
        (_controls(role_widget)[0], "5-level"),
        (_controls(gfn_widget)[1], 300),
    ]
    for control, value in updates:
        start = time.perf_counter()
        control.value = value
        assert time.perf_counter() - start < 1.0  # the target is 100 ms; 1 s is a loose bound


# -- lessons 5-8 (appended by the notebooks 05-09 engineer) ----------------------------------


def test_table_write_widget_shows_the_counters_for_the_chosen_rates() -> None:
    widget = widgets.make_table_write_widget()
    frame, _ = viz.table_write_view(10, 0, False)
    shown = _shown(widget)
    assert shown[0] == frame.to_string() and shown[1].startswith("<IPython.core.display.Image")
    pte, _pde, unsync = _controls(widget)
    pte.value, unsync.value = 30, True
    frame, _ = viz.table_write_view(30, 0, True)
    assert _shown(widget)[0] == frame.to_string()
    assert frame.loc["pf_emulate", "count"] == 0 and frame.loc["mmu_unsync", "count"] == 1


def test_sync_widget_buttons_append_actions_in_any_order() -> None:
    widget = widgets.make_sync_widget()
    edit, access, invlpg, cr3, reset = _controls(widget)
    for button in (edit, access, invlpg, access):
        button.click()
    assert widget.actions == ["edit", "access", "invlpg", "access"]
    assert _shown(widget) == [viz.sync_view(("edit", "access", "invlpg", "access")).to_string()]
    cr3.click()
    assert widget.actions[-1] == "cr3"
    reset.click()
    assert widget.actions == [] and _shown(widget) == [viz.sync_view(()).to_string()]


def test_mode_widget_states_the_model_and_the_winner() -> None:
    widget = widgets.make_mode_widget()
    text, table, _ = viz.mode_view(2000, 20, 10)
    shown = _shown(widget)
    assert shown[0] == text + "\n" and shown[1] == table.to_string()
    tlb, writes, _cr3 = _controls(widget)
    tlb.value, writes.value = 100, 400
    assert _shown(widget)[0].endswith("cheaper: tdp\n")


def test_savings_widget_prices_the_chosen_guest() -> None:
    widget = widgets.make_savings_widget()
    text, table, _ = viz.savings_view(4, "TDP", "4 KiB")
    assert _shown(widget)[0] == text + "\n" and "agrees" in text
    _size, mode, _pages = _controls(widget)
    mode.value = "shadow"
    text, table, _ = viz.savings_view(4, "shadow", "4 KiB")
    assert _shown(widget)[0] == text + "\n"
    assert table.loc["2010 seed", "saved vs pre-2010 (MiB)"] == 0  # no direct pages to save on


def test_lessons_5_to_8_widget_updates_are_fast() -> None:
    for produce in (
        lambda: viz.table_write_view(10, 0, False),
        lambda: viz.sync_view(("edit", "access", "invlpg", "access")),
        lambda: viz.mode_view(2000, 20, 10),
        lambda: viz.savings_view(4, "TDP", "4 KiB"),
    ):
        start = time.perf_counter()
        produce()
        assert time.perf_counter() - start < 1.0  # loose bound; measured well under 0.1 s
