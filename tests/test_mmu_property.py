"""The central property of the shadow MMU: a guest cannot tell it from the hardware walker.

A model guest OS (:class:`ModelOs`) keeps several address spaces whose page tables live in a
table pool that every address space maps identically (supervisor, writable), so every edit of a
page table is a real guest store, ``vcpu.write(table_gva, value, size)``, and meets write
protection, emulation, write flooding or an unsync page exactly as a guest kernel's ``set_pte``
does under KVM. After each edit the model flushes what the architecture requires (INVLPG for
an entry that lost rights, changed frame or lost A/D bits; nothing for an entry that only became
present or gained rights, which x86 never caches).

After every access the outcome (the gpa reached, or the #PF error code and CR2, or the #GP)
must equal what the pure guest walker (:func:`kvmmu.hw.walk.walk`) answers on a snapshot of the
guest's tables taken just before the access, and the tables afterwards must equal the snapshot
after that reference walk (same accessed and dirty bits). A gpa that no memslot holds must
come back as an MMIO exit. :func:`kvmmu.kvm.audit.audit` runs after every step, and the dirty log
of the data memslot must hold every gfn written since the last fetch, and nothing a guest could
not have written.

Register writes are operations too: CR0.WP, CR4.SMEP, CR4.SMAP, CR4.PGE, EFER.NXE (with XD
entries still mapped, which then are reserved-bit faults) and, for 32-bit guests, CR4.PSE (bit 7
of a PDE maps a 4 MiB page or is ignored). Mode changes (CR0.PG, CR4.PAE, EFER.LME, CR4.LA57) are
checked in ``tests/test_vcpu_cr.py``, since the model's tables have one format.

The machines at the end run this for 32-bit (PSE), PAE, 4-level and 5-level guests on the
shadow MMU and for a 4-level guest on TDP. Focused regression tests, named for the rule they
check, sit before them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from kvmmu.hw.memory import GuestMemory, MemslotFlag
from kvmmu.hw.walk import CpuState, GeneralProtection, PageFault, WalkResult, cpu_for_mode, load_cr3
from kvmmu.hw.walk import walk as reference_walk
from kvmmu.hw.x86 import Access, Cr0, Cr4, Efer, PagingMode
from kvmmu.kvm.audit import audit, audit_report
from kvmmu.kvm.vcpu import Translation, Vcpu, Vm

# Entry bits, spelled from the SDM.
P, W, U, A, D, PS = 1, 2, 4, 1 << 5, 1 << 6, 1 << 7
XD = 1 << 63
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

RAM = 16 * MiB
POOL_GFN, POOL_PAGES = 0x800, 256  # page tables live at gpa 8 MiB .. 9 MiB
POOL_GPA = POOL_GFN << 12
DATA_BASES = (0x4000, 0x5000)  # the data memslot lives at 64 MiB or 80 MiB
DATA_PAGES = 512
UNBACKED = 0x3000000  # 48 MiB: no memslot, ever
NSPACES = 5  # more address spaces than KVM caches previous roots (3)

READ, WRITE, FETCH = Access.READ, Access.WRITE, Access.FETCH


# ------------------------------------------------------------------------------------------
# The model guest OS
# ------------------------------------------------------------------------------------------


class Region:
    """A piece of an address space: one large page at ``level``, or 4 KiB pages inside it."""

    def __init__(self, base: int, level: int, offsets: tuple[int, ...]) -> None:
        self.base, self.level, self.offsets = base, level, offsets


def regions_for(mode: PagingMode) -> list[Region]:
    """Where each mode's address spaces map data: below and above the table pool's 8 MiB."""
    if mode is PagingMode.BITS32:
        # a 32-bit page table covers 4 MiB; KVM shadows its halves with two shadow pages
        offs = (0, 0x1000, 0x2000, 0x201000, 0x3FF000)
        return [Region(b, 2, offs) for b in (0x4000_0000, 0x4040_0000, 0x8000_0000)]
    offs = (0, 0x1000, 0x2000, 0x100000, 0x1FF000)
    if mode is PagingMode.PAE:
        return [Region(b, 2, offs) for b in (0x4000_0000, 0x4020_0000, 0xC000_0000)]
    regions = [Region(b, 2, offs) for b in (0x4000_0000, 0x4020_0000, 0xFFFF_8000_0000_0000)]
    regions.append(Region(0x8000_0000, 3, (0, 0x1000, 0x20_1000)))  # a 1 GiB region
    if mode is PagingMode.LEVEL5:
        regions.append(Region(0xFF00_0000_0020_0000, 2, offs))
    return regions


def targets_for(mode: PagingMode, level: int) -> list[int]:
    """Guest-physical frames a mapping of ``level`` may point at: RAM, the table pool (a guest
    mapping its own tables), both homes of the data memslot, and memory no memslot holds."""
    if level == 1:
        return [
            0x10_0000,
            0x10_1000,
            0x10_2000,
            POOL_GPA,
            POOL_GPA + 0x1000,
            DATA_BASES[0] << 12,
            (DATA_BASES[0] << 12) + 0x1000,
            DATA_BASES[1] << 12,
            UNBACKED,
        ]
    if level == 3:
        return [0, GiB]
    size = 4 * MiB if mode is PagingMode.BITS32 else 2 * MiB
    return [size, 8 * MiB, DATA_BASES[0] << 12, DATA_BASES[1] << 12, UNBACKED]


class ModelOs:
    """A guest kernel's page-table code, reduced to what the property needs.

    Tables come from the pool and are never freed (a table unlinked by a large mapping leaks,
    as a lazy kernel might let it). Every table store goes through ``self.store``, which the
    state machine points at a checked ``vcpu.write`` once the vCPU exists.
    """

    def __init__(self, memory: GuestMemory, mode: PagingMode) -> None:
        self.memory = memory
        self.mode = mode
        self.spec = mode.spec
        self.esize = self.spec.entry_size
        self.addr_mask = 0xFFFF_F000 if self.esize == 4 else ((1 << 52) - 1) & ~0xFFF
        self.free = list(range(POOL_GFN, POOL_GFN + POOL_PAGES))
        self.in_use: list[int] = []
        self.store: Callable[[int, int, int], None] = self._raw_store
        self.regions = regions_for(mode)
        self.roots: list[int] = []
        self.leaves: list[dict[int, int]] = []  # per space: gva -> leaf level
        shared_pt = self.alloc()
        for i in range(POOL_PAGES):
            gpa = POOL_GPA + i * 0x1000
            self.store(shared_pt + self.spec.index(gpa, 1) * self.esize, gpa | P | W, self.esize)
        for _ in range(NSPACES):
            root = self.alloc()
            if mode is PagingMode.PAE:
                for i in range(4):
                    self.store(root + 8 * i, self.alloc() | P, 8)
            self.roots.append(root)
            self.leaves.append({})
            # the pool's page table is shared by every address space, like kernel mappings
            pde = self.slot(len(self.roots) - 1, POOL_GPA, 2, create=True)
            assert pde is not None
            self.store(pde, shared_pt | P | W, self.esize)

    # -- memory ----------------------------------------------------------------------------

    def _raw_store(self, gpa: int, value: int, size: int) -> None:
        self.memory.write(gpa, value, size)

    def read(self, gpa: int) -> int:
        return self.memory.read(gpa, self.esize)

    def alloc(self) -> int:
        gfn = self.free.pop(0)
        self.in_use.append(gfn)
        return gfn << 12

    def table_bits(self, level: int) -> int:
        return P if self.mode is PagingMode.PAE and level == 3 else P | W | U

    def is_leaf(self, entry: int, level: int) -> bool:
        return level == 1 or bool(entry & PS)

    def slot(self, space: int, gva: int, level: int, *, create: bool) -> int | None:
        """The gpa of ``gva``'s entry at ``level``; None if a large page or a hole is above."""
        table = self.roots[space]
        for lv in range(self.spec.root_level, level, -1):
            entry_gpa = table + self.spec.index(gva, lv) * self.esize
            entry = self.read(entry_gpa)
            if not entry & P:
                if not create:
                    return None
                entry = self.alloc() | self.table_bits(lv)
                self.store(entry_gpa, entry, self.esize)
            elif self.is_leaf(entry, lv):
                return None
            table = entry & self.addr_mask
        return table + self.spec.index(gva, level) * self.esize

    def leaf_value(self, gpa: int, level: int, w: bool, u: bool, nx: bool, ad: int) -> int:
        bits = P | (W if w else 0) | (U if u else 0) | (XD if nx else 0) | ad
        if level > 1:
            bits |= PS
        return gpa | bits

    def table_pages(self) -> list[int]:
        return list(self.in_use)


