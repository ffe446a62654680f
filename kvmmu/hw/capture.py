"""Real page tables: a booted Linux x86-64 guest, captured under QEMU, loaded as guest memory.

Hand-made tables teach the rules; a kernel's own tables show what the rules are for: the direct
map in 2 MiB and 1 GiB pages, the kernel image split into 4 KiB pages where text ends and
read-only data begins, vmalloc'ed stacks, the ESPFIX area that maps one page 65536 times, and a
busy user process (``busybox sh``) with its text, heap and stack. The captures under
``kvmmu/data/linux-guest/`` (package data, read through :mod:`importlib.resources`) were
taken by ``scripts/capture_linux_guest.py``: QEMU (TCG) booted a stock Debian kernel, the vCPU
was stopped while it ran in user mode, and the script kept the registers, every page-table page
reachable from CR3, and QEMU's own view of the tables as the answer key:

* ``info tlb`` (``tlb_info_la48`` / ``tlb_info_la57`` in QEMU's ``target/i386/monitor.c``):
  one line per present leaf, the linear address, the physical address and the leaf's flags;
* ``info mem`` (``mem_info_la48``): maximal runs of linear addresses whose combined U/S and
  R/W rights (the AND over every level) are equal.

With page-table isolation (``arch/x86/mm/pti.c``) a process has two PGDs in one 8 KiB
allocation: the kernel one and, 4 KiB above it, the user one, whose kernel half maps little
more than the entry code. A PTI capture holds both, as two *views*.

:func:`load_capture` turns a capture into a :class:`~kvmmu.hw.memory.GuestMemory` plus the
:class:`~kvmmu.hw.walk.CpuState` of each view, so that :func:`kvmmu.hw.walk.walk` can translate any
address the guest had mapped; :func:`ptdump` lists every present leaf, as the kernel's
``arch/x86/mm/dump_pagetables.c`` does.
"""

from __future__ import annotations

import functools
import json
import lzma
import re
import zipfile
from dataclasses import dataclass, replace
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kvmmu.errors import KvmmuError, check_count, check_instance, check_int
from kvmmu.hw.memory import GuestMemory
from kvmmu.hw.walk import CpuState
from kvmmu.hw.x86 import PAGE_SHIFT, PAGE_SIZE, Cr4, Pte, describe_flags
from kvmmu.reference import DATA_DIR as PACKAGE_DATA

# Where the captures live: package data, so an installed wheel has them too.
DATA_DIR: Path | Traversable = PACKAGE_DATA / "linux-guest"
# A folder of captures: the package's own, or any directory a caller names.
Folder = Path | Traversable

# The physical-address masks QEMU's info tlb applies before printing (monitor.c): bits 12..49
# of a 4 KiB PTE, 21..49 of a 2 MiB PDE, 30..49 of a 1 GiB PDPTE.
QEMU_ADDRESS_MASK = {1: 0x3_FFFF_FFFF_F000, 2: 0x3_FFFF_FFE0_0000, 3: 0x3_FFFF_C000_0000}
# QEMU prints PS ('P') only for large leaves: at level 1 bit 7 is PAT and it is cleared first.
TLB_FLAGS = ("xd", "global", "ps", "dirty", "accessed", "pcd", "pwt", "user", "writable")

_TLB_LINE = re.compile(r"([0-9a-f]{16}): ([0-9a-f]{16}) ([-X][-G][-P][-D][-A][-C][-T][-U][-W])")
_MEM_LINE = re.compile(r"([0-9a-f]{16})-([0-9a-f]{16}) ([0-9a-f]{16}) ([-u])r([-w])")
_TLB_LINES = re.compile(f"^{_TLB_LINE.pattern}$", re.MULTILINE)
_MEM_LINES = re.compile(f"^{_MEM_LINE.pattern}$", re.MULTILINE)


class CaptureError(KvmmuError, ValueError):
    """A capture folder is missing, incomplete or does not parse."""


class MissingCaptureError(CaptureError, FileNotFoundError):
    """No capture of that name (or no data folder at all)."""


@dataclass(frozen=True, slots=True)
class CaptureView:
    """One top-level table of a capture and QEMU's answers for it.

    ``cpu`` holds the registers QEMU reported at the stop, with CR3 naming this view's root;
    ``info_tlb`` and ``info_mem`` are QEMU's monitor output parsed by :func:`parse_info_tlb`
    and :func:`parse_info_mem` (``info_mem`` is None where it was not captured); the raw text
    is kept too, for reading beside the tables.
    """

    name: str
    cpu: CpuState
    info_tlb: pd.DataFrame
    info_mem: pd.DataFrame | None
    info_tlb_text: str
    info_mem_text: str | None
    info_registers: str


