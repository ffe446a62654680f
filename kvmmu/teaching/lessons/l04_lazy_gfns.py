"""Lesson 4, lazy gfns (the seed change): the views, widget and exercises of
``notebooks/04_lazy_gfns.ipynb``.

A VM with direct and indirect shadow pages, the gfn of an entry computed and stored, every
place that reads ``sp->gfns``, an audit that the computed gfns are the ones that would have been
stored, the bytes the change saves, a page/index widget, and two exercises: predict a direct
page's gfn, predict the saving for a TDP guest (lesson 7 asks it again). The kernel code shown is
``kvm_mmu_page_get_gfn`` / ``kvm_mmu_page_set_gfn`` (``mmu.c``) and the gfns array of
``struct kvm_mmu_page`` (``mmu_internal.h``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import ipywidgets as widgets
import pandas as pd

from kvmmu.errors import KvmmuError, check_count, check_instance
from kvmmu.hw.guest import GuestPageTables
from kvmmu.hw.memory import GuestMemory
from kvmmu.hw.x86 import PAGE_SHIFT, Access, PagingMode
from kvmmu.kvm import spte as S
from kvmmu.kvm.accounting import memory_by_era
from kvmmu.kvm.page import LEVEL_BITS, MmuPage
from kvmmu.kvm.role import MmuPageRole
from kvmmu.kvm.vcpu import Vm
from kvmmu.teaching.problems import Check, ExerciseError, Problem, fail, ok, parse_int, seeded_rng
from kvmmu.teaching.ui import wire

__all__ = [
    "GFN_READERS",
    "GfnProblem",
    "SavingProblem",
    "check_gfn",
    "check_saving",
    "demo_mixed_vm",
    "gfn_audit",
    "gfn_lookup",
    "gfn_problem",
    "gfn_readers",
    "gfn_table",
    "gfns_savings",
    "make_gfn_widget",
    "saving_problem",
]


# ------------------------------------------------------------------------------------------------
# A VM with direct and indirect pages
# ------------------------------------------------------------------------------------------------


def demo_mixed_vm() -> Vm:
    """A small shadow-paging VM with both indirect and direct shadow pages.

    The guest maps 4 KiB pages (indirect pages shadow its tables) and one 2 MiB page that the
    host, without huge pages, backs with 4 KiB sptes in a *direct* level-1 page.

    No kernel counterpart.
    """
    vm = Vm(16 << 20, huge_pages=False)
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4)
    pt.map(0x400000, 0x100000, length=0x3000, user=True)
    pt.map(0x800000, 0x400000, size="2M", user=True)
    vcpu = vm.create_vcpu(pt.cpu(cpl=3))
    for gva in (0x400000, 0x401000, 0x402000, 0x800000, 0x801000, 0x9FF000):
        vcpu.access(gva, Access.READ)
    return vm


def _check_vm(vm: object) -> Vm:
    return check_instance("vm", vm, Vm, "a Vm (demo_mixed_vm(), say)", ExerciseError)


def _check_index(index: object) -> int:
    return check_count("index", index, maximum=511, error=ExerciseError)  # a page's 512 sptes


def _page_by_serial(vm: Vm, serial: int) -> MmuPage:
    check_count("serial", serial, error=ExerciseError)
    for sp in vm.mmu.active:
        if sp.serial == serial:
            return sp
    known = ", ".join(str(sp.serial) for sp in vm.mmu.active)
    raise KvmmuError(f"no shadow page sp#{serial}; this VM has {known}")


# ------------------------------------------------------------------------------------------------
# The gfn of an entry, computed or stored
# ------------------------------------------------------------------------------------------------


def _gfn_note(sp: MmuPage, index: int, computed: int) -> str:
    """Why the formula column is right (a direct page) or not (an indirect one)."""
    if sp.direct:
        return "computed: no array needed"
    if computed == sp.get_gfn(index):
        return "stored; the formula agrees by chance"
    return "stored: the formula is not this page's rule"


def gfn_table(sp: MmuPage, indices: list[int] | None = None) -> pd.DataFrame:
    """For some entries of one shadow page: the gfn computed, the gfn stored, and the spte.

    ``kvm_mmu_page_get_gfn``: a direct page computes ``gfn + (i << ((level - 1) * 9))``; an
    indirect page reads ``gfns[i]``, which ``kvm_mmu_page_set_gfn`` wrote. Default indices:
    the present sptes (at most 8).
    """
    check_instance("sp", sp, MmuPage, "a shadow page (MmuPage)", ExerciseError)
    if indices is None:
        indices = [int(i) for i in sp.present_indices()[:8]]
    elif not isinstance(indices, list | tuple):
        raise ExerciseError(f"indices must be a list of spte indices or None, got {indices!r}")
    for index in indices:
        check_count("indices", index, maximum=511, error=ExerciseError)
    rows = []
    for index in indices:
        spte = int(sp.spt[index])
        computed = sp.gfn + (index << ((sp.level - 1) * LEVEL_BITS))
        rows.append(
            {
                "index": index,
                "spte": S.describe_spte(spte, sp.level) if spte else "(empty)",
                "get_gfn": f"{sp.get_gfn(index):#x}",
                "gfn + (i << 9*(level-1))": f"{computed:#x}",
                "stored gfns[i]": "(no array)" if sp.direct else f"{sp.get_gfn(index):#x}",
                "note": _gfn_note(sp, index, computed),
            }
        )
    return pd.DataFrame(rows).set_index("index")


# ------------------------------------------------------------------------------------------------
# Who reads the gfns, and the proof that computing them loses nothing
# ------------------------------------------------------------------------------------------------

GFN_READERS: tuple[tuple[str, str, str], ...] = (
    (
        "kvm_mmu_page_set_gfn (from rmap_add / mmu_set_spte)",
        "stores, or checks, a new leaf's gfn",
        "kvmmu.kvm.page.MmuPage.set_gfn (from kvmmu.kvm.mmu.Mmu.set_spte)",
    ),
    (
        "rmap_add -> pte_list_add",
        "files a new leaf spte under the gfn it was given",
        "kvmmu.kvm.rmap.Rmap.pte_list_add (from kvmmu.kvm.mmu.Mmu.set_spte; the batch path's "
        "Rmap.add reads get_gfn)",
    ),
    (
        "rmap_remove (drop_spte, mmu_page_zap_pte)",
        "finds the rmap head to unlink a leaf from",
        "kvmmu.kvm.rmap.Rmap.remove (from kvmmu.kvm.mmu.Mmu.drop_spte)",
    ),
    (
        "kvm_mmu_prepare_zap_page -> kvm_mmu_page_unlink_children",
        "zapping drops every leaf",
        "kvmmu.kvm.mmu.Mmu.zap_page",
    ),
    (
        "FNAME(sync_page) / FNAME(sync_spte)",
        "a guest PTE that now names another gfn: drop",
        "kvmmu.kvm.sync.sync_spte",
    ),
    (
        "(hardware walk result)",
        "the gpa of a translation through a leaf spte",
        "kvmmu.kvm.vcpu.Vcpu._gpa_of",
    ),
)


def gfn_readers() -> pd.DataFrame:
    """Every place the kernel reads or writes ``sp->gfns``, and the kvmmu function mirroring it.

    Since the seed change they all go through ``kvm_mmu_page_get_gfn`` /
    ``kvm_mmu_page_set_gfn``, so a direct page never needs the array.
    """
    return pd.DataFrame(
        [{"kernel": k, "why it needs the gfn": w, "kvmmu": p} for k, w, p in GFN_READERS]
    ).set_index("kernel")


def _gfn_of_pfn(memory: GuestMemory, pfn: int) -> int | None:
    for slot in memory.slots:
        if slot.host_pfn <= pfn < slot.host_pfn + slot.npages:
            return slot.base_gfn + pfn - slot.host_pfn
    return None


def gfn_audit(vm: Vm) -> pd.DataFrame:
    """Prove that every gfn ``get_gfn`` returns is the gfn that would have been stored.

    For each present leaf spte (MMIO sptes aside): the rmap holds it under ``get_gfn(i)``
    (``rmap_add`` filed it there with the gfn ``mmu_set_spte`` was given), and the host frame
    in the spte belongs to that gfn through its memslot. One row per shadow page; the kernel's
    counterpart was ``mmu_audit.c``'s rmap checks.
    """
    _check_vm(vm)
    filed = {(sp.serial, i): gfn for (_, gfn), head in vm.mmu.rmap.items() for sp, i in head}
    rows = []
    for sp in sorted(vm.mmu.active, key=lambda sp: sp.serial):
        checked = bad = 0
        for index in sp.present_indices():
            spte = int(sp.spt[int(index)])
            if not S.is_shadow_present(spte) or not S.is_last(spte, sp.level):
                continue
            checked += 1
            gfn = sp.get_gfn(int(index))
            stored = filed.get((sp.serial, int(index)))
            if stored != gfn or _gfn_of_pfn(vm.memory, S.spte_to_pfn(spte)) != gfn:
                bad += 1
        rows.append(
            {"sp": f"sp#{sp.serial}", "direct": sp.direct, "leaf sptes": checked, "mismatches": bad}
        )
    return pd.DataFrame(rows, columns=["sp", "direct", "leaf sptes", "mismatches"]).set_index("sp")


# ------------------------------------------------------------------------------------------------
# Bytes saved
# ------------------------------------------------------------------------------------------------


def gfns_savings(vm: Vm) -> pd.DataFrame:
    """Bytes of gfns arrays with and without the seed change, for the pages of one VM.

    Before the change every page had a 4 KiB gfns array (``kvm_mmu_alloc_page``); after it
    only indirect pages do. Columns: pages, gfns bytes before, after, and saved.
    """
    _check_vm(vm)
    pages = [sp for sp in vm.mmu.active if not sp.role.invalid]
    rows = []
    for kind, members in (
        ("indirect", [sp for sp in pages if not sp.direct]),
        ("direct", [sp for sp in pages if sp.direct]),
    ):
        before = 4096 * len(members)
        after = sum(sp.gfns_bytes for sp in members)
        rows.append(
            {
                "pages": kind,
                "count": len(members),
                "gfns bytes before 2010": before,
                "gfns bytes after": after,
                "saved": before - after,
            }
        )
    frame = pd.DataFrame(rows).set_index("pages")
    frame.loc["total"] = frame.sum()
    return frame


# ------------------------------------------------------------------------------------------------
# Try it: the gfn widget
# ------------------------------------------------------------------------------------------------


def gfn_lookup(vm: Vm, serial: int, index: int) -> str:
    """What ``kvm_mmu_page_get_gfn(sp, index)`` answers for page ``sp#serial``, and why."""
    sp = _page_by_serial(_check_vm(vm), serial)
    _check_index(index)
    spte = int(sp.spt[index])
    shift = (sp.level - 1) * LEVEL_BITS
    lines = [
        sp.describe(),
        f"spte[{index}] = {S.describe_spte(spte, sp.level) if spte else 'empty'}",
    ]
    if sp.gfns is None:
        lines.append(
            f"direct: get_gfn = gfn + (index << {shift}) = {sp.gfn:#x} + {index << shift:#x}"
            f" = {sp.get_gfn(index):#x}; nothing stored (no gfns array)"
        )
    else:
        stored = sp.get_gfn(index)  # an indirect page: this reads gfns[index]
        note = "" if spte else " (entry empty: the stored value is stale or never written)"
        lines.append(f"indirect: get_gfn reads gfns[{index}] = {stored:#x}{note}")
        lines.append(f"the linear formula would give {sp.gfn + (index << shift):#x}")
    return "\n".join(lines)


