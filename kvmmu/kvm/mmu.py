"""The VM-wide shadow MMU state: the page hash, sptes, write protection, unsync bits, zapping.

Mirrors the VM-wide half of ``arch/x86/kvm/mmu/mmu.c``. :class:`Mmu` holds what KVM keeps in
``struct kvm_arch`` (the hash of shadow pages, the active list, the page budget, the rmap, write
tracking) and the operations on it that need no vCPU: allocating and zapping shadow pages,
installing and dropping sptes (``mmu_set_spte``), write-protecting gfns, letting leaf tables go
unsync (``kvm_unsync_page``, ``mark_unsync``, ``mmu_unsync_walk``), memslot changes, reclaim.

Per-vCPU work sits above this module and calls into it: the fault path (:mod:`kvmmu.kvm.fault`,
``FNAME(page_fault)`` -> ``FNAME(fetch)``), emulated writes to guest tables
(:mod:`kvmmu.kvm.page_track`), ``sync_page`` and invlpg (:mod:`kvmmu.kvm.sync`). What they read
of a vCPU is :class:`MmuVcpu`; the shadow walk they share (``for_each_shadow_entry``) is here,
as in ``mmu.c``, with the helpers that read guest entries (``paging_tmpl.h``).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Protocol

from kvmmu.errors import KvmmuError
from kvmmu.hw.memory import GuestMemory, Memslot
from kvmmu.hw.walk import CpuState, reserved_mask
from kvmmu.hw.x86 import PAGE_SHIFT, PAGE_SIZE, Acc, PagingMode, Pte
from kvmmu.kvm import spte as S
from kvmmu.kvm.page import MmuPage, new_access, new_gfns
from kvmmu.kvm.rmap import Rmap, Sptep, add_parent_pte, level_base, remove_parent_pte
from kvmmu.kvm.role import MmuPageRole
from kvmmu.kvm.stats import MmuStats
from kvmmu.kvm.trace import Tracer

# plain ints for the fault path: IntFlag arithmetic runs Python code on every operation
_ACC_WRITE, _ACC_USER, _ACC_EXEC = int(Acc.WRITE), int(Acc.USER), int(Acc.EXEC)
_PTE_PRESENT, _PTE_ACCESSED, _PTE_DIRTY = int(Pte.PRESENT), int(Pte.ACCESSED), int(Pte.DIRTY)
_PTE_PAGE_SIZE, _PTE_XD = int(Pte.PAGE_SIZE), int(Pte.XD)

_ZERO_SPT = memoryview(bytes(PAGE_SIZE)).cast("Q")
_MMU_PRESENT, _SPTE_WRITABLE = S.MMU_PRESENT, S.WRITABLE  # module names on the prefetch loop

KVM_MIN_FREE_MMU_PAGES = 5
KVM_REFILL_PAGES = 25
KVM_MIN_ALLOC_MMU_PAGES = 64
KVM_PERMILLE_MMU_PAGES = 20


class MmuBudgetError(KvmmuError):
    """The page budget cannot hold even the roots a vCPU needs (KVM returns -ENOSPC)."""


class FaultOutcome(Enum):
    """What a page fault handler returned (``RET_PF_*`` in ``mmu_internal.h``)."""

    FIXED = "fixed"  # an spte was installed: retry the access (RET_PF_FIXED)
    SPURIOUS = "spurious"  # the spte was already right (RET_PF_SPURIOUS)
    EMULATE = "emulate"  # the access must be emulated (RET_PF_EMULATE)
    GUEST = "guest"  # the guest's own tables fault: inject it (RET_PF_RETRY after inject)
    MMIO = "mmio"  # emulate as MMIO: exit to userspace


# the members set_spte returns, as module names: a member read through its class costs
# several times a name (EnumType's __getattr__ hook)
_FIXED, _SPURIOUS = FaultOutcome.FIXED, FaultOutcome.SPURIOUS


class MmuVcpu(Protocol):
    """What the MMU reads of a vCPU: its registers and its roots.

    Kernel counterpart: the parts of ``struct kvm_vcpu`` (``vcpu->arch.cr0/cr4/efer``) and of
    ``struct kvm_mmu`` (``root``, ``pae_root``, ``prev_roots``) that ``mmu.c`` and
    ``paging_tmpl.h`` use. :class:`kvmmu.kvm.vcpu.Vcpu` provides them; the MMU code only calls
    through this interface, so it never imports the vCPU.
    """

    @property
    def mmu(self) -> Mmu: ...
    @property
    def memory(self) -> GuestMemory: ...
    @property
    def cpu(self) -> CpuState: ...
    @property
    def mode(self) -> PagingMode: ...
    @property
    def root(self) -> MmuPage | None: ...
    @property
    def pae_root(self) -> list[MmuPage | None] | None: ...
    @property
    def pge(self) -> bool: ...
    @property
    def cr0_wp(self) -> bool: ...
    @property
    def smep(self) -> bool: ...
    @property
    def nx_active(self) -> bool: ...
    @property
    def max_huge_level(self) -> int: ...
    def reload(self) -> None: ...
    def current_roots(self) -> list[MmuPage]: ...
    def all_roots(self) -> list[MmuPage]: ...


class Mmu:
    """A VM's MMU state (``struct kvm_arch``'s MMU fields).

    ``page_hash`` is ``mmu_page_hash``: gfn -> shadow pages of that gfn, of any role.
    ``active`` is ``active_mmu_pages`` in creation order (oldest first), what reclaim walks.
    ``n_max_mmu_pages`` is the budget; ``None`` lets it follow KVM's default of 20 pages per
    thousand guest pages (``kvm_mmu_calculate_default_mmu_pages``), at least 64.
    ``prefetch`` maps the neighbours of a faulting spte too, as KVM does whenever the sptes
    have accessed bits (``direct_pte_prefetch``, ``FNAME(pte_prefetch)``); False is KVM with
    A/D bits unavailable (``sp_ad_disabled``). ``update_pte`` refreshes a leaf spte in place on
    an emulated guest PTE write, as the 2010 kernel did (``mmu_pte_write_new_pte``); today's
    kernel only zaps it (``kvm_mmu_track_write``).
    """

    def __init__(
        self,
        memory: GuestMemory,
        *,
        n_max_mmu_pages: int | None = None,
        huge_pages: bool = True,
        allow_unsync: bool = False,
        tdp: bool = False,
        prefetch: bool = True,
        update_pte: bool = False,
    ) -> None:
        self.memory = memory
        self.tdp = tdp  # tdp_enabled: every vCPU maps guest-physical memory with direct pages
        self.host = memory.host
        self.page_hash: dict[int, list[MmuPage]] = {}
        self.active: dict[MmuPage, None] = {}
        self.by_pfn: dict[int, MmuPage] = {}
        self.rmap = Rmap(self.by_pfn)
        self.lpage_disallowed: dict[tuple[int, int], int] = {}
        self.write_tracked: dict[int, int] = {}
        self.indirect_shadow_pages = 0
        self.n_used_mmu_pages = 0
        self._n_max = n_max_mmu_pages
        self._default_n_max = (-1, 0)  # (memslot generation, KVM's default budget for it)
        if n_max_mmu_pages is not None and n_max_mmu_pages < KVM_MIN_ALLOC_MMU_PAGES:
            raise MmuBudgetError(
                f"n_max_mmu_pages={n_max_mmu_pages} is below KVM's minimum of "
                f"{KVM_MIN_ALLOC_MMU_PAGES} (KVM_MIN_ALLOC_MMU_PAGES); pass at least that"
            )
        self.huge_pages = huge_pages
        self.allow_unsync = allow_unsync
        self.prefetch = prefetch
        self.update_pte = update_pte
        self.mmu_valid_gen = 0
        self.stats = MmuStats()
        self.trace = Tracer()
        self.tlb_flushers: list[Callable[[], None]] = []
        self._serial = 0

    # -- budget ----------------------------------------------------------------------------

    @property
    def n_max_mmu_pages(self) -> int:
        """The page budget (``kvm->arch.n_max_mmu_pages``)."""
        if self._n_max is not None:
            return self._n_max
        generation = self.memory.slots.generation
        if self._default_n_max[0] != generation:  # the memslots changed since it was counted
            guest_pages = sum(slot.npages for slot in self.memory.slots)
            n_max = max(guest_pages * KVM_PERMILLE_MMU_PAGES // 1000, KVM_MIN_ALLOC_MMU_PAGES)
            self._default_n_max = (generation, n_max)
        return self._default_n_max[1]

    def available_pages(self) -> int:
        """Pages left under the budget (``kvm_mmu_available_pages``)."""
        return max(self.n_max_mmu_pages - self.n_used_mmu_pages, 0)

    def make_pages_available(self) -> None:
        """Reclaim the oldest pages when fewer than 5 are free (``make_mmu_pages_available``)."""
        n_max = self._n_max  # the budget, without the property's call when it is fixed
        avail = (self.n_max_mmu_pages if n_max is None else n_max) - self.n_used_mmu_pages
        if avail >= KVM_MIN_FREE_MMU_PAGES:
            return
        avail = max(avail, 0)  # kvm_mmu_available_pages
        self.zap_oldest_pages(KVM_REFILL_PAGES - avail)
        if not self.available_pages():
            raise MmuBudgetError(
                f"all {self.n_used_mmu_pages} shadow pages are in use as roots; raise "
                f"n_max_mmu_pages above {self.n_max_mmu_pages}"
            )

    def zap_oldest_pages(self, nr_to_zap: int) -> int:
        """Zap up to ``nr_to_zap`` of the oldest non-root pages.

        ``kvm_mmu_zap_oldest_mmu_pages``: roots are skipped, the count goes to ``mmu_recycled``.
        """
        zapped = 0
        while zapped < nr_to_zap:
            victim = next((sp for sp in self.active if not sp.root_count), None)
            if victim is None:
                break
            before = self.n_used_mmu_pages
            self.zap_page(victim)
            zapped += before - self.n_used_mmu_pages
        self.stats.mmu_recycled += zapped
        return zapped

    # -- the hash of shadow pages ----------------------------------------------------------

    def is_obsolete(self, sp: MmuPage) -> bool:
        """True if the page is invalid or from before the last fast zap (``is_obsolete_sp``)."""
        return sp.role.invalid or sp.mmu_valid_gen != self.mmu_valid_gen

    def pages_of(self, gfn: int) -> list[MmuPage]:
        """Valid indirect pages that shadow ``gfn`` (``for_each_gfn_valid_sp_with_gptes``)."""
        return [
            sp for sp in self.page_hash.get(gfn, ()) if not sp.direct and not self.is_obsolete(sp)
        ]

    def alloc_shadow_page(self, gfn: int, role: MmuPageRole) -> MmuPage:
        """Allocate and account a new page (``kvm_mmu_alloc_shadow_page``)."""
        self.stats.mmu_cache_miss += 1
        pfn = self.host.alloc_page()
        self._serial += 1
        sp = MmuPage(
            gfn=gfn,
            role=role,
            pfn=pfn,
            spt=self.host.words(pfn),
            gfns=new_gfns(role.direct),
            access=new_access(role.direct),
            mmu_valid_gen=self.mmu_valid_gen,
            serial=self._serial,
        )
        sp.spt[:] = _ZERO_SPT  # the page comes zeroed (__GFP_ZERO)
        self.page_hash.setdefault(gfn, []).append(sp)
        self.active[sp] = None
        self.by_pfn[pfn] = sp
        self.n_used_mmu_pages += 1
        self.stats.shadow_pages = self.n_used_mmu_pages
        if not role.direct:
            self._account_shadowed(sp)
        if self.trace.enabled:
            self.trace.emit(
                "kvm_mmu_get_page", gfn=gfn, role=role.describe(), created=True, sp=sp.serial
            )
        return sp

    def _free_page(self, sp: MmuPage) -> None:
        """Release a zapped page with no users (``kvm_mmu_free_shadow_page``)."""
        bucket = self.page_hash[sp.gfn]
        bucket.remove(sp)
        if not bucket:
            del self.page_hash[sp.gfn]
        self.active.pop(sp, None)
        del self.by_pfn[sp.pfn]
        self.host.free_page(sp.pfn)
        self.n_used_mmu_pages -= 1
        self.stats.shadow_pages = self.n_used_mmu_pages

    def child_of(self, spte: int) -> MmuPage:
        """The page a non-leaf spte points to (``spte_to_child_sp``)."""
        return self.by_pfn[S.spte_to_pfn(spte)]

    # -- write protection for shadowed gfns ------------------------------------------------

    def _account_shadowed(self, sp: MmuPage) -> None:
        """Protect the guest table a new indirect page shadows (``account_shadowed``).

        Upper-level tables are write-tracked, so they can never go unsync; every shadowed gfn
        forbids large mappings over it and loses its writable sptes.
        """
        self.indirect_shadow_pages += 1
        if sp.level > 1:
            self.write_tracked[sp.gfn] = self.write_tracked.get(sp.gfn, 0) + 1
        self._disallow_lpage(sp.gfn, +1)
        if self.write_protect_gfn(sp.gfn, mmu_protect=True):
            self.flush_remote_tlbs()

    def _unaccount_shadowed(self, sp: MmuPage) -> None:
        """Undo :meth:`_account_shadowed` (``unaccount_shadowed``)."""
        self.indirect_shadow_pages -= 1
        if sp.level > 1:
            left = self.write_tracked[sp.gfn] - 1
            if left:
                self.write_tracked[sp.gfn] = left
            else:
                del self.write_tracked[sp.gfn]
        self._disallow_lpage(sp.gfn, -1)

    def _disallow_lpage(self, gfn: int, delta: int) -> None:
        """Count a reason not to map ``gfn`` with large pages (``kvm_mmu_gfn_disallow_lpage``)."""
        for level in (2, 3):
            key = (level, level_base(gfn, level))
            count = self.lpage_disallowed.get(key, 0) + delta
            if count:
                self.lpage_disallowed[key] = count
            else:
                self.lpage_disallowed.pop(key, None)

    def is_write_tracked(self, gfn: int) -> bool:
        """True if an upper-level page shadows ``gfn`` (``kvm_gfn_is_write_tracked``)."""
        return gfn in self.write_tracked

    def write_protect_gfn(self, gfn: int, *, mmu_protect: bool) -> bool:
        """Make every spte mapping ``gfn`` read-only (``kvm_mmu_slot_gfn_write_protect``).

        ``mmu_protect`` also clears MMU-writable, as protecting a shadowed table must; dirty
        logging leaves it so the next write can be fixed quickly. Returns True if any spte
        changed, meaning TLBs must be flushed.
        """
        changed = False
        for sp, index in self.rmap.all_levels(gfn):
            spte = sp.spt[index]
            if not spte & S.WRITABLE and not (mmu_protect and spte & S.MMU_WRITABLE):
                continue
            spte &= ~S.WRITABLE
            if mmu_protect:
                spte &= ~S.MMU_WRITABLE
            sp.spt[index] = spte
            changed = True
        return changed

    def try_to_unsync(self, gfn: int, *, can_unsync: bool, prefetch: bool = False) -> bool:
        """May ``gfn`` be mapped writable? Unsync its pages if so (``mmu_try_to_unsync_pages``).

        Returns False when the gfn must stay write-protected: it is write-tracked (an upper-level
        table), or it has shadow pages and unsync is not allowed, or (``prefetch``) a prefetched
        spte would be the one to unsync a page: KVM unsyncs only for a real fault (-EEXIST).
        """
        if gfn in self.write_tracked:  # is_write_tracked
            return False
        if gfn not in self.page_hash:
            return True  # no shadow page of this gfn at all: nothing to unsync
        pages = self.pages_of(gfn)
        if pages and not (can_unsync and self.allow_unsync):
            return False
        if prefetch and any(not sp.unsync for sp in pages):
            return False
        for sp in pages:
            if not sp.unsync:
                unsync_page(self, sp)
        return True

    # -- sptes ------------------------------------------------------------------------------

    def flush_remote_tlbs(self) -> None:
        """Flush every vCPU's TLB after sptes lost rights (``kvm_flush_remote_tlbs``)."""
        for flush in self.tlb_flushers:
            flush()

    def link_shadow_page(self, parent: MmuPage, index: int, child: MmuPage) -> None:
        """Point spte ``index`` of ``parent`` at ``child`` (``link_shadow_page``).

        A large leaf spte in the way is dropped first: the new table replaces it.
        """
        old = parent.spt[index]
        if S.is_shadow_present(old):
            self.drop_spte(parent, index)
            self.flush_remote_tlbs()
        parent.spt[index] = S.make_nonleaf_spte(child.pfn)
        add_parent_pte(child, parent, index)
        if child.unsync or child.unsync_children:
            mark_unsync(parent, index)

    def drop_spte(self, sp: MmuPage, index: int) -> None:
        """Clear one spte, undoing its rmap or parent link (``mmu_page_zap_pte``).

        A present leaf leaves the per-level gauge (``mmu_spte_clear_track_bits`` ->
        ``kvm_update_page_stats``).
        """
        spte = sp.spt[index]
        if S.is_shadow_present(spte):
            if S.is_last(spte, sp.level):
                self.rmap.remove(sp, index)
                self._count_leaf(sp.level, -1)
            else:
                child = self.child_of(spte)
                remove_parent_pte(child, sp, index)
                if index in sp.unsync_child_bitmap:
                    clear_unsync_child_bit(sp, index)
        sp.spt[index] = 0

    def set_spte(
        self,
        sp: MmuPage,
        index: int,
        access: int,
        gfn: int,
        slot: Memslot | None,
        *,
        write_fault: bool,
        prefetch: bool = False,
        global_: bool = False,
    ) -> FaultOutcome:
        """Install a leaf spte for ``gfn`` (``mmu_set_spte`` with ``make_spte``).

        ``slot`` is the memslot holding ``gfn``, as the caller found it (``fault->slot``). No
        memslot: an MMIO spte. A write-protected gfn: a read-only spte, and a write fault must
        be emulated. A read-only memslot: never writable. Dirty logging: record the write.
        """
        spt = sp.spt
        old = spt[index]
        if slot is None:
            # Fix: an MMIO spte used to overwrite a present spte, leaving its rmap entry (or
            # child link) behind. mmu_set_spte drops the old spte first, then marks MMIO.
            if S.is_shadow_present(old):
                self.drop_spte(sp, index)
                self.flush_remote_tlbs()
            spt[index] = S.make_mmio_spte(gfn, access, self.memory.slots.generation)
            self.stats.pf_mmio_spte_created += 1
            self.trace.emit(
                "mark_mmio_spte", gfn=gfn, access=int(access), gen=self.memory.slots.generation
            )
            return FaultOutcome.MMIO
        level = sp.role.level
        pfn = slot.gfn_to_pfn(gfn)
        was_rmapped = False
        if S.is_shadow_present(old):
            if prefetch:
                return _SPURIOUS
            if level > 1 and not S.is_large(old):
                self.drop_spte(sp, index)  # a table pointer replaced by a large page
                self.flush_remote_tlbs()
            elif S.spte_to_pfn(old) != pfn:
                self.drop_spte(sp, index)
                self.flush_remote_tlbs()
            else:
                was_rmapped = True
        host_writable = not slot.readonly
        writable = host_writable and bool(access & _ACC_WRITE)
        wrprot = False
        if writable and not self.try_to_unsync(gfn, can_unsync=True, prefetch=prefetch):
            writable, wrprot = False, True
        new = S.make_spte(
            pfn,
            access,
            large=level > 1,
            writable=writable,
            mmu_writable=writable,
            host_writable=host_writable,
            accessed=not prefetch,
            global_=global_,
        )
        outcome = _FIXED
        if new == old:
            outcome = _SPURIOUS
        else:
            if old & S.WRITABLE and not new & S.WRITABLE:
                self.flush_remote_tlbs()
            spt[index] = new
            if self.trace.enabled:
                self.trace.emit(
                    "kvm_mmu_set_spte",
                    level=level,
                    gfn=gfn,
                    spte=new,
                    sp=sp.serial,
                    index=index,
                )
        if wrprot and write_fault:
            outcome = FaultOutcome.EMULATE
        if writable and slot.dirty_logging:
            self.memory.mark_page_dirty(gfn)
        if not was_rmapped:
            # rmap_add: kvm_mmu_page_set_translation (the gfn and the guest's access), then
            # pte_list_add, whose count of the sptes already on the gfn's rmap keeps the peak
            sp.set_gfn(index, gfn)
            sp.set_access(index, access)
            count = self.rmap.pte_list_add(sp, index, gfn)
            if count > self.stats.max_mmu_rmap_size:
                self.stats.max_mmu_rmap_size = count
            self._count_leaf(level, 1)
        return outcome

    def set_sptes_prefetch(
        self, sp: MmuPage, start: int, end: int, access: int, gfn: int, slot: Memslot
    ) -> None:
        """Prefetch leaf sptes ``start`` to ``end - 1`` of direct level-1 page ``sp`` for the
        gfns from ``gfn`` of ``slot``: the loop of ``mmu_set_spte`` calls in
        ``direct_pte_prefetch_many``, one memslot and one set of rights for the whole run.

        Each spte ends as :meth:`set_spte` with ``prefetch=True`` leaves it (trace event, dirty
        log, rmap entry, peak and gauge included). The spte bits are ``make_spte``'s for the
        run, made once: only the pfn differs from one spte to the next. A present spte is left
        alone (a prefetch never replaces one); a gfn that shadow pages use (writable sptes for
        it are ``mmu_try_to_unsync_pages``' decision) goes through :meth:`set_spte` itself.
        """
        if not sp.role.direct or sp.role.level != 1:
            raise KvmmuError(f"set_sptes_prefetch needs a direct level-1 page, got {sp.describe()}")
        # A direct page stores neither gfns nor access (set_gfn and set_access only check them),
        # and its gfns are linear: checking the run's first spte checks them all.
        sp.set_gfn(start, gfn)
        sp.set_access(start, access)
        host_writable = not slot.readonly
        writable = host_writable and bool(access & _ACC_WRITE)
        bits = S.make_spte(  # make_spte(pfn) is this | pfn << PAGE_SHIFT
            0,
            access,
            large=False,
            writable=writable,
            mmu_writable=writable,
            host_writable=host_writable,
            accessed=False,
        )
        spt, trace = sp.spt, self.trace
        write_tracked, page_hash = self.write_tracked, self.page_hash
        # the spte of index i is bits | (pfn of gfn + i - start) << PAGE_SHIFT; bits has no pfn
        # bits, so that is spte_base + (i << PAGE_SHIFT): one operation on a large int per spte
        spte_base = bits + ((slot.gfn_to_pfn(gfn) - start) << PAGE_SHIFT)
        log_dirty = writable and slot.dirty_logging
        tracing = trace.enabled
        # only a write-tracked gfn or one that indirect pages shadow keeps a writable spte
        # from the plain path (mmu_try_to_unsync_pages); with neither in the VM, no gfn does
        may_unsync = writable and bool(write_tracked or self.indirect_shadow_pages)
        extras = tracing or log_dirty
        gfn -= start
        mapped = 0  # the level-1 gauge moves once for the run (kvm_update_page_stats)
        rmapped: list[int] = []  # sptes set here whose rmap_add is still to come, in order
        for index in range(start, end):
            old = spt[index]
            if old & _MMU_PRESENT:
                continue  # set_spte: a prefetch finds the spte already there (RET_PF_SPURIOUS)
            if may_unsync and (gfn + index in write_tracked or gfn + index in page_hash):
                if rmapped:  # the rmap files sptes in the order they were set
                    mapped += self._rmap_add_many(sp, rmapped, gfn)
                    rmapped = []
                self.set_spte(
                    sp, index, access, gfn + index, slot, write_fault=False, prefetch=True
                )
                continue
            new = spte_base + (index << PAGE_SHIFT)
            if not writable and old & _SPTE_WRITABLE:
                self.flush_remote_tlbs()  # an MMIO spte that recorded a write right
            spt[index] = new
            if extras:
                if tracing:
                    trace.emit(
                        "kvm_mmu_set_spte",
                        level=1,
                        gfn=gfn + index,
                        spte=new,
                        sp=sp.serial,
                        index=index,
                    )
                if log_dirty:
                    self.memory.mark_page_dirty(gfn + index)
            rmapped.append(index)
        if rmapped:
            mapped += self._rmap_add_many(sp, rmapped, gfn)
        self._count_leaf(1, mapped)

    def _rmap_add_many(self, sp: MmuPage, indices: list[int], gfn: int) -> int:
        """The ``pte_list_add`` of each prefetched spte in ``indices`` of level-1 page ``sp``
        (spte ``i`` maps ``gfn + i``), and the peak they make of ``max_mmu_rmap_size``; returns
        how many sptes were filed."""
        count = self.rmap.pte_list_add_many(sp, indices, gfn)
        if count > self.stats.max_mmu_rmap_size:
            self.stats.max_mmu_rmap_size = count
        return len(indices)

    def _count_leaf(self, level: int, delta: int) -> None:
        """Move the gauge of present leaf sptes at ``level`` (``kvm_update_page_stats``)."""
        stats = self.stats  # LEAF_PAGES names these gauges; spelled out, no getattr/setattr
        if level == 1:
            stats.pages_4k += delta
        elif level == 2:
            stats.pages_2m += delta
        elif level == 3:
            stats.pages_1g += delta

    # -- zapping ----------------------------------------------------------------------------

    def zap_page(self, sp: MmuPage) -> None:
        """Zap a shadow page (``kvm_mmu_prepare_zap_page`` + ``kvm_mmu_commit_zap_page``).

        Its sptes are dropped (rmap entries and child links go), its parents stop pointing at it,
        and it is freed, unless it is some vCPU's root: then it stays, marked invalid, until the
        last vCPU lets it go.
        """
        if sp.role.invalid and sp.root_count:
            return
        self.trace.emit(
            "kvm_mmu_prepare_zap_page",
            gfn=sp.gfn,
            role=sp.role.describe,  # called only when the event is recorded
            sp=sp.serial,
            root_count=sp.root_count,
        )
        self.stats.mmu_shadow_zapped += 1
        zap_unsync_children(self, sp)
        for index in sp.present_indices():
            self.drop_spte(sp, int(index))
        for parent, index in list(sp.parent_ptes):
            self.drop_spte(parent, index)
        if not sp.role.invalid and not sp.direct:
            self._unaccount_shadowed(sp)
        if sp.unsync:
            unlink_unsync_page(self, sp)
        sp.role = sp.role.with_invalid()
        if sp.root_count:
            self.active.pop(sp, None)
        else:
            self._free_page(sp)
        self.flush_remote_tlbs()

    def put_root(self, sp: MmuPage) -> None:
        """Drop one reference to a root; free it if it was invalid (``mmu_free_root_page``)."""
        sp.root_count -= 1
        if not sp.root_count and sp.role.invalid:
            self._free_page(sp)

    def zap_all_fast(self) -> None:
        """Invalidate every page at once by a new generation (``kvm_mmu_zap_all_fast``).

        Pages of the old generation are obsolete: lookups skip them, vCPUs drop roots of the old
        generation at their next entry, and the pages are zapped.
        """
        # The kernel toggles between 0 and 1: every page of the old generation is zapped now
        # (roots in use stay, marked invalid), so none can look valid when the value returns.
        self.mmu_valid_gen ^= 1
        self.trace.emit("kvm_mmu_zap_all_fast", gen=self.mmu_valid_gen)
        for sp in list(self.active):
            if sp in self.active and sp.mmu_valid_gen != self.mmu_valid_gen:
                self.zap_page(sp)

    def zap_pse_dependent_pages(self) -> None:
        """Zap the shadows of 32-bit guest page directories after CR4.PSE changed.

        No kernel counterpart: a deliberate difference. Whether a 32-bit PDE with bit 7 set
        maps a 4 MiB page or points to a page table depends on CR4.PSE (SDM 4.3), and the
        shadow PDE that ``FNAME(fetch)`` installed links a direct or an indirect child
        accordingly. ``kvm_mmu_page_role`` has no PSE bit (the extended role's ``cr4_pse``
        only resets the context, ``kvm_mmu_reset_context``), so KVM finds the same root again
        with the old links and the guest keeps the old meaning. kvmmu drops these pages so
        that the next access walks the guest's tables with the new one.
        """
        for sp in [sp for sp in self.active if sp.role.has_4_byte_gpte and sp.level == 2]:
            if sp in self.active and not sp.role.invalid:
                self.zap_page(sp)

    # -- memslot changes and dirty logging ---------------------------------------------------

    def flush_shadow_memslot(self, slot: Memslot, *, zap_all: bool = True) -> None:
        """Forget every translation through a deleted or moved slot.

        ``kvm_arch_flush_shadow_memslot``.

        By default KVM zaps everything, fast (``KVM_X86_QUIRK_SLOT_ZAP_ALL``); without the quirk
        it zaps only the slot's leaf sptes and the shadow pages of its gfns.
        """
        if zap_all:
            self.zap_all_fast()
            return
        for sp in [sp for sp in self.active if slot.contains(sp.gfn) and not sp.direct]:
            if sp in self.active:
                self.zap_page(sp)
        for (_, gfn), head in list(self.rmap.items()):
            if slot.contains(gfn):
                for sp, index in list(head):
                    self.drop_spte(sp, index)
        self.flush_remote_tlbs()

    def slot_remove_write_access(self, slot: Memslot) -> None:
        """Write-protect every spte of a slot whose dirty logging starts
        (``kvm_mmu_slot_remove_write_access``); MMU-writable stays, so the next write only logs."""
        changed = False
        for (_, gfn), _head in list(self.rmap.items()):
            if slot.contains(gfn):
                changed |= self.write_protect_gfn(gfn, mmu_protect=False)
        if changed:
            self.flush_remote_tlbs()

    def zap_collapsible_sptes(self, slot: Memslot) -> None:
        """After dirty logging stops, drop the sptes of direct pages that a larger page could
        map again (``kvm_rmap_zap_collapsible_sptes``): the rmaps of levels 4 KiB up to below
        the largest huge page (``KVM_MAX_HUGEPAGE_LEVEL - 1``), so 4 KiB -> 2 MiB and 1 GiB,
        and 2 MiB -> 1 GiB (``sp->role.level < kvm_mmu_max_mapping_level``)."""
        for (level, gfn), head in list(self.rmap.items()):
            if level > 2 or not slot.contains(gfn):
                continue
            for sp, index in list(head):
                if sp.direct and sp.level < self.max_mapping_level(slot, sp.gfn, 3):
                    self.drop_spte(sp, index)
        self.flush_remote_tlbs()

    def write_protect_dirty(self, gfns: list[int]) -> None:
        """Re-protect gfns whose dirty bits were just collected
        (``kvm_arch_mmu_enable_log_dirty_pt_masked``)."""
        changed = [self.write_protect_gfn(gfn, mmu_protect=False) for gfn in gfns]
        if any(changed):  # every gfn is protected: no short circuit
            self.flush_remote_tlbs()

    def zap_all(self) -> None:
        """Zap every shadow page (``kvm_mmu_zap_all``)."""
        for sp in list(self.active):
            if sp in self.active:
                self.zap_page(sp)

    # -- large pages ------------------------------------------------------------------------

    def max_mapping_level(self, slot: Memslot, gfn: int, max_level: int) -> int:
        """The largest page that may map ``gfn`` (``kvm_mmu_max_mapping_level``).

        Capped by the guest's own page size (``max_level``), by shadowed gfns inside the large
        page (``disallow_lpage``), by dirty logging, and by the host: the large page must lie in
        one memslot and be backed by an aligned run of host frames.
        """
        if max_level == 1 or slot.dirty_logging or not self.huge_pages:
            return 1
        for level in range(max_level, 1, -1):
            base = level_base(gfn, level)
            if self.lpage_disallowed.get((level, base)):
                continue
            npages = 1 << ((level - 1) * 9)
            if base < slot.base_gfn or base + npages > slot.end_gfn:
                continue
            if slot.gfn_to_pfn(base) % npages:
                continue
            return level
        return 1


