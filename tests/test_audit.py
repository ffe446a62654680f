"""Specification of the MMU audit (``kvmmu.kvm.audit``, after the former ``mmu_audit.c``).

Each test builds a small, consistent VM, breaks exactly one thing behind the MMU's back, and
checks that the audit names the rule, the page (``sp.describe()``) and the index. A clean VM in
every mode passes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest

from kvmmu.errors import KvmmuError
from kvmmu.hw.guest import GuestPageTables
from kvmmu.hw.x86 import Access, PagingMode, Pte
from kvmmu.kvm import spte as S
from kvmmu.kvm.audit import RULES, AuditError, audit, audit_report, audit_violations
from kvmmu.kvm.page import MmuPage
from kvmmu.kvm.vcpu import Vcpu, Vm

MiB = 1 << 20
DATA_GVA, DATA_GPA = 0x40_0000, 0x10_0000  # 4 KiB, user, writable
LARGE_GVA, LARGE_GPA = 0x100_0000, 0x40_0000  # 2 or 4 MiB, user, writable
SPLIT_GVA = 0x140_0000  # a large page over the page tables: direct pages back it
UNSYNC_GVA = 0x300_0000  # its page table goes unsync
MMIO_GVA, MMIO_GPA = 0x180_0000, 0x800_0000  # no memslot behind it (RAM is 64 MiB)
LEAF_TABLE_GVA = 0x200_0000  # the data page's own page table, mapped for the guest to edit
ROOT_TABLE_GVA = 0x280_0000  # the root table, mapped for reading


@dataclass
class Built:
    vm: Vm
    vcpu: Vcpu
    pt: GuestPageTables


def build(mode: PagingMode = PagingMode.LEVEL4, *, tdp: bool = False) -> Built:
    """A VM with a 4 KiB page, a large page, an MMIO page, an unsync leaf table (shadow
    paging) and the root table mapped read-only, each touched once."""
    vm = Vm(64 * MiB, tdp=tdp)
    pt = GuestPageTables(vm.memory, mode)
    large = 4 * MiB if mode is PagingMode.BITS32 else 2 * MiB
    pt.map(DATA_GVA, DATA_GPA, writable=True, user=True)
    pt.map(DATA_GVA + 0x1000, DATA_GPA + 0x1000, writable=True, user=True)
    pt.map(LARGE_GVA, LARGE_GPA, large, writable=True, user=True)
    pt.map(SPLIT_GVA, 64 * MiB - large, large, writable=True, user=True)
    pt.map(MMIO_GVA, MMIO_GPA, writable=True, user=True)
    pt.map(UNSYNC_GVA, DATA_GPA, writable=True, user=True)
    leaf_table = pt.entry(UNSYNC_GVA, 2) & 0xFFFF_F000
    pt.map(LEAF_TABLE_GVA, leaf_table, writable=True)
    pt.map(ROOT_TABLE_GVA, pt.cr3 & ~0xFFF, writable=True)
    vcpu = vm.create_vcpu(pt.cpu())
    assert vcpu.access(DATA_GVA, Access.WRITE, cpl=3) == DATA_GPA
    assert vcpu.access(DATA_GVA + 0x1000, Access.READ, cpl=3) == DATA_GPA + 0x1000
    assert vcpu.access(LARGE_GVA, Access.READ, cpl=3) == LARGE_GPA
    assert vcpu.access(SPLIT_GVA, Access.READ, cpl=3) == 64 * MiB - large
    assert vcpu.access(MMIO_GVA, Access.READ, cpl=3) == MMIO_GPA
    assert vcpu.access(UNSYNC_GVA, Access.READ, cpl=3) == DATA_GPA
    assert vcpu.access(ROOT_TABLE_GVA, Access.READ) == pt.cr3 & ~0xFFF
    if not tdp:
        # a guest store to its leaf table: the page goes unsync (kvm_unsync_page)
        index = (UNSYNC_GVA + 0x2000) >> 12 & (1023 if mode is PagingMode.BITS32 else 511)
        esize = mode.spec.entry_size
        entry = (DATA_GPA + 0x2000) | Pte.PRESENT | Pte.USER
        assert vcpu.write(LEAF_TABLE_GVA + index * esize, entry, esize) is None
    return Built(vm, vcpu, pt)


@pytest.fixture
def b() -> Built:
    return build()


def rules_of(vm: Vm) -> set[str]:
    return {v.rule for v in audit_violations(vm)}


def expect(vm: Vm, rule: str, sp: MmuPage | None = None, index: int | None = None) -> str:
    """The audit fails, naming ``rule`` (and the page and index when given)."""
    with pytest.raises(AuditError) as info:
        audit(vm)
    lines = [line for line in audit_report(vm) if line.startswith(f"[{rule}]")]
    assert lines, f"no [{rule}] violation in {audit_report(vm)}"
    if sp is not None:
        named = [line for line in lines if sp.describe() in line]
        assert named, f"[{rule}] does not name {sp.describe()}: {lines}"
        if index is not None:
            assert any(f" index {index}:" in line for line in named), named
    assert rule in str(info.value)
    return lines[0]


def leaf_sptes(vm: Vm, *, direct: bool | None = None, level: int = 1) -> list[tuple[MmuPage, int]]:
    out = []
    for sp in vm.mmu.active:
        if sp.level != level or (direct is not None and sp.direct != direct):
            continue
        for i in sp.present_indices().tolist():
            spte = int(sp.spt[i])
            if S.is_shadow_present(spte) and S.is_last(spte, sp.level):
                out.append((sp, i))
    return out


def spte_of_gfn(vm: Vm, gfn: int) -> tuple[MmuPage, int]:
    for sp, i in leaf_sptes(vm):
        if sp.get_gfn(i) == gfn:
            return sp, i
    raise AssertionError(f"no leaf spte for gfn {gfn:#x}")


def table_sptes(vm: Vm) -> list[tuple[MmuPage, int, MmuPage]]:
    out = []
    for sp in vm.mmu.active:
        for i in sp.present_indices().tolist():
            spte = int(sp.spt[i])
            if S.is_shadow_present(spte) and not S.is_last(spte, sp.level):
                out.append((sp, i, vm.mmu.child_of(spte)))
    return out


# ------------------------------------------------------------------------------------------
# A consistent MMU passes
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tdp", [False, True])
@pytest.mark.parametrize(
    "mode", [PagingMode.BITS32, PagingMode.PAE, PagingMode.LEVEL4, PagingMode.LEVEL5]
)
def test_a_consistent_mmu_passes_in_every_mode(mode: PagingMode, tdp: bool) -> None:
    built = build(mode, tdp=tdp)
    assert audit_report(built.vm) == []
    audit(built.vm)  # does not raise


def test_the_fixture_has_what_the_rules_look_at(b: Built) -> None:
    mmu = b.vm.mmu
    assert any(sp.unsync for sp in mmu.active), "an unsync leaf table"
    assert any(sp.direct for sp in mmu.active), "direct pages under the large guest page"
    assert any(S.is_mmio(int(s)) for sp in mmu.active for s in sp.spt), "an MMIO spte"
    assert mmu.write_tracked and mmu.lpage_disallowed and len(mmu.rmap) >= 3


def test_audit_error_is_a_kvmmu_error_listing_every_violation(b: Built) -> None:
    sp, i = spte_of_gfn(b.vm, DATA_GPA >> 12)
    b.vm.mmu.n_used_mmu_pages += 1
    sp.spt[i] = int(sp.spt[i]) ^ (1 << 12)
    with pytest.raises(KvmmuError) as info:
        audit(b.vm)
    assert isinstance(info.value, AuditError)
    assert {v.rule for v in info.value.violations} >= {"bookkeeping", "spte-gfn"}
    assert "and" in str(info.value) and "more" in str(info.value)
    assert len(audit_report(b.vm)) == len(info.value.violations)
    assert set(RULES) >= rules_of(b.vm)


# ------------------------------------------------------------------------------------------
# One corruption per rule
# ------------------------------------------------------------------------------------------


def test_spte_gfn_a_leaf_spte_that_maps_another_frame(b: Built) -> None:
    sp, i = spte_of_gfn(b.vm, DATA_GPA >> 12)
    sp.spt[i] = int(sp.spt[i]) + (1 << 12)
    assert "is backed by pfn" in expect(b.vm, "spte-gfn", sp, i)


def test_spte_gfn_a_large_spte_that_maps_another_frame(b: Built) -> None:
    [(sp, i)] = [(sp, i) for sp, i in leaf_sptes(b.vm, level=2)]
    sp.spt[i] = int(sp.spt[i]) + (512 << 12)
    expect(b.vm, "spte-gfn", sp, i)


def test_spte_gfn_a_leaf_spte_whose_memslot_is_gone(b: Built) -> None:
    sp, i = spte_of_gfn(b.vm, DATA_GPA >> 12)
    slot = b.vm.memory.slots.find(DATA_GPA >> 12)
    assert slot is not None
    b.vm.memory.slots.move(slot.slot_id, 0x10_0000)  # behind the MMU's back
    assert "no memslot" in expect(b.vm, "spte-gfn", sp, i)


def test_rmap_a_present_leaf_spte_missing_from_the_rmap(b: Built) -> None:
    sp, i = spte_of_gfn(b.vm, DATA_GPA >> 12)
    b.vm.mmu.rmap.remove(sp, i)
    assert "not in the rmap" in expect(b.vm, "rmap", sp, i)


def test_rmap_an_entry_whose_page_was_freed(b: Built) -> None:
    sp, _ = spte_of_gfn(b.vm, DATA_GPA >> 12)
    b.vm.mmu._free_page(sp)  # behind the rmap's back: the page's sptes stay filed
    assert f"freed frame {sp.pfn:#x}" in expect(b.vm, "rmap")


def test_rmap_an_rmap_entry_for_an_empty_spte(b: Built) -> None:
    sp, _ = spte_of_gfn(b.vm, DATA_GPA >> 12)
    empty = next(j for j in range(512) if not int(sp.spt[j]))
    b.vm.mmu.rmap.add(sp, empty)
    assert "no leaf" in expect(b.vm, "rmap", sp, empty)


def test_rmap_an_entry_filed_under_the_wrong_gfn(b: Built) -> None:
    sp, i = spte_of_gfn(b.vm, DATA_GPA >> 12)
    b.vm.mmu.rmap.remove(sp, i)
    sp.set_gfn(i, (DATA_GPA >> 12) + 7)
    b.vm.mmu.rmap.add(sp, i)
    sp.set_gfn(i, DATA_GPA >> 12)
    assert "holds an spte" in expect(b.vm, "rmap", sp, i)


def test_parent_ptes_a_child_that_forgot_its_parent(b: Built) -> None:
    parent, i, child = table_sptes(b.vm)[0]
    child.parent_ptes.remove((parent, i))
    assert "lacks this spte" in expect(b.vm, "parent-ptes", parent, i)


def test_parent_ptes_a_parent_entry_that_points_elsewhere(b: Built) -> None:
    parent, _, child = table_sptes(b.vm)[0]
    empty = next(j for j in range(512) if not int(parent.spt[j]))
    child.parent_ptes.append((parent, empty))
    assert "does not point to it" in expect(b.vm, "parent-ptes", parent, empty)


def test_parent_ptes_a_table_spte_to_a_freed_page(b: Built) -> None:
    parent, i, _ = table_sptes(b.vm)[0]
    parent.spt[i] = (int(parent.spt[i]) & ~S.PFN_MASK) | (0xFFFFF << 12)
    assert "no live page" in expect(b.vm, "parent-ptes", parent, i)


def test_write_protect_a_writable_spte_over_a_shadowed_table(b: Built) -> None:
    root_gfn = b.pt.cr3 >> 12
    sp, i = spte_of_gfn(b.vm, root_gfn)
    assert not int(sp.spt[i]) & S.WRITABLE
    sp.spt[i] = int(sp.spt[i]) | S.WRITABLE
    assert "shadowed by a synced shadow page" in expect(b.vm, "write-protect", sp, i)


def test_write_protect_a_large_spte_covering_a_shadowed_table(b: Built) -> None:
    [(sp, i)] = [(sp, i) for sp, i in leaf_sptes(b.vm, level=2)]
    table_gfn = b.pt.tables[-1]
    # pretend a guest table sits inside the large page, shadowed by a synced page
    victim = next(p for p in b.vm.mmu.active if not p.direct and p.gfn == table_gfn)
    b.vm.mmu.page_hash[victim.gfn].remove(victim)
    victim.gfn = sp.get_gfn(i) + 3
    b.vm.mmu.page_hash.setdefault(victim.gfn, []).append(victim)
    sp.spt[i] = int(sp.spt[i]) | S.WRITABLE
    expect(b.vm, "write-protect", sp, i)


def test_direct_gfns_a_direct_page_with_a_gfns_array(b: Built) -> None:
    sp = next(p for p in b.vm.mmu.active if p.direct)
    sp.gfns = np.zeros(512, dtype=np.uint64)
    assert "gfns array" in expect(b.vm, "direct-gfns", sp)


def test_direct_gfns_an_indirect_page_without_one(b: Built) -> None:
    sp = next(p for p in b.vm.mmu.active if not p.direct and p.level > 1)
    sp.gfns = None
    expect(b.vm, "direct-gfns", sp)


def test_direct_gfns_a_direct_child_at_the_wrong_gfn(b: Built) -> None:
    parent, i, child = next((p, i, c) for p, i, c in table_sptes(b.vm) if c.direct)
    b.vm.mmu.page_hash[child.gfn].remove(child)
    child.gfn += 512 * 512
    b.vm.mmu.page_hash.setdefault(child.gfn, []).append(child)
    assert "should start at gfn" in expect(b.vm, "direct-gfns", parent, i)


def test_gpte_rights_a_guest_entry_that_lost_user_behind_the_mmu(b: Built) -> None:
    sp, i = spte_of_gfn(b.vm, DATA_GPA >> 12)
    assert not sp.unsync
    entry_gpa = (b.pt.entry(DATA_GVA, 2) & ~0xFFF) + 8 * i
    b.vm.memory.write(entry_gpa, b.vm.memory.read(entry_gpa) & ~Pte.USER)
    assert "denies" in expect(b.vm, "gpte-rights", sp, i)


def test_gpte_rights_a_writable_spte_for_a_clean_guest_entry(b: Built) -> None:
    sp, i = spte_of_gfn(b.vm, DATA_GPA >> 12)
    assert int(sp.spt[i]) & S.WRITABLE
    entry_gpa = (b.pt.entry(DATA_GVA, 2) & ~0xFFF) + 8 * i
    b.vm.memory.write(entry_gpa, b.vm.memory.read(entry_gpa) & ~Pte.DIRTY)
    assert "clean guest entry" in expect(b.vm, "gpte-rights", sp, i)


def test_gpte_rights_a_guest_entry_that_names_another_frame(b: Built) -> None:
    sp, i = spte_of_gfn(b.vm, (DATA_GPA >> 12) + 1)
    entry_gpa = (b.pt.entry(DATA_GVA, 2) & ~0xFFF) + 8 * i
    b.vm.memory.write(entry_gpa, b.vm.memory.read(entry_gpa) + 0x5000)
    assert "does not name" in expect(b.vm, "gpte-rights", sp, i)


def test_gpte_rights_an_spte_whose_guest_entry_is_gone(b: Built) -> None:
    sp, i = spte_of_gfn(b.vm, DATA_GPA >> 12)
    entry_gpa = (b.pt.entry(DATA_GVA, 2) & ~0xFFF) + 8 * i
    b.vm.memory.write(entry_gpa, 0)
    assert "is not" in expect(b.vm, "gpte-rights", sp, i)


def test_gpte_rights_unsync_pages_may_lag_their_guest_entries(b: Built) -> None:
    sp = next(p for p in b.vm.mmu.active if p.unsync)
    i = next(j for j in sp.present_indices().tolist() if S.is_shadow_present(int(sp.spt[j])))
    entry_gpa = (sp.gfn << 12) + 8 * i
    b.vm.memory.write(entry_gpa, 0)  # the guest may edit an unsync table freely
    assert audit_report(b.vm) == []


def test_gpte_rights_the_cr0_wp0_trick_is_allowed() -> None:
    vm = Vm(64 * MiB)
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4, wp=False)
    pt.map(DATA_GVA, DATA_GPA, writable=False, user=True)
    vcpu = vm.create_vcpu(pt.cpu())
    assert vcpu.access(DATA_GVA, Access.WRITE, cpl=0) == DATA_GPA
    sp, i = spte_of_gfn(vm, DATA_GPA >> 12)
    assert int(sp.spt[i]) & S.WRITABLE and not int(sp.spt[i]) & S.USER
    assert audit_report(vm) == []
    sp.spt[i] = int(sp.spt[i]) | S.USER  # writable for user too: beyond the trick
    expect(vm, "gpte-rights", sp, i)


def test_gpte_rights_a_direct_leaf_beyond_its_role(b: Built) -> None:
    sp, i = leaf_sptes(b.vm, direct=True)[0]
    sp.role = replace(sp.role, access=int(sp.role.access) & ~4)
    assert "beyond role.access" in expect(b.vm, "gpte-rights", sp, i)


def test_unsync_a_parent_that_lost_the_bit(b: Built) -> None:
    sp = next(p for p in b.vm.mmu.active if p.unsync)
    parent, i = sp.parent_ptes[0]
    parent.unsync_child_bitmap.discard(i)
    parent.unsync_children -= 1
    assert "bit is clear" in expect(b.vm, "unsync", parent, i)


def test_unsync_a_grandparent_that_lost_the_bit(b: Built) -> None:
    sp = next(p for p in b.vm.mmu.active if p.unsync)
    parent, _ = sp.parent_ptes[0]
    grand, gi = parent.parent_ptes[0]
    grand.unsync_child_bitmap.discard(gi)
    grand.unsync_children -= 1
    expect(b.vm, "unsync", grand, gi)


def test_unsync_a_count_that_disagrees_with_the_bitmap(b: Built) -> None:
    sp = next(p for p in b.vm.mmu.active if p.unsync)
    parent, _ = sp.parent_ptes[0]
    parent.unsync_children += 1
    assert "unsync_children" in expect(b.vm, "unsync", parent)


def test_unsync_an_upper_level_page(b: Built) -> None:
    sp = next(p for p in b.vm.mmu.active if p.level == 2 and not p.direct)
    sp.unsync = True
    b.vm.mmu.stats.mmu_unsync += 1
    assert "only level-1" in expect(b.vm, "unsync", sp)


def test_unsync_a_bit_on_an_empty_spte(b: Built) -> None:
    sp = next(p for p in b.vm.mmu.active if p.level == 2 and not p.direct)
    empty = next(j for j in range(512) if not int(sp.spt[j]))
    sp.unsync_child_bitmap.add(empty)
    sp.unsync_children += 1
    expect(b.vm, "unsync", sp, empty)


@pytest.mark.parametrize(
    "corrupt",
    [
        "n_used_mmu_pages",
        "indirect_shadow_pages",
        "write_tracked",
        "lpage_disallowed",
        "active",
        "hash",
        "stats",
        "invalid",
    ],
)
def test_bookkeeping(b: Built, corrupt: str) -> None:
    mmu = b.vm.mmu
    sp = next(p for p in mmu.active if not p.direct and p.level == 2)
    if corrupt == "n_used_mmu_pages":
        mmu.n_used_mmu_pages -= 1
    elif corrupt == "indirect_shadow_pages":
        mmu.indirect_shadow_pages += 1
    elif corrupt == "write_tracked":
        del mmu.write_tracked[sp.gfn]
    elif corrupt == "lpage_disallowed":
        mmu.lpage_disallowed[(2, 0x12345 << 9)] = 1
    elif corrupt == "active":
        del mmu.active[sp]
    elif corrupt == "hash":
        mmu.page_hash[sp.gfn].remove(sp)
    elif corrupt == "stats":
        mmu.stats.mmu_unsync += 1
    else:
        sp.role = sp.role.with_invalid()  # zapped, yet still linked and holding sptes
    expect(b.vm, "bookkeeping")


def test_root_count_an_extra_reference(b: Built) -> None:
    root = b.vcpu.current_roots()[0]
    root.root_count += 1
    assert "vCPUs hold 1" in expect(b.vm, "root-count", root)


def test_root_count_a_cached_root_that_is_not_counted() -> None:
    vm = Vm(64 * MiB)
    spaces = [
        GuestPageTables(
            vm.memory, PagingMode.LEVEL4, table_gfns=range(0x800 + 16 * k, 0x810 + 16 * k)
        )
        for k in range(2)
    ]
    for pt in spaces:
        pt.map(DATA_GVA, DATA_GPA, user=True)
    vcpu = vm.create_vcpu(spaces[0].cpu())
    assert vcpu.access(DATA_GVA, cpl=3) == DATA_GPA
    assert vcpu.set_cr3(spaces[1].cr3) is None
    assert audit_report(vm) == []
    cached = vcpu.prev_roots[0]
    cached.root_count -= 1
    expect(vm, "root-count", cached)


def test_mmio_an_mmio_spte_for_memory_a_memslot_holds(b: Built) -> None:
    sp, i = next((sp, i) for sp in b.vm.mmu.active for i in range(512) if S.is_mmio(int(sp.spt[i])))
    gen = b.vm.memory.slots.generation
    sp.spt[i] = S.make_mmio_spte(DATA_GPA >> 12, 6, gen)
    assert "which a memslot holds" in expect(b.vm, "mmio", sp, i)


def test_mmio_a_stale_mmio_spte_is_allowed(b: Built) -> None:
    sp, i = next((sp, i) for sp in b.vm.mmu.active for i in range(512) if S.is_mmio(int(sp.spt[i])))
    sp.spt[i] = S.make_mmio_spte(DATA_GPA >> 12, 6, b.vm.memory.slots.generation - 1)
    assert audit_report(b.vm) == []
