"""Lesson 1, guest page tables: the views, widget and exercises of
``notebooks/01_guest_page_tables.ipynb``.

One 4-level walk as text and as a picture, one address split in every paging mode, page-fault
error codes decoded, a walk widget, a real Linux guest's address space by region and what KPTI
removes from it, and two exercises: predict a walk, fix a broken guest table. Every function
takes plain inputs (the values a text box or a dropdown would give) and returns text, a pandas
DataFrame or a matplotlib Figure, computed by the hardware layer. The state shown is
``FNAME(walk_addr_generic)``'s (``paging_tmpl.h``); each function's docstring names the kernel
code it shows.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import numpy as np
import pandas as pd
from IPython.display import Image

from kvmmu.errors import (
    AddressError,
    KvmmuError,
    ModeError,
    check_bool,
    check_choice,
    check_count,
    check_instance,
    check_str,
)
from kvmmu.hw.capture import Capture, ptdump
from kvmmu.hw.guest import GuestPageTables
from kvmmu.hw.memory import GuestMemory
from kvmmu.hw.walk import CpuState, GeneralProtection, PageFault, WalkResult, WalkStep, walk
from kvmmu.hw.x86 import PAGE_SHIFT, Access, PagingMode, PfErr, Pte
from kvmmu.teaching.draw import (
    DPI,
    FAULT,
    FIGSIZE_WIDE,
    INK,
    PAGE,
    ROOT,
    TABLE,
    TABLE_NAMES,
    acc_text,
    arrow,
    box,
    check_frame,
    new_figure,
    style,
)
from kvmmu.teaching.problems import Check, ExerciseError, Problem, fail, ok, parse_int, seeded_rng
from kvmmu.teaching.ui import WIDGET_MEMO, figure_png, wire

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "ENTRY_ADDR",
    "KERNEL_HALF",
    "LINUX_X86_64_MAP",
    "FixProblem",
    "WalkProblem",
    "address_space_layout",
    "address_split",
    "check_fix",
    "check_walk",
    "decode_error_code",
    "fault_examples",
    "fix_answer",
    "fix_guest",
    "fix_problem",
    "kpti_comparison",
    "make_walk_widget",
    "parse_access",
    "parse_address",
    "region_of",
    "walk_problem",
    "walk_text",
    "walk_tree_figure",
]


# ------------------------------------------------------------------------------------------------
# What a reader types: addresses, access kinds, CPLs
# ------------------------------------------------------------------------------------------------


def parse_address(text: str | int) -> int:
    """An address typed by a reader (``0x7f00_1234``, ``4096``) as an int; no kernel counterpart.

    Raises :class:`AddressError` naming what to type instead.
    """
    return _address("text", text)


def _address(name: str, text: object) -> int:
    """:func:`parse_address` for the argument ``name`` (``address`` of a walk, say)."""
    if isinstance(text, bool) or not isinstance(text, int | str):
        shown = f"{type(text).__name__} {str(text)[:40]}"
        raise AddressError(f"{name} must be an int or a string such as '0x401000', not {shown}")
    if isinstance(text, int):
        value = text
    else:
        cleaned = text.strip().replace("_", "").replace("'", "")
        try:
            value = int(cleaned, 0)
        except ValueError:
            raise AddressError(
                f"{name}: could not read {text[:40]!r} as an address; type hex like 0x401000 "
                "or decimal"
            ) from None
    if value < 0 or value >> 64:
        raise AddressError(f"{name} {value:#x} does not fit in 64 bits; type 0 .. 2**64-1")
    return value


def parse_access(kind: str | Access) -> Access:
    """``"read"``, ``"write"`` or ``"fetch"`` as an :class:`Access`; no kernel counterpart."""
    if isinstance(kind, Access):
        return kind
    try:
        return Access(str(kind).strip().lower())
    except ValueError:
        raise ModeError(f"access kind must be 'read', 'write' or 'fetch', got {kind!r}") from None


def _check_cpl(cpl: int) -> int:
    if isinstance(cpl, bool) or cpl not in (0, 1, 2, 3):
        raise ModeError(f"cpl must be 0, 1, 2 or 3, got {cpl!r}")
    return cpl


# ------------------------------------------------------------------------------------------------
# The walk, as text and as a chain of tables
# ------------------------------------------------------------------------------------------------


def _walk_for(
    memory: GuestMemory, cpu: CpuState, address: str | int, access: str | Access, cpl: int
) -> tuple[int, Access, WalkResult | PageFault | GeneralProtection]:
    check_instance("memory", memory, GuestMemory, "a GuestMemory")
    check_instance("cpu", cpu, CpuState, "a CpuState (GuestPageTables.cpu())")
    gva = _address("address", address)
    kind = parse_access(access)
    regs = replace(cpu, cpl=_check_cpl(cpl))
    return gva, kind, walk(memory, regs, gva, kind, set_ad=False)


def _ad_to_set(steps: tuple[WalkStep, ...], mode: PagingMode, write: bool) -> list[str]:
    """Entries a successful walk marks accessed/dirty (``update_accessed_dirty_bits``)."""
    todo = []
    for i, step in enumerate(steps):
        if mode is PagingMode.PAE and step.level == 3:
            continue  # PDPTEs have no accessed bit
        want = Pte.ACCESSED | (Pte.DIRTY if write and i == len(steps) - 1 else 0)
        missing = want & ~step.entry
        if missing:
            bits = "+".join(n for n, b in (("A", Pte.ACCESSED), ("D", Pte.DIRTY)) if missing & b)
            todo.append(f"{step.name} {bits}")
    return todo


def walk_text(
    memory: GuestMemory,
    cpu: CpuState,
    address: str | int,
    access: str | Access = "read",
    cpl: int = 0,
) -> str:
    """The walk of one access as readable lines, root first, then the result.

    Shows the state ``FNAME(walk_addr_generic)`` (``paging_tmpl.h``) goes through: each level's
    entry and decision (:meth:`WalkStep.describe`), then the gpa, or the fault with its decoded
    error code. The walk does not touch memory (``set_ad=False``); the last line says which
    accessed/dirty bits a real walk would set. ``address`` may be typed text (``"0x401000"``).
    """
    gva, kind, result = _walk_for(memory, cpu, address, access, cpl)
    head = f"{kind.value} of {gva:#x} at CPL {cpl} ({cpu.mode.value} paging)"
    if isinstance(result, GeneralProtection):
        return f"{head}\n#GP: {result.reason}"
    steps = result.trace if isinstance(result, WalkResult) else result.steps
    lines = [head, *(f"  {s.describe()}" for s in steps)]
    if isinstance(result, PageFault):
        lines.append(
            f"#PF error code {int(result.error_code):#x} ({_error_bits(int(result.error_code))}),"
            f" CR2={result.cr2:#x}: {result.reason}"
        )
    else:
        lines.append(
            f"gpa {result.gpa:#x} (gfn {result.gfn:#x}), {result.page_size >> 10} KiB page,"
            f" rights {acc_text(int(result.access))}"
        )
        todo = _ad_to_set(steps, result.mode, kind is Access.WRITE)
        lines.append("A/D bits the walk sets: " + (", ".join(todo) if todo else "none (all set)"))
    return "\n".join(lines)


_ERROR_BITS = (
    ("P", PfErr.PRESENT),
    ("W", PfErr.WRITE),
    ("U", PfErr.USER),
    ("RSVD", PfErr.RSVD),
    ("I/D", PfErr.FETCH),
    ("PK", PfErr.PK),
)


def _error_bits(code: int) -> str:
    names = [n for n, b in _ERROR_BITS if code & b]
    return "|".join(names) if names else "none"


def walk_tree_figure(
    memory: GuestMemory,
    cpu: CpuState,
    address: str | int,
    access: str | Access = "read",
    cpl: int = 0,
) -> Figure:
    """The walk of one access drawn as a chain: CR3, each table, then the page (or the fault).

    Each table box shows the table's gpa, the index, the entry's flags and the frame it points
    to (the whole entry is in :func:`walk_text`); each arrow carries the
    address bits that index the next table. The state is ``FNAME(walk_addr_generic)``'s.
    """
    gva, kind, result = _walk_for(memory, cpu, address, access, cpl)
    spec = cpu.mode.spec
    if spec.root_level == 0:
        raise ModeError("with paging off there is no walk to draw; pick a paging mode")
    fig = new_figure(FIGSIZE_WIDE, dpi=DPI)
    style(fig)
    ax = fig.add_subplot()
    ax.set_axis_off()
    if isinstance(result, GeneralProtection):
        box(ax, 0, 0, 3.2, 1.2, f"#GP\n{result.reason[:40]}", FAULT)
        ax.set_xlim(-2, 2)
        ax.set_ylim(-1, 1)
        return fig
    steps = result.trace if isinstance(result, WalkResult) else result.steps
    n = len(steps) + 2
    width = 1.9
    gap = 2.7
    ax.set_xlim(-width / 2 - 0.1, (n - 1) * gap + width / 2 + 0.1)
    ax.set_ylim(-1.05, 1.25)
    box(ax, 0, 0, width, 1.2, f"CR3\n{cpu.cr3:#x}", ROOT)
    for i, step in enumerate(steps, start=1):
        table_gpa = step.entry_gpa - step.index * spec.entry_size
        flags = "".join(
            c if step.entry & b else "-"
            for c, b in (
                ("P", Pte.PRESENT),
                ("W", Pte.WRITABLE),
                ("U", Pte.USER),
                ("A", Pte.ACCESSED),
                ("D", Pte.DIRTY),
                ("S", Pte.PAGE_SIZE),
                ("X", Pte.XD if spec.entry_size == 8 else 0),
            )
        )
        # the frame the entry points to; the whole 64-bit entry is in walk_text's trace
        target = step.entry & (0xFFFF_F000 if spec.entry_size == 4 else 0x000F_FFFF_FFFF_F000)
        text = f"{TABLE_NAMES[step.level]} @{table_gpa:#x}\n[{step.index}] {flags}\n-> {target:#x}"
        box(ax, i * gap, 0, width, 1.2, text, TABLE)
        low = spec.shift(step.level)
        bits = 2 if (spec.mode is PagingMode.PAE and step.level == 3) else spec.index_bits
        label = f"bits {low + bits - 1}:{low}\n= {step.index}"
        arrow(ax, (i - 1) * gap + width / 2, 0, i * gap - width / 2, 0, label)
    last = (n - 1) * gap
    if isinstance(result, WalkResult):
        rights = acc_text(int(result.access))
        text = f"{result.page_size >> 10} KiB page\ngpa {result.gpa:#x}\nrights {rights}"
        box(ax, last, 0, width, 1.2, text, PAGE)
        off_bits = result.page_size.bit_length() - 2
        arrow(ax, last - gap + width / 2, 0, last - width / 2, 0, f"bits {off_bits}:0\noffset")
    else:
        code = int(result.error_code)
        box(ax, last, 0, width, 1.2, f"#PF {code:#x}\n{_error_bits(code)}", FAULT)
        arrow(ax, last - gap + width / 2, 0, last - width / 2, 0, "fault", dashed=True)
    ax.text(
        0,
        -0.95,
        f"{kind.value} of {gva:#x} at CPL {cpl}",
        fontsize=9,
        color=INK,
        ha="left",
    )
    return fig


# ------------------------------------------------------------------------------------------------
# One address in every paging mode
# ------------------------------------------------------------------------------------------------


def address_split(address: str | int) -> pd.DataFrame:
    """How one linear address splits into table indices in each paging mode (SDM 4.3-4.5).

    One row per mode: the bits used, the index at each level (``PT_INDEX``; the PAE PDPT has a
    2-bit index) and the page offset. 32-bit and PAE paging use the low 32 bits; 4-level
    paging ignores bits 63:48 (they must copy bit 47), 5-level bits 63:57.
    """
    gva = _address("address", address)
    rows = []
    for mode in (PagingMode.BITS32, PagingMode.PAE, PagingMode.LEVEL4, PagingMode.LEVEL5):
        spec = mode.spec
        addr = gva & ((1 << spec.va_bits) - 1)
        row: dict[str, object] = {"mode": mode.value, "address bits": spec.va_bits}
        widths = []
        for level in range(5, 0, -1):
            col = f"L{level} index"
            if level > spec.root_level:
                row[col] = ""
                continue
            bits = 2 if (mode is PagingMode.PAE and level == 3) else spec.index_bits
            widths.append(str(bits))
            row[col] = f"{spec.index(addr, level):#x}"
        row["offset"] = f"{addr & 0xFFF:#05x}"
        row["split"] = "+".join([*widths, "12"])
        rows.append(row)
    return pd.DataFrame(rows).set_index("mode")


# ------------------------------------------------------------------------------------------------
# Page-fault error codes
# ------------------------------------------------------------------------------------------------


def decode_error_code(code: int) -> dict[str, int]:
    """The bits of a page-fault error code by name (``PFERR_*_MASK``; SDM 4.7).

    ``P`` is 0 for a not-present page and 1 for a protection violation; ``W`` a write; ``U`` a
    user-mode access; ``RSVD`` a reserved bit in some entry; ``I/D`` an instruction fetch;
    ``PK`` a protection-key violation.
    """
    check_count("code", code)  # an error code: a non-negative int of 64 bits at most
    return {name: int(bool(code & bit)) for name, bit in _ERROR_BITS}


def _fault_guest() -> tuple[GuestMemory, GuestPageTables]:
    memory = GuestMemory(8 << 20)
    pt = GuestPageTables(memory, PagingMode.LEVEL4, pke=True)
    pt.map(0x400000, 0x100000, writable=False, user=True)  # user text, read-only
    pt.map(0x600000, 0x101000, writable=True, user=True, nx=True)  # user data, XD
    pt.map(0x700000, 0x102000, writable=True, user=False)  # kernel page
    pt.map(0x800000, 0x103000, writable=True, user=True, pkey=1)  # protection key 1
    pt.map(0x900000, 0x104000, writable=True, user=True)
    pt.set_entry(0x900000, 1, pt.entry(0x900000, 1) | (1 << 51))  # reserved bit (MAXPHYADDR 40)
    return memory, pt


def fault_examples() -> pd.DataFrame:
    """A few faulting accesses on a small 4-level guest and their decoded error codes.

    Each row runs the walker (``FNAME(walk_addr_generic)``) and decodes ``PFERR_*`` bits. The
    guest has a read-only user page, an XD user page, a supervisor page, a page with
    protection key 1 (PKRU denies writes to it), a page with a reserved address bit, and a hole.
    """
    memory, pt = _fault_guest()
    pkru = 0b10 << 2  # key 1: write-disable
    cases = [
        ("read of an unmapped page", 0x500000, Access.READ, 3),
        ("user write to read-only text", 0x400000, Access.WRITE, 3),
        ("user read of a kernel page", 0x700000, Access.READ, 3),
        ("fetch from an XD data page", 0x600000, Access.FETCH, 3),
        ("kernel write to read-only text (WP=1)", 0x400000, Access.WRITE, 0),
        ("user write under pkey 1 (PKRU.WD1)", 0x800000, Access.WRITE, 3),
        ("read through a PTE with bit 51 set", 0x900000, Access.READ, 0),
    ]
    rows = []
    for what, gva, kind, cpl in cases:
        cpu = pt.cpu(cpl=cpl, pkru=pkru)
        result = walk(memory, cpu, gva, kind, set_ad=False)
        if not isinstance(result, PageFault):
            raise KvmmuError(f"the example {what!r} did not fault: a kvmmu bug")
        code = int(result.error_code)
        rows.append(
            {"access": what, "gva": f"{gva:#x}", "CPL": cpl, "error code": f"{code:#04x}"}
            | decode_error_code(code)
            | {"reason": result.reason}
        )
    return pd.DataFrame(rows).set_index("access")


# ------------------------------------------------------------------------------------------------
# Try it: the walk widget
# ------------------------------------------------------------------------------------------------


WIDGET_ACCESSES = ("read", "write", "fetch")
WIDGET_CPLS = (0, 3)
"""The walk widget's choices: access kinds, and CPLs (kernel, user)."""


