"""Specifications of kvmmu.teaching.exercises: the same seed makes the same problem, the right
answer passes, and each wrong answer gets its own hint that never states the answer."""

from __future__ import annotations

import pytest

from kvmmu.errors import KvmmuError
from kvmmu.hw.walk import PageFault, WalkResult
from kvmmu.hw.x86 import Pte
from kvmmu.teaching import exercises as E


def _walk_seed(kind: str, level: int | None = None) -> E.WalkProblem:
    for seed in range(200):
        p = E.walk_problem(seed)
        r = p._result
        if kind == "fault" and isinstance(r, PageFault):
            return p
        if kind == "ok" and isinstance(r, WalkResult) and (level is None or r.level == level):
            return p
    raise AssertionError("no seed gives that walk")


def test_check_displays_verdict_and_hint() -> None:
    c = E.Check(False, "the offset is wrong")
    assert str(c) == "not yet: the offset is wrong"
    assert "**not yet**" in c._repr_markdown_()
    assert not c and E.Check(True, "x")


def test_same_seed_same_problem_other_seed_other_problem() -> None:
    for gen in (E.walk_problem, E.role_problem, E.gfn_problem, E.fix_problem, E.sync_problem):
        assert gen(7).text == gen(7).text
        assert len({gen(s).text for s in range(6)}) > 1
    assert E.walk_problem("s123456").text == E.walk_problem("s123456").text


def test_seed_must_be_int_or_string() -> None:
    with pytest.raises(KvmmuError, match="student number"):
        E.walk_problem(1.5)  # type: ignore[arg-type]


def test_walk_right_gpa_passes_and_offset_slip_is_named() -> None:
    p = _walk_seed("ok", 1)
    gpa = p._result.gpa  # type: ignore[union-attr]
    assert E.check_walk(p, gpa).passed
    assert E.check_walk(p, hex(gpa)).passed
    hint = E.check_walk(p, gpa ^ 0x8).message
    assert "page offset" in hint and hex(gpa) not in hint


def test_walk_large_page_used_as_4k_gets_the_ps_hint() -> None:
    p = _walk_seed("ok", 2)
    r = p._result
    assert isinstance(r, WalkResult)
    as_4k = (r.pte & ((1 << 52) - 1) & ~0x1F_FFFF) | (p.gva & 0xFFF)
    if as_4k == r.gpa:  # offset bits 20:12 of the gva happen to be zero
        pytest.skip("this seed's gva has no offset in bits 20:12")
    msg = E.check_walk(p, as_4k).message
    assert "PS (bit 7)" in msg and "4 KiB" in msg


def test_walk_fault_answers() -> None:
    p = _walk_seed("fault")
    r = p._result
    assert isinstance(r, PageFault)
    assert E.check_walk(p, f"fault {int(r.error_code):#x}").passed
    assert "does not complete" in E.check_walk(p, 0x1000).message
    wrong_user = int(r.error_code) ^ int(Pte.USER)
    assert "CPL 3" in E.check_walk(p, f"#PF {wrong_user:#x}").message
    ok = _walk_seed("ok")
    assert "walk succeeds" in E.check_walk(ok, "fault 0x4").message


def test_role_right_answer_passes_and_first_wrong_field_is_named() -> None:
    p = E.role_problem(3)
    role = p._role
    right = {f: getattr(role, f) for f in E.ROLE_FIELDS}
    assert E.check_role(p, right).passed
    letters = "".join(c if role.access & b else "-" for c, b in (("u", 4), ("w", 2), ("x", 1)))
    assert E.check_role(p, {**right, "access": letters}).passed
    msg = E.check_role(p, {**right, "direct": not role.direct}).message
    assert msg.startswith("1 field(s) wrong") and "direct:" in msg
    assert (
        "missing: cr0_wp"
        in E.check_role(p, {k: v for k, v in right.items() if k != "cr0_wp"}).message
    )
    msg = E.check_role(p, {**right, "cr0_wp": not role.cr0_wp, "level": role.level + 1}).message
    assert msg.startswith("2 field(s) wrong") and "level:" in msg


def test_role_direct_page_below_a_guest_large_page() -> None:
    # some seed asks for the direct page a 2/4 MiB guest page needs with 4 KiB host pages
    found = [E.role_problem(s) for s in range(40)]
    assert any(p._role.direct and p._role.level == 1 for p in found)
    assert any(p._role.has_4_byte_gpte for p in found)