# ------------------------------------------------------------------------------------------
# unsync bookkeeping (mmu.c): which shadow pages are stale, and which parents lead to them
# ------------------------------------------------------------------------------------------


def unsync_page(mmu: Mmu, sp: MmuPage) -> None:
    """Let the guest write the table ``sp`` shadows without exits (``kvm_unsync_page``)."""
    mmu.trace.emit("kvm_mmu_unsync_page", gfn=sp.gfn, sp=sp.serial)
    mmu.stats.mmu_unsync += 1
    sp.unsync = True
    for parent, index in sp.parent_ptes:
        mark_unsync(parent, index)


def mark_unsync(parent: MmuPage, index: int) -> None:
    """Record that spte ``index`` of ``parent`` leads to unsync pages (``mark_unsync``)."""
    if index in parent.unsync_child_bitmap:
        return
    parent.unsync_child_bitmap.add(index)
    parent.unsync_children += 1
    if parent.unsync_children > 1:
        return
    for grand, gindex in parent.parent_ptes:
        mark_unsync(grand, gindex)


def clear_unsync_child_bit(sp: MmuPage, index: int) -> None:
    """Forget that spte ``index`` leads to unsync pages (``clear_unsync_child_bit``)."""
    sp.unsync_child_bitmap.discard(index)
    sp.unsync_children -= 1