def make_walk_widget(
    memory: GuestMemory,
    cpu: CpuState,
    address: str = "0x400123",
    access: str = "read",
    cpl: int = 3,
    *,
    draw: bool = False,
) -> Any:
    """Type an address, pick an access kind and a CPL, see the walk (:func:`walk_text`).

    With ``draw`` the chain picture (:func:`walk_tree_figure`) is shown under the text.
    Controls, in order: address (Text), access (Dropdown), CPL (Dropdown).
    No kernel counterpart.
    """
    check_instance("memory", memory, GuestMemory, "a GuestMemory")
    check_instance("cpu", cpu, CpuState, "a CpuState (GuestPageTables.cpu())")
    check_str("address", address)
    check_choice("access", access, WIDGET_ACCESSES)
    check_choice("cpl", cpl, WIDGET_CPLS)
    check_bool("draw", draw)
    text = widgets.Text(value=address, description="address")
    kind = widgets.Dropdown(options=["read", "write", "fetch"], value=access, description="access")
    level = widgets.Dropdown(options=[0, 3], value=cpl, description="CPL")

    drawn: OrderedDict[Hashable, Image] = OrderedDict()  # walk -> its picture, as a PNG

    def produce() -> object:
        trace = walk_text(memory, cpu, text.value, kind.value, level.value)
        if not draw:
            return trace
        # the memory may change between two moves, so the picture is remembered by what the
        # walk read, not by the controls' values
        walked = _walk_for(memory, cpu, text.value, kind.value, level.value)
        key = _walk_key(cpu, level.value, *walked)
        picture = drawn.pop(key, None)
        if picture is None:
            figure = walk_tree_figure(memory, cpu, text.value, kind.value, level.value)
            picture = Image(data=figure_png(figure))  # type: ignore[no-untyped-call]
        drawn[key] = picture
        while len(drawn) > WIDGET_MEMO:
            drawn.popitem(last=False)
        return trace, picture

    return wire([text, kind, level], produce)


