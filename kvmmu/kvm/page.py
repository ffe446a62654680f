"""The shadow page, ``struct kvm_mmu_page`` (``arch/x86/kvm/mmu/mmu_internal.h``).

A shadow page holds 512 sptes (``spt``) in a host frame. An *indirect* page shadows one guest
page table: its ``gfn`` is that table's frame and ``gfns[i]`` records the guest frame that the
guest's entry ``i`` pointed to when spte ``i`` was made. A *direct* page shadows no guest table:
it maps one linear run of guest-physical memory starting at ``gfn``, so entry ``i`` maps
``gfn + (i << ((level - 1) * 9))`` and storing that would waste a page.

This is the 2010 change "KVM: MMU: Don't allocate gfns page for direct mmu pages": ``gfns`` is
``None`` for a direct page, and every reader goes through :meth:`MmuPage.get_gfn`
(``kvm_mmu_page_get_gfn``), every writer through :meth:`MmuPage.set_gfn`
(``kvm_mmu_page_set_gfn``).

Today's kernel keeps the guest's access bits of each spte next to its gfn, one u64 per spte in
``shadowed_translation`` (2022, "Cache the access bits of shadowed translations"). kvmmu holds
the two halves apart: ``gfns`` as in 2010, and ``access`` (one byte per spte, ``None`` for a
direct page, whose role's access is the answer), read by :meth:`MmuPage.get_access`
(``kvm_mmu_page_get_access``) and written by :meth:`MmuPage.set_access`
(``kvm_mmu_page_set_access``).

The three tables are plain buffers, read one entry at a time on every fault, where a numpy
scalar costs several times a buffer's: ``spt`` is the host frame's own memoryview of 64-bit
words (the one the hardware walker reads, :meth:`kvmmu.hw.memory.HostMemory.words`), ``gfns``
an ``array('Q')`` and ``access`` an ``array('B')`` of 512. :attr:`MmuPage.spt_array` gives
``spt`` as a numpy ``uint64[512]`` view for whole-page work (the batch path, the audit).
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from kvmmu.errors import KvmmuError
from kvmmu.hw.x86 import ENTRIES_PER_TABLE
from kvmmu.kvm.role import MmuPageRole

LEVEL_BITS = 9  # SPTE_LEVEL_BITS: each shadow level indexes 9 address bits


class GfnMismatchError(KvmmuError):
    """``set_gfn`` on a direct page with a gfn other than the computed one.

    The seed change made this a ``BUG_ON``; KVM later turned it into a warning. Either way it
    means the MMU's bookkeeping is wrong, so kvmmu raises.
    """


class AccessMismatchError(KvmmuError):
    """``set_access`` on a direct page with other access bits than its role's.

    The kernel's ``WARN_ONCE`` in ``kvm_mmu_page_set_translation`` ("access mismatch under
    direct page"): the MMU's bookkeeping is wrong, so kvmmu raises.
    """


@dataclass(eq=False, slots=True)
class MmuPage:
    """One shadow page. Identity matters (``eq=False``): two pages are never "equal"."""

    gfn: int
    role: MmuPageRole
    pfn: int  # host frame holding spt
    spt: memoryview = field(repr=False)  # the host frame as 512 64-bit words
    gfns: array[int] | None = field(repr=False)
    parent_ptes: list[tuple[MmuPage, int]] = field(default_factory=list, repr=False)
    root_count: int = 0
    unsync: bool = False
    unsync_children: int = 0
    unsync_child_bitmap: set[int] = field(default_factory=set, repr=False)
    write_flooding_count: int = 0
    mmu_valid_gen: int = 0
    serial: int = 0  # creation order: "age" for reclaim and a stable name for tables
    access: array[int] | None = field(default=None, repr=False)

    @property
    def direct(self) -> bool:
        """``role.direct``: the page maps a linear gfn range and has no gfns array."""
        return self.role.direct

    @property
    def level(self) -> int:
        """``role.level``: 1 for a page of leaf sptes."""
        return self.role.level

    def get_gfn(self, index: int) -> int:
        """The gfn behind spte ``index`` (``kvm_mmu_page_get_gfn``).

        Direct pages compute it; indirect pages read what ``set_gfn`` stored. A passthrough
        page (a root that shadows no guest table) answers its own gfn.
        """
        if self.role.passthrough:
            return self.gfn
        if self.role.direct:  # decided by the role, as the kernel does: gfns is never touched
            return self.gfn + (index << ((self.role.level - 1) * LEVEL_BITS))
        assert self.gfns is not None, "an indirect page always has a gfns array"
        return self.gfns[index]

    def set_gfn(self, index: int, gfn: int) -> None:
        """Record the gfn behind spte ``index`` (``kvm_mmu_page_set_gfn``).

        On a direct page nothing is stored: the value is checked against the computed one.
        """
        if self.role.direct:
            expected = self.get_gfn(index)
            if gfn != expected:
                raise GfnMismatchError(
                    f"direct page gfn={self.gfn:#x} level={self.level}: entry {index} maps "
                    f"gfn {expected:#x}, not {gfn:#x}; a direct page's gfns are linear"
                )
            return
        assert self.gfns is not None, "an indirect page always has a gfns array"
        self.gfns[index] = gfn

    def get_access(self, index: int) -> int:
        """The guest's access bits behind spte ``index`` (``kvm_mmu_page_get_access``).

        A direct page shadows no guest entries: the rights are its role's (all rights for TDP
        and paging off, the guest large page's below one).
        """
        if self.access is None:
            return self.role.access
        return self.access[index]

    def set_access(self, index: int, access: int) -> None:
        """Record the guest's access bits behind spte ``index`` (``kvm_mmu_page_set_access``).

        On a direct page nothing is stored: the value is checked against the role's.
        """
        if self.access is None:
            if access != self.role.access:
                raise AccessMismatchError(
                    f"access mismatch under direct page {self.gfn:#x}: entry {index} was given "
                    f"access {access:#x}, the role says {self.role.access:#x}"
                )
            return
        self.access[index] = access

    @property
    def spt_array(self) -> npt.NDArray[np.uint64]:
        """``spt`` as a writable numpy ``uint64[512]`` view (no copy), for whole-page work.

        No kernel counterpart: ``sp->spt`` is one array in C, read entry by entry or whole.
        """
        return np.frombuffer(self.spt, dtype=np.uint64)

    def present_indices(self) -> npt.NDArray[np.intp]:
        """Indices of sptes that are not zero (present or MMIO).

        The entries that loops over ``sp->spt`` act on (``kvm_mmu_page_unlink_children``).
        """
        return np.flatnonzero(self.spt_array)

    @property
    def gfns_bytes(self) -> int:
        """Bytes this page's gfns array takes: 4096 for an indirect page, 0 for a direct one."""
        return 0 if self.gfns is None else len(self.gfns) * self.gfns.itemsize

    def describe(self) -> str:
        """``sp#serial gfn role`` for tables and traces."""
        return f"sp#{self.serial} gfn={self.gfn:#x} {self.role.describe()}"


