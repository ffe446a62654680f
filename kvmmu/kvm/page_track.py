"""Emulated guest writes to shadowed page tables: ``kvm_mmu_track_write`` and its helpers.

Mirrors ``mmu.c`` (``kvm_mmu_track_write``, ``detect_write_misaligned``,
``detect_write_flooding``, ``get_written_sptes``, ``mmu_pte_write_fetch_gpte``) and the 2010
kernel's ``FNAME(update_pte)``. A guest store that hits a write-protected guest table is emulated
by the vCPU, which then calls :func:`track_write`: each shadow page of the written gfn is zapped
(a misaligned write, or write flooding) or has the sptes behind the written entry refreshed or
dropped.
"""

from __future__ import annotations

from kvmmu.errors import KvmmuError
from kvmmu.hw.memory import GuestMemory
from kvmmu.hw.x86 import PAGE_SHIFT
from kvmmu.kvm import spte as S
from kvmmu.kvm.fault import prefetch_gpte
from kvmmu.kvm.mmu import MmuVcpu
from kvmmu.kvm.page import MmuPage
from kvmmu.kvm.sync import role_compatible


def track_write(vcpu: MmuVcpu, gpa: int, nbytes: int) -> None:
    """React to an emulated guest write of ``nbytes`` at ``gpa`` (``kvm_mmu_track_write``).

    Every shadow page of the written gfn is checked: a misaligned write or the third write
    to an upper-level table that the guest has not used since (write flooding) zaps the
    page; otherwise the sptes that shadow the written guest entries are zapped, and the next
    access faults them in again. With ``Vm(update_pte=True)`` a leaf spte is refreshed in place
    instead, as the 2010 kernel did (``mmu_pte_write_new_pte``, counted in ``mmu_pte_updated``).
    ``mmu_pte_write`` counts every emulated write once indirect shadow pages exist.
    """
    mmu = vcpu.mmu
    if not mmu.indirect_shadow_pages:
        return
    mmu.stats.mmu_pte_write += 1  # every emulated write, shadowed gfn or not
    gfn = gpa >> PAGE_SHIFT
    pages = mmu.pages_of(gfn)
    if not pages:
        return
    flush = False
    for sp in pages:
        if mmu.is_obsolete(sp):
            continue
        if detect_write_misaligned(sp, gpa, nbytes) or detect_write_flooding(sp):
            mmu.zap_page(sp)
            mmu.stats.mmu_flooded += 1
            continue
        written = written_sptes(sp, gpa)
        if written is None:
            continue
        gentry = written_gentry(vcpu.memory, sp, gpa, nbytes)
        for index in written:
            old = sp.spt[index]
            flush |= S.is_shadow_present(old)
            mmu.drop_spte(sp, index)
            if not gentry:
                continue
            if sp.level > 1:
                mmu.stats.mmu_pde_zapped += 1
            elif mmu.update_pte and role_compatible(vcpu, sp):
                mmu.stats.mmu_pte_updated += 1
                update_pte(vcpu, sp, index)
    if flush:
        mmu.flush_remote_tlbs()


def update_pte(vcpu: MmuVcpu, sp: MmuPage, index: int) -> None:
    """Refresh a leaf spte from the new guest entry (``FNAME(update_pte)``, 2010 kernel).

    It maps the entry as a prefetch does (``FNAME(prefetch_gpte)``, which later kernels call
    from here), except that a slot with dirty logging is not refused: the spte is made as a
    fault makes it, and a writable one marks its gfn dirty at once.
    """
    prefetch_gpte(vcpu, sp, index, no_dirty_log=False)


def detect_write_misaligned(sp: MmuPage, gpa: int, nbytes: int) -> bool:
    """A write that is not one whole guest entry (``detect_write_misaligned``).

    A one-byte write at the start of an entry is allowed: Linux clears bits with ``andb``.
    """
    offset = gpa & 0xFFF
    size = 4 if sp.role.has_4_byte_gpte else 8
    if not offset & (size - 1) and nbytes == 1:
        return False
    crosses = (offset ^ (offset + nbytes - 1)) & ~(size - 1)
    return bool(crosses) or nbytes < 4


def detect_write_flooding(sp: MmuPage) -> bool:
    """The third write to an upper-level table without use in between (``detect_write_flooding``).

    Leaf tables are exempt: they can go unsync instead.
    """
    if sp.level == 1:
        return False
    sp.write_flooding_count += 1
    return sp.write_flooding_count >= 3


def written_sptes(sp: MmuPage, gpa: int) -> list[int] | None:
    """Indices of the sptes that shadow the guest entry at ``gpa`` (``get_written_sptes``).

    A 4-byte guest entry sits at half the offset of its 8-byte shadow; a 32-bit guest PDE maps
    4 MiB, so it is shadowed by two 2 MiB shadow PDEs. The quadrant picks the shadow page that
    holds them, or None if this page does not.
    """
    offset = gpa & 0xFFF
    count = 1
    if sp.role.has_4_byte_gpte:
        offset <<= 1
        if sp.level == 2:
            offset = (offset & ~7) << 1
            count = 2
        if offset >> PAGE_SHIFT != sp.role.quadrant:
            return None
        offset &= 0xFFF
    first = offset // 8
    return list(range(first, first + count))


def written_gentry(memory: GuestMemory, sp: MmuPage, gpa: int, nbytes: int) -> int:
    """The whole guest entry containing ``gpa`` after the write (``mmu_pte_write_fetch_gpte``);
    0 if it cannot be read. Only 4- and 8-byte writes are read: a 4-byte half of an 8-byte
    entry reads the whole entry, and a one- or two-byte write (Linux's ``andb``) gives 0, so
    the sptes behind it are zapped rather than refreshed."""
    if nbytes not in (4, 8):
        return 0
    size = 4 if sp.role.has_4_byte_gpte else 8
    try:
        return memory.read(gpa & ~(size - 1), size)
    except KvmmuError:
        return 0
