"""Build and execute notebooks/01_guest_page_tables.ipynb.

Run ``python notebooks/build/build_01_guest_page_tables.py``: it writes the executed notebook.
"""
# ruff: noqa: E501  (markdown cell prose is wrapped by its own width, inside string literals)

from __future__ import annotations

from lesson import Lesson

NAME = "01_guest_page_tables.ipynb"

CELLS: list[tuple[str, str]] = [
    (
        "md",
        """# 1. Guest page tables: one translation, step by step

Before a hypervisor can shadow a guest's page tables, we have to know exactly what the CPU does
with them. This lesson walks one address through x86-64's four levels of tables, then reads the
tables of a real Linux kernel.

By the end you will be able to:

- split a linear address into table indices for 32-bit, PAE, 4-level and 5-level paging;
- follow a walk level by level: which entry is read, which rights it grants, which A/D bits it sets;
- decode a page-fault error code (P, W, U, RSVD, I/D, PK) and say which rule a faulting access broke;
- read the layout of a real Linux address space, and what page-table isolation (KPTI) removes.""",
    ),
    (
        "code",
        """
import pandas as pd
from kvmmu.teaching import ui
from kvmmu.teaching.lessons import l01_guest_page_tables as lesson
from kvmmu.hw.capture import load_capture, ptdump
from kvmmu.hw.guest import GuestPageTables
from kvmmu.hw.memory import GuestMemory
from kvmmu.hw.walk import walk
from kvmmu.hw.x86 import Access, PagingMode, Pte

pd.set_option("display.width", 160)""",
    ),
    (
        "md",
        """## A small address space

A guest kernel builds its tables in guest memory. `GuestPageTables` plays that kernel: here it maps
a read-only user code page at `0x400000` and a non-executable data page at `0x600000`.""",
    ),
    (
        "code",
        """memory = GuestMemory(8 << 20)
pt = GuestPageTables(memory, PagingMode.LEVEL4)
pt.map(0x400000, 0x100000, writable=False, user=True)
pt.map(0x600000, 0x101000, user=True, nx=True)
maps = pt.mappings()
maps.assign(gva=maps.gva.map(hex), gpa=maps.gpa.map(hex))[["gva", "gpa", "size", "flags"]]""",
    ),
    (
        "md",
        """## Nine bits per level

4-level paging uses bits 47:39 of the address to pick an entry in the PML4, 38:30 in the PDPT,
29:21 in the page directory and 20:12 in the page table; the low 12 bits are the offset in the page.""",
    ),
    (
        "code",
        """gva = 0x400123
spec = PagingMode.LEVEL4.spec
indices = {spec.entry_name(level): spec.index(gva, level) for level in (4, 3, 2, 1)}
assert indices == {"PML4E": 0, "PDPTE": 0, "PDE": 2, "PTE": 0}
indices""",
    ),
    (
        "md",
        """## The walk

`walk` is KVM's `FNAME(walk_addr_generic)`: from CR3, read one entry per level, stop at the first
entry that is not present or has a reserved bit, combine the rights of all levels, and check the
access against them at the leaf. Each line of the trace is one level's decision. Only a walk that
succeeds sets the accessed bit of every entry it used (and the dirty bit of the leaf, for a write).""",
    ),
    (
        "code",
        """cpu = pt.cpu(cpl=3)
result = walk(memory, cpu, gva, Access.READ)
for step in result.trace:
    print(step.describe())
assert result.gpa == 0x100123
assert pt.entry(gva, 1) & Pte.ACCESSED and not pt.entry(gva, 1) & Pte.DIRTY""",
    ),
    (
        "md",
        """The same walk as a picture: CR3 points at the PML4, each arrow is labelled with the address bits
that index the next table, and each box shows the entry read and its flags (P, W, U, A, D, S for
page size).""",
    ),
    ("code", """ui.show(lesson.walk_tree_figure(memory, cpu, gva))"""),
    (
        "md",
        """## One address, four paging modes

32-bit paging has two levels of 10 bits (4-byte entries); PAE has a 4-entry PDPT (2 bits) then
two levels of 9; 4-level and 5-level paging have four or five levels of 9. The index of each
level is just a slice of the address.""",
    ),
    (
        "code",
        """split = lesson.address_split(0x7FFF_1234_5678)
assert split.loc["4-level", "split"] == "9+9+9+9+12"
split""",
    ),
    (
        "md",
        """## Page-fault error codes

When the walk fails, the CPU pushes an error code: P says whether the page was present
(0: not present; 1: a protection violation), W a write, U an access from CPL 3, RSVD a reserved
bit, I/D an instruction fetch, PK a protection-key denial. KVM uses the same bits
(`PFERR_*_MASK`) both to decide what to inject and to handle its own shadow faults.""",
    ),
    (
        "code",
        """faults = lesson.fault_examples()
assert faults.loc["fetch from an XD data page", "I/D"] == 1
faults""",
    ),
    (
        "md",
        """## Try it

Type an address, pick an access and a CPL. Try `0x600000` as a fetch, `0x400000` as a write at
CPL 0 and at CPL 3, and `0x800000000000` (not canonical). The cell prints a static copy of the default state first (it does not follow the widget), then the live widget, which redraws on every move.""",
    ),
    (
        "code",
        """print(lesson.walk_text(memory, cpu, "0x400123", "read", 3))
lesson.make_walk_widget(memory, cpu, "0x400123", "read", 3, draw=True)""",
    ),
    (
        "md",
        """## A real kernel's tables

`kvmmu/data/linux-guest/` (data shipped inside the package) holds the page tables of a Debian
kernel booted under QEMU, stopped while a user process ran. The walker translates a user address
(the process's first page) and a kernel text address with the guest's own registers.""",
    ),
    (
        "code",
        """cap = load_capture("x86_64-4level")
leaves = ptdump(cap.memory, cap.cpu)
user_gva, kernel_gva = int(leaves.gva.iloc[0]), 0xFFFF_FFFF_8100_0000
print(lesson.walk_text(cap.memory, cap.cpu, user_gva, "read", 3))
print(lesson.walk_text(cap.memory, cap.cpu, kernel_gva, "read", 0))""",
    ),
    (
        "md",
        """## How Linux lays out its address space

The lower half of the canonical space belongs to the process; the upper half is the kernel's,
carved into regions (`Documentation/arch/x86/x86_64/mm.rst`): the direct map of all RAM in large
pages, vmalloc space, the `struct page` array, the entry area, ESPFIX, the kernel image, modules,
the fixmap. Grouping the captured leaves by region shows who uses which page sizes.""",
    ),
    (
        "code",
        """layout = lesson.address_space_layout(leaves)
assert layout.loc["user space (VMAs)", "user leaves"] == layout.loc["user space (VMAs)", "4 KiB"]
layout""",
    ),
    (
        "md",
        """## What KPTI changes

With page-table isolation (Meltdown's fix) each process has two top-level tables: the kernel
one, and a user one whose kernel half maps only what entering and leaving the kernel needs.
The capture `x86_64-4level-pti` holds both CR3s of one process.""",
    ),
    (
        "code",
        """kpti = lesson.kpti_comparison(load_capture("x86_64-4level-pti"))
total = kpti.loc["kernel half, total"]
assert total["user CR3 leaves"] < total["kernel CR3 leaves"]
kpti""",
    ),
    (
        "md",
        """## Exercises

`lesson.walk_problem(seed)` makes a fresh walk to predict from its table dump; answer with a gpa
(`0x...`) or `"fault 0x<error code>"`. Use your student number as the seed. A wrong answer gets a
hint, as below.""",
    ),
    (
        "code",
        """problem = lesson.walk_problem(1)
print(problem)
lesson.check_walk(problem, "fault 0x4")""",
    ),
    (
        "code",
        """answer = 0x0  # your answer: a gpa such as 0x12345 or "fault 0x7"
lesson.check_walk(problem, answer)""",
    ),
]


RECAP = """
The guest's walk goes from CR3 through one entry per level, 9 bits of the gva each, and
checks P, R/W, U/S and XD at every level; a 2 MiB or 1 GiB page ends the walk early (PS). A walk
that fails returns a #PF error code whose bits say why. Everything the shadow MMU does starts
from this walk.
"""

if __name__ == "__main__":
    lesson = Lesson(NAME, CELLS)
    lesson.recap(RECAP)
    lesson.write()
