"""Guest accesses per second on the host's real KVM and on kvmmu, for the same guest program.

Run ``python benchmarks/bench_host.py`` (``--rounds N``, ``--pages N``, ``--quick``) on a machine
with a usable ``/dev/kvm``. The program (``kvmmu.host.program``) stores to ``--pages`` user pages in
turn until it has made 120 CPL-3 stores (the first store to each page takes a shadow page fault
on both machines, the rest hit the TLB). Only the run of the ops is timed: on KVM the
``KVM_RUN`` loop (guest entry and exit included), on kvmmu the loop over ``Vcpu`` accesses;
building guest memory and creating the VM are not; both in wall time, as ``kvmmu.host.program``
measures them (KVM's time is in the kernel and the guest). The machine is shared and noisy, so
the two run in interleaved rounds and each figure is the median over the rounds with the minimum
and maximum beside it; the ratio is the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import sys

from timing import Spread, add_arguments, header, rounds_of, table

from kvmmu.host.kvm import kvm_usable
from kvmmu.host.program import (
    DATA_GVA,
    MAX_OPS,
    Map,
    Program,
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


def main(argv: list[str]) -> int:
    """Run the program on both machines in interleaved rounds; print the table and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_arguments(parser, rounds=9, clock=False)
    parser.add_argument("--pages", type=int, default=16)
    args = parser.parse_args(argv)
    usable, why = kvm_usable()
    if not usable:
        print(f"skipped: {why}")
        return 0
    rounds = rounds_of(args, 9)
    program = bench_program(args.pages)
    accesses = len(program.ops)
    runners = (("host KVM", run_kvm), ("kvmmu", run_kvmmu))
    rates: dict[str, list[float]] = {name: [] for name, _ in runners}
    for r in range(rounds):  # one run of each per round, the order alternating
        for name, run in runners[r % 2 :] + runners[: r % 2]:
            result = run(program)
            rates[name].append(accesses / result.seconds)
    what = f"{accesses} CPL-3 stores over {args.pages} pages, ops only (KVM_RUN loop, Vcpu loop)"
    print(header(rounds, "wall", what))
    print()
    spreads = {name: Spread.of(values) for name, values in rates.items()}
    rows = [
        (name, f"{s.median:,.0f}", f"{s.low:,.0f}", f"{s.high:,.0f}") for name, s in spreads.items()
    ]
    print(table(("machine", "accesses/s (median)", "min", "max"), rows))
    ratio = Spread.of(k / m for k, m in zip(rates["host KVM"], rates["kvmmu"], strict=True))
    print(f"\nKVM / kvmmu: {ratio.median:.1f}x median of per-round ratios ({ratio.format(1)})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
