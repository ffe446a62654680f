"""Build and execute notebooks/04_lazy_gfns.ipynb.

Run ``python notebooks/build/build_04_lazy_gfns.py``: it writes the executed notebook.
"""
# ruff: noqa: E501  (markdown cell prose is wrapped by its own width, inside string literals)

from __future__ import annotations

from lesson import Lesson

NAME = "04_lazy_gfns.ipynb"

CELLS: list[tuple[str, str]] = [
    (
        "md",
        """# 4. Lazy gfns: the seed change

In 2010, "KVM: MMU: Don't allocate gfns page for direct mmu pages" removed a 4 KiB array from every
direct shadow page. This lesson shows what the array holds, why a direct page can compute it, and
proves on a running MMU that the computed values are the ones that would have been stored.

By the end you will be able to:

- say what `sp->gfns` records and which code reads it;
- compute `get_gfn(i)` of a direct page by hand, at any level;
- check, with an audit, that computing gfns loses nothing;
- count the bytes the change saves for a page and for a workload.""",
    ),
    (
        "code",
        """
import inspect
import pandas as pd
from kvmmu.teaching import draw, ui
from kvmmu.teaching.lessons import l04_lazy_gfns as lesson
from kvmmu.kvm.accounting import memory_by_era
from kvmmu.kvm.audit import audit_report
from kvmmu.kvm.page import MmuPage
from kvmmu.kvm.vcpu import Vm
from kvmmu.hw.x86 import Access

pd.set_option("display.width", 160)""",
    ),
    (
        "md",
        """## The gfns array

A leaf spte holds a *host* frame. To go back from an spte to the guest frame it maps (the reverse
map needs that, to find all sptes of a gfn) KVM keeps, for each shadow page, an array of 512 gfns,
one per spte. `lesson.demo_mixed_vm()` is a guest with 4 KiB pages (indirect shadow pages) and one
2 MiB page on a host without huge pages (a direct level-1 page under it).""",
    ),
    (
        "code",
        """vm = lesson.demo_mixed_vm()
draw.role_frame(vm)""",
    ),
    (
        "md",
        """## Why a direct page needs no array

An indirect page copies a guest table: entry *i* maps whatever frame the guest wrote there, so the
gfn must be stored. A direct page maps a linear range starting at its `gfn`: entry *i* of a level-*L*
page maps `gfn + (i << 9*(L-1))`. Stored or computed, the answer is the same.

Computing is safe because of an invariant the kernel keeps, and `kvmmu.kvm.audit` checks:

- **Only two paths write a direct page's sptes**, the direct map (TDP, or guest paging off) and
  `FNAME(fetch)` when it maps a guest huge page with small pages, and both always write entry *i*
  with gfn = base + *i* (times the entry's size in frames).
- **A direct page is never unsync**: it shadows no guest table the guest could edit, so
  `sync_page` never sees one and never rewrites its sptes.
- **`set_gfn` on a direct page only checks**: it stores nothing and raises (the kernel warns) if
  the gfn it is given is not the computed one.

So the value that would have been stored is always the value computed. In the second table below
the formula column of the *indirect* page is not its gfns: there the formula gives `0xfc3` for
entry 0, the guest table's own frame plus the index, while `0x100` is stored, the frame the
guest's PTE points at. For an indirect page only the stored array is right.""",
    ),
    (
        "code",
        """direct = next(sp for sp in vm.mmu.active if sp.direct)
indirect = next(sp for sp in vm.mmu.active if not sp.direct and sp.level == 1)
assert direct.gfns is None and indirect.gfns is not None
display(lesson.gfn_table(direct), lesson.gfn_table(indirect))""",
    ),
    (
        "md",
        """## `get_gfn` and `set_gfn`

The seed change routed every access to the array through two helpers, `kvm_mmu_page_get_gfn` and
`kvm_mmu_page_set_gfn`. Their kvmmu versions:""",
    ),
    (
        "code",
        """print(inspect.getsource(MmuPage.get_gfn))
print(inspect.getsource(MmuPage.set_gfn))""",
    ),
    (
        "md",
        """## Who reads the gfns

Every place that needs an spte's gfn, in the kernel and in kvmmu:""",
    ),
    ("code", """lesson.gfn_readers()"""),
    (
        "md",
        """## Proof on a running MMU

For every present leaf spte: the reverse map filed it under `get_gfn(i)` (the gfn `mmu_set_spte` was
given when it made the spte), and the host frame in the spte belongs to that gfn. `kvmmu.kvm.audit`
checks this (rules `spte-gfn`, `rmap`, `direct-gfns`) along with every other invariant of the MMU.""",
    ),
    (
        "code",
        """assert audit_report(vm) == []
checks = lesson.gfn_audit(vm)
assert checks["mismatches"].sum() == 0 and checks["leaf sptes"].sum() > 0
checks""",
    ),
    (
        "md",
        """## Bytes saved

One 4096-byte page per direct shadow page. For the small VM above:""",
    ),
    (
        "code",
        """savings = lesson.gfns_savings(vm)
assert savings.loc["direct", "saved"] == 4096 * savings.loc["direct", "count"]
savings""",
    ),
    (
        "md",
        """For a workload where direct pages dominate: a TDP guest of 64 MiB on 4 KiB host pages, every
page touched. Under TDP every shadow page is direct, so before 2010 the gfns arrays doubled the
memory of the shadow tables; `kvmmu.kvm.accounting` adds the three eras up.""",
    ),
    (
        "code",
        """tdp_vm = Vm(64 << 20, tdp=True, huge_pages=False)
tdp_vcpu = tdp_vm.create_vcpu()
for gpa in range(0, 64 << 20, 1 << 21):
    tdp_vcpu.access(gpa, Access.READ)
memory_by_era(tdp_vm)""",
    ),
    (
        "md",
        """## Try it

Pick a shadow page and an entry: a direct page computes the gfn, an indirect one reads its stored
array (`get_gfn(i)` does either).
The cell prints a static copy of entry 0 of the direct page (it does not follow the widget), then the live widget, which redraws on every move.""",
    ),
    (
        "code",
        """print(lesson.gfn_lookup(vm, direct.serial, 0))
lesson.make_gfn_widget(vm, direct.serial, 0)""",
    ),
    (
        "md",
        """## Exercises

`lesson.gfn_problem(seed)`: the gfn of an entry of a direct page. `lesson.saving_problem(seed)`:
the bytes the seed saves for a TDP guest.""",
    ),
    (
        "code",
        """problem = lesson.gfn_problem(1)
print(problem)
lesson.check_gfn(problem, problem.page.gfn + problem.index)  # a common slip""",
    ),
    (
        "code",
        """answer = 0x0  # your answer: a gfn
lesson.check_gfn(problem, answer)""",
    ),
    (
        "code",
        """saving = lesson.saving_problem(1)
print(saving)
answer = 0  # your answer: bytes
lesson.check_saving(saving, answer)""",
    ),
]


RECAP = """
A direct shadow page shadows no guest table: its sptes map a contiguous run of guest frames,
so `get_gfn(i)` computes `gfn + (i << ((level - 1) * 9))`. Only the direct-map and fetch paths
write its sptes, and always with that gfn, so nothing needs storing; since 2010 only indirect
pages carry a `gfns` array.
"""

if __name__ == "__main__":
    lesson = Lesson(NAME, CELLS)
    lesson.recap(RECAP)
    lesson.write()
