"""Specification of ``kvmmu.hw.memory``: guest physical memory, memslots and the host allocator.

The rules come from ``virt/kvm/kvm_main.c`` (memslots, ``mark_page_dirty``, the memslot
generation) and from x86 itself (little-endian, byte-addressed memory).
"""

import numpy as np
import pytest

from kvmmu.errors import AddressError, KvmmuError, MemslotError
from kvmmu.hw.memory import GuestMemory, HostMemory, Memslot, MemslotFlag, Memslots

MiB = 1 << 20


# --------------------------------------------------------------------------------------------
# Byte access
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 4, 8])
def test_reads_and_writes_are_little_endian(size: int) -> None:
    """x86 is little-endian: the least significant byte lives at the lowest address."""
    mem = GuestMemory(MiB)
    value = int.from_bytes(bytes(range(0x11, 0x11 + size)), "big")
    mem.write(0x1000, value, size)
    assert mem.read_bytes(0x1000, size) == bytes(range(0x11, 0x11 + size))[::-1]
    assert mem.read(0x1000, size) == value
    assert mem.read(0x1000, 1) == value & 0xFF


def test_default_access_is_8_bytes() -> None:
    """read()/write() default to a 64-bit (8-byte) access, the size of an entry."""
    mem = GuestMemory(MiB)
    mem.write(0x2000, 0x0123_4567_89AB_CDEF)
    assert mem.read(0x2000) == 0x0123_4567_89AB_CDEF
    assert mem.read(0x2004, 4) == 0x0123_4567


def test_narrow_write_leaves_neighbours_alone() -> None:
    """A 1-, 2- or 4-byte store changes exactly those bytes."""
    mem = GuestMemory(MiB)
    mem.write(0x3000, 0xFFFF_FFFF_FFFF_FFFF)
    mem.write(0x3002, 0, 2)
    assert mem.read(0x3000) == 0xFFFF_FFFF_0000_FFFF
    mem.write(0x3007, 0x12, 1)
    assert mem.read(0x3000) == 0x12FF_FFFF_0000_FFFF


@pytest.mark.parametrize("size", [2, 4, 8])
def test_accesses_may_cross_a_page_boundary(size: int) -> None:
    """An unaligned access that straddles two pages reads and writes both of them."""
    mem = GuestMemory(MiB)
    gpa = 0x5000 - 1  # the last byte of page 4 and the first bytes of page 5
    value = (1 << (8 * size)) - 0x1234
    mem.write(gpa, value, size)
    assert mem.read(gpa, size) == value
    assert mem.page(4).view(np.uint8)[-1] == value & 0xFF
    assert mem.page(5).view(np.uint8)[0] == (value >> 8) & 0xFF


def test_page_crossing_between_two_memslots() -> None:
    """Adjacent slots are separate host allocations; a crossing access still sees both."""
    mem = GuestMemory(4 * 4096)  # slot 0: gfns 0..3
    mem.slots.add(4, 4)  # slot 1: gfns 4..7, different host frames
    mem.write(0x4000 - 4, 0x8877_6655_4433_2211)
    assert mem.read(0x4000 - 4, 4) == 0x4433_2211
    assert mem.read(0x4000, 4) == 0x8877_6655
    assert mem.read_bytes(0x3FFE, 4) == bytes([0x33, 0x44, 0x55, 0x66])


def test_fresh_memory_reads_as_zero() -> None:
    """Memory of a new slot is zero-filled, as fresh anonymous memory is."""
    mem = GuestMemory(MiB)
    assert mem.read(0) == 0
    assert mem.read_bytes(0xFFFF8, 8) == bytes(8)


def test_access_outside_every_memslot_names_the_gfn() -> None:
    """A gpa with no memslot is an AddressError that says which gfn and how to fix it."""
    mem = GuestMemory(MiB)
    with pytest.raises(AddressError, match=r"gfn 0x100 .*not in any memslot"):
        mem.read(MiB)
    with pytest.raises(AddressError, match="add a slot"):
        mem.write(MiB + 8, 1)
    with pytest.raises(AddressError, match="gfn 0x100"):
        mem.read(MiB - 4, 8)  # starts inside, ends outside


def test_failed_crossing_write_changes_nothing() -> None:
    """A write that runs off the end of guest memory is refused before any byte is stored."""
    mem = GuestMemory(MiB)
    mem.write(MiB - 8, 0x1111_1111_1111_1111)
    with pytest.raises(AddressError):
        mem.write(MiB - 4, 0xFFFF_FFFF_FFFF_FFFF)
    assert mem.read(MiB - 8) == 0x1111_1111_1111_1111


