"""Batch paths: build at once, with numpy, what millions of page faults would build.

No kernel counterpart: KVM builds shadow pages one fault at a time (``direct_map``,
``FNAME(fetch)``), and so does kvmmu's fault path. A guest that touches all of a 64 GiB memory
with 4 KiB pages takes 16M faults, far too many for Python. These functions compute the end
state of such a run directly:

* :func:`plan_direct` / :func:`build_direct`: a TDP guest, or a shadow-paging guest with paging
  off, that has touched every gfn of every memslot (``direct_page_fault`` for each);
* :func:`plan_shadow` / :func:`build_shadow`: a 4- or 5-level shadow-paging guest that has read,
  at CPL 0, every page its own tables map (``FNAME(page_fault)`` for each).

A *plan* is numpy arrays: the shadow pages per level (gfn, role access, direct), the links
between them and the leaf sptes. :func:`build_direct` and :func:`build_shadow` register real
:class:`~kvmmu.kvm.page.MmuPage` objects exactly as the fault path does (``get_shadow_page``, so the
hash, the active list, ``by_pfn``, write tracking; ``link_shadow_page``; leaf sptes as
``make_spte`` makes them, ``set_gfn`` and ``rmap_add``). :meth:`Plan.summary` only counts, which
is what a 64 GiB experiment needs: registering 16M rmap entries would not fit in seconds.

The decisions are the fault path's: a large leaf where ``Mmu.max_mapping_level`` allows it
(memslot bounds, host alignment, dirty logging, gfns shadowed by the guest's tables), the same
roles, the same rights (``FNAME(protect_clean_gpte)``: a read of a clean guest PTE leaves the
spte read-only). Cases where the fault path's result depends on the order of the faults are
refused with :class:`BatchError` rather than guessed: a writable spte for a gfn that holds a
guest page table (it would go unsync or be write-protected, depending on which fault came
first), memory that no memslot backs (MMIO sptes), and an MMU that is not fresh. The one count
that depends on the order, ``pf_fixed`` (and ``pf_taken``) under KVM's spte prefetch, is that of
a guest touching its pages in ascending address order (:func:`ascending_faults`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pandas as pd

from kvmmu.errors import KvmmuError, check_bool, check_choice, check_count, check_instance
from kvmmu.hw.memory import GuestMemory, Memslot
from kvmmu.hw.walk import reserved_mask
from kvmmu.hw.x86 import PAGE_SHIFT, PAGE_SIZE, Acc, Cr4, PagingMode, Pte
from kvmmu.kvm import spte as S
from kvmmu.kvm.accounting import memory_from_counts
from kvmmu.kvm.fault import get_shadow_page
from kvmmu.kvm.mmu import Mmu
from kvmmu.kvm.page import MmuPage
from kvmmu.kvm.role import MmuPageRole
from kvmmu.kvm.vcpu import Vcpu, Vm

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
Bools = npt.NDArray[np.bool_]

_ACC_ALL = int(Acc.ALL)
_ADDR = ((1 << 52) - 1) & ~0xFFF


class BatchError(KvmmuError):
    """A guest or MMU state that the batch path cannot reproduce exactly; the message says why."""


def _check_mmu_source(value: object) -> Mmu:
    """The MMU of a Vcpu or a Vm, or an Mmu itself (``vcpu_or_mmu``)."""
    if isinstance(value, Vcpu | Vm):
        return value.mmu
    return check_instance("vcpu_or_mmu", value, Mmu, "a Vcpu, a Vm or an Mmu")


def _check_vcpu(vcpu: object) -> Vcpu:
    return check_instance("vcpu", vcpu, Vcpu, "a Vcpu (vm.create_vcpu(...))", BatchError)


def _span(level: int) -> int:
    """Gfns mapped by one spte at ``level``."""
    return 1 << (9 * (level - 1))


@dataclass(slots=True)
class _Nodes:
    """The shadow pages of one level, as arrays that grow in chunks."""

    gfn: list[I64] = field(default_factory=list)
    access: list[I64] = field(default_factory=list)
    direct: list[Bools] = field(default_factory=list)
    count: int = 0

    def add(self, gfn: I64, access: I64, direct: bool) -> I64:
        ids = np.arange(self.count, self.count + len(gfn), dtype=np.int64)
        self.gfn.append(gfn.astype(np.int64))
        self.access.append(access.astype(np.int64))
        self.direct.append(np.full(len(gfn), direct))
        self.count += len(gfn)
        return ids

    def arrays(self) -> tuple[I64, I64, Bools]:
        if not self.count:
            e = np.zeros(0, dtype=np.int64)
            return e, e, np.zeros(0, dtype=bool)
        return (
            np.concatenate(self.gfn),
            np.concatenate(self.access),
            np.concatenate(self.direct),
        )


@dataclass(slots=True)
class _Links:
    """Non-leaf sptes: parent page (one level up) and index -> child page."""

    parent: list[I64] = field(default_factory=list)
    index: list[I64] = field(default_factory=list)
    child: list[I64] = field(default_factory=list)

    def add(self, parent: I64, index: I64, child: I64) -> None:
        self.parent.append(parent)
        self.index.append(index)
        self.child.append(child)

    def arrays(self) -> tuple[I64, I64, I64]:
        if not self.parent:
            e = np.zeros(0, dtype=np.int64)
            return e, e, e
        return (
            np.concatenate(self.parent),
            np.concatenate(self.index),
            np.concatenate(self.child),
        )


@dataclass(slots=True)
class _Leaves:
    """Leaf sptes of one level: page, index, gfn mapped, rights, global bit.

    At level 1 of a direct plan in summary mode only counts are kept (``n``).
    """

    node: list[I64] = field(default_factory=list)
    index: list[I64] = field(default_factory=list)
    gfn: list[I64] = field(default_factory=list)
    access: list[I64] = field(default_factory=list)
    glob: list[Bools] = field(default_factory=list)
    n: int = 0

    def add(self, node: I64, index: I64, gfn: I64, access: I64, glob: Bools) -> None:
        self.node.append(node)
        self.index.append(index)
        self.gfn.append(gfn)
        self.access.append(access)
        self.glob.append(glob)
        self.n += len(node)

    def arrays(self) -> tuple[I64, I64, I64, I64, Bools]:
        if not self.node:
            e = np.zeros(0, dtype=np.int64)
            return e, e, e, e, np.zeros(0, dtype=bool)
        return (
            np.concatenate(self.node),
            np.concatenate(self.index),
            np.concatenate(self.gfn),
            np.concatenate(self.access),
            np.concatenate(self.glob),
        )


@dataclass(frozen=True, slots=True)
class BatchSummary:
    """Counts of what a batch plan builds: pages per (level, direct) and leaf sptes per level.

    No kernel counterpart. ``pages`` includes the roots the vCPU already had.
    """

    pages: dict[tuple[int, bool], int]
    leaves: dict[int, int]

    @property
    def n_direct(self) -> int:
        """Direct shadow pages (no gfns array since 2010)."""
        return sum(n for (_, direct), n in self.pages.items() if direct)

    @property
    def n_indirect(self) -> int:
        """Indirect shadow pages (each shadows one guest table)."""
        return sum(n for (_, direct), n in self.pages.items() if not direct)

    @property
    def n_pages(self) -> int:
        """All shadow pages."""
        return self.n_direct + self.n_indirect

    def frame(self) -> pd.DataFrame:
        """One row per level: direct pages, indirect pages, leaf sptes.

        No kernel counterpart.
        """
        levels = sorted({lv for lv, _ in self.pages} | set(self.leaves), reverse=True)
        rows = [
            {
                "level": lv,
                "direct pages": self.pages.get((lv, True), 0),
                "indirect pages": self.pages.get((lv, False), 0),
                "leaf sptes": self.leaves.get(lv, 0),
            }
            for lv in levels
        ]
        return pd.DataFrame(rows).set_index("level").astype("int64")

    def memory(self) -> pd.DataFrame:
        """Kernel memory by era for these pages (:func:`kvmmu.kvm.accounting.memory_from_counts`).

        No kernel counterpart.
        """
        return memory_from_counts(self.n_direct, self.n_indirect)


def summary_of_mmu(vcpu_or_mmu: object) -> BatchSummary:
    """The same counts, read from a live MMU (after faults or a build). No kernel counterpart."""
    mmu = _check_mmu_source(vcpu_or_mmu)
    pages: dict[tuple[int, bool], int] = {}
    leaves: dict[int, int] = {}
    for sp in mmu.by_pfn.values():
        key = (sp.level, sp.direct)
        pages[key] = pages.get(key, 0) + 1
        for i in sp.present_indices():
            spte = int(sp.spt[i])
            if S.is_shadow_present(spte) and S.is_last(spte, sp.level):
                leaves[sp.level] = leaves.get(sp.level, 0) + 1
    return BatchSummary(pages, leaves)


class Plan:
    """What a batch run builds: shadow pages per level, links, leaves; see the module docstring.

    No kernel counterpart. Build one with :func:`plan_direct` or :func:`plan_shadow`.
    """

    def __init__(self, vcpu: Vcpu, roots: list[MmuPage], *, detail: bool) -> None:
        self.vcpu = vcpu
        self.roots = roots
        self.detail = detail
        self.top = max(sp.level for sp in roots)
        self.nodes: dict[int, _Nodes] = {lv: _Nodes() for lv in range(1, self.top + 1)}
        self.links: dict[int, _Links] = {lv: _Links() for lv in range(1, self.top + 1)}
        self.leaves: dict[int, _Leaves] = {lv: _Leaves() for lv in range(1, self.top + 1)}
        self.keep: dict[int, Bools] = {}
        # indirect level-1 page id -> its guest entries' accessed bits before the run
        self.accessed_before: dict[int, Bools] = {}
        for sp in roots:
            one = np.array([sp.gfn], dtype=np.int64)
            self.nodes[sp.level].add(one, np.array([sp.role.access]), sp.direct)
        self.root_ids = {id(sp): i for i, sp in enumerate(roots)}

    def kept(self, level: int) -> Bools:
        """Which pages of ``level`` exist in the end (all, unless pruned)."""
        check_count("level", level, minimum=1, maximum=self.top, error=BatchError)
        count = self.nodes[level].count
        keep = self.keep.get(level)
        if keep is None:
            return np.ones(count, dtype=bool)
        # pages planned after pruning (direct pages below guest leaves) all stay
        return np.concatenate([keep, np.ones(count - len(keep), dtype=bool)])

    def summary(self) -> BatchSummary:
        """Page and leaf counts (:class:`BatchSummary`).

        No kernel counterpart.
        """
        pages: dict[tuple[int, bool], int] = {}
        for level in range(1, self.top + 1):
            _, _, direct = self.nodes[level].arrays()
            keep = self.kept(level)
            for flag in (True, False):
                n = int(np.count_nonzero(keep & (direct == flag)))
                if n:
                    pages[(level, flag)] = n
        leaves = {lv: lf.n for lv, lf in self.leaves.items() if lf.n}
        return BatchSummary(pages, leaves)


_HUGE = 1 << 21
_GIB = 1 << 30


def identity_shadow_summary(size: int, page_size: int, host_huge_pages: bool) -> BatchSummary:
    """The counts :func:`plan_shadow` finds for the identity guest of ``size`` bytes, from its
    layout alone, without writing or reading a table.

    The guest is :func:`kvmmu.teaching.workloads.fast_identity_tables`' (4-level, gva = gpa,
    ``page_size`` 4 KiB or 2 MiB leaves, tables at the top of memory: root, one PDPT, a PD per
    GiB, then with 4 KiB pages a PT per 2 MiB), on one memslot from gfn 0, after a supervisor
    read of every page. Shadow paging gives one indirect page per guest table on a path to a
    leaf (``kvm_mmu_get_child_sp`` for each gpte), the same rights everywhere, so no table is
    shadowed twice. A 2 MiB guest page gets a 2 MiB spte if the host maps it huge and no guest
    table lies inside it (``kvm_mmu_hugepage_adjust``, ``lpage_info`` disallowed by the
    write-tracked tables); otherwise a direct page of 512 4 KiB sptes below it. The tests prove
    it equal to the batch path wherever that is cheap; a 64 GiB guest with 4 KiB pages then
    costs nothing instead of 32K tables written and read. No kernel counterpart.
    """
    check_count("size", size, minimum=_HUGE, maximum=512 * _GIB, error=BatchError)
    if size % _HUGE:
        raise BatchError(f"size must be a multiple of 2 MiB, got {size:#x}")
    check_choice("page_size", page_size, (PAGE_SIZE, _HUGE), BatchError)
    check_bool("host_huge_pages", host_huge_pages, BatchError)
    n_huge = size // _HUGE  # 2 MiB regions, one guest PDE each
    n_pd = -(-size // _GIB)
    pages = {(4, False): 1, (3, False): 1, (2, False): n_pd}
    if page_size == PAGE_SIZE:
        pages[(1, False)] = n_huge  # one guest PT per 2 MiB
        return BatchSummary(pages, {1: size >> PAGE_SHIFT})
    n_tables = 2 + n_pd  # root, PDPT and the PDs, in the last frames of memory
    small = n_huge if not host_huge_pages else -(-n_tables // 512)  # regions split to 4 KiB
    pages[(1, True)] = small
    leaves = {1: small * 512}
    if n_huge > small:
        leaves[2] = n_huge - small
    return BatchSummary(pages, leaves)


# ------------------------------------------------------------------------------------------
# large pages: Mmu.max_mapping_level, vectorised
# ------------------------------------------------------------------------------------------


class _Slots:
    """The memslots as sorted arrays, for vectorised ``gfn_to_memslot``."""

    def __init__(self, slots: list[Memslot]) -> None:
        self.slots = sorted(slots, key=lambda s: s.base_gfn)
        self.base = np.array([s.base_gfn for s in self.slots], dtype=np.int64)
        self.end = np.array([s.end_gfn for s in self.slots], dtype=np.int64)
        self.host = np.array([s.host_pfn for s in self.slots], dtype=np.int64)
        self.logging = np.array([s.dirty_logging for s in self.slots], dtype=bool)
        self.readonly = np.array([s.readonly for s in self.slots], dtype=bool)

    def find(self, gfn: I64) -> I64:
        """Slot index of each gfn, -1 where no slot holds it."""
        if not len(self.slots):
            return np.full(len(gfn), -1, dtype=np.int64)
        i = np.searchsorted(self.base, gfn, side="right") - 1
        ok = (i >= 0) & (gfn < self.end[np.maximum(i, 0)])
        return np.where(ok, i, -1).astype(np.int64)

    def covered(self, base: I64, n: int) -> I64:
        """How many gfns of ``[base, base + n)`` lie in some slot, per region."""
        total = np.zeros(len(base), dtype=np.int64)
        for b, e in zip(self.base, self.end, strict=True):
            total += np.clip(np.minimum(base + n, e) - np.maximum(base, b), 0, None)
        return total


def _large_ok(
    slots: _Slots, disallowed: set[tuple[int, int]], huge: bool, level: int, base: I64
) -> Bools:
    """``max_mapping_level(...) >= level`` for regions starting at ``base`` (vectorised)."""
    if not huge or level < 2 or not len(base):
        return np.zeros(len(base), dtype=bool)
    n = _span(level)
    si = slots.find(base)
    s = np.maximum(si, 0)
    ok = (si >= 0) & (base + n <= slots.end[s]) & ~slots.logging[s]
    ok &= (slots.host[s] + (base - slots.base[s])) % n == 0
    bad = [g for lv, g in disallowed if lv == level]
    if bad:
        ok &= ~np.isin(base, np.array(bad, dtype=np.int64))
    return np.asarray(ok, dtype=bool)


# ------------------------------------------------------------------------------------------
# descending through regions: leaf here, or a direct page and 512 smaller regions
# ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Regions:
    """Regions mapped by sptes of one level: where the spte lives and what it would map."""

    level: int
    base: I64  # first gfn
    access: I64  # rights of the leaf that maps it (the role access of direct pages below)
    parent: I64  # page at ``level`` holding the spte
    index: I64  # spte index in that page
    glob: Bools


def _descend(plan: Plan, regions: _Regions, cap: int, *, shadow: bool) -> None:
    """Map ``regions`` the way ``direct_map`` / the direct half of ``FNAME(fetch)`` would."""
    mmu = plan.vcpu.mmu
    slots = _Slots(list(mmu.memory.slots))
    disallowed = {k for k, v in mmu.lpage_disallowed.items() if v} | plan_disallowed(plan)
    r = regions
    while len(r.base):
        level = r.level
        n = _span(level)
        covered = slots.covered(r.base, n)
        if shadow and np.any(covered != n):
            bad = int(r.base[np.argmax(covered != n)])
            raise BatchError(
                f"the guest maps gfn {bad:#x}.. that no memslot backs: the fault path would "
                "install MMIO sptes there, which the batch path does not model; map only memory"
            )
        live = covered > 0
        if level == 1 and not plan.detail:
            plan.leaves[1].n += int(np.count_nonzero(live))
            return
        if not np.all(live):
            r = _Regions(
                level, r.base[live], r.access[live], r.parent[live], r.index[live], r.glob[live]
            )
        if level == 1:
            _add_leaves(plan, 1, r, slots)
            return
        leaf = (
            _large_ok(slots, disallowed, mmu.huge_pages, level, r.base)
            if level <= cap
            else np.zeros(len(r.base), dtype=bool)
        )
        if np.any(leaf):
            _add_leaves(
                plan,
                level,
                _Regions(
                    level, r.base[leaf], r.access[leaf], r.parent[leaf], r.index[leaf], r.glob[leaf]
                ),
                slots,
            )
        split = ~leaf
        base, access, parent, index, glob = (
            r.base[split],
            r.access[split],
            r.parent[split],
            r.index[split],
            r.glob[split],
        )
        # one direct page per (gfn, access): the hash shares it between parents
        key = (base << 3) | access
        ukey, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        child_ids = plan.nodes[level - 1].add(base[first], access[first], True)
        plan.links[level - 1].add(parent, index, child_ids[inverse])
        ubase, uaccess, uglob = base[first], access[first], glob[first]
        step = _span(level - 1)
        if level == 2 and not plan.detail:
            # every gfn of a split 2 MiB region that a slot backs becomes one 4 KiB leaf
            inside = slots.covered(ubase, 512)
            if shadow and np.any(inside != 512):
                raise BatchError("the guest maps memory that no memslot backs; map only memory")
            plan.leaves[1].n += int(inside.sum())
            return
        j = np.arange(512, dtype=np.int64)
        r = _Regions(
            level - 1,
            (ubase[:, None] + j[None, :] * step).reshape(-1),
            np.repeat(uaccess, 512),
            np.repeat(child_ids, 512),
            np.tile(j, len(ukey)),
            np.repeat(uglob, 512),
        )


def plan_disallowed(plan: Plan) -> set[tuple[int, int]]:
    """Large-page bases that the plan's indirect pages forbid (``account_shadowed``).

    No kernel counterpart beyond ``kvm_mmu_gfn_disallow_lpage``, applied to planned pages.
    """
    check_instance("plan", plan, Plan, "a Plan (plan_direct or plan_shadow)", BatchError)
    out: set[tuple[int, int]] = set()
    for level in range(1, plan.top + 1):
        gfn, _, direct = plan.nodes[level].arrays()
        keep = plan.kept(level)
        g = gfn[keep & ~direct]
        for lv in (2, 3):
            out.update((lv, int(b)) for b in np.unique(g & ~np.int64(_span(lv) - 1)))
    return out


def _add_leaves(plan: Plan, level: int, r: _Regions, slots: _Slots) -> None:
    """Record leaf sptes for regions (or, at level 1 in summary mode, count them)."""
    if level == 1 and not plan.detail:
        plan.leaves[1].n += len(r.base)
        return
    plan.leaves[level].add(r.parent, r.index, r.base, r.access, r.glob)


# ------------------------------------------------------------------------------------------
# direct plans: TDP, or paging off
# ------------------------------------------------------------------------------------------


def _fresh_roots(vcpu: Vcpu) -> list[MmuPage]:
    vcpu.reload()
    roots = vcpu.current_roots()
    mmu = vcpu.mmu
    if len(mmu.by_pfn) != len(roots) or any(sp.present_indices().size for sp in roots):
        raise BatchError(
            "the batch path starts from a fresh MMU holding only the vCPU's roots; create a "
            "new Vm and one vCPU, then call it before any access"
        )
    return roots


def plan_direct(vcpu: Vcpu, *, max_level: int = 3, detail: bool = True) -> Plan:
    """Plan the direct pages that touching every gfn of every memslot builds.

    The end state of ``direct_page_fault`` (``direct_map``) for each gfn, for a TDP vCPU or a
    shadow-paging vCPU with paging off (then only the first 4 GiB, what its four PAE roots
    reach). ``max_level`` caps the leaf size (1: 4 KiB, 2: 2 MiB, 3: 1 GiB) below the vCPU's
    own limit; ``detail=False`` keeps only counts at level 1 (for :meth:`Plan.summary`).
    """
    _check_vcpu(vcpu)
    check_choice("max_level", max_level, (1, 2, 3), BatchError)  # 4 KiB, 2 MiB, 1 GiB
    check_bool("detail", detail, BatchError)
    if not vcpu.vm.tdp and vcpu.mode is not PagingMode.NONE:
        raise BatchError(
            f"plan_direct needs a TDP Vm or a guest with paging off, not {vcpu.mode.value}; "
            "use plan_shadow for a shadow-paging guest"
        )
    roots = _fresh_roots(vcpu)
    plan = Plan(vcpu, roots, detail=detail)
    cap = min(max_level, vcpu.max_huge_level)
    slots = list(vcpu.memory.slots)
    for root_id, root in enumerate(roots):
        level = root.level
        n = _span(level)
        if vcpu.vm.tdp:
            lo, hi = 0, 1 << (9 * level)
        else:
            lo = root.gfn
            hi = lo + (1 << 18)
        bases: list[int] = []
        for slot in slots:
            start, end = max(slot.base_gfn, lo), min(slot.end_gfn, hi)
            if start < end:
                bases.extend(range(start & ~(n - 1), end, n))
        base = np.unique(np.array(bases, dtype=np.int64))
        if not len(base):
            continue
        regions = _Regions(
            level,
            base,
            np.full(len(base), _ACC_ALL, dtype=np.int64),
            np.full(len(base), root_id, dtype=np.int64),
            (base >> (9 * (level - 1))) & 511,
            np.zeros(len(base), dtype=bool),
        )
        _descend(plan, regions, cap, shadow=False)
    return plan


def build_direct(vcpu: Vcpu, *, max_level: int = 3) -> BatchSummary:
    """Build in the MMU what touching every gfn would: :func:`plan_direct`, then register.

    No kernel counterpart (a batch ``direct_map``). Returns the counts.
    """
    plan = plan_direct(vcpu, max_level=max_level, detail=True)
    _materialize(plan)
    return plan.summary()


# ------------------------------------------------------------------------------------------
# shadow plans: read the guest's own tables
# ------------------------------------------------------------------------------------------


def plan_shadow(vcpu: Vcpu, *, detail: bool = True) -> Plan:
    """Plan the shadow pages that a supervisor read of every guest-mapped page builds.

    The end state of ``FNAME(page_fault)`` for each 4 KiB page the guest's 4- or 5-level
    tables map: one indirect page per (guest table, inherited rights) on a path to a present
    leaf, direct pages below guest large pages that the host cannot map as large, and leaf
    sptes with the guest's rights (read-only while the guest PTE is clean). The guest's
    accessed bits are set on every entry those walks use, as the walker would.
    ``detail=False`` keeps only counts of 4 KiB leaves (for :meth:`Plan.summary`).
    """
    _check_vcpu(vcpu)
    check_bool("detail", detail, BatchError)
    if vcpu.vm.tdp or vcpu.mode not in (PagingMode.LEVEL4, PagingMode.LEVEL5):
        raise BatchError(
            f"plan_shadow needs a shadow-paging guest in 4- or 5-level mode, not "
            f"{'TDP' if vcpu.vm.tdp else vcpu.mode.value}; use plan_direct for TDP or paging off"
        )
    cpu = vcpu.cpu
    if cpu.cr4 & Cr4.SMAP:
        raise BatchError("CR4.SMAP is on: supervisor reads of user pages could fault; clear it")
    roots = _fresh_roots(vcpu)
    root = roots[0]
    plan = Plan(vcpu, roots, detail=detail)
    memory = vcpu.memory
    slots = _Slots(list(memory.slots))
    nx = vcpu.nx_active
    pge = vcpu.pge
    top = root.level
    large_levels = {2, 3} if cpu.gbpages else {2}
    frontier_gfn = np.array([root.gfn], dtype=np.int64)
    frontier_acc = np.array([root.role.access], dtype=np.int64)
    walked: dict[int, _Walked] = {}
    small_writable: list[I64] = []
    level1_ids = np.zeros(0, dtype=np.int64)
    for level in range(top, 0, -1):
        if level == 1 and not detail:
            walked[1] = _walk_small_leaves(plan, memory, slots, frontier_gfn, frontier_acc)
            small_writable.append(walked[1].link_parent)  # see _walk_small_leaves
            walked[1].link_parent = np.zeros(0, dtype=np.int64)
            break
        views = _table_views(memory, slots, frontier_gfn)
        e = np.stack(views) if views else np.zeros((0, 512), dtype=np.uint64)
        octets = e.view(np.uint8).reshape(len(e), 512, 8)
        lo, hi = octets[:, :, 0], octets[:, :, 7]  # flags P W U A D PS; XD in bit 7 of hi
        present = (lo & 1).astype(bool)
        ps = (lo & 0x80).astype(bool)
        rs_leaf, rs_table = reserved_mask(cpu, level, True), reserved_mask(cpu, level, False)
        if len(e) and int(np.bitwise_or.reduce((e & np.uint64(rs_leaf | rs_table)).ravel())):
            rs = np.where(ps, np.uint64(rs_leaf), np.uint64(rs_table))
            if np.any(present & ((e & rs) != 0)):
                raise BatchError(
                    f"a level-{level} guest entry has reserved bits set; the walk would fault "
                    "with PFERR.RSVD, which the batch path does not model"
                )
        entry_acc = (lo & 6) | (((hi >> 7) ^ 1) if nx else np.uint8(1))
        acc = np.asarray(frontier_acc.astype(np.uint8)[:, None] & entry_acc, dtype=np.uint8)
        leaf = present & ((level == 1) | (ps & (level in large_levels)))
        w = _Walked(frontier_gfn, e, leaf, acc, views)
        walked[level] = w
        if level == 1:
            # FNAME(pte_prefetch) reads the guest's accessed bits as they were before the run
            for row, node in enumerate(level1_ids.tolist()):
                plan.accessed_before[node] = (lo[row] & 0x20) != 0
            break
        p_i, c_idx = np.nonzero(present & ~leaf)
        child_gfn = ((e[p_i, c_idx] & np.uint64(_ADDR)) >> np.uint64(PAGE_SHIFT)).astype(np.int64)
        child_acc = acc[p_i, c_idx].astype(np.int64)
        in_mem = slots.find(child_gfn) >= 0
        p_i, c_idx = p_i[in_mem], c_idx[in_mem]
        child_gfn, child_acc = child_gfn[in_mem], child_acc[in_mem]
        key = (child_gfn << 3) | child_acc
        _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        ids = plan.nodes[level - 1].add(child_gfn[first], child_acc[first], False)
        level1_ids = ids
        w.link_parent, w.link_index, w.link_child = p_i.astype(np.int64), c_idx, ids[inverse]
        plan.links[level - 1].add(w.link_parent, c_idx.astype(np.int64), w.link_child)
        frontier_gfn, frontier_acc = child_gfn[first], child_acc[first]
    # prune tables with no present leaf below them: no successful walk reaches them
    keep: dict[int, Bools] = {}
    for level in range(1, top + 1):
        w = walked.get(level, _Walked.empty())
        k = w.rows_with_leaf()
        if level - 1 in keep and len(w.link_child):
            ok = keep[level - 1][w.link_child]
            k[w.link_parent[ok]] = True
            w.link_ok = ok
        keep[level] = k
    keep[top][:] = True
    plan.keep = keep
    tables = np.unique(np.concatenate([w.gfn[keep[lv]] for lv, w in walked.items()]))
    if small_writable:
        g = np.concatenate(small_writable)
        _check_writable(tables, g, 1, np.full(len(g), int(Acc.WRITE), dtype=np.int64))
    for level in range(top, 0, -1):
        w = walked[level]
        if w.summarized is not None:
            continue
        _set_accessed_bits(memory, w)
        node_i, idx = np.nonzero(w.leaf)
        if not len(node_i):
            continue
        size = _span(level)
        pte = w.e[node_i, idx]
        gfn = ((pte & np.uint64(_ADDR)) >> np.uint64(PAGE_SHIFT)).astype(np.int64)
        gfn &= ~np.int64(size - 1)
        dirty = (pte & np.uint64(Pte.DIRTY)) != 0
        raw_acc: I64 = w.acc[node_i, idx].astype(np.int64)
        leaf_acc: I64 = np.where(dirty, raw_acc, raw_acc & ~int(Acc.WRITE)).astype(np.int64)
        # FNAME(protect_clean_gpte): a clean guest PTE gives a read-only spte until written
        _check_writable(tables, gfn, size, leaf_acc)
        glob = ((pte & np.uint64(Pte.GLOBAL)) != 0) & pge
        cap = min(level, vcpu.max_huge_level)
        regions = _Regions(
            level, gfn, leaf_acc, node_i.astype(np.int64), idx.astype(np.int64), glob
        )
        _descend(plan, regions, cap, shadow=True)
    return plan


@dataclass(slots=True)
class _Walked:
    """One level of the guest tables as the batch walk read it."""

    gfn: I64  # table gfn per page of this level
    e: U64  # entries, one row per table
    leaf: Bools  # entries that are present leaves
    acc: npt.NDArray[np.uint8]  # rights combined down to each entry
    views: list[U64] = field(default_factory=list)  # the table pages themselves, to write A
    link_parent: I64 = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    link_index: I64 = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    link_child: I64 = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    link_ok: Bools = field(default_factory=lambda: np.zeros(0, dtype=bool))
    summarized: Bools | None = None  # summary mode, level 1: which tables had leaves

    def rows_with_leaf(self) -> Bools:
        """Tables with at least one present leaf entry."""
        if self.summarized is not None:
            return self.summarized.copy()
        if not self.leaf.size:
            return np.zeros(len(self.gfn), dtype=bool)
        return np.asarray(np.any(self.leaf, axis=1))

    @classmethod
    def empty(cls) -> _Walked:
        z = np.zeros(0, dtype=np.int64)
        return cls(
            z,
            np.zeros((0, 512), dtype=np.uint64),
            np.zeros((0, 512), dtype=bool),
            np.zeros((0, 512), dtype=np.uint8),
        )


def _table_views(memory: GuestMemory, slots: _Slots, gfns: I64) -> list[U64]:
    """The guest table pages ``gfns`` as writable numpy views (every gfn must be in a slot)."""
    si = slots.find(gfns)
    pfns = slots.host[si] + (gfns - slots.base[si])
    page = memory.host.page
    return [page(p) for p in pfns.tolist()]


def _set_accessed_bits(memory: GuestMemory, w: _Walked) -> None:
    """Set A on every guest entry a successful walk used (``update_accessed_dirty_bits``)."""
    used = w.leaf.copy()
    if len(w.link_ok):
        used[w.link_parent[w.link_ok], w.link_index[w.link_ok]] = True
    lo = w.e.view(np.uint8).reshape(len(w.e), 512, 8)[:, :, 0]
    need = used & ((lo & 0x20) == 0)
    a = np.where(need, np.uint64(Pte.ACCESSED), np.uint64(0))
    for row in np.flatnonzero(np.any(need, axis=1)).tolist():
        gfn = int(w.gfn[row])
        slot = memory.slots.find(gfn)
        if slot is None or slot.readonly:
            continue
        w.views[row] |= a[row]
        memory.mark_page_dirty(gfn)


_LEAF_CHUNK = 512  # leaf tables read per numpy block in summary mode (2 MiB of entries)


def _walk_small_leaves(
    plan: Plan, memory: GuestMemory, slots: _Slots, gfns: I64, accs: I64
) -> _Walked:
    """Summary mode, the last level of a big guest: read the 4 KiB-page tables in chunks.

    Each present entry is one 4 KiB leaf: check it (reserved bits, memory behind it), set its
    accessed bit, count it. Returns a :class:`_Walked` with only ``summarized`` (tables that
    had a leaf) and, parked in ``link_parent``, the gfns of leaves that would be writable.
    """
    cpu = plan.vcpu.cpu
    rs_leaf, rs_table = reserved_mask(cpu, 1, True), reserved_mask(cpu, 1, False)
    si = slots.find(gfns)
    raw = memory.host.raw
    pages = [raw(p) for p in (slots.host[si] + (gfns - slots.base[si])).tolist()]
    has_leaf = np.zeros(len(gfns), dtype=bool)
    writable: list[I64] = []
    ro_slot = slots.readonly[np.maximum(si, 0)]
    logging = bool(np.any(slots.logging))
    for start in range(0, len(pages), _LEAF_CHUNK):
        # one copy of the chunk's tables: a join of their bytes, not a numpy view per page
        part = pages[start : start + _LEAF_CHUNK]
        e = np.frombuffer(bytearray().join(part), dtype=np.uint64).reshape(len(part), 512)
        lo = e.view(np.uint8).reshape(len(e), 512, 8)[:, :, 0]
        present = (lo & 1).astype(bool)
        if int(np.bitwise_or.reduce((e & np.uint64(rs_leaf | rs_table)).ravel())):
            ps = (lo & 0x80).astype(bool)
            rs = np.where(ps, np.uint64(rs_leaf), np.uint64(rs_table))
            if np.any(present & ((e & rs) != 0)):
                raise BatchError(
                    "a level-1 guest entry has reserved bits set; the walk would fault with "
                    "PFERR.RSVD, which the batch path does not model"
                )
        has_leaf[start : start + len(e)] = np.any(present, axis=1)
        gfn = ((e[present] & np.uint64(_ADDR)) >> np.uint64(PAGE_SHIFT)).astype(np.int64)
        inside = np.zeros(len(gfn), dtype=bool)
        for b, end in zip(slots.base.tolist(), slots.end.tolist(), strict=True):
            inside |= (gfn >= b) & (gfn < end)
        if not np.all(inside):
            bad = int(gfn[np.argmin(inside)])
            raise BatchError(
                f"the guest maps gfn {bad:#x}, which no memslot backs: the fault path would "
                "install an MMIO spte there, which the batch path does not model; map only memory"
            )
        plan.leaves[1].n += len(gfn)
        # a writable leaf: the walk's rights allow writes (only the W bit of the entry's
        # rights counts here) and the guest PTE is present, writable and dirty
        table_w = (accs[start : start + len(e)] & int(Acc.WRITE)) != 0
        if np.any(table_w):
            pwd = int(Pte.PRESENT | Pte.WRITABLE | Pte.DIRTY)
            w_ok = ((lo & pwd) == pwd) & table_w[:, None]
            if np.any(w_ok):
                writable.append(
                    ((e[w_ok] & np.uint64(_ADDR)) >> np.uint64(PAGE_SHIFT)).astype(np.int64)
                )
        pa = int(Pte.PRESENT | Pte.ACCESSED)
        need = (lo & pa) == int(Pte.PRESENT)
        rows = np.flatnonzero(np.any(need, axis=1)).tolist()
        if rows:
            # set A in the chunk's copy, then copy each table that changed back, 4 KiB at a
            # time; a table listed twice (two rights) stores the same words twice
            lo |= need.view(np.uint8) * np.uint8(int(Pte.ACCESSED))
            done = e.data.cast("B")
            for row in rows:
                if ro_slot[start + row]:
                    continue
                part[row][:] = done[row * PAGE_SIZE : (row + 1) * PAGE_SIZE]
                if logging:
                    memory.mark_page_dirty(int(gfns[start + row]))
    empty = _Walked.empty()
    empty.gfn = gfns
    empty.summarized = has_leaf
    empty.link_parent = np.concatenate(writable) if writable else np.zeros(0, dtype=np.int64)
    return empty


def _check_writable(tables: I64, gfn: I64, size: int, acc: I64) -> None:
    """Refuse writable guest leaves over gfns that hold guest tables: order-dependent."""
    writable = (acc & int(Acc.WRITE)) != 0
    if not len(tables) or not np.any(writable):
        return
    g = gfn[writable]
    pos = np.searchsorted(tables, g)
    hit = (pos < len(tables)) & (tables[np.minimum(pos, len(tables) - 1)] < g + size)
    if np.any(hit):
        bad = int(g[np.argmax(hit)])
        raise BatchError(
            f"the guest maps gfns {bad:#x}.. writable and dirty, and they hold a guest page "
            "table; the fault path would unsync or write-protect it depending on fault order. "
            "Map the tables clean (dirty=False) or read-only"
        )


def build_shadow(vcpu: Vcpu) -> BatchSummary:
    """Build in the MMU what reading every guest-mapped page would: :func:`plan_shadow`, then
    register. No kernel counterpart (a batch ``FNAME(fetch)``). Returns the counts."""
    plan = plan_shadow(vcpu, detail=True)
    _materialize(plan)
    return plan.summary()


# ------------------------------------------------------------------------------------------
# registering the plan in the MMU
# ------------------------------------------------------------------------------------------


def _spte_values(
    pfn: I64, access: I64, level: int, writable: Bools, host_writable: Bools, glob: Bools
) -> U64:
    """``make_spte`` for many leaves at once."""
    v = np.uint64(S.PRESENT | S.MMU_PRESENT | S.ACCESSED) | (
        pfn.astype(np.uint64) << np.uint64(PAGE_SHIFT)
    )
    v |= np.where((access & int(Acc.USER)) != 0, np.uint64(S.USER), np.uint64(0))
    v |= np.where((access & int(Acc.EXEC)) == 0, np.uint64(S.NX), np.uint64(0))
    v |= np.where(writable, np.uint64(S.WRITABLE | S.DIRTY | S.MMU_WRITABLE), np.uint64(0))
    v |= np.where(host_writable, np.uint64(S.HOST_WRITABLE), np.uint64(0))
    v |= np.where(glob, np.uint64(S.GLOBAL), np.uint64(0))
    if level > 1:
        v |= np.uint64(S.LARGE)
    return np.asarray(v, dtype=np.uint64)


def _materialize(plan: Plan) -> None:
    """Create, link and fill the planned pages in the vCPU's MMU, as the fault path would."""
    vcpu = plan.vcpu
    mmu = vcpu.mmu
    total = sum(int(np.count_nonzero(plan.kept(lv))) for lv in plan.nodes)
    if total > mmu.n_max_mmu_pages:
        raise BatchError(
            f"the plan needs {total} shadow pages but the budget is {mmu.n_max_mmu_pages}; "
            "the fault path would reclaim pages on the way. Pass a larger n_max_mmu_pages"
        )
    objects: dict[int, list[MmuPage | None]] = {}
    for level in range(1, plan.top + 1):
        objects[level] = [None] * plan.nodes[level].count
    for i, sp in enumerate(plan.roots):
        objects[sp.level][i] = sp
    # indirect pages first (write protection and disallowed large pages), then the rest
    for want_direct in (False, True):
        for level in range(plan.top - 1, 0, -1):
            gfns, accesses, direct = plan.nodes[level].arrays()
            parent, index, child = plan.links[level].arrays()
            keep = plan.kept(level)
            for p, i, c in zip(parent.tolist(), index.tolist(), child.tolist(), strict=True):
                if bool(direct[c]) != want_direct or not keep[c]:
                    continue
                parent_sp = objects[level + 1][p]
                assert parent_sp is not None
                sp = objects[level][c]
                if sp is None:
                    role: MmuPageRole = parent_sp.role.child(
                        direct=want_direct, access=int(accesses[c])
                    )
                    sp = get_shadow_page(vcpu, int(gfns[c]), role)
                    objects[level][c] = sp
                mmu.link_shadow_page(parent_sp, i, sp)
    slots = _Slots(list(mmu.memory.slots))
    faults = 0
    for level, lf in plan.leaves.items():
        node, index, gfn, access, glob = lf.arrays()
        if not len(node):
            continue
        si = slots.find(gfn)
        s = np.maximum(si, 0)
        pfn = slots.host[s] + (gfn - slots.base[s])
        host_writable = ~slots.readonly[s]
        writable = ((access & int(Acc.WRITE)) != 0) & host_writable
        tracked = np.array(sorted(mmu.write_tracked), dtype=np.int64)
        if len(tracked):
            writable &= ~np.isin(gfn, tracked)
        values = _spte_values(pfn, access, level, writable, host_writable, glob)
        order = np.argsort(node, kind="stable")
        starts = np.flatnonzero(np.r_[True, node[order][1:] != node[order][:-1]])
        ends = np.r_[starts[1:], len(order)]
        # what a prefetch may map (prefetchable): a slot the host may write, and no writable
        # spte into a slot that logs dirty pages
        may_prefetch = ~slots.readonly[s] & ~(((access & int(Acc.WRITE)) != 0) & slots.logging[s])
        for s0, t0 in zip(starts, ends, strict=True):
            sel = order[s0:t0]
            leaf_sp = objects[level][int(node[sel[0]])]
            assert leaf_sp is not None
            sp = leaf_sp
            idx = index[sel]
            sp.spt_array[idx] = values[sel]
            for i, g in zip(idx.tolist(), gfn[sel].tolist(), strict=True):
                sp.set_gfn(i, g)  # stores for an indirect page, checks for a direct one
                mmu.rmap.add(sp, i)
            if level > 1 or not mmu.prefetch:
                faults += len(sel)
                continue
            ok = may_prefetch[sel]
            before = plan.accessed_before.get(int(node[sel[0]]))
            if before is not None:
                ok = ok & before[idx]
            faults += ascending_faults(idx.tolist(), ok.tolist(), si[sel].tolist(), sp.direct)
        for g in gfn[writable & slots.logging[s]].tolist():
            mmu.memory.mark_page_dirty(g)
        mmu._count_leaf(level, len(node))
    mmu.stats.pf_fixed += faults
    mmu.stats.pf_taken += faults


