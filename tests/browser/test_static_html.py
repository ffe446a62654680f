"""``scripts/build_html.py``: the static site of the lessons reads and navigates offline.

The site is built once into a temporary folder. Without a browser: every page embeds its widgets'
state, the index lists each lesson under its title (numbered once, code marks rendered) with its
objectives, every page links to the previous and next lesson and the index, every figure has alt
text that says what it shows, and no page loads a script or stylesheet from the network. In
headless Chromium, with every request that is not a local file blocked: a widget draws its
default state and the navigation links lead where they say.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
WELCOME = ROOT / "notebooks" / "00_welcome.ipynb"
WELCOME_DEFAULT = "gva 0x400123 -> gpa 0x10123 -> hpa 0x8030123"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_html", ROOT / "scripts" / "build_html.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


build_html = load_script()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("site")
    assert build_html.build(NOTEBOOKS, output) == []
    return output


def embedded_widget_state(page: str) -> dict[str, object]:
    marker = '<script type="application/vnd.jupyter.widget-state+json">'
    assert marker in page, "the page embeds no widget state"
    start = page.index(marker) + len(marker)
    state: dict[str, object] = json.loads(page[start : page.index("</script>", start)])
    return state


def test_page_embeds_the_widgets_default_state(site: Path) -> None:
    page = (site / "00_welcome.html").read_text(encoding="utf-8")
    models = embedded_widget_state(page)["state"]
    assert isinstance(models, dict)
    kinds = {model["model_name"] for model in models.values()}
    assert {"DropdownModel", "OutputModel", "VBoxModel"} <= kinds
    # The Output widget's stored text is what the HTML manager draws under the dropdown.
    assert WELCOME_DEFAULT in json.dumps(models)
    assert str(ROOT) not in page, "the page leaks a path of the machine that built it"


def test_index_lists_each_lesson_once_numbered_with_its_objectives(site: Path) -> None:
    index = (site / "index.html").read_text(encoding="utf-8")
    assert "<ol" not in index, "an <ol> would number the lessons a second time"
    for notebook in NOTEBOOKS:
        assert f'href="{notebook.stem}.html"' in index, f"the index does not link {notebook.name}"
    assert '<span class="number">1</span> Guest page tables: one translation' in index
    assert "1. Guest" not in index and "00 ·" not in index, "a title keeps its own number"
    assert "<code>kvm_mmu_page</code> and its role" in index and "`" not in index
    # Lesson 1's objectives, as a list, with their code marks rendered.
    assert "<li>decode a page-fault error code (P, W, U, RSVD, I/D, PK)" in index
    lesson_3 = index[index.index('id="lesson-3"') : index.index('id="lesson-4"')]
    assert lesson_3.count("<li>") == 4 and "<code>union kvm_mmu_page_role</code>" in lesson_3


def test_every_page_links_previous_index_and_next(site: Path) -> None:
    for position, notebook in enumerate(NOTEBOOKS):
        page = (site / f"{notebook.stem}.html").read_text(encoding="utf-8")
        assert (
            page.count('rel="index" href="index.html"')
            + page.count('href="index.html" rel="index"')
            == 2
        ), f"{notebook.name}: an index link above and below"
        links = dict(re.findall(r'<a href="([^"]+)" rel="(prev|next)">', page))
        rels = {rel: href for href, rel in links.items()}
        if position > 0:
            assert rels.get("prev") == f"{NOTEBOOKS[position - 1].stem}.html"
        else:
            assert "prev" not in rels
        if position + 1 < len(NOTEBOOKS):
            assert rels.get("next") == f"{NOTEBOOKS[position + 1].stem}.html"
        else:
            assert "next" not in rels
        title = re.search(r"<title>([^<]*)</title>", page)
        assert title and "`" not in title.group(1) and title.group(1).endswith(" · kvmmu")


def test_every_figure_has_alt_text_saying_what_it_shows(site: Path) -> None:
    page = (site / "01_guest_page_tables.html").read_text(encoding="utf-8")
    alts = re.findall(r'<img alt="([^"]*)"', page)
    # The summary line of the function that drew it (walk_tree_figure), and its section.
    assert len(alts) == 1 and alts[0].startswith("Figure: The walk of one access")
    assert alts[0].endswith("Section: The walk.")
    for notebook in NOTEBOOKS:
        page = (site / f"{notebook.stem}.html").read_text(encoding="utf-8")
        images = re.findall(r"<img [^>]*>", page)
        assert all('alt="Figure: ' in tag for tag in images), f"{notebook.name}: {images}"
        assert "No description has been provided" not in page


def test_pages_load_nothing_from_the_network(site: Path) -> None:
    for page in site.glob("*.html"):
        text = page.read_text(encoding="utf-8")
        remote = re.findall(r'<(?:script|link)[^>]+(?:src|href)="(?:https?:)?//[^"]+"', text)
        assert not remote, f"{page.name} loads {remote}"
        if "application/vnd.jupyter.widget-state+json" in text:
            assert f"widgetRendererSrc = '{build_html.WIDGET_MANAGER}'" in text, page.name
    for bundled in (build_html.REQUIRE_JS, build_html.WIDGET_MANAGER):
        assert (site / bundled).stat().st_size > 10_000, f"{bundled} was not copied"


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


def test_a_lesson_with_tex_math_is_reported(tmp_path: Path) -> None:
    cell = {"cell_type": "markdown", "id": "m", "metadata": {}, "source": "# 98. M\n\n$x^2$"}
    notebook = {"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "98_math.ipynb"
    path.write_text(json.dumps(notebook))
    problems = build_html.build([path], tmp_path / "html")
    assert len(problems) == 1 and "MathJax" in problems[0]


def test_main_rejects_a_missing_notebook(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_html.main([str(tmp_path / "nope.ipynb"), "--output", str(tmp_path)])
    assert exit_info.value.code == 2


@pytest.fixture
def offline_page(page: Any) -> Iterator[tuple[Any, list[str]]]:
    """The browser tab with every request that is not a local file or localhost refused."""
    blocked: list[str] = []

    def route(request_route: Any) -> None:
        url = request_route.request.url
        if url.startswith("file:") or re.match(r"https?://(127\.0\.0\.1|localhost)[:/]", url):
            request_route.continue_()
        else:
            blocked.append(url)
            request_route.abort()

    page.route("**/*", route)
    yield page, blocked
    page.unroute("**/*")


def test_offline_the_widget_draws_its_default_state_and_links_navigate(
    site: Path, offline_page: tuple[Any, list[str]]
) -> None:
    from playwright.sync_api import expect

    page, blocked = offline_page
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto((site / "index.html").as_uri())
    page.get_by_role("link", name=re.compile(r"^0 Welcome")).click()
    expect(page).to_have_url(re.compile(r"00_welcome\.html$"))
    # The HTML manager replaced the stored view by a live widget in its default state.
    widget = page.locator(".jupyter-widgets.widget-vbox").first
    expect(widget.locator("select")).to_have_value(re.compile(r"."), timeout=20_000)
    expect(widget.locator(".widget-output")).to_contain_text(WELCOME_DEFAULT)
    expect(widget.locator(".widget-dropdown label")).to_have_text("gva")

    page.locator("nav.kvmmu-top a[rel=next]").click()
    expect(page).to_have_url(re.compile(r"01_guest_page_tables\.html$"))
    walk = page.locator(".jupyter-widgets.widget-vbox").first
    expect(walk.locator(".widget-text input")).to_have_value("0x400123", timeout=20_000)
    expect(walk.locator(".widget-output img")).to_have_count(1)
    page.locator("nav.kvmmu-bottom a[rel=prev]").click()
    expect(page).to_have_url(re.compile(r"00_welcome\.html$"))
    page.locator("nav.kvmmu-top a[rel=index]").click()
    expect(page).to_have_url(re.compile(r"index\.html$"))
    expect(page.locator("section.lesson")).to_have_count(len(NOTEBOOKS))
    assert not blocked, f"the site asked the network for {blocked}"
    assert not errors, f"the pages raised {errors}"
