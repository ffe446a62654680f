"""Build and execute notebooks/03_mmu_page_role.ipynb.

Run ``python notebooks/build/build_03_mmu_page_role.py``: it writes the executed notebook.
"""
# ruff: noqa: E501  (markdown cell prose is wrapped by its own width, inside string literals)

from __future__ import annotations

from lesson import Lesson

NAME = "03_mmu_page_role.ipynb"

CELLS: list[tuple[str, str]] = [
    (
        "md",
        """# 3. `kvm_mmu_page` and its role

A shadow page is found again by its guest frame *and* its role: the packed word of everything that
changes how the guest's entries must be translated. This lesson reads every field, and shows why
one guest table can have several shadow pages and where *direct* pages come from.

By the end you will be able to:

- name every field of `union kvm_mmu_page_role` and its bits in `role.word`;
- explain why one gfn can have several shadow pages (CR0.WP, quadrants of a 32-bit guest, access);
- say where direct pages come from (TDP, paging off, guest large pages on small host pages);
- count the shadow pages a real Linux address space needs.""",
    ),
    (
        "code",
        """
import pandas as pd
from kvmmu.teaching import ui
from kvmmu.teaching.lessons import l03_mmu_page_role as lesson
from kvmmu.hw.capture import load_capture
from kvmmu.kvm.role import MmuPageRole

pd.set_option("display.width", 160)
pd.set_option("display.max_colwidth", None)  # whole cells: no "..." in the trace or role tables""",
    ),
    (
        "md",
        """## The fields of the role

`MmuPageRole` mirrors the kernel's union bit for bit; `word` packs the fields, and the shadow-page
hash compares `(gfn, role.word)`.""",
    ),
    ("code", """lesson.role_layout_table()"""),
    (
        "code",
        """role = MmuPageRole(level=1, access=0b101, cr0_wp=True, efer_nx=True)
print(role.describe(), hex(role.word))
assert MmuPageRole.from_word(role.word) == role and role.word == 0x3501""",
    ),
    (
        "md",
        """## One gfn, several pages: CR0.WP

With CR0.WP=0 a supervisor write to a read-only page succeeds, so the same guest entries mean
different rights. A guest that toggles WP gets a second set of shadow pages for the same tables:
the lookup sees another role and misses.""",
    ),
    (
        "code",
        """wp = lesson.role_scenario("cr0_wp")
assert (wp.groupby("gfn")["cr0_wp"].nunique() == 2).all()
wp""",
    ),
    (
        "md",
        """## Quadrants: a 32-bit guest on PAE shadow tables

KVM shadows a 32-bit guest with 8-byte PAE tables. A guest page directory (1024 entries, 4 GiB)
becomes four shadow level-2 pages of 512 entries, one per GiB (`quadrant` 0..3, the roots); a guest
page table (1024 entries, 4 MiB) becomes two level-1 pages (`quadrant` 0 and 1).""",
    ),
    (
        "code",
        """quadrants = lesson.role_scenario("quadrants")
assert sorted(quadrants.loc[quadrants.level == 2, "quadrant"]) == [0, 1, 2, 3]
quadrants""",
    ),
    (
        "md",
        """## Access: the same table reached through different entries

A page table reached through a user PDE and through a supervisor-only PDE is shadowed twice: the
rights of the upper levels are part of the role (`access`), because the leaf sptes must carry them.""",
    ),
    ("code", """lesson.role_scenario("access")"""),
    (
        "md",
        """## Direct pages

A *direct* page shadows no guest table: it maps a linear run of guest frames. Three things make
them: TDP (every page is direct, since the guest walks its own tables in hardware), a guest with
paging off, and a guest large page that the host backs with small pages (below the guest's 2 MiB
leaf there is no guest table to shadow). Direct pages have no gfns array (`gfns bytes` 0): the next
lesson is about that.""",
    ),
    (
        "code",
        """large = lesson.role_scenario("large_guest_page")
tdp = lesson.setup_shadow_pages("4-level", tdp=True)
assert large["direct"].sum() == 1 and tdp["direct"].all()
display(large, tdp)""",
    ),
    (
        "md",
        """## Try it

Change the guest's mode, CR0.WP, TDP, the guest's page size and the host's huge pages. The guest
maps 4 MiB at `0x400000`, reads two addresses 2 MiB apart, then its kernel writes the first. With
*paging off* there are no guest tables to shadow: even without TDP every page is direct
(`nonpaging_page_fault`), under KVM's four PAE roots.

The cell prints a static copy of the default state first (it stays as it is), then the live
widget, which redraws on every change. The widget's first line names the controls that change
nothing in the current setup: under TDP, for instance, the guest's large pages and CR0.WP do not
matter, since no guest table is shadowed. After a change, the `changed` column marks the pages
that are new (by gfn and role word) and the line counts those gone.""",
    ),
    (
        "code",
        """text, pages = lesson.role_setup_view("4-level")  # a static copy of the default state
print(text)
display(pages)
lesson.make_role_widget()  # live: it says which controls do nothing and marks new pages""",
    ),
    (
        "md",
        """## A real address space

The shadow MMU can run over the captured Linux tables: a Vm built on the capture's guest memory
reads every user page at CPL 3 and an evenly spaced sample of each kernel region at CPL 0.""",
    ),
    (
        "code",
        """summary, per_level = lesson.capture_shadow_census(load_capture("x86_64-4level"), kernel_per_region=64)
assert summary["guest faults"] == 0
display(summary.to_frame(), per_level)""",
    ),
    (
        "md",
        """About fifty shadow pages serve almost 750 distinct pages, because one level-1 shadow page covers
2 MiB. The direct page comes from a guest 2 MiB page that the host could not map with a 2 MiB spte:
a guest page table lives inside it, and a write-protected gfn forbids the large mapping.""",
    ),
    (
        "md",
        """## Exercises

`lesson.role_problem(seed)` asks for the role of one page on a shadow walk: a dict with
`level`, `direct`, `has_4_byte_gpte`, `quadrant`, `access` (letters such as `"uw-"`) and `cr0_wp`.""",
    ),
    (
        "code",
        """problem = lesson.role_problem(1)
print(problem)
wrong = {"level": 2, "direct": False, "has_4_byte_gpte": True, "quadrant": 3, "access": "---"}
lesson.check_role(problem, wrong | {"cr0_wp": False})""",
    ),
    (
        "code",
        """answer = {"level": 0, "direct": False, "has_4_byte_gpte": False, "quadrant": 0, "access": "---"}
answer["cr0_wp"] = False  # your answer: fill in every field
lesson.check_role(problem, answer)""",
    ),
]


RECAP = """
A shadow page is found by its gfn *and* its role: level, direct, 4-byte gptes and
quadrant, access, CR0.WP and the other mode bits. One guest table can therefore have several
shadow pages, one per way the guest uses it, and a change of guest mode never reuses a shadow
built under another.
"""

if __name__ == "__main__":
    lesson = Lesson(NAME, CELLS)
    lesson.recap(RECAP)
    lesson.write()
