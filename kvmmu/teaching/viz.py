"""Pure functions behind the notebooks' tables, drawings and widgets.

Every function here takes plain inputs (the values a slider, a text box or a dropdown would
give) and returns text, a pandas DataFrame or a matplotlib Figure, computed by the rest of
``kvmmu``. Nothing in ``kvmmu`` imports this module. The kernel has no counterpart: these are
teaching views of ``paging_tmpl.h``, ``mmu.c`` and ``mmu_internal.h`` state, and each function's
docstring names the kernel code whose state it shows.

Plots use explicit colours that read on both light and dark backgrounds, a transparent figure
background, and a fixed size and dpi, so that a notebook's stored output is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

from kvmmu.errors import AddressError, KvmmuError, ModeError
from kvmmu.hw.capture import Capture, ptdump
from kvmmu.hw.guest import GuestPageTables
from kvmmu.hw.memory import GuestMemory
from kvmmu.hw.walk import CpuState, GeneralProtection, PageFault, WalkResult, WalkStep, walk
from kvmmu.hw.x86 import (
    PAGE_SHIFT,
    Acc,
    Access,
    PagingMode,
    PfErr,
    Pte,
)
from kvmmu.kvm import spte as S
from kvmmu.kvm.page import LEVEL_BITS, MmuPage
from kvmmu.kvm.role import ROLE_LAYOUT
from kvmmu.kvm.vcpu import Vcpu, Vm

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "DEMO_PROGRAM",
    "GFN_READERS",
    "LINUX_X86_64_MAP",
    "ROLE_MEANINGS",
    "ProgramRun",
    "ProgramStep",
    "address_space_layout",
    "address_split",
    "capture_shadow_census",
    "decode_error_code",
    "demo_mixed_vm",
    "fault_examples",
    "gfn_audit",
    "gfn_lookup",
    "gfn_readers",
    "gfn_table",
    "gfns_savings",
    "kpti_comparison",
    "parse_access",
    "parse_address",
    "role_frame",
    "role_layout_table",
    "role_scenario",
    "run_program",
    "setup_shadow_pages",
    "shadow_step_view",
    "shadow_tables_figure",
    "tidy_trace",
    "walk_text",
    "walk_tree_figure",
]

# Colours chosen to read on a white and on a dark background alike.
INK = "#8a8a8a"  # arrows, labels, spines: mid grey
TABLE = "#4f7fb0"  # a guest table (mid blue)
SHADOW = "#d08a2e"  # a shadow page (amber)
DIRECT = "#8e6fb5"  # a direct shadow page (violet)
PAGE = "#4c9a64"  # a data page (green)
FAULT = "#c8553d"  # a fault (brick red)
ROOT = "#7a7a9e"  # CR3 (slate)
MIB_F = float(1 << 20)  # bytes per MiB, for tables shown in MiB
FIGSIZE_WIDE = (11.0, 2.8)
DPI = 100


# --------------------------------------------------------------------------------------------
# Input parsing (what widgets hand over)
# --------------------------------------------------------------------------------------------


def parse_address(text: str | int) -> int:
    """An address typed by a reader (``0x7f00_1234``, ``4096``) as an int; no kernel counterpart.

    Raises :class:`AddressError` naming what to type instead.
    """
    if isinstance(text, bool):
        raise AddressError(f"an address is an int or a string such as '0x401000', not {text!r}")
    if isinstance(text, int):
        value = text
    else:
        cleaned = str(text).strip().replace("_", "").replace("'", "")
        try:
            value = int(cleaned, 0)
        except ValueError:
            raise AddressError(
                f"could not read {text!r} as an address; type hex like 0x401000 or decimal"
            ) from None
    if value < 0 or value >> 64:
        raise AddressError(f"address {value:#x} does not fit in 64 bits; type 0 .. 2**64-1")
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


# --------------------------------------------------------------------------------------------
# Lesson 1: the guest walk
# --------------------------------------------------------------------------------------------

_TABLE_NAMES = {5: "PML5", 4: "PML4", 3: "PDPT", 2: "PD", 1: "PT"}


def _walk_for(
    memory: GuestMemory, cpu: CpuState, address: str | int, access: str | Access, cpl: int
) -> tuple[int, Access, WalkResult | PageFault | GeneralProtection]:
    gva = parse_address(address)
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
            f" rights {_acc(int(result.access))}"
        )
        todo = _ad_to_set(steps, result.mode, kind is Access.WRITE)
        lines.append("A/D bits the walk sets: " + (", ".join(todo) if todo else "none (all set)"))
    return "\n".join(lines)


def _acc(acc: int) -> str:
    return "".join(
        c if acc & b else "-" for c, b in (("u", Acc.USER), ("w", Acc.WRITE), ("x", Acc.EXEC))
    )


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


def decode_error_code(code: int) -> dict[str, int]:
    """The bits of a page-fault error code by name (``PFERR_*_MASK``; SDM 4.7).

    ``P`` is 0 for a not-present page and 1 for a protection violation; ``W`` a write; ``U`` a
    user-mode access; ``RSVD`` a reserved bit in some entry; ``I/D`` an instruction fetch;
    ``PK`` a protection-key violation.
    """
    if isinstance(code, bool) or not isinstance(code, int) or code < 0:
        raise AddressError(f"an error code is a non-negative int, got {code!r}")
    return {name: int(bool(code & bit)) for name, bit in _ERROR_BITS}


def address_split(address: str | int) -> pd.DataFrame:
    """How one linear address splits into table indices in each paging mode (SDM 4.3-4.5).

    One row per mode: the bits used, the index at each level (``PT_INDEX``; the PAE PDPT has a
    2-bit index) and the page offset. 32-bit and PAE paging use the low 32 bits; 4-level
    paging ignores bits 63:48 (they must copy bit 47), 5-level bits 63:57.
    """
    gva = parse_address(address)
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


def _style(fig: Figure) -> None:
    fig.patch.set_alpha(0.0)


def _box(ax: Axes, x: float, y: float, w: float, h: float, text: str, colour: str) -> None:
    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2),
            w,
            h,
            boxstyle="round,pad=0.02,rounding_size=0.05",
            facecolor=colour,
            edgecolor=INK,
            linewidth=1.0,
        )
    )
    ax.text(x, y, text, ha="center", va="center", fontsize=8, color="white", family="monospace")


def _arrow(
    ax: Axes, x0: float, y0: float, x1: float, y1: float, label: str = "", dashed: bool = False
) -> None:
    ax.annotate(
        "",
        xy=(x1, y1),
        xytext=(x0, y0),
        arrowprops={
            "arrowstyle": "-|>",
            "color": INK,
            "linewidth": 1.2,
            "linestyle": "--" if dashed else "-",
        },
    )
    if label:
        ax.text(
            (x0 + x1) / 2,
            max(y0, y1) + 0.68,
            label,
            ha="center",
            va="bottom",
            fontsize=7.5,
            color=INK,
        )


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
    fig = Figure(figsize=FIGSIZE_WIDE, dpi=DPI)
    _style(fig)
    ax = fig.add_subplot()
    ax.set_axis_off()
    if isinstance(result, GeneralProtection):
        _box(ax, 0, 0, 3.2, 1.2, f"#GP\n{result.reason[:40]}", FAULT)
        ax.set_xlim(-2, 2)
        ax.set_ylim(-1, 1)
        return fig
    steps = result.trace if isinstance(result, WalkResult) else result.steps
    n = len(steps) + 2
    width = 1.9
    gap = 2.7
    ax.set_xlim(-width / 2 - 0.1, (n - 1) * gap + width / 2 + 0.1)
    ax.set_ylim(-1.05, 1.25)
    _box(ax, 0, 0, width, 1.2, f"CR3\n{cpu.cr3:#x}", ROOT)
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
        text = f"{_TABLE_NAMES[step.level]} @{table_gpa:#x}\n[{step.index}] {flags}\n-> {target:#x}"
        _box(ax, i * gap, 0, width, 1.2, text, TABLE)
        low = spec.shift(step.level)
        bits = 2 if (spec.mode is PagingMode.PAE and step.level == 3) else spec.index_bits
        label = f"bits {low + bits - 1}:{low}\n= {step.index}"
        _arrow(ax, (i - 1) * gap + width / 2, 0, i * gap - width / 2, 0, label)
    last = (n - 1) * gap
    if isinstance(result, WalkResult):
        rights = _acc(int(result.access))
        text = f"{result.page_size >> 10} KiB page\ngpa {result.gpa:#x}\nrights {rights}"
        _box(ax, last, 0, width, 1.2, text, PAGE)
        off_bits = result.page_size.bit_length() - 2
        _arrow(ax, last - gap + width / 2, 0, last - width / 2, 0, f"bits {off_bits}:0\noffset")
    else:
        code = int(result.error_code)
        _box(ax, last, 0, width, 1.2, f"#PF {code:#x}\n{_error_bits(code)}", FAULT)
        _arrow(ax, last - gap + width / 2, 0, last - width / 2, 0, "fault", dashed=True)
    ax.text(
        0,
        -0.95,
        f"{kind.value} of {gva:#x} at CPL {cpl}",
        fontsize=9,
        color=INK,
        ha="left",
    )
    return fig


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


def _region_of(gvas: np.ndarray) -> np.ndarray:
    starts = np.array([r[0] for r in LINUX_X86_64_MAP], dtype=np.uint64)
    return np.searchsorted(starts, gvas, side="right") - 1


def address_space_layout(leaves: pd.DataFrame) -> pd.DataFrame:
    """Group a 4-level ``ptdump`` by the regions of the Linux x86-64 memory map.

    ``leaves`` is :func:`kvmmu.hw.capture.ptdump` output (columns ``gva``, ``level``,
    ``page_size``, ``flags``). One row per region that has leaves: its PML4 slots, how many
    leaves of each size, the bytes mapped, and how many leaves a user access may use. The
    kernel side is ``arch/x86/mm/dump_pagetables.c``, which prints the same regions.
    """
    if leaves.empty:
        return pd.DataFrame()
    gvas = leaves["gva"].to_numpy(dtype=np.uint64)
    region = _region_of(gvas)
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


_KERNEL_HALF = 0xFFFF_8000_0000_0000


def kpti_comparison(capture: Capture) -> pd.DataFrame:
    """Kernel-half leaves and bytes mapped in each view of a capture, region by region.

    With page-table isolation (``arch/x86/mm/pti.c``) the user CR3's kernel half maps only what
    the CPU needs to enter and leave the kernel (``cpu_entry_area``, the entry text, ESPFIX);
    the kernel CR3 maps everything. One row per memory-map region of the kernel half, plus a
    total; two columns (leaves, bytes mapped) per view. A capture without PTI has one view.
    """
    per_view: dict[str, pd.DataFrame] = {}
    for name, view in capture.views.items():
        dump = ptdump(capture.memory, view.cpu)
        gvas = dump["gva"].to_numpy(dtype=np.uint64)
        kernel = gvas >= np.uint64(_KERNEL_HALF)
        frame = pd.DataFrame(
            {
                "region": [LINUX_X86_64_MAP[int(r)][2] for r in _region_of(gvas[kernel])],
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


# --------------------------------------------------------------------------------------------
# Lesson 2: shadow paging, one fault at a time
# --------------------------------------------------------------------------------------------

_HEX_FIELDS = ("gfn", "addr", "spte", "gpa")


def tidy_trace(frame: pd.DataFrame) -> pd.DataFrame:
    """A recorded MMU trace (``Tracer.frame()``) with one readable ``details`` column.

    The events are ``mmutrace.h``'s; each row keeps its name and lists its non-empty fields
    (addresses, gfns and sptes in hex).
    """
    rows = []
    for seq, row in frame.iterrows():
        parts = []
        for name, value in row.items():
            if name == "event" or value is None or (isinstance(value, float) and np.isnan(value)):
                continue
            if name in _HEX_FIELDS and isinstance(value, (int, float, np.integer)):
                parts.append(f"{name}={int(value):#x}")
            elif isinstance(value, (float, np.floating)) and float(value).is_integer():
                parts.append(f"{name}={int(value)}")
            else:
                parts.append(f"{name}={value}")
        rows.append({"seq": seq, "event": row["event"], "details": " ".join(parts)})
    return pd.DataFrame(rows, columns=["seq", "event", "details"]).set_index("seq")


def _guest_tables(memory: GuestMemory, cpu: CpuState) -> list[tuple[int, int, int | None]]:
    """(level, gfn, parent gfn) of every guest table reachable from CR3 (4/5-level only)."""
    spec = cpu.mode.spec
    if spec.mode not in (PagingMode.LEVEL4, PagingMode.LEVEL5):
        raise ModeError("the shadow picture draws 4- or 5-level guests; use PagingMode.LEVEL4")
    out: list[tuple[int, int, int | None]] = []
    mask = ((1 << cpu.maxphyaddr) - 1) & ~0xFFF

    def visit(gfn: int, level: int, parent: int | None) -> None:
        out.append((level, gfn, parent))
        words = memory.table_words(gfn)
        if words is None or level == 1:
            return
        for entry in words:
            entry = int(entry)
            if entry & Pte.PRESENT and not (level in (2, 3) and entry & Pte.PAGE_SIZE):
                visit((entry & mask) >> PAGE_SHIFT, level - 1, gfn)

    visit(cpu.root_gpa >> PAGE_SHIFT, spec.root_level, None)
    return out


def shadow_tables_figure(vm: Vm, vcpu: Vcpu) -> Figure:
    """The guest's tables (left) beside the shadow pages the MMU built (right), level by level.

    Arrows are table pointers (guest entries on the left, non-leaf sptes on the right). An
    indirect shadow page (amber) names the guest table it shadows (``sp->gfn``), and the guest
    tables are ordered as a mirror image of their shadows; a direct page (violet) shadows no
    guest table and maps the gfns from its ``gfn`` on. The state is ``kvm->arch.active_mmu_pages``.
    """
    guest = _guest_tables(vm.memory, vcpu.cpu)
    pages = [sp for sp in vm.mmu.active if not sp.role.invalid]
    top = max([lv for lv, _, _ in guest] + [sp.level for sp in pages] + [1])
    fig = Figure(figsize=(11.0, 1.3 * top + 0.8), dpi=DPI)
    _style(fig)
    ax = fig.add_subplot()
    ax.set_axis_off()
    w, h = 1.5, 0.55
    pos_g: dict[int, tuple[float, float]] = {}
    pos_s: dict[int, tuple[float, float]] = {}
    order = {sp.gfn: sp.serial for sp in sorted(pages, key=lambda sp: -sp.serial) if not sp.direct}
    for level in range(top, 0, -1):
        # guest tables in the order of the shadow pages that shadow them: a mirror image
        row = sorted((g for g in guest if g[0] == level), key=lambda g: order.get(g[1], 1 << 30))
        for i, (_, gfn, _) in enumerate(row):
            x = -1.0 - i * (w + 0.2)
            pos_g[gfn] = (x, float(level))
            _box(ax, x, level, w, h, f"guest {_TABLE_NAMES[level]}\ngfn {gfn:#x}", TABLE)
        srow = sorted((sp for sp in pages if sp.level == level), key=lambda sp: sp.serial)
        for i, sp in enumerate(srow):
            x = 1.0 + i * (w + 0.2)
            pos_s[sp.serial] = (x, float(level))
            if sp.direct:
                _box(ax, x, level, w, h, f"sp#{sp.serial} direct\ngfn {sp.gfn:#x}+", DIRECT)
            else:
                _box(ax, x, level, w, h, f"sp#{sp.serial}\nshadows {sp.gfn:#x}", SHADOW)
    for _, gfn, parent in guest:
        if parent is not None:
            (x0, y0), (x1, y1) = pos_g[parent], pos_g[gfn]
            _arrow(ax, x0, y0 - h / 2, x1, y1 + h / 2)
    for sp in pages:
        for up, _ in sp.parent_ptes:
            if up.serial in pos_s and sp.serial in pos_s:
                (x0, y0), (x1, y1) = pos_s[up.serial], pos_s[sp.serial]
                _arrow(ax, x0, y0 - h / 2, x1, y1 + h / 2)
    xs = [p[0] for p in (*pos_g.values(), *pos_s.values())] or [0.0]
    ax.set_xlim(min(xs) - w, max(max(xs) + w, 2.0))
    ax.set_ylim(0.4, top + 0.9)
    ax.text(min(xs) - w / 2, top + 0.55, "guest page tables (guest memory)", color=INK, fontsize=9)
    ax.text(
        0.3, top + 0.55, "shadow pages (host memory, what the CPU walks)", color=INK, fontsize=9
    )
    ax.axvline(0, color=INK, linewidth=0.6)
    return fig


@dataclass(frozen=True, slots=True)
class ProgramStep:
    """One access of a small guest program: what, where, how and at which privilege level."""

    label: str
    gva: int
    access: Access
    cpl: int = 3


DEMO_PROGRAM: tuple[ProgramStep, ...] = (
    ProgramStep("fetch the first instruction", 0x400000, Access.FETCH),
    ProgramStep("fetch the next page of code", 0x401000, Access.FETCH),
    ProgramStep("read a global variable", 0x600000, Access.READ),
    ProgramStep("write the same variable", 0x600008, Access.WRITE),
    ProgramStep("push onto the stack", 0x7FFF_FFFF_E000, Access.WRITE),
    ProgramStep("read the variable again (TLB)", 0x600010, Access.READ),
    ProgramStep("read a kernel page from user mode", 0xFFFF_8880_0000_0000, Access.READ),
    ProgramStep("system call: kernel reads it", 0xFFFF_8880_0000_0000, Access.READ, 0),
)


@dataclass(slots=True)
class ProgramRun:
    """A small VM after some steps of a program, and what each step returned."""

    vm: Vm
    vcpu: Vcpu
    pt: GuestPageTables
    outcomes: list[str] = field(default_factory=list)


def _demo_guest() -> tuple[Vm, GuestPageTables, Vcpu]:
    vm = Vm(16 << 20)
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4)
    pt.map(0x400000, 0x200000, length=0x2000, writable=False, user=True)  # text
    pt.map(0x600000, 0x300000, writable=True, user=True, nx=True)  # data
    pt.map(0x7FFF_FFFF_E000, 0x310000, writable=True, user=True, nx=True)  # stack
    pt.map(0xFFFF_8880_0000_0000, 0x000000, size="2M", writable=True, nx=True)  # direct map
    vcpu = vm.create_vcpu(pt.cpu(cpl=3))
    return vm, pt, vcpu


def _outcome_text(result: int | PageFault | GeneralProtection) -> str:
    if isinstance(result, PageFault):
        return f"#PF to the guest, error {int(result.error_code):#x}: {result.reason}"
    if isinstance(result, GeneralProtection):
        return f"#GP: {result.reason}"
    return f"gpa {result:#x}"


def run_program(steps: int, program: tuple[ProgramStep, ...] = DEMO_PROGRAM) -> ProgramRun:
    """A fresh small 4-level VM after the first ``steps`` accesses of ``program``.

    Shadow paging, so each first touch of a page is a shadow page fault handled by
    ``FNAME(page_fault)``; deterministic: the same ``steps`` always gives the same state.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps <= len(program):
        raise KvmmuError(f"steps must be an int in 0..{len(program)}, got {steps!r}")
    vm, pt, vcpu = _demo_guest()
    run = ProgramRun(vm, vcpu, pt)
    for step in program[:steps]:
        run.outcomes.append(_outcome_text(vcpu.access(step.gva, step.access, cpl=step.cpl)))
    return run


