"""The graded lab on otter-grader: the instructor's side of ``notebooks/09_lab.ipynb``.

``notebooks/build/build_09_lab.py`` writes the otter master notebook
``notebooks/lab/09_lab.ipynb``: each question's answer cell, its public check (the lesson
checker's hint, worth nothing) and its hidden tests (the points). The hidden tests call
:func:`require`, which recomputes the answer from the student id inside the autograder, so
neither the key nor a problem object reaches the student. Points (:data:`PARTS`) are per field
for the role, counter and sync questions, and the two-choice question is worth least.

Two commands, with the ``[grading]`` extra installed (no Docker)::

    python -m kvmmu.teaching.grading assign OUTDIR
    python -m kvmmu.teaching.grading grade OUTDIR/autograder/autograder.zip SUBMISSIONS RESULTS

``assign`` runs ``otter assign`` on the master: ``OUTDIR/student/09_lab.ipynb`` for the class and
``OUTDIR/autograder/autograder.zip``. ``grade`` grades every ``.zip`` (what ``grader.export()``
writes) and ``.ipynb`` in SUBMISSIONS with ``otter.api.grade_submission``, one at a time, into
``RESULTS/gradebook.csv`` and ``RESULTS/feedback/<submission>.txt``; a submission that cannot be
graded scores 0 with the reason and the class goes on. No kernel counterpart: this is the
course's side.
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import sys
import zipfile
from collections.abc import Mapping, Sequence
from contextlib import redirect_stderr, redirect_stdout, suppress
from pathlib import Path

import pandas as pd

from kvmmu.errors import KvmmuError, check_choice, check_path, check_strings
from kvmmu.hw.walk import PageFault
from kvmmu.hw.x86 import Acc
from kvmmu.teaching.lessons import l01_guest_page_tables as l01
from kvmmu.teaching.lessons import l03_mmu_page_role as l03
from kvmmu.teaching.lessons import l04_lazy_gfns as l04
from kvmmu.teaching.lessons import l05_write_protection as l05
from kvmmu.teaching.lessons import l06_unsync as l06
from kvmmu.teaching.lessons import l08_tdp_vs_shadow as l08
from kvmmu.teaching.lessons.l09_lab import EXERCISES, NO_ANSWER, hint, student_seed
from kvmmu.teaching.problems import Check, ExerciseError, Problem, fail, ok

__all__ = [
    "MASTER",
    "PARTS",
    "GradingError",
    "assign",
    "grade",
    "grade_part",
    "lab_problems",
    "lab_solutions",
    "main",
    "require",
]

MASTER = Path(__file__).resolve().parents[2] / "notebooks" / "lab" / "09_lab.ipynb"
"""The otter master notebook in a source checkout (``notebooks/build/build_09_lab.py``)."""

SYNC_PARTS = ("a third of the accesses", "two thirds of the accesses", "every access")

PARTS: dict[str, tuple[tuple[str, float], ...]] = {
    "walk": (("outcome", 3),),
    "role": tuple((f, 0.5) for f in l03.ROLE_FIELDS),
    "gfn": (("gfn", 2),),
    "saving": (("bytes", 2),),
    "fix": (("fix", 3),),
    "counters": tuple((f, 0.5) for f in l05.WP_FIELDS),
    "sync": tuple((p, 1) for p in SYNC_PARTS),
    "mode": (("mode", 1),),
}
"""Question -> its graded parts, each (name, points): one hidden test per part. The role and
counter questions score per field, the sync question per third of its accesses right; ``mode``
has two choices and is worth least."""


class GradingError(KvmmuError):
    """The grading command was given something it cannot use (a missing master, autograder or
    submissions folder)."""


def _check_part(question: object, part: object) -> tuple[str, str]:
    """A question of :data:`PARTS` and one of its parts."""
    name = check_choice("question", question, tuple(PARTS), ExerciseError)
    return name, check_choice("part", part, tuple(p for p, _ in PARTS[name]), ExerciseError)


def lab_problems(student_id: object) -> dict[str, Problem]:
    """Every lab problem, with its answer, for one student; the autograder's side.

    No kernel counterpart.
    """
    seed = student_seed(student_id)
    return {name: generator(seed) for name, (generator, _) in EXERCISES.items()}


def lab_solutions(student_id: object) -> dict[str, object]:
    """The key for one student, in the shapes the notebook asks for; the master notebook's
    solution cells use it, and it never goes into the student notebook. No kernel counterpart.
    """
    p = lab_problems(student_id)
    walk_p, role_p = p["walk"], p["role"]
    assert isinstance(walk_p, l01.WalkProblem) and isinstance(role_p, l03.RoleProblem)
    result = walk_p._result
    walk_answer: object = (
        f"fault {int(result.error_code):#x}" if isinstance(result, PageFault) else result.gpa
    )
    gfn_p, saving_p, fix_p = p["gfn"], p["saving"], p["fix"]
    assert isinstance(gfn_p, l04.GfnProblem) and isinstance(saving_p, l04.SavingProblem)
    assert isinstance(fix_p, l01.FixProblem)
    counters_p, sync_p, mode_p = p["counters"], p["sync"], p["mode"]
    assert isinstance(counters_p, l05.CountersProblem) and isinstance(sync_p, l06.SyncProblem)
    assert isinstance(mode_p, l08.ModeProblem)
    gfns = saving_p._table["gfns bytes"]
    _, pt, _ = l01.fix_guest(fix_p.seed)
    accesses = sync_p._table[sync_p._table["action"] == "access"]["access returns"]
    return {
        "walk": walk_answer,
        "role": {f: _plain(f, getattr(role_p._role, f)) for f in l03.ROLE_FIELDS},
        "gfn": gfn_p.page.get_gfn(gfn_p.index),
        "saving": int(gfns["pre-2010"] - gfns["2010 seed"]),
        "fix": l01.fix_answer(fix_p, pt),
        "counters": dict(counters_p._counters),
        "sync": [int(str(v), 16) for v in accesses],
        "mode": l08.mode_winner(mode_p.tlb_misses, mode_p.pt_writes, mode_p.cr3_loads),
    }


def _plain(name: str, value: object) -> object:
    """A role field as a student writes it: access as letters (``"u-x"``), the rest as is."""
    if name == "access" and isinstance(value, int):
        return "".join(ch if value & bit else "-" for ch, bit in zip("uwx", _ACC_BITS, strict=True))
    return value


_ACC_BITS = (Acc.USER, Acc.WRITE, Acc.EXEC)


def _field(answer: object, name: str) -> object:
    if not isinstance(answer, Mapping):
        raise ExerciseError("give a dict with one entry per field")
    if name not in answer:
        raise ExerciseError(f"the dict has no {name!r}")
    return answer[name]


def grade_part(question: str, part: str, student_id: object, answer: object) -> Check:
    """The verdict on one graded part of ``question`` (a name of :data:`PARTS`) for
    ``student_id``'s ``answer``; a missing or malformed answer fails with a message. The answer
    is recomputed here from the student id. No kernel counterpart.
    """
    _check_part(question, part)
    student_seed(student_id)  # a bad id is the caller's error, not a verdict on the answer
    if answer is ... or answer is None:
        return fail(NO_ANSWER)
    if len(PARTS[question]) == 1:
        return hint(question, student_id, answer)
    try:
        problem = EXERCISES[question][0](student_seed(student_id))
        if isinstance(problem, l03.RoleProblem):
            right = l03.role_field_right(problem, part, _field(answer, part))
        elif isinstance(problem, l05.CountersProblem):
            right = l05.counter_right(problem, part, _field(answer, part))
        else:
            assert isinstance(problem, l06.SyncProblem)
            if isinstance(answer, str) or not isinstance(answer, Sequence):
                raise ExerciseError("give a list of gpas, one per 'access'")
            hits = l06.sync_accesses_right(problem, answer)
            right = sum(hits) * len(SYNC_PARTS) >= (SYNC_PARTS.index(part) + 1) * len(hits)
            part = f"{sum(hits)} of {len(hits)} accesses right; {part}"
    except ExerciseError as err:
        return fail(f"answer not understood: {err}")
    return ok(f"{part}: right.") if right else fail(f"{part}: not right.")


def require(question: str, part: str, student_id: object, answers: object) -> None:
    """A hidden test's body: raise ``AssertionError`` with the verdict's message unless part
    ``part`` of ``answers[question]`` is right. No kernel counterpart.
    """
    _check_part(question, part)
    if not isinstance(answers, Mapping):  # other keys than the questions' are the student's
        raise ExerciseError(
            f"answers must be a dict from question names to answers, got {str(answers)[:60]}"
        )
    answer = answers.get(question)
    verdict = grade_part(question, part, student_id, answer)
    if not verdict.passed:
        raise AssertionError(f"{question} ({part}): {verdict.message}")


# ------------------------------------------------------------------------------------------------
# The commands: otter assign, and grading a folder of submissions
# ------------------------------------------------------------------------------------------------


def assign(outdir: Path, master: Path = MASTER) -> Path:
    """Run ``otter assign`` on the master notebook into ``outdir``: ``student/`` for the class,
    ``autograder/autograder.zip`` for :func:`grade`. The solutions are run against every test
    first. Returns the autograder zip, ``outdir/autograder/autograder.zip``. No kernel
    counterpart.
    """
    outdir = check_path("outdir", outdir, GradingError)
    master = check_path("master", master, GradingError)
    from otter.assign import main as otter_assign

    if not master.is_file():
        raise GradingError(
            f"no master notebook at {master.name}: run notebooks/build/build_09_lab.py, or pass "
            "--master"
        )
    otter_assign(str(master), str(outdir), no_pdfs=True)
    zips = sorted((outdir / "autograder").glob("*.zip"))
    if not zips:
        raise GradingError("otter assign wrote no autograder zip")
    # otter names the zip after the time it ran; one fixed name makes one documented command
    return zips[-1].replace(outdir / "autograder" / "autograder.zip")


def _student_id(submission: Path) -> str:
    """The STUDENT_ID a submission's notebook assigns, or "" when it cannot be read."""
    try:
        if submission.suffix == ".zip":
            with zipfile.ZipFile(submission) as archive:
                names = [n for n in archive.namelist() if n.endswith(".ipynb")]
                text = archive.read(names[0]).decode() if names else "{}"
        else:
            text = submission.read_text()
        cells = json.loads(text).get("cells", [])
    except (OSError, ValueError, zipfile.BadZipFile, AttributeError):
        return ""
    for cell in cells:
        source = "".join(cell.get("source", "")) if isinstance(cell, dict) else ""
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in tree.body:
            if (
                isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "STUDENT_ID" for t in node.targets)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
            ):
                return node.value.value.strip()
    return ""


