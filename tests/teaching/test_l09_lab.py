"""Specifications of kvmmu.teaching.lessons.l09_lab: one seed, every exercise, one score table."""

from __future__ import annotations

import pytest

from kvmmu.errors import KvmmuError
from kvmmu.teaching.lessons import l01_guest_page_tables as l01
from kvmmu.teaching.lessons import l03_mmu_page_role as l03
from kvmmu.teaching.lessons import l04_lazy_gfns as l04
from kvmmu.teaching.lessons import l06_unsync as l06
from kvmmu.teaching.lessons import l09_lab as lab


def test_same_seed_same_problem_other_seed_other_problem() -> None:
    for gen in (
        l01.walk_problem,
        l03.role_problem,
        l04.gfn_problem,
        l01.fix_problem,
        l06.sync_problem,
    ):
        assert gen(7).text == gen(7).text
        assert len({gen(s).text for s in range(6)}) > 1
    assert l01.walk_problem("s123456").text == l01.walk_problem("s123456").text


def test_lab_grades_a_class_in_one_call() -> None:
    key = lab.lab_solutions("s1001")
    table = lab.check_lab("s1001", key)
    assert table["passed"].all() and table["points"].sum() == table["max"].sum()
    partial = lab.check_lab("s1001", {"gfn": 1, "walk": "nonsense"})
    assert partial.loc["role", "message"] == "no answer"
    assert str(partial.loc["walk", "message"]).startswith("answer not understood")
    grades = lab.grade_lab({"s1001": key, "s1002": {"mode": "tdp"}})
    assert grades.loc["s1001", "total"] == sum(p for _, _, p in lab.LAB.values())
    assert list(grades.columns) == [*lab.LAB, "total"]
    with pytest.raises(KvmmuError, match="unknown exercise"):
        lab.check_lab(1, {"walks": 1})


def test_lab_problem_texts_do_not_contain_answers() -> None:
    for seed in ("s1", 42):
        key = lab.lab_solutions(seed)
        problems = lab.lab_problems(seed)
        assert f"{key['gfn']:#x}" not in problems["gfn"].text
        assert str(key["saving"]) not in problems["saving"].text


def test_check_uses_the_checker_of_the_named_exercise() -> None:
    problems = lab.lab_problems("s1001")
    key = lab.lab_solutions("s1001")
    for name, (_, checker, _) in lab.LAB.items():
        assert lab.check(name, problems[name], key[name]).passed
        assert str(lab.check(name, problems[name], key[name])) == str(
            checker(problems[name], key[name])
        )
    assert not lab.check("gfn", problems["gfn"], key["gfn"] + 1).passed
    with pytest.raises(KvmmuError, match="unknown exercise"):
        lab.check("walks", problems["walk"], 0)
