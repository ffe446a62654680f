"""Every lesson works in a real JupyterLab, as a student meets it, in light and dark themes.

For every notebook in ``notebooks/``: open it in JupyterLab in headless Chromium, clear it and run
all cells, wait for the kernel to go idle, and check that every cell ran, no cell shows an error
or a warning, and every widget the notebook displays rendered as a widget. Then move each kind of
control the lesson has (dropdown, text box, slider, checkbox, button), the way a student would,
and check after each move that the widget's output shows what the package computes for the new
input, by calling the package function the widget calls (``PACKAGE`` below names each one).

Screenshots: each widget that was moved (its controls and its output, plots included), or in a
lesson without widgets the outputs of its last code cell, is taken in the light and the dark
theme and compared with the committed references in ``tests/browser/reference/`` by a cheap
perceptual measure (``screenshot_difference``): both images are turned grey and shrunk to 128
pixels wide, which blurs away font antialiasing; their mean absolute difference must stay under
``MAX_DIFFERENCE`` and their shapes agree, which a missing plot or an empty widget breaks. Set
``KVMMU_UPDATE_SCREENSHOTS=1`` to write the references anew from this run (then look at them
and commit them). This run's screenshots stay in ``tests/artifacts/browser/`` (git-ignored), for
a person to look at, with ``screenshot-differences.txt`` listing each measure.

A lesson that displays widgets must have its controls listed in ``LESSONS``; a new notebook
without an entry fails, saying so.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# The package functions these checks call, by dotted path: the one place to rename them when a
# function moves (a lesson's own module, say). Each takes the inputs the widget's controls hold.
PACKAGE = {
    "walk_text": "kvmmu.teaching.lessons.l01_guest_page_tables.walk_text",
    "shadow_step_view": "kvmmu.teaching.lessons.l02_shadow_paging.shadow_step_view",
    "setup_shadow_pages": "kvmmu.teaching.lessons.l03_mmu_page_role.setup_shadow_pages",
    "gfn_lookup": "kvmmu.teaching.lessons.l04_lazy_gfns.gfn_lookup",
    "table_write_view": "kvmmu.teaching.lessons.l05_write_protection.table_write_view",
    "sync_view": "kvmmu.teaching.lessons.l06_unsync.sync_view",
    "savings_view": "kvmmu.teaching.lessons.l07_memory_savings.savings_view",
    "mode_view": "kvmmu.teaching.lessons.l08_tdp_vs_shadow.mode_view",
}

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
REFERENCES = Path(__file__).resolve().parent / "reference"
UPDATE = os.environ.get("KVMMU_UPDATE_SCREENSHOTS") == "1"
THEMES = {"light": "JupyterLab Light", "dark": "JupyterLab Dark"}
COMPARE_WIDTH = 128  # pixels: coarse enough to forgive antialiasing, fine enough to see a plot
MAX_DIFFERENCE = 0.04  # mean absolute grey difference, 0..1
MAX_SHAPE_CHANGE = 0.12  # relative change of height / width
REFERENCE_WIDTH = 480  # references are stored at this width, to keep the repository small

Namespace = dict[str, Any]


def package(name: str) -> Callable[..., Any]:
    """The package function ``PACKAGE[name]``."""
    module, _, attribute = PACKAGE[name].rpartition(".")
    function: Callable[..., Any] = getattr(importlib.import_module(module), attribute)
    return function


def normalized(text: str) -> str:
    return " ".join(text.split())


def frame_rows(frame: Any) -> list[str]:
    """A DataFrame's rows as the page's table shows them, whitespace collapsed."""
    lines = frame.to_string(header=False).splitlines()
    if frame.index.name is not None:
        lines = lines[1:]
    return [normalized(line) for line in lines]


def text_lines(text: str) -> list[str]:
    return [normalized(line) for line in text.splitlines() if line.strip()]


@dataclass(frozen=True)
class Control:
    """One control of a lesson's widget, what to set it to, and what the output must then show.

    ``expected`` gets the notebook's variables after the cells up to the widget's ran (the state
    the widget works on in the browser) and returns the lines the package computes for the
    inputs after this change and the ones listed before it in the lesson.
    """

    cell: str  # a snippet of the source of the cell that displays the widget
    kind: str  # dropdown, text, slider, checkbox or button
    label: str  # the control's description (a button's text)
    value: str | int | None  # the option label, text or number to set; None to click
    expected: Callable[[Namespace], list[str]]

    def move(self, widget: Any) -> None:
        page = widget.page
        if self.kind == "button":
            widget.get_by_role("button", name=self.label, exact=True).click()
            return
        if self.kind == "checkbox":
            box = widget.locator(".widget-checkbox").filter(has_text=self.label).first
            box.locator("input[type=checkbox]").click()
            return
        label = page.locator("label.widget-label").get_by_text(self.label, exact=True)
        control = widget.locator(f".widget-{self.kind}").filter(has=label).first
        if self.kind == "dropdown":
            control.locator("select").select_option(label=str(self.value))
        elif self.kind == "text":
            control.locator("input").fill(str(self.value))
            control.locator("input").press("Enter")
        elif self.kind == "slider":
            readout = control.locator(".widget-readout")
            readout.click()
            readout.press("Control+a")
            readout.press_sequentially(str(self.value))
            readout.press("Enter")
        else:
            raise AssertionError(f"unknown control kind {self.kind!r}")


WALK = "make_walk_widget("
STEPS = "make_shadow_steps_widget("
ROLE = "make_role_widget("
GFN = "make_gfn_widget("
WRITES = "make_table_write_widget("
SYNC = "make_sync_widget("
SAVINGS = "make_savings_widget("
MODE = "make_mode_widget("


def first_page(v: Namespace) -> Any:
    return min(v["vm"].mmu.active, key=lambda sp: sp.serial)


# Per lesson, the controls to move, in order; each lesson moves every kind of control it has.
LESSONS: dict[str, list[Control]] = {
    # Lesson 0 teaches with a function of its own, before the package appears.
    "00": [
        Control("VBox([picker", "dropdown", "gva", "0x402123", lambda v: [v["translate"](0x402123)])
    ],
    "01": [
        Control(
            WALK,
            "text",
            "address",
            "0x600abc",
            lambda v: text_lines(
                package("walk_text")(v["memory"], v["cpu"], "0x600abc", "read", 3)
            ),
        ),
        Control(
            WALK,
            "dropdown",
            "access",
            "write",
            lambda v: text_lines(
                package("walk_text")(v["memory"], v["cpu"], "0x600abc", "write", 3)
            ),
        ),
    ],
    "02": [
        Control(
            STEPS, "slider", "steps", 5, lambda v: text_lines(package("shadow_step_view")(5)[0])
        ),
        Control(
            STEPS,
            "button",
            "next step",
            None,
            lambda v: text_lines(package("shadow_step_view")(6)[0]),
        ),
    ],
    "03": [
        Control(
            ROLE,
            "dropdown",
            "mode",
            "PAE",
            lambda v: frame_rows(package("setup_shadow_pages")("PAE", True, False, False, True)),
        ),
        Control(
            ROLE,
            "checkbox",
            "TDP",
            None,
            lambda v: frame_rows(package("setup_shadow_pages")("PAE", True, True, False, True)),
        ),
    ],
    "04": [
        Control(
            GFN,
            "slider",
            "index",
            37,
            lambda v: text_lines(package("gfn_lookup")(v["vm"], v["direct"].serial, 37)),
        ),
        Control(
            GFN,
            "dropdown",
            "page",
            "",  # filled in by lesson_controls: the label of the VM's first page
            lambda v: text_lines(package("gfn_lookup")(v["vm"], first_page(v).serial, 37)),
        ),
    ],
    "05": [
        Control(
            WRITES,
            "slider",
            "PTE / 100",
            40,
            lambda v: frame_rows(package("table_write_view")(40, 0, False)[0]),
        ),
        Control(
            WRITES,
            "checkbox",
            "allow unsync",
            None,
            lambda v: frame_rows(package("table_write_view")(40, 0, True)[0]),
        ),
    ],
    "06": [
        Control(
            SYNC,
            "button",
            "invlpg",
            None,
            lambda v: frame_rows(package("sync_view")(("edit", "access", "invlpg"))),
        ),
    ],
    "07": [
        Control(
            SAVINGS,
            "slider",
            "GiB",
            16,
            lambda v: text_lines(package("savings_view")(16, "TDP", "4 KiB")[0]),
        ),
        Control(
            SAVINGS,
            "dropdown",
            "mode",
            "shadow",
            lambda v: (
                text_lines(package("savings_view")(16, "shadow", "4 KiB")[0])
                + frame_rows(package("savings_view")(16, "shadow", "4 KiB")[1])
            ),
        ),
    ],
    "08": [
        Control(
            MODE,
            "slider",
            "TLB miss",
            5000,
            lambda v: (
                text_lines(package("mode_view")(5000, 20, 10)[0])
                + frame_rows(package("mode_view")(5000, 20, 10)[1])
            ),
        ),
    ],
    "09": [],
    "10": [],
}


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


def lesson_controls(number: str, variables: Callable[[str], Namespace]) -> list[Control]:
    """The lesson's controls, with values that depend on the notebook's state filled in."""
    controls = LESSONS[number]
    if number == "04":
        page = first_page(variables(GFN))
        controls = [
            c
            if c.label != "page"
            else Control(c.cell, c.kind, c.label, page.describe(), c.expected)
            for c in controls
        ]
    return controls


def grey_thumbnail(image: Any, width: int, height: int | None = None) -> np.ndarray[Any, Any]:
    """The image in grey, 0..1, shrunk to ``width`` (and ``height``, else keeping its shape)."""
    from PIL import Image

    grey = image.convert("L")
    if height is None:
        height = max(1, round(grey.height * width / grey.width))
    return np.asarray(grey.resize((width, height), Image.Resampling.BOX), dtype=float) / 255.0


def screenshot_difference(shot: Path, reference: Path) -> tuple[float, float]:
    """(mean absolute grey difference at ``COMPARE_WIDTH``, relative change of aspect ratio)."""
    from PIL import Image

    with Image.open(shot) as new, Image.open(reference) as old:
        shape = abs((new.height / new.width) / (old.height / old.width) - 1)
        expected = grey_thumbnail(old, COMPARE_WIDTH)
        actual = grey_thumbnail(new, COMPARE_WIDTH, expected.shape[0])
    return float(np.abs(actual - expected).mean()), shape


def check_screenshot(shot: Path, name: str) -> str | None:
    """Compare ``shot`` with ``reference/<name>.png`` (or write that, when updating)."""
    from PIL import Image

    reference = REFERENCES / f"{name}.png"
    if UPDATE:
        REFERENCES.mkdir(parents=True, exist_ok=True)
        with Image.open(shot) as image:
            small = image.convert("RGB")
            height = max(1, round(small.height * REFERENCE_WIDTH / small.width))
            small.resize((REFERENCE_WIDTH, height), Image.Resampling.LANCZOS).save(
                reference, optimize=True
            )
        return None
    if not reference.is_file():
        return (
            f"{reference.name} has no reference screenshot: run the browser tests with "
            "KVMMU_UPDATE_SCREENSHOTS=1, look at tests/browser/reference/, and commit it"
        )
    difference, shape = screenshot_difference(shot, reference)
    with (shot.parent / "screenshot-differences.txt").open("a") as log:
        log.write(f"{name}\t{difference:.4f}\t{shape:.3f}\n")
    if difference > MAX_DIFFERENCE or shape > MAX_SHAPE_CHANGE:
        return (
            f"{name}: the screenshot differs from its reference (mean grey difference "
            f"{difference:.3f}, limit {MAX_DIFFERENCE}; shape change {shape:.0%}, limit "
            f"{MAX_SHAPE_CHANGE:.0%}); see {shot}. If the change is intended, refresh the "
            "references with KVMMU_UPDATE_SCREENSHOTS=1"
        )
    return None


def wait_for_lines(output: Any, lines: list[str], timeout_s: float = 10.0) -> None:
    """Wait until the output shows every line (whitespace collapsed)."""
    deadline = time.monotonic() + timeout_s
    while True:
        shown = normalized(output.inner_text())
        missing = [line for line in lines if line not in shown]
        if not missing:
            return
        assert time.monotonic() < deadline, f"the output lacks {missing[:3]}; it shows {shown!r}"
        output.page.wait_for_timeout(100)


def lesson_numbers() -> list[str]:
    return [path.name[:2] for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))]


@pytest.mark.parametrize("number", lesson_numbers())
def test_lesson_runs_and_its_widgets_answer_every_kind_of_control(
    number: str, open_notebook: Callable[[str], Any], artifacts: Path
) -> None:
    from playwright.sync_api import expect

    (path,) = NOTEBOOKS.glob(f"{number}_*.ipynb")
    name = path.name
    notebook = open_notebook(name)
    notebook.run_all()

    assert not notebook.unexecuted_cells(), (
        f"{name}: code cells {notebook.unexecuted_cells()} did not run (an earlier cell failed?)"
    )
    assert not notebook.error_outputs(), f"{name} shows errors: {notebook.error_outputs()}"
    assert not notebook.widget_failures(), f"{name}: widgets failed {notebook.widget_failures()}"
    stored = notebook.stored_widget_views()
    expect(notebook.widget_views()).to_have_count(stored)
    assert number in LESSONS, (
        f"{name} is not in LESSONS in {Path(__file__).name}: list the controls it has"
    )
    controls = lesson_controls(number, lambda cell: notebook_variables(name, cell))
    assert stored == 0 or controls, f"{name} shows {stored} widget(s): list their controls"

    # What to screenshot: each widget moved (its controls and its output), in order.
    targets: dict[str, Any] = {}
    for control in controls:
        cell = notebook.page.locator(".jp-CodeCell").filter(has_text=control.cell).first
        widget = cell.locator(".jp-OutputArea-output > .jupyter-widgets").first
        output = widget.locator(".widget-output").first
        expected = control.expected(notebook_variables(name, control.cell))
        assert expected, f"{name}: the package computed nothing for {control.label}"
        shown = normalized(output.inner_text())
        assert not all(line in shown for line in expected), (
            f"{name}: {control.label} shows the expected output before it moves; the check "
            "would prove nothing"
        )
        control.move(widget)
        wait_for_lines(output, expected)
        targets.setdefault(control.cell, widget)
    notebook.wait_until_settled()
    assert not notebook.widget_failures(), f"{name}: widgets failed {notebook.widget_failures()}"
    if not targets:
        with_output = notebook.page.locator(".jp-CodeCell").filter(
            has=notebook.page.locator(".jp-OutputArea-output")
        )
        targets["last output"] = with_output.last.locator(".jp-Cell-outputWrapper")

    # The theme is a user setting, so it carries over from the lesson before: take this one's
    # screenshots in that theme first, then switch once.
    light = notebook.page.evaluate("document.body.dataset.jpThemeLight") == "true"
    problems = []
    for theme in ("light", "dark") if light else ("dark", "light"):
        if (theme == "light") != light:
            notebook.set_theme(THEMES[theme])
        for index, target in enumerate(targets.values()):
            target.scroll_into_view_if_needed()
            stem = f"{path.stem}-{index}-{theme}"
            shot = artifacts / f"{stem}.png"
            target.screenshot(path=str(shot))
            problem = check_screenshot(shot, stem)
            if problem:
                problems.append(problem)
    assert not problems, "\n".join(problems)
    assert not [e for e in notebook.console_errors if "widget" in e.lower()], (
        f"{name}: the browser console reports widget errors: {notebook.console_errors}"
    )


def test_the_comparison_forgives_antialiasing_and_catches_a_missing_plot(tmp_path: Path) -> None:
    """No browser needed: the measure itself, on a committed reference with a plot in it."""
    from PIL import Image, ImageFilter

    reference = REFERENCES / "07_memory_savings-0-light.png"
    if not reference.is_file():
        pytest.skip("no reference screenshots yet: run with KVMMU_UPDATE_SCREENSHOTS=1")
    with Image.open(reference) as image:
        original = image.convert("RGB")
    # Antialiasing and hinting move edges by a pixel: a slight blur and a one-pixel shift.
    smeared = original.filter(ImageFilter.GaussianBlur(0.8)).transform(
        original.size, Image.Transform.AFFINE, (1, 0, 1, 0, 1, 0), fillcolor="white"
    )
    smeared.save(tmp_path / "smeared.png")
    difference, shape = screenshot_difference(tmp_path / "smeared.png", reference)
    assert difference < MAX_DIFFERENCE / 2 and shape == 0
    # The same widget with its plot gone (its bars painted over in the background colour).
    gone = original.copy()
    width, height = gone.size
    gone.paste(original.getpixel((width - 2, height - 2)), (0, height * 2 // 3, width, height))
    gone.save(tmp_path / "gone.png")
    difference, _ = screenshot_difference(tmp_path / "gone.png", reference)
    assert difference > MAX_DIFFERENCE, f"a missing plot changed the measure by {difference:.3f}"
    # An empty widget is much shorter than the one it replaces.
    original.crop((0, 0, width, height // 4)).save(tmp_path / "empty.png")
    assert screenshot_difference(tmp_path / "empty.png", reference)[1] > MAX_SHAPE_CHANGE
