"""Lesson 3, the shadow page's role: the views, widget and exercise of
``notebooks/03_mmu_page_role.ipynb``.

Every field of ``union kvm_mmu_page_role`` and its bits, small guests where one gfn gets several
shadow pages (CR0.WP, the quadrants of a 32-bit guest, access, a guest large page), the pages one
guest/host setup needs and its widget, the shadow MMU run over a real Linux address space, and an
exercise: predict the role of a page on a shadow walk. The roles are the ones
``kvm_mmu_get_shadow_page`` and ``kvm_mmu_child_role`` (``mmu.c``) give.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import ipywidgets as widgets
import numpy as np
import pandas as pd

from kvmmu.errors import (
    KvmmuError,
    ModeError,
    check_bool,
    check_choice,
    check_count,
    check_instance,
)
from kvmmu.hw.capture import Capture, ptdump
from kvmmu.hw.guest import GuestPageTables
from kvmmu.hw.memory import GuestMemory
from kvmmu.hw.walk import CpuState
from kvmmu.hw.x86 import Acc, Access, PagingMode, Pte
from kvmmu.kvm.mmu import shadow_path
from kvmmu.kvm.role import ROLE_LAYOUT, MmuPageRole
from kvmmu.kvm.vcpu import Vm
from kvmmu.teaching.draw import check_frame, role_frame
from kvmmu.teaching.lessons.l01_guest_page_tables import KERNEL_HALF, region_of
from kvmmu.teaching.memo import pure
from kvmmu.teaching.problems import Check, ExerciseError, Problem, fail, ok, parse_int, seeded_rng
from kvmmu.teaching.ui import wire

__all__ = [
    "ROLE_FIELDS",
    "ROLE_MEANINGS",
    "SETUP_CONTROLS",
    "RoleProblem",
    "capture_shadow_census",
    "check_role",
    "make_role_widget",
    "role_field_right",
    "role_layout_table",
    "role_problem",
    "role_scenario",
    "role_setup_view",
    "setup_shadow_pages",
]


# ------------------------------------------------------------------------------------------------
# The role word, field by field
# ------------------------------------------------------------------------------------------------

ROLE_MEANINGS: dict[str, str] = {
    "level": "level of the shadow page: 1 holds leaf sptes, 4 (or 5) is a 64-bit root",
    "has_4_byte_gpte": "the shadowed guest table has 4-byte entries (32-bit paging)",
    "quadrant": "which part of a 32-bit guest table this page shadows (0..3 at L2, 0..1 at L1)",
    "direct": "maps a linear gfn range, shadows no guest table; no gfns array (the seed)",
    "access": "rights (u, w, x) granted by the guest entries above this page",
    "invalid": "zapped while still a root; never found by a lookup again",
    "efer_nx": "EFER.NX: the guest's XD bits mean something",
    "cr0_wp": "CR0.WP: supervisor writes honour R/W",
    "smep_andnot_wp": "CR4.SMEP set while CR0.WP is clear",
    "smap_andnot_wp": "CR4.SMAP set while CR0.WP is clear",
    "ad_disabled": "EPT without accessed/dirty bits (not modelled: always 0)",
    "guest_mode": "a nested guest's page (not modelled: always 0)",
    "passthrough": "a root that shadows no guest table (a PAE guest under 4-level tables)",
    "smm": "System Management Mode address space (0 outside SMM)",
}


def role_layout_table() -> pd.DataFrame:
    """Every field of ``union kvm_mmu_page_role`` with its bits in ``role.word`` and meaning."""
    rows = []
    for name, (shift, width) in ROLE_LAYOUT.items():
        bits = f"{shift}" if width == 1 else f"{shift + width - 1}:{shift}"
        rows.append({"field": name, "bits": bits, "width": width, "meaning": ROLE_MEANINGS[name]})
    return pd.DataFrame(rows).set_index("field")


# ------------------------------------------------------------------------------------------------
# One gfn, several shadow pages
# ------------------------------------------------------------------------------------------------


ROLE_SCENARIOS = ("cr0_wp", "quadrants", "access", "large_guest_page")
"""The scenarios of :func:`role_scenario`."""


def role_scenario(name: str) -> pd.DataFrame:
    """Small guests where one gfn gets several shadow pages, one per role.

    * ``"cr0_wp"``: the guest toggles CR0.WP; the same tables are shadowed again with
      ``cr0_wp=0`` (the old pages stay in the hash, role mismatch);
    * ``"quadrants"``: a 32-bit guest; its page directory has four level-2 shadow pages
      (quadrant 0..3) and a 1024-entry page table two level-1 pages (quadrant 0, 1);
    * ``"access"``: one guest page table reached through a user PDE and a supervisor PDE: two
      level-1 pages that differ only in ``role.access``;
    * ``"large_guest_page"``: a guest 2 MiB page on a host without huge pages, backed by a
      direct level-1 page.

    The kernel decides all of these in ``kvm_mmu_get_shadow_page`` (hash lookup by gfn and
    ``role.word``).
    """
    check_choice("name", name, ROLE_SCENARIOS, ModeError)
    vm = Vm(16 << 20, huge_pages=name != "large_guest_page")
    if name == "cr0_wp":
        pt = GuestPageTables(vm.memory, PagingMode.LEVEL4)
        pt.map(0x400000, 0x400000, user=True)
        vcpu = vm.create_vcpu(pt.cpu())
        vcpu.access(0x400000, Access.READ)
        vcpu.set_registers(cr0=pt.cpu(wp=False).cr0)
        vcpu.access(0x400000, Access.READ)
    elif name == "quadrants":
        pt = GuestPageTables(vm.memory, PagingMode.BITS32)
        pt.map(0x400000, 0x400000, user=True)  # PT entry 0: first half of the guest PT
        pt.map(0x600000, 0x600000, user=True)  # PT entry 512: second half
        vcpu = vm.create_vcpu(pt.cpu())
        vcpu.access(0x400000, Access.READ)
        vcpu.access(0x600000, Access.READ)
    elif name == "access":
        pt = GuestPageTables(vm.memory, PagingMode.LEVEL4)
        pt.map(0x400000, 0x400000, user=True)
        pde = pt.entry(0x400000, 2)
        pt.set_entry(0x800000, 2, pde & ~int(Pte.USER))  # same PT, supervisor-only PDE
        vcpu = vm.create_vcpu(pt.cpu())
        vcpu.access(0x400000, Access.READ)
        vcpu.access(0x800000, Access.READ)
    elif name == "large_guest_page":
        pt = GuestPageTables(vm.memory, PagingMode.LEVEL4)
        pt.map(0x400000, 0x400000, size="2M", user=True)
        vcpu = vm.create_vcpu(pt.cpu())
        vcpu.access(0x400000, Access.READ)
        vcpu.access(0x401000, Access.READ)
    else:
        raise KvmmuError(
            f"unknown scenario {name!r}; pick cr0_wp, quadrants, access or large_guest_page"
        )
    return role_frame([sp for sp in vm.mmu.active if not sp.role.invalid])


# ------------------------------------------------------------------------------------------------
# Which pages a setup needs, and its widget
# ------------------------------------------------------------------------------------------------

_MODES = {m.value: m for m in PagingMode}


def _mode(mode: object) -> PagingMode:
    if isinstance(mode, PagingMode):
        return mode
    return _MODES[check_choice("mode", mode, tuple(_MODES), ModeError)]


_SETUP_MEMORY = 16 << 20  # the setup guest's memory


@pure(maxsize=32)
def _setup_guest_tables(
    mode: PagingMode, cr0_wp: bool, large_guest_pages: bool
) -> tuple[dict[int, bytes], CpuState]:
    """The setup guest's page tables, as the frames that hold them (by gfn) and its registers.

    The guest side of a setup does not depend on the host's (TDP, huge pages), so the role
    widget's five setups for one mode write the same 4 MiB map: it is written once, in a
    memory of the setup's size (the same table frames), and copied into each setup's VM.
    """
    memory = GuestMemory(_SETUP_MEMORY)
    pt = GuestPageTables(memory, mode, wp=cr0_wp)
    size = pt.page_sizes[1] if large_guest_pages else pt.page_sizes[0]
    pt.map(0x400000, 0x400000, size=size, length=4 << 20, user=True)
    return {gfn: memory.page(gfn).tobytes() for gfn in pt.tables}, pt.cpu(cpl=3)


def _check_setup(
    mode: object = PagingMode.LEVEL4,
    cr0_wp: object = True,
    tdp: object = False,
    large_guest_pages: object = False,
    host_huge_pages: object = True,
) -> None:
    """What :func:`setup_shadow_pages` accepts, checked before its cache is consulted."""
    _mode(mode)
    for name, flag in (
        ("cr0_wp", cr0_wp),
        ("tdp", tdp),
        ("large_guest_pages", large_guest_pages),
        ("host_huge_pages", host_huge_pages),
    ):
        check_bool(name, flag, ModeError)


@pure(check=_check_setup)
def setup_shadow_pages(
    mode: str | PagingMode = PagingMode.LEVEL4,
    cr0_wp: bool = True,
    tdp: bool = False,
    large_guest_pages: bool = False,
    host_huge_pages: bool = True,
) -> pd.DataFrame:
    """The shadow pages one small guest needs, for one setup of guest and host.

    The guest maps 4 MiB of user memory at 0x400000 with 4 KiB pages, or with large pages
    (2 MiB, 4 MiB in 32-bit paging) when ``large_guest_pages``; then it reads two addresses
    2 MiB apart, and its kernel writes the first. What pages appear and with which roles is
    decided by ``kvm_mmu_get_shadow_page``/``kvm_mmu_child_role`` (shadow paging) or
    ``direct_map`` (TDP, paging off). Cached (:func:`kvmmu.teaching.memo.pure`): the role
    widget asks for every setup one toggle away from the shown one.
    """
    m = _mode(mode)
    vm = Vm(_SETUP_MEMORY, tdp=tdp, huge_pages=host_huge_pages)
    if m is PagingMode.NONE:
        vcpu = vm.create_vcpu()
        base = 0x400000
    else:
        frames, cpu = _setup_guest_tables(m, cr0_wp, large_guest_pages)
        for gfn, words in frames.items():
            vm.memory.page(gfn)[:] = np.frombuffer(words, dtype=np.uint64)
        vcpu = vm.create_vcpu(cpu)
        base = 0x400000
    for gva, kind, cpl in (
        (base, Access.READ, 3),
        (base + (2 << 20), Access.READ, 3),
        (base, Access.WRITE, 0),
    ):
        result = vcpu.access(gva, kind, cpl=cpl)
        if not isinstance(result, int):
            raise KvmmuError(f"the setup's access to {gva:#x} faulted ({result}): a kvmmu bug")
    return role_frame(vm)


SETUP_CONTROLS = ("CR0.WP", "TDP", "guest large pages", "host huge pages")
"""The yes/no controls of :func:`make_role_widget`, in the order of :func:`setup_shadow_pages`."""


def role_setup_view(
    mode: str | PagingMode = PagingMode.LEVEL4,
    cr0_wp: bool = True,
    tdp: bool = False,
    large_guest_pages: bool = False,
    host_huge_pages: bool = True,
    previous: pd.DataFrame | None = None,
) -> tuple[str, pd.DataFrame]:
    """The role widget's view: :func:`setup_shadow_pages` with a ``changed`` column (``new``
    for a page, by gfn and role word, that ``previous`` did not have) and a line naming the
    controls that would change nothing in this setup (guest large pages under TDP, say): each
    is toggled and the pages compared. No kernel counterpart.
    """
    _check_setup(mode, cr0_wp, tdp, large_guest_pages, host_huge_pages)
    if previous is not None:
        check_frame("previous", previous, ["gfn", "word"])
    flags = [cr0_wp, tdp, large_guest_pages, host_huge_pages]
    pages = setup_shadow_pages(mode, *flags)
    idle = []
    for n, name in enumerate(SETUP_CONTROLS):
        toggled = [not f if k == n else f for k, f in enumerate(flags)]
        if setup_shadow_pages(mode, *toggled).equals(pages):
            idle.append(name)
    text = (
        "no effect in this setup: " + ", ".join(idle)
        if idle
        else "every control changes the shadow pages here"
    )
    frame = pages.copy()
    if previous is not None:
        before = set(zip(previous["gfn"], previous["word"], strict=True))
        frame["changed"] = [
            "" if key in before else "new" for key in zip(frame["gfn"], frame["word"], strict=True)
        ]
        gone = len(before - set(zip(frame["gfn"], frame["word"], strict=True)))
        text += f"\nsince the last setup: {(frame['changed'] == 'new').sum()} new, {gone} gone"
    return text, frame


WIDGET_MODES = ("paging off", "32-bit", "PAE", "4-level", "5-level")
"""The role widget's paging modes (``PagingMode`` values)."""


