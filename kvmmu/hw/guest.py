"""The guest OS side: a builder of guest page tables for every paging mode.

What a guest kernel's memory-management code does to its own page tables (Linux's
``mm/memory.c`` and ``arch/x86/include/asm/pgtable*.h``): allocate table pages (``pte_alloc``,
``pmd_alloc``), link them into the level above (``pmd_populate``, ``pud_populate``), write leaf
entries (``set_pte``, ``set_pmd``, ``set_pud`` for huge pages), clear them (``pte_clear``),
change their rights (``change_protection``, as ``mprotect`` does) and free the tables that
become empty (``free_pgtables``). The dumps mirror QEMU's monitor: :meth:`GuestPageTables.mappings`
is ``info tlb`` (one row per leaf) and :meth:`GuestPageTables.info_mem` is ``info mem`` (merged
ranges with equal rights).

Guest memory is the only source of truth: nothing is cached, so an entry changed behind the
builder's back (by :meth:`GuestPageTables.set_entry`, or by the walker setting accessed and dirty
bits) shows in every dump. The builder flushes no TLB; a caller that models a vCPU does the
``invlpg`` or CR3 reload the guest kernel would.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from kvmmu.errors import (
    AddressError,
    MappingError,
    MemslotError,
    ModeError,
    check_callable,
    check_count,
    check_instance,
    check_int,
)
from kvmmu.hw.memory import GuestMemory
from kvmmu.hw.walk import CpuState, GeneralProtection, cpu_for_mode, load_cr3, reserved_mask
from kvmmu.hw.x86 import (
    PAGE_SHIFT,
    PAGE_SIZE,
    PAGE_SIZES,
    PKEY_MASK,
    PKEY_SHIFT,
    ModeSpec,
    PagingMode,
    Pte,
    canonicalize,
    check_maxphyaddr,
    describe_flags,
    is_canonical,
    pdpte_rsvd_mask,
    rsvd_bits,
)

DEFAULT_TABLE_PAGES = 64
"""Table pages taken, by default, from the top of the lowest memslot."""

_P, _W, _U = int(Pte.PRESENT), int(Pte.WRITABLE), int(Pte.USER)
_PWT, _PCD, _A, _D = int(Pte.PWT), int(Pte.PCD), int(Pte.ACCESSED), int(Pte.DIRTY)
_PS, _G, _XD = int(Pte.PAGE_SIZE), int(Pte.GLOBAL), int(Pte.XD)

# Linux's _PAGE_TABLE without _PAGE_ACCESSED: the leaf alone decides the rights, and the
# walker's setting of the accessed bit stays visible.
TABLE_ENTRY_BITS = _P | _W | _U
# A PAE PDPTE has no R/W, U/S or A bit: bits 1, 2 and 5..8 are reserved (SDM 4.4.1).
PDPTE_BITS = _P

_ADDR_32 = 0xFFFF_F000  # a 4 KiB frame in a 32-bit entry
_ADDR_64 = rsvd_bits(PAGE_SHIFT, 51)  # a 4 KiB frame in an 8-byte entry
_FOUR_GIB = 1 << 32
_LARGE_32 = 0xFFC0_0000  # address bits 31:22 of a 4 MiB page

WriteHook = Callable[[int, bytes], None]


def format_size(size: int) -> str:
    """A page or range size in the units people say: ``4 KiB``, ``2 MiB``, ``1 GiB``.

    No kernel counterpart.
    """
    check_count("size", size, minimum=1)
    for shift, unit in ((30, "GiB"), (20, "MiB"), (10, "KiB")):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size:#x} bytes"


# --------------------------------------------------------------------------------------------
# The table-page allocator
# --------------------------------------------------------------------------------------------


class TablePagePool:
    """A page allocator over a fixed run of guest frames, for page-table pages only.

    The guest kernel's ``get_zeroed_page`` for tables: :meth:`alloc` hands out the lowest free
    gfn and zeroes it. The run is given once and never grows, so running out is an error the
    caller sees (:class:`MappingError`), not a silent spill into the rest of guest memory.
    """

    def __init__(self, gfns: range) -> None:
        self.gfns = check_instance("gfns", gfns, range, "a range of gfns", MappingError)
        self._free = list(gfns)  # ascending, so already a heap
        self.in_use: set[int] = set()

    @property
    def free_count(self) -> int:
        """How many pages are left."""
        return len(self._free)

    def alloc(self) -> int:
        """Take the lowest free gfn; :class:`MappingError` if none is left.

        The guest kernel's page-table page allocation (Linux ``pte_alloc_one``).
        """
        if not self._free:
            g = self.gfns
            raise MappingError(
                f"out of page-table pages: all {len(g)} gfns {g.start:#x}..{g.stop - 1:#x} are "
                "in use; pass a larger table_gfns range when creating GuestPageTables"
            )
        gfn = heapq.heappop(self._free)
        self.in_use.add(gfn)
        return gfn

    def free(self, gfn: int) -> None:
        """Give back a gfn from :meth:`alloc`.

        The guest kernel freeing a page-table page (Linux ``pte_free``).
        """
        check_int("gfn", gfn)
        if gfn not in self.in_use:
            raise MappingError(
                f"gfn={gfn:#x} is not a table page in use; free only what alloc gave"
            )
        self.in_use.remove(gfn)
        heapq.heappush(self._free, gfn)


# --------------------------------------------------------------------------------------------
# One leaf mapping
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GuestMapping:
    """One leaf of the guest tables: a page of ``size`` bytes from ``gva`` to ``gpa``.

    ``writable``, ``user`` and ``nx`` are the *effective* rights, combined over every level the
    way the walker combines them (AND of R/W and U/S, OR of XD); ``global_``, ``accessed``,
    ``dirty`` and ``pkey`` come from the leaf; ``entry`` is the leaf entry as stored.
    ``recursive`` is True when the walk to this leaf used one table page twice: the leaf is
    seen through a self-reference (a Windows-style recursive PML4 slot maps the tables
    themselves this way), so its "page" is a page table.
    """

    gva: int
    gpa: int
    size: int
    level: int
    writable: bool
    user: bool
    nx: bool
    global_: bool
    accessed: bool
    dirty: bool
    pkey: int
    entry: int
    recursive: bool = False  # reached through a table already on its own walk path

    @property
    def flags(self) -> str:
        """QEMU's ``info tlb`` flag string (``XGPDACTUW``), with effective U, W and X.

        P marks a large page; in a 4 KiB PTE bit 7 is PAT and is not shown.
        """
        bits = self.entry & ~(_W | _U | _XD | _PS)
        bits |= (_W if self.writable else 0) | (_U if self.user else 0)
        bits |= (_XD if self.nx else 0) | (_PS if self.level > 1 else 0)
        return describe_flags(bits)

    @property
    def prot(self) -> str:
        """QEMU's ``info mem`` rights, ``urw``, plus ``x`` when the page is executable."""
        return _prot((self.writable, self.user, self.nx))