_STEP_COUNTERS = ("pf_fixed", "pf_guest", "mmu_cache_miss", "pages", "tlb_hits", "tlb_misses")


def role_frame(pages: list[MmuPage] | Vm) -> pd.DataFrame:
    """Shadow pages as a table: gfn, every role field that varies in practice, and the gfns.

    One row per page (``struct kvm_mmu_page``), in creation order; ``word`` is the packed
    ``role.word`` the hash compares; ``gfns bytes`` is 0 for a direct page (the seed change).
    """
    if isinstance(pages, Vm):
        pages = [sp for sp in pages.mmu.active if not sp.role.invalid]
    rows = []
    for sp in sorted(pages, key=lambda sp: sp.serial):
        role = sp.role
        rows.append(
            {
                "sp": f"sp#{sp.serial}",
                "gfn": f"{sp.gfn:#x}",
                "level": role.level,
                "direct": role.direct,
                "4-byte gpte": role.has_4_byte_gpte,
                "quadrant": role.quadrant,
                "access": _acc(role.access),
                "cr0_wp": role.cr0_wp,
                "word": f"{role.word:#07x}",
                "sptes": len(sp.present_indices()),
                "gfns bytes": sp.gfns_bytes,
            }
        )
    columns = [
        "sp",
        "gfn",
        "level",
        "direct",
        "4-byte gpte",
        "quadrant",
        "access",
        "cr0_wp",
        "word",
        "sptes",
        "gfns bytes",
    ]
    return pd.DataFrame(rows, columns=columns).set_index("sp")