@pytest.mark.parametrize("size", [0, 3, 5, 16, -1, "8", 8.0])
def test_access_size_must_be_1_2_4_or_8(size: object) -> None:
    """Only the x86 operand sizes of an entry or scalar are allowed."""
    mem = GuestMemory(MiB)
    with pytest.raises(AddressError, match="1, 2, 4 or 8"):
        mem.read(0, size)  # type: ignore[arg-type]
    with pytest.raises(AddressError, match="1, 2, 4 or 8"):
        mem.write(0, 0, size)  # type: ignore[arg-type]


@pytest.mark.parametrize(("value", "size"), [(256, 1), (1 << 16, 2), (1 << 32, 4), (1 << 64, 8)])
def test_value_must_fit_the_access_size(value: int, size: int) -> None:
    """A value wider than the store is an error, not a silent truncation."""
    mem = GuestMemory(MiB)
    with pytest.raises(AddressError, match=f"does not fit in {8 * size} bits"):
        mem.write(0, value, size)


@pytest.mark.parametrize("gpa", [-1, 1 << 52, "0x1000", 4096.0, None, True])
def test_gpa_must_be_a_52_bit_int(gpa: object) -> None:
    """Guest physical addresses are ints below 2**52, the architectural limit."""
    mem = GuestMemory(MiB)
    with pytest.raises(AddressError, match="gpa"):
        mem.read(gpa)  # type: ignore[arg-type]
    with pytest.raises(AddressError, match="gpa"):
        mem.write(gpa, 0)  # type: ignore[arg-type]


def test_value_must_be_an_int() -> None:
    """write() stores integers; other types are refused with the expected type."""
    mem = GuestMemory(MiB)
    for bad in ("1", 1.0, None, -1):
        with pytest.raises(AddressError, match="value"):
            mem.write(0, bad)  # type: ignore[arg-type]


def test_read_bytes_and_write_bytes_check_their_arguments() -> None:
    """Byte-string access wants a non-negative int size and a bytes-like payload."""
    mem = GuestMemory(MiB)
    assert mem.read_bytes(0x10, 0) == b""
    with pytest.raises(AddressError, match="size"):
        mem.read_bytes(0x10, -1)
    with pytest.raises(AddressError, match="size"):
        mem.read_bytes(0x10, "4")  # type: ignore[arg-type]
    with pytest.raises(AddressError, match="bytes"):
        mem.write_bytes(0x10, "text")  # type: ignore[arg-type]
    mem.write_bytes(0x10, bytearray(b"\x01\x02"))
    mem.write_bytes(0x12, memoryview(b"\x03"))
    assert mem.read_bytes(0x10, 3) == b"\x01\x02\x03"


@pytest.mark.parametrize(("size", "hint"), [(4097, "multiple"), (-4096, "fit"), ("1M", "int")])
def test_bad_memory_size(size: object, hint: str) -> None:
    """GuestMemory(size) takes a whole number of 4 KiB pages."""
    with pytest.raises(AddressError, match=hint):
        GuestMemory(size)  # type: ignore[arg-type]


def test_empty_memory_has_no_slots() -> None:
    """GuestMemory() with no size starts with no memslot; slots are added explicitly."""
    mem = GuestMemory()
    assert len(mem.slots) == 0
    with pytest.raises(AddressError):
        mem.read(0)


# --------------------------------------------------------------------------------------------
# numpy page views
# --------------------------------------------------------------------------------------------


def test_page_view_is_uint64_512_and_shares_storage() -> None:
    """page(gfn) is a writable uint64[512] view of the frame: no copy in either direction."""
    mem = GuestMemory(MiB)
    page = mem.page(3)
    assert page.dtype == np.uint64 and page.shape == (512,)
    assert page.flags.writeable
    page[7] = 0xDEAD_BEEF_0000_0001
    assert mem.read(3 * 4096 + 7 * 8) == 0xDEAD_BEEF_0000_0001
    mem.write(3 * 4096 + 8, 0x42)
    assert page[1] == 0x42
    assert mem.page(3)[1] == 0x42  # a second view sees the same storage


