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

Each cell is `kvmmu / kvm` under the kernel's stat names (`pages_4k` is compared with kvmmu's
present leaf sptes, since kvmmu's own `pages` counts shadow pages):
""")
code("""
B.counter_matrix(capture)
""")
md("""
Where they differ, the kernel does something kvmmu does not model (yet): it prefetches sptes,
zaps an spte that an emulated guest PTE write hits instead of updating it, counts a fault whose
leaf was already right as spurious, and counts every emulated store once indirect shadow pages
exist (on this backend every guest-kernel store is emulated):
""")
code("""
B.differences(capture)[["counter", "program", "kvmmu", "kvm", "kernel function"]]
""")
code("""
B.known_differences()[["counter", "kernel function", "programs"]]
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

In `table_edits`, kvmmu counts more `pf_fixed` than KVM. Which kernel counter took the others,
and how many were there? Check with `B.check_spurious(counter, count)`.
""")
code("""
B.check_spurious("pf_taken", 6)
""")


if __name__ == "__main__":
    lesson.write()
