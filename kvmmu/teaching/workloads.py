"""Guest workloads: small, seeded programs that build a VM and drive real accesses through it.

No kernel counterpart: these play the guest. Each builds a :class:`~kvmmu.kvm.vcpu.Vm`, guest
page tables with :class:`~kvmmu.hw.guest.GuestPageTables`, and then runs accesses through
``Vcpu.access`` / ``Vcpu.write`` / ``Vcpu.set_cr3`` / ``Vcpu.invlpg``, so everything the MMU
does is the fault path's own work. Each returns a small result object with the VM, the tables
and the counters the lessons look at.

* :func:`full_touch`: a guest that identity-maps all of its memory and touches every page.
* :func:`many_processes`: ``n`` address spaces that share the kernel's tables, switched by CR3.
* :func:`pte_writer`: a guest that rewrites its own PTEs at a chosen rate (write protection,
  unsync pages, flooding).

Same arguments, same result: randomness comes only from ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pandas as pd

from kvmmu.errors import (
    KvmmuError,
    check_bool,
    check_choice,
    check_count,
    check_instance,
    check_optional_count,
    check_real,
)
from kvmmu.hw.guest import GuestPageTables
from kvmmu.hw.memory import GuestMemory
from kvmmu.hw.walk import GeneralProtection, WalkResult, cpu_for_mode, load_cr3, walk
from kvmmu.hw.x86 import PAGE_SHIFT, PAGE_SIZE, Access, PagingMode, Pte
from kvmmu.kvm.vcpu import Vcpu, Vm

KERNEL_BASE = 0xFFFF_8880_0000_0000  # Linux's direct map of physical memory (x86-64)
USER_BASE = 0x40_0000  # where a small Linux program's text starts


MIB = 1 << 20
GIB = 1 << 30
FAULT_PATH_LIMIT = GIB
"""The largest guest the fault-path workloads touch page by page (a million 4 KiB pages take
minutes); larger guests are the batch path's (:func:`fast_identity_tables`)."""
MAP_LIMIT = FAULT_PATH_LIMIT // PAGE_SIZE
"""The most guest pages :func:`identity_guest` maps one by one (1 GiB of 4 KiB pages)."""
BATCH_LIMIT = 256 * GIB
"""The largest guest :func:`fast_identity_tables` writes tables for (the experiments' limit)."""
COUNT_LIMIT = 100_000
"""The most processes, rounds, pages or operations one workload runs."""
PAGE_SIZES = (PAGE_SIZE, 2 * MIB, 4 * MIB, GIB)
"""Guest page sizes: 4 KiB, 2 MiB (PAE, 4- and 5-level), 4 MiB (32-bit), 1 GiB."""


class WorkloadError(KvmmuError, ValueError):
    """Workload arguments that do not make a valid guest; the message says what to change."""


def _check_size(name: str, value: object, limit: int) -> int:
    """A guest size: a positive int of whole 4 KiB pages, at most ``limit`` bytes."""
    size = check_count(name, value, minimum=1, maximum=limit, error=WorkloadError)
    if size % PAGE_SIZE:
        raise WorkloadError(f"{name}={size:#x} must be a multiple of 4 KiB")
    return size


def _check_mode(mode: object) -> PagingMode:
    return check_instance("mode", mode, PagingMode, "a PagingMode", WorkloadError)


def _check_page_size(page_size: object, mode: PagingMode) -> int:
    """One of the page sizes ``mode`` maps with (4 KiB always)."""
    spec = mode.spec
    sizes = [spec.level_size(lv) for lv in range(1, spec.root_level + 1)]
    return check_choice(
        "page_size", page_size, [s for s in PAGE_SIZES if s in sizes] or [PAGE_SIZE], WorkloadError
    )


