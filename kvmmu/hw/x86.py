"""x86 architectural definitions: control-register bits, page-table entry bits, paging modes.

Mirrors the constants KVM keeps in ``arch/x86/include/asm/kvm_host.h`` and
``arch/x86/kvm/mmu.h`` (``PT_*_MASK``, ``PFERR_*_MASK``, ``ACC_*_MASK``), and the paging
structures of the Intel SDM, volume 3, chapter 4. Nothing here knows about the MMU.

One paging-mode description (:class:`ModeSpec`) serves every mode, as ``paging_tmpl.h`` serves
32-bit, PAE/64-bit and EPT tables with one template: levels, bits per index, entry size.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntFlag

from kvmmu.errors import AddressError, ModeError, check_count, check_int

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = PAGE_SIZE - 1
ENTRIES_PER_TABLE = 512  # a 4 KiB table of 8-byte entries; 32-bit paging has 1024 of 4 bytes


class Cr0(IntFlag):
    """CR0 bits that matter to paging (SDM 2.5)."""

    PE = 1 << 0  # protected mode
    WP = 1 << 16  # supervisor writes honour R/W
    PG = 1 << 31  # paging


class Cr4(IntFlag):
    """CR4 bits that matter to paging (SDM 2.5)."""

    PSE = 1 << 4  # 4 MiB pages in 32-bit paging
    PAE = 1 << 5
    PGE = 1 << 7  # global pages survive a CR3 load
    LA57 = 1 << 12  # 5-level paging
    PCIDE = 1 << 17
    SMEP = 1 << 20
    SMAP = 1 << 21
    PKE = 1 << 22  # protection keys for user pages


class Efer(IntFlag):
    """IA32_EFER bits that matter to paging."""

    SCE = 1 << 0
    LME = 1 << 8  # long mode enable
    LMA = 1 << 10  # long mode active (LME and CR0.PG)
    NXE = 1 << 11  # execute-disable bit is honoured


class Rflags(IntFlag):
    """RFLAGS bits that matter to paging."""

    FIXED = 1 << 1  # always 1
    AC = 1 << 18  # alignment check / SMAP override for explicit supervisor accesses


class Pte(IntFlag):
    """Bits of a guest page-table entry (``PT_*_MASK`` in ``mmu.h``; SDM tables 4-4 .. 4-20)."""

    PRESENT = 1 << 0
    WRITABLE = 1 << 1
    USER = 1 << 2
    PWT = 1 << 3
    PCD = 1 << 4
    ACCESSED = 1 << 5
    DIRTY = 1 << 6
    PAGE_SIZE = 1 << 7  # PS in a PDE/PDPTE; PAT in a 4 KiB PTE
    GLOBAL = 1 << 8
    PAT_LARGE = 1 << 12  # PAT bit of a 2 MiB / 4 MiB / 1 GiB entry
    XD = 1 << 63  # execute disable (PAE and 4/5-level entries only)


PKEY_SHIFT = 59  # protection key: bits 62:59 of a 4/5-level leaf entry
PKEY_MASK = 0xF


class PfErr(IntFlag):
    """Page-fault error code bits (``PFERR_*_MASK``; SDM 4.7)."""

    PRESENT = 1 << 0  # 0: not-present page; 1: protection violation
    WRITE = 1 << 1
    USER = 1 << 2
    RSVD = 1 << 3  # a reserved bit was set in some paging-structure entry
    FETCH = 1 << 4  # instruction fetch (only when NX or SMEP make it meaningful)
    PK = 1 << 5  # protection-key violation


class Acc(IntFlag):
    """Access rights of a translation, KVM's ``ACC_*_MASK`` (``mmu.h``)."""

    NONE = 0
    EXEC = 1 << 0
    WRITE = 1 << 1
    USER = 1 << 2
    ALL = EXEC | WRITE | USER


class Access(Enum):
    """The kind of a memory access: a data read, a data write, or an instruction fetch."""

    READ = "read"
    WRITE = "write"
    FETCH = "fetch"

    # Members are singletons compared by identity, so identity can hash them too: Enum's own
    # __hash__ is Python code, run on every TLB lookup that keys on the access kind.
    __hash__ = object.__hash__


