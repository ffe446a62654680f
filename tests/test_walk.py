"""Specification of the guest page-table walker (``kvmmu.hw.walk``, KVM's ``paging_tmpl.h``).

The walker must agree, bit for bit, with the Intel SDM volume 3 chapter 4 (and with KVM where
KVM defines what the SDM leaves open: accessed bits set only when the access succeeds, a table
outside every memslot reads as not present). Tables here are written entry by entry into
``GuestMemory`` with the small :class:`Tables` helper below, not with ``kvmmu.hw.guest``, so that
these tests depend on nothing but the walker, ``x86`` and ``memory``.

The permission tests compare the walker with :func:`sdm_allows` and :func:`sdm_error_code`,
written from the prose of SDM sections 4.6 and 4.7; the Hypothesis property compares it with
:func:`reference_walk`, written from the entry formats of sections 4.3 to 4.5.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvmmu.errors import AddressError, KvmmuError, MemslotError, ModeError
from kvmmu.hw.memory import GuestMemory, MemslotFlag
from kvmmu.hw.walk import (
    CpuState,
    GeneralProtection,
    PageFault,
    WalkResult,
    WalkStep,
    cpu_for_mode,
    load_cr3,
    reserved_mask,
    update_accessed_dirty,
    walk,
    walk_many,
)
from kvmmu.hw.x86 import Acc, Access, Cr0, Cr4, Efer, PagingMode, PfErr, Rflags

# Entry bits, spelled from SDM tables 4-4 .. 4-20 (not imported from the code under test).
P, W, U, PWT, PCD, A, D, PS, G = 1, 2, 4, 8, 16, 32, 64, 128, 256
PAT_LARGE = 1 << 12
XD = 1 << 63
PRW = P | W | U
KB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

# Error-code bits, SDM 4.7 / figure 4-12.
EC_P, EC_W, EC_U, EC_RSVD, EC_ID, EC_PK = 1, 2, 4, 8, 16, 32

READ, WRITE, FETCH = Access.READ, Access.WRITE, Access.FETCH
NONE, BITS32, PAE, LEVEL4, LEVEL5 = (
    PagingMode.NONE,
    PagingMode.BITS32,
    PagingMode.PAE,
    PagingMode.LEVEL4,
    PagingMode.LEVEL5,
)
PAGING_MODES = [BITS32, PAE, LEVEL4, LEVEL5]
LONG_MODES = [LEVEL4, LEVEL5]

# (access kind, implicit): every kind of access the matrix tries. Implicit supervisor-mode
# accesses (SDM 4.6.1: GDT, IDT, TSS ...) are data accesses, so there is no implicit fetch.
ACCESS_KINDS = [(READ, False), (READ, True), (WRITE, False), (WRITE, True), (FETCH, False)]


def bits(low: int, high: int) -> int:
    """Bits low..high inclusive, the notation of the SDM's tables ("51:M")."""
    return sum(1 << b for b in range(low, high + 1))


# --------------------------------------------------------------------------------------------
# A tiny page-table writer
# --------------------------------------------------------------------------------------------


class Tables:
    """Guest page tables for one mode, written straight into a fresh :class:`GuestMemory`.

    Tables are allocated from gfn 0x100 upwards; data pages are just numbers and need not be
    in memory. In PAE mode the PDPT sits at offset ``pdpt_offset`` inside its page, because
    CR3 only needs 32-byte alignment there.
    """

    FIRST_TABLE_GFN = 0x100

    def __init__(self, mode: PagingMode, *, size: int = 16 * MiB, pdpt_offset: int = 0x40):
        self.mode = mode
        self.levels = {BITS32: 2, PAE: 3, LEVEL4: 4, LEVEL5: 5}.get(mode, 0)
        self.esize = 4 if mode is BITS32 else 8
        self.mem = GuestMemory(size)
        self.next_gfn = self.FIRST_TABLE_GFN
        self.root = 0
        if mode is PAE:
            self.root = self.new_table() + pdpt_offset
        elif mode is not NONE:
            self.root = self.new_table()

    def new_table(self) -> int:
        gpa = self.next_gfn << 12
        self.next_gfn += 1
        return gpa

    def index(self, gva: int, level: int) -> int:
        """SDM 4.3-4.5: 10 bits per level in 32-bit paging, 9 otherwise, 2 for the PAE PDPT."""
        if self.mode is BITS32:
            return (gva >> (12 + 10 * (level - 1))) & 0x3FF
        if self.mode is PAE and level == 3:
            return (gva >> 30) & 3
        return (gva >> (12 + 9 * (level - 1))) & 0x1FF

    def next_table(self, entry: int) -> int:
        return entry & (0xFFFF_F000 if self.mode is BITS32 else bits(12, 51))

    def read(self, gpa: int) -> int:
        return self.mem.read(gpa, self.esize)

    def write(self, gpa: int, value: int) -> None:
        self.mem.write(gpa, value, self.esize)

    def map(
        self,
        gva: int,
        target: int,
        *,
        level: int = 1,
        leaf: int = PRW,
        upper: int = PRW,
        flags: dict[int, int] | None = None,
    ) -> dict[int, int]:
        """Map ``gva`` to ``target`` with a leaf at ``level``; return each entry's gpa.

        ``flags[level]`` replaces the flag bits of that level's entry (the PS bit of a large
        leaf is added here). Present upper entries are reused, so maps can share tables.
        """
        flags = flags or {}
        table = self.root
        where = {}
        for lv in range(self.levels, level - 1, -1):
            entry_gpa = table + self.index(gva, lv) * self.esize
            where[lv] = entry_gpa
            if lv == level:
                self.write(entry_gpa, target | flags.get(lv, leaf) | (PS if lv > 1 else 0))
                break
            default = P if (self.mode is PAE and lv == 3) else upper  # a PDPTE has no rights
            old = self.read(entry_gpa)
            table = self.next_table(old) if old & P else self.new_table()
            self.write(entry_gpa, table | flags.get(lv, default))
        return where

    def cpu(self, **regs: object) -> CpuState:
        """Registers for this mode with CR3 at the root (PAE: PDPTEs loaded as by MOV CR3)."""
        if self.mode is PAE:
            loaded = load_cr3(self.mem, cpu_for_mode(PAE, **regs), self.root)  # type: ignore[arg-type]
            assert isinstance(loaded, CpuState), loaded
            return loaded
        return cpu_for_mode(self.mode, cr3=self.root, **regs)  # type: ignore[arg-type]

    def snapshot(self) -> bytes:
        """Every table byte, to prove that a walk changed nothing (or only A/D bits)."""
        return self.mem.read_bytes(self.FIRST_TABLE_GFN << 12, (self.next_gfn - 0x100) << 12)


def ok(result: object) -> WalkResult:
    assert isinstance(result, WalkResult), f"expected a translation, got {result!r}"
    return result


def fault(result: object) -> PageFault:
    assert isinstance(result, PageFault), f"expected a page fault, got {result!r}"
    return result


# --------------------------------------------------------------------------------------------
# The SDM's access rules, written from the prose of sections 4.6 and 4.7
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Situation:
    """Everything SDM 4.6 looks at to decide one access to one translated address."""

    mode: PagingMode
    kind: Access
    cpl: int
    implicit: bool
    user_address: bool  # U/S=1 in every paging-structure entry (4.6.1)
    writable: bool  # R/W=1 in every paging-structure entry
    xd: bool  # XD=1 in some paging-structure entry
    wp: bool
    nxe: bool
    smep: bool
    smap: bool
    ac: bool
    pke: bool = False
    key_ad: bool = False  # PKRU.AD of the page's protection key
    key_wd: bool = False  # PKRU.WD of the page's protection key

    @property
    def supervisor_access(self) -> bool:
        """4.6.1: CPL < 3, or an implicit supervisor-mode access at any CPL."""
        return self.cpl < 3 or self.implicit

    @property
    def keys_active(self) -> bool:
        """4.6.2: protection keys only with IA-32e (4-/5-level) paging and CR4.PKE = 1."""
        return self.pke and self.mode in (LEVEL4, LEVEL5)

    @property
    def xd_honoured(self) -> bool:
        """4.6.1: XD matters only with PAE or 4-/5-level paging and IA32_EFER.NXE = 1."""
        return self.mode is not BITS32 and self.nxe


def sdm_allows(s: Situation) -> bool:
    """SDM 4.6.1 and 4.6.2, item by item, for a present translation without reserved bits."""
    # 4.6.2: AD forbids every data access to a user-mode address with that key; WD forbids
    # user-mode writes, and supervisor-mode writes only when CR0.WP = 1.
    key_allows_read = not (s.keys_active and s.key_ad)
    key_allows_write = key_allows_read and not (
        s.keys_active and s.key_wd and (not s.supervisor_access or s.wp)
    )
    no_xd = not (s.xd_honoured and s.xd)
    explicit_with_ac = not s.implicit and s.ac  # SMAP's escape hatch (explicit accesses only)

    if s.supervisor_access:
        if s.kind is READ:
            # "Data may be read (implicitly or explicitly) from any supervisor-mode address."
            if not s.user_address:
                return True
            # Data reads from user-mode pages.
            if not s.smap:
                return key_allows_read
            return explicit_with_ac and key_allows_read
        if s.kind is WRITE:
            if not s.user_address:
                # "If CR0.WP = 0, data may be written to any supervisor-mode address. If
                # CR0.WP = 1, ... only with R/W = 1 in every entry."
                return (not s.wp) or s.writable
            # Data writes to user-mode addresses.
            if not s.wp:
                if not s.smap:
                    return key_allows_write
                return explicit_with_ac and key_allows_write
            if not s.smap:
                return s.writable and key_allows_write
            return explicit_with_ac and s.writable and key_allows_write
        # Instruction fetches.
        if not s.user_address:
            return no_xd
        if s.smep:  # "If CR4.SMEP = 1, instructions may not be fetched from any user-mode address."
            return False
        return no_xd
    # User-mode accesses: "no access to supervisor-mode addresses".
    if not s.user_address:
        return False
    if s.kind is READ:
        return key_allows_read
    if s.kind is WRITE:
        return s.writable and key_allows_write
    return no_xd


