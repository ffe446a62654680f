"""Specification of ``kvmmu.kvm.role``: ``union kvm_mmu_page_role`` and the roles of each mode.

The bit layout is the kernel's (``arch/x86/include/asm/kvm_host.h``); the root roles follow
``kvm_calc_cpu_role`` and ``kvm_init_shadow_mmu`` (``mmu.c``); the quadrants follow
``kvm_mmu_child_role`` and ``mmu_alloc_shadow_roots``.
"""

from dataclasses import fields, replace

import pytest

from kvmmu.errors import ModeError
from kvmmu.hw.guest import GuestPageTables
from kvmmu.hw.x86 import Acc, Access, Cr0, Cr4, Efer, PagingMode
from kvmmu.kvm.mmu import shadow_path
from kvmmu.kvm.role import MmuPageRole, cpu_root_role, shadow_root_role, tdp_root_role
from kvmmu.kvm.vcpu import Vm

MiB = 1 << 20

# The kernel's layout, written out independently of kvmmu's ROLE_LAYOUT:
# field -> (first bit, width) of union kvm_mmu_page_role.word
KERNEL_LAYOUT = {
    "level": (0, 4),
    "has_4_byte_gpte": (4, 1),
    "quadrant": (5, 2),
    "direct": (7, 1),
    "access": (8, 3),
    "invalid": (11, 1),
    "efer_nx": (12, 1),
    "cr0_wp": (13, 1),
    "smep_andnot_wp": (14, 1),
    "smap_andnot_wp": (15, 1),
    "ad_disabled": (16, 1),
    "guest_mode": (17, 1),
    "passthrough": (18, 1),
    "smm": (24, 8),
}


# --------------------------------------------------------------------------------------------
# The packed word
# --------------------------------------------------------------------------------------------


def test_role_has_exactly_the_kernel_fields() -> None:
    """Every field of ``union kvm_mmu_page_role`` is there, and nothing else."""
    assert {f.name for f in fields(MmuPageRole)} == set(KERNEL_LAYOUT)


@pytest.mark.parametrize("name", sorted(set(KERNEL_LAYOUT) - {"level"}))
def test_each_field_sits_at_its_kernel_bits(name: str) -> None:
    """``role.word``: a field set to its largest value fills exactly its own bits."""
    shift, width = KERNEL_LAYOUT[name]
    top = (1 << width) - 1
    value: int | bool = True if width == 1 else top
    kwargs: dict[str, int | bool] = {"level": 1, "access": 0, name: value}
    role = MmuPageRole(**kwargs)  # type: ignore[arg-type]
    assert role.word == 1 | (top << shift)


@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
def test_level_is_bits_0_to_3(level: int) -> None:
    """``role.level`` is the low four bits of the word."""
    assert MmuPageRole(level=level, access=0).word == level


def test_word_of_a_typical_shadow_role() -> None:
    """A 32-bit guest's level-1 page, quadrant 1, user+write, CR0.WP, EFER.NX (forced)."""
    role = MmuPageRole(
        level=1,
        has_4_byte_gpte=True,
        quadrant=1,
        access=int(Acc.USER | Acc.WRITE),
        efer_nx=True,
        cr0_wp=True,
    )
    assert role.word == 1 | 1 << 4 | 1 << 5 | 0b110 << 8 | 1 << 12 | 1 << 13


def test_unused_bits_19_to_23_stay_clear() -> None:
    """Bits 19..23 are padding in the kernel union; no field may reach them."""
    every = MmuPageRole(
        level=5,
        has_4_byte_gpte=True,
        quadrant=3,
        direct=True,
        access=7,
        invalid=True,
        efer_nx=True,
        cr0_wp=True,
        smep_andnot_wp=True,
        smap_andnot_wp=True,
        ad_disabled=True,
        guest_mode=True,
        passthrough=True,
        smm=255,
    )
    assert every.word & (0b11111 << 19) == 0
    assert every.word == 0xFF07_FFF5