@pytest.mark.parametrize("gfn", ["3", -1, 3.0, None, 1 << 40])
def test_page_needs_an_int_gfn(gfn: object) -> None:
    """page(gfn) and gfn_to_pfn(gfn) take a gfn below 2**40 (52-bit physical addresses)."""
    mem = GuestMemory(MiB)
    with pytest.raises(AddressError, match="gfn"):
        mem.page(gfn)  # type: ignore[arg-type]
    with pytest.raises(AddressError, match="gfn"):
        mem.gfn_to_pfn(gfn)  # type: ignore[arg-type]


def test_table_words_share_storage_and_come_in_both_entry_sizes() -> None:
    """table_words is the walker's view: 512 8-byte or 1024 4-byte entries of one frame."""
    mem = GuestMemory(MiB)
    mem.write(0x7000 + 8, 0x1111_2222_3333_4444)
    q = mem.table_words(7)
    d = mem.table_words(7, 4)
    assert q is not None and d is not None
    assert (len(q), len(d)) == (512, 1024)
    assert q[1] == 0x1111_2222_3333_4444
    assert (d[2], d[3]) == (0x3333_4444, 0x1111_2222)
    q[2] = 5
    assert mem.read(0x7010) == 5


def test_table_words_is_none_outside_every_memslot() -> None:
    """The walker asks table_words and gets None, never an exception, for a hole."""
    mem = GuestMemory(MiB)
    assert mem.table_words(256) is None
    assert mem.table_words(1 << 39) is None


def test_table_words_follow_a_moved_slot() -> None:
    """Cached views are dropped when the memslot generation changes."""
    mem = GuestMemory()
    slot = mem.slots.add(0x10, 1)
    mem.write(0x10 * 4096, 0xAB)
    words = mem.table_words(0x10)
    assert words is not None and words[0] == 0xAB
    mem.slots.move(slot.slot_id, 0x20)
    assert mem.table_words(0x10) is None
    moved = mem.table_words(0x20)
    assert moved is not None and moved[0] == 0xAB


# --------------------------------------------------------------------------------------------
# Memslots
# --------------------------------------------------------------------------------------------


def test_add_creates_a_slot_and_maps_gfns_to_host_frames() -> None:
    """KVM_SET_USER_MEMORY_REGION: base_gfn .. base_gfn+npages-1 map onto a run of host frames."""
    mem = GuestMemory()
    slot = mem.slots.add(0x100, 16)
    assert isinstance(slot, Memslot)
    assert (slot.base_gfn, slot.npages, slot.end_gfn) == (0x100, 16, 0x110)
    assert [mem.gfn_to_pfn(0x100 + i) - mem.gfn_to_pfn(0x100) for i in range(16)] == list(range(16))
    assert mem.slots.find(0x100) is slot and mem.slots.find(0x10F) is slot
    assert mem.slots.find(0xFF) is None and mem.slots.find(0x110) is None


def test_find_picks_the_right_slot_among_many() -> None:
    """gfn_to_memslot: each gfn belongs to at most one slot, holes belong to none."""
    mem = GuestMemory()
    slots = [mem.slots.add(base, 4) for base in (0x40, 0x0, 0x20, 0x10)]
    for slot in slots:
        for gfn in range(slot.base_gfn, slot.end_gfn):
            assert mem.slots.find(gfn) is slot
    for hole in (0x4, 0xF, 0x14, 0x24, 0x3F, 0x44, 1 << 30):
        assert mem.slots.find(hole) is None
    assert [s.base_gfn for s in mem.slots] == [0x0, 0x10, 0x20, 0x40]  # sorted by gfn


def test_slot_ids_are_unique_and_get_finds_them() -> None:
    """Each slot has its own id; get() returns it and an unknown id lists the existing ones."""
    mem = GuestMemory(MiB)
    second = mem.slots.add(0x1000, 1)
    assert mem.slots.get(second.slot_id) is second
    assert second.slot_id != mem.slots.find(0).slot_id  # type: ignore[union-attr]
    with pytest.raises(MemslotError, match=r"no memslot with id 99; existing ids: \[0, 1\]"):
        mem.slots.get(99)


@pytest.mark.parametrize(
    ("base", "npages"),
    [(0x0, 1), (0xFF, 2), (0x80, 1), (0x0, 0x200), (0xFF, 1)],
)
def test_overlapping_slots_are_refused(base: int, npages: int) -> None:
    """Two memslots may not share a gfn; the error names the slot in the way."""
    mem = GuestMemory(MiB)  # slot 0: gfns 0x0..0xff
    with pytest.raises(MemslotError, match=r"overlap slot 0 \(0x0\.\.0xff\)"):
        mem.slots.add(base, npages)
    assert len(mem.slots) == 1


