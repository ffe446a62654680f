"""Specifications of kvmmu.teaching.ui: the Output a widget refreshes, and every lesson's widget
updating fast."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
import PIL.Image
import pytest
from matplotlib.figure import Figure
from widget_output import controls

from kvmmu.errors import ArgumentError
from kvmmu.teaching import ui
from kvmmu.teaching.experiments import pte_write_exits, savings_by_size, walk_costs
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


def _set(widget: Any, index: int, value: object) -> Callable[[], None]:
    def move() -> None:
        controls(widget)[index].value = value

    return move


def _click(widget: Any, name: str) -> Callable[[], None]:
    def move() -> None:
        next(c for c in controls(widget) if c.description == name).click()

    return move


def test_each_widget_update_shows_its_new_setting_at_default_and_extreme_settings(guest) -> None:  # type: ignore[no-untyped-def]
    # Every move of a control reruns the widget's update: its Output must show something, and
    # something other than before. The moves go from each widget's default to the ends of its
    # controls (how fast they are is measured by benchmarks/bench_widgets.py, not asserted).
    memory, pt = guest
    walk = l01.make_walk_widget(memory, pt.cpu())
    steps = l02.make_shadow_steps_widget()
    role = l03.make_role_widget()
    gfn = l04.make_gfn_widget()
    writes = l05.make_table_write_widget()
    sync = l06.make_sync_widget()
    savings = l07.make_savings_widget()
    mode = l08.make_mode_widget()
    first_page = controls(gfn)[0].options[0][1]
    moves = {
        "l01 mapped": _set(walk, 0, "0x400000"),
        "l01 #PF": _set(walk, 0, "0x7000"),
        "l01 write": _set(walk, 1, "write"),
        "l02 all steps": _set(steps, 0, len(l02.DEMO_PROGRAM)),
        "l02 no step": _set(steps, 0, 0),
        "l02 next step": _click(steps, "next step"),
        "l03 5-level": _set(role, 0, "5-level"),
        "l03 paging off": _set(role, 0, "paging off"),
        "l03 TDP": _set(role, 2, True),
        "l04 index 511": _set(gfn, 1, 511),
        "l04 first page": _set(gfn, 0, first_page),
        "l05 100 PTE": _set(writes, 0, 100),
        "l05 20 PDE": _set(writes, 1, 20),
        "l05 unsync": _set(writes, 2, True),
        "l05 0 PTE": _set(writes, 0, 0),
        "l06 edit": _click(sync, "edit"),
        "l06 access": _click(sync, "access"),
        "l06 cr3": _click(sync, "cr3"),
        "l07 64 GiB": _set(savings, 0, 64),
        "l07 shadow": _set(savings, 1, "shadow"),
        "l07 2 MiB": _set(savings, 2, "2 MiB"),
        "l07 1 GiB": _set(savings, 0, 1),
        "l08 max TLB misses": _set(mode, 0, 20000),
        "l08 max stores": _set(mode, 1, 500),
        "l08 max CR3 loads": _set(mode, 2, 200),
        "l08 zero": _set(mode, 0, 0),
    }
    widgets = {"l01": walk, "l02": steps, "l03": role, "l04": gfn}
    widgets |= {"l05": writes, "l06": sync, "l07": savings, "l08": mode}
    for name, move in moves.items():
        out = widgets[name[:3]].children[-1]
        before = list(out.outputs)
        move()
        assert out.outputs, f"{name}: the update showed nothing"
        assert list(out.outputs) != before, f"{name}: the update showed the old setting"


def test_lessons_5_to_8_views_produce_every_part_at_both_ends() -> None:
    # the pure view functions behind the widgets, at their defaults and at the top of each range
    for name, parts in (
        ("l05 default", l05.table_write_view(10, 0, False)),
        ("l05 max", l05.table_write_view(100, 20, True)),
        ("l06", l06.sync_view(("edit", "access", "invlpg", "access"))),
        ("l08 default", l08.mode_view(2000, 20, 10)),
        ("l08 max", l08.mode_view(20000, 500, 200)),
        ("l07 default", l07.savings_view(4, "TDP", "4 KiB")),
        ("l07 max", l07.savings_view(64, "shadow", "4 KiB")),
    ):
        items = parts if isinstance(parts, tuple) else (parts,)
        assert items, name
        for part in items:
            assert part is not None, name
            if isinstance(part, pd.DataFrame | pd.Series | str):
                assert len(part), f"{name}: an empty part"


def _tight_png(fig: Figure) -> bytes:
    """What ``figure_png`` stands for: matplotlib's own tight save."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", transparent=True, bbox_inches="tight")
    return buffer.getvalue()


def _lesson_figures(guest) -> dict[str, Callable[[], Figure]]:  # type: ignore[no-untyped-def]
    memory, pt = guest
    run = l02.run_program(len(l02.DEMO_PROGRAM))
    sizes = savings_by_size()
    exits = pte_write_exits((0.0, 0.3), ops=40)
    return {
        "walk tree": lambda: l01.walk_tree_figure(memory, pt.cpu(), "0x400123", "read", 3),
        "walk tree, #PF": lambda: l01.walk_tree_figure(memory, pt.cpu(), "0x7000", "write", 3),
        "shadow tables": lambda: l02.shadow_tables_figure(run.vm, run.vcpu),
        "table writes": lambda: l05.table_write_view(10, 0, False)[1],
        "table writes, max": lambda: l05.table_write_view(100, 20, True)[1],
        "savings": lambda: l07.savings_figure(sizes),
        "savings view": lambda: l07.savings_view(4, "TDP", "4 KiB")[2],
        "walk costs": lambda: l08.walk_cost_figure(walk_costs()),
        "pte exits (constrained layout)": lambda: l08.pte_exit_figure(exits),
        "mode": lambda: l08.mode_view(2000, 20, 10)[2],
        "mode, max": lambda: l08.mode_view(20000, 500, 200)[2],
    }