def _walk_key(
    cpu: CpuState,
    cpl: int,
    gva: int,
    kind: Access,
    result: WalkResult | PageFault | GeneralProtection,
) -> Hashable:
    """Everything :func:`walk_tree_figure` draws: the access, CR3, and each level the walk read."""
    if isinstance(result, GeneralProtection):
        return (cpu.mode, cpl, gva, kind, result.reason)
    steps = result.trace if isinstance(result, WalkResult) else result.steps
    read = tuple((s.level, s.index, s.entry_gpa, s.entry) for s in steps)
    if isinstance(result, WalkResult):
        outcome: tuple[int, ...] = (result.page_size, result.gpa, int(result.access))
    else:
        outcome = (int(result.error_code),)
    return (cpu.mode, cpu.cr3, cpl, gva, kind, read, outcome)


# ------------------------------------------------------------------------------------------------
# A real kernel's address space, and KPTI
# ------------------------------------------------------------------------------------------------


# The Linux x86-64 virtual memory map with 4-level tables and KASLR off
# (Documentation/arch/x86/x86_64/mm.rst): start, end (inclusive), name.
LINUX_X86_64_MAP: tuple[tuple[int, int, str], ...] = (
    (0x0000_0000_0000_0000, 0x0000_7FFF_FFFF_FFFF, "user space (VMAs)"),
    (0xFFFF_8000_0000_0000, 0xFFFF_87FF_FFFF_FFFF, "guard hole (hypervisor)"),
    (0xFFFF_8800_0000_0000, 0xFFFF_887F_FFFF_FFFF, "LDT remap for PTI"),
    (0xFFFF_8880_0000_0000, 0xFFFF_C87F_FFFF_FFFF, "direct map of all RAM"),
    (0xFFFF_C880_0000_0000, 0xFFFF_C8FF_FFFF_FFFF, "hole"),
    (0xFFFF_C900_0000_0000, 0xFFFF_E8FF_FFFF_FFFF, "vmalloc / ioremap"),
    (0xFFFF_E900_0000_0000, 0xFFFF_E9FF_FFFF_FFFF, "hole"),
    (0xFFFF_EA00_0000_0000, 0xFFFF_EAFF_FFFF_FFFF, "vmemmap (struct page array)"),
    (0xFFFF_EB00_0000_0000, 0xFFFF_FDFF_FFFF_FFFF, "KASAN shadow / hole"),
    (0xFFFF_FE00_0000_0000, 0xFFFF_FE7F_FFFF_FFFF, "cpu_entry_area"),
    (0xFFFF_FE80_0000_0000, 0xFFFF_FEFF_FFFF_FFFF, "hole"),
    (0xFFFF_FF00_0000_0000, 0xFFFF_FF7F_FFFF_FFFF, "ESPFIX stacks"),
    (0xFFFF_FF80_0000_0000, 0xFFFF_FFEE_FFFF_FFFF, "hole"),
    (0xFFFF_FFEF_0000_0000, 0xFFFF_FFFE_FFFF_FFFF, "EFI runtime services"),
    (0xFFFF_FFFF_0000_0000, 0xFFFF_FFFF_7FFF_FFFF, "hole"),
    (0xFFFF_FFFF_8000_0000, 0xFFFF_FFFF_9FFF_FFFF, "kernel text, data, bss"),
    (0xFFFF_FFFF_A000_0000, 0xFFFF_FFFF_FEFF_FFFF, "modules"),
    (0xFFFF_FFFF_FF00_0000, 0xFFFF_FFFF_FFFF_FFFF, "fixmap, vsyscall"),
)


