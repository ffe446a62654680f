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

After the leaf spte, both paths prefetch: the other sptes of the faulting spte's aligned group
of :data:`PTE_PREFETCH_NUM` in a level-1 page are filled too, so the guest's next accesses
nearby need no fault. A direct page prefetches the gfns it maps anyway (``get_gfn``); an
indirect page prefetches from the guest entries beside the faulting one, stopping at the first
that is not present and accessed (``FNAME(pte_prefetch)``). Counters follow
``kvm_mmu_do_page_fault``: ``pf_taken`` for every fault, then ``pf_fixed``, ``pf_emulate`` or
``pf_spurious`` by outcome.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvmmu.hw.memory import Memslot
from kvmmu.hw.walk import GeneralProtection, PageFault, WalkResult, walk_unchecked
from kvmmu.hw.x86 import PAGE_SHIFT, Acc, Access, PfErr, Pte
from kvmmu.kvm import spte as S
from kvmmu.kvm.mmu import (
    FaultOutcome,
    MmuVcpu,
    gpte_gfn,
    gpte_pte_access,
    prefetch_invalid_gpte,
    read_gpte,
    shadow_path,
    shadow_walk_init,
)
from kvmmu.kvm.page import MmuPage
from kvmmu.kvm.rmap import level_base
from kvmmu.kvm.role import MmuPageRole
from kvmmu.kvm.sync import sync_children, sync_page_or_zap

# plain ints for the fault path: IntFlag arithmetic runs Python code on every operation
_PFERR_PRESENT, _PTE_DIRTY, _PTE_GLOBAL = int(PfErr.PRESENT), int(Pte.DIRTY), int(Pte.GLOBAL)
_ACC_WRITE, _ACC_USER, _ACC_EXEC = int(Acc.WRITE), int(Acc.USER), int(Acc.EXEC)
_ACC_ALL = int(Acc.ALL)
# enum members as module names: a member read through its class costs several times a name
_FIXED, _SPURIOUS, _MMIO = FaultOutcome.FIXED, FaultOutcome.SPURIOUS, FaultOutcome.MMIO
_WRITE = Access.WRITE

PTE_PREFETCH_NUM = 8  # sptes in one prefetch group (PTE_PREFETCH_NUM in mmu.c)