def make_role_widget(
    mode: str = "4-level",
    cr0_wp: bool = True,
    tdp: bool = False,
    large_guest_pages: bool = False,
    host_huge_pages: bool = True,
) -> Any:
    """Change the guest's setup and see which shadow pages exist, with their roles.

    Shows :func:`role_setup_view`: the pages, which controls have no effect, and from the
    first change on what changed. Controls, in order: mode (Dropdown), CR0.WP, TDP, guest large
    pages, host huge pages (Checkboxes).

    No kernel counterpart: a widget over :func:`setup_shadow_pages`.
    """
    check_choice("mode", mode, WIDGET_MODES, ModeError)
    _check_setup(PagingMode.LEVEL4, cr0_wp, tdp, large_guest_pages, host_huge_pages)
    modes = widgets.Dropdown(
        options=["paging off", "32-bit", "PAE", "4-level", "5-level"],
        value=mode,
        description="mode",
    )
    wp = widgets.Checkbox(value=cr0_wp, description="CR0.WP")
    use_tdp = widgets.Checkbox(value=tdp, description="TDP")
    large = widgets.Checkbox(value=large_guest_pages, description="guest large pages")
    huge = widgets.Checkbox(value=host_huge_pages, description="host huge pages")
    shown: list[pd.DataFrame] = []  # the setup on screen, to mark what the next one changes

    def view() -> tuple[str, pd.DataFrame]:
        previous = shown[-1] if shown else None
        text, frame = role_setup_view(
            modes.value, wp.value, use_tdp.value, large.value, huge.value, previous
        )
        shown[:] = [frame]
        return text, frame

    return wire([modes, wp, use_tdp, large, huge], view)


