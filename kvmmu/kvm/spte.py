"""Shadow page-table entries: encoding, the software bits KVM keeps, and MMIO sptes.

Mirrors ``arch/x86/kvm/mmu/spte.h`` and ``spte.c`` for shadow paging with legacy x86 page
tables (no EPT): an spte uses the hardware bits of a 64-bit PTE (present, writable, user,
accessed, dirty, page size, NX) plus bits the CPU ignores, which KVM uses for itself:

* bit 9, host-writable: the host mapping of the page may be written (``SPTE_HOST_WRITEABLE``);
* bit 10, MMU-writable: the MMU may make this spte writable without a fault path decision,
  i.e. the gfn is not write-protected for shadowing (``SPTE_MMU_WRITEABLE``);
* bit 11, MMU-present: the spte is a real, present shadow entry (``SPTE_MMU_PRESENT_MASK``).

An MMIO spte caches "this gfn has no memslot": it sets a reserved physical-address bit so the
hardware raises a page fault with PFERR.RSVD, and records the gfn, the access, and the memslot
generation, split over bits 3..10 and 52..62 as KVM splits it. (KVM also mixes in an L1TF
mitigation mask; kvmmu leaves that out.)
"""

from __future__ import annotations

from kvmmu.hw.x86 import PAGE_SHIFT, Acc, rsvd_bits

PRESENT = 1 << 0
WRITABLE = 1 << 1
USER = 1 << 2
ACCESSED = 1 << 5
DIRTY = 1 << 6
LARGE = 1 << 7  # PT_PAGE_SIZE_MASK
GLOBAL = 1 << 8
HOST_WRITABLE = 1 << 9
MMU_WRITABLE = 1 << 10
MMU_PRESENT = 1 << 11
NX = 1 << 63

HOST_MAXPHYADDR = 46  # the host's physical-address width; bit 51 is then reserved
PFN_MASK = rsvd_bits(PAGE_SHIFT, 51)

MMIO_VALUE = (1 << 51) | PRESENT  # a reserved address bit: hardware faults with PFERR.RSVD
MMIO_MASK = (1 << 51) | PRESENT | MMU_PRESENT
MMIO_GEN_LOW_SHIFT, MMIO_GEN_LOW_BITS = 3, 8  # generation bits 0..7 live in spte bits 3..10
MMIO_GEN_HIGH_SHIFT, MMIO_GEN_HIGH_BITS = 52, 11  # generation bits 8..18 in spte bits 52..62
MMIO_GEN_MASK = (1 << (MMIO_GEN_LOW_BITS + MMIO_GEN_HIGH_BITS)) - 1
MMIO_GFN_MASK = rsvd_bits(PAGE_SHIFT, 50)
MMIO_ACCESS_MASK = WRITABLE | USER  # shadow_mmio_access_mask: what the MMIO spte remembers

_ACC_USER, _ACC_EXEC = int(Acc.USER), int(Acc.EXEC)  # plain ints: no IntFlag arithmetic
# the present bits and the U/NX bits make_spte derives from each of the 8 access values
_RIGHTS = tuple(
    PRESENT | MMU_PRESENT | (USER if acc & _ACC_USER else 0) | (0 if acc & _ACC_EXEC else NX)
    for acc in range(8)
)

__all__ = [
    "describe_spte",
    "is_large",
    "is_last",
    "is_mmio",
    "is_shadow_present",
    "is_writable",
    "make_mmio_spte",
    "make_nonleaf_spte",
    "make_spte",
    "mmio_access",
    "mmio_generation",
    "mmio_gfn",
    "spte_to_pfn",
]


def is_shadow_present(spte: int) -> bool:
    """True for a real shadow entry, not empty and not MMIO (``is_shadow_present_pte``)."""
    return bool(spte & MMU_PRESENT)


def is_large(spte: int) -> bool:
    """True if the spte maps a 2 MiB or 1 GiB page (``is_large_pte``)."""
    return bool(spte & LARGE)


def is_last(spte: int, level: int) -> bool:
    """True if the spte maps memory rather than a table (``is_last_spte``)."""
    return level == 1 or is_large(spte)