def clear_parents(sp: MmuPage) -> None:
    """After ``sp`` was synced or zapped, clear the bits that pointed at it, upwards while a
    parent has no other unsync child (``mmu_pages_clear_parents``)."""
    for parent, index in sp.parent_ptes:
        if index in parent.unsync_child_bitmap:
            clear_unsync_child_bit(parent, index)
            if not parent.unsync_children:
                clear_parents(parent)


def unlink_unsync_page(mmu: Mmu, sp: MmuPage) -> None:
    """Mark ``sp`` synced again (``kvm_unlink_unsync_page``)."""
    mmu.trace.emit("kvm_mmu_sync_page", gfn=sp.gfn, sp=sp.serial)
    sp.unsync = False
    mmu.stats.mmu_unsync -= 1


def unsync_walk(mmu: Mmu, sp: MmuPage) -> list[MmuPage]:
    """The unsync leaf pages below ``sp``, found through the bitmaps (``mmu_unsync_walk``).

    Stale bits (the child is gone or no longer unsync) are cleared on the way, as KVM does.
    """
    found: list[MmuPage] = []
    for index in sorted(sp.unsync_child_bitmap):
        spte = sp.spt[index]
        if not S.is_shadow_present(spte) or S.is_large(spte):
            clear_unsync_child_bit(sp, index)
            continue
        child = mmu.child_of(spte)
        if child.unsync_children:
            below = unsync_walk(mmu, child)
            if below:
                found.extend(below)
            else:
                clear_unsync_child_bit(sp, index)
        elif child.unsync:
            found.append(child)
        else:
            clear_unsync_child_bit(sp, index)
    return found