def make_gfn_widget(vm: Vm | None = None, serial: int | None = None, index: int = 0) -> Any:
    """Pick a shadow page and an entry; see the gfn computed and, if indirect, stored.

    Shows :func:`gfn_lookup` for the VM (default :func:`demo_mixed_vm`, which has
    direct and indirect pages). Controls, in order: page (Dropdown of serials), index
    (IntSlider 0..511).
    No kernel counterpart.
    """
    if vm is not None:
        _check_vm(vm)
    _check_index(index)
    machine = vm if vm is not None else demo_mixed_vm()
    pages = sorted(machine.mmu.active, key=lambda sp: sp.serial)
    if not pages:
        raise KvmmuError("this VM has no shadow pages yet; run some guest accesses first")
    options = [(sp.describe(), sp.serial) for sp in pages]
    first = serial if serial is not None else pages[-1].serial
    _page_by_serial(machine, first)  # a serial the page dropdown offers
    page = widgets.Dropdown(
        options=options, value=first, description="page", layout=widgets.Layout(width="30em")
    )
    slot = widgets.IntSlider(value=index, min=0, max=511, description="index")
    return wire([page, slot], lambda: gfn_lookup(machine, page.value, slot.value))


# ------------------------------------------------------------------------------------------------
# Exercise: predict a gfn of a direct page
# ------------------------------------------------------------------------------------------------


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
    rng = seeded_rng(seed)
    level = rng.choice([1, 2, 2, 3])
    gfn = rng.randrange(1, 64) << (LEVEL_BITS * level)
    index = rng.randrange(1, 512)
    role = MmuPageRole(level=level, direct=True)
    page = MmuPage(gfn, role, 0, memoryview(bytearray(4096)).cast("Q"), None)
    text = (
        f"A direct shadow page: level {level}, gfn {gfn:#x} (its gfns array is None).\n"
        f"Which gfn does spte {index} map? (the first gfn of its range, as get_gfn returns it)"
    )
    return GfnProblem(seed, text, page, index)


