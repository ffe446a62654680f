"""Milliseconds per update of every lesson widget, on a first visit and on a revisit.

Run ``python benchmarks/bench_widgets.py`` (``--help`` for options). Each case builds a lesson
widget (``kvmmu.teaching.lessons.lNN_*.make_*_widget``) one step away from a setting, its
default or an extreme one, then times what a reader's move costs: setting one control (or
clicking one button) runs the widget's update, which calls the lesson's pure view function
and renders its tables and figures (PNG) into the widget's Output, as in a notebook. The
*first visit* is the move to a setting the widget has not shown, with the teaching layer's
caches emptied (``kvmmu.teaching.memo.clear``) before the widget is built; the *revisit* is the
same move again after moving back. Building the widget is not timed. Each timed move is checked
afterwards: the widget's Output must show something, and not what it showed before the move.
The moves are interleaved by ``timing.py``, one run of each per round, so that load on a shared
machine spreads over all of them; each figure is the median over ``--rounds`` rounds (5) with the
minimum and maximum beside it, in CPU time (what runs is all in this process). Prints a markdown
table, then the goal line of issue 16: every update at most 100 ms (median), first visits too.
``--quick`` times one case per widget, one round. The script also runs against a checkout
without ``kvmmu.teaching.memo`` (before the caches), for a before/after comparison with the
same cases.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from timing import Case as Timed
from timing import Trial, add_arguments, expect, goal_line, header, measure, rounds_of, table

from kvmmu.hw.guest import GuestPageTables
from kvmmu.hw.memory import GuestMemory
from kvmmu.hw.x86 import PagingMode
from kvmmu.teaching.lessons import l01_guest_page_tables as l01
from kvmmu.teaching.lessons import l02_shadow_paging as l02
from kvmmu.teaching.lessons import l03_mmu_page_role as l03
from kvmmu.teaching.lessons import l04_lazy_gfns as l04
from kvmmu.teaching.lessons import l05_write_protection as l05
from kvmmu.teaching.lessons import l06_unsync as l06
from kvmmu.teaching.lessons import l07_memory_savings as l07
from kvmmu.teaching.lessons import l08_tdp_vs_shadow as l08

try:
    from kvmmu.teaching.memo import clear as clear_caches
except ImportError:  # a checkout from before the caches: nothing to clear

    def clear_caches() -> None:
        """Nothing is cached in this checkout."""


@dataclass(frozen=True)
class Case:
    """One row: a widget built at ``start``, then one control moved (``move``) and back."""

    widget: str
    setting: str
    build: Callable[[], Any]
    move: Callable[[Any], None]
    back: Callable[[Any], None]


def controls(widget: Any) -> list[Any]:
    """A lesson widget's controls, in order (the row above its Output)."""
    return list(widget.children[0].children)


def setter(index: int, value: object) -> Callable[[Any], None]:
    """A move: set control ``index`` of the widget to ``value``."""

    def move(widget: Any) -> None:
        controls(widget)[index].value = value

    return move


def clicker(*names: str) -> Callable[[Any], None]:
    """A move: click the buttons named ``names``, in order."""

    def move(widget: Any) -> None:
        for name in names:
            next(c for c in controls(widget) if c.description == name).click()

    return move


def slide(widget: str, setting: str, build: Callable[[], Any], index: int, a: Any, b: Any) -> Case:
    """Build at ``a`` in control ``index``, move it to ``b`` (timed), back to ``a``."""
    return Case(widget, setting, build, setter(index, b), setter(index, a))


def walk_guest() -> tuple[GuestMemory, GuestPageTables]:
    """Lesson 1's guest: a read-only code page and a non-executable data page."""
    memory = GuestMemory(8 << 20)
    pt = GuestPageTables(memory, PagingMode.LEVEL4)
    pt.map(0x400000, 0x100000, writable=False, user=True)
    pt.map(0x600000, 0x101000, user=True, nx=True)
    return memory, pt