def zap_unsync_children(mmu: Mmu, parent: MmuPage) -> int:
    """Zap every unsync page below ``parent`` (``mmu_zap_unsync_children``)."""
    if parent.level == 1:
        return 0
    pages = unsync_walk(mmu, parent)
    for sp in pages:
        if not sp.role.invalid:
            clear_parents(sp)
            mmu.zap_page(sp)
    return len(pages)


# ------------------------------------------------------------------------------------------
# the shadow walk (for_each_shadow_entry)
# ------------------------------------------------------------------------------------------


def shadow_walk_init(vcpu: MmuVcpu, addr: int) -> tuple[MmuPage, int]:
    """The shadow page where a walk for ``addr`` starts, and its level (``shadow_walk_init``).

    One root for 4/5-level guests and TDP; otherwise one of the four PAE page directories of
    ``pae_root``, picked by address bits 31:30.
    """
    root = vcpu.root
    if root is not None:
        return root, root.level
    assert vcpu.pae_root is not None
    sp = vcpu.pae_root[(addr >> 30) & 3]
    if sp is None:
        raise KvmmuError(f"no PAE root for {addr:#x}: the guest's PDPTE is not present")
    return sp, 2


def shadow_index(addr: int, level: int) -> int:
    """Index of ``addr`` in a shadow page of ``level`` (``SPTE_INDEX``)."""
    return (addr >> (PAGE_SHIFT + 9 * (level - 1))) & 511