def test_adjacent_slots_do_not_overlap() -> None:
    """A slot may start right at the end of another."""
    mem = GuestMemory(MiB)
    mem.slots.add(0x100, 1)
    assert len(mem.slots) == 2


@pytest.mark.parametrize(("maxphyaddr", "last_gfn"), [(36, (1 << 24) - 1), (40, (1 << 28) - 1)])
def test_slots_beyond_maxphyaddr_are_refused(maxphyaddr: int, last_gfn: int) -> None:
    """No gfn may reach MAXPHYADDR: the error gives the last valid gfn."""
    mem = GuestMemory(maxphyaddr=maxphyaddr)
    mem.slots.add(last_gfn, 1)  # the very last frame is fine
    with pytest.raises(MemslotError, match=f"MAXPHYADDR={maxphyaddr}.*last gfn {last_gfn:#x}"):
        mem.slots.add(last_gfn - 8, 10)


@pytest.mark.parametrize("maxphyaddr", [31, 53, "40"])
def test_memory_maxphyaddr_must_be_valid(maxphyaddr: object) -> None:
    """The guest's MAXPHYADDR is 32..52, as in CPUID."""
    with pytest.raises(AddressError, match="maxphyaddr"):
        GuestMemory(maxphyaddr=maxphyaddr)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("base", "npages", "error", "hint"),
    [
        (0, 0, MemslotError, "npages"),
        (0, -3, MemslotError, "npages"),
        (0, 1.5, MemslotError, "npages"),
        (0, True, MemslotError, "npages"),
        (-1, 1, AddressError, "base_gfn"),
        ("0", 1, AddressError, "base_gfn"),
        (1 << 40, 1, AddressError, "base_gfn"),
    ],
)
def test_malformed_slots_are_refused(
    base: object, npages: object, error: type[KvmmuError], hint: str
) -> None:
    """Slot geometry must be ints: a base gfn below 2**40 and a positive page count."""
    mem = GuestMemory()
    with pytest.raises(error, match=hint):
        mem.slots.add(base, npages)  # type: ignore[arg-type]
    assert len(mem.slots) == 0


def test_delete_removes_a_slot_and_frees_its_frames() -> None:
    """KVM_MR_DELETE: the gfns become a hole and the host frames go back."""
    mem = GuestMemory(MiB)
    slot = mem.slots.add(0x200, 8)
    mem.write(0x200 * 4096, 7)
    before = mem.host.allocated
    assert mem.slots.delete(slot.slot_id) is slot
    assert mem.host.allocated == before - 8
    assert mem.slots.find(0x200) is None
    with pytest.raises(AddressError):
        mem.read(0x200 * 4096)
    with pytest.raises(MemslotError, match="no memslot with id"):
        mem.slots.delete(slot.slot_id)


def test_move_keeps_contents() -> None:
    """KVM_MR_MOVE: the same host memory appears at new gfns; the old gfns become a hole."""
    mem = GuestMemory(MiB)
    slot = mem.slots.add(0x200, 2)
    mem.write(0x201 * 4096 + 16, 0xCAFE)
    pfn = mem.gfn_to_pfn(0x201)
    mem.slots.move(slot.slot_id, 0x300)
    assert mem.read(0x301 * 4096 + 16) == 0xCAFE
    assert mem.gfn_to_pfn(0x301) == pfn
    assert mem.slots.find(0x201) is None


def test_move_onto_another_slot_is_refused() -> None:
    """A moved slot may not overlap another one, but may overlap its own old place."""
    mem = GuestMemory(MiB)
    slot = mem.slots.add(0x200, 4)
    with pytest.raises(MemslotError, match="overlap slot 0"):
        mem.slots.move(slot.slot_id, 0xFE)
    assert mem.slots.find(0x200) is slot  # unchanged after the refusal
    mem.slots.move(slot.slot_id, 0x202)  # overlaps only itself
    assert (slot.base_gfn, mem.slots.find(0x205)) == (0x202, slot)


