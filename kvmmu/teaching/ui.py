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
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import ipywidgets as widgets
import matplotlib as mpl
import pandas as pd
from IPython.display import Image, display
from matplotlib.backend_bases import FigureCanvasBase
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg
from matplotlib.figure import Figure

from kvmmu.errors import ArgumentError, KvmmuError, check_callable, check_count, check_instance

__all__ = ["WIDGET_MEMO", "figure_png", "panel", "render_into", "show", "show_figure", "wire"]

WIDGET_MEMO = 64
"""How many control settings a lesson widget remembers the output of (``wire(memo=...)``)."""
MEMO_LIMIT = 4096
"""The most settings :func:`wire` keeps the output of."""


def _check_controls(controls: object, cls: type[widgets.Widget], hint: str) -> list[Any]:
    """A list (or tuple) of ipywidgets controls, each a ``cls``."""
    if not isinstance(controls, list | tuple) or not all(isinstance(c, cls) for c in controls):
        raise ArgumentError(f"controls must be a list of {hint}, got {str(controls)[:60]}")
    return list(controls)


def _check_out(out: object) -> None:
    check_instance("out", out, widgets.Output, "an ipywidgets.Output")


_MEASURE: dict[float, RendererAgg] = {}  # dpi -> a renderer that only measures text
_CANVASES: OrderedDict[tuple[float, float, float], FigureCanvasAgg] = OrderedDict()
_CANVAS_LIMIT = 16  # canvases kept, by output size: the figures a notebook's widgets redraw


def figure_png(fig: Figure) -> bytes:
    """A Figure as PNG bytes (transparent background, the figure's own dpi, cropped tight).

    The bytes are those of ``fig.savefig(..., format="png", transparent=True,
    bbox_inches="tight")``, for less work: matplotlib measures every text once per renderer,
    and a tight save makes two fresh renderers (one to find the box, one to draw). Here the box
    is measured with one renderer kept per dpi, and the figure is drawn on an Agg canvas kept
    per output size, so a widget redrawing the same labels measures none of them again. A
    figure with a canvas of its own (pyplot's) or a layout engine (whose layout must run
    before the box is measured) is saved the plain way. No kernel counterpart.
    """
    check_instance("fig", fig, Figure, "a matplotlib Figure")
    buffer = io.BytesIO()
    own = fig.canvas
    if type(own) is not FigureCanvasBase or fig.get_layout_engine() is not None:
        fig.savefig(buffer, format="png", transparent=True, bbox_inches="tight")
        return buffer.getvalue()
    measure = _MEASURE.get(fig.dpi)
    if measure is None:
        measure = _MEASURE[fig.dpi] = RendererAgg(1, 1, fig.dpi)  # type: ignore[no-untyped-call]
    box = fig.get_tightbbox(measure).padded(mpl.rcParams["savefig.pad_inches"])
    key = (box.width, box.height, fig.dpi)
    canvas = _CANVASES.pop(key, None)
    if canvas is None:
        canvas = FigureCanvasAgg(fig)
    else:
        canvas.figure = fig
        fig.set_canvas(canvas)
    _CANVASES[key] = canvas
    while len(_CANVASES) > _CANVAS_LIMIT:
        _CANVASES.popitem(last=False)
    try:
        fig.savefig(buffer, format="png", transparent=True, bbox_inches=box)
    finally:
        fig.set_canvas(own)
    return buffer.getvalue()


def show(fig: Figure) -> None:
    """Display a Figure in a notebook as a PNG only, with no ``<Figure ...>`` text beside it.

    The stored notebook output then holds an image (which nbval does not compare) and no text
    that could differ between runs. No kernel counterpart.
    """
    check_instance("fig", fig, Figure, "a matplotlib Figure")
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
    _check_out(out)
    check_callable("produce", produce, optional=False)
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
    check_instance("fig", fig, Figure, "a matplotlib Figure")
    display(Image(data=figure_png(fig)))  # type: ignore[no-untyped-call]


def panel(controls: list[Any], out: Any) -> Any:
    """The controls in a row above the Output ``out``; no kernel counterpart."""
    _check_controls(controls, widgets.Widget, "ipywidgets")
    _check_out(out)
    return widgets.VBox([widgets.HBox(controls), out])


def wire(controls: list[Any], produce: Callable[[], object], *, memo: int = 0) -> Any:
    """Controls above an Output that shows ``produce()`` now and after every change of value.

    With ``memo``, what the Output showed for the last ``memo`` combinations of the controls'
    values is kept, and a combination shown before is shown again without calling ``produce``
    (no recomputing, no PNG to draw): only for a ``produce`` that depends on the controls'
    values alone. No kernel counterpart.
    """
    _check_controls(controls, widgets.ValueWidget, "ipywidgets controls with a value")
    check_callable("produce", produce, optional=False)
    check_count("memo", memo, maximum=MEMO_LIMIT, error=ArgumentError)
    out = widgets.Output()
    shown: OrderedDict[tuple[Hashable, ...], tuple[Any, ...]] = OrderedDict()

    def update(_: object = None) -> None:
        key = tuple(control.value for control in controls)
        if memo and key in shown:
            shown.move_to_end(key)
            out.outputs = shown[key]
            return
        render_into(out, produce)
        if memo:
            shown[key] = tuple(out.outputs)
            while len(shown) > memo:
                shown.popitem(last=False)

    for control in controls:
        control.observe(update, names="value")
    update()
    return panel(controls, out)
