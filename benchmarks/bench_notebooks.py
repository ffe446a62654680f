"""Wall time of every notebook run top to bottom, kernel start included, and of strict nbval.

Run ``python benchmarks/bench_notebooks.py`` from the repository root (``--help`` for options).
For each ``notebooks/NN_*.ipynb`` the script starts a fresh ``python3`` kernel with nbclient, runs
every cell in the notebooks folder, as ``notebooks/build/lesson.py`` does, and shuts the kernel
down; the time covers all three, in wall time (the kernel is another process, which this
process's CPU time would not see). Each run is checked: every code cell ran, none with an error.
Runs are interleaved by ``timing.py`` (every notebook once per round, rotating order), so a burst
of load on the shared machine spreads over all of them, and each row is a median with the
minimum and maximum beside it. ``--cells`` adds the slowest cells of each notebook (from the
last round), to see where the time goes. Unless ``--no-nbval``, the script then times
``pytest --nbval`` over the notebooks alone, with the options of ``pyproject.toml``, one figure
per ``--nbval-rounds`` run (it must pass), and where its last run's time went (pytest's start,
kernel starts, cells, kernel stops, from pytest's ``--durations``). Prints markdown tables and the
goal lines of issue 16: no notebook over 5 s, strict nbval over all of them under 30 s.
``--quick`` runs ``00_welcome`` alone, once, and nbval over it.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from timing import (
    Case,
    Spread,
    Trial,
    add_arguments,
    expect,
    goal_line,
    header,
    measure,
    rounds_of,
    table,
)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


GOAL_NOTEBOOK = 5.0  # seconds, one notebook top to bottom, kernel start included
GOAL_NBVAL = 30.0  # seconds, strict nbval over all of them
# One line of pytest's --durations list: "0.84s setup    notebooks/00_welcome.ipynb::Cell 0".
DURATION = re.compile(r"^([\d.]+)s (setup|call|teardown) +(\S.*?)\s*$", re.MULTILINE)


def execute(nb: nbformat.NotebookNode) -> None:
    """Start a kernel, run ``nb`` top to bottom in the notebooks folder, stop the kernel."""
    NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        record_timing=True,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    ).execute()


def cell_times(nb: nbformat.NotebookNode) -> list[tuple[float, int, str]]:
    """The code cells as (seconds, index, first line), from the kernel's own timestamps."""
    cells = []
    for index, cell in enumerate(nb.cells):
        timing = cell.metadata.get("execution", {})
        begin, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
        if cell.cell_type == "code" and begin and end:
            seconds = (_stamp(end) - _stamp(begin)).total_seconds()
            cells.append((seconds, index, cell.source.splitlines()[0] if cell.source else ""))
    return cells


def _stamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def notebook_case(path: Path, last: dict[Path, nbformat.NotebookNode]) -> Case:
    """One run of ``path`` (read untimed); the check wants every code cell run, no error."""

    def prepare() -> Trial:
        nb = nbformat.read(path, as_version=4)
        last[path] = nb

        def check() -> None:
            for index, cell in enumerate(nb.cells):
                if cell.cell_type != "code" or not cell.source.strip():
                    continue
                expect(cell.get("execution_count") is not None, f"{path.name} cell {index} run")
                errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
                expect(not errors, f"{path.name} cell {index} without an error")

        return Trial(lambda: execute(nb), check)

    return Case(path.name, prepare)


def nbval_case(
    paths: list[Path],
) -> tuple[Case, list[tuple[float, subprocess.CompletedProcess[str]]]]:
    """``pytest --nbval`` (strict, the project's options from ``pyproject.toml``) over ``paths``,
    with every test phase's duration listed, and the list its runs append (wall s, result) to;
    the check wants it to pass."""
    command = [sys.executable, "-m", "pytest", "-q", "--durations=0", "--durations-min=0"]
    command += map(str, paths)
    done: list[tuple[float, subprocess.CompletedProcess[str]]] = []

    def run() -> None:
        start = time.perf_counter()
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
        done.append((time.perf_counter() - start, result))

    def check() -> None:
        result = done[-1][1]
        expect(
            result.returncode == 0,
            f"nbval to pass:\n{result.stdout[-3000:]}{result.stderr[-2000:]}",
        )

    return Case.plain(f"strict nbval over {len(paths)} notebooks", run, 1, check), done