def is_writable(spte: int) -> bool:
    """True if the hardware may write through this spte (``is_writable_pte``)."""
    return bool(spte & WRITABLE)


def spte_to_pfn(spte: int) -> int:
    """The host frame an spte points to (``spte_to_pfn``)."""
    return (spte & PFN_MASK) >> PAGE_SHIFT


def make_spte(
    pfn: int,
    access: int,
    *,
    large: bool,
    writable: bool,
    mmu_writable: bool,
    host_writable: bool = True,
    accessed: bool = True,
    global_: bool = False,
) -> int:
    """Encode a leaf spte (``make_spte``).

    ``access`` is the guest's effective rights (``Acc``); write permission is granted only when
    ``writable`` (the caller has decided the gfn is not write-protected and the guest PTE is
    dirty or this is a write fault). A missing EXEC right becomes the NX bit, which KVM always
    has available on the host. ``accessed`` is false for prefetched sptes. ``global_`` copies
    the guest's G bit so the simulated TLB can keep global translations (KVM leaves G clear).
    """
    spte = _RIGHTS[access & 7] | (pfn << PAGE_SHIFT)  # present, U and NX from the access
    if writable:
        spte |= WRITABLE | DIRTY
    if mmu_writable:
        spte |= MMU_WRITABLE
    if host_writable:
        spte |= HOST_WRITABLE
    if large:
        spte |= LARGE
    if accessed:
        spte |= ACCESSED
    if global_:
        spte |= GLOBAL
    return spte


def make_nonleaf_spte(child_pfn: int) -> int:
    """An spte that points to a child shadow page (``make_nonleaf_spte``): all rights.

    Rights are enforced at the leaf; upper sptes allow everything so one child page can be
    shared by every parent that reaches it with the same role.
    """
    return PRESENT | MMU_PRESENT | WRITABLE | USER | ACCESSED | (child_pfn << PAGE_SHIFT)


def make_mmio_spte(gfn: int, access: int, generation: int) -> int:
    """An MMIO spte for ``gfn`` stamped with the memslot ``generation`` (``make_mmio_spte``)."""
    gen = generation & MMIO_GEN_MASK
    low = gen & ((1 << MMIO_GEN_LOW_BITS) - 1)
    high = gen >> MMIO_GEN_LOW_BITS
    return (
        MMIO_VALUE
        | (access & MMIO_ACCESS_MASK)
        | ((gfn << PAGE_SHIFT) & MMIO_GFN_MASK)
        | (low << MMIO_GEN_LOW_SHIFT)
        | (high << MMIO_GEN_HIGH_SHIFT)
    )


def is_mmio(spte: int) -> bool:
    """True for an MMIO spte (``is_mmio_spte``)."""
    return spte & MMIO_MASK == MMIO_VALUE


def mmio_gfn(spte: int) -> int:
    """The gfn an MMIO spte records (``get_mmio_spte_gfn``)."""
    return (spte & MMIO_GFN_MASK) >> PAGE_SHIFT


def mmio_access(spte: int) -> int:
    """The access an MMIO spte records (``get_mmio_spte_access``)."""
    return spte & MMIO_ACCESS_MASK


def mmio_generation(spte: int) -> int:
    """The memslot generation an MMIO spte records (``get_mmio_spte_generation``)."""
    low = (spte >> MMIO_GEN_LOW_SHIFT) & ((1 << MMIO_GEN_LOW_BITS) - 1)
    high = (spte >> MMIO_GEN_HIGH_SHIFT) & ((1 << MMIO_GEN_HIGH_BITS) - 1)
    return low | (high << MMIO_GEN_LOW_BITS)


def describe_spte(spte: int, level: int) -> str:
    """A readable summary of an spte for tables: kind, frame, and rights.

    No kernel counterpart: a display helper.
    """
    if spte == 0:
        return "empty"
    if is_mmio(spte):
        return f"mmio gfn={mmio_gfn(spte):#x} gen={mmio_generation(spte)}"
    kind = "leaf" if is_last(spte, level) else "table"
    rights = (
        ("u" if spte & USER else "-")
        + ("w" if spte & WRITABLE else "-")
        + ("-" if spte & NX else "x")
    )
    return f"{kind} pfn={spte_to_pfn(spte):#x} {rights}"
