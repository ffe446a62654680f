"""Build the static site of the lessons: an index and one page per notebook, readable offline.

    .venv/bin/python scripts/build_html.py            # from the stored outputs, into build/html/
    .venv/bin/python scripts/build_html.py --execute  # run each notebook first (a fresh copy)

Each page is nbconvert's JupyterLab-styled HTML of one notebook, with previous / index / next
links above and below it; ``index.html`` lists every lesson with its title and what it teaches
(the objectives under "you will be able to" in its first cell). The stored outputs are the ones
``pytest --nbval`` checks, so by default nothing is re-run. Widgets: every notebook stores its
widgets' state, which the page embeds, and the ipywidgets HTML manager draws each widget in that
default state. The manager and require.js are npm packages pinned by ``site/package-lock.json``;
when ``site/node_modules`` lacks them the build runs ``npm ci`` there, then copies them into the
output's ``static/``, so a page loads nothing from the network. Each figure gets alt text: the
summary line of the package function that drew it, and the section it is in.
The notebooks on disk are never modified. No kernel counterpart: this is a publishing recipe.
"""

from __future__ import annotations

import argparse
import ast
import html
import importlib
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
DEFAULT_OUTPUT = ROOT / "build" / "html"
SITE = ROOT / "site"
TEMPLATE = SITE / "templates" / "kvmmu.html.j2"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"

# What the pages load, relative to the output folder, and where each file comes from in
# site/node_modules. The HTML manager's webpack bundle resolves its icon fonts against the page
# (its public path is ""), so those go beside the pages. Each package's package.json goes along:
# it names the version and the licence (BSD-3-Clause, MIT) of what the site redistributes.
REQUIRE_JS = "static/require.js"
WIDGET_MANAGER = "static/embed-amd.js"
BUNDLE = {
    REQUIRE_JS: "requirejs/require.js",
    WIDGET_MANAGER: "@jupyter-widgets/html-manager/dist/embed-amd.js",
    "static/html-manager.package.json": "@jupyter-widgets/html-manager/package.json",
    "static/requirejs.package.json": "requirejs/package.json",
}
FONT_SUFFIXES = (".woff2", ".woff", ".ttf", ".eot", ".svg")

# TeX math in markdown: the site does not load MathJax, so a lesson that needs it is refused.
MATH = re.compile(r"(?<!\\)\$[^$\n]+\$|\\\(|\\\[|\$\$")
NUMBER_PREFIX = re.compile(r"^\s*\d+\s*[.·:]\s*")
OBJECTIVES_LEAD = re.compile(r"you will be able to\s*(.*)$", re.IGNORECASE | re.DOTALL)
# An output image as nbconvert writes it: its <img> tag's attributes, an alt among them.
RENDERED_IMAGE = re.compile(r'(<div class="jp-RenderedImage[^>]*>\s*<img)([^>]*?)(/?>)')
ALT = re.compile(r'\s+alt="[^"]*"')
DRAWING_SUFFIXES = ("_figure", "_view")  # what draws a figure; show_figure() only displays one


class SiteError(Exception):
    """The site cannot be built as asked; the message says what to install or change."""


@dataclass
class Lesson:
    """One notebook as the site shows it: where its page goes, its title, what it teaches."""

    path: Path
    number: int
    title: str  # markdown inline text, without the notebook's own number
    objectives: list[str] = field(default_factory=list)  # markdown inline text, one per item
    summary: str = ""  # the first paragraph, for a lesson that lists no objectives

    @property
    def href(self) -> str:
        return f"{self.path.stem}.html"

    @property
    def label(self) -> str:
        """Number and title as plain text, for links and the page's ``<title>``."""
        return f"{self.number} · {plain(self.title)}"


def plain(markdown: str) -> str:
    """Inline markdown as plain text: code marks and emphasis dropped."""
    return re.sub(r"[`*]", "", markdown).strip()


def inline_html(markdown: str) -> str:
    """Inline markdown (code spans, bold, italics) as HTML; everything else escaped."""
    parts = re.split(r"(`[^`]+`)", markdown)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
            continue
        text = html.escape(part)
        text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
        text = re.sub(r"\*(.+?)\*", r"<em>\1</em>", text)
        out.append(text)
    return "".join(out)


