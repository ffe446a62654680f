"""Build and execute notebooks/05_write_protection.ipynb.

Run ``python notebooks/build/build_05_write_protection.py``: it writes the executed notebook.
"""
# ruff: noqa: E501  (markdown cell prose is wrapped by its own width, inside string literals)

from lesson import Lesson

lesson = Lesson("05_write_protection.ipynb")
md, code = lesson.md, lesson.code


md("""
# 5. Write protection, the rmap and emulated writes

A shadow page copies a guest page table. When the guest edits that table, the copy is stale, so
KVM must see every store to it. It does so by making the guest table read-only in the shadow
tables: the store faults, KVM emulates the instruction, and `kvm_mmu_track_write` fixes the
shadow entries the store touched.

By the end you will be able to:
- explain why a shadowed guest page table is write-protected, and find every spte of a gfn with an
  rmap walk;
- follow one emulated store to a guest PTE: fault, emulation, `track_write`, the spte updated or
  zapped;
- predict `pf_emulate`, `mmu_pte_write`, `mmu_pte_updated`, `mmu_pde_zapped` and `mmu_flooded` for a
  sequence of stores;
- say what write flooding is and why KVM zaps a page directory that is written three times in a row.
""")
code("""
from kvmmu.teaching import draw, ui
from kvmmu.teaching.lessons import l05_write_protection as lesson
from kvmmu.kvm.mmu import sptes_of_gfn
from kvmmu.hw.x86 import Access
""")
md("""
## A guest that can write its own page tables

Guest kernels map their page tables into their own address space (Linux reaches them through
the direct map). `lesson.table_writer()` builds such a guest: 16 user pages at `DATA_GVA`, the page
table mapping them at `PTE_WINDOW`, and the page directory above it at `PDE_WINDOW`. Unsync is
off, so every leaf table stays write-protected, as in the 2010 kernel.
""")
code("""
g = lesson.table_writer()
print(f"data at {lesson.DATA_GVA:#x}, leaf table at {lesson.PTE_WINDOW:#x},",
      f"page directory at {lesson.PDE_WINDOW:#x}")
ranges = g.pt.info_mem()
ranges[["start", "end"]] = ranges[["start", "end"]].map(hex)
ranges
""")
md("""
The leaf table's frame is shadowed by an *indirect* shadow page of level 1. The rmap is the reverse
map: from a gfn to every spte that maps it. Walk it for the leaf table's gfn: the only spte mapping
that frame is the one the kernel's window uses, and it is read-only.
""")
code("""
table_gfn = g.leaf_table_gfn()  # the PDE's address bits: the leaf table's frame
shadows = [sp for sp in g.vm.mmu.pages_of(table_gfn)]
print([sp.describe() for sp in shadows])
for sp, index in sptes_of_gfn(g.vm.mmu, table_gfn):
    print(sp.describe(), "index", index, "writable:", bool(int(sp.spt[index]) & 2))
""")
code("""
assert len(shadows) == 1 and shadows[0].level == 1
assert all(not int(sp.spt[i]) & 2 for sp, i in sptes_of_gfn(g.vm.mmu, table_gfn))
""")
md("""
## One store to a guest PTE

The guest re-points its first data page at another frame. The store to the write-protected table
faults (the walk below is for the window address, a write); the fault handler finds the spte
must stay read-only, so KVM emulates the store (`pf_emulate`), tells the MMU (`mmu_pte_write`),
and the MMU refreshes the
one spte that shadows the written entry in place (`mmu_pte_updated`, the 2010 kernel's
`mmu_pte_write_new_pte`). Trace it:
""")
code("""
with g.vm.mmu.trace.recording() as tr:
    g.write_pte(0)
draw.tidy_trace(tr.frame())
""")
code("""
g.counters()
""")
code("""
c = g.counters()
assert c["pf_emulate"] == 1 and c["mmu_pte_write"] == 1 and c["mmu_pte_updated"] == 1
assert g.vcpu.access(lesson.DATA_GVA, Access.READ, cpl=3) == lesson.ALT_GPA
""")
md("""
The last line shows the point: after the store, the data page reads the new frame at once,
with no fault, because the spte was refreshed during the emulation.

That refresh is the 2010 kernel's, the era of the seed change, and this lesson's guest runs it
(`table_writer(update_pte=True)`, the default here). Today's `kvm_mmu_track_write` only zaps the
spte, and the next access faults it back in; `Vm(update_pte=False)`, kvmmu's default, does the same:
""")
code("""
today = lesson.table_writer(update_pte=False)
today.write_pte(0)
assert today.vcpu.access(lesson.DATA_GVA, Access.READ, cpl=3) == lesson.ALT_GPA
today.counters()[["pf_fixed", "pf_emulate", "mmu_pte_write", "mmu_pte_updated"]]
""")
md("""
Same answer for the guest, one more fault for the host (`pf_fixed`), and no `mmu_pte_updated`.

## Upper levels: zapped, and flooded

An spte of a page directory points at another shadow page; KVM never refreshes it in place, it
zaps it (`mmu_pde_zapped`). And a table that is written again and again, without the guest
faulting through it in between, is probably no longer a page table (the guest reused the page):
on the third such store KVM zaps the whole shadow page (`mmu_flooded`) and stops
write-protecting it. Only upper-level tables are watched for flooding: in today's kernel
`detect_write_flooding` skips leaf (level-1) pages, which can go unsync instead (lesson 6), and
`kvmmu` does the same. `lesson.table_write_counters` runs a fresh guest for a given number of stores:
""")
code("""
lesson.table_write_counters(pte_writes=0, pde_writes=4)
""")
code("""
c = lesson.table_write_counters(0, 4)
assert (c["mmu_pde_zapped"], c["mmu_flooded"], c["pf_emulate"]) == (2, 1, 3)
""")
md("""
The fourth store was not emulated at all: its table was no longer shadowed, so nothing
write-protected it (`pf_fixed` counts the fault that made its mapping writable).

## Play: how often does the guest write its tables?

The widget runs 200 user reads with PTE and PDE stores mixed in at the rates you pick. Every
PTE store costs an exit while leaf tables are write-protected; tick *allow unsync* to let the
leaf table go unsync (lesson 6) and watch `pf_emulate` collapse. First a static copy of the default state (printed once: it does not follow the widget), then the live widget, which redraws on every move:
""")
code("""
frame, fig = lesson.table_write_view(pte_rate=10, pde_rate=0, unsync=False)
ui.show_figure(fig)
display(frame.T)
lesson.make_table_write_widget()
""")
md("""
## Exercises

Each exercise is generated from a seed; put your own seed (a student number works) in place of
the one below. The checker says what is wrong without giving the answer. First, a deliberately
wrong answer, to see what a hint looks like:
""")
code("""
p = lesson.counters_problem(seed=5)
p
""")
code("""
lesson.check_counters(p, {"pf_emulate": 0, "mmu_pte_write": 0, "mmu_pte_updated": 0,
                     "mmu_pde_zapped": 0, "mmu_flooded": 0})
""")
md(
    "Now yours, from a new seed (put your student number in its place). Read the problem, then replace the zeros with your prediction and run the check:"
)
code("""
p = lesson.counters_problem(seed=2024)
p
""")
code("""
answer = {"pf_emulate": 0, "mmu_pte_write": 0, "mmu_pte_updated": 0,
          "mmu_pde_zapped": 0, "mmu_flooded": 0}  # your answer
lesson.check_counters(p, answer)
""")
md("""
Going further: with `lesson.table_write_workload(pte_rate, pde_rate, unsync=True)`, why does
`pf_fixed` grow with the PTE rate while `pf_emulate` falls? (Hint: what must happen after
an INVLPG of a page whose gfn changed?)
""")

lesson.recap("""
Every guest table page KVM shadows is write-protected: a guest store to it exits, is
emulated (`pf_emulate`), and updates or zaps the sptes built from it (`mmu_pte_write`,
`mmu_pte_updated`, `mmu_pde_zapped`). An upper-level table written again and again without being
used is zapped whole (`mmu_flooded`); leaf tables are exempt in today's kernel, because they can
go unsync instead.
""")

if __name__ == "__main__":
    lesson.write()
