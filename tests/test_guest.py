"""Specifications of the guest page-table builder, ``kvmmu/hw/guest.py``.

The walker (``kvmmu.hw.walk.walk``) is the judge throughout: whatever the builder writes must
translate, fault and report rights exactly as the walker sees them.
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvmmu.errors import AddressError, KvmmuError, MappingError, MemslotError, ModeError
from kvmmu.hw.guest import (
    INFO_MEM_COLUMNS,
    MAPPING_COLUMNS,
    TABLE_ENTRY_BITS,
    GuestPageTables,
    format_size,
)
from kvmmu.hw.memory import GuestMemory, MemslotFlag
from kvmmu.hw.walk import CpuState, PageFault, WalkResult, walk
from kvmmu.hw.x86 import Acc, Access, PagingMode, PfErr, Pte, describe_flags

K4, M2, M4, G1 = 1 << 12, 1 << 21, 1 << 22, 1 << 30
MB = 1 << 20
PAGING_MODES = [PagingMode.BITS32, PagingMode.PAE, PagingMode.LEVEL4, PagingMode.LEVEL5]
SIZES = {
    PagingMode.BITS32: (K4, M4),
    PagingMode.PAE: (K4, M2),
    PagingMode.LEVEL4: (K4, M2, G1),
    PagingMode.LEVEL5: (K4, M2, G1),
}
# an upper-half (kernel) address where the mode has one, else a high 32-bit one
HIGH_GVA = {
    PagingMode.BITS32: 0xC000_0000,
    PagingMode.PAE: 0xC000_0000,
    PagingMode.LEVEL4: 0xFFFF_8000_0000_0000,
    PagingMode.LEVEL5: 0xFF00_0000_0000_0000,
}
MODE_SIZES = [(mode, size) for mode in PAGING_MODES for size in SIZES[mode]]


def build(mode: PagingMode, memory_size: int = 8 * MB, **options: Any) -> GuestPageTables:
    return GuestPageTables(GuestMemory(memory_size), mode, **options)


def translate(pt: GuestPageTables, gva: int, access: Access = Access.READ, **cpu: Any) -> Any:
    """Walk without setting accessed/dirty bits, so checking never changes the tables."""
    return walk(pt.memory, pt.cpu(**cpu), gva, access, set_ad=False)


def gpa_of(pt: GuestPageTables, gva: int) -> int:
    result = translate(pt, gva)
    assert isinstance(result, WalkResult), result
    return result.gpa


def expected_access(writable: bool, user: bool, nx: bool) -> Acc:
    return Acc((Acc.WRITE if writable else 0) | (Acc.USER if user else 0) | (0 if nx else Acc.EXEC))


# --------------------------------------------------------------------------------------------
# Construction and registers
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", PAGING_MODES)
def test_cpu_registers_select_the_mode_and_point_cr3_at_the_root(mode: PagingMode) -> None:
    pt = build(mode)
    cpu = pt.cpu()
    assert isinstance(cpu, CpuState)
    assert cpu.mode is mode
    assert cpu.root_gpa == pt.cr3 == pt.tables[0] << 12


def test_default_table_pages_are_the_top_64_frames_of_the_lowest_memslot() -> None:
    pt = build(PagingMode.LEVEL4, 8 * MB)
    assert pt.pool.gfns == range(2048 - 64, 2048)
    assert pt.tables == [2048 - 64]  # the root, allocated at construction
    assert pt.pool.free_count == 63


def test_table_pages_come_from_the_range_given() -> None:
    pt = build(PagingMode.LEVEL4, table_gfns=range(0x100, 0x110))
    pt.map(0x1000, 0x1000)
    assert pt.tables == [0x100, 0x101, 0x102, 0x103]  # PML4, PDPT, PD, PT, lowest first


def test_pae_preallocates_four_page_directories_so_pdptes_never_change() -> None:
    # Linux's pgd_prepopulate_pmd: the CPU caches PDPTEs at CR3 load.
    pt = build(PagingMode.PAE)
    pdpt = pt.cr3
    stored = tuple(pt.memory.read(pdpt + 8 * i) for i in range(4))
    assert all(e & Pte.PRESENT for e in stored)
    assert pt.cpu().pdptes == stored
    pt.map(0xC000_0000, 0x2000)
    pt.unmap(0xC000_0000)
    assert pt.cpu().pdptes == stored
    assert len(pt.tables) == 5


def test_cpu_reloads_pae_pdptes_and_refuses_a_load_that_would_gp() -> None:
    pt = build(PagingMode.PAE)
    pdpte = pt.entry(0, 3)
    pt.set_entry(0, 3, 0)
    pdptes = pt.cpu().pdptes
    assert pdptes is not None and pdptes[0] == 0
    assert isinstance(translate(pt, 0x1000), PageFault)
    pt.set_entry(0, 3, pdpte | Pte.WRITABLE)  # R/W is reserved in a PAE PDPTE
    with pytest.raises(ModeError, match=r"#GP.*reserved"):
        pt.cpu()


def test_cpu_overrides_change_only_the_registers() -> None:
    pt = build(PagingMode.LEVEL4, smep=True)
    cpu = pt.cpu(cpl=3, wp=False, pkru=0xC)
    assert (cpu.cpl, cpu.pkru, cpu.cr3) == (3, 0xC, pt.cr3)
    assert not cpu.cr0 & (1 << 16)  # CR0.WP off
    assert cpu.cr4 & (1 << 20)  # SMEP from construction


def test_paging_off_has_registers_but_no_tables() -> None:
    pt = build(PagingMode.NONE)
    assert pt.cpu().mode is PagingMode.NONE
    assert pt.mappings().empty and pt.info_mem().empty
    with pytest.raises(ModeError, match="map: paging is off"):
        pt.map(0, 0)
    with pytest.raises(ModeError, match="unmap: paging is off"):
        pt.unmap(0)
    with pytest.raises(ModeError, match="protect: paging is off"):
        pt.protect(0, nx=True)


# --------------------------------------------------------------------------------------------
# map: every mode and page size translates to the right gpa
# --------------------------------------------------------------------------------------------


def test_page_sizes_follow_the_mode_and_features() -> None:
    for mode in PAGING_MODES:
        assert build(mode).page_sizes == SIZES[mode]
    assert build(PagingMode.BITS32, pse=False).page_sizes == (K4,)


@pytest.mark.parametrize(("mode", "size"), MODE_SIZES)
def test_every_mode_and_page_size_maps_to_the_gpa(mode: PagingMode, size: int) -> None:
    pt = build(mode)
    gva, gpa = HIGH_GVA[mode], 3 * size
    pt.map(gva, gpa, size)
    for offset in (0, 0x123, size - 1):
        result = translate(pt, gva + offset)
        assert isinstance(result, WalkResult)
        assert (result.gpa, result.page_size) == (gpa + offset, size)
    assert isinstance(translate(pt, gva + size), PageFault)


@pytest.mark.parametrize("mode", PAGING_MODES)
def test_size_may_be_given_by_name(mode: PagingMode) -> None:
    pt = build(mode)
    name = {K4: "4K", M2: "2M", M4: "4M", G1: "1G"}[SIZES[mode][-1]]
    pt.map(0, 0, name)
    assert pt.mappings()["size"].tolist() == [SIZES[mode][-1]]


@settings(max_examples=120)
@given(data=st.data())
def test_every_address_in_a_mapped_page_walks_to_the_matching_gpa(data: st.DataObject) -> None:
    mode = data.draw(st.sampled_from(PAGING_MODES))
    size = data.draw(st.sampled_from(SIZES[mode]))
    va_bits = mode.spec.va_bits
    page = data.draw(st.integers(0, (1 << (va_bits - 1)) // size - 1))
    gva = page * size
    if va_bits > 32 and data.draw(st.booleans()):  # upper canonical half
        gva = ((1 << 64) - (1 << (va_bits - 1))) + gva
    gpa_limit = 1 << (32 if mode is PagingMode.BITS32 and size == K4 else 40)
    gpa = data.draw(st.integers(0, gpa_limit // size - 1)) * size
    offset = data.draw(st.integers(0, size - 1))
    pt = build(mode, 1 * MB)
    pt.map(gva, gpa, size)
    assert gpa_of(pt, gva + offset) == gpa + offset


@pytest.mark.parametrize("mode", PAGING_MODES)
def test_length_maps_consecutive_pages(mode: PagingMode) -> None:
    pt = build(mode)
    size = SIZES[mode][-1] if mode.spec.va_bits == 32 else M2
    pt.map(0, 8 * size, size, length=3 * size)
    assert [gpa_of(pt, i * size + 5) for i in range(3)] == [(8 + i) * size + 5 for i in range(3)]
    assert isinstance(translate(pt, 3 * size), PageFault)


def test_32_bit_4mib_pages_reach_above_4gib_with_pse36() -> None:
    pt = build(PagingMode.BITS32, maxphyaddr=40)
    pt.map(0x0040_0000, 0x12_3440_0000 & ~(M4 - 1), M4)
    assert gpa_of(pt, 0x0040_0010) == 0x12_3440_0010 & ~(M4 - 1) | 0x10


def test_leaf_bits_are_the_ones_asked_for() -> None:
    pt = build(PagingMode.LEVEL4)
    pt.map(0x1000, 0x5000, user=True, global_=True, accessed=True, dirty=True, pwt=True, pcd=True)
    entry = pt.entry(0x1000, 1)
    assert entry == 0x5000 | Pte.PRESENT | Pte.WRITABLE | Pte.USER | Pte.GLOBAL | Pte.ACCESSED | (
        Pte.DIRTY | Pte.PWT | Pte.PCD
    )
    assert pt.mappings().loc[0, "flags"] == "-G-DACTUW"


def test_intermediate_entries_are_present_writable_user_so_the_leaf_decides() -> None:
    pt = build(PagingMode.LEVEL5)
    pt.map(0x1000, 0x5000, writable=False)
    for level in (5, 4, 3, 2):
        assert pt.entry(0x1000, level) & 0xFFF == TABLE_ENTRY_BITS
    assert translate(pt, 0x1000, cpl=3).error_code == PfErr.PRESENT | PfErr.USER


def test_protection_keys_go_into_4_and_5_level_leaves() -> None:
    pt = build(PagingMode.LEVEL4, pke=True)
    pt.map(0x1000, 0x5000, user=True, pkey=5)
    assert translate(pt, 0x1000).pkey == 5
    assert pt.mappings().loc[0, "pkey"] == 5
    denied = translate(pt, 0x1000, cpl=3, pkru=1 << 10)  # access-disable for key 5
    assert denied.error_code == PfErr.PRESENT | PfErr.USER | PfErr.PK


def test_remapping_the_same_size_replaces_the_leaf() -> None:
    pt = build(PagingMode.PAE)
    pt.map(0x20_0000, 0x40_0000, M2)
    pt.map(0x20_0000, 0x80_0000, M2, writable=False)
    assert gpa_of(pt, 0x20_0001) == 0x80_0001
    assert len(pt.mappings()) == 1 and not pt.mappings().loc[0, "writable"]


def test_a_large_page_may_replace_a_table_left_empty_by_raw_edits() -> None:
    pt = build(PagingMode.LEVEL4)
    pt.map(0x1000, 0x5000)
    pt.set_entry(0x1000, 1, 0)  # the PT is now empty but still linked
    tables = len(pt.tables)
    pt.map(0, 0x40_0000, M2)
    assert gpa_of(pt, 0x1000) == 0x40_1000
    assert len(pt.tables) == tables - 1


# --------------------------------------------------------------------------------------------
# unmap and protect
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "size"), MODE_SIZES)
def test_unmap_makes_the_page_fault_not_present(mode: PagingMode, size: int) -> None:
    pt = build(mode)
    before = pt.tables
    pt.map(HIGH_GVA[mode], size, size)
    pt.unmap(HIGH_GVA[mode])
    for access, code in ((Access.READ, 0), (Access.WRITE, PfErr.WRITE)):
        fault = translate(pt, HIGH_GVA[mode] + size // 2, access)
        assert isinstance(fault, PageFault)
        assert fault.error_code == code  # P=0: not present
    assert pt.tables == before  # the tables it needed are freed again
    assert pt.mappings().empty


def test_unmap_frees_only_tables_left_empty() -> None:
    pt = build(PagingMode.LEVEL4)
    pt.map(0x1000, 0x1000)
    pt.map(0x2000, 0x2000)
    pt.map(0x4000_0000, 0x3000)  # same PDPT, another PD
    tables = pt.tables
    pt.unmap(0x1000)
    assert pt.tables == tables
    pt.unmap(0x2000)
    assert len(pt.tables) == len(tables) - 2  # its PT and PD; the PDPT still holds a PD
    assert gpa_of(pt, 0x4000_0000) == 0x3000


def test_unmap_a_range_of_mixed_page_sizes() -> None:
    pt = build(PagingMode.LEVEL4)
    pt.map(0, 0, M2)
    pt.map(M2, M2, length=M2)  # 512 small pages
    pt.unmap(0, 2 * M2)
    assert pt.mappings().empty
    assert len(pt.tables) == 1


def test_unmap_by_default_takes_the_whole_page_at_gva() -> None:
    pt = build(PagingMode.LEVEL5)
    pt.map(G1, 0, G1)
    pt.unmap(G1)
    assert isinstance(translate(pt, G1), PageFault)


def test_protect_read_only_makes_a_write_fault_with_p_and_w() -> None:
    pt = build(PagingMode.LEVEL4)
    pt.map(0x1000, 0x5000)
    pt.protect(0x1000, writable=False)
    fault = translate(pt, 0x1000, Access.WRITE)
    assert isinstance(fault, PageFault)
    assert fault.error_code == PfErr.PRESENT | PfErr.WRITE
    assert isinstance(translate(pt, 0x1000, Access.WRITE, wp=False), WalkResult)  # SDM 4.6
    pt.protect(0x1000, writable=True)
    assert isinstance(translate(pt, 0x1000, Access.WRITE), WalkResult)


def test_protect_user_and_nx_change_who_may_read_and_fetch() -> None:
    pt = build(PagingMode.PAE)
    pt.map(0, 0, M2, length=2 * M2)
    assert translate(pt, 0x10, cpl=3).error_code == PfErr.PRESENT | PfErr.USER
    pt.protect(0, 2 * M2, user=True, nx=True)
    assert isinstance(translate(pt, M2 + 0x10, cpl=3), WalkResult)
    assert translate(pt, 0x10, Access.FETCH).error_code == PfErr.PRESENT | PfErr.FETCH


def test_protect_keeps_the_address_and_the_accessed_and_dirty_bits() -> None:
    pt = build(PagingMode.BITS32)
    pt.map(0x1000, 0x7000, accessed=True, dirty=True, global_=True)
    before = pt.entry(0x1000, 1)
    pt.protect(0x1000, writable=False, user=True)
    assert pt.entry(0x1000, 1) == (before & ~Pte.WRITABLE) | Pte.USER


# --------------------------------------------------------------------------------------------
# Raw entries
# --------------------------------------------------------------------------------------------


def test_a_supervisor_pde_makes_its_leaves_supervisor() -> None:
    pt = build(PagingMode.LEVEL4)
    pt.map(0x1000, 0x5000, user=True)
    pt.set_entry(0x1000, 2, pt.entry(0x1000, 2) & ~Pte.USER)
    row = pt.mappings().iloc[0]
    assert not row["user"] and row["flags"] == "-------UW"[:-2] + "-W"
    assert translate(pt, 0x1000, cpl=3).error_code == PfErr.PRESENT | PfErr.USER
    assert pt.info_mem()["prot"].tolist() == ["-rwx"]


def test_set_entry_allocates_missing_tables_and_entry_reads_it_back() -> None:
    pt = build(PagingMode.LEVEL4)
    pt.set_entry(0x7000, 1, 0x9000 | Pte.PRESENT)
    assert pt.entry(0x7000, 1) == 0x9000 | Pte.PRESENT
    assert gpa_of(pt, 0x7008) == 0x9008


def test_entries_with_reserved_bits_map_nothing_as_the_walker_sees() -> None:
    pt = build(PagingMode.LEVEL4, nxe=False)
    pt.map(0x1000, 0x5000)
    pt.set_entry(0x1000, 1, pt.entry(0x1000, 1) | Pte.XD)  # XD is reserved without NXE
    assert translate(pt, 0x1000).error_code == PfErr.PRESENT | PfErr.RSVD
    assert pt.mappings().empty


def test_on_write_sees_every_store_to_a_table() -> None:
    memory = GuestMemory(4 * MB)
    memory.slots.set_flags(0, MemslotFlag.LOG_DIRTY_PAGES)
    seen: list[tuple[int, bytes]] = []
    pt = GuestPageTables(memory, PagingMode.BITS32, on_write=lambda g, d: seen.append((g, d)))
    pt.map(0x40_1000, 0x5000)
    pde_gpa, pte_gpa = pt.cr3 + 4 * 1, pt.tables[1] * 4096 + 4 * 1
    assert [g for g, _ in seen] == [pde_gpa, pte_gpa]
    assert seen[1][1] == memory.read_bytes(pte_gpa, 4)
    assert memory.slots.get(0).dirty_bitmap[pt.tables].all()


def test_table_pages_are_cleared_before_use_and_the_clearing_is_reported() -> None:
    memory = GuestMemory(4 * MB)
    region = range(0x200, 0x210)
    stale = (region.start + 1) << 12  # the next table page holds leftovers
    memory.write(stale + 8 * 7, G1 | Pte.PAGE_SIZE | Pte.PRESENT)  # a 1 GiB leaf
    seen: list[int] = []
    pt = GuestPageTables(
        memory, PagingMode.LEVEL4, table_gfns=region, on_write=lambda g, d: seen.append(g)
    )
    pt.map(0x1000, 0x5000)
    assert stale + 8 * 7 in seen
    assert pt.mappings()["gva"].tolist() == [0x1000]


# --------------------------------------------------------------------------------------------
# Dumps: mappings() and info_mem() agree with walking every page
# --------------------------------------------------------------------------------------------


def check_dumps_against_walks(pt: GuestPageTables, gvas: range) -> None:
    """Each 4 KiB page in ``gvas`` walks iff a row covers it, and to that row's gpa and rights."""
    rows = pt.mappings().to_dict("records")
    ranges = pt.info_mem().to_dict("records")
    for gva in gvas:
        result = translate(pt, gva)
        row = next((r for r in rows if r["gva"] <= gva < r["gva"] + r["size"]), None)
        span = next((r for r in ranges if r["start"] <= gva < r["end"]), None)
        if row is None:
            assert isinstance(result, PageFault) and span is None, hex(gva)
            continue
        assert isinstance(result, WalkResult), (hex(gva), result)
        assert result.gpa == row["gpa"] + gva - row["gva"]
        assert (result.page_size, result.level) == (row["size"], row["level"])
        assert result.access == expected_access(row["writable"], row["user"], row["nx"])
        assert span is not None and span["prot"] == describe_prot(result.access)