def _size_text(nbytes: int) -> str:
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if nbytes >= 1 << shift:
            value = nbytes / (1 << shift)
            return f"{value:.0f} {unit}" if value >= 10 else f"{value:.1f} {unit}"
    return f"{nbytes} B"


def region_of(gvas: np.ndarray) -> np.ndarray:
    """The index in :data:`LINUX_X86_64_MAP` of the region holding each address in ``gvas``.

    No kernel counterpart (``dump_pagetables.c`` walks the same regions).
    """
    array = check_instance("gvas", gvas, np.ndarray, "a numpy array of addresses")
    if array.dtype.kind not in "iu":
        raise AddressError(f"gvas must hold integer addresses, not {array.dtype}")
    starts = np.array([r[0] for r in LINUX_X86_64_MAP], dtype=np.uint64)
    return np.searchsorted(starts, gvas, side="right") - 1


def address_space_layout(leaves: pd.DataFrame) -> pd.DataFrame:
    """Group a 4-level ``ptdump`` by the regions of the Linux x86-64 memory map.

    ``leaves`` is :func:`kvmmu.hw.capture.ptdump` output (columns ``gva``, ``level``,
    ``page_size``, ``flags``). One row per region that has leaves: its PML4 slots, how many
    leaves of each size, the bytes mapped, and how many leaves a user access may use. The
    kernel side is ``arch/x86/mm/dump_pagetables.c``, which prints the same regions.
    """
    check_frame("leaves", leaves, ["gva", "level", "page_size", "flags"])
    if leaves.empty:
        return pd.DataFrame()
    gvas = leaves["gva"].to_numpy(dtype=np.uint64)
    region = region_of(gvas)
    sizes = leaves["page_size"].to_numpy(dtype=np.int64)
    user = leaves["flags"].str[7].eq("U").to_numpy()
    slots = ((gvas >> np.uint64(39)) & np.uint64(511)).astype(np.int64)
    rows = []
    for r in np.unique(region):
        sel = region == r
        start, _, name = LINUX_X86_64_MAP[int(r)]
        used = np.unique(slots[sel])
        slot_text = f"{used[0]}" if len(used) == 1 else f"{used[0]}-{used[-1]} ({len(used)})"
        rows.append(
            {
                "region": name,
                "start": f"{start:#018x}",
                "PML4 slots": slot_text,
                "4 KiB": int((sizes[sel] == 1 << 12).sum()),
                "2 MiB": int((sizes[sel] == 1 << 21).sum()),
                "1 GiB": int((sizes[sel] == 1 << 30).sum()),
                "mapped": _size_text(int(sizes[sel].sum())),
                "user leaves": int(user[sel].sum()),
            }
        )
    return pd.DataFrame(rows).set_index("region")


