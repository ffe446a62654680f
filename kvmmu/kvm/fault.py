"""The page fault path: ``FNAME(page_fault)`` -> ``FNAME(fetch)``, and ``direct_page_fault``.

Mirrors ``paging_tmpl.h`` (``FNAME(page_fault)``, ``FNAME(fetch)``) and the per-vCPU half of
``mmu.c`` (``kvm_mmu_get_shadow_page``, ``direct_page_fault``/``direct_map``). The vCPU calls
:func:`page_fault` when the hardware walk of the shadow tables faults.

A page fault in a shadow-paging guest walks the guest's tables; if the guest would fault, that
fault is injected; otherwise :func:`fetch` walks the shadow tables from the root, creating one
*indirect* shadow page per guest table (its gfn is the table's frame, its role from the walk)
and, below a guest large page that the host must back with smaller pages, *direct* shadow pages;
the leaf spte gets the guest's rights. With TDP or paging off, :func:`direct_page_fault` maps
the gfn with direct pages only (``direct_map``).
"""

from __future__ import annotations

from dataclasses import dataclass

from kvmmu.hw.walk import GeneralProtection, PageFault, WalkResult, walk
from kvmmu.hw.x86 import PAGE_SHIFT, Acc, Access, PfErr, Pte
from kvmmu.kvm import spte as S
from kvmmu.kvm.mmu import (
    FaultOutcome,
    MmuVcpu,
    shadow_index,
    shadow_path,
    shadow_walk_init,
)
from kvmmu.kvm.page import MmuPage
from kvmmu.kvm.rmap import level_base
from kvmmu.kvm.role import MmuPageRole
from kvmmu.kvm.sync import sync_children, sync_page_or_zap


@dataclass(slots=True)
class FaultResult:
    """The outcome of one page fault, with the guest's walk when there was one."""

    outcome: FaultOutcome
    gpa: int = 0
    fault: PageFault | None = None
    walk: WalkResult | None = None


def get_shadow_page(vcpu: MmuVcpu, gfn: int, role: MmuPageRole) -> MmuPage:
    """Find the page for (gfn, role) or create it (``kvm_mmu_get_shadow_page``).

    A hash hit on an unsync page is synced for this vCPU first (``kvm_sync_page``); a hit
    clears the page's write-flooding count (``kvm_mmu_find_shadow_page``).
    """
    mmu = vcpu.mmu
    for sp in list(mmu.page_hash.get(gfn, ())):
        if mmu.is_obsolete(sp):
            continue
        if sp.role != role:
            # An upper-level table now lives where an unsync page table was: the unsync
            # page must go, since the new page write-protects the gfn.
            if role.level > 1 and sp.unsync:
                mmu.zap_page(sp)
            continue
        if sp.unsync and not sync_page_or_zap(vcpu, sp):
            continue  # the stale page could not be synced and was zapped
        sp.write_flooding_count = 0  # __clear_sp_write_flooding_count: found again in use
        mmu.trace.emit(
            "kvm_mmu_get_page", gfn=gfn, role=role.describe(), created=False, sp=sp.serial
        )
        return sp
    return mmu.alloc_shadow_page(gfn, role)


def page_fault(
    vcpu: MmuVcpu,
    gva: int,
    access: Access,
    *,
    implicit: bool = False,
    error_code: int = 0,
) -> FaultResult:
    """Handle a shadow page fault in a shadow-paging guest (``FNAME(page_fault)``).

    ``error_code`` is the hardware's #PF error code from the walk of the shadow tables
    (``fault->error_code``): its P bit says whether the faulting spte was present.
    """
    mmu = vcpu.mmu
    cpu = vcpu.cpu
    result = walk(vcpu.memory, cpu, gva, access, implicit=implicit)
    mmu.trace.emit("kvm_mmu_pagetable_walk", addr=gva, pferr=error_code)
    if mmu.trace.enabled and not isinstance(result, GeneralProtection):
        steps = result.trace if isinstance(result, WalkResult) else result.steps
        for step in steps:
            mmu.trace.emit("kvm_mmu_paging_element", pte=step.entry, level=step.level)
    if isinstance(result, PageFault):
        mmu.stats.pf_guest += 1
        mmu.trace.emit("kvm_mmu_walker_error", addr=gva, pferr=int(result.error_code))
        return FaultResult(FaultOutcome.GUEST, fault=result)
    assert isinstance(result, WalkResult)
    write = access is Access.WRITE
    user = cpu.cpl == 3 and not implicit
    gfn = result.gfn
    slot = mmu.memory.slots.find(gfn)
    if slot is not None and write and slot.readonly:
        # A store to a read-only slot is emulated and the emulator cannot write the slot
        # (__kvm_write_guest_page refuses it), so it exits to userspace as MMIO: checked first,
        # since a ROM page may also be one of the guest's write-tracked page tables.
        mmu.stats.pf_emulate += 1
        mmu.stats.mmio_exits += 1
        return FaultResult(FaultOutcome.MMIO, gpa=result.gpa, walk=result)
    if write and error_code & PfErr.PRESENT and slot is not None and mmu.is_write_tracked(gfn):
        # page_fault_handle_page_track: a write fault on a present, read-only spte of one of
        # the guest's upper-level tables. A not-present one goes through fetch, which installs
        # the read-only spte (make_spte finds the gfn tracked) and asks for emulation.
        mmu.stats.pf_emulate += 1
        clear_flood_on_path(vcpu, gva)
        return FaultResult(FaultOutcome.EMULATE, gpa=result.gpa, walk=result)
    access_bits = int(result.access)
    if not write and not result.pte & Pte.DIRTY:
        access_bits &= ~Acc.WRITE  # FNAME(protect_clean_gpte): the first write must fault
    if write and not access_bits & Acc.WRITE and not vcpu.cr0_wp and not user and slot is not None:
        # CR0.WP=0: a supervisor write to a read-only page succeeds. Make the spte writable but
        # supervisor-only (and not executable under SMEP), since the hardware runs with WP=1.
        access_bits = (access_bits | Acc.WRITE) & ~Acc.USER
        if vcpu.smep:
            access_bits &= ~Acc.EXEC
    mmu.make_pages_available()
    outcome = fetch(vcpu, gva, result, access_bits, write)
    if outcome is FaultOutcome.MMIO:
        mmu.stats.mmio_exits += 1
    elif outcome is FaultOutcome.EMULATE:
        mmu.stats.pf_emulate += 1
    else:
        mmu.stats.pf_fixed += 1
    return FaultResult(outcome, gpa=result.gpa, walk=result)