def sdm_error_code(s: Situation, *, present: bool = True, rsvd: bool = False) -> int:
    """SDM 4.7: the error code of a page fault raised for situation ``s``."""
    code = 0
    if present:  # P: 0 for a not-present page, 1 for a protection or reserved-bit violation
        code |= EC_P
    if s.kind is WRITE:  # W/R describes the access, not the rights
        code |= EC_W
    if not s.supervisor_access:  # U/S: 1 for a user-mode access
        code |= EC_U
    if rsvd:
        code |= EC_RSVD
    # I/D: an instruction fetch, and either CR4.SMEP = 1 or (CR4.PAE = 1 and EFER.NXE = 1).
    if s.kind is FETCH and (s.smep or (s.mode is not BITS32 and s.nxe)):
        code |= EC_ID
    # PK: IA-32e paging with CR4.PKE, a data access to a user-mode address whose key has AD,
    # or WD on a write that is user-mode or made with CR0.WP = 1.
    if (
        present
        and not rsvd
        and s.keys_active
        and s.kind is not FETCH
        and s.user_address
        and (s.key_ad or (s.key_wd and s.kind is WRITE and (not s.supervisor_access or s.wp)))
    ):
        code |= EC_PK
    return code


def sdm_rights(s: Situation) -> Acc:
    """The rights of the translation, as KVM's ACC_* mask (``walker->pte_access``)."""
    acc = Acc.NONE
    if s.user_address:
        acc |= Acc.USER
    if s.writable:
        acc |= Acc.WRITE
    if not (s.xd_honoured and s.xd):
        acc |= Acc.EXEC
    return acc


def situation_of(
    cpu: CpuState, mode: PagingMode, kind: Access, implicit: bool, **page: bool
) -> Situation:
    """The Situation of one access under these registers, for a page described by ``page``."""
    return Situation(
        mode=mode,
        kind=kind,
        cpl=cpu.cpl,
        implicit=implicit,
        wp=bool(cpu.cr0 & Cr0.WP),
        nxe=bool(cpu.efer & Efer.NXE),
        smep=bool(cpu.cr4 & Cr4.SMEP),
        smap=bool(cpu.cr4 & Cr4.SMAP),
        ac=bool(cpu.rflags & Rflags.AC),
        pke=bool(cpu.cr4 & Cr4.PKE),
        **page,
    )


# --------------------------------------------------------------------------------------------
# Modes
# --------------------------------------------------------------------------------------------


def test_paging_off_is_the_identity() -> None:
    """SDM 4.1: with CR0.PG = 0 a linear address is the physical address; nothing is read."""
    mem = GuestMemory(MiB)
    cpu = cpu_for_mode(NONE)
    for gva in (0, 0x1234, 0xFFFF_FFFF):
        for kind in (READ, WRITE, FETCH):
            result = ok(walk(mem, cpu, gva, kind))
            assert (result.gpa, result.level, result.mode) == (gva, 0, NONE)
            assert result.access == Acc.ALL and result.trace == ()
    assert mem.host.touched == 0


def test_paging_off_addresses_are_32_bits() -> None:
    """Without paging (protected or real mode) linear addresses are 32 bits wide."""
    with pytest.raises(AddressError, match=r"32 bits.*paging off"):
        walk(GuestMemory(MiB), cpu_for_mode(NONE), 1 << 32)


def test_32bit_paging_4k_page_uses_10_bit_indices_and_4_byte_entries() -> None:
    """SDM 4.3: PDE at CR3 + 4*gva[31:22], PTE at PDE.addr + 4*gva[21:12], 4 KiB page."""
    t = Tables(BITS32)
    gva = (0x301 << 22) | (0x2C5 << 12) | 0xABC
    where = t.map(gva, 0x0055_5000)
    t.write(where[1] + 4, 0xFFFF_FFFF)  # the neighbouring 4-byte entry must not matter
    t.write(where[2] + 4, 0xFFFF_FFFF)
    assert where[2] == t.root + 0x301 * 4
    result = ok(walk(t.mem, t.cpu(), gva))
    assert (result.gpa, result.level, result.page_size) == (0x0055_5ABC, 1, 4 * KB)
    assert [step.entry_gpa for step in result.trace] == [where[2], where[1]]
    assert [step.name for step in result.trace] == ["PDE", "PTE"]


@pytest.mark.parametrize(
    ("maxphyaddr", "high"),
    [(40, 0xAB), (36, 0xB), (32, 0), (52, 0xFF)],
)
def test_32bit_pse_4m_page_takes_address_bits_32_and_up_from_pde_bits_13_and_up(
    maxphyaddr: int, high: int
) -> None:
    """SDM 4.3 (PSE-36): a 4 MiB PDE holds physical bits (M-1):32 in bits (M-20):13,
    M = min(MAXPHYADDR, 40); bits 31:22 come from the PDE and 21:0 from the linear address."""
    t = Tables(BITS32)
    gva = (0x3FF << 22) | 0x2A_BCDE
    t.map(gva, 0xFFC0_0000 | (high << 13), level=2)
    result = ok(walk(t.mem, t.cpu(maxphyaddr=maxphyaddr), gva))
    assert (result.level, result.page_size) == (2, 4 * MiB)
    assert result.gpa == (high << 32) | 0xFFC0_0000 | 0x2A_BCDE


def test_32bit_pse_pat_bit_is_not_an_address_bit() -> None:
    """SDM table 4-4: bit 12 of a 4 MiB PDE is PAT; the page base comes from bits 31:22."""
    t = Tables(BITS32)
    t.map(0x0040_0000, 0x0080_0000 | PAT_LARGE, level=2)
    assert ok(walk(t.mem, t.cpu(), 0x0040_0123)).gpa == 0x0080_0123


def test_32bit_without_cr4_pse_ignores_the_ps_bit() -> None:
    """SDM 4.3: with CR4.PSE = 0, PDE bit 7 is ignored and the PDE references a page table."""
    t = Tables(BITS32)
    gva = 0x0040_3123
    where = t.map(gva, 0x0077_7000)
    t.write(where[2], t.read(where[2]) | PS)
    result = ok(walk(t.mem, t.cpu(pse=False), gva))
    assert (result.level, result.gpa) == (1, 0x0077_7123)
    with_pse = ok(walk(t.mem, t.cpu(pse=True), gva))  # now the same PDE maps a 4 MiB page
    assert with_pse.level == 2


def test_pae_4k_and_2m_pages() -> None:
    """SDM 4.4: PDPTE by gva[31:30], PDE by gva[29:21], PTE by gva[20:12]; 2 MiB with PS."""
    t = Tables(PAE)
    gva4k = (2 << 30) | (0x1AB << 21) | (0x0CD << 12) | 0x123
    gva2m = (3 << 30) | (0x005 << 21) | 0x1_2345
    t.map(gva4k, 0x12_3456_7000)  # PAE reaches physical addresses above 4 GiB
    t.map(gva2m, 0x7_FFE0_0000 | PAT_LARGE, level=2)
    cpu = t.cpu()
    small = ok(walk(t.mem, cpu, gva4k))
    large = ok(walk(t.mem, cpu, gva2m))
    assert (small.gpa, small.level, small.page_size) == (0x12_3456_7123, 1, 4 * KB)
    assert (large.gpa, large.level, large.page_size) == (0x7_FFE0_0000 | 0x1_2345, 2, 2 * MiB)
    assert [s.name for s in small.trace] == ["PDPTE", "PDE", "PTE"]
    assert small.trace[0].entry_gpa == t.root + 2 * 8


def test_pae_walks_use_the_pdptes_loaded_with_cr3() -> None:
    """SDM 4.4.1: the PDPTE registers are loaded by MOV to CR3; later edits of the PDPT in
    memory have no effect until CR3 is loaded again."""
    t = Tables(PAE)
    where = t.map(0x1000, 0x5000)
    cpu = t.cpu()
    t.write(where[3], 0)  # remove the PDPTE from memory
    assert ok(walk(t.mem, cpu, 0x1000)).gpa == 0x5000
    reloaded = load_cr3(t.mem, cpu, t.root)
    assert isinstance(reloaded, CpuState)
    assert fault(walk(t.mem, reloaded, 0x1000)).error_code == 0


def test_pae_cr3_is_32_byte_aligned_and_its_low_bits_are_ignored() -> None:
    """SDM table 4-7: CR3 bits 31:5 locate the PDPT; bits 4:0 (PWT, PCD, ignored) do not."""
    t = Tables(PAE, pdpt_offset=0xFE0)  # the last 32 bytes of a page
    t.map(0xC000_0000, 0xABC000)
    cpu = load_cr3(t.mem, cpu_for_mode(PAE), t.root | PCD | PWT | 0x7)
    assert isinstance(cpu, CpuState)
    assert ok(walk(t.mem, cpu, 0xC000_0010)).gpa == 0xABC010


@pytest.mark.parametrize("bit", [1, 2, 5, 6, 7, 8, 40, 51, 52, 62, 63])
def test_pae_pdpte_reserved_bits_make_the_cr3_load_gp(bit: int) -> None:
    """SDM 4.4.1, table 4-8: a present PDPTE with bit 2:1, 8:5 or 63:M set makes MOV to CR3
    #GP (KVM load_pdptrs); the PDPTEs are checked then, not during walks."""
    t = Tables(PAE)
    where = t.map(0x4000_0000, 0x5000)
    t.write(where[3], t.read(where[3]) | (1 << bit))
    result = load_cr3(t.mem, cpu_for_mode(PAE, maxphyaddr=40), t.root)
    assert isinstance(result, GeneralProtection)
    assert result.vector == 13 and "PDPTE1" in result.reason
    t.write(where[3], (1 << bit) | 0x1000)  # the same bit in a not-present PDPTE is fine
    assert isinstance(load_cr3(t.mem, cpu_for_mode(PAE, maxphyaddr=40), t.root), CpuState)


def test_pae_pdpte_allows_pwt_pcd_and_ignored_bits() -> None:
    """SDM table 4-8: PDPTE bits 3 (PWT), 4 (PCD) and 11:9 (ignored) may be set."""
    t = Tables(PAE)
    where = t.map(0x1000, 0x5000)
    t.write(where[3], t.read(where[3]) | PWT | PCD | bits(9, 11))
    assert ok(walk(t.mem, t.cpu(), 0x1000)).gpa == 0x5000