KERNEL_HALF = 0xFFFF_8000_0000_0000  # the first canonical upper-half (kernel) address


def kpti_comparison(capture: Capture) -> pd.DataFrame:
    """Kernel-half leaves and bytes mapped in each view of a capture, region by region.

    With page-table isolation (``arch/x86/mm/pti.c``) the user CR3's kernel half maps only what
    the CPU needs to enter and leave the kernel (``cpu_entry_area``, the entry text, ESPFIX);
    the kernel CR3 maps everything. One row per memory-map region of the kernel half, plus a
    total; two columns (leaves, bytes mapped) per view. A capture without PTI has one view.
    """
    check_instance("capture", capture, Capture, "a Capture (kvmmu.hw.capture.load_capture)")
    per_view: dict[str, pd.DataFrame] = {}
    for name, view in capture.views.items():
        dump = ptdump(capture.memory, view.cpu)
        gvas = dump["gva"].to_numpy(dtype=np.uint64)
        kernel = gvas >= np.uint64(KERNEL_HALF)
        frame = pd.DataFrame(
            {
                "region": [LINUX_X86_64_MAP[int(r)][2] for r in region_of(gvas[kernel])],
                "leaves": 1,
                "bytes": dump["page_size"].to_numpy(dtype=np.int64)[kernel],
            }
        )
        per_view[name] = frame.groupby("region", sort=False)[["leaves", "bytes"]].sum()
    order = [r[2] for r in LINUX_X86_64_MAP if any(r[2] in f.index for f in per_view.values())]
    table = pd.DataFrame(index=pd.Index([*order, "kernel half, total"], name="region"))
    for name, frame in per_view.items():
        leaves = frame["leaves"].reindex(order, fill_value=0)
        nbytes = frame["bytes"].reindex(order, fill_value=0)
        table[f"{name} CR3 leaves"] = [*leaves.astype(int).tolist(), int(leaves.sum())]
        table[f"{name} CR3 mapped"] = [
            _size_text(int(b)) if b else "-" for b in [*nbytes.tolist(), int(nbytes.sum())]
        ]
    return table