def check_gfn(problem: GfnProblem, answer: int | str) -> Check:
    """Check a predicted ``kvm_mmu_page_get_gfn`` result; the hint names the slip."""
    check_instance("problem", problem, GfnProblem, "a GfnProblem (gfn_problem)", ExerciseError)
    value = parse_int("the answer (a gfn)", answer)
    sp, i = problem.page, problem.index
    right = sp.get_gfn(i)
    if value == right:
        return ok("computed, not stored: that is why the seed could drop the gfns array.")
    step = LEVEL_BITS * (sp.level - 1)
    if value == right << PAGE_SHIFT:
        return fail("that is a guest-physical address; give the frame number (the gfn)")
    if value == i << step:
        return fail("you left out where the page's range starts: add the page's own gfn")
    if sp.level > 1 and value == sp.gfn + i:
        return fail(
            "each spte of a page above level 1 maps more than one frame: how many frames "
            f"does one level-{sp.level} entry cover?"
        )
    for off in (-1, 1):
        shift = step + off * LEVEL_BITS
        if shift >= 0 and value == sp.gfn + (i << shift):
            return fail(
                f"off by one level: you shifted the index by {shift} bits; a level-{sp.level} "
                "spte covers 512**(level-1) frames"
            )
    return fail("get_gfn(i) = gfn + (i << ((level - 1) * 9)): recompute with this page's values")