def test_pae_pdpt_outside_guest_memory_makes_the_cr3_load_gp() -> None:
    """KVM load_pdptrs: a PDPT that cannot be read makes MOV to CR3 fail with #GP."""
    mem = GuestMemory(MiB)
    result = load_cr3(mem, cpu_for_mode(PAE), 0x8000_0000)
    assert isinstance(result, GeneralProtection) and "outside guest memory" in result.reason


def test_pae_not_present_pdpte_is_a_not_present_fault() -> None:
    """SDM 4.4: a PDPTE with P = 0 gives a not-present #PF for its 1 GiB of addresses."""
    t = Tables(PAE)
    t.map(0x1000, 0x5000)
    result = fault(walk(t.mem, t.cpu(), 0xC000_1000, WRITE))
    assert (result.error_code, result.cr2) == (EC_W, 0xC000_1000)


@pytest.mark.parametrize("mode", LONG_MODES)
@pytest.mark.parametrize(
    ("level", "size", "target"),
    [(1, 4 * KB, 0xF_FFFF_F000), (2, 2 * MiB, 0xF_FFE0_0000), (3, GiB, 0xF_C000_0000)],
)
def test_long_mode_4k_2m_and_1g_pages(mode: PagingMode, level: int, size: int, target: int) -> None:
    """SDM 4.5: a PTE maps 4 KiB, a PDE with PS 2 MiB, a PDPTE with PS 1 GiB (Page1GB)."""
    t = Tables(mode)
    gva = 0xFFFF_FFFF_EDCB_A987  # in the upper half: canonical with 48 and 57 bits
    pat = PAT_LARGE if level > 1 else 0  # bit 12 is PAT in a large leaf, never an address bit
    t.map(gva, target | pat, level=level)
    result = ok(walk(t.mem, t.cpu(), gva))
    assert (result.level, result.page_size) == (level, size)
    assert result.gpa == target | (gva & (size - 1))
    names = ["PML5E", "PML4E", "PDPTE", "PDE", "PTE"][5 - t.levels :]
    assert [s.name for s in result.trace] == names[: t.levels - level + 1]


@pytest.mark.parametrize("mode", LONG_MODES)
def test_long_mode_indices_are_9_bits_per_level(mode: PagingMode) -> None:
    """SDM 4.5: PML5 gva[56:48], PML4 gva[47:39], PDPT gva[38:30], PD gva[29:21], PT gva[20:12]."""
    t = Tables(mode)
    indices = {5: 0x0AB, 4: 0x1F3, 3: 0x101, 2: 0x0C4, 1: 0x17E}
    gva = 0x765
    for level in range(1, t.levels + 1):
        gva |= indices[level] << (12 + 9 * (level - 1))
    if mode is LEVEL4:
        gva |= 0xFFFF << 48  # bit 47 is set, so sign-extend
    where = t.map(gva, 0x4242_4000)
    result = ok(walk(t.mem, t.cpu(), gva))
    assert [s.index for s in result.trace] == [indices[lv] for lv in range(t.levels, 0, -1)]
    assert [s.entry_gpa for s in result.trace] == [where[lv] for lv in range(t.levels, 0, -1)]
    assert result.gpa == 0x4242_4765


def test_1g_pages_are_reserved_without_page1gb() -> None:
    """SDM 4.5: PS in a PDPTE is reserved when CPUID.80000001H:EDX.Page1GB = 0."""
    t = Tables(LEVEL4)
    t.map(0x4000_0000, 0x8000_0000, level=3)
    cpu = dataclasses.replace(t.cpu(), gbpages=False)
    result = fault(walk(t.mem, cpu, 0x4000_0000))
    assert result.error_code == EC_P | EC_RSVD


@pytest.mark.parametrize(
    ("mode", "gva"),
    [
        (LEVEL4, 0x0000_8000_0000_0000),
        (LEVEL4, 0xFFFF_7FFF_FFFF_F000),
        (LEVEL4, 0x00FF_FFFF_FFFF_FFFF),
        (LEVEL5, 0x0100_0000_0000_0000),
        (LEVEL5, 0xFEFF_FFFF_FFFF_FFFF),
        (LEVEL5, 0x8000_0000_0000_0000),
    ],
)
def test_non_canonical_address_is_a_gp_not_a_page_fault(mode: PagingMode, gva: int) -> None:
    """SDM 3.3.7.1 / 6.15: a non-canonical linear address raises #GP(0) before any walk."""
    t = Tables(mode)
    t.map(0, 0x1000)
    before = t.snapshot()
    result = walk(t.mem, t.cpu(), gva, WRITE)
    assert isinstance(result, GeneralProtection)
    assert (result.vector, result.address) == (13, gva)
    assert "canonical" in result.reason
    assert t.snapshot() == before


def test_five_level_paging_accepts_57_bit_addresses() -> None:
    """With CR4.LA57 addresses canonical in 57 bits are walked (here: not present)."""
    t = Tables(LEVEL5)
    gva = 0x0000_8000_0000_0000  # non-canonical with 4-level paging
    assert isinstance(fault(walk(t.mem, t.cpu(), gva)), PageFault)
    t.map(gva, 0x9000)
    assert ok(walk(t.mem, t.cpu(), gva | 0x10)).gpa == 0x9010


@pytest.mark.parametrize("mode", [BITS32, PAE])
def test_32_bit_modes_refuse_wider_addresses(mode: PagingMode) -> None:
    """32-bit and PAE paging translate 32-bit linear addresses; wider is an input error."""
    t = Tables(mode)
    with pytest.raises(AddressError, match="does not fit in 32 bits"):
        walk(t.mem, t.cpu(), 1 << 32)


# --------------------------------------------------------------------------------------------
# The permission matrix (SDM 4.6) and error codes (SDM 4.7)
# --------------------------------------------------------------------------------------------

MATRIX_PAGES = [
    # (U/S, R/W, XD) of the PDE, then of the PTE
    (pde, pte)
    for pde in itertools.product([False, True], repeat=3)
    for pte in itertools.product([False, True], repeat=3)
]


def _entry_flags(us: bool, rw: bool, xd: bool) -> int:
    return P | (U if us else 0) | (W if rw else 0) | (XD if xd else 0)


@pytest.mark.parametrize("mode", [BITS32, PAE, LEVEL4, LEVEL5])
def test_permission_matrix_matches_sdm_4_6_and_4_7(mode: PagingMode) -> None:
    """SDM 4.6/4.7: U/S x R/W x XD at two levels x CR0.WP x EFER.NXE x SMEP x SMAP x AC x
    CPL 0/3 x read/write/fetch, explicit and implicit, against the SDM's prose.

    Rights combine across levels: user-mode only if U/S=1 at every level, writable only if
    R/W=1 at every level, execute-disabled if XD=1 at any level. XD with NXE=0 is a reserved
    bit (RSVD fault); 32-bit entries have no XD bit at all.
    """
    t = Tables(mode)
    pages = [p for p in MATRIX_PAGES if mode is not BITS32 or not (p[0][2] or p[1][2])]
    level2_shift = 22 if mode is BITS32 else 21
    gvas = []
    for i, (pde, pte) in enumerate(pages):
        gva = (i + 1) << level2_shift
        t.map(gva, 0x40_0000 + (i << 12), flags={2: _entry_flags(*pde), 1: _entry_flags(*pte)})
        gvas.append(gva)
    before = t.snapshot()
    mismatches = []
    checked = 0
    for wp, nxe, smep, smap, ac, cpl in itertools.product([False, True], repeat=6):
        cpu = t.cpu(wp=wp, nxe=nxe, smep=smep, smap=smap, ac=ac, cpl=3 if cpl else 0)
        for (pde, pte), gva in zip(pages, gvas, strict=True):
            page = {
                "user_address": pde[0] and pte[0],
                "writable": pde[1] and pte[1],
                "xd": pde[2] or pte[2],
            }
            for kind, implicit in ACCESS_KINDS:
                s = situation_of(cpu, mode, kind, implicit, **page)
                got = walk(t.mem, cpu, gva, kind, implicit=implicit, set_ad=False)
                if s.xd and not s.nxe:  # SDM 4.4.2/4.5: XD is reserved when NXE = 0
                    want: object = ("#PF", sdm_error_code(s, rsvd=True))
                elif sdm_allows(s):
                    want = ("ok", sdm_rights(s))
                else:
                    want = ("#PF", sdm_error_code(s))
                have = (
                    ("ok", got.access)
                    if isinstance(got, WalkResult)
                    else ("#PF", int(got.error_code))
                    if isinstance(got, PageFault)
                    else got
                )
                checked += 1
                if have != want:
                    mismatches.append((s, want, have))
    assert not mismatches, f"{len(mismatches)} of {checked} differ, e.g. {mismatches[:3]}"
    assert t.snapshot() == before  # set_ad=False: the walk only reads


@pytest.mark.parametrize("mode", [BITS32, PAE, LEVEL4, LEVEL5])
def test_rights_combine_over_every_level(mode: PagingMode) -> None:
    """SDM 4.6.1: one supervisor, read-only or XD entry at any level restricts the page
    (PAE PDPTEs carry no rights, so they restrict nothing)."""
    levels = {BITS32: 2, PAE: 3, LEVEL4: 4, LEVEL5: 5}[mode]
    for level in range(1, levels + 1):
        if mode is PAE and level == 3:
            continue
        restrictions = [(PRW & ~U, READ, EC_P | EC_U), (PRW & ~W, WRITE, EC_P | EC_W | EC_U)]
        if mode is not BITS32:
            restrictions.append((PRW | XD, FETCH, EC_P | EC_U | EC_ID))
        for entry_flags, kind, code in restrictions:
            t = Tables(mode)
            t.map(0x1000, 0x9000, flags={level: entry_flags})
            user = t.cpu(cpl=3, wp=True, nxe=True)
            assert fault(walk(t.mem, user, 0x1000, kind)).error_code == code, (level, kind)
            others = [k for k in (READ, WRITE, FETCH) if k is not kind and code & EC_U == 0]
            for other in others:
                assert isinstance(walk(t.mem, user, 0x1000, other), WalkResult)


def test_supervisor_writes_ignore_rw_when_cr0_wp_is_0() -> None:
    """SDM 4.6: 'If CR0.WP = 0, data may be written to any supervisor-mode address'."""
    t = Tables(LEVEL4)
    t.map(0x1000, 0x5000, leaf=P)
    assert ok(walk(t.mem, t.cpu(wp=False), 0x1000, WRITE)).gpa == 0x5000
    assert fault(walk(t.mem, t.cpu(wp=True), 0x1000, WRITE)).error_code == EC_P | EC_W
    user = t.cpu(wp=False, cpl=3)
    t.map(0x2000, 0x6000, leaf=P | U)
    assert fault(walk(t.mem, user, 0x2000, WRITE)).error_code == EC_P | EC_W | EC_U


