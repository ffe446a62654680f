"""Shared drawing helpers of the lessons: colours, boxes and arrows, bar axes, shared tables.

Every lesson module draws with these, so that all figures share one look: explicit colours that
read on both light and dark backgrounds, a transparent figure background, and a fixed size and
dpi, so that a notebook's stored output is reproducible. The two tables more than one lesson
shows live here too: the shadow pages with their roles (:func:`role_frame`, lessons 2-4) and a
recorded MMU trace made readable (:func:`tidy_trace`, lessons 2 and 5). No kernel counterpart:
these are teaching views of ``mmu_internal.h`` and ``mmutrace.h`` state.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from kvmmu.errors import (
    ArgumentError,
    check_bool,
    check_choice,
    check_flags,
    check_instance,
    check_real,
    check_str,
)
from kvmmu.hw.x86 import Acc
from kvmmu.kvm.page import MmuPage
from kvmmu.kvm.vcpu import Vm

if TYPE_CHECKING:  # matplotlib is imported by the first figure, not by ``import kvmmu...``
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "DIRECT",
    "DPI",
    "FAULT",
    "FIGSIZE_WIDE",
    "INK",
    "MIB_F",
    "PAGE",
    "ROOT",
    "SHADOW",
    "TABLE",
    "TABLE_NAMES",
    "acc_text",
    "arrow",
    "bar_axes",
    "box",
    "check_frame",
    "legend",
    "new_figure",
    "role_frame",
    "size_text",
    "style",
    "tidy_trace",
]

# Colours chosen to read on a white and on a dark background alike.
INK = "#8a8a8a"  # arrows, labels, spines: mid grey
TABLE = "#4f7fb0"  # a guest table (mid blue)
SHADOW = "#d08a2e"  # a shadow page (amber)
DIRECT = "#8e6fb5"  # a direct shadow page (violet)
PAGE = "#4c9a64"  # a data page (green)
FAULT = "#c8553d"  # a fault (brick red)
ROOT = "#7a7a9e"  # CR3 (slate)
MIB_F = float(1 << 20)  # bytes per MiB, for tables shown in MiB
FIGSIZE_WIDE = (11.0, 2.8)
DPI = 100

TABLE_NAMES = {5: "PML5", 4: "PML4", 3: "PDPT", 2: "PD", 1: "PT"}  # a guest table of each level
LEGEND_PLACES = ("best", "lower right", "upper right")


def check_frame(name: str, frame: object, columns: Sequence[str] = ()) -> pd.DataFrame:
    """Return ``frame`` if it is a DataFrame with every column of ``columns``, else raise
    :class:`~kvmmu.errors.ArgumentError` naming the argument and the missing columns.

    For the views and figures that draw another function's table. No kernel counterpart.
    """
    table = check_instance(name, frame, pd.DataFrame, "a pandas DataFrame")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ArgumentError(
            f"{name} lacks the columns {missing}: pass the table the docstring names"
        )
    return table


def _check_whole(name: str, value: object) -> int:
    """An int, or a numpy integer or a whole float as a table cell holds it."""
    number = check_real(name, value)
    if not number.is_integer():
        raise ArgumentError(f"{name} must be a whole number, got {number}")
    return operator.index(value) if hasattr(value, "__index__") else int(number)


def acc_text(acc: int) -> str:
    """Rights as letters, ``u``, ``w``, ``x`` or ``-`` each (``ACC_*_MASK``); no kernel
    counterpart."""
    check_flags("acc", acc, Acc)
    return "".join(
        c if acc & b else "-" for c, b in (("u", Acc.USER), ("w", Acc.WRITE), ("x", Acc.EXEC))
    )


def size_text(nbytes: int) -> str:
    """A byte count in the unit that shows it best: ``"0 B"``, ``"512 B"``, ``"12.0 KiB"``,
    ``"4.50 MiB"``, ``"2.00 GiB"``; small savings never round to "0.0 MiB". No kernel
    counterpart.
    """
    n = _check_whole("nbytes", nbytes)
    if abs(n) < 1024:
        return f"{n} B"
    if abs(n) < 1 << 20:
        return f"{n / 1024:.1f} KiB"
    if abs(n) < 1 << 30:
        return f"{n / (1 << 20):.2f} MiB"
    return f"{n / (1 << 30):.2f} GiB"


def _check_figure(fig: object) -> None:
    """``fig`` must be a matplotlib Figure (matplotlib is loaded once a figure exists)."""
    from matplotlib.figure import Figure

    check_instance("fig", fig, Figure, "a matplotlib Figure")


def _check_axes(ax: object) -> None:
    """``ax`` must be matplotlib Axes."""
    from matplotlib.axes import Axes

    check_instance("ax", ax, Axes, "matplotlib Axes")


_LAYOUTS: tuple[Literal["constrained"], ...] = ("constrained",)


def new_figure(figsize: tuple[float, float], dpi: float = DPI, layout: str | None = None) -> Figure:
    """A matplotlib Figure (not pyplot's: nothing is kept or shown by itself), imported here on
    first use, so that a module that only generates or checks exercises (the lab's) does not
    pay for matplotlib. ``figsize`` is (width, height) in inches; ``layout`` is None or
    ``"constrained"``. No kernel counterpart.
    """
    if not isinstance(figsize, tuple) or len(figsize) != 2:
        raise ArgumentError(f"figsize must be a (width, height) tuple in inches, got {figsize!r}")
    for name, value in zip(("figsize[0]", "figsize[1]"), figsize, strict=True):
        check_real(name, value, minimum=0.1, maximum=100.0)
    check_real("dpi", dpi, minimum=10.0, maximum=600.0)
    if layout is not None:
        layout = check_choice("layout", layout, _LAYOUTS)
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, dpi=dpi, layout=layout)


def style(fig: Figure) -> None:
    """A transparent figure background, for light and dark notebooks; no kernel counterpart."""
    _check_figure(fig)
    fig.patch.set_alpha(0.0)


def box(ax: Axes, x: float, y: float, w: float, h: float, text: str, colour: str) -> None:
    """A rounded box centred at ``(x, y)`` with white monospace text; no kernel counterpart."""
    from matplotlib.patches import FancyBboxPatch

    _check_axes(ax)
    for name, value in (("x", x), ("y", y)):
        check_real(name, value)
    for name, value in (("w", w), ("h", h)):
        check_real(name, value, minimum=0)
    check_str("text", text)
    check_str("colour", colour)
    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2),
            w,
            h,
            boxstyle="round,pad=0.02,rounding_size=0.05",
            facecolor=colour,
            edgecolor=INK,
            linewidth=1.0,
        )
    )
    ax.text(x, y, text, ha="center", va="center", fontsize=8, color="white", family="monospace")


def arrow(
    ax: Axes, x0: float, y0: float, x1: float, y1: float, label: str = "", dashed: bool = False
) -> None:
    """An arrow from ``(x0, y0)`` to ``(x1, y1)``, labelled above; no kernel counterpart."""
    _check_axes(ax)
    for name, value in (("x0", x0), ("y0", y0), ("x1", x1), ("y1", y1)):
        check_real(name, value)
    check_str("label", label)
    check_bool("dashed", dashed)
    ax.annotate(
        "",
        xy=(x1, y1),
        xytext=(x0, y0),
        arrowprops={
            "arrowstyle": "-|>",
            "color": INK,
            "linewidth": 1.2,
            "linestyle": "--" if dashed else "-",
        },
    )
    if label:
        ax.text(
            (x0 + x1) / 2,
            max(y0, y1) + 0.68,
            label,
            ha="center",
            va="bottom",
            fontsize=7.5,
            color=INK,
        )


def bar_axes(fig: Figure) -> Axes:
    """One axes for a bar or line plot, spines and labels in the ink colour; no kernel
    counterpart."""
    style(fig)  # which checks fig
    ax = fig.add_subplot(1, 1, 1)
    ax.set_facecolor("none")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color(INK)
    ax.tick_params(colors=INK)
    ax.xaxis.label.set_color(INK)
    ax.yaxis.label.set_color(INK)
    ax.title.set_color(INK)
    return ax


def legend(ax: Axes, loc: Literal["best", "lower right", "upper right"] = "best") -> None:
    """A frameless legend at ``loc`` with its labels in the ink colour; no kernel counterpart."""
    _check_axes(ax)
    check_choice("loc", loc, LEGEND_PLACES)
    for item in ax.legend(frameon=False, fontsize=9, loc=loc).get_texts():
        item.set_color(INK)


def role_frame(pages: list[MmuPage] | Vm) -> pd.DataFrame:
    """Shadow pages as a table: gfn, every role field that varies in practice, and the gfns.

    One row per page (``struct kvm_mmu_page``), in creation order; ``word`` is the packed
    ``role.word`` the hash compares; ``gfns bytes`` is 0 for a direct page (the seed change).
    """
    if isinstance(pages, Vm):
        pages = [sp for sp in pages.mmu.active if not sp.role.invalid]
    elif not isinstance(pages, list | tuple) or not all(isinstance(p, MmuPage) for p in pages):
        raise ArgumentError(f"pages must be a Vm or a list of MmuPage, got {str(pages)[:60]}")
    rows = []
    for sp in sorted(pages, key=lambda sp: sp.serial):
        role = sp.role
        rows.append(
            {
                "sp": f"sp#{sp.serial}",
                "gfn": f"{sp.gfn:#x}",
                "level": role.level,
                "direct": role.direct,
                "4-byte gpte": role.has_4_byte_gpte,
                "quadrant": role.quadrant,
                "access": acc_text(role.access),
                "cr0_wp": role.cr0_wp,
                "word": f"{role.word:#07x}",
                "sptes": len(sp.present_indices()),
                "gfns bytes": sp.gfns_bytes,
            }
        )
    columns = [
        "sp",
        "gfn",
        "level",
        "direct",
        "4-byte gpte",
        "quadrant",
        "access",
        "cr0_wp",
        "word",
        "sptes",
        "gfns bytes",
    ]
    return pd.DataFrame(rows, columns=columns).set_index("sp")


_HEX_FIELDS = ("gfn", "addr", "spte", "gpa")


def tidy_trace(frame: pd.DataFrame) -> pd.DataFrame:
    """A recorded MMU trace (``Tracer.frame()``) with one readable ``details`` column.

    The events are ``mmutrace.h``'s; each row keeps its name and lists its non-empty fields
    (addresses, gfns and sptes in hex).
    """
    check_frame("frame", frame, ["event"])
    rows = []
    for seq, row in frame.iterrows():
        parts = []
        for name, value in row.items():
            if name == "event" or value is None or (isinstance(value, float) and np.isnan(value)):
                continue
            if name in _HEX_FIELDS and isinstance(value, (int, float, np.integer)):
                parts.append(f"{name}={int(value):#x}")
            elif isinstance(value, (float, np.floating)) and float(value).is_integer():
                parts.append(f"{name}={int(value)}")
            else:
                parts.append(f"{name}={value}")
        rows.append({"seq": seq, "event": row["event"], "details": " ".join(parts)})
    return pd.DataFrame(rows, columns=["seq", "event", "details"]).set_index("seq")
