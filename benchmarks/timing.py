"""Interleaved, repeated timing of several cases in one process: the benchmarks' shared clock.

No kernel counterpart: the measuring tool of ``benchmarks/``. This project's machines are small,
shared and noisy (two cores and several busy neighbours), so a figure taken alone says more about
the neighbours than about the code. Every benchmark therefore measures its cases side by side:
in each *round* it runs every case once, in an order that rotates from round to round, and it
reports, per case, the **median** over the rounds with the **minimum and maximum** beside it
(never only the best). A ratio of two cases is the median of the per-round ratios, each taken
from two runs made moments apart, so a burst of load that slows one round slows both sides.

The clock is CPU time by default (``time.process_time_ns``: this process's user and system time,
all its threads, nanosecond resolution on Linux). On a loaded machine wall time counts the
moments the scheduler gives the core to somebody else, which have nothing to do with the code
measured; CPU time leaves them out, so medians move far less between a quiet and a busy machine.
It cannot leave out everything (a neighbour still evicts caches), and it does not see child
processes: what runs in another process (a notebook's kernel, a subprocess) is timed with the
wall clock (``time.perf_counter_ns``), ``clock="wall"``, and says so.

Each case is prepared before every run without being timed (a fresh guest for a fault that can
happen only once, a widget built one step away from its setting), and checked after the run, also
untimed: a check raises :class:`BenchError` when the run did not do what the row says it measured
(a "fault" that took no fault), so a benchmark cannot quietly report the wrong thing. Garbage is
collected before each timed run, so one case does not pay for another's garbage; the collector
stays on during the run, as in a reader's session.

``--quick`` (:func:`add_arguments`) makes every benchmark small enough for the tests to run it.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

CLOCKS: dict[str, Callable[[], int]] = {
    "cpu": time.process_time_ns,
    "wall": time.perf_counter_ns,
}
CLOCK_NAMES = {
    "cpu": "CPU time (time.process_time_ns)",
    "wall": "wall time (time.perf_counter_ns)",
}


class BenchError(RuntimeError):
    """A measured run did not do what its row says (a fault that took no fault, no output)."""


def _nothing() -> None:
    """The check of a run that needs none."""


@dataclass(frozen=True)
class Trial:
    """One prepared run: ``run`` is timed, ``check`` (untimed) raises BenchError if it did not
    do what the case measures."""

    run: Callable[[], object]
    check: Callable[[], None] = _nothing


@dataclass(frozen=True)
class Case:
    """A row of a benchmark: ``prepare`` makes a fresh :class:`Trial` before every run (untimed);
    the figure is the run's time divided by ``ops``, the operations one run makes."""

    name: str
    prepare: Callable[[], Trial]
    ops: int = 1

    @classmethod
    def plain(
        cls,
        name: str,
        run: Callable[[], object],
        ops: int = 1,
        check: Callable[[], None] = _nothing,
    ) -> Case:
        """A case whose every run is the same call on state built once."""
        trial = Trial(run, check)
        return cls(name, lambda: trial, ops)