def leaf_gpa(os: ModelOs, entry: int, level: int) -> int:
    size = os.spec.level_size(level)
    return entry & os.addr_mask & ~(size - 1)


# ------------------------------------------------------------------------------------------
# The checked access: the vCPU against the reference walker on a snapshot
# ------------------------------------------------------------------------------------------


class Checker:
    """Runs one guest access on the vCPU and on a snapshot of the guest tables, and compares."""

    def __init__(self, vm: Vm, os: ModelOs) -> None:
        self.vm, self.os = vm, os
        self.snap = GuestMemory(0)
        self.snap.slots.add(POOL_GFN, POOL_PAGES)
        self.before: dict[int, bytes] = {}

    def take_snapshot(self) -> None:
        self.before = {}
        for gfn in self.os.table_pages():
            page = bytes(self.vm.memory.host.raw(self.vm.memory.gfn_to_pfn(gfn)))
            self.snap.host.raw(self.snap.gfn_to_pfn(gfn))[:] = page
            self.before[gfn] = page

    def tables_untouched(self) -> bool:
        """No guest table changed since the snapshot."""
        return all(
            bytes(self.vm.memory.host.raw(self.vm.memory.gfn_to_pfn(gfn))) == page
            for gfn, page in self.before.items()
        )

    def compare_tables(self, what: str) -> None:
        for gfn in self.os.table_pages():
            real = bytes(self.vm.memory.host.raw(self.vm.memory.gfn_to_pfn(gfn)))
            want = bytes(self.snap.host.raw(self.snap.gfn_to_pfn(gfn)))
            if real != want:
                diff = next(i for i in range(0, 4096, 4) if real[i : i + 4] != want[i : i + 4])
                got, ref = real[diff : diff + 8].hex(), want[diff : diff + 8].hex()
                raise AssertionError(
                    f"{what}: guest table gfn {gfn:#x} offset {diff:#x} differs from the "
                    f"reference walk: {got} != {ref}"
                )

    def access(
        self, vcpu: Vcpu, gva: int, kind: Access, cpl: int, implicit: bool = False
    ) -> Translation | PageFault | GeneralProtection:
        """One checked access; returns the vCPU's answer."""
        self.take_snapshot()
        cpu = replace(vcpu.cpu, cpl=cpl)
        want = reference_walk(self.snap, cpu, gva, kind, implicit=implicit)
        got = vcpu.translate(gva, kind, cpl, implicit=implicit)
        what = f"{kind.value} of {gva:#x} at CPL {cpl}{' (implicit)' if implicit else ''}"
        if isinstance(want, WalkResult):
            assert isinstance(got, Translation), f"{what}: got {got}, the walker says {want.gpa:#x}"
            assert got.gpa == want.gpa, f"{what}: gpa {got.gpa:#x} != {want.gpa:#x}"
            unbacked = self.vm.memory.slots.find(want.gpa >> 12) is None
            assert got.mmio == unbacked, f"{what}: mmio={got.mmio} but unbacked={unbacked}"
        elif isinstance(want, PageFault):
            assert isinstance(got, PageFault), f"{what}: got {got}, the walker faults {want}"
            assert (got.error_code, got.cr2) == (want.error_code, want.cr2), (
                f"{what}: #PF {int(got.error_code):#x} at {got.cr2:#x}, the walker "
                f"{int(want.error_code):#x} at {want.cr2:#x} ({want.reason})"
            )
        else:
            assert isinstance(got, GeneralProtection), f"{what}: got {got}, the walker #GPs"
        if isinstance(got, Translation) and got.mmio and self.tables_untouched():
            # the emulator used the gfn and rights cached from the MMIO spte and walked no
            # guest table (vcpu_mmio_gva_to_gpa): no A/D bit is set, as on KVM
            return got
        self.compare_tables(what)
        return got

    def store(self, vcpu: Vcpu, gpa: int, value: int, size: int) -> None:
        """A guest store to a page table through its identity mapping, checked the same way."""
        self.take_snapshot()
        want = reference_walk(self.snap, replace(vcpu.cpu, cpl=0), gpa, WRITE)
        assert isinstance(want, WalkResult) and want.gpa == gpa, f"store to {gpa:#x}: {want}"
        self.snap.write(gpa, value, size)
        assert vcpu.write(gpa, value, size, cpl=0) is None
        self.compare_tables(f"store of {value:#x} to table gpa {gpa:#x}")


