"""Specifications of kvmmu.teaching.grading: the lab's otter round trip, from the master notebook
to a gradebook, and a student notebook that carries no key."""

from __future__ import annotations

import ast
import contextlib
import json
import re
import types
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from kvmmu.errors import KvmmuError
from kvmmu.teaching import grading
from kvmmu.teaching.lessons import l09_lab as lab
from kvmmu.teaching.problems import Problem

ROOT = Path(__file__).resolve().parents[2]
ANSWER_ATTRIBUTES = {"_result", "_role", "_root_level", "_table", "_counters", "page", "bug"}
FORBIDDEN_NAMES = {"lab_solutions", "lab_problems", "grading", "require", *ANSWER_ATTRIBUTES}
POSSIBLE = sum(p for parts in grading.PARTS.values() for _, p in parts)
STUDENTS = {"correct": "s1234567", "partial": "s7654321"}


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    grading.assign(out)
    return out


def student_nb(dist: Path) -> nbformat.NotebookNode:
    return nbformat.read(dist / "student" / "09_lab.ipynb", as_version=4)


def answer(nb: nbformat.NotebookNode, name: str, value: object) -> None:
    """Fill the student's answer cell for ``name`` with ``value``, as a student would."""
    target = "STUDENT_ID = ..." if name == "STUDENT_ID" else f'answers["{name}"] = ...'
    cells = [c for c in nb.cells if c.cell_type == "code" and target in c.source]
    assert len(cells) == 1, f"no single answer cell for {name}"
    cells[0].source = cells[0].source.replace(target, target.replace("...", repr(value)))


def export(nb: nbformat.NotebookNode, folder: Path, stem: str) -> Path:
    """What ``grader.export()`` writes for this notebook: a zip holding it."""
    import otter

    nbformat.write(nb, folder / "09_lab.ipynb")
    with contextlib.chdir(folder):  # a student exports from the notebook's folder
        otter.Notebook("09_lab.ipynb").export(
            "09_lab.ipynb", export_path=f"{stem}.zip", pdf=False, display_link=False
        )
    return folder / f"{stem}.zip"


def test_student_notebook_code_and_tests_carry_no_key(dist: Path) -> None:
    nb = student_nb(dist)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    tests = nb.metadata["otter"]["tests"]
    sources = [code, *(t if isinstance(t, str) else json.dumps(t) for t in tests.values())]
    for text in sources:
        tree = ast.parse(text)
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        names |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
        assert not names & FORBIDDEN_NAMES, names & FORBIDDEN_NAMES
        assert "kvmmu.teaching.grading" not in text and "SOLUTION" not in text
    assert 'answers["walk"] = ...' in code and "STUDENT_ID = ..." in code
    # the public checks are there, worth nothing; the hidden tests stay in the autograder
    assert set(tests) == {"student_id", *grading.PARTS}


def _reachable(root: object) -> Iterator[object]:
    """Every object reachable from ``root`` through containers and instance attributes (not
    through modules or code: those reach all of Python)."""
    seen: set[int] = set()
    todo = [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, types.ModuleType | type | types.FunctionType):
            continue
        seen.add(id(obj))
        yield obj
        if isinstance(obj, dict):
            todo.extend([*obj.keys(), *obj.values()])
        elif isinstance(obj, list | tuple | set | frozenset):
            todo.extend(obj)
        for slot in getattr(type(obj), "__slots__", ()):
            if hasattr(obj, slot):
                todo.append(getattr(obj, slot))
        todo.extend(getattr(obj, "__dict__", {}).values())


def test_objects_the_student_notebook_reaches_hold_no_answer(dist: Path) -> None:
    nb = student_nb(dist)
    answer(nb, "STUDENT_ID", STUDENTS["correct"])
    namespace: dict[str, object] = {}
    for cell in nb.cells:
        if cell.cell_type == "code" and "grader." not in cell.source and "otter" not in cell.source:
            exec(cell.source, namespace)
    namespace.pop("__builtins__")
    shown = [namespace["lab"].describe(q, STUDENTS["correct"]) for q in grading.PARTS]  # type: ignore[attr-defined]
    for obj in _reachable([namespace, shown]):
        assert not isinstance(obj, Problem) or isinstance(obj, lab.Description), type(obj)
        assert not isinstance(obj, pd.DataFrame)
        attrs = set(getattr(obj, "__dict__", {})) | set(getattr(type(obj), "__slots__", ()))
        assert not attrs & ANSWER_ATTRIBUTES, (type(obj), attrs & ANSWER_ATTRIBUTES)
    assert not hasattr(lab, "lab_solutions") and not hasattr(lab, "lab_problems")
    assert {"Description", "describe", "hint", "student_seed"} <= set(lab.__all__)