@pytest.mark.parametrize(
    "role",
    [
        MmuPageRole(level=4),
        MmuPageRole(level=1, has_4_byte_gpte=True, quadrant=3, access=0, cr0_wp=True),
        MmuPageRole(level=2, direct=True, access=int(Acc.EXEC), invalid=True, smm=1),
        MmuPageRole(level=3, smep_andnot_wp=True, smap_andnot_wp=True, passthrough=True),
        MmuPageRole(level=5, ad_disabled=True, guest_mode=True, efer_nx=True, smm=255),
    ],
)
def test_word_round_trips(role: MmuPageRole) -> None:
    """``from_word(role.word)`` gives the same role, booleans as booleans."""
    back = MmuPageRole.from_word(role.word)
    assert back == role
    assert back.word == role.word
    assert isinstance(back.direct, bool) and isinstance(back.quadrant, int)


@pytest.mark.parametrize(
    "kwargs",
    [{"level": 0}, {"level": 6}, {"level": 1, "quadrant": 4}, {"level": 1, "access": 8}],
)
def test_fields_out_of_range_are_refused(kwargs: dict[str, int]) -> None:
    """A value that does not fit its bit field (or a level outside 1..5) is a ModeError."""
    with pytest.raises(ModeError, match="role"):
        MmuPageRole(**kwargs)  # type: ignore[arg-type]


def test_child_role_goes_one_level_down_and_drops_passthrough() -> None:
    """``kvm_mmu_child_role``: level - 1, the walk's access and direct-ness, CPU bits kept."""
    parent = MmuPageRole(level=2, has_4_byte_gpte=True, cr0_wp=True, efer_nx=True)
    child = parent.child(direct=False, access=int(Acc.USER), quadrant=1)
    assert (child.level, child.quadrant, child.access, child.direct) == (1, 1, int(Acc.USER), False)
    assert (child.cr0_wp, child.efer_nx, child.has_4_byte_gpte) == (True, True, True)
    root = MmuPageRole(level=4, passthrough=True)
    assert not root.child(direct=True, access=int(Acc.ALL)).passthrough


# --------------------------------------------------------------------------------------------
# Roles of each guest mode: cpu role versus shadow root role
# --------------------------------------------------------------------------------------------

PG, PE, WP = int(Cr0.PG), int(Cr0.PE), int(Cr0.WP)
PAE, PSE, LA57 = int(Cr4.PAE), int(Cr4.PSE), int(Cr4.LA57)
LONG = int(Efer.LME | Efer.LMA)


@pytest.mark.parametrize(
    ("cr0", "cr4", "efer", "cpu_level", "shadow_level", "four_byte"),
    [
        (PE | PG | WP, PSE, 0, 2, 3, True),  # 32-bit: shadowed with PAE tables
        (PE | PG | WP, PAE, 0, 3, 3, False),  # PAE
        (PE | PG | WP, PAE, LONG, 4, 4, False),  # 4-level
        (PE | PG | WP, PAE | LA57, LONG, 5, 5, False),  # 5-level
    ],
)
def test_cpu_role_and_shadow_root_role_per_mode(
    cr0: int, cr4: int, efer: int, cpu_level: int, shadow_level: int, four_byte: bool
) -> None:
    """``kvm_init_shadow_mmu``: the root level is max(guest levels, 3) because KVM shadows
    every non-64-bit guest with PAE tables. ``efer_nx`` stays the guest's EFER.NXE (the 2010
    kernel's ``role.nxe``; today's kernel forces it, a difference kvmmu documents)."""
    cpu = cpu_root_role(cr0, cr4, efer)
    shadow = shadow_root_role(cr0, cr4, efer)
    assert cpu.level == cpu_level
    assert shadow.level == shadow_level
    assert cpu.has_4_byte_gpte is four_byte and shadow.has_4_byte_gpte is four_byte
    assert not cpu.efer_nx  # EFER.NXE is clear in these registers
    assert not shadow.efer_nx
    nx = int(Efer.NXE)
    assert shadow_root_role(cr0, cr4, efer | nx) == replace(shadow, efer_nx=True)
    assert not cpu.direct and not shadow.direct
    assert cpu.cr0_wp and shadow.cr0_wp


def test_cpu_role_copies_efer_nx_when_the_guest_sets_it() -> None:
    """``kvm_calc_cpu_role``: ``efer_nx`` is the guest's EFER.NXE."""
    assert cpu_root_role(PE | PG | WP, PAE, LONG | int(Efer.NXE)).efer_nx