MAPPING_COLUMNS = (
    "gva",
    "gpa",
    "size",
    "level",
    "writable",
    "user",
    "nx",
    "global",
    "accessed",
    "dirty",
    "pkey",
    "flags",
    "recursive",
)
INFO_MEM_COLUMNS = ("start", "end", "size", "prot")

DUMP_LIMIT = 1 << 16
"""Rows a dump lists by default; the rest is counted in ``attrs["elided"]``, not listed."""


@dataclass(frozen=True, slots=True)
class SelfReference:
    """A table entry that points at a table already on its own walk path.

    ``table`` holds the entry (at ``level``, ``index``); ``target`` is the table it points
    back at. ``PML4E 0x1ed -> 0x1000`` with ``table == target`` is Windows' recursive slot.
    """

    table: int
    level: int
    index: int
    target: int
    name: str  # the SDM's name of the entry, e.g. PML4E

    def describe(self) -> str:
        """One line: ``PML4E 0x1ed of table 0x1000 -> table 0x1000 (itself)``."""
        to = "itself" if self.target == self.table else "an upper-level table of its path"
        return (
            f"{self.name} {self.index:#x} of table {self.table:#x} -> table {self.target:#x} ({to})"
        )


@dataclass(frozen=True, slots=True)
class TableGraph:
    """The shape of a guest's table graph, found without enumerating its leaves.

    ``tables`` counts distinct table pages a walk can reach; ``leaves`` counts leaf
    translations exactly (512**4 for a PML4 whose every entry points at itself), with each
    shared subtable counted once per way of reaching it, as the walker reaches it;
    ``self_references`` lists the entries that point back at a table on their own path.
    """

    tables: int
    leaves: int
    self_references: tuple[SelfReference, ...]

    @property
    def cyclic(self) -> bool:
        """True if some walk uses a table page twice (the graph has a reachable cycle)."""
        return bool(self.self_references)

    def describe(self) -> str:
        """A short note for a student: how many tables and leaves, and which entries recurse."""
        head = f"{self.tables} table pages, {self.leaves} leaf translations"
        if not self.self_references:
            return head + "; no table is reached twice on one walk (no cycles)"
        refs = self.self_references
        shown = "; ".join(r.describe() for r in refs[:4])
        more = f"; and {len(refs) - 4} more" if len(refs) > 4 else ""
        noun = "entry" if len(refs) == 1 else "entries"
        return f"{head}; cyclic: {len(refs)} self-referencing {noun}: {shown}{more}"


# --------------------------------------------------------------------------------------------
# The builder
# --------------------------------------------------------------------------------------------


# one step of a descent: (gpa of the table, index in it, level of the entry)
_Slot = tuple[int, int, int]


