"""Unsync shadow pages and their synchronisation: ``sync_page``, invlpg, root sync.

Mirrors ``mmu.c`` (``kvm_unsync_page``, ``mark_unsync``, ``mmu_unsync_walk``,
``mmu_sync_children``, ``kvm_mmu_sync_roots``, ``__kvm_mmu_invalidate_addr``) and
``paging_tmpl.h`` (``FNAME(sync_spte)``).

Write-protecting every guest page table costs an exit per PTE write. KVM instead lets a
last-level table go *unsync*: its sptes stay as they were, the guest writes the table freely,
and the parents remember in ``unsync_child_bitmap`` that something below is stale. The x86 rules
make that safe: a guest must flush the TLB (INVLPG, a CR3 load) before it may rely on a changed
PTE, and that is when KVM re-reads the guest entries. :func:`sync_page` is where the seed change
is read back: an spte whose guest PTE now names another gfn than ``get_gfn(i)`` is dropped.
"""

from __future__ import annotations

from kvmmu.hw.x86 import Acc, Pte
from kvmmu.kvm import spte as S
from kvmmu.kvm.mmu import (
    MmuVcpu,
    clear_parents,
    gpte_gfn,
    gpte_pte_access,
    prefetch_invalid_gpte,
    read_gpte,
    shadow_path,
    unlink_unsync_page,
    unsync_walk,
)
from kvmmu.kvm.page import MmuPage
from kvmmu.kvm.role import shadow_root_role

# plain ints for the sync loop: IntFlag arithmetic runs Python code on every operation
_PRESENT, _ACCESSED, _DIRTY = int(Pte.PRESENT), int(Pte.ACCESSED), int(Pte.DIRTY)
_GLOBAL, _ACC_WRITE = int(Pte.GLOBAL), int(Acc.WRITE)


def sync_children(vcpu: MmuVcpu, parent: MmuPage) -> None:
    """Sync every unsync page below ``parent`` (``mmu_sync_children``).

    First write-protect each page's gfn again, then re-read its guest entries; a page that
    cannot be synced for this vCPU's context is zapped.
    """
    mmu = vcpu.mmu
    pages = unsync_walk(mmu, parent)
    if not pages:
        return
    changed = [mmu.write_protect_gfn(sp.gfn, mmu_protect=True) for sp in pages]
    if any(changed):  # protect every page: no short circuit
        mmu.flush_remote_tlbs()
    for sp in pages:
        if sp.role.invalid or not sp.unsync:
            continue
        unlink_unsync_page(mmu, sp)
        clear_parents(sp)
        if not sync_page(vcpu, sp):
            mmu.zap_page(sp)


def sync_page_or_zap(vcpu: MmuVcpu, sp: MmuPage) -> bool:
    """Refresh an unsync page found by a lookup, leaving it unsync (``kvm_sync_page``).

    Returns False if the page had to be zapped.
    """
    if sync_page(vcpu, sp):
        return True
    vcpu.mmu.zap_page(sp)
    return False


def role_compatible(vcpu: MmuVcpu, sp: MmuPage) -> bool:
    """Can this vCPU's context read ``sp``'s guest entries? (``kvm_sync_page_check``)."""
    if sp.direct or vcpu.mmu.tdp:
        return False
    cpu = vcpu.cpu
    ours, theirs = shadow_root_role(cpu.cr0, cpu.cr4, cpu.efer), sp.role
    # every bit of role.word but level, access, quadrant, passthrough (and invalid) must match
    return (
        ours.has_4_byte_gpte == theirs.has_4_byte_gpte
        and ours.efer_nx == theirs.efer_nx
        and ours.cr0_wp == theirs.cr0_wp
        and ours.smep_andnot_wp == theirs.smep_andnot_wp
        and ours.smap_andnot_wp == theirs.smap_andnot_wp
        and ours.ad_disabled == theirs.ad_disabled
        and ours.guest_mode == theirs.guest_mode
        and ours.smm == theirs.smm
        and ours.direct == theirs.direct
    )