def nbval_parts(wall: float, stdout: str) -> list[tuple[str, float]]:
    """Where one nbval run's wall time went, from pytest's ``--durations`` list: each notebook's
    kernel starts in its first cell's setup and stops in its last cell's teardown (nbval's
    ``IPyNbFile.setup``/``teardown``); the rest of the wall time is pytest's own start (plugins:
    nbval imports nbformat and jsonschema), collection and reporting."""
    setup = call = first = teardown = 0.0
    for seconds, phase, name in DURATION.findall(stdout):
        if phase == "setup":
            setup += float(seconds)
        elif phase == "teardown":
            teardown += float(seconds)
        else:
            call += float(seconds)
            first += float(seconds) if name.endswith("::Cell 0") else 0.0
    return [
        ("pytest start, collection and report", wall - setup - call - teardown),
        ("kernel starts", setup),
        ("first cells (the imports)", first),
        ("other cells", call - first),
        ("kernel stops", teardown),
    ]


def main(argv: list[str] | None = None) -> int:
    """Run the notebooks in interleaved rounds, then nbval; print the tables and goal lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_arguments(parser, rounds=3, clock=False)
    parser.add_argument("--nbval-rounds", type=int, default=1, help="runs of nbval (1)")
    parser.add_argument("--no-nbval", action="store_true", help="skip the nbval total")
    parser.add_argument("--cells", type=int, default=0, help="list this many slowest cells")
    parser.add_argument("only", nargs="*", help="notebook numbers (00 07 ...); default all")
    args = parser.parse_args(argv)
    paths = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if args.only or args.quick:
        paths = [p for p in paths if p.name[:2] in (args.only or ["00"])]
    if not paths:
        sys.exit("no notebook matches")
    rounds = rounds_of(args, 3, quick=1)
    print(header(rounds, "wall", f"{len(paths)} notebooks, each in a fresh kernel"))
    last: dict[Path, nbformat.NotebookNode] = {}
    res = measure([notebook_case(p, last) for p in paths], rounds, clock="wall", warmup=0)
    print()
    rows = [(p.name, res.spread(p.name).format()) for p in paths]
    total = Spread.of(sum(run) for run in zip(*res.samples.values(), strict=True))
    rows.append(("all, one after another", total.format()))
    print(table(("notebook", "seconds, kernel start to stop"), rows))
    if args.cells:
        print()
        slow = []
        for path in paths:
            for seconds, index, line in sorted(cell_times(last[path]), reverse=True)[: args.cells]:
                slow.append((path.name, index, f"{seconds:.2f}", f"`{line[:60]}`"))
        print(table(("notebook", "cell", "seconds", "first line"), slow, right=2))
    print()
    slowest = max(paths, key=lambda p: res.spread(p.name).median)
    worst = res.spread(slowest.name)
    print(
        goal_line("slowest notebook, top to bottom", worst.median, GOAL_NOTEBOOK, "s", slowest.name)
    )
    if not args.no_nbval:
        nbval, done = nbval_case(paths)
        runs = measure([nbval], max(1, args.nbval_rounds), clock="wall", warmup=0)
        spread = runs.spread(nbval.name)
        print(
            goal_line(
                nbval.name,
                spread.median,
                GOAL_NBVAL,
                "s",
                f"min-max {spread.low:.2f}-{spread.high:.2f} s, kernel starts included",
            )
        )
        wall, result = done[-1]
        parts = ", ".join(
            f"{what} {seconds:.2f} s" for what, seconds in nbval_parts(wall, result.stdout)
        )
        print(f"nbval's last run, {wall:.2f} s wall: {parts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
