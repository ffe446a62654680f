"""Lesson 8, TDP versus shadow paging: the figures, cost model, widget and exercise of
``notebooks/08_tdp_vs_shadow.ipynb``.

Memory references per TLB miss (formula and measured), exits from guest page-table writes, a
plain cost model of both modes stated openly, a workload-mix widget, and an exercise: pick the
cheaper mode. The walk costs come from :mod:`kvmmu.kvm.tdp` (``tdp_mmu.c``'s concepts); the
experiments from :mod:`kvmmu.teaching.experiments`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import pandas as pd

from kvmmu.errors import check_choice, check_count, check_instance, check_real
from kvmmu.kvm.tdp import shadow_refs, two_dimensional_refs
from kvmmu.teaching.draw import (
    DPI,
    FAULT,
    SHADOW,
    TABLE,
    bar_axes,
    check_frame,
    legend,
    new_figure,
)
from kvmmu.teaching.problems import Check, ExerciseError, Problem, fail, ok, seeded_rng
from kvmmu.teaching.ui import WIDGET_MEMO, wire

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "EXIT_CYCLES",
    "REF_CYCLES",
    "ModeProblem",
    "check_mode",
    "make_mode_widget",
    "mode_costs",
    "mode_problem",
    "mode_view",
    "mode_winner",
    "pte_exit_figure",
    "walk_cost_figure",
]


# ------------------------------------------------------------------------------------------------
# The cost of a TLB miss, and exits from page-table writes
# ------------------------------------------------------------------------------------------------


def walk_cost_figure(table: pd.DataFrame) -> Figure:
    """Memory references per TLB miss, from :func:`kvmmu.teaching.experiments.walk_costs`: formula
    bars with the measured value marked. No kernel counterpart."""
    check_frame("table", table, ["formula", "measured"])
    fig = new_figure((7.0, 2.8), dpi=DPI)
    ax = bar_axes(fig)
    labels = [
        f"{p} {g}-level on {h}" if p == "TDP" else f"{p} {g}-level" for p, g, h in table.index
    ]
    ax.barh(labels[::-1], table["formula"].to_numpy()[::-1], color=TABLE, label="formula")
    ax.scatter(
        table["measured"].to_numpy()[::-1], labels[::-1], color=SHADOW, zorder=3, label="measured"
    )
    ax.set_xlabel("memory references per TLB miss")
    legend(ax, loc="lower right")
    return fig


EXIT_CAUSES = {
    "exits on pte writes": "on PTE stores (write protection)",
    "invlpg exits": "INVLPG intercepts",
    "other exits": "other: faults on data accesses (first touch of a re-pointed frame)",
}
"""Columns of :func:`kvmmu.teaching.experiments.pte_write_exits` -> what the figure calls them."""


def pte_exit_figure(frame: pd.DataFrame) -> Figure:
    """Exits per 1000 operations by cause, one stacked bar per paging setup and PTE-write rate,
    from :func:`kvmmu.teaching.experiments.pte_write_exits`; one absolute scale for all bars, so
    TDP's (other) exits show at their real size. No kernel counterpart."""
    check_frame("frame", frame, [*EXIT_CAUSES, "exits per 1000 ops"])
    fig = new_figure((7.0, 4.2), dpi=DPI, layout="constrained")
    ax = bar_axes(fig)
    rows = list(frame.index)[::-1]
    labels = [f"{paging} · {rate:.0%}" for rate, paging in rows]
    # exits per 1000 operations per exit counted (1000 / ops), 0 where a run had no exits
    scale = (frame["exits per 1000 ops"] / frame[list(EXIT_CAUSES)].sum(axis=1)).fillna(0.0)
    left = pd.Series(0.0, index=frame.index)
    for colour, (column, name) in zip([FAULT, SHADOW, TABLE], EXIT_CAUSES.items(), strict=True):
        width = (frame[column] * scale).astype(float)
        ax.barh(
            labels, width[rows].to_numpy(), left=left[rows].to_numpy(), color=colour, label=name
        )
        left += width
    ax.set_xlabel("exits per 1000 operations")
    ax.set_ylabel("paging · share of PTE stores")
    legend(ax, loc="upper right")
    return fig


# ------------------------------------------------------------------------------------------------
# A cost model of both modes, and its widget
# ------------------------------------------------------------------------------------------------