def shadow_step_view(
    steps: int, program: tuple[ProgramStep, ...] = DEMO_PROGRAM
) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    """What the step widget shows after ``steps`` accesses: a log, the shadow pages, counters.

    The log names each access and its outcome; the pages are ``active_mmu_pages``; the counters
    are the debugfs ones (``pf_fixed``, ``pf_guest``, ``mmu_cache_miss``, ...).
    """
    run = run_program(steps, program)
    lines = [f"after {steps} of {len(program)} steps"]
    for i, (step, outcome) in enumerate(zip(program, run.outcomes, strict=False), start=1):
        lines.append(
            f"{i}. {step.label}: {step.access.value} {step.gva:#x} CPL{step.cpl} -> {outcome}"
        )
    if steps < len(program):
        nxt = program[steps]
        lines.append(f"next: {nxt.label} ({nxt.access.value} {nxt.gva:#x} at CPL {nxt.cpl})")
    stats = run.vm.mmu.stats.as_series()[list(_STEP_COUNTERS)]
    return "\n".join(lines), role_frame(run.vm), stats.to_frame().T.set_index(pd.Index([steps]))


# --------------------------------------------------------------------------------------------
# Lesson 3: the role
# --------------------------------------------------------------------------------------------

ROLE_MEANINGS: dict[str, str] = {
    "level": "level of the shadow page: 1 holds leaf sptes, 4 (or 5) is a 64-bit root",
    "has_4_byte_gpte": "the shadowed guest table has 4-byte entries (32-bit paging)",
    "quadrant": "which part of a 32-bit guest table this page shadows (0..3 at L2, 0..1 at L1)",
    "direct": "maps a linear gfn range, shadows no guest table; no gfns array (the seed)",
    "access": "rights (u, w, x) granted by the guest entries above this page",
    "invalid": "zapped while still a root; never found by a lookup again",
    "efer_nx": "EFER.NX: the guest's XD bits mean something",
    "cr0_wp": "CR0.WP: supervisor writes honour R/W",
    "smep_andnot_wp": "CR4.SMEP set while CR0.WP is clear",
    "smap_andnot_wp": "CR4.SMAP set while CR0.WP is clear",
    "ad_disabled": "EPT without accessed/dirty bits (not modelled: always 0)",
    "guest_mode": "a nested guest's page (not modelled: always 0)",
    "passthrough": "a root that shadows no guest table (a PAE guest under 4-level tables)",
    "smm": "System Management Mode address space (0 outside SMM)",
}