# ------------------------------------------------------------------------------------------------
# Exercise: predict a walk
# ------------------------------------------------------------------------------------------------

ENTRY_ADDR = ((1 << 52) - 1) & ~0xFFF  # address bits 51:12 of a 64-bit entry

_KINDS = {Access.READ: "read", Access.WRITE: "write", Access.FETCH: "instruction fetch"}
_A_KIND = {Access.READ: "a read", Access.WRITE: "a write", Access.FETCH: "an instruction fetch"}


def _table_dump(memory: GuestMemory, pt: GuestPageTables) -> list[str]:
    lines = []
    for gfn in pt.tables:
        words = memory.table_words(gfn, 8)
        assert words is not None
        entries = [(i, int(words[i])) for i in range(512) if words[i]]
        lines.append(f"table page at gpa {gfn << PAGE_SHIFT:#x}:")
        lines.extend(f"    [{i:3d}] = {e:#018x}" for i, e in entries)
    return lines


@dataclass(slots=True, repr=False)
class WalkProblem(Problem):
    """Predict a 4-level walk: the gpa an access reaches, or the #PF error code it raises."""

    seed: int | str
    gva: int
    access: Access
    cpl: int
    cpu: CpuState
    text: str
    memory: GuestMemory = field(repr=False)
    _result: WalkResult | PageFault = field(repr=False)


def walk_problem(seed: int | str) -> WalkProblem:
    """A fresh walk to predict, from ``seed``; no kernel counterpart (the walk itself is
    ``FNAME(walk_addr_generic)``).

    A 4-level guest with CR0.WP=1 and EFER.NXE=1 maps a few 4 KiB pages and a 2 MiB page with
    random rights; the problem lists every non-zero entry of every table page and asks for one
    access at one CPL.
    """
    rng = seeded_rng(seed)
    memory = GuestMemory(64 << 20)
    pt = GuestPageTables(memory, PagingMode.LEVEL4)
    base = rng.randrange(1, 256) << 39 | rng.randrange(0, 512) << 30
    small = base | rng.randrange(0, 256) << 21
    large = base | rng.randrange(256, 512) << 21
    picks = rng.sample(range(512), 3)
    rights = [
        {"writable": rng.random() < 0.6, "user": rng.random() < 0.7, "nx": rng.random() < 0.3}
        for _ in range(4)
    ]
    for n, index in enumerate(picks):
        pt.map(small | index << 12, rng.randrange(0x100, 0x2F00) << 12, **rights[n])
    pt.map(large, rng.randrange(1, 24) << 21, "2M", **rights[3])
    if rng.random() < 0.25:  # a supervisor-only page directory entry above the small pages
        pt.set_entry(small, 2, pt.entry(small, 2) & ~int(Pte.USER))
    target = rng.choice(["small", "small", "large", "large", "unmapped"])
    if target == "small":
        gva = small | rng.choice(picks) << 12 | rng.randrange(0, 0x1000)
    elif target == "large":
        gva = large | rng.randrange(0, 1 << 21)
    else:
        free = sorted(set(range(512)) - set(picks))
        gva = small | rng.choice(free) << 12 | rng.randrange(0, 0x1000)
    access = rng.choice([Access.READ, Access.READ, Access.WRITE, Access.FETCH])
    cpl = rng.choice([0, 3, 3])
    cpu = pt.cpu(cpl=cpl)
    result = walk(memory, cpu, gva, access, set_ad=False)
    assert isinstance(result, WalkResult | PageFault)
    lines = [
        f"4-level paging, CR0.WP=1, EFER.NXE=1, CR3 = {pt.cr3:#x}",
        f"access: {_A_KIND[access]} at gva {gva:#x} from CPL {cpl}",
        "every non-zero entry of every table page:",
        *_table_dump(memory, pt),
        'answer: the gpa (an int), or "fault 0x.." with the #PF error code',
    ]
    return WalkProblem(seed, gva, access, cpl, cpu, "\n".join(lines), memory, result)


