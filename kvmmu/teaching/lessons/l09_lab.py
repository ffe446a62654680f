"""Lesson 9, the lab: every exercise of lessons 1-8 for one student; the module of
``notebooks/09_lab.ipynb``, the student's side.

The lab generates nothing of its own: :data:`EXERCISES` gathers each exercise's generator and
checker from its lesson's module. A student's problems come from a seed that is a hash of their
student id (:func:`student_seed`), so nobody picks their own. This module hands the notebook only
what a student may see: each problem's description (:func:`describe`, text regenerated from the
seed, the problem object with its answer dropped) and each checker's hint (:func:`hint`). The
grading side, with the key and the points, is :mod:`kvmmu.teaching.grading`. No kernel
counterpart: this is the course's side.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from kvmmu.errors import check_choice
from kvmmu.teaching.lessons import l01_guest_page_tables as l01
from kvmmu.teaching.lessons import l03_mmu_page_role as l03
from kvmmu.teaching.lessons import l04_lazy_gfns as l04
from kvmmu.teaching.lessons import l05_write_protection as l05
from kvmmu.teaching.lessons import l06_unsync as l06
from kvmmu.teaching.lessons import l08_tdp_vs_shadow as l08
from kvmmu.teaching.problems import Check, ExerciseError, Problem, fail

__all__ = ["EXERCISES", "NO_ANSWER", "Description", "describe", "hint", "student_seed"]

EXERCISES: dict[str, tuple[Callable[[int | str], Problem], Callable[..., Check]]] = {
    "walk": (l01.walk_problem, l01.check_walk),
    "role": (l03.role_problem, l03.check_role),
    "gfn": (l04.gfn_problem, l04.check_gfn),
    "saving": (l04.saving_problem, l04.check_saving),
    "fix": (l01.fix_problem, l01.check_fix),
    "counters": (l05.counters_problem, l05.check_counters),
    "sync": (l06.sync_problem, l06.check_sync),
    "mode": (l08.mode_problem, l08.check_mode),
}
"""Exercise name -> (generator, checker), each from the lesson that teaches it, in lab order."""

NO_ANSWER = "no answer yet: replace the ... with yours"
"""The hint for an answer the student has not given (``...``, ``None`` or missing)."""


def student_seed(student_id: object) -> str:
    """The seed of a student's lab: the first 16 hex digits of the SHA-256 of their id.

    Leading and trailing blanks and case are ignored, so ``" S123 "`` and ``"s123"`` get the
    same lab. An id that is not a non-empty string raises :class:`ExerciseError`. No kernel
    counterpart.
    """
    if not isinstance(student_id, str) or not student_id.strip():
        raise ExerciseError(
            f'STUDENT_ID must be your student id as a string, e.g. "s1234567"; got {student_id!r}'
        )
    digest = hashlib.sha256(student_id.strip().lower().encode()).hexdigest()
    return digest[:16]


@dataclass(frozen=True, slots=True, repr=False)
class Description(Problem):
    """What a student sees of one problem: its name and text, and nothing that holds the answer."""

    name: str
    text: str


def _exercise(name: str) -> tuple[Callable[[int | str], Problem], Callable[..., Check]]:
    return EXERCISES[check_choice("name", name, tuple(EXERCISES), ExerciseError)]


def describe(name: str, student_id: object) -> Description:
    """The text of exercise ``name`` for ``student_id``; the problem object is not kept.

    No kernel counterpart.
    """
    generator, _ = _exercise(name)
    return Description(name, generator(student_seed(student_id)).text)


def hint(name: str, student_id: object, answer: object) -> Check:
    """The checker's verdict on ``answer`` to exercise ``name``: passed or not, and a hint that
    never states the answer. A missing answer (``...`` or ``None``) and one of the wrong shape
    are verdicts too, never exceptions; an unknown ``name`` or a ``student_id`` that is no id
    raises :class:`ExerciseError`. No kernel counterpart.
    """
    generator, checker = _exercise(name)
    seed = student_seed(student_id)  # a bad id is the caller's error, not a verdict
    if answer is ... or answer is None:
        return fail(NO_ANSWER)
    try:
        return checker(generator(seed), answer)
    except ExerciseError as err:
        return fail(f"answer not understood: {err}")