def ascending_faults(indices: list[int], ok: list[bool], slot_ids: list[int], direct: bool) -> int:
    """Faults taken by a guest that touches the leaf sptes ``indices`` of one level-1 page in
    ascending order, with KVM's prefetch (``direct_pte_prefetch``, ``FNAME(pte_prefetch)``).

    ``ok`` says whether each leaf may be prefetched (its memslot, and for an indirect page a
    guest entry that was accessed before the run); ``slot_ids`` which memslot backs it. A
    direct run must lie in one slot and be fully backed. No kernel counterpart: the batch
    path's count of what the fault path would do one fault at a time.
    """
    leaf = {i: (good, sid) for i, good, sid in zip(indices, ok, slot_ids, strict=True)}
    present: set[int] = set()
    faults = 0
    for i in sorted(indices):
        if i in present:
            continue
        faults += 1
        present.add(i)
        first = i & ~7
        group = range(first, first + 8)
        if not direct:
            for j in group:
                if j in present:
                    continue
                if j not in leaf or not leaf[j][0]:
                    break
                present.add(j)
            continue
        run: list[int] = []
        for j in [*group, None]:
            if j is not None and j not in present:
                run.append(j)
                continue
            if run:
                if not _run_ok(run, leaf):
                    break
                present.update(run)
                run = []
    return faults


def _run_ok(run: list[int], leaf: dict[int, tuple[bool, int]]) -> bool:
    """``direct_pte_prefetch_many``: every gfn of the run backed by the first one's slot."""
    if any(j not in leaf or not leaf[j][0] for j in run):
        return False
    return len({leaf[j][1] for j in run}) == 1


def iter_leaves(vcpu_or_mmu: object) -> Iterator[tuple[MmuPage, int, int]]:
    """Every leaf spte of a live MMU as (page, index, gfn via ``get_gfn``).

    No kernel counterpart (an rmap-free walk of the active list); for comparing builds.
    """
    mmu = _check_mmu_source(vcpu_or_mmu)
    for sp in mmu.by_pfn.values():
        for i in sp.present_indices().tolist():
            spte = int(sp.spt[i])
            if S.is_shadow_present(spte) and S.is_last(spte, sp.level):
                yield sp, i, sp.get_gfn(i)
