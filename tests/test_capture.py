"""The walker against a real kernel: the page tables of booted Linux guests, captured under QEMU.

Each capture in ``kvmmu/data/linux-guest/`` holds the page-table pages reachable from CR3 and
QEMU's own ``info tlb`` (every present leaf) and ``info mem`` (runs of equal rights) as the answer
key. Every difference between the walker and QEMU is a failure.

All walks here pass ``set_ad=False``: a read walk would otherwise set accessed bits in the
captured tables, and ``info tlb`` prints the A and D bits of every leaf, which are compared
exactly. The walks are supervisor reads (CPL=0, with RFLAGS.AC set so that SMAP, where a
capture has it, does not hide user pages): ``info tlb`` and ``info mem`` list every mapping,
kernel and user, whatever the CPL at the stop.
"""

from __future__ import annotations

import bisect
import functools
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from kvmmu.errors import KvmmuError
from kvmmu.hw.capture import (
    Capture,
    CaptureError,
    CaptureView,
    MissingCaptureError,
    list_captures,
    load_capture,
    parse_info_mem,
    parse_info_tlb,
    ptdump,
    qemu_tlb_fields,
)
from kvmmu.hw.walk import CpuState, GeneralProtection, PageFault, WalkResult, walk
from kvmmu.hw.x86 import PAGE_SHIFT, PAGE_SIZE, Acc, Access, PagingMode, PfErr, Rflags, canonicalize

EXPECTED = {"x86_64-4level": 4, "x86_64-4level-pti": 4, "x86_64-5level": 5}
CAPTURES = sorted(EXPECTED)
VIEWS = [("x86_64-4level", "user"), ("x86_64-4level-pti", "user")]
VIEWS += [("x86_64-4level-pti", "kernel"), ("x86_64-5level", "user")]
# QEMU 7.2 prints nothing for a 5-level "info mem" (see the capture's notes), so it is not kept.
VIEWS_WITH_INFO_MEM = [v for v in VIEWS if v[0] != "x86_64-5level"]

PTI_USER_PGTABLE_BIT = 1 << 12  # arch/x86/include/asm/pgtable_types.h
DIRECT_MAP_4LEVEL = (0xFFFF_8880_0000_0000, 0xFFFF_C880_0000_0000)  # page_offset_base, 64 TiB


@functools.cache
def capture(name: str) -> Capture:
    return load_capture(name)


def view_of(name: str, view: str) -> CaptureView:
    return capture(name).views[view]


@functools.cache
def dump_of(name: str, view: str) -> pd.DataFrame:
    return ptdump(capture(name).memory, view_of(name, view).cpu)


def supervisor(cpu: CpuState) -> CpuState:
    """The captured registers at CPL=0 with RFLAGS.AC: a read that no right forbids."""
    return replace(cpu, cpl=0, rflags=cpu.rflags | int(Rflags.AC))


def va_bits(cpu: CpuState) -> int:
    return 57 if cpu.mode is PagingMode.LEVEL5 else 48


def leaf_extents(name: str, view: str) -> list[tuple[int, int, int]]:
    """(start, end, index) of every leaf, in the truncated (non-canonical) address order."""
    dump = dump_of(name, view)
    bits = va_bits(view_of(name, view).cpu)
    low = (1 << bits) - 1
    return sorted(
        (gva & low, (gva & low) + size, i)
        for i, (gva, size) in enumerate(
            zip(dump.gva.tolist(), dump.page_size.tolist(), strict=True)
        )
    )


# --------------------------------------------------------------------------------------------
# The data and the loader
# --------------------------------------------------------------------------------------------


def test_every_expected_capture_is_present() -> None:
    assert set(EXPECTED) <= set(list_captures())


@pytest.mark.parametrize("name", CAPTURES)
def test_capture_is_a_user_stop_in_the_expected_mode(name: str) -> None:
    """The vCPU was stopped in user mode (CPL=3), in 4- or 5-level paging as the name says."""
    cap = capture(name)
    expected = PagingMode.LEVEL5 if EXPECTED[name] == 5 else PagingMode.LEVEL4
    assert cap.cpu.mode is expected
    assert cap.cpu.cpl == 3
    assert cap.metadata["paging_levels"] == EXPECTED[name]
    assert cap.cpu.maxphyaddr == cap.metadata["maxphyaddr"]
    for view in cap.views.values():  # QEMU's own register dump names the view's CR3
        assert f"CR3={view.cpu.cr3:016x}" in view.info_registers


