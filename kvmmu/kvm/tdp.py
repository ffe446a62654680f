"""Two-dimensional paging (EPT/NPT): what a TLB miss costs, shadow paging against TDP.

The concepts of ``arch/x86/kvm/mmu/tdp_mmu.c``: with TDP the guest walks its own tables in
hardware, and every guest-physical address the walk reads (each table entry, then the final
gpa) goes through the TDP tables first. For a guest with ``n`` levels on TDP tables with ``m``
levels that is ``n`` guest entries, each after an ``m``-step TDP walk, plus ``m`` steps for the
final address: ``n(m + 1) + m = (n + 1)(m + 1) - 1`` references, 24 for 4-on-4 and 35 for
5-on-5. A shadow-paging TLB miss reads only the shadow tables: one reference per level.

kvmmu builds its TDP tables with KVM's *legacy* direct MMU (``direct_map`` in ``mmu.c``, the
same :class:`~kvmmu.kvm.page.MmuPage` objects as shadow paging), not with the separate TDP MMU of
``tdp_mmu.c``; the tables it builds, and so the walk costs, are the same.
"""

from __future__ import annotations

import pandas as pd

from kvmmu.errors import KvmmuError, check_bool, check_instance, check_int
from kvmmu.hw.guest import GuestPageTables
from kvmmu.hw.x86 import Access, PagingMode
from kvmmu.kvm.vcpu import Vcpu, Vm

GUEST_LEVELS = {PagingMode.LEVEL4: 4, PagingMode.LEVEL5: 5}


class WalkCostError(KvmmuError, ValueError):
    """Levels or an address for which no walk cost can be given; the message says why."""


def _check_levels(name: str, levels: object) -> int:
    if isinstance(levels, bool) or not isinstance(levels, int) or not 1 <= levels <= 5:
        raise WalkCostError(f"{name} must be an int from 1 to 5, got {levels!r}")
    return levels


def two_dimensional_refs(guest_levels: int, tdp_levels: int) -> int:
    """Memory references of a TLB miss under TDP: ``(n + 1)(m + 1) - 1``.

    No single kernel counterpart: the hardware's nested walk that ``tdp_mmu.c`` sets up.
    """
    n = _check_levels("guest_levels", guest_levels)
    m = _check_levels("tdp_levels", tdp_levels)
    return (n + 1) * (m + 1) - 1


def shadow_refs(levels: int) -> int:
    """Memory references of a TLB miss under shadow paging: one per shadow level.

    No kernel counterpart: the hardware walks ``vcpu->arch.mmu->root`` like native tables.
    """
    return _check_levels("levels", levels)


def measure_refs(target: Vm | Vcpu, gva: int, kind: Access = Access.READ) -> int:
    """References the simulated hardware made for ``gva`` on a TLB miss (``vcpu.last_refs``).

    No kernel counterpart. The access is made once (so any fault is fixed and the tables
    exist), the TLB is flushed, and the access is made again: that second walk misses the
    TLB and faults nowhere, and its reference count is returned.
    """
    vcpu = target.vcpus[0] if isinstance(target, Vm) and target.vcpus else target
    if not isinstance(vcpu, Vcpu):
        raise WalkCostError("target must be a Vcpu, or a Vm that has at least one vCPU")
    check_int("gva", gva)
    check_instance("kind", kind, Access, "Access.READ, Access.WRITE or Access.FETCH", WalkCostError)
    for attempt in range(2):
        if attempt:
            vcpu.tlb.flush()
        out = vcpu.access(gva, kind)
        if not isinstance(out, int):
            raise WalkCostError(f"the access to {gva:#x} faulted in the guest: {out!r}")
    return vcpu.last_refs


def _tiny_guest(mode: PagingMode, *, tdp: bool, tdp_levels: int = 4) -> Vcpu:
    vm = Vm(4 << 20, tdp=tdp, tdp_levels=tdp_levels, huge_pages=False)
    pt = GuestPageTables(vm.memory, mode)
    pt.map(0x40_0000, 0x10_0000)
    return vm.create_vcpu(pt.cpu())


def walk_cost_table(*, measure: bool = True) -> pd.DataFrame:
    """Formula against simulation for TLB-miss cost, shadow paging and TDP.

    No kernel counterpart. Rows: (guest levels, host levels, paging); columns ``formula``
    and, with ``measure``, ``measured`` (from :func:`measure_refs` on a tiny guest with 4 KiB
    pages everywhere) and ``match``.
    """
    check_bool("measure", measure, WalkCostError)
    rows = []
    for mode, n in GUEST_LEVELS.items():
        rows.append(("shadow", n, n, shadow_refs(n), mode, False, n))
        for m in (4, 5):
            rows.append(("TDP", n, m, two_dimensional_refs(n, m), mode, True, m))
    out = []
    for paging, n, m, formula, mode, tdp, host in rows:
        row: dict[str, object] = {
            "paging": paging,
            "guest levels": n,
            "host levels": m,
            "formula": formula,
        }
        if measure:
            vcpu = _tiny_guest(mode, tdp=tdp, tdp_levels=host if tdp else 4)
            row["measured"] = measure_refs(vcpu, 0x40_0123)
            row["match"] = row["measured"] == formula
        out.append(row)
    return pd.DataFrame(out).set_index(["paging", "guest levels", "host levels"])