def role_layout_table() -> pd.DataFrame:
    """Every field of ``union kvm_mmu_page_role`` with its bits in ``role.word`` and meaning."""
    rows = []
    for name, (shift, width) in ROLE_LAYOUT.items():
        bits = f"{shift}" if width == 1 else f"{shift + width - 1}:{shift}"
        rows.append({"field": name, "bits": bits, "width": width, "meaning": ROLE_MEANINGS[name]})
    return pd.DataFrame(rows).set_index("field")


_MODES = {m.value: m for m in PagingMode}


def _mode(mode: str | PagingMode) -> PagingMode:
    if isinstance(mode, PagingMode):
        return mode
    if mode in _MODES:
        return _MODES[mode]
    raise ModeError(f"mode must be one of {', '.join(_MODES)}, got {mode!r}")


def setup_shadow_pages(
    mode: str | PagingMode = PagingMode.LEVEL4,
    cr0_wp: bool = True,
    tdp: bool = False,
    large_guest_pages: bool = False,
    host_huge_pages: bool = True,
) -> pd.DataFrame:
    """The shadow pages one small guest needs, for one setup of guest and host.

    The guest maps 4 MiB of user memory at 0x400000 with 4 KiB pages, or with large pages
    (2 MiB, 4 MiB in 32-bit paging) when ``large_guest_pages``; then it reads two addresses
    2 MiB apart, and its kernel writes the first. What pages appear and with which roles is
    decided by ``kvm_mmu_get_shadow_page``/``kvm_mmu_child_role`` (shadow paging) or
    ``direct_map`` (TDP, paging off).
    """
    m = _mode(mode)
    vm = Vm(16 << 20, tdp=tdp, huge_pages=host_huge_pages)
    if m is PagingMode.NONE:
        vcpu = vm.create_vcpu()
        base = 0x400000
    else:
        pt = GuestPageTables(vm.memory, m, wp=cr0_wp)
        if large_guest_pages:
            size = pt.page_sizes[1]
            pt.map(0x400000, 0x400000, size=size, length=4 << 20, user=True)
        else:
            pt.map(0x400000, 0x400000, length=4 << 20, user=True)
        vcpu = vm.create_vcpu(pt.cpu(cpl=3))
        base = 0x400000
    for gva, kind, cpl in (
        (base, Access.READ, 3),
        (base + (2 << 20), Access.READ, 3),
        (base, Access.WRITE, 0),
    ):
        result = vcpu.access(gva, kind, cpl=cpl)
        if not isinstance(result, int):
            raise KvmmuError(f"the setup's access to {gva:#x} faulted ({result}): a kvmmu bug")
    return role_frame(vm)