REF_CYCLES = 20  # one memory reference of a page walk (a mix of cache hits and misses)
EXIT_CYCLES = 2500  # one VM exit with its handling: an emulated PTE store, a CR3 load


def mode_costs(
    tlb_misses: float,
    pt_writes: float,
    cr3_loads: float,
    *,
    guest_levels: int = 4,
    tdp_levels: int = 4,
    ref_cycles: float = REF_CYCLES,
    exit_cycles: float = EXIT_CYCLES,
) -> pd.DataFrame:
    """Cycles per million guest instructions for shadow paging and TDP, under a plain model.

    The model, stated openly: a TLB miss costs its walk's memory references times
    ``ref_cycles``; under shadow paging each guest page-table store and each CR3 load is a VM
    exit costing ``exit_cycles`` (emulation, sync); under TDP neither exits. Page faults for
    first touches exit in both modes and are left out; so are caches of paging structures.
    Rows ``shadow`` and ``tdp``; columns ``walk cycles``, ``exit cycles``, ``total cycles``.
    No kernel counterpart.
    """
    for name, v in (
        ("tlb_misses", tlb_misses),
        ("pt_writes", pt_writes),
        ("cr3_loads", cr3_loads),
        ("ref_cycles", ref_cycles),
        ("exit_cycles", exit_cycles),
    ):
        check_real(name, v, minimum=0, error=ExerciseError)  # a non-negative number
    for name, levels in (("guest_levels", guest_levels), ("tdp_levels", tdp_levels)):
        check_count(name, levels, minimum=1, maximum=5, error=ExerciseError)
    shadow_walk = tlb_misses * shadow_refs(guest_levels) * ref_cycles
    tdp_walk = tlb_misses * two_dimensional_refs(guest_levels, tdp_levels) * ref_cycles
    shadow_exit = (pt_writes + cr3_loads) * exit_cycles
    frame = pd.DataFrame(
        {
            "walk cycles": [shadow_walk, tdp_walk],
            "exit cycles": [shadow_exit, 0.0],
        },
        index=pd.Index(["shadow", "tdp"], name="mode"),
    )
    frame["total cycles"] = frame["walk cycles"] + frame["exit cycles"]
    return frame


MODEL_PARAMETERS = ("guest_levels", "tdp_levels", "ref_cycles", "exit_cycles")
"""The keyword arguments of :func:`mode_costs` that :func:`mode_winner` passes on."""


def mode_winner(tlb_misses: float, pt_writes: float, cr3_loads: float, **model: int) -> str:
    """``"tdp"`` or ``"shadow"``: the cheaper mode under :func:`mode_costs` (ties go to TDP,
    what KVM uses whenever the CPU has EPT/NPT). No kernel counterpart."""
    for key in model:
        check_choice("model", key, MODEL_PARAMETERS, ExerciseError)
    costs = mode_costs(tlb_misses, pt_writes, cr3_loads, **model)["total cycles"]
    return "shadow" if costs["shadow"] < costs["tdp"] else "tdp"


def mode_view(
    tlb_misses: int = 2000, pt_writes: int = 20, cr3_loads: int = 10
) -> tuple[str, pd.DataFrame, Figure]:
    """The lesson 8 widget: cycles per million instructions for shadow paging and TDP.

    The cost model is :func:`mode_costs`, stated in the returned text. No
    kernel counterpart.
    """
    costs = mode_costs(tlb_misses, pt_writes, cr3_loads)
    winner = mode_winner(tlb_misses, pt_writes, cr3_loads)
    text = (
        f"model: {REF_CYCLES} cycles per walk reference (4 shadow, 24 two-dimensional), "
        f"{EXIT_CYCLES} cycles per exit (shadow only: page-table stores, CR3 loads)\n"
        f"cheaper: {winner}"
    )
    fig = new_figure((8.0, 2.4), dpi=DPI)
    ax = bar_axes(fig)
    modes = list(costs.index)
    walks = costs["walk cycles"].to_numpy() / 1e3
    exits = costs["exit cycles"].to_numpy() / 1e3
    ax.barh(modes, walks, color=TABLE, label="page walks")
    ax.barh(modes, exits, left=walks, color=FAULT, label="VM exits")
    # one fixed scale, the widest the widget's sliders reach, so a move shows its absolute effect
    ax.set_xlim(0, max(MODE_SCALE_KCYCLES, float((walks + exits).max())))
    ax.set_xlabel("thousand cycles per million guest instructions (fixed scale)")
    legend(ax, loc="lower right")
    return text, costs.astype("int64"), fig


