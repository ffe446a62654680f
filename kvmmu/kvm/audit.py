"""The MMU audit: every invariant of the shadow MMU, checked on demand.

After the former ``arch/x86/kvm/mmu_audit.c`` (``kvm_mmu_audit``: ``audit_mappings``,
``inspect_spte_has_rmap``, ``audit_sptes_have_rmaps``, ``audit_write_protection``), which the
kernel removed in 2021 once the MMU had settled. Here it is the specification that the
property tests check after every step: a student who breaks the MMU learns which rule broke.

:func:`audit_report` lists every violation as one line, ``[rule] sp#N gfn=... role index I:
what is wrong``; :func:`audit` raises :class:`AuditError` if the list is not empty. The rules:

``spte-gfn``
    a present leaf spte maps the host frame of ``sp.get_gfn(i)`` through the memslots (a large
    spte: the frame of its base gfn, and the whole large page lies in one slot);
``rmap``
    every present leaf spte is in ``mmu.rmap`` under ``(level, gfn)``, and every rmap entry is a
    present leaf spte of a live page with that level and gfn;
``parent-ptes``
    every present non-leaf spte points to a live child one level down whose ``parent_ptes`` has
    ``(sp, i)``, and every ``parent_ptes`` entry is such an spte;
``write-protect``
    no writable spte, of any size, covers a gfn shadowed by a valid, synced indirect page;
``direct-gfns``
    a direct page has no gfns array and maps a linear, aligned gfn range (its leaves and its
    children follow ``gfn + (i << 9 * (level - 1))``); an indirect page has a gfns array;
``gpte-rights``
    a leaf spte of a synced indirect level-1 page shadows a present, accessed guest entry naming
    the same gfn and grants no right the guest entry and the page's role deny (KVM's CR0.WP=0
    trick excepted), and is writable only if the guest entry is dirty; a direct page's leaves
    grant no right beyond ``role.access``;
``unsync``
    only level-1 indirect pages are unsync; an unsync page (and a page with unsync children) is
    marked in each parent's ``unsync_child_bitmap``; ``unsync_children`` is the bitmap's size
    and every bit names a present non-leaf spte;
``bookkeeping``
    ``n_used_mmu_pages``, the hash, ``active``, ``by_pfn``, ``write_tracked``,
    ``lpage_disallowed`` and ``indirect_shadow_pages`` agree with the live pages; an invalid
    page survives only as some vCPU's root and holds no sptes;
``root-count``
    each page's ``root_count`` is the number of vCPU references to it (current root, PAE roots,
    cached previous roots);
``mmio``
    an MMIO spte sits at level 1 and records a gfn that no memslot holds, or a stale generation.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kvmmu.errors import KvmmuError
from kvmmu.hw.x86 import PAGE_SHIFT, Acc, Cr4, Pte
from kvmmu.kvm import spte as S
from kvmmu.kvm.mmu import Mmu, gpte_gfn, is_last_gpte, read_gpte
from kvmmu.kvm.page import LEVEL_BITS, MmuPage
from kvmmu.kvm.rmap import level_base
from kvmmu.kvm.stats import LEAF_PAGES

if TYPE_CHECKING:
    from kvmmu.kvm.mmu import Mmu
    from kvmmu.kvm.vcpu import Vm

RULES = (
    "spte-gfn",
    "rmap",
    "parent-ptes",
    "write-protect",
    "direct-gfns",
    "gpte-rights",
    "unsync",
    "bookkeeping",
    "root-count",
    "mmio",
)

__all__ = ["RULES", "AuditError", "Violation", "audit", "audit_report", "audit_violations"]


class AuditError(KvmmuError):
    """The MMU broke one of its invariants; ``violations`` lists every one found.

    The message starts with the first violation: the rule, the page and the index.
    """

    def __init__(self, violations: list[Violation]) -> None:
        self.violations = violations
        lines = [str(v) for v in violations]
        more = f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
        super().__init__(
            f"MMU audit failed{more}: " + "\n".join(lines) + "\nThe MMU bookkeeping is wrong; "
            "the rule named in brackets is the one to read in kvmmu.kvm.audit"
        )


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken invariant: the rule, the page (``sp.describe()``), the spte index, what."""

    rule: str
    page: str
    index: int | None
    detail: str

    def __str__(self) -> str:
        where = "" if self.index is None else f" index {self.index}"
        return f"[{self.rule}] {self.page}{where}: {self.detail}"