def test_smap_blocks_implicit_supervisor_accesses_even_with_ac() -> None:
    """SDM 4.6.1: EFLAGS.AC lifts SMAP only for explicit accesses; implicit ones (GDT, IDT,
    TSS), even at CPL 3, are supervisor-mode accesses that SMAP always blocks."""
    t = Tables(LEVEL4)
    t.map(0x1000, 0x5000)  # a user page
    for cpl in (0, 3):
        cpu = t.cpu(smap=True, ac=True, cpl=cpl)
        result = fault(walk(t.mem, cpu, 0x1000, READ, implicit=True))
        assert result.error_code == EC_P  # U/S=0: implicit accesses are supervisor-mode
    assert ok(walk(t.mem, t.cpu(smap=True, ac=True), 0x1000, READ)).gpa == 0x5000
    assert fault(walk(t.mem, t.cpu(smap=True, ac=False), 0x1000)).error_code == EC_P
    assert ok(walk(t.mem, t.cpu(smap=True, ac=False, cpl=3), 0x1000)).gpa == 0x5000


def test_smep_blocks_supervisor_fetches_from_user_pages() -> None:
    """SDM 4.6.1: with CR4.SMEP = 1 supervisor-mode fetches from user-mode addresses fault,
    whatever NXE and XD say; user-mode fetches are unaffected."""
    t = Tables(BITS32)
    t.map(0x1000, 0x5000)
    result = fault(walk(t.mem, t.cpu(smep=True, nxe=False), 0x1000, FETCH))
    assert result.error_code == EC_P | EC_ID  # SMEP makes I/D meaningful even in 32-bit mode
    assert ok(walk(t.mem, t.cpu(smep=True, cpl=3), 0x1000, FETCH)).gpa == 0x5000
    assert ok(walk(t.mem, t.cpu(smep=False), 0x1000, FETCH)).gpa == 0x5000


@pytest.mark.parametrize("mode", LONG_MODES)
def test_protection_key_matrix_matches_sdm_4_6_2(mode: PagingMode) -> None:
    """SDM 4.6.2: with CR4.PKE and IA-32e paging, PKRU.AD of the leaf's key (bits 62:59)
    forbids data accesses to user pages and PKRU.WD forbids user writes and, with
    CR0.WP = 1, supervisor writes; fetches and supervisor pages are never affected; the PK
    bit is set in the error code whenever the key denies, even if another rule also does."""
    t = Tables(mode)
    pages = []
    for i, (us, rw, key) in enumerate(itertools.product([False, True], [False, True], [0, 5, 15])):
        gva = (i + 1) << 21
        leaf = P | (U if us else 0) | (W if rw else 0) | (key << 59)
        t.map(gva, 0x20_0000 + (i << 12), leaf=leaf)
        pages.append((gva, us, rw, key))
    mismatches = []
    for ad, wd, pke, wp, smap, ac, cpl in itertools.product([False, True], repeat=7):
        for gva, us, rw, key in pages:
            mine = (int(ad) | int(wd) << 1) << (2 * key)
            others = 0xFFFF_FFFF & ~(3 << (2 * key))  # every other key the opposite way
            pkru = mine | (others if not (ad or wd) else 0)
            cpu = t.cpu(pke=pke, wp=wp, smap=smap, ac=ac, cpl=3 if cpl else 0, pkru=pkru)
            for kind, implicit in ACCESS_KINDS:
                s = situation_of(cpu, mode, kind, implicit, user_address=us, writable=rw, xd=False)
                s = dataclasses.replace(s, key_ad=ad, key_wd=wd)
                got = walk(t.mem, cpu, gva, kind, implicit=implicit, set_ad=False)
                want = ("ok", key) if sdm_allows(s) else ("#PF", sdm_error_code(s))
                have = (
                    ("ok", got.pkey)
                    if isinstance(got, WalkResult)
                    else ("#PF", fault(got).error_code)
                )
                if have != want:
                    mismatches.append((s, want, have))
    assert not mismatches, f"{len(mismatches)} differ, e.g. {mismatches[:3]}"


@pytest.mark.parametrize("mode", [BITS32, PAE])
def test_protection_keys_need_ia32e_paging(mode: PagingMode) -> None:
    """SDM 4.6.2: if IA-32e paging is not active, CR4.PKE has no effect."""
    t = Tables(mode)
    t.map(0x1000, 0x5000)
    cpu = t.cpu(pke=True, pkru=0xFFFF_FFFF, cpl=3)
    assert ok(walk(t.mem, cpu, 0x1000, WRITE)).gpa == 0x5000


@pytest.mark.parametrize(
    ("mode", "nxe", "smep", "id_bit"),
    [
        (BITS32, False, False, 0),
        (BITS32, True, False, 0),  # NXE means nothing to 32-bit paging (CR4.PAE = 0)
        (BITS32, False, True, EC_ID),
        (PAE, False, False, 0),
        (PAE, True, False, EC_ID),
        (PAE, False, True, EC_ID),
        (LEVEL4, False, False, 0),
        (LEVEL4, True, True, EC_ID),
        (LEVEL5, True, False, EC_ID),
    ],
)
def test_id_bit_only_when_nx_or_smep_make_it_meaningful(
    mode: PagingMode, nxe: bool, smep: bool, id_bit: int
) -> None:
    """SDM 4.7: I/D is 1 for an instruction fetch if CR4.SMEP = 1 or (CR4.PAE = 1 and
    IA32_EFER.NXE = 1); otherwise it is 0, for every kind of fault."""
    t = Tables(mode)
    t.map(0x7000, 0x5000, leaf=P | W)  # supervisor page: a user fetch is a protection fault
    cpu = t.cpu(nxe=nxe, smep=smep)
    assert fault(walk(t.mem, cpu, 0x80_0000, FETCH)).error_code == id_bit  # not present
    user = dataclasses.replace(cpu, cpl=3)
    assert fault(walk(t.mem, user, 0x7000, FETCH)).error_code == EC_P | EC_U | id_bit
    assert fault(walk(t.mem, user, 0x7000, READ)).error_code == EC_P | EC_U


@pytest.mark.parametrize("mode", PAGING_MODES)
def test_not_present_fault_error_code_and_cr2(mode: PagingMode) -> None:
    """SDM 4.7: P=0 for a not-present page; W/R and U/S describe the access; CR2 = address."""
    t = Tables(mode)
    gva = 0xFFFF_FFFF_FFFF_F123 if mode in LONG_MODES else 0xFFFF_F123
    for cpl, kind, implicit in itertools.product((0, 3), (READ, WRITE), (False, True)):
        cpu = t.cpu(cpl=cpl)
        result = fault(walk(t.mem, cpu, gva, kind, implicit=implicit))
        user = cpl == 3 and not implicit
        assert result.error_code == (EC_W if kind is WRITE else 0) | (EC_U if user else 0)
        assert result.cr2 == result.address == gva
        assert result.vector == 14
        assert isinstance(result.error_code, PfErr)


@pytest.mark.parametrize("mode", PAGING_MODES)
def test_not_present_at_each_level(mode: PagingMode) -> None:
    """The walk stops at the first entry with P = 0, whatever level it is at."""
    t = Tables(mode)
    gva = 0x1000
    where = t.map(gva, 0x5000)
    cpu = t.cpu()
    for level in range(1, t.levels + 1):
        if mode is PAE and level == 3:
            continue  # PDPTEs are registers: covered by the PDPTE tests
        t.write(where[level], t.read(where[level]) & ~P)
        result = fault(walk(t.mem, cpu, gva))
        assert result.error_code == 0
        assert result.steps[-1].level == level and "not present" in result.reason
        t.write(where[level], t.read(where[level]) | P)
    assert ok(walk(t.mem, cpu, gva)).gpa == 0x5000


# --------------------------------------------------------------------------------------------
# Reserved bits (SDM 4.3-4.5 tables, KVM __reset_rsvds_bits_mask)
# --------------------------------------------------------------------------------------------


def sdm_reserved(mode: PagingMode, level: int, ps: bool, m: int, nxe: bool, gb: bool) -> int:
    """Reserved bits of a present entry, spelled from the SDM's entry-format tables."""
    if mode is BITS32:  # tables 4-4 .. 4-6 (with CR4.PSE = 1 here)
        if level == 2 and ps:
            return bits(13 + min(m, 40) - 32, 21)  # PSE-36: bits (M-20):13 hold (M-1):32
        return 0
    xd = 0 if nxe else XD
    if mode is PAE:  # tables 4-10, 4-11: bits 62:M reserved in PDEs and PTEs
        high = bits(m, 62) | xd
        return high | (bits(13, 20) if level == 2 and ps else 0)
    high = bits(m, 51) | xd  # tables 4-15 .. 4-20: bits 51:M
    if level >= 4:
        return high | PS  # PS is reserved in a PML5E and a PML4E
    if level == 3 and ps:
        return high | bits(13, 29) | (0 if gb else PS)
    if level == 2 and ps:
        return high | bits(13, 20)
    return high


@pytest.mark.parametrize("mode", PAGING_MODES)
@pytest.mark.parametrize("maxphyaddr", [32, 36, 40, 46, 52])
@pytest.mark.parametrize("nxe", [False, True])
def test_reserved_masks_match_the_sdm_tables(mode: PagingMode, maxphyaddr: int, nxe: bool) -> None:
    """reserved_mask() per level, for PS clear and set, equals the SDM's entry formats."""
    t = Tables(mode)
    for gb in (False, True):
        cpu = dataclasses.replace(t.cpu(nxe=nxe, maxphyaddr=maxphyaddr), gbpages=gb)
        for level in range(1, t.levels + 1):
            if mode is PAE and level == 3:
                continue  # PDPTEs: table 4-8, checked at CR3 load (see the PDPTE tests)
            for ps in (False, True):
                want = sdm_reserved(mode, level, ps, maxphyaddr, nxe, gb)
                assert reserved_mask(cpu, level, ps) == want, (level, ps, gb)