_ZERO_GFNS = array("Q", bytes(8 * ENTRIES_PER_TABLE))
_ZERO_ACCESS = array("B", bytes(ENTRIES_PER_TABLE))


def new_gfns(direct: bool) -> array[int] | None:
    """The gfns array for a new page: ``None`` for direct pages (the seed change)."""
    return None if direct else array("Q", _ZERO_GFNS)


def new_access(direct: bool) -> array[int] | None:
    """The access half of ``shadowed_translation`` for a new page: ``None`` for direct pages.

    Kernel counterpart: the allocation of ``sp->shadowed_translation`` in
    ``kvm_mmu_alloc_shadow_page``, skipped for direct pages.
    """
    return None if direct else array("B", _ZERO_ACCESS)


def standalone_page(gfn: int, level: int, *, direct: bool) -> MmuPage:
    """A shadow page outside any MMU, with zeroed sptes, for experiments and tests.

    No kernel counterpart: KVM always allocates through ``kvm_mmu_alloc_shadow_page``. The page
    has the role's ``direct`` and ``level`` and everything else at its default.
    """
    return MmuPage(
        gfn=gfn,
        role=MmuPageRole(level=level, direct=direct),
        pfn=0,
        spt=memoryview(bytearray(8 * ENTRIES_PER_TABLE)).cast("Q"),
        gfns=new_gfns(direct),
        access=new_access(direct),
    )
