"""kvmmu.host.program: one guest program on kvmmu and on the host KVM, compared.

The kvmmu side and the stored capture are checked everywhere; the live differential runs need
a usable /dev/kvm and skip with the reason otherwise.
"""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import pytest

from kvmmu.host.kvm import kvm_usable
from kvmmu.host.program import (
    COUNTERS,
    DATA_GVA,
    KERNEL_ONLY,
    KNOWN_DIFFERENCES,
    MAX_OPS,
    PROGRAMS,
    Comparison,
    Fetch,
    HostCaptureError,
    Map,
    Program,
    ProgramError,
    Read,
    SwitchCr3,
    Write,
    build_image,
    compare,
    compare_results,
    comparison_from_dict,
    load_host_capture,
    program,
    run_kvmmu,
    user_page,
)
from kvmmu.hw.x86 import PfErr

USABLE, WHY = kvm_usable()
needs_kvm = pytest.mark.skipif(not USABLE, reason=f"no usable /dev/kvm: {WHY}")
ROOT = Path(__file__).resolve().parent.parent
CAPTURE = "kvm_pvm"

P, W, U, RSVD, FETCH = (
    int(f) for f in (PfErr.PRESENT, PfErr.WRITE, PfErr.USER, PfErr.RSVD, PfErr.FETCH)
)


def test_kvmmu_delivers_every_fault_kind_with_the_sdm_error_code() -> None:
    result = run_kvmmu(program("faults"))
    g = DATA_GVA
    assert result.faults == {
        0: (g + 0x9000, U),  # not present, read
        1: (g + 0x9000, U | W),
        2: (g + 0x9000, U | FETCH),  # SDM 4.7: I/D is set with EFER.NXE
        4: (g + 0x1008, P | W | U),  # write-protect
        5: (g + 0x2008, P | U),  # user access to a supervisor page
        7: (g + 0x3800, P | U | FETCH),  # NX
        11: (g + 0x4008, P | U | RSVD),  # bit 51 is above MAXPHYADDR 48
    }
    assert result.values[14] == 0x1004, "clearing the reserved bit made the page readable again"


def test_pte_edits_are_seen_only_after_invlpg_and_repoint_reads_the_new_frame() -> None:
    result = run_kvmmu(program("pte_edits"))
    assert 4 in result.faults and result.faults[4][1] == P | W | U
    assert result.values[10] == 0x1009, "g1 was re-pointed at frame 9"
    ad = result.accessed_dirty
    assert ad[(0, DATA_GVA)] == "A-", "A/D cleared by the kernel, then a read sets A only"


def test_each_address_space_reads_its_own_frame() -> None:
    values = run_kvmmu(program("address_spaces")).values
    reads = [values[i] for i in sorted(values)]
    assert reads[:6] == [0x100, 0, 0x101, 0, 0x102, 0]
    assert reads[-1] == 5, "a store through space 1 is seen through space 0 (shared frame 20)"


def test_programs_are_checked() -> None:
    with pytest.raises(ProgramError, match="spaces"):
        Program("x", (), (), spaces=0)
    with pytest.raises(ProgramError, match="names space 1"):
        Program("x", (Map(DATA_GVA, user_page(0), space=1),), ())
    with pytest.raises(ProgramError, match="space 2"):
        Program("x", (), (SwitchCr3(2),), spaces=2)
    with pytest.raises(ProgramError, match="logs hold"):
        Program("x", (), tuple(Read(DATA_GVA) for _ in range(MAX_OPS + 1)))
    clash = Program(
        "x", (Map(DATA_GVA, user_page(0)),), (Fetch(DATA_GVA + 16), Write(DATA_GVA + 12))
    )
    with pytest.raises(ProgramError, match="overwrites the code a Fetch"):
        build_image(clash)
    with pytest.raises(ProgramError, match="choose one of"):
        program("nope")
    with pytest.raises(ProgramError, match=r"0\.\.255"):
        user_page(256)


def test_kvmmu_still_matches_the_stored_real_run() -> None:
    """The committed capture's KVM column against a fresh kvmmu run: behaviour is equal, and
    so is every counter without a known difference."""
    stored = load_host_capture(CAPTURE)
    assert stored.host["kvm_api_version"] == 12
    assert set(stored.comparisons) == set(PROGRAMS)
    for name, saved in stored.comparisons.items():
        fresh = run_kvmmu(program(name))
        for table in ("values", "faults", "accessed_dirty", "dirty_logs"):
            assert getattr(saved, table)["equal"].all(), (name, table)
        assert saved.values["kvm"].to_dict() == {op: f"{v:#x}" for op, v in fresh.values.items()}, (
            name
        )
        assert len(saved.faults) == len(fresh.faults), name
        for counter, row in saved.counters.iterrows():
            if row["why"] == "":
                ours = COUNTERS[str(counter)]
                assert ours is not None
                assert int(fresh.counters[ours]) == int(row["kvm"]), (name, counter)