def test_reserved_mask_rejects_levels_the_mode_lacks() -> None:
    """Level 0, or above the root, is an input error naming the mode."""
    t = Tables(PAE)
    with pytest.raises(ModeError, match="level 4 does not exist in PAE paging"):
        reserved_mask(t.cpu(), 4, False)
    with pytest.raises(ModeError, match="level 1 does not exist in paging off"):
        reserved_mask(cpu_for_mode(NONE), 1, False)


def _rsvd_cases() -> list[tuple[PagingMode, int, int, int]]:
    """(mode, leaf level, level holding the bad bit, bad bit) for every kind of reserved bit."""
    cases = []
    for mode in (PAE, LEVEL4, LEVEL5):
        levels = {PAE: 3, LEVEL4: 4, LEVEL5: 5}[mode]
        for level in range(1, levels + 1):
            if mode is PAE and level == 3:
                continue
            cases += [(mode, 1, level, 40), (mode, 1, level, 51 if mode is not PAE else 62)]
            cases.append((mode, 1, level, 63))  # XD with NXE = 0
        cases += [(mode, 2, 2, 13), (mode, 2, 2, 20)]  # 2 MiB page: bits 20:13
    for mode in LONG_MODES:
        cases += [(mode, 3, 3, 13), (mode, 3, 3, 29)]  # 1 GiB page: bits 29:13
        cases.append((mode, 1, 4, 7))  # PS in a PML4E
    cases.append((LEVEL5, 1, 5, 7))  # PS in a PML5E
    cases += [(BITS32, 2, 2, 21), (BITS32, 2, 2, 17)]  # 4 MiB PDE, MAXPHYADDR 36: 21:17
    return cases


@pytest.mark.parametrize(("mode", "leaf", "level", "bit"), _rsvd_cases())
def test_reserved_bit_gives_an_rsvd_fault(
    mode: PagingMode, leaf: int, level: int, bit: int
) -> None:
    """SDM 4.7: a reserved bit in any entry used gives #PF with P=1 and RSVD=1, plus the
    W/R, U/S and I/D bits of the access; nothing is written back."""
    t = Tables(mode)
    gva = 0x4000_0000 + 0x1000 if mode is not BITS32 else 0x4000_1000
    where = t.map(gva, 0x4000_0000 if leaf > 1 else 0x5000, level=leaf)
    t.write(where[level], t.read(where[level]) | (1 << bit))
    before = t.snapshot()
    maxphyaddr = 36 if mode is BITS32 else 40
    cpu = t.cpu(nxe=False, maxphyaddr=maxphyaddr, cpl=3, smep=True)
    for kind, extra in ((READ, 0), (WRITE, EC_W), (FETCH, EC_ID)):
        result = fault(walk(t.mem, cpu, gva, kind))
        assert result.error_code == EC_P | EC_RSVD | EC_U | extra
        assert result.steps[-1].level == level and "reserved" in result.reason
    assert t.snapshot() == before


@pytest.mark.parametrize("mode", LONG_MODES)
def test_bits_the_sdm_calls_ignored_do_not_fault(mode: PagingMode) -> None:
    """SDM 4.5: bits 11:8 of non-leaf entries, 11:9 of leaves, 58:52 everywhere and the
    protection key 62:59 (with CR4.PKE = 0) are ignored; so are PWT, PCD and G."""
    t = Tables(mode)
    gva = 0x4000_1000
    where = t.map(gva, 0x5000)
    noise = bits(52, 62) | bits(9, 11) | PWT | PCD
    for level in range(1, t.levels + 1):
        t.write(where[level], t.read(where[level]) | noise | (G if level > 1 else G | PS))
    result = ok(walk(t.mem, t.cpu(maxphyaddr=52), gva))
    assert result.gpa == 0x5000  # bit 7 of a PTE is PAT, not PS
    assert result.pkey == 15  # bits 62:59 all set


@pytest.mark.parametrize("mode", [BITS32, PAE, LEVEL4])
def test_reserved_bits_are_not_checked_in_a_not_present_entry(mode: PagingMode) -> None:
    """SDM 4.7: reserved bits are checked only when P = 1, so RSVD implies P."""
    t = Tables(mode)
    where = t.map(0x1000, 0x5000)
    t.write(where[1], 0xFFFF_FFFE if mode is BITS32 else (1 << 64) - 2)
    assert fault(walk(t.mem, t.cpu(nxe=False), 0x1000, WRITE)).error_code == EC_W


def test_reserved_bit_above_stops_the_walk_before_a_not_present_entry_below() -> None:
    """The walk checks each entry as it reads it, root first: RSVD at the PML4E wins."""
    t = Tables(LEVEL4)
    where = t.map(0x1000, 0x5000)
    t.write(where[4], t.read(where[4]) | (1 << 45))
    t.write(where[1], 0)
    assert fault(walk(t.mem, t.cpu(maxphyaddr=40), 0x1000)).error_code == EC_P | EC_RSVD


def test_maxphyaddr_52_leaves_no_high_address_bits_reserved() -> None:
    """With MAXPHYADDR = 52, bits 51:12 are all address bits."""
    t = Tables(LEVEL4)
    t.map(0x1000, 0xF_FFFF_FFFF_F000)
    assert ok(walk(t.mem, t.cpu(maxphyaddr=52), 0x1000)).gpa == 0xF_FFFF_FFFF_F000
    assert fault(walk(t.mem, t.cpu(maxphyaddr=51), 0x1000)).error_code == EC_P | EC_RSVD


# --------------------------------------------------------------------------------------------
# Accessed and dirty bits (SDM 4.8; KVM update_accessed_dirty_bits)
# --------------------------------------------------------------------------------------------

LEAF_CASES = [
    (BITS32, 1),
    (BITS32, 2),
    (PAE, 1),
    (PAE, 2),
    (LEVEL4, 1),
    (LEVEL4, 2),
    (LEVEL4, 3),
    (LEVEL5, 1),
    (LEVEL5, 3),
]


def _entries_with_rights(t: Tables, where: dict[int, int]) -> dict[int, int]:
    """The entries a walk sets A in: every level except the PAE PDPTE registers."""
    return {lv: gpa for lv, gpa in where.items() if not (t.mode is PAE and lv == 3)}


@pytest.mark.parametrize(("mode", "leaf"), LEAF_CASES)
@pytest.mark.parametrize("kind", [READ, FETCH])
def test_read_or_fetch_sets_accessed_on_every_entry_and_no_dirty(
    mode: PagingMode, leaf: int, kind: Access
) -> None:
    """SDM 4.8: the processor sets A in every paging-structure entry it uses; D only on a
    write. PAE PDPTEs have no A bit (bit 5 is reserved there)."""
    t = Tables(mode)
    gva = 0x4060_3000
    where = t.map(gva, 0x80_0000 if leaf == 1 else 0, level=leaf)
    pdpte_before = t.read(where[3]) if mode is PAE else None
    ok(walk(t.mem, t.cpu(), gva, kind))
    for level, gpa in _entries_with_rights(t, where).items():
        assert t.read(gpa) & (A | D) == A, f"level {level}"
    if mode is PAE:
        assert t.read(where[3]) == pdpte_before


@pytest.mark.parametrize(("mode", "leaf"), LEAF_CASES)
def test_write_sets_dirty_on_the_leaf_only(mode: PagingMode, leaf: int) -> None:
    """SDM 4.8: a write sets D in the entry that maps the page (PTE, or a large-page PDE /
    PDPTE), and A everywhere; D is never set in a non-leaf entry."""
    t = Tables(mode)
    gva = 0x4060_3000
    where = t.map(gva, 0x80_0000 if leaf == 1 else 0, level=leaf)
    ok(walk(t.mem, t.cpu(), gva, WRITE))
    for level, gpa in _entries_with_rights(t, where).items():
        assert t.read(gpa) & (A | D) == (A | D if level == leaf else A), f"level {level}"


@pytest.mark.parametrize("mode", PAGING_MODES)
def test_a_faulting_access_changes_no_entry(mode: PagingMode) -> None:
    """KVM: A/D bits are written only after the permission check passes (hardware may set
    upper A bits first; the walker follows KVM). Covers protection, PK, not-present and
    RSVD faults."""
    t = Tables(mode)
    t.map(0x1000, 0x5000, leaf=P | U)  # read-only user page
    t.map(0x40_1000, 0x6000, leaf=P | W)  # supervisor page
    if mode is not BITS32:
        where = t.map(0x80_1000, 0x7000)
        t.write(where[1], t.read(where[1]) | (1 << 45))  # reserved with MAXPHYADDR 40
    before = t.snapshot()
    user = t.cpu(cpl=3, maxphyaddr=40)
    assert isinstance(walk(t.mem, user, 0x1000, WRITE), PageFault)
    assert isinstance(walk(t.mem, user, 0x40_1000, READ), PageFault)
    assert isinstance(walk(t.mem, user, 0xC0_1000, READ), PageFault)
    if mode is not BITS32:
        assert isinstance(walk(t.mem, user, 0x80_1000, READ), PageFault)
    if mode in LONG_MODES:
        keyed = t.cpu(cpl=3, pke=True, pkru=0b01)  # key 0: access disabled
        assert fault(walk(t.mem, keyed, 0x1000, READ)).error_code & EC_PK
    assert t.snapshot() == before


@pytest.mark.parametrize(("mode", "leaf"), LEAF_CASES)
@pytest.mark.parametrize("kind", [READ, WRITE])
def test_update_accessed_dirty_with_the_walks_entry_gpas_sets_the_same_bits(
    mode: PagingMode, leaf: int, kind: Access
) -> None:
    """``update_accessed_dirty`` given the walk's own ``entry_gpas()`` (as the two-dimensional
    walk passes them) sets exactly the bits it sets when it works them out itself."""
    snapshots = []
    for pass_gpas in (False, True):
        t = Tables(mode)
        gva = 0x4060_3000
        t.map(gva, 0x80_0000 if leaf == 1 else 0, level=leaf)
        result = ok(walk(t.mem, t.cpu(), gva, kind, set_ad=False))
        update_accessed_dirty(
            t.mem, result, kind is WRITE, result.entry_gpas() if pass_gpas else None
        )
        snapshots.append(t.snapshot())
    assert snapshots[0] == snapshots[1]


