"""Throughput of the simulated shadow MMU, printed as markdown tables.

Run ``python benchmarks/bench_mmu.py`` (``--quick`` for a smaller run). Each case builds a fresh
guest with ``kvmmu.teaching.workloads`` and times one operation many times; the best of several repeats
is reported, so the figure is the simulator's cost rather than the machine's noise:

* shadow page faults per second: a 4-level guest touching fresh 4 KiB pages;
* accesses per second on a TLB hit, and on a TLB miss that the hardware walk of the shadow
  tables resolves without a fault (the TLB is flushed before each access);
* CR3 switches per second among 4 address spaces, with the root cache and without it. "Without"
  calls ``kvmmu.teaching.workloads.drop_prev_roots`` after every switch: the cached previous roots are
  released (``put_root``) and ``vcpu.prev_roots`` emptied, so every switch looks the root up in
  the page hash again (``kvm_mmu_get_shadow_page``) instead of taking it from
  ``prev_roots``; ``vcpu.py`` is not changed;
* ``sync_page`` cost per page: leaf tables made unsync by one guest PTE store each, then
  resynced by a CR3 load (``kvm_mmu_sync_roots``);
* the batch count of a 64 GiB guest, TDP and shadow paging with 4 KiB pages.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import time
from collections.abc import Callable

from kvmmu.hw.guest import GuestPageTables
from kvmmu.hw.x86 import PAGE_SHIFT, PAGE_SIZE, Access, PagingMode
from kvmmu.kvm.vcpu import Vm
from kvmmu.teaching.batch import plan_direct, plan_shadow
from kvmmu.teaching.workloads import (
    KERNEL_BASE,
    USER_BASE,
    drop_prev_roots,
    fast_identity_tables,
    identity_guest,
)

MIB = 1 << 20


def best(fn: Callable[[], float], repeats: int) -> float:
    """The smallest of ``repeats`` timings ``fn`` returns."""
    return min(fn() for _ in range(repeats))


def bench_faults(n: int) -> float:
    """Seconds per shadow page fault (4-level guest, fresh 4 KiB pages, reads)."""
    _, vcpu, _ = identity_guest(n * PAGE_SIZE + 4 * MIB)
    start = time.perf_counter()
    for i in range(n):
        vcpu.access(i * PAGE_SIZE)
    elapsed = time.perf_counter() - start
    assert vcpu.vm.stats.pf_fixed == n
    return elapsed / n


def bench_hits(n: int) -> float:
    """Seconds per access that hits the TLB."""
    _, vcpu, _ = identity_guest(8 * MIB)
    vcpu.access(0x1000)
    start = time.perf_counter()
    for _ in range(n):
        vcpu.access(0x1000)
    return (time.perf_counter() - start) / n


def bench_misses(n: int) -> float:
    """Seconds per access that misses the TLB and walks the shadow tables (no fault)."""
    _, vcpu, _ = identity_guest(8 * MIB)
    pages = 256
    for i in range(pages):
        vcpu.access(i * PAGE_SIZE)
    faults = vcpu.vm.stats.pf_fixed
    start = time.perf_counter()
    for i in range(n):
        vcpu.tlb.flush()
        vcpu.access((i % pages) * PAGE_SIZE)
    elapsed = time.perf_counter() - start
    assert vcpu.vm.stats.pf_fixed == faults
    return elapsed / n


def _processes(count: int) -> tuple[Vm, list[GuestPageTables]]:
    vm = Vm(32 * MIB, huge_pages=False)
    npages = vm.memory.slots.get(0).npages
    tables = []
    for i in range(count):
        pt = GuestPageTables(
            vm.memory, PagingMode.LEVEL4, table_gfns=range(npages - 16 * (i + 1), npages - 16 * i)
        )
        for j in range(8):
            pt.map(USER_BASE + j * PAGE_SIZE, (0x100 + 8 * i + j) << PAGE_SHIFT, user=True)
        tables.append(pt)
    return vm, tables


def bench_switches(n: int, *, root_cache: bool) -> float:
    """Seconds per CR3 switch among 4 address spaces (each touched once first)."""
    vm, tables = _processes(4)
    vcpu = vm.create_vcpu(tables[0].cpu())
    for pt in tables:
        vcpu.set_cr3(pt.cr3)
        vcpu.access(USER_BASE, Access.READ, cpl=3)
    start = time.perf_counter()
    for i in range(n):
        vcpu.set_cr3(tables[i % 4].cr3)
        if not root_cache:
            drop_prev_roots(vcpu)
    return (time.perf_counter() - start) / n


def bench_sync(tables_count: int, rounds: int) -> float:
    """Seconds per unsync page resynced on a CR3 load."""
    vm = Vm(64 * MIB, huge_pages=False, allow_unsync=True)
    npages = vm.memory.slots.get(0).npages
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4, table_gfns=range(npages - 64, npages))
    pt.map(KERNEL_BASE, 0, 2 * MIB, length=64 * MIB)
    gvas = [USER_BASE + (k << 21) for k in range(tables_count)]  # one leaf table each
    for k, gva in enumerate(gvas):
        pt.map(gva, (0x200 + k) << PAGE_SHIFT, user=True)
    vcpu = vm.create_vcpu(pt.cpu())
    pte_gpas = []
    for gva in gvas:
        vcpu.access(gva, Access.READ, cpl=3)
        table = pt.entry(gva, 2) & ~0xFFF & ((1 << 52) - 1)
        pte_gpas.append(table)
    total = 0.0
    synced = 0
    for _ in range(rounds):
        for gpa in pte_gpas:  # one store per leaf table: it goes unsync
            entry = vm.memory.read(gpa)
            vcpu.write(KERNEL_BASE + gpa, entry ^ (1 << 9), 8, cpl=0)
        before = vm.stats.sync_pages
        start = time.perf_counter()
        vcpu.set_cr3(pt.cr3)
        total += time.perf_counter() - start
        synced += vm.stats.sync_pages - before
    assert synced == tables_count * rounds, (synced, tables_count * rounds)
    return total / synced


def bench_batch_64g() -> tuple[float, float]:
    """Seconds for the batch counts of a 64 GiB guest: TDP, and shadow paging with 4 KiB pages
    (including writing the guest's 32834 table pages)."""
    start = time.perf_counter()
    vm = Vm(64 << 30, tdp=True, n_max_mmu_pages=1 << 20)
    plan_direct(vm.create_vcpu(), max_level=1, detail=False).summary()
    tdp = time.perf_counter() - start
    start = time.perf_counter()
    vm = Vm(64 << 30, n_max_mmu_pages=1 << 20)
    plan_shadow(fast_identity_tables(vm, 64 << 30, PAGE_SIZE), detail=False).summary()
    return tdp, time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    """Run every case and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer operations and repeats")
    args = parser.parse_args(argv)
    scale, repeats = (0.2, 2) if args.quick else (1.0, 5)
    if hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    print(f"Python {platform.python_version()} on {platform.machine()}, one core\n")
    rows = [
        (
            "shadow page fault (4-level, 4 KiB)",
            best(lambda: bench_faults(int(2000 * scale)), repeats),
        ),
        ("access, TLB hit", best(lambda: bench_hits(int(50000 * scale)), repeats)),
        ("access, TLB miss, shadow walk", best(lambda: bench_misses(int(5000 * scale)), repeats)),
        (
            "CR3 switch, root cache",
            best(lambda: bench_switches(int(4000 * scale), root_cache=True), repeats),
        ),
        (
            "CR3 switch, no root cache",
            best(lambda: bench_switches(int(4000 * scale), root_cache=False), repeats),
        ),
        (
            "sync_page on CR3 load, per page",
            best(lambda: bench_sync(16, max(2, int(10 * scale))), repeats),
        ),
    ]
    print("| operation | per second | microseconds each |")
    print("| --- | ---: | ---: |")
    for name, seconds in rows:
        print(f"| {name} | {1 / seconds:,.0f} | {seconds * 1e6:,.1f} |")
    tdp, shadow = min(bench_batch_64g() for _ in range(max(1, repeats // 2)))
    print("\n| batch count of a 64 GiB guest | seconds |")
    print("| --- | ---: |")
    print(f"| TDP, 4 KiB leaves (32834 pages, 16M leaf sptes) | {tdp:.2f} |")
    print(f"| shadow paging, 4 KiB guest pages (tables written too) | {shadow:.2f} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
