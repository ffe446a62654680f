"""kvmmu.teaching.lessons.l10_beside_kvm: lesson 10's tables over the stored host run."""

from __future__ import annotations

import pytest

from kvmmu.host.program import PROGRAMS, HostCapture, load_host_capture
from kvmmu.teaching.lessons import l10_beside_kvm as B


@pytest.fixture(scope="module")
def capture() -> HostCapture:
    return load_host_capture(B.STORED)


def test_host_table_names_the_backend_and_the_mmu_parameters(capture: HostCapture) -> None:
    facts = B.host_table(capture)["value"]
    assert facts["backend"] == "kvm_pvm" and facts["mmu"] == "shadow paging"
    assert facts["kvm.tdp_mmu"] == "N"


def test_behaviour_is_equal_in_every_stored_program(capture: HostCapture) -> None:
    summary = B.behaviour_summary(capture)
    assert list(summary.index) == list(PROGRAMS)
    assert summary["all equal"].all()
    assert summary.loc["faults", "faults"] == "7/7"


def test_the_matrix_and_the_differences_agree(capture: HostCapture) -> None:
    matrix = B.counter_matrix(capture)
    diffs = B.differences(capture)
    assert "insn_emulation" not in matrix.index, "kernel-only counters are left out"
    assert "pf_taken" in matrix.index and "pages_4k" in matrix.index
    for _, row in diffs.iterrows():
        assert matrix.loc[row["counter"], row["program"]] == f"{row['kvmmu']} / {row['kvm']}"
        assert row["kvmmu"] != row["kvm"] and row["kernel function"]
    assert set(diffs["counter"]) <= set(B.known_differences()["counter"])


def test_replay_against_the_stored_run_passes(capture: HostCapture) -> None:
    replay = B.replay(capture)
    assert replay["behaviour"].all() and replay["counters"].all()
    assert (replay["compared"] >= 11).all()


def test_the_exercise_checker(capture: HostCapture) -> None:
    spurious = int(capture.comparisons["table_edits"].counters["kvm"].to_dict()["pf_spurious"])
    assert B.check_spurious("pf_spurious", spurious, capture).startswith("right")
    assert B.check_spurious("pf_taken", spurious, capture).startswith("not pf_taken")
    assert "but not" in B.check_spurious("pf_spurious", spurious + 1, capture)


def test_prefetch_and_the_spte_zap_are_what_make_the_counters_equal(
    capture: HostCapture,
) -> None:
    table = B.what_the_kernel_adds(capture)
    today = table["today's kernel"] == table["kvm"]
    assert today.all(), table
    assert (
        table.loc[("huge_page", "pages_4k"), "no prefetch"]
        < table.loc[("huge_page", "pages_4k"), "kvm"]
    )
    assert (
        table.loc[("pte_edits", "pf_fixed"), "2010 pte update"]
        < table.loc[("pte_edits", "pf_fixed"), "kvm"]
    )


def test_program_table_lists_the_ops() -> None:
    table = B.program_table("faults")
    assert len(table) == len(PROGRAMS["faults"]().ops)
    assert table["op"].iloc[0].startswith("Read(")