_PF_BITS = (
    (PfErr.PRESENT, "bit 0 (P) is 1 for a protection violation, 0 for a not-present entry"),
    (PfErr.WRITE, "bit 1 (W/R) says whether the access was a write"),
    (PfErr.USER, "bit 2 (U/S) says whether the access came from CPL 3"),
    (PfErr.RSVD, "bit 3 (RSVD) is set only when an entry has a reserved bit set"),
    (PfErr.FETCH, "bit 4 (I/D) is set for instruction fetches (with EFER.NXE or SMEP on)"),
)


def _parse_walk_answer(answer: object) -> tuple[str, int]:
    if isinstance(answer, str):
        text = answer.strip().lower()
        for prefix in ("fault", "#pf", "pf"):
            if text.startswith(prefix):
                code = text[len(prefix) :].strip(" :=")
                return "fault", parse_int("the answer's error code", code)
    if isinstance(answer, PageFault):
        return "fault", int(answer.error_code)
    return "gpa", parse_int("the answer (a gpa)", answer)


def check_walk(problem: WalkProblem, answer: int | str) -> Check:
    """Check a predicted walk outcome; the hint names the rule that was missed, not the value.

    ``answer`` is a gpa (int or ``"0x..."``) or ``"fault 0x.."`` with an error code.
    """
    check_instance("problem", problem, WalkProblem, "a WalkProblem (walk_problem)", ExerciseError)
    kind, value = _parse_walk_answer(answer)
    result = problem._result
    if isinstance(result, PageFault):
        if kind == "gpa":
            return fail(
                "this access does not complete: some entry on the path is not present or does "
                f"not allow a {_KINDS[problem.access]} from CPL {problem.cpl}; check P, R/W, "
                "U/S and XD at every level"
            )
        if value == int(result.error_code):
            return ok(f"the walk faults with that error code ({result.reason}).")
        for bit, rule in _PF_BITS:
            if (value ^ int(result.error_code)) & bit:
                return fail(f"the error code is wrong in one bit at least: {rule}")
        return fail("the error code has bits that a #PF error code does not use here")
    if kind == "fault":
        return fail(
            "the walk succeeds: every entry on the path is present and allows this access; "
            "which right did you think was missing?"
        )
    if value == result.gpa:
        return ok(f"a {result.page_size >> 10} KiB page, rights checked at every level.")
    if value & 0xFFF != problem.gva & 0xFFF:
        return fail("the low 12 bits of the gpa are the gva's page offset; yours differ")
    if result.level == 2:
        as_4k = (result.pte & ENTRY_ADDR & ~0x1F_FFFF) | (problem.gva & 0xFFF)
        if value == as_4k:
            return fail(
                "the index is right but you used the PDE's address bits for a 4 KiB page: "
                "PS (bit 7) is set, so the low 21 bits of the gva are the offset"
            )
        return fail(
            "the frame is wrong: the walk ends at a PDE with PS (bit 7) set, a 2 MiB page; "
            "its address bits 51:21 plus the gva's low 21 bits make the gpa"
        )
    return fail(
        "the frame is wrong: recompute each index (9 bits per level, the PML4 index from "
        "gva bits 47:39) and follow each entry's address bits 51:12 to the next table"
    )


# ------------------------------------------------------------------------------------------------
# Exercise: fix a broken guest table
# ------------------------------------------------------------------------------------------------

_BUGS = ("pde not present", "pde supervisor", "pte read-only", "pte reserved bit", "pte xd")


@dataclass(slots=True, repr=False)
class FixProblem(Problem):
    """A guest access that faults because of one wrong entry; give the entry that fixes it."""

    seed: int | str
    text: str
    gva: int
    gpa: int
    access: Access
    bug: str = field(repr=False)


