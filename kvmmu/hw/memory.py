"""Guest physical memory, memslots and host frames.

Mirrors ``virt/kvm/kvm_main.c``: a guest frame number (gfn) is backed by host memory only through
a *memslot*, a run of guest frames mapped onto a run of host frames (``struct kvm_memory_slot``:
``base_gfn``, ``npages``, ``flags``, ``dirty_bitmap``). The contents live in host frames, so
moving a slot moves what the guest sees, as it does in KVM where a slot points at user memory.

The same :class:`HostMemory` allocator later gives the shadow MMU its pages, so one count of
host frames covers both guest RAM and the MMU's overhead.
"""

from __future__ import annotations

import bisect
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntFlag

import numpy as np
import numpy.typing as npt

from kvmmu.errors import (
    AddressError,
    MemslotError,
    check_count,
    check_flags,
    check_instance,
    check_int,
)
from kvmmu.hw.x86 import PAGE_MASK, PAGE_SHIFT, PAGE_SIZE, check_maxphyaddr

Page = npt.NDArray[np.uint64]

if sys.byteorder != "little":  # pragma: no cover - x86 guests are little-endian, so is the host
    raise ImportError(
        "kvmmu keeps page contents in native byte order and needs a little-endian host"
    )

MAX_GFN_BITS = 52 - PAGE_SHIFT  # the architectural limit of physical addresses


