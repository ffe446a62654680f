"""Lesson 5, write protection: the guest, views, widget and exercise of
``notebooks/05_write_protection.ipynb``.

A guest whose kernel maps its own page tables and edits them through the map (:class:`TableWriter`),
the counters its stores move, a widget that writes page tables at a chosen rate, and an exercise:
predict the write-protection and emulation counters. What the stores exercise is
``kvm_mmu_page_fault`` -> emulation -> ``kvm_mmu_track_write`` (``mmu.c``), with write flooding
(``detect_write_flooding``); the counters are ``kvm_vm_stat``'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import pandas as pd

from kvmmu.errors import check_bool, check_choice, check_count, check_instance
from kvmmu.hw.guest import GuestPageTables
from kvmmu.hw.x86 import PAGE_SHIFT, Access, PagingMode, Pte
from kvmmu.kvm.vcpu import Vcpu, Vm
from kvmmu.teaching.draw import DPI, SHADOW, TABLE, bar_axes, new_figure
from kvmmu.teaching.lessons.l01_guest_page_tables import ENTRY_ADDR
from kvmmu.teaching.memo import pure
from kvmmu.teaching.problems import Check, ExerciseError, Problem, fail, ok, parse_int, seeded_rng
from kvmmu.teaching.ui import WIDGET_MEMO, KeptFigure, wire

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "ALT_GPA",
    "COUNTERS",
    "DATA_GPA",
    "DATA_GVA",
    "PDE_SCRATCH_INDEX",
    "PDE_WINDOW",
    "PTE_WINDOW",
    "PWUA",
    "WP_FIELDS",
    "CountersProblem",
    "TableWriter",
    "check_counters",
    "counter_right",
    "counters_problem",
    "make_table_write_widget",
    "table_write_counters",
    "table_write_view",
    "table_write_workload",
    "table_writer",
]


# ------------------------------------------------------------------------------------------------
# A guest that writes its own page tables
# ------------------------------------------------------------------------------------------------

PWUA = int(Pte.PRESENT | Pte.WRITABLE | Pte.USER | Pte.ACCESSED)


DATA_GVA = 0x40_0000
DATA_GPA = 0x10_0000
ALT_GPA = 0x80_0000  # where a PTE write re-points a data page
PTE_WINDOW = 0x4000_0000  # the guest maps its leaf table here (another 1 GiB: another PD)
PDE_WINDOW = 0x4000_1000  # ... and the page directory above it here
PDE_SCRATCH_INDEX = 100  # PDEs the guest rewrites: unused by the data pages
COUNTERS = (
    "pf_fixed",
    "pf_emulate",
    "mmu_pte_write",
    "mmu_pte_updated",
    "mmu_pde_zapped",
    "mmu_flooded",
    "mmu_shadow_zapped",
    "mmu_cache_miss",
    "mmu_unsync",
)


@dataclass(slots=True)
class TableWriter:
    """A 4-level guest whose kernel maps its own page tables and edits them through the map.

    ``pages`` user data pages sit at ``DATA_GVA``; the leaf table that maps them is mapped at
    ``PTE_WINDOW`` and their page directory at ``PDE_WINDOW``, so the guest's stores to them are
    ordinary guest writes that the shadow MMU sees as faults (``kvm_mmu_page_fault`` ->
    emulation -> ``kvm_mmu_track_write``). No kernel counterpart: this is the guest side.
    """

    vm: Vm
    vcpu: Vcpu
    pt: GuestPageTables
    pages: int

    def touch(self, i: int) -> None:
        """A user read of data page ``i``."""
        check_count("i", i, error=ExerciseError)
        self.vcpu.access(DATA_GVA + (i % self.pages) * 0x1000, Access.READ, cpl=3)

    def write_pte(self, i: int, *, accessed: bool = True, clear: bool = False) -> None:
        """Re-point data page ``i`` at the other frame run (or ``clear`` its PTE, as munmap
        does), then INVLPG it as Linux does."""
        check_count("i", i, error=ExerciseError)
        check_bool("accessed", accessed, ExerciseError)
        check_bool("clear", clear, ExerciseError)
        gva = DATA_GVA + (i % self.pages) * 0x1000
        slot = PTE_WINDOW + 8 * ((gva >> PAGE_SHIFT) & 511)
        old = self.pt.entry(gva, 1) & ENTRY_ADDR
        base = ALT_GPA if old < ALT_GPA else DATA_GPA
        flags = PWUA if accessed else PWUA & ~int(Pte.ACCESSED)
        value = 0 if clear else base + (i % self.pages) * 0x1000 | flags
        self.vcpu.write(slot, value, 8)
        self.vcpu.invlpg(gva)

    def write_pde(self, k: int) -> None:
        """Store a new (present) PDE in an unused slot of the data pages' page directory.

        No kernel counterpart: a lesson scenario.
        """
        check_count("k", k, error=ExerciseError)
        slot = PDE_WINDOW + 8 * (PDE_SCRATCH_INDEX + k % 100)
        self.vcpu.write(slot, (0x200_0000 + k * 0x1000) | PWUA, 8)

    def leaf_table_gfn(self) -> int:
        """The gfn of the guest page table that maps the data pages: the address bits of their
        PDE (``gpte_to_gfn``), not a bit field a reader has to decode."""
        return (self.pt.entry(DATA_GVA, 2) & ENTRY_ADDR) >> PAGE_SHIFT

    def counters(self) -> pd.Series:
        """The counters this lesson is about (a selection of ``MmuStats``)."""
        return self.vm.mmu.stats.as_series()[list(COUNTERS)]


def table_writer(pages: int = 16, *, unsync: bool = False, update_pte: bool = True) -> TableWriter:
    """Build a :class:`TableWriter` guest, touch its data pages once, and zero the counters.

    ``unsync`` lets leaf tables go unsync (``Vm(allow_unsync=...)``); without it every PTE
    write is emulated, as in the 2010 kernel. ``update_pte`` is that kernel's in-place refresh
    of the leaf spte after an emulated PTE store (``mmu_pte_write_new_pte``); False is today's
    kernel, which zaps it (``Vm(update_pte=...)``). No kernel counterpart.
    """
    check_count("pages", pages, minimum=1, maximum=64, error=ExerciseError)
    check_bool("unsync", unsync, ExerciseError)
    check_bool("update_pte", update_pte, ExerciseError)
    vm = Vm(64 << 20, allow_unsync=unsync, update_pte=update_pte)
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4)
    pt.map(DATA_GVA, DATA_GPA, length=pages * 0x1000, writable=True, user=True)
    pt.map(PTE_WINDOW, pt.entry(DATA_GVA, 2) & ENTRY_ADDR, writable=True)
    pt.map(PDE_WINDOW, pt.entry(DATA_GVA, 3) & ENTRY_ADDR, writable=True)
    guest = TableWriter(vm, vm.create_vcpu(pt.cpu()), pt, pages)
    for i in range(pages):
        guest.touch(i)
    for window in (PTE_WINDOW, PDE_WINDOW):  # the kernel has used its window mappings before
        guest.vcpu.access(window, Access.READ)
    vm.mmu.stats.reset()
    return guest


def _check_counters_run(
    pte_writes: object,
    pde_writes: object = 0,
    *,
    accessed: object = True,
    clear: object = False,
    unsync: object = False,
) -> None:
    """What :func:`table_write_counters` accepts, checked before its cache is consulted."""
    check_count("pte_writes", pte_writes, maximum=1000, error=ExerciseError)
    check_count("pde_writes", pde_writes, maximum=1000, error=ExerciseError)
    for name, flag in (("accessed", accessed), ("clear", clear), ("unsync", unsync)):
        check_bool(name, flag, ExerciseError)


@pure(check=_check_counters_run)
def table_write_counters(
    pte_writes: int,
    pde_writes: int = 0,
    *,
    accessed: bool = True,
    clear: bool = False,
    unsync: bool = False,
) -> pd.Series:
    """Counters after ``pte_writes`` PTE stores then ``pde_writes`` PDE stores, no other use.

    ``clear`` makes the PTE stores write zero (unmapping the pages); ``accessed`` says whether
    re-pointed PTEs carry the accessed bit.

    The experiment behind the write-protection exercise; cached
    (:func:`kvmmu.teaching.memo.pure`). No kernel counterpart.
    """
    guest = table_writer(unsync=unsync)
    for i in range(pte_writes):
        guest.write_pte(i, accessed=accessed, clear=clear)
    for k in range(pde_writes):
        guest.write_pde(k)
    return guest.counters()


def _check_workload(
    pte_rate: object, pde_rate: object = 0, *, accesses: object = 200, unsync: object = False
) -> None:
    """What :func:`table_write_workload` accepts, checked before its cache is consulted."""
    for name, n in (("pte_rate", pte_rate), ("pde_rate", pde_rate)):
        check_count(name, n, maximum=100, error=ExerciseError)  # writes per 100 reads
    check_count("accesses", accesses, minimum=1, maximum=ACCESS_LIMIT, error=ExerciseError)
    check_bool("unsync", unsync, ExerciseError)


ACCESS_LIMIT = 10_000
"""The most user reads :func:`table_write_workload` runs."""


@pure(check=_check_workload)
def table_write_workload(
    pte_rate: int, pde_rate: int = 0, *, accesses: int = 200, unsync: bool = False
) -> pd.Series:
    """Counters after ``accesses`` user reads with ``pte_rate`` PTE writes (and ``pde_rate``
    PDE writes) per 100 reads, spread evenly. The lesson 5 widget's model; cached
    (:func:`kvmmu.teaching.memo.pure`), so a slider back at a rate shows it at once. No kernel
    counterpart.
    """
    guest = table_writer(unsync=unsync)
    pte_acc = pde_acc = pte_done = pde_done = 0
    for i in range(accesses):
        guest.touch(i)
        pte_acc += pte_rate
        pde_acc += pde_rate
        while pte_acc >= 100:
            pte_acc -= 100
            guest.write_pte(pte_done)
            pte_done += 1
        while pde_acc >= 100:
            pde_acc -= 100
            guest.write_pde(pde_done)
            pde_done += 1
    return guest.counters()


# ------------------------------------------------------------------------------------------------
# Try it: the table-write widget
# ------------------------------------------------------------------------------------------------


def table_write_view(
    pte_rate: int = 10, pde_rate: int = 0, unsync: bool = False
) -> tuple[pd.DataFrame, Figure]:
    """The lesson 5 widget: counters of a guest writing its page tables, table and bar plot.

    Runs :func:`table_write_workload` (200 user reads, ``pte_rate`` PTE and
    ``pde_rate`` PDE stores per 100 reads). No kernel counterpart; the counters are
    ``kvm_vm_stat``'s.
    """
    _check_workload(pte_rate, pde_rate, unsync=unsync)
    chart = _TableWriteChart()
    return chart.show(pte_rate, pde_rate, unsync), chart.fig


class _TableWriteChart:
    """The bar plot of :func:`table_write_view`, built once and redrawn with new counts.

    The widget keeps one and shows it through a :class:`~kvmmu.teaching.ui.KeptFigure`: the
    counter names, the axes and the x label are drawn once, the bars, the x axis and the
    title on every move.
    """

    def __init__(self) -> None:
        self.fig = new_figure((9.0, 3.0), dpi=DPI)
        self.ax = bar_axes(self.fig)
        names = list(COUNTERS)[::-1]
        colours = [SHADOW if name.startswith("pf_") else TABLE for name in names]
        self.bars = self.ax.barh(names, [0] * len(names), color=colours)
        self.ax.set_xlabel("events in 200 guest reads")
        self.ax.set_title(" ", fontsize=10)

    def show(self, pte_rate: int, pde_rate: int, unsync: bool) -> pd.DataFrame:
        """Run the workload, set the bars and the title to it; the counters as a table."""
        counters = table_write_workload(pte_rate, pde_rate, unsync=unsync)
        for bar, value in zip(self.bars, list(counters[list(COUNTERS)])[::-1], strict=True):
            bar.set_width(value)
        self.ax.relim()
        self.ax.autoscale_view()
        mode = "unsync allowed" if unsync else "every table write-protected"
        title = f"{pte_rate} PTE + {pde_rate} PDE stores per 100 reads ({mode})"
        self.ax.set_title(title, fontsize=10)
        return counters.to_frame("count")

    def kept(self) -> KeptFigure:
        """The figure, kept for redrawing: what changes with the counts is redrawn alone."""
        ax = self.ax
        return KeptFigure(self.fig, [*self.bars, ax.spines["left"], ax.xaxis, ax.title])


def make_table_write_widget(pte_rate: int = 10, pde_rate: int = 0, unsync: bool = False) -> Any:
    """Pick how often the guest writes its page tables; see the MMU's counters.

    Shows :func:`table_write_view`, its bar plot kept from move to move and only its bars, x
    axis and title redrawn (:class:`~kvmmu.teaching.ui.KeptFigure`). Controls, in order: PTE
    stores per 100 reads (IntSlider 0..100), PDE stores per 100 reads (IntSlider 0..20),
    unsync (Checkbox). A setting shown before is shown again from memory (``wire(memo=...)``).
    No kernel counterpart.
    """
    _check_workload(pte_rate, pde_rate, unsync=unsync)
    check_count("pde_rate", pde_rate, maximum=20, error=ExerciseError)  # the slider's range
    pte = widgets.IntSlider(value=pte_rate, min=0, max=100, description="PTE / 100")
    pde = widgets.IntSlider(value=pde_rate, min=0, max=20, description="PDE / 100")
    allow = widgets.Checkbox(value=unsync, description="allow unsync")
    chart = _TableWriteChart()
    kept = chart.kept()

    def produce() -> tuple[pd.DataFrame, KeptFigure]:
        return chart.show(pte.value, pde.value, allow.value), kept

    return wire([pte, pde, allow], produce, memo=WIDGET_MEMO)


# ------------------------------------------------------------------------------------------------
# Exercise: predict write-protection and emulation counters
# ------------------------------------------------------------------------------------------------

WP_FIELDS = ("pf_emulate", "mmu_pte_write", "mmu_pte_updated", "mmu_pde_zapped", "mmu_flooded")
_WP_HINTS = {
    "pf_emulate": (
        "pf_emulate: each store to a write-protected guest table faults and is emulated, as "
        "long as the table is still shadowed; after that the store needs no emulation"
    ),
    "mmu_pte_write": (
        "mmu_pte_write: counted once per emulated store that lands in a table some shadow "
        "page still shadows (kvm_mmu_track_write)"
    ),
    "mmu_pte_updated clear": (
        "mmu_pte_updated: these PTE stores write zero (an unmap), and a zero PTE is never "
        "refreshed in place: the MMU only drops the spte"
    ),
    "mmu_pte_updated present": (
        "mmu_pte_updated: these PTE stores write a present entry, and the MMU refreshes the "
        "leaf spte that shadows it in place, once per store, while its table is still shadowed"
    ),
    "mmu_pde_zapped": (
        "mmu_pde_zapped: an upper-level spte is never refreshed in place: each non-zero store "
        "zaps the entry and is counted, unless the whole page goes first"
    ),
    "mmu_flooded": (
        "mmu_flooded: an upper-level table written again and again (the third time) without "
        "the guest faulting through it in between is zapped whole (detect_write_flooding)"
    ),
}


@dataclass(slots=True, repr=False)
class CountersProblem(Problem):
    """Predict the counters after a guest edits its write-protected page tables."""

    seed: int | str
    text: str
    pte_writes: int
    pde_writes: int
    clear: bool
    _counters: dict[str, int] = field(repr=False)


def counters_problem(seed: int | str) -> CountersProblem:
    """Some PTE stores then some PDE stores by the :class:`TableWriter` guest, unsync off;
    the counters come from running it (``kvm_mmu_track_write`` and its statistics)."""
    rng = seeded_rng(seed)
    pte_writes = rng.randrange(1, 5)
    pde_writes = rng.randrange(0, 6)
    clear = rng.random() < 0.4
    series = table_write_counters(pte_writes, pde_writes, clear=clear)
    counters = {name: int(series[name]) for name in WP_FIELDS}
    text = (
        "A 4-level guest maps 16 user pages through one page table and has touched them all; "
        "its kernel maps that page table and the page directory above it at addresses of its "
        "own. Leaf tables may not go unsync (every store to a shadowed table is emulated).\n"
        f"The guest now stores {pte_writes} PTE(s) for its data pages, "
        + ("each zero (an unmap)" if clear else "each re-pointed to another frame")
        + f" (and INVLPGs each page), then {pde_writes} new present PDE(s) into unused "
        "slots of the page directory, touching nothing in between.\n"
        "Predict, as a dict: " + ", ".join(WP_FIELDS) + "."
    )
    return CountersProblem(seed, text, pte_writes, pde_writes, clear, counters)


def counter_right(problem: CountersProblem, name: str, given: object) -> bool:
    """Whether ``given`` is counter ``name`` (one of :data:`WP_FIELDS`) after the problem's run;
    a grader's partial credit per counter. No kernel counterpart.
    """
    _check_problem(problem)
    check_choice("name", name, WP_FIELDS, ExerciseError)
    return parse_int(f"given {name}", given) == problem._counters[name]


def _check_problem(problem: object) -> None:
    check_instance("problem", problem, CountersProblem, "a CountersProblem", ExerciseError)


def check_counters(problem: CountersProblem, answer: Mapping[str, object]) -> Check:
    """Check predicted write-protection counters; the hint explains the first wrong one.

    No kernel counterpart: a lesson checker.
    """
    _check_problem(problem)
    if not isinstance(answer, Mapping):
        raise ExerciseError("give the answer, the counters, as a dict: {'pf_emulate': 3, ...}")
    missing = [f for f in WP_FIELDS if f not in answer]
    if missing:
        return fail("give every counter; missing: " + ", ".join(missing))
    wrong = [f for f in WP_FIELDS if not counter_right(problem, f, answer[f])]
    if not wrong:
        return ok("those are the MMU's counters for this run.")
    first = wrong[0]
    if first == "mmu_pte_updated":  # the hint follows the kind of store the problem made
        first += " clear" if problem.clear else " present"
    return fail(f"{len(wrong)} counter(s) wrong. First, {_WP_HINTS[first]}")
