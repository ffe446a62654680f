"""The shared base of the lessons' exercises: problems, verdicts, seeds and answer parsing.

In the manner of OSTEP's paging simulators: a seed makes a fresh problem, the same seed always
the same one, and a checker tells a student what is wrong with an answer without giving the
answer away. Each lesson module holds its own generators and checkers, computed by running the
real ``kvmmu`` code, so a checker's verdict is what the MMU does; this module holds what they
share: :class:`Problem` (how a problem shows itself), :class:`Check` (a verdict and its hint),
:func:`seeded_rng` and :func:`parse_int`. The kernel has no counterpart: this is the course's
side.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from kvmmu.errors import KvmmuError, check_str

__all__ = ["Check", "ExerciseError", "Problem", "fail", "ok", "parse_int", "seeded_rng"]


class ExerciseError(KvmmuError, ValueError):
    """An answer or a problem argument of the wrong shape (not a wrong answer: that is a Check)."""


@dataclass(frozen=True, slots=True, repr=False)
class Check:
    """The verdict of one checker: ``passed`` and a hint that never states the answer."""

    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        return ("correct: " if self.passed else "not yet: ") + self.message

    __repr__ = __str__

    def _repr_markdown_(self) -> str:
        mark = "**correct**" if self.passed else "**not yet**"
        return f"{mark}: {self.message}"


def fail(message: str) -> Check:
    """A failed :class:`Check` whose hint is ``message``; no kernel counterpart."""
    check_str("message", message, error=ExerciseError)
    return Check(False, message)


def ok(message: str = "that is what the MMU does.") -> Check:
    """A passed :class:`Check`; no kernel counterpart."""
    check_str("message", message, error=ExerciseError)
    return Check(True, message)


class Problem:
    """Shared display of a generated problem: ``text`` as a code block in a notebook."""

    text: str

    def __str__(self) -> str:
        return self.text

    __repr__ = __str__

    def _repr_markdown_(self) -> str:
        return "```text\n" + self.text + "\n```"


def seeded_rng(seed: int | str) -> random.Random:
    """A private random stream for one problem; a student number in any form is a seed.

    No kernel counterpart.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | str):
        raise ExerciseError(
            f"a seed is an int or a string such as a student number, got {type(seed).__name__} "
            f"{str(seed)[:40]}"
        )
    return random.Random(f"kvmmu:{seed}")


def parse_int(name: str, value: object) -> int:
    """An answer that must be a number (an int, a numpy integer or text such as ``"0x1234"``).

    Raises :class:`ExerciseError` naming ``name``. No kernel counterpart.
    """
    check_str("name", name, error=ExerciseError)
    if isinstance(value, bool):
        raise ExerciseError(f"{name} must be a number such as 0x1234, got {value!r}")
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip().replace("_", ""), 0)
        except ValueError:
            pass
    raise ExerciseError(f"{name} must be a number such as 0x1234, got {value!r}")
