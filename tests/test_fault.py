"""Specification of ``kvmmu.kvm.fault``: what the page fault path answers in the corner cases
where the guest's own state and the memslots meet.

Rules: ``direct_page_fault`` -> ``direct_map`` returns ``RET_PF_EMULATE`` for a write to a gfn
that is still write-protected for a shadow page, paging on or off; a store to a read-only memslot
is emulated and the emulator cannot write the slot (``__kvm_write_guest_page`` refuses it), so
it becomes an MMIO exit, even when the ROM page is one of the guest's page tables.
"""

from dataclasses import replace

import pytest

from kvmmu.hw.guest import GuestPageTables
from kvmmu.hw.memory import MemslotFlag
from kvmmu.hw.walk import PageFault
from kvmmu.hw.x86 import Access, Cr0, Efer, PagingMode, PfErr, Pte
from kvmmu.kvm.audit import audit
from kvmmu.kvm.vcpu import Translation, Vm

MiB = 1 << 20


def test_paging_off_write_to_a_former_page_table_is_emulated() -> None:
    """A 4-level guest turns paging off (CR0.PG and EFER.LMA cleared) and writes the frame of
    its old PML4: the shadow page of that table still write-protects it, so the direct fault
    asks for emulation; the store lands and the MMU sees it (``kvm_mmu_track_write``)."""
    vm = Vm(64 * MiB)
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4)
    pt.map(0x400000, 0x100000, writable=True)
    vcpu = vm.create_vcpu(pt.cpu())
    assert vcpu.access(0x400000, Access.WRITE) == 0x100000
    pml4 = vcpu.cpu.cr3 & ~0xFFF
    vcpu.set_registers(cr0=vcpu.cpu.cr0 & ~Cr0.PG, efer=vcpu.cpu.efer & ~(Efer.LMA | Efer.LME))
    assert vcpu.mode is PagingMode.NONE
    emulated = vm.mmu.stats.pf_emulate
    assert vcpu.translate(pml4 + 8, Access.WRITE) == Translation(pml4 + 8, emulated=True)
    assert vm.mmu.stats.pf_emulate == emulated + 1
    assert vcpu.write(pml4 + 8, 0x1234) is None
    assert vm.memory.read(pml4 + 8) == 0x1234
    assert vcpu.read(pml4 + 8) == 0x1234
    audit(vm)


def test_a_store_to_a_rom_page_that_is_a_page_table_never_changes_it() -> None:
    """The guest's PML4 lives in a read-only slot (firmware tables) and the guest maps it
    writable at a gva: the store is an MMIO exit (KVM_EXIT_MMIO), the ROM keeps its bytes,
    and the tables still translate as before."""
    vm = Vm(64 * MiB)
    rom = vm.add_memslot(0x9000, 16, MemslotFlag.READONLY)
    pml4 = rom.base_gfn << 12
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4)
    pt.map(0x400000, 0x100000, writable=True)
    pt.map(0x600000, pml4, writable=True)  # the PML4's new home, mapped writable
    for i in range(512):  # the host copies the finished PML4 into the ROM
        vm.memory.write(pml4 + 8 * i, vm.memory.read(pt.cpu().root_gpa + 8 * i))
    vcpu = vm.create_vcpu(pt.cpu())
    vcpu.set_cr3(pml4)
    assert vcpu.access(0x400000) == 0x100000
    assert vm.mmu.is_write_tracked(rom.base_gfn)
    before = [vm.memory.read(pml4 + 8 * i) for i in range(512)]
    assert vcpu.translate(0x600000, Access.WRITE) == Translation(pml4, mmio=True)
    assert vcpu.write(0x600000, 0) is None
    assert [vm.memory.read(pml4 + 8 * i) for i in range(512)] == before
    assert vcpu.access(0x400000) == 0x100000
    audit(vm)


