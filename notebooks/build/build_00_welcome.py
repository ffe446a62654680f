"""Build and execute notebooks/00_welcome.ipynb: ``python notebooks/build/build_00_welcome.py``."""

# ruff: noqa: E501  (the module table is one markdown table row per line)

from lesson import Lesson

lesson = Lesson("00_welcome.ipynb")
md, code = lesson.md, lesson.code

md("""
# 00 · Welcome: why a hypervisor keeps shadow page tables

This suite teaches the shadow MMU of Linux KVM on x86 by running it. `kvmmu` is a Python package
that implements it module by module, under the kernel's own names, and these notebooks are its
lessons. It grew from one small change of 2010, *"KVM: MMU: Don't allocate gfns page for direct
mmu pages"*, and this first lesson ends with what that change did.

Here you need nothing but the package: what problem a shadow MMU solves, how to use the notebooks,
and where each piece of the kernel lives in `kvmmu`.

By the end you will be able to:
- name the three address spaces (gva, gpa, hpa) and say which tables translate between them;
- say why KVM without EPT/NPT builds shadow page tables, and what keeping them right costs;
- use the words the lessons use (the glossary below);
- compute the gfn of an entry of a direct shadow page, the one-line rule of the 2010 change;
- find the `kvmmu` module, and the kernel file, for each piece of the MMU.
""")
md("""
## How to use the suite

- **Run the cells top to bottom** (in JupyterLab: *Run → Restart Kernel and Run All Cells*). Each
  lesson states one idea in prose, runs the smallest cell that shows it, and often checks it with
  an `assert`: a cell that runs without error has proved its claim.
- **Same outputs every time.** Every lesson runs in seconds, and anything random comes from a seed.
  `pytest` re-runs every notebook and compares each output with the stored one, so what you read
  is what the code does today.
- **Widgets are shells.** Sliders and dropdowns call ordinary functions; move one and the function
  runs again. A static view (a web page, a PDF) shows at most the widget's first state, so each
  lesson also calls the function directly.
- **The logic lives in `kvmmu`.** When a lesson wants you to read code, it shows the package's source.

The first cell imports the package and prints its version.
""")
code("""
import numpy as np
import pandas as pd
from ipywidgets import Dropdown, Output, VBox

import kvmmu

print("kvmmu", kvmmu.__version__)
""")
md("""
## Glossary

The lessons use these words from here on; each is explained again where it first matters.

- **gva, gpa, hpa**: guest virtual, guest physical and host physical address. **gfn** and **pfn**
  are the frame numbers of a gpa and an hpa (the address shifted right by 12).
- **spte**: a *shadow page-table entry*, one 64-bit entry of a table that KVM builds and the CPU
  walks. It maps a gva range (shadow paging) or a gpa range (TDP) to host frames.
- **shadow page** (`struct kvm_mmu_page`): one 4 KiB table of 512 sptes, with its **role** (the
  key that says which guest table, at which level, under which guest modes it shadows) and its
  **gfn**. An **indirect** page shadows a guest page table; a **direct** page maps a contiguous run
  of guest frames and shadows no guest table.
- **rmap** (reverse map): for each gfn, the sptes that map it, so KVM can find them all when that
  gfn's mapping must change (write protection, a memslot change).
- **write protection**: KVM maps every guest page that holds a guest page table read-only, so a
  guest store to it exits and KVM can fix the sptes built from it.
- **unsync**: a leaf shadow page that KVM lets go stale on purpose: the guest may write the table
  without exits, and KVM syncs the sptes (`sync_page`) at the next point where x86 lets a stale
  TLB entry be used no longer.
- **invlpg**: the x86 instruction that drops one gva's TLB entry; under shadow paging it is where
  KVM syncs that gva's spte. A **CR3 load** drops all non-global TLB entries and syncs every
  unsync page under the new root.
- **TDP** (two-dimensional paging, Intel EPT, AMD NPT): the CPU walks the guest's tables itself
  and every gpa through KVM's tables; no shadows, no write protection, dearer TLB misses.
- **exit**: a VM exit, the CPU leaving the guest for KVM (here, for a fault KVM must handle).
""")
md("""
## Three address spaces

A guest OS believes it owns the machine. Its programs use **guest virtual addresses** (gva), and
its page tables, rooted at the guest's CR3, translate them to **guest physical addresses** (gpa).
But guest physical memory is only memory that the hypervisor handed out: KVM's *memslots* map each
guest frame number (**gfn**) to a host page frame (**pfn**), at a **host physical address** (hpa).

    gva --(guest page tables, owned by the guest)--> gpa --(memslots, owned by KVM)--> hpa

The CPU's MMU walks *one* set of page tables, from the real CR3. With EPT (Intel) or NPT (AMD) the
hardware walks both, the guest's tables and, for every gpa it meets, KVM's: two-dimensional paging,
TDP. Without them the CPU can do only one translation, so KVM builds tables that go **straight from
gva to hpa** and loads those into the real CR3. They are the **shadow page tables**: the guest's
tables composed with the memslots.

A toy makes the composition concrete. Real tables are four-level trees of 512 entries; here each is
a dict from page number to frame number.
""")
code("""
guest_page_table = {0x400: 0x10, 0x401: 0x11, 0x402: 0x2A, 0x7FF: 0x10}  # virtual page -> gfn
memslot = {gfn: 0x8000 + 3 * gfn for gfn in range(0x40)}  # gfn -> pfn: any host frames will do
shadow = {vpn: memslot[gfn] for vpn, gfn in guest_page_table.items()}  # virtual page -> pfn

pd.DataFrame(
    [(f"{vpn:#x}", f"{gfn:#x}", f"{shadow[vpn]:#x}") for vpn, gfn in guest_page_table.items()],
    columns=["guest virtual page", "gfn (guest's table)", "pfn (shadow table)"],
)
""")
md("""
Pages `0x400` and `0x7ff` map the same gfn, so two sptes point at one host frame. KVM keeps a
*reverse map* from each gfn to the sptes that map it, to find them all when that gfn changes.

The shadow's one lookup must agree with the guest's walk followed by the memslot lookup, for every
byte of every mapped page. Check it for one address, keeping the 12-bit page offset:
""")
code("""
def translate(gva: int) -> str:
    vpn, offset = gva >> 12, gva & 0xFFF
    gpa = (guest_page_table[vpn] << 12) | offset
    hpa = (shadow[vpn] << 12) | offset
    assert hpa == (memslot[gpa >> 12] << 12) | offset  # one walk of the shadow == two walks
    return f"gva {gva:#x} -> gpa {gpa:#x} -> hpa {hpa:#x}"


print(translate(0x401ABC))
""")
md("""
The same function behind a widget: pick another address and `translate` runs again. This is all a
widget in this suite ever is: a control, an output area, and a call to an ordinary function.
""")
code("""
addresses = [(vpn << 12) | 0x123 for vpn in guest_page_table]
picker = Dropdown(description="gva", options=[(f"{gva:#x}", gva) for gva in addresses])
result = Output()


def show(gva: int) -> None:
    result.outputs = ()
    result.append_stdout(translate(gva) + "\\n")


picker.observe(lambda change: show(change["new"]), names="value")
show(picker.value)
VBox([picker, result])
""")
md("""
## The price of a shadow

A shadow is a copy, and copies go stale. When the guest writes one of its page-table entries, the
shadow entry built from it is wrong until KVM notices. So KVM **write-protects** every guest page
that holds a guest page table: the guest's write faults, and KVM emulates it and updates or zaps
the affected sptes, or lets the shadow page go *unsync* and syncs it at the next `invlpg` or CR3
load. Keeping shadows right costs exits and memory, and that is what most of the MMU is about.

The reverse map goes from a gfn to its sptes; KVM also needs the other direction, because when it
drops an spte it must take it out of that gfn's reverse map. So in the kernel, `struct kvm_mmu_page`
holds `spt`, the 512 sptes the CPU walks, and beside it `gfns`, the gfn that each of them maps.
""")
md("""
## The 2010 change in one cell

Not every shadow page shadows a guest table. With guest paging off, with a guest huge page that
KVM maps with small pages, and with EPT or NPT (where every page KVM builds is of this kind), the
shadow page is **direct**: it maps a contiguous run of guest frames. Entry `index` of a direct page
at `level` maps `sp.gfn + (index << ((level - 1) * 9))`, computed, not stored.

Before 2010 every shadow page still got a 4 KiB `gfns` page. The change allocates it only for
indirect pages and computes the gfn of a direct page in `kvm_mmu_page_get_gfn`, the only reader of
gfns. The rule fits in one line; `kvmmu/kvm/page.py` implements it as `MmuPage.get_gfn`.
""")
code("""
PT64_LEVEL_BITS = 9  # 512 entries per table


def direct_gfn(sp_gfn: int, level: int, index: int) -> int:
    return sp_gfn + (index << ((level - 1) * PT64_LEVEL_BITS))


[f"{direct_gfn(0x40000, level=2, index=i):#x}" for i in range(4)]
""")
md("""
Each entry of a level-2 direct page covers 512 guest frames (2 MiB). The array that stopped being
allocated holds one 64-bit gfn per spte:
""")
code("""
gfns = np.zeros(512, dtype=np.uint64)
print(
    f"{gfns.size} gfns x {gfns.itemsize} bytes = {gfns.nbytes} bytes saved per direct shadow page"
)
assert gfns.nbytes == 4096
""")
md("""
## Where each kernel piece lives

Each `kvmmu` module teaches one kernel concept, under the kernel's names, and mirrors one place in
`arch/x86/kvm/`. Read a module beside its kernel file. The package has four layers, and imports
point one way, from the bottom of this table up: the hardware knows nothing of KVM, and KVM nothing
of the lessons.

| layer | module | teaches | kernel counterpart |
| --- | --- | --- | --- |
| hardware | `hw.x86` | CR0/CR4/EFER bits, PTE bits, paging modes | `asm/kvm_host.h`, `mmu.h`, SDM vol. 3 ch. 4 |
| hardware | `hw.memory` | guest physical memory, memslots (gfn -> pfn) | `kvm_main.c` memslots |
| hardware | `hw.walk` | the guest walker: permissions, A/D bits, error codes | `paging_tmpl.h` `FNAME(walk_addr_generic)` |
| hardware | `hw.guest`, `hw.capture` | the guest OS's page-table builder; real Linux guests' tables | (the guest OS), QEMU |
| KVM | `kvm.role` | `MmuPageRole`: `union kvm_mmu_page_role` | `kvm_host.h` |
| KVM | `kvm.page` | `MmuPage`: role, gfn, spt, gfns, `get_gfn`/`set_gfn` | `mmu_internal.h` `struct kvm_mmu_page` |
| KVM | `kvm.spte`, `kvm.rmap` | spte encoding and MMIO sptes; reverse map gfn -> sptes | `spte.h`, `mmu.c` `rmap_*` |
| KVM | `kvm.mmu` | the page hash, `set_spte`, write protection, unsync bits, zap, the shadow walk | `mmu.c` |
| KVM | `kvm.sync` | `sync_page`, invlpg, root sync | `FNAME(sync_spte)`, `mmu_sync_children` |
| KVM | `kvm.fault`, `kvm.page_track` | the page fault path and fetch; emulated guest PTE writes | `FNAME(page_fault)`, `FNAME(fetch)`, `kvm_mmu_track_write` |
| KVM | `kvm.vcpu` | registers, guest TLB, CR3 switch and root cache, `access()` | `x86.c`, `kvm_mmu_new_pgd` |
| KVM | `kvm.tdp`, `kvm.stats`, `kvm.trace`, `kvm.audit`, `kvm.accounting` | TDP, counters, trace events, invariants, memory by kernel era | `mmutrace.h`, the former `mmu_audit.c` |
| teaching | `teaching.*` | workloads, experiments, and each lesson's tables, figures, widgets and exercises | - |
""")
md("""
## The lessons

1. [Guest page tables](01_guest_page_tables.ipynb): the x86 walk, its rights and faults.
2. [Shadow paging](02_shadow_paging.ipynb): shadow pages built on faults, the page hash, the rmap.
3. [The shadow page role](03_mmu_page_role.ipynb): why one guest table can have several shadows.
4. [Lazy gfns](04_lazy_gfns.ipynb): the 2010 change, gfns computed for direct pages.
5. [Write protection](05_write_protection.ipynb): emulated guest PTE writes, zaps and flooding.
6. [Unsync pages](06_unsync.ipynb): `sync_page`, invlpg and CR3 loads.
7. [Memory savings](07_memory_savings.ipynb): what the 2010 change saves, up to 64 GiB.
8. [TDP versus shadow paging](08_tdp_vs_shadow.ipynb): walks against exits, under a cost model.
9. [The lab](09_lab.ipynb): every exercise for your own student id, graded.
""")
lesson.recap("""
A shadow page table composes the guest's tables with KVM's memslots, so the CPU goes from gva to
hpa in one walk; keeping it right is what write protection, the rmap and unsync pages are for.
The 2010 change noticed that a direct shadow page needs no array of gfns: its gfns follow from
its own gfn and level.
""")

if __name__ == "__main__":
    lesson.write()
