"""Build and execute notebooks/06_unsync.ipynb: ``python notebooks/build/build_06_unsync.py``."""
# ruff: noqa: E501  (markdown cell prose is wrapped by its own width, inside string literals)

from lesson import Lesson

lesson = Lesson("06_unsync.ipynb")
md, code = lesson.md, lesson.code


md("""
# 6. Unsync pages and `sync_page`

Lesson 5 paid an exit for every store to a guest page table. Guests rewrite their last-level
tables all the time (every `mmap`, every copy-on-write fault), so KVM lets a last-level table go
*unsync*: the guest writes it freely and the shadow page keeps the old sptes for a while. That
is safe because x86 already lets the old translation live on: until the guest flushes it (with
INVLPG or a CR3 load) the TLB may still hold it. KVM resynchronises exactly at those flushes.

By the end you will be able to:
- say why an unsync spte is allowed to be stale, and until when;
- trace an edit, an access, an INVLPG and a CR3 reload through the guest PTE, the spte, the TLB and
  the unsync flag;
- explain how `sync_page` uses `get_gfn` to drop an spte whose guest PTE now names another frame;
- predict what each access returns in a sequence of such actions.
""")
code("""
from kvmmu.teaching import ui
from kvmmu.teaching.lessons import l06_unsync as lesson
from kvmmu.kvm.sync import sync_spte
import inspect
""")
md("""
## Edit, and the old translation stays visible

`lesson.sync_run(actions)` replays a list of actions on a fresh 4-level guest that maps `DATA_GVA`
to the first of `lesson.SYNC_FRAMES` and has read it once. An *edit* is a guest store, through the
guest's own mapping of its page table, that points the PTE at the next frame. Right after the
edit, the guest PTE says one thing and the spte and the TLB another:
""")
code("""
lesson.sync_view(["edit", "access"])
""")
code("""
t = lesson.sync_run(["edit", "access"])
assert t.loc[1, "unsync"] and t.loc[1, "guest PTE ->"] != t.loc[1, "spte ->"]
assert t.loc[2, "access returns"] == f"{lesson.SYNC_FRAMES[0]:#x}"   # still the old frame
""")
md("""
The edit did fault once: the table was write-protected, and the fault handler chose to unsync
the page (`kvm_unsync_page`) rather than emulate. The spte of the window became writable, so
later edits of this table cost nothing. The access after the edit returns the *old* frame, which
is allowed: the guest has not flushed its TLB yet.

## INVLPG syncs one spte

INVLPG for the address syncs the spte behind it in every unsync page on its path
(`FNAME(sync_spte)`). Here is the rule that ties it to the seed change: the spte is dropped
when the guest PTE now names another gfn than the one recorded for the spte, and the recorded
gfn is read through `get_gfn`:
""")
code("""
source = inspect.getsource(sync_spte).splitlines()
where = next(n for n, line in enumerate(source) if "sp.get_gfn(index)" in line)
print("\\n".join(source[where : where + 3]))
""")
code("""
t = lesson.sync_run(["edit", "invlpg", "access"])
t
""")
code("""
assert t.loc[2, "spte ->"] == "-" and t.loc[2, "TLB ->"] == "-"
assert t.loc[3, "access returns"] == f"{lesson.SYNC_FRAMES[1]:#x}"
assert t.loc[3, "unsync"]        # the page itself stays unsync
""")
md("""
After INVLPG the spte is gone, so the next access faults and the fault handler builds a fresh
spte from the new guest PTE. The page stays unsync: INVLPG only vouches for one address.

## A CR3 load syncs the whole page

A MOV to CR3 flushes the (non-global) TLB, and KVM answers with `kvm_mmu_sync_roots`: every
unsync page reachable from the root is write-protected again and synced with `sync_page`.
""")
code("""
t = lesson.sync_run(["edit", "cr3", "access"])
t
""")
code("""
assert not t.loc[2, "unsync"] and t.loc[3, "access returns"] == f"{lesson.SYNC_FRAMES[1]:#x}"
""")
md("""
## Play: any order you like

Press the buttons in any order. The table shows, after each action, what the access returned,
the frame in the guest PTE, the frame the spte maps (through `get_gfn`), the frame in the TLB,
and the unsync flag. Try: *edit, access, access*; then *edit, invlpg*; then *edit, edit, cr3*.
First a static copy of the default state, with the sequence `edit, access` (printed once: it does not follow the widget), then the live widget:
""")
code("""
display(lesson.sync_view(["edit", "access"]))
lesson.make_sync_widget(("edit", "access"))
""")
md("""
## Exercises

Predict the gpa of every access in a generated sequence. A deliberately wrong answer first:
""")
code("""
p = lesson.sync_problem(seed=4)
p
""")
code("""
lesson.check_sync(p, [lesson.SYNC_FRAMES[0]] * p.actions.count("access"))
""")
md("Your seed, your answer (one gpa per access, in order):")
code("""
p = lesson.sync_problem(seed=2024)
p
""")
code("""
answer = [0x0] * p.actions.count("access")  # your answer
lesson.check_sync(p, answer)
""")
md("""
To think about: a guest that relies on a *global* translation surviving a CR3 load (CR4.PGE)
would see it survive on real hardware but not under KVM's shadow paging, which never sets G in
sptes. Why is that still correct x86 behaviour? (See the `kvmmu.kvm.vcpu` module docstring.)
""")

lesson.recap("""
A leaf shadow page may go unsync: the guest writes its table without exits, and KVM syncs the
page's sptes only where x86 lets a stale translation be used no longer: an INVLPG syncs that
gva's spte, a CR3 load every unsync page under the root. Until then the guest may see the old
translation, as it could on real hardware with a stale TLB entry.
""")

if __name__ == "__main__":
    lesson.write()