class PagingMode(Enum):
    """The guest's paging mode, from CR0.PG, CR4.PAE, EFER.LMA and CR4.LA57 (SDM table 4-1)."""

    NONE = "paging off"
    BITS32 = "32-bit"
    PAE = "PAE"
    LEVEL4 = "4-level"
    LEVEL5 = "5-level"

    __hash__ = object.__hash__  # as Access: members are singletons, hashed by identity

    @property
    def spec(self) -> ModeSpec:
        """The table geometry of this mode."""
        return MODE_SPECS[self]


@dataclass(frozen=True, slots=True)
class ModeSpec:
    """Geometry of one paging mode: what ``PTTYPE`` selects in ``paging_tmpl.h``.

    ``root_level`` counts the levels a walk visits (0 when paging is off); ``index_bits`` is the
    width of each level's index (10 for 32-bit paging, 9 otherwise; the PAE PDPT uses 2);
    ``entry_size`` is 4 or 8 bytes; ``va_bits`` is the width of a linear address.
    """

    mode: PagingMode
    root_level: int
    index_bits: int
    entry_size: int
    va_bits: int
    names: tuple[str, ...]  # entry names, from level 1 upwards

    def check_level(self, level: int) -> int:
        """Return ``level`` if this mode has it (1 .. ``root_level``), else raise ModeError."""
        # Fix: a level outside the mode used to give a silently wrong answer (entry_name(0)
        # returned the root's name through names[-1], shift(0) returned 3).
        if isinstance(level, bool) or not isinstance(level, int):
            raise ModeError(f"level must be an int, got {level!r}")
        if not 1 <= level <= self.root_level:
            have = f"levels 1..{self.root_level}" if self.root_level else "no levels"
            raise ModeError(
                f"level {level} does not exist in {self.mode.value} paging, which has {have}"
            )
        return level

    def shift(self, level: int) -> int:
        """Bit position of the lowest address bit that ``level`` indexes (``PT_LEVEL_SHIFT``)."""
        return PAGE_SHIFT + (self.check_level(level) - 1) * self.index_bits

    def index(self, addr: int, level: int) -> int:
        """Index of ``addr``'s entry in its level-``level`` table (``PT_INDEX``)."""
        check_int("addr", addr)
        bits = 2 if (self.mode is PagingMode.PAE and level == 3) else self.index_bits
        return (addr >> self.shift(level)) & ((1 << bits) - 1)

    def level_size(self, level: int) -> int:
        """Bytes mapped by one entry at ``level`` (4 KiB at level 1)."""
        return 1 << self.shift(level)

    def entry_name(self, level: int) -> str:
        """The SDM's name for an entry at ``level`` (PTE, PDE, PDPTE, PML4E, PML5E)."""
        return self.names[self.check_level(level) - 1]


MODE_SPECS: dict[PagingMode, ModeSpec] = {
    PagingMode.NONE: ModeSpec(PagingMode.NONE, 0, 0, 8, 32, ()),
    PagingMode.BITS32: ModeSpec(PagingMode.BITS32, 2, 10, 4, 32, ("PTE", "PDE")),
    PagingMode.PAE: ModeSpec(PagingMode.PAE, 3, 9, 8, 32, ("PTE", "PDE", "PDPTE")),
    PagingMode.LEVEL4: ModeSpec(PagingMode.LEVEL4, 4, 9, 8, 48, ("PTE", "PDE", "PDPTE", "PML4E")),
    PagingMode.LEVEL5: ModeSpec(
        PagingMode.LEVEL5, 5, 9, 8, 57, ("PTE", "PDE", "PDPTE", "PML4E", "PML5E")
    ),
}

PAGE_SIZES = {"4K": 1 << 12, "2M": 1 << 21, "4M": 1 << 22, "1G": 1 << 30}


