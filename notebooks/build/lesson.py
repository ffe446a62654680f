"""Shared scaffolding of the notebook build scripts: cells in, an executed notebook out.

Each ``build_NN_*.py`` lists its cells, prose first, and calls :meth:`Lesson.write`, which runs
every cell with the current interpreter's kernel (nbclient) and stores the outputs without
per-cell timings, so the committed notebook holds exactly what the code produces.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1]
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def execute(nb: nbformat.NotebookNode) -> None:
    """Run ``nb`` top to bottom in the notebooks folder and drop per-cell timing metadata."""
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    for cell in nb.cells:
        cell.metadata.pop("execution", None)


class Lesson:
    """The cells of one notebook, added in reading order."""

    def __init__(self, name: str, cells: list[tuple[str, str]] | None = None) -> None:
        self.name = name
        self.cells: list[nbformat.NotebookNode] = []
        for kind, text in cells or []:
            self.md(text) if kind == "md" else self.code(text)

    def md(self, text: str) -> None:
        """Add a markdown cell."""
        self.cells.append(nbformat.v4.new_markdown_cell(text.strip()))

    def code(self, text: str) -> None:
        """Add a code cell."""
        self.cells.append(nbformat.v4.new_code_cell(text.strip()))

    def recap(self, text: str) -> None:
        """End the lesson: a recap of ``text`` and links to the previous and next notebooks."""
        names = sorted({p.name for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")} | {self.name})
        here = names.index(Path(self.name).name) if Path(self.name).name in names else -1
        links = []
        if here > 0:
            links.append(f"Previous: [{_title(names[here - 1])}]({names[here - 1]})")
        if 0 <= here < len(names) - 1:
            links.append(f"Next: [{_title(names[here + 1])}]({names[here + 1]})")
        self.md("## Recap\n\n" + text.strip() + "\n\n" + " · ".join(links))

    def raw(self, text: str) -> None:
        """Add a raw cell (otter-grader's markers in a master notebook)."""
        self.cells.append(nbformat.v4.new_raw_cell(text.strip()))

    def write(self, *, run: bool = True) -> Path:
        """Write ``notebooks/<name>``, executed unless ``run`` is false."""
        nb = nbformat.v4.new_notebook()
        nb.cells = self.cells
        return write_notebook(nb, self.name, run=run)


def _title(name: str) -> str:
    """``"05_write_protection.ipynb"`` -> ``"lesson 5, write protection"``."""
    number, _, topic = Path(name).stem.partition("_")
    return f"lesson {int(number)}, {topic.replace('_', ' ')}"


def write_notebook(nb: nbformat.NotebookNode, name: str, *, run: bool = True) -> Path:
    """Give ``nb`` stable cell ids and kernel metadata, execute it unless ``run`` is false, and
    write it to ``notebooks/<name>``."""
    stem = Path(name).stem.split("_")[0]
    for number, cell in enumerate(nb.cells):
        cell.id = f"c{stem}-{number:03d}"  # stable ids keep a rebuild's diff to what changed
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    if run:
        execute(nb)
    path = NOTEBOOKS / name
    path.parent.mkdir(exist_ok=True)
    nbformat.write(nb, path)
    return path
