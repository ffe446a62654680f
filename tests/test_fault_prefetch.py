"""Specification of spte prefetch in ``kvmmu.kvm.fault``: ``direct_pte_prefetch`` and
``FNAME(pte_prefetch)``.

Rules (``mmu.c``, ``paging_tmpl.h``): after a fault installs a leaf spte in a level-1 page, the
other empty sptes of its aligned group of 8 are mapped too. A direct page maps the gfns it
covers, run by run, and a run that cannot be mapped (no memslot, a read-only slot, past the end
of the slot, or writable into a slot that logs dirty pages) ends the prefetch. An indirect page
maps from the guest entries beside the faulting one and stops at the first that is not present,
not accessed, has reserved bits or cannot be mapped. A clean entry gives a read-only spte, and a
prefetched spte never unsyncs a page (``mmu_try_to_unsync_pages`` returns -EEXIST). The
counters are the kernel's: one ``pf_taken`` and one ``pf_fixed`` for the fault, one
``pages_4k`` per leaf spte.
"""

from __future__ import annotations

import pytest

from kvmmu.hw.guest import GuestPageTables
from kvmmu.hw.memory import MemslotFlag
from kvmmu.hw.x86 import Access, PagingMode
from kvmmu.kvm import spte as S
from kvmmu.kvm.audit import audit
from kvmmu.kvm.mmu import shadow_path
from kvmmu.kvm.vcpu import Vcpu, Vm

MiB = 1 << 20
GVA = 0x40_0000
GPA = 0x10_0000


def _guest(
    *, accessed: tuple[bool, ...] = (True,) * 8, dirty: bool = False, **vm_kw: object
) -> tuple[Vm, GuestPageTables, Vcpu]:
    """Eight writable user pages at GVA -> GPA, guest PTE i accessed as ``accessed[i]``."""
    vm = Vm(64 * MiB, huge_pages=False, **vm_kw)  # type: ignore[arg-type]
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4)
    for i, a in enumerate(accessed):
        pt.map(GVA + i * 0x1000, GPA + i * 0x1000, writable=True, accessed=a, dirty=dirty)
    return vm, pt, vm.create_vcpu(pt.cpu())


def _leaf_spte(vcpu: Vcpu, gva: int) -> int:
    sp, index = shadow_path(vcpu, gva)[-1]
    return int(sp.spt[index]) if sp.level == 1 else 0


def test_an_indirect_fault_prefetches_its_group_from_accessed_guest_ptes() -> None:
    vm, _, vcpu = _guest()
    assert vcpu.access(GVA) == GPA
    stats = vm.mmu.stats
    assert (stats.pf_taken, stats.pf_fixed, stats.pages_4k) == (1, 1, 8)
    for i in range(1, 8):
        spte = _leaf_spte(vcpu, GVA + i * 0x1000)
        assert S.is_shadow_present(spte) and not spte & S.ACCESSED, "prefetched: A clear"
        assert vcpu.access(GVA + i * 0x1000) == GPA + i * 0x1000
    assert stats.pf_taken == 1, "the neighbours needed no fault"
    audit(vm)


def test_prefetch_off_maps_only_the_faulting_spte() -> None:
    vm, _, vcpu = _guest(prefetch=False)
    vcpu.access(GVA)
    assert vm.mmu.stats.pages_4k == 1
    vcpu.access(GVA + 0x1000)
    assert vm.mmu.stats.pf_fixed == 2


def test_indirect_prefetch_stops_at_the_first_guest_pte_without_accessed() -> None:
    vm, _, vcpu = _guest(accessed=(True, True, True, False, True, True, True, True))
    vcpu.access(GVA)
    assert vm.mmu.stats.pages_4k == 3, "entries 1 and 2, then entry 3 stops it"
    vcpu.access(GVA + 5 * 0x1000)
    assert vm.mmu.stats.pages_4k == 4, "0-2 are present, 3 stops it again"
    audit(vm)


def test_a_clean_guest_pte_is_prefetched_read_only() -> None:
    vm, _, vcpu = _guest(dirty=False)
    vcpu.access(GVA)
    assert not _leaf_spte(vcpu, GVA + 0x1000) & S.WRITABLE
    taken = vm.mmu.stats.pf_taken
    assert vcpu.access(GVA + 0x1000, Access.WRITE) == GPA + 0x1000
    assert vm.mmu.stats.pf_taken == taken + 1, "the first write faults to set D"
    assert _leaf_spte(vcpu, GVA + 0x1000) & S.WRITABLE


def test_a_dirty_guest_pte_is_prefetched_writable() -> None:
    _vm, _, vcpu = _guest(dirty=True)
    vcpu.access(GVA)
    assert _leaf_spte(vcpu, GVA + 0x1000) & S.WRITABLE


def test_a_prefetched_spte_never_unsyncs_a_guest_table() -> None:
    """Guest PTE 1 maps the guest's own leaf table, writable and dirty: the prefetch leaves it
    read-only (-EEXIST); the guest's own write fault then unsyncs the table."""
    vm = Vm(64 * MiB, huge_pages=False)
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4)
    pt.map(GVA, GPA, writable=True, accessed=True, dirty=True)
    table = pt.entry(GVA, 2) & ~0xFFF & ((1 << 52) - 1)
    pt.map(GVA + 0x1000, table, writable=True, accessed=True, dirty=True)
    vcpu = vm.create_vcpu(pt.cpu())
    vcpu.access(GVA)
    spte = _leaf_spte(vcpu, GVA + 0x1000)
    assert S.is_shadow_present(spte) and not spte & S.WRITABLE
    assert vm.mmu.stats.mmu_unsync == 0
    assert vcpu.access(GVA + 0x1000, Access.WRITE) == table
    assert vm.mmu.stats.mmu_unsync == 1
    audit(vm)