def cases() -> list[Case]:
    """Every widget at its default setting and at the extremes of its controls."""
    memory, pt = walk_guest()
    cpu = pt.cpu(cpl=3)
    vm = l04.demo_mixed_vm()
    pages = sorted(vm.mmu.active, key=lambda sp: sp.serial)
    last = len(l02.DEMO_PROGRAM)

    def walk(draw: bool) -> Callable[[], Any]:
        return lambda: l01.make_walk_widget(memory, cpu, "0x400000", "read", 3, draw=draw)

    return [
        slide("l01 walk", "0x400123 read CPL3", walk(False), 0, "0x400000", "0x400123"),
        slide("l01 walk, drawn", "0x400123 read CPL3", walk(True), 0, "0x400000", "0x400123"),
        slide("l01 walk, drawn", "write 0x600000 (#PF)", walk(True), 0, "0x400000", "0x600000"),
        slide(
            "l02 steps",
            f"3 of {last} steps",
            lambda: l02.make_shadow_steps_widget(steps=2),
            0,
            2,
            3,
        ),
        slide(
            "l02 steps",
            f"all {last} steps",
            lambda: l02.make_shadow_steps_widget(steps=0),
            0,
            0,
            last,
        ),
        slide(
            "l03 role", "4-level", lambda: l03.make_role_widget("5-level"), 0, "5-level", "4-level"
        ),
        slide("l03 role", "32-bit", lambda: l03.make_role_widget(), 0, "4-level", "32-bit"),
        slide("l03 role", "5-level, TDP", lambda: l03.make_role_widget("5-level"), 2, False, True),
        slide("l04 gfn", "index 0", lambda: l04.make_gfn_widget(vm, index=1), 1, 1, 0),
        slide("l04 gfn", "index 511", lambda: l04.make_gfn_widget(vm), 1, 0, 511),
        slide(
            "l04 gfn",
            "first page",
            lambda: l04.make_gfn_widget(vm),
            0,
            pages[-1].serial,
            pages[0].serial,
        ),
        Case(
            "l06 sync",
            "edit, access",
            lambda: l06.make_sync_widget(("edit",)),
            clicker("access"),
            clicker("reset", "edit"),
        ),
        Case(
            "l06 sync",
            "20 actions",
            lambda: l06.make_sync_widget(("edit", "access", "invlpg", "cr3") * 5),
            clicker("access"),
            clicker("reset", *(("edit", "access", "invlpg", "cr3") * 5)),
        ),
        slide(
            "l05 table writes", "10 PTE, 0 PDE", lambda: l05.make_table_write_widget(9), 0, 9, 10
        ),
        slide(
            "l05 table writes",
            "100 PTE, 20 PDE",
            lambda: l05.make_table_write_widget(99, 20),
            0,
            99,
            100,
        ),
        slide(
            "l05 table writes",
            "100 PTE, 20 PDE, unsync",
            lambda: l05.make_table_write_widget(100, 20),
            2,
            False,
            True,
        ),
        slide("l07 savings", "4 GiB TDP 4 KiB", lambda: l07.make_savings_widget(3), 0, 3, 4),
        slide(
            "l07 savings",
            "64 GiB shadow 4 KiB",
            lambda: l07.make_savings_widget(63, "shadow"),
            0,
            63,
            64,
        ),
        slide(
            "l07 savings",
            "64 GiB shadow 2 MiB",
            lambda: l07.make_savings_widget(64, "shadow"),
            2,
            "4 KiB",
            "2 MiB",
        ),
        slide("l08 mode", "2000, 20, 10", lambda: l08.make_mode_widget(1900), 0, 1900, 2000),
        slide(
            "l08 mode",
            "20000, 500, 200",
            lambda: l08.make_mode_widget(19900, 500, 200),
            0,
            19900,
            20000,
        ),
        slide("l08 mode", "0, 0, 0", lambda: l08.make_mode_widget(100, 0, 0), 0, 100, 0),
    ]


GOAL_MS = 100.0  # every widget update, median (issue 16)


def outputs(widget: Any) -> list[Any]:
    """What the widget's Output shows now."""
    return list(widget.children[-1].outputs)


def timed(case: Case, *, revisit: bool) -> Timed:
    """The first visit of ``case`` (caches emptied, widget built one move away), or its revisit
    (the same, then moved there and back before the timed move). The check wants the timed move
    to have shown something, and something else than before it."""

    def prepare() -> Trial:
        clear_caches()
        widget = case.build()
        if revisit:
            case.move(widget)
            case.back(widget)
        before = outputs(widget)

        def check() -> None:
            after = outputs(widget)
            expect(bool(after), f"{case.widget} ({case.setting}) to show something")
            expect(after != before, f"{case.widget} ({case.setting}) to show its new setting")

        return Trial(lambda: case.move(widget), check)

    visit = "revisit" if revisit else "first visit"
    return Timed(f"{case.widget} | {case.setting} | {visit}", prepare)


def main(argv: list[str] | None = None) -> int:
    """Time every case's first visit and revisit, interleaved; print the table and the goal."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_arguments(parser, rounds=5)
    parser.add_argument("--only", default="", help="run the cases whose widget name has this")
    args = parser.parse_args(argv)
    chosen = [c for c in cases() if args.only in c.widget]
    if args.quick:  # the first case of each widget
        chosen = [c for i, c in enumerate(chosen) if c.widget not in {d.widget for d in chosen[:i]}]
    if not chosen:
        sys.exit(f"no widget matches {args.only!r}")
    rounds = rounds_of(args, 5, quick=1)
    contestants = [timed(c, revisit=again) for c in chosen for again in (False, True)]
    print(header(rounds, args.clock, f"{len(contestants)} widget moves (building untimed)"))
    res = measure(contestants, rounds, clock=args.clock)
    print()
    rows = []
    worst = ("", 0.0)
    for c in chosen:
        ms = [
            res.spread(f"{c.widget} | {c.setting} | {v}").scaled(1e3)
            for v in ("first visit", "revisit")
        ]
        rows.append((c.widget, c.setting, ms[0].format(1), ms[1].format(1)))
        for visit, spread in zip(("first visit", "revisit"), ms, strict=True):
            if spread.median > worst[1]:
                worst = (f"{c.widget}, {c.setting}, {visit}", spread.median)
    print(table(("widget", "setting", "first visit, ms", "revisit, ms"), rows, right=2))
    over = [f"{r[0]} {r[1]}" for r in rows if any(float(x.split()[0]) > GOAL_MS for x in r[2:])]
    print()
    print(f"over {GOAL_MS:g} ms (median): " + ("; ".join(over) if over else "none"))
    print(goal_line("slowest widget update, median", worst[1], GOAL_MS, "ms", worst[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