def audit(vm: Vm) -> None:
    """Check every invariant; raise :class:`AuditError` naming the first broken one.

    The former ``kvm_mmu_audit`` (``mmu_audit.c``).
    """
    _check_vm(vm)
    violations = audit_violations(vm)
    if violations:
        raise AuditError(violations)


def audit_report(vm: Vm) -> list[str]:
    """Every violation as one readable line; empty when the MMU is consistent.

    No kernel counterpart (``mmu_audit.c`` printed each problem with ``audit_printk``).
    """
    _check_vm(vm)
    return [str(v) for v in audit_violations(vm)]


def audit_violations(vm: Vm) -> list[Violation]:
    """Every violation as a :class:`Violation` record (no kernel counterpart)."""
    _check_vm(vm)
    return _Auditor(vm).run()


def _check_vm(vm: object) -> None:
    # Fix: a wrong argument escaped as AttributeError from inside the auditor.
    if not isinstance(getattr(vm, "mmu", None), Mmu) or not hasattr(vm, "vcpus"):
        raise KvmmuError(f"vm must be a Vm (kvmmu.kvm.vcpu.Vm), got {type(vm).__name__}")


# ------------------------------------------------------------------------------------------


class _Auditor:
    def __init__(self, vm: Vm) -> None:
        self.vm = vm
        self.mmu: Mmu = vm.mmu
        self.out: list[Violation] = []
        self.live: list[MmuPage] = list(self.mmu.by_pfn.values())
        for bucket in self.mmu.page_hash.values():
            for sp in bucket:
                if sp not in self.live:
                    self.live.append(sp)
        self.live_set = set(self.live)
        # CR4.PSE decides what bit 7 of a 32-bit PDE means; the MMU keeps the shadows of
        # 32-bit directories for the vCPUs' current value (Mmu.zap_pse_dependent_pages)
        self.cr4_pse = all(vcpu.cpu.cr4 & Cr4.PSE for vcpu in vm.vcpus)

    def bad(self, rule: str, sp: MmuPage | None, index: int | None, detail: str) -> None:
        page = sp.describe() if sp is not None else "mmu"
        self.out.append(Violation(rule, page, index, detail))

    def run(self) -> list[Violation]:
        self.check_bookkeeping()
        self.check_root_counts()
        shadowed = self.synced_shadowed_gfns()
        rmapped: set[tuple[MmuPage, int]] = set()
        for sp in sorted(self.live, key=lambda p: p.serial):
            self.check_page(sp, shadowed, rmapped)
        self.check_rmap(rmapped)
        return self.out

    # -- the page-level rules --------------------------------------------------------------

    def synced_shadowed_gfns(self) -> set[int]:
        return {
            sp.gfn
            for sp in self.live
            if not sp.direct and not sp.unsync and not self.mmu.is_obsolete(sp)
        }

    def check_page(
        self, sp: MmuPage, shadowed: set[int], rmapped: set[tuple[MmuPage, int]]
    ) -> None:
        level = sp.level
        # direct-gfns: the seed change's representation
        if sp.direct and sp.gfns is not None:
            self.bad("direct-gfns", sp, None, "a direct page has a gfns array (should be None)")
        if not sp.direct and sp.gfns is None:
            self.bad("direct-gfns", sp, None, "an indirect page has no gfns array")
        if sp.direct and not sp.role.passthrough and sp.gfn % (1 << (LEVEL_BITS * level)):
            self.bad(
                "direct-gfns",
                sp,
                None,
                f"a direct level-{level} page must start at a gfn aligned to "
                f"{1 << (LEVEL_BITS * level):#x} pages",
            )
        # unsync flags
        if sp.unsync and (level != 1 or sp.direct):
            self.bad("unsync", sp, None, "only level-1 indirect pages may be unsync")
        if sp.unsync_children != len(sp.unsync_child_bitmap):
            self.bad(
                "unsync",
                sp,
                None,
                f"unsync_children={sp.unsync_children} but the bitmap has "
                f"{len(sp.unsync_child_bitmap)} bits",
            )
        if sp.unsync or sp.unsync_children:
            for parent, pindex in sp.parent_ptes:
                if pindex not in parent.unsync_child_bitmap:
                    self.bad(
                        "unsync",
                        parent,
                        pindex,
                        f"leads to {sp.describe()}, which is unsync or has unsync children, "
                        "but the bit is clear in unsync_child_bitmap",
                    )
        for bit in sorted(sp.unsync_child_bitmap):
            if not 0 <= bit < len(sp.spt) or not _is_table(sp.spt[bit], level):
                self.bad("unsync", sp, bit, "unsync_child_bitmap bit on an spte that is no table")
        if sp.role.invalid:
            if sp.root_count == 0:
                self.bad("bookkeeping", sp, None, "an invalid page with no root users is not freed")
            if sp.spt_array.any():
                self.bad("bookkeeping", sp, None, "an invalid (zapped) page still holds sptes")
            if sp.parent_ptes:
                self.bad("bookkeeping", sp, None, "an invalid (zapped) page still has parents")
        # parent_ptes -> the parent's spte
        for parent, pindex in sp.parent_ptes:
            spte = parent.spt[pindex] if parent in self.live_set else 0
            if parent not in self.live_set:
                self.bad("parent-ptes", sp, None, f"parent {parent.describe()} is not a live page")
            elif not _is_table(spte, parent.level) or S.spte_to_pfn(spte) != sp.pfn:
                self.bad(
                    "parent-ptes",
                    parent,
                    pindex,
                    f"is in the parent_ptes of {sp.describe()} but does not point to it",
                )
        if len(set(sp.parent_ptes)) != len(sp.parent_ptes):
            self.bad("parent-ptes", sp, None, "parent_ptes lists one spte twice")

        gen = self.mmu.memory.slots.generation & S.MMIO_GEN_MASK
        for i in sp.present_indices().tolist():
            spte = sp.spt[i]
            if S.is_mmio(spte):
                self.check_mmio(sp, i, spte, gen)
                continue
            if not S.is_shadow_present(spte):
                self.bad("bookkeeping", sp, i, f"spte {spte:#x} is neither present nor MMIO")
                continue
            if _is_table(spte, level):
                self.check_table_spte(sp, i, spte)
            else:
                rmapped.add((sp, i))
                self.check_leaf(sp, i, spte, shadowed)

    def check_mmio(self, sp: MmuPage, i: int, spte: int, gen: int) -> None:
        if sp.level != 1:
            self.bad("mmio", sp, i, "an MMIO spte above level 1")
        gfn = S.mmio_gfn(spte)
        if self.mmu.memory.slots.find(gfn) is not None and S.mmio_generation(spte) == gen:
            self.bad(
                "mmio",
                sp,
                i,
                f"MMIO spte for gfn {gfn:#x}, which a memslot holds, with the current generation "
                f"{gen}: accesses would exit instead of reaching memory",
            )

    def check_table_spte(self, sp: MmuPage, i: int, spte: int) -> None:
        child = self.mmu.by_pfn.get(S.spte_to_pfn(spte))
        if child is None or child not in self.live_set:
            self.bad("parent-ptes", sp, i, f"non-leaf spte {spte:#x} points to no live page")
            return
        if (sp, i) not in child.parent_ptes:
            self.bad(
                "parent-ptes",
                sp,
                i,
                f"points to {child.describe()}, whose parent_ptes lacks this spte",
            )
        if child.level != sp.level - 1:
            self.bad("parent-ptes", sp, i, f"points to a level-{child.level} page")
        if sp.direct and not child.direct:
            self.bad("direct-gfns", sp, i, "a direct page points to an indirect child")
        if sp.direct and not child.role.passthrough:
            expected = sp.get_gfn(i)
            if child.gfn != expected:
                self.bad(
                    "direct-gfns",
                    sp,
                    i,
                    f"direct child {child.describe()} should start at gfn {expected:#x}",
                )
        if not sp.direct and not sp.unsync and not self.mmu.is_obsolete(sp):
            self.check_upper_gpte(sp, i, child)

    def check_upper_gpte(self, sp: MmuPage, i: int, child: MmuPage) -> None:
        """An indirect page's table spte follows the guest entry: upper-level guest tables are
        write-tracked, so every change to one zaps the spte at once."""
        gpte = read_gpte(self.mmu.memory, sp, i)
        if gpte is None or not gpte & Pte.PRESENT:
            self.bad("gpte-rights", sp, i, "table spte present but the guest entry is not")
            return
        allowed = sp.role.access & _gpte_rights(gpte, sp)
        if child.direct:
            # a guest large page backed by smaller sptes: the child maps its frames
            if not is_last_gpte(sp, gpte, self.cr4_pse):
                self.bad("gpte-rights", sp, i, f"direct child under guest table entry {gpte:#x}")
                return
            base = _large_gpte_gfn(gpte, sp, i)
            if child.gfn != base:
                self.bad(
                    "direct-gfns",
                    sp,
                    i,
                    f"direct child {child.describe()} should start at gfn {base:#x}, the "
                    f"guest large page of entry {gpte:#x}",
                )
            extra = _beyond(child.role.access, allowed, sp)
            if extra:
                self.bad(
                    "gpte-rights",
                    sp,
                    i,
                    f"direct child's role grants {_acc_str(extra)} beyond guest entry {gpte:#x}",
                )
            return
        table_gfn = -1 if is_last_gpte(sp, gpte, self.cr4_pse) else gpte_gfn(gpte, sp)
        if table_gfn != child.gfn:
            self.bad(
                "gpte-rights",
                sp,
                i,
                f"guest entry {gpte:#x} no longer points to {child.describe()}",
            )
        elif child.role.access != allowed:
            self.bad(
                "gpte-rights",
                sp,
                i,
                f"child role access {_acc_str(child.role.access)} but the guest entries above "
                f"it allow {_acc_str(allowed)}",
            )

    def check_leaf(self, sp: MmuPage, i: int, spte: int, shadowed: set[int]) -> None:
        level = sp.level
        gfn = sp.get_gfn(i)
        npages = 1 << (LEVEL_BITS * (level - 1))
        if sp.direct and gfn != sp.gfn + (i << (LEVEL_BITS * (level - 1))):
            self.bad("direct-gfns", sp, i, f"get_gfn gives {gfn:#x}, not the linear gfn")
        slot = self.mmu.memory.slots.find(gfn)
        if slot is None:
            self.bad("spte-gfn", sp, i, f"leaf spte maps gfn {gfn:#x}, which no memslot holds")
        else:
            if S.spte_to_pfn(spte) != slot.gfn_to_pfn(gfn):
                self.bad(
                    "spte-gfn",
                    sp,
                    i,
                    f"leaf spte maps pfn {S.spte_to_pfn(spte):#x}, but gfn {gfn:#x} is backed by "
                    f"pfn {slot.gfn_to_pfn(gfn):#x}",
                )
            if level > 1 and (gfn % npages or not slot.contains(gfn + npages - 1)):
                self.bad(
                    "spte-gfn",
                    sp,
                    i,
                    f"large spte at gfn {gfn:#x} is misaligned or leaves slot {slot.slot_id}",
                )
            if slot.readonly and spte & S.WRITABLE:
                self.bad("spte-gfn", sp, i, "writable spte into a read-only memslot")
        if spte & S.WRITABLE:
            covered = [g for g in shadowed if gfn <= g < gfn + npages]
            if covered:
                self.bad(
                    "write-protect",
                    sp,
                    i,
                    f"writable spte over gfn {covered[0]:#x}, a guest page table shadowed by a "
                    "synced shadow page",
                )
        if sp.direct:
            extra = _spte_rights(spte) & ~sp.role.access
            if extra:
                self.bad("gpte-rights", sp, i, f"grants {_acc_str(extra)} beyond role.access")
        elif not sp.unsync and not self.mmu.is_obsolete(sp):
            self.check_gpte(sp, i, spte, gfn)

    def check_gpte(self, sp: MmuPage, i: int, spte: int, gfn: int) -> None:
        gpte = read_gpte(self.mmu.memory, sp, i)
        if gpte is None or not gpte & Pte.PRESENT:
            self.bad("gpte-rights", sp, i, "spte present but the guest entry is not")
            return
        # The walker cannot set A/D bits in a table inside a read-only slot, and KVM maps the
        # access anyway (FNAME(update_accessed_dirty_bits) skips such a table): there a clean
        # or unaccessed guest entry behind a present spte is legal.
        slot = self.mmu.memory.slots.find(sp.gfn)
        ad_settable = slot is None or not slot.readonly
        if ad_settable and not gpte & Pte.ACCESSED:
            self.bad("gpte-rights", sp, i, f"guest entry {gpte:#x} is not accessed")
        if sp.level > 1:
            large = is_last_gpte(sp, gpte, self.cr4_pse)
            named = _large_gpte_gfn(gpte, sp, i) if large else -1
        else:
            named = gpte_gfn(gpte, sp)
        if named != gfn:
            self.bad(
                "gpte-rights",
                sp,
                i,
                f"guest entry {gpte:#x} does not name gfn {gfn:#x}, the spte's gfn",
            )
        allowed = sp.role.access & _gpte_rights(gpte, sp)
        extra = _beyond(_spte_rights(spte), allowed, sp)
        if extra:
            self.bad(
                "gpte-rights",
                sp,
                i,
                f"spte grants {_acc_str(extra)} that guest entry {gpte:#x} with role access "
                f"{_acc_str(sp.role.access)} denies",
            )
        if ad_settable and spte & S.WRITABLE and not gpte & Pte.DIRTY:
            self.bad("gpte-rights", sp, i, f"writable spte for clean guest entry {gpte:#x}")

    # -- rmap ------------------------------------------------------------------------------

    def check_rmap(self, rmapped: set[tuple[MmuPage, int]]) -> None:
        seen: set[tuple[MmuPage, int]] = set()
        by_pfn = self.mmu.by_pfn
        for level, gfn, pfn, i in self.mmu.rmap.addresses():
            sp = by_pfn.get(pfn)  # sptep_to_sp: the rmap holds spte addresses
            if sp is None:  # by_pfn holds every live page
                self.bad(
                    "rmap",
                    None,
                    i,
                    f"rmap ({level}, {gfn:#x}) names an spte of freed frame {pfn:#x}",
                )
                continue
            seen.add((sp, i))
            spte = sp.spt[i]
            if not S.is_shadow_present(spte) or _is_table(spte, sp.level):
                self.bad("rmap", sp, i, f"rmap ({level}, {gfn:#x}) names an spte that is no leaf")
            elif sp.level != level or sp.get_gfn(i) != gfn:
                self.bad(
                    "rmap",
                    sp,
                    i,
                    f"rmap head ({level}, {gfn:#x}) holds an spte of level {sp.level} "
                    f"for gfn {sp.get_gfn(i):#x}",
                )
        for sp, i in sorted(rmapped - seen, key=lambda t: (t[0].serial, t[1])):
            self.bad(
                "rmap", sp, i, f"present leaf spte for gfn {sp.get_gfn(i):#x} is not in the rmap"
            )

    # -- VM-wide bookkeeping ---------------------------------------------------------------

    def check_bookkeeping(self) -> None:
        mmu = self.mmu
        if mmu.n_used_mmu_pages != len(self.live):
            self.bad(
                "bookkeeping",
                None,
                None,
                f"n_used_mmu_pages={mmu.n_used_mmu_pages} but {len(self.live)} pages are live",
            )
        for pfn, sp in mmu.by_pfn.items():
            if sp.pfn != pfn:
                self.bad("bookkeeping", sp, None, f"by_pfn lists it under pfn {pfn:#x}")
            if sp not in mmu.page_hash.get(sp.gfn, ()):
                self.bad("bookkeeping", sp, None, "live page missing from page_hash[gfn]")
        for gfn, bucket in mmu.page_hash.items():
            for sp in bucket:
                if sp.gfn != gfn:
                    self.bad("bookkeeping", sp, None, f"hashed under gfn {gfn:#x}")
                if mmu.by_pfn.get(sp.pfn) is not sp:
                    self.bad("bookkeeping", sp, None, "hashed page missing from by_pfn")
        for sp in mmu.active:
            if sp not in self.live_set:
                self.bad("bookkeeping", sp, None, "on the active list but freed")
        for sp in self.live:
            if sp not in mmu.active and not (sp.role.invalid and sp.root_count):
                self.bad("bookkeeping", sp, None, "live page missing from the active list")
        valid_indirect = [sp for sp in self.live if not sp.direct and not sp.role.invalid]
        if mmu.indirect_shadow_pages != len(valid_indirect):
            self.bad(
                "bookkeeping",
                None,
                None,
                f"indirect_shadow_pages={mmu.indirect_shadow_pages} but "
                f"{len(valid_indirect)} valid indirect pages live",
            )
        tracked = Counter(sp.gfn for sp in valid_indirect if sp.level > 1)
        if dict(tracked) != mmu.write_tracked:
            self.bad(
                "bookkeeping",
                None,
                None,
                f"write_tracked={_short(mmu.write_tracked)} but the upper-level indirect "
                f"pages imply {_short(dict(tracked))}",
            )
        lpage: Counter[tuple[int, int]] = Counter()
        for sp in valid_indirect:
            for level in (2, 3):
                lpage[(level, level_base(sp.gfn, level))] += 1
        if dict(lpage) != mmu.lpage_disallowed:
            self.bad(
                "bookkeeping",
                None,
                None,
                f"lpage_disallowed={_short(mmu.lpage_disallowed)} but the indirect pages imply "
                f"{_short(dict(lpage))}",
            )
        unsync = sum(1 for sp in self.live if sp.unsync)
        if mmu.stats.mmu_unsync != unsync or mmu.stats.shadow_pages != mmu.n_used_mmu_pages:
            self.bad(
                "bookkeeping",
                None,
                None,
                f"stats gauges mmu_unsync={mmu.stats.mmu_unsync} "
                f"shadow_pages={mmu.stats.shadow_pages}, but {unsync} pages are unsync and "
                f"n_used_mmu_pages={mmu.n_used_mmu_pages}",
            )
        leaves: Counter[str] = Counter()
        for sp in mmu.by_pfn.values():
            name = LEAF_PAGES.get(sp.level)
            if name is None:
                continue
            for spte in sp.spt_array[sp.present_indices()].tolist():
                if S.is_shadow_present(spte) and S.is_last(spte, sp.level):
                    leaves[name] += 1
        for name in LEAF_PAGES.values():
            if getattr(mmu.stats, name) != leaves[name]:
                self.bad(
                    "bookkeeping",
                    None,
                    None,
                    f"stats gauge {name}={getattr(mmu.stats, name)} but {leaves[name]} present "
                    "leaf sptes are at that level (kvm_update_page_stats)",
                )

    def check_root_counts(self) -> None:
        refs: Counter[MmuPage] = Counter()
        for vcpu in self.vm.vcpus:
            if vcpu.root is not None:
                refs[vcpu.root] += 1
            for sp in vcpu.pae_root or ():
                if sp is not None:
                    refs[sp] += 1
            for sp in vcpu.prev_roots:
                refs[sp] += 1
        for sp in refs:
            if sp not in self.live_set:
                self.bad("root-count", sp, None, "a vCPU holds a freed page as a root")
        for sp in self.live:
            if sp.root_count != refs[sp]:
                self.bad(
                    "root-count",
                    sp,
                    None,
                    f"root_count={sp.root_count} but vCPUs hold {refs[sp]} references",
                )


