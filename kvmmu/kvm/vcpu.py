"""The VM and its vCPUs: registers, the guest TLB, CR3 switches, and the path of one access.

Mirrors ``arch/x86/kvm/x86.c`` (register writes, ``kvm_mmu_reset_context``) and the parts of
``mmu.c`` that load roots (``kvm_mmu_load``, ``mmu_alloc_shadow_roots``,
``mmu_alloc_direct_roots``). :meth:`Vcpu.access` is what the CPU does for one guest access:

1. look in the TLB; a hit needs no walk;
2. walk the *shadow* tables from the current root, as the hardware would (with TDP: the guest's
   own tables, each read translated through the TDP tables, a two-dimensional walk);
3. on a fault there, run the MMU's page fault handler, which either fixes the shadow tables
   (retry), reflects the guest's own fault, or asks for the access to be emulated.

The TLB caches what the hardware walk found, keyed by the page and the kind of access; global
entries survive a CR3 load while CR4.PGE is set. To let the simulated TLB know which
translations are global, kvmmu copies the guest's G bit into leaf sptes; KVM never sets G in
sptes, so real hardware under KVM drops global translations on a guest CR3 load, which the
architecture permits.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from kvmmu.errors import (
    AddressError,
    KvmmuError,
    MemslotError,
    ModeError,
    check_bool,
    check_count,
    check_instance,
    check_int,
    check_optional_count,
)
from kvmmu.hw.memory import GuestMemory, HostMemory, Memslot, MemslotFlag
from kvmmu.hw.walk import (
    CpuState,
    GeneralProtection,
    PageFault,
    WalkResult,
    load_cr3,
    reserved_mask,
    update_accessed_dirty,
    walk,
    walk_unchecked,
)
from kvmmu.hw.x86 import (
    PAGE_SHIFT,
    Access,
    Cr0,
    Cr4,
    Efer,
    PagingMode,
    PfErr,
    Pte,
    Rflags,
)
from kvmmu.kvm import spte as S
from kvmmu.kvm.fault import direct_page_fault, get_shadow_page, page_fault
from kvmmu.kvm.mmu import FaultOutcome, Mmu, MmuBudgetError, shadow_walk_init
from kvmmu.kvm.page import MmuPage
from kvmmu.kvm.page_track import track_write
from kvmmu.kvm.role import (
    CR0_ROLE_BITS,
    CR4_ROLE_BITS,
    EFER_ROLE_BITS,
    CpuRole,
    MmuPageRole,
    calc_cpu_role,
    shadow_root_role,
    tdp_root_role,
)
from kvmmu.kvm.stats import MmuStats
from kvmmu.kvm.sync import invlpg_sync, sync_roots

TLB_ENTRIES = 64
# (level, page shift, offset mask) of the TLB's entry sizes: 4 KiB, 2 MiB, 1 GiB
_TLB_LEVELS = tuple(
    (level, PAGE_SHIFT + 9 * (level - 1), (1 << (PAGE_SHIFT + 9 * (level - 1))) - 1)
    for level in (1, 2, 3)
)
KVM_MMU_NUM_PREV_ROOTS = 3

Outcome = int | PageFault | GeneralProtection

# plain ints for the access path: IntFlag arithmetic runs Python code on every operation
_CR0_WP, _CR4_PGE, _CR4_SMEP = int(Cr0.WP), int(Cr4.PGE), int(Cr4.SMEP)
_EFER_NXE, _RFLAGS_AC, _PTE_GLOBAL = int(Efer.NXE), int(Rflags.AC), int(Pte.GLOBAL)
_PFERR_RSVD = int(PfErr.RSVD)
# the bits of a TDP walk (plain ints) and the error codes of its faults: P | RSVD (| W)
_P_BIT, _W_BIT, _PS_BIT = int(Pte.PRESENT), int(Pte.WRITABLE), int(Pte.PAGE_SIZE)
_P_RSVD = _P_BIT | _PFERR_RSVD
_P_RSVD_W = _P_RSVD | _W_BIT
_ADDR_MASK = ((1 << 52) - 1) & ~0xFFF  # bits 51:12 of a table pointer
_PDE_SHIFT = PAGE_SHIFT + 9  # a level-2 entry maps 2 MiB
_TDP_PDE_CACHE = 64  # entries each of the TDP walk's caches keeps (SDM 28.4.1, 28.4.3)
_ZERO_WORDS = memoryview(bytes(8)).cast("Q")  # no table read yet
# enum members as module names on the access path: a member read through its class costs
# several times a name (EnumType's __getattr__ hook)
_READ, _WRITE, _NONPAGING, _PAE = Access.READ, Access.WRITE, PagingMode.NONE, PagingMode.PAE
_FIXED, _SPURIOUS, _EMULATE = FaultOutcome.FIXED, FaultOutcome.SPURIOUS, FaultOutcome.EMULATE


def _tdp_walk_levels(levels: int) -> tuple[tuple[int, int, int, int], ...]:
    """The levels of a TDP walk on ``levels``-level tables, root first, each as (references
    made once its entry is read, index shift, the bits an entry must show as P and no reserved
    bit with PS clear, the reserved bits of a page where PS maps one here or 0): the per-level
    checks of an EPT walk (SDM 28.3.2). kvmmu's TDP sptes are 64-bit paging entries, so the
    reserved bits are those of a 4/5-level walk with the host's MAXPHYADDR and EFER.NXE
    (``reserved_mask``): bits 51:46, PS at levels 4 and 5, the low address bits of a 2 MiB or
    1 GiB page. Where PS maps no page (levels 4 and 5, where it is reserved, and level 1, where
    bit 7 is PAT) the reserved bits do not depend on it."""
    tdp_cpu = CpuState(
        int(Cr0.PE | Cr0.PG | Cr0.WP),
        0,
        int(Cr4.PAE | (Cr4.LA57 if levels == 5 else 0)),
        int(Efer.LME | Efer.LMA | Efer.NXE),
        0,
        int(Rflags.FIXED),
        0,
        S.HOST_MAXPHYADDR,
    )
    out = []
    for level in range(levels, 0, -1):
        rsvd_table = reserved_mask(tdp_cpu, level, False)
        rsvd_large = reserved_mask(tdp_cpu, level, True)
        large_ok = level in (2, 3)  # 2 MiB and 1 GiB pages
        # the walk tests the PS-clear bits first, then a large page's own: they must include
        # them, and where PS maps no page they must be the same
        if rsvd_table & ~rsvd_large or (not large_ok and rsvd_large != rsvd_table):
            raise KvmmuError(f"TDP level {level}: reserved bits not as the walk expects: a bug")
        out.append(
            (
                levels + 1 - level,
                PAGE_SHIFT + 9 * (level - 1),
                rsvd_table | _P_BIT,
                rsvd_large if large_ok else 0,
            )
        )
    return tuple(out)


class HostPhysical(GuestMemory):
    """Host memory as the CPU reads it when it walks shadow or TDP tables: frame = pfn."""

    def __init__(self, host: HostMemory) -> None:
        super().__init__(0, host=host)
        self.views = host.views  # frame = pfn: the host's own views serve the walker

    def table_words(self, gfn: int, entry_size: int = 8) -> memoryview | None:
        """The host frame ``gfn`` (a pfn here) as entries."""
        return self.host.words(gfn, entry_size)


@dataclass(slots=True)
class Translation:
    """Where an access landed: ``gpa``, and whether it was emulated or became an MMIO exit."""

    gpa: int
    emulated: bool = False
    mmio: bool = False


class Tlb:
    """The guest-visible TLB: (page, level, access class) -> guest-physical page base.

    An entry records one kind of access that succeeded; another kind misses and walks, so the
    TLB never grants rights the tables did not. It holds ``capacity`` entries, oldest evicted.
    An entry may be smaller than the guest page it came from (a guest 2 MiB page mapped by
    4 KiB TDP pages or sptes: a "fractured" entry, SDM 4.10.2.3), so each entry also records the
    guest page's level, and INVLPG drops every entry of that guest page.
    """

    def __init__(self, capacity: int = TLB_ENTRIES) -> None:
        self.capacity = capacity
        self.flushes = 0  # how many flushes so far: what a TDP walk resumed after a fault checks
        # (page number at level, level, access class) -> (gpa base, global, guest page level)
        self.entries: dict[tuple[int, int, tuple[Access, bool, bool]], tuple[int, bool, int]] = {}
        self._per_level = [0, 0, 0, 0]  # entries of each size: a lookup skips absent sizes

    def lookup(self, gva: int, cls: tuple[Access, bool, bool]) -> int | None:
        """The gpa for ``gva`` if cached for this access class: a 4 KiB entry first, then
        2 MiB, then 1 GiB."""
        entries, per_level = self.entries, self._per_level
        for level, shift, offset_mask in _TLB_LEVELS:
            if per_level[level]:
                hit = entries.get((gva >> shift, level, cls))
                if hit is not None:
                    return hit[0] | (gva & offset_mask)
        return None

    def insert(
        self,
        gva: int,
        level: int,
        gpa: int,
        cls: tuple[Access, bool, bool],
        global_: bool,
        guest_level: int | None = None,
    ) -> None:
        """Cache a translation of a level-``level`` piece of a level-``guest_level`` guest page."""
        _, shift, offset_mask = _TLB_LEVELS[level - 1]
        entries, per_level = self.entries, self._per_level
        if len(entries) >= self.capacity:
            oldest = next(iter(entries))
            del entries[oldest]
            per_level[oldest[1]] -= 1
        key = (gva >> shift, level, cls)
        if key not in entries:
            per_level[level] += 1
        whole = level if guest_level is None or guest_level < level else guest_level
        entries[key] = (gpa & ~offset_mask, global_, whole)

    def invlpg(self, gva: int) -> None:
        """Drop every entry of the guest page holding ``gva``, global or not, fractured pieces
        included (INVLPG, SDM 4.10.4.1)."""
        doomed = []
        for key, (_, _, whole) in self.entries.items():
            page, level, _ = key
            first = page << (PAGE_SHIFT + 9 * (level - 1))  # an address inside the entry
            shift = PAGE_SHIFT + 9 * (whole - 1)
            if first >> shift == gva >> shift:
                doomed.append(key)
        for key in doomed:
            del self.entries[key]
            self._per_level[key[1]] -= 1

    def flush(self, *, keep_global: bool = False) -> None:
        """Drop all entries, or all but the global ones (a CR3 load with CR4.PGE).

        The guest-visible effect of ``kvm_vcpu_flush_tlb_all`` or of a CR3 load.
        """
        self.flushes += 1
        if keep_global:
            self.entries = {k: v for k, v in self.entries.items() if v[1]}
            self._per_level = [0, 0, 0, 0]
            for _, level, _ in self.entries:
                self._per_level[level] += 1
        else:
            self.entries.clear()
            self._per_level = [0, 0, 0, 0]

    def __len__(self) -> int:
        return len(self.entries)


class Vm:
    """A virtual machine: guest memory with its memslots, the MMU state, and the vCPUs.

    ``tdp`` selects two-dimensional paging (EPT/NPT) instead of shadow paging for every vCPU.
    ``n_max_mmu_pages`` is the shadow page budget (None: KVM's default from the memory size).
    ``huge_pages`` says whether the host backs guest memory with huge pages, so the MMU may
    map it with large sptes. ``allow_unsync`` lets leaf guest tables go unsync, as KVM does.
    ``prefetch`` maps the neighbours of each faulting spte too, as KVM does (False: as KVM with
    A/D bits unavailable). ``update_pte`` refreshes a leaf spte on an emulated guest PTE write
    as the 2010 kernel did; today's kernel (the default) zaps it.
    """

    def __init__(
        self,
        memory_size: int = 64 << 20,
        *,
        memory: GuestMemory | None = None,
        tdp: bool = False,
        n_max_mmu_pages: int | None = None,
        huge_pages: bool = True,
        allow_unsync: bool = True,
        prefetch: bool = True,
        update_pte: bool = False,
        maxphyaddr: int = 40,
        tdp_levels: int = 4,
    ) -> None:
        # Fix: Vm(tdp="yes"), allow_unsync="no", memory="mem" and n_max_mmu_pages=100.5 were
        # accepted or escaped as TypeError from inside the MMU.
        check_count("memory_size", memory_size)
        if memory is not None:
            check_instance("memory", memory, GuestMemory, "a GuestMemory or None", MemslotError)
        for name, flag in (
            ("tdp", tdp),
            ("huge_pages", huge_pages),
            ("allow_unsync", allow_unsync),
            ("prefetch", prefetch),
            ("update_pte", update_pte),
        ):
            check_bool(name, flag, ModeError)
        check_optional_count("n_max_mmu_pages", n_max_mmu_pages, error=MmuBudgetError)
        check_count("tdp_levels", tdp_levels, error=ModeError)
        self.memory = (
            memory if memory is not None else GuestMemory(memory_size, maxphyaddr=maxphyaddr)
        )
        if tdp_levels not in (4, 5):
            raise ModeError(f"tdp_levels must be 4 or 5 (EPT/NPT levels), got {tdp_levels}")
        self.tdp = tdp
        self.tdp_levels = tdp_levels
        self.mmu = Mmu(
            self.memory,
            n_max_mmu_pages=n_max_mmu_pages,
            huge_pages=huge_pages,
            allow_unsync=allow_unsync,
            tdp=tdp,
            prefetch=prefetch,
            update_pte=update_pte,
        )
        self.vcpus: list[Vcpu] = []
        self.host_view = HostPhysical(self.memory.host)

    def create_vcpu(self, cpu: CpuState | None = None) -> Vcpu:
        """Add a vCPU with registers ``cpu`` (default: paging off); ``kvm_vm_ioctl_create_vcpu``."""
        if cpu is not None:
            check_instance("cpu", cpu, CpuState, "a CpuState (see cpu_for_mode) or None", ModeError)
        vcpu = Vcpu(self, cpu if cpu is not None else CpuState(cr0=int(Cr0.PE)))
        self.vcpus.append(vcpu)
        self.mmu.tlb_flushers.append(vcpu.tlb.flush)
        return vcpu

    # -- memslots (KVM_SET_USER_MEMORY_REGION) and dirty logging ----------------------------

    def add_memslot(
        self, base_gfn: int, npages: int, flags: MemslotFlag = MemslotFlag.NONE
    ) -> Memslot:
        """Create a memslot (``KVM_MR_CREATE``). Nothing is zapped, but the memslot generation
        moves, so MMIO sptes cached for these gfns are stale at their next use."""
        slot = self.memory.slots.add(base_gfn, npages, flags)
        self._memslots_changed()
        return slot

    def delete_memslot(self, slot_id: int, *, zap_all: bool = True) -> None:
        """Delete a memslot (``KVM_MR_DELETE``): its translations are zapped."""
        check_bool("zap_all", zap_all, MemslotError)
        slot = self.memory.slots.get(slot_id)
        self.mmu.flush_shadow_memslot(slot, zap_all=zap_all)
        self.memory.slots.delete(slot_id)
        self._memslots_changed()

    def move_memslot(self, slot_id: int, new_base_gfn: int, *, zap_all: bool = True) -> None:
        """Move a memslot to new gfns (``KVM_MR_MOVE``): the old translations are zapped."""
        check_bool("zap_all", zap_all, MemslotError)
        check_int("new_base_gfn", new_base_gfn)
        slot = self.memory.slots.get(slot_id)
        self.mmu.flush_shadow_memslot(slot, zap_all=zap_all)
        self.memory.slots.move(slot_id, new_base_gfn)
        self._memslots_changed()

    def set_memslot_flags(self, slot_id: int, flags: MemslotFlag) -> None:
        """Change a slot's flags (``KVM_MR_FLAGS_ONLY``, ``kvm_mmu_slot_apply_flags``).

        Starting dirty logging write-protects the slot's sptes (and forbids large mappings from
        then on); stopping it drops small sptes that large pages could replace.
        """
        slot = self.memory.slots.get(slot_id)
        was_logging = slot.dirty_logging
        self.memory.slots.set_flags(slot_id, flags)
        if slot.dirty_logging and not was_logging:
            self.mmu.slot_remove_write_access(slot)
        elif was_logging and not slot.dirty_logging:
            self.mmu.zap_collapsible_sptes(slot)
        self._memslots_changed()

    def get_dirty_log(self, slot_id: int) -> list[int]:
        """Return the gfns written since the last call, clear the log, and write-protect those
        gfns again so the next write is seen (``KVM_GET_DIRTY_LOG``)."""
        slot = self.memory.slots.get(slot_id)
        if not slot.dirty_logging:
            raise MemslotError(
                f"slot {slot_id} is not logging dirty pages; set "
                "MemslotFlag.LOG_DIRTY_PAGES with set_memslot_flags first"
            )
        gfns = [slot.base_gfn + int(i) for i in slot.dirty_bitmap.nonzero()[0]]
        slot.dirty_bitmap[:] = False
        self.mmu.write_protect_dirty(gfns)
        return gfns

    def _memslots_changed(self) -> None:
        if not self.memory.slots.generation & S.MMIO_GEN_MASK:
            self.mmu.zap_all_fast()  # the generation wrapped: MMIO sptes could look current
        for vcpu in self.vcpus:
            vcpu.tlb.flush()

    @property
    def stats(self) -> MmuStats:
        """The MMU's counters (see :class:`kvmmu.kvm.stats.MmuStats`)."""
        return self.mmu.stats