@pytest.mark.parametrize("name", CAPTURES)
def test_capture_keeps_only_table_pages(name: str) -> None:
    """A few hundred KB of tables at most: never a RAM dump."""
    cap = capture(name)
    assert 0 < len(cap.table_gpas) < 512
    assert len(cap.table_gpas) * PAGE_SIZE < 2 << 20
    assert all(gpa % PAGE_SIZE == 0 for gpa in cap.table_gpas)


def test_pti_capture_has_a_user_and_a_kernel_cr3() -> None:
    """PTI: the user PGD is the kernel PGD's upper 4 KiB half (PTI_USER_PGTABLE_BIT = 12)."""
    cap = capture("x86_64-4level-pti")
    assert cap.kernel_cr3 is not None
    assert cap.cpu.cr3 & PTI_USER_PGTABLE_BIT
    assert cap.kernel_cr3 == cap.cpu.cr3 & ~PTI_USER_PGTABLE_BIT
    for name in ("x86_64-4level", "x86_64-5level"):
        assert capture(name).kernel_cr3 is None


def test_pti_user_tables_map_one_page_of_the_direct_map() -> None:
    """The point of PTI (Meltdown): user-mode tables leave out the kernel's direct map, all but
    one 4 KiB page per CPU, the per-CPU TSS whose sp2 slot the SYSCALL entry code uses as
    scratch space before it switches CR3 (``pti_clone_user_shared`` in ``arch/x86/mm/pti.c``).
    """

    def direct_map_leaves(view: str) -> list[int]:
        gvas = view_of("x86_64-4level-pti", view).info_tlb.gva.tolist()
        return [g for g in gvas if DIRECT_MAP_4LEVEL[0] <= g < DIRECT_MAP_4LEVEL[1]]

    user = direct_map_leaves("user")
    assert len(user) == 1  # -smp 1
    assert len(direct_map_leaves("kernel")) > 100
    cap = capture("x86_64-4level-pti")
    seen = [
        walk(cap.memory, supervisor(cap.views[v].cpu), user[0], set_ad=False) for v in cap.views
    ]
    assert all(isinstance(r, WalkResult) for r in seen)
    assert len({r.gpa for r in seen if isinstance(r, WalkResult)}) == 1  # the same TSS page


def test_missing_capture_says_what_exists_and_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(MissingCaptureError, match="x86_64-4level") as error:
        load_capture("no-such-capture")
    assert isinstance(error.value, KvmmuError)
    with pytest.raises(MissingCaptureError, match=r"capture_linux_guest\.py"):
        load_capture("x86_64-4level", data_dir=tmp_path)
    assert list_captures(tmp_path / "absent") == []


def test_a_garbled_monitor_line_is_an_error_not_a_skip() -> None:
    with pytest.raises(CaptureError, match="line 2"):
        parse_info_tlb("0000000000400000: 000000000330e000 X---A--U-\nnonsense\n")
    with pytest.raises(CaptureError, match="line 1"):
        parse_info_mem("0000000000400000-00000000004f0000 ur-\n")
    good = "0000000000400000: 000000000330e000 X---A--U-"
    with pytest.raises(CaptureError, match="line 4"):  # blank lines count, as in an editor
        parse_info_tlb(f"{good}\n\n  {good}  \n{good} trailing\n{good}\n")
    with pytest.raises(CaptureError, match="line 1"):  # two lines run together
        parse_info_tlb(good + good)


