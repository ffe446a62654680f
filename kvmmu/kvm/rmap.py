"""Reverse maps: from a guest frame to the sptes that map it, and from a page to its parents.

Mirrors the ``rmap_*`` and ``pte_list_*`` helpers of ``arch/x86/kvm/mmu/mmu.c``. KVM keeps one
rmap head per gfn and page size in each memslot (``slot->arch.rmap[level]``); an spte that maps a
large page is found under the first gfn of that page, at its level. kvmmu keys one dict the same
way, by level and the base gfn of the large page, and files only the gfns that have sptes (a
64 GiB guest would need 128 MiB of heads for its 4 KiB pages alone).

The rmap is what write protection, dirty logging and memslot changes use to find every spte of
a gfn, and :meth:`Rmap.add` is where the seed change's ``get_gfn`` is read: the gfn of a new
leaf spte comes from its page, computed for a direct page and stored for an indirect one.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator

from kvmmu.errors import KvmmuError
from kvmmu.hw.x86 import PAGE_SHIFT
from kvmmu.kvm.page import LEVEL_BITS, MmuPage

# (shadow page, index): an spte as the rmap's lookups give it; the rmap itself holds the
# spte's address (sptep_of), KVM's "u64 *sptep"
Sptep = tuple[MmuPage, int]

_LEVEL_KEY_BITS = 3  # a head's key is gfn << 3 | level (levels 1 to 5)
_SPTE_SHIFT = 3  # an spte is 8 bytes: its address is the page's plus index << 3


def level_base(gfn: int, level: int) -> int:
    """First gfn of the level-``level`` page containing ``gfn`` (``gfn_round_for_level``)."""
    return gfn & ~((1 << ((level - 1) * LEVEL_BITS)) - 1)


def sptep_of(sp: MmuPage, index: int) -> int:
    """The host address of spte ``index`` of ``sp``: what KVM's ``u64 *sptep`` points at.

    No kernel counterpart (a C pointer is this address already).
    """
    return sp.pfn << PAGE_SHIFT | index << _SPTE_SHIFT


class Rmap:
    """gfn -> the leaf sptes that map it (``rmap_add``, ``rmap_remove``, ``for_each_rmap_spte``).

    A head is KVM's ``rmap_head->val``: one spte's address while the gfn has one mapping (the
    common case costs no collection), from the second spte on a collection of them in order
    (KVM's ``pte_list_desc``). An spte is held by its address (:func:`sptep_of`), as KVM holds a
    ``u64 *sptep``: a plain int, which costs the garbage collector nothing however many sptes
    the rmap holds. ``pages`` (the MMU's ``by_pfn``) turns an address back into its page, as
    ``sptep_to_sp`` does; an rmap made without it keeps its own, filled as pages are filed
    (for pages outside any MMU, which must then lie in frames of their own).
    """

    def __init__(self, pages: dict[int, MmuPage] | None = None) -> None:
        # one dict for every level, and dicts as ordered sets: iteration follows filing order,
        # never object addresses, so every run of the same guest program does the same work in
        # the same order
        self._heads: dict[int, int | dict[int, None]] = {}
        self._own_pages = pages is None
        self._pages: dict[int, MmuPage] = {} if pages is None else pages

    def _claim(self, sp: MmuPage) -> None:
        """Remember ``sp`` by its frame, for an rmap that keeps its own pages."""
        known = self._pages.setdefault(sp.pfn, sp)
        if known is not sp:
            raise KvmmuError(
                f"pfn {sp.pfn:#x} already holds {known.describe()}: pages filed in an rmap made "
                "without an MMU's pages need frames of their own"
            )

    def add(self, sp: MmuPage, index: int) -> int:
        """Record leaf spte ``index`` of ``sp``; return its gfn (``rmap_add``)."""
        gfn = sp.get_gfn(index)
        self.pte_list_add(sp, index, gfn)
        return gfn

    def pte_list_add(self, sp: MmuPage, index: int, gfn: int) -> int:
        """File leaf spte ``index`` of ``sp`` under ``gfn`` at the page's level; return how many
        sptes the head held before (``pte_list_add``).

        ``gfn`` is the one ``rmap_add`` was given, which :meth:`MmuPage.set_gfn` has just
        recorded, so ``sp.get_gfn(index)`` answers the same.
        """
        if self._own_pages:
            self._claim(sp)
        key = gfn << _LEVEL_KEY_BITS | sp.role.level
        sptep = sp.pfn << PAGE_SHIFT | index << _SPTE_SHIFT  # sptep_of, inline: every fault
        heads = self._heads
        head = heads.get(key)
        if head is None:
            heads[key] = sptep  # a lone spte: the head is the spte
            return 0
        return _add_to_head(heads, key, head, sptep)

    def pte_list_add_many(self, sp: MmuPage, indices: list[int], gfn: int) -> int:
        """:meth:`pte_list_add` for each spte in ``indices`` of level-1 page ``sp``, spte ``i``
        under ``gfn + i``; return the most sptes a head held before.

        No kernel counterpart of its own: the ``rmap_add`` of each ``mmu_set_spte`` in
        ``direct_pte_prefetch_many``, in one loop.
        """
        if self._own_pages:
            self._claim(sp)
        if sp.role.level != 1:
            raise KvmmuError(f"pte_list_add_many needs a level-1 page, got {sp.describe()}")
        heads = self._heads
        setdefault = heads.setdefault
        base = sp.pfn << PAGE_SHIFT
        key_base = gfn << _LEVEL_KEY_BITS | 1
        most = 0
        for index in indices:
            sptep = base | index << _SPTE_SHIFT
            key = key_base + (index << _LEVEL_KEY_BITS)  # gfn + index, at level 1
            head = setdefault(key, sptep)  # a new head: a lone spte, filed
            if head is not sptep:
                count = _add_to_head(heads, key, head, sptep)
                if count > most:
                    most = count
        return most

    def remove(self, sp: MmuPage, index: int) -> int:
        """Forget leaf spte ``index`` of ``sp``; return its gfn (``rmap_remove``)."""
        gfn = sp.get_gfn(index)
        key = gfn << _LEVEL_KEY_BITS | sp.level
        sptep = sptep_of(sp, index)
        head = self._heads[key]
        if isinstance(head, int):
            if head == sptep:
                del self._heads[key]
        else:
            head.pop(sptep, None)
            if not head:
                del self._heads[key]
        return gfn

    def _sptes_of(self, head: int | dict[int, None]) -> tuple[Sptep, ...]:
        """The sptes of a head, as pages and indices (``sptep_to_sp``), in filing order."""
        pages = self._pages
        if isinstance(head, int):
            return ((pages[head >> PAGE_SHIFT], (head >> _SPTE_SHIFT) & 511),)
        return tuple((pages[p >> PAGE_SHIFT], (p >> _SPTE_SHIFT) & 511) for p in head)

    def _head(self, gfn: int, level: int) -> tuple[Sptep, ...]:
        head = self._heads.get(level_base(gfn, level) << _LEVEL_KEY_BITS | level)
        return () if head is None else self._sptes_of(head)

    def sptes(self, gfn: int, level: int) -> list[Sptep]:
        """The sptes mapping ``gfn`` with pages of ``level`` (``gfn_to_rmap`` + iteration)."""
        return list(self._head(gfn, level))

    def count(self, gfn: int, level: int) -> int:
        """How many sptes map ``gfn`` with pages of ``level`` (``pte_list_count``)."""
        head = self._heads.get(level_base(gfn, level) << _LEVEL_KEY_BITS | level)
        if head is None:
            return 0
        return 1 if isinstance(head, int) else len(head)

    def all_levels(self, gfn: int, max_level: int = 3) -> list[Sptep]:
        """Every spte mapping ``gfn``, at every page size up to ``max_level``."""
        out: list[Sptep] = []
        for level in range(1, max_level + 1):
            out.extend(self._head(gfn, level))
        return out

    def items(self) -> Iterator[tuple[tuple[int, int], Collection[Sptep]]]:
        """Every (level, gfn) head and its sptes, in order; for the audit.

        Every ``slot->arch.rmap`` head, as an audit walks them.
        """
        for key, head in self._heads.items():
            yield (key & ((1 << _LEVEL_KEY_BITS) - 1), key >> _LEVEL_KEY_BITS), self._sptes_of(head)

    def addresses(self) -> Iterator[tuple[int, int, int, int]]:
        """Every spte filed, as (level, gfn, pfn of its page, index), in order; for the audit,
        which must name an spte whose page was freed (its frame no longer finds a page).

        The ``u64 *sptep`` values of every head, as ``for_each_rmap_spte`` yields them.
        """
        for key, head in self._heads.items():
            level, gfn = key & ((1 << _LEVEL_KEY_BITS) - 1), key >> _LEVEL_KEY_BITS
            for sptep in (head,) if isinstance(head, int) else head:
                yield level, gfn, sptep >> PAGE_SHIFT, (sptep >> _SPTE_SHIFT) & 511

    def __len__(self) -> int:
        return sum(len(v) if isinstance(v, dict) else 1 for v in self._heads.values())


def _add_to_head(
    heads: dict[int, int | dict[int, None]], key: int, head: int | dict[int, None], sptep: int
) -> int:
    """Add ``sptep`` to a head that holds sptes already; return how many it held before."""
    if isinstance(head, int):
        if head == sptep:
            return 0
        heads[key] = {head: None, sptep: None}
        return 1
    head[sptep] = None
    return len(head) - 1


def add_parent_pte(child: MmuPage, parent: MmuPage, index: int) -> None:
    """Record that ``parent``'s spte ``index`` points to ``child`` (``mmu_page_add_parent_pte``)."""
    child.parent_ptes.append((parent, index))


def remove_parent_pte(child: MmuPage, parent: MmuPage, index: int) -> None:
    """Forget a parent pointer (``mmu_page_remove_parent_pte``)."""
    child.parent_ptes.remove((parent, index))
