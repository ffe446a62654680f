"""Build and execute notebooks/08_tdp_vs_shadow.ipynb.

Run ``python notebooks/build/build_08_tdp_vs_shadow.py``; it writes the notebook with its outputs.
"""
# ruff: noqa: E501  (markdown cell prose is wrapped by its own width, inside string literals)

from lesson import Lesson

lesson = Lesson("08_tdp_vs_shadow.ipynb")
md, code = lesson.md, lesson.code


md("""
# 8. TDP versus shadow paging

With two-dimensional paging (Intel EPT, AMD NPT) the CPU walks the guest's own tables and
translates every guest-physical address through a second set of tables that KVM owns. No
shadow copies, no write protection, no exits when the guest edits its tables; but a TLB miss
costs far more. This lesson puts numbers from the simulation on both sides.

By the end you will be able to:
- derive the cost of a two-dimensional walk, `(n + 1)(m + 1) - 1` references (24 for 4-on-4, 35 for
  5-on-5), and check it against the simulated hardware;
- measure the exits that guest page-table writes cause under shadow paging, with and without unsync
  pages, and under TDP;
- compare the shadow-page memory of both modes;
- decide which mode wins for a workload under a cost model you can state.
""")
code("""
from kvmmu.teaching import experiments as X, ui
from kvmmu.teaching.lessons import l08_tdp_vs_shadow as lesson
from kvmmu.kvm import tdp
""")
md("""
## The cost of a TLB miss

Under shadow paging the CPU walks the shadow tables: one reference per level. Under TDP each of
the guest's `n` table reads is a guest-physical address that first needs an `m`-level TDP walk,
and so does the final gpa: `n(m + 1) + m = (n + 1)(m + 1) - 1`.
""")
code("""
assert tdp.two_dimensional_refs(4, 4) == 24 and tdp.two_dimensional_refs(5, 5) == 35
costs = X.walk_costs()
costs
""")
md("""
The `measured` column counts the references the simulated hardware walk made on a TLB miss
(`Vcpu.last_refs`), in a guest built for each row:
""")
code("""
assert costs["match"].all()
ui.show_figure(lesson.walk_cost_figure(costs))
""")
md("""
Real CPUs cut this cost with paging-structure caches and large TDP pages; the model below leaves
them out and says so.

## Exits caused by guest page-table writes

`X.pte_write_exits` runs a guest that rewrites its own PTEs at a given rate (a share of its
operations) under three setups and counts the exits:
""")
code("""
exits = X.pte_write_exits()
exits[["pte writes", "exits on pte writes", "invlpg exits", "emulated", "exits per 1000 ops"]]
""")
code("""
tdp_rows = exits.xs("TDP", level="paging")
assert (tdp_rows["exits on pte writes"] == 0).all()
ui.show_figure(lesson.pte_exit_figure(exits))
""")
md("""
Without unsync every PTE store is an emulated exit (lesson 5). Unsync pages remove those, but
the guest's INVLPGs still exit so KVM can sync (lesson 6). Under TDP the guest edits its tables
and flushes its TLB without KVM ever knowing: TDP has no exits on PTE stores and no INVLPG
exits. The TDP bars that grow with the rate are **other exits**, faults on ordinary data
accesses: each re-pointed PTE sends the guest to a frame it has not touched yet, and the first
touch of a gpa is an EPT violation that KVM must map, in both modes (shadow paging also
refaults where an emulated store zapped an spte or a sync dropped a stale one; KVM's prefetch
maps 8 neighbours per fault, so fresh frames cost TDP fewer exits). All bars share one absolute
scale.

## Memory

For a 1 GiB guest, the shadow pages and today's kernel bytes for each scenario of lesson 7:
""")
code("""
mem = X.tdp_vs_shadow_memory()
mem
""")
code("""
assert mem.loc["tdp-4k", "pages"] == mem.loc["shadow-4k", "pages"]
assert mem.loc["tdp-4k", "bytes today"] < mem.loc["shadow-4k", "bytes today"]
""")
md("""
The same number of pages, but a TDP page is direct and, since the seed, needs no gfns array:
TDP costs about half the memory, per guest. Under shadow paging the count also grows with
every process (one set of shadow tables per address space), which TDP does not.

## Play: which mode wins?

The cost model, stated openly (`lesson.mode_costs`): per million guest instructions, a TLB miss
costs its walk references times 20 cycles (4 references under shadow paging, 24 under 4-on-4 TDP);
under shadow paging every page-table store and every CR3 load is a VM exit of 2500 cycles;
under TDP neither exits. First-touch faults exit in both modes and are left out. These are round
numbers for teaching, not measurements of a CPU. First a static copy of the default state (printed once: it does not follow the widget), then the live widget, which redraws on every move:
""")
code("""
text, table, fig = lesson.mode_view(2000, 20, 10)
print(text)
ui.show_figure(fig)
display(table)
lesson.make_mode_widget()
""")
md("""
The break-even point follows from the model: TDP's extra 20 references per TLB miss cost
400 cycles, so TDP wins when `400 * tlb_misses < 2500 * (pt_writes + cr3_loads)`, that is when
the workload makes more than about one page-table store or CR3 load per 6 TLB misses. Move the
sliders to find it; the axis keeps one scale, so a bar's length is its absolute cost.

A caveat about the model: it charges every TDP miss the full 24 references. Real CPUs keep
paging-structure caches (and TLB entries for the guest's and the TDP tables' upper levels) and
KVM backs guests with large TDP pages, so most two-dimensional walks cost a few references.
That is why TDP usually wins in practice, and why KVM uses it whenever the CPU has EPT or NPT,
although this default model often says shadow paging is cheaper.

## Exercises
""")
code("""
p = lesson.mode_problem(seed=3)
p
""")
code("""
lesson.check_mode(p, "shadow")
""")
md("Now yours (put your student number in place of the seed):")
code("""
p = lesson.mode_problem(seed=99)
p
""")
code("""
answer = ""  # your answer: "tdp" or "shadow"
lesson.check_mode(p, answer)
""")

lesson.recap("""
TDP makes a TLB miss dearer, `(n + 1)(m + 1) - 1` references instead of `n`, and takes away
the exits that guest page-table writes and CR3 loads cost under shadow paging. Which wins depends
on the workload's mix, and on the paging-structure caches of real CPUs, which make most TDP walks
far cheaper than the model's worst case.
""")

if __name__ == "__main__":
    lesson.write()
