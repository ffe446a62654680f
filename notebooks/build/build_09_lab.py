"""Build and execute notebooks/09_lab.ipynb: ``python notebooks/build/build_09_lab.py``."""

from lesson import Lesson

lesson = Lesson("09_lab.ipynb")
md, code = lesson.md, lesson.code


md("""
# 9. Lab: the shadow MMU, graded

Eight exercises across the lessons, each generated from **your seed** and checked by
`kvmmu.teaching.lessons.l09_lab`, which gathers them from the lesson modules. A checker tells
you what is wrong without telling you the answer.

By the end you will be able to show that you can predict a walk, a shadow page's role, a
direct page's gfn, a memory saving, write-protection counters and sync outcomes, repair a
broken guest table, and choose between TDP and shadow paging for a workload.
""")
md("""
## For the instructor

- **Time.** 60 to 90 minutes for lessons 1 to 8 done beforehand: about 10 minutes per exercise,
  with the walk, role and fix exercises the longest. Points: walk 2, role 2, gfn 1, saving 1,
  fix 2, counters 2, sync 2, mode 1 (13 in all).
- **A different lab per student.** Each student sets `SEED` below to their student number (any
  int or string). The same seed always gives the same problems, so a student can close the
  notebook and come back, and you can regenerate any student's lab with
  `lab.lab_problems(seed)`.
- **Self-checking.** Every exercise cell ends with a check; students re-run it until it says
  *correct*. `lab.check_lab(SEED, answers)` (last cell) gives the score table.
- **Grading a class in one call.** Collect each student's `answers` dict (the last cell prints
  it) and run `lab.grade_lab({seed: answers, ...})`: one row per student, one column of points per
  exercise and a total. `lab.lab_solutions(seed)` gives the key for a seed: keep it to yourself.
- Everything runs locally in a few seconds; no network.
""")
code("""
from kvmmu.teaching.lessons import l09_lab as lab
SEED = "s0000000"  # your student number
problems = lab.lab_problems(SEED)
answers = {}
""")
md("""
## 1. Predict a walk (lessons 1-2)

Give the gpa as an int, or `"fault 0x.."` with the page-fault error code.
""")
code("""
problems["walk"]
""")
code("""
answers["walk"] = 0x0  # your answer
lab.check("walk", problems["walk"], answers["walk"])
""")
md("""
## 2. Predict a role (lesson 3)

A dict with `level`, `direct`, `has_4_byte_gpte`, `quadrant`, `access` (letters such as
`"uw-"`) and `cr0_wp`.
""")
code("""
problems["role"]
""")
code("""
answers["role"] = {"level": 1, "direct": False, "has_4_byte_gpte": False,
                   "quadrant": 0, "access": "uwx", "cr0_wp": True}  # your answer
lab.check("role", problems["role"], answers["role"])
""")
md("## 3. Predict a gfn (lesson 4: the seed change)")
code("""
problems["gfn"]
""")
code("""
answers["gfn"] = 0x0  # your answer
lab.check("gfn", problems["gfn"], answers["gfn"])
""")
md("## 4. Predict a saving (lesson 7), in bytes")
code("""
problems["saving"]
""")
code("""
answers["saving"] = 0  # your answer
lab.check("saving", problems["saving"], answers["saving"])
""")
md("""
## 5. Fix a broken guest table (lessons 1-2)

Give `(level, value)`: the entry at that level on the gva's path becomes `value`. The checker
applies it to a fresh copy of the guest and walks again.
""")
code("""
problems["fix"]
""")
code("""
answers["fix"] = (1, 0x0)  # your answer
lab.check("fix", problems["fix"], answers["fix"])
""")
md("## 6. Predict write-protection counters (lesson 5)")
code("""
problems["counters"]
""")
code("""
answers["counters"] = {"pf_emulate": 0, "mmu_pte_write": 0, "mmu_pte_updated": 0,
                       "mmu_pde_zapped": 0, "mmu_flooded": 0}  # your answer
lab.check("counters", problems["counters"], answers["counters"])
""")
md("## 7. Predict a sync outcome (lesson 6)")
code("""
problems["sync"]
""")
code("""
answers["sync"] = [0x0] * problems["sync"].actions.count("access")  # your answer
lab.check("sync", problems["sync"], answers["sync"])
""")
md("## 8. TDP or shadow? (lesson 8)")
code("""
problems["mode"]
""")
code("""
answers["mode"] = ""  # your answer: "tdp" or "shadow"
lab.check("mode", problems["mode"], answers["mode"])
""")
md("""
## Your score

Hand in the `answers` dict printed below (copy it into the class form or a file).
""")
code("""
lab.check_lab(SEED, answers)[["points", "max", "passed"]]
""")
code("""
print(answers)
""")

if __name__ == "__main__":
    lesson.write()