def test_every_change_bumps_the_generation() -> None:
    """kvm_memslots.generation changes on add, delete, move and flag changes (MMIO sptes)."""
    mem = GuestMemory()
    gens = [mem.slots.generation]
    slot = mem.slots.add(0, 4)
    gens.append(mem.slots.generation)
    mem.slots.move(slot.slot_id, 8)
    gens.append(mem.slots.generation)
    mem.slots.set_flags(slot.slot_id, MemslotFlag.LOG_DIRTY_PAGES)
    gens.append(mem.slots.generation)
    mem.slots.delete(slot.slot_id)
    gens.append(mem.slots.generation)
    assert gens == sorted(set(gens)), "the generation must strictly increase"


def test_failed_change_keeps_the_generation() -> None:
    """A refused change leaves the slots, and so the generation, as they were."""
    mem = GuestMemory(MiB)
    other = mem.slots.add(0x200, 1)
    gen = mem.slots.generation
    with pytest.raises(MemslotError):
        mem.slots.add(0, 1)
    with pytest.raises(MemslotError):
        mem.slots.move(other.slot_id, 0x80)
    with pytest.raises(AddressError):
        mem.slots.move(other.slot_id, -1)
    assert mem.slots.generation == gen
    assert other.base_gfn == 0x200


def test_readonly_flag() -> None:
    """KVM_MEM_READONLY marks a slot whose guest writes exit to userspace as MMIO."""
    mem = GuestMemory()
    rom = mem.slots.add(0x10, 1, MemslotFlag.READONLY)
    ram = mem.slots.add(0x20, 1)
    assert rom.readonly and not ram.readonly


@pytest.mark.parametrize("start", [MemslotFlag.NONE, MemslotFlag.READONLY])
def test_readonly_cannot_change_on_a_live_slot(start: MemslotFlag) -> None:
    """kvm_set_memory_region: -EINVAL when KVM_MEM_READONLY differs from the existing slot's.

    Only LOG_DIRTY_PAGES may change with KVM_MR_FLAGS_ONLY; the refusal changes nothing.
    """
    mem = GuestMemory()
    slot = mem.slots.add(0x10, 2, start)
    gen = mem.slots.generation
    with pytest.raises(MemslotError, match="READONLY"):
        mem.slots.set_flags(slot.slot_id, start ^ MemslotFlag.READONLY)
    with pytest.raises(MemslotError, match="READONLY"):
        mem.slots.set_flags(
            slot.slot_id, (start ^ MemslotFlag.READONLY) | MemslotFlag.LOG_DIRTY_PAGES
        )
    assert (slot.flags, mem.slots.generation) == (start, gen)
    mem.slots.set_flags(slot.slot_id, start | MemslotFlag.LOG_DIRTY_PAGES)  # allowed
    assert slot.dirty_logging and slot.readonly == bool(start)


@pytest.mark.parametrize("flags", ["RO", None, 1.0, True, 1 << 2, -1, MemslotFlag.READONLY | 8])
def test_memslot_flags_must_be_known_bits(flags: object) -> None:
    """check_memory_region_flags: anything but KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY."""
    mem = GuestMemory()
    with pytest.raises(MemslotError, match="flags"):
        mem.slots.add(0x10, 1, flags)  # type: ignore[arg-type]
    slot = mem.slots.add(0x10, 1)
    with pytest.raises(MemslotError, match="flags"):
        mem.slots.set_flags(slot.slot_id, flags)  # type: ignore[arg-type]
    assert len(mem.slots) == 1 and slot.flags == MemslotFlag.NONE


def test_dirty_bitmap_records_mark_page_dirty_only_while_logging() -> None:
    """mark_page_dirty sets the gfn's bit in its slot's bitmap when dirty logging is on."""
    mem = GuestMemory()
    slot = mem.slots.add(0x40, 8, MemslotFlag.LOG_DIRTY_PAGES)
    other = mem.slots.add(0x80, 8)
    assert slot.dirty_logging and not other.dirty_logging
    assert slot.dirty_bitmap.shape == (8,) and not slot.dirty_bitmap.any()
    mem.mark_page_dirty(0x42)
    mem.mark_page_dirty(0x47)
    mem.mark_page_dirty(0x81)  # not logging: ignored
    mem.mark_page_dirty(0x1000)  # no slot: ignored, as in KVM
    assert np.flatnonzero(slot.dirty_bitmap).tolist() == [2, 7]
    assert other.dirty_bitmap.size == 0