@dataclass(frozen=True, slots=True)
class Capture:
    """A booted Linux guest's page tables, as guest memory plus CPU state.

    ``memory`` covers the guest's RAM as one memslot and holds only the captured table pages
    (everything else reads as zeros, so a walk works but the data it reaches is not there);
    ``cpu`` is the user view's state, ``kernel_cr3`` the second CR3 of a PTI capture (None
    without PTI); ``views`` maps ``"user"`` (and ``"kernel"``) to :class:`CaptureView`;
    ``metadata`` is ``capture.json``: packages, the QEMU command line, the kernel command line,
    timings.
    """

    name: str
    memory: GuestMemory
    cpu: CpuState
    kernel_cr3: int | None
    views: dict[str, CaptureView]
    table_gpas: tuple[int, ...]
    metadata: dict[str, Any]
    console: str

    @property
    def info_tlb(self) -> pd.DataFrame:
        """QEMU's ``info tlb`` for the user view."""
        return self.views["user"].info_tlb

    @property
    def info_mem(self) -> pd.DataFrame | None:
        """QEMU's ``info mem`` for the user view, or None where it was not captured."""
        return self.views["user"].info_mem

    @property
    def kernel_cpu(self) -> CpuState | None:
        """The CPU state with the kernel CR3 loaded (PTI captures only)."""
        view = self.views.get("kernel")
        return None if view is None else view.cpu


def list_captures(data_dir: Folder | None = None) -> list[str]:
    """Names of the captures under ``kvmmu/data/linux-guest/`` (folders holding ``capture.json``).

    No kernel counterpart.
    """
    root = _data_dir(data_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "capture.json").is_file())


