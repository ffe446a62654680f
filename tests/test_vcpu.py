"""Specification of ``kvmmu.kvm.vcpu``: the path of one guest access, the TLB, CR3 loads, input
checks, and the two-dimensional walk of TDP.

Rules: the TLB and INVLPG / CR3 semantics of SDM vol. 3 4.10.4 (global pages survive a CR3 load
only with CR4.PGE); canonical addresses (SDM vol. 1 3.3.7.1: a non-canonical access is a #GP,
not a #PF); KVM's CPUID for shadow paging (``cpuid.c`` hides PKU unless TDP is on); and the
cost of a nested walk, (n + 1)(m + 1) - 1 references for an n-level guest on m-level TDP
tables (each of the n guest entries and the final gpa needs an m-step TDP walk).
"""

from dataclasses import replace

import pytest

import kvmmu.kvm.vcpu as vcpu_module
from kvmmu.errors import AddressError, KvmmuError, MemslotError, ModeError
from kvmmu.hw.guest import GuestPageTables
from kvmmu.hw.walk import GeneralProtection, PageFault
from kvmmu.hw.x86 import Access, PagingMode
from kvmmu.kvm.vcpu import Tlb, Translation, Vm

MiB = 1 << 20


def _vm_and_vcpu(**vm_kw: object) -> tuple[Vm, GuestPageTables, vcpu_module.Vcpu]:
    vm = Vm(64 * MiB, **vm_kw)  # type: ignore[arg-type]
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4, pge=True)
    pt.map(0x400000, 0x100000, length=0x4000, writable=True)
    vcpu = vm.create_vcpu(pt.cpu())
    return vm, pt, vcpu


# --------------------------------------------------------------------------------------------
# The TLB
# --------------------------------------------------------------------------------------------


def test_tlb_hit_needs_no_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    """A repeated access is served by the TLB (``tlb_hits``): neither the shadow tables nor
    the guest's are walked."""
    vm, _, vcpu = _vm_and_vcpu()
    assert vcpu.access(0x400123) == 0x100123
    hits = vm.mmu.stats.tlb_hits

    def no_walk(*args: object, **kwargs: object) -> None:
        raise AssertionError("a TLB hit must not walk any table")

    for name in ("walk", "walk_unchecked"):
        monkeypatch.setattr(vcpu_module, name, no_walk)
    monkeypatch.setattr("kvmmu.kvm.fault.walk_unchecked", no_walk)
    assert vcpu.access(0x400FF8) == 0x100FF8  # same page, other offset
    assert vm.mmu.stats.tlb_hits == hits + 1


def test_tlb_caches_per_access_kind() -> None:
    """A read does not make a later write a hit: the write must be checked by a walk."""
    vm, _, vcpu = _vm_and_vcpu()
    vcpu.access(0x400000)
    misses = vm.mmu.stats.tlb_misses
    vcpu.access(0x400000, Access.WRITE)
    assert vm.mmu.stats.tlb_misses == misses + 1


def test_invlpg_drops_the_tlb_entry() -> None:
    """INVLPG removes the translation of that page only (SDM 4.10.4.1)."""
    vm, _, vcpu = _vm_and_vcpu()
    vcpu.access(0x400000)
    vcpu.access(0x401000)
    vcpu.invlpg(0x400000)
    misses = vm.mmu.stats.tlb_misses
    assert vcpu.access(0x400000) == 0x100000
    assert vm.mmu.stats.tlb_misses == misses + 1
    assert vcpu.access(0x401000) == 0x101000
    assert vm.mmu.stats.tlb_misses == misses + 1  # the other page still hits


@pytest.mark.parametrize("pge", [True, False])
def test_cr3_load_keeps_global_entries_only_with_pge(pge: bool) -> None:
    """SDM 4.10.4.1: a MOV to CR3 invalidates every non-global TLB entry; global ones (G=1 in
    the leaf) survive if CR4.PGE is set. Without PGE everything goes."""
    vm = Vm(64 * MiB)
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4, pge=pge)
    pt.map(0x400000, 0x100000, global_=True)
    pt.map(0x401000, 0x101000)
    vcpu = vm.create_vcpu(pt.cpu())
    vcpu.access(0x400000)
    vcpu.access(0x401000)
    vcpu.set_cr3(pt.cr3)
    hits = vm.mmu.stats.tlb_hits
    assert vcpu.access(0x400000) == 0x100000
    assert vm.mmu.stats.tlb_hits == hits + (1 if pge else 0)
    assert vcpu.access(0x401000) == 0x101000
    assert vm.mmu.stats.tlb_hits == hits + (1 if pge else 0)