class HostMemory:
    """Host physical frames: an allocator and sparse, zero-filled page contents.

    A frame's contents are allocated on first use, so a 64 GiB guest costs nothing until touched.
    Pages are ``bytearray`` objects; :meth:`page` gives a numpy ``uint64[512]`` view of one and
    :meth:`words` a ``memoryview`` of 64-bit words for fast reads. Those views are made once per
    frame and kept until the frame is freed (a view reads the bytes, so writes show through).
    """

    def __init__(self) -> None:
        self._pages: dict[int, bytearray] = {}
        # memoryviews of frames made by words(), per entry size: {8: {pfn: view}, 4: {...}}
        self.views: dict[int, dict[int, memoryview]] = {8: {}, 4: {}}
        self._next_pfn = 1  # pfn 0 stays unused so that 0 never looks like a valid frame
        self._free: list[int] = []
        self._live: set[int] = set()  # frames from alloc_page not yet freed
        self.allocated = 0  # frames currently handed out

    def alloc_page(self) -> int:
        """Allocate one host frame and return its pfn (``__get_free_page``)."""
        self.allocated += 1
        if self._free:
            pfn = self._free.pop()
        else:
            pfn = self._next_pfn
            self._next_pfn += 1
        self._live.add(pfn)
        return pfn

    def alloc_range(self, npages: int) -> int:
        """Allocate ``npages`` contiguous host frames and return the first pfn.

        The run starts on a 2 MiB boundary (1 GiB for runs of 1 GiB or more), as memory backed
        by transparent or hugetlbfs huge pages would, so the MMU may map it with large sptes.
        """
        check_count("npages", npages, bits=MAX_GFN_BITS, error=MemslotError)
        if npages <= 0:
            raise MemslotError(f"cannot allocate {npages} host pages; ask for at least one")
        align = 1 << 18 if npages >= 1 << 18 else 1 << 9
        pfn = -(-self._next_pfn // align) * align
        self._next_pfn = pfn + npages
        self.allocated += npages
        return pfn

    def free_page(self, pfn: int) -> None:
        """Return a frame from :meth:`alloc_page`; its contents are dropped (``free_page``)."""
        # Fix: a double free (or freeing a frame never allocated) used to put the pfn on the
        # free list twice, so two later allocations shared one frame.
        check_int("pfn", pfn)
        if pfn not in self._live:
            raise AddressError(
                f"pfn {pfn:#x} is not an allocated page (double free, or not from alloc_page)"
            )
        self._live.remove(pfn)
        self._pages.pop(pfn, None)
        self._drop_views(pfn)
        self._free.append(pfn)
        self.allocated -= 1

    def free_range(self, pfn: int, npages: int) -> None:
        """Return a range from :meth:`alloc_range` and drop its contents.

        No kernel counterpart: the VMM frees the memory behind a deleted slot.
        """
        check_int("pfn", pfn)
        check_count("npages", npages, minimum=1, bits=MAX_GFN_BITS, error=MemslotError)
        for p in [p for p in self._pages if pfn <= p < pfn + npages]:
            del self._pages[p]
            self._drop_views(p)
        self.allocated -= npages

    def _drop_views(self, pfn: int) -> None:
        for views in self.views.values():
            views.pop(pfn, None)

    def raw(self, pfn: int) -> bytearray:
        """The 4096 bytes of frame ``pfn``, created zero-filled on first use."""
        if type(pfn) is not int:  # the shadow walk reads frames here: one cheap test
            check_int("pfn", pfn)
        buf = self._pages.get(pfn)
        if buf is None:
            check_int("pfn", pfn)
            buf = self._pages[pfn] = bytearray(PAGE_SIZE)
        return buf

    def page(self, pfn: int) -> Page:
        """Frame ``pfn`` as a writable numpy ``uint64[512]`` view (no copy)."""
        return np.frombuffer(self.raw(pfn), dtype=np.uint64)

    def words(self, pfn: int, entry_size: int = 8) -> memoryview:
        """Frame ``pfn`` as a memoryview of 64-bit (or 32-bit) words, made once per frame."""
        if entry_size != 8 and entry_size != 4:
            raise AddressError(f"entry_size must be 4 or 8 bytes, got {entry_size!r}")
        if type(pfn) is not int:
            check_int("pfn", pfn)
        views = self.views[entry_size]
        view = views.get(pfn)
        if view is None:
            view = views[pfn] = memoryview(self.raw(pfn)).cast("Q" if entry_size == 8 else "I")
        return view

    @property
    def touched(self) -> int:
        """How many frames have contents (were read or written at least once)."""
        return len(self._pages)


class MemslotFlag(IntFlag):
    """Memslot flags, as ``KVM_MEM_*`` in ``include/uapi/linux/kvm.h``."""

    NONE = 0
    LOG_DIRTY_PAGES = 1 << 0
    READONLY = 1 << 1


# plain ints for the fault path: IntFlag arithmetic runs Python code on every operation
_READONLY, _LOG_DIRTY_PAGES = int(MemslotFlag.READONLY), int(MemslotFlag.LOG_DIRTY_PAGES)


@dataclass(slots=True)
class Memslot:
    """One memslot (``struct kvm_memory_slot``): guest frames ``base_gfn .. base_gfn+npages-1``.

    ``host_pfn`` is the first host frame of the run (KVM keeps a user address instead and pins
    pages on demand; the effect for the MMU is the same gfn -> pfn function).
    """

    slot_id: int
    base_gfn: int
    npages: int
    host_pfn: int
    flags: MemslotFlag = MemslotFlag.NONE
    dirty_bitmap: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, dtype=bool))
    # the two flags the fault path tests, as plain bools kept in step with ``flags`` by
    # __setattr__: a read-only slot (guest writes become MMIO exits), and dirty logging on
    readonly: bool = field(init=False, repr=False, compare=False)
    dirty_logging: bool = field(init=False, repr=False, compare=False)

    def __setattr__(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)
        if name == "flags":
            flags = int(value)  # type: ignore[call-overload]
            object.__setattr__(self, "readonly", bool(flags & _READONLY))
            object.__setattr__(self, "dirty_logging", bool(flags & _LOG_DIRTY_PAGES))

    def contains(self, gfn: int) -> bool:
        """True if ``gfn`` lies in this slot."""
        return self.base_gfn <= gfn < self.base_gfn + self.npages

    def gfn_to_pfn(self, gfn: int) -> int:
        """The host frame behind ``gfn`` (``__gfn_to_pfn_memslot``)."""
        return self.host_pfn + (gfn - self.base_gfn)

    @property
    def end_gfn(self) -> int:
        """One past the last gfn of the slot."""
        return self.base_gfn + self.npages


