"""Guest accesses per second on the host's real KVM and on kvmmu, for the same guest program.

Run ``python benchmarks/bench_host.py`` (``--repeats N``, ``--pages N``) on a machine with a
usable ``/dev/kvm``. The program (``kvmmu.host.program``) stores to ``--pages`` user pages in
turn until it has made 120 CPL-3 stores (the first store to each page takes a shadow page fault
on both machines, the rest hit the TLB). Only the run of the ops is timed: on KVM the
``KVM_RUN`` loop (guest entry and exit included), on kvmmu the loop over ``Vcpu`` accesses;
building guest memory and creating the VM are not. The machine is shared and noisy, so each
figure is the median over the repeats with the minimum and maximum beside it.
"""

from __future__ import annotations

import argparse
import statistics
import sys

from kvmmu.host.kvm import kvm_usable
from kvmmu.host.program import (
    DATA_GVA,
    MAX_OPS,
    Map,
    Program,
    RunResult,
    Write,
    run_kvm,
    run_kvmmu,
    user_page,
)


def bench_program(pages: int) -> Program:
    """``MAX_OPS`` stores spread over ``pages`` user pages."""
    maps = tuple(Map(DATA_GVA + (i << 12), user_page(i)) for i in range(pages))
    ops = tuple(Write(DATA_GVA + ((k % pages) << 12) + 8 * (k // pages), k) for k in range(MAX_OPS))
    return Program("bench", maps, ops)


def rates(runs: list[RunResult], accesses: int) -> tuple[float, float, float]:
    values = sorted(accesses / r.seconds for r in runs)
    return statistics.median(values), values[0], values[-1]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--pages", type=int, default=16)
    args = parser.parse_args(argv)
    usable, why = kvm_usable()
    if not usable:
        print(f"skipped: {why}")
        return 0
    program = bench_program(args.pages)
    accesses = len(program.ops)
    kvm = rates([run_kvm(program) for _ in range(args.repeats)], accesses)
    ours = rates([run_kvmmu(program) for _ in range(args.repeats)], accesses)
    print(f"{accesses} CPL-3 stores over {args.pages} pages, {args.repeats} repeats\n")
    print("| machine | accesses/s (median) | min | max |")
    print("| --- | ---: | ---: | ---: |")
    for name, (med, lo, hi) in (("host KVM", kvm), ("kvmmu", ours)):
        print(f"| {name} | {med:,.0f} | {lo:,.0f} | {hi:,.0f} |")
    print(f"\nKVM / kvmmu: {kvm[0] / ours[0]:.1f}x (medians)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