def test_guest_tables_in_rom_keep_clean_entries_and_pass_the_audit() -> None:
    """Page tables in a read-only slot keep A and D clear (FNAME(update_accessed_dirty_bits)
    skips a table it cannot write), yet the access works: a write gives a writable spte over a
    clean guest entry. That is a state the MMU legally reaches, and the audit accepts it."""
    vm = Vm(64 * MiB)
    rom = vm.add_memslot(0x9000, 16, MemslotFlag.READONLY)
    table = [(rom.base_gfn + k) << 12 for k in range(4)]
    rights = 0x7  # P | RW | US, A and D clear
    for level, (entry, target) in enumerate(zip(table, [*table[1:], 0x100000], strict=True)):
        index = 2 if level == 2 else 0  # gva 0x400000: PML4[0] PDPT[0] PD[2] PT[0]
        vm.memory.write(entry + 8 * index, target | rights)
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4)
    vcpu = vm.create_vcpu(pt.cpu())
    assert vcpu.set_cr3(table[0]) is None
    assert vcpu.access(0x400123, Access.WRITE, cpl=3) == 0x100123
    assert vm.memory.read(table[3]) == 0x100000 | rights  # no A, no D: the ROM is untouched
    audit(vm)


def test_an_mmio_spte_serves_its_own_gfn_until_the_guest_flushes() -> None:
    """``handle_mmio_page_fault`` caches the MMIO spte's gfn and the emulator uses it
    (``vcpu_mmio_gva_to_gpa``): after the guest re-points the PTE at RAM without INVLPG, the
    access still exits as MMIO at the old address, as a TLB entry may; after INVLPG the spte
    is synced away and the access reaches the RAM. Translation and data always agree."""
    vm = Vm(64 * MiB)
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4)
    pt.map(0x400000, 0x8000_0000, writable=True)  # no memslot there: an MMIO spte
    leaf_table = pt.entry(0x400000, 2) & 0x000F_FFFF_FFFF_F000
    pt.map(0x600000, leaf_table, writable=True)  # the guest maps its own page table
    vm.memory.write(0x100010, 0x5A5A)
    vcpu = vm.create_vcpu(pt.cpu())
    assert vcpu.translate(0x400010) == Translation(0x8000_0010, mmio=True)
    # the guest edits its leaf table (it goes unsync) to point the page at RAM
    assert vcpu.write(0x600000, 0x100000 | 0x67) is None
    assert any(sp.unsync for sp in vm.mmu.active)
    assert vcpu.translate(0x400010) == Translation(0x8000_0010, mmio=True)
    assert vcpu.read(0x400010) == (1 << 64) - 1
    vcpu.invlpg(0x400000)
    assert vcpu.translate(0x400010) == Translation(0x100010)
    assert vcpu.read(0x400010) == 0x5A5A
    audit(vm)


@pytest.mark.parametrize("wp", [False, True])
def test_a_write_served_by_the_cached_mmio_rights_walks_no_guest_table(wp: bool) -> None:
    """A read through a clean PTE to unbacked memory makes an MMIO spte without W
    (FNAME(protect_clean_gpte)). A supervisor write with CR0.WP=0 passes ``permission_fault``
    on those cached rights whatever W says, so ``vcpu_mmio_gva_to_gpa`` uses the cached gfn,
    no walker runs and D stays clear, as on KVM. With WP=1 the cached rights refuse the write:
    the emulator walks the guest tables, which faults on a read-only PTE and sets D on a
    writable one."""
    vm = Vm(64 * MiB)
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4)
    pt.map(0x400000, 0x8000_0000, writable=False)  # no memslot there: MMIO sptes
    pt.map(0x401000, 0x8000_1000, writable=True)
    cr0 = pt.cpu().cr0 if wp else pt.cpu().cr0 & ~Cr0.WP
    vcpu = vm.create_vcpu(replace(pt.cpu(), cr0=cr0))

    def dirty(gva: int) -> bool:
        table = pt.entry(gva, 2) & 0x000F_FFFF_FFFF_F000
        return bool(vm.memory.read(table + 8 * (gva >> 12 & 511)) & Pte.DIRTY)

    for gva in (0x400000, 0x401000):
        assert vcpu.translate(gva) == Translation(0x8000_0000 + gva - 0x400000, mmio=True)
    ro = vcpu.translate(0x400000, Access.WRITE)
    rw = vcpu.translate(0x401000, Access.WRITE)
    assert rw == Translation(0x8000_1000, mmio=True)
    if wp:
        assert isinstance(ro, PageFault) and ro.error_code == PfErr.PRESENT | PfErr.WRITE
        assert (dirty(0x400000), dirty(0x401000)) == (False, True)
    else:
        assert ro == Translation(0x8000_0000, mmio=True)
        assert (dirty(0x400000), dirty(0x401000)) == (False, False)
    audit(vm)