class Memslots:
    """The VM's memslots, sorted by gfn, with a generation bumped by every change.

    Mirrors ``struct kvm_memslots``. The generation is what MMIO sptes record (``kvm_memslots``
    ``generation``), so that a memslot change makes every cached "no memory here" answer stale.
    """

    def __init__(self, host: HostMemory, maxphyaddr: int = 52) -> None:
        self.host = check_instance("host", host, HostMemory, "a HostMemory", MemslotError)
        # Fix: MAXPHYADDR was not validated; 32..52 like CPUID (x86.check_maxphyaddr).
        self.maxphyaddr = check_maxphyaddr(maxphyaddr)
        self.generation = 0
        self._slots: list[Memslot] = []  # sorted by base_gfn
        self._starts: list[int] = []
        self._next_id = 0
        self._last_used: Memslot | None = None  # kvm_memslots.last_used_slot
        # views of guest frames by entry size, then gfn (GuestMemory.table_words fills them):
        # valid for one memslot layout, so every change empties them
        self.views: dict[int, dict[int, memoryview]] = {8: {}, 4: {}}

    def __iter__(self) -> Iterator[Memslot]:
        return iter(self._slots)

    def __len__(self) -> int:
        return len(self._slots)

    def find(self, gfn: int) -> Memslot | None:
        """The slot holding ``gfn``, or None (``gfn_to_memslot``).

        The slot found last is tried first, as ``search_memslots`` tries ``last_used_slot``;
        every memslot change forgets it.
        """
        slot = self._last_used
        if slot is not None and slot.base_gfn <= gfn < slot.base_gfn + slot.npages:
            return slot
        i = bisect.bisect_right(self._starts, gfn) - 1
        if i >= 0 and self._slots[i].contains(gfn):
            self._last_used = self._slots[i]
            return self._last_used
        return None

    def get(self, slot_id: int) -> Memslot:
        """The slot with id ``slot_id`` (``id_to_memslot``); MemslotError if there is none."""
        check_count("slot_id", slot_id, error=MemslotError)
        for slot in self._slots:
            if slot.slot_id == slot_id:
                return slot
        ids = [s.slot_id for s in self._slots]
        raise MemslotError(f"no memslot with id {slot_id}; existing ids: {ids}")

    def _check_range(
        self, base_gfn: int, npages: int, ignore: Memslot | None = None, name: str = "base_gfn"
    ) -> None:
        check_int(name, base_gfn, bits=MAX_GFN_BITS)
        check_count("npages", npages, minimum=1, bits=MAX_GFN_BITS, error=MemslotError)
        limit = 1 << (self.maxphyaddr - PAGE_SHIFT)
        if base_gfn + npages > limit:
            raise MemslotError(
                f"slot gfns {base_gfn:#x}..{base_gfn + npages - 1:#x} exceed MAXPHYADDR="
                f"{self.maxphyaddr} (last gfn {limit - 1:#x}); use a lower base or fewer pages"
            )
        for other in self._slots:
            if (
                other is not ignore
                and base_gfn < other.end_gfn
                and other.base_gfn < base_gfn + npages
            ):
                raise MemslotError(
                    f"slot gfns {base_gfn:#x}..{base_gfn + npages - 1:#x} overlap slot "
                    f"{other.slot_id} ({other.base_gfn:#x}..{other.end_gfn - 1:#x}); "
                    "delete or move it first"
                )

    def _commit(self) -> None:
        self._slots.sort(key=lambda s: s.base_gfn)
        self._starts = [s.base_gfn for s in self._slots]
        self._last_used = None
        for views in self.views.values():
            views.clear()
        self.generation += 1

    def add(self, base_gfn: int, npages: int, flags: MemslotFlag = MemslotFlag.NONE) -> Memslot:
        """Create a slot backed by fresh, zeroed host frames (``KVM_SET_USER_MEMORY_REGION``)."""
        # Fix: "RO", None and unknown bits were accepted or escaped as TypeError
        # (check_memory_region_flags refuses bits outside KVM_MEM_*).
        flags = check_flags("flags", flags, MemslotFlag, MemslotError)
        self._check_range(base_gfn, npages)
        slot = Memslot(self._next_id, base_gfn, npages, self.host.alloc_range(npages), flags)
        self._next_id += 1
        if slot.dirty_logging:
            slot.dirty_bitmap = np.zeros(npages, dtype=bool)
        self._slots.append(slot)
        self._commit()
        return slot

    def delete(self, slot_id: int) -> Memslot:
        """Remove a slot and free its host frames (``KVM_MR_DELETE``)."""
        slot = self.get(slot_id)
        self._slots.remove(slot)
        self.host.free_range(slot.host_pfn, slot.npages)
        self._commit()
        return slot

    def move(self, slot_id: int, new_base_gfn: int) -> Memslot:
        """Move a slot to new gfns; the contents go with it (``KVM_MR_MOVE``)."""
        slot = self.get(slot_id)
        self._check_range(new_base_gfn, slot.npages, ignore=slot, name="new_base_gfn")
        slot.base_gfn = new_base_gfn
        self._commit()
        return slot

    def set_flags(self, slot_id: int, flags: MemslotFlag) -> Memslot:
        """Change a slot's flags (``KVM_MR_FLAGS_ONLY``); enabling dirty logging clears the log.

        Only ``LOG_DIRTY_PAGES`` may change: like ``kvm_set_memory_region``, which returns
        -EINVAL when ``KVM_MEM_READONLY`` differs from the existing slot's, a slot's
        read-only bit is fixed at creation (sptes made for it would keep the old rights).
        """
        slot = self.get(slot_id)
        flags = check_flags("flags", flags, MemslotFlag, MemslotError)
        # Fix: READONLY was flipped on a live slot, leaving writable sptes over a ROM.
        if (flags ^ slot.flags) & MemslotFlag.READONLY:
            have = "read-only" if slot.readonly else "read-write"
            raise MemslotError(
                f"slot {slot_id} is {have}; KVM refuses to change MemslotFlag.READONLY on an "
                "existing slot (only LOG_DIRTY_PAGES may change): delete the slot and add it "
                "again with the flags you want"
            )
        if flags & MemslotFlag.LOG_DIRTY_PAGES and not slot.dirty_logging:
            slot.dirty_bitmap = np.zeros(slot.npages, dtype=bool)
        if not flags & MemslotFlag.LOG_DIRTY_PAGES:
            slot.dirty_bitmap = np.zeros(0, dtype=bool)
        slot.flags = flags
        self._commit()
        return slot