def lesson_of(notebook: Any, path: Path) -> Lesson:
    """Title and objectives from the notebook's first markdown cell.

    The title is the first ``#`` heading, without a leading "1." or "00 ·" (the site numbers
    lessons from their file names); the objectives are the bullet items after "you will be able
    to", or the rest of that sentence when no list follows.
    """
    digits = path.stem.split("_")[0]
    number = int(digits) if digits.isdigit() else 0
    lesson = Lesson(path, number, path.stem)
    first = next((c for c in notebook.cells if c.cell_type == "markdown"), None)
    if first is None:
        return lesson
    lines = first.source.splitlines()
    heading = next((i for i, line in enumerate(lines) if line.startswith("#")), None)
    if heading is not None:
        lesson.title = NUMBER_PREFIX.sub("", lines[heading].lstrip("#")).strip()
    body = "\n".join(lines[heading + 1 if heading is not None else 0 :]).strip()
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", body) if p.strip()]
    lesson.summary = " ".join(paragraphs[0].split()) if paragraphs else ""
    lead = OBJECTIVES_LEAD.search(body)
    if lead:
        rest = lead.group(1)
        items = re.split(r"^\s*[-*]\s+", rest, flags=re.MULTILINE)
        if len(items) > 1:
            lesson.objectives = [" ".join(item.split()) for item in items[1:] if item.strip()]
        else:
            sentence = re.split(r"\n\s*\n", rest)[0]
            lesson.objectives = [" ".join(sentence.split())]
    return lesson


def widget_views(notebook: Any) -> int:
    return sum(
        WIDGET_VIEW in output.get("data", {})
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )


def cell_code(source: str) -> ast.Module | None:
    """A code cell as Python, IPython-only lines (``%magic``, ``!shell``) dropped."""
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    try:
        return ast.parse("\n".join(lines))
    except SyntaxError:
        return None


def summary_of(function: Any) -> str:
    """The first paragraph of a function's docstring, as one plain sentence or two."""
    doc = (getattr(function, "__doc__", None) or "").strip().split("\n\n")[0]
    doc = re.sub(r":\w+:`~?(?:[\w.]+\.)?(\w+)`", r"\1", " ".join(doc.split()))
    return plain(doc.replace("No kernel counterpart.", "")).strip()


def figure_alts(notebook: Any, lesson: Lesson) -> list[str]:
    """Alt text for each PNG in the notebook's cell outputs, in document order.

    A figure is described by the drawing function (a name ending ``_figure`` or ``_view``) the
    cell calls, or that made the variable the cell shows; the module is found through the
    notebook's own imports, so a function that moves to another module is still found. The
    section heading above the cell says where the figure stands.
    """
    imports: dict[str, tuple[str, str | None]] = {}  # bound name -> (module, attribute)
    made_by: dict[str, Any] = {}  # variable -> the drawing function whose result it holds
    heading = lesson.title
    alts: list[str] = []

    def resolve(node: ast.expr) -> Any:
        if isinstance(node, ast.Attribute):
            owner = resolve(node.value)
            return None if owner is None else getattr(owner, node.attr, None)
        if not isinstance(node, ast.Name) or node.id not in imports:
            return None
        module, attr = imports[node.id]
        try:
            found = importlib.import_module(module)
            if attr is None:
                return found
            if hasattr(found, attr):
                return getattr(found, attr)
            return importlib.import_module(f"{module}.{attr}")
        except ImportError:
            return None

    def drawing(node: ast.Call) -> Any:
        function = resolve(node.func)
        name = getattr(function, "__name__", "")
        drawn = name.endswith(DRAWING_SUFFIXES) and not name.startswith("show")
        return function if drawn else None

    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            found = [line for line in cell.source.splitlines() if line.startswith("#")]
            if found:
                heading = NUMBER_PREFIX.sub("", found[-1].lstrip("#")).strip()
            continue
        if cell.cell_type != "code":
            continue
        tree = cell_code(cell.source)
        drawn: list[Any] = []
        if tree is not None:
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    for alias in node.names:
                        if alias.asname:
                            imports[alias.asname] = (alias.name, None)
                        else:
                            imports[alias.name.split(".")[0]] = (alias.name.split(".")[0], None)
                elif isinstance(node, ast.ImportFrom) and node.module:
                    for alias in node.names:
                        imports[alias.asname or alias.name] = (node.module, alias.name)
            for node in ast.walk(tree):
                if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                    function = drawing(node.value)
                    for target in node.targets:
                        for name in ast.walk(target):
                            if isinstance(name, ast.Name) and function is not None:
                                made_by[name.id] = function
            for node in ast.walk(tree):
                if isinstance(node, ast.Call):
                    function = drawing(node)
                    if function is None:
                        shown = [a for a in node.args if isinstance(a, ast.Name)]
                        function = next((made_by[a.id] for a in shown if a.id in made_by), None)
                    if function is not None and function not in drawn:
                        drawn.append(function)
        images = [o for o in cell.outputs if "image/png" in o.get("data", {})]
        for index, _ in enumerate(images):
            if drawn:
                what = summary_of(drawn[min(index, len(drawn) - 1)]).rstrip(".")
                alts.append(f"Figure: {what}. Section: {plain(heading).rstrip('.?!:')}.")
            else:
                alts.append(f"Figure in the section {plain(heading)!r} of lesson {lesson.number}.")
    return alts


