"""The simulated MMU's costs, measured side by side and printed as markdown tables with goals.

Run ``python benchmarks/bench_mmu.py`` (``--quick`` for a short run, ``--help`` for options).
Every case below runs once per round, interleaved with the others by ``timing.py``, and each
figure is the median over the rounds with the minimum and maximum beside it. Each run is prepared
untimed (a fresh guest from ``kvmmu.teaching.workloads`` where the operation can happen only
once) and checked afterwards against the MMU's own counters (``vm.stats``): a fault must have
grown ``pf_fixed`` by one per operation, a TLB hit ``tlb_hits`` with no miss, and so on, or the
benchmark stops with a ``BenchError`` instead of printing a figure of something else.

* guest walk: ``kvmmu.hw.walk.walk`` (the public, checked walk) of the 4-level identity guest's
  tables, a read of a 4 KiB page whose entries have their accessed bits set: the unit of the
  ratios below;
* shadow page fault: a read of a fresh 4 KiB page of a 4-level guest, through ``Vcpu.access``
  (TLB miss, hardware walk of the shadow tables, ``page_fault``, retry);
* TDP page fault: the same on a TDP VM (host huge pages off, so every fault maps 4 KiB);
* TLB-miss access: a read of a page already faulted in, after a TLB flush: the hardware walk of
  the shadow tables resolves it, no fault;
* TLB hit at a 4 KiB, 2 MiB and 1 GiB entry: reads of 64 addresses, each in a different TLB
  entry of that size (the guest maps with pages of that size and the host backs them with huge
  pages); ``Tlb.lookup`` tries 4 KiB first, so larger entries cost a probe or two more;
* CR3 switch among 4 address spaces with the root cache, and without it: after every switch
  ``kvmmu.teaching.workloads.drop_prev_roots`` releases the cached previous roots, so every
  switch looks the root up in the page hash (``kvm_mmu_get_shadow_page``) instead;
* ``sync_page`` per unsync page: leaf tables made unsync by one guest PTE store each, then
  resynced by a CR3 load (``kvm_mmu_sync_roots``);
* the batch path (``kvmmu.teaching.batch``) on a 64 GiB guest, which counts what a full touch
  would build. The TDP figure is a count only, no tables built; the shadow-paging figure includes
  writing the guest's page tables (numpy) and then counts.

The ratios table gives issue 16's goals: a shadow fault at most 6 walks, a TLB-miss access at
most 2 walks, a TDP fault at most 1.2 shadow faults, each as the ratio of the two medians of this
run, with the spread of the per-round ratios beside it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass

from timing import (
    Case,
    Results,
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

from kvmmu.hw.guest import GuestPageTables
from kvmmu.hw.walk import WalkResult, walk, walk_unchecked
from kvmmu.hw.x86 import PAGE_SHIFT, PAGE_SIZE, Access, PagingMode, Pte
from kvmmu.kvm.vcpu import Vcpu, Vm
from kvmmu.teaching.batch import plan_direct, plan_shadow
from kvmmu.teaching.workloads import (
    KERNEL_BASE,
    USER_BASE,
    drop_prev_roots,
    fast_identity_tables,
    identity_guest,
)

MIB, GIB = 1 << 20, 1 << 30
READ = Access.READ
HITS = 64  # addresses per TLB-hit run, one TLB entry each (the TLB holds 64)


@dataclass(frozen=True)
class Sizes:
    """Operations per run of each case."""

    walks: int
    faults: int
    hits: int
    misses: int
    switches: int
    sync_tables: int


FULL = Sizes(walks=5120, faults=1000, hits=12800, misses=2000, switches=2000, sync_tables=32)
QUICK = Sizes(walks=256, faults=64, hits=640, misses=128, switches=64, sync_tables=4)


def checked(
    vcpu: Vcpu, run: Callable[[], object], grows: dict[str, int], same: tuple[str, ...] = ()
) -> Trial:
    """A trial whose check wants each ``vm.stats`` counter in ``grows`` to have grown by exactly
    that much during the run, and those in ``same`` not to have moved."""
    stats = vcpu.vm.stats
    before = {name: getattr(stats, name) for name in (*grows, *same)}

    def check() -> None:
        for name, delta in grows.items():
            moved = getattr(stats, name) - before[name]
            expect(moved == delta, f"stats.{name} to grow by {delta}, it grew by {moved}")
        for name in same:
            expect(getattr(stats, name) == before[name], f"stats.{name} unchanged")

    return Trial(run, check)


def reads(vcpu: Vcpu, gvas: list[int]) -> Callable[[], None]:
    """A run: one supervisor read of each of ``gvas`` through ``Vcpu.access``; each must land."""

    def run() -> None:
        access = vcpu.access
        for gva in gvas:
            out = access(gva)
            if out.__class__ is not int:
                expect(False, f"a read of {gva:#x} to land, got {out!r}")

    return run


# -- the unit: one guest walk -----------------------------------------------------------------


def walk_case(n: int) -> Case:
    """Public 4-level read walks of 4 KiB pages over warmed guest tables (A bits set)."""
    _, vcpu, pt = identity_guest(16 * MIB)
    assert pt is not None
    memory, cpu = vcpu.vm.memory, vcpu.cpu
    gvas = [(i * 0x11000) % (12 * MIB) for i in range(256)]
    for gva in gvas:
        walk(memory, cpu, gva)  # sets the accessed bits, fills the walker's caches
    passes = max(1, n // len(gvas))
    last: list[object] = [None]

    def run() -> None:
        for _ in range(passes):
            for gva in gvas:
                last[0] = walk(memory, cpu, gva, Access.READ)

    def check() -> None:
        result = last[0]
        expect(isinstance(result, WalkResult) and result.level == 1, "a 4 KiB translation")

    return Case.plain("guest walk (4-level, 4 KiB)", run, passes * len(gvas), check)


# -- faults -------------------------------------------------------------------------------------

PREFETCH_GROUP = 8  # PTE_PREFETCH_NUM: one measured fault per aligned group of 8 sptes


def _fresh_pages(n: int) -> tuple[int, list[int]]:
    """A guest size and ``n`` pages in it, one per prefetch group, none the first of its 2 MiB."""
    size = (n * PREFETCH_GROUP * PAGE_SIZE * 2 + 4 * MIB) // (2 * MIB) * (2 * MIB)
    step = PREFETCH_GROUP * PAGE_SIZE
    gvas = [gva for gva in range(step, size, step) if gva % (2 * MIB)][:n]
    expect(len(gvas) == n, f"{n} fresh pages in a {size >> 20} MiB guest")
    return size, gvas


def fault_case(name: str, n: int, *, tdp: bool) -> Case:
    """Reads of ``n`` fresh 4 KiB pages, each a fault fixed by the MMU (``pf_fixed`` + 1 each).

    The guest's tables are in place and, before the run, the first page of every 2 MiB is read
    once: that builds the shadow (or TDP) page tables above the leaves and, under TDP, maps the
    guest's table frames, so each measured read takes exactly one fault, at its leaf. The pages
    are 8 apart, one per prefetch group, so prefetching (on, as by default) cannot answer one.
    """
    size, gvas = _fresh_pages(n)

    def prepare() -> Trial:
        _, vcpu, _ = identity_guest(size, tdp=tdp)
        reads(vcpu, list(range(0, size, 2 * MIB)))()
        return checked(vcpu, reads(vcpu, gvas), {"pf_fixed": n, "tlb_misses": n})

    return Case(name, prepare, n)


def fault_walks_case(n: int) -> Case:
    """The three walks inside each shadow fault, made alone: the part no fault path can shed.

    For the same fresh pages as the shadow-fault case: the hardware walk of the shadow tables
    that faults at the empty leaf spte; the guest walk ``FNAME(walk_addr)`` makes, which sets
    the leaf's accessed bit; and a hardware walk that succeeds over the same shadow tables (to
    the first page of the same 2 MiB, mapped beforehand), standing for the retry. Nothing else
    of the fault runs, so the shadow fault's time minus this is KVM's own work.
    """
    size, gvas = _fresh_pages(n)

    def prepare() -> Trial:
        _, vcpu, _ = identity_guest(size)
        reads(vcpu, list(range(0, size, 2 * MIB)))()
        host, hw_cpu = vcpu.vm.host_view, vcpu.hardware_cpu()
        memory, cpu = vcpu.vm.memory, vcpu.cpu
        outcomes: list[object] = []

        def run() -> None:
            for gva in gvas:
                outcomes.append(walk_unchecked(host, hw_cpu, gva, READ, False, False))
                outcomes.append(walk_unchecked(memory, cpu, gva, READ))
                outcomes.append(walk_unchecked(host, hw_cpu, gva & ~(2 * MIB - 1), READ))

        no_fault = checked(vcpu, run, {}, ("pf_fixed", "pf_taken", "tlb_misses"))

        def check() -> None:
            no_fault.check()  # the counters of a fault did not move
            kinds = [type(out).__name__ for out in outcomes[:3]]
            expect(kinds == ["PageFault", "WalkResult", "WalkResult"], f"the walks {kinds}")
            expect(len(outcomes) == 3 * n, f"{3 * n} walks")
            leaf = walk_unchecked(memory, cpu, gvas[-1], READ, False, False)
            expect(isinstance(leaf, WalkResult) and bool(leaf.pte & Pte.ACCESSED), "A set")

        return Trial(run, check)

    return Case(FAULT_WALKS, prepare, n)


def miss_case(n: int) -> Case:
    """Reads of pages already faulted in, the TLB flushed before each: no fault, a shadow walk."""
    _, vcpu, _ = identity_guest(8 * MIB)
    pages = [i * PAGE_SIZE for i in range(256)]
    reads(vcpu, pages)()
    gvas = [pages[i % len(pages)] for i in range(n)]
    flush = vcpu.tlb.flush

    def run() -> None:
        access = vcpu.access
        for gva in gvas:
            flush()
            access(gva)

    def prepare() -> Trial:
        return checked(vcpu, run, {"tlb_misses": n}, ("pf_fixed", "pf_taken", "tlb_hits"))

    return Case("access, TLB miss (shadow walk, no fault)", prepare, n)


# -- TLB hits at each entry size ----------------------------------------------------------------

HIT_SIZES = ((1, PAGE_SIZE, "4 KiB"), (2, 2 * MIB, "2 MiB"), (3, GIB, "1 GiB"))


def hit_case(level: int, page: int, label: str, n: int) -> Case:
    """Reads of 64 addresses, each in its own TLB entry of ``page`` bytes (every entry hit).

    The guest maps everything with pages of that size and the host backs memory with huge
    pages; the guest's own tables sit in one more page at the top, left untouched, so no entry
    is split around them. Before the run each address is read once (faults, TLB fills).
    """
    _, vcpu, _ = identity_guest((HITS + 1) * page, page_size=page, huge_pages=True)
    addresses = [k * page + (k * 0x1_2340 % page & ~7) for k in range(HITS)]
    reads(vcpu, addresses)()
    levels = {key[1] for key in vcpu.tlb.entries}
    expect(levels == {level} and len(vcpu.tlb) == HITS, f"{HITS} TLB entries of {label}")
    passes = max(1, n // HITS)
    gvas = addresses * passes

    def prepare() -> Trial:
        return checked(vcpu, reads(vcpu, gvas), {"tlb_hits": len(gvas)}, ("tlb_misses",))

    return Case(f"access, TLB hit, {label} entry", prepare, len(gvas))


# -- CR3 switches and sync ----------------------------------------------------------------------


def _processes(count: int) -> tuple[Vm, list[GuestPageTables]]:
    vm = Vm(32 * MIB, huge_pages=False)
    slot = vm.memory.slots.get(0)
    assert slot is not None
    npages = slot.npages
    tables = []
    for i in range(count):
        pt = GuestPageTables(
            vm.memory, PagingMode.LEVEL4, table_gfns=range(npages - 16 * (i + 1), npages - 16 * i)
        )
        for j in range(8):
            pt.map(USER_BASE + j * PAGE_SIZE, (0x100 + 8 * i + j) << PAGE_SHIFT, user=True)
        tables.append(pt)
    return vm, tables


def switch_case(n: int, *, root_cache: bool) -> Case:
    """CR3 switches among 4 address spaces, each touched once before."""
    vm, tables = _processes(4)
    vcpu = vm.create_vcpu(tables[0].cpu())
    for pt in tables:
        vcpu.set_cr3(pt.cr3)
        vcpu.access(USER_BASE, Access.READ, cpl=3)
    cr3s = [tables[i % 4].cr3 for i in range(1, n + 1)]  # never the current one

    def run() -> None:
        for cr3 in cr3s:
            vcpu.set_cr3(cr3)
            if not root_cache:
                drop_prev_roots(vcpu)

    def prepare() -> Trial:
        vcpu.set_cr3(tables[0].cr3)
        if root_cache:  # every switch finds its root among the cached previous roots
            return checked(vcpu, run, {"root_cache_hits": n}, ("root_cache_misses",))
        drop_prev_roots(vcpu)
        return checked(vcpu, run, {"root_cache_misses": n}, ("root_cache_hits",))

    name = "CR3 switch, root cache" if root_cache else "CR3 switch, no root cache"
    return Case(name, prepare, n)


def sync_case(tables_count: int) -> Case:
    """One CR3 load resyncing ``tables_count`` unsync leaf tables; per page synced.

    Before each run (untimed) the guest stores to one PTE of each leaf table, which makes it
    unsync; the run is the CR3 load alone (``kvm_mmu_sync_roots``, ``sync_page`` per page).
    """
    vm = Vm(64 * MIB, huge_pages=False, allow_unsync=True)
    slot = vm.memory.slots.get(0)
    assert slot is not None
    npages = slot.npages
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4, table_gfns=range(npages - 96, npages))
    pt.map(KERNEL_BASE, 0, 2 * MIB, length=64 * MIB)
    gvas = [USER_BASE + (k << 21) for k in range(tables_count)]  # one leaf table each
    for k, gva in enumerate(gvas):
        pt.map(gva, (0x200 + k) << PAGE_SHIFT, user=True)
    vcpu = vm.create_vcpu(pt.cpu())
    pte_gpas = []
    for gva in gvas:
        vcpu.access(gva, Access.READ, cpl=3)
        pte_gpas.append(pt.entry(gva, 2) & ~0xFFF & ((1 << 52) - 1))

    def prepare() -> Trial:
        for gpa in pte_gpas:  # one store per leaf table: it goes unsync
            entry = vm.memory.read(gpa)
            vcpu.write(KERNEL_BASE + gpa, entry ^ (1 << 9), 8, cpl=0)
        return checked(vcpu, lambda: vcpu.set_cr3(pt.cr3), {"sync_pages": tables_count})

    return Case("sync_page on CR3 load, per page", prepare, tables_count)


# -- the batch path on 64 GiB -------------------------------------------------------------------

BATCH_SIZE = 64 * GIB
BATCH_PAGES = BATCH_SIZE >> PAGE_SHIFT


def batch_cases() -> list[Case]:
    """The batch counts of a 64 GiB guest; each check compares the counts with what they must be.

    TDP with 4 KiB leaves: 1 + 1 + 64 + 32768 direct pages and one leaf spte per 4 KiB page,
    counted, no tables built. Shadow paging of 4 KiB guest pages: the guest's tables written
    first (numpy), then the same count of shadow pages and leaves (the tables map themselves).
    """
    want_pages = 1 + 1 + (BATCH_SIZE >> 30) + (BATCH_SIZE >> 21)

    def tdp_run() -> object:
        vm = Vm(BATCH_SIZE, tdp=True, n_max_mmu_pages=1 << 20)
        return plan_direct(vm.create_vcpu(), max_level=1, detail=False).summary()

    def shadow_run() -> object:
        vm = Vm(BATCH_SIZE, n_max_mmu_pages=1 << 20)
        return plan_shadow(fast_identity_tables(vm, BATCH_SIZE, PAGE_SIZE), detail=False).summary()

    def case(name: str, fn: Callable[[], object]) -> Case:
        got: list[object] = []

        def check() -> None:
            summary = got[-1]
            pages = getattr(summary, "n_pages", None)
            leaves = getattr(summary, "leaves", {}).get(1)
            expect(pages == want_pages, f"{want_pages} shadow pages counted, got {pages}")
            expect(leaves == BATCH_PAGES, f"{BATCH_PAGES} leaf sptes counted, got {leaves}")

        return Case.plain(name, lambda: got.append(fn()), 1, check)

    return [
        case("TDP, 4 KiB leaves: count only, no tables built", tdp_run),
        case("shadow, 4 KiB guest pages: guest tables written, then counted", shadow_run),
    ]


# -- report -------------------------------------------------------------------------------------

WALK = "guest walk (4-level, 4 KiB)"
SHADOW = "shadow page fault (4-level, 4 KiB)"
FAULT_WALKS = "the shadow fault's 3 walks alone"
TDP = "TDP page fault (4-level guest, 4 KiB)"
MISS = "access, TLB miss (shadow walk, no fault)"
RATIOS = (
    ("shadow fault / walk", SHADOW, WALK, 6.0, "walks"),
    ("TLB-miss access / walk", MISS, WALK, 2.0, "walks"),
    ("TDP fault / shadow fault", TDP, SHADOW, 1.2, "x"),
)


def ratio_rows(res: Results) -> tuple[list[tuple[str, ...]], list[str]]:
    """The ratios table and its goal lines; then, with no goal, how a shadow fault divides
    between its three walks and the rest (KVM's own work), in walks."""
    rows, goals = [], []
    for label, num, den, goal, unit in RATIOS:
        value = res.ratio_of_medians(num, den)
        spread = res.ratio(num, den)
        rows.append(
            (
                label,
                f"{value:.2f}",
                spread.format(),
                f"<= {goal:g}",
                "met" if value <= goal else "NOT met",
            )
        )
        goals.append(goal_line(label, value, goal, unit, f"per-round {spread.format()}"))
    walks = res.ratio(FAULT_WALKS, WALK)
    rows.append(
        (
            "its 3 walks alone / walk",
            f"{res.ratio_of_medians(FAULT_WALKS, WALK):.2f}",
            walks.format(),
            "-",
            "",
        )
    )
    per_round = zip(res.samples[SHADOW], res.samples[FAULT_WALKS], res.samples[WALK], strict=True)
    rest = Spread.of((fault - own) / walk for fault, own, walk in per_round)
    medians = [res.spread(name).median for name in (SHADOW, FAULT_WALKS, WALK)]
    rows.append(
        (
            "the rest of the shadow fault / walk",
            f"{(medians[0] - medians[1]) / medians[2]:.2f}",
            rest.format(),
            "-",
            "",
        )
    )
    return rows, goals


def main(argv: list[str] | None = None) -> int:
    """Run every case, interleaved, and print the tables and the goal lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_arguments(parser, rounds=7)
    parser.add_argument("--no-batch", action="store_true", help="skip the 64 GiB batch figures")
    args = parser.parse_args(argv)
    rounds = rounds_of(args, 7)
    n = QUICK if args.quick else FULL
    cases = [
        walk_case(n.walks),
        fault_case(SHADOW, n.faults, tdp=False),
        fault_walks_case(n.faults),
        fault_case(TDP, n.faults, tdp=True),
        miss_case(n.misses),
        *(hit_case(level, page, label, n.hits) for level, page, label in HIT_SIZES),
        switch_case(n.switches, root_cache=True),
        switch_case(n.switches, root_cache=False),
        sync_case(n.sync_tables),
    ]
    print(header(rounds, args.clock, "every operation below"))
    res = measure(cases, rounds, clock=args.clock)
    print()
    rows = []
    for case in cases:
        us = res.spread(case.name).scaled(1e6)
        rows.append((case.name, case.ops, us.format(), f"{1e6 / us.median:,.0f}"))
    print(table(("operation", "ops per run", "µs each", "per second (median)"), rows))
    print()
    ratios, goals = ratio_rows(res)
    print(table(("ratio", "of medians", "per round", "goal", ""), ratios))
    print()
    print("\n".join(goals))
    if not args.no_batch:
        batch = batch_cases()
        bres = measure(batch, max(1, min(rounds, 3)), clock=args.clock, warmup=0)
        print()
        rows = [(c.name, bres.spread(c.name).scaled(1e3).format(1)) for c in batch]
        print(table((f"batch path, 64 GiB guest ({bres.rounds} rounds)", "ms"), rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
