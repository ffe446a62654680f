"""Specification of ``kvmmu.hw.x86``: paging modes, table geometry, canonical addresses, masks.

Each test names the rule of the Intel SDM, volume 3, chapter 4 (or KVM's ``mmu.h``) it checks.
"""

import pytest

from kvmmu.errors import AddressError, KvmmuError, ModeError
from kvmmu.hw.x86 import (
    MODE_SPECS,
    PAGE_SIZES,
    PKEY_MASK,
    PKEY_SHIFT,
    Acc,
    Cr0,
    Cr4,
    Efer,
    PagingMode,
    PfErr,
    Pte,
    canonicalize,
    check_maxphyaddr,
    describe_flags,
    is_canonical,
    paging_mode,
    pdpte_rsvd_mask,
    rsvd_bits,
)

PE, PG, WP = int(Cr0.PE), int(Cr0.PG), int(Cr0.WP)
PSE, PAE, LA57 = int(Cr4.PSE), int(Cr4.PAE), int(Cr4.LA57)
LME, LMA, NXE = int(Efer.LME), int(Efer.LMA), int(Efer.NXE)


def bits(*positions: int) -> int:
    """A mask with exactly the given bit positions set (written out, not computed by ranges)."""
    mask = 0
    for p in positions:
        mask |= 1 << p
    return mask


# --------------------------------------------------------------------------------------------
# Architectural constants
# --------------------------------------------------------------------------------------------


def test_pte_bits_are_the_sdm_positions() -> None:
    """SDM tables 4-4..4-20: P=0, R/W=1, U/S=2, PWT=3, PCD=4, A=5, D=6, PS=7, G=8, XD=63."""
    assert [int(Pte.PRESENT), int(Pte.WRITABLE), int(Pte.USER)] == [1, 2, 4]
    assert [int(Pte.PWT), int(Pte.PCD), int(Pte.ACCESSED), int(Pte.DIRTY)] == [8, 16, 32, 64]
    assert [int(Pte.PAGE_SIZE), int(Pte.GLOBAL), int(Pte.PAT_LARGE)] == [128, 256, 4096]
    assert int(Pte.XD) == 1 << 63
    assert (PKEY_SHIFT, PKEY_MASK) == (59, 0xF)  # SDM 4.5: protection key in bits 62:59


def test_page_fault_error_code_bits_are_the_sdm_positions() -> None:
    """SDM 4.7: P=bit 0, W/R=1, U/S=2, RSVD=3, I/D=4, PK=5."""
    assert [int(b) for b in (PfErr.PRESENT, PfErr.WRITE, PfErr.USER)] == [1, 2, 4]
    assert [int(b) for b in (PfErr.RSVD, PfErr.FETCH, PfErr.PK)] == [8, 16, 32]


def test_control_register_bits_are_the_sdm_positions() -> None:
    """SDM 2.5 and 2.2.1: CR0.PE/WP/PG, CR4.PSE/PAE/PGE/LA57/PCIDE/SMEP/SMAP/PKE, EFER bits."""
    assert (PE, WP, PG) == (1, 1 << 16, 1 << 31)
    assert (PSE, PAE, int(Cr4.PGE), LA57) == (1 << 4, 1 << 5, 1 << 7, 1 << 12)
    assert (int(Cr4.PCIDE), int(Cr4.SMEP), int(Cr4.SMAP), int(Cr4.PKE)) == (
        1 << 17,
        1 << 20,
        1 << 21,
        1 << 22,
    )
    assert (LME, LMA, NXE) == (1 << 8, 1 << 10, 1 << 11)


def test_acc_bits_are_kvms() -> None:
    """mmu.h: ACC_EXEC_MASK=1, ACC_WRITE_MASK=PT_WRITABLE_MASK=2, ACC_USER_MASK=PT_USER_MASK=4."""
    assert (int(Acc.EXEC), int(Acc.WRITE), int(Acc.USER), int(Acc.ALL)) == (1, 2, 4, 7)


def test_page_sizes() -> None:
    """SDM 4.2: 4 KiB pages everywhere, 4 MiB with 32-bit PSE, 2 MiB and 1 GiB otherwise."""
    assert PAGE_SIZES == {"4K": 4096, "2M": 2 << 20, "4M": 4 << 20, "1G": 1 << 30}