def test_update_accessed_dirty_refuses_entry_gpas_of_another_walk() -> None:
    """The addresses must be the walk's own, one per entry it read."""
    t = Tables(PagingMode.LEVEL4)
    t.map(0x1000, 0x5000)
    result = ok(walk(t.mem, t.cpu(), 0x1000, READ, set_ad=False))
    with pytest.raises(ModeError, match="the walk's own entry_gpas"):
        update_accessed_dirty(t.mem, result, False, result.entry_gpas()[1:])


@pytest.mark.parametrize("mode", PAGING_MODES)
def test_set_ad_false_only_reads(mode: PagingMode) -> None:
    """walk(..., set_ad=False) translates without writing guest memory."""
    t = Tables(mode)
    t.map(0x1000, 0x5000)
    before = t.snapshot()
    assert ok(walk(t.mem, t.cpu(), 0x1000, WRITE, set_ad=False)).gpa == 0x5000
    assert t.snapshot() == before


def test_ad_updates_mark_the_table_pages_dirty() -> None:
    """KVM: kvm_vcpu_mark_page_dirty(table_gfn) after each A/D update, and only then."""
    t = Tables(LEVEL4)
    where = t.map(0x1000, 0x5000)
    slot = t.mem.slots.find(0)
    assert slot is not None
    t.mem.slots.set_flags(slot.slot_id, MemslotFlag.LOG_DIRTY_PAGES)
    ok(walk(t.mem, t.cpu(), 0x1000))
    dirty = {int(g) for g in slot.dirty_bitmap.nonzero()[0]}
    assert dirty == {gpa >> 12 for gpa in where.values()}
    slot.dirty_bitmap[:] = False
    ok(walk(t.mem, t.cpu(), 0x1000))  # A already set everywhere: nothing to write
    assert not slot.dirty_bitmap.any()
    ok(walk(t.mem, t.cpu(), 0x1000, WRITE))  # only the PTE changes (D)
    assert {int(g) for g in slot.dirty_bitmap.nonzero()[0]} == {where[1] >> 12}


def reload_as_rom(mem: GuestMemory, slot_id: int) -> None:
    """Turn a RAM slot into a ROM with the same contents, as a VMM loading a ROM image does.

    KVM cannot flip KVM_MEM_READONLY on a live slot, so the slot is deleted and created again
    read-only, and its pages are written back from the host side (not through the guest).
    """
    slot = mem.slots.get(slot_id)
    base, size = slot.base_gfn << 12, slot.npages << 12
    image = mem.read_bytes(base, size)
    mem.slots.delete(slot_id)
    mem.slots.add(base >> 12, size >> 12, MemslotFlag.READONLY)
    mem.write_bytes(base, image)


def test_tables_in_a_readonly_memslot_are_walked_but_not_updated() -> None:
    """KVM: A/D bits are not written into a read-only memslot (pte_writable is false)."""
    t = Tables(LEVEL4)
    where = t.map(0x1000, 0x5000)
    reload_as_rom(t.mem, 0)
    ok(walk(t.mem, t.cpu(), 0x1000, WRITE))
    assert all(t.read(gpa) & (A | D) == 0 for gpa in where.values())


def test_accessed_bits_of_a_loop_accumulate() -> None:
    """An entry used at several levels of one walk ends with every bit any use set."""
    t = Tables(LEVEL4)
    t.write(t.root, t.root | PRW)  # PML4E 0 points back at the PML4 itself
    result = ok(walk(t.mem, t.cpu(), 0x0000_0000_0000_0123, WRITE))
    assert (result.level, result.gpa) == (1, t.root | 0x123)
    assert t.read(t.root) == t.root | PRW | A | D


# --------------------------------------------------------------------------------------------
# Malformed tables must neither hang nor crash
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", PAGING_MODES)
def test_self_referencing_tables_end_after_one_visit_per_level(mode: PagingMode) -> None:
    """A table that points at itself (the 'recursive mapping' trick) ends the walk after
    root_level reads, at the table's own page."""
    t = Tables(mode)
    if mode is PAE:  # PDPTE 0 -> PD; PDE 0 -> PD itself
        where = t.map(0, 0x5000)
        pd = t.next_table(t.read(where[3]))
        t.write(pd, pd | PRW)
        result = ok(walk(t.mem, t.cpu(), 0x42))
        assert result.gpa == pd | 0x42
    else:
        t.write(t.root, t.root | PRW)
        result = ok(walk(t.mem, t.cpu(), 0x42))
        assert (result.gpa, len(result.trace)) == (t.root | 0x42, t.levels)


@pytest.mark.parametrize("mode", PAGING_MODES)
def test_table_outside_guest_memory_is_a_not_present_fault(mode: PagingMode) -> None:
    """KVM walk_addr_generic: a table gfn outside every memslot reads as not present
    (error code without P), instead of crashing or reading garbage."""
    t = Tables(mode, size=16 * MiB)
    where = t.map(0x1000, 0x5000)
    cpu = t.cpu()
    for level in range(t.levels, 1, -1):
        if mode is PAE and level == 3:
            continue
        saved = t.read(where[level])
        t.write(where[level], (0x8000_0000 if mode is BITS32 else 0x1_0000_0000) | PRW)
        result = fault(walk(t.mem, dataclasses.replace(cpu, cpl=3), 0x1000, WRITE))
        assert result.error_code == EC_W | EC_U
        assert "outside guest memory" in result.reason
        t.write(where[level], saved)


@pytest.mark.parametrize("mode", [BITS32, LEVEL4, LEVEL5])
def test_cr3_outside_guest_memory_is_a_not_present_fault(mode: PagingMode) -> None:
    """The root table itself may be missing: not-present fault, no crash."""
    cpu = cpu_for_mode(mode, cr3=0x4000_0000)
    assert fault(walk(GuestMemory(MiB), cpu, 0x1000)).error_code == 0


def test_a_leaf_outside_guest_memory_still_translates() -> None:
    """Only tables must be readable; the final gpa may be MMIO or a hole."""
    t = Tables(LEVEL4, size=MiB * 2)
    t.map(0x1000, 0xFE_E000_0000)
    assert ok(walk(t.mem, t.cpu(), 0x1000, WRITE)).gpa == 0xFE_E000_0000


# --------------------------------------------------------------------------------------------
# Results, traces and bad input
# --------------------------------------------------------------------------------------------


def test_walk_result_exposes_kvms_walker_fields() -> None:
    """gfn, table_gfn, gpte and pt_access mirror struct guest_walker."""
    t = Tables(LEVEL4)
    where = t.map(0x1000, 0x5000, flags={3: P | U, 1: P | W | U | XD})
    result = ok(walk(t.mem, t.cpu(), 0x1000))
    assert result.gfn == 5
    assert result.table_gfn(1) == where[1] >> 12
    assert result.gpte(3) & ~A == t.next_table(t.read(where[3])) | P | U
    assert result.pt_access(4) == Acc.ALL  # nothing above the root
    assert result.pt_access(2) == Acc.USER | Acc.EXEC  # the PDPTE is read-only
    assert result.access == Acc.USER  # and the PTE is XD
    assert result.pte & ~A == 0x5000 | P | W | U | XD
    with pytest.raises(ModeError, match="no entry at level 5"):
        result.gpte(5)


def test_trace_describes_each_level_in_one_line() -> None:
    """The walk trace reads like OSTEP's worked answers: one line per level."""
    t = Tables(LEVEL4)
    t.map(0x1000, 0x5000)
    steps = ok(walk(t.mem, t.cpu(), 0x1000)).trace
    assert all(isinstance(s, WalkStep) for s in steps)
    assert steps[0].describe().startswith("PML4E[0x000] @ 0x100000 = ")
    assert "next table" in steps[0].decision
    assert steps[-1].decision.startswith("leaf, 4 KiB page") and "gpa 0x5000" in steps[-1].decision
    bad = fault(walk(t.mem, t.cpu(), 0x2000))
    assert bad.steps[-1].decision == "fault: not present"


def test_walk_many_walks_each_address() -> None:
    """walk_many is walk() over a list, with the same registers."""
    t = Tables(PAE)
    t.map(0x1000, 0x5000)
    results = walk_many(t.mem, t.cpu(), [0x1000, 0x2000])
    assert isinstance(results[0], WalkResult) and isinstance(results[1], PageFault)


@pytest.mark.parametrize(
    ("gva", "hint"),
    [(-1, "gva"), (1 << 64, "gva"), ("0x1000", "gva must be an int"), (4096.0, "int")],
)
def test_bad_addresses_are_address_errors(gva: object, hint: str) -> None:
    """A gva is an int below 2**64; anything else is an input error, not a guest fault."""
    t = Tables(LEVEL4)
    with pytest.raises(AddressError, match=hint):
        walk(t.mem, t.cpu(), gva)  # type: ignore[arg-type]


def test_bad_access_kind_is_a_mode_error() -> None:
    """The access kind is an Access member; strings and booleans are refused with the fix."""
    t = Tables(LEVEL4)
    for bad in ("write", True, 1):
        with pytest.raises(ModeError, match=r"Access\.READ, Access\.WRITE or Access\.FETCH"):
            walk(t.mem, t.cpu(), 0, bad)  # type: ignore[arg-type]


