"""Seeded exercises and their checkers, for the notebooks and a classroom lab.

In the manner of OSTEP's paging simulators: a seed makes a fresh problem, the same seed always
the same one, and a checker tells a student what is wrong with an answer without giving the
answer away. Every problem is computed by running the real ``kvmmu`` code, so a checker's
verdict is what the MMU does. The kernel has no counterpart: this is the course's side.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from kvmmu.errors import KvmmuError
from kvmmu.hw.guest import GuestPageTables
from kvmmu.hw.memory import GuestMemory
from kvmmu.hw.walk import CpuState, PageFault, WalkResult, walk
from kvmmu.hw.x86 import PAGE_SHIFT, Acc, Access, PagingMode, PfErr, Pte
from kvmmu.kvm.mmu import shadow_path
from kvmmu.kvm.page import LEVEL_BITS, MmuPage
from kvmmu.kvm.role import MmuPageRole
from kvmmu.kvm.vcpu import Vcpu, Vm


class ExerciseError(KvmmuError, ValueError):
    """An answer or a problem argument of the wrong shape (not a wrong answer: that is a Check)."""


@dataclass(frozen=True, slots=True, repr=False)
class Check:
    """The verdict of one checker: ``passed`` and a hint that never states the answer."""

    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        return ("correct: " if self.passed else "not yet: ") + self.message

    __repr__ = __str__

    def _repr_markdown_(self) -> str:
        mark = "**correct**" if self.passed else "**not yet**"
        return f"{mark}: {self.message}"


def _fail(message: str) -> Check:
    return Check(False, message)


def _ok(message: str = "that is what the MMU does.") -> Check:
    return Check(True, message)


class Problem:
    """Shared display of a generated problem: ``text`` as a code block in a notebook."""

    text: str

    def __str__(self) -> str:
        return self.text

    __repr__ = __str__

    def _repr_markdown_(self) -> str:
        return "```text\n" + self.text + "\n```"


def _rng(seed: int | str) -> random.Random:
    """A private random stream for one problem; a student number in any form is a seed."""
    if isinstance(seed, bool) or not isinstance(seed, int | str):
        raise ExerciseError(f"a seed is an int or a string such as a student number, got {seed!r}")
    return random.Random(f"kvmmu:{seed}")


def _parse_int(name: str, value: object) -> int:
    if isinstance(value, bool):
        raise ExerciseError(f"{name} must be a number such as 0x1234, got {value!r}")
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip().replace("_", ""), 0)
        except ValueError:
            pass
    raise ExerciseError(f"{name} must be a number such as 0x1234, got {value!r}")


_ENTRY_ADDR = ((1 << 52) - 1) & ~0xFFF
_PWUA = int(Pte.PRESENT | Pte.WRITABLE | Pte.USER | Pte.ACCESSED)


# ------------------------------------------------------------------------------------------
# Scenario: a guest that writes its own page tables (lesson 5)
# ------------------------------------------------------------------------------------------

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
        self.vcpu.access(DATA_GVA + (i % self.pages) * 0x1000, Access.READ, cpl=3)

    def write_pte(self, i: int, *, accessed: bool = True, clear: bool = False) -> None:
        """Re-point data page ``i`` at the other frame run (or ``clear`` its PTE, as munmap
        does), then INVLPG it as Linux does."""
        gva = DATA_GVA + (i % self.pages) * 0x1000
        slot = PTE_WINDOW + 8 * ((gva >> PAGE_SHIFT) & 511)
        old = self.pt.entry(gva, 1) & _ENTRY_ADDR
        base = ALT_GPA if old < ALT_GPA else DATA_GPA
        flags = _PWUA if accessed else _PWUA & ~int(Pte.ACCESSED)
        value = 0 if clear else base + (i % self.pages) * 0x1000 | flags
        self.vcpu.write(slot, value, 8)
        self.vcpu.invlpg(gva)

    def write_pde(self, k: int) -> None:
        """Store a new (present) PDE in an unused slot of the data pages' page directory.

        No kernel counterpart: a lesson scenario.
        """
        slot = PDE_WINDOW + 8 * (PDE_SCRATCH_INDEX + k % 100)
        self.vcpu.write(slot, (0x200_0000 + k * 0x1000) | _PWUA, 8)

    def counters(self) -> pd.Series:
        """The counters this lesson is about (a selection of ``MmuStats``)."""
        return self.vm.mmu.stats.as_series()[list(COUNTERS)]


def table_writer(pages: int = 16, *, unsync: bool = False) -> TableWriter:
    """Build a :class:`TableWriter` guest, touch its data pages once, and zero the counters.

    ``unsync`` lets leaf tables go unsync (``Vm(allow_unsync=...)``); without it every PTE
    write is emulated, as in the 2010 kernel. No kernel counterpart.
    """
    if isinstance(pages, bool) or not isinstance(pages, int) or not 1 <= pages <= 64:
        raise ExerciseError(f"pages must be an int in 1..64, got {pages!r}")
    vm = Vm(64 << 20, allow_unsync=unsync)
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4)
    pt.map(DATA_GVA, DATA_GPA, length=pages * 0x1000, writable=True, user=True)
    pt.map(PTE_WINDOW, pt.entry(DATA_GVA, 2) & _ENTRY_ADDR, writable=True)
    pt.map(PDE_WINDOW, pt.entry(DATA_GVA, 3) & _ENTRY_ADDR, writable=True)
    guest = TableWriter(vm, vm.create_vcpu(pt.cpu()), pt, pages)
    for i in range(pages):
        guest.touch(i)
    for window in (PTE_WINDOW, PDE_WINDOW):  # the kernel has used its window mappings before
        guest.vcpu.access(window, Access.READ)
    vm.mmu.stats.reset()
    return guest


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

    The experiment behind the write-protection exercise; no kernel counterpart.
    """
    for name, n in (("pte_writes", pte_writes), ("pde_writes", pde_writes)):
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 1000:
            raise ExerciseError(f"{name} must be an int in 0..1000, got {n!r}")
    guest = table_writer(unsync=unsync)
    for i in range(pte_writes):
        guest.write_pte(i, accessed=accessed, clear=clear)
    for k in range(pde_writes):
        guest.write_pde(k)
    return guest.counters()