class GuestPageTables:
    """One guest address space: its page tables, in guest memory, and the registers to use them.

    ``mode`` picks the table format; ``wp``, ``nxe``, ``pse``, ``pge``, ``smep``, ``smap``,
    ``pke`` and ``maxphyaddr`` are the CPU features :meth:`cpu` enables (the arguments of
    :func:`kvmmu.hw.walk.cpu_for_mode`) and decide what may be mapped (no XD without ``nxe``, no
    4 MiB pages without ``pse``).

    Table pages come from ``table_gfns``, a ``range`` of guest frames that must lie in
    writable memslots; by default the top ``DEFAULT_TABLE_PAGES`` (64) frames of the memslot
    with the lowest gfns (all of it if it is smaller). The lowest frame of the run becomes
    the root at construction. In 32-bit mode every table must lie below 4 GiB (entries hold
    32-bit addresses); in PAE mode the root must (CR3 is 32 bits wide). Nothing stops a
    mapping from pointing at a table page: guest kernels map their own tables too.

    PAE mode allocates the PDPT and all four page directories up front, so the four PDPTEs
    are present from the start and never change: the CPU loads them at CR3 load, and Linux
    does the same for that reason (``pgd_prepopulate_pmd``, ``PREALLOCATED_PMDS``).

    Every guest store to a table goes to guest memory, marks the page dirty for dirty logging
    and then calls ``on_write(gpa, data)`` if given: pass the MMU's write tracker
    (``kvm_page_track_write``) to let it see the guest editing its tables.

    ``mode=PagingMode.NONE`` is allowed so that :meth:`cpu` can give paging-off registers, but
    there are no tables: editing them raises :class:`ModeError`.
    """

    def __init__(
        self,
        memory: GuestMemory,
        mode: PagingMode,
        *,
        wp: bool = True,
        nxe: bool = True,
        pse: bool = True,
        pge: bool = False,
        smep: bool = False,
        smap: bool = False,
        pke: bool = False,
        maxphyaddr: int = 40,
        table_gfns: range | None = None,
        on_write: WriteHook | None = None,
    ) -> None:
        if not isinstance(memory, GuestMemory):
            raise MemslotError(f"memory must be a GuestMemory, got {type(memory).__name__}")
        if not isinstance(mode, PagingMode):
            raise ModeError(f"mode must be a PagingMode (e.g. PagingMode.LEVEL4), got {mode!r}")
        features = {"wp": wp, "nxe": nxe, "pse": pse, "pge": pge, "smep": smep, "smap": smap}
        for name, value in (*features.items(), ("pke", pke)):
            _check_bool(name, value, ModeError)
        self.memory = memory
        self.mode = mode
        self.spec: ModeSpec = mode.spec
        self.wp, self.nxe, self.pse, self.pge = wp, nxe, pse, pge
        self.smep, self.smap, self.pke = smep, smap, pke
        self.maxphyaddr = check_maxphyaddr(maxphyaddr)
        check_callable("on_write", on_write)
        self.on_write = on_write
        self._esize = self.spec.entry_size
        self._addr_mask = _ADDR_32 if self._esize == 4 else _ADDR_64
        self._large_ok = self._large_levels()
        self._root_gpa = 0
        if mode is PagingMode.NONE:
            self.pool = TablePagePool(range(0))
            return
        gfns = _default_region(memory) if table_gfns is None else table_gfns
        self.pool = TablePagePool(self._check_region(gfns))
        self._root_gpa = self._alloc_table()
        if mode is PagingMode.PAE:
            for index in range(4):
                self._write(self._root_gpa, index, self._alloc_table() | PDPTE_BITS)

    def __repr__(self) -> str:
        return (
            f"GuestPageTables({self.mode.value}, cr3={self.cr3:#x}, "
            f"{len(self.pool.in_use)} table pages, {self.pool.free_count} free)"
        )

    # -- registers -------------------------------------------------------------------------

    @property
    def cr3(self) -> int:
        """The CR3 value for this address space: the root table's gpa (0 with paging off)."""
        return self._root_gpa

    def cpu(
        self,
        *,
        cpl: int = 0,
        ac: bool = False,
        pkru: int = 0,
        wp: bool | None = None,
        nxe: bool | None = None,
        pse: bool | None = None,
        pge: bool | None = None,
        smep: bool | None = None,
        smap: bool | None = None,
        pke: bool | None = None,
        maxphyaddr: int | None = None,
    ) -> CpuState:
        """CR0, CR3, CR4 and EFER for this address space, as the guest kernel sets them.

        Feature arguments left as None take the value given at construction. CR3 is loaded
        with :func:`kvmmu.hw.walk.load_cr3`, so in PAE mode the PDPTEs are read from memory now,
        as a MOV to CR3 reads them; call again after changing a PDPTE. A load that would #GP
        (a PDPTE with reserved bits) raises :class:`ModeError`.
        """
        regs = cpu_for_mode(
            self.mode,
            wp=self.wp if wp is None else wp,
            nxe=self.nxe if nxe is None else nxe,
            pse=self.pse if pse is None else pse,
            pge=self.pge if pge is None else pge,
            smep=self.smep if smep is None else smep,
            smap=self.smap if smap is None else smap,
            pke=self.pke if pke is None else pke,
            cpl=cpl,
            ac=ac,
            pkru=pkru,
            maxphyaddr=self.maxphyaddr if maxphyaddr is None else maxphyaddr,
        )
        if self.mode is PagingMode.NONE:
            return regs
        loaded = load_cr3(self.memory, regs, self.cr3)
        if isinstance(loaded, GeneralProtection):
            raise ModeError(
                f"loading CR3={self.cr3:#x} would #GP: {loaded.reason}; fix the entry with "
                "set_entry(gva, 3, value)"
            )
        return loaded

    @property
    def page_sizes(self) -> tuple[int, ...]:
        """The page sizes :meth:`map` accepts in this mode, smallest first."""
        return tuple(self.spec.level_size(lv) for lv in self._map_levels())

    @property
    def tables(self) -> list[int]:
        """Gfns of the table pages in use, ascending (the root is the lowest)."""
        return sorted(self.pool.in_use)

    # -- map, unmap, protect ------------------------------------------------------------------

    def map(
        self,
        gva: int,
        gpa: int,
        size: int | str = PAGE_SIZE,
        *,
        length: int | None = None,
        writable: bool = True,
        user: bool = False,
        nx: bool = False,
        global_: bool = False,
        accessed: bool = False,
        dirty: bool = False,
        pkey: int = 0,
        pwt: bool = False,
        pcd: bool = False,
    ) -> None:
        """Map ``length`` bytes (default: one page) at ``gva`` to ``gpa`` with ``size`` pages.

        ``size`` is a page size in bytes or a name from ``kvmmu.hw.x86.PAGE_SIZES`` ("4K", "2M",
        "4M", "1G"); see :attr:`page_sizes` for this mode. ``nx`` needs PAE or long mode and
        ``nxe``; ``pkey`` (0..15) needs 4- or 5-level paging and counts once CR4.PKE is set;
        ``global_`` counts once CR4.PGE is set. Missing tables are allocated and
        linked with present, writable, user entries, so the leaf alone decides the rights
        (edit upper entries with :meth:`set_entry` to restrict them). Remapping a page of the
        same size replaces its leaf; mapping over pages of another size is refused: unmap
        them first. The guest kernel's ``set_pte``/``set_pmd``/``set_pud``.

        The whole call is checked before anything is written, so a refused map changes nothing.
        """
        self._need_paging("map")
        size, level = self._page_size(size)
        length = self._check_gva_and_length(gva, size if length is None else length, size)
        check_int("gpa", gpa)
        _check_aligned("gpa", gpa, size)
        self._check_gva_range(gva, length)
        self._check_gpa_range(gpa, length, level)
        bits = self._leaf_bits(
            writable=writable,
            user=user,
            nx=nx,
            global_=global_,
            accessed=accessed,
            dirty=dirty,
            pkey=pkey,
            pwt=pwt,
            pcd=pcd,
        )
        needed: set[tuple[int, int]] = set()
        for offset in range(0, length, size):
            self._plan_map(gva + offset, level, needed)
        self._check_free(len(needed))
        for offset in range(0, length, size):
            table, index = self._table_for(gva + offset, level, create=True)
            self._replace_empty_table(table, index, level)
            self._write(table, index, self._leaf_entry(gpa + offset, level, bits))

    def unmap(self, gva: int, length: int | None = None) -> None:
        """Clear the leaves covering ``length`` bytes at ``gva`` (default: the page at ``gva``).

        Every page in the range must be mapped, and a large page must be covered whole (the
        builder does not split huge pages). Tables left with no present entry are freed and
        unlinked, as Linux's ``free_pgtables`` does; the root and the four PAE page
        directories stay. The guest kernel's ``pte_clear``/``pmd_clear``.
        """
        self._need_paging("unmap")
        for path in self._leaves_in(gva, length, "unmap"):
            table, index, _ = path[-1]
            self._write(table, index, 0)
            self._free_empty_tables(path)

    def protect(
        self,
        gva: int,
        length: int | None = None,
        *,
        writable: bool | None = None,
        user: bool | None = None,
        nx: bool | None = None,
    ) -> None:
        """Change the rights of the leaves covering ``length`` bytes at ``gva`` (``mprotect``).

        Arguments left as None keep the leaf's bit. Only leaves change (Linux's
        ``change_pte_range``): a right that an upper level denies stays denied.
        """
        self._need_paging("protect")
        changes = {"writable": writable, "user": user, "nx": nx}
        if all(v is None for v in changes.values()):
            raise MappingError("protect needs at least one of writable=, user= or nx=")
        for name, value in changes.items():
            if value is not None:
                _check_bool(name, value, MappingError)
        if nx:
            self._check_nx()
        paths = self._leaves_in(gva, length, "protect")
        for path in paths:
            table, index, _ = path[-1]
            entry = self._read(table, index)
            for bit, value in ((_W, writable), (_U, user), (_XD, nx)):
                if value is not None:
                    entry = entry | bit if value else entry & ~bit
            self._write(table, index, entry)

    # -- raw entries ----------------------------------------------------------------------

    def entry(self, gva: int, level: int) -> int:
        """The raw entry at ``level`` on ``gva``'s path (1 = PTE, 2 = PDE, ...).

        In PAE mode level 3 is the PDPTE as stored in memory (the CPU uses the copy it loaded
        with CR3). :class:`MappingError` if the path ends above ``level``.
        """
        self._need_paging("entry")
        self._check_level(level)
        self._check_gva_range(check_int("gva", gva), 1)
        table, index = self._table_for(gva, level, create=False)
        return self._read(table, index)

    def set_entry(self, gva: int, level: int, value: int) -> None:
        """Store a raw ``value`` at ``level`` on ``gva``'s path, allocating missing tables.

        For building tables :meth:`map` will not: a supervisor-only PDE, a reserved bit, a
        not-present entry with software bits. Nothing is checked beyond the width of the
        entry; a table this replaces is not freed. A changed PAE PDPTE reaches the CPU at the
        next CR3 load, that is, the next :meth:`cpu` call.
        """
        self._need_paging("set_entry")
        self._check_level(level)
        self._check_gva_range(check_int("gva", gva), 1)
        check_int("value", value, bits=8 * self._esize)
        needed: set[tuple[int, int]] = set()
        self._plan_descent(gva, level, needed)
        self._check_free(len(needed))
        table, index = self._table_for(gva, level, create=True)
        self._write(table, index, value)

    # -- dumps ----------------------------------------------------------------------------

    def leaves(self, *, limit: int | None = DUMP_LIMIT) -> Iterator[GuestMapping]:
        """Every leaf mapping a walk can reach, in ascending gva order, at most ``limit``.

        Follows exactly what the walker follows with the features given at construction:
        present entries without reserved bits, large pages only where the mode and features
        allow them, tables inside guest memory. A table reached again (shared, or through a
        self-reference) is read once per dump and its leaves are listed once per way of
        reaching it, with ``recursive`` set when the path used a table twice. ``limit=None``
        lists them all, which can be 512**4 rows for a self-referencing root:
        :meth:`table_graph` counts them without listing.

        The walk QEMU's ``info tlb`` makes over every leaf.
        """
        if limit is not None:
            check_count("limit", limit, error=MappingError)
        if self.mode is not PagingMode.NONE:
            yield from _Graph(self).listing(limit)

    def table_graph(self) -> TableGraph:
        """Count tables and leaves and find self-references, memoising shared subtables.

        Finishes in time proportional to the number of distinct tables, whatever the graph
        (a PML4 whose 512 entries all point at itself is one table page and 512**4 leaves).
        No kernel counterpart.
        """
        return _Graph(self).summary()

    def mappings(self, *, limit: int | None = DUMP_LIMIT) -> pd.DataFrame:
        """One row per leaf mapping, like QEMU's ``info tlb``; at most ``limit`` rows.

        Columns: ``gva``, ``gpa``, ``size``, ``level``, ``writable``, ``user``, ``nx``,
        ``global``, ``accessed``, ``dirty``, ``pkey``, ``flags``, ``recursive``. The rights
        columns (and the U, W, X letters of ``flags``, ordered as ``info tlb`` orders them) are
        *effective*: combined over every level, so a supervisor-only PDE makes all its leaves
        non-user. They are the page rights, before CR0.WP, SMEP, SMAP or protection keys apply,
        for the features given at construction. In long mode gvas are canonical (sign-extended).
        Addresses and sizes are exact Python ints (object columns). ``recursive`` marks leaves
        seen through a self-reference (see :class:`GuestMapping`).

        ``attrs`` says what the table shows: ``leaves`` (all leaf translations), ``elided``
        (those beyond ``limit``, not listed), ``cyclic`` and ``note``
        (:meth:`TableGraph.describe`).
        """
        if limit is not None:
            check_count("limit", limit, error=MappingError)
        graph = _Graph(self)
        leaves = [] if self.mode is PagingMode.NONE else list(graph.listing(limit))
        frame = _frame(
            {
                "gva": [m.gva for m in leaves],
                "gpa": [m.gpa for m in leaves],
                "size": [m.size for m in leaves],
                "level": [m.level for m in leaves],
                "writable": [m.writable for m in leaves],
                "user": [m.user for m in leaves],
                "nx": [m.nx for m in leaves],
                "global": [m.global_ for m in leaves],
                "accessed": [m.accessed for m in leaves],
                "dirty": [m.dirty for m in leaves],
                "pkey": [m.pkey for m in leaves],
                "flags": [m.flags for m in leaves],
                "recursive": [m.recursive for m in leaves],
            }
        )
        return _with_note(frame, graph.summary(), len(leaves))

    def info_mem(self, *, limit: int | None = DUMP_LIMIT) -> pd.DataFrame:
        """Virtual ranges with equal effective rights, merged, like QEMU's ``info mem``.

        Columns ``start``, ``end`` (exclusive), ``size`` and ``prot``: ``u`` or ``-``, ``r``,
        ``w`` or ``-``, then (beyond QEMU) ``x`` or ``-`` for XD. Adjacent pages merge
        whatever their physical addresses, as in QEMU. Each shared subtable is summarised once
        and reused, so a self-referencing root gives its few ranges at once; at most ``limit``
        ranges are listed, and ``attrs`` holds ``leaves``, ``elided`` (leaves not covered by
        the listed ranges), ``cyclic`` and ``note`` as in :meth:`mappings`.
        """
        if limit is not None:
            check_count("limit", limit, error=MappingError)
        graph = _Graph(self)
        ranges = [] if self.mode is PagingMode.NONE else graph.ranges(limit)
        frame = _frame(
            {
                "start": [r[0] for r in ranges],
                "end": [r[1] for r in ranges],
                "size": [r[1] - r[0] for r in ranges],
                "prot": [r[2] for r in ranges],
            }
        )
        return _with_note(frame, graph.summary(), sum(r[3] for r in ranges))

    # -- checks ---------------------------------------------------------------------------

    def _need_paging(self, what: str) -> None:
        if self.mode is PagingMode.NONE:
            raise ModeError(
                f"{what}: paging is off (CR0.PG=0), so there are no page tables and every gva "
                "is its gpa; create GuestPageTables with a paging mode such as PagingMode.LEVEL4"
            )

    def _check_level(self, level: int) -> None:
        if isinstance(level, bool) or not isinstance(level, int):
            raise ModeError(f"level must be an int, got {level!r}")
        if not 1 <= level <= self.spec.root_level:
            names = ", ".join(
                f"{lv} = {self.spec.entry_name(lv)}" for lv in range(1, self.spec.root_level + 1)
            )
            raise ModeError(f"level {level} does not exist in {self.mode.value} paging ({names})")

    def _large_levels(self) -> tuple[bool, ...]:
        """Levels where PS makes a leaf, as the walker sees them (``is_large_pte``)."""
        ok = [False] * (self.spec.root_level + 1)
        if self.mode is PagingMode.BITS32:
            ok[2] = self.pse  # SDM 4.3: PS is ignored without CR4.PSE
        elif self.mode is PagingMode.PAE:
            ok[2] = True
        elif self.mode is not PagingMode.NONE:
            ok[2] = ok[3] = True
        return tuple(ok)

    def _map_levels(self) -> list[int]:
        return [1] + [lv for lv in range(2, len(self._large_ok)) if self._large_ok[lv]]

    def _page_size(self, size: int | str) -> tuple[int, int]:
        """Validate a page size; return it in bytes with the level of its leaf."""
        allowed = {self.spec.level_size(lv): lv for lv in self._map_levels()}
        names = ", ".join(format_size(s) for s in allowed)
        if isinstance(size, str):
            if size.upper() not in PAGE_SIZES:
                raise MappingError(
                    f"size={size!r} is not a page size name; use one of {list(PAGE_SIZES)} "
                    f"or bytes ({names} in {self.mode.value} paging)"
                )
            size = PAGE_SIZES[size.upper()]
        if isinstance(size, bool) or not isinstance(size, int):
            raise MappingError(f"size must be a page size in bytes ({names}), got {size!r}")
        if size not in allowed:
            raise MappingError(
                f"{format_size(size)} pages do not exist in {self.mode.value} paging"
                f"{self._size_hint(size)}; page sizes here: {names}"
            )
        return size, allowed[size]

    def _size_hint(self, size: int) -> str:
        if size == PAGE_SIZES["4M"] and self.mode is PagingMode.BITS32:
            return " without CR4.PSE (create GuestPageTables with pse=True)"
        if size == PAGE_SIZES["4M"]:
            return " (4 MiB pages are 32-bit paging with PSE only; use 2 MiB pages)"
        if size == PAGE_SIZES["2M"] and self.mode is PagingMode.BITS32:
            return " (2 MiB pages need PAE or long mode; 32-bit paging has 4 MiB pages)"
        if size == PAGE_SIZES["1G"]:
            return " (1 GiB pages need 4-level or 5-level paging)"
        return ""

    def _check_gva_and_length(self, gva: int, length: int, size: int) -> int:
        check_int("gva", gva)
        _check_aligned("gva", gva, size)
        check_count("length", length)
        if length <= 0 or length % size:
            raise AddressError(
                f"length={length:#x} must be a positive multiple of the {format_size(size)} "
                "page size"
            )
        return length

    def _check_gva_range(self, gva: int, length: int) -> None:
        last = gva + length - 1
        bits = self.spec.va_bits
        if bits == 32:
            if last >> 32:
                raise AddressError(
                    f"gva range {gva:#x}..{last:#x} goes past 4 GiB; {self.mode.value} paging "
                    "has 32-bit linear addresses"
                )
            return
        if not is_canonical(gva, bits):
            raise AddressError(
                f"gva={gva:#x} is not canonical for {bits}-bit linear addresses (bits 63..{bits} "
                f"must copy bit {bits - 1}); did you mean {canonicalize(gva, bits):#x}?"
            )
        if last >> 64 or not is_canonical(last, bits) or last >> 63 != gva >> 63:
            raise AddressError(
                f"gva range {gva:#x}..{last:#x} runs past the canonical half it starts in "
                f"({bits}-bit linear addresses); map the two halves separately"
            )

    def _check_gpa_range(self, gpa: int, length: int, level: int) -> None:
        last = gpa + length - 1
        if self.mode is PagingMode.BITS32 and level == 1:
            if last >> 32:
                raise AddressError(
                    f"gpa range {gpa:#x}..{last:#x} is above 4 GiB, which 4 KiB pages in 32-bit "
                    "paging cannot reach; use 4 MiB pages (PSE-36) or PAE"
                )
            return
        width = self.maxphyaddr
        if self.mode is PagingMode.BITS32:  # PSE-36: at most 8 more address bits
            width = min(width, 40)
        if last >> width:
            raise AddressError(
                f"gpa range {gpa:#x}..{last:#x} is beyond MAXPHYADDR: {self.mode.value} pages "
                f"here reach {width} physical-address bits (below {1 << width:#x})"
            )

    def _check_free(self, needed: int) -> None:
        if needed > self.pool.free_count:
            g = self.pool.gfns
            raise MappingError(
                f"out of page-table pages: this edit needs {needed} new tables but only "
                f"{self.pool.free_count} of the {len(g)} gfns {g.start:#x}..{g.stop - 1:#x} are "
                "free; pass a larger table_gfns range when creating GuestPageTables"
            )

    def _check_nx(self) -> None:
        if self._esize == 4:
            raise MappingError(
                "nx=True: 32-bit paging entries have no execute-disable bit; use PAE or long mode"
            )
        if not self.nxe:
            raise MappingError(
                "nx=True needs EFER.NXE, or XD is a reserved bit; create GuestPageTables with "
                "nxe=True"
            )

    def _leaf_bits(
        self,
        *,
        writable: bool,
        user: bool,
        nx: bool,
        global_: bool,
        accessed: bool,
        dirty: bool,
        pkey: int,
        pwt: bool,
        pcd: bool,
    ) -> int:
        """The bits of a leaf other than its address (Linux's ``pgprot_t``)."""
        flags = {
            "writable": (writable, _W),
            "user": (user, _U),
            "nx": (nx, _XD),
            "global_": (global_, _G),
            "accessed": (accessed, _A),
            "dirty": (dirty, _D),
            "pwt": (pwt, _PWT),
            "pcd": (pcd, _PCD),
        }
        bits = _P
        for name, (value, bit) in flags.items():
            _check_bool(name, value, MappingError)
            bits |= bit if value else 0
        if nx:
            self._check_nx()
        if isinstance(pkey, bool) or not isinstance(pkey, int) or not 0 <= pkey <= PKEY_MASK:
            raise MappingError(f"pkey must be an int 0..15, got {pkey!r}")
        if pkey and self.spec.root_level < 4:
            raise MappingError(
                f"pkey={pkey}: protection keys exist only in 4-level and 5-level entries, "
                f"not in {self.mode.value} paging"
            )
        return bits | pkey << PKEY_SHIFT

    def _check_region(self, gfns: range) -> range:
        """Check that ``gfns`` is a run of writable guest frames every table can live in."""
        if not isinstance(gfns, range) or gfns.step != 1 or len(gfns) == 0:
            raise AddressError(
                f"table_gfns must be a non-empty range of gfns with step 1, got {gfns!r}"
            )
        check_int("table_gfns.start", gfns.start, bits=52 - PAGE_SHIFT)
        limit = self.maxphyaddr - PAGE_SHIFT
        if self.mode is PagingMode.BITS32:
            limit = 32 - PAGE_SHIFT
        if gfns.stop - 1 >> limit:
            raise AddressError(
                f"table_gfns {gfns.start:#x}..{gfns.stop - 1:#x} reach above "
                f"{1 << (limit + PAGE_SHIFT):#x}, where {self.mode.value} entries cannot point; "
                "pass table_gfns below that"
            )
        if self.mode is PagingMode.PAE and gfns.start << PAGE_SHIFT >= _FOUR_GIB:
            raise AddressError(
                f"table_gfns start at gpa {gfns.start << PAGE_SHIFT:#x}, but the PAE root (the "
                "lowest gfn) must lie below 4 GiB: CR3 is 32 bits wide"
            )
        gfn = gfns.start
        while gfn < gfns.stop:
            slot = self.memory.slots.find(gfn)
            if slot is None or slot.readonly:
                why = "is in no memslot" if slot is None else f"is in read-only slot {slot.slot_id}"
                raise MemslotError(
                    f"table page gfn {gfn:#x} {why}; table_gfns must lie in writable guest memory"
                )
            gfn = slot.end_gfn
        return gfns

    # -- memory -----------------------------------------------------------------------------

    def _words(self, table_gpa: int) -> memoryview:
        words = self.memory.table_words(table_gpa >> PAGE_SHIFT, self._esize)
        if words is None:
            raise MemslotError(
                f"page table at gpa {table_gpa:#x} is outside guest memory (was its memslot "
                "moved or deleted, or does a raw entry point there?)"
            )
        return words

    def _read(self, table_gpa: int, index: int) -> int:
        return int(self._words(table_gpa)[index])

    def _write(self, table_gpa: int, index: int, value: int) -> None:
        """Store one entry, as the guest kernel's ``set_pte`` does, and report the write."""
        self._words(table_gpa)[index] = value
        gpa = table_gpa + index * self._esize
        self.memory.mark_page_dirty(gpa >> PAGE_SHIFT)
        if self.on_write is not None:
            self.on_write(gpa, value.to_bytes(self._esize, "little"))

    def _alloc_table(self) -> int:
        """A zeroed table page (``pte_alloc_one``/``pmd_alloc_one``); returns its gpa.

        The page is cleared with one store per non-zero entry, each seen by ``on_write``: a
        recycled table page may still be shadowed by the MMU, which must see it change.
        """
        table = self.pool.alloc() << PAGE_SHIFT
        for index in np.flatnonzero(np.asarray(self._words(table))).tolist():
            self._write(table, index, 0)
        return table

    def _table_entry(self, table_gpa: int, level: int) -> int:
        """The entry that links a new table in at ``level`` (``pmd_populate``/``pud_populate``)."""
        if self.mode is PagingMode.PAE and level == 3:
            return table_gpa | PDPTE_BITS
        return table_gpa | TABLE_ENTRY_BITS

    def _leaf_entry(self, gpa: int, level: int, bits: int) -> int:
        """A leaf for ``gpa`` at ``level`` (``pfn_pte``/``pfn_pmd``/``pfn_pud``)."""
        if level == 1:
            return gpa | bits
        if self._esize == 4:  # 4 MiB page: bits 31:22 in place, PSE-36 bits 39:32 at 13..20
            return (gpa & _LARGE_32) | (gpa >> 32) << 13 | bits | _PS
        return gpa | bits | _PS

    def _is_leaf(self, entry: int, level: int) -> bool:
        return level == 1 or bool(entry & _PS and self._large_ok[level])

    # -- descents ---------------------------------------------------------------------------

    def _table_for(self, gva: int, level: int, *, create: bool) -> tuple[int, int]:
        """The table holding ``gva``'s entry at ``level``, and the index in it.

        Allocates and links missing tables when ``create``; otherwise a missing table is a
        :class:`MappingError`, as is a large page above ``level`` either way.
        """
        spec = self.spec
        table = self._root_gpa
        for lv in range(spec.root_level, level, -1):
            index = spec.index(gva, lv)
            entry = self._read(table, index)
            if not entry & _P:
                if not create:
                    raise MappingError(
                        f"gva {gva:#x} has no {spec.entry_name(level)}: its {spec.entry_name(lv)} "
                        f"(level {lv}) is not present"
                    )
                entry = self._table_entry(self._alloc_table(), lv)
                self._write(table, index, entry)
            elif self._is_leaf(entry, lv):
                raise MappingError(self._inside_large(gva, lv, entry, spec.entry_name(level)))
            table = entry & self._addr_mask
        return table, spec.index(gva, level)

    def _inside_large(self, gva: int, level: int, entry: int, wanted: str) -> str:
        size = self.spec.level_size(level)
        base = gva & ~(size - 1)
        return (
            f"gva {gva:#x} lies in the {format_size(size)} page at {base:#x} (its "
            f"{self.spec.entry_name(level)} {entry:#x} is a leaf), so there is no {wanted} "
            f"below it; unmap({base:#x}) first"
        )

    def _plan_descent(self, gva: int, level: int, needed: set[tuple[int, int]]) -> int | None:
        """Check the path to ``level`` without writing; record the tables it would allocate.

        Returns the present entry at ``level`` if the path exists, else None.
        """
        spec = self.spec
        table: int | None = self._root_gpa
        for lv in range(spec.root_level, level, -1):
            if table is None:  # a table this call would allocate at level lv
                needed.add((lv, gva >> spec.shift(lv + 1)))
                continue
            entry = self._read(table, spec.index(gva, lv))
            if not entry & _P:
                table = None
            elif self._is_leaf(entry, lv):
                raise MappingError(self._inside_large(gva, lv, entry, spec.entry_name(level)))
            else:
                table = entry & self._addr_mask
        if table is None:
            needed.add((level, gva >> spec.shift(level + 1)))
            return None
        return self._read(table, spec.index(gva, level))

    def _plan_map(self, gva: int, level: int, needed: set[tuple[int, int]]) -> None:
        """Refuse a leaf at ``level`` over a table that still maps smaller pages."""
        entry = self._plan_descent(gva, level, needed)
        if entry is None or not entry & _P or self._is_leaf(entry, level):
            return
        words = self.memory.table_words((entry & self._addr_mask) >> PAGE_SHIFT, self._esize)
        if words is not None and np.any(np.asarray(words) & _P):
            size = self.spec.level_size(level)
            raise MappingError(
                f"gva {gva:#x}..{gva + size - 1:#x} already holds smaller pages (its "
                f"{self.spec.entry_name(level)} points to a table); unmap them before mapping "
                f"a {format_size(size)} page there"
            )

    def _has_present(self, table_gpa: int) -> bool:
        return bool(np.any(np.asarray(self._words(table_gpa)) & _P))

    def _replace_empty_table(self, table: int, index: int, level: int) -> None:
        """Free an empty table that a large leaf is about to replace."""
        entry = self._read(table, index)
        if level > 1 and entry & _P and not self._is_leaf(entry, level):
            sub_gfn = (entry & self._addr_mask) >> PAGE_SHIFT
            if sub_gfn in self.pool.in_use:
                self.pool.free(sub_gfn)

    def _path(self, gva: int) -> list[_Slot]:
        """The entries a walk of ``gva`` reads, root first, down to a leaf or a non-present one."""
        spec = self.spec
        table = self._root_gpa
        path: list[_Slot] = []
        for lv in range(spec.root_level, 0, -1):
            index = spec.index(gva, lv)
            path.append((table, index, lv))
            entry = self._read(table, index)
            if not entry & _P or self._is_leaf(entry, lv):
                break
            table = entry & self._addr_mask
        return path

    def _leaves_in(self, gva: int, length: int | None, what: str) -> list[list[_Slot]]:
        """Paths to every leaf in the range, checked whole before any is touched."""
        check_int("gva", gva)
        _check_aligned("gva", gva, PAGE_SIZE)
        if length is not None:
            self._check_gva_and_length(gva, length, PAGE_SIZE)
        self._check_gva_range(gva, PAGE_SIZE if length is None else length)
        paths: list[list[_Slot]] = []
        cursor = gva
        end = None if length is None else gva + length
        while end is None or cursor < end:
            path = self._path(cursor)
            table, index, level = path[-1]
            entry = self._read(table, index)
            if not entry & _P:
                raise MappingError(
                    f"{what}: gva {cursor:#x} is not mapped (its {self.spec.entry_name(level)} "
                    "is not present)"
                )
            size = self.spec.level_size(level)
            base = cursor & ~(size - 1)
            stop = base + size if end is None else end
            if base != cursor or stop < base + size:
                raise MappingError(
                    f"{what}: the range covers part of the {format_size(size)} page at "
                    f"{base:#x}; pass gva={base:#x} and a length covering the whole page"
                )
            paths.append(path)
            cursor = base + size
            if end is None:
                break
        return paths

    def _free_empty_tables(self, path: list[_Slot]) -> None:
        """Unlink and free tables left with no present entry (``free_pgtables``)."""
        keep = 2 if self.mode is PagingMode.PAE else self.spec.root_level
        for depth in range(len(path) - 1, 0, -1):
            table, _, level = path[depth]
            gfn = table >> PAGE_SHIFT
            if level >= keep or gfn not in self.pool.in_use or self._has_present(table):
                return
            parent, parent_index, _ = path[depth - 1]
            self._write(parent, parent_index, 0)
            self.pool.free(gfn)

    def _mapping(
        self, va: int, level: int, entry: int, rights: _Rights, recursive: bool
    ) -> GuestMapping:
        size = self.spec.level_size(level)
        if level == 1:
            gpa = entry & self._addr_mask
        elif self._esize == 4:
            high = (entry >> 13) & ((1 << (min(self.maxphyaddr, 40) - 32)) - 1)
            gpa = (entry & _LARGE_32) | high << 32
        else:
            gpa = entry & _ADDR_64 & ~(size - 1)
        if self.spec.va_bits > 32:
            va = canonicalize(va, self.spec.va_bits)
        return GuestMapping(
            gva=va,
            gpa=gpa,
            size=size,
            level=level,
            writable=rights[0],
            user=rights[1],
            nx=rights[2],
            global_=bool(entry & _G),
            accessed=bool(entry & _A),
            dirty=bool(entry & _D),
            pkey=(entry >> PKEY_SHIFT) & PKEY_MASK if self._esize == 8 else 0,
            entry=entry,
            recursive=recursive,
        )