# ------------------------------------------------------------------------------------------
# The state machine
# ------------------------------------------------------------------------------------------

rights = st.tuples(st.booleans(), st.booleans(), st.booleans())
spaces = st.integers(0, 2 * NSPACES - 1)  # half of the edits go to the current space
then_use = st.tuples(st.sampled_from([READ, WRITE, FETCH]), st.sampled_from([0, 3]))
ad_bits = st.sampled_from([0, A, A | D])
pick = st.integers(0, 1 << 16)
bools = st.booleans()


class MmuMachine(RuleBasedStateMachine):
    """Shared rules; subclasses pick the paging mode and shadow or TDP paging."""

    mode = PagingMode.LEVEL4
    tdp = False

    @initialize(flags=st.sampled_from([0, 1]))
    def boot(self, flags: int) -> None:
        self.vm = Vm(RAM, tdp=self.tdp, n_max_mmu_pages=64)
        self.os = ModelOs(self.vm.memory, self.mode)
        self.nxe = self.mode is not PagingMode.BITS32
        self.pse = True
        cpu = cpu_for_mode(self.mode, cr3=self.os.roots[0], nxe=self.nxe)
        loaded = load_cr3(self.vm.memory, cpu, self.os.roots[0])
        assert isinstance(loaded, CpuState)
        self.vcpu = self.vm.create_vcpu(loaded)
        self.check = Checker(self.vm, self.os)
        self.os.store = lambda gpa, value, size: self.check.store(self.vcpu, gpa, value, size)
        self.current = 0
        self.slot_id: int | None = None
        self.slot_base = 0
        self.logging = False
        self.written: set[int] = set()  # page indices in the data slot written since the fetch
        self.exposed: set[int] = set()  # ... that a guest mapping let it write without exiting
        if flags:
            self.add_slot(0, log=True)

    # -- helpers -------------------------------------------------------------------------------

    def invlpg(self, space: int, gva: int, level: int = 1) -> None:
        """Flush what the edit of ``gva``'s entry at ``level`` requires. A 32-bit PDE with bit 7
        set is a table pointer while CR4.PSE=0: its 4 KiB translations all go, by a CR3 load."""
        if space != self.current:
            return
        if level == 2 and self.mode is PagingMode.BITS32 and not self.pse:
            assert self.vcpu.set_cr3(self.os.roots[space]) is None
        else:
            self.vcpu.invlpg(gva)

    @property
    def xd(self) -> bool:
        """May new entries use XD? Only 8-byte entries have it, and only EFER.NXE=1 allows it."""
        return self.nxe and self.os.esize == 8

    def space(self, n: int) -> int:
        return n if n < NSPACES else self.current

    def use(self, space: int, gva: int, then: tuple[Access, int]) -> None:
        """The guest touches what it just edited, if it is in the current address space."""
        if space == self.current:
            self.checked(gva, then[0], then[1])

    def checked(self, gva: int, kind: Access, cpl: int, implicit: bool = False) -> None:
        got = self.check.access(self.vcpu, gva, kind, cpl, implicit)
        index = self.data_index(got.gpa) if isinstance(got, Translation) else None
        if index is not None and not got.mmio and kind is WRITE:  # type: ignore[union-attr]
            self.written.add(index)
        if index is not None and self.tdp:
            # TDP maps guest memory writable on any access, and logs it (direct_map)
            self.exposed.add(index)

    def region_leaves(self, space: int, region: Region) -> list[int]:
        size = self.os.spec.level_size(region.level)
        return [g for g in self.os.leaves[space] if region.base <= g < region.base + size]

    def pick_leaf(self, space: int, n: int) -> tuple[int, int, int] | None:
        leaves = sorted(self.os.leaves[space].items())
        if not leaves:
            return None
        gva, level = leaves[n % len(leaves)]
        entry_gpa = self.os.slot(space, gva, level, create=False)
        assert entry_gpa is not None
        return gva, level, entry_gpa

    def flush_needed(self, old: int, new: int) -> bool:
        """x86 caches present entries only: a flush is needed unless the entry was not present
        or only gained W or lost XD (SDM 4.10.4.3). U/S counts both ways: setting it takes
        supervisor rights away under SMEP and SMAP."""
        if not old & P:
            return False
        rights = W | U | A | D | XD
        lost = (old & (W | A | D)) & ~new
        gained_xd = new & XD and not old & XD
        u_changed = (old ^ new) & U
        return bool(lost or gained_xd or u_changed or (old & ~rights) != (new & ~rights))

    def data_index(self, gpa: int) -> int | None:
        if self.slot_id is None:
            return None
        index = (gpa >> 12) - self.slot_base
        return index if 0 <= index < DATA_PAGES else None

    def scan_exposed(self) -> set[int]:
        """Data-slot pages that some leaf maps writable and dirty: the MMU may make their
        sptes writable (and log them) without a guest write."""
        out: set[int] = set()
        if self.slot_id is None:
            return out
        for space in range(NSPACES):
            for gva, level in self.os.leaves[space].items():
                entry_gpa = self.os.slot(space, gva, level, create=False)
                if entry_gpa is None:
                    continue
                entry = self.os.read(entry_gpa)
                if entry & (P | W | D) != P | W | D:
                    continue
                first = leaf_gpa(self.os, entry, level) >> 12
                last = first + (1 << (9 * (level - 1)))
                lo, hi = max(first, self.slot_base), min(last, self.slot_base + DATA_PAGES)
                out.update(range(lo - self.slot_base, hi - self.slot_base))
        return out

    def add_slot(self, base_index: int, *, log: bool) -> None:
        flags = MemslotFlag.LOG_DIRTY_PAGES if log else MemslotFlag.NONE
        slot = self.vm.add_memslot(DATA_BASES[base_index], DATA_PAGES, flags)
        self.slot_id, self.slot_base, self.logging = slot.slot_id, slot.base_gfn, log
        self.written, self.exposed = set(), self.scan_exposed()

    # -- page-table edits --------------------------------------------------------------------

    @rule(space=spaces, then=then_use, r=pick, o=pick, t=pick, acc=rights, ad=ad_bits)
    def map_4k(
        self,
        space: int,
        r: int,
        o: int,
        t: int,
        acc: tuple[bool, ...],
        ad: int,
        then: tuple[Access, int],
    ) -> None:
        """set_pte: map one 4 KiB page."""
        space = self.space(space)
        region = self.os.regions[r % len(self.os.regions)]
        gva = region.base + region.offsets[o % len(region.offsets)]
        entry_gpa = self.os.slot(space, gva, 1, create=True)
        if entry_gpa is None:
            return  # a large page covers it
        targets = targets_for(self.mode, 1)
        new = self.os.leaf_value(
            targets[t % len(targets)], 1, acc[0], acc[1], acc[2] and self.xd, ad
        )
        old = self.os.read(entry_gpa)
        self.os.store(entry_gpa, new, self.os.esize)
        self.os.leaves[space][gva] = 1
        if self.flush_needed(old, new):
            self.invlpg(space, gva)
        self.use(space, gva, then)

    @rule(space=spaces, then=then_use, r=pick, t=pick, acc=rights, ad=ad_bits)
    def map_large(
        self, space: int, r: int, t: int, acc: tuple[bool, ...], ad: int, then: tuple[Access, int]
    ) -> None:
        """set_pmd/set_pud: map a 2 MiB, 4 MiB or 1 GiB page, unlinking a table in the way."""
        space = self.space(space)
        region = self.os.regions[r % len(self.os.regions)]
        entry_gpa = self.os.slot(space, region.base, region.level, create=True)
        assert entry_gpa is not None
        old = self.os.read(entry_gpa)
        if old & P and not self.os.is_leaf(old, region.level):
            self.os.store(entry_gpa, 0, self.os.esize)
            for gva in self.region_leaves(space, region):
                del self.os.leaves[space][gva]
                self.invlpg(space, gva)
            old = 0
        targets = targets_for(self.mode, region.level)
        gpa = targets[t % len(targets)]
        if self.mode is PagingMode.BITS32 and not self.pse:
            gpa = POOL_GPA  # bit 7 is ignored: the PDE points to a table, here the pool's
        new = self.os.leaf_value(gpa, region.level, acc[0], acc[1], acc[2] and self.xd, ad)
        self.os.store(entry_gpa, new, self.os.esize)
        self.os.leaves[space][region.base] = region.level
        if self.flush_needed(old, new):
            self.invlpg(space, region.base, region.level)
        self.use(space, region.base + 0x1234, then)

    @rule(space=spaces, then=then_use, n=pick)
    def unmap(self, space: int, n: int, then: tuple[Access, int]) -> None:
        """pte_clear: remove one leaf."""
        space = self.space(space)
        found = self.pick_leaf(space, n)
        if found is None:
            return
        gva, level, entry_gpa = found
        old = self.os.read(entry_gpa)
        self.os.store(entry_gpa, 0, self.os.esize)
        del self.os.leaves[space][gva]
        if self.flush_needed(old, 0):
            self.invlpg(space, gva, level)
        self.use(space, gva, then)

    @rule(space=spaces, then=then_use, n=pick, acc=rights)
    def protect(self, space: int, n: int, acc: tuple[bool, ...], then: tuple[Access, int]) -> None:
        """change_pte_range (mprotect): new W/U/XD on one leaf."""
        space = self.space(space)
        found = self.pick_leaf(space, n)
        if found is None:
            return
        gva, level, entry_gpa = found
        old = self.os.read(entry_gpa)
        new = old & ~(W | U | XD)
        new |= (W if acc[0] else 0) | (U if acc[1] else 0) | (XD if acc[2] and self.xd else 0)
        self.os.store(entry_gpa, new, self.os.esize)
        if self.flush_needed(old, new):
            self.invlpg(space, gva, level)
        self.use(space, gva, then)

    @rule(space=spaces, then=then_use, n=pick, bits=st.sampled_from([A, D, A | D]), byte=bools)
    def clear_ad(self, space: int, n: int, bits: int, byte: bool, then: tuple[Access, int]) -> None:
        """ptep_test_and_clear_young / clear dirty: Linux clears A/D with a one-byte andb."""
        space = self.space(space)
        found = self.pick_leaf(space, n)
        if found is None:
            return
        gva, level, entry_gpa = found
        old = self.os.read(entry_gpa)
        new = old & ~bits
        if byte:
            self.os.store(entry_gpa, new & 0xFF, 1)
        else:
            self.os.store(entry_gpa, new, self.os.esize)
        if self.flush_needed(old, new):
            self.invlpg(space, gva, level)
        self.use(space, gva, then)
        self.use(space, gva, then)

    @rule(space=spaces, then=then_use, r=pick, w=st.booleans(), u=st.booleans())
    def protect_table(self, space: int, r: int, w: bool, u: bool, then: tuple[Access, int]) -> None:
        """An upper-level entry loses or gains W/U: the rights of the whole region change."""
        space = self.space(space)
        region = self.os.regions[r % len(self.os.regions)]
        entry_gpa = self.os.slot(space, region.base, region.level, create=False)
        if entry_gpa is None:
            return
        old = self.os.read(entry_gpa)
        if not old & P or self.os.is_leaf(old, region.level):
            return
        new = (old & ~(W | U | A)) | (W if w else 0) | (U if u else 0)
        self.os.store(entry_gpa, new, self.os.esize)
        if self.flush_needed(old, new):
            for gva in self.region_leaves(space, region):
                self.invlpg(space, gva)
        for gva in self.region_leaves(space, region)[:1]:
            self.use(space, gva, then)

    # -- registers -------------------------------------------------------------------------

    @rule(space=st.integers(0, NSPACES - 1))
    def load_cr3(self, space: int) -> None:
        """MOV to CR3: switch address spaces (the root cache holds three previous roots)."""
        assert self.vcpu.set_cr3(self.os.roots[space]) is None
        self.current = space

    @rule(bit=st.sampled_from(["wp", "smep", "smap", "nxe", "pse", "pge", "ac"]))
    def toggle(self, bit: str) -> None:
        """CR0.WP, CR4.SMEP, CR4.SMAP, EFER.NXE (XD entries in use become reserved-bit faults),
        CR4.PSE (32-bit guests: bit 7 of a PDE means PS or nothing), CR4.PGE or RFLAGS.AC."""
        cpu = self.vcpu.cpu
        if bit == "wp":
            assert self.vcpu.set_registers(cr0=cpu.cr0 ^ Cr0.WP) is None
        elif bit == "smep":
            assert self.vcpu.set_registers(cr4=cpu.cr4 ^ Cr4.SMEP) is None
        elif bit == "smap":
            assert self.vcpu.set_registers(cr4=cpu.cr4 ^ Cr4.SMAP) is None
        elif bit == "pge":
            assert self.vcpu.set_registers(cr4=cpu.cr4 ^ Cr4.PGE) is None
        elif bit == "ac":
            self.vcpu.set_ac(not cpu.rflags & (1 << 18))
        elif bit == "nxe":
            self.nxe = not self.nxe
            assert self.vcpu.set_registers(efer=cpu.efer ^ Efer.NXE) is None
        elif self.mode is PagingMode.BITS32 and (not self.pse or self.large_pdes_in_pool()):
            # bit 7 of a PDE turns into a table pointer: only where the snapshot holds the table
            self.pse = not self.pse
            assert self.vcpu.set_registers(cr4=cpu.cr4 ^ Cr4.PSE) is None

    def large_pdes_in_pool(self) -> bool:
        """Every 4 MiB PDE of every address space points at the table pool."""
        for space in range(NSPACES):
            for gva, level in self.os.leaves[space].items():
                entry_gpa = self.os.slot(space, gva, level, create=False)
                if level != 2 or entry_gpa is None:
                    continue
                if leaf_gpa(self.os, self.os.read(entry_gpa), 2) != POOL_GPA:
                    return False
        return True

    # -- accesses --------------------------------------------------------------------------

    @rule(
        n=pick,
        where=st.sampled_from(["leaf", "leaf", "leaf", "region", "pool", "hole", "noncanonical"]),
        off=st.sampled_from([0, 0x123, 0xFF8, 0x1000, 0x10_0008]),
        kind=st.sampled_from([READ, WRITE, FETCH]),
        cpl=st.sampled_from([0, 3]),
        implicit=st.booleans(),
    )
    def access(self, n: int, where: str, off: int, kind: Access, cpl: int, implicit: bool) -> None:
        """A guest load, store or fetch at CPL 0 or 3 (implicit: a supervisor access the CPU
        makes on its own, such as a descriptor-table read)."""
        leaves = sorted(self.os.leaves[self.current].items())
        if where == "leaf" and leaves:
            gva, level = leaves[n % len(leaves)]
            gva += off % self.os.spec.level_size(level)
        elif where == "region" or where == "leaf":
            region = self.os.regions[n % len(self.os.regions)]
            gva = region.base + off
        elif where == "pool":
            gva = POOL_GPA + (n % POOL_PAGES) * 0x1000 + (off & 0xFFF)
        elif where == "hole":
            gva = 0x0700_0000 + off
        elif self.os.spec.va_bits > 32:
            gva = 1 << (self.os.spec.va_bits - 1)
        else:
            return
        implicit = implicit and cpl == 3 and n % 4 == 0
        self.checked(gva, kind, cpl, implicit)

    # -- memslots and dirty logging --------------------------------------------------------

    @rule(b=st.integers(0, 1), log=st.booleans())
    def slot_add(self, b: int, log: bool) -> None:
        """KVM_MR_CREATE of the data slot (stale MMIO sptes must go)."""
        if self.slot_id is None:
            self.add_slot(b, log=log)

    @rule(zap_all=st.booleans())
    def slot_delete(self, zap_all: bool) -> None:
        """KVM_MR_DELETE, with or without KVM_X86_QUIRK_SLOT_ZAP_ALL."""
        if self.slot_id is not None:
            self.vm.delete_memslot(self.slot_id, zap_all=zap_all)
            self.slot_id, self.logging = None, False

    @rule(zap_all=st.booleans())
    def slot_move(self, zap_all: bool) -> None:
        """KVM_MR_MOVE to the other home: contents and dirty log go with it."""
        if self.slot_id is not None:
            new = DATA_BASES[1] if self.slot_base == DATA_BASES[0] else DATA_BASES[0]
            self.vm.move_memslot(self.slot_id, new, zap_all=zap_all)
            self.slot_base = new

    @rule(on=st.booleans())
    def dirty_logging(self, on: bool) -> None:
        """KVM_MEM_LOG_DIRTY_PAGES on or off."""
        if self.slot_id is None or on == self.logging:
            return
        flags = MemslotFlag.LOG_DIRTY_PAGES if on else MemslotFlag.NONE
        self.vm.set_memslot_flags(self.slot_id, flags)
        self.logging = on
        self.written, self.exposed = set(), self.scan_exposed()

    @rule()
    def get_dirty_log(self) -> None:
        """KVM_GET_DIRTY_LOG: every page written since the last fetch, and no page that no
        guest mapping could have written."""
        if self.slot_id is None or not self.logging:
            return
        log = {gfn - self.slot_base for gfn in self.vm.get_dirty_log(self.slot_id)}
        missing = self.written - log
        assert not missing, f"written pages {sorted(missing)} are missing from the dirty log"
        extra = log - self.written - self.exposed
        assert not extra, f"pages {sorted(extra)} are logged dirty but nothing could write them"
        self.written, self.exposed = set(), self.scan_exposed()

    # -- after every step --------------------------------------------------------------------

    @invariant()
    def mmu_is_consistent(self) -> None:
        audit(self.vm)
        if self.logging:
            self.exposed |= self.scan_exposed()