def test_enabling_dirty_logging_starts_a_clean_log_and_disabling_drops_it() -> None:
    """KVM_MR_FLAGS_ONLY with LOG_DIRTY_PAGES allocates a zeroed bitmap; clearing frees it."""
    mem = GuestMemory()
    slot = mem.slots.add(0, 4)
    mem.mark_page_dirty(1)
    assert slot.dirty_bitmap.size == 0
    mem.slots.set_flags(slot.slot_id, MemslotFlag.LOG_DIRTY_PAGES)
    assert slot.dirty_bitmap.tolist() == [False] * 4
    mem.mark_page_dirty(1)
    mem.slots.set_flags(slot.slot_id, MemslotFlag.LOG_DIRTY_PAGES)
    assert slot.dirty_bitmap.tolist() == [False, True, False, False]  # kept while logging
    mem.slots.set_flags(slot.slot_id, MemslotFlag.NONE)
    assert slot.dirty_bitmap.size == 0


def test_memslots_can_be_built_on_their_own() -> None:
    """Memslots over a HostMemory: the object KVM calls struct kvm_memslots."""
    host = HostMemory()
    slots = Memslots(host, maxphyaddr=36)
    slot = slots.add(0, 2)
    assert len(slots) == 1 and list(slots) == [slot]
    assert host.allocated == 2


# --------------------------------------------------------------------------------------------
# Host allocator
# --------------------------------------------------------------------------------------------


def test_alloc_page_never_returns_pfn_0_or_a_live_frame() -> None:
    """__get_free_page: distinct frames, and pfn 0 never looks like a valid frame."""
    host = HostMemory()
    pfns = [host.alloc_page() for _ in range(100)]
    assert 0 not in pfns
    assert len(set(pfns)) == 100
    assert host.allocated == 100


def test_free_page_recycles_and_drops_contents() -> None:
    """free_page returns a frame; the next allocation may reuse it, zero-filled."""
    host = HostMemory()
    pfn = host.alloc_page()
    host.page(pfn)[0] = 99
    host.free_page(pfn)
    assert host.allocated == 0
    again = host.alloc_page()
    assert again == pfn
    assert host.page(again)[0] == 0


def test_double_free_is_refused() -> None:
    """Freeing a frame twice would hand it out twice; it is an error naming the pfn."""
    host = HostMemory()
    pfn = host.alloc_page()
    host.free_page(pfn)
    with pytest.raises(AddressError, match=f"pfn {pfn:#x}"):
        host.free_page(pfn)
    with pytest.raises(AddressError, match="pfn 0x7b"):
        host.free_page(123)  # never allocated
    assert host.allocated == 0
    assert host.alloc_page() != host.alloc_page()


def test_alloc_range_is_contiguous_and_disjoint_from_pages() -> None:
    """A memslot's frames are one contiguous run that no single-page allocation reuses."""
    host = HostMemory()
    single = host.alloc_page()
    first = host.alloc_range(10)
    assert single not in range(first, first + 10)
    later = {host.alloc_page() for _ in range(20)}
    assert not later & set(range(first, first + 10))
    assert host.allocated == 31
    with pytest.raises(MemslotError, match="at least one"):
        host.alloc_range(0)


def test_contents_are_allocated_lazily() -> None:
    """A large guest costs nothing until touched: only frames read or written hold storage."""
    mem = GuestMemory(1 << 36)  # 64 GiB
    assert mem.host.touched == 0
    mem.write(5 << 30, 1)
    mem.read(7 << 30)
    assert mem.host.touched == 2


def test_free_range_drops_contents() -> None:
    """Deleting a slot returns its frames and forgets their contents."""
    mem = GuestMemory(MiB)
    mem.write(0, 1)
    mem.write(0xFF000, 1)
    assert mem.host.touched == 2
    mem.slots.delete(0)
    assert mem.host.touched == 0 and mem.host.allocated == 0


def test_host_words_views() -> None:
    """HostMemory.words gives 64-bit or 32-bit words over the same bytes as page()."""
    host = HostMemory()
    pfn = host.alloc_page()
    host.page(pfn)[3] = 0xAAAA_BBBB_CCCC_DDDD
    assert host.words(pfn)[3] == 0xAAAA_BBBB_CCCC_DDDD
    assert host.words(pfn, 4)[6] == 0xCCCC_DDDD
    assert bytes(host.raw(pfn)[24:32]) == (0xAAAA_BBBB_CCCC_DDDD).to_bytes(8, "little")