def test_invlpg_drops_a_global_entry_too() -> None:
    """INVLPG invalidates the page's entry whether global or not."""
    vm = Vm(64 * MiB)
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4, pge=True)
    pt.map(0x400000, 0x100000, global_=True)
    vcpu = vm.create_vcpu(pt.cpu())
    vcpu.access(0x400000)
    vcpu.invlpg(0x400000)
    hits = vm.mmu.stats.tlb_hits
    vcpu.access(0x400000)
    assert vm.mmu.stats.tlb_hits == hits


# --------------------------------------------------------------------------------------------
# Faults and bad input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gva", [0x0000_8000_0000_0000, 0xFFFF_7FFF_FFFF_F000, 1 << 63])
def test_non_canonical_gva_is_a_general_protection_fault(gva: int) -> None:
    """SDM vol. 1 3.3.7.1: in 4-level paging bits 63..47 must be equal, otherwise the access
    raises #GP (a value, not an exception) and no table is walked."""
    vm, _, vcpu = _vm_and_vcpu()
    result = vcpu.access(gva)
    assert isinstance(result, GeneralProtection) and result.address == gva
    assert vm.mmu.stats.pf_fixed == 0 and vm.mmu.stats.pf_guest == 0


def test_unmapped_gva_is_a_guest_page_fault() -> None:
    """A gva the guest did not map is reflected as a #PF with the address in CR2."""
    vm, _, vcpu = _vm_and_vcpu()
    fault = vcpu.access(0x800000, Access.WRITE)
    assert isinstance(fault, PageFault) and fault.cr2 == 0x800000
    assert vm.mmu.stats.pf_guest == 1


@pytest.mark.parametrize("gva", ["0x400000", 1.5, None, True, -1, 1 << 64])
def test_gva_must_be_a_64_bit_int(gva: object) -> None:
    """Bad input is a typed error saying what is expected."""
    _, _, vcpu = _vm_and_vcpu()
    with pytest.raises(AddressError, match="64-bit unsigned int"):
        vcpu.access(gva)  # type: ignore[arg-type]


@pytest.mark.parametrize(("gva", "size"), [(0x400FFC, 8), (0x400FFF, 2), (0x400FFE, 4)])
def test_access_that_crosses_a_page_is_refused(gva: int, size: int) -> None:
    """``read``/``write`` act on one page; a crossing access must be split by the caller."""
    _, _, vcpu = _vm_and_vcpu()
    with pytest.raises(AddressError, match="crosses a page; split it"):
        vcpu.read(gva, size)
    with pytest.raises(AddressError, match="crosses a page"):
        vcpu.write(gva, 0, size)


@pytest.mark.parametrize("size", [0, 3, 16, 2.0])
def test_access_size_must_be_1_2_4_or_8(size: object) -> None:
    _, _, vcpu = _vm_and_vcpu()
    with pytest.raises(AddressError, match="1, 2, 4 or 8"):
        vcpu.read(0x400000, size)  # type: ignore[arg-type]


def test_32bit_guest_gva_above_4g_is_refused() -> None:
    """A 32-bit guest has 32-bit linear addresses."""
    vm = Vm(64 * MiB)
    pt = GuestPageTables(vm.memory, PagingMode.BITS32)
    vcpu = vm.create_vcpu(pt.cpu())
    with pytest.raises(AddressError, match="32 bits"):
        vcpu.access(1 << 32)


def test_pke_with_shadow_paging_is_a_mode_error() -> None:
    """KVM offers protection keys only with TDP (``cpuid.c`` clears PKU otherwise), so a
    shadow-paging vCPU with CR4.PKE is refused with a message pointing to ``tdp=True``."""
    vm = Vm(64 * MiB)
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4)
    with pytest.raises(ModeError, match="tdp=True"):
        vm.create_vcpu(pt.cpu(pke=True))
    vcpu = vm.create_vcpu(pt.cpu())
    with pytest.raises(ModeError, match="PKE"):
        vcpu.set_registers(cr4=pt.cpu(pke=True).cr4)
    tdp = Vm(64 * MiB, tdp=True)
    tpt = GuestPageTables(tdp.memory, PagingMode.LEVEL4)
    assert tdp.create_vcpu(tpt.cpu(pke=True)).cpu.cr4 == tpt.cpu(pke=True).cr4


