"""Build and execute notebooks/07_memory_savings.ipynb.

Run ``python notebooks/build/build_07_memory_savings.py``; it writes the notebook with its outputs.
"""
# ruff: noqa: E501  (markdown cell prose is wrapped by its own width, inside string literals)

from lesson import Lesson

lesson = Lesson("07_memory_savings.ipynb")
md, code = lesson.md, lesson.code


md("""
# 7. Memory-savings experiments

The seed change removed one allocation: the 4 KiB `gfns` page of every *direct* shadow page.
How much is that worth? It depends on how many direct pages a guest needs, which depends on
the paging mode and on page sizes. This lesson measures it on the simulation, from a few
pages up to a 64 GiB guest, and checks every measured number against a closed form.

By the end you will be able to:
- count the shadow pages a TDP guest and a shadow-paging guest need, level by level;
- compute the kernel memory of those pages in three eras (before 2010, the 2010 seed, today's
  `shadowed_translation`);
- explain why the seed saves about half the shadow-page memory of a TDP guest and nothing for a
  shadow-paging guest with 4 KiB pages;
- read the savings of a guest of any size off a table or a plot, and check them with the formula.
""")
code("""
from kvmmu.kvm import accounting
from kvmmu.teaching import experiments as X, ui
from kvmmu.teaching.lessons import l07_memory_savings as lesson
from kvmmu.kvm.vcpu import Vm
""")
md("""
## One small guest, fault by fault

A TDP guest of 16 MiB that touches one page in every 2 MiB makes exactly the shadow pages that
touching every page would: one last-level page per 2 MiB, one page each at levels 2 and 3, and
the root. All of them are direct. `accounting.memory_by_era` prices them in each era; the
`2010 seed` gfns column is *measured*, the bytes of the `gfns` arrays the simulated pages hold.
""")
code("""
vm = Vm(16 << 20, tdp=True, huge_pages=False)
vcpu = vm.create_vcpu()
for gpa in range(0, 16 << 20, 2 << 20):
    vcpu.access(gpa)
accounting.memory_by_era(vm)
""")
code("""
table = accounting.memory_by_era(vm)
assert table.loc["pre-2010", "gfns bytes"] - table.loc["2010 seed", "gfns bytes"] == (8 + 3) * 4096
""")
md("""
The struct sizes are approximate (see the `kvmmu.kvm.accounting` docstring); the spt and gfns pages
are exact. Today's kernel allocates `shadowed_translation` instead of `gfns`, for indirect pages
only, so for direct pages it keeps the seed's saving.

## Four workloads

`X.savings_scenarios` builds four guests that map 64 MiB at gva = gpa and touch all of it (TDP or
shadow paging, 4 KiB or 2 MiB pages), plus a guest running four processes, and prices each:
""")
code("""
scen = X.savings_scenarios(64 << 20)
scen[["pages", "direct pages", "indirect pages", "gfns bytes", "saved vs pre-2010"]]
""")
code("""
assert scen.loc[("shadow-4k", "2010 seed"), "saved vs pre-2010"] == 0
assert scen.loc[("tdp-4k", "2010 seed"), "gfns bytes"] == 0
""")
md("""
Shadow paging with 4 KiB guest pages has no direct pages at all: every shadow page shadows a guest
table and needs its gfns. Direct pages appear where nothing in the guest is shadowed: every page
of a TDP guest, and the 4 KiB tables that split a guest 2 MiB page the host cannot map whole.

## Up to 64 GiB

Faulting in a 64 GiB guest one page at a time would take 16 million faults. The batch path
(`kvmmu.teaching.batch`) computes the same end state with numpy; its tests prove it equal to the
fault path. Beside each measured count stands the closed form, and the `match` column compares them:
""")
code("""
sizes = X.savings_by_size("tdp-4k")
sizes[["pages", "pages (formula)", "pre-2010 bytes", "2010 seed bytes", "saved by 2010", "match"]]
""")
code("""
assert sizes["match"].all() and sizes.index.max() >= 64
share = sizes["saved by 2010"] / sizes["pre-2010 bytes"]
print(f"the seed saves {share.min():.1%} .. {share.max():.1%} of a TDP guest's shadow-page memory")
""")
code("""
ui.show_figure(lesson.savings_figure(sizes))
""")
md("""
The lines are parallel on a log-log plot: memory grows linearly with the guest, about 4 MiB of
shadow pages per GiB of guest in 2010 and half that after the seed.

## Play: size, mode, page size

The widget prices one guest (batch path, formula checked in the first line). First a static copy of the default state (printed once: it does not follow the widget), then the live widget, which redraws on every move:
""")
code("""
text, table, fig = lesson.savings_view(4, "TDP", "4 KiB")
print(text)
ui.show_figure(fig)
display(table)
lesson.make_savings_widget()
""")
md("""
## Exercises

How many bytes of gfns arrays does the seed save for a generated guest? A wrong answer first:
""")
code("""
p = lesson.saving_problem(seed=2)
p
""")
code("""
lesson.check_saving(p, 16 * 4096)
""")
md("Now yours (put your student number in place of the seed):")
code("""
p = lesson.saving_problem(seed=1234)
p
""")
code("""
answer = 0  # your answer, in bytes
lesson.check_saving(p, answer)
""")

lesson.recap("""
The 2010 change drops the 4 KiB `gfns` array of every direct shadow page. Under TDP every
shadow page is direct, so it saves about half of the shadow-page memory, growing linearly with
the guest; shadow paging with 4 KiB guest pages has no direct pages and saves nothing.
""")

if __name__ == "__main__":
    lesson.write()