def tables_needed(size: int, mode: PagingMode, page_size: int) -> int:
    """Guest table pages an identity map of ``size`` bytes with ``page_size`` pages needs.

    No kernel counterpart (the guest's ``pgd_alloc`` / ``pte_alloc`` count).
    """
    check_count("size", size, maximum=BATCH_LIMIT, error=WorkloadError)
    _check_page_size(page_size, _check_mode(mode))
    spec = mode.spec
    if spec.root_level == 0:
        return 0
    if mode is PagingMode.PAE:  # a PDPT and four page directories, allocated up front
        return 5 + (-(-size // (2 << 20)) if page_size == PAGE_SIZE else 0)
    leaf_level = next(
        lv for lv in range(1, spec.root_level + 1) if spec.level_size(lv) == page_size
    )
    total = 1
    for lv in range(leaf_level, spec.root_level):
        per_table = spec.level_size(lv) << spec.index_bits
        total += -(-size // per_table)
    return total


@dataclass(slots=True)
class TouchResult:
    """What :func:`full_touch` built: the VM, the vCPU, the guest tables, and the counts."""

    vm: Vm
    vcpu: Vcpu
    tables: GuestPageTables | None
    accesses: int
    stats: pd.Series = field(repr=False)

    @property
    def faults(self) -> int:
        """Shadow (or TDP) page faults the MMU fixed."""
        return int(self.stats["pf_fixed"])


def fast_identity_tables(vm: Vm, size: int, page_size: int) -> Vcpu:
    """A 4-level identity map of ``size`` bytes written with numpy, and a vCPU using it.

    No kernel counterpart. The same entries :func:`identity_guest` writes through
    :class:`~kvmmu.hw.guest.GuestPageTables` (tables linked present, writable, user; leaves
    present and writable, clean), laid out at the top of memory, but page-at-a-time, so a
    64 GiB guest takes a fraction of a second. For sizes ``GuestPageTables.map`` is too slow for.
    """
    check_instance("vm", vm, Vm, "a Vm", WorkloadError)
    _check_size("size", size, BATCH_LIMIT)
    check_choice("page_size", page_size, (PAGE_SIZE, 2 * MIB), WorkloadError)
    end = max((slot.end_gfn for slot in vm.memory.slots), default=0) << PAGE_SHIFT
    if size > end:
        raise WorkloadError(f"size={size:#x} is larger than the Vm's memory ({end:#x})")
    if size % (2 << 20):
        raise WorkloadError(f"size={size:#x} must be a multiple of 2 MiB")
    table_bits = int(Pte.PRESENT | Pte.WRITABLE | Pte.USER)
    leaf_bits = int(Pte.PRESENT | Pte.WRITABLE)
    n_pd = -(-size // (1 << 30))
    n_pt = size >> 21 if page_size == PAGE_SIZE else 0
    npages = size >> PAGE_SHIFT
    first = npages - (2 + n_pd + n_pt)
    root, pdpt, pd0, pt0 = first, first + 1, first + 2, first + 2 + n_pd
    memory = vm.memory
    memory.page(root)[0] = (pdpt << PAGE_SHIFT) | table_bits
    top = memory.page(pdpt)
    top[:n_pd] = (np.arange(pd0, pd0 + n_pd, dtype=np.uint64) << np.uint64(PAGE_SHIFT)) | (
        np.uint64(table_bits)
    )
    n_pde = size >> 21
    if page_size == PAGE_SIZE:
        pde = (np.arange(pt0, pt0 + n_pt, dtype=np.uint64) << np.uint64(PAGE_SHIFT)) | np.uint64(
            table_bits
        )
    else:
        pde = (np.arange(n_pde, dtype=np.uint64) << np.uint64(21)) | np.uint64(
            leaf_bits | int(Pte.PAGE_SIZE)
        )
    pde = np.concatenate([pde, np.zeros(n_pd * 512 - n_pde, dtype=np.uint64)]).reshape(n_pd, 512)
    _fill_tables(memory, pd0, pde)
    row = (np.arange(512, dtype=np.uint64) << np.uint64(PAGE_SHIFT)) | np.uint64(leaf_bits)
    for k in range(0, n_pt, _FILL_CHUNK):  # page table k maps the 2 MiB at k << 21
        runs = np.arange(k, min(k + _FILL_CHUNK, n_pt), dtype=np.uint64) << np.uint64(21)
        _fill_tables(memory, pt0 + k, runs[:, None] + row[None, :])
    cpu = cpu_for_mode(PagingMode.LEVEL4)
    loaded = load_cr3(memory, cpu, root << PAGE_SHIFT)
    assert not isinstance(loaded, GeneralProtection)
    return vm.create_vcpu(loaded)


_FILL_CHUNK = 1024  # table pages written per numpy block (4 MiB)


def _fill_tables(memory: GuestMemory, first_gfn: int, rows: npt.NDArray[np.uint64]) -> None:
    """Write ``rows`` (one 512-entry table per row) to the frames from ``first_gfn`` on.

    The frames are resolved once for the run when one memslot holds it all, and each page is
    one copy of its 4 KiB: what ``memory.page(gfn)[:] = row`` stores, without a slot lookup
    and a numpy view per page (32768 of them for the page tables of a 64 GiB guest).
    """
    slot = memory.slots.find(first_gfn)
    count = len(rows)
    if slot is None or first_gfn + count > slot.end_gfn:
        for k in range(count):
            memory.page(first_gfn + k)[:] = rows[k]
        return
    pfn = slot.gfn_to_pfn(first_gfn)
    data = np.ascontiguousarray(rows, dtype=np.uint64).data.cast("B")
    raw = memory.host.raw
    for k in range(count):
        raw(pfn + k)[:] = data[k * PAGE_SIZE : (k + 1) * PAGE_SIZE]


def identity_guest(
    size: int,
    mode: PagingMode = PagingMode.LEVEL4,
    *,
    tdp: bool = False,
    page_size: int = PAGE_SIZE,
    huge_pages: bool = False,
    allow_unsync: bool = True,
    n_max_mmu_pages: int | None = None,
    writable: bool = True,
    dirty: bool = False,
) -> tuple[Vm, Vcpu, GuestPageTables | None]:
    """A VM of ``size`` bytes whose guest maps all of it at gva = gpa, and its vCPU.

    No kernel counterpart. The table pages sit at the top of memory (as a kernel's early page
    tables often do), so the guest maps them too. ``huge_pages`` says whether the host backs
    memory with huge pages (so sptes may be large); ``dirty`` presets the guest's D bits.
    """
    _check_size("size", size, BATCH_LIMIT)
    _check_mode(mode)
    for name, flag in (
        ("tdp", tdp),
        ("huge_pages", huge_pages),
        ("allow_unsync", allow_unsync),
        ("writable", writable),
        ("dirty", dirty),
    ):
        check_bool(name, flag, WorkloadError)
    if mode is not PagingMode.NONE:
        _check_page_size(page_size, mode)
        if size // page_size > MAP_LIMIT:
            raise WorkloadError(
                f"size={size:#x} maps {size // page_size} pages of {page_size:#x} bytes, above "
                f"the limit of {MAP_LIMIT}; use larger pages or fast_identity_tables"
            )
    check_optional_count("n_max_mmu_pages", n_max_mmu_pages, error=WorkloadError)
    if mode.spec.va_bits == 32 and size > 1 << 32:
        raise WorkloadError(f"a {mode.value} guest reaches 4 GiB at most; size={size:#x}")
    if mode is not PagingMode.NONE and size % page_size:
        raise WorkloadError(f"size={size:#x} must be a multiple of page_size={page_size:#x}")
    budget = n_max_mmu_pages
    if budget is None:
        budget = max(64, 2 * (size >> 21) + 64)
    vm = Vm(
        size,
        tdp=tdp,
        huge_pages=huge_pages,
        allow_unsync=allow_unsync,
        n_max_mmu_pages=budget,
    )
    if mode is PagingMode.NONE:
        return vm, vm.create_vcpu(), None
    npages = size >> PAGE_SHIFT
    ntables = tables_needed(size, mode, page_size) + 2
    pt = GuestPageTables(vm.memory, mode, table_gfns=range(npages - ntables, npages))
    pt.map(0, 0, page_size, length=size, writable=writable, dirty=dirty)
    return vm, vm.create_vcpu(pt.cpu()), pt


def full_touch(
    size: int,
    mode: PagingMode = PagingMode.LEVEL4,
    tdp: bool = False,
    page_size: int = PAGE_SIZE,
    *,
    huge_pages: bool = False,
    kind: Access = Access.READ,
) -> TouchResult:
    """A guest that maps all of its memory (gva = gpa) and touches every 4 KiB page once.

    No kernel counterpart. Each touch is ``vcpu.access(gpa, kind)`` at CPL 0, in address
    order; every fault on the way is the MMU's fault path. Under TDP with guest pages larger
    than 4 KiB the vCPU's TLB is flushed before each touch: kvmmu's TLB keeps a translation at
    the guest's page size, so without the flush one TDP fault would stand for a whole guest
    large page (real hardware caches the smaller of the two sizes).
    """
    check_instance("kind", kind, Access, "an Access (Access.READ, WRITE or FETCH)", WorkloadError)
    _check_size("size", size, FAULT_PATH_LIMIT)  # touched page by page
    vm, vcpu, pt = identity_guest(size, mode, tdp=tdp, page_size=page_size, huge_pages=huge_pages)
    flush = tdp and page_size > PAGE_SIZE
    for gpa in range(0, size, PAGE_SIZE):
        if flush:
            vcpu.tlb.flush()
        out = vcpu.access(gpa, kind)
        if not isinstance(out, int):
            raise WorkloadError(f"touching {gpa:#x} faulted in the guest: {out!r}")
    return TouchResult(vm, vcpu, pt, size >> PAGE_SHIFT, vm.stats.as_series())


@dataclass(slots=True)
class ProcessesResult:
    """What :func:`many_processes` ran: the VM, the vCPU, one table set per process, counters."""

    vm: Vm
    vcpu: Vcpu
    tables: list[GuestPageTables]
    switches: int
    stats: pd.Series = field(repr=False)
    pages_after_round: list[int] = field(default_factory=list)


def many_processes(
    n: int,
    pages_each: int,
    *,
    kernel_size: int = 4 << 20,
    memory_size: int = 32 << 20,
    rounds: int = 2,
    tdp: bool = False,
    root_cache: bool = True,
    seed: int = 0,
) -> ProcessesResult:
    """``n`` processes, each with ``pages_each`` user pages, sharing the kernel's mappings.

    No kernel counterpart (the guest's scheduler). Process 0's tables map the kernel's direct
    map of ``kernel_size`` bytes at ``KERNEL_BASE`` with 2 MiB pages; every other process
    copies its top-level kernel entry, as Linux's ``pgd_alloc`` copies the kernel half, so all
    share the kernel's lower tables. Each round switches to every process in turn
    (``set_cr3``) and touches its user pages (CPL 3) and a few kernel pages (CPL 0).
    ``root_cache=False`` drops the cached previous roots after each switch (see
    ``benchmarks/bench_mmu.py``); the pages stay in the hash, only the fast switch is lost.
    """
    for name, count in (("n", n), ("pages_each", pages_each), ("rounds", rounds)):
        check_count(name, count, minimum=1, maximum=COUNT_LIMIT, error=WorkloadError)
    _check_size("memory_size", memory_size, FAULT_PATH_LIMIT)
    _check_size("kernel_size", kernel_size, memory_size)
    if kernel_size % (2 * MIB):
        raise WorkloadError(f"kernel_size={kernel_size:#x} must be a multiple of 2 MiB")
    check_bool("tdp", tdp, WorkloadError)
    check_bool("root_cache", root_cache, WorkloadError)
    check_count("seed", seed, error=WorkloadError)
    rng = np.random.default_rng(seed)
    vm = Vm(memory_size, tdp=tdp, huge_pages=False)
    npages = memory_size >> PAGE_SHIFT
    per = 8 + pages_each // 512 * 2
    top = npages - per * n
    if top - (kernel_size >> PAGE_SHIFT) < max(pages_each, 1):
        raise WorkloadError(
            f"memory_size={memory_size:#x} is too small for {n} processes; make it larger"
        )
    tables: list[GuestPageTables] = []
    for i in range(n):
        pt = GuestPageTables(
            vm.memory, PagingMode.LEVEL4, table_gfns=range(top + i * per, top + (i + 1) * per)
        )
        if i == 0:
            pt.map(KERNEL_BASE, 0, 2 << 20, length=kernel_size)
        else:
            pt.set_entry(KERNEL_BASE, 4, tables[0].entry(KERNEL_BASE, 4))
        frames = rng.choice(
            np.arange(kernel_size >> PAGE_SHIFT, top), size=pages_each, replace=False
        )
        for j, frame in enumerate(sorted(int(f) for f in frames)):
            pt.map(USER_BASE + j * PAGE_SIZE, frame << PAGE_SHIFT, user=True)
        tables.append(pt)
    vcpu = vm.create_vcpu(tables[0].cpu())
    kernel_pages = rng.integers(0, kernel_size >> PAGE_SHIFT, size=4)
    switches = 0
    pages_after: list[int] = []
    for _ in range(rounds):
        for pt in tables:
            vcpu.set_cr3(pt.cr3)
            switches += 1
            if not root_cache:
                drop_prev_roots(vcpu)
            for j in range(pages_each):
                _expect_ok(vcpu.access(USER_BASE + j * PAGE_SIZE, Access.READ, cpl=3))
            for k in kernel_pages.tolist():
                _expect_ok(vcpu.access(KERNEL_BASE + (k << PAGE_SHIFT), Access.READ, cpl=0))
        pages_after.append(vm.mmu.n_used_mmu_pages)
    return ProcessesResult(vm, vcpu, tables, switches, vm.stats.as_series(), pages_after)


def drop_prev_roots(vcpu: Vcpu) -> None:
    """Forget the vCPU's cached previous roots, releasing each (a root cache of size 0).

    No kernel counterpart: KVM always has ``KVM_MMU_NUM_PREV_ROOTS`` slots. Each cached root
    gets ``put_root`` so its ``root_count`` stays right; the page itself stays in the hash.
    """
    check_instance("vcpu", vcpu, Vcpu, "a Vcpu", WorkloadError)
    for sp in vcpu.prev_roots:
        vcpu.mmu.put_root(sp)
    vcpu.prev_roots = []


def _expect_ok(out: object) -> None:
    if not isinstance(out, int):
        raise WorkloadError(f"a workload access faulted in the guest: {out!r}")


@dataclass(slots=True)
class PteWriterResult:
    """What :func:`pte_writer` ran: the VM, tables, op counts, and exits split by cause."""

    vm: Vm
    vcpu: Vcpu
    tables: GuestPageTables
    ops: int
    pte_writes: int
    exits_pte_writes: int  # faults and emulations caused by the PTE stores themselves
    exits_invlpg: int  # INVLPG intercepts (shadow paging only)
    exits_other: int  # faults on ordinary data accesses
    stats: pd.Series = field(repr=False)

    @property
    def exits(self) -> int:
        """All exits counted."""
        return self.exits_pte_writes + self.exits_invlpg + self.exits_other


def _exit_count(vm: Vm) -> int:
    s = vm.stats
    return s.pf_fixed + s.pf_emulate + s.pf_guest + s.mmio_exits


def pte_writer(
    rate: float,
    *,
    ops: int = 400,
    user_pages: int = 32,
    memory_size: int = 16 << 20,
    tdp: bool = False,
    allow_unsync: bool = True,
    seed: int = 0,
) -> PteWriterResult:
    """A guest that rewrites its own PTEs: a fraction ``rate`` of ``ops`` operations are PTE
    stores (remap a user page to another frame, then INVLPG), the rest user reads and writes.

    No kernel counterpart (the guest's ``set_pte`` + ``flush_tlb_one_user``). The kernel writes
    its tables through its direct map (``KERNEL_BASE``), so under shadow paging each store hits
    a write-protected page: it is emulated (``kvm_mmu_track_write``) unless the leaf table went
    unsync. Under TDP nothing exits. Exits are counted by cause; INVLPG counts as one exit
    under shadow paging (KVM intercepts it) and none under TDP.
    """
    check_real("rate", rate, minimum=0, maximum=1, error=WorkloadError)
    check_count("ops", ops, minimum=1, maximum=COUNT_LIMIT, error=WorkloadError)
    check_count("user_pages", user_pages, minimum=1, maximum=COUNT_LIMIT, error=WorkloadError)
    _check_size("memory_size", memory_size, FAULT_PATH_LIMIT)
    if memory_size % (2 * MIB) or memory_size < 4 * MIB:
        raise WorkloadError(
            f"memory_size={memory_size:#x} must be a multiple of 2 MiB, 4 MiB or more"
        )
    if 2 * user_pages > (memory_size >> PAGE_SHIFT) - 16 - 256:
        raise WorkloadError(
            f"memory_size={memory_size:#x} has too few frames for user_pages={user_pages}; "
            "make it larger"
        )
    check_bool("tdp", tdp, WorkloadError)
    check_bool("allow_unsync", allow_unsync, WorkloadError)
    check_count("seed", seed, error=WorkloadError)
    rng = np.random.default_rng(seed)
    vm = Vm(memory_size, tdp=tdp, huge_pages=False, allow_unsync=allow_unsync)
    npages = memory_size >> PAGE_SHIFT
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4, table_gfns=range(npages - 16, npages))
    pt.map(KERNEL_BASE, 0, 2 << 20, length=memory_size)
    frames = rng.choice(np.arange(256, npages - 16), size=2 * user_pages, replace=False)
    for j in range(user_pages):
        pt.map(USER_BASE + j * PAGE_SIZE, int(frames[j]) << PAGE_SHIFT, user=True)
    vcpu = vm.create_vcpu(pt.cpu())
    for j in range(user_pages):  # warm up: every page mapped once, as a running program has
        _expect_ok(vcpu.access(USER_BASE + j * PAGE_SIZE, Access.WRITE, cpl=3))
    for gfn in pt.tables:  # and the kernel has read its tables through the direct map
        _expect_ok(vcpu.access(KERNEL_BASE + (gfn << PAGE_SHIFT), Access.READ))
    base = vm.stats.as_series()
    pte_writes = exits_pte = exits_invlpg = exits_other = 0
    for _ in range(ops):
        j = int(rng.integers(user_pages))
        gva = USER_BASE + j * PAGE_SIZE
        if rng.random() < rate:
            step = walk(vm.memory, vcpu.cpu, gva, set_ad=False)
            assert isinstance(step, WalkResult)
            pte_gpa = step.trace[-1].entry_gpa
            frame = int(frames[int(rng.integers(2 * user_pages))])
            new = (pt.entry(gva, 1) & ~(((1 << 40) - 1) << PAGE_SHIFT)) | (frame << PAGE_SHIFT)
            before = _exit_count(vm)
            fault = vcpu.write(KERNEL_BASE + pte_gpa, new, 8, cpl=0)
            if fault is not None:
                raise WorkloadError(f"the guest's PTE store faulted: {fault!r}")
            exits_pte += _exit_count(vm) - before
            vcpu.invlpg(gva)
            exits_invlpg += 0 if tdp else 1
            pte_writes += 1
        else:
            before = _exit_count(vm)
            kind = Access.WRITE if rng.random() < 0.5 else Access.READ
            _expect_ok(vcpu.access(gva, kind, cpl=3))
            exits_other += _exit_count(vm) - before
    stats = vm.stats.as_series() - base
    return PteWriterResult(
        vm, vcpu, pt, ops, pte_writes, exits_pte, exits_invlpg, exits_other, stats
    )
