"""Wall time of every notebook run top to bottom, kernel start included, and of strict nbval.

Run ``python benchmarks/bench_notebooks.py`` from the repository root (``--help`` for options).
For each ``notebooks/NN_*.ipynb`` the script starts a fresh ``python3`` kernel with nbclient, runs
every cell in the notebooks folder, as ``notebooks/build/lesson.py`` does, and shuts the kernel
down; the time covers all three. Repeats are interleaved (every notebook once, then again), so a
burst of load on the shared machine spreads over all of them, and each row is a median with the
minimum and maximum beside it. ``--cells`` adds the slowest cells of each notebook (from the
last repeat), to see where the time goes. Unless ``--no-nbval``, the script then times
``pytest --nbval`` over the notebooks alone, with the options of ``pyproject.toml``, as one
figure per repeat. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def run_notebook(path: Path) -> tuple[float, list[tuple[float, int, str]]]:
    """Seconds to start a kernel, run ``path`` top to bottom and stop the kernel, and the cells
    as (seconds, index, first line) from the kernel's own execution timestamps."""
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        record_timing=True,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    ).execute()
    elapsed = time.perf_counter() - start
    cells = []
    for index, cell in enumerate(nb.cells):
        timing = cell.metadata.get("execution", {})
        begin, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
        if cell.cell_type == "code" and begin and end:
            seconds = (_stamp(end) - _stamp(begin)).total_seconds()
            cells.append((seconds, index, cell.source.splitlines()[0] if cell.source else ""))
    return elapsed, cells


def _stamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def run_nbval(paths: list[Path]) -> float:
    """Seconds of ``pytest --nbval`` (strict, the project's options) over ``paths``."""
    command = [sys.executable, "-m", "pytest", "-q", *map(str, paths)]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"nbval failed:\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    return elapsed


def spread(values: list[float]) -> str:
    """``median (min-max)`` of seconds, two decimals."""
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each notebook (3)")
    parser.add_argument("--nbval-repeats", type=int, default=1, help="runs of nbval (1)")
    parser.add_argument("--no-nbval", action="store_true", help="skip the nbval total")
    parser.add_argument("--cells", type=int, default=0, help="list this many slowest cells")
    parser.add_argument("only", nargs="*", help="notebook numbers (00 07 ...); default all")
    args = parser.parse_args(argv)
    paths = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if args.only:
        paths = [p for p in paths if p.name[:2] in args.only]
    if not paths:
        sys.exit("no notebook matches")
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, {args.repeats} repeats\n")
    times: dict[Path, list[float]] = {p: [] for p in paths}
    slowest: dict[Path, list[tuple[float, int, str]]] = {}
    for _ in range(args.repeats):
        for path in paths:
            elapsed, cells = run_notebook(path)
            times[path].append(elapsed)
            slowest[path] = sorted(cells, reverse=True)[: args.cells]
    print("| notebook | seconds, kernel start to stop: median (min-max) |")
    print("| --- | --- |")
    for path in paths:
        print(f"| {path.name} | {spread(times[path])} |")
    total = [sum(run) for run in zip(*times.values(), strict=True)]
    print(f"| all, one after another | {spread(total)} |")
    if args.cells:
        print("\n| notebook | cell | seconds | first line |")
        print("| --- | --- | --- | --- |")
        for path in paths:
            for seconds, index, line in slowest[path]:
                print(f"| {path.name} | {index} | {seconds:.2f} | `{line[:60]}` |")
    if not args.no_nbval:
        nbval = [run_nbval(paths) for _ in range(args.nbval_repeats)]
        print(
            f"\nstrict nbval over {len(paths)} notebooks (pytest, kernel starts included): ", end=""
        )
        print(f"{spread(nbval)} s")


if __name__ == "__main__":
    main()
