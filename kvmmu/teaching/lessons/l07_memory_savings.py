"""Lesson 7, memory-savings experiments: the figures, widget and exercise of
``notebooks/07_memory_savings.ipynb``.

Shadow-page memory by kernel era against guest size, one guest priced by era (batch path beside
the closed form) with its widget, and the saving exercise, which lesson 4 introduced and which
lives there (:func:`kvmmu.teaching.lessons.l04_lazy_gfns.saving_problem`). The experiments
themselves are :mod:`kvmmu.teaching.experiments`; the memory is ``kvm_mmu_alloc_page``'s by era.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import pandas as pd

from kvmmu.errors import ModeError, check_choice, check_count
from kvmmu.reference import scenario as scenario_spec
from kvmmu.teaching.batch import BatchSummary, identity_shadow_summary
from kvmmu.teaching.draw import (
    DPI,
    FAULT,
    MIB_F,
    SHADOW,
    TABLE,
    bar_axes,
    check_frame,
    legend,
    new_figure,
    size_text,
)
from kvmmu.teaching.experiments import GIB, batch_summary, expected_pages
from kvmmu.teaching.lessons.l04_lazy_gfns import SavingProblem, check_saving, saving_problem
from kvmmu.teaching.ui import WIDGET_MEMO, wire

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "ERA_COLOURS",
    "SavingProblem",
    "check_saving",
    "make_savings_widget",
    "saving_problem",
    "savings_figure",
    "savings_view",
]


# ------------------------------------------------------------------------------------------------
# Memory by era, against guest size
# ------------------------------------------------------------------------------------------------

ERA_COLOURS = {"pre-2010": FAULT, "2010 seed": SHADOW, "today": TABLE}
_SCENARIO_OF = {
    ("TDP", "4 KiB"): "tdp-4k",
    ("TDP", "2 MiB"): "tdp-huge",
    ("shadow", "4 KiB"): "shadow-4k",
    ("shadow", "2 MiB"): "shadow-2m",
}


def savings_figure(frame: pd.DataFrame) -> Figure:
    """Kernel bytes of shadow pages by era against guest size, from
    :func:`kvmmu.teaching.experiments.savings_by_size`; log-log. No kernel counterpart."""
    check_frame("frame", frame, [f"{era} bytes" for era in ERA_COLOURS])
    fig = new_figure((7.0, 3.6), dpi=DPI)
    ax = bar_axes(fig)
    sizes = frame.index.to_numpy(dtype=float)
    # "today" equals "2010 seed" wherever nothing newer saves more: draw it dashed over a wider
    # solid line, so both stay visible, and say so in the legend
    same = frame["today bytes"].equals(frame["2010 seed bytes"])
    for era, colour in ERA_COLOURS.items():
        mib = frame[f"{era} bytes"].to_numpy(dtype=float) / (1 << 20)
        dashed = era == "today"
        ax.plot(
            sizes,
            mib,
            marker="x" if dashed else "o",
            color=colour,
            linestyle="--" if dashed else "-",
            linewidth=1.5 if dashed else 3.5 if era == "2010 seed" else 2.0,
            label="today (= 2010 seed)" if dashed and same else era,
        )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("guest memory (GiB)")
    ax.set_ylabel("shadow-page memory (MiB)")
    legend(ax)
    return fig


# ------------------------------------------------------------------------------------------------
# Try it: one guest priced by era, and its widget
# ------------------------------------------------------------------------------------------------


def _summary(scenario: str, size: int) -> BatchSummary:
    """The widget's counts: the batch path with TDP; with shadow paging, the identity guest's
    counts from its layout, for a slider at 64 GiB would otherwise write and read 32K guest
    tables on every move."""
    spec = scenario_spec(scenario)
    if spec.tdp:
        return batch_summary(scenario, size)
    return identity_shadow_summary(size, spec.guest_page_size, spec.host_huge_pages)


MODES = ("TDP", "shadow")
PAGE_SIZES = ("4 KiB", "2 MiB")
SIZE_LIMIT_GIB = 256  # the experiments' largest guest
WIDGET_SIZE_LIMIT_GIB = 64  # the widget's slider


def _check_view(size_gib: object, mode: object, page_size: object, limit: int) -> None:
    check_count("size_gib", size_gib, minimum=1, maximum=limit, error=ModeError)
    check_choice("mode", mode, MODES, ModeError)
    check_choice("page_size", page_size, PAGE_SIZES, ModeError)


def savings_view(
    size_gib: int = 4, mode: str = "TDP", page_size: str = "4 KiB"
) -> tuple[str, pd.DataFrame, Figure]:
    """The lesson 7 widget: kernel memory of the shadow pages by era for one guest.

    ``mode`` is ``"TDP"`` or ``"shadow"``, ``page_size`` ``"4 KiB"`` or ``"2 MiB"`` (the host's
    pages with TDP, the guest's with shadow paging). Counts come from the batch path
    (:func:`kvmmu.teaching.experiments.batch_summary`) with TDP, and with shadow paging from the
    identity guest's layout (:func:`kvmmu.teaching.batch.identity_shadow_summary`, which the
    tests prove equal to the batch path); the closed form is checked beside them. No kernel
    counterpart.
    """
    _check_view(size_gib, mode, page_size, SIZE_LIMIT_GIB)
    scenario = _SCENARIO_OF[(mode, page_size)]
    summary = _summary(scenario, size_gib * GIB)
    raw = summary.memory()
    table = pd.DataFrame(
        {
            "shadow pages": raw["pages"],
            "gfns": raw["gfns bytes"].map(size_text),
            "total": raw["total bytes"].map(size_text),
            "saved vs pre-2010": raw["saved vs pre-2010"].map(size_text),
        }
    )
    n_direct, n_indirect = expected_pages(scenario, size_gib * GIB)
    agree = n_direct + n_indirect == summary.n_pages
    text = (
        f"{scenario}: {summary.n_direct} direct and {summary.n_indirect} indirect shadow pages "
        f"(closed form: {n_direct + n_indirect}, {'agrees' if agree else 'DISAGREES'})"
    )
    fig = new_figure((7.0, 2.2), dpi=DPI)
    ax = bar_axes(fig)
    eras = list(table.index)
    ax.barh(
        eras[::-1],
        (raw["total bytes"].to_numpy(dtype=float) / MIB_F)[::-1],
        color=[ERA_COLOURS[e] for e in eras[::-1]],
    )
    ax.set_xlabel("shadow-page memory (MiB)")
    return text, table, fig


def make_savings_widget(size_gib: int = 4, mode: str = "TDP", page_size: str = "4 KiB") -> Any:
    """Pick a guest size, a paging mode and a page size; see shadow-page memory by era.

    Shows :func:`savings_view`. Controls, in order: size in GiB (IntSlider 1..64), mode
    (Dropdown TDP/shadow), page size (Dropdown 4 KiB / 2 MiB). A setting shown before is
    shown again from memory (``wire(memo=...)``).
    No kernel counterpart.
    """
    _check_view(size_gib, mode, page_size, WIDGET_SIZE_LIMIT_GIB)
    size = widgets.IntSlider(value=size_gib, min=1, max=64, description="GiB")
    paging = widgets.Dropdown(options=["TDP", "shadow"], value=mode, description="mode")
    pages = widgets.Dropdown(options=["4 KiB", "2 MiB"], value=page_size, description="page size")
    return wire(
        [size, paging, pages],
        lambda: savings_view(size.value, paging.value, pages.value),
        memo=WIDGET_MEMO,
    )
