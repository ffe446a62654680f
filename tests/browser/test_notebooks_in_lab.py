"""The notebooks' widgets work in a real JupyterLab, as a student meets them.

For each notebook below: open it in JupyterLab in headless Chromium, clear it and run all cells,
wait for the kernel to go idle, and check that every cell ran, no cell shows an error or a
warning, and every widget the notebook displays rendered as a widget. Then change one control
the way a student would and check that the output it drives now shows what the package computes
for that input, calling the same pure function the widget calls. Screenshots in the light and dark
themes go to ``tests/artifacts/browser/`` (git-ignored), for a person to look at: a widget that
works but reads badly is a defect these assertions cannot see.

A case whose notebook is not written yet is skipped; once the notebook exists its case must pass.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"

Namespace = dict[str, Any]


@dataclass(frozen=True)
class WidgetCase:
    """One notebook, one control to change, and what its output must then show.

    ``expected`` gets the notebook's variables after the cells up to the widget's ran (the state
    the widget works on in the browser) and returns the text the package computes for the new
    input.
    """

    number: str  # the notebook's NN
    cell: str  # a snippet of the source of the cell that displays the widget
    control: str  # the description label of the control to change
    change: Callable[[Any], None]  # changes that control inside the widget view it is given
    expected: Callable[[Namespace], str]

    def notebook(self) -> str:
        found = sorted(NOTEBOOKS.glob(f"{self.number}_*.ipynb"))
        if not found:
            pytest.skip(f"notebook {self.number} is not written yet")
        return found[0].name


@cache
def notebook_variables(name: str, last_cell: str) -> Namespace:
    """Run a notebook's code cells in this process, up to the first whose source holds
    ``last_cell``, and return its variables.

    Lines that are IPython syntax (``%matplotlib inline``, ``!cmd``) are dropped; whatever the
    cells print is discarded.
    """
    cells = json.loads((NOTEBOOKS / name).read_text())["cells"]
    namespace: Namespace = {"__name__": "__notebook__"}
    cwd = Path.cwd()
    os.chdir(NOTEBOOKS)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            for number, cell in enumerate(cells):
                if cell["cell_type"] != "code":
                    continue
                lines = "".join(cell["source"]).splitlines()
                source = "\n".join(
                    line for line in lines if not line.lstrip().startswith(("%", "!"))
                )
                exec(compile(source, f"{name}, cell {number}", "exec"), namespace)
                if last_cell in source:
                    break
            else:
                raise AssertionError(f"{name} has no code cell holding {last_cell!r}")
    finally:
        os.chdir(cwd)
        import matplotlib.pyplot as plt

        plt.close("all")
    return namespace


def labelled(widget: Any, kind: str, control: str) -> Any:
    """The ``.widget-<kind>`` control inside ``widget`` whose description is ``control``."""
    label = widget.page.locator("label.widget-label").get_by_text(control, exact=True)
    return widget.locator(f".widget-{kind}").filter(has=label).first


def select_option(control: str, label: str) -> Callable[[Any], None]:
    """Pick ``label`` in the Dropdown described ``control``."""

    def change(widget: Any) -> None:
        labelled(widget, "dropdown", control).locator("select").select_option(label=label)

    return change


def type_text(control: str, text: str) -> Callable[[Any], None]:
    """Replace the text in the Text box described ``control`` and press Enter."""

    def change(widget: Any) -> None:
        box = labelled(widget, "text", control).locator("input")
        box.fill(text)
        box.press("Enter")

    return change


def move_slider(control: str, value: int) -> Callable[[Any], None]:
    """Type ``value`` into the readout of the slider described ``control``, as a student can."""

    def change(widget: Any) -> None:
        readout = labelled(widget, "slider", control).locator(".widget-readout")
        readout.click()
        readout.press("Control+a")
        readout.press_sequentially(str(value))
        readout.press("Enter")

    return change


def welcome_translation(variables: Namespace) -> str:
    # Notebook 00 teaches with a function of its own, before the package appears.
    return str(variables["translate"](0x402123))


def walk_of_another_address(variables: Namespace) -> str:
    from kvmmu.teaching.lessons import l01_guest_page_tables as lesson

    return lesson.walk_text(variables["memory"], variables["cpu"], "0x600abc", "read", 3)


def gfn_of_entry_37(variables: Namespace) -> str:
    from kvmmu.teaching.lessons import l04_lazy_gfns as lesson

    return lesson.gfn_lookup(variables["vm"], variables["direct"].serial, 37)


def savings_of_a_16_gib_guest(variables: Namespace) -> str:
    from kvmmu.teaching.lessons import l07_memory_savings as lesson

    text, _, _ = lesson.savings_view(16, "TDP", "4 KiB")
    return text


CASES = [
    WidgetCase("00", "VBox([picker", "gva", select_option("gva", "0x402123"), welcome_translation),
    WidgetCase(
        "01",
        "make_walk_widget(",
        "address",
        type_text("address", "0x600abc"),
        walk_of_another_address,
    ),
    WidgetCase("04", "make_gfn_widget(", "index", move_slider("index", 37), gfn_of_entry_37),
    WidgetCase(
        "07", "make_savings_widget(", "GiB", move_slider("GiB", 16), savings_of_a_16_gib_guest
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.number for case in CASES])
def test_widgets_render_and_answer_a_control(
    case: WidgetCase, open_notebook: Callable[[str], Any], artifacts: Path
) -> None:
    from playwright.sync_api import expect

    name = case.notebook()
    notebook = open_notebook(name)
    notebook.run_all()

    assert not notebook.unexecuted_cells(), (
        f"{name}: code cells {notebook.unexecuted_cells()} did not run (an earlier cell failed?)"
    )
    assert not notebook.error_outputs(), f"{name} shows errors: {notebook.error_outputs()}"
    assert not notebook.widget_failures(), f"{name}: widgets failed {notebook.widget_failures()}"
    stored = notebook.stored_widget_views()
    assert stored > 0, f"{name} stores no widget output: run it before committing"
    expect(notebook.widget_views()).to_have_count(stored)

    widget = notebook.widget_with_control(case.control)
    output = widget.locator(".widget-output").first
    expected = case.expected(notebook_variables(name, case.cell))
    expect(output).not_to_contain_text(expected)  # else the change below would prove nothing
    case.change(widget)
    expect(output).to_contain_text(expected, timeout=10_000)
    notebook.wait_until_settled()
    assert not notebook.widget_failures(), f"{name}: widgets failed {notebook.widget_failures()}"

    shots = notebook.screenshot(widget, artifacts)
    notebook.set_theme("JupyterLab Dark")
    shots += notebook.screenshot(widget, artifacts, suffix="-dark")
    notebook.set_theme("JupyterLab Light")
    assert all(shot.stat().st_size > 0 for shot in shots)
    assert not [e for e in notebook.console_errors if "widget" in e.lower()], (
        f"{name}: the browser console reports widget errors: {notebook.console_errors}"
    )