def load_capture(name: str, data_dir: Folder | None = None) -> Capture:
    """Load capture ``name`` into guest memory and CPU state, in one call.

    Raises :class:`MissingCaptureError` naming the captures that exist when there is no such
    capture, and :class:`CaptureError` when a file is missing or does not parse. ``data_dir``
    names another folder of captures (default: the package's own, :data:`DATA_DIR`).

    No kernel counterpart.
    """
    root = _data_dir(data_dir)
    folder = root / _check_name(name)
    if not (folder / "capture.json").is_file():
        known = list_captures(root)
        hint = (
            f"known captures: {', '.join(known)}"
            if known
            else f"data_dir {root} holds none; run scripts/capture_linux_guest.py to make them"
        )
        raise MissingCaptureError(f"no capture named {name!r} in {root}; {hint}")
    metadata = _read_json(folder / "capture.json")
    try:
        maxphyaddr = int(metadata["maxphyaddr"])
        ram_bytes = int(metadata["ram_mib"]) << 20
        registers = metadata["registers"]
        views_meta = metadata["views"]
        base = CpuState(
            cr0=_hex(registers["cr0"]),
            cr3=_hex(registers["cr3"]),
            cr4=_hex(registers["cr4"]),
            efer=_hex(registers["efer"]),
            cpl=int(registers["cpl"]),
            rflags=_hex(registers.get("rfl", "0x2")),
            maxphyaddr=maxphyaddr,
            gbpages=bool(metadata["gbpages"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CaptureError(
            f"{folder / 'capture.json'} lacks or garbles {exc}; rerun "
            f"scripts/capture_linux_guest.py --only {name}"
        ) from exc

    memory = GuestMemory(ram_bytes, maxphyaddr=maxphyaddr)
    gpas = _load_tables(folder / "tables.npz", memory)

    views: dict[str, CaptureView] = {}
    for view_name, files in views_meta.items():
        tlb_text = _read_text(folder / files["info_tlb"])
        mem_file = files.get("info_mem")
        mem_text = None if mem_file is None else _read_text(folder / mem_file)
        views[view_name] = CaptureView(
            name=view_name,
            cpu=replace(base, cr3=_hex(files["cr3"])),
            info_tlb=parse_info_tlb(tlb_text),
            info_mem=None if mem_text is None else parse_info_mem(mem_text),
            info_tlb_text=tlb_text,
            info_mem_text=mem_text,
            info_registers=_read_text(folder / files["info_registers"]),
        )
    if "user" not in views:
        raise CaptureError(f"{folder / 'capture.json'} has no 'user' view; rerun the capture")
    kernel = views.get("kernel")
    console_path = folder / "console.log"
    return Capture(
        name=name,
        memory=memory,
        cpu=views["user"].cpu,
        kernel_cr3=None if kernel is None else kernel.cpu.cr3,
        views=views,
        table_gpas=gpas,
        metadata=metadata,
        console=console_path.read_text() if console_path.is_file() else "",
    )


# --------------------------------------------------------------------------------------------
# QEMU's monitor output
# --------------------------------------------------------------------------------------------


def parse_info_tlb(text: str) -> pd.DataFrame:
    """QEMU's ``info tlb`` as a DataFrame: one row per present leaf.

    Columns: ``gva`` (canonical linear address), ``gpa`` (the leaf's physical address, masked
    as QEMU masks it), ``flags`` (QEMU's nine characters ``XGPDACTUW``) and one bool column per
    flag (``xd``, ``global``, ``ps``, ``dirty``, ``accessed``, ``pcd``, ``pwt``, ``user``,
    ``writable``). Addresses are ``uint64``.
    """
    check_instance("text", text, str, "the text of info tlb (a str)", CaptureError)
    rows = _parse_lines(text, _TLB_LINES, "info tlb")
    flags = [row[2] for row in rows]
    frame = pd.DataFrame(
        {
            "gva": _hex_words([row[0] for row in rows]),
            "gpa": _hex_words([row[1] for row in rows]),
            "flags": pd.Series(flags, dtype=object),
        }
    )
    chars = np.frombuffer("".join(flags).encode(), dtype="S1").reshape(-1, len(TLB_FLAGS))
    for position, column in enumerate(TLB_FLAGS):
        frame[column] = chars[:, position] != b"-"
    return frame


def _parse_lines(text: str, pattern: re.Pattern[str], what: str) -> list[tuple[str, ...]]:
    """The groups of every non-blank line of ``text``, each of which must match ``pattern``.

    One regular-expression pass over the whole text; only when some line does not match is it
    read again line by line, to name the first bad one.
    """
    lines = [line for line in (raw.strip() for raw in text.splitlines()) if line]
    rows: list[tuple[str, ...]] = pattern.findall("\n".join(lines))
    if len(rows) != len(lines):
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip() and pattern.fullmatch(line.strip()) is None:
                raise CaptureError(f"{what} line {number} does not parse: {line!r}")
    return rows


def _hex_words(digits: list[str]) -> np.ndarray:
    """Sixteen-digit hex strings as ``uint64`` values, decoded in one call."""
    words = np.frombuffer(bytes.fromhex("".join(digits)), dtype=">u8")
    return words.astype(np.uint64)


def parse_info_mem(text: str) -> pd.DataFrame:
    """QEMU's ``info mem`` as a DataFrame: one row per run of equal rights.

    Columns: ``start``, ``end`` (exclusive) and ``size`` (``uint64``; QEMU prints ``end`` and
    ``size`` through the same sign extension as ``start``, which is undone here so that
    ``end - start == size``), ``user`` and ``writable`` (the AND of U/S and of R/W over every
    level), and ``rights``, QEMU's three characters.
    """
    check_instance("text", text, str, "the text of info mem (a str)", CaptureError)
    rows = _parse_lines(text, _MEM_LINES, "info mem")
    start = _hex_words([row[0] for row in rows])
    size = _hex_words([row[2] for row in rows])
    user = np.array([row[3] == "u" for row in rows], dtype=bool)
    writable = np.array([row[4] == "w" for row in rows], dtype=bool)
    return pd.DataFrame(
        {
            "start": start,
            "end": start + size,  # wraps at 2**64 as the exclusive end of the top run does
            "size": size,
            "user": user,
            "writable": writable,
            "rights": pd.Series([f"{row[3]}r{row[4]}" for row in rows], dtype=object),
        }
    )


def qemu_tlb_fields(pte: int, level: int) -> tuple[int, str]:
    """The physical address and flags QEMU's ``info tlb`` prints for a leaf at ``level``.

    ``print_pte`` masks the address by the page size and clears bit 7 of a 4 KiB PTE (it is
    PAT there, not PS) before printing ``XGPDACTUW``; this is the same projection, so a
    walker's leaf entry can be compared with a line of ``info tlb``.
    """
    check_int("pte", pte)
    if not isinstance(level, int) or isinstance(level, bool) or level not in QEMU_ADDRESS_MASK:
        raise CaptureError(f"level must be 1, 2 or 3 (a leaf's level), got {level!r}")
    if level == 1:
        pte &= ~int(Pte.PAGE_SIZE)
    return pte & QEMU_ADDRESS_MASK[level], describe_flags(pte)


_FLAG_BITS = int(
    Pte.XD
    | Pte.GLOBAL
    | Pte.PAGE_SIZE
    | Pte.DIRTY
    | Pte.ACCESSED
    | Pte.PCD
    | Pte.PWT
    | Pte.USER
    | Pte.WRITABLE
)


@functools.cache
def _flag_string(flag_bits: int, level: int) -> str:
    return qemu_tlb_fields(flag_bits, level)[1]


def _qemu_tlb_fields_cached(pte: int, level: int) -> tuple[int, str]:
    """:func:`qemu_tlb_fields`, with the flag string looked up by the entry's flag bits."""
    return pte & QEMU_ADDRESS_MASK[level], _flag_string(pte & _FLAG_BITS, level)


# --------------------------------------------------------------------------------------------
# ptdump
# --------------------------------------------------------------------------------------------


PTDUMP_LIMIT = 1 << 18
"""Rows :func:`ptdump` lists by default: a booted Linux guest has some 10**5 leaves."""


def ptdump(memory: GuestMemory, cpu: CpuState, *, limit: int = PTDUMP_LIMIT) -> pd.DataFrame:
    """Every present leaf reachable from ``cpu.cr3``, in address order (4- and 5-level paging).

    The traversal of ``arch/x86/mm/dump_pagetables.c`` and of QEMU's ``info tlb``: it visits
    every present entry, follows table pointers and stops at PTEs and at entries with PS set
    at the PDE and PDPTE levels. It translates nothing and checks no rights or reserved bits;
    that is the walker's job. Columns: ``gva``, ``level``, ``page_size``, ``pte`` (the full
    leaf entry, ``uint64``), and ``gpa`` and ``flags`` as QEMU prints them.

    At most ``limit`` rows are listed; ``attrs`` holds ``leaves`` (all leaves, counted with
    each shared table memoised, so a self-referencing root finishes at once), ``elided`` and
    ``cyclic`` (some table is reached again below itself).
    """
    check_instance("memory", memory, GuestMemory, "a GuestMemory", CaptureError)
    check_instance("cpu", cpu, CpuState, "a CpuState", CaptureError)
    check_count("limit", limit, error=CaptureError)
    levels = 5 if cpu.cr4 & Cr4.LA57 else 4
    va_bits = 57 if levels == 5 else 48
    sign, high = 1 << (va_bits - 1), ((1 << 64) - 1) ^ ((1 << va_bits) - 1)  # canonicalize()
    address_mask = ((1 << cpu.maxphyaddr) - 1) & ~(PAGE_SIZE - 1)
    rows: list[tuple[int, int, int]] = []
    cache: dict[tuple[int, int], list[tuple[int, int, bool]]] = {}
    counts: dict[tuple[int, int], int] = {}
    states: set[tuple[int, int, frozenset[int]]] = set()  # walk states seen by the cycle check

    def entries(table: int, level: int) -> list[tuple[int, int, bool]]:
        """(index, entry, is_leaf) of the present entries, each table read once."""
        if (table, level) not in cache:
            words = memory.table_words(table >> PAGE_SHIFT)
            if words is None:
                raise CaptureError(f"table at gpa {table:#x} lies outside the captured memory")
            page = np.asarray(words)
            cache[(table, level)] = [
                (i, e, level == 1 or (level in (2, 3) and bool(e & Pte.PAGE_SIZE)))
                for i in np.flatnonzero(page & int(Pte.PRESENT)).tolist()
                for e in (int(page[i]),)
            ]
        return cache[(table, level)]

    def count(table: int, level: int) -> int:
        if (table, level) not in counts:
            counts[(table, level)] = sum(
                1 if leaf else count(e & address_mask, level - 1)
                for _, e, leaf in entries(table, level)
            )
        return counts[(table, level)]

    def revisits(table: int, level: int, path: frozenset[int]) -> bool:
        """True if a walk from here uses a table already on ``path`` (or this one) again."""
        path = path | {table}
        if (table, level, path) in states:
            return False
        states.add((table, level, path))
        subs = {e & address_mask for _, e, leaf in entries(table, level) if not leaf}
        return any(sub in path or revisits(sub, level - 1, path) for sub in subs)

    def visit(table: int, level: int, base: int) -> None:
        shift = PAGE_SHIFT + 9 * (level - 1)
        for index, entry, leaf in entries(table, level):
            if len(rows) >= limit:
                return
            gva = base | (index << shift)
            if leaf:
                rows.append((gva | high if gva & sign else gva, level, entry))
            else:
                visit(entry & address_mask, level - 1, gva)

    root = cpu.cr3 & address_mask
    total = count(root, levels)
    cyclic = revisits(root, levels, frozenset())
    visit(root, levels, 0)
    fields = [_qemu_tlb_fields_cached(pte, level) for _, level, pte in rows]
    frame = pd.DataFrame(
        {
            "gva": np.array([r[0] for r in rows], dtype=np.uint64),
            "level": np.array([r[1] for r in rows], dtype=np.int64),
            "page_size": np.array(
                [1 << (PAGE_SHIFT + 9 * (r[1] - 1)) for r in rows], dtype=np.int64
            ),
            "pte": np.array([r[2] for r in rows], dtype=np.uint64),
            "gpa": np.array([f[0] for f in fields], dtype=np.uint64),
            "flags": pd.Series([f[1] for f in fields], dtype=object),
        }
    )
    frame.attrs.update(leaves=total, elided=total - len(rows), cyclic=cyclic)
    return frame


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _hex(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        return int(value, 16)
    raise ValueError(f"expected a hex string, got {value!r}")


def _data_dir(data_dir: object) -> Folder:
    """``data_dir`` as a folder (the package's captures when None)."""
    if data_dir is None:
        return DATA_DIR
    if isinstance(data_dir, str):
        data_dir = Path(data_dir)
    if isinstance(data_dir, Traversable):
        return data_dir
    return check_instance("data_dir", data_dir, Path, "a Path (or str) or None", CaptureError)


def _check_name(name: object) -> str:
    """A capture name is one folder name: no separator, no ``..``, nothing hidden."""
    # Fix: "../x" reached folders outside the data directory.
    name = check_instance("name", name, str, "a capture name (see list_captures())", CaptureError)
    if not name or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise CaptureError(
            f"capture name {name!r} must be one folder name (no '/', '\\' or '..'); "
            "see list_captures()"
        )
    return name


def _read_json(path: Folder) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CaptureError(f"{path} does not load ({exc}); rerun the capture script") from exc
    if not isinstance(data, dict):
        raise CaptureError(f"{path} should hold a JSON object; rerun the capture script")
    return data


def _read_text(path: Folder) -> str:
    """A text file, xz-compressed if its name ends in ``.xz``."""
    if not path.is_file():
        raise CaptureError(f"{path} is missing; rerun scripts/capture_linux_guest.py")
    raw = path.read_bytes()
    try:
        return (lzma.decompress(raw) if path.name.endswith(".xz") else raw).decode()
    except (lzma.LZMAError, EOFError, UnicodeDecodeError) as exc:
        raise CaptureError(f"{path} is damaged ({exc}); rerun the capture script") from exc


def _load_tables(path: Folder, memory: GuestMemory) -> tuple[int, ...]:
    """Write the captured table pages (``gpa`` -> ``uint64[512]``) into guest memory."""
    if not path.is_file():
        raise CaptureError(f"{path} is missing; rerun scripts/capture_linux_guest.py")
    try:
        with path.open("rb") as stream, np.load(stream) as npz:
            gpas = npz["gpa"].astype(np.uint64)
            pages = npz["pages"].astype("<u8")
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise CaptureError(
            f"{path} is damaged or lacks the gpa/pages arrays ({exc!r}); rerun the capture script"
        ) from exc
    if pages.shape != (len(gpas), 512):
        raise CaptureError(f"{path}: pages has shape {pages.shape}, expected ({len(gpas)}, 512)")
    for gpa, page in zip(gpas.tolist(), pages, strict=True):
        if gpa % PAGE_SIZE:
            raise CaptureError(f"{path}: table gpa {gpa:#x} is not page-aligned")
        memory.page(gpa >> PAGE_SHIFT)[:] = page
    return tuple(gpas.tolist())


__all__ = [
    "DATA_DIR",
    "PTDUMP_LIMIT",
    "Capture",
    "CaptureError",
    "CaptureView",
    "MissingCaptureError",
    "list_captures",
    "load_capture",
    "parse_info_mem",
    "parse_info_tlb",
    "ptdump",
    "qemu_tlb_fields",
]