def describe_prot(access: Acc) -> str:
    """``info mem`` rights of a successful walk: u/-, always r, w/-, x/-."""
    return (
        ("u" if access & Acc.USER else "-")
        + "r"
        + ("w" if access & Acc.WRITE else "-")
        + ("x" if access & Acc.EXEC else "-")
    )


@settings(max_examples=30)
@given(data=st.data())
def test_mappings_and_info_mem_agree_with_walking_every_page(data: st.DataObject) -> None:
    mode = data.draw(st.sampled_from(PAGING_MODES))
    small, large = SIZES[mode][0], SIZES[mode][1]
    pt = build(mode, 4 * MB)
    window = 4 * large
    for _ in range(data.draw(st.integers(1, 10))):
        rows = pt.mappings()
        op = data.draw(st.sampled_from(["map", "map", "unmap", "protect", "restrict"]))
        if op == "map":
            size = data.draw(st.sampled_from([small, large]))
            try:
                pt.map(
                    data.draw(st.integers(0, window // size - 1)) * size,
                    data.draw(st.integers(0, 64)) * size,
                    size,
                    writable=data.draw(st.booleans()),
                    user=data.draw(st.booleans()),
                    nx=mode is not PagingMode.BITS32 and data.draw(st.booleans()),
                )
            except MappingError as e:
                assert "unmap" in str(e)
        elif op in ("unmap", "protect") and not rows.empty:
            row = rows.iloc[data.draw(st.integers(0, len(rows) - 1))]
            if op == "unmap":
                pt.unmap(row["gva"], row["size"])
            else:
                pt.protect(row["gva"], writable=data.draw(st.booleans()), user=True)
        elif op == "restrict":  # a supervisor or read-only PDE over a page table
            gva = data.draw(st.integers(0, window // large - 1)) * large
            with suppress(MappingError):
                pde = pt.entry(gva, 2)
                if pde & Pte.PRESENT and not pde & Pte.PAGE_SIZE:
                    cut = data.draw(st.sampled_from([Pte.USER, Pte.WRITABLE]))
                    pt.set_entry(gva, 2, pde & ~cut)
    check_dumps_against_walks(pt, range(0, window, small))


def test_dumps_of_a_kernel_style_address_space_agree_with_walks() -> None:
    pt = build(PagingMode.LEVEL4)
    kernel = HIGH_GVA[PagingMode.LEVEL4]
    pt.map(kernel, 0, M2, length=2 * M2, global_=True)
    pt.map(kernel + 2 * M2, 2 * M2, length=4 * K4, writable=False, nx=True)
    pt.map(0x40_0000, 0x9000, user=True, length=2 * K4)
    pt.map(0x7FFF_C000_0000, G1, G1, user=True, nx=True)
    frame = pt.mappings()
    assert list(frame.columns) == list(MAPPING_COLUMNS)
    small = [kernel + 2 * M2 + i * K4 for i in range(4)]
    assert frame["gva"].tolist() == [
        0x40_0000,
        0x40_1000,
        0x7FFF_C000_0000,
        kernel,
        kernel + M2,
        *small,
    ]
    assert frame["gva"].tolist()[3] == kernel  # canonical, not 0x8000_0000_0000
    assert frame["flags"].tolist()[:3] == ["-------UW", "-------UW", "X-P----UW"]
    for row in frame.to_dict("records"):
        for gva in (row["gva"], row["gva"] + row["size"] - 1):
            assert gpa_of(pt, gva) == row["gpa"] + gva - row["gva"]
    mem = pt.info_mem()
    assert list(mem.columns) == list(INFO_MEM_COLUMNS)
    assert mem.to_dict("records") == [
        {"start": 0x40_0000, "end": 0x40_2000, "size": 0x2000, "prot": "urwx"},
        {"start": 0x7FFF_C000_0000, "end": 0x8000_0000_0000, "size": G1, "prot": "urw-"},
        {"start": kernel, "end": kernel + 2 * M2, "size": 2 * M2, "prot": "-rwx"},
        {"start": kernel + 2 * M2, "end": kernel + 2 * M2 + 4 * K4, "size": 4 * K4, "prot": "-r--"},
    ]
    check_dumps_against_walks(pt, range(0x3F_F000, 0x40_3000, K4))


def test_mappings_show_the_accessed_and_dirty_bits_the_walker_sets() -> None:
    pt = build(PagingMode.PAE)
    pt.map(0x1000, 0x5000)
    walk(pt.memory, pt.cpu(), 0x1000, Access.WRITE)
    row = pt.mappings().iloc[0]
    assert row["accessed"] and row["dirty"] and row["flags"] == "---DA--UW"[:7] + "-W"


def test_empty_dumps_keep_their_columns_and_types() -> None:
    pt = build(PagingMode.LEVEL4)
    frame, mem = pt.mappings(), pt.info_mem()
    assert frame.empty and list(frame.columns) == list(MAPPING_COLUMNS)
    assert str(frame["writable"].dtype) == "bool" and str(frame["gva"].dtype) == "object"
    assert mem.empty and list(mem.columns) == list(INFO_MEM_COLUMNS)


def test_the_last_page_of_the_address_space_ends_at_2_to_the_64() -> None:
    pt = build(PagingMode.LEVEL5)
    pt.map((1 << 64) - K4, 0x1000)
    assert pt.info_mem().loc[0, "end"] == 1 << 64


# --------------------------------------------------------------------------------------------
# Bad input: the right error, saying what to fix
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "call", "error", "message"),
    [
        (PagingMode.LEVEL4, {"gva": 0x1234}, AddressError, "gva=0x1234 is not aligned"),
        (PagingMode.LEVEL4, {"gpa": 0x1000, "size": M2}, AddressError, "gpa=0x1000 is not aligned"),
        (PagingMode.BITS32, {"size": M2}, MappingError, "2 MiB pages need PAE"),
        (PagingMode.PAE, {"size": M4}, MappingError, "use 2 MiB pages"),
        (PagingMode.PAE, {"size": G1}, MappingError, "1 GiB pages need 4-level"),
        (PagingMode.LEVEL4, {"size": 8192}, MappingError, "page sizes here: 4 KiB, 2 MiB, 1 GiB"),
        (PagingMode.LEVEL4, {"gva": 1 << 47}, AddressError, "not canonical.*0xffff800000000000"),
        (PagingMode.LEVEL5, {"gva": 1 << 56, "gpa": 0, "size": G1}, AddressError, "canonical"),
        (PagingMode.LEVEL4, {"gva": (1 << 47) - K4, "length": 2 * K4}, AddressError, "half"),
        (PagingMode.PAE, {"gva": 0xFFFF_F000, "length": 2 * K4}, AddressError, "past 4 GiB"),
        (PagingMode.BITS32, {"gpa": 1 << 32}, AddressError, "4 MiB pages \\(PSE-36\\) or PAE"),
        (PagingMode.LEVEL4, {"gpa": 1 << 40}, AddressError, "MAXPHYADDR"),
        (PagingMode.BITS32, {"nx": True}, MappingError, "no execute-disable bit"),
        (PagingMode.PAE, {"pkey": 3}, MappingError, "protection keys exist only in 4-level"),
        (PagingMode.LEVEL4, {"pkey": 16}, MappingError, "pkey must be an int 0..15"),
        (PagingMode.LEVEL4, {"length": 0}, AddressError, "positive multiple"),
        (PagingMode.LEVEL4, {"length": 0x1800}, AddressError, "positive multiple of the 4 KiB"),
        (PagingMode.LEVEL4, {"gva": "0x1000"}, AddressError, "gva must be an int"),
        (PagingMode.LEVEL4, {"gpa": -4096}, AddressError, "does not fit in 64 bits"),
        (PagingMode.LEVEL4, {"size": 4096.0}, MappingError, "size must be a page size"),
        (PagingMode.LEVEL4, {"size": "3M"}, MappingError, "not a page size name"),
        (PagingMode.LEVEL4, {"writable": 1}, MappingError, "writable must be True or False"),
    ],
)
def test_bad_map_arguments_are_refused_with_a_helpful_message(
    mode: PagingMode, call: dict[str, Any], error: type[KvmmuError], message: str
) -> None:
    pt = build(mode)
    args = {"gva": 0x40_0000, "gpa": 0x40_0000} | call
    with pytest.raises(error, match=message):
        pt.map(args.pop("gva"), args.pop("gpa"), **args)
    assert pt.mappings().empty


def test_nx_without_nxe_says_to_enable_it() -> None:
    with pytest.raises(MappingError, match="nxe=True"):
        build(PagingMode.LEVEL4, nxe=False).map(0, 0, nx=True)


def test_4mib_pages_without_pse_say_to_enable_it() -> None:
    with pytest.raises(MappingError, match="pse=True"):
        build(PagingMode.BITS32, pse=False).map(0, 0, M4)


def test_mapping_over_pages_of_another_size_says_to_unmap_first() -> None:
    pt = build(PagingMode.LEVEL4)
    pt.map(0, 0, M2)
    with pytest.raises(MappingError, match=r"lies in the 2 MiB page at 0x0.*unmap\(0x0\) first"):
        pt.map(0x1000, 0x1000)
    pt.map(M2 + 0x1000, 0)
    with pytest.raises(MappingError, match=r"already holds smaller pages.*unmap them"):
        pt.map(M2, 0, M2)
    with pytest.raises(MappingError, match="unmap"):
        pt.map(0, 0, G1)


def test_a_refused_multi_page_map_changes_nothing() -> None:
    pt = build(PagingMode.PAE)
    pt.map(3 * M2 + K4, 0)
    tables = pt.tables
    with pytest.raises(MappingError, match="unmap"):
        pt.map(0, 0, M2, length=4 * M2)  # the fourth page holds a 4 KiB page
    assert pt.tables == tables and len(pt.mappings()) == 1


def test_running_out_of_table_pages_is_a_mapping_error_that_changes_nothing() -> None:
    pt = build(PagingMode.LEVEL4, table_gfns=range(0x100, 0x103))  # root + 2
    with pytest.raises(MappingError, match=r"out of page-table pages.*needs 3.*table_gfns"):
        pt.map(0x1000, 0x1000)
    assert pt.tables == [0x100] and pt.pool.free_count == 2
    pt.map(0, 0, G1)  # needs only a PDPT
    with pytest.raises(MappingError, match="out of page-table pages"):
        pt.set_entry(1 << 39, 1, 0)


def test_unmap_and_protect_need_mapped_whole_pages() -> None:
    pt = build(PagingMode.LEVEL4)
    pt.map(0, 0, M2)
    with pytest.raises(MappingError, match="unmap: gva 0x200000 is not mapped"):
        pt.unmap(M2)
    with pytest.raises(MappingError, match="part of the 2 MiB page at 0x0"):
        pt.unmap(0x1000)
    with pytest.raises(MappingError, match="part of the 2 MiB page"):
        pt.protect(0, K4, writable=False)
    with pytest.raises(MappingError, match="not mapped"):
        pt.unmap(0, 2 * M2)
    with pytest.raises(MappingError, match="at least one of"):
        pt.protect(0)
    with pytest.raises(MappingError, match="nxe=True"):
        build(PagingMode.PAE, nxe=False).protect(0, nx=True)
    assert len(pt.mappings()) == 1  # nothing was changed by the refused calls


def test_entry_names_the_missing_level_and_the_large_page_in_the_way() -> None:
    pt = build(PagingMode.LEVEL4)
    with pytest.raises(MappingError, match="has no PTE: its PML4E \\(level 4\\) is not present"):
        pt.entry(0x1000, 1)
    pt.map(0, 0, M2)
    with pytest.raises(MappingError, match=r"2 MiB page at 0x0.*no PTE"):
        pt.entry(0x1000, 1)
    with pytest.raises(ModeError, match=r"level 4 does not exist in PAE.*3 = PDPTE"):
        build(PagingMode.PAE).entry(0, 4)
    with pytest.raises(AddressError, match="does not fit in 32 bits"):
        build(PagingMode.BITS32).set_entry(0, 1, 1 << 32)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"mode": "PAE"}, ModeError, "mode must be a PagingMode"),
        ({"pse": "yes"}, ModeError, "pse must be True or False"),
        ({"maxphyaddr": 60}, AddressError, "maxphyaddr=60"),
        ({"table_gfns": range(0x5000, 0x5004)}, MemslotError, "gfn 0x5000 is in no memslot"),
        ({"table_gfns": range(8, 8)}, AddressError, "non-empty range"),
        ({"table_gfns": [1, 2]}, AddressError, "range of gfns"),
    ],
)
def test_bad_construction_is_refused_with_a_helpful_message(
    kwargs: dict[str, Any], error: type[KvmmuError], message: str
) -> None:
    args = {"mode": PagingMode.LEVEL4} | kwargs
    with pytest.raises(error, match=message):
        GuestPageTables(GuestMemory(4 * MB), **args)