def test_gfn_hints_for_each_slip() -> None:
    p = next(E.gfn_problem(s) for s in range(50) if E.gfn_problem(s).page.level == 2)
    sp, i = p.page, p.index
    right = sp.gfn + (i << 9)
    assert sp.gfns is None and E.check_gfn(p, right).passed
    assert "guest-physical address" in E.check_gfn(p, right << 12).message
    assert "page's own gfn" in E.check_gfn(p, i << 9).message
    assert "more than one frame" in E.check_gfn(p, sp.gfn + i).message
    assert "off by one level" in E.check_gfn(p, sp.gfn + (i << 18)).message
    assert hex(right) not in E.check_gfn(p, 1).message


def test_saving_counts_every_direct_page() -> None:
    p = next(E.saving_problem(s) for s in range(50) if not E.saving_problem(s).huge_pages)
    n_leaf = p.size_mib // 2
    right = (n_leaf + 3) * 4096  # last-level pages, one each at levels 2 and 3, the root
    assert E.check_saving(p, right).passed
    assert "last-level pages only" in E.check_saving(p, n_leaf * 4096).message
    assert "give bytes" in E.check_saving(p, n_leaf + 3).message
    assert "direct ones too" in E.check_saving(p, 0).message


def test_fix_accepts_the_one_bit_fix_and_reports_what_the_walk_does() -> None:
    seen = set()
    for seed in range(60):
        p = E.fix_problem(seed)
        if p.bug in seen:
            continue
        seen.add(p.bug)
        _, pt, _ = E._fix_guest(seed)
        level, value = E._fix_answer(p, pt)
        assert E.check_fix(p, (level, value)).passed, p.bug
        msg = E.check_fix(p, (level, 0)).message
        assert "still faults" in msg or "never reaches" in msg
        moved = E.check_fix(p, (level, value ^ 0x10_0000)).message
        assert "lands at gpa" in moved or "neighbouring" in moved or "still faults" in moved
    assert seen == set(E._BUGS)


def test_counters_match_the_mmu_and_hint_names_the_counter() -> None:
    p = next(E.counters_problem(s) for s in range(50) if E.counters_problem(s).pde_writes >= 3)
    right = dict(p._counters)
    assert right["mmu_flooded"] == 1 and right["mmu_pde_zapped"] == 2
    assert E.check_counters(p, right).passed
    msg = E.check_counters(p, {**right, "mmu_flooded": 0}).message
    assert msg.startswith("1 counter(s) wrong") and "third time" in msg
    msg = E.check_counters(p, {**right, "mmu_pte_updated": 99}).message
    assert "not zero" in msg
    assert "missing: mmu_pte_write," in E.check_counters(p, {"pf_emulate": 1}).message


def test_write_flooding_zaps_the_page_directory_on_the_third_store() -> None:
    c = E.table_write_counters(0, 4)
    assert c["mmu_pde_zapped"] == 2 and c["mmu_flooded"] == 1
    assert c["pf_emulate"] == 3  # the fourth store finds the table unshadowed: no emulation
    assert c["pf_fixed"] == 1


def test_pte_store_of_zero_is_not_an_update() -> None:
    assert E.table_write_counters(2, 0)["mmu_pte_updated"] == 2
    cleared = E.table_write_counters(2, 0, clear=True)
    assert cleared["mmu_pte_updated"] == 0 and cleared["mmu_pte_write"] == 2


def test_unsync_removes_the_pte_store_exits() -> None:
    wp = E.table_write_workload(20)
    unsync = E.table_write_workload(20, unsync=True)
    assert wp["pf_emulate"] == 40 and wp["mmu_pte_updated"] == 40
    assert unsync["pf_emulate"] == 0 and unsync["mmu_unsync"] == 1


def test_sync_run_stale_until_invlpg_then_cr3() -> None:
    t = E.sync_run(["edit", "access", "invlpg", "access", "edit", "cr3", "access"])
    assert list(t["access returns"][t["action"] == "access"]) == [
        "0x100000",
        "0x200000",
        "0x300000",
    ]
    assert t.loc[1, "unsync"] and t.loc[1, "spte ->"] == "0x100000"
    assert t.loc[3, "spte ->"] == "-" and t.loc[3, "unsync"]  # invlpg dropped the stale spte
    assert not t.loc[6, "unsync"]  # the CR3 load synced the whole page
    with pytest.raises(KvmmuError, match="unknown action"):
        E.sync_run(["flush"])