@dataclass(frozen=True)
class Spread:
    """The median of some figures with their minimum and maximum."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        """The spread of ``values`` (at least one)."""
        data = list(values)
        if not data:
            raise BenchError("no figures to summarise: run at least one round")
        return cls(statistics.median(data), min(data), max(data))

    def scaled(self, factor: float) -> Spread:
        """The same spread in another unit (seconds to milliseconds: 1e3)."""
        return Spread(self.median * factor, self.low * factor, self.high * factor)

    def format(self, digits: int = 2) -> str:
        """``median (min-max)`` with ``digits`` decimals."""
        return f"{self.median:.{digits}f} ({self.low:.{digits}f}-{self.high:.{digits}f})"


@dataclass
class Results:
    """Seconds per operation of every case, one figure per round, in round order."""

    clock: str
    rounds: int
    samples: dict[str, list[float]] = field(default_factory=dict)

    def spread(self, name: str) -> Spread:
        """Median (min-max) seconds per operation of case ``name``."""
        return Spread.of(self.samples[name])

    def ratio(self, num: str, den: str) -> Spread:
        """Median (min-max) over the rounds of ``num``'s time / ``den``'s time in that round."""
        pairs = zip(self.samples[num], self.samples[den], strict=True)
        return Spread.of(a / b for a, b in pairs)

    def ratio_of_medians(self, num: str, den: str) -> float:
        """Median time of ``num`` / median time of ``den``."""
        return self.spread(num).median / self.spread(den).median


def measure(
    cases: Sequence[Case],
    rounds: int,
    *,
    clock: str = "cpu",
    warmup: int = 1,
    timer: Callable[[], int] | None = None,
) -> Results:
    """Run every case once per round, rotating the order, after ``warmup`` untimed rounds.

    Round ``r`` starts with case ``r mod len(cases)``, so no case always runs first (after the
    previous round's garbage) or last. Each run is prepared, collected for, timed and checked.
    ``timer`` replaces the clock's function (nanoseconds), for the tests of this module.
    """
    if rounds < 1:
        raise BenchError(f"rounds={rounds} must be at least 1")
    if clock not in CLOCKS:
        raise BenchError(f"clock={clock!r} must be one of {sorted(CLOCKS)}")
    names = [case.name for case in cases]
    if len(set(names)) != len(names):
        raise BenchError(f"case names must differ: {names}")
    now = timer or CLOCKS[clock]
    results = Results(clock, rounds, {name: [] for name in names})
    for r in range(-warmup, rounds):
        k = r % len(cases)
        for case in list(cases[k:]) + list(cases[:k]):
            trial = case.prepare()
            gc.collect()
            start = now()
            trial.run()
            elapsed = now() - start
            trial.check()
            if r >= 0:
                results.samples[case.name].append(elapsed / 1e9 / case.ops)
    return results


def expect(condition: bool, what: str) -> None:
    """Raise :class:`BenchError` saying ``what`` was expected, unless ``condition``."""
    if not condition:
        raise BenchError(f"the measured run did not do what it claims: expected {what}")


def goal_line(name: str, value: float, goal: float, unit: str, detail: str = "") -> str:
    """``goal: NAME <= GOAL UNIT: VALUE UNIT (DETAIL), met`` (or ``NOT met``)."""
    verdict = "met" if value <= goal else "NOT met"
    extra = f" ({detail})" if detail else ""
    return f"goal: {name} <= {goal:g} {unit}: {value:.2f} {unit}{extra}, {verdict}"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], right: int = 1) -> str:
    """A markdown table; columns from index ``right`` on are right-aligned (the figures)."""
    align = ["---" if i < right else "---:" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser, rounds: int, *, clock: bool = True) -> None:
    """The options every benchmark takes: ``--quick``, ``--rounds`` and, unless the benchmark's
    clock is fixed (``clock=False``), ``--clock``."""
    parser.add_argument(
        "--quick", action="store_true", help="a small, fast run (what the tests run)"
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help=f"rounds of interleaved runs ({rounds}; 2 quick)"
    )
    if clock:
        parser.add_argument(
            "--clock", choices=sorted(CLOCKS), default="cpu", help="cpu (default) or wall time"
        )


def rounds_of(args: argparse.Namespace, full: int, quick: int = 2) -> int:
    """``--rounds`` if given, else ``quick`` or ``full`` rounds."""
    given: int | None = args.rounds
    if given is not None:
        return given
    return quick if args.quick else full


def header(rounds: int, clock: str, what: str) -> str:
    """The first line of every benchmark's output: machine, clock, rounds, load."""
    try:
        load = "load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())
    except OSError:
        load = "load average unknown"
    return (
        f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{load}; {CLOCK_NAMES[clock]}; {rounds} interleaved round{'s' * (rounds != 1)} of {what}; "
        "figures are median (min-max) over the rounds"
    )