class Vcpu:
    """One virtual CPU: guest registers, a TLB, and the roots of its MMU context."""

    def __init__(self, vm: Vm, cpu: CpuState) -> None:
        self.vm = vm
        self.mmu: Mmu = vm.mmu
        self.memory = vm.memory
        self.tlb = Tlb()
        self.root: MmuPage | None = None
        self.pae_root: list[MmuPage | None] | None = None
        self.prev_roots: list[MmuPage] = []  # KVM_MMU_NUM_PREV_ROOTS cached 64-bit roots
        self._hw_cpu: CpuState | None = None
        # (id of a state, CPL) -> (that state, it with that CPL): see _cpl_variant
        self._cpl_variants: dict[tuple[int, int], tuple[CpuState, CpuState]] = {}
        # the TDP walk's levels (_tdp_walk_levels) and the host frames it reads, as memoryviews
        self._tdp_levels = _tdp_walk_levels(vm.tdp_levels) if vm.tdp else ()
        self._tdp_leaf_level = self._tdp_levels[-1:]
        self._host_words = vm.host_view.views[8]
        # the TDP paging-structure cache: gpa >> 21 -> (its level-1 table's pfn, the AND of the
        # entries above), kept for the root and the TLB flush count they were read under
        self._tdp_pdes: dict[int, tuple[int, int]] = {}
        # the guest-physical mappings of the TLB for the guest's table reads: gpa >> 12 -> the
        # references a read of that frame counts; kept with _tdp_pdes
        self._tdp_reads: dict[int, int] = {}
        self._tdp_pdes_root = self._tdp_pdes_flushes = -1
        self.last_refs = 0  # memory references of the last hardware walk
        self._host_view = vm.host_view
        self.cpu = self._checked(cpu)

    # -- registers -------------------------------------------------------------------------

    def _checked(self, cpu: CpuState) -> CpuState:
        if not self.vm.tdp and cpu.cr4 & Cr4.PKE and cpu.efer & Efer.LMA:
            raise ModeError(
                "CR4.PKE needs TDP: KVM does not offer protection keys to shadow-paging guests "
                "(cpuid.c clears PKU when TDP is off); create the Vm with tdp=True"
            )
        return cpu

    @property
    def pge(self) -> bool:
        """CR4.PGE of the guest: global translations survive CR3 loads."""
        return self._pge

    @property
    def cpu(self) -> CpuState:
        """The guest's registers. Setting them also caches the paging mode they select and
        the register bits the access and fault paths test."""
        return self._cpu

    @cpu.setter
    def cpu(self, cpu: CpuState) -> None:
        self._cpu = cpu
        self._mode = cpu.mode
        self._spec = self._mode.spec
        self._pge = bool(cpu.cr4 & _CR4_PGE)
        self._cr0_wp = bool(cpu.cr0 & _CR0_WP)
        self._smep = bool(cpu.cr4 & _CR4_SMEP)
        self._nx_active = bool(cpu.efer & _EFER_NXE) and self._spec.entry_size == 8
        # gva >> (va_bits - 1) of a canonical upper-half address
        self._canonical_top = (1 << (65 - self._spec.va_bits)) - 1

    @property
    def mode(self) -> PagingMode:
        """The guest's paging mode (cached: computing it from the registers is not free)."""
        return self._mode

    @property
    def cr0_wp(self) -> bool:
        """CR0.WP of the guest."""
        return self._cr0_wp

    @property
    def smep(self) -> bool:
        """CR4.SMEP of the guest."""
        return self._smep

    @property
    def nx_active(self) -> bool:
        """True if the guest's XD bits mean something (EFER.NXE with 8-byte entries)."""
        return self._nx_active

    @property
    def max_huge_level(self) -> int:
        """The largest shadow page level the host tables allow: 1 GiB with 4/5-level tables."""
        return 3 if self.vm.tdp or self.mode in (PagingMode.LEVEL4, PagingMode.LEVEL5) else 2

    def set_registers(
        self,
        *,
        cr0: int | None = None,
        cr4: int | None = None,
        efer: int | None = None,
        cr3: int | None = None,
    ) -> GeneralProtection | None:
        """Write CR0/CR4/EFER (and CR3) together, as a guest switching modes does.

        What ``kvm_post_set_cr0``, ``kvm_post_set_cr4`` and ``kvm_set_efer`` do after the write:
        a change of a role bit (CR0.PG/WP, CR4.PSE/PAE/LA57/SMEP/SMAP/PKE, EFER.LME/NX) resets
        the MMU context (``kvm_mmu_reset_context``), except CR0.WP alone under TDP, which only
        re-inits it; a change of CR4.PGE flushes the guest's TLB (``KVM_REQ_TLB_FLUSH_GUEST``).
        Entering PAE mode loads the PDPTEs; a bad one is a #GP and leaves the registers
        unchanged.
        """
        old = self.cpu
        new = replace(
            old,
            cr0=old.cr0 if cr0 is None else cr0,
            cr4=old.cr4 if cr4 is None else cr4,
            efer=old.efer if efer is None else efer,
            cr3=old.cr3 if cr3 is None else cr3,
            pdptes=old.pdptes or (0, 0, 0, 0),
        )
        loaded = load_cr3(self.memory, new, new.cr3)
        if isinstance(loaded, GeneralProtection):
            return loaded
        self.cpu = self._checked(loaded)
        self._hw_cpu = None
        self._post_set_registers(old, self.cpu)
        return None

    def _post_set_registers(self, old: CpuState, new: CpuState) -> None:
        """The MMU side of a register write (``kvm_post_set_cr0``, ``kvm_post_set_cr4``,
        ``kvm_set_efer``), then the CR3 part as ``kvm_set_cr3`` does it."""
        cr0_diff, cr4_diff = old.cr0 ^ new.cr0, old.cr4 ^ new.cr4
        reset = bool(
            cr0_diff & CR0_ROLE_BITS
            or cr4_diff & CR4_ROLE_BITS
            or (old.efer ^ new.efer) & EFER_ROLE_BITS
        )
        wp_only = cr0_diff == Cr0.WP and not cr4_diff and old.efer == new.efer
        if wp_only and (not new.cr0 & Cr0.PG or self.vm.tdp):
            # CR0.WP alone: nothing to do with paging off; with TDP, WP changes no spte, so
            # kvm_init_mmu runs but the roots stay. kvmmu's TLB caches outcomes that depend on
            # WP (the hardware applies WP at each use), so it is flushed instead.
            reset = False
            self.tlb.flush()
        if reset:
            if cr4_diff & Cr4.PSE and not self.vm.tdp:
                self.mmu.zap_pse_dependent_pages()
            self._reset_context()
        elif cr4_diff & Cr4.PGE:
            self.flush_tlb_guest()
        if reset or (new.cr3 == old.cr3 and new.pdptes == old.pdptes):
            return
        if not self.vm.tdp:
            self._new_pgd()
        self.tlb.flush(keep_global=self.pge)
        self.reload()

    @property
    def cpu_role(self) -> CpuRole:
        """The role of the guest's paging (``vcpu->arch.mmu->cpu_role``)."""
        return calc_cpu_role(self.cpu.cr0, self.cpu.cr4, self.cpu.efer)

    def flush_tlb_guest(self) -> None:
        """A TLB flush on the guest's behalf: a CR4.PGE toggle, INVPCID all-context
        (``kvm_vcpu_flush_tlb_guest``). Under shadow paging the current roots are synced and
        the previous roots with unsync pages below are freed (``kvm_mmu_sync_roots``,
        ``kvm_mmu_sync_prev_roots``)."""
        self.mmu.stats.tlb_flush += 1
        if not self.vm.tdp:
            self.reload()
            sync_roots(self)
            for sp in [sp for sp in self.prev_roots if sp.unsync or sp.unsync_children]:
                self.prev_roots.remove(sp)  # kvm_mmu_sync_prev_roots
                self.mmu.put_root(sp)
        self.tlb.flush()

    def _reset_context(self) -> None:
        """``kvm_mmu_reset_context``: drop every root, cached ones too, and flush the TLB."""
        self._free_roots()
        for sp in self.prev_roots:
            self.mmu.put_root(sp)
        self.prev_roots = []
        self.tlb.flush()

    def set_cr3(self, cr3: int) -> GeneralProtection | None:
        """MOV to CR3 (``kvm_set_cr3`` -> ``kvm_mmu_new_pgd``): new root, TLB flushed.

        Global translations survive when CR4.PGE is set. In PAE mode the PDPTEs are loaded
        now; a reserved bit in one is a #GP.
        """
        loaded = load_cr3(self.memory, self.cpu, cr3)
        if isinstance(loaded, GeneralProtection):
            return loaded
        same = loaded.cr3 == self.cpu.cr3 and self.mode is not PagingMode.PAE
        self.cpu = loaded
        if not self.vm.tdp and not same:
            self._new_pgd()
        self.tlb.flush(keep_global=self.pge)
        self._hw_cpu = None
        self.reload()
        sync_roots(self)  # KVM_REQ_MMU_SYNC: the guest flushed its TLB
        return None

    def _new_pgd(self) -> None:
        """Switch roots for a new CR3, reusing a cached one if it fits (``kvm_mmu_new_pgd``).

        Only 4/5-level roots are cached (``fast_pgd_switch``); PAE roots are rebuilt. The current
        root moves to the front of the cache; the oldest falls out when nothing matched.
        """
        if self.root is None or self.mode not in (PagingMode.LEVEL4, PagingMode.LEVEL5):
            self._free_roots()
            return
        role = shadow_root_role(self.cpu.cr0, self.cpu.cr4, self.cpu.efer)
        gfn = self.cpu.root_gpa >> PAGE_SHIFT

        def usable(sp: MmuPage) -> bool:
            return sp.gfn == gfn and sp.role == role and not self.mmu.is_obsolete(sp)

        if usable(self.root):
            self.root.write_flooding_count = 0
            return
        cache = [self.root, *self.prev_roots]
        hit = next((sp for sp in self.prev_roots if usable(sp)), None)
        if hit is not None:
            self.mmu.stats.root_cache_hits += 1
            cache.remove(hit)
            self.root = hit
        else:
            self.mmu.stats.root_cache_misses += 1
            self.root = None
        while len(cache) > KVM_MMU_NUM_PREV_ROOTS:
            self.mmu.put_root(cache.pop())
        self.prev_roots = cache
        if self.root is not None:
            self.root.write_flooding_count = 0  # kvm_mmu_new_pgd: the guest uses this root

    def set_cpl(self, cpl: int) -> None:
        """Change the privilege level (no TLB effect).

        KVM reads the CPL from the segment registers (``kvm_x86_get_cpl``). Only the CPL
        changes: the paging mode and the register bits cached from CR0/CR4/EFER stay, and the
        registers of the hardware walk get the same CPL (:meth:`_cpl_variant`).
        """
        if cpl.__class__ is not int or not 0 <= cpl <= 3:  # one cheap test
            replace(self._cpu, cpl=cpl)  # CpuState names what is wrong
        self._cpu = self._cpl_variant(self._cpu, cpl)
        hw = self._hw_cpu
        self._hw_cpu = None if hw is None else self._cpl_variant(hw, cpl)

    def _cpl_variant(self, state: CpuState, cpl: int) -> CpuState:
        """``state`` with CPL ``cpl``, built once: a switch back finds the state it came from.

        No kernel counterpart (KVM reads the CPL from the segment registers on each use).
        """
        cache = self._cpl_variants
        hit = cache.get((id(state), cpl))
        if hit is not None and hit[0] is state:  # the value holds the key's object alive
            return hit[1]
        new = replace(state, cpl=cpl)
        if len(cache) >= 32:
            cache.clear()
        cache[(id(state), cpl)] = (state, new)
        cache[(id(new), state.cpl)] = (new, state)
        return new

    def set_ac(self, ac: bool) -> None:
        """Set or clear RFLAGS.AC (SMAP override for explicit supervisor accesses).

        Kernel counterpart: ``kvm_set_rflags``.
        """
        check_bool("ac", ac, ModeError)
        rflags = (self.cpu.rflags | Rflags.AC) if ac else (self.cpu.rflags & ~Rflags.AC)
        self.cpu = replace(self.cpu, rflags=int(rflags))
        self._hw_cpu = None

    def set_pkru(self, pkru: int) -> None:
        """WRPKRU. The CPU checks PKRU on every access, TLB hits included; kvmmu flushes its TLB
        instead of storing keys in it, which gives the same outcomes.

        The guest's WRPKRU (``vcpu->arch.pkru``).
        """
        self.cpu = replace(self.cpu, pkru=pkru)
        self.tlb.flush()

    def invlpg(self, gva: int) -> None:
        """INVLPG: drop the TLB entries for ``gva`` (``kvm_mmu_invlpg``); sync comes with unsync."""
        check_int("gva", gva)
        self.mmu.stats.invlpg += 1
        self.tlb.invlpg(gva)
        invlpg_sync(self, gva)

    # -- roots -----------------------------------------------------------------------------

    def _roots(self) -> list[MmuPage]:
        if self.root is not None:
            return [self.root]
        return [sp for sp in self.pae_root or () if sp is not None]

    def current_roots(self) -> list[MmuPage]:
        """The roots in use: one page, or up to four PAE page directories.

        Kernel counterpart: ``mmu->root`` or ``mmu->pae_root``.
        """
        return self._roots()

    def all_roots(self) -> list[MmuPage]:
        """The roots in use and the cached previous roots.

        Kernel counterpart: ``mmu->root`` (or ``pae_root``) and ``mmu->prev_roots``.
        """
        return self._roots() + list(self.prev_roots)

    def _roots_valid(self) -> bool:
        roots = self._roots()
        return bool(roots) and not any(self.mmu.is_obsolete(sp) for sp in roots)

    def _free_roots(self) -> None:
        """Release this vCPU's roots (``kvm_mmu_free_roots``)."""
        for sp in self._roots():
            self.mmu.put_root(sp)
        self.root, self.pae_root = None, None
        self._hw_cpu = None

    def reload(self) -> None:
        """Make sure valid roots are loaded (``kvm_mmu_reload`` / ``kvm_mmu_load``)."""
        root = self.root
        if (
            root is not None
            and not root.role.invalid
            and root.mmu_valid_gen == self.mmu.mmu_valid_gen
        ):
            return  # the common case, tested without building the list of roots
        if self._roots_valid():
            return
        self._free_roots()
        for sp in [sp for sp in self.prev_roots if self.mmu.is_obsolete(sp)]:
            self.prev_roots.remove(sp)  # kvm_mmu_free_obsolete_roots
            self.mmu.put_root(sp)
        self.mmu.make_pages_available()
        mode = self.mode
        if self.vm.tdp:
            self.root = self._get_root(0, tdp_root_role(self.vm.tdp_levels))
        elif mode in (PagingMode.LEVEL4, PagingMode.LEVEL5):
            role = shadow_root_role(self.cpu.cr0, self.cpu.cr4, self.cpu.efer)
            self.root = self._get_root(self.cpu.root_gpa >> PAGE_SHIFT, role)
        else:
            self.pae_root = self._alloc_pae_roots(mode)
        sync_roots(self)

    def _get_root(self, gfn: int, role: MmuPageRole) -> MmuPage:
        sp = get_shadow_page(self, gfn, role)
        sp.root_count += 1
        return sp

    def _alloc_pae_roots(self, mode: PagingMode) -> list[MmuPage | None]:
        """Four PAE page directories under a PDPT of KVM's (``mmu_alloc_shadow_roots``)."""
        base = replace(shadow_root_role(self.cpu.cr0, self.cpu.cr4, self.cpu.efer), level=2)
        roots: list[MmuPage | None] = []
        for i in range(4):
            if mode is PagingMode.NONE:
                roots.append(self._get_root(i << 18, base))  # 1 GiB of guest-physical each
            elif mode is PagingMode.PAE:
                assert self.cpu.pdptes is not None
                pdpte = self.cpu.pdptes[i]
                gfn = (pdpte & ((1 << 52) - 1) & ~0xFFF) >> PAGE_SHIFT
                roots.append(self._get_root(gfn, base) if pdpte & Pte.PRESENT else None)
            else:  # 32-bit guest: each PAE directory shadows a quarter of the guest's directory
                roots.append(
                    self._get_root(self.cpu.root_gpa >> PAGE_SHIFT, replace(base, quadrant=i))
                )
        return roots

    def hardware_cpu(self) -> CpuState:
        """The registers the CPU runs with while it walks the shadow tables.

        CR0.WP is always 1 under shadow paging and EFER.NX always on; SMEP and SMAP follow the
        guest while its paging is on. 4/5-level guests get tables of their own depth, every
        other guest KVM's PAE tables.
        """
        self.reload()
        if self._hw_cpu is None:
            guest = self.cpu
            paging = guest.mode is not PagingMode.NONE
            cr4 = int(Cr4.PAE) | (int(guest.cr4 & (Cr4.SMEP | Cr4.SMAP)) if paging else 0)
            cr0 = int(Cr0.PE | Cr0.PG | Cr0.WP)
            if self.root is not None:
                efer = int(Efer.LME | Efer.LMA | Efer.NXE)
                if self.root.level == 5:
                    cr4 |= Cr4.LA57
                self._hw_cpu = CpuState(
                    cr0,
                    self.root.pfn << PAGE_SHIFT,
                    cr4,
                    efer,
                    guest.cpl,
                    guest.rflags,
                    0,
                    S.HOST_MAXPHYADDR,
                )
            else:
                assert self.pae_root is not None
                pdptes = tuple(
                    (sp.pfn << PAGE_SHIFT) | 1 if sp is not None else 0 for sp in self.pae_root
                )
                self._hw_cpu = CpuState(
                    cr0,
                    0,
                    cr4,
                    int(Efer.NXE),
                    guest.cpl,
                    guest.rflags,
                    0,
                    S.HOST_MAXPHYADDR,
                    True,
                    (pdptes[0], pdptes[1], pdptes[2], pdptes[3]),
                )
        return self._hw_cpu

    # -- one access ------------------------------------------------------------------------

    def access(
        self,
        gva: int,
        kind: Access = Access.READ,
        cpl: int | None = None,
        *,
        implicit: bool = False,
    ) -> Outcome:
        """One guest access: the gpa it reaches, or the fault the guest receives.

        ``cpl`` overrides the vCPU's privilege level for this access only.
        """
        result = self._translate(gva, kind, cpl, implicit)
        return result.gpa if isinstance(result, Translation) else result

    def translate(
        self,
        gva: int,
        kind: Access = Access.READ,
        cpl: int | None = None,
        *,
        implicit: bool = False,
    ) -> Translation | PageFault | GeneralProtection:
        """Like :meth:`access`, but says whether the access was emulated or an MMIO exit.

        What ``kvm_mmu_page_fault`` tells its caller: fixed, ``RET_PF_EMULATE``, or MMIO.
        """
        result = self._translate(gva, kind, cpl, implicit)
        return Translation(result) if isinstance(result, int) else result

    def _translate(
        self, gva: int, kind: Access, cpl: int | None, implicit: bool
    ) -> int | Translation | PageFault | GeneralProtection:
        """:meth:`translate`, with an access that simply landed given as its gpa (an int): the
        TLB hit and the hardware walk that succeeds build no :class:`Translation`."""
        if kind.__class__ is not Access or implicit.__class__ is not bool:  # one cheap test
            check_instance("kind", kind, Access, "Access.READ, Access.WRITE or Access.FETCH")
            check_bool("implicit", implicit)
        cpu = self._cpu
        if cpl is not None and cpl != cpu.cpl:
            saved, saved_hw = cpu, self._hw_cpu
            self.set_cpl(cpl)
            switched, switched_hw = self._cpu, self._hw_cpu
            try:
                return self._translate(gva, kind, None, implicit)
            finally:
                # back to the saved CPL; the hardware registers too, unless the roots changed
                if self._cpu is switched:
                    self._cpu = saved  # only the CPL differs: the cached register bits hold
                else:
                    self.cpu = saved
                hw = self._hw_cpu
                if hw is not None and hw is switched_hw:
                    self._hw_cpu = saved_hw
                else:
                    self._hw_cpu = None if hw is None else self._cpl_variant(hw, saved.cpl)
        spec = self._spec
        if gva.__class__ is not int and (isinstance(gva, bool) or not isinstance(gva, int)):
            raise AddressError(f"gva={gva!r} must be a 64-bit unsigned int")
        if gva < 0 or gva >> 64:
            raise AddressError(f"gva={gva!r} must be a 64-bit unsigned int")
        if spec.va_bits == 32:
            if gva >> 32:
                raise AddressError(
                    f"gva={gva:#x} does not fit in 32 bits in {spec.mode.value} mode"
                )
        elif (top := gva >> (spec.va_bits - 1)) and top != self._canonical_top:  # _is_canonical
            return GeneralProtection(
                gva, f"{gva:#x} is not canonical for {spec.va_bits}-bit addresses"
            )
        cls = (kind, cpu.cpl == 3 and not implicit, implicit or not cpu.rflags & _RFLAGS_AC)
        stats = self.mmu.stats
        hit = self.tlb.lookup(gva, cls)
        if hit is not None:
            stats.tlb_hits += 1
            return hit
        stats.tlb_misses += 1
        step_once = self._tdp_step if self.vm.tdp else self._shadow_step
        for _ in range(16):
            step = step_once(gva, kind, implicit, cls)
            if step is not None:
                return step
        raise KvmmuError(
            f"the MMU made no progress on {gva:#x} ({kind.value}): this is a kvmmu bug"
        )

    def _shadow_step(
        self, gva: int, kind: Access, implicit: bool, cls: tuple[Access, bool, bool]
    ) -> int | Translation | PageFault | GeneralProtection | None:
        """One try of the hardware walk over the shadow tables; None means "retry", an int the
        gpa of an access that landed."""
        hw_cpu = self._hw_cpu
        root = self.root
        if (  # hardware_cpu(), tested inline: the roots are loaded and valid
            hw_cpu is None
            or root is None
            or root.role.invalid
            or root.mmu_valid_gen != self.mmu.mmu_valid_gen
        ):
            hw_cpu = self.hardware_cpu()
        # translate() checked gva for this mode; the hardware tables are at least as wide
        hw = walk_unchecked(self._host_view, hw_cpu, gva, kind, implicit, False)
        if type(hw) is WalkResult:  # narrows for mypy as cheaply as __class__ does
            self.last_refs = hw.refs
            level = hw.level
            sp = self.mmu.by_pfn[hw.leaf_table_gpa() >> PAGE_SHIFT]  # the leaf spte's page
            index = (gva >> (PAGE_SHIFT + 9 * (level - 1))) & 511
            spte = hw.pte
            if not spte & S.ACCESSED:
                self._set_spte_accessed(sp, index, spte)
            gpa = self._gpa_of(sp, index, level, gva)
            # below a guest large page FNAME(fetch) built direct pages: the guest's page is
            # larger than the leaf spte's
            guest_level = self._guest_page_level(hw) if sp.role.direct else level
            self.tlb.insert(gva, level, gpa, cls, bool(spte & _PTE_GLOBAL), guest_level)
            return gpa
        if hw.__class__ is GeneralProtection:
            assert isinstance(hw, GeneralProtection)
            return hw
        assert isinstance(hw, PageFault)
        error_code = int(hw.error_code)  # a plain int: PfErr arithmetic runs Python code
        trace = self.mmu.trace
        if trace.enabled:
            trace.emit("kvm_page_fault", fault_address=gva, error_code=error_code)
        if error_code & _PFERR_RSVD:
            mmio = self._mmio_fault(gva, kind, implicit, hw)
            if mmio is not None:
                return mmio
        if self._mode is _NONPAGING:
            # nonpaging_page_fault: with paging off gva == gpa, mapped by direct pages only. A
            # write to a frame that still holds a shadowed table (the guest's former page
            # tables) is emulated, as with paging on (RET_PF_EMULATE from direct_map).
            outcome = direct_page_fault(self, gva, kind)
            if outcome is FaultOutcome.MMIO:
                return Translation(gva, mmio=True)
            if outcome is _EMULATE:
                return Translation(gva, emulated=True)
            return None
        result = page_fault(self, gva, kind, implicit=implicit, error_code=error_code)
        outcome = result.outcome
        if outcome is _FIXED or outcome is _SPURIOUS:
            return None
        if outcome is FaultOutcome.GUEST:
            return result.fault
        if outcome is FaultOutcome.EMULATE:
            return Translation(result.gpa, emulated=True)
        return Translation(result.gpa, mmio=True)

    def _set_spte_accessed(self, sp: MmuPage, index: int, spte: int) -> None:
        """The CPU sets the accessed bit of the leaf spte it used (SDM 4.8): spte ``index`` of
        ``sp``, which read ``spte``. Non-leaf sptes are made accessed, leaf sptes too except
        prefetched ones (``mark_spte_for_access_track``), so this is the first use of a
        prefetched spte; the D bit comes with W in every spte."""
        sp.spt[index] = spte | S.ACCESSED

    def _guest_page_level(self, hw: WalkResult) -> int:
        """The level of the guest page behind a shadow walk: one above the highest direct page
        on the path when ``FNAME(fetch)`` backed a guest large page with smaller sptes."""
        if self._mode is PagingMode.NONE:
            return hw.level
        by_pfn = self.mmu.by_pfn
        tables = hw.table_gpas()  # the shadow tables the walk read, root first
        level = hw.level + len(tables) - 1  # the level of the root
        for table in tables:
            sp = by_pfn.get(table >> PAGE_SHIFT)
            if sp is not None and sp.role.direct:
                return level + 1
            level -= 1
        return hw.level

    def _gpa_of(self, sp: MmuPage, index: int, level: int, gva: int) -> int:
        """The gpa behind a hardware walk that used leaf spte ``index`` of ``sp`` at ``level``:
        the page's ``get_gfn`` (the rmap view)."""
        gfn = sp.get_gfn(index) + ((gva >> PAGE_SHIFT) & ((1 << (9 * (level - 1))) - 1))
        return (gfn << PAGE_SHIFT) | (gva & 0xFFF)

    def _mmio_fault(
        self, gva: int, kind: Access, implicit: bool, hw: PageFault
    ) -> Translation | PageFault | None:
        """A reserved-bit fault on an MMIO spte (``handle_mmio_page_fault``).

        A stale generation means a memslot changed: fall back to the full fault path. Otherwise
        KVM caches the spte's gfn and rights (``vcpu_cache_mmio_info``) and the emulator uses
        them when they permit the access (``vcpu_mmio_gva_to_gpa``): the guest reaches the gfn
        the spte names, like a TLB entry that stays valid until the guest flushes it, even if
        the guest PTE was re-pointed meanwhile. When they do not, the emulator walks the guest
        tables itself: a guest fault, an MMIO exit, or (the PTE now names RAM) an emulated
        access to that RAM.
        """
        spte = hw.pte
        if not S.is_mmio(spte):
            raise KvmmuError(f"reserved-bit fault on a non-MMIO spte {spte:#x}: a kvmmu bug")
        gfn = S.mmio_gfn(spte)
        self.mmu.trace.emit("handle_mmio_page_fault", addr=gva, gfn=gfn)
        if S.mmio_generation(spte) != self.memory.slots.generation & S.MMIO_GEN_MASK:
            self.mmu.trace.emit("check_mmio_spte", spte=spte, stale=True)
            return None
        if self._mmio_access_permitted(spte, kind, implicit):
            self.mmu.stats.mmio_exits += 1
            return Translation((gfn << PAGE_SHIFT) | (gva & 0xFFF), mmio=True)
        target = walk(self.memory, self.cpu, gva, kind, implicit=implicit)
        if isinstance(target, PageFault):
            self.mmu.stats.pf_guest += 1
            return target
        assert isinstance(target, WalkResult)
        if self.memory.slots.find(target.gfn) is not None:
            return Translation(target.gpa, emulated=True)
        self.mmu.stats.mmio_exits += 1
        return Translation(target.gpa, mmio=True)

    def _mmio_access_permitted(self, spte: int, kind: Access, implicit: bool) -> bool:
        """May the cached MMIO rights serve this access? (``permission_fault`` on
        ``vcpu->arch.mmio_access`` in ``vcpu_mmio_gva_to_gpa``). An MMIO spte remembers only
        W and U; an instruction fetch always takes the emulator's own walk."""
        if kind is Access.FETCH:
            return False
        cpu = self.cpu
        user = cpu.cpl == 3 and not implicit
        if user and not spte & S.USER:
            return False
        smap_blocks = implicit or not cpu.rflags & Rflags.AC
        if not user and spte & S.USER and cpu.cr4 & Cr4.SMAP and smap_blocks:
            return False
        wp_ignored = not user and not self.cr0_wp  # SDM 4.6: WP=0 lets supervisor writes in
        return kind is not Access.WRITE or bool(spte & S.WRITABLE) or wp_ignored

    def _tdp_step(
        self, gva: int, kind: Access, implicit: bool, cls: tuple[Access, bool, bool]
    ) -> Translation | PageFault | GeneralProtection | None:
        """One try of a two-dimensional walk; None means it must start again.

        Each guest-table entry the guest's walk reads, then the final gpa, goes through the TDP
        tables (:meth:`_tdp_reference`); the guest's A/D bits are set once all the table
        references went through, as the hardware sets them after a successful walk.
        """
        # translate() checked gva for the guest's mode
        probe = walk_unchecked(self.memory, self._cpu, gva, kind, implicit, False)
        if probe.__class__ is GeneralProtection:
            assert isinstance(probe, GeneralProtection)
            return probe
        assert isinstance(probe, (WalkResult, PageFault))
        refs = 0
        entry_gpas = entries = probe.entry_gpas()
        if self._mode is _PAE:
            entries = entries[1:]  # the PDPTEs were read at CR3 load
        # the TDP root (the EPTP), loaded at the first TDP walk (kvm_mmu_reload)
        root = self._tdp_root() if entries else -1
        reads = self._tdp_reads
        for entry_gpa in entries:
            tdp = reads.get(entry_gpa >> PAGE_SHIFT)
            if tdp is None:  # not translated since the last flush
                tdp = self._tdp_translate(entry_gpa, _READ, root)
                if not tdp:  # a TDP fault: 0 once fixed, None if the walk must start again
                    tdp = self._tdp_reference(entry_gpa, _READ, root, tdp)
                    if tdp is None:
                        return None
                if tdp > 0:  # a translation, not an MMIO exit: kept
                    if len(reads) >= _TDP_PDE_CACHE:
                        reads.clear()
                    reads[entry_gpa >> PAGE_SHIFT] = tdp
            refs += tdp + 1
        if probe.__class__ is PageFault:
            assert isinstance(probe, PageFault)
            return probe  # delivered by the hardware, no exit
        assert isinstance(probe, WalkResult)
        update_accessed_dirty(self.memory, probe, kind is _WRITE, entry_gpas)
        if root < 0:
            root = self._tdp_root()
        tdp = self._tdp_translate(probe.gpa, kind, root)
        if not tdp:
            tdp = self._tdp_reference(probe.gpa, kind, root, tdp)
            if tdp is None:
                return None
        if tdp < 0:
            return Translation(probe.gpa, mmio=True)
        self.last_refs = refs + tdp
        # the TLB holds the smaller of the guest page and the TDP page that maps it
        guest_level = probe.level or 1
        tdp_level = self.vm.tdp_levels + 1 - tdp
        self.tlb.insert(
            gva,
            guest_level if guest_level < tdp_level else tdp_level,
            probe.gpa,
            cls,
            bool(probe.pte & _PTE_GLOBAL) and self._pge,
            guest_level=guest_level,
        )
        return Translation(probe.gpa)

    def _tdp_reference(self, gpa: int, kind: Access, root: int, first: int | None) -> int | None:
        """One guest-physical reference of a two-dimensional walk whose first
        :meth:`_tdp_translate` took a TDP fault (``first``: 0 if it fixed it without a flush,
        None if not): the same reference again; None: start the walk again.

        After the exit the CPU restarts the access, and the translations it made before the
        fault may serve it from its TLB (guest-physical mappings, SDM 28.4.1) until a flush;
        the guest's tables did not change meanwhile, since only the MMU ran. So kvmmu goes on
        from the reference that faulted, unless the fault handler flushed TLBs (it zapped or
        write-protected sptes): then the walk starts again from the root. The outcome, the
        faults taken and the references counted are those of a full restart.
        """
        if first is None:
            return None
        for _ in range(3):  # a reference that keeps faulting goes back to translate()'s limit
            tdp = self._tdp_translate(gpa, kind, root)
            if tdp is None:
                return None
            if tdp:
                return tdp
        return None

    def _tdp_root(self) -> int:
        """The pfn of the TDP root, the roots loaded first (``kvm_mmu_reload``): what the
        hardware finds in the EPTP (SDM 24.6.11) or nCR3."""
        self.reload()
        root = shadow_walk_init(self, 0)[0].pfn
        flushes = self.tlb.flushes
        if root != self._tdp_pdes_root or flushes != self._tdp_pdes_flushes:
            self._tdp_forget()  # another root, or a flush (INVEPT): nothing kept holds
            self._tdp_pdes_root, self._tdp_pdes_flushes = root, flushes
        return root

    def _tdp_forget(self) -> None:
        """Drop what the TDP walks kept: the paths to level-1 tables and the guest-physical
        mappings of the guest's tables (INVEPT, SDM 28.4.3)."""
        self._tdp_pdes.clear()
        self._tdp_reads.clear()

    def _tdp_translate(self, gpa: int, kind: Access, root: int) -> int | None:
        """Walk the TDP tables from root pfn ``root`` for ``gpa``, as the CPU walks EPT tables
        (SDM 28.3.2, the EPT translation mechanism): the references made, -1 for an MMIO exit,
        or after a TDP fault it fixed 0 (the same reference may go on) or None (the handler
        flushed TLBs: the walk starts again).

        kvmmu's TDP tables hold sptes in the 64-bit paging format, so the rules are those of a
        supervisor walk with CR0.WP=1 and EFER.NXE (the ``tdp_cpu`` registers of
        :func:`_tdp_walk_levels`): a missing table or a clear P bit is a violation, a reserved
        bit (an MMIO spte among them) a misconfiguration, and a write needs W at every level;
        U/S, SMEP, SMAP and protection keys play no part. The leaf spte gets its A bit, as in
        :meth:`_set_spte_accessed`.

        The entries above a level-1 TDP table are read once for each 2 MiB of guest-physical
        space and kept (``_tdp_pdes``), as the CPU keeps them in its paging-structure caches
        (SDM 28.4.3) until an INVEPT: kvmmu drops them at every TLB flush and when the root
        changes (:meth:`_tdp_root`), which is when KVM invalidates them
        (``kvm_flush_remote_tlbs`` after a zap or a lost right, a new root at ``kvm_mmu_load``).
        Between flushes the MMU only adds sptes to the TDP tables, so a kept path stays right; a
        TDP fault that flushes drops them in the middle of a walk, which then starts again. The
        leaf entry is read every time (it is what faults and takes the A bit), and the entries
        above are counted in the references all the same.
        """
        write = kind is _WRITE
        views = self._host_words
        pdes = self._tdp_pdes
        pde = pdes.get(gpa >> _PDE_SHIFT)
        if pde is not None:  # the entries above the leaf, as an earlier reference read them
            table, writable = pde
            words = views.get(table)
            if words is not None:  # the common case, the loop below for the leaf alone
                refs, _, present, _ = self._tdp_leaf_level[0]
                index = (gpa >> PAGE_SHIFT) & 511
                pte = words[index]
                if pte & present == _P_BIT and (not write or writable & pte & _W_BIT):
                    if not pte & S.ACCESSED:  # _set_spte_accessed
                        words[index] = pte | S.ACCESSED
                    return refs
            levels = self._tdp_leaf_level  # a fault to take: the loop says which
        else:
            table, writable, levels = root, -1, self._tdp_levels
        refs = pte = index = 0
        words = _ZERO_WORDS
        for refs, shift, present, rsvd_large in levels:  # noqa: B007 (read after the loop)
            found = views.get(table)
            if found is None:
                found = self._host_view.table_words(table)
                if found is None:  # outside host memory: not present (no entry read)
                    return self._tdp_violation(gpa, kind, _W_BIT if write else 0, 0)
            words = found
            index = (gpa >> shift) & 511
            pte = words[index]
            if pte & present != _P_BIT:  # P clear or a reserved bit set (PS clear)
                if not pte & _P_BIT:  # an EPT violation
                    return self._tdp_violation(gpa, kind, _W_BIT if write else 0, pte)
                return self._tdp_violation(gpa, kind, _P_RSVD_W if write else _P_RSVD, pte)
            writable &= pte  # W survives only if every level grants it
            if rsvd_large and pte & _PS_BIT:  # a large page
                if pte & rsvd_large:  # its low address bits are reserved: a misconfiguration
                    return self._tdp_violation(gpa, kind, _P_RSVD_W if write else _P_RSVD, pte)
                break  # otherwise the loop ends with the level-1 entry
            table = (pte & _ADDR_MASK) >> PAGE_SHIFT
            if shift == _PDE_SHIFT:  # the path to this 2 MiB's level-1 table, kept
                if len(pdes) >= _TDP_PDE_CACHE:
                    pdes.clear()  # a small cache, as the CPU's; emptied, never half-kept
                pdes[gpa >> _PDE_SHIFT] = (table, writable)
        if write and not writable & _W_BIT:
            return self._tdp_violation(gpa, kind, _P_BIT | _W_BIT, pte)
        if not pte & S.ACCESSED:  # _set_spte_accessed: words is the leaf page's spt
            words[index] = pte | S.ACCESSED
        return refs

    def _tdp_violation(self, gpa: int, kind: Access, error_code: int, spte: int) -> int | None:
        """A TDP walk for ``gpa`` failed on ``spte`` with page-fault ``error_code``: -1 for an
        MMIO exit (``handle_mmio_page_fault`` on a current MMIO spte, or ``direct_page_fault``
        finding no memslot), 0 once ``direct_page_fault`` fixed the tables, None if it also
        flushed TLBs."""
        trace = self.mmu.trace
        if trace.enabled:
            trace.emit("kvm_page_fault", fault_address=gpa, error_code=error_code)
        if (
            error_code & _PFERR_RSVD
            and S.is_mmio(spte)
            and S.mmio_generation(spte) == self.memory.slots.generation & S.MMIO_GEN_MASK
        ):
            self.mmu.stats.mmio_exits += 1
            return -1
        flushes = self.tlb.flushes
        outcome = direct_page_fault(self, gpa, kind)
        flushed = self.tlb.flushes != flushes
        if flushed:
            self._tdp_forget()  # it zapped or replaced sptes: what was kept may be gone
        if outcome is FaultOutcome.MMIO:
            return -1
        return None if flushed else 0

    # -- loads and stores ------------------------------------------------------------------

    def read(
        self, gva: int, size: int = 8, cpl: int | None = None
    ) -> int | PageFault | GeneralProtection:
        """A guest load of ``size`` bytes; an MMIO read returns all ones (no device behind it)."""
        check_int("gva", gva)
        _check_in_page(gva, size)
        t = self.translate(gva, Access.READ, cpl)
        if not isinstance(t, Translation):
            return t
        if t.mmio:
            return (1 << (8 * size)) - 1
        return self.memory.read(t.gpa, size)

    def write(
        self, gva: int, value: int, size: int = 8, cpl: int | None = None
    ) -> PageFault | GeneralProtection | None:
        """A guest store; a store to a shadowed guest table is emulated and tracked by the MMU.

        Emulated stores go through ``emulator_write_phys`` and ``kvm_page_track_write``.
        """
        check_int("gva", gva)
        _check_in_page(gva, size)
        t = self.translate(gva, Access.WRITE, cpl)
        if not isinstance(t, Translation):
            return t
        if t.mmio:
            return None
        self.memory.write(t.gpa, value, size)
        if t.emulated:
            self.memory.mark_page_dirty(t.gpa >> PAGE_SHIFT)
            track_write(self, t.gpa, size)
        return None


def _check_in_page(gva: int, size: int) -> None:
    if size not in (1, 2, 4, 8):
        raise AddressError(f"size must be 1, 2, 4 or 8 bytes, got {size!r}")
    if isinstance(gva, int) and (gva & 0xFFF) + size > 0x1000:
        raise AddressError(f"a {size}-byte access at {gva:#x} crosses a page; split it in two")