def test_the_round_trip_grades_a_class(dist: Path, tmp_path: Path) -> None:
    submissions = tmp_path / "submissions"
    submissions.mkdir()
    work = tmp_path / "work"
    key = grading.lab_solutions(STUDENTS["correct"])
    nb = student_nb(dist)
    answer(nb, "STUDENT_ID", STUDENTS["correct"])
    for name, value in key.items():
        answer(nb, name, value)
    (work / "correct").mkdir(parents=True)
    export(nb, work / "correct", "correct").rename(submissions / "correct.zip")

    # partial: the walk right, 4 of 6 role fields, 3 of 5 counters, sync all wrong, the rest blank
    other = grading.lab_solutions(STUDENTS["partial"])
    nb = student_nb(dist)
    answer(nb, "STUDENT_ID", STUDENTS["partial"])
    role = dict(other["role"])  # type: ignore[call-overload]
    role["level"] += 1
    role["quadrant"] += 1
    counters = dict(other["counters"])  # type: ignore[call-overload]
    counters["pf_emulate"] += 1
    counters["mmu_pte_write"] += 1
    answer(nb, "walk", other["walk"])
    answer(nb, "role", role)
    answer(nb, "counters", counters)
    answer(nb, "sync", [0x0] * len(other["sync"]))  # type: ignore[arg-type]
    answer(nb, "mode", {"not": "a mode"})  # a malformed answer scores 0 with a message
    (work / "partial").mkdir()
    export(nb, work / "partial", "partial").rename(submissions / "partial.zip")

    (work / "empty").mkdir()
    export(student_nb(dist), work / "empty", "empty").rename(submissions / "empty.zip")
    (submissions / "malformed.zip").write_bytes(b"this is not a zip file")

    results = tmp_path / "results"
    book = grading.grade(dist / "autograder" / "autograder.zip", submissions, results)
    assert (results / "gradebook.csv").is_file()
    book = pd.read_csv(results / "gradebook.csv").set_index("submission")
    assert list(book.index) == ["correct.zip", "empty.zip", "malformed.zip", "partial.zip"]
    assert book.loc["correct.zip", "total"] == POSSIBLE == 19.5
    assert book.loc["correct.zip", "student_id"] == STUDENTS["correct"]
    partial = book.loc["partial.zip"]
    assert partial["walk"] == 3 and partial["role"] == 2.0 and partial["counters"] == 1.5
    assert partial["sync"] == 0 and partial["mode"] == 0 and partial["gfn"] == 0
    assert partial["total"] == 6.5
    assert book.loc["empty.zip", "total"] == 0
    assert book.loc["malformed.zip", "total"] == 0
    assert str(book.loc["malformed.zip", "message"]).startswith("not graded")
    feedback = (results / "feedback" / "partial.txt").read_text()
    assert "answer not understood" in feedback and "role (level): level: not right" in feedback
    assert "quadrant" in feedback and "mmu_pte_write" in feedback
    assert "STUDENT_ID must be your student id" in (results / "feedback" / "empty.txt").read_text()


def test_grade_part_scores_per_field_and_never_raises_on_an_answer() -> None:
    sid = "s42"
    key = grading.lab_solutions(sid)
    for question, parts in grading.PARTS.items():
        for part, _ in parts:
            assert grading.grade_part(question, part, sid, key[question]).passed
            assert not grading.grade_part(question, part, sid, ...).passed
            assert not grading.grade_part(question, part, sid, object()).passed
    sync = list(key["sync"])  # type: ignore[call-overload]
    sync[0] += 0x1000
    verdicts = [grading.grade_part("sync", p, sid, sync).passed for p in grading.SYNC_PARTS]
    right = len(sync) - 1
    assert verdicts == [right * 3 >= k * len(sync) for k in (1, 2, 3)]
    with pytest.raises(AssertionError, match="role \\(access\\)"):
        grading.require("role", "access", sid, {"role": {**key["role"], "access": 0}})  # type: ignore[dict-item]
    with pytest.raises(KvmmuError, match="part must be one of"):
        grading.grade_part("role", "colour", sid, key["role"])


def test_seed_is_a_hash_of_the_student_id() -> None:
    assert lab.student_seed(" S123 ") == lab.student_seed("s123") != lab.student_seed("s124")
    assert re.fullmatch(r"[0-9a-f]{16}", lab.student_seed("s123"))
    for bad in (..., "", "  ", 123):
        with pytest.raises(KvmmuError, match="STUDENT_ID must be"):
            lab.student_seed(bad)
    assert lab.describe("gfn", "s123").text != lab.describe("gfn", "s124").text


def test_grading_commands_report_what_is_missing(tmp_path: Path) -> None:
    assert grading.main(["grade", str(tmp_path / "none.zip"), str(tmp_path), str(tmp_path)]) == 2
    assert grading.main(["assign", str(tmp_path), "--master", str(tmp_path / "x.ipynb")]) == 2


def test_the_master_notebook_is_the_built_one() -> None:
    master = nbformat.read(grading.MASTER, as_version=4)
    raws = [c.source for c in master.cells if c.cell_type == "raw"]
    assert raws[0].startswith("# ASSIGNMENT CONFIG")
    names = [r.split("name: ")[1].split("\n")[0] for r in raws if r.startswith("# BEGIN QUESTION")]
    assert names == ["student_id", *grading.PARTS]
    hidden = sum("hidden: true" in c.source for c in master.cells if c.cell_type == "code")
    assert hidden == sum(len(parts) for parts in grading.PARTS.values())
