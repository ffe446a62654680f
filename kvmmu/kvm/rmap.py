"""Reverse maps: from a guest frame to the sptes that map it, and from a page to its parents.

Mirrors the ``rmap_*`` and ``pte_list_*`` helpers of ``arch/x86/kvm/mmu/mmu.c``. KVM keeps one
rmap head per gfn and page size in each memslot (``slot->arch.rmap[level]``); an spte that maps a
large page is found under the first gfn of that page, at its level. kvmmu keys a dict the same
way, by ``(level, base gfn of the large page)``.

The rmap is what write protection, dirty logging and memslot changes use to find every spte of
a gfn, and :meth:`Rmap.add` is where the seed change's ``get_gfn`` is read: the gfn of a new
leaf spte comes from its page, computed for a direct page and stored for an indirect one.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator

from kvmmu.kvm.page import LEVEL_BITS, MmuPage

Sptep = tuple[MmuPage, int]  # (shadow page, index): kvmmu's "u64 *sptep"


def level_base(gfn: int, level: int) -> int:
    """First gfn of the level-``level`` page containing ``gfn`` (``gfn_round_for_level``)."""
    return gfn & ~((1 << ((level - 1) * LEVEL_BITS)) - 1)


class Rmap:
    """gfn -> the leaf sptes that map it (``rmap_add``, ``rmap_remove``, ``for_each_rmap_spte``).

    A head holds its one spte itself, as ``rmap_head->val`` points at a lone spte; from the
    second spte on it holds them in order (KVM's ``pte_list_desc``), so the common single
    mapping costs no collection.
    """

    def __init__(self) -> None:
        # dicts used as ordered sets: iteration follows insertion, never object addresses,
        # so every run of the same guest program does the same work in the same order
        self._heads: dict[tuple[int, int], Sptep | dict[Sptep, None]] = {}

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
        key = (sp.role.level, gfn)
        heads = self._heads
        head = heads.get(key)
        if head is None:
            heads[key] = (sp, index)  # a lone spte: the head is the spte
            return 0
        if head.__class__ is tuple:
            if head == (sp, index):
                return 0
            heads[key] = {head: None, (sp, index): None}
            return 1
        assert isinstance(head, dict)
        head[(sp, index)] = None
        return len(head) - 1

    def remove(self, sp: MmuPage, index: int) -> int:
        """Forget leaf spte ``index`` of ``sp``; return its gfn (``rmap_remove``)."""
        gfn = sp.get_gfn(index)
        key = (sp.level, gfn)
        head = self._heads[key]
        if isinstance(head, dict):
            head.pop((sp, index), None)
            if not head:
                del self._heads[key]
        elif head == (sp, index):
            del self._heads[key]
        return gfn

    def _head(self, gfn: int, level: int) -> tuple[Sptep, ...] | dict[Sptep, None]:
        head = self._heads.get((level, level_base(gfn, level)))
        return () if head is None else _sptes_of(head)

    def sptes(self, gfn: int, level: int) -> list[Sptep]:
        """The sptes mapping ``gfn`` with pages of ``level`` (``gfn_to_rmap`` + iteration)."""
        return list(self._head(gfn, level))

    def count(self, gfn: int, level: int) -> int:
        """How many sptes map ``gfn`` with pages of ``level`` (``pte_list_count``)."""
        return len(self._head(gfn, level))

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
            yield key, _sptes_of(head)

    def __len__(self) -> int:
        return sum(len(v) if isinstance(v, dict) else 1 for v in self._heads.values())


def _sptes_of(head: Sptep | dict[Sptep, None]) -> tuple[Sptep, ...] | dict[Sptep, None]:
    """The sptes of a head: a lone spte stands for itself, a dict holds several in order."""
    return head if isinstance(head, dict) else (head,)


def add_parent_pte(child: MmuPage, parent: MmuPage, index: int) -> None:
    """Record that ``parent``'s spte ``index`` points to ``child`` (``mmu_page_add_parent_pte``)."""
    child.parent_ptes.append((parent, index))


def remove_parent_pte(child: MmuPage, parent: MmuPage, index: int) -> None:
    """Forget a parent pointer (``mmu_page_remove_parent_pte``)."""
    child.parent_ptes.remove((parent, index))