def shadow_path(vcpu: MmuVcpu, addr: int, root: MmuPage | None = None) -> list[tuple[MmuPage, int]]:
    """The shadow pages and indices a walk for ``addr`` visits (``for_each_shadow_entry``).

    Starts at ``root`` (default: the vCPU's current root for ``addr``, loaded first) and stops
    at the first spte that is not present or is a leaf.
    """
    path: list[tuple[MmuPage, int]] = []
    if root is not None:
        sp, level = root, root.level
    else:
        vcpu.reload()
        try:
            sp, level = shadow_walk_init(vcpu, addr)
        except KvmmuError:
            return path
    mmu = vcpu.mmu
    while True:
        index = shadow_index(addr, level)
        path.append((sp, index))
        spte = sp.spt[index]
        if not S.is_shadow_present(spte) or S.is_last(spte, level):
            return path
        sp, level = mmu.child_of(spte), level - 1


# ------------------------------------------------------------------------------------------
# helpers on guest entries (paging_tmpl.h)
# ------------------------------------------------------------------------------------------


def read_gpte(memory: GuestMemory, sp: MmuPage, index: int) -> int | None:
    """The guest entry that spte ``index`` of indirect page ``sp`` shadows, or None."""
    if sp.role.has_4_byte_gpte:
        entries_per_quadrant = 512 if sp.level == 1 else 256
        gindex = sp.role.quadrant * entries_per_quadrant + (index if sp.level == 1 else index >> 1)
        words = memory.table_words(sp.gfn, 4)
    else:
        gindex = index
        words = memory.table_words(sp.gfn, 8)
    return None if words is None else int(words[gindex])