def _ink(png: bytes) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """The transparent margins (top, bottom, left, right) of a PNG and its drawn pixels."""
    rgba = np.asarray(PIL.Image.open(io.BytesIO(png)).convert("RGBA"))
    drawn = rgba[:, :, 3] > 0
    rows, cols = np.flatnonzero(drawn.any(axis=1)), np.flatnonzero(drawn.any(axis=0))
    height, width = drawn.shape
    margins = (rows[0], height - 1 - rows[-1], cols[0], width - 1 - cols[-1])
    return tuple(int(m) for m in margins), rgba[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]  # type: ignore[return-value]


def test_figure_png_shows_what_the_tight_save_shows_and_the_same_bytes_on_every_redraw(
    guest,
) -> None:  # type: ignore[no-untyped-def]
    pad = round(mpl.rcParams["savefig.pad_inches"] * 100)  # the lessons draw at 100 dpi
    for name, make in _lesson_figures(guest).items():
        fig = make()
        own = fig.canvas
        png = ui.figure_png(fig)
        tight = _tight_png(make())
        assert fig.canvas is own, f"{name}: the figure's own canvas is given back"
        assert ui.figure_png(make()) == png, f"{name}: redrawn on the kept canvas"
        if make().get_layout_engine() is not None:
            assert png == tight, f"{name}: a laid-out figure is the tight save itself"
            continue
        margins, ink = _ink(png)
        _, tight_ink = _ink(tight)
        assert margins == (pad, pad, pad, pad), f"{name}: the ink, padded as a tight save pads"
        rows, cols = ink.shape[0] - tight_ink.shape[0], ink.shape[1] - tight_ink.shape[1]
        assert abs(rows) <= 1 and abs(cols) <= 1, f"{name}: the tight save's ink, to a pixel"
        solid, tight_solid = (np.count_nonzero(i[:, :, 3] > 128) for i in (ink, tight_ink))
        assert abs(solid - tight_solid) <= 0.03 * tight_solid, f"{name}: nothing left out"


def test_a_kept_figure_redrawn_with_new_data_is_the_figure_drawn_afresh() -> None:
    # one figure kept and only its bars, x axis and title redrawn, against a new figure per
    # setting: byte for byte the same PNG, at both ends of the widget's ranges
    def chart(values: list[int], title: str) -> tuple[Figure, Any, Any]:
        fig = Figure(figsize=(4.0, 2.0), dpi=100)
        ax = fig.add_subplot()
        bars = ax.barh(["one", "two", "three"], values, color="#4f7fb0")
        ax.set_title(title, fontsize=10)
        return fig, ax, bars

    fig, ax, bars = chart([0, 0, 0], " ")
    kept = ui.KeptFigure(fig, [*bars, ax.spines["left"], ax.xaxis, ax.title])
    with pytest.raises(ArgumentError, match="changing must be a list of fig's artists"):
        ui.KeptFigure(chart([1, 2, 3], "")[0], list(bars))
    for values, title in (([3, 1, 4], "small"), ([0, 0, 0], "none"), ([900, 5, 12], "large")):
        for bar, value in zip(bars, values, strict=True):
            bar.set_width(value)
        ax.relim()
        ax.autoscale_view()
        ax.set_title(title, fontsize=10)
        assert kept.png() == ui.figure_png(chart(values, title)[0]), title


def test_figure_png_falls_back_to_the_tight_save_for_what_sticks_out_far() -> None:
    fig = Figure(figsize=(2.0, 1.0), dpi=100)
    fig.add_subplot().plot([0, 1], [0, 1])
    # from 1.5 to about 0.5 inches left of the figure: across the edge of the drawn margin
    fig.text(-0.75, 0.5, "far to the left", transform=fig.transFigure)
    assert ui.figure_png(fig) == _tight_png(fig)


def test_wire_with_memo_shows_a_setting_again_without_producing_it() -> None:
    import ipywidgets

    slider = ipywidgets.IntSlider(value=0, min=0, max=9)
    calls: list[int] = []

    def produce() -> str:
        calls.append(slider.value)
        return f"value {slider.value}"

    box = ui.wire([slider], produce, memo=2)
    for value in (1, 0, 1, 2, 0):
        slider.value = value
        assert [o["text"] for o in box.children[-1].outputs] == [f"value {value}\n"]
    # 0 and 1 were remembered; 2 pushed out 0 (the least recently shown), so 0 ran again
    assert calls == [0, 1, 2, 0]
    other = ipywidgets.IntSlider(value=0, min=0, max=9)
    plain = ui.wire([other], lambda: calls.append(-other.value) or f"value {other.value}")
    other.value = 1
    other.value = 0
    assert calls[-3:] == [0, -1, 0]  # without memo: every change runs produce
    assert [o["text"] for o in plain.children[-1].outputs] == ["value 0\n"]


def test_lesson_widgets_show_a_revisited_setting_as_first_shown() -> None:
    for widget, index, other in (
        (l05.make_table_write_widget(), 0, 20),
        (l07.make_savings_widget(), 0, 8),
        (l08.make_mode_widget(), 0, 4000),
    ):
        control = controls(widget)[index]
        first = control.value
        shown = widget.children[-1].outputs
        control.value = other
        assert widget.children[-1].outputs != shown
        control.value = first
        assert widget.children[-1].outputs == shown