# --------------------------------------------------------------------------------------------
# Paging-mode selection (SDM 4.1.1, table 4-1)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cr0", "cr4", "efer", "mode"),
    [
        (0, 0, 0, PagingMode.NONE),  # real mode
        (PE, PAE | PSE, NXE, PagingMode.NONE),  # protected mode, paging off: CR4 is irrelevant
        (PE, 0, LME, PagingMode.NONE),  # LME without PG: long mode not yet active
        (PE | PG, 0, 0, PagingMode.BITS32),
        (PE | PG, PSE, NXE, PagingMode.BITS32),
        (PE | PG, LA57, 0, PagingMode.BITS32),  # LA57 only matters in IA-32e mode
        (PE | PG, PAE, 0, PagingMode.PAE),
        (PE | PG, PAE | LA57, NXE, PagingMode.PAE),
        (PE | PG, PAE, LME | LMA, PagingMode.LEVEL4),
        (PE | PG | WP, PAE | PSE, LME | LMA | NXE, PagingMode.LEVEL4),  # PSE ignored
        (PE | PG, PAE | LA57, LME | LMA, PagingMode.LEVEL5),
    ],
)
def test_paging_mode_follows_table_4_1(cr0: int, cr4: int, efer: int, mode: PagingMode) -> None:
    """SDM table 4-1: CR0.PG, CR4.PAE, IA32_EFER.LME/LMA and CR4.LA57 select the mode."""
    assert paging_mode(cr0, cr4, efer) is mode


@pytest.mark.parametrize(
    ("cr0", "cr4", "efer", "hint"),
    [
        (PG, 0, 0, "CR0.PE"),  # SDM 2.5: PG=1 with PE=0 is a #GP
        (PG, PAE, 0, "CR0.PE"),
        (PE, PAE, LMA, "LMA"),  # LMA without paging
        (PE | PG, PAE, LMA, "LME"),  # LMA without LME
        (PE | PG, PAE, LME, "LMA"),  # LME and PG mean long mode is active
        (PE | PG, 0, LME | LMA, "CR4.PAE"),  # SDM 9.8.5: long mode needs PAE
        (PE | PG, LA57, LME | LMA, "CR4.PAE"),
    ],
)
def test_impossible_register_combinations_are_mode_errors(
    cr0: int, cr4: int, efer: int, hint: str
) -> None:
    """A combination no CPU accepts raises ModeError naming the bit to fix."""
    with pytest.raises(ModeError, match=hint):
        paging_mode(cr0, cr4, efer)


@pytest.mark.parametrize("bad", ["0x80000001", 1.5, None, -1, 1 << 64, True])
def test_paging_mode_rejects_values_that_are_not_register_contents(bad: object) -> None:
    """Registers are non-negative ints below 2**64; anything else is a typed AddressError."""
    for args in ((bad, 0, 0), (PE, bad, 0), (PE, 0, bad)):
        with pytest.raises(AddressError, match=r"int|fit"):
            paging_mode(*args)


# --------------------------------------------------------------------------------------------
# Table geometry per mode (PT_LEVEL_SHIFT, PT_INDEX)
# --------------------------------------------------------------------------------------------


def test_mode_geometry() -> None:
    """SDM 4.3-4.5: levels, entry size and linear-address width of each mode."""
    table = {m: (s.root_level, s.entry_size, s.va_bits) for m, s in MODE_SPECS.items()}
    assert table == {
        PagingMode.NONE: (0, 8, 32),
        PagingMode.BITS32: (2, 4, 32),
        PagingMode.PAE: (3, 8, 32),
        PagingMode.LEVEL4: (4, 8, 48),
        PagingMode.LEVEL5: (5, 8, 57),
    }
    for mode in PagingMode:
        assert mode.spec is MODE_SPECS[mode]


@pytest.mark.parametrize(
    ("mode", "shifts"),
    [
        (PagingMode.BITS32, [12, 22]),  # 10-bit indices: bits 21:12 and 31:22
        (PagingMode.PAE, [12, 21, 30]),  # 9, 9 and the 2-bit PDPT index in bits 31:30
        (PagingMode.LEVEL4, [12, 21, 30, 39]),
        (PagingMode.LEVEL5, [12, 21, 30, 39, 48]),
    ],
)
def test_shift_per_level(mode: PagingMode, shifts: list[int]) -> None:
    """PT_LEVEL_SHIFT: the lowest linear-address bit each level indexes; level_size follows."""
    spec = mode.spec
    assert [spec.shift(level) for level in range(1, spec.root_level + 1)] == shifts
    assert [spec.level_size(level) for level in range(1, spec.root_level + 1)] == [
        1 << s for s in shifts
    ]


