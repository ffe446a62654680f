"""Lesson 9, the lab: one seed, every exercise of lessons 1-8, one score table; the module of
``notebooks/09_lab.ipynb``.

The lab generates nothing of its own: :data:`LAB` gathers each exercise's generator and checker
from its lesson's module, with its points, and this module grades a student (:func:`check_lab`),
a class (:func:`grade_lab`) and gives an instructor the key (:func:`lab_solutions`, OSTEP's
``-c``). No kernel counterpart: this is the course's side.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pandas as pd

from kvmmu.hw.walk import PageFault
from kvmmu.teaching.lessons import l01_guest_page_tables as l01
from kvmmu.teaching.lessons import l03_mmu_page_role as l03
from kvmmu.teaching.lessons import l04_lazy_gfns as l04
from kvmmu.teaching.lessons import l05_write_protection as l05
from kvmmu.teaching.lessons import l06_unsync as l06
from kvmmu.teaching.lessons import l08_tdp_vs_shadow as l08
from kvmmu.teaching.problems import Check, ExerciseError, Problem, fail

__all__ = ["LAB", "check", "check_lab", "grade_lab", "lab_problems", "lab_solutions"]

LAB: dict[str, tuple[Callable[[int | str], Problem], Callable[..., Check], int]] = {
    "walk": (l01.walk_problem, l01.check_walk, 2),
    "role": (l03.role_problem, l03.check_role, 2),
    "gfn": (l04.gfn_problem, l04.check_gfn, 1),
    "saving": (l04.saving_problem, l04.check_saving, 1),
    "fix": (l01.fix_problem, l01.check_fix, 2),
    "counters": (l05.counters_problem, l05.check_counters, 2),
    "sync": (l06.sync_problem, l06.check_sync, 2),
    "mode": (l08.mode_problem, l08.check_mode, 1),
}
"""Exercise name -> (generator, checker, points), each from the lesson that teaches it."""


def lab_problems(seed: int | str) -> dict[str, Problem]:
    """Every lab exercise for one student's seed, in lesson order. No kernel counterpart."""
    return {name: gen(seed) for name, (gen, _, _) in LAB.items()}


def check(name: str, problem: Problem, answer: object) -> Check:
    """Check one answer with the checker of lab exercise ``name`` (its lesson's checker).

    A malformed answer raises that checker's :class:`ExerciseError`. No kernel counterpart.
    """
    if name not in LAB:
        raise ExerciseError(f"unknown exercise {name!r}; the lab has {list(LAB)}")
    return LAB[name][1](problem, answer)


def check_lab(seed: int | str, answers: Mapping[str, object]) -> pd.DataFrame:
    """Grade one student's answers: one row per exercise (``points``, ``max``, ``passed``,
    ``message``). A missing answer scores 0; a malformed one scores 0 and says what shape is
    expected. No kernel counterpart.
    """
    if not isinstance(answers, Mapping):
        raise ExerciseError("answers must be a dict: exercise name -> answer")
    unknown = sorted(set(answers) - set(LAB))
    if unknown:
        raise ExerciseError(f"unknown exercise(s) {unknown}; the lab has {list(LAB)}")
    rows = []
    for name, (gen, checker, points) in LAB.items():
        if name not in answers or answers[name] is None:
            verdict = fail("no answer")
        else:
            try:
                verdict = checker(gen(seed), answers[name])
            except ExerciseError as err:
                verdict = fail(f"answer not understood: {err}")
        rows.append(
            {
                "exercise": name,
                "points": points if verdict.passed else 0,
                "max": points,
                "passed": verdict.passed,
                "message": verdict.message,
            }
        )
    return pd.DataFrame(rows).set_index("exercise")


def grade_lab(submissions: Mapping[int | str, Mapping[str, object]]) -> pd.DataFrame:
    """Grade a class: student seed -> answers. One row per student, one column of points per
    exercise and a ``total``. No kernel counterpart."""
    if not isinstance(submissions, Mapping):
        raise ExerciseError("submissions must be a dict: student seed -> answers dict")
    rows = {}
    for seed, answers in submissions.items():
        table = check_lab(seed, answers)
        rows[seed] = {**table["points"].to_dict(), "total": int(table["points"].sum())}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "seed"
    return frame


def lab_solutions(seed: int | str) -> dict[str, object]:
    """The answers for one seed, for an instructor's key (OSTEP's ``-c``). No kernel counterpart."""
    p = lab_problems(seed)
    walk_p, role_p = p["walk"], p["role"]
    assert isinstance(walk_p, l01.WalkProblem) and isinstance(role_p, l03.RoleProblem)
    result = walk_p._result
    walk_answer: object = (
        f"fault {int(result.error_code):#x}" if isinstance(result, PageFault) else result.gpa
    )
    role = role_p._role
    gfn_p, saving_p, fix_p = p["gfn"], p["saving"], p["fix"]
    assert isinstance(gfn_p, l04.GfnProblem) and isinstance(saving_p, l04.SavingProblem)
    assert isinstance(fix_p, l01.FixProblem)
    counters_p, sync_p, mode_p = p["counters"], p["sync"], p["mode"]
    assert isinstance(counters_p, l05.CountersProblem) and isinstance(sync_p, l06.SyncProblem)
    assert isinstance(mode_p, l08.ModeProblem)
    gfns = saving_p._table["gfns bytes"]
    _, pt, _ = l01.fix_guest(seed)
    level, value = l01.fix_answer(fix_p, pt)
    accesses = sync_p._table[sync_p._table["action"] == "access"]["access returns"]
    return {
        "walk": walk_answer,
        "role": {f: getattr(role, f) for f in l03.ROLE_FIELDS},
        "gfn": gfn_p.page.get_gfn(gfn_p.index),
        "saving": int(gfns["pre-2010"] - gfns["2010 seed"]),
        "fix": (level, value),
        "counters": dict(counters_p._counters),
        "sync": [int(str(v), 16) for v in accesses],
        "mode": l08.mode_winner(mode_p.tlb_misses, mode_p.pt_writes, mode_p.cr3_loads),
    }