def is_last_gpte(sp: MmuPage, gpte: int, cr4_pse: bool) -> bool:
    """Does the guest entry behind an upper-level spte of ``sp`` map a page
    (``FNAME(is_last_gpte)``)? Bit 7 means PS in 8-byte entries, and in a 32-bit PDE only with
    CR4.PSE (SDM 4.3); a level-1 entry always maps a page."""
    if sp.level == 1:
        return True
    if sp.role.has_4_byte_gpte and not cr4_pse:
        return False
    return bool(gpte & _PTE_PAGE_SIZE)


def gpte_access(gpte: int, vcpu: MmuVcpu) -> int:
    """Rights one guest entry grants (``FNAME(gpte_access)``)."""
    access = gpte & (_ACC_WRITE | _ACC_USER)
    if not (vcpu.nx_active and gpte & _PTE_XD):
        access |= _ACC_EXEC
    return access


def prefetch_invalid_gpte(vcpu: MmuVcpu, gpte: int | None) -> bool:
    """A guest entry that gives no spte: unreadable, not present, not accessed, or with reserved
    bits (``FNAME(prefetch_invalid_gpte)``, shared by ``sync_spte`` and prefetch)."""
    return (
        gpte is None
        or not gpte & _PTE_PRESENT
        or not gpte & _PTE_ACCESSED
        or gpte_reserved(vcpu, gpte)
    )