MODE_LIMITS = (20000, 500, 200)
"""The widget's slider maxima: TLB misses, page-table stores and CR3 loads per million."""
MODE_SCALE_KCYCLES = float(mode_costs(*MODE_LIMITS)["total cycles"].max()) / 1e3
"""The x-axis of :func:`mode_view`, in thousand cycles: the dearest mode at the sliders' ends."""


def make_mode_widget(tlb_misses: int = 2000, pt_writes: int = 20, cr3_loads: int = 10) -> Any:
    """Set a workload mix; see which paging mode costs less (:func:`mode_view`).

    Controls, in order: TLB misses, page-table stores, CR3 loads per million instructions
    (IntSliders). A setting shown before is shown again from memory (``wire(memo=...)``).
    No kernel counterpart.
    """
    top_tlb, top_writes, top_cr3 = MODE_LIMITS
    for name, value, top in (
        ("tlb_misses", tlb_misses, top_tlb),
        ("pt_writes", pt_writes, top_writes),
        ("cr3_loads", cr3_loads, top_cr3),
    ):
        check_count(name, value, maximum=top, error=ExerciseError)  # the slider's range
    tlb = widgets.IntSlider(value=tlb_misses, min=0, max=top_tlb, step=100, description="TLB miss")
    writes = widgets.IntSlider(
        value=pt_writes, min=0, max=top_writes, step=5, description="PT stores"
    )
    cr3 = widgets.IntSlider(value=cr3_loads, min=0, max=top_cr3, step=1, description="CR3 loads")
    return wire(
        [tlb, writes, cr3],
        lambda: mode_view(tlb.value, writes.value, cr3.value),
        memo=WIDGET_MEMO,
    )


# ------------------------------------------------------------------------------------------------
# Exercise: pick TDP or shadow paging
# ------------------------------------------------------------------------------------------------


@dataclass(slots=True, repr=False)
class ModeProblem(Problem):
    """Pick the cheaper paging mode for a workload under :func:`mode_costs`."""

    seed: int | str
    text: str
    tlb_misses: int
    pt_writes: int
    cr3_loads: int


def mode_problem(seed: int | str) -> ModeProblem:
    """A workload mix from ``seed``; the answer is :func:`mode_winner`. No kernel counterpart."""
    rng = seeded_rng(seed)
    tlb = rng.choice([100, 300, 1000, 3000, 10000])
    writes = rng.choice([0, 20, 100, 400])
    cr3 = rng.choice([0, 10, 50, 200])
    text = (
        f"Per million guest instructions a workload takes {tlb} TLB misses, makes {writes} "
        f"page-table stores and {cr3} CR3 loads (4-level guest, 4-level TDP tables).\n"
        f"Cost model: {REF_CYCLES} cycles per walk memory reference, {EXIT_CYCLES} cycles per "
        "VM exit; under shadow paging every page-table store and CR3 load exits, under TDP "
        "none does.\nWhich mode is cheaper: 'tdp' or 'shadow'?"
    )
    return ModeProblem(seed, text, tlb, writes, cr3)


def check_mode(problem: ModeProblem, answer: str) -> Check:
    """Check the chosen mode; the hint says which side of the ledger was misjudged.

    No kernel counterpart: a lesson checker.
    """
    check_instance("problem", problem, ModeProblem, "a ModeProblem (mode_problem)", ExerciseError)
    if answer == "":
        return fail("no answer yet: answer 'tdp' or 'shadow'")
    if not isinstance(answer, str) or answer.strip().lower() not in ("tdp", "shadow"):
        raise ExerciseError("answer 'tdp' or 'shadow'")
    right = mode_winner(problem.tlb_misses, problem.pt_writes, problem.cr3_loads)
    if answer.strip().lower() == right:
        return ok("that mode costs fewer cycles under the model.")
    if right == "shadow":
        return fail(
            "weigh the walks: a 4-on-4 TDP walk makes far more memory references than a "
            "shadow walk, and this workload misses the TLB often"
        )
    return fail(
        "weigh the exits: each one costs as much as many walk references; count how many "
        "this workload would take under shadow paging"
    )