def test_tdp_levels_must_be_4_or_5() -> None:
    with pytest.raises(ModeError, match="4 or 5"):
        Vm(64 * MiB, tdp=True, tdp_levels=3)


def test_errors_are_kvmmu_errors() -> None:
    """Every input error derives from ``KvmmuError``, so one except clause catches them."""
    assert issubclass(AddressError, KvmmuError) and issubclass(ModeError, KvmmuError)


# --------------------------------------------------------------------------------------------
# TDP: the two-dimensional walk
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "tdp_levels", "refs"),
    [
        (PagingMode.LEVEL4, 4, 24),  # (4 + 1) * (4 + 1) - 1
        (PagingMode.LEVEL5, 5, 35),  # (5 + 1) * (5 + 1) - 1
        (PagingMode.LEVEL4, 5, 29),  # (4 + 1) * (5 + 1) - 1
        (PagingMode.LEVEL5, 4, 29),  # (5 + 1) * (4 + 1) - 1
    ],
)
def test_two_dimensional_walk_reference_count(mode: PagingMode, tdp_levels: int, refs: int) -> None:
    """With 4 KiB TDP pages every guest table access and the final gpa each take a full TDP
    walk: (n + 1)(m + 1) - 1 memory references (``vcpu.last_refs``)."""
    vm = Vm(64 * MiB, tdp=True, tdp_levels=tdp_levels, huge_pages=False)
    pt = GuestPageTables(vm.memory, mode)
    pt.map(0x400000, 0x100000)
    vcpu = vm.create_vcpu(pt.cpu())
    assert vcpu.access(0x400123) == 0x100123
    assert vcpu.last_refs == refs
    assert all(sp.direct for sp in vm.mmu.active)
    assert {sp.level for sp in vm.mmu.active} == set(range(1, tdp_levels + 1))


def test_tdp_large_pages_shorten_the_walk() -> None:
    """With huge host pages the TDP walks end at 2 MiB leaves: one reference fewer for each of
    the five TDP walks (19 instead of 24)."""
    vm = Vm(64 * MiB, tdp=True, huge_pages=True)
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4)
    pt.map(0x400000, 0x100000)
    vcpu = vm.create_vcpu(pt.cpu())
    vcpu.access(0x400000)
    assert vcpu.last_refs == 19


def test_shadow_walk_reference_count_is_the_guest_depth() -> None:
    """Under shadow paging the hardware walks only the shadow tables: 4 references."""
    _, _, vcpu = _vm_and_vcpu()
    vcpu.access(0x400000)
    assert vcpu.last_refs == 4


def test_tdp_guest_fault_needs_no_exit() -> None:
    """With TDP the guest's own page faults are delivered by the hardware: no MMU work."""
    vm = Vm(64 * MiB, tdp=True)
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4)
    pt.map(0x400000, 0x100000)
    vcpu = vm.create_vcpu(pt.cpu())
    vcpu.access(0x400000)
    fixed = vm.mmu.stats.pf_fixed
    fault = vcpu.access(0x401000)
    assert isinstance(fault, PageFault) and fault.cr2 == 0x401000
    assert vm.mmu.stats.pf_fixed == fixed and vm.mmu.stats.pf_guest == 0


def test_translate_says_how_the_access_ended() -> None:
    """``translate`` returns a :class:`Translation` with the gpa and the emulated/MMIO flags."""
    _, _, vcpu = _vm_and_vcpu()
    t = vcpu.translate(0x400010, Access.WRITE)
    assert t == Translation(0x100010, emulated=False, mmio=False)


def test_invlpg_drops_every_fractured_piece_of_a_guest_large_page() -> None:
    """SDM 4.10.2.3 / 4.10.4.1: a guest 2 MiB page mapped by 4 KiB TDP pages is cached as
    several 4 KiB TLB entries; INVLPG of any address in the large page drops all of them."""
    vm = Vm(64 << 20, tdp=True, huge_pages=False)
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4)
    pt.map(0x4000_0000, 0x20_0000, 2 << 20, user=True)
    vcpu = vm.create_vcpu(pt.cpu())
    for gva in (0x4000_1234, 0x4010_0000):
        assert vcpu.access(gva, Access.READ, cpl=3) == gva - 0x4000_0000 + 0x20_0000
    assert len(vcpu.tlb) == 2  # two 4 KiB pieces of one 2 MiB guest page
    pt.protect(0x4000_0000, user=False)  # the guest edits its PDE: no exit under TDP
    vcpu.invlpg(0x4000_0000)  # one INVLPG, of the large page's first address
    assert len(vcpu.tlb) == 0
    fault = vcpu.access(0x4000_1234, Access.READ, cpl=3)
    assert isinstance(fault, PageFault) and int(fault.error_code) == 0b101