def fix_guest(seed: int | str) -> tuple[GuestMemory, GuestPageTables, FixProblem]:
    """The broken guest of :func:`fix_problem` for ``seed``, fresh: memory, tables, problem.

    The checker applies a proposed fix to this copy. No kernel counterpart.
    """
    rng = seeded_rng(seed)
    memory = GuestMemory(64 << 20)
    pt = GuestPageTables(memory, PagingMode.LEVEL4)
    gva = rng.randrange(1, 256) << 39 | rng.randrange(0, 1 << 27) << 12
    gva &= ~(1 << 12)  # the neighbour at gva + 4 KiB shares its page table
    gpa = rng.randrange(0x100, 0x2F00) << 12
    pt.map(gva, gpa, writable=True, user=True)
    pt.map(gva + 0x1000, gpa + 0x1000, writable=False, user=False)
    bug = rng.choice(_BUGS)
    access = {"pte read-only": Access.WRITE, "pte xd": Access.FETCH}.get(bug, Access.READ)
    level, flip = {
        "pde not present": (2, int(Pte.PRESENT)),
        "pde supervisor": (2, int(Pte.USER)),
        "pte read-only": (1, int(Pte.WRITABLE)),
        "pte reserved bit": (1, 1 << rng.randrange(40, 52)),
        "pte xd": (1, int(Pte.XD)),
    }[bug]
    pt.set_entry(gva, level, pt.entry(gva, level) ^ flip)
    lines = [
        f"A 4-level guest (MAXPHYADDR 40, EFER.NXE=1) wants {_A_KIND[access]} from CPL 3 at gva "
        f"{gva:#x} to reach gpa {gpa:#x}. It faults:",
    ]
    fault = walk(memory, pt.cpu(cpl=3), gva, access, set_ad=False)
    assert isinstance(fault, PageFault), fault
    lines.append(f"    #PF error code {int(fault.error_code):#x}")
    lines.append("The entries on the walk:")
    lines.extend("    " + step.describe() for step in fault.steps)
    lines.append(
        f"The read-only supervisor page at gva {gva + 0x1000:#x} (gpa {gpa + 0x1000:#x}) must "
        "keep working. Give (level, new value) of one entry: the fix; change no more than needed."
    )
    return memory, pt, FixProblem(seed, "\n".join(lines), gva, gpa, access, bug)


def fix_problem(seed: int | str) -> FixProblem:
    """A broken guest table from ``seed``: one entry on a path has a wrong bit.

    No kernel counterpart; the faults are ``FNAME(walk_addr_generic)``'s.
    """
    return fix_guest(seed)[2]


def check_fix(problem: FixProblem, answer: Sequence[object]) -> Check:
    """Apply the proposed entry to a fresh copy of the guest and walk again.

    ``answer`` is ``(level, value)``: the entry at ``level`` on the gva's path is set to
    ``value`` (``GuestPageTables.set_entry``). The hint reports what the walk now does.
    """
    check_instance("problem", problem, FixProblem, "a FixProblem (fix_problem)", ExerciseError)
    if isinstance(answer, str) or not isinstance(answer, Sequence) or len(answer) != 2:
        raise ExerciseError("give the answer, the fix, as (level, value), e.g. (2, 0x1234067)")
    level = parse_int("the answer's level", answer[0])
    value = parse_int("the answer's value", answer[1])
    if not 1 <= level <= 4:
        return fail("a 4-level walk has levels 1 (PTE) to 4 (PML4E)")
    memory, pt, _ = fix_guest(problem.seed)
    try:
        before = pt.entry(problem.gva, level)
    except KvmmuError:
        return fail(f"the walk never reaches level {level}: fix an entry it does read")
    if value >> 64:
        return fail("an entry is 64 bits wide")
    pt.set_entry(problem.gva, level, value)
    got = walk(memory, pt.cpu(cpl=3), problem.gva, problem.access, set_ad=False)
    if isinstance(got, PageFault):
        where = got.steps[-1].name if got.steps else "the root"
        return fail(f"the access still faults (error code {int(got.error_code):#x}) at the {where}")
    assert isinstance(got, WalkResult)
    if got.gpa != problem.gpa:
        return fail(
            f"the access completes but lands at gpa {got.gpa:#x}: keep the entry's address bits"
        )
    after = walk(memory, pt.cpu(), problem.gva + 0x1000, Access.READ, set_ad=False)
    if not isinstance(after, WalkResult) or after.gpa != problem.gpa + 0x1000:
        return fail("the access works, but the neighbouring page now translates differently")
    changed = bin(before ^ value).count("1")
    ignored = bin((before ^ value) & int(Pte.ACCESSED | Pte.DIRTY)).count("1")
    if changed - ignored > 1:
        return Check(True, f"it works; {changed - ignored} bits changed where one would do.")
    return ok(f"one bit was wrong ({problem.bug}).")


def fix_answer(problem: FixProblem, pt: GuestPageTables) -> tuple[int, int]:
    """The one-bit fix, ``(level, value)``, for ``problem`` on its guest tables ``pt``: the
    instructor's key. No kernel counterpart.
    """
    check_instance("problem", problem, FixProblem, "a FixProblem (fix_problem)", ExerciseError)
    check_instance("pt", pt, GuestPageTables, "the GuestPageTables of fix_guest", ExerciseError)
    flips = {
        "pde not present": (2, int(Pte.PRESENT)),
        "pde supervisor": (2, int(Pte.USER)),
        "pte read-only": (1, int(Pte.WRITABLE)),
        "pte xd": (1, int(Pte.XD)),
    }
    if problem.bug == "pte reserved bit":
        entry = pt.entry(problem.gva, 1)
        return 1, entry & ~((1 << 52) - (1 << 40))
    level, bit = flips[problem.bug]
    return level, pt.entry(problem.gva, level) ^ bit