# --------------------------------------------------------------------------------------------
# Dumps over any table graph
# --------------------------------------------------------------------------------------------

_Rights = tuple[bool, bool, bool]  # writable, user, nx: combined over the levels above
_ALL_RIGHTS: _Rights = (True, True, False)
_Range = tuple[int, int, str, int]  # start, end (exclusive), prot, leaves it covers
# one entry a walk follows: index, entry, the table it points at (-1: a leaf), its W, U, XD
_Child = tuple[int, int, int, bool, bool, bool]


def _prot(rights: _Rights) -> str:
    writable, user, nx = rights
    return ("u" if user else "-") + "r" + ("w" if writable else "-") + ("-" if nx else "x")


class _Graph:
    """One dump's view of a guest's tables, as a graph of table pages.

    Each table page is read once per dump, and the leaf count, the merged ranges and the
    self-references under a subtable are memoised, so a subtable reached many ways (shared,
    or through a self-reference) costs once. Only the row-by-row listing grows with the number
    of ways, and it is cut at its limit.
    """

    def __init__(self, pt: GuestPageTables) -> None:
        self.pt = pt
        self.spec = pt.spec
        regs = cpu_for_mode(pt.mode, nxe=pt.nxe, pse=pt.pse, maxphyaddr=pt.maxphyaddr)
        self.rsvd = [
            (0, 0) if lv == 0 else (reserved_mask(regs, lv, False), reserved_mask(regs, lv, True))
            for lv in range(pt.spec.root_level + 1)
        ]
        self.nx_ok = pt.nxe and pt._esize == 8
        self.tables: set[int] = set()
        self._children: dict[tuple[int, int], list[_Child]] = {}
        self._counts: dict[tuple[int, int], int] = {}
        self._ranges: dict[tuple[int, int, _Rights], tuple[list[_Range], bool]] = {}

    def children(self, table: int, level: int) -> list[_Child]:
        """The entries of ``table`` that a walk follows at ``level`` (present, no reserved bit)."""
        key = (table, level)
        found = self._children.get(key)
        if found is not None:
            return found
        pt = self.pt
        out: list[_Child] = []
        words = pt.memory.table_words(table >> PAGE_SHIFT, pt._esize)
        if words is not None:  # outside guest memory: the walker's "not present"
            self.tables.add(table)
            pdpt = pt.mode is PagingMode.PAE and level == 3
            entries = np.asarray(words)[: 4 if pdpt else None]
            for index in np.flatnonzero(entries & _P).tolist():
                entry = int(entries[index])
                if pdpt:  # PDPTEs carry no rights; the CPU #GPs at CR3 load on reserved bits
                    if not entry & pdpte_rsvd_mask(pt.maxphyaddr):
                        out.append((index, entry, entry & _ADDR_64, True, True, False))
                    continue
                if entry & self.rsvd[level][1 if entry & _PS else 0]:
                    continue
                sub = -1 if pt._is_leaf(entry, level) else entry & pt._addr_mask
                xd = self.nx_ok and bool(entry & _XD)
                out.append((index, entry, sub, bool(entry & _W), bool(entry & _U), xd))
        self._children[key] = out
        return out

    def listing(self, limit: int | None) -> Iterator[GuestMapping]:
        """Leaves in gva order, at most ``limit`` of them."""
        leaves = self._leaves(self.pt.cr3, self.spec.root_level, 0, _ALL_RIGHTS, ())
        yield from leaves if limit is None else itertools.islice(leaves, limit)

    def _leaves(
        self, table: int, level: int, va: int, rights: _Rights, path: tuple[int, ...]
    ) -> Iterator[GuestMapping]:
        path = (*path, table)
        recursive = len(set(path)) < len(path)
        shift = self.spec.shift(level)
        for index, entry, sub, w, u, xd in self.children(table, level):
            here = va | index << shift
            combined = (rights[0] and w, rights[1] and u, rights[2] or xd)
            if sub < 0:
                yield self.pt._mapping(here, level, entry, combined, recursive)
            else:
                yield from self._leaves(sub, level - 1, here, combined, path)

    def count(self, table: int, level: int) -> int:
        """Leaf translations under ``table``: each way of reaching a subtable counts."""
        key = (table, level)
        found = self._counts.get(key)
        if found is None:
            found = sum(
                1 if sub < 0 else self.count(sub, level - 1)
                for _, _, sub, _, _, _ in self.children(table, level)
            )
            self._counts[key] = found
        return found

    def self_references(self) -> tuple[SelfReference, ...]:
        """Entries pointing at a table already on their path, each walk state visited once."""
        found: dict[tuple[int, int], tuple[int, int]] = {}  # (table, index) -> (level, target)
        seen: set[tuple[int, int, frozenset[int]]] = set()

        def visit(table: int, level: int, path: frozenset[int]) -> None:
            path = path | {table}
            if (table, level, path) in seen:
                return
            seen.add((table, level, path))
            for index, _, sub, _, _, _ in self.children(table, level):
                if sub < 0:
                    continue
                if sub in path:  # one entry used at several levels is listed at the highest
                    old = found.get((table, index))
                    if old is None or old[0] < level:
                        found[(table, index)] = (level, sub)
                visit(sub, level - 1, path)

        visit(self.pt.cr3, self.spec.root_level, frozenset())
        return tuple(
            SelfReference(t, lv, i, target, self.spec.entry_name(lv))
            for (t, i), (lv, target) in sorted(found.items())
        )

    def summary(self) -> TableGraph:
        """The :class:`TableGraph` of the tables (nothing with paging off)."""
        if self.pt.mode is PagingMode.NONE:
            return TableGraph(0, 0, ())
        leaves = self.count(self.pt.cr3, self.spec.root_level)
        refs = self.self_references()
        return TableGraph(len(self.tables), leaves, refs)

    def ranges(self, limit: int | None) -> list[_Range]:
        """``info mem`` ranges from the root, canonical in long mode, at most ``limit``."""
        return self._summarise(self.pt.cr3, self.spec.root_level, _ALL_RIGHTS, limit)[0]

    def _summarise(
        self, table: int, level: int, rights: _Rights, limit: int | None
    ) -> tuple[list[_Range], bool]:
        """Merged ranges under ``table`` (offsets from its first address), and whether the
        list was cut at ``limit``; a cut list is a prefix, and so is every list built on it."""
        key = (table, level, rights)
        found = self._ranges.get(key)
        if found is not None:
            return found
        spec = self.spec
        canonical = level == spec.root_level and spec.va_bits > 32
        shift, size = spec.shift(level), spec.level_size(level)
        out: list[_Range] = []
        cut = False
        for index, _, sub, w, u, xd in self.children(table, level):
            base = index << shift
            if canonical:
                base = canonicalize(base, spec.va_bits)
            combined = (rights[0] and w, rights[1] and u, rights[2] or xd)
            if sub < 0:
                parts, cut = [(0, size, _prot(combined), 1)], False
            else:
                parts, cut = self._summarise(sub, level - 1, combined, limit)
            for start, end, prot, leaves in parts:
                if out and out[-1][1] == base + start and out[-1][2] == prot:
                    first, _, _, before = out[-1]
                    out[-1] = (first, base + end, prot, before + leaves)
                else:
                    out.append((base + start, base + end, prot, leaves))
            if limit is not None and len(out) > limit:
                del out[limit:]
                cut = True
            if cut:
                break
        self._ranges[key] = (out, cut)
        return out, cut


