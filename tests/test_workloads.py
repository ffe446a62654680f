"""Guest workloads (kvmmu.teaching.workloads): deterministic guests driven through the fault
path."""

import pytest

from kvmmu.hw.x86 import PagingMode
from kvmmu.teaching.workloads import (
    WorkloadError,
    full_touch,
    identity_guest,
    many_processes,
    pte_writer,
    tables_needed,
)

MIB = 1 << 20


def test_tables_needed_counts_every_level() -> None:
    assert tables_needed(1 << 30, PagingMode.LEVEL4, 4096) == 512 + 1 + 1 + 1
    assert tables_needed(1 << 30, PagingMode.LEVEL4, 2 * MIB) == 1 + 1 + 1
    assert tables_needed(8 * MIB, PagingMode.BITS32, 4096) == 2 + 1
    assert tables_needed(8 * MIB, PagingMode.PAE, 4096) == 5 + 4


def test_full_touch_faults_once_per_page_and_builds_the_guest_table_tree() -> None:
    r = full_touch(4 * MIB, PagingMode.LEVEL4, False)
    assert r.accesses == 1024
    assert r.faults == 1024
    levels = sorted(sp.level for sp in r.vm.mmu.by_pfn.values())
    assert levels == [1, 1, 2, 3, 4]
    assert not any(sp.direct for sp in r.vm.mmu.by_pfn.values())


def test_full_touch_tdp_uses_direct_pages_only() -> None:
    r = full_touch(4 * MIB, tdp=True)
    assert all(sp.direct for sp in r.vm.mmu.by_pfn.values())
    assert r.vm.mmu.n_used_mmu_pages == 5


@pytest.mark.parametrize("mode", [PagingMode.BITS32, PagingMode.PAE])
def test_full_touch_works_in_32_bit_modes(mode: PagingMode) -> None:
    r = full_touch(4 * MIB, mode)
    assert r.faults == 1024


def test_identity_guest_rejects_bad_sizes() -> None:
    with pytest.raises(WorkloadError, match="multiple of 4 KiB"):
        identity_guest(4097)
    with pytest.raises(WorkloadError, match="page_size"):
        identity_guest(3 * MIB, page_size=2 * MIB)
    with pytest.raises(WorkloadError, match="size=0"):
        identity_guest(0)


def test_many_processes_share_the_kernel_tables() -> None:
    r = many_processes(3, 8, rounds=2)
    assert r.switches == 6
    # three roots, one shared kernel PDPT + PD, and a user PDPT/PD/PT per process
    roots = [sp for sp in r.vm.mmu.by_pfn.values() if sp.level == 4]
    assert len(roots) == 3
    kernel_pdpt = r.tables[0].entry(0xFFFF_8880_0000_0000, 4) >> 12 & ((1 << 40) - 1)
    assert len([sp for sp in r.vm.mmu.page_hash[kernel_pdpt] if sp.level == 3]) == 1
    assert r.pages_after_round[0] == r.pages_after_round[1]  # round 2 builds nothing new


def test_many_processes_root_cache_hits_only_when_enabled() -> None:
    cached = many_processes(3, 4, rounds=3)
    uncached = many_processes(3, 4, rounds=3, root_cache=False)
    assert cached.stats["root_cache_hits"] > 0
    assert uncached.stats["root_cache_hits"] == 0


def test_many_processes_is_deterministic() -> None:
    a = many_processes(2, 4, seed=7)
    b = many_processes(2, 4, seed=7)
    assert a.stats.equals(b.stats)


def test_pte_writer_tdp_never_emulates_pte_writes() -> None:
    r = pte_writer(0.5, ops=60, tdp=True)
    assert r.pte_writes > 0
    assert r.exits_pte_writes == 0
    assert r.exits_invlpg == 0


def test_pte_writer_without_unsync_emulates_every_pte_store() -> None:
    r = pte_writer(0.5, ops=60, allow_unsync=False)
    assert r.stats["pf_emulate"] >= r.pte_writes
    assert r.exits_pte_writes >= r.pte_writes


def test_pte_writer_with_unsync_exits_less_on_pte_stores() -> None:
    unsync = pte_writer(0.5, ops=60)
    sync = pte_writer(0.5, ops=60, allow_unsync=False)
    assert unsync.exits_pte_writes < sync.exits_pte_writes


def test_pte_writer_rate_zero_writes_no_pte_and_rejects_bad_rates() -> None:
    assert pte_writer(0.0, ops=20).pte_writes == 0
    with pytest.raises(WorkloadError, match=r"rate=1\.5"):
        pte_writer(1.5)