def role_scenario(name: str) -> pd.DataFrame:
    """Small guests where one gfn gets several shadow pages, one per role.

    * ``"cr0_wp"``: the guest toggles CR0.WP; the same tables are shadowed again with
      ``cr0_wp=0`` (the old pages stay in the hash, role mismatch);
    * ``"quadrants"``: a 32-bit guest; its page directory has four level-2 shadow pages
      (quadrant 0..3) and a 1024-entry page table two level-1 pages (quadrant 0, 1);
    * ``"access"``: one guest page table reached through a user PDE and a supervisor PDE: two
      level-1 pages that differ only in ``role.access``;
    * ``"large_guest_page"``: a guest 2 MiB page on a host without huge pages, backed by a
      direct level-1 page.

    The kernel decides all of these in ``kvm_mmu_get_shadow_page`` (hash lookup by gfn and
    ``role.word``).
    """
    vm = Vm(16 << 20, huge_pages=name != "large_guest_page")
    if name == "cr0_wp":
        pt = GuestPageTables(vm.memory, PagingMode.LEVEL4)
        pt.map(0x400000, 0x400000, user=True)
        vcpu = vm.create_vcpu(pt.cpu())
        vcpu.access(0x400000, Access.READ)
        vcpu.set_registers(cr0=pt.cpu(wp=False).cr0)
        vcpu.access(0x400000, Access.READ)
    elif name == "quadrants":
        pt = GuestPageTables(vm.memory, PagingMode.BITS32)
        pt.map(0x400000, 0x400000, user=True)  # PT entry 0: first half of the guest PT
        pt.map(0x600000, 0x600000, user=True)  # PT entry 512: second half
        vcpu = vm.create_vcpu(pt.cpu())
        vcpu.access(0x400000, Access.READ)
        vcpu.access(0x600000, Access.READ)
    elif name == "access":
        pt = GuestPageTables(vm.memory, PagingMode.LEVEL4)
        pt.map(0x400000, 0x400000, user=True)
        pde = pt.entry(0x400000, 2)
        pt.set_entry(0x800000, 2, pde & ~int(Pte.USER))  # same PT, supervisor-only PDE
        vcpu = vm.create_vcpu(pt.cpu())
        vcpu.access(0x400000, Access.READ)
        vcpu.access(0x800000, Access.READ)
    elif name == "large_guest_page":
        pt = GuestPageTables(vm.memory, PagingMode.LEVEL4)
        pt.map(0x400000, 0x400000, size="2M", user=True)
        vcpu = vm.create_vcpu(pt.cpu())
        vcpu.access(0x400000, Access.READ)
        vcpu.access(0x401000, Access.READ)
    else:
        raise KvmmuError(
            f"unknown scenario {name!r}; pick cr0_wp, quadrants, access or large_guest_page"
        )
    return role_frame([sp for sp in vm.mmu.active if not sp.role.invalid])


def capture_shadow_census(
    capture: Capture, *, kernel_per_region: int = 64
) -> tuple[pd.Series, pd.DataFrame]:
    """Run the shadow MMU over a real Linux address space and count the pages it builds.

    A Vm is built around the capture's guest memory; every user leaf is read at CPL 3 and up
    to ``kernel_per_region`` kernel leaves of each memory-map region (evenly spaced, so the
    choice is deterministic) at CPL 0. Returns a summary (accesses, outcomes, shadow pages,
    direct and indirect, gfns bytes) and the pages per level. The pages are what
    ``FNAME(fetch)`` creates for these translations.
    """
    if isinstance(kernel_per_region, bool) or kernel_per_region < 0:
        raise KvmmuError(f"kernel_per_region must be >= 0, got {kernel_per_region!r}")
    dump = ptdump(capture.memory, capture.cpu)
    gvas = dump["gva"].to_numpy(dtype=np.uint64)
    kernel = gvas >= np.uint64(_KERNEL_HALF)
    chosen = [int(g) for g in gvas[~kernel]]
    user_count = len(chosen)
    regions = _region_of(gvas[kernel])
    kernel_gvas = gvas[kernel]
    for r in np.unique(regions):
        members = kernel_gvas[regions == r]
        take = np.linspace(0, len(members) - 1, min(kernel_per_region, len(members))).astype(int)
        chosen.extend(int(g) for g in members[np.unique(take)])
    vm = Vm(memory=capture.memory, maxphyaddr=capture.cpu.maxphyaddr)
    vcpu = vm.create_vcpu(capture.cpu)
    outcomes = {"mapped": 0, "guest fault": 0}
    for i, gva in enumerate(chosen):
        result = vcpu.access(gva, Access.READ, cpl=3 if i < user_count else 0)
        outcomes["mapped" if isinstance(result, int) else "guest fault"] += 1
    pages = [sp for sp in vm.mmu.active if not sp.role.invalid]
    direct = sum(sp.direct for sp in pages)
    summary = pd.Series(
        {
            "user leaves touched": user_count,
            "kernel leaves touched": len(chosen) - user_count,
            "accesses mapped": outcomes["mapped"],
            "guest faults": outcomes["guest fault"],
            "shadow pages": len(pages),
            "direct pages": direct,
            "indirect pages": len(pages) - direct,
            "gfns bytes allocated": sum(sp.gfns_bytes for sp in pages),
            "pf_fixed": vm.mmu.stats.pf_fixed,
        },
        name=capture.name,
    )
    per_level = (
        pd.DataFrame({"level": [sp.level for sp in pages], "direct": [sp.direct for sp in pages]})
        .groupby(["level", "direct"])
        .size()
        .unstack(fill_value=0)
        .rename(columns={False: "indirect", True: "direct"})
    )
    per_level.columns.name = None
    return summary, per_level


