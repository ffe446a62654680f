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
import sys
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any, TypeGuard

import ipywidgets as widgets
import numpy as np
import pandas as pd
from IPython.display import Image, display

from kvmmu.errors import ArgumentError, KvmmuError, check_callable, check_count, check_instance

if TYPE_CHECKING:  # matplotlib is imported by the first figure drawn, not by this module
    from matplotlib.artist import Artist
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

__all__ = [
    "WIDGET_MEMO",
    "KeptFigure",
    "figure_png",
    "panel",
    "render_into",
    "show",
    "show_figure",
    "wire",
]

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


_CANVASES: OrderedDict[tuple[float, float, float], FigureCanvasAgg] = OrderedDict()
_CANVAS_LIMIT = 16  # canvases kept, by figure size: the figures a notebook's widgets redraw
FIGURE_MARGIN = 1.0
"""Inches drawn around a figure by :func:`figure_png`, for the labels that stick out of it."""
PNG_COMPRESS_LEVEL = 1
"""zlib level of the PNGs :func:`figure_png` writes: a few percent larger than level 6, and a
quarter of the encoding time, which a widget pays on every move."""


def figure_png(fig: Figure) -> bytes:
    """A Figure as PNG bytes: transparent background, the figure's own dpi, cropped tight.

    What ``fig.savefig(..., format="png", transparent=True, bbox_inches="tight")`` shows, for
    less work: a tight save measures every artist with one renderer to find the box, then
    draws with another. Here the figure is drawn once, with a margin of ``FIGURE_MARGIN``
    inches around it for what sticks out (a title, tick labels), on an Agg canvas kept per
    figure size, so a widget redrawing the same labels measures none of them again; the box
    is then that of the pixels drawn, widened by ``savefig.pad_inches`` as a tight save pads
    its box (a pixel or two tighter: a tight box bounds each text's line, not its ink). A
    drawing that reaches the margin's edge, or a figure with a canvas of its own (pyplot's)
    or a layout engine, is saved the plain way; an artist wholly beyond the margin is not
    shown (the lessons' figures have none: their tests compare them with the tight save).
    No kernel counterpart.
    """
    from matplotlib.backend_bases import FigureCanvasBase
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    _check_figure(fig)
    own = fig.canvas
    if type(own) is not FigureCanvasBase or fig.get_layout_engine() is not None:
        return _tight_png(fig)
    key = (fig.bbox.width, fig.bbox.height, fig.dpi)
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
        box = fig.bbox_inches.padded(FIGURE_MARGIN)
        # the pixels are read from the renderer the save drew on; the copy it writes is dropped
        fig.savefig(io.BytesIO(), format="rgba", transparent=True, bbox_inches=box)
        rgba = np.asarray(canvas.renderer.buffer_rgba())
    finally:
        fig.set_canvas(own)
    return _ink_png(rgba, fig.dpi) or _tight_png(fig)


def _ink_png(rgba: np.ndarray, dpi: float) -> bytes | None:
    """The drawn pixels of ``rgba`` as a PNG, padded by ``savefig.pad_inches``; None when
    nothing is drawn or the drawing reaches an edge (it may go beyond it)."""
    import matplotlib as mpl
    import PIL.Image

    drawn = rgba[:, :, 3] != 0
    rows, cols = np.flatnonzero(drawn.any(axis=1)), np.flatnonzero(drawn.any(axis=0))
    height, width = drawn.shape
    if not len(rows) or min(rows[0], cols[0]) == 0 or (rows[-1] + 1, cols[-1] + 1) == drawn.shape:
        return None
    pad = round(mpl.rcParams["savefig.pad_inches"] * dpi)
    top, bottom = max(rows[0] - pad, 0), min(rows[-1] + 1 + pad, height)
    left, right = max(cols[0] - pad, 0), min(cols[-1] + 1 + pad, width)
    buffer = io.BytesIO()
    PIL.Image.fromarray(np.ascontiguousarray(rgba[top:bottom, left:right])).save(
        buffer, format="png", compress_level=PNG_COMPRESS_LEVEL, dpi=(dpi, dpi)
    )
    return buffer.getvalue()


def _tight_png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", transparent=True, bbox_inches="tight")
    return buffer.getvalue()