def test_32bit_indices_are_10_bits() -> None:
    """SDM 4.3: a PDE is selected by bits 31:22, a PTE by bits 21:12 (1024 entries each)."""
    spec = PagingMode.BITS32.spec
    gva = (0x2A5 << 22) | (0x3FF << 12) | 0xABC
    assert (spec.index(gva, 2), spec.index(gva, 1)) == (0x2A5, 0x3FF)
    assert spec.index(0xFFFF_FFFF, 2) == spec.index(0xFFFF_FFFF, 1) == 1023


def test_pae_indices_are_2_9_9_bits() -> None:
    """SDM 4.4: PDPTE from bits 31:30 (4 entries), PDE from 29:21, PTE from 20:12."""
    spec = PagingMode.PAE.spec
    gva = (3 << 30) | (0x1F5 << 21) | (0x0AB << 12) | 0x123
    assert [spec.index(gva, level) for level in (3, 2, 1)] == [3, 0x1F5, 0x0AB]
    assert spec.index(0xFFFF_FFFF, 3) == 3


@pytest.mark.parametrize("mode", [PagingMode.LEVEL4, PagingMode.LEVEL5])
def test_long_mode_indices_are_9_bits(mode: PagingMode) -> None:
    """SDM 4.5: each level takes the next 9 linear-address bits (PML5 56:48 ... PT 20:12)."""
    spec = mode.spec
    indices = [0x1A3, 0x0F0, 0x155, 0x1FF, 0x001][: spec.root_level]  # level 1 first
    gva = 0x7FF
    for level, index in enumerate(indices, start=1):
        gva |= index << (12 + 9 * (level - 1))
    assert [spec.index(gva, level) for level in range(1, spec.root_level + 1)] == indices


def test_entry_names() -> None:
    """SDM 4.5 names the entries of each level: PTE, PDE, PDPTE, PML4E, PML5E."""
    assert [PagingMode.LEVEL5.spec.entry_name(lv) for lv in range(1, 6)] == [
        "PTE",
        "PDE",
        "PDPTE",
        "PML4E",
        "PML5E",
    ]
    assert PagingMode.BITS32.spec.entry_name(2) == "PDE"
    assert PagingMode.PAE.spec.entry_name(3) == "PDPTE"


@pytest.mark.parametrize(
    ("mode", "level"),
    [
        (PagingMode.BITS32, 0),
        (PagingMode.BITS32, 3),
        (PagingMode.PAE, 4),
        (PagingMode.LEVEL4, 5),
        (PagingMode.LEVEL5, 6),
        (PagingMode.NONE, 1),
    ],
)
def test_levels_outside_the_mode_are_mode_errors(mode: PagingMode, level: int) -> None:
    """Asking for a level the mode lacks names the valid range instead of answering nonsense."""
    spec = mode.spec
    for call in (
        lambda: spec.shift(level),
        lambda: spec.index(0, level),
        lambda: spec.level_size(level),
        lambda: spec.entry_name(level),
    ):
        with pytest.raises(ModeError, match=f"level {level}"):
            call()


# --------------------------------------------------------------------------------------------
# Canonical addresses (SDM 3.3.7.1, 4.5)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("addr", "ok48", "ok57"),
    [
        (0, True, True),
        (0x0000_7FFF_FFFF_FFFF, True, True),  # top of the lower half with 48 bits
        (0x0000_8000_0000_0000, False, True),  # bit 47 set, 63:48 clear
        (0xFFFF_8000_0000_0000, True, True),  # bottom of the upper half with 48 bits
        (0xFFFF_7FFF_FFFF_FFFF, False, True),  # 63:48 set, bit 47 clear; 57-bit canonical
        (0x0100_0000_0000_0000, False, False),  # bit 56 set, 63:57 clear
        (0x01FF_FFFF_FFFF_FFFF, False, False),
        (0x00FF_FFFF_FFFF_FFFF, False, True),  # top of the lower half with 57 bits
        (0x00FF_8000_0000_0000, False, True),
        (0xFF00_0000_0000_0000, False, True),  # bottom of the upper half with 57 bits
        (0xFE00_0000_0000_0000, False, False),  # bits 63:57 set, bit 56 clear
        (0xFFFF_FFFF_FFFF_FFFF, True, True),
        (0x8000_0000_0000_0000, False, False),
    ],
)
def test_canonical_48_and_57(addr: int, ok48: bool, ok57: bool) -> None:
    """Bits 63:47 (4-level) or 63:56 (5-level) must all equal the top implemented bit."""
    assert is_canonical(addr, 48) is ok48
    assert is_canonical(addr, 57) is ok57