def test_monitor_lines_parse_to_exact_values() -> None:
    tlb = parse_info_tlb(
        "ffffffff81000000: 0000000001000000 --PDA---W\n"
        "\n 00007ffc0000f000: 00000000ffff0000 X-------- \n"
    )
    assert list(tlb.gva) == [0xFFFF_FFFF_8100_0000, 0x7FFC_0000_F000]
    assert list(tlb.gpa) == [0x100_0000, 0xFFFF_0000]
    assert list(tlb["flags"]) == ["--PDA---W", "X--------"]
    assert list(tlb.ps) == [True, False] and list(tlb.xd) == [False, True]
    assert list(tlb.writable) == [True, False] and list(tlb.dirty) == [True, False]
    mem = parse_info_mem("ffffffffff600000-0000000000000000 0000000000a00000 ur-\n")
    assert list(mem.start) == [0xFFFF_FFFF_FF60_0000] and list(mem.end) == [0]
    assert list(mem["size"]) == [0xA0_0000] and list(mem.rights) == ["ur-"]
    assert list(mem.user) == [True] and list(mem.writable) == [False]


# --------------------------------------------------------------------------------------------
# The walker against QEMU's info tlb
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "view"), VIEWS)
def test_captured_tables_are_exactly_the_tables_qemu_walked(name: str, view: str) -> None:
    """ptdump over the captured pages lists the same leaves as ``info tlb``, in the same order."""
    key = view_of(name, view)
    dump = dump_of(name, view)
    assert len(dump) == len(key.info_tlb)
    assert dump.gva.tolist() == key.info_tlb.gva.tolist()
    assert dump.gpa.tolist() == key.info_tlb.gpa.tolist()
    assert dump["flags"].tolist() == key.info_tlb["flags"].tolist()


@pytest.mark.parametrize(("name", "view"), VIEWS)
def test_walker_reproduces_every_info_tlb_line(name: str, view: str) -> None:
    """Walking each line's address gives QEMU's physical address, flags and page size.

    The leaf entry is compared as QEMU prints it (address masked by page size, flags
    ``XGPDACTUW``, PAT not shown as PS) and also in full against the captured entry; the page
    size is 4 KiB exactly when QEMU prints no ``P``, and otherwise the size of the level at
    which the captured tables hold the leaf. A large page is also walked at its last byte.
    """
    cap = capture(name)
    key = view_of(name, view)
    cpu = supervisor(key.cpu)
    dump = dump_of(name, view)
    failures: list[str] = []
    rows = zip(
        key.info_tlb.gva.tolist(),
        key.info_tlb.gpa.tolist(),
        key.info_tlb["flags"].tolist(),
        dump.page_size.tolist(),
        dump.pte.tolist(),
        strict=True,
    )
    for gva, gpa, flags, size, pte in rows:
        result = walk(cap.memory, cpu, gva, Access.READ, set_ad=False)
        if not isinstance(result, WalkResult):
            failures.append(f"{gva:#x}: info tlb {gpa:#x} {flags}, walker {result}")
            continue
        got = (result.gpa, *qemu_tlb_fields(result.pte, result.level), result.page_size)
        want = (gpa, gpa, flags, size)
        if got != want or result.pte != pte or (size == PAGE_SIZE) == ("P" in flags):
            failures.append(
                f"{gva:#x}: info tlb gpa {gpa:#x} {flags} size {size:#x} entry {pte:#x}; "
                f"walker gpa {result.gpa:#x} {got[2]} size {result.page_size:#x} "
                f"entry {result.pte:#x} at level {result.level}"
            )
        if size > PAGE_SIZE:
            last = walk(cap.memory, cpu, gva + size - 1, Access.READ, set_ad=False)
            if not isinstance(last, WalkResult) or last.gpa != gpa + size - 1:
                failures.append(
                    f"{gva + size - 1:#x}: expected gpa {gpa + size - 1:#x}, got {last}"
                )
    assert not failures, f"{len(failures)} differences, first ones:\n" + "\n".join(failures[:20])


