"""``scripts/build_html.py``: the static copy of the notebooks keeps their widgets' default state.

These tests need no browser. They build pages into a temporary folder and read the HTML: each
page embeds the widget state that the ipywidgets HTML manager draws, the index links every page
under its title, and a notebook that shows a widget without storing its state is reported.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
WELCOME = ROOT / "notebooks" / "00_welcome.ipynb"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_html", ROOT / "scripts" / "build_html.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build_html = load_script()


def embedded_widget_state(page: str) -> dict[str, object]:
    marker = '<script type="application/vnd.jupyter.widget-state+json">'
    assert marker in page, "the page embeds no widget state"
    start = page.index(marker) + len(marker)
    state: dict[str, object] = json.loads(page[start : page.index("</script>", start)])
    return state


def test_page_embeds_the_widgets_default_state_and_the_index_links_it(tmp_path: Path) -> None:
    assert build_html.build([WELCOME], tmp_path) == []
    page = (tmp_path / "00_welcome.html").read_text(encoding="utf-8")
    models = embedded_widget_state(page)["state"]
    assert isinstance(models, dict)
    kinds = {model["model_name"] for model in models.values()}
    assert {"DropdownModel", "OutputModel", "VBoxModel"} <= kinds
    # The Output widget's stored text is what the HTML manager draws under the dropdown.
    assert "gva 0x400123 -> gpa 0x10123 -> hpa 0x8030123" in json.dumps(models)
    assert str(ROOT) not in page, "the page leaks a path of the machine that built it"
    index = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert '<a href="00_welcome.html">00 · Welcome' in index


def test_widget_renderer_and_require_js_can_be_served_locally(tmp_path: Path) -> None:
    build_html.build([WELCOME], tmp_path, renderer="lib/embed-amd.js", require_js="lib/require.js")
    page = (tmp_path / "00_welcome.html").read_text(encoding="utf-8")
    assert "lib/embed-amd.js" in page and "lib/require.js" in page


def test_a_widget_without_stored_state_is_reported(tmp_path: Path) -> None:
    view = {"model_id": "0" * 32, "version_major": 2, "version_minor": 0}
    output = {
        "output_type": "display_data",
        "metadata": {},
        "data": {build_html.WIDGET_VIEW: view, "text/plain": "IntSlider(value=0)"},
    }
    cell = {
        "cell_type": "code",
        "id": "stateless",
        "metadata": {},
        "execution_count": 1,
        "source": "w",
        "outputs": [output],
    }
    notebook = {"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "99_stateless.ipynb"
    path.write_text(json.dumps(notebook))
    problems = build_html.build([path], tmp_path / "html")
    assert len(problems) == 1 and "stores no widget state" in problems[0]


def test_main_rejects_a_missing_notebook(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_html.main([str(tmp_path / "nope.ipynb"), "--output", str(tmp_path)])
    assert exit_info.value.code == 2