def test_paging_off_roots_are_direct() -> None:
    """With CR0.PG clear there is no guest table: the role is direct (``kvm_calc_cpu_role``)
    and the shadow root is a PAE-level direct page."""
    assert cpu_root_role(PE, 0, 0).direct
    root = shadow_root_role(PE, 0, 0)
    assert root.direct and root.level == 3


@pytest.mark.parametrize(("wp", "expected"), [(True, False), (False, True)])
def test_smep_and_smap_andnot_wp(wp: bool, expected: bool) -> None:
    """``smep_andnot_wp`` / ``smap_andnot_wp`` are CR4.SMEP/SMAP and not CR0.WP: only then do
    supervisor-writable sptes need different rights (``kvm_calc_cpu_role``)."""
    cr0 = PE | PG | (WP if wp else 0)
    cr4 = PAE | int(Cr4.SMEP | Cr4.SMAP)
    role = cpu_root_role(cr0, cr4, LONG)
    assert role.smep_andnot_wp is expected
    assert role.smap_andnot_wp is expected
    assert role.cr0_wp is wp


@pytest.mark.parametrize("levels", [4, 5])
def test_tdp_root_role(levels: int) -> None:
    """``kvm_calc_tdp_mmu_root_page_role``: direct, all rights, cr0_wp and efer_nx set."""
    role = tdp_root_role(levels)
    assert role.level == levels
    assert role.direct and role.cr0_wp and role.efer_nx
    assert role.access == int(Acc.ALL)
    assert not role.has_4_byte_gpte


def test_vcpu_roots_use_the_shadow_root_role() -> None:
    """A 4-level guest without EFER.NXE gets a level-4 root whose role has efer_nx clear, so
    its pages are never mistaken for pages built while the guest's XD bits meant something."""
    vm = Vm(64 * MiB)
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4, nxe=False)
    pt.map(0x400000, 0x100000)
    vcpu = vm.create_vcpu(pt.cpu())
    vcpu.access(0x400000)
    assert vcpu.root is not None
    assert vcpu.root.role == shadow_root_role(vcpu.cpu.cr0, vcpu.cpu.cr4, vcpu.cpu.efer)
    assert not vcpu.root.role.efer_nx and vcpu.root.level == 4
    assert vcpu.root.gfn == pt.cr3 >> 12


# --------------------------------------------------------------------------------------------
# Quadrants: a 32-bit guest on PAE shadow tables
# --------------------------------------------------------------------------------------------


def _bits32_guest() -> tuple[Vm, GuestPageTables]:
    vm = Vm(64 * MiB)
    pt = GuestPageTables(vm.memory, PagingMode.BITS32)
    pt.map(0x400000, 0x100000, length=4 * MiB, writable=True, user=True)
    return vm, pt


def test_32bit_page_directory_is_shadowed_by_four_pae_roots() -> None:
    """``mmu_alloc_shadow_roots``: a 32-bit guest's 1024-entry page directory maps 4 GiB; each
    of KVM's four PAE page directories maps 1 GiB, so four level-2 roots shadow the same gfn,
    told apart by ``quadrant`` 0..3."""
    vm, pt = _bits32_guest()
    vcpu = vm.create_vcpu(pt.cpu())
    vcpu.access(0x400000)
    roots = vm.mmu.page_hash[pt.cr3 >> 12]
    assert sorted(sp.role.quadrant for sp in roots) == [0, 1, 2, 3]
    for sp in roots:
        assert sp.level == 2 and sp.role.has_4_byte_gpte and not sp.direct
        assert sp.gfn == pt.cr3 >> 12
    assert vcpu.pae_root is not None
    assert [sp.role.quadrant for sp in vcpu.pae_root if sp is not None] == [0, 1, 2, 3]
    # the four roles differ only in the quadrant bits 5..6 of the word
    words = {sp.role.quadrant: sp.role.word for sp in roots}
    assert {words[q] ^ words[0] for q in range(4)} == {0, 1 << 5, 2 << 5, 3 << 5}


