"""Trace events named after ``arch/x86/kvm/mmu/mmutrace.h`` (and ``kvm_page_fault`` from
``arch/x86/kvm/trace.h``), recorded in order.

Tracing is off by default and costs one attribute test per event when off. When on, each
event is a row: sequence number, event name (``kvm_mmu_pagetable_walk``, ``kvm_mmu_get_page``,
``kvm_mmu_set_spte``, ``kvm_mmu_prepare_zap_page``, ...) and its fields, and
:meth:`Tracer.frame` gives them as a pandas DataFrame.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pandas as pd

from kvmmu.errors import KvmmuError

EVENTS = (
    # arch/x86/kvm/trace.h: the #PF or EPT-violation exit (kvm_handle_page_fault,
    # handle_ept_violation), with the hardware error code
    "kvm_page_fault",
    # arch/x86/kvm/mmu/mmutrace.h, in the order one shadow fault meets them
    "kvm_mmu_pagetable_walk",
    "kvm_mmu_paging_element",
    "kvm_mmu_walker_error",
    "kvm_mmu_get_page",
    "kvm_mmu_spte_requested",
    "kvm_mmu_set_spte",
    "kvm_mmu_sync_page",
    "kvm_mmu_unsync_page",
    "kvm_mmu_prepare_zap_page",
    "kvm_mmu_zap_all_fast",
    "mark_mmio_spte",
    "handle_mmio_page_fault",
    "check_mmio_spte",
)
"""Every event kvmmu emits, each under its kernel name. ``mmutrace.h`` also defines events
for what kvmmu does not model or cannot see: ``fast_page_fault``, ``kvm_mmu_set_accessed_bit``
and ``kvm_mmu_set_dirty_bit`` (the walker sets A/D itself), ``kvm_tdp_mmu_spte_changed`` and
``kvm_mmu_split_huge_page``."""


class Tracer:
    """An in-memory trace buffer (the ``kvmmmu`` trace system, for one VM)."""

    def __init__(self) -> None:
        self.enabled = False
        self.events: list[dict[str, Any]] = []

    def emit(self, event: str, **fields: Any) -> None:
        """Record ``event`` with ``fields`` if tracing is on (``trace_kvm_mmu_*`` events).

        A field may be given as a function of no arguments (``role=sp.role.describe``, not
        called): it is called only when the event is recorded, so readable text is built only
        while someone records, as the kernel's ``TP_printk`` formats only what is read.
        """
        if event.__class__ is not str:
            raise KvmmuError(f"event must be a str naming the trace event, got {event!r}")
        if self.enabled:
            row = {"seq": len(self.events), "event": event}
            for name, value in fields.items():
                row[name] = value() if callable(value) else value
            self.events.append(row)

    @contextmanager
    def recording(self) -> Iterator[Tracer]:
        """Enable tracing inside a ``with`` block, starting from an empty buffer."""
        self.events = []
        self.enabled = True
        try:
            yield self
        finally:
            self.enabled = False

    def frame(self) -> pd.DataFrame:
        """Recorded events as a DataFrame with columns ``seq``, ``event`` and the fields."""
        if not self.events:
            return pd.DataFrame(columns=["seq", "event"])
        return pd.DataFrame(self.events).set_index("seq")

    def clear(self) -> None:
        """Drop every recorded event.

        Like clearing the ftrace ``trace`` buffer.
        """
        self.events = []