def test_canonicalize_sign_extends() -> None:
    """Sign extension from bit 47 or 56 gives the canonical form of an address."""
    assert canonicalize(0x0000_8000_0000_0000, 48) == 0xFFFF_8000_0000_0000
    assert canonicalize(0x0000_7FFF_FFFF_F000, 48) == 0x0000_7FFF_FFFF_F000
    assert canonicalize(0x0100_0000_0000_0000, 57) == 0xFF00_0000_0000_0000
    assert canonicalize(0x0200_0000_0000_0000, 57) == 0  # bits above the width are dropped
    assert canonicalize(0x0080_0000_0000_0000, 57) == 0x0080_0000_0000_0000  # bit 55: lower half
    for addr in (0, 0x1234_5678_9ABC, 0xFFFF_FFFF_FFFF_FFFF, 0x0000_8000_1234_0000):
        for va_bits in (48, 57):
            assert is_canonical(canonicalize(addr, va_bits), va_bits)


# --------------------------------------------------------------------------------------------
# Reserved-bit masks
# --------------------------------------------------------------------------------------------


def test_rsvd_bits_is_inclusive() -> None:
    """mmu.h rsvd_bits(s, e): bits s..e inclusive, nothing when e < s."""
    assert rsvd_bits(0, 0) == 1
    assert rsvd_bits(13, 20) == bits(*range(13, 21)) == 0x1F_E000
    assert rsvd_bits(52, 51) == 0
    assert rsvd_bits(0, 63) == (1 << 64) - 1


@pytest.mark.parametrize("maxphyaddr", [32, 36, 39, 40, 46, 52])
def test_pdpte_reserved_bits_by_maxphyaddr(maxphyaddr: int) -> None:
    """SDM table 4-8: a PAE PDPTE reserves bits 2:1, 8:5 and 63:MAXPHYADDR."""
    expected = bits(1, 2, 5, 6, 7, 8, *range(maxphyaddr, 64))
    assert pdpte_rsvd_mask(maxphyaddr) == expected
    assert not pdpte_rsvd_mask(maxphyaddr) & bits(0, 3, 4, 9, 10, 11)  # P, PWT, PCD, ignored


@pytest.mark.parametrize("maxphyaddr", [32, 36, 40, 52])
def test_valid_maxphyaddr(maxphyaddr: int) -> None:
    """CPUID.80000008H:EAX[7:0] is between 32 and 52 on x86."""
    assert check_maxphyaddr(maxphyaddr) == maxphyaddr


@pytest.mark.parametrize("bad", [31, 53, 64, 0, -1, "40", 40.0, True, None])
def test_invalid_maxphyaddr_is_an_address_error(bad: object) -> None:
    """MAXPHYADDR outside 32..52, or not an int, is rejected with the valid range."""
    with pytest.raises(AddressError, match="maxphyaddr"):
        check_maxphyaddr(bad)  # type: ignore[arg-type]


def test_errors_are_kvmmu_errors() -> None:
    """Every input error is a KvmmuError and a ValueError, so callers can catch either."""
    for cls in (AddressError, ModeError):
        assert issubclass(cls, KvmmuError)
        assert issubclass(cls, ValueError)


def test_describe_flags() -> None:
    """QEMU ``info tlb`` order: XD, G, PS, D, A, PCD, PWT, U/S, R/W."""
    assert describe_flags(0) == "---------"
    assert describe_flags(int(Pte.PRESENT | Pte.WRITABLE | Pte.USER)) == "-------UW"
    assert describe_flags(int(Pte.XD | Pte.GLOBAL | Pte.PAGE_SIZE | Pte.DIRTY)) == "XGPD-----"
    assert describe_flags(int(Pte.ACCESSED | Pte.PCD | Pte.PWT)) == "----ACT--"