PROPERTY_SETTINGS = settings(
    max_examples=40,
    stateful_step_count=50,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    deadline=None,
)


class Bits32Machine(MmuMachine):
    """32-bit paging with PSE on the shadow MMU: 4-byte guest entries shadowed by PAE tables,
    two shadow pages (quadrants) per guest page table, 4 MiB guest pages backed by 2 MiB sptes."""

    mode = PagingMode.BITS32


class PaeMachine(MmuMachine):
    """PAE paging on the shadow MMU: four PAE roots from the PDPTEs loaded at CR3, no root
    cache, 2 MiB pages."""

    mode = PagingMode.PAE


class Level4Machine(MmuMachine):
    """4-level paging on the shadow MMU: 2 MiB and 1 GiB pages, the previous-root cache."""

    mode = PagingMode.LEVEL4


class Level5Machine(MmuMachine):
    """5-level paging on the shadow MMU: a fifth level and 57-bit canonical addresses."""

    mode = PagingMode.LEVEL5


class TdpMachine(MmuMachine):
    """A 4-level guest on TDP: the guest's tables are walked in hardware and only direct
    pages exist; memslot changes and dirty logging act on the TDP tables."""

    mode = PagingMode.LEVEL4
    tdp = True


TestBits32 = Bits32Machine.TestCase
TestPae = PaeMachine.TestCase
TestLevel4 = Level4Machine.TestCase
TestLevel5 = Level5Machine.TestCase
TestTdp = TdpMachine.TestCase
TestBits32.settings = TestPae.settings = TestLevel4.settings = PROPERTY_SETTINGS
TestLevel5.settings = TestTdp.settings = PROPERTY_SETTINGS


