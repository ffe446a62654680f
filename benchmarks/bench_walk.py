"""Walks per second of ``kvmmu.hw.walk.walk`` in every paging mode, over warmed tables.

Run ``python benchmarks/bench_walk.py`` (``--help`` for options). The script pins itself to one
CPU where the OS allows it, builds one set of guest page tables per case straight into
``GuestMemory`` (it does not use ``kvmmu.hw.guest``), walks every mapped address once so that the
accessed bits are set and the walker's per-register context and table views are cached, then
times read walks over the same addresses and prints a markdown table: the best of several
repeats, so the number is the walker's cost rather than the machine's noise.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass

from kvmmu.hw.memory import GuestMemory
from kvmmu.hw.walk import CpuState, WalkResult, cpu_for_mode, load_cr3, walk
from kvmmu.hw.x86 import Access, PagingMode

P, W, U, PS = 1, 2, 4, 1 << 7
PRW = P | W | U
LEVELS = {PagingMode.NONE: 0, PagingMode.BITS32: 2, PagingMode.PAE: 3}
LEVELS |= {PagingMode.LEVEL4: 4, PagingMode.LEVEL5: 5}


@dataclass(frozen=True)
class Case:
    """One row of the table: a paging mode and the level of its leaf entries."""

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
                table = old & (0xFFFF_F000 if esize == 4 else 0xF_FFFF_FFFF_F000)
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


def measure(case: Case, walks: int, repeats: int) -> tuple[float, int]:
    """Best walks per second over ``repeats`` runs of ``walks`` read walks."""
    mem, cpu, gvas = build(case, 64)
    for gva in gvas:  # warm: set A bits, build the context and the table-view cache
        result = walk(mem, cpu, gva)
        assert isinstance(result, WalkResult) and result.level == case.leaf_level, result
    rounds = max(1, walks // len(gvas))
    read = Access.READ
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(rounds):
            for gva in gvas:
                walk(mem, cpu, gva, read)
        best = min(best, time.perf_counter() - start)
    levels_read = LEVELS[case.mode] - max(case.leaf_level - 1, 0)
    return rounds * len(gvas) / best, levels_read


def pin_to_one_cpu() -> str:
    """Run on a single CPU where the OS supports affinity; say which."""
    if hasattr(os, "sched_setaffinity") and hasattr(os, "sched_getaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    return "not pinned (no sched_setaffinity here)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--walks", type=int, default=20_000, help="walks per repeat and case")
    parser.add_argument("--repeats", type=int, default=5, help="repeats; the best is reported")
    args = parser.parse_args(argv)
    pinned = pin_to_one_cpu()
    print(
        f"Python {platform.python_version()} on {platform.machine()}, {pinned}, "
        f"best of {args.repeats} x {args.walks} read walks over 64 warmed addresses\n"
    )
    print("| mode | page | entries read | walks/s | µs/walk |")
    print("| --- | --- | ---: | ---: | ---: |")
    for case in CASES:
        rate, levels_read = measure(case, args.walks, args.repeats)
        print(f"| {case.name} | {case.page} | {levels_read} | {rate:,.0f} | {1e6 / rate:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