# ------------------------------------------------------------------------------------------


def _is_table(spte: int, level: int) -> bool:
    """A present spte that points to a child page (``is_shadow_present && !is_last_spte``)."""
    return S.is_shadow_present(spte) and not S.is_last(spte, level)


def _spte_rights(spte: int) -> int:
    """The rights a leaf spte grants, as ``Acc`` bits."""
    acc = 0
    if spte & S.USER:
        acc |= Acc.USER
    if spte & S.WRITABLE:
        acc |= Acc.WRITE
    if not spte & S.NX:
        acc |= Acc.EXEC
    return int(acc)


def _gpte_rights(gpte: int, sp: MmuPage) -> int:
    """Rights of one guest entry, read without a vCPU: XD counts whenever it is set.

    An XD bit with EFER.NXE clear is reserved and the entry cannot be shadowed at all, so
    treating it as "no execute" only ever makes the audit stricter (``FNAME(gpte_access)``).
    """
    acc = gpte & (Acc.WRITE | Acc.USER)
    if sp.role.has_4_byte_gpte or not gpte & Pte.XD:
        acc |= Acc.EXEC
    return int(acc)


def _beyond(rights: int, allowed: int, sp: MmuPage) -> int:
    """The rights in ``rights`` that ``allowed`` does not give, after KVM's CR0.WP=0 trick:
    a supervisor write to a read-only page gets a writable, supervisor-only spte (and one
    that is not executable when SMEP is on), since the hardware runs with CR0.WP=1."""
    extra = rights & ~allowed
    if extra and not sp.role.cr0_wp:
        wp0 = (allowed | Acc.WRITE) & ~Acc.USER
        if sp.role.smep_andnot_wp:
            wp0 &= ~Acc.EXEC
        if not rights & ~wp0:
            return 0
    return int(extra)