def test_wrong_memory_or_cpu_objects_are_typed_errors() -> None:
    """walk(memory, cpu, ...) names the type it needs instead of failing deep inside."""
    t = Tables(LEVEL4)
    with pytest.raises(ModeError, match="cpu must be a CpuState"):
        walk(t.mem, {"cr3": 0}, 0)  # type: ignore[arg-type]
    with pytest.raises(MemslotError, match="memory must be a GuestMemory"):
        walk(bytearray(4096), t.cpu(), 0)  # type: ignore[arg-type]
    with pytest.raises(ModeError, match="cpu must be a CpuState"):
        load_cr3(t.mem, None, 0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "error", "hint"),
    [
        ({"cpl": 4}, ModeError, "cpl must be 0, 1, 2 or 3"),
        ({"cpl": -1}, ModeError, "cpl"),
        ({"cpl": True}, ModeError, "cpl"),
        ({"cpl": "3"}, ModeError, "cpl"),
        ({"cr0": -1}, AddressError, "cr0"),
        ({"cr4": 1 << 64}, AddressError, "cr4"),
        ({"efer": "0"}, AddressError, "efer"),
        ({"pkru": 1 << 32}, AddressError, "pkru"),
        ({"maxphyaddr": 64}, AddressError, "maxphyaddr"),
        ({"gbpages": "yes"}, ModeError, "gbpages"),
        ({"cr0": int(Cr0.PG)}, ModeError, "CR0.PE"),
        ({"cr0": int(Cr0.PE | Cr0.PG), "efer": int(Efer.LME)}, ModeError, "LMA"),
        ({"cr0": int(Cr0.PE | Cr0.PG), "cr4": int(Cr4.PAE)}, ModeError, "load_cr3"),
        (
            {"cr0": int(Cr0.PE | Cr0.PG), "cr4": int(Cr4.PAE), "pdptes": (1 | 1 << 5, 0, 0, 0)},
            ModeError,
            "PDPTE0=0x21 sets reserved bits 0x20",
        ),
        (
            {"cr0": int(Cr0.PE | Cr0.PG), "cr4": int(Cr4.PAE), "pdptes": (0, 0, 0)},
            ModeError,
            "four PDPTEs",
        ),
        (
            {"cr0": int(Cr0.PE | Cr0.PG), "cr4": int(Cr4.PAE), "pdptes": (0, 0, 0, -1)},
            AddressError,
            r"pdptes\[3\]",
        ),
    ],
)
def test_impossible_cpu_states_are_typed_errors(
    fields: dict[str, object], error: type[KvmmuError], hint: str
) -> None:
    """CpuState refuses register values no CPU can hold, with a message naming the fix."""
    with pytest.raises(error, match=hint):
        CpuState(**fields)  # type: ignore[arg-type]


def test_long_mode_cr3_load_checks_maxphyaddr_and_drops_the_pcid_noflush_bit() -> None:
    """SDM 4.5 / MOV CR3: bits at or above MAXPHYADDR #GP; with CR4.PCIDE, bit 63 is the
    no-flush hint and is not stored."""
    mem = GuestMemory(MiB)
    cpu = cpu_for_mode(LEVEL4, maxphyaddr=40)
    bad = load_cr3(mem, cpu, 1 << 40)
    assert isinstance(bad, GeneralProtection) and "MAXPHYADDR=40" in bad.reason
    assert isinstance(load_cr3(mem, cpu, 1 << 63 | 0x1000), GeneralProtection)
    pcid = dataclasses.replace(cpu, cr4=cpu.cr4 | Cr4.PCIDE)
    loaded = load_cr3(mem, pcid, 1 << 63 | 0x1000 | 0x5)
    assert isinstance(loaded, CpuState) and loaded.cr3 == 0x1005
    assert loaded.root_gpa == 0x1000  # the PCID in bits 11:0 is not an address


@pytest.mark.parametrize("mode", ["4-level", None, 4, 1.5, "LEVEL4", PagingMode.LEVEL4.spec])
def test_cpu_for_mode_refuses_what_is_not_a_paging_mode(mode: object) -> None:
    """A string, None or a level count used to fall through to 32-bit paging silently."""
    with pytest.raises(ModeError, match="mode must be a PagingMode"):
        cpu_for_mode(mode)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["wp", "nxe", "pse", "pge", "smep", "smap", "pke", "ac"])