def _with_note(frame: pd.DataFrame, graph: TableGraph, shown_leaves: int) -> pd.DataFrame:
    """Put what a dump shows, and what it left out, into ``frame.attrs``."""
    frame.attrs.update(
        leaves=graph.leaves,
        elided=graph.leaves - shown_leaves,
        cyclic=graph.cyclic,
        note=graph.describe(),
    )
    return frame


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _check_bool(name: str, value: object, error: type[Exception]) -> None:
    if not isinstance(value, bool):
        raise error(f"{name} must be True or False, got {value!r}")


def _check_aligned(name: str, value: int, size: int) -> None:
    if value & (size - 1):
        raise AddressError(
            f"{name}={value:#x} is not aligned to the {format_size(size)} page size; "
            f"use {value & ~(size - 1):#x} or a smaller page"
        )


def _default_region(memory: GuestMemory) -> range:
    """The top :data:`DEFAULT_TABLE_PAGES` frames of the memslot with the lowest gfns."""
    slots = list(memory.slots)
    if not slots:
        raise MemslotError(
            "guest memory has no memslots, so there is nowhere for page tables; create "
            "GuestMemory(size) or pass table_gfns"
        )
    first = slots[0]
    count = min(DEFAULT_TABLE_PAGES, first.npages)
    return range(first.end_gfn - count, first.end_gfn)


_DTYPES = {"level": "int64", "pkey": "int64", "prot": "str", "flags": "str"}
_BOOLS = frozenset({"writable", "user", "nx", "global", "accessed", "dirty", "recursive"})


def _frame(columns: dict[str, list[int] | list[bool] | list[str]]) -> pd.DataFrame:
    """A DataFrame with fixed dtypes, also when empty.

    Addresses and sizes stay exact Python ints (object dtype): a canonical upper-half gva
    does not fit int64, and the end of the last range can be 2**64.
    """
    return pd.DataFrame(
        {
            name: pd.Series(values, dtype=_DTYPES.get(name, "bool" if name in _BOOLS else object))
            for name, values in columns.items()
        }
    )


__all__ = [
    "DEFAULT_TABLE_PAGES",
    "DUMP_LIMIT",
    "INFO_MEM_COLUMNS",
    "MAPPING_COLUMNS",
    "PDPTE_BITS",
    "TABLE_ENTRY_BITS",
    "GuestMapping",
    "GuestPageTables",
    "SelfReference",
    "TableGraph",
    "TablePagePool",
    "format_size",
]