class KeptFigure:
    """A figure drawn whole once, then only its ``changing`` artists redrawn (blitting).

    For a widget whose figure keeps its labels from move to move: the caller updates the
    changing artists' data (bar widths, an axis's limits, a title) and calls :meth:`png`,
    which puts back the pixels of everything else, drawn once, draws the changing artists over
    them in their z-order, and crops the result as :func:`figure_png` does: the same picture
    as :func:`figure_png` of a figure drawn afresh with that data, for the text it does not lay
    out and rasterise again. The figure (without a layout engine or a canvas of its own) is
    enlarged by ``FIGURE_MARGIN`` inches on each side, its axes kept where they were, for what
    sticks out. The other artists must not change. No kernel counterpart.
    """

    __slots__ = ("_background", "_canvas", "_changing", "figure")

    def __init__(self, fig: Figure, changing: Sequence[Artist]) -> None:
        from matplotlib.artist import Artist
        from matplotlib.backend_bases import FigureCanvasBase
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        _check_figure(fig)
        if type(fig.canvas) is not FigureCanvasBase or fig.get_layout_engine() is not None:
            raise ArgumentError("fig must be a figure of new_figure, without a layout engine")
        if not isinstance(changing, list | tuple) or not all(
            isinstance(a, Artist) and a.get_figure(root=True) is fig for a in changing
        ):
            raise ArgumentError(f"changing must be a list of fig's artists, got {changing!r:.60}")
        width, height = fig.get_size_inches()
        margin = FIGURE_MARGIN
        for ax in fig.axes:
            x0, y0, x1, y1 = ax.get_position().extents
            ax.set_position(
                (
                    (margin + x0 * width) / (width + 2 * margin),
                    (margin + y0 * height) / (height + 2 * margin),
                    (x1 - x0) * width / (width + 2 * margin),
                    (y1 - y0) * height / (height + 2 * margin),
                )
            )
        fig.set_size_inches(width + 2 * margin, height + 2 * margin)
        for patch in (fig.patch, *(ax.patch for ax in fig.axes)):  # as a transparent save
            patch.set_facecolor("none")
            patch.set_edgecolor("none")
        for artist in changing:
            artist.set_animated(True)
        self.figure = fig
        self._changing = sorted(changing, key=lambda a: a.get_zorder())
        self._canvas: Any = FigureCanvasAgg(fig)  # untyped in matplotlib's stubs
        self._background: Any = None

    def png(self) -> bytes:
        """The figure as PNG bytes, as :func:`figure_png` gives it; no kernel counterpart."""
        canvas = self._canvas
        if self._background is None:
            canvas.draw()  # all but the changing artists
            self._background = canvas.copy_from_bbox(self.figure.bbox)
        else:
            canvas.restore_region(self._background)
        renderer = canvas.get_renderer()
        for artist in self._changing:
            artist.draw(renderer)
        rgba = np.asarray(canvas.buffer_rgba())
        return _ink_png(rgba, self.figure.dpi) or _tight_png(self.figure)


def show(fig: Figure) -> None:
    """Display a Figure in a notebook as a PNG only, with no ``<Figure ...>`` text beside it.

    The stored notebook output then holds an image (which nbval does not compare) and no text
    that could differ between runs. No kernel counterpart.
    """
    _check_figure(fig)
    png = base64.b64encode(figure_png(fig)).decode()
    display({"image/png": png}, raw=True)  # type: ignore[no-untyped-call]


def _is_figure(value: object) -> TypeGuard[Figure]:
    """Whether ``value`` is a matplotlib Figure, without importing matplotlib to find out."""
    figure = sys.modules.get("matplotlib.figure")
    return figure is not None and isinstance(value, figure.Figure)


def _check_figure(fig: object) -> None:
    """``fig`` must be a matplotlib Figure, else an :class:`ArgumentError` naming it."""
    if not _is_figure(fig):
        raise ArgumentError(f"fig must be a matplotlib Figure, got {type(fig).__name__}")


def _append(out: Any, value: object) -> None:
    if isinstance(value, str):
        out.append_stdout(value + "\n")
    elif isinstance(value, KeptFigure):
        out.append_display_data(Image(data=value.png()))  # type: ignore[no-untyped-call]
    elif _is_figure(value):
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

    Text is appended as stdout, DataFrames as rich display data, Figures (and
    :class:`KeptFigure`) as PNG images; a tuple
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
    _check_figure(fig)
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
