"""Lesson 2, shadow paging one fault at a time: the views, widget and exercise of
``notebooks/02_shadow_paging.ipynb``.

A small guest program run step by step under shadow paging, the guest's tables drawn beside the
shadow pages the MMU built for them, a widget that steps through the program, and an exercise:
predict how many shadow pages one access creates. The shared tables of this lesson, the shadow
pages with their roles and a recorded trace, are :func:`kvmmu.teaching.draw.role_frame` and
:func:`kvmmu.teaching.draw.tidy_trace`. The state shown is ``FNAME(page_fault)`` /
``FNAME(fetch)``'s (``paging_tmpl.h``) and ``kvm->arch.active_mmu_pages``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import pandas as pd

from kvmmu.errors import ArgumentError, ModeError, check_count, check_instance
from kvmmu.hw.guest import GuestPageTables
from kvmmu.hw.memory import GuestMemory
from kvmmu.hw.walk import CpuState, GeneralProtection, PageFault
from kvmmu.hw.x86 import PAGE_SHIFT, Access, PagingMode, Pte
from kvmmu.kvm.vcpu import Vcpu, Vm
from kvmmu.teaching.draw import (
    DIRECT,
    DPI,
    INK,
    SHADOW,
    TABLE,
    TABLE_NAMES,
    arrow,
    box,
    new_figure,
    role_frame,
    style,
)
from kvmmu.teaching.problems import (
    Check,
    ExerciseError,
    Problem,
    fail,
    ok,
    parse_int,
    seeded_rng,
)
from kvmmu.teaching.ui import panel, render_into

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "DEMO_PROGRAM",
    "ProgramRun",
    "ProgramStep",
    "ShadowFaultProblem",
    "check_shadow_fault",
    "make_shadow_steps_widget",
    "run_program",
    "shadow_fault_problem",
    "shadow_step_view",
    "shadow_tables_figure",
]


# ------------------------------------------------------------------------------------------------
# A small guest program
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProgramStep:
    """One access of a small guest program: what, where, how and at which privilege level."""

    label: str
    gva: int
    access: Access
    cpl: int = 3


DEMO_PROGRAM: tuple[ProgramStep, ...] = (
    ProgramStep("fetch the first instruction", 0x400000, Access.FETCH),
    ProgramStep("fetch the next page of code", 0x401000, Access.FETCH),
    ProgramStep("read a global variable", 0x600000, Access.READ),
    ProgramStep("write the same variable", 0x600008, Access.WRITE),
    ProgramStep("push onto the stack", 0x7FFF_FFFF_E000, Access.WRITE),
    ProgramStep("read the variable again (TLB)", 0x600010, Access.READ),
    ProgramStep("read a kernel page from user mode", 0xFFFF_8880_0000_0000, Access.READ),
    ProgramStep("system call: kernel reads it", 0xFFFF_8880_0000_0000, Access.READ, 0),
)


@dataclass(slots=True)
class ProgramRun:
    """A small VM after some steps of a program, and what each step returned."""

    vm: Vm
    vcpu: Vcpu
    pt: GuestPageTables
    outcomes: list[str] = field(default_factory=list)


def _demo_guest() -> tuple[Vm, GuestPageTables, Vcpu]:
    vm = Vm(16 << 20)
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4)
    pt.map(0x400000, 0x200000, length=0x2000, writable=False, user=True)  # text
    pt.map(0x600000, 0x300000, writable=True, user=True, nx=True)  # data
    pt.map(0x7FFF_FFFF_E000, 0x310000, writable=True, user=True, nx=True)  # stack
    pt.map(0xFFFF_8880_0000_0000, 0x000000, size="2M", writable=True, nx=True)  # direct map
    vcpu = vm.create_vcpu(pt.cpu(cpl=3))
    return vm, pt, vcpu


def _outcome_text(result: int | PageFault | GeneralProtection) -> str:
    if isinstance(result, PageFault):
        return f"#PF to the guest, error {int(result.error_code):#x}: {result.reason}"
    if isinstance(result, GeneralProtection):
        return f"#GP: {result.reason}"
    return f"gpa {result:#x}"


PROGRAM_LIMIT = 1000
"""The most steps a program given to :func:`run_program` may have."""


def _check_program(program: object, steps: object) -> tuple[ProgramStep, ...]:
    """A tuple (or list) of 1..:data:`PROGRAM_LIMIT` ProgramSteps, and ``steps`` in 0..len."""
    if (
        not isinstance(program, tuple | list)
        or not 1 <= len(program) <= PROGRAM_LIMIT
        or not all(isinstance(step, ProgramStep) for step in program)
    ):
        raise ArgumentError(
            f"program must be a tuple of 1..{PROGRAM_LIMIT} ProgramSteps, got "
            f"{type(program).__name__} {str(program)[:40]}"
        )
    check_count("steps", steps, maximum=len(program), error=ArgumentError)
    return tuple(program)


def run_program(steps: int, program: tuple[ProgramStep, ...] = DEMO_PROGRAM) -> ProgramRun:
    """A fresh small 4-level VM after the first ``steps`` accesses of ``program``.

    Shadow paging, so each first touch of a page is a shadow page fault handled by
    ``FNAME(page_fault)``; deterministic: the same ``steps`` always gives the same state.
    """
    _check_program(program, steps)
    vm, pt, vcpu = _demo_guest()
    run = ProgramRun(vm, vcpu, pt)
    for step in program[:steps]:
        run.outcomes.append(_outcome_text(vcpu.access(step.gva, step.access, cpl=step.cpl)))
    return run


# ------------------------------------------------------------------------------------------------
# Guest tables and shadow pages, side by side
# ------------------------------------------------------------------------------------------------


def _guest_tables(memory: GuestMemory, cpu: CpuState) -> list[tuple[int, int, int | None]]:
    """(level, gfn, parent gfn) of every guest table reachable from CR3 (4/5-level only)."""
    spec = cpu.mode.spec
    if spec.mode not in (PagingMode.LEVEL4, PagingMode.LEVEL5):
        raise ModeError("the shadow picture draws 4- or 5-level guests; use PagingMode.LEVEL4")
    out: list[tuple[int, int, int | None]] = []
    mask = ((1 << cpu.maxphyaddr) - 1) & ~0xFFF

    def visit(gfn: int, level: int, parent: int | None) -> None:
        out.append((level, gfn, parent))
        words = memory.table_words(gfn)
        if words is None or level == 1:
            return
        for entry in words:
            entry = int(entry)
            if entry & Pte.PRESENT and not (level in (2, 3) and entry & Pte.PAGE_SIZE):
                visit((entry & mask) >> PAGE_SHIFT, level - 1, gfn)

    visit(cpu.root_gpa >> PAGE_SHIFT, spec.root_level, None)
    return out


def shadow_tables_figure(vm: Vm, vcpu: Vcpu) -> Figure:
    """The guest's tables (left) beside the shadow pages the MMU built (right), level by level.

    Arrows are table pointers (guest entries on the left, non-leaf sptes on the right). An
    indirect shadow page (amber) names the guest table it shadows (``sp->gfn``), and the guest
    tables are ordered as a mirror image of their shadows; a direct page (violet) shadows no
    guest table and maps the gfns from its ``gfn`` on. The state is ``kvm->arch.active_mmu_pages``.
    """
    check_instance("vm", vm, Vm, "a Vm")
    check_instance("vcpu", vcpu, Vcpu, "a Vcpu of that Vm")
    guest = _guest_tables(vm.memory, vcpu.cpu)
    pages = [sp for sp in vm.mmu.active if not sp.role.invalid]
    top = max([lv for lv, _, _ in guest] + [sp.level for sp in pages] + [1])
    fig = new_figure((11.0, 1.3 * top + 0.8), dpi=DPI)
    style(fig)
    ax = fig.add_subplot()
    ax.set_axis_off()
    w, h = 1.5, 0.55
    pos_g: dict[int, tuple[float, float]] = {}
    pos_s: dict[int, tuple[float, float]] = {}
    order = {sp.gfn: sp.serial for sp in sorted(pages, key=lambda sp: -sp.serial) if not sp.direct}
    for level in range(top, 0, -1):
        # guest tables in the order of the shadow pages that shadow them: a mirror image
        row = sorted((g for g in guest if g[0] == level), key=lambda g: order.get(g[1], 1 << 30))
        for i, (_, gfn, _) in enumerate(row):
            x = -1.0 - i * (w + 0.2)
            pos_g[gfn] = (x, float(level))
            box(ax, x, level, w, h, f"guest {TABLE_NAMES[level]}\ngfn {gfn:#x}", TABLE)
        srow = sorted((sp for sp in pages if sp.level == level), key=lambda sp: sp.serial)
        for i, sp in enumerate(srow):
            x = 1.0 + i * (w + 0.2)
            pos_s[sp.serial] = (x, float(level))
            if sp.direct:
                box(ax, x, level, w, h, f"sp#{sp.serial} direct\ngfn {sp.gfn:#x}+", DIRECT)
            else:
                box(ax, x, level, w, h, f"sp#{sp.serial}\nshadows {sp.gfn:#x}", SHADOW)
    for _, gfn, parent in guest:
        if parent is not None:
            (x0, y0), (x1, y1) = pos_g[parent], pos_g[gfn]
            arrow(ax, x0, y0 - h / 2, x1, y1 + h / 2)
    for sp in pages:
        for up, _ in sp.parent_ptes:
            if up.serial in pos_s and sp.serial in pos_s:
                (x0, y0), (x1, y1) = pos_s[up.serial], pos_s[sp.serial]
                arrow(ax, x0, y0 - h / 2, x1, y1 + h / 2)
    xs = [p[0] for p in (*pos_g.values(), *pos_s.values())] or [0.0]
    ax.set_xlim(min(xs) - w, max(max(xs) + w, 2.0))
    ax.set_ylim(0.4, top + 0.9)
    ax.text(min(xs) - w / 2, top + 0.55, "guest page tables (guest memory)", color=INK, fontsize=9)
    ax.text(
        0.3, top + 0.55, "shadow pages (host memory, what the CPU walks)", color=INK, fontsize=9
    )
    ax.axvline(0, color=INK, linewidth=0.6)
    return fig


# ------------------------------------------------------------------------------------------------
# Step by step: the view and its widget
# ------------------------------------------------------------------------------------------------

_STEP_COUNTERS = (
    "pf_fixed",
    "pf_guest",
    "mmu_cache_miss",
    "shadow_pages",
    "tlb_hits",
    "tlb_misses",
)


def shadow_step_view(
    steps: int, program: tuple[ProgramStep, ...] = DEMO_PROGRAM
) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    """What the step widget shows after ``steps`` accesses: a log, the shadow pages, counters.

    The log names each access and its outcome; the pages are ``active_mmu_pages``; the counters
    are the debugfs ones (``pf_fixed``, ``pf_guest``, ``mmu_cache_miss``, ...).
    """
    run = run_program(steps, program)
    lines = [f"after {steps} of {len(program)} steps"]
    for i, (step, outcome) in enumerate(zip(program, run.outcomes, strict=False), start=1):
        lines.append(
            f"{i}. {step.label}: {step.access.value} {step.gva:#x} CPL{step.cpl} -> {outcome}"
        )
    if steps < len(program):
        nxt = program[steps]
        lines.append(f"next: {nxt.label} ({nxt.access.value} {nxt.gva:#x} at CPL {nxt.cpl})")
    stats = run.vm.mmu.stats.as_series()[list(_STEP_COUNTERS)]
    return "\n".join(lines), role_frame(run.vm), stats.to_frame().T.set_index(pd.Index([steps]))


def make_shadow_steps_widget(
    program: tuple[ProgramStep, ...] = DEMO_PROGRAM, steps: int = 0
) -> Any:
    """Step through a small guest program and watch shadow pages appear.

    A slider picks how many steps have run; "next step" moves it by one. Shows
    :func:`shadow_step_view`: the log, the shadow pages, the counters.
    Controls, in order: steps (IntSlider), next (Button), reset (Button).

    No kernel counterpart: a widget over :func:`shadow_step_view`.
    """
    _check_program(program, steps)
    slider = widgets.IntSlider(value=steps, min=0, max=len(program), description="steps")
    step = widgets.Button(description="next step")
    reset = widgets.Button(description="reset")
    out = widgets.Output()

    def update(_: object = None) -> None:
        render_into(out, lambda: shadow_step_view(slider.value, program))

    def advance(_: object) -> None:
        slider.value = min(slider.value + 1, slider.max)

    def restart(_: object) -> None:
        slider.value = 0

    slider.observe(update, names="value")
    step.on_click(advance)
    reset.on_click(restart)
    update()
    return panel([slider, step, reset], out)


# ------------------------------------------------------------------------------------------------
# Exercise: predict the shadow pages one fault creates
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShadowFaultProblem(Problem):
    """Predict how many shadow pages one guest access makes the MMU create."""

    seed: int | str
    text: str
    gva: int
    _created: int = field(repr=False)


def shadow_fault_problem(seed: int | str) -> ShadowFaultProblem:
    """A 4-level guest under shadow paging has touched some pages; how many shadow pages does
    the next access create? The answer is ``mmu_cache_miss`` after running it
    (``kvm_mmu_get_shadow_page`` in ``FNAME(fetch)``); no kernel counterpart for the generator.
    """
    rng = seeded_rng(seed)
    vm = Vm(64 << 20, huge_pages=False)
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4)
    pml4 = rng.randrange(1, 255)
    pdpt = rng.randrange(0, 512)
    pd = rng.randrange(0, 511)
    touched = pml4 << 39 | pdpt << 30 | pd << 21 | rng.randrange(0, 512) << 12
    # the next access shares the path down to a level chosen at random (4: nothing shared)
    shared = rng.choice([1, 2, 3, 4])
    if shared == 1:  # same page table, another entry
        gva = (touched & ~0x1F_FFFF) | ((((touched >> 12) & 511) ^ 1) << 12)
    elif shared == 2:  # same page directory, the next page table
        gva = (touched & ~0x3FFF_FFFF) | ((pd + 1) << 21)
    elif shared == 3:  # same PDPT, another page directory
        gva = (touched & ~(0x7F_FFFF_FFFF)) | (((pdpt + 1) % 512) << 30)
    else:  # another PML4 entry: only the root is shared
        gva = (pml4 + 1) << 39
    pt.map(touched, 0x100000, user=True)
    pt.map(gva, 0x101000, user=True)
    vcpu = vm.create_vcpu(pt.cpu(cpl=3))
    vcpu.access(touched, Access.READ)
    before = vm.mmu.stats.mmu_cache_miss
    vcpu.access(gva, Access.READ)
    created = vm.mmu.stats.mmu_cache_miss - before
    text = (
        "A 4-level guest under shadow paging (no TDP) maps two 4 KiB user pages and has read "
        f"the one at {touched:#x}, so the shadow pages for that path exist.\n"
        f"It now reads {gva:#x} at CPL 3. How many new shadow pages does the MMU create?"
    )
    return ShadowFaultProblem(seed, text, gva, created)


def check_shadow_fault(problem: ShadowFaultProblem, answer: int | str) -> Check:
    """Check a predicted number of new shadow pages; the hint names the rule, not the count.

    No kernel counterpart: a lesson checker.
    """
    check_instance(
        "problem", problem, ShadowFaultProblem, "a ShadowFaultProblem", error=ExerciseError
    )
    value = parse_int("the answer (a number of pages)", answer)
    right = problem._created
    if value == right:
        return ok("one new shadow page per guest table the earlier access did not go through.")
    if value > 4:
        return fail("a 4-level path holds at most 4 shadow pages, the root among them")
    if value == 4:
        return fail("the root (the PML4's shadow) exists since the vCPU first ran: it is reused")
    if value > right:
        return fail(
            "some tables on this path are shared with the earlier access: compare the two "
            "addresses' indices level by level, from bits 47:39 down"
        )
    return fail(
        "below the first level where the two paths part, every guest table is new to the MMU "
        "and each needs its own shadow page"
    )
