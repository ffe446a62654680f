"""kvmmu.host.detect: which MMU the host KVM uses, from fake and real sysfs trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmmu.host.detect import (
    ALL_COUNTERS,
    SYSFS_MODULES,
    HostDetectError,
    HostMmuKind,
    detect_host_mmu,
    host_facts,
)


def sysfs(root: Path, modules: dict[str, dict[str, str]]) -> Path:
    for module, params in modules.items():
        folder = root / module / "parameters"
        folder.mkdir(parents=True)
        for name, value in params.items():
            (folder / name).write_text(value + "\n")
    return root


@pytest.mark.parametrize(
    ("modules", "kind", "tdp"),
    [
        ({"kvm": {"tdp_mmu": "Y"}, "kvm_intel": {"ept": "Y"}}, HostMmuKind.TDP_MMU, True),
        ({"kvm": {"tdp_mmu": "N"}, "kvm_intel": {"ept": "Y"}}, HostMmuKind.TDP_LEGACY, True),
        ({"kvm": {"tdp_mmu": "Y"}, "kvm_intel": {"ept": "N"}}, HostMmuKind.SHADOW, False),
        ({"kvm": {"tdp_mmu": "Y"}, "kvm_amd": {"npt": "1"}}, HostMmuKind.TDP_MMU, True),
        ({"kvm": {"tdp_mmu": "N"}, "kvm_amd": {"npt": "0"}}, HostMmuKind.SHADOW, False),
        ({"kvm": {"tdp_mmu": "N"}, "kvm_pvm": {"force": "N"}}, HostMmuKind.SHADOW, False),
        ({"kvm": {}}, HostMmuKind.NONE, None),
        ({}, HostMmuKind.NONE, None),
    ],
)
def test_each_kind_of_host(
    tmp_path: Path, modules: dict[str, dict[str, str]], kind: HostMmuKind, tdp: bool | None
) -> None:
    mmu = detect_host_mmu(sysfs(tmp_path, modules))
    assert mmu.kind is kind
    assert mmu.kvmmu_tdp is tdp


def test_shadow_hosts_compare_every_counter_tdp_hosts_say_what_they_leave_out(
    tmp_path: Path,
) -> None:
    shadow = detect_host_mmu(sysfs(tmp_path / "a", {"kvm": {}, "kvm_intel": {"ept": "N"}}))
    assert shadow.comparable == ALL_COUNTERS and shadow.not_comparable == {}
    legacy = detect_host_mmu(
        sysfs(tmp_path / "b", {"kvm": {"tdp_mmu": "N"}, "kvm_intel": {"ept": "Y"}})
    )
    assert "pf_fixed" in legacy.comparable and "mmu_cache_miss" in legacy.comparable
    assert "nor tracked" in legacy.not_comparable["mmu_pte_write"]
    tdp_mmu = detect_host_mmu(
        sysfs(tmp_path / "c", {"kvm": {"tdp_mmu": "Y"}, "kvm_amd": {"npt": "Y"}})
    )
    assert "mmu_cache_miss" not in tdp_mmu.comparable
    assert "no shadow-page hash" in tdp_mmu.not_comparable["mmu_cache_miss"]
    assert set(tdp_mmu.comparable) | set(tdp_mmu.not_comparable) == set(ALL_COUNTERS)


def test_a_wrong_root_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(HostDetectError, match="not a directory"):
        detect_host_mmu(tmp_path / "missing")


def test_host_facts_name_the_parameters_that_decide(tmp_path: Path) -> None:
    root = sysfs(
        tmp_path, {"kvm": {"tdp_mmu": "N", "halt_poll_ns": "0"}, "kvm_intel": {"ept": "N"}}
    )
    facts = host_facts(root, api_version=12)
    assert facts["mmu"] == "shadow paging" and facts["backend"] == "kvm_intel"
    assert facts["parameters"] == {"kvm": {"tdp_mmu": "N"}, "kvm_intel": {"ept": "N"}}


@pytest.mark.skipif(not (SYSFS_MODULES / "kvm").is_dir(), reason="the kvm module is not loaded")
def test_this_machine() -> None:
    mmu = detect_host_mmu()
    assert mmu.kind is not HostMmuKind.NONE
    if (SYSFS_MODULES / "kvm_pvm").is_dir():
        assert mmu.kind is HostMmuKind.SHADOW and mmu.kvmmu_tdp is False
        assert mmu.backend == "kvm_pvm"