@pytest.mark.parametrize(("name", "view"), VIEWS)
def test_walker_finds_no_leaf_that_info_tlb_lacks(name: str, view: str) -> None:
    """Beside every leaf and at the start of every top-level slot, an address that QEMU lists
    under no leaf is a not-present fault for the walker: it maps nothing QEMU does not."""
    cap = capture(name)
    key = view_of(name, view)
    cpu = supervisor(key.cpu)
    bits = va_bits(cpu)
    extents = leaf_extents(name, view)
    starts = [e[0] for e in extents]

    def covered(address: int) -> bool:
        i = bisect.bisect_right(starts, address) - 1
        return i >= 0 and extents[i][0] <= address < extents[i][1]

    probes = {start - PAGE_SIZE for start, _, _ in extents} | {end for _, end, _ in extents}
    probes |= {slot << (bits - 9) for slot in range(512)}
    failures: list[str] = []
    checked = 0
    for address in sorted(probes):
        if not 0 <= address < 1 << bits or covered(address):
            continue
        gva = canonicalize(address, bits)
        result = walk(cap.memory, cpu, gva, Access.READ, set_ad=False)
        checked += 1
        if isinstance(result, GeneralProtection):
            failures.append(f"{gva:#x}: canonical, but the walker raised #GP")
        elif not isinstance(result, PageFault) or result.error_code & PfErr.PRESENT:
            failures.append(f"{gva:#x}: QEMU lists no leaf, the walker gives {result}")
    assert checked > 100
    assert not failures, f"{len(failures)} differences, first ones:\n" + "\n".join(failures[:20])


# --------------------------------------------------------------------------------------------
# The walker's rights against QEMU's info mem
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "view"), VIEWS_WITH_INFO_MEM)
def test_walker_rights_reproduce_info_mem(name: str, view: str) -> None:
    """The walker's combined U/S and R/W rights, merged into runs the way QEMU's
    ``mem_print`` merges them (adjacent in the truncated address space, equal rights), are
    exactly the ranges of ``info mem``."""
    cap = capture(name)
    key = view_of(name, view)
    assert key.info_mem is not None
    cpu = supervisor(key.cpu)
    bits = va_bits(cpu)
    runs: list[tuple[int, int, bool, bool]] = []
    for start, end, _ in leaf_extents(name, view):
        result = walk(cap.memory, cpu, canonicalize(start, bits), Access.READ, set_ad=False)
        assert isinstance(result, WalkResult), f"{canonicalize(start, bits):#x}: {result}"
        user, writable = bool(result.access & Acc.USER), bool(result.access & Acc.WRITE)
        if runs and runs[-1][1] == start and runs[-1][2:] == (user, writable):
            runs[-1] = (runs[-1][0], end, user, writable)
        else:
            runs.append((start, end, user, writable))
    got = [(canonicalize(s, bits), e - s, u, w) for s, e, u, w in runs]
    want = list(
        zip(
            key.info_mem.start.tolist(),
            key.info_mem["size"].tolist(),
            key.info_mem.user.tolist(),
            key.info_mem.writable.tolist(),
            strict=True,
        )
    )
    differences = [
        f"walker {g!r} vs info mem {w!r}" for g, w in zip(got, want, strict=False) if g != w
    ]
    assert len(got) == len(want), f"walker {len(got)} runs, info mem {len(want)}"
    assert not differences, "\n".join(d for d in differences[:20])


@pytest.mark.parametrize("name", CAPTURES)
def test_linux_presets_accessed_bits_so_a_walk_changes_no_entry(name: str) -> None:
    """Linux builds kernel mappings with A (and D) already set (``__PAGE_KERNEL``, and
    ``_KERNPG_TABLE`` for tables) and marks a user page young when it faults it in, so a walk
    that sets A/D (``set_ad=True``, the default) rewrites no entry of these tables. The other
    tests still walk with ``set_ad=False`` so that this fact is checked here, not assumed."""
    fresh = load_capture(name)  # not the shared copy: this walk may write
    before = {gpa: fresh.memory.page(gpa >> PAGE_SHIFT).copy() for gpa in fresh.table_gpas}
    for view in fresh.views.values():
        cpu = supervisor(view.cpu)
        for gva in view.info_tlb.gva.tolist():
            assert isinstance(walk(fresh.memory, cpu, gva, Access.READ), WalkResult)
    changed = [
        f"{gpa:#x}"
        for gpa, page in before.items()
        if (fresh.memory.page(gpa >> PAGE_SHIFT) != page).any()
    ]
    assert not changed, f"a read walk set A bits in the table pages at {changed[:10]}"