def test_a_tlb_lookup_finds_what_its_entries_hold_whatever_sizes_come_and_go() -> None:
    """``Tlb.lookup`` skips entry sizes the TLB holds none of: through inserts that evict,
    re-inserts, INVLPG and flushes (global entries kept or not), it answers what a probe of
    every size in the entries answers."""
    import random

    rng = random.Random(16)
    tlb = Tlb(capacity=8)
    cls = (Access.READ, False, True)

    def probe(gva: int) -> int | None:
        for level in (1, 2, 3):
            shift = 12 + 9 * (level - 1)
            hit = tlb.entries.get((gva >> shift, level, cls))
            if hit is not None:
                return hit[0] | (gva & ((1 << shift) - 1))
        return None

    for _ in range(2000):
        gva = rng.randrange(1 << 32) & ~0xFFF
        op = rng.randrange(10)
        if op < 6:
            level = rng.choice((1, 2, 3))
            tlb.insert(gva, level, rng.randrange(1 << 30), cls, rng.random() < 0.3)
        elif op < 8:
            tlb.invlpg(gva)
        elif op == 8:
            tlb.flush(keep_global=rng.random() < 0.5)
        cached = [page << (12 + 9 * (level - 1)) for page, level, _ in tlb.entries]
        for addr in (gva, *cached):
            assert tlb.lookup(addr | 0x123, cls) == probe(addr | 0x123)


def test_a_cpl_switch_changes_only_the_cpl_of_the_guest_and_hardware_registers() -> None:
    """``set_cpl`` (and ``access(..., cpl=)``) change the CPL alone: the guest's registers and
    the registers of the hardware walk equal what a fresh computation gives, switch after
    switch, and a user access to a supervisor page faults with U/S set in the error code."""
    _, pt, vcpu = _vm_and_vcpu()
    vcpu.access(0x400000)
    fresh_cpu = vcpu.cpu
    for cpl in (3, 0, 3, 1, 0):
        vcpu.set_cpl(cpl)
        assert vcpu.cpu == replace(fresh_cpu, cpl=cpl) and vcpu.mode is fresh_cpu.mode
        switched = vcpu.hardware_cpu()
        vcpu._hw_cpu = None  # what hardware_cpu() builds from nothing
        assert switched == vcpu.hardware_cpu() and switched.cpl == cpl
    pt.protect(0x400000, user=False)
    vcpu.invlpg(0x400000)
    fault = vcpu.access(0x400000, Access.READ, cpl=3)
    assert isinstance(fault, PageFault) and int(fault.error_code) & 0b100
    assert vcpu.cpu == fresh_cpu and vcpu.hardware_cpu().cpl == 0
    assert isinstance(vcpu.access(0x400000), int)


# --------------------------------------------------------------------------------------------
# Memslot flags on a live VM
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tdp", [False, True])
def test_set_memslot_flags_refuses_readonly_on_a_live_slot(tdp: bool) -> None:
    """KVM refuses to change KVM_MEM_READONLY on an existing slot (``kvm_set_memory_region``:
    -EINVAL). Flipping it here used to leave writable sptes over a ROM, which the audit caught.
    Dirty logging may still be switched on and off."""
    from kvmmu.hw.memory import MemslotFlag
    from kvmmu.kvm.audit import audit_report

    vm, _, vcpu = _vm_and_vcpu(tdp=tdp)
    assert vcpu.write(0x400000, 0x1234) is None  # a writable spte now maps gfn 0x100
    with pytest.raises(MemslotError, match="READONLY"):
        vm.set_memslot_flags(0, MemslotFlag.READONLY)
    assert not vm.memory.slots.get(0).readonly
    assert audit_report(vm) == []
    vm.set_memslot_flags(0, MemslotFlag.LOG_DIRTY_PAGES)
    assert vcpu.write(0x400008, 5) is None
    assert 0x100 in vm.get_dirty_log(0)
    assert audit_report(vm) == []