class GuestMemory:
    """Guest physical memory: what the guest reaches at a guest physical address (gpa).

    ``GuestMemory(size)`` creates one read-write memslot covering ``[0, size)``; add more with
    ``memory.slots.add``. Reads and writes are little-endian, 1, 2, 4 or 8 bytes, and may cross
    a page boundary. A gpa outside every memslot raises :class:`AddressError` here; the walker
    and the MMU ask :meth:`table_words` / ``slots.find`` first and turn it into what KVM does.
    """

    def __init__(
        self, size: int = 0, *, host: HostMemory | None = None, maxphyaddr: int = 52
    ) -> None:
        # Fix: GuestMemory(None) was silently an empty memory.
        check_int("size", size)
        if host is not None:
            check_instance("host", host, HostMemory, "a HostMemory or None", MemslotError)
        self.host = host if host is not None else HostMemory()
        self.slots = Memslots(self.host, maxphyaddr)
        # the views table_words gave, by entry size then gfn; the walker reads through them
        # and calls table_words only for a gfn not there. Emptied by every memslot change.
        self.views = self.slots.views
        if size:
            if size & PAGE_MASK:
                raise AddressError(f"size={size:#x} must be a multiple of the 4 KiB page size")
            self.slots.add(0, size >> PAGE_SHIFT)

    # -- gfn -> host frame -------------------------------------------------------------------

    def slot_of(self, gfn: int) -> Memslot:
        """The slot holding ``gfn``; :class:`AddressError` naming the gfn if none does."""
        check_int("gfn", gfn, bits=MAX_GFN_BITS)  # Fix: a non-int gfn escaped as TypeError
        slot = self.slots.find(gfn)
        if slot is None:
            raise AddressError(
                f"gfn {gfn:#x} (gpa {gfn << PAGE_SHIFT:#x}) is not in any memslot; "
                f"add a slot that covers it or use an address inside guest memory"
            )
        return slot

    def gfn_to_pfn(self, gfn: int) -> int:
        """The host frame backing ``gfn`` (``gfn_to_pfn``)."""
        return self.slot_of(gfn).gfn_to_pfn(gfn)

    def page(self, gfn: int) -> Page:
        """Guest frame ``gfn`` as a writable numpy ``uint64[512]`` view."""
        return self.host.page(self.gfn_to_pfn(gfn))

    def table_words(self, gfn: int, entry_size: int = 8) -> memoryview | None:
        """Frame ``gfn`` as a memoryview of entries, or None if no memslot backs it.

        The walker's fast path: the view is kept in :attr:`views` until the memslots change.
        """
        views = self.views.get(entry_size)
        if views is None:
            raise AddressError(f"entry_size must be 4 or 8 bytes, got {entry_size!r}")
        words = views.get(gfn)
        if words is None:
            slot = self.slots.find(gfn)
            if slot is None:
                return None
            words = views[gfn] = self.host.words(slot.gfn_to_pfn(gfn), entry_size)
        return words

    # -- byte access ---------------------------------------------------------------------------

    def read_bytes(self, gpa: int, size: int) -> bytes:
        """``size`` bytes from ``gpa``, crossing pages if needed."""
        check_int("gpa", gpa, bits=52)
        # Fix: a negative or non-int size used to return b"" or escape as TypeError.
        check_count("size", size, bits=52)
        out = bytearray()
        while size > 0:
            off = gpa & PAGE_MASK
            n = min(size, PAGE_SIZE - off)
            out += self.host.raw(self.gfn_to_pfn(gpa >> PAGE_SHIFT))[off : off + n]
            gpa, size = gpa + n, size - n
        return bytes(out)

    def write_bytes(self, gpa: int, data: bytes | bytearray | memoryview) -> None:
        """Store ``data`` at ``gpa``, crossing pages if needed."""
        check_int("gpa", gpa, bits=52)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise AddressError(f"data must be bytes, bytearray or memoryview, got {data!r}")
        data = bytes(data)
        # Fix: resolve every frame before storing anything, so that a write running off the
        # end of guest memory raises without having changed the first page.
        chunks = []
        pos = 0
        while pos < len(data):
            off = (gpa + pos) & PAGE_MASK
            n = min(len(data) - pos, PAGE_SIZE - off)
            chunks.append((self.gfn_to_pfn((gpa + pos) >> PAGE_SHIFT), off, pos, n))
            pos += n
        for pfn, off, pos, n in chunks:
            self.host.raw(pfn)[off : off + n] = data[pos : pos + n]

    def read(self, gpa: int, size: int = 8) -> int:
        """A little-endian integer of ``size`` (1, 2, 4 or 8) bytes at ``gpa``."""
        _check_size(size)
        return int.from_bytes(self.read_bytes(gpa, size), "little")

    def write(self, gpa: int, value: int, size: int = 8) -> None:
        """Store ``value`` as a little-endian integer of ``size`` (1, 2, 4 or 8) bytes."""
        _check_size(size)
        check_int("value", value, bits=8 * size)
        self.write_bytes(gpa, value.to_bytes(size, "little"))

    # -- dirty logging -------------------------------------------------------------------------

    def mark_page_dirty(self, gfn: int) -> None:
        """Record a write to ``gfn`` in its slot's dirty log, if enabled (``mark_page_dirty``)."""
        if gfn.__class__ is not int or not 0 <= gfn < 1 << MAX_GFN_BITS:  # one cheap test
            check_int("gfn", gfn, bits=MAX_GFN_BITS)
        slot = self.slots.find(gfn)
        if slot is not None and slot.dirty_logging:
            slot.dirty_bitmap[gfn - slot.base_gfn] = True


def _check_size(size: int) -> None:
    # Fix: 8.0 or True compared equal to a valid size and failed later with a TypeError.
    if isinstance(size, bool) or not isinstance(size, int) or size not in (1, 2, 4, 8):
        raise AddressError(f"access size must be 1, 2, 4 or 8 bytes, got {size!r}")