def test_table_pages_must_be_writable_memory_the_entries_can_reach() -> None:
    memory = GuestMemory(4 * MB)
    memory.slots.add(0x10_0000, 16, MemslotFlag.READONLY)
    with pytest.raises(MemslotError, match="read-only slot"):
        GuestPageTables(memory, PagingMode.LEVEL4, table_gfns=range(0x10_0000, 0x10_0004))
    memory.slots.add(0x10_0010, 16)  # at 4 GiB
    with pytest.raises(AddressError, match="32-bit entries cannot point"):
        GuestPageTables(memory, PagingMode.BITS32, table_gfns=range(0x10_0010, 0x10_0014))
    with pytest.raises(AddressError, match="PAE root"):
        GuestPageTables(memory, PagingMode.PAE, table_gfns=range(0x10_0010, 0x10_0014))
    with pytest.raises(MemslotError, match="no memslots"):
        GuestPageTables(GuestMemory(), PagingMode.LEVEL4)
    with pytest.raises(MemslotError, match="must be a GuestMemory"):
        GuestPageTables("memory", PagingMode.LEVEL4)  # type: ignore[arg-type]


def test_format_size_uses_binary_units() -> None:
    assert [format_size(s) for s in (K4, M2, M4, G1, 0x1800)] == [
        "4 KiB",
        "2 MiB",
        "4 MiB",
        "1 GiB",
        "6 KiB",
    ]
    assert describe_flags(0) == "---------"