def _large_gpte_gfn(gpte: int, sp: MmuPage, index: int) -> int:
    """The first gfn that spte ``index`` of ``sp`` maps inside the guest large page ``gpte``.

    A 32-bit guest's 4 MiB page (PSE-36 keeps address bits 32 and up in bits 13..20) is split
    over two 2 MiB sptes; the low bit of the spte index picks the half.
    """
    if sp.role.has_4_byte_gpte:
        gpa = (gpte & 0xFFC0_0000) | (((gpte >> 13) & 0xFF) << 32)
        return (gpa >> PAGE_SHIFT) + (index & 1) * (1 << LEVEL_BITS)
    size = 1 << (PAGE_SHIFT + LEVEL_BITS * (sp.level - 1))
    return (gpte & ((1 << 52) - 1) & ~(size - 1)) >> PAGE_SHIFT


def _acc_str(acc: int) -> str:
    return "".join(
        c if acc & b else "-" for c, b in (("u", Acc.USER), ("w", Acc.WRITE), ("x", Acc.EXEC))
    )


def _short(d: dict[int, int] | dict[tuple[int, int], int]) -> str:
    items = sorted(d.items())
    text = ", ".join(f"{k}: {v}" for k, v in items[:6])
    return "{" + text + (", ..." if len(items) > 6 else "") + "}"
