"""Faulting in a whole guest through ``Vcpu.access``: time and peak memory for 64 MiB to 1 GiB.

Run ``python benchmarks/bench_faultin.py`` (``--quick`` for 4, 8 and 16 MiB; ``--sizes`` to
choose). Each measurement is one fresh subprocess, so every size starts from an empty heap and
its peak RSS is its own. The subprocess builds a shadow-paging VM of that size (``Vm`` defaults,
with a shadow-page budget that holds the whole map) and a 4-level guest that maps all of it at
gva = gpa with 4 KiB pages, its tables written with numpy
(``kvmmu.teaching.workloads.fast_identity_tables``): that setup is not timed. Then it reads
every 4 KiB page once, in address order, with ``vcpu.access``: the real per-access path (TLB
miss, hardware walk of the shadow tables, ``page_fault``, retry), not the batch path. Every page
must have taken one fault (``stats.pf_fixed`` equals the number of pages), or the run fails.

The subprocess reports the CPU time of the loop (``time.process_time_ns``: the machine is
shared, and CPU time leaves out the moments another process had the core) and its wall time,
and ``ru_maxrss`` (peak resident memory of the whole process, setup included) after setup and
after the loop. The sizes are run in rounds, each size once per round (rotating order), and each
figure is the median over the rounds with the minimum and maximum. One table shows all sizes with
the cost per MiB, which stays flat when the cost is linear in the guest's size; the goal line of
issue 16 is the 1 GiB guest in at most 10 s of CPU time.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from timing import Spread, add_arguments, goal_line, header, rounds_of, table

MIB = 1 << 20
FULL_SIZES = (64, 256, 1024)
QUICK_SIZES = (4, 8, 16)
GOAL_SECONDS = 10.0  # a 1 GiB guest (issue 16)


def label(mib: int) -> str:
    """``64 MiB``, ``1 GiB``."""
    return f"{mib >> 10} GiB" if mib % 1024 == 0 else f"{mib} MiB"


def peak_rss_mib() -> float:
    """This process's peak resident set so far, MiB (Linux reports ru_maxrss in KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / MIB


def child(mib: int) -> dict[str, float]:
    """Fault in a ``mib`` MiB guest, one read per 4 KiB page; what was measured."""
    from kvmmu.hw.x86 import PAGE_SIZE
    from kvmmu.kvm.vcpu import Vm
    from kvmmu.teaching.workloads import fast_identity_tables

    size = mib * MIB
    npages = size // PAGE_SIZE
    vm = Vm(size, n_max_mmu_pages=2 * (size >> 21) + 64)
    vcpu = fast_identity_tables(vm, size, PAGE_SIZE)
    setup_rss = peak_rss_mib()
    access = vcpu.access
    cpu0, wall0 = time.process_time_ns(), time.perf_counter_ns()
    for gpa in range(0, size, PAGE_SIZE):
        out = access(gpa)
        if out.__class__ is not int:
            raise SystemExit(f"reading {gpa:#x} did not land: {out!r}")
    cpu, wall = time.process_time_ns() - cpu0, time.perf_counter_ns() - wall0
    faults = vm.stats.pf_fixed
    if faults != npages:
        raise SystemExit(f"expected one fault per page, {npages}; stats.pf_fixed is {faults}")
    return {
        "mib": mib,
        "faults": faults,
        "cpu_s": cpu / 1e9,
        "wall_s": wall / 1e9,
        "setup_rss_mib": setup_rss,
        "peak_rss_mib": peak_rss_mib(),
    }


def run_child(mib: int) -> dict[str, float]:
    """One subprocess faulting in ``mib`` MiB; its JSON report."""
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", str(mib)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"the {mib} MiB run failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    report: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
    return report


def main(argv: list[str] | None = None) -> int:
    """Run every size in rounds of subprocesses and print the table and the goal line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_arguments(parser, rounds=3, clock=False)
    parser.add_argument("--sizes", type=int, nargs="+", help="guest sizes in MiB (64 256 1024)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child)))
        return 0
    sizes = tuple(args.sizes or (QUICK_SIZES if args.quick else FULL_SIZES))
    rounds = rounds_of(args, 3)
    what = "one subprocess per size (" + ", ".join(map(label, sizes)) + ")"
    print(header(rounds, "cpu", what).replace("; CPU time", "; CPU time of the loop", 1))
    reports: dict[int, list[dict[str, float]]] = {s: [] for s in sizes}
    for r in range(rounds):
        k = r % len(sizes)
        for mib in sizes[k:] + sizes[:k]:
            reports[mib].append(run_child(mib))
    rows = []
    per_mib: dict[int, Spread] = {}
    for mib in sizes:
        runs = reports[mib]
        cpu = Spread.of(run["cpu_s"] for run in runs)
        per_mib[mib] = Spread.of(run["cpu_s"] * 1e3 / mib for run in runs)
        rows.append(
            (
                label(mib),
                f"{int(runs[0]['faults']):,}",
                cpu.format(),
                Spread.of(run["wall_s"] for run in runs).format(),
                per_mib[mib].format(1),
                Spread.of(run["cpu_s"] * 1e6 / run["faults"] for run in runs).format(1),
                Spread.of(run["setup_rss_mib"] for run in runs).format(1),
                Spread.of(run["peak_rss_mib"] for run in runs).format(1),
            )
        )
    print()
    headers = ("guest", "faults", "CPU s", "wall s", "CPU ms per MiB", "µs per fault")
    print(table((*headers, "RSS after setup, MiB", "peak RSS, MiB"), rows))
    print()
    small, large = sizes[0], sizes[-1]
    growth = per_mib[large].median / per_mib[small].median
    print(
        f"cost per MiB, {label(large)} / {label(small)}: {growth:.2f}x (1.00 is linear in the size)"
    )
    if 1024 in reports:
        cpu = Spread.of(run["cpu_s"] for run in reports[1024])
        detail = f"min-max {cpu.low:.2f}-{cpu.high:.2f} s"
        print(goal_line("1 GiB fault-in, CPU time", cpu.median, GOAL_SECONDS, "s", detail))
    else:
        estimate = per_mib[large].median * 1024 / 1e3
        per = per_mib[large].median
        detail = f"estimated from {label(large)} at {per:.1f} ms per MiB, linear"
        print(goal_line("1 GiB fault-in, CPU time", estimate, GOAL_SECONDS, "s", detail))
    return 0


if __name__ == "__main__":
    sys.exit(main())
