"""Build and execute notebooks/02_shadow_paging.ipynb.

Run ``python notebooks/build/build_02_shadow_paging.py``: it writes the executed notebook.
"""
# ruff: noqa: E501  (markdown cell prose is wrapped by its own width, inside string literals)

from __future__ import annotations

from lesson import Lesson

NAME = "02_shadow_paging.ipynb"

CELLS: list[tuple[str, str]] = [
    (
        "md",
        """# 2. Shadow paging: how faults build the shadow tables

A guest believes its page tables translate virtual addresses to physical ones. Under a hypervisor
there is one more step: the guest's "physical" address is itself virtual to the host. This lesson
shows how KVM, without EPT/NPT, makes the CPU do both steps in one walk.

By the end you will be able to:

- name the three address spaces (gva, gpa, hpa) and who translates between them;
- explain why a hypervisor without EPT must build *shadow* tables, and why it write-protects the guest's;
- read the trace of one shadow page fault, event by event, and predict which shadow pages it creates;
- step through a small guest program and watch shadow pages appear.""",
    ),
    (
        "code",
        """
import pandas as pd
from kvmmu.teaching import draw, ui
from kvmmu.teaching.lessons import l02_shadow_paging as lesson
from kvmmu.kvm.mmu import shadow_path
from kvmmu.kvm.spte import describe_spte
from kvmmu.hw.x86 import Access

pd.set_option("display.width", 160)
pd.set_option("display.max_colwidth", None)  # whole cells: no "..." in the trace or role tables""",
    ),
    (
        "md",
        """## gva -> gpa -> hpa

The guest's tables map a guest-virtual address (gva) to a guest-physical one (gpa). KVM's memslots
map each guest frame (gfn) to a host frame (pfn): the hpa. `lesson.run_program(0)` builds a small
4-level guest (code at `0x400000`, data at `0x600000`, a stack, a kernel direct map) that has run
nothing yet.""",
    ),
    (
        "code",
        """run = lesson.run_program(0)
vm, vcpu, pt = run.vm, run.vcpu, run.pt
gpa = vcpu.access(0x400000, Access.FETCH)
hpa = (vm.memory.gfn_to_pfn(gpa >> 12) << 12) | (gpa & 0xFFF)
print(f"gva 0x400000 -> gpa {gpa:#x} -> hpa {hpa:#x}")
assert gpa == 0x200000 and hpa != gpa""",
    ),
    (
        "md",
        """## Why shadow tables

The CPU walks exactly one set of tables, from CR3, and what it finds must be a *host* physical
address. The guest's CR3 holds a gpa and its entries hold gpas, so the CPU cannot use them. Without
EPT, KVM gives the CPU tables of its own, the **shadow** tables, that map gva straight to hpa. It
fills them lazily: the CPU faults on a missing shadow entry, KVM walks the guest's tables to find
the gpa (or to find that the guest itself would fault), looks up the host frame, and builds the
missing shadow pages. And because a shadow page copies a guest table, KVM must notice when the
guest edits that table: it write-protects every guest table it shadows.""",
    ),
    (
        "md",
        """## One fault, event by event

Tracing (the events of `mmutrace.h`) records what the fault handler did for a first data read at
`0x600000`: the exit with the hardware's error code (`kvm_page_fault`, from `trace.h`), the guest
walk and one `kvm_mmu_paging_element` per guest entry it read, one `kvm_mmu_get_page` per shadow
page looked up or created, the requested mapping level and the leaf spte.""",
    ),
    (
        "code",
        """with vm.mmu.trace.recording() as trace:
    vcpu.access(0x600000, Access.READ)
events = draw.tidy_trace(trace.frame())
assert list(events["event"])[:2] == ["kvm_page_fault", "kvm_mmu_pagetable_walk"]
assert list(events["event"])[-1] == "kvm_mmu_set_spte"
events""",
    ),
    (
        "md",
        """The code fetch before it had already built the shadows of the PML4, the PDPT and the page
directory (the data page shares them), so the handler followed their sptes without a lookup; only
the data page's page table was new: one `kvm_mmu_get_page` with `created=True`. Every shadow page
so far is *indirect*: it shadows one guest table, whose frame is its `gfn`.

The table of shadow pages below shows each page's **role**, the key that lesson 3 takes apart.
For now, its columns: `level` (4 = PML4 ... 1 = page table), `direct` (maps a range of guest
frames rather than shadowing a guest table), `4-byte gpte` (the guest uses 32-bit paging, with
4-byte entries), `quadrant` (which part of a 32-bit guest table this page shadows: a 4-byte
table holds twice the entries a 512-entry shadow page can), `access` (the rights, `u`ser,
`w`rite, e`x`ecute, that the entries above allow), `cr0_wp` (a copy of the guest's CR0.WP bit),
and `word`, all role fields packed into one number, as the kernel stores them.""",
    ),
    (
        "code",
        """pages = draw.role_frame(vm)
assert not pages["direct"].any()
assert {int(g, 16) for g in pages["gfn"]} <= set(pt.tables)
pages""",
    ),
    (
        "md",
        """The guest's tables (left) and the shadow pages built so far (right). The shadow tree mirrors the
part of the guest tree that the guest has used, and nothing more.""",
    ),
    ("code", """ui.show(lesson.shadow_tables_figure(vm, vcpu))"""),
    (
        "md",
        """What the CPU now walks for `0x600000`: one shadow page per level, each entry an spte that points
to the next shadow page or, at the leaf, to the host frame. A read of a clean page gets a read-only
spte, so that the first write faults and KVM can set the guest's dirty bit.""",
    ),
    (
        "code",
        """for sp, index in shadow_path(vcpu, 0x600000):
    print(f"{sp.describe():45} [{index:3}] {describe_spte(int(sp.spt[index]), sp.level)}")""",
    ),
    (
        "md",
        """## Step through a program

`lesson.DEMO_PROGRAM` is a small guest program: two code fetches, a variable read then written, a
stack push, a read that hits in the TLB, a user read of a kernel page (the guest's own fault,
reflected to it) and the same read from the kernel. Move the slider or press *next step*: each
state is recomputed from scratch, so step *k* always shows the same pages. The cell first prints
a static copy of the state after three steps (it does not follow the widget), then the live
widget.""",
    ),
    (
        "code",
        """text, step_pages, counters = lesson.shadow_step_view(3)
print(text)
display(step_pages, counters)
lesson.make_shadow_steps_widget(steps=3)""",
    ),
    (
        "md",
        """After the whole program: three user regions and the kernel's direct map, each with its own
path of shadow pages under the one root.""",
    ),
    (
        "code",
        """full = lesson.run_program(len(lesson.DEMO_PROGRAM))
assert full.vm.mmu.stats.pf_guest == 1
ui.show(lesson.shadow_tables_figure(full.vm, full.vcpu))""",
    ),
    (
        "md",
        """## Exercises

`lesson.shadow_fault_problem(seed)`: a guest has read one page; predict how many shadow pages
its next access creates. Use your student number as the seed.""",
    ),
    (
        "code",
        """problem = lesson.shadow_fault_problem(1)
print(problem)
lesson.check_shadow_fault(problem, 4)""",
    ),
    (
        "code",
        """answer = 0  # your answer: a number of new shadow pages
lesson.check_shadow_fault(problem, answer)""",
    ),
]


RECAP = """
Without EPT/NPT, KVM builds shadow pages on demand: each guest page fault that the shadow
tables cannot serve walks the guest's tables and fills the missing shadow pages and sptes
(`FNAME(fetch)`), found again later through the page hash by gfn and role. The rmap records every
spte of a gfn, and every guest table page is write-protected so its shadows stay right.
"""

if __name__ == "__main__":
    lesson = Lesson(NAME, CELLS)
    lesson.recap(RECAP)
    lesson.write()