def test_32bit_page_table_is_shadowed_by_two_level1_pages() -> None:
    """``kvm_mmu_child_role``: a 1024-entry guest page table maps 4 MiB, a PAE shadow table
    2 MiB, so two level-1 shadow pages of the same gfn shadow it: quadrant 0 for the low
    2 MiB, quadrant 1 for the high 2 MiB (the low bit of the parent's spte index)."""
    vm, pt = _bits32_guest()
    vcpu = vm.create_vcpu(pt.cpu())
    table_gfn = pt.entry(0x400000, 2) >> 12
    assert vcpu.access(0x400123, Access.WRITE) == 0x100123
    only_low = vm.mmu.page_hash[table_gfn]
    assert [sp.role.quadrant for sp in only_low] == [0]
    assert vcpu.access(0x600456, Access.WRITE) == 0x300456  # the high half of the same table
    pages = sorted(vm.mmu.page_hash[table_gfn], key=lambda sp: sp.role.quadrant)
    assert [sp.role.quadrant for sp in pages] == [0, 1]
    for sp in pages:
        assert sp.level == 1 and sp.role.has_4_byte_gpte and sp.gfn == table_gfn
    # gva 0x400123 is guest PTE 0 (spte 0 of quadrant 0); gva 0x600456 is guest PTE 512,
    # which is spte 0 of quadrant 1
    low, high = pages
    assert low.get_gfn(0) == 0x100 and high.get_gfn(0) == 0x300
    # each is linked from an adjacent pair of sptes in the quadrant-0 root
    (low_parent, low_index), (high_parent, high_index) = low.parent_ptes[0], high.parent_ptes[0]
    assert low_parent is high_parent and low_parent.role.quadrant == 0
    assert (low_index, high_index) == (2, 3)


def test_high_32bit_addresses_go_through_the_quadrant_3_root() -> None:
    """Guest PDE 768 onwards (gva >= 3 GiB) is shadowed by the root with quadrant 3."""
    vm = Vm(64 * MiB)
    pt = GuestPageTables(vm.memory, PagingMode.BITS32)
    pt.map(0xC0000000, 0x200000)
    vcpu = vm.create_vcpu(pt.cpu())
    assert vcpu.access(0xC0000123) == 0x200123
    sp, index = shadow_path(vcpu, 0xC0000123)[0]
    assert sp.role.quadrant == 3 and index == 0


def test_pae_guest_roots_shadow_the_four_guest_page_directories() -> None:
    """``mmu_alloc_shadow_roots`` for a PAE guest: root ``i`` shadows the page directory that
    PDPTE ``i`` names, with quadrant 0 (only 32-bit guests split a table)."""
    vm = Vm(64 * MiB)
    pt = GuestPageTables(vm.memory, PagingMode.PAE)
    pt.map(0xC0000000, 0x200000)
    vcpu = vm.create_vcpu(pt.cpu())
    assert vcpu.access(0xC0000123) == 0x200123
    assert vcpu.pae_root is not None and vcpu.cpu.pdptes is not None
    for i, sp in enumerate(vcpu.pae_root):
        assert sp is not None
        assert sp.gfn == (vcpu.cpu.pdptes[i] & 0xFFFFFFFFFF000) >> 12
        assert sp.level == 2 and sp.role.quadrant == 0 and not sp.role.has_4_byte_gpte
        assert sp.role.efer_nx
    assert len({sp.gfn for sp in vcpu.pae_root if sp is not None}) == 4


def test_cr0_wp_toggle_gives_a_second_page_for_the_same_gfn() -> None:
    """``cr0_wp`` is in the role, so after the guest clears CR0.WP the same guest table is
    shadowed by another page (the old one stays in the hash); the words differ in bit 13."""
    vm = Vm(64 * MiB)
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4)
    pt.map(0x400000, 0x100000)
    vcpu = vm.create_vcpu(pt.cpu())
    vcpu.access(0x400000)
    table_gfn = pt.entry(0x400000, 2) >> 12
    (with_wp,) = vm.mmu.page_hash[table_gfn]
    vcpu.set_registers(cr0=vcpu.cpu.cr0 & ~Cr0.WP)
    vcpu.access(0x400000)
    pages = vm.mmu.page_hash[table_gfn]
    assert len(pages) == 2 and with_wp in pages
    (without_wp,) = [sp for sp in pages if sp is not with_wp]
    assert with_wp.role.cr0_wp and not without_wp.role.cr0_wp
    assert with_wp.role.word ^ without_wp.role.word == 1 << 13