def sync_page(vcpu: MmuVcpu, sp: MmuPage) -> bool:
    """Re-read every guest entry behind ``sp`` and fix its sptes (``FNAME(sync_page)``).

    Returns False if the page cannot be synced by this vCPU (its role belongs to another
    paging context); the caller zaps it.
    """
    if not role_compatible(vcpu, sp):
        return False
    vcpu.mmu.stats.sync_pages += 1
    flush = False
    for index in sp.present_indices():
        flush |= sync_spte(vcpu, sp, int(index)) > 0
    if flush:
        vcpu.mmu.flush_remote_tlbs()
    return True


def sync_spte(vcpu: MmuVcpu, sp: MmuPage, index: int) -> int:
    """Bring spte ``index`` in line with its guest entry (``FNAME(sync_spte)``).

    0: unchanged; 1: changed or dropped (flush needed). The spte is dropped when the guest
    entry is no longer present, not accessed, has reserved bits, or names another gfn than the
    one recorded for the spte, read through ``get_gfn``.
    """
    mmu = vcpu.mmu
    spte = sp.spt[index]
    if not spte:
        return 0
    gpte = read_gpte(vcpu.memory, sp, index)
    if gpte is None or prefetch_invalid_gpte(vcpu, gpte):
        mmu.drop_spte(sp, index)
        return 1
    gfn = gpte_gfn(gpte, sp)
    access = gpte_pte_access(vcpu, sp, gpte)
    if S.is_mmio(spte):
        # Fix: the refresh used to stamp the current generation even when a memslot had been
        # created over the gfn since, turning a stale MMIO spte into a current one, so RAM
        # became an MMIO exit for good. KVM's sync_mmio_spte refreshes too but its emulator
        # still reaches the RAM; kvmmu exits, so the spte is dropped and the next access maps
        # the memory.
        if gfn != S.mmio_gfn(spte) or vcpu.memory.slots.find(gfn) is not None:
            sp.spt[index] = 0
        else:
            sp.spt[index] = S.make_mmio_spte(gfn, access, vcpu.memory.slots.generation)
        return 0
    if gfn != sp.get_gfn(index):
        mmu.drop_spte(sp, index)
        return 1
    sp.set_access(index, access)  # kvm_mmu_page_set_access: the rights may have changed
    slot = vcpu.memory.slots.find(gfn)
    host_writable = bool(spte & S.HOST_WRITABLE)
    writable = bool(access & _ACC_WRITE) and host_writable
    if writable and not mmu.try_to_unsync(gfn, can_unsync=False):
        writable = False
    glob = bool(gpte & _GLOBAL) and vcpu.pge
    new = S.make_spte(
        S.spte_to_pfn(spte),
        access,
        large=False,
        writable=writable,
        mmu_writable=writable,
        host_writable=host_writable,
        accessed=bool(spte & S.ACCESSED),
        global_=glob,
    )
    if new == spte:
        return 0
    sp.spt[index] = new
    if writable and slot is not None and slot.dirty_logging:
        vcpu.memory.mark_page_dirty(gfn)
    return (
        1
        if (spte & S.WRITABLE and not new & S.WRITABLE) or S.spte_to_pfn(new) != S.spte_to_pfn(spte)
        else 0
    )


def invlpg_sync(vcpu: MmuVcpu, gva: int) -> None:
    """Sync the one spte behind ``gva`` in each unsync page on its path
    (``__kvm_mmu_invalidate_addr``), in the current root and the cached ones."""
    if vcpu.mmu.tdp:
        return
    vcpu.reload()
    for root in vcpu.all_roots():
        if root.direct:
            continue
        if root.level == 2 and (gva >> 30) & 3 != _pae_quarter(vcpu, root):
            continue
        for sp, index in shadow_path(vcpu, gva, root):
            if sp.unsync:
                sync_spte(vcpu, sp, index)
            if not sp.unsync_children:
                break


def _pae_quarter(vcpu: MmuVcpu, root: MmuPage) -> int:
    """Which quarter of the 32-bit address space a PAE root page directory covers."""
    roots = vcpu.pae_root or []
    return roots.index(root) if root in roots else -1


def sync_roots(vcpu: MmuVcpu) -> None:
    """Sync every unsync page reachable from the current roots (``kvm_mmu_sync_roots``)."""
    if vcpu.mmu.tdp:
        return
    for root in vcpu.current_roots():
        if not root.direct and root.unsync_children:
            sync_children(vcpu, root)