def _one_pte_guest(mode: PagingMode) -> tuple[Vm, ModelOs, Vcpu, int, int]:
    """A model guest whose table edits are real guest stores, with one leaf slot at 1 GiB."""
    vm = Vm(RAM, n_max_mmu_pages=64)
    os = ModelOs(vm.memory, mode)
    cpu = load_cr3(vm.memory, cpu_for_mode(mode, cr3=os.roots[0]), os.roots[0])
    assert isinstance(cpu, CpuState)
    vcpu = vm.create_vcpu(cpu)

    def store(gpa: int, value: int, size: int) -> None:
        assert vcpu.write(gpa, value, size, cpl=0) is None

    os.store = store
    gva = 0x4000_0000
    entry_gpa = os.slot(0, gva, 1, create=True)
    assert entry_gpa is not None
    return vm, os, vcpu, gva, entry_gpa


# ------------------------------------------------------------------------------------------
# A guest that skips INVLPG (not part of the property: the architecture allows stale results)
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [PagingMode.BITS32, PagingMode.PAE, PagingMode.LEVEL4])
def test_skipped_invlpg_leaves_the_old_translation_until_the_flush(mode: PagingMode) -> None:
    """A guest that clears a PTE and does not INVLPG may keep using the old translation (the
    TLB, and KVM's unsync sptes, hold it); the INVLPG then makes the fault appear. The MMU
    stays consistent throughout."""
    vm, os, vcpu, gva, entry_gpa = _one_pte_guest(mode)
    os.store(entry_gpa, 0x10_0000 | P | W | U, os.esize)
    assert vcpu.access(gva + 8, WRITE, cpl=3) == 0x10_0008
    os.store(entry_gpa, 0, os.esize)  # pte_clear, no INVLPG
    audit(vm)
    assert vcpu.access(gva + 8, WRITE, cpl=3) == 0x10_0008  # stale, and allowed
    vcpu.invlpg(gva)
    fault = vcpu.access(gva + 8, WRITE, cpl=3)
    assert isinstance(fault, PageFault) and fault.cr2 == gva + 8
    assert int(fault.error_code) == 0b110  # not present, write, user
    assert audit_report(vm) == []


