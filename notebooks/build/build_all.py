"""Rebuild every notebook from its build script and execute it in place, deterministically.

    python notebooks/build/build_all.py            # all notebooks
    python notebooks/build/build_all.py 03 07      # only these

Each ``build_NN_*.py`` writes ``notebooks/NN_*.ipynb``; this script then runs every cell with
the current interpreter's kernel (nbclient), drops per-cell timing metadata, and writes the
notebook back, so the stored outputs are exactly what the code produces (nbval compares them).
Run it after any change to ``kvmmu`` that moves a number a notebook prints.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

BUILD = Path(__file__).resolve().parent
NOTEBOOKS = BUILD.parent


def execute(path: Path) -> None:
    """Run ``path`` top to bottom in its own folder and store the outputs without timings."""
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nbformat.write(nb, path)


def main(selected: list[str]) -> None:
    for script in sorted(BUILD.glob("build_[0-9][0-9]_*.py")):
        number = script.name.split("_")[1]
        if selected and number not in selected:
            continue
        subprocess.run([sys.executable, str(script)], check=True)
    for notebook in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        if selected and notebook.name[:2] not in selected:
            continue
        print(f"executing {notebook.name}", flush=True)
        execute(notebook)


if __name__ == "__main__":
    main(sys.argv[1:])