# --------------------------------------------------------------------------------------------
# Lesson 4: gfns computed, not stored
# --------------------------------------------------------------------------------------------


def demo_mixed_vm() -> Vm:
    """A small shadow-paging VM with both indirect and direct shadow pages.

    The guest maps 4 KiB pages (indirect pages shadow its tables) and one 2 MiB page that the
    host, without huge pages, backs with 4 KiB sptes in a *direct* level-1 page.

    No kernel counterpart.
    """
    vm = Vm(16 << 20, huge_pages=False)
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4)
    pt.map(0x400000, 0x100000, length=0x3000, user=True)
    pt.map(0x800000, 0x400000, size="2M", user=True)
    vcpu = vm.create_vcpu(pt.cpu(cpl=3))
    for gva in (0x400000, 0x401000, 0x402000, 0x800000, 0x801000, 0x9FF000):
        vcpu.access(gva, Access.READ)
    return vm


def _page_by_serial(vm: Vm, serial: int) -> MmuPage:
    for sp in vm.mmu.active:
        if sp.serial == serial:
            return sp
    known = ", ".join(str(sp.serial) for sp in vm.mmu.active)
    raise KvmmuError(f"no shadow page sp#{serial}; this VM has {known}")


def gfn_table(sp: MmuPage, indices: list[int] | None = None) -> pd.DataFrame:
    """For some entries of one shadow page: the gfn computed, the gfn stored, and the spte.

    ``kvm_mmu_page_get_gfn``: a direct page computes ``gfn + (i << ((level - 1) * 9))``; an
    indirect page reads ``gfns[i]``, which ``kvm_mmu_page_set_gfn`` wrote. Default indices:
    the present sptes (at most 8).
    """
    if indices is None:
        indices = [int(i) for i in sp.present_indices()[:8]]
    rows = []
    for index in indices:
        if isinstance(index, bool) or not 0 <= int(index) < 512:
            raise KvmmuError(f"a shadow page has entries 0..511, got index {index!r}")
        spte = int(sp.spt[index])
        computed = sp.gfn + (index << ((sp.level - 1) * LEVEL_BITS))
        rows.append(
            {
                "index": index,
                "spte": S.describe_spte(spte, sp.level) if spte else "(empty)",
                "get_gfn": f"{sp.get_gfn(index):#x}",
                "gfn + (i << 9*(level-1))": f"{computed:#x}",
                "stored gfns[i]": "(no array)" if sp.direct else f"{sp.get_gfn(index):#x}",
            }
        )
    return pd.DataFrame(rows).set_index("index")


def gfn_lookup(vm: Vm, serial: int, index: int) -> str:
    """What ``kvm_mmu_page_get_gfn(sp, index)`` answers for page ``sp#serial``, and why."""
    sp = _page_by_serial(vm, serial)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < 512:
        raise KvmmuError(f"index must be an int in 0..511, got {index!r}")
    spte = int(sp.spt[index])
    shift = (sp.level - 1) * LEVEL_BITS
    lines = [
        sp.describe(),
        f"spte[{index}] = {S.describe_spte(spte, sp.level) if spte else 'empty'}",
    ]
    if sp.gfns is None:
        lines.append(
            f"direct: get_gfn = gfn + (index << {shift}) = {sp.gfn:#x} + {index << shift:#x}"
            f" = {sp.get_gfn(index):#x}; nothing stored (no gfns array)"
        )
    else:
        stored = sp.get_gfn(index)  # an indirect page: this reads gfns[index]
        note = "" if spte else " (entry empty: the stored value is stale or never written)"
        lines.append(f"indirect: get_gfn reads gfns[{index}] = {stored:#x}{note}")
        lines.append(f"the linear formula would give {sp.gfn + (index << shift):#x}")
    return "\n".join(lines)


GFN_READERS: tuple[tuple[str, str, str], ...] = (
    (
        "kvm_mmu_page_set_gfn (from rmap_add / mmu_set_spte)",
        "stores, or checks, a new leaf's gfn",
        "kvmmu.kvm.page.MmuPage.set_gfn (from kvmmu.kvm.mmu.Mmu.set_spte)",
    ),
    ("rmap_add", "files a new leaf spte under its gfn", "kvmmu.kvm.rmap.Rmap.add"),
    (
        "rmap_remove (drop_spte, mmu_page_zap_pte)",
        "finds the rmap head to unlink a leaf from",
        "kvmmu.kvm.rmap.Rmap.remove (from kvmmu.kvm.mmu.Mmu.drop_spte)",
    ),
    (
        "kvm_mmu_prepare_zap_page -> kvm_mmu_page_unlink_children",
        "zapping drops every leaf",
        "kvmmu.kvm.mmu.Mmu.zap_page",
    ),
    (
        "FNAME(sync_page) / FNAME(sync_spte)",
        "a guest PTE that now names another gfn: drop",
        "kvmmu.kvm.sync.sync_spte",
    ),
    (
        "(hardware walk result)",
        "the gpa of a translation through a leaf spte",
        "kvmmu.kvm.vcpu.Vcpu._gpa_of",
    ),
)


