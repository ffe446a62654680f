"""Build and execute notebooks/10_beside_kvm.ipynb.

Run ``python notebooks/build/build_10_beside_kvm.py``; it writes the notebook with its outputs.
The cell tagged ``nbval-ignore-output`` runs on this machine's KVM when ``/dev/kvm`` is usable
(else it shows the stored run), so nbval does not compare what it prints.
"""

from lesson import Lesson

lesson = Lesson("10_beside_kvm.ipynb")
md, code = lesson.md, lesson.code


md("""
# 10. kvmmu beside your kernel's KVM

Every lesson so far read kvmmu's counters as if they were the kernel's. This one checks: the same
guest programs ran on a real KVM with shadow paging (this project's machines) and on kvmmu, and
the results were stored in `kvmmu/data/kvm-captures/`, so this notebook reads the same on a laptop
without `/dev/kvm`.

By the end you will be able to:
- say what a guest program needs to run on KVM's shadow tables (a CPL-3 process under a tiny
  kernel), and what is compared;
- read the counters side by side and name the kernel function behind each difference;
- check that kvmmu today still agrees with the stored real run.
""")
code("""
from kvmmu.host.program import load_host_capture
from kvmmu.teaching.lessons import l10_beside_kvm as B

capture = load_host_capture("kvm_pvm")
B.host_table(capture)
""")
md("""
## One program, two machines

A program is a list of operations: loads, stores and fetches at CPL 3, guest page-table edits
made by the guest kernel, `invlpg`, CR3 switches, dirty logging, a read-only memslot. On the host
it is assembled into a user process (CPL-0 code is emulated on this backend, so only a process
reaches the shadow tables); on kvmmu the same operations go to `Vcpu`. Here is the fault program:
""")
code("""
B.program_table("faults")
""")
md("""
## What the guest saw

Values read, faults (CR2 and error code), the guest's accessed and dirty bits and the dirty
logs are what a guest can observe. They agree everywhere:
""")
code("""
summary = B.behaviour_summary(capture)
assert summary["all equal"].all()
summary
""")
code("""
capture.comparisons["faults"].faults
""")
md("""
## What each MMU counted

Each cell is `kvmmu / kvm` under the kernel's stat names: faults taken, fixed, spurious,
emulated and reflected into the guest, shadow pages made and zapped, present leaf sptes
(`pages_4k`), `invlpg`s. (kvmmu's count of shadow pages is `shadow_pages`: the kernel exports no
such stat.)
""")
code("""
B.counter_matrix(capture)
""")
md("""
One counter differs, and the cause is this host's backend, not kvmmu: `kvm_pvm` emulates all
guest CPL-0 code, so every store of the tiny guest kernel (its log, its stack, exception frames)
is an emulated write, and `kvm_mmu_track_write` counts each one in `mmu_pte_write` once indirect
shadow pages exist. kvmmu counts the same way, but its guest kernel is not emulated. On a host
running the kernel natively (`kvm_intel ept=0`) only the stores that fault on a write-protected
table are emulated:
""")
code("""
B.differences(capture)[["counter", "program", "kvmmu", "kvm", "kernel function"]]
""")
code("""
B.known_differences()[["counter", "kernel function", "programs"]]
""")
md("""
## What the kernel adds to the 2010 design

Two things made the other counters equal. After a fault, KVM maps the rest of the faulting spte's
group of 8 (`direct_pte_prefetch` for a direct page, `FNAME(pte_prefetch)` from the guest's
accessed PTEs for an indirect one), so a guest 2 MiB page on 4 KiB host pages faults once per 8
pages. And an emulated store to a guest PTE zaps its spte (`kvm_mmu_track_write`); the 2010
kernel refreshed it in place (`mmu_pte_write_new_pte`), which saves the next fault. kvmmu has
both as `Vm` switches; the defaults are today's kernel. Each column below is one setting:
""")
code("""
B.what_the_kernel_adds(capture)
""")
md("""
## kvmmu today against the stored run

`B.replay` runs every program on kvmmu now and checks it against the stored KVM column:
behaviour, and every counter without a known difference.
""")
code("""
replay = B.replay(capture)
assert replay["behaviour"].all() and replay["counters"].all()
replay
""")
md("""
## Live, where you have KVM

With a usable `/dev/kvm` (Linux, the kvm group) the next cell runs the program on your
kernel; otherwise it shows the stored run and says why. On an Intel host, `kvm_intel ept=0`
gives you shadow paging (see the README, "Beside the real KVM").
""")
code("""
live, source = B.live_or_stored("table_edits")
print("from", source)
live.counters.loc[["pf_fixed", "pf_spurious", "mmu_pde_zapped", "mmu_flooded"], ["kvmmu", "kvm"]]
""")
lesson.cells[-1].metadata["tags"] = ["nbval-ignore-output"]
md("""
## Exercise

In `table_edits`, some faults fixed nothing: after a PDE was zapped, they only relinked the child
page and found the leaf spte already right. Which kernel counter took them, and how many were
there? Check with `B.check_spurious(counter, count)`.
""")
code("""
B.check_spurious("pf_taken", 6)
""")


if __name__ == "__main__":
    lesson.write()