# ------------------------------------------------------------------------------------------
# Regression tests for bugs the property found
# ------------------------------------------------------------------------------------------


def test_mmu_set_spte_drops_a_present_spte_before_marking_mmio() -> None:
    """mmu_set_spte: a present spte is dropped (rmap entry and all) before an MMIO spte takes
    its place. Here an unsync PTE is retargeted at unbacked memory without INVLPG, so the next
    write fault finds the old read-only spte still present and the new gfn with no memslot."""
    vm, os, vcpu, gva, entry_gpa = _one_pte_guest(PagingMode.LEVEL4)
    os.store(entry_gpa, 0x10_0000 | P | U, 8)
    assert vcpu.access(gva, READ, cpl=3) == 0x10_0000  # a read-only spte for gfn 0x100
    os.store(entry_gpa, UNBACKED | P | U | W, 8)  # the table is unsync now: no exit
    got = vcpu.translate(gva, WRITE, cpl=3)
    assert isinstance(got, Translation) and got.mmio and got.gpa == UNBACKED
    assert vm.mmu.rmap.sptes(0x100, 1) == []
    assert audit_report(vm) == []


def test_sync_mmio_spte_does_not_revive_an_mmio_spte_over_new_memory() -> None:
    """FNAME(sync_spte) / sync_mmio_spte: syncing an unsync page must not restamp an MMIO spte
    with the current memslot generation once a memslot holds its gfn, or the RAM there would
    stay an MMIO exit. Found by the 32-bit machine with a data slot moved away and back."""
    vm, os, vcpu, gva, entry_gpa = _one_pte_guest(PagingMode.LEVEL4)
    data_gpa = DATA_BASES[0] << 12
    os.store(entry_gpa, data_gpa | P | W | U, 8)
    got = vcpu.translate(gva, READ, cpl=3)
    assert isinstance(got, Translation) and got.mmio  # no memslot yet: an MMIO spte
    os.store(entry_gpa + 8, 0x10_0000 | P | U, 8)  # the leaf table goes unsync
    assert any(sp.unsync for sp in vm.mmu.active)
    vm.add_memslot(DATA_BASES[0], DATA_PAGES)  # memory appears at the gfn
    vcpu.invlpg(gva)  # syncs the spte behind gva in the unsync page
    assert audit_report(vm) == []
    got = vcpu.translate(gva, READ, cpl=3)
    assert isinstance(got, Translation) and got.gpa == data_gpa and not got.mmio
