"""The guest page-table walker's cost: ``walk`` and ``walk_unchecked`` against a minimal walk.

Run ``python benchmarks/bench_walk.py`` (``--quick`` for a short run, ``--help`` for options).
The script builds one set of guest page tables per case straight into ``GuestMemory`` (it does
not use ``kvmmu.hw.guest``). Every mapped address is walked once first, so the accessed bits are
set and the walker's per-register context and table views are cached. Then the same read walks
over 64 addresses are timed with each contestant, interleaved in rounds by ``timing.py`` (the
order rotates from round to round), so the ratios compare runs made side by side in one process.

Two tables are printed, each figure the median over the rounds with the minimum and maximum:

* 4-level paging with 4 KiB, 2 MiB and 1 GiB leaves: microseconds per walk of the
  :func:`reference_walk` below, of ``walk_unchecked`` (the MMU's path) and of ``walk`` (the
  public one, which checks its arguments first), and their per-round ratios to the reference;
* every paging mode: microseconds per walk of ``walk``.

Then the goal line of issue 16: the MMU's 4-level walk (``walk_unchecked``, 4 KiB leaves, four
entries read) within 1.5x of the reference, the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from timing import Case as Timed
from timing import Results, add_arguments, expect, goal_line, header, measure, rounds_of, table

from kvmmu.hw.memory import GuestMemory
from kvmmu.hw.walk import CpuState, WalkResult, cpu_for_mode, load_cr3, walk, walk_unchecked
from kvmmu.hw.x86 import Access, PagingMode

P, W, U, A, PS = 1, 2, 4, 1 << 5, 1 << 7
XD = 1 << 63
PRW = P | W | U
ADDR = ((1 << 52) - 1) & ~0xFFF  # address bits 51:12 of an entry
LEVELS = {PagingMode.NONE: 0, PagingMode.BITS32: 2, PagingMode.PAE: 3}
LEVELS |= {PagingMode.LEVEL4: 4, PagingMode.LEVEL5: 5}


@dataclass(frozen=True)
class Case:
    """One row: a paging mode and the level of its leaf entries."""

    name: str
    mode: PagingMode
    leaf_level: int  # 1: 4 KiB, 2: 2 or 4 MiB, 3: 1 GiB; 0 with paging off
    page: str


CASES = [
    Case("paging off", PagingMode.NONE, 0, "-"),
    Case("32-bit", PagingMode.BITS32, 1, "4 KiB"),
    Case("32-bit PSE", PagingMode.BITS32, 2, "4 MiB"),
    Case("PAE", PagingMode.PAE, 1, "4 KiB"),
    Case("4-level", PagingMode.LEVEL4, 1, "4 KiB"),
    Case("4-level", PagingMode.LEVEL4, 2, "2 MiB"),
    Case("4-level", PagingMode.LEVEL4, 3, "1 GiB"),
    Case("5-level", PagingMode.LEVEL5, 1, "4 KiB"),
]
LEVEL4_CASES = [c for c in CASES if c.mode is PagingMode.LEVEL4]


def build(case: Case, count: int) -> tuple[GuestMemory, CpuState, list[int]]:
    """Tables mapping ``count`` addresses, one leaf each, spread over different tables."""
    mem = GuestMemory(64 << 20)
    if case.mode is PagingMode.NONE:
        return mem, cpu_for_mode(case.mode), [i * 0x1_1000 for i in range(count)]
    esize = 4 if case.mode is PagingMode.BITS32 else 8
    index_bits = 10 if case.mode is PagingMode.BITS32 else 9
    next_gfn = [0x100]

    def new_table() -> int:
        next_gfn[0] += 1
        return (next_gfn[0] - 1) << 12

    root = new_table()
    levels = LEVELS[case.mode]
    leaf_shift = 12 + index_bits * (case.leaf_level - 1)
    gvas = []
    for i in range(count):
        gva = (i * 0x4_0000_0000 + i * 0x1234_5000) & 0x7FFF_FFFF_F000  # varied indices
        if case.mode in (PagingMode.BITS32, PagingMode.PAE):
            gva &= 0xFFFF_F000
        gva = (gva >> leaf_shift << leaf_shift) | (i * 8 & 0xFFF)
        table = root
        for level in range(levels, case.leaf_level - 1, -1):
            if case.mode is PagingMode.PAE and level == 3:
                index = (gva >> 30) & 3
            else:
                index = (gva >> (12 + index_bits * (level - 1))) & ((1 << index_bits) - 1)
            gpa = table + index * esize
            if level == case.leaf_level:
                target = (0x4000_0000 + i * (1 << leaf_shift)) & 0xFFFF_FFFF
                target = target >> leaf_shift << leaf_shift
                mem.write(gpa, target | PRW | (PS if level > 1 else 0), esize)
                break
            old = mem.read(gpa, esize)
            if old & P:
                table = old & (0xFFFF_F000 if esize == 4 else ADDR)
            else:
                table = new_table()
                flags = P if (case.mode is PagingMode.PAE and level == 3) else PRW
                mem.write(gpa, table | flags, esize)
        gvas.append(gva)
    if case.mode is PagingMode.PAE:
        cpu = load_cr3(mem, cpu_for_mode(case.mode), root)
        assert isinstance(cpu, CpuState), cpu
    else:
        cpu = cpu_for_mode(case.mode, cr3=root)
    return mem, cpu, gvas


# --------------------------------------------------------------------------------------------
# The reference: the least a correct 4-level walk must do, on the same tables and views
# --------------------------------------------------------------------------------------------

# reserved bits of 4-level entries with MAXPHYADDR=40 and EFER.NXE=1, [bit 7][level]:
# address bits 51:40; PS is reserved in a PML4E; a large page's low address bits are reserved
_HIGH = ((1 << 52) - 1) & ~((1 << 40) - 1)
RSVD_4LEVEL = (
    (0, _HIGH, _HIGH, _HIGH, _HIGH | PS),
    (0, _HIGH, _HIGH | 0x1F_E000, _HIGH | 0x3FFF_E000, _HIGH | PS),
)
SHIFTS_4LEVEL = ((4, 39), (3, 30), (2, 21), (1, 12))


def reference_walk(views: dict[int, memoryview], cr3: int, gva: int, user: bool) -> int | None:
    """A read walk of 4-level tables that does what the result needs and nothing more.

    Reads each entry through the same memoryviews the walker uses; checks the canonical form,
    present, reserved bits, PS, the combined U/S right for a user access, and that the accessed
    bits are already set (else it gives up: it never writes). Returns the gpa, or None where
    ``walk`` would fault or write. It records nothing and builds no result object.
    """
    top = gva >> 47
    if top and top != 0x1FFFF:
        return None
    table = cr3 & ADDR
    acc = 7
    seen = -1
    for level, shift in SHIFTS_4LEVEL:
        pte = views[table >> 12][(gva >> shift) & 511]
        if not pte & P or pte & RSVD_4LEVEL[(pte >> 7) & 1][level]:
            return None
        acc &= (pte & 6) | (0 if pte & XD else 1)
        seen &= pte
        if level == 1 or pte & PS:
            if (user and not acc & U) or not seen & A:
                return None
            size = 1 << shift
            return (pte & ADDR & ~(size - 1)) | (gva & (size - 1))
        table = pte & ADDR
    return None


def reference_views(memory: GuestMemory, cpu: CpuState, gvas: list[int]) -> dict[int, memoryview]:
    """The memoryviews of every table the walks read: the ones ``GuestMemory`` hands out."""
    views: dict[int, memoryview] = {}
    for gva in gvas:
        result = walk(memory, cpu, gva, set_ad=False)
        assert isinstance(result, WalkResult), result
        for gpa in result.table_gpas():
            words = memory.table_words(gpa >> 12)
            assert words is not None
            views[gpa >> 12] = words
    return views


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------

GOAL = 1.5  # walk_unchecked / reference, 4-level, 4 KiB leaves (issue 16)
ADDRESSES = 64  # mapped addresses per case, walked round-robin


def warmed(case: Case) -> tuple[GuestMemory, CpuState, list[int]]:
    """The case's tables, every address walked once (A bits set, caches filled)."""
    mem, cpu, gvas = build(case, ADDRESSES)
    for gva in gvas:
        result = walk(mem, cpu, gva)
        if not isinstance(result, WalkResult) or result.level != case.leaf_level:
            raise SystemExit(f"{case.name} {case.page}: the warm-up walk gave {result!r}")
    return mem, cpu, gvas