def gpte_pte_access(vcpu: MmuVcpu, sp: MmuPage, gpte: int) -> int:
    """The rights of the spte for ``gpte`` in ``sp``: the page's and the entry's, read-only while
    the entry is clean (``FNAME(gpte_access)`` then ``FNAME(protect_clean_gpte)``)."""
    access = sp.role.access & gpte_access(gpte, vcpu)
    if not gpte & _PTE_DIRTY:
        access &= ~_ACC_WRITE
    return access


def gpte_reserved(vcpu: MmuVcpu, gpte: int) -> bool:
    """Reserved bits set in a leaf guest entry (``FNAME(is_rsvd_bits_set)`` at level 1)."""
    return bool(gpte & reserved_mask(vcpu.cpu, 1, bool(gpte & _PTE_PAGE_SIZE)))


def gpte_gfn(gpte: int, sp: MmuPage) -> int:
    """The gfn a level-1 guest entry points to (``gpte_to_gfn``)."""
    mask = 0xFFFF_F000 if sp.role.has_4_byte_gpte else ((1 << 52) - 1) & ~0xFFF
    return (gpte & mask) >> PAGE_SHIFT


def sptes_of_gfn(mmu: Mmu, gfn: int) -> list[Sptep]:
    """Every leaf spte that maps ``gfn``, at any level: the rmap walk that
    ``kvm_mmu_slot_gfn_write_protect`` makes (``for_each_rmap_spte`` over each level)."""
    return mmu.rmap.all_levels(gfn)