# ------------------------------------------------------------------------------------------------
# A real Linux address space under the shadow MMU
# ------------------------------------------------------------------------------------------------


CENSUS_LIMIT = 1 << 16
"""The most kernel leaves per region :func:`capture_shadow_census` reads."""


def capture_shadow_census(
    capture: Capture, *, kernel_per_region: int = 64
) -> tuple[pd.Series, pd.DataFrame]:
    """Run the shadow MMU over a real Linux address space and count the pages it builds.

    A Vm is built around the capture's guest memory; every user leaf is read at CPL 3 and up
    to ``kernel_per_region`` kernel leaves of each memory-map region (evenly spaced, so the
    choice is deterministic) at CPL 0. Returns a summary (accesses, outcomes, shadow pages,
    direct and indirect, gfns bytes) and the pages per level. The pages are what
    ``FNAME(fetch)`` creates for these translations.
    """
    check_instance("capture", capture, Capture, "a Capture (kvmmu.hw.capture.load_capture)")
    check_count("kernel_per_region", kernel_per_region, maximum=CENSUS_LIMIT, error=ModeError)
    dump = ptdump(capture.memory, capture.cpu)
    gvas = dump["gva"].to_numpy(dtype=np.uint64)
    kernel = gvas >= np.uint64(KERNEL_HALF)
    chosen = [int(g) for g in gvas[~kernel]]
    user_count = len(chosen)
    regions = region_of(gvas[kernel])
    kernel_gvas = gvas[kernel]
    for r in np.unique(regions):
        members = kernel_gvas[regions == r]
        take = np.linspace(0, len(members) - 1, min(kernel_per_region, len(members))).astype(int)
        chosen.extend(int(g) for g in members[np.unique(take)])
    vm = Vm(memory=capture.memory, maxphyaddr=capture.cpu.maxphyaddr)
    vcpu = vm.create_vcpu(capture.cpu)
    outcomes = {"mapped": 0, "guest fault": 0}
    for i, gva in enumerate(chosen):
        result = vcpu.access(gva, Access.READ, cpl=3 if i < user_count else 0)
        outcomes["mapped" if isinstance(result, int) else "guest fault"] += 1
    pages = [sp for sp in vm.mmu.active if not sp.role.invalid]
    direct = sum(sp.direct for sp in pages)
    summary = pd.Series(
        {
            "user leaves touched": user_count,
            "kernel leaves touched": len(chosen) - user_count,
            "accesses mapped": outcomes["mapped"],
            "guest faults": outcomes["guest fault"],
            "shadow pages": len(pages),
            "direct pages": direct,
            "indirect pages": len(pages) - direct,
            "gfns bytes allocated": sum(sp.gfns_bytes for sp in pages),
            "pf_fixed": vm.mmu.stats.pf_fixed,
        },
        name=capture.name,
    )
    per_level = (
        pd.DataFrame({"level": [sp.level for sp in pages], "direct": [sp.direct for sp in pages]})
        .groupby(["level", "direct"])
        .size()
        .unstack(fill_value=0)
        .rename(columns={False: "indirect", True: "direct"})
    )
    per_level.columns.name = None
    return summary, per_level


