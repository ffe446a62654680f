"""Lesson 6, unsync pages and ``sync_page``: the replay, views, widget and exercise of
``notebooks/06_unsync.ipynb``.

Edits, accesses, INVLPGs and CR3 reloads replayed on an unsync-capable guest, with the guest
PTE, the spte, the TLB and the unsync flag after each, a widget with one button per action, and
an exercise: predict what each access returns. It reuses lesson 5's guest layout (the data page
at ``DATA_GVA``, the leaf table mapped at ``PTE_WINDOW``). The kernel code at work is
``FNAME(sync_spte)``, ``kvm_mmu_invlpg`` and ``kvm_mmu_sync_roots`` (``mmu.c``, ``paging_tmpl.h``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import ipywidgets as widgets
import pandas as pd

from kvmmu.errors import check_instance, check_strings
from kvmmu.hw.guest import GuestPageTables
from kvmmu.hw.x86 import PAGE_SHIFT, Access, PagingMode, Pte
from kvmmu.kvm.mmu import shadow_path
from kvmmu.kvm.vcpu import Vcpu, Vm
from kvmmu.teaching.lessons.l01_guest_page_tables import ENTRY_ADDR
from kvmmu.teaching.lessons.l05_write_protection import DATA_GVA, PTE_WINDOW, PWUA
from kvmmu.teaching.problems import Check, ExerciseError, Problem, fail, ok, parse_int, seeded_rng
from kvmmu.teaching.ui import panel, render_into

__all__ = [
    "SYNC_ACTIONS",
    "SYNC_FRAMES",
    "SyncProblem",
    "check_sync",
    "make_sync_widget",
    "sync_accesses_right",
    "sync_problem",
    "sync_run",
    "sync_view",
]


# ------------------------------------------------------------------------------------------------
# Edit, access, invlpg, CR3: a replay
# ------------------------------------------------------------------------------------------------

SYNC_ACTIONS = ("edit", "access", "invlpg", "cr3")
SYNC_FRAMES = (0x10_0000, 0x20_0000, 0x30_0000)  # the frames successive edits cycle through
_USER_READ = (Access.READ, True, True)  # the TLB class of a user read


def _sync_setup() -> tuple[Vm, Vcpu, GuestPageTables]:
    vm = Vm(64 << 20)
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4)
    pt.map(DATA_GVA, SYNC_FRAMES[0], writable=True, user=True)
    pt.map(PTE_WINDOW, pt.entry(DATA_GVA, 2) & ENTRY_ADDR, writable=True)
    vcpu = vm.create_vcpu(pt.cpu())
    return vm, vcpu, pt


ACTION_LIMIT = 1000
"""The most actions :func:`sync_run` replays."""


def _check_actions(actions: object) -> list[str]:
    """A list or tuple of names from :data:`SYNC_ACTIONS`."""
    done = check_strings("actions", actions, ExerciseError, limit=ACTION_LIMIT)
    for a in done:
        if a not in SYNC_ACTIONS:
            raise ExerciseError(
                f"actions: unknown action {a!r}; use one of {', '.join(SYNC_ACTIONS)}"
            )
    return done


def sync_run(actions: Sequence[str]) -> pd.DataFrame:
    """Replay ``actions`` on a fresh unsync-capable guest and show the state after each one.

    Actions: ``"edit"`` (the guest stores a new PTE for ``DATA_GVA`` through its own mapping
    of the table, pointing at the next frame of ``SYNC_FRAMES``), ``"access"`` (a user read of
    ``DATA_GVA``), ``"invlpg"`` and ``"cr3"`` (a reload of the same CR3). The first row is the
    state after one access. Columns: what the access returned, the frame in the guest PTE, the
    frame the leaf spte maps (read through ``get_gfn``), the frame the TLB holds, and whether
    the leaf shadow page is unsync. No kernel counterpart: a view of ``FNAME(sync_spte)``,
    ``kvm_mmu_invlpg`` and ``kvm_mmu_sync_roots`` at work.
    """
    actions = _check_actions(actions)
    vm, vcpu, pt = _sync_setup()
    rows: list[dict[str, object]] = []
    edits = 0

    def frame(value: int | None) -> str:
        return "-" if value is None else f"{value:#x}"

    def record(step: int, action: str, result: str) -> None:
        leaf_table = pt.entry(DATA_GVA, 2) & ENTRY_ADDR
        sps = [sp for sp in vm.mmu.pages_of(leaf_table >> PAGE_SHIFT) if sp.level == 1]
        sp, index = shadow_path(vcpu, DATA_GVA)[-1]
        spte = int(sp.spt[index])
        mapped = sp.get_gfn(index) << PAGE_SHIFT if sp.level == 1 and spte else None
        rows.append(
            {
                "step": step,
                "action": action,
                "access returns": result,
                "guest PTE ->": frame(pt.entry(DATA_GVA, 1) & ENTRY_ADDR),
                "spte ->": frame(mapped),
                "TLB ->": frame(vcpu.tlb.lookup(DATA_GVA, _USER_READ)),
                "unsync": bool(sps and sps[0].unsync),
            }
        )

    first = vcpu.access(DATA_GVA, Access.READ, cpl=3)
    record(0, "start (access)", frame(first if isinstance(first, int) else None))
    for step, action in enumerate(actions, 1):
        result = ""
        if action == "edit":
            edits += 1
            target = SYNC_FRAMES[edits % len(SYNC_FRAMES)]
            vcpu.write(PTE_WINDOW + 8 * ((DATA_GVA >> PAGE_SHIFT) & 511), target | PWUA | Pte.DIRTY)
        elif action == "access":
            got = vcpu.access(DATA_GVA, Access.READ, cpl=3)
            result = frame(got) if isinstance(got, int) else type(got).__name__
        elif action == "invlpg":
            vcpu.invlpg(DATA_GVA)
        else:
            vcpu.set_cr3(vcpu.cpu.cr3)
        record(step, action, result)
    return pd.DataFrame(rows).set_index("step")


def sync_view(actions: tuple[str, ...] | list[str] = ()) -> pd.DataFrame:
    """The lesson 6 widget's table: :func:`sync_run` for the actions
    so far.

    No kernel counterpart.
    """
    return sync_run(_check_actions(actions))


def make_sync_widget(actions: tuple[str, ...] = ()) -> Any:
    """Buttons edit / access / invlpg / CR3 reload / reset, in any order; the table shows the
    guest PTE, the spte, the TLB and the unsync flag after each action (:func:`sync_view`).

    Controls, in order: edit, access, invlpg, cr3, reset (Buttons). The actions so far are
    kept on the container as ``actions`` (a list).
    No kernel counterpart.
    """
    done: list[str] = _check_actions(actions)
    buttons = [widgets.Button(description=name) for name in SYNC_ACTIONS]
    reset = widgets.Button(description="reset")
    out = widgets.Output()

    def update() -> None:
        render_into(out, lambda: sync_view(tuple(done)))

    def press(name: str) -> Callable[[object], None]:
        def handler(_: object) -> None:
            done.append(name)
            update()

        return handler

    def restart(_: object) -> None:
        done.clear()
        update()

    for name, button in zip(SYNC_ACTIONS, buttons, strict=True):
        button.on_click(press(name))
    reset.on_click(restart)
    update()
    box = panel([*buttons, reset], out)
    box.actions = done
    return box


# ------------------------------------------------------------------------------------------------
# Exercise: predict a sync outcome
# ------------------------------------------------------------------------------------------------


@dataclass(slots=True, repr=False)
class SyncProblem(Problem):
    """Predict what each access returns in a sequence of edits, accesses, INVLPGs and CR3
    reloads on an unsync-capable guest."""

    seed: int | str
    text: str
    actions: tuple[str, ...]
    _table: pd.DataFrame = field(repr=False)


def sync_problem(seed: int | str) -> SyncProblem:
    """A random action sequence for :func:`sync_run` (``FNAME(sync_spte)``, invlpg and root
    sync at work); no kernel counterpart for the generator."""
    rng = seeded_rng(seed)
    while True:
        actions = ["edit"] + [rng.choice(SYNC_ACTIONS) for _ in range(rng.randrange(4, 7))]
        # at most two edits: a third would cycle back to the first frame and hide the lesson
        if actions.count("access") >= 2 and actions[-1] == "access" and actions.count("edit") < 3:
            break
    table = sync_run(actions)
    frames = ", ".join(f"{f:#x}" for f in SYNC_FRAMES)
    text = (
        f"A 4-level guest maps gva {DATA_GVA:#x} to gpa {SYNC_FRAMES[0]:#x} and has read it once "
        "(so the TLB and the shadow tables hold that translation). Leaf tables may go unsync.\n"
        f"Each 'edit' stores a new PTE pointing at the next frame of ({frames}), cycling; "
        "'access' is a user read of the gva; 'invlpg' invalidates it; 'cr3' reloads the same "
        "CR3.\nActions: " + " -> ".join(actions) + "\n"
        "Give the gpa each access returns, in order, as a list."
    )
    return SyncProblem(seed, text, tuple(actions), table)


def _check_problem(problem: object) -> None:
    check_instance("problem", problem, SyncProblem, "a SyncProblem (sync_problem)", ExerciseError)


def _check_answer(answer: object) -> None:
    if isinstance(answer, str) or not isinstance(answer, Sequence):
        raise ExerciseError("give the answer as a list of gpas, one per 'access'")


def sync_accesses_right(problem: SyncProblem, answer: Sequence[object]) -> list[bool]:
    """For each access of the problem, whether ``answer`` (a list of gpas, one per access) has
    the gpa it returns; a grader's partial credit per access (a missing gpa is wrong). No kernel
    counterpart.
    """
    _check_problem(problem)
    _check_answer(answer)
    table = problem._table
    right = [int(str(v), 16) for v in table[table["action"] == "access"]["access returns"]]
    given = [parse_int(f"access {n}", v) for n, v in enumerate(answer[: len(right)], 1)]
    return [n < len(given) and given[n] == r for n, r in enumerate(right)]


def check_sync(problem: SyncProblem, answer: Sequence[object]) -> Check:
    """Check the predicted gpas; the hint explains the first wrong access.

    No kernel counterpart: a lesson checker.
    """
    _check_problem(problem)
    _check_answer(answer)
    table = problem._table
    rows = table[table["action"] == "access"]
    if len(answer) != len(rows):
        return fail(f"give one gpa per access: there are {len(rows)} accesses")
    for n, ((_, row), given) in enumerate(zip(rows.iterrows(), answer, strict=True), 1):
        value = parse_int(f"access {n}", given)
        right = int(str(row["access returns"]), 16)
        if value == right:
            continue
        pte = int(str(row["guest PTE ->"]), 16)
        if right != pte:
            return fail(
                f"access {n} does not see the latest edit yet: since that edit, what has "
                "removed both the TLB entry and the stale unsync spte? (a lost TLB entry "
                "alone is refilled from the spte)"
            )
        if value not in SYNC_FRAMES:
            return fail(f"access {n}: only the frames the PTE has held can come back")
        return fail(
            f"access {n} misses both the TLB and the shadow tables, so it reads the guest PTE "
            "as last written: find what dropped the old translation before it (INVLPG syncs "
            "one spte, a CR3 load the whole page; sync drops an spte whose gfn changed)"
        )
    return ok("every access returns what the TLB, the shadow tables and sync_page give.")
