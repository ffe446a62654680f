"""Which MMU does this machine's KVM use? Read ``/sys/module/kvm*/parameters/`` and say.

* ``kvm_intel`` with ``ept=N`` or ``kvm_amd`` with ``npt=N`` (or ``0``), or the ``kvm_pvm``
  backend, which has no two-dimensional paging at all: **shadow paging** (``mmu.c`` with
  ``paging_tmpl.h``), what kvmmu models with ``Vm(tdp=False)``. Every kvmmu counter has a
  kernel counterpart and the comparison is complete.
* EPT/NPT on and ``kvm.tdp_mmu=N``: **TDP with the legacy MMU** (``kvm_tdp_mmu_map`` is not
  used; direct shadow pages from ``mmu.c``), ``Vm(tdp=True)``.
* EPT/NPT on and ``kvm.tdp_mmu=Y``: **the TDP MMU** (``tdp_mmu.c``), ``Vm(tdp=True)``; the
  counters of the shadow-page hash (``mmu_cache_miss``, ``mmu_shadow_zapped``) are not kept.

On TDP hosts guest page-table writes are not tracked and guest faults never reach KVM, so
``pf_guest``, ``mmu_pte_write``, ``mmu_unsync``, ``mmu_flooded`` and ``mmu_pde_zapped`` say
nothing there. The parameters are the kernel's ``module_param`` files
(``arch/x86/kvm/vmx/vmx.c`` ``enable_ept``, ``svm/svm.c`` ``npt_enabled``,
``mmu/mmu.c`` ``tdp_mmu_enabled``).
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from kvmmu.errors import KvmmuError

SYSFS_MODULES = Path("/sys/module")
BACKENDS = ("kvm_intel", "kvm_amd", "kvm_pvm")
_TDP_PARAMETER = {"kvm_intel": "ept", "kvm_amd": "npt"}

ALL_COUNTERS = (
    "pf_fixed",
    "pf_guest",
    "pf_emulate",
    "pf_mmio_spte_created",
    "mmu_cache_miss",
    "mmu_pte_write",
    "mmu_pde_zapped",
    "mmu_flooded",
    "mmu_shadow_zapped",
    "mmu_recycled",
    "mmu_unsync",
    "mmio_exits",
)
_GUEST_TABLE_COUNTERS = ("pf_guest", "mmu_pte_write", "mmu_unsync", "mmu_flooded", "mmu_pde_zapped")
_HASH_COUNTERS = ("mmu_cache_miss", "mmu_shadow_zapped", "mmu_recycled")


class HostDetectError(KvmmuError, ValueError):
    """A sysfs tree that is not one of a KVM host (a wrong root directory)."""


class HostMmuKind(Enum):
    """The host KVM's MMU."""

    NONE = "no KVM module loaded"
    SHADOW = "shadow paging"
    TDP_LEGACY = "TDP (EPT/NPT), legacy MMU"
    TDP_MMU = "TDP (EPT/NPT), TDP MMU"


@dataclass(frozen=True, slots=True)
class HostMmu:
    """What :func:`detect_host_mmu` found: the kind, the backend and its parameters."""

    kind: HostMmuKind
    backend: str | None
    parameters: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def kvmmu_tdp(self) -> bool | None:
        """The ``Vm(tdp=...)`` that matches this host; None without KVM. No kernel counterpart."""
        if self.kind is HostMmuKind.NONE:
            return None
        return self.kind is not HostMmuKind.SHADOW

    @property
    def comparable(self) -> tuple[str, ...]:
        """Counters that mean the same on this host and in the matching kvmmu mode.

        No kernel counterpart."""
        if self.kind is HostMmuKind.NONE:
            return ()
        if self.kind is HostMmuKind.SHADOW:
            return ALL_COUNTERS
        skip = set(_GUEST_TABLE_COUNTERS)
        if self.kind is HostMmuKind.TDP_MMU:
            skip |= set(_HASH_COUNTERS)
        return tuple(c for c in ALL_COUNTERS if c not in skip)

    @property
    def not_comparable(self) -> dict[str, str]:
        """Counters left out on this host, with the reason. No kernel counterpart."""
        out = {}
        for name in ALL_COUNTERS:
            if name in self.comparable:
                continue
            if name in _GUEST_TABLE_COUNTERS:
                out[name] = "with TDP the guest's own tables are neither shadowed nor tracked"
            elif self.kind is HostMmuKind.TDP_MMU:
                out[name] = "the TDP MMU keeps no shadow-page hash (tdp_mmu.c)"
            else:
                out[name] = "no KVM on this machine"
        return out


def _truthy(value: str) -> bool:
    return value.strip().upper() in ("Y", "1")


def read_parameters(root: Path = SYSFS_MODULES) -> dict[str, dict[str, str]]:
    """``{module: {parameter: value}}`` for every ``kvm*`` module under ``root``.

    Unreadable parameter files (some are root-only) are left out. No kernel counterpart.
    """
    if not root.is_dir():
        raise HostDetectError(f"{root} is not a directory; pass the sysfs `module` folder")
    out: dict[str, dict[str, str]] = {}
    for module in sorted(root.glob("kvm*")):
        params = module / "parameters"
        values = {}
        if params.is_dir():
            for p in sorted(params.iterdir()):
                try:
                    values[p.name] = p.read_text().strip()
                except OSError:
                    continue
        out[module.name] = values
    return out


def detect_host_mmu(root: Path = SYSFS_MODULES) -> HostMmu:
    """Which MMU the host KVM uses, from the module parameters under ``root``.

    No kernel counterpart (reads what ``module_param`` exposes).
    """
    params = read_parameters(root)
    backend = next((b for b in BACKENDS if b in params), None)
    if backend is None or "kvm" not in params:
        return HostMmu(HostMmuKind.NONE, backend, params)
    tdp_param = _TDP_PARAMETER.get(backend)
    tdp = tdp_param is not None and _truthy(params[backend].get(tdp_param, "N"))
    if not tdp:
        return HostMmu(HostMmuKind.SHADOW, backend, params)
    if _truthy(params["kvm"].get("tdp_mmu", "N")):
        return HostMmu(HostMmuKind.TDP_MMU, backend, params)
    return HostMmu(HostMmuKind.TDP_LEGACY, backend, params)


def host_facts(root: Path = SYSFS_MODULES, api_version: int | None = None) -> dict[str, Any]:
    """Kernel release, machine, backend, MMU kind and the parameters that decide it.

    No kernel counterpart: what a capture records so it can be read elsewhere.
    """
    mmu = detect_host_mmu(root)
    relevant = {"kvm": ("tdp_mmu",), "kvm_intel": ("ept",), "kvm_amd": ("npt",)}
    chosen = {
        module: {k: v for k, v in values.items() if k in relevant.get(module, ())}
        for module, values in mmu.parameters.items()
    }
    uname = os.uname()
    return {
        "kernel": uname.release,
        "machine": platform.machine(),
        "backend": mmu.backend,
        "mmu": mmu.kind.value,
        "parameters": chosen,
        "kvm_api_version": api_version,
    }