def bench_reference(case: Case, walks: int, rounds: int, clock: str = "cpu") -> Results:
    """Reference, walk_unchecked and walk on one 4-level case, interleaved."""
    mem, cpu, gvas = warmed(case)
    views = reference_views(mem, cpu, gvas)
    for gva in gvas:  # the reference answers as walk does, or the comparison is void
        want = walk(mem, cpu, gva)
        got = reference_walk(views, cpu.cr3, gva, False)
        expect(isinstance(want, WalkResult) and got == want.gpa, f"reference gpa of {gva:#x}")
    passes = max(1, walks // len(gvas))
    read, cr3 = Access.READ, cpu.cr3
    last: list[object] = [None]

    def run_reference() -> None:
        for _ in range(passes):
            for gva in gvas:
                last[0] = reference_walk(views, cr3, gva, False)

    def run_unchecked() -> None:
        for _ in range(passes):
            for gva in gvas:
                last[0] = walk_unchecked(mem, cpu, gva, read)

    def run_walk() -> None:
        for _ in range(passes):
            for gva in gvas:
                last[0] = walk(mem, cpu, gva, read)

    def translated() -> None:  # the last walk of the run reached the last address's gpa
        result = last[0]
        gpa = result.gpa if isinstance(result, WalkResult) else result
        expect(gpa == reference_walk(views, cr3, gvas[-1], False), "a translation, no fault")

    ops = passes * len(gvas)
    contestants = [
        Timed.plain("reference", run_reference, ops, translated),
        Timed.plain("walk_unchecked", run_unchecked, ops, translated),
        Timed.plain("walk", run_walk, ops, translated),
    ]
    return measure(contestants, rounds, clock=clock)


def bench_modes(walks: int, rounds: int, clock: str = "cpu") -> Results:
    """Public walks in every mode, interleaved; case names are the row labels."""
    contestants = []
    for case in CASES:
        mem, cpu, gvas = warmed(case)
        passes = max(1, walks // len(gvas))

        def run(
            mem: GuestMemory = mem,
            cpu: CpuState = cpu,
            gvas: list[int] = gvas,
            passes: int = passes,
        ) -> None:
            for _ in range(passes):
                for gva in gvas:
                    walk(mem, cpu, gva, Access.READ)

        contestants.append(Timed.plain(f"{case.name}, {case.page}", run, passes * len(gvas)))
    return measure(contestants, rounds, clock=clock)


def main(argv: list[str] | None = None) -> int:
    """Run both tables and print them as markdown, then the goal line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--walks", type=int, default=None, help="walks per run (20000; 640 quick)")
    add_arguments(parser, rounds=9)
    args = parser.parse_args(argv)
    rounds = rounds_of(args, 9)
    walks = args.walks or (640 if args.quick else 20_000)
    print(header(rounds, args.clock, f"{walks} read walks over {ADDRESSES} warmed addresses"))
    print()
    rows = []
    headline = None
    for case in LEVEL4_CASES:
        res = bench_reference(case, walks, rounds, args.clock)
        us = {name: res.spread(name).scaled(1e6).format() for name in res.samples}
        fast, public = res.ratio("walk_unchecked", "reference"), res.ratio("walk", "reference")
        rows.append(
            (
                case.page,
                us["reference"],
                us["walk_unchecked"],
                us["walk"],
                fast.format(),
                public.format(),
            )
        )
        if case.leaf_level == 1:
            headline = fast
    print(
        table(
            (
                "4-level, leaf",
                "reference µs",
                "walk_unchecked µs",
                "walk µs",
                "walk_unchecked / reference",
                "walk / reference",
            ),
            rows,
        )
    )
    print()
    modes = bench_modes(walks, rounds, args.clock)
    rows = []
    for case in CASES:
        stat = modes.spread(f"{case.name}, {case.page}").scaled(1e6)
        levels_read = LEVELS[case.mode] - max(case.leaf_level - 1, 0)
        rows.append((case.name, case.page, levels_read, stat.format(), f"{1e6 / stat.median:,.0f}"))
    print(table(("mode", "page", "entries read", "walk µs", "walks/s (median)"), rows, right=2))
    print()
    assert headline is not None
    detail = f"per-round ratio min-max {headline.low:.2f}-{headline.high:.2f}"
    print(
        goal_line("walk_unchecked / reference, 4-level 4 KiB", headline.median, GOAL, "x", detail)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