# ------------------------------------------------------------------------------------------------
# Exercise: predict a role
# ------------------------------------------------------------------------------------------------

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
    rng = seeded_rng(seed)
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
                raise ExerciseError(f"given access must be letters u, w, x or '-', got {value!r}")
        return acc
    return parse_int("given access", value) & int(Acc.ALL)


def _parse_bit(name: str, value: object) -> bool:
    """A one-bit role field: True/False or 0/1 (a truthy ``"no"`` is not an answer)."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer) and value in (0, 1):
        return bool(value)
    raise ExerciseError(f"given {name} must be True or False (or 1 or 0), got {value!r}")


def role_field_right(problem: RoleProblem, name: str, given: object) -> bool:
    """Whether ``given`` is the value of role field ``name`` (one of :data:`ROLE_FIELDS`) of
    the problem's page; a grader's partial credit per field. A value of the wrong shape raises
    :class:`ExerciseError`. No kernel counterpart.
    """
    check_instance("problem", problem, RoleProblem, "a RoleProblem (role_problem)", ExerciseError)
    check_choice("name", name, ROLE_FIELDS, ExerciseError)
    role = problem._role
    if name == "access":
        return _parse_acc(given) == role.access
    if name in ("level", "quadrant"):
        return parse_int(f"given {name}", given) == int(getattr(role, name))
    return _parse_bit(name, given) == bool(getattr(role, name))


def check_role(problem: RoleProblem, answer: Mapping[str, object]) -> Check:
    """Check a predicted ``kvm_mmu_page_role``: the hint names the first wrong field and the
    rule behind it, never its value."""
    check_instance("problem", problem, RoleProblem, "a RoleProblem (role_problem)", ExerciseError)
    if not isinstance(answer, Mapping):
        raise ExerciseError(
            "give the answer, the role, as a dict, e.g. {'level': ..., 'direct': ..., ...}"
        )
    missing = [f for f in ROLE_FIELDS if f not in answer]
    if missing:
        return fail("give every field; missing: " + ", ".join(missing))
    wrong = [name for name in ROLE_FIELDS if not role_field_right(problem, name, answer[name])]
    if not wrong:
        return ok(f"the page's role is {problem._role.describe()}.")
    hint = _ROLE_HINTS[wrong[0]].format(root=problem._root_level)
    return fail(f"{len(wrong)} field(s) wrong. First, {hint}")