def test_no_writable_prefetch_into_a_slot_that_logs_dirty_pages() -> None:
    vm, _, vcpu = _guest(dirty=True)
    vm.set_memslot_flags(0, MemslotFlag.LOG_DIRTY_PAGES)
    vcpu.access(GVA)
    assert vm.mmu.stats.pages_4k == 1
    logged = set(vm.get_dirty_log(0))
    assert GPA >> 12 in logged, "the faulting spte is writable: logged at once"
    assert not logged & {(GPA >> 12) + i for i in range(1, 8)}, "no neighbour was made writable"


def test_read_only_prefetch_into_a_logging_slot_is_allowed() -> None:
    vm, _, vcpu = _guest(dirty=False)
    vm.set_memslot_flags(0, MemslotFlag.LOG_DIRTY_PAGES)
    vcpu.access(GVA)
    assert vm.mmu.stats.pages_4k == 8


def _paging_off(**vm_kw: object) -> tuple[Vm, Vcpu]:
    vm = Vm(64 * MiB, huge_pages=False, **vm_kw)  # type: ignore[arg-type]
    return vm, vm.create_vcpu()


@pytest.mark.parametrize("gfn", [0x100, 0x103, 0x107])
def test_a_direct_fault_maps_its_whole_group_of_8(gfn: int) -> None:
    """``__direct_pte_prefetch``: the runs before and after the faulting spte, via
    ``get_gfn`` of the direct page."""
    vm, vcpu = _paging_off()
    assert vcpu.access(gfn << 12) == gfn << 12
    assert vm.mmu.stats.pages_4k == 8 and vm.mmu.stats.pf_fixed == 1
    for g in range(0x100, 0x108):
        assert vcpu.access(g << 12) == g << 12
    assert vm.mmu.stats.pf_taken == 1
    audit(vm)


def test_a_direct_run_past_the_end_of_its_slot_is_not_prefetched() -> None:
    vm, vcpu = _paging_off()
    slot = vm.add_memslot(0x9000, 4)
    vcpu.access(slot.base_gfn << 12)
    assert vm.mmu.stats.pages_4k == 1, "the run 0x9001-0x9007 leaves the 4-page slot"


def test_a_read_only_slot_is_never_prefetched() -> None:
    vm, vcpu = _paging_off()
    slot = vm.add_memslot(0x9000, 16, MemslotFlag.READONLY)
    vcpu.access(slot.base_gfn << 12)
    assert vm.mmu.stats.pages_4k == 1


def test_tdp_faults_prefetch_too() -> None:
    vm = Vm(64 * MiB, tdp=True, huge_pages=False)
    vcpu = vm.create_vcpu()
    vcpu.access(0x10_0000)
    assert vm.mmu.stats.pages_4k == 8
    audit(vm)


def _direct_leaf_page(vm: Vm, vcpu: Vcpu, gfn: int) -> object:
    """The direct level-1 page a paging-off access to ``gfn`` installs, its group emptied."""
    vcpu.access(gfn << 12)
    sp, index = shadow_path(vcpu, gfn << 12)[-1]
    for i in range(index & ~7, (index & ~7) + 8):
        vm.mmu.drop_spte(sp, i)
    return sp


@pytest.mark.parametrize("logging", [False, True])
@pytest.mark.parametrize("readonly", [False, True])
def test_a_batched_direct_prefetch_equals_one_set_spte_per_spte(
    logging: bool, readonly: bool
) -> None:
    """``Mmu.set_sptes_prefetch`` (the ``mmu_set_spte`` loop of ``direct_pte_prefetch_many``,
    rights computed once) leaves what ``set_spte(prefetch=True)`` spte by spte leaves: sptes,
    rmap, counters, dirty log and trace, with a present spte, an MMIO spte that recorded a
    write right, and a gfn that a shadow page uses inside the run; writable sptes, and
    read-only ones for a read-only slot."""
    runs = []
    for batched in (False, True):
        vm, vcpu = _paging_off()
        base = 0x9000 if readonly else 0x200
        if readonly:
            vm.add_memslot(base, 16, MemslotFlag.READONLY)
        slot = vm.memory.slots.find(base)
        assert slot is not None
        if logging:
            vm.set_memslot_flags(slot.slot_id, slot.flags | MemslotFlag.LOG_DIRTY_PAGES)
        sp = _direct_leaf_page(vm, vcpu, base)
        sp.spt[2] = S.make_mmio_spte(base + 2, int(S.WRITABLE), vm.memory.slots.generation)
        vm.mmu.set_spte(sp, 4, 7, base + 4, slot, write_fault=False)  # present: left alone
        vm.mmu.page_hash.setdefault(base + 5, [])  # a gfn shadow pages use: set_spte decides
        with vm.mmu.trace.recording() as trace:
            if batched:
                vm.mmu.set_sptes_prefetch(sp, 0, 8, 7, base, slot)
            else:
                for i in range(8):
                    vm.mmu.set_spte(sp, i, 7, base + i, slot, write_fault=False, prefetch=True)
        runs.append(
            (
                list(sp.spt[:8]),
                sorted((k, len(v)) for k, v in vm.mmu.rmap.items()),
                vm.stats.as_series().to_dict(),
                list(slot.dirty_bitmap[:8]),
                trace.events,
                vcpu.tlb.flushes,
            )
        )
    assert runs[0] == runs[1]
    assert runs[0][2]["pages_4k"] == 8 and (readonly or runs[0][0][0] & S.WRITABLE)
