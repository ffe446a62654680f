"""Specifications of kvmmu.teaching.lessons.l09_lab: a student id's exercises, as text and hints."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kvmmu.errors import KvmmuError
from kvmmu.teaching import grading
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


def test_lab_problem_texts_do_not_contain_answers() -> None:
    for student in ("s1", "s42"):
        key = grading.lab_solutions(student)
        assert f"{key['gfn']:#x}" not in lab.describe("gfn", student).text
        assert str(key["saving"]) not in lab.describe("saving", student).text


def test_hint_uses_the_checker_of_the_named_exercise() -> None:
    student = "s1001"
    problems = grading.lab_problems(student)
    key = grading.lab_solutions(student)
    for name, (_, checker) in lab.EXERCISES.items():
        assert lab.hint(name, student, key[name]).passed
        assert str(lab.hint(name, student, key[name])) == str(checker(problems[name], key[name]))
        assert lab.describe(name, student).text == problems[name].text
    assert not lab.hint("gfn", student, int(str(key["gfn"])) + 1).passed
    assert str(lab.hint("walk", student, ...)) == "not yet: " + lab.NO_ANSWER
    assert str(lab.hint("walk", student, {"no": 1})).startswith("not yet: answer not understood")
    with pytest.raises(KvmmuError, match="name must be one of"):
        lab.hint("walks", student, 0)


def test_the_lab_module_loads_without_matplotlib() -> None:
    # the lab generates and checks exercises and draws nothing: matplotlib waits for a figure
    code = "import sys, kvmmu.teaching.lessons.l09_lab; print('matplotlib' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