def gfn_readers() -> pd.DataFrame:
    """Every place the kernel reads or writes ``sp->gfns``, and the kvmmu function mirroring it.

    Since the seed change they all go through ``kvm_mmu_page_get_gfn`` /
    ``kvm_mmu_page_set_gfn``, so a direct page never needs the array.
    """
    return pd.DataFrame(
        [{"kernel": k, "why it needs the gfn": w, "kvmmu": p} for k, w, p in GFN_READERS]
    ).set_index("kernel")


def _gfn_of_pfn(memory: GuestMemory, pfn: int) -> int | None:
    for slot in memory.slots:
        if slot.host_pfn <= pfn < slot.host_pfn + slot.npages:
            return slot.base_gfn + pfn - slot.host_pfn
    return None


def gfn_audit(vm: Vm) -> pd.DataFrame:
    """Prove that every gfn ``get_gfn`` returns is the gfn that would have been stored.

    For each present leaf spte (MMIO sptes aside): the rmap holds it under ``get_gfn(i)``
    (``rmap_add`` filed it there with the gfn ``mmu_set_spte`` was given), and the host frame
    in the spte belongs to that gfn through its memslot. One row per shadow page; the kernel's
    counterpart was ``mmu_audit.c``'s rmap checks.
    """
    filed = {(sp.serial, i): gfn for (_, gfn), head in vm.mmu.rmap.items() for sp, i in head}
    rows = []
    for sp in sorted(vm.mmu.active, key=lambda sp: sp.serial):
        checked = bad = 0
        for index in sp.present_indices():
            spte = int(sp.spt[int(index)])
            if not S.is_shadow_present(spte) or not S.is_last(spte, sp.level):
                continue
            checked += 1
            gfn = sp.get_gfn(int(index))
            stored = filed.get((sp.serial, int(index)))
            if stored != gfn or _gfn_of_pfn(vm.memory, S.spte_to_pfn(spte)) != gfn:
                bad += 1
        rows.append(
            {"sp": f"sp#{sp.serial}", "direct": sp.direct, "leaf sptes": checked, "mismatches": bad}
        )
    return pd.DataFrame(rows, columns=["sp", "direct", "leaf sptes", "mismatches"]).set_index("sp")


def gfns_savings(vm: Vm) -> pd.DataFrame:
    """Bytes of gfns arrays with and without the seed change, for the pages of one VM.

    Before the change every page had a 4 KiB gfns array (``kvm_mmu_alloc_page``); after it
    only indirect pages do. Columns: pages, gfns bytes before, after, and saved.
    """
    pages = [sp for sp in vm.mmu.active if not sp.role.invalid]
    rows = []
    for kind, members in (
        ("indirect", [sp for sp in pages if not sp.direct]),
        ("direct", [sp for sp in pages if sp.direct]),
    ):
        before = 4096 * len(members)
        after = sum(sp.gfns_bytes for sp in members)
        rows.append(
            {
                "pages": kind,
                "count": len(members),
                "gfns bytes before 2010": before,
                "gfns bytes after": after,
                "saved": before - after,
            }
        )
    frame = pd.DataFrame(rows).set_index("pages")
    frame.loc["total"] = frame.sum()
    return frame


# -- lessons 5-8 (appended by the notebooks 05-09 engineer) ----------------------------------