def test_sync_answers() -> None:
    p = E.sync_problem(0)  # edit edit access access invlpg access
    assert p.actions == ("edit", "edit", "access", "access", "invlpg", "access")
    assert E.check_sync(p, [0x100000, 0x100000, 0x300000]).passed
    assert "does not see the latest edit" in E.check_sync(p, [0x300000, 0x100000, 0x300000]).message
    assert "misses both" in E.check_sync(p, [0x100000, 0x100000, 0x100000]).message
    assert "one gpa per access" in E.check_sync(p, [1]).message


def test_mode_costs_and_problem() -> None:
    c = E.mode_costs(1000, 0, 0)
    assert c.loc["tdp", "walk cycles"] == 1000 * 24 * E.REF_CYCLES
    assert c.loc["shadow", "walk cycles"] == 1000 * 4 * E.REF_CYCLES
    c5 = E.mode_costs(1000, 10, 2, guest_levels=5, tdp_levels=5)
    assert c5.loc["tdp", "walk cycles"] == 1000 * 35 * E.REF_CYCLES
    assert c5.loc["shadow", "exit cycles"] == 12 * E.EXIT_CYCLES
    assert E.mode_winner(10000, 0, 0) == "shadow" and E.mode_winner(100, 50, 10) == "tdp"
    p = next(
        E.mode_problem(s)
        for s in range(50)
        if E.mode_winner(
            E.mode_problem(s).tlb_misses, E.mode_problem(s).pt_writes, E.mode_problem(s).cr3_loads
        )
        == "shadow"
    )
    assert E.check_mode(p, "shadow").passed
    assert "weigh the walks" in E.check_mode(p, "tdp").message
    assert "no answer yet" in E.check_mode(p, "").message
    with pytest.raises(KvmmuError):
        E.check_mode(p, "ept")


def test_lab_grades_a_class_in_one_call() -> None:
    key = E.lab_solutions("s1001")
    table = E.check_lab("s1001", key)
    assert table["passed"].all() and table["points"].sum() == table["max"].sum()
    partial = E.check_lab("s1001", {"gfn": 1, "walk": "nonsense"})
    assert partial.loc["role", "message"] == "no answer"
    assert str(partial.loc["walk", "message"]).startswith("answer not understood")
    grades = E.grade_lab({"s1001": key, "s1002": {"mode": "tdp"}})
    assert grades.loc["s1001", "total"] == sum(p for _, _, p in E.LAB.values())
    assert list(grades.columns) == [*E.LAB, "total"]
    with pytest.raises(KvmmuError, match="unknown exercise"):
        E.check_lab(1, {"walks": 1})


def test_lab_problem_texts_do_not_contain_answers() -> None:
    for seed in ("s1", 42):
        key = E.lab_solutions(seed)
        problems = E.lab_problems(seed)
        assert f"{key['gfn']:#x}" not in problems["gfn"].text
        assert str(key["saving"]) not in problems["saving"].text


# -- shadow fault (lesson 2), appended by the notebooks 01-04 engineer --------------------


def _shadow_seed(created: int) -> E.ShadowFaultProblem:
    for seed in range(100):
        p = E.shadow_fault_problem(seed)
        if p._created == created:
            return p
    raise AssertionError(f"no seed creates {created} pages")


def test_shadow_fault_same_seed_same_problem() -> None:
    assert E.shadow_fault_problem("s1").text == E.shadow_fault_problem("s1").text
    assert E.shadow_fault_problem(1).text != E.shadow_fault_problem(2).text


@pytest.mark.parametrize("created", [0, 1, 2, 3])
def test_shadow_fault_right_answer_passes(created: int) -> None:
    p = _shadow_seed(created)
    assert E.check_shadow_fault(p, created)
    assert E.check_shadow_fault(p, str(created))


def test_shadow_fault_each_wrong_answer_gets_its_hint() -> None:
    p = _shadow_seed(1)
    assert "at most 4" in E.check_shadow_fault(p, 5).message
    assert "root" in E.check_shadow_fault(p, 4).message
    assert "shared" in E.check_shadow_fault(p, 3).message
    assert "new to the MMU" in E.check_shadow_fault(p, 0).message
    for wrong in (0, 3, 4, 5):
        assert "1" not in E.check_shadow_fault(p, wrong).message