def add_alt_text(body: str, alts: list[str]) -> tuple[str, int]:
    """Give each output image of ``body`` its alt text, in order; return the page and a count."""
    pending = iter(alts)
    count = 0

    def insert(match: re.Match[str]) -> str:
        nonlocal count
        count += 1
        alt = html.escape(next(pending, "Figure."))
        return f'{match.group(1)} alt="{alt}"{ALT.sub("", match.group(2))}{match.group(3)}'

    return RENDERED_IMAGE.sub(insert, body), count


def ensure_bundle(site: Path = SITE) -> Path:
    """``site/node_modules``, installed by ``npm ci`` from the lock file if files are missing."""
    modules = site / "node_modules"
    if all((modules / source).is_file() for source in BUNDLE.values()):
        return modules
    npm = shutil.which("npm")
    if npm is None:
        raise SiteError(
            "the site bundles the ipywidgets HTML manager from npm, and npm is not installed: "
            "install Node.js 20 and npm (Debian: `apt-get install nodejs npm`), then rerun"
        )
    print(f"npm ci in {site.name}/ (the widget manager and require.js)", flush=True)
    command = [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"]
    done = subprocess.run(command, cwd=site, capture_output=True, text=True)
    if done.returncode != 0:
        raise SiteError(f"`npm ci` in {site} failed:\n{done.stderr[-2000:]}")
    missing = [source for source in BUNDLE.values() if not (modules / source).is_file()]
    if missing:
        raise SiteError(f"after `npm ci`, site/node_modules lacks {missing}: check package.json")
    return modules


def copy_bundle(output: Path, modules: Path) -> None:
    """Copy require.js, the widget manager, their package.json files and the manager's fonts."""
    for target, source in BUNDLE.items():
        (output / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(modules / source, output / target)
    dist = (modules / BUNDLE[WIDGET_MANAGER]).parent
    for font in dist.iterdir():
        if font.suffix in FONT_SUFFIXES:
            shutil.copyfile(font, output / font.name)


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


def index_page(lessons: list[Lesson]) -> str:
    items = []
    for lesson in lessons:
        goals = "".join(f"<li>{inline_html(goal)}</li>" for goal in lesson.objectives)
        about = f"<ul>{goals}</ul>" if goals else f"<p>{inline_html(lesson.summary)}</p>"
        items.append(
            f'<section class="lesson" id="lesson-{lesson.number}">\n'
            f'<h2><a href="{html.escape(lesson.href)}"><span class="number">{lesson.number}</span>'
            f" {inline_html(lesson.title)}</a></h2>\n{about}\n</section>"
        )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>\n"
        "<meta name='viewport' content='width=device-width, initial-scale=1.0'>\n"
        "<title>kvmmu: the KVM shadow MMU, lesson by lesson</title>\n<style>\n"
        "body { font-family: system-ui, sans-serif; max-width: 52em; margin: 2em auto;"
        " padding: 0 1em; line-height: 1.45; color: #222; }\n"
        "h2 { font-size: 1.2em; margin: 1.4em 0 0.3em; }\n"
        "h2 a { color: #1565c0; text-decoration: none; }\n"
        "h2 a:hover { text-decoration: underline; }\n"
        ".number { display: inline-block; min-width: 1.6em; color: #666; }\n"
        "section.lesson ul, section.lesson p { margin: 0.2em 0 0 1.6em; }\n"
        "code { background: #f3f3f3; padding: 0 0.2em; border-radius: 3px; }\n"
        "</style></head>\n<body>\n<h1>kvmmu: the KVM shadow MMU, lesson by lesson</h1>\n"
        "<p>Each lesson runs the <code>kvmmu</code> package, a Python implementation of the Linux "
        "KVM x86 shadow MMU. These pages show the stored outputs and each widget in its default "
        "state; open the notebooks in JupyterLab to move the controls.</p>\n"
        + "\n".join(items)
        + "\n</body></html>\n"
    )


def build(paths: list[Path], output: Path, *, run: bool = False) -> list[str]:
    """Write one HTML page per notebook, ``index.html`` and ``static/``; return the problems."""
    import nbformat
    from nbconvert import HTMLExporter

    output.mkdir(parents=True, exist_ok=True)
    copy_bundle(output, ensure_bundle())
    exporter = HTMLExporter(  # type: ignore[no-untyped-call]
        template_name="lab",
        template_file=TEMPLATE.name,
        extra_template_paths=[str(TEMPLATE.parent)],
    )
    exporter.require_js_url = REQUIRE_JS
    exporter.widget_renderer_url = WIDGET_MANAGER
    problems: list[str] = []
    notebooks = []
    for path in paths:
        notebook = nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]
        if run:
            execute(notebook, timeout=120)
        notebooks.append((notebook, lesson_of(notebook, path)))
    lessons = [lesson for _, lesson in notebooks]
    for position, (notebook, lesson) in enumerate(notebooks):
        path = lesson.path
        views = widget_views(notebook)
        state = notebook.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
        if views and not state:
            problems.append(
                f"{path.name} shows {views} widget(s) but stores no widget state: run it in "
                "JupyterLab with 'Save Widget State Automatically' on, or use --execute"
            )
        math = [
            c.source[:60]
            for c in notebook.cells
            if c.cell_type == "markdown" and MATH.search(c.source)
        ]
        if math:
            problems.append(
                f"{path.name} has TeX math ({math[0]!r}...), and the site loads no MathJax: add "
                "mathjax to site/package.json and load it in site/templates/kvmmu.html.j2"
            )
        notebook.metadata["title"] = f"{lesson.label} · kvmmu"
        neighbours = {
            "previous": lessons[position - 1] if position > 0 else None,
            "next": lessons[position + 1] if position + 1 < len(lessons) else None,
        }
        nav = {
            key: None if other is None else {"href": other.href, "label": other.label}
            for key, other in neighbours.items()
        }
        resources = {"metadata": {"name": path.stem}, "kvmmu_nav": nav}
        body, _ = exporter.from_notebook_node(notebook, resources=resources)
        alts = figure_alts(notebook, lesson)
        body, images = add_alt_text(body, alts)
        if images != len(alts):
            problems.append(f"{path.name}: {len(alts)} figures but {images} images on the page")
        (output / lesson.href).write_text(body, encoding="utf-8")
        print(f"{path.name}: {lesson.href} ({views} widget(s), {images} figure(s))")
    (output / "index.html").write_text(index_page(lessons), encoding="utf-8")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "notebooks", nargs="*", type=Path, help="notebooks to convert (default: all)"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="output folder")
    parser.add_argument("--execute", action="store_true", help="run each notebook first")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing or not paths:
        parser.error(f"no such notebook: {', '.join(missing)}" if missing else "no notebooks")
    try:
        problems = build(paths, args.output, run=args.execute)
    except SiteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    print(f"open {args.output / 'index.html'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