# The shadow walks below test spte bits and index pages inline, each line naming the helper of
# mmu.py/spte.py it spells out: a call per level and test costs more than the walk's own work.
_LEVEL_SHIFT = tuple(PAGE_SHIFT + 9 * (level - 1) for level in range(6))  # shadow_index's shift
_PRESENT_OR_LARGE = S.MMU_PRESENT | S.LARGE
_MMU_PRESENT = S.MMU_PRESENT


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
        if mmu.trace.enabled:
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
    (``fault->error_code``): its P bit says whether the faulting spte was present. The vCPU
    checked ``gva`` and ``access`` for the guest's mode (:meth:`kvmmu.kvm.vcpu.Vcpu.translate`),
    so the guest walk is the unchecked one.
    """
    mmu = vcpu.mmu
    mmu.stats.pf_taken += 1  # kvm_mmu_do_page_fault
    result = walk_unchecked(vcpu.memory, vcpu.cpu, gva, access, implicit)
    trace = mmu.trace
    if trace.enabled:
        trace.emit("kvm_mmu_pagetable_walk", addr=gva, pferr=error_code)
        if not isinstance(result, GeneralProtection):
            steps = result.trace if isinstance(result, WalkResult) else result.steps
            for step in steps:
                trace.emit("kvm_mmu_paging_element", pte=step.entry, level=step.level)
    if result.__class__ is not WalkResult:
        assert isinstance(result, PageFault)  # the address is canonical: translate() checked
        mmu.stats.pf_guest += 1
        trace.emit("kvm_mmu_walker_error", addr=gva, pferr=int(result.error_code))
        return FaultResult(FaultOutcome.GUEST, fault=result)
    assert isinstance(result, WalkResult)
    write = access is _WRITE
    gfn = result.gpa >> PAGE_SHIFT  # walker->gfn
    slot = mmu.memory.slots.find(gfn)  # fault->slot, found once (kvm_faultin_pfn)
    if slot is not None and write and slot.readonly:
        # A store to a read-only slot is emulated and the emulator cannot write the slot
        # (__kvm_write_guest_page refuses it), so it exits to userspace as MMIO: checked first,
        # since a ROM page may also be one of the guest's write-tracked page tables.
        mmu.stats.pf_emulate += 1
        mmu.stats.mmio_exits += 1
        return FaultResult(FaultOutcome.MMIO, gpa=result.gpa, walk=result)
    if write and error_code & _PFERR_PRESENT and slot is not None and mmu.is_write_tracked(gfn):
        # page_fault_handle_page_track: a write fault on a present, read-only spte of one of
        # the guest's upper-level tables. A not-present one goes through fetch, which installs
        # the read-only spte (make_spte finds the gfn tracked) and asks for emulation.
        mmu.stats.pf_emulate += 1
        clear_flood_on_path(vcpu, gva)
        return FaultResult(FaultOutcome.EMULATE, gpa=result.gpa, walk=result)
    access_bits = int(result.access)
    if not write and not result.pte & _PTE_DIRTY:
        access_bits &= ~_ACC_WRITE  # FNAME(protect_clean_gpte): the first write must fault
    if (
        write
        and not access_bits & _ACC_WRITE
        and not vcpu.cr0_wp
        and not (vcpu.cpu.cpl == 3 and not implicit)  # a supervisor write
        and slot is not None
    ):
        # CR0.WP=0: a supervisor write to a read-only page succeeds. Make the spte writable but
        # supervisor-only (and not executable under SMEP), since the hardware runs with WP=1.
        access_bits = (access_bits | _ACC_WRITE) & ~_ACC_USER
        if vcpu.smep:
            access_bits &= ~_ACC_EXEC
    mmu.make_pages_available()
    outcome = fetch(vcpu, gva, result, access_bits, write, slot)
    count_outcome(vcpu, outcome)
    return FaultResult(outcome, result.gpa, None, result)


def count_outcome(vcpu: MmuVcpu, outcome: FaultOutcome) -> None:
    """Count a handled fault by what it returned (the tail of ``kvm_mmu_do_page_fault``).

    An MMIO spte's fault is emulated (``RET_PF_EMULATE``) and the emulator exits to userspace.
    """
    stats = vcpu.mmu.stats
    if outcome is _FIXED:
        stats.pf_fixed += 1
    elif outcome is _SPURIOUS:
        stats.pf_spurious += 1
    else:
        stats.pf_emulate += 1
        if outcome is _MMIO:
            stats.mmio_exits += 1


def fetch(
    vcpu: MmuVcpu, gva: int, gw: WalkResult, access: int, write: bool, slot: Memslot | None
) -> FaultOutcome:
    """Build the shadow path for one guest translation (``FNAME(fetch)``).

    Above the guest's leaf level every shadow page is indirect and shadows the guest table at
    the same level; below it (a guest large page backed by smaller host pages) pages are direct.
    ``slot`` is the memslot of the guest's gfn (``fault->slot``), None for MMIO.
    """
    mmu = vcpu.mmu
    by_pfn = mmu.by_pfn
    sp, level = shadow_walk_init(vcpu, gva)
    gfn = gw.gpa >> PAGE_SHIFT
    gw_level = gw.level
    while level > gw_level:
        index = (gva >> _LEVEL_SHIFT[level]) & 511  # shadow_index
        sp.write_flooding_count = 0  # clear_sp_write_flooding_count: the guest uses this table
        spte = sp.spt[index]
        if spte & _PRESENT_OR_LARGE == S.MMU_PRESENT:  # is_shadow_present and not is_large
            child = by_pfn[(spte & S.PFN_MASK) >> PAGE_SHIFT]  # spte_to_child_sp
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
    # kvm_mmu_hugepage_adjust: a 4 KiB guest page, or no memslot, leaves nothing to adjust
    goal = (
        1
        if slot is None or gw_level == 1
        else mmu.max_mapping_level(slot, gfn, min(gw_level, vcpu.max_huge_level))
    )
    if mmu.trace.enabled:
        mmu.trace.emit("kvm_mmu_spte_requested", gfn=gfn, level=goal)
    while level > goal:
        index = (gva >> _LEVEL_SHIFT[level]) & 511  # shadow_index
        sp.write_flooding_count = 0
        spte = sp.spt[index]
        if spte & _PRESENT_OR_LARGE == S.MMU_PRESENT:  # is_shadow_present and not is_large
            child = by_pfn[(spte & S.PFN_MASK) >> PAGE_SHIFT]  # spte_to_child_sp
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
    index = (gva >> _LEVEL_SHIFT[level]) & 511  # shadow_index
    outcome = mmu.set_spte(
        sp,
        index,
        access,
        level_base(gfn, level),
        slot,
        write_fault=write,
        global_=bool(gw.pte & _PTE_GLOBAL) and vcpu.pge,
    )
    if outcome is not _SPURIOUS:
        pte_prefetch(vcpu, sp, index)
    return outcome


def direct_page_fault(vcpu: MmuVcpu, gpa: int, access: Access) -> FaultOutcome:
    """Map ``gpa`` with direct pages only (``direct_page_fault`` -> ``direct_map``).

    Used with TDP (the fault is on a guest-physical address) and for guests with paging off.
    """
    mmu = vcpu.mmu
    mmu.stats.pf_taken += 1  # kvm_mmu_do_page_fault
    gfn = gpa >> PAGE_SHIFT
    slot = mmu.memory.slots.find(gfn)
    write = access is _WRITE
    if slot is not None and write and slot.readonly:
        mmu.stats.pf_emulate += 1
        mmu.stats.mmio_exits += 1
        return FaultOutcome.MMIO
    mmu.make_pages_available()
    sp, level = shadow_walk_init(vcpu, gpa)
    goal = 1 if slot is None else mmu.max_mapping_level(slot, gfn, vcpu.max_huge_level)
    if mmu.trace.enabled:
        mmu.trace.emit("kvm_mmu_spte_requested", gfn=gfn, level=goal)
    by_pfn = mmu.by_pfn
    while level > goal:
        index = (gpa >> _LEVEL_SHIFT[level]) & 511  # shadow_index
        spte = sp.spt[index]
        if spte & _PRESENT_OR_LARGE == S.MMU_PRESENT:  # is_shadow_present and not is_large
            sp, level = by_pfn[(spte & S.PFN_MASK) >> PAGE_SHIFT], level - 1  # spte_to_child_sp
            continue
        child = get_shadow_page(
            vcpu, level_base(gfn, level), sp.role.child(direct=True, access=_ACC_ALL)
        )
        mmu.link_shadow_page(sp, index, child)
        sp, level = child, level - 1
    index = (gpa >> _LEVEL_SHIFT[level]) & 511  # shadow_index
    outcome = mmu.set_spte(sp, index, _ACC_ALL, level_base(gfn, level), slot, write_fault=write)
    if outcome is not _SPURIOUS:
        direct_pte_prefetch(vcpu, sp, index)
    count_outcome(vcpu, outcome)
    return outcome


def pte_prefetch(vcpu: MmuVcpu, sp: MmuPage, index: int) -> None:
    """Prefetch the neighbours of leaf spte ``index`` (``FNAME(pte_prefetch)``).

    Only level-1 pages prefetch. A direct page goes to :func:`direct_pte_prefetch`; an indirect
    one walks its group and maps each empty spte from its guest entry, until a guest entry
    cannot be prefetched (:func:`prefetch_gpte`).
    """
    role = sp.role
    if role.direct:
        direct_pte_prefetch(vcpu, sp, index)
        return
    if not vcpu.mmu.prefetch or role.level > 1:
        return
    spt = sp.spt
    first = index & ~(PTE_PREFETCH_NUM - 1)
    for i in range(first, first + PTE_PREFETCH_NUM):
        if i == index or spt[i] & _MMU_PRESENT:  # is_shadow_present
            continue
        if not prefetch_gpte(vcpu, sp, i):
            break


def prefetch_gpte(vcpu: MmuVcpu, sp: MmuPage, index: int, *, no_dirty_log: bool = True) -> bool:
    """Map spte ``index`` of ``sp`` from its guest entry ahead of any fault
    (``FNAME(prefetch_gpte)``); False stops the prefetch.

    A guest entry that is not present, not accessed or has reserved bits gives no spte (and
    drops whatever was there: ``FNAME(prefetch_invalid_gpte)``). The rights are the guest's,
    read-only while the entry is clean (``FNAME(protect_clean_gpte)``). The gfn must be in a
    memslot that the host can map now (``gfn_to_memslot_dirty_bitmap``, ``kvm_prefetch_pages``);
    ``no_dirty_log=False`` (the 2010 ``FNAME(update_pte)``) also allows a writable spte in a
    slot that logs dirty pages.
    """
    mmu = vcpu.mmu
    gpte = read_gpte(vcpu.memory, sp, index)
    if gpte is None or prefetch_invalid_gpte(vcpu, gpte):
        mmu.drop_spte(sp, index)
        return False
    access = gpte_pte_access(vcpu, sp, gpte)
    gfn = gpte_gfn(gpte, sp)
    slot = prefetchable(vcpu, gfn, 1, access if no_dirty_log else access & ~_ACC_WRITE)
    if slot is None:
        return False
    mmu.set_spte(
        sp,
        index,
        access,
        gfn,
        slot,
        write_fault=False,
        prefetch=True,
        global_=bool(gpte & _PTE_GLOBAL) and vcpu.pge,
    )
    return True


def direct_pte_prefetch(vcpu: MmuVcpu, sp: MmuPage, index: int) -> None:
    """Prefetch the empty sptes of a direct level-1 page's group around ``index``
    (``direct_pte_prefetch`` -> ``__direct_pte_prefetch``).

    Each run of empty sptes is mapped at once (``direct_pte_prefetch_many``) with the page's
    own rights and the gfns it maps (``get_gfn``); a run that cannot be mapped ends it.
    """
    if not vcpu.mmu.prefetch or sp.level > 1:
        return
    first = index & ~(PTE_PREFETCH_NUM - 1)
    start: int | None = None
    spt = sp.spt
    for i in range(first, first + PTE_PREFETCH_NUM):
        if i == index or spt[i] & _MMU_PRESENT:  # is_shadow_present
            if start is not None:
                if not direct_pte_prefetch_many(vcpu, sp, start, i):
                    return
                start = None
        elif start is None:
            start = i
    if start is not None:
        direct_pte_prefetch_many(vcpu, sp, start, first + PTE_PREFETCH_NUM)


def direct_pte_prefetch_many(vcpu: MmuVcpu, sp: MmuPage, start: int, end: int) -> bool:
    """Map sptes ``start`` to ``end - 1`` of a direct page (``direct_pte_prefetch_many``)."""
    access = sp.role.access
    gfn = sp.get_gfn(start)
    slot = prefetchable(vcpu, gfn, end - start, access)
    if slot is None:
        return False
    vcpu.mmu.set_sptes_prefetch(sp, start, end, access, gfn, slot)  # mmu_set_spte, each spte
    return True


def prefetchable(vcpu: MmuVcpu, gfn: int, count: int, access: int) -> Memslot | None:
    """The memslot from which ``count`` gfns from ``gfn`` can be prefetched with ``access``,
    or None if they cannot.

    ``gfn_to_memslot_dirty_bitmap``: there is a memslot, and a writable prefetch does not go to
    a slot that logs dirty pages (the log would miss the write). ``kvm_prefetch_pages``: the
    run lies in that slot, which the host may write (not ``KVM_MEM_READONLY``). KVM also needs
    the host pages already mapped (``get_user_pages_fast_only``); kvmmu's host memory always is.
    """
    slot = vcpu.mmu.memory.slots.find(gfn)
    if slot is None or slot.readonly:
        return None
    if access & _ACC_WRITE and slot.dirty_logging:
        return None
    return slot if gfn + count <= slot.base_gfn + slot.npages else None


def clear_flood_on_path(vcpu: MmuVcpu, gva: int) -> None:
    """The guest used the tables on ``gva``'s path: reset their flood counts
    (``shadow_page_table_clear_flood``)."""
    for sp, _ in shadow_path(vcpu, gva):
        sp.write_flooding_count = 0