# ------------------------------------------------------------------------------------------------
# Exercise: predict a saving (asked again in lesson 7)
# ------------------------------------------------------------------------------------------------


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
    rng = seeded_rng(seed)
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
    check_instance("problem", problem, SavingProblem, "a SavingProblem", ExerciseError)
    value = parse_int("the answer (a saving in bytes)", answer)
    gfns = problem._table["gfns bytes"]
    saved = int(gfns["pre-2010"] - gfns["2010 seed"])
    pages = int(problem._table["direct pages"]["pre-2010"])
    if value == saved:
        return ok("one 4096-byte gfns page per direct shadow page, none of them needed.")
    if value == pages or value == saved // 8:
        return fail("give bytes: each gfns array is 512 entries of 8 bytes")
    if value == 0:
        return fail("before the seed every shadow page had a gfns array, direct ones too")
    if problem.huge_pages:
        return fail(
            "count the shadow pages a TDP guest needs when 2 MiB sptes map its memory: the "
            "tables above the 2 MiB level, from the root down"
        )
    if value == (problem.size_mib // 2) * 4096:
        return fail("you counted the last-level pages only: every level has direct pages")
    return fail(
        "count the direct pages level by level: one last-level page maps 2 MiB, one page "
        "above it 1 GiB, and so on up to the root; each had a 4096-byte gfns array"
    )
