"""Build a static, readable HTML copy of every notebook, with an index page.

    .venv/bin/python scripts/build_html.py            # from the stored outputs, into build/html/
    .venv/bin/python scripts/build_html.py --execute  # run each notebook first (a fresh copy)

Each page is nbconvert's JupyterLab-styled HTML of one notebook. The stored outputs are the ones
``pytest --nbval`` checks, so by default nothing is re-run. Widgets: every notebook stores its
widgets' state, which the page embeds; a browser that can load the ipywidgets HTML manager (from
a CDN, or from ``--widget-renderer-url``) draws each widget in its default state, and any other
reader still sees the default state, which each widget cell prints as text before the widget.
For pages that work offline, point ``--widget-renderer-url`` and ``--require-js-url`` at copies
of ``@jupyter-widgets/html-manager``'s ``dist/embed-amd.js`` and of ``require.js``.
The notebooks on disk are never modified. No kernel counterpart: this is a publishing recipe.
"""

from __future__ import annotations

import argparse
import html
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
DEFAULT_OUTPUT = ROOT / "build" / "html"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def title_of(notebook: Any, fallback: str) -> str:
    """The text of the notebook's first Markdown heading."""
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return str(line.lstrip("#").strip())
    return fallback


def widget_views(notebook: Any) -> int:
    return sum(
        WIDGET_VIEW in output.get("data", {})
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )


def execute(notebook: Any, timeout: int) -> None:
    """Run the notebook in memory, from the notebooks folder, storing its widgets' state."""
    from nbclient import NotebookClient

    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
        store_widget_state=True,
    )
    client.execute()


def build(
    paths: list[Path],
    output: Path,
    *,
    run: bool = False,
    renderer: str | None = None,
    require_js: str | None = None,
) -> list[str]:
    """Write one HTML page per notebook and ``index.html``; return the problems found."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab")  # type: ignore[no-untyped-call]
    if renderer:
        exporter.widget_renderer_url = renderer
    if require_js:
        exporter.require_js_url = require_js
    output.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    entries: list[tuple[str, str]] = []
    for path in paths:
        notebook = nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]
        if run:
            execute(notebook, timeout=120)
        views = widget_views(notebook)
        state = notebook.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
        if views and not state:
            problems.append(
                f"{path.name} shows {views} widget(s) but stores no widget state: run it in "
                "JupyterLab with 'Save Widget State Automatically' on, or use --execute"
            )
        body, _ = exporter.from_notebook_node(notebook, resources={"metadata": {"name": path.stem}})
        page = output / f"{path.stem}.html"
        page.write_text(body, encoding="utf-8")
        entries.append((page.name, title_of(notebook, path.stem)))
        print(f"{path.name}: {page.relative_to(output.parent)} ({views} widget(s))")
    items = "\n".join(
        f'  <li><a href="{html.escape(href)}">{html.escape(title)}</a></li>'
        for href, title in entries
    )
    (output / "index.html").write_text(
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<title>kvmmu notebooks</title></head>\n<body>\n<h1>kvmmu: the KVM shadow MMU, "
        f"lesson by lesson</h1>\n<ol>\n{items}\n</ol>\n</body></html>\n",
        encoding="utf-8",
    )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "notebooks", nargs="*", type=Path, help="notebooks to convert (default: all)"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="output folder")
    parser.add_argument("--execute", action="store_true", help="run each notebook first")
    parser.add_argument(
        "--widget-renderer-url",
        help="where pages load the ipywidgets HTML manager (embed-amd.js) from; default: a CDN",
    )
    parser.add_argument("--require-js-url", help="where pages load require.js from; default: a CDN")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing or not paths:
        parser.error(f"no such notebook: {', '.join(missing)}" if missing else "no notebooks")
    problems = build(
        paths,
        args.output,
        run=args.execute,
        renderer=args.widget_renderer_url,
        require_js=args.require_js_url,
    )
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    print(f"open {args.output / 'index.html'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