def table_write_workload(
    pte_rate: int, pde_rate: int = 0, *, accesses: int = 200, unsync: bool = False
) -> pd.Series:
    """Counters after ``accesses`` user reads with ``pte_rate`` PTE writes (and ``pde_rate``
    PDE writes) per 100 reads, spread evenly. The lesson 5 widget's model; no kernel
    counterpart.
    """
    for name, n in (("pte_rate", pte_rate), ("pde_rate", pde_rate)):
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 100:
            raise ExerciseError(
                f"{name} must be an int in 0..100 (writes per 100 reads), got {n!r}"
            )
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


# ------------------------------------------------------------------------------------------
# Scenario: unsync pages, invlpg and sync_page (lesson 6)
# ------------------------------------------------------------------------------------------

SYNC_ACTIONS = ("edit", "access", "invlpg", "cr3")
SYNC_FRAMES = (0x10_0000, 0x20_0000, 0x30_0000)  # the frames successive edits cycle through
_USER_READ = (Access.READ, True, True)  # the TLB class of a user read


def _sync_setup() -> tuple[Vm, Vcpu, GuestPageTables]:
    vm = Vm(64 << 20)
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4)
    pt.map(DATA_GVA, SYNC_FRAMES[0], writable=True, user=True)
    pt.map(PTE_WINDOW, pt.entry(DATA_GVA, 2) & _ENTRY_ADDR, writable=True)
    vcpu = vm.create_vcpu(pt.cpu())
    return vm, vcpu, pt


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
    actions = list(actions)
    for a in actions:
        if a not in SYNC_ACTIONS:
            raise ExerciseError(f"unknown action {a!r}; use one of {', '.join(SYNC_ACTIONS)}")
    vm, vcpu, pt = _sync_setup()
    rows: list[dict[str, object]] = []
    edits = 0

    def frame(value: int | None) -> str:
        return "-" if value is None else f"{value:#x}"

    def record(step: int, action: str, result: str) -> None:
        leaf_table = pt.entry(DATA_GVA, 2) & _ENTRY_ADDR
        sps = [sp for sp in vm.mmu.pages_of(leaf_table >> PAGE_SHIFT) if sp.level == 1]
        sp, index = shadow_path(vcpu, DATA_GVA)[-1]
        spte = int(sp.spt[index])
        mapped = sp.get_gfn(index) << PAGE_SHIFT if sp.level == 1 and spte else None
        rows.append(
            {
                "step": step,
                "action": action,
                "access returns": result,
                "guest PTE ->": frame(pt.entry(DATA_GVA, 1) & _ENTRY_ADDR),
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
            vcpu.write(
                PTE_WINDOW + 8 * ((DATA_GVA >> PAGE_SHIFT) & 511), target | _PWUA | Pte.DIRTY
            )
        elif action == "access":
            got = vcpu.access(DATA_GVA, Access.READ, cpl=3)
            result = frame(got) if isinstance(got, int) else type(got).__name__
        elif action == "invlpg":
            vcpu.invlpg(DATA_GVA)
        else:
            vcpu.set_cr3(vcpu.cpu.cr3)
        record(step, action, result)
    return pd.DataFrame(rows).set_index("step")


# ------------------------------------------------------------------------------------------
# Exercise: predict a walk (lessons 1-2)
# ------------------------------------------------------------------------------------------

_KINDS = {Access.READ: "read", Access.WRITE: "write", Access.FETCH: "instruction fetch"}
_A_KIND = {Access.READ: "a read", Access.WRITE: "a write", Access.FETCH: "an instruction fetch"}


def _table_dump(memory: GuestMemory, pt: GuestPageTables) -> list[str]:
    lines = []
    for gfn in pt.tables:
        words = memory.table_words(gfn, 8)
        assert words is not None
        entries = [(i, int(words[i])) for i in range(512) if words[i]]
        lines.append(f"table page at gpa {gfn << PAGE_SHIFT:#x}:")
        lines.extend(f"    [{i:3d}] = {e:#018x}" for i, e in entries)
    return lines


@dataclass(slots=True, repr=False)
class WalkProblem(Problem):
    """Predict a 4-level walk: the gpa an access reaches, or the #PF error code it raises."""

    seed: int | str
    gva: int
    access: Access
    cpl: int
    cpu: CpuState
    text: str
    memory: GuestMemory = field(repr=False)
    _result: WalkResult | PageFault = field(repr=False)


def walk_problem(seed: int | str) -> WalkProblem:
    """A fresh walk to predict, from ``seed``; no kernel counterpart (the walk itself is
    ``FNAME(walk_addr_generic)``).

    A 4-level guest with CR0.WP=1 and EFER.NXE=1 maps a few 4 KiB pages and a 2 MiB page with
    random rights; the problem lists every non-zero entry of every table page and asks for one
    access at one CPL.
    """
    rng = _rng(seed)
    memory = GuestMemory(64 << 20)
    pt = GuestPageTables(memory, PagingMode.LEVEL4)
    base = rng.randrange(1, 256) << 39 | rng.randrange(0, 512) << 30
    small = base | rng.randrange(0, 256) << 21
    large = base | rng.randrange(256, 512) << 21
    picks = rng.sample(range(512), 3)
    rights = [
        {"writable": rng.random() < 0.6, "user": rng.random() < 0.7, "nx": rng.random() < 0.3}
        for _ in range(4)
    ]
    for n, index in enumerate(picks):
        pt.map(small | index << 12, rng.randrange(0x100, 0x2F00) << 12, **rights[n])
    pt.map(large, rng.randrange(1, 24) << 21, "2M", **rights[3])
    if rng.random() < 0.25:  # a supervisor-only page directory entry above the small pages
        pt.set_entry(small, 2, pt.entry(small, 2) & ~int(Pte.USER))
    target = rng.choice(["small", "small", "large", "large", "unmapped"])
    if target == "small":
        gva = small | rng.choice(picks) << 12 | rng.randrange(0, 0x1000)
    elif target == "large":
        gva = large | rng.randrange(0, 1 << 21)
    else:
        free = sorted(set(range(512)) - set(picks))
        gva = small | rng.choice(free) << 12 | rng.randrange(0, 0x1000)
    access = rng.choice([Access.READ, Access.READ, Access.WRITE, Access.FETCH])
    cpl = rng.choice([0, 3, 3])
    cpu = pt.cpu(cpl=cpl)
    result = walk(memory, cpu, gva, access, set_ad=False)
    assert isinstance(result, WalkResult | PageFault)
    lines = [
        f"4-level paging, CR0.WP=1, EFER.NXE=1, CR3 = {pt.cr3:#x}",
        f"access: {_A_KIND[access]} at gva {gva:#x} from CPL {cpl}",
        "every non-zero entry of every table page:",
        *_table_dump(memory, pt),
        'answer: the gpa (an int), or "fault 0x.." with the #PF error code',
    ]
    return WalkProblem(seed, gva, access, cpl, cpu, "\n".join(lines), memory, result)


_PF_BITS = (
    (PfErr.PRESENT, "bit 0 (P) is 1 for a protection violation, 0 for a not-present entry"),
    (PfErr.WRITE, "bit 1 (W/R) says whether the access was a write"),
    (PfErr.USER, "bit 2 (U/S) says whether the access came from CPL 3"),
    (PfErr.RSVD, "bit 3 (RSVD) is set only when an entry has a reserved bit set"),
    (PfErr.FETCH, "bit 4 (I/D) is set for instruction fetches (with EFER.NXE or SMEP on)"),
)


def _parse_walk_answer(answer: object) -> tuple[str, int]:
    if isinstance(answer, str):
        text = answer.strip().lower()
        for prefix in ("fault", "#pf", "pf"):
            if text.startswith(prefix):
                return "fault", _parse_int("the error code", text[len(prefix) :].strip(" :="))
    if isinstance(answer, PageFault):
        return "fault", int(answer.error_code)
    return "gpa", _parse_int("the gpa", answer)


def check_walk(problem: WalkProblem, answer: int | str) -> Check:
    """Check a predicted walk outcome; the hint names the rule that was missed, not the value.

    ``answer`` is a gpa (int or ``"0x..."``) or ``"fault 0x.."`` with an error code.
    """
    kind, value = _parse_walk_answer(answer)
    result = problem._result
    if isinstance(result, PageFault):
        if kind == "gpa":
            return _fail(
                "this access does not complete: some entry on the path is not present or does "
                f"not allow a {_KINDS[problem.access]} from CPL {problem.cpl}; check P, R/W, "
                "U/S and XD at every level"
            )
        if value == int(result.error_code):
            return _ok(f"the walk faults with that error code ({result.reason}).")
        for bit, rule in _PF_BITS:
            if (value ^ int(result.error_code)) & bit:
                return _fail(f"the error code is wrong in one bit at least: {rule}")
        return _fail("the error code has bits that a #PF error code does not use here")
    if kind == "fault":
        return _fail(
            "the walk succeeds: every entry on the path is present and allows this access; "
            "which right did you think was missing?"
        )
    if value == result.gpa:
        return _ok(f"a {result.page_size >> 10} KiB page, rights checked at every level.")
    if value & 0xFFF != problem.gva & 0xFFF:
        return _fail("the low 12 bits of the gpa are the gva's page offset; yours differ")
    if result.level == 2:
        as_4k = (result.pte & _ENTRY_ADDR & ~0x1F_FFFF) | (problem.gva & 0xFFF)
        if value == as_4k:
            return _fail(
                "the index is right but you used the PDE's address bits for a 4 KiB page: "
                "PS (bit 7) is set, so the low 21 bits of the gva are the offset"
            )
        return _fail(
            "the frame is wrong: the walk ends at a PDE with PS (bit 7) set, a 2 MiB page; "
            "its address bits 51:21 plus the gva's low 21 bits make the gpa"
        )
    return _fail(
        "the frame is wrong: recompute each index (9 bits per level, the PML4 index from "
        "gva bits 47:39) and follow each entry's address bits 51:12 to the next table"
    )


# ------------------------------------------------------------------------------------------
# Exercise: predict a role (lesson 3)
# ------------------------------------------------------------------------------------------

ROLE_FIELDS = ("level", "direct", "has_4_byte_gpte", "quadrant", "access", "cr0_wp")
_ROLE_HINTS = {
    "level": "level: count down from where the walk starts, a level-{root} page for this guest",
    "direct": (
        "direct: a page is direct when it shadows no guest table (a guest large page backed "
        "by small host pages, or no guest paging at all)"
    ),
    "has_4_byte_gpte": "has_4_byte_gpte: which paging mode writes 4-byte guest entries?",
    "quadrant": (
        "quadrant: it is non-zero only where a 1024-entry 32-bit guest table is split over "
        "512-entry shadow pages; which half (or quarter) of the guest table does this one shadow?"
    ),
    "access": (
        "access: the rights (u, w, x) the guest entries above this page allow, ANDed "
        "together; below a guest large page that is not dirty yet, w is held back until the "
        "first write (FNAME(protect_clean_gpte))"
    ),
    "cr0_wp": "cr0_wp: the role copies one bit of the guest's CR0",
}


@dataclass(slots=True, repr=False)
class RoleProblem(Problem):
    """Predict the role of one shadow page that a shadow walk visits."""

    seed: int | str
    text: str
    position: int
    _role: MmuPageRole = field(repr=False)
    _root_level: int = field(repr=False)


def role_problem(seed: int | str) -> RoleProblem:
    """A guest, one access, and a shadow page on its path whose role to predict.

    The role is the one ``kvm_mmu_get_shadow_page`` gave the page (``kvm_mmu_child_role``
    from the root's ``kvm_init_shadow_mmu`` role); no kernel counterpart for the generator.
    """
    rng = _rng(seed)
    mode = rng.choice([PagingMode.BITS32, PagingMode.PAE, PagingMode.LEVEL4])
    large = rng.random() < 0.4
    wp = rng.random() < 0.5
    vm = Vm(64 << 20, huge_pages=False)
    pt = GuestPageTables(vm.memory, mode, wp=wp)
    if mode is PagingMode.LEVEL4:
        gva = rng.randrange(1, 256) << 39 | rng.randrange(0, 1 << 18) << 21
    else:
        gva = rng.randrange(1, 0x7FF) << 21
    size = ("4M" if mode is PagingMode.BITS32 else "2M") if large else "4K"
    if large:
        gva &= ~((1 << (22 if mode is PagingMode.BITS32 else 21)) - 1)
        gpa = rng.randrange(1, 12) << 22
    else:
        gva |= rng.randrange(0, 512) << 12
        gpa = rng.randrange(0x100, 0x2F00) << 12
    pt.map(gva, gpa, size, writable=True, user=True)
    notes = []
    if not large and rng.random() < 0.5:
        pt.set_entry(gva, 2, pt.entry(gva, 2) & ~int(Pte.WRITABLE))
        notes.append("its PDE is read-only")
    if not large and mode is not PagingMode.BITS32 and rng.random() < 0.4:
        pt.set_entry(gva, 2, pt.entry(gva, 2) | int(Pte.XD))
        notes.append("its PDE has XD set")
    vcpu = vm.create_vcpu(pt.cpu())
    got = vcpu.access(gva, Access.READ, cpl=3)
    assert isinstance(got, int), got
    path = shadow_path(vcpu, gva)
    position = rng.randrange(1, len(path) + 1)
    sp = path[position - 1][0]
    root_level = path[0][0].level
    what = f"a {size.replace('K', ' KiB').replace('M', ' MiB')} page"
    lines = [
        f"A {mode.value} guest (CR0.WP={int(wp)}, EFER.NXE=1) maps gva {gva:#x} with {what}"
        + (" and " + " and ".join(notes) if notes else "")
        + ".",
        "The host backs guest memory with 4 KiB pages only (no huge pages).",
        f"After a user read of {gva:#x} the shadow walk visits {len(path)} shadow pages.",
        f"Give the role of page number {position} on that path (1 = where the walk starts):",
        "a dict with " + ", ".join(ROLE_FIELDS) + " (access as letters, e.g. 'uw-').",
    ]
    return RoleProblem(seed, "\n".join(lines), position, sp.role, root_level)


def _parse_acc(value: object) -> int:
    if isinstance(value, str):
        letters = {"u": Acc.USER, "w": Acc.WRITE, "x": Acc.EXEC}
        acc = 0
        for ch in value.strip().lower():
            if ch in letters:
                acc |= letters[ch]
            elif ch not in "- ":
                raise ExerciseError(f"access letters are u, w, x and '-', got {value!r}")
        return acc
    return _parse_int("access", value) & int(Acc.ALL)


def check_role(problem: RoleProblem, answer: Mapping[str, object]) -> Check:
    """Check a predicted ``kvm_mmu_page_role``: the hint names the first wrong field and the
    rule behind it, never its value."""
    if not isinstance(answer, Mapping):
        raise ExerciseError("give the role as a dict, e.g. {'level': ..., 'direct': ..., ...}")
    missing = [f for f in ROLE_FIELDS if f not in answer]
    if missing:
        return _fail("give every field; missing: " + ", ".join(missing))
    role = problem._role
    wrong = []
    for name in ROLE_FIELDS:
        given = answer[name]
        if name == "access":
            same = _parse_acc(given) == role.access
        elif name in ("level", "quadrant"):
            same = _parse_int(name, given) == getattr(role, name)
        else:
            same = bool(given) == bool(getattr(role, name))
        if not same:
            wrong.append(name)
    if not wrong:
        return _ok(f"the page's role is {role.describe()}.")
    hint = _ROLE_HINTS[wrong[0]].format(root=problem._root_level)
    return _fail(f"{len(wrong)} field(s) wrong. First, {hint}")


# ------------------------------------------------------------------------------------------
# Exercise: predict a gfn of a direct page (the seed change)
# ------------------------------------------------------------------------------------------


@dataclass(slots=True, repr=False)
class GfnProblem(Problem):
    """Predict ``get_gfn(index)`` of a direct shadow page."""

    seed: int | str
    text: str
    page: MmuPage = field(repr=False)
    index: int


def gfn_problem(seed: int | str) -> GfnProblem:
    """A direct page (level 1..3, its first gfn) and an spte index; the answer comes from
    :meth:`kvmmu.kvm.page.MmuPage.get_gfn` (``kvm_mmu_page_get_gfn``)."""
    rng = _rng(seed)
    level = rng.choice([1, 2, 2, 3])
    gfn = rng.randrange(1, 64) << (LEVEL_BITS * level)
    index = rng.randrange(1, 512)
    role = MmuPageRole(level=level, direct=True)
    page = MmuPage(gfn, role, 0, np.zeros(512, dtype=np.uint64), None)
    text = (
        f"A direct shadow page: level {level}, gfn {gfn:#x} (its gfns array is None).\n"
        f"Which gfn does spte {index} map? (the first gfn of its range, as get_gfn returns it)"
    )
    return GfnProblem(seed, text, page, index)


def check_gfn(problem: GfnProblem, answer: int | str) -> Check:
    """Check a predicted ``kvm_mmu_page_get_gfn`` result; the hint names the slip."""
    value = _parse_int("the gfn", answer)
    sp, i = problem.page, problem.index
    right = sp.get_gfn(i)
    if value == right:
        return _ok("computed, not stored: that is why the seed could drop the gfns array.")
    step = LEVEL_BITS * (sp.level - 1)
    if value == right << PAGE_SHIFT:
        return _fail("that is a guest-physical address; give the frame number (the gfn)")
    if value == i << step:
        return _fail("you left out where the page's range starts: add the page's own gfn")
    if sp.level > 1 and value == sp.gfn + i:
        return _fail(
            "each spte of a page above level 1 maps more than one frame: how many frames "
            f"does one level-{sp.level} entry cover?"
        )
    for off in (-1, 1):
        shift = step + off * LEVEL_BITS
        if shift >= 0 and value == sp.gfn + (i << shift):
            return _fail(
                f"off by one level: you shifted the index by {shift} bits; a level-{sp.level} "
                "spte covers 512**(level-1) frames"
            )
    return _fail("gfns[i] = gfn + (i << ((level - 1) * 9)): recompute with this page's values")


# ------------------------------------------------------------------------------------------
# Exercise: predict a saving (lesson 7)
# ------------------------------------------------------------------------------------------


@dataclass(slots=True, repr=False)
class SavingProblem(Problem):
    """Predict the bytes of gfns arrays the seed change saves for one TDP guest."""

    seed: int | str
    text: str
    size_mib: int
    huge_pages: bool
    _table: pd.DataFrame = field(repr=False)


def saving_problem(seed: int | str) -> SavingProblem:
    """A TDP guest of a few MiB, fully touched; its shadow pages are counted by
    :func:`kvmmu.kvm.accounting.memory_by_era` (``kvm_mmu_alloc_page`` by era). No kernel
    counterpart for the generator.

    Touching one address in each 2 MiB region creates exactly the shadow pages that touching
    every 4 KiB page would (a page table is made by the first fault in its range), so the
    generator touches one to stay fast.
    """
    from kvmmu.kvm.accounting import memory_by_era

    rng = _rng(seed)
    size_mib = rng.choice([8, 16, 24, 32, 48, 64, 96, 128])
    huge = rng.random() < 0.35
    vm = Vm(size_mib << 20, tdp=True, huge_pages=huge)
    vcpu = vm.create_vcpu()
    for gpa in range(0, size_mib << 20, 1 << 21):
        vcpu.access(gpa, Access.READ)
    table = memory_by_era(vm)
    text = (
        f"A TDP guest with {size_mib} MiB of memory, every page touched once. The host "
        + ("backs it with 2 MiB huge pages." if huge else "backs it with 4 KiB pages only.")
        + "\nHow many bytes of gfns arrays does the 2010 seed change save, compared with the "
        "kernel before it?"
    )
    return SavingProblem(seed, text, size_mib, huge, table)


def check_saving(problem: SavingProblem, answer: int | str) -> Check:
    """Check a predicted saving in bytes; the hint says what was miscounted.

    No kernel counterpart: a lesson checker.
    """
    value = _parse_int("the saving", answer)
    gfns = problem._table["gfns bytes"]
    saved = int(gfns["pre-2010"] - gfns["2010 seed"])
    pages = int(problem._table["direct pages"]["pre-2010"])
    if value == saved:
        return _ok("one 4096-byte gfns page per direct shadow page, none of them needed.")
    if value == pages or value == saved // 8:
        return _fail("give bytes: each gfns array is 512 entries of 8 bytes")
    if value == 0:
        return _fail("before the seed every shadow page had a gfns array, direct ones too")
    if problem.huge_pages:
        return _fail(
            "count the shadow pages a TDP guest needs when 2 MiB sptes map its memory: the "
            "tables above the 2 MiB level, from the root down"
        )
    if value == (problem.size_mib // 2) * 4096:
        return _fail("you counted the last-level pages only: every level has direct pages")
    return _fail(
        "count the direct pages level by level: one last-level page maps 2 MiB, one page "
        "above it 1 GiB, and so on up to the root; each had a 4096-byte gfns array"
    )


# ------------------------------------------------------------------------------------------
# Exercise: fix a broken guest table
# ------------------------------------------------------------------------------------------

_BUGS = ("pde not present", "pde supervisor", "pte read-only", "pte reserved bit", "pte xd")


@dataclass(slots=True, repr=False)
class FixProblem(Problem):
    """A guest access that faults because of one wrong entry; give the entry that fixes it."""

    seed: int | str
    text: str
    gva: int
    gpa: int
    access: Access
    bug: str = field(repr=False)


def _fix_guest(seed: int | str) -> tuple[GuestMemory, GuestPageTables, FixProblem]:
    rng = _rng(seed)
    memory = GuestMemory(64 << 20)
    pt = GuestPageTables(memory, PagingMode.LEVEL4)
    gva = rng.randrange(1, 256) << 39 | rng.randrange(0, 1 << 27) << 12
    gva &= ~(1 << 12)  # the neighbour at gva + 4 KiB shares its page table
    gpa = rng.randrange(0x100, 0x2F00) << 12
    pt.map(gva, gpa, writable=True, user=True)
    pt.map(gva + 0x1000, gpa + 0x1000, writable=False, user=False)
    bug = rng.choice(_BUGS)
    access = {"pte read-only": Access.WRITE, "pte xd": Access.FETCH}.get(bug, Access.READ)
    level, flip = {
        "pde not present": (2, int(Pte.PRESENT)),
        "pde supervisor": (2, int(Pte.USER)),
        "pte read-only": (1, int(Pte.WRITABLE)),
        "pte reserved bit": (1, 1 << rng.randrange(40, 52)),
        "pte xd": (1, int(Pte.XD)),
    }[bug]
    pt.set_entry(gva, level, pt.entry(gva, level) ^ flip)
    lines = [
        f"A 4-level guest (MAXPHYADDR 40, EFER.NXE=1) wants {_A_KIND[access]} from CPL 3 at gva "
        f"{gva:#x} to reach gpa {gpa:#x}. It faults:",
    ]
    fault = walk(memory, pt.cpu(cpl=3), gva, access, set_ad=False)
    assert isinstance(fault, PageFault), fault
    lines.append(f"    #PF error code {int(fault.error_code):#x}")
    lines.append("The entries on the walk:")
    lines.extend("    " + step.describe() for step in fault.steps)
    lines.append(
        f"The read-only supervisor page at gva {gva + 0x1000:#x} (gpa {gpa + 0x1000:#x}) must "
        "keep working. Give (level, new value) of one entry: the fix; change no more than needed."
    )
    return memory, pt, FixProblem(seed, "\n".join(lines), gva, gpa, access, bug)


def fix_problem(seed: int | str) -> FixProblem:
    """A broken guest table from ``seed``: one entry on a path has a wrong bit.

    No kernel counterpart; the faults are ``FNAME(walk_addr_generic)``'s.
    """
    return _fix_guest(seed)[2]


def check_fix(problem: FixProblem, answer: Sequence[object]) -> Check:
    """Apply the proposed entry to a fresh copy of the guest and walk again.

    ``answer`` is ``(level, value)``: the entry at ``level`` on the gva's path is set to
    ``value`` (``GuestPageTables.set_entry``). The hint reports what the walk now does.
    """
    if isinstance(answer, str) or not isinstance(answer, Sequence) or len(answer) != 2:
        raise ExerciseError("give the fix as (level, value), e.g. (2, 0x1234067)")
    level = _parse_int("level", answer[0])
    value = _parse_int("value", answer[1])
    if not 1 <= level <= 4:
        return _fail("a 4-level walk has levels 1 (PTE) to 4 (PML4E)")
    memory, pt, _ = _fix_guest(problem.seed)
    try:
        before = pt.entry(problem.gva, level)
    except KvmmuError:
        return _fail(f"the walk never reaches level {level}: fix an entry it does read")
    if value >> 64:
        return _fail("an entry is 64 bits wide")
    pt.set_entry(problem.gva, level, value)
    got = walk(memory, pt.cpu(cpl=3), problem.gva, problem.access, set_ad=False)
    if isinstance(got, PageFault):
        where = got.steps[-1].name if got.steps else "the root"
        return _fail(
            f"the access still faults (error code {int(got.error_code):#x}) at the {where}"
        )
    assert isinstance(got, WalkResult)
    if got.gpa != problem.gpa:
        return _fail(
            f"the access completes but lands at gpa {got.gpa:#x}: keep the entry's address bits"
        )
    after = walk(memory, pt.cpu(), problem.gva + 0x1000, Access.READ, set_ad=False)
    if not isinstance(after, WalkResult) or after.gpa != problem.gpa + 0x1000:
        return _fail("the access works, but the neighbouring page now translates differently")
    changed = bin(before ^ value).count("1")
    ignored = bin((before ^ value) & int(Pte.ACCESSED | Pte.DIRTY)).count("1")
    if changed - ignored > 1:
        return Check(True, f"it works; {changed - ignored} bits changed where one would do.")
    return _ok(f"one bit was wrong ({problem.bug}).")


# ------------------------------------------------------------------------------------------
# Exercise: predict write-protection and emulation counters (lesson 5)
# ------------------------------------------------------------------------------------------

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
    "mmu_pte_updated": (
        "mmu_pte_updated: the MMU tries to refresh a leaf spte in place whenever the new guest "
        "PTE is not zero; a store of zero (an unmap) only drops the spte"
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
    rng = _rng(seed)
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


def check_counters(problem: CountersProblem, answer: Mapping[str, object]) -> Check:
    """Check predicted write-protection counters; the hint explains the first wrong one.

    No kernel counterpart: a lesson checker.
    """
    if not isinstance(answer, Mapping):
        raise ExerciseError("give the counters as a dict, e.g. {'pf_emulate': 3, ...}")
    missing = [f for f in WP_FIELDS if f not in answer]
    if missing:
        return _fail("give every counter; missing: " + ", ".join(missing))
    wrong = [f for f in WP_FIELDS if _parse_int(f, answer[f]) != problem._counters[f]]
    if not wrong:
        return _ok("those are the MMU's counters for this run.")
    return _fail(f"{len(wrong)} counter(s) wrong. First, {_WP_HINTS[wrong[0]]}")


# ------------------------------------------------------------------------------------------
# Exercise: predict a sync outcome (lesson 6)
# ------------------------------------------------------------------------------------------


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
    rng = _rng(seed)
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


def check_sync(problem: SyncProblem, answer: Sequence[object]) -> Check:
    """Check the predicted gpas; the hint explains the first wrong access.

    No kernel counterpart: a lesson checker.
    """
    if isinstance(answer, str) or not isinstance(answer, Sequence):
        raise ExerciseError("give a list of gpas, one per 'access'")
    table = problem._table
    rows = table[table["action"] == "access"]
    if len(answer) != len(rows):
        return _fail(f"give one gpa per access: there are {len(rows)} accesses")
    for n, ((_, row), given) in enumerate(zip(rows.iterrows(), answer, strict=True), 1):
        value = _parse_int(f"access {n}", given)
        right = int(str(row["access returns"]), 16)
        if value == right:
            continue
        pte = int(str(row["guest PTE ->"]), 16)
        if right != pte:
            return _fail(
                f"access {n} does not see the latest edit yet: since that edit, what has "
                "removed both the TLB entry and the stale unsync spte? (a lost TLB entry "
                "alone is refilled from the spte)"
            )
        if value not in SYNC_FRAMES:
            return _fail(f"access {n}: only the frames the PTE has held can come back")
        return _fail(
            f"access {n} misses both the TLB and the shadow tables, so it reads the guest PTE "
            "as last written: find what dropped the old translation before it (INVLPG syncs "
            "one spte, a CR3 load the whole page; sync drops an spte whose gfn changed)"
        )
    return _ok("every access returns what the TLB, the shadow tables and sync_page give.")


# ------------------------------------------------------------------------------------------
# Exercise: pick TDP or shadow paging (lesson 8), under a stated cost model
# ------------------------------------------------------------------------------------------

REF_CYCLES = 20  # one memory reference of a page walk (a mix of cache hits and misses)
EXIT_CYCLES = 2500  # one VM exit with its handling: an emulated PTE store, a CR3 load


def mode_costs(
    tlb_misses: float,
    pt_writes: float,
    cr3_loads: float,
    *,
    guest_levels: int = 4,
    tdp_levels: int = 4,
    ref_cycles: float = REF_CYCLES,
    exit_cycles: float = EXIT_CYCLES,
) -> pd.DataFrame:
    """Cycles per million guest instructions for shadow paging and TDP, under a plain model.

    The model, stated openly: a TLB miss costs its walk's memory references times
    ``ref_cycles``; under shadow paging each guest page-table store and each CR3 load is a VM
    exit costing ``exit_cycles`` (emulation, sync); under TDP neither exits. Page faults for
    first touches exit in both modes and are left out; so are caches of paging structures.
    Rows ``shadow`` and ``tdp``; columns ``walk cycles``, ``exit cycles``, ``total cycles``.
    No kernel counterpart.
    """
    for name, v in (("tlb_misses", tlb_misses), ("pt_writes", pt_writes), ("cr3_loads", cr3_loads)):
        if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
            raise ExerciseError(f"{name} must be a non-negative number per million instructions")
    from kvmmu.kvm.tdp import shadow_refs, two_dimensional_refs

    shadow_walk = tlb_misses * shadow_refs(guest_levels) * ref_cycles
    tdp_walk = tlb_misses * two_dimensional_refs(guest_levels, tdp_levels) * ref_cycles
    shadow_exit = (pt_writes + cr3_loads) * exit_cycles
    frame = pd.DataFrame(
        {
            "walk cycles": [shadow_walk, tdp_walk],
            "exit cycles": [shadow_exit, 0.0],
        },
        index=pd.Index(["shadow", "tdp"], name="mode"),
    )
    frame["total cycles"] = frame["walk cycles"] + frame["exit cycles"]
    return frame


def mode_winner(tlb_misses: float, pt_writes: float, cr3_loads: float, **model: int) -> str:
    """``"tdp"`` or ``"shadow"``: the cheaper mode under :func:`mode_costs` (ties go to TDP,
    what KVM uses whenever the CPU has EPT/NPT). No kernel counterpart."""
    costs = mode_costs(tlb_misses, pt_writes, cr3_loads, **model)["total cycles"]
    return "shadow" if costs["shadow"] < costs["tdp"] else "tdp"


@dataclass(slots=True, repr=False)
class ModeProblem(Problem):
    """Pick the cheaper paging mode for a workload under :func:`mode_costs`."""

    seed: int | str
    text: str
    tlb_misses: int
    pt_writes: int
    cr3_loads: int


def mode_problem(seed: int | str) -> ModeProblem:
    """A workload mix from ``seed``; the answer is :func:`mode_winner`. No kernel counterpart."""
    rng = _rng(seed)
    tlb = rng.choice([100, 300, 1000, 3000, 10000])
    writes = rng.choice([0, 20, 100, 400])
    cr3 = rng.choice([0, 10, 50, 200])
    text = (
        f"Per million guest instructions a workload takes {tlb} TLB misses, makes {writes} "
        f"page-table stores and {cr3} CR3 loads (4-level guest, 4-level TDP tables).\n"
        f"Cost model: {REF_CYCLES} cycles per walk memory reference, {EXIT_CYCLES} cycles per "
        "VM exit; under shadow paging every page-table store and CR3 load exits, under TDP "
        "none does.\nWhich mode is cheaper: 'tdp' or 'shadow'?"
    )
    return ModeProblem(seed, text, tlb, writes, cr3)


def check_mode(problem: ModeProblem, answer: str) -> Check:
    """Check the chosen mode; the hint says which side of the ledger was misjudged.

    No kernel counterpart: a lesson checker.
    """
    if answer == "":
        return _fail("no answer yet: answer 'tdp' or 'shadow'")
    if not isinstance(answer, str) or answer.strip().lower() not in ("tdp", "shadow"):
        raise ExerciseError("answer 'tdp' or 'shadow'")
    right = mode_winner(problem.tlb_misses, problem.pt_writes, problem.cr3_loads)
    if answer.strip().lower() == right:
        return _ok("that mode costs fewer cycles under the model.")
    if right == "shadow":
        return _fail(
            "weigh the walks: a 4-on-4 TDP walk makes far more memory references than a "
            "shadow walk, and this workload misses the TLB often"
        )
    return _fail(
        "weigh the exits: each one costs as much as many walk references; count how many "
        "this workload would take under shadow paging"
    )


# ------------------------------------------------------------------------------------------
# The lab: one seed, every exercise, one score table
# ------------------------------------------------------------------------------------------

LAB = {
    "walk": (walk_problem, check_walk, 2),
    "role": (role_problem, check_role, 2),
    "gfn": (gfn_problem, check_gfn, 1),
    "saving": (saving_problem, check_saving, 1),
    "fix": (fix_problem, check_fix, 2),
    "counters": (counters_problem, check_counters, 2),
    "sync": (sync_problem, check_sync, 2),
    "mode": (mode_problem, check_mode, 1),
}
"""Exercise name -> (generator, checker, points)."""


def lab_problems(seed: int | str) -> dict[str, Problem]:
    """Every lab exercise for one student's seed, in lesson order. No kernel counterpart."""
    return {name: gen(seed) for name, (gen, _, _) in LAB.items()}


def check_lab(seed: int | str, answers: Mapping[str, object]) -> pd.DataFrame:
    """Grade one student's answers: one row per exercise (``points``, ``max``, ``passed``,
    ``message``). A missing answer scores 0; a malformed one scores 0 and says what shape is
    expected. No kernel counterpart.
    """
    if not isinstance(answers, Mapping):
        raise ExerciseError("answers must be a dict: exercise name -> answer")
    unknown = sorted(set(answers) - set(LAB))
    if unknown:
        raise ExerciseError(f"unknown exercise(s) {unknown}; the lab has {list(LAB)}")
    rows = []
    for name, (gen, check, points) in LAB.items():
        if name not in answers or answers[name] is None:
            verdict = _fail("no answer")
        else:
            try:
                verdict = check(gen(seed), answers[name])  # type: ignore[operator]
            except ExerciseError as err:
                verdict = _fail(f"answer not understood: {err}")
        rows.append(
            {
                "exercise": name,
                "points": points if verdict.passed else 0,
                "max": points,
                "passed": verdict.passed,
                "message": verdict.message,
            }
        )
    return pd.DataFrame(rows).set_index("exercise")


def grade_lab(submissions: Mapping[int | str, Mapping[str, object]]) -> pd.DataFrame:
    """Grade a class: student seed -> answers. One row per student, one column of points per
    exercise and a ``total``. No kernel counterpart."""
    if not isinstance(submissions, Mapping):
        raise ExerciseError("submissions must be a dict: student seed -> answers dict")
    rows = {}
    for seed, answers in submissions.items():
        table = check_lab(seed, answers)
        rows[seed] = {**table["points"].to_dict(), "total": int(table["points"].sum())}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "seed"
    return frame


def lab_solutions(seed: int | str) -> dict[str, object]:
    """The answers for one seed, for an instructor's key (OSTEP's ``-c``). No kernel counterpart."""
    p = lab_problems(seed)
    walk_p, role_p = p["walk"], p["role"]
    assert isinstance(walk_p, WalkProblem) and isinstance(role_p, RoleProblem)
    result = walk_p._result
    walk_answer: object = (
        f"fault {int(result.error_code):#x}" if isinstance(result, PageFault) else result.gpa
    )
    role = role_p._role
    gfn_p, saving_p, fix_p = p["gfn"], p["saving"], p["fix"]
    assert isinstance(gfn_p, GfnProblem) and isinstance(saving_p, SavingProblem)
    assert isinstance(fix_p, FixProblem)
    counters_p, sync_p, mode_p = p["counters"], p["sync"], p["mode"]
    assert isinstance(counters_p, CountersProblem) and isinstance(sync_p, SyncProblem)
    assert isinstance(mode_p, ModeProblem)
    gfns = saving_p._table["gfns bytes"]
    memory, pt, _ = _fix_guest(seed)
    del memory
    level, value = _fix_answer(fix_p, pt)
    accesses = sync_p._table[sync_p._table["action"] == "access"]["access returns"]
    return {
        "walk": walk_answer,
        "role": {f: getattr(role, f) for f in ROLE_FIELDS},
        "gfn": gfn_p.page.get_gfn(gfn_p.index),
        "saving": int(gfns["pre-2010"] - gfns["2010 seed"]),
        "fix": (level, value),
        "counters": dict(counters_p._counters),
        "sync": [int(str(v), 16) for v in accesses],
        "mode": mode_winner(mode_p.tlb_misses, mode_p.pt_writes, mode_p.cr3_loads),
    }


def _fix_answer(problem: FixProblem, pt: GuestPageTables) -> tuple[int, int]:
    flips = {
        "pde not present": (2, int(Pte.PRESENT)),
        "pde supervisor": (2, int(Pte.USER)),
        "pte read-only": (1, int(Pte.WRITABLE)),
        "pte xd": (1, int(Pte.XD)),
    }
    if problem.bug == "pte reserved bit":
        entry = pt.entry(problem.gva, 1)
        return 1, entry & ~((1 << 52) - (1 << 40))
    level, bit = flips[problem.bug]
    return level, pt.entry(problem.gva, level) ^ bit


# ------------------------------------------------------------------------------------------
# Exercise: predict the shadow pages one fault creates (lesson 2)
# ------------------------------------------------------------------------------------------


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
    rng = _rng(seed)
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
    value = _parse_int("the number of pages", answer)
    right = problem._created
    if value == right:
        return _ok("one new shadow page per guest table the earlier access did not go through.")
    if value > 4:
        return _fail("a 4-level path holds at most 4 shadow pages, the root among them")
    if value == 4:
        return _fail("the root (the PML4's shadow) exists since the vCPU first ran: it is reused")
    if value > right:
        return _fail(
            "some tables on this path are shared with the earlier access: compare the two "
            "addresses' indices level by level, from bits 47:39 down"
        )
    return _fail(
        "below the first level where the two paths part, every guest table is new to the MMU "
        "and each needs its own shadow page"
    )
