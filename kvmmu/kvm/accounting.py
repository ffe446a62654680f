"""Memory per shadow page, as the kernel allocated it in three eras.

Mirrors what ``kvm_mmu_alloc_page`` (before 2022) and ``kvm_mmu_alloc_shadow_page`` (after)
in ``arch/x86/kvm/mmu/mmu.c`` allocate for one shadow page:

* ``pre-2010``: the spt page (4096 bytes) and a ``gfns`` page (512 gfns of 8 bytes, 4096 bytes)
  for every page, direct or not: before commit 2032a93d66fa.
* ``2010 seed``: "KVM: MMU: Don't allocate gfns page for direct mmu pages" (2032a93d66fa): a
  direct page computes its gfns (``kvm_mmu_page_get_gfn``), so only indirect pages get one.
* ``today``: since "KVM: x86/mmu: Cache the access bits of shadowed translations" (2022) an
  indirect page allocates ``shadowed_translation``, one u64 per spte holding the gfn and the
  access bits together (still 4096 bytes); direct pages allocate none.

Each era also allocates the ``struct kvm_mmu_page`` header from a slab cache
(``mmu_page_header_cache``). Its size is **approximate**, added up by hand from the field list
on x86-64 with natural alignment (the kernel never printed it). The figures, with their
sources, live in ``kvmmu/data/reference/kernel_eras.csv``:

* 2010 (``arch/x86/include/asm/kvm_host.h``, v2.6.35): ``link`` and ``hash_link`` (16 each),
  ``gfn`` (8), ``role`` (4, padded to 8), ``spt`` and ``gfns`` (8 each), ``slot_bitmap``
  (36 memslots, one long: 8), ``multimapped`` and ``unsync`` (bools), ``root_count`` and
  ``unsync_children`` (4 each, with padding 16), the ``parent_pte``/``parent_ptes`` union (8)
  and ``unsync_child_bitmap`` (512 bits: 64): about 160 bytes. The seed change did not touch
  the struct, so ``pre-2010`` uses the same figure.
* today (``arch/x86/kvm/mmu/mmu_internal.h``, v6.x): ``link`` and ``hash_link`` (16 each), four
  one-byte flags, ``role`` (4), ``gfn``, ``spt`` and ``shadowed_translation`` (8 each),
  ``root_count`` and ``unsync_children`` (4 each), the ``parent_ptes``/``ptep`` union (8),
  ``unsync_child_bitmap`` (64), ``possible_nx_huge_page_link`` (16), ``write_flooding_count``
  (4) and an ``rcu_head`` (16, 8-aligned): about 184 bytes.

kvmmu's own Python objects cost far more than any of this; the tables here are about the
kernel's allocations, which is what the seed change saved.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from kvmmu.errors import KvmmuError, check_bool, check_count
from kvmmu.hw.x86 import PAGE_SIZE
from kvmmu.kvm.mmu import Mmu
from kvmmu.kvm.page import MmuPage
from kvmmu.reference import kernel_eras

ERAS: tuple[str, ...] = tuple(kernel_eras().index)
"""The kernel eras, oldest first."""

SPT_BYTES = PAGE_SIZE  # the page of 512 sptes
STRUCT_BYTES: dict[str, int] = {
    str(era): int(n) for era, n in kernel_eras()["struct_bytes_approx"].items()
}
"""Approximate ``sizeof(struct kvm_mmu_page)`` on x86-64 per era (see the module docstring)."""

COLUMNS = (
    "era",
    "pages",
    "direct pages",
    "indirect pages",
    "spt bytes",
    "gfns bytes",
    "struct bytes",
    "total bytes",
    "saved vs pre-2010",
)


class EraError(KvmmuError, ValueError):
    """An era name that is not one of :data:`ERAS`."""


def check_era(era: str) -> str:
    """Return ``era`` if it is known, else raise :class:`EraError` naming the choices.

    No kernel counterpart.
    """
    if not isinstance(era, str) or era not in ERAS:
        raise EraError(f"unknown era {era!r}; pass one of {', '.join(repr(e) for e in ERAS)}")
    return era


def gfns_bytes(era: str, direct: bool) -> int:
    """Bytes of the per-page gfn array (``gfns``, later ``shadowed_translation``) in ``era``.

    The allocation decision of ``kvm_mmu_alloc_page`` / ``kvm_mmu_alloc_shadow_page``: before
    2010 every page had one; since the seed change only indirect pages do.
    """
    row = kernel_eras().loc[check_era(era)]
    check_bool("direct", direct, EraError)
    if not direct or bool(row["gfns_for_direct_pages"]):
        return int(str(row["gfns_bytes_indirect"]))
    return 0


def page_bytes(era: str, direct: bool) -> int:
    """Kernel memory for one shadow page in ``era``: spt + gfns (if any) + the struct.

    Counterpart: everything ``kvm_mmu_alloc_page`` (``kvm_mmu_alloc_shadow_page`` since 2022)
    allocates for one page. The struct size is approximate (see :data:`STRUCT_BYTES`).
    """
    return SPT_BYTES + gfns_bytes(era, direct) + STRUCT_BYTES[check_era(era)]


def expected_bytes(n_direct: int, n_indirect: int, era: str) -> int:
    """The closed form: ``n_direct`` direct and ``n_indirect`` indirect pages cost this much.

    No kernel counterpart; a check on the simulation: ``pages * (4096 + struct)`` plus 4096 per
    page that has a gfns array in ``era``.
    """
    check_count("n_direct", n_direct, error=EraError)
    check_count("n_indirect", n_indirect, error=EraError)
    return n_direct * page_bytes(era, True) + n_indirect * page_bytes(era, False)


def _row(era: str, n_direct: int, n_indirect: int, gfns: int) -> dict[str, object]:
    pages = n_direct + n_indirect
    spt = pages * SPT_BYTES
    struct = pages * STRUCT_BYTES[era]
    return {
        "era": era,
        "pages": pages,
        "direct pages": n_direct,
        "indirect pages": n_indirect,
        "spt bytes": spt,
        "gfns bytes": gfns,
        "struct bytes": struct,
        "total bytes": spt + gfns + struct,
    }


def _frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    base = int(frame.loc[frame["era"] == "pre-2010", "total bytes"].iloc[0])
    frame["saved vs pre-2010"] = base - frame["total bytes"].astype("int64")
    frame = frame.set_index("era")
    return frame.astype("int64")


def memory_from_counts(n_direct: int, n_indirect: int) -> pd.DataFrame:
    """The by-era table for page counts (from a batch summary or a formula).

    No kernel counterpart. Rows: era; columns as :func:`memory_by_era`.
    """
    check_count("n_direct", n_direct, error=EraError)
    check_count("n_indirect", n_indirect, error=EraError)
    rows = [
        _row(
            era,
            n_direct,
            n_indirect,
            n_direct * gfns_bytes(era, True) + n_indirect * gfns_bytes(era, False),
        )
        for era in ERAS
    ]
    return _frame(rows)


def live_pages(source: object) -> list[MmuPage]:
    """The shadow pages a VM (or an :class:`~kvmmu.kvm.mmu.Mmu`) holds now.

    Every allocated page counts, including invalid roots still waiting for their last user, as
    ``kvm->arch.n_used_mmu_pages`` does. No kernel counterpart.
    """
    mmu = getattr(source, "mmu", source)
    if not isinstance(mmu, Mmu):
        raise KvmmuError(f"source: pass a Vm or an Mmu, got {type(source).__name__}")
    return list(mmu.by_pfn.values())


def memory_by_era(source: object) -> pd.DataFrame:
    """What the live shadow pages of a VM would cost in each era, as a DataFrame.

    Counterpart: the sum of ``kvm_mmu_alloc_page`` allocations over the active pages. Rows are
    the eras; columns ``pages``, ``direct pages``, ``indirect pages``, ``spt bytes``, ``gfns
    bytes`` (``shadowed_translation`` in ``today``), ``struct bytes`` (approximate),
    ``total bytes`` and ``saved vs pre-2010``. The ``2010 seed`` gfns column is measured: the
    sum of the gfns arrays the simulated pages really hold (``MmuPage.gfns_bytes``).
    """
    return memory_of_pages(live_pages(source))


def memory_of_pages(pages: Iterable[MmuPage]) -> pd.DataFrame:
    """:func:`memory_by_era` for any collection of shadow pages. No kernel counterpart."""
    try:
        pages = list(pages)
    except TypeError:
        raise KvmmuError(
            f"pages must be a collection of MmuPage, got {type(pages).__name__}"
        ) from None
    if not all(isinstance(sp, MmuPage) for sp in pages):
        raise KvmmuError("pages must hold only MmuPage objects (see live_pages)")
    n_direct = sum(1 for sp in pages if sp.direct)
    n_indirect = len(pages) - n_direct
    measured = sum(sp.gfns_bytes for sp in pages)
    rows = []
    for era in ERAS:
        gfns = measured if era == "2010 seed" else sum(gfns_bytes(era, sp.direct) for sp in pages)
        rows.append(_row(era, n_direct, n_indirect, gfns))
    return _frame(rows)
