"""Specification of CR0/CR4/EFER writes in ``kvmmu.kvm.vcpu``: when the MMU context is reset,
and that the shadow MMU answers as the walker does after every change.

Rules: ``x86.c`` resets the MMU context (``kvm_mmu_reset_context``) when a write changes a bit
of ``KVM_MMU_CR0_ROLE_BITS`` (PG, WP; ``kvm_post_set_cr0``), ``KVM_MMU_CR4_ROLE_BITS`` (PSE,
PAE, LA57, SMEP, SMAP, PKE; ``kvm_post_set_cr4``) or ``KVM_MMU_EFER_ROLE_BITS`` (LME, NX;
``kvm_set_efer``); a change of CR4.PGE only flushes the guest's TLB and syncs the roots, the
current and the previous ones (``KVM_REQ_TLB_FLUSH_GUEST``, ``kvm_vcpu_flush_tlb_guest``); with
TDP a change of CR0.WP alone keeps the roots (``kvm_init_mmu`` only). The architecture: SDM
vol. 3 4.3 (CR4.PSE decides whether bit 7 of a 32-bit PDE means PS), 4.5 (with EFER.NXE=0
bit 63 of a present entry is reserved), 4.10.4.1 (which CR writes invalidate the TLBs).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from kvmmu.hw.guest import GuestPageTables
from kvmmu.hw.walk import PageFault, WalkResult, walk
from kvmmu.hw.x86 import Access, Cr0, Cr4, Efer, PagingMode, PfErr
from kvmmu.kvm.audit import audit_report
from kvmmu.kvm.mmu import unsync_page
from kvmmu.kvm.role import CpuRole, MmuExtendedRole, calc_cpu_role
from kvmmu.kvm.vcpu import Vcpu, Vm

MiB = 1 << 20
P, W, U, A, D, PS = 1, 2, 4, 1 << 5, 1 << 6, 1 << 7
XD = 1 << 63
GVA = 0x4000_0000


def _same_as_walker(vcpu: Vcpu, gva: int, kind: Access = Access.READ, cpl: int = 0) -> None:
    want = walk(vcpu.memory, replace(vcpu.cpu, cpl=cpl), gva, kind, set_ad=False)
    got = vcpu.access(gva, kind, cpl)
    if isinstance(want, WalkResult):
        assert got == want.gpa, f"{kind.value} {gva:#x}: {got} but the walker says {want.gpa:#x}"
    else:
        assert isinstance(want, PageFault) and isinstance(got, PageFault), (got, want)
        assert (got.error_code, got.cr2) == (want.error_code, want.cr2), (got, want)


def _bits32_guest(pse: bool, table_gpa: int) -> tuple[Vm, Vcpu]:
    """A 32-bit guest whose PDE for GVA has bit 7 set and points at ``table_gpa``, whose first
    PTE maps gpa 1 MiB: a page table with CR4.PSE=0, a 4 MiB page with CR4.PSE=1."""
    vm = Vm(64 * MiB)
    pt = GuestPageTables(vm.memory, PagingMode.BITS32, pse=pse)
    pt.set_entry(GVA, 2, table_gpa | P | W | U | A | D | PS)
    vm.memory.write(table_gpa, 0x10_0000 | P | W | U, 4)
    return vm, vm.create_vcpu(pt.cpu())


@pytest.mark.parametrize("table_gpa", [0x40_0000, 0x20_1000], ids=["4MiB-page", "rsvd-bit-21"])
@pytest.mark.parametrize("pse_first", [False, True])
def test_cr4_pse_change_reinterprets_bit_7_of_a_32bit_pde(pse_first: bool, table_gpa: int) -> None:
    """SDM 4.3: with CR4.PSE=0 bit 7 of a 32-bit PDE is ignored (the PDE points to a table);
    with CR4.PSE=1 it maps a 4 MiB page, and bit 21 of a 4 MiB PDE is reserved (#PF P|RSVD).
    After ``set_registers(cr4=...)`` the shadow MMU must answer with the new meaning. KVM's
    roles cannot tell the two apart (``kvm_mmu_page_role`` has no PSE bit), so kvmmu zaps the
    32-bit page-directory shadows when CR4.PSE changes."""
    vm, vcpu = _bits32_guest(pse_first, table_gpa)
    for kind in (Access.READ, Access.WRITE):
        _same_as_walker(vcpu, GVA + 0x234, kind)
    assert vcpu.set_registers(cr4=vcpu.cpu.cr4 ^ Cr4.PSE) is None
    for kind in (Access.READ, Access.WRITE):
        _same_as_walker(vcpu, GVA + 0x234, kind)
    assert audit_report(vm) == []
    assert vcpu.set_registers(cr4=vcpu.cpu.cr4 ^ Cr4.PSE) is None
    _same_as_walker(vcpu, GVA + 0x234)
    assert audit_report(vm) == []


def test_audit_reads_bit_7_of_a_32bit_pde_as_ps_only_with_cr4_pse() -> None:
    """The audit's guest-entry checks use ``FNAME(is_last_gpte)``: with CR4.PSE=0 a 32-bit PDE
    with bit 7 set is a table pointer, and a table spte that follows it is right."""
    vm, vcpu = _bits32_guest(False, 0x40_0000)
    assert vcpu.access(GVA + 0x234) == 0x10_0234
    assert audit_report(vm) == []


def _level4_with_xd(vm: Vm) -> tuple[GuestPageTables, Vcpu]:
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4)
    pt.map(GVA, 0x10_0000, length=0x2000, writable=True, user=True, nx=True)
    return pt, vm.create_vcpu(pt.cpu())


@pytest.mark.parametrize("kind", [Access.READ, Access.WRITE, Access.FETCH])
def test_efer_nxe_cleared_with_xd_pages_mapped_faults_rsvd(kind: Access) -> None:
    """SDM 4.5: with EFER.NXE=0, bit 63 of a present PAE/4-level entry is reserved, so an
    access through an XD leaf is #PF P|RSVD once the change has taken effect (the write to EFER
    resets KVM's MMU context and kvmmu flushes the TLB). Today's KVM forces ``efer_nx`` in
    shadow roles (``kvm_init_shadow_mmu``) and would reuse the sptes built while NXE was set;
    kvmmu keeps the guest's NXE in the role, as the 2010 kernel's ``role.nxe`` did."""
    vm = Vm(64 * MiB)
    _, vcpu = _level4_with_xd(vm)
    assert vcpu.access(GVA + 8, Access.READ) == 0x10_0008
    assert vcpu.access(GVA + 8, Access.WRITE) == 0x10_0008
    assert vcpu.set_registers(efer=vcpu.cpu.efer & ~Efer.NXE) is None
    _same_as_walker(vcpu, GVA + 8, kind)
    got = vcpu.access(GVA + 8, kind)
    assert isinstance(got, PageFault) and got.error_code & PfErr.RSVD
    assert vcpu.set_registers(efer=vcpu.cpu.efer | Efer.NXE) is None
    _same_as_walker(vcpu, GVA + 8, kind)
    assert audit_report(vm) == []


# -- every CR0/CR4/EFER bit that changes translations ----------------------------------------


def _rights_guest(vm: Vm) -> tuple[GuestPageTables, Vcpu, list[int]]:
    """A 4-level guest with a user page, a read-only supervisor page and an XD user page."""
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4, pge=True, smep=False, smap=False)
    pt.map(GVA, 0x10_0000, writable=True, user=True)
    pt.map(GVA + 0x1000, 0x10_1000, writable=False, user=False, global_=True)
    pt.map(GVA + 0x2000, 0x10_2000, writable=True, user=True, nx=True)
    return pt, vm.create_vcpu(pt.cpu()), [GVA, GVA + 0x1000, GVA + 0x2000]


@pytest.mark.parametrize(
    ("reg", "bit"),
    [
        ("cr0", Cr0.WP),
        ("cr4", Cr4.SMEP),
        ("cr4", Cr4.SMAP),
        ("cr4", Cr4.PGE),
        ("efer", Efer.NXE),
    ],
    ids=["WP", "SMEP", "SMAP", "PGE", "NXE"],
)
@pytest.mark.parametrize("tdp", [False, True])
def test_every_access_agrees_with_the_walker_after_a_cr_bit_flips(
    reg: str, bit: int, tdp: bool
) -> None:
    """Flip one bit twice; after each write every access, at CPL 0 and 3, is the walker's."""
    vm = Vm(64 * MiB, tdp=tdp)
    _, vcpu, gvas = _rights_guest(vm)
    for _ in range(3):
        for gva in gvas:
            for kind in Access:
                for cpl in (0, 3):
                    _same_as_walker(vcpu, gva + 0x10, kind, cpl)
        assert audit_report(vm) == []
        value = getattr(vcpu.cpu, reg) ^ bit
        assert vcpu.set_registers(**{reg: value}) is None


def test_mode_switches_agree_with_the_walker() -> None:
    """CR0.PG, CR4.PAE, EFER.LME/LMA and CR4.LA57: a guest that moves between 32-bit, PAE,
    4-level, 5-level paging and paging off, one address space per mode in one memory, sees
    each mode's own translation after each switch (new roles: new shadow pages)."""
    vm = Vm(64 * MiB)
    spaces = {}
    for n, mode in enumerate(
        (PagingMode.BITS32, PagingMode.PAE, PagingMode.LEVEL4, PagingMode.LEVEL5)
    ):
        pt = GuestPageTables(vm.memory, mode, table_gfns=range(0x800 + 64 * n, 0x840 + 64 * n))
        pt.map(GVA, 0x10_0000 + 0x1000 * n, length=0x1000, writable=True, user=True)
        spaces[mode] = pt.cpu()
    vcpu = vm.create_vcpu(spaces[PagingMode.BITS32])
    order = [*spaces, PagingMode.BITS32, PagingMode.LEVEL4, PagingMode.PAE, PagingMode.LEVEL5]
    for mode in [*order, None, PagingMode.LEVEL4]:
        if mode is None:  # paging off: CR0.PG=0 clears EFER.LMA
            regs = {"cr0": vcpu.cpu.cr0 & ~Cr0.PG, "efer": vcpu.cpu.efer & ~Efer.LMA}
            assert vcpu.set_registers(**regs) is None
            _same_as_walker(vcpu, 0x10_0123)
            continue
        cpu = spaces[mode]
        regs = {"cr0": cpu.cr0, "cr4": cpu.cr4, "efer": cpu.efer, "cr3": cpu.cr3}
        assert vcpu.set_registers(**regs) is None
        assert vcpu.mode is mode
        for kind in (Access.READ, Access.WRITE):
            _same_as_walker(vcpu, GVA + 0x10, kind, 3)
        assert audit_report(vm) == []


# -- when the context is reset ---------------------------------------------------------------


def test_cpu_role_has_the_extended_bits() -> None:
    """``kvm_calc_cpu_role``: the base role plus ``kvm_mmu_extended_role``; PKE and LA57 count
    only in long mode; with paging off only ``valid`` is set and the base role is direct."""
    cpu = GuestPageTables(Vm(16 * MiB).memory, PagingMode.LEVEL5, pse=True, smep=True).cpu()
    role = calc_cpu_role(cpu.cr0, cpu.cr4 | Cr4.PKE, cpu.efer)
    assert isinstance(role, CpuRole)
    assert role.ext == MmuExtendedRole(
        valid=True, cr4_pse=False, cr4_pke=True, cr4_smep=True, cr4_la57=True, efer_lma=True
    )
    assert role.base.level == 5 and not role.base.has_4_byte_gpte
    pae_only = calc_cpu_role(int(Cr0.PE | Cr0.PG), int(Cr4.PAE | Cr4.PKE | Cr4.LA57), 0)
    assert not pae_only.ext.cr4_pke and not pae_only.ext.cr4_la57 and pae_only.base.level == 3
    off = calc_cpu_role(int(Cr0.PE), int(Cr4.PSE | Cr4.SMEP), int(Efer.NXE))
    assert off.ext == MmuExtendedRole(valid=True) and off.base.direct


def test_a_pge_change_flushes_syncs_and_frees_unsync_previous_roots() -> None:
    """``kvm_post_set_cr4``: CR4.PGE is not a role bit. Its change flushes the guest TLB
    (``kvm_vcpu_flush_tlb_guest``): the current roots are synced (``kvm_mmu_sync_roots``) and
    stay, a previous root with unsync pages below is freed, "sync prev_roots by simply freeing
    them" (``kvm_mmu_sync_prev_roots``). The next CR3 load finds it in the hash and syncs it."""
    vm = Vm(64 * MiB)
    pt, vcpu, _ = _rights_guest(vm)
    other = GuestPageTables(vm.memory, PagingMode.LEVEL4, table_gfns=range(0x900, 0x940))
    other.map(GVA, 0x10_3000, writable=True, user=True)
    assert vcpu.set_cr3(other.cr3) is None
    assert vcpu.access(GVA, Access.WRITE, cpl=3) == 0x10_3000
    leaf = next(sp for sp in vm.mmu.active if sp.level == 1 and not sp.direct)
    assert vcpu.set_cr3(pt.cr3) is None  # the other root is a previous root now
    assert vcpu.access(GVA) == 0x10_0000
    root, (prev,) = vcpu.root, vcpu.prev_roots
    assert prev.gfn == other.cr3 >> 12 and prev.root_count == 1
    unsync_page(vm.mmu, leaf)  # as mmu_try_to_unsync_pages does for a guest store
    other.protect(GVA, writable=False)  # the guest edits the unsync table without an exit
    assert vcpu.set_registers(cr4=vcpu.cpu.cr4 ^ Cr4.PGE) is None
    assert vcpu.root is root and vcpu.prev_roots == [] and prev.root_count == 0
    assert len(vcpu.tlb) == 0
    assert vcpu.set_cr3(other.cr3) is None
    assert vcpu.root is prev and not leaf.unsync  # found in the hash, synced at load
    fault = vcpu.access(GVA, Access.WRITE, cpl=3)
    assert isinstance(fault, PageFault) and fault.error_code & PfErr.PRESENT
    assert audit_report(vm) == []


def test_only_role_bits_reset_the_context() -> None:
    """A write that changes no role bit keeps the roots; one that changes a role bit drops
    them (``kvm_mmu_reset_context``), and the vCPU loads new ones at the next access."""
    vm = Vm(64 * MiB)
    _, vcpu, _ = _rights_guest(vm)
    assert vcpu.access(GVA) == 0x10_0000
    root = vcpu.root
    assert root is not None
    assert vcpu.set_registers(cr0=vcpu.cpu.cr0, cr4=vcpu.cpu.cr4) is None
    assert vcpu.root is root and root.root_count == 1
    assert vcpu.set_registers(cr4=vcpu.cpu.cr4 ^ Cr4.SMEP) is None
    assert vcpu.root is None and root.root_count == 0


def test_cr0_wp_alone_keeps_the_tdp_roots() -> None:
    """``kvm_post_set_cr0``: with TDP, a change of CR0.WP alone re-inits the MMU but does not
    unload the roots: WP does not change TDP sptes."""
    vm = Vm(64 * MiB, tdp=True)
    _, vcpu, _ = _rights_guest(vm)
    assert vcpu.access(GVA) == 0x10_0000
    root = vcpu.root
    assert vcpu.set_registers(cr0=vcpu.cpu.cr0 ^ Cr0.WP) is None
    assert vcpu.root is root
    assert len(vcpu.tlb) == 0