def fetch(vcpu: MmuVcpu, gva: int, gw: WalkResult, access: int, write: bool) -> FaultOutcome:
    """Build the shadow path for one guest translation (``FNAME(fetch)``).

    Above the guest's leaf level every shadow page is indirect and shadows the guest table at
    the same level; below it (a guest large page backed by smaller host pages) pages are direct.
    """
    mmu = vcpu.mmu
    sp, level = shadow_walk_init(vcpu, gva)
    gfn = gw.gfn
    slot = mmu.memory.slots.find(gfn)
    while level > gw.level:
        index = shadow_index(gva, level)
        sp.write_flooding_count = 0  # clear_sp_write_flooding_count: the guest uses this table
        spte = int(sp.spt[index])
        if S.is_shadow_present(spte) and not S.is_large(spte):
            child = mmu.child_of(spte)
        else:
            table_gfn = gw.table_gfn(level - 1)
            role = sp.role.child(
                direct=False,
                access=int(gw.pt_access(level - 1)),
                quadrant=index & 1 if sp.role.has_4_byte_gpte else 0,
            )
            child = get_shadow_page(vcpu, table_gfn, role)
            if child.unsync_children:
                sync_children(vcpu, child)
            mmu.link_shadow_page(sp, index, child)
        sp, level = child, level - 1
    goal = (
        1 if slot is None else mmu.max_mapping_level(slot, gfn, min(gw.level, vcpu.max_huge_level))
    )
    mmu.trace.emit("kvm_mmu_spte_requested", gfn=gfn, level=goal)
    while level > goal:
        index = shadow_index(gva, level)
        sp.write_flooding_count = 0
        spte = int(sp.spt[index])
        if S.is_shadow_present(spte) and not S.is_large(spte):
            child = mmu.child_of(spte)
            if child.role.access == access:
                sp, level = child, level - 1
                continue
            mmu.drop_spte(sp, index)  # validate_direct_spte: access changed
            mmu.flush_remote_tlbs()
        base = level_base(gfn, level)
        role = sp.role.child(
            direct=True, access=access, quadrant=index & 1 if sp.role.has_4_byte_gpte else 0
        )
        child = get_shadow_page(vcpu, base, role)
        mmu.link_shadow_page(sp, index, child)
        sp, level = child, level - 1
    sp.write_flooding_count = 0  # the page that holds the leaf spte was walked too
    index = shadow_index(gva, level)
    return mmu.set_spte(
        sp,
        index,
        access,
        level_base(gfn, level),
        write_fault=write,
        global_=bool(gw.pte & Pte.GLOBAL) and vcpu.pge,
    )


def direct_page_fault(vcpu: MmuVcpu, gpa: int, access: Access) -> FaultOutcome:
    """Map ``gpa`` with direct pages only (``direct_page_fault`` -> ``direct_map``).

    Used with TDP (the fault is on a guest-physical address) and for guests with paging off.
    """
    mmu = vcpu.mmu
    gfn = gpa >> PAGE_SHIFT
    slot = mmu.memory.slots.find(gfn)
    write = access is Access.WRITE
    if slot is not None and write and slot.readonly:
        mmu.stats.pf_emulate += 1
        mmu.stats.mmio_exits += 1
        return FaultOutcome.MMIO
    mmu.make_pages_available()
    sp, level = shadow_walk_init(vcpu, gpa)
    goal = 1 if slot is None else mmu.max_mapping_level(slot, gfn, vcpu.max_huge_level)
    mmu.trace.emit("kvm_mmu_spte_requested", gfn=gfn, level=goal)
    while level > goal:
        index = shadow_index(gpa, level)
        spte = int(sp.spt[index])
        if S.is_shadow_present(spte) and not S.is_large(spte):
            sp, level = mmu.child_of(spte), level - 1
            continue
        child = get_shadow_page(
            vcpu, level_base(gfn, level), sp.role.child(direct=True, access=int(Acc.ALL))
        )
        mmu.link_shadow_page(sp, index, child)
        sp, level = child, level - 1
    outcome = mmu.set_spte(
        sp,
        shadow_index(gpa, level),
        int(Acc.ALL),
        level_base(gfn, level),
        write_fault=write,
    )
    if outcome is FaultOutcome.MMIO:
        mmu.stats.mmio_exits += 1
    elif outcome is FaultOutcome.EMULATE:
        mmu.stats.pf_emulate += 1
    else:
        mmu.stats.pf_fixed += 1
    return outcome


def clear_flood_on_path(vcpu: MmuVcpu, gva: int) -> None:
    """The guest used the tables on ``gva``'s path: reset their flood counts
    (``shadow_page_table_clear_flood``)."""
    for sp, _ in shadow_path(vcpu, gva):
        sp.write_flooding_count = 0
