"""Shared ipywidgets wiring of the lessons: figures as images, an Output refreshed on change.

Each lesson's ``make_xxx_widget(...)`` builds its controls and hands them to :func:`wire` with
the pure function to show: ``wire`` adds an ``Output``, connects the controls by hand with
``observe`` (not ``interact``, whose output differs under nbval), draws the current state once,
and returns the container; the ``Output`` is always the container's last child. All logic lives
in the pure function, which the tests call directly with the values the controls would hold. The
Output is filled with ``append_stdout``/``append_display_data``, so it works, and can be tested,
without a running kernel. No kernel counterpart.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import pandas as pd
from IPython.display import Image, display
from matplotlib.figure import Figure

from kvmmu.errors import KvmmuError

__all__ = ["figure_png", "panel", "render_into", "show", "show_figure", "wire"]


def figure_png(fig: Figure) -> bytes:
    """A Figure as PNG bytes (transparent background, the figure's own dpi).

    No kernel counterpart.
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", transparent=True, bbox_inches="tight")
    return buffer.getvalue()


def show(fig: Figure) -> None:
    """Display a Figure in a notebook as a PNG only, with no ``<Figure ...>`` text beside it.

    The stored notebook output then holds an image (which nbval does not compare) and no text
    that could differ between runs. No kernel counterpart.
    """
    png = base64.b64encode(figure_png(fig)).decode()
    display({"image/png": png}, raw=True)  # type: ignore[no-untyped-call]


def _append(out: Any, value: object) -> None:
    if isinstance(value, str):
        out.append_stdout(value + "\n")
    elif isinstance(value, Figure):
        out.append_display_data(Image(data=figure_png(value)))  # type: ignore[no-untyped-call]
    elif isinstance(value, tuple):
        for item in value:
            _append(out, item)
    elif isinstance(value, pd.Series):
        out.append_display_data(value.to_frame())
    else:
        out.append_display_data(value)


def render_into(out: Any, produce: Callable[[], object]) -> None:
    """Replace what ``out`` (an ``ipywidgets.Output``) shows with what ``produce()`` returns.

    Text is appended as stdout, DataFrames as rich display data, Figures as PNG images; a tuple
    shows each of its items in turn. An input error (:class:`KvmmuError`) is shown as its
    message, so a reader who types a bad value sees what to fix instead of a traceback. No
    kernel counterpart.
    """
    out.outputs = ()
    try:
        value = produce()
    except KvmmuError as err:
        out.append_stdout(f"error: {err}\n")
        return
    _append(out, value)


def show_figure(fig: Figure) -> None:
    """Display a Figure in a notebook as a PNG image (no ``<Figure ...>`` text repr).

    Unlike :func:`show` the stored output keeps the Image's plain-text form beside the PNG.
    No kernel counterpart.
    """
    display(Image(data=figure_png(fig)))  # type: ignore[no-untyped-call]


def panel(controls: list[Any], out: Any) -> Any:
    """The controls in a row above the Output ``out``; no kernel counterpart."""
    return widgets.VBox([widgets.HBox(controls), out])


def wire(controls: list[Any], produce: Callable[[], object]) -> Any:
    """Controls above an Output that shows ``produce()`` now and after every change of value.

    No kernel counterpart.
    """
    out = widgets.Output()

    def update(_: object = None) -> None:
        render_into(out, produce)

    for control in controls:
        control.observe(update, names="value")
    update()
    return panel(controls, out)