def grade(autograder: Path, submissions: Path, outdir: Path) -> pd.DataFrame:
    """Grade every submission in ``submissions`` (``.zip`` or ``.ipynb``) with otter, no Docker:
    one gradebook row per submission (student id, points per question, total, a message), written
    to ``outdir/gradebook.csv``, and each student's feedback to ``outdir/feedback/``. A submission
    that does not grade scores 0 with the reason; the loop never stops. No kernel counterpart.
    """
    autograder = check_path("autograder", autograder, GradingError)
    submissions = check_path("submissions", submissions, GradingError)
    outdir = check_path("outdir", outdir, GradingError)
    from otter.api import grade_submission

    if not autograder.is_file():
        raise GradingError(f"no autograder zip at {autograder.name}: run the assign command first")
    if not submissions.is_dir():
        raise GradingError(f"{submissions.name} is not a folder of submissions")
    feedback = outdir / "feedback"
    feedback.mkdir(parents=True, exist_ok=True)
    possible = sum(points for parts in PARTS.values() for _, points in parts)
    rows = []
    for path in sorted(p for p in submissions.iterdir() if p.suffix in (".zip", ".ipynb")):
        row: dict[str, object] = {"submission": path.name, "student_id": _student_id(path)}
        row |= dict.fromkeys(PARTS, 0.0)
        log = io.StringIO()
        try:
            with redirect_stdout(log), redirect_stderr(log):
                results = grade_submission(str(path), str(autograder), quiet=True)
        except Exception as err:  # any failure of one submission must not stop the class
            message = f"not graded: {type(err).__name__}: {err}".strip()
            report = message
        else:
            for question in PARTS:
                with suppress(KeyError, ValueError):
                    row[question] = float(results.get_score(question))
            failure = results.catastrophic_error
            message = f"not graded: {failure}" if failure is not None else ""
            report = results.summary() + (f"\n{message}" if message else "")
        if not row["student_id"] and not message:
            message = "no STUDENT_ID in the notebook"
        row["total"] = round(sum(float(str(row[q])) for q in PARTS), 2)
        row["possible"] = possible
        row["message"] = message
        (feedback / f"{path.stem}.txt").write_text(report + "\n")
        rows.append(row)
    columns = ["submission", "student_id", *PARTS, "total", "possible", "message"]
    book = pd.DataFrame(rows, columns=columns)
    book.to_csv(outdir / "gradebook.csv", index=False)
    return book


def main(argv: list[str] | None = None) -> int:
    """``python -m kvmmu.teaching.grading assign|grade ...``; see the module's docstring.

    No kernel counterpart.
    """
    if argv is not None:
        check_strings("argv", argv, GradingError)
    parser = argparse.ArgumentParser(prog="python -m kvmmu.teaching.grading")
    commands = parser.add_subparsers(dest="command", required=True)
    a = commands.add_parser("assign", help="student notebook and autograder zip into OUTDIR")
    a.add_argument("outdir", type=Path)
    a.add_argument("--master", type=Path, default=MASTER)
    g = commands.add_parser("grade", help="grade a folder of submissions into a gradebook")
    g.add_argument("autograder", type=Path)
    g.add_argument("submissions", type=Path)
    g.add_argument("outdir", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "assign":
            zip_path = assign(args.outdir, args.master)
            print(f"student notebook in {args.outdir / 'student'}; autograder {zip_path}")
        else:
            book = grade(args.autograder, args.submissions, args.outdir)
            print(book.to_string(index=False))
    except GradingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