# --------------------------------------------------------------------------------------------
# Dumps of cyclic and shared table graphs
# --------------------------------------------------------------------------------------------


def self_referencing_root(mode: PagingMode) -> GuestPageTables:
    """Tables whose every root entry points back at the root: each gva walks to the root."""
    pt = build(mode)
    esize = mode.spec.entry_size
    for index in range(4096 // esize):
        pt.memory.write(pt.cr3 + index * esize, pt.cr3 | TABLE_ENTRY_BITS, esize)
    return pt


@pytest.mark.parametrize("mode", [PagingMode.BITS32, PagingMode.LEVEL4, PagingMode.LEVEL5])
def test_dumps_of_a_fully_self_referencing_root_finish_and_say_so(mode: PagingMode) -> None:
    """Issue 13, bug 6: 512**4 leaves used to be listed one by one (days). The graph is one
    table page; counting memoises it, the listing stops at its limit and says how much it left
    out, and info_mem summarises each shared subtable once."""
    pt = self_referencing_root(mode)
    spec = mode.spec
    per_table = 4096 // spec.entry_size
    total = per_table**spec.root_level
    graph = pt.table_graph()
    assert (graph.tables, graph.leaves, graph.cyclic) == (1, total, True)
    assert [(r.table, r.target, r.level) for r in graph.self_references] == [
        (pt.cr3, pt.cr3, spec.root_level)
    ] * per_table
    assert [r.index for r in graph.self_references] == list(range(per_table))

    frame = pt.mappings(limit=700)
    assert len(frame) == 700 and frame["recursive"].all()
    assert set(frame["gpa"]) == {pt.cr3} and frame["gva"].tolist() == [i * K4 for i in range(700)]
    assert frame.attrs["leaves"] == total and frame.attrs["elided"] == total - 700
    assert frame.attrs["cyclic"] and "cyclic" in frame.attrs["note"]
    for gva in frame["gva"].tolist()[::97]:
        assert gpa_of(pt, gva) == pt.cr3  # each listed row is a real translation

    ranges = pt.info_mem()
    span = 1 << spec.va_bits
    if spec.va_bits == 32:
        expected = [(0, span)]
    else:  # the two canonical halves
        expected = [(0, span // 2), ((1 << 64) - span // 2, 1 << 64)]
    assert list(zip(ranges["start"], ranges["end"], strict=True)) == expected
    assert set(ranges["prot"]) == {"urwx"} and ranges.attrs["elided"] == 0


def test_default_dump_of_a_self_referencing_root_is_bounded() -> None:
    """Without arguments the listing stops at DUMP_LIMIT rows."""
    from kvmmu.hw.guest import DUMP_LIMIT

    pt = self_referencing_root(PagingMode.LEVEL4)
    assert len(list(pt.leaves())) == DUMP_LIMIT
    assert len(pt.mappings()) == DUMP_LIMIT


def test_windows_style_recursive_slot_lists_the_tables_it_maps() -> None:
    """A self-map (PML4E 0x1ED -> the PML4, as Windows does) makes every table page visible
    at the recursive window. The dump is finite and exact: the ordinary leaves, plus one row
    per table page seen through the slot, marked ``recursive``; every row is what the walker
    gives, and the note names the one self-referencing entry."""
    pt = build(PagingMode.LEVEL4)
    pt.map(0x40_0000, 0x10_0000, length=3 * K4, user=True)
    pt.map(HIGH_GVA[PagingMode.LEVEL4], 0x20_0000, M2)
    plain = pt.mappings()
    slot = 0x1ED
    window = 0xFFFF_0000_0000_0000 | slot << 39
    pt.set_entry(window, 4, pt.cr3 | TABLE_ENTRY_BITS)
    frame = pt.mappings()
    assert frame.attrs["elided"] == 0 and frame.attrs["cyclic"]
    refs = pt.table_graph().self_references
    assert [(r.name, r.index, r.table, r.target) for r in refs] == [("PML4E", slot, pt.cr3, pt.cr3)]
    ordinary = frame[~frame["recursive"]].drop(columns="recursive").reset_index(drop=True)
    assert ordinary.equals(plain.drop(columns="recursive"))
    seen = frame[frame["recursive"]]
    assert all(gva >> 39 & 0x1FF == slot for gva in seen["gva"])
    # every table page is seen as a 4 KiB page; so is the first 4 KiB of the 2 MiB page, whose
    # PDE is read as a PTE through the window (bit 7 is PAT there, not PS)
    assert set(seen["gpa"]) == {gfn << 12 for gfn in pt.tables} | {0x20_0000}
    assert set(seen["size"]) == {K4}
    self_map = (window | slot << 30 | slot << 21 | slot << 12) & ((1 << 64) - 1)
    assert seen["gva"].tolist()[-1] == self_map and gpa_of(pt, self_map) == pt.cr3
    for row in seen.to_dict("records"):
        assert gpa_of(pt, row["gva"]) == row["gpa"]


def test_shared_subtables_are_listed_once_per_way_of_reaching_them() -> None:
    """Two PDEs pointing at one page table: both ranges are listed, neither is recursive,
    the graph is not cyclic and counts the table page once."""
    pt = build(PagingMode.LEVEL4)
    pt.map(0x40_0000, 0x10_0000, length=2 * K4)
    pt.set_entry(0x60_0000, 2, pt.entry(0x40_0000, 2))
    frame = pt.mappings()
    assert frame["gva"].tolist() == [0x40_0000, 0x40_1000, 0x60_0000, 0x60_1000]
    assert not frame["recursive"].any() and not frame.attrs["cyclic"]
    graph = pt.table_graph()
    assert (graph.tables, graph.leaves, graph.cyclic) == (4, 4, False)
    assert "no cycles" in graph.describe()
    check_dumps_against_walks(pt, range(0x40_0000, 0x80_0000, K4))


@pytest.mark.parametrize("limit", [-1, 1.5, "10", True, None])
def test_dump_limits_are_counts(limit: object) -> None:
    """A limit is a non-negative int (None: no limit, for leaves and mappings only)."""
    pt = build(PagingMode.LEVEL4)
    pt.map(0x40_0000, 0x10_0000)
    if limit is None:
        assert len(pt.mappings(limit=None)) == 1
        return
    for dump in (pt.mappings, pt.info_mem, lambda limit: list(pt.leaves(limit=limit))):
        with pytest.raises(MappingError, match="limit"):
            dump(limit=limit)