def _bar_axes(fig: Figure) -> Axes:
    _style(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_facecolor("none")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color(INK)
    ax.tick_params(colors=INK)
    ax.xaxis.label.set_color(INK)
    ax.yaxis.label.set_color(INK)
    ax.title.set_color(INK)
    return ax


def table_write_view(
    pte_rate: int = 10, pde_rate: int = 0, unsync: bool = False
) -> tuple[pd.DataFrame, Figure]:
    """The lesson 5 widget: counters of a guest writing its page tables, table and bar plot.

    Runs :func:`kvmmu.teaching.exercises.table_write_workload` (200 user reads, ``pte_rate`` PTE and
    ``pde_rate`` PDE stores per 100 reads). No kernel counterpart; the counters are
    ``kvm_vm_stat``'s.
    """
    from kvmmu.teaching.exercises import table_write_workload

    counters = table_write_workload(pte_rate, pde_rate, unsync=unsync)
    frame = counters.to_frame("count")
    fig = Figure(figsize=(9.0, 3.0), dpi=DPI)
    ax = _bar_axes(fig)
    colours = [SHADOW if name.startswith("pf_") else TABLE for name in counters.index]
    ax.barh(list(counters.index)[::-1], list(counters.values)[::-1], color=colours[::-1])
    ax.set_xlabel("events in 200 guest reads")
    mode = "unsync allowed" if unsync else "every table write-protected"
    ax.set_title(f"{pte_rate} PTE + {pde_rate} PDE stores per 100 reads ({mode})", fontsize=10)
    return frame, fig


def sync_view(actions: tuple[str, ...] | list[str] = ()) -> pd.DataFrame:
    """The lesson 6 widget's table: :func:`kvmmu.teaching.exercises.sync_run` for the actions
    so far.

    No kernel counterpart.
    """
    from kvmmu.teaching.exercises import sync_run

    return sync_run(list(actions))


def mode_view(
    tlb_misses: int = 2000, pt_writes: int = 20, cr3_loads: int = 10
) -> tuple[str, pd.DataFrame, Figure]:
    """The lesson 8 widget: cycles per million instructions for shadow paging and TDP.

    The cost model is :func:`kvmmu.teaching.exercises.mode_costs`, stated in the returned text. No
    kernel counterpart.
    """
    from kvmmu.teaching.exercises import EXIT_CYCLES, REF_CYCLES, mode_costs, mode_winner

    costs = mode_costs(tlb_misses, pt_writes, cr3_loads)
    winner = mode_winner(tlb_misses, pt_writes, cr3_loads)
    text = (
        f"model: {REF_CYCLES} cycles per walk reference (4 shadow, 24 two-dimensional), "
        f"{EXIT_CYCLES} cycles per exit (shadow only: page-table stores, CR3 loads)\n"
        f"cheaper: {winner}"
    )
    fig = Figure(figsize=(8.0, 2.4), dpi=DPI)
    ax = _bar_axes(fig)
    modes = list(costs.index)
    walks = costs["walk cycles"].to_numpy() / 1e3
    exits = costs["exit cycles"].to_numpy() / 1e3
    ax.barh(modes, walks, color=TABLE, label="page walks")
    ax.barh(modes, exits, left=walks, color=FAULT, label="VM exits")
    ax.set_xlabel("thousand cycles per million guest instructions")
    legend = ax.legend(loc="lower right", frameon=False, fontsize=9)
    for item in legend.get_texts():
        item.set_color(INK)
    return text, costs.astype("int64"), fig


ERA_COLOURS = {"pre-2010": FAULT, "2010 seed": SHADOW, "today": TABLE}
_SCENARIO_OF = {
    ("TDP", "4 KiB"): "tdp-4k",
    ("TDP", "2 MiB"): "tdp-huge",
    ("shadow", "4 KiB"): "shadow-4k",
    ("shadow", "2 MiB"): "shadow-2m",
}


def savings_figure(frame: pd.DataFrame) -> Figure:
    """Kernel bytes of shadow pages by era against guest size, from
    :func:`kvmmu.teaching.experiments.savings_by_size`; log-log. No kernel counterpart."""
    fig = Figure(figsize=(7.0, 3.6), dpi=DPI)
    ax = _bar_axes(fig)
    sizes = frame.index.to_numpy(dtype=float)
    for era, colour in ERA_COLOURS.items():
        mib = frame[f"{era} bytes"].to_numpy(dtype=float) / (1 << 20)
        ax.plot(sizes, mib, marker="o", color=colour, label=era)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("guest memory (GiB)")
    ax.set_ylabel("shadow-page memory (MiB)")
    legend = ax.legend(frameon=False, fontsize=9)
    for item in legend.get_texts():
        item.set_color(INK)
    return fig


def savings_view(
    size_gib: int = 4, mode: str = "TDP", page_size: str = "4 KiB"
) -> tuple[str, pd.DataFrame, Figure]:
    """The lesson 7 widget: kernel memory of the shadow pages by era for one guest.

    ``mode`` is ``"TDP"`` or ``"shadow"``, ``page_size`` ``"4 KiB"`` or ``"2 MiB"`` (the host's
    pages with TDP, the guest's with shadow paging). Counts come from the batch path
    (:func:`kvmmu.teaching.experiments.batch_summary`); the closed form is checked beside them. No
    kernel counterpart.
    """
    from kvmmu.teaching.experiments import GIB, batch_summary, expected_pages

    key = (mode, page_size)
    if key not in _SCENARIO_OF:
        raise ModeError(
            f"mode must be 'TDP' or 'shadow' and page size '4 KiB' or '2 MiB', got {key}"
        )
    if isinstance(size_gib, bool) or not isinstance(size_gib, int) or not 1 <= size_gib <= 256:
        raise ModeError(f"size_gib must be an int in 1..256, got {size_gib!r}")
    scenario = _SCENARIO_OF[key]
    summary = batch_summary(scenario, size_gib * GIB)
    raw = summary.memory()
    table = pd.DataFrame(
        {
            "shadow pages": raw["pages"],
            "gfns (MiB)": (raw["gfns bytes"] / MIB_F).round(2),
            "total (MiB)": (raw["total bytes"] / MIB_F).round(2),
            "saved vs pre-2010 (MiB)": (raw["saved vs pre-2010"] / MIB_F).round(2),
        }
    )
    n_direct, n_indirect = expected_pages(scenario, size_gib * GIB)
    agree = n_direct + n_indirect == summary.n_pages
    text = (
        f"{scenario}: {summary.n_direct} direct and {summary.n_indirect} indirect shadow pages "
        f"(closed form: {n_direct + n_indirect}, {'agrees' if agree else 'DISAGREES'})"
    )
    fig = Figure(figsize=(7.0, 2.2), dpi=DPI)
    ax = _bar_axes(fig)
    eras = list(table.index)
    ax.barh(
        eras[::-1],
        table["total (MiB)"].to_numpy(dtype=float)[::-1],
        color=[ERA_COLOURS[e] for e in eras[::-1]],
    )
    ax.set_xlabel("shadow-page memory (MiB)")
    return text, table, fig


def walk_cost_figure(table: pd.DataFrame) -> Figure:
    """Memory references per TLB miss, from :func:`kvmmu.teaching.experiments.walk_costs`: formula
    bars with the measured value marked. No kernel counterpart."""
    fig = Figure(figsize=(7.0, 2.8), dpi=DPI)
    ax = _bar_axes(fig)
    labels = [
        f"{p} {g}-level on {h}" if p == "TDP" else f"{p} {g}-level" for p, g, h in table.index
    ]
    ax.barh(labels[::-1], table["formula"].to_numpy()[::-1], color=TABLE, label="formula")
    ax.scatter(
        table["measured"].to_numpy()[::-1], labels[::-1], color=SHADOW, zorder=3, label="measured"
    )
    ax.set_xlabel("memory references per TLB miss")
    legend = ax.legend(frameon=False, fontsize=9, loc="lower right")
    for item in legend.get_texts():
        item.set_color(INK)
    return fig


def pte_exit_figure(frame: pd.DataFrame) -> Figure:
    """Exits per 1000 operations against the PTE-write rate for each paging setup, from
    :func:`kvmmu.teaching.experiments.pte_write_exits`. No kernel counterpart."""
    fig = Figure(figsize=(7.0, 3.0), dpi=DPI)
    ax = _bar_axes(fig)
    colours = [SHADOW, FAULT, TABLE]
    for colour, (name, part) in zip(
        colours, frame.groupby(level="paging", sort=False), strict=False
    ):
        rates = part.index.get_level_values("rate").to_numpy(dtype=float)
        ax.plot(rates, part["exits per 1000 ops"].to_numpy(), marker="o", color=colour, label=name)
    ax.set_xlabel("share of operations that write a PTE")
    ax.set_ylabel("exits per 1000 operations")
    legend = ax.legend(frameon=False, fontsize=9)
    for item in legend.get_texts():
        item.set_color(INK)
    return fig