@pytest.mark.parametrize("value", ["no", 1, None])
def test_cpu_for_mode_feature_switches_are_booleans(name: str, value: object) -> None:
    """A truthy "no" must not turn a feature on."""
    with pytest.raises(ModeError, match=name):
        cpu_for_mode(LEVEL4, **{name: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("maxphyaddr", [36, 40, 52])
@pytest.mark.parametrize("mode", LONG_MODES)
def test_cpu_state_refuses_cr3_bits_above_maxphyaddr_in_long_mode(
    mode: PagingMode, maxphyaddr: int
) -> None:
    """kvm_set_cr3: CR3 bits at or above MAXPHYADDR are reserved (kvm_vcpu_is_illegal_gpa),
    so no CPU holds them; the state used to keep them and root_gpa silently dropped them.
    A MOV to CR3 with them is the guest's #GP (load_cr3 returns it as a value)."""
    base = cpu_for_mode(mode, maxphyaddr=maxphyaddr)
    top = (1 << maxphyaddr) - 0x1000
    assert replace(base, cr3=top).root_gpa == top  # the highest legal table is fine
    for cr3 in (1 << maxphyaddr, (1 << 63) | 0x1000):
        with pytest.raises(ModeError, match="MAXPHYADDR"):
            replace(base, cr3=cr3)
        with pytest.raises(ModeError, match="MAXPHYADDR"):
            cpu_for_mode(mode, cr3=cr3, maxphyaddr=maxphyaddr)
        assert isinstance(load_cr3(GuestMemory(MiB), base, cr3), GeneralProtection)


@pytest.mark.parametrize("mode", [NONE, BITS32, PAE])
def test_cpu_state_refuses_cr3_above_4gib_outside_long_mode(mode: PagingMode) -> None:
    """Outside IA-32e mode CR3 is a 32-bit register: a state holding more is impossible."""
    with pytest.raises(ModeError, match="32 bits"):
        cpu_for_mode(mode, cr3=1 << 32)
    assert cpu_for_mode(mode, cr3=0xFFFF_F000).cr3 == 0xFFFF_F000


@pytest.mark.parametrize("mode", [NONE, BITS32, PAE])
def test_pcide_needs_long_mode(mode: PagingMode) -> None:
    """kvm_set_cr4 refuses CR4.PCIDE unless is_long_mode(); SDM 4.10.1: MOV to CR4 #GPs."""
    cpu = cpu_for_mode(mode)
    with pytest.raises(ModeError, match="PCIDE"):
        replace(cpu, cr4=cpu.cr4 | Cr4.PCIDE)
    long = cpu_for_mode(LEVEL4)
    assert replace(long, cr4=long.cr4 | Cr4.PCIDE).cr4 & Cr4.PCIDE


def test_32bit_cr3_load_keeps_32_bits() -> None:
    """Outside IA-32e mode CR3 is a 32-bit register."""
    loaded = load_cr3(GuestMemory(MiB), cpu_for_mode(BITS32), 0x1_0000_3018)
    assert isinstance(loaded, CpuState) and loaded.cr3 == 0x3018 and loaded.root_gpa == 0x3000


# --------------------------------------------------------------------------------------------
# Property: random tables, compared with a reference walker written from the SDM
# --------------------------------------------------------------------------------------------

RAM_PAGES = 6  # gfns 0..5 are RAM, gfn 6 is a read-only slot, gfns 7 and 8 are holes
ROM_GFN = 6
TARGET_GFNS = [*range(9), 0x12345]  # the last is a far data page (or a missing table)
INDEX_CHOICES = {4: [0, 1, 2, 1023], 8: [0, 1, 2, 511]}


@dataclass(frozen=True)
class RefOutcome:
    kind: str  # "ok", "#PF" or "#GP"
    gpa: int = 0
    level: int = 0
    size: int = 0
    code: int = 0
    entries: tuple[tuple[int, int], ...] = ()  # (entry gpa, bits to set) for A/D


def reference_walk(
    mem: GuestMemory, cpu: CpuState, gva: int, kind: Access, implicit: bool
) -> RefOutcome:
    """Translate ``gva`` the way SDM 4.3-4.7 describes, with KVM's choices where it decides.

    Written from the entry formats, independently of kvmmu.hw.walk: it reads entries with
    GuestMemory.read and returns the entries whose A/D bits a successful access sets.
    """
    paging = bool(cpu.cr0 & Cr0.PG)
    if not paging:
        return RefOutcome("ok", gpa=gva, level=0, size=4096)
    pae = bool(cpu.cr4 & Cr4.PAE)
    ia32e = bool(cpu.efer & Efer.LMA)
    mode = (LEVEL5 if cpu.cr4 & Cr4.LA57 else LEVEL4) if ia32e else (PAE if pae else BITS32)
    if ia32e:
        width = 57 if mode is LEVEL5 else 48
        top = gva >> (width - 1)
        if top not in (0, (1 << (65 - width)) - 1):
            return RefOutcome("#GP")
    m = cpu.maxphyaddr
    nxe = bool(cpu.efer & Efer.NXE)
    probe = Situation(
        mode, kind, cpu.cpl, implicit, False, False, False, False, nxe,
        bool(cpu.cr4 & Cr4.SMEP), False, False,
    )  # fmt: skip

    def pf(present: bool, rsvd: bool = False) -> RefOutcome:
        return RefOutcome("#PF", code=sdm_error_code(probe, present=present, rsvd=rsvd))

    def read(gpa: int, size: int) -> int | None:
        if mem.slots.find(gpa >> 12) is None:
            return None  # KVM: a table outside every memslot -> not-present fault
        return mem.read(gpa, size)

    used: list[tuple[int, int, int]] = []  # (level, entry gpa, entry) of entries with A bits
    if mode is BITS32:
        pde_gpa = (cpu.cr3 & 0xFFFF_F000) | ((gva >> 22) << 2)
        pde = read(pde_gpa, 4)
        if pde is None or not pde & P:
            return pf(False)
        used.append((2, pde_gpa, pde))
        if cpu.cr4 & Cr4.PSE and pde & PS:
            pse_bits = min(m, 40) - 32
            if pde & bits(13 + pse_bits, 21):
                return pf(True, True)
            level, size = 2, 4 * MiB
            base = (pde & 0xFFC0_0000) | (((pde >> 13) & ((1 << pse_bits) - 1)) << 32)
        else:
            pte_gpa = (pde & 0xFFFF_F000) | (((gva >> 12) & 0x3FF) << 2)
            pte = read(pte_gpa, 4)
            if pte is None or not pte & P:
                return pf(False)
            used.append((1, pte_gpa, pte))
            level, size, base = 1, 4096, pte & 0xFFFF_F000
        key = 0
    else:
        addr = bits(12, m - 1)
        high = (bits(m, 62) if mode is PAE else bits(m, 51)) | (0 if nxe else XD)
        if mode is PAE:
            assert cpu.pdptes is not None
            pdpte = cpu.pdptes[(gva >> 30) & 3]
            if not pdpte & P:
                return pf(False)
            table, level = pdpte & addr, 2
        else:
            table, level = cpu.cr3 & addr, (5 if mode is LEVEL5 else 4)
        while True:
            entry_gpa = table + ((gva >> (12 + 9 * (level - 1))) & 0x1FF) * 8
            entry = read(entry_gpa, 8)
            if entry is None or not entry & P:
                return pf(False)
            used.append((level, entry_gpa, entry))
            large = bool(entry & PS) and level in (2, 3)
            rsvd = high
            if level >= 4 and entry & PS:
                rsvd |= PS  # PS is reserved in PML4Es and PML5Es
            if level == 3 and large:
                rsvd |= bits(13, 29) | (0 if cpu.gbpages else PS)
            if level == 2 and large:
                rsvd |= bits(13, 20)
            if entry & rsvd:
                return pf(True, True)
            if level == 1 or large:
                break
            table, level = entry & addr, level - 1
        size = 1 << (12 + 9 * (level - 1))
        base = entry & addr & ~(size - 1)
        key = (entry >> 59) & 0xF
    s = dataclasses.replace(
        probe,
        user_address=all(e & U for _, _, e in used),
        writable=all(e & W for _, _, e in used),
        xd=mode is not BITS32 and any(e & XD for _, _, e in used),
        wp=bool(cpu.cr0 & Cr0.WP),
        smap=bool(cpu.cr4 & Cr4.SMAP),
        ac=bool(cpu.rflags & Rflags.AC),
        pke=bool(cpu.cr4 & Cr4.PKE),
        key_ad=bool((cpu.pkru >> (2 * key)) & 1),
        key_wd=bool((cpu.pkru >> (2 * key + 1)) & 1),
    )
    if not sdm_allows(s):
        return RefOutcome("#PF", code=sdm_error_code(s))
    entries = tuple((gpa, A | (D if kind is WRITE and lv == level else 0)) for lv, gpa, _ in used)
    return RefOutcome("ok", gpa=base | (gva & (size - 1)), level=level, size=size, entries=entries)


def _guest_bytes(mem: GuestMemory) -> bytes:
    return mem.read_bytes(0, (ROM_GFN + 1) << 12)


def _make_entry(
    target_gfn: int, low: int, present: int, ps: int, high: tuple[int, ...], mid: int
) -> int:
    value = target_gfn << 12 | (low & ~(P | PS)) | present | ps
    for b in high:
        value |= 1 << b
    return value ^ mid


def _entries(maxphyaddr: int) -> st.SearchStrategy[int]:
    """Entries pointing at RAM, ROM, holes or far away, with random low flags and a few high
    bits around MAXPHYADDR, 51, the ignored 58:52, the protection key and XD."""
    high_bits = [maxphyaddr - 1, 51, 52, 58, 59, 60, 62, 63]
    if maxphyaddr < 52:
        high_bits.append(maxphyaddr)
    # Weighted choices keep many walks deep: usually present, PS now and then, mostly a
    # table in guest memory, a high bit in one entry out of five, rarely a flipped bit 29:12.
    # (st.one_of would not do for the weights: it treats equal branches as one.)
    some_high = [(b,) for b in high_bits] + [(high_bits[0], high_bits[-1])]
    high = [()] * (3 * len(some_high)) + some_high  # one entry in four
    mid = [0] * (11 * 18) + [1 << b for b in range(12, 30)]  # one entry in twelve
    return st.builds(
        _make_entry,
        st.sampled_from([*range(ROM_GFN + 1)] * 8 + TARGET_GFNS[ROM_GFN + 1 :]),
        st.integers(0, 0xFFF),
        st.sampled_from([P] * 7 + [0]),
        st.sampled_from([0, 0, 0, 0, 0, PS]),
        st.sampled_from(high),
        st.sampled_from(mid),
    )


ENTRIES = {m: _entries(m) for m in (32, 36, 40, 46, 52)}


@st.composite
def random_walks(draw: st.DrawFn, mode: PagingMode) -> tuple[object, ...]:
    """Random registers, random entries in every table slot a walk can reach, a random gva."""
    esize = 4 if mode is BITS32 else 8
    levels = {BITS32: 2, PAE: 3, LEVEL4: 4, LEVEL5: 5}[mode]
    maxphyaddr = draw(st.sampled_from([32, 36, 40, 46, 52] if mode is BITS32 else [36, 40, 52]))
    mem = GuestMemory(RAM_PAGES << 12)
    mem.slots.add(ROM_GFN, 1, MemslotFlag.READONLY)
    indices = INDEX_CHOICES[esize]
    slots = [(gfn << 12) + i * esize for gfn in range(ROM_GFN + 1) for i in [*indices, 3]]
    entries = draw(st.lists(ENTRIES[maxphyaddr], min_size=len(slots), max_size=len(slots)))
    for gpa, value in zip(slots, entries, strict=True):  # index 3 completes a PAE PDPT
        mem.write(gpa, value & (0xFFFF_FFFF if esize == 4 else (1 << 64) - 1), esize)
    gva = draw(st.integers(0, 0xFFF))
    for level in range(1, levels + 1):
        if mode is PAE and level == 3:
            gva |= draw(st.integers(0, 3)) << 30
        else:
            shift = 12 + (10 if esize == 4 else 9) * (level - 1)
            gva |= draw(st.sampled_from(indices)) << shift
    if mode in LONG_MODES:
        width = 57 if mode is LEVEL5 else 48
        if gva >> (width - 1):
            gva |= ((1 << 64) - 1) ^ ((1 << width) - 1)  # canonical upper half
        if draw(st.sampled_from([False] * 15 + [True])):
            gva ^= 1 << draw(st.integers(width, 63))  # now non-canonical
    flag = st.booleans()
    regs = {
        "wp": draw(flag),
        "nxe": draw(flag),
        "pse": draw(flag),
        "smep": draw(flag),
        "smap": draw(flag),
        "pke": draw(flag),
        "ac": draw(flag),
        "cpl": draw(st.sampled_from([0, 3])),
        "pkru": draw(st.integers(0, 0xFFFF_FFFF)),
        "maxphyaddr": maxphyaddr,
    }
    root_gfn = draw(st.sampled_from([0, 1, 2, 3, 4, 5, ROM_GFN, 7]))
    if mode is PAE and root_gfn <= ROM_GFN and draw(st.sampled_from([True] * 9 + [False])):
        for i in range(4):  # a PDPT that loads (random PDPTEs would nearly always #GP)
            pdpte = draw(st.sampled_from(TARGET_GFNS)) << 12
            pdpte |= draw(st.sampled_from([0, P, P, P])) | draw(st.sampled_from([0, PWT, PCD]))
            mem.write((root_gfn << 12) + 8 * i, pdpte)
    cr3 = root_gfn << 12 | draw(st.integers(0, 0xFFF) if mode is not PAE else st.just(0))
    if mode is PAE:
        cr3 |= draw(st.sampled_from([0, 0x8, 0x10, 0x18]))  # PWT/PCD, ignored bits
    gbpages = draw(flag)
    kind, implicit = draw(st.sampled_from(ACCESS_KINDS))
    return mem, regs, cr3, gbpages, gva, kind, implicit


def _check_random_walk(mode: PagingMode, case: tuple[object, ...]) -> None:
    mem, regs, cr3, gbpages, gva, kind, implicit = case
    assert isinstance(mem, GuestMemory) and isinstance(regs, dict)
    assert isinstance(cr3, int) and isinstance(gva, int) and isinstance(gbpages, bool)
    assert isinstance(kind, Access) and isinstance(implicit, bool)
    base = dataclasses.replace(cpu_for_mode(mode, **regs), gbpages=gbpages)
    if mode is PAE:
        loaded = load_cr3(mem, base, cr3)
        pdpt = (cr3 & 0xFFFF_FFE0) + 8 * 0
        pdptes = [mem.read(pdpt + 8 * i) if mem.slots.find(pdpt >> 12) else None for i in range(4)]
        if None in pdptes:
            assert isinstance(loaded, GeneralProtection)
            return
        bad = bits(1, 2) | bits(5, 8) | bits(base.maxphyaddr, 63)
        if any(e is not None and e & P and e & bad for e in pdptes):
            assert isinstance(loaded, GeneralProtection)
            return
        assert isinstance(loaded, CpuState)
        cpu = loaded
    else:
        cpu = dataclasses.replace(base, cr3=cr3 & ((1 << base.maxphyaddr) - 1))
    before = _guest_bytes(mem)
    want = reference_walk(mem, cpu, gva, kind, implicit)
    got = walk(mem, cpu, gva, kind, implicit=implicit)  # must not raise
    after = _guest_bytes(mem)
    if want.kind == "#GP":
        assert isinstance(got, GeneralProtection) and got.address == gva
        assert after == before
    elif want.kind == "#PF":
        assert isinstance(got, PageFault), got
        assert (int(got.error_code), got.cr2) == (want.code, gva)
        code = int(got.error_code)
        assert not code & EC_RSVD or code & EC_P  # RSVD implies P
        assert not code & EC_PK or (code & EC_P and kind is not FETCH)
        assert after == before, "a faulting walk must not change memory"
    else:
        assert isinstance(got, WalkResult), got
        assert (got.gpa, got.level, got.page_size) == (want.gpa, want.level, want.size)
        page_base = got.gpa & ~(got.page_size - 1)
        assert page_base <= got.gpa < page_base + got.page_size
        assert got.gpa & (got.page_size - 1) == gva & (got.page_size - 1)
        # Exactly the A/D bits of the entries used change, and not in the read-only slot.
        expected = bytearray(before)
        esize = 4 if mode is BITS32 else 8
        for gpa, set_bits in want.entries:
            if gpa >> 12 == ROM_GFN:
                continue
            value = int.from_bytes(expected[gpa : gpa + esize], "little") | set_bits
            expected[gpa : gpa + esize] = value.to_bytes(esize, "little")
        assert after == bytes(expected)
        steps = [s.entry_gpa for s in got.trace if not (mode is PAE and s.level == 3)]
        assert steps == [gpa for gpa, _ in want.entries]


@pytest.mark.parametrize("mode", PAGING_MODES)
@settings(max_examples=250, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_tables_match_the_reference_walker(mode: PagingMode, data: st.DataObject) -> None:
    """Property: on random tables with random flags (reserved ones included, loops, holes,
    a read-only slot) the walker never raises, returns WalkResult / PageFault /
    GeneralProtection exactly as the SDM-derived reference does, lands inside the leaf page,
    sets precisely the A bits of the entries used and D on a written leaf, and changes
    nothing on a fault."""
    _check_random_walk(mode, data.draw(random_walks(mode)))