def paging_mode(cr0: int, cr4: int, efer: int) -> PagingMode:
    """The paging mode selected by CR0, CR4 and EFER (SDM 4.1.1, table 4-1).

    Raises :class:`ModeError` for a combination that a CPU refuses to enter (the MOV to CR0 or
    WRMSR would #GP), naming the bit to fix.
    """
    # Fix: registers of the wrong type used to escape as TypeError; they are input errors.
    check_int("cr0", cr0)
    check_int("cr4", cr4)
    check_int("efer", efer)
    if cr0 & Cr0.PG and not cr0 & Cr0.PE:
        raise ModeError("CR0.PG=1 requires CR0.PE=1 (protected mode); set Cr0.PE too")
    lma = bool(efer & Efer.LMA)
    if lma and not (efer & Efer.LME and cr0 & Cr0.PG):
        raise ModeError("EFER.LMA=1 needs EFER.LME=1 and CR0.PG=1; LMA is set by the CPU from them")
    if efer & Efer.LME and cr0 & Cr0.PG and not lma:
        raise ModeError("EFER.LME=1 with CR0.PG=1 means long mode is active: set EFER.LMA too")
    if not cr0 & Cr0.PG:
        return PagingMode.NONE
    if lma:
        if not cr4 & Cr4.PAE:
            raise ModeError("long mode requires CR4.PAE=1 (enabling paging without it is a #GP)")
        return PagingMode.LEVEL5 if cr4 & Cr4.LA57 else PagingMode.LEVEL4
    return PagingMode.PAE if cr4 & Cr4.PAE else PagingMode.BITS32


def rsvd_bits(low: int, high: int) -> int:
    """A mask of bits ``low`` .. ``high`` inclusive (``rsvd_bits`` in ``mmu.h``); 0 if empty."""
    check_count("low", low, bits=7)
    check_count("high", high, bits=7)
    if high < low:
        return 0
    return ((1 << (high - low + 1)) - 1) << low


def is_canonical(addr: int, va_bits: int) -> bool:
    """True if bits 63 .. va_bits-1 of ``addr`` are all equal (SDM 3.3.7.1).

    No kernel counterpart (``is_noncanonical_address`` tests the opposite).
    """
    # One cheap test on the access path; the full check only names what is wrong.
    if type(addr) is not int or type(va_bits) is not int or addr < 0 or addr >> 64:
        _check_address(addr, va_bits)
    if not 0 < va_bits <= 64:
        _check_address(addr, va_bits)
    return _is_canonical(addr, va_bits)


def _is_canonical(addr: int, va_bits: int) -> bool:
    """:func:`is_canonical` without the argument checks, for callers that made them."""
    top = addr >> (va_bits - 1)
    return top == 0 or top == (1 << (64 - va_bits + 1)) - 1


def canonicalize(addr: int, va_bits: int) -> int:
    """Sign-extend an address from ``va_bits`` to 64 bits. No kernel counterpart."""
    _check_address(addr, va_bits)
    addr &= (1 << va_bits) - 1
    if addr >> (va_bits - 1):
        addr |= ((1 << 64) - 1) ^ ((1 << va_bits) - 1)
    return addr


def _check_address(addr: object, va_bits: object) -> None:
    check_int("addr", addr)
    check_count("va_bits", va_bits, minimum=1, bits=7)
    if isinstance(va_bits, int) and va_bits > 64:
        raise AddressError(f"va_bits={va_bits} is wider than 64; pass 32, 48 or 57")


def check_maxphyaddr(maxphyaddr: int) -> int:
    """Validate MAXPHYADDR (CPUID.80000008H:EAX[7:0]): 32 .. 52 bits."""
    if isinstance(maxphyaddr, bool) or not isinstance(maxphyaddr, int):
        raise AddressError(f"maxphyaddr must be an int, got {maxphyaddr!r}")
    if not 32 <= maxphyaddr <= 52:
        raise AddressError(f"maxphyaddr={maxphyaddr} is outside 32..52; x86 CPUs report 36..52")
    return maxphyaddr


def pdpte_rsvd_mask(maxphyaddr: int) -> int:
    """Reserved bits of a present PAE PDPTE, checked when CR3 is loaded (``pdptr_rsvd_bits``)."""
    check_maxphyaddr(maxphyaddr)
    return rsvd_bits(maxphyaddr, 63) | rsvd_bits(5, 8) | rsvd_bits(1, 2)


def describe_flags(entry: int) -> str:
    """A compact flag string for an entry, in the order QEMU's ``info tlb`` prints them."""
    check_int("entry", entry)
    return "".join(
        ch if entry & bit else "-"
        for ch, bit in (
            ("X", Pte.XD),
            ("G", Pte.GLOBAL),
            ("P", Pte.PAGE_SIZE),
            ("D", Pte.DIRTY),
            ("A", Pte.ACCESSED),
            ("C", Pte.PCD),
            ("T", Pte.PWT),
            ("U", Pte.USER),
            ("W", Pte.WRITABLE),
        )
    )