def test_a_missing_or_damaged_capture_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(HostCaptureError, match="no host capture 'x'"):
        load_host_capture("x", tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(HostCaptureError, match="damaged"):
        load_host_capture("bad", tmp_path)
    (tmp_path / "old.json").write_text(json.dumps({"format": 0}))
    with pytest.raises(HostCaptureError, match="damaged"):
        load_host_capture("old", tmp_path)


def test_a_comparison_survives_json() -> None:
    saved = load_host_capture(CAPTURE).comparisons["faults"]
    again = comparison_from_dict(json.loads(json.dumps(saved.to_dict())))
    assert isinstance(again, Comparison)
    assert again.counters.equals(saved.counters)
    assert again.faults.equals(saved.faults)


def test_comparing_a_run_with_itself_is_all_equal() -> None:
    p = program("touch")
    mine = run_kvmmu(p)
    c = compare_results(p, mine, mine)
    assert c.behaviour_equal


def test_host_modules_import_no_teaching_code() -> None:
    for path in (ROOT / "kvmmu" / "host").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n.startswith("kvmmu.teaching") for n in names), path.name


@needs_kvm
@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_kvm_and_kvmmu_agree(name: str) -> None:
    """Values, faults, A/D bits and dirty logs equal; every counter without a known
    difference equal; and every known difference listed for this program really shows."""
    fds = len(os.listdir("/proc/self/fd"))
    c = compare(program(name))
    assert len(os.listdir("/proc/self/fd")) == fds, "every fd and mapping is closed"
    for table in ("values", "faults", "accessed_dirty", "dirty_logs"):
        frame = getattr(c, table)
        assert frame["equal"].all(), f"{name} {table}:\n{frame[~frame['equal']]}"
    assert c.unexplained() == [], c.counters.loc[c.unexplained()]
    compared = c.counters[c.counters["why"] != KERNEL_ONLY]
    for diff in KNOWN_DIFFERENCES:
        if diff.applies(name) and diff.counter in compared.index:
            assert not compared.loc[diff.counter, "equal"], (
                f"{diff.counter} is equal in {name}: drop {name} from its KnownDifference"
            )


def test_a_cpl3_store_to_a_shadowed_table_unsyncs_it_and_invlpg_syncs_it() -> None:
    result = run_kvmmu(program("unsync"))
    assert result.counters["mmu_unsync"] == 1, "the leaf table went unsync, not emulated"
    assert result.counters["mmu_pte_write"] == 0
    assert result.values[5] == 0x1009, "after invlpg the re-pointed PTE is used"
    assert result.faults == {9: (DATA_GVA + 0x2008, U)}, "the PTE cleared from CPL 3"


def test_a_spurious_fault_is_counted_where_kvm_counts_it_after_a_pde_zap() -> None:
    """The stored run: after a PDE was zapped, the faults that only relink the child page find
    the leaf spte already right, and both machines count them in pf_spurious
    (RET_PF_SPURIOUS), not pf_fixed; pf_taken counts every fault."""
    saved = load_host_capture(CAPTURE).comparisons["table_edits"].counters
    fresh = run_kvmmu(program("table_edits")).counters
    assert saved.loc["pf_spurious", "kvm"] > 0
    for name in ("pf_spurious", "pf_fixed", "pf_taken"):
        assert fresh[name] == saved.loc[name, "kvm"], name
    assert fresh["mmu_pde_zapped"] == 1 and fresh["mmu_flooded"] == 1


def test_leaf_sptes_are_counted_per_size_as_kvm_counts_pages_4k() -> None:
    counters = run_kvmmu(program("touch")).counters
    assert counters["pages_4k"] == 9, "8 data pages and the code page"
    assert counters["pages_2m"] == 0 and counters["shadow_pages"] == 5, "shadow pages differ"


def test_direct_prefetch_maps_the_group_of_8_kvm_maps_under_a_guest_2m_page() -> None:
    """huge_page: each fault in the direct page under the guest's 2 MiB page maps its aligned
    group of 8 (``direct_pte_prefetch``), as the stored KVM run shows in pages_4k."""
    saved = load_host_capture(CAPTURE).comparisons["huge_page"].counters
    fresh = run_kvmmu(program("huge_page")).counters
    assert fresh["pages_4k"] == saved.loc["pages_4k", "kvm"] == 33
    assert fresh["pf_fixed"] == saved.loc["pf_fixed", "kvm"]