def busy_process_maps(console: str) -> list[tuple[int, int, str]]:
    """The busy process's /proc/PID/maps, which the guest's init printed on the console."""
    block = console.split("KVMMU-BUSY-MAPS begin\n")[-1].split("KVMMU-BUSY-MAPS end")[0]
    maps = []
    for line in block.splitlines():
        span, perms = line.split()[:2]
        start, end = (int(x, 16) for x in span.split("-"))
        maps.append((start, end, perms))
    return maps


@pytest.mark.parametrize("name", CAPTURES)
def test_the_stopped_user_process_can_run_its_next_instruction(name: str) -> None:
    """At the stop, RIP lies in the busy process's executable text (``r-xp`` in its maps) and
    RSP in its stack, and at the captured CPL=3 the walker grants exactly that: a user fetch at
    RIP and a user write at RSP succeed, and a user read of the kernel's text faults on U/S."""
    cap = capture(name)
    rip, rsp = int(cap.metadata["registers"]["rip"], 16), int(cap.metadata["registers"]["rsp"], 16)
    maps = busy_process_maps(cap.console)
    assert any(s <= rip < e and p.startswith("r-x") for s, e, p in maps)
    assert any(s <= rsp < e and p.startswith("rw") for s, e, p in maps)
    fetch = walk(cap.memory, cap.cpu, rip, Access.FETCH, set_ad=False)
    push = walk(cap.memory, cap.cpu, rsp - 8, Access.WRITE, set_ad=False)
    assert isinstance(fetch, WalkResult) and fetch.access & Acc.USER and fetch.access & Acc.EXEC
    assert isinstance(push, WalkResult) and push.access & Acc.USER and push.access & Acc.WRITE
    kernel_text = 0xFFFF_FFFF_8100_0000  # __START_KERNEL_map + 16 MiB, fixed by nokaslr
    peek = walk(cap.memory, cap.cpu, kernel_text, Access.READ, set_ad=False)
    assert isinstance(peek, PageFault)
    if name == "x86_64-4level-pti":
        # not even present: of the kernel image the user tables map one 2 MiB page, the
        # entry text (pti_clone_entry_text), and with pti=on no more (pti_kernel_image_global_ok)
        assert peek.error_code == PfErr.USER
        image = cap.info_tlb[cap.info_tlb.gva >= 0xFFFF_FFFF_8000_0000]
        assert image["flags"].tolist() == ["-GPDA----"]
        kernel = walk(cap.memory, supervisor(cap.views["kernel"].cpu), kernel_text, set_ad=False)
        assert isinstance(kernel, WalkResult)
    else:  # mapped, but supervisor-only: a protection fault at CPL=3
        assert peek.error_code == PfErr.PRESENT | PfErr.USER


def test_ptdump_of_a_self_referencing_root_is_bounded_and_says_so() -> None:
    """Issue 13, bug 6: a PML4 whose entries all point at itself has 512**4 leaves. ptdump
    counts them with each table memoised, lists at most ``limit`` and flags the cycle."""
    from kvmmu.hw.memory import GuestMemory
    from kvmmu.hw.walk import cpu_for_mode

    memory = GuestMemory(1 << 20)
    for index in range(512):
        memory.write(0x1000 + 8 * index, 0x1000 | 7)
    frame = ptdump(memory, cpu_for_mode(PagingMode.LEVEL4, cr3=0x1000), limit=300)
    assert len(frame) == 300 and set(frame["gpa"].tolist()) == {0x1000}
    assert frame.attrs == {"leaves": 512**4, "elided": 512**4 - 300, "cyclic": True}


def test_ptdump_of_a_tree_is_complete_and_acyclic() -> None:
    """An ordinary capture: nothing elided, no cycle."""
    frame = dump_of("x86_64-4level-pti", "user")
    assert frame.attrs["elided"] == 0 and not frame.attrs["cyclic"]
    assert frame.attrs["leaves"] == len(frame)
