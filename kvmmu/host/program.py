"""One guest program, two machines: the same CPL-3 workload on kvmmu and on the host's KVM.

A :class:`Program` lists the guest's mappings (in one or more address spaces) and its
operations: loads, stores and instruction fetches at CPL 3, guest page-table edits, ``invlpg``,
CR3 switches, dirty logging on a second memslot and reads and writes of a read-only one.
:func:`run_kvmmu` plays it on :class:`kvmmu.kvm.vcpu.Vm` with shadow paging;
:func:`run_kvm` assembles it into a user process for the tiny kernel of
:mod:`kvmmu.host.kernel` and runs it on ``/dev/kvm``. Both start from the same guest memory
image, built by :class:`kvmmu.hw.guest.GuestPageTables` (one build per machine, so neither sees
the other's accessed and dirty bits). :func:`compare` returns values read, faults (CR2, error
code), the guest A/D bits of every touched leaf, dirty bitmaps, and the counters side by side,
with the kernel function behind each known difference in :data:`KNOWN_DIFFERENCES`.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import pandas as pd
from iced_x86 import Code, Encoder, Instruction, MemoryOperand, Register_
from iced_x86 import Register as R

from kvmmu.errors import KvmmuError
from kvmmu.host import kernel as K
from kvmmu.host.kvm import (
    KVM_EXIT_IO,
    KVM_EXIT_MMIO,
    KVM_MEM_LOG_DIRTY_PAGES,
    KVM_MEM_READONLY,
    HostKvmError,
    Kvm,
    KvmRegs,
    VcpuFd,
    VmFd,
)
from kvmmu.hw.guest import GuestPageTables
from kvmmu.hw.memory import GuestMemory, MemslotFlag
from kvmmu.hw.walk import PageFault
from kvmmu.hw.x86 import PAGE_SHIFT, Access, PagingMode, Pte
from kvmmu.kvm.page_track import track_write
from kvmmu.kvm.vcpu import Vcpu, Vm
from kvmmu.reference import DATA_DIR

GUEST_MAXPHYADDR = 48  # CPUID.80000008H:EAX[7:0] of this project's hosts' guests
USER_DATA_GPA = 0x10_0000  # 256 frames of user data in slot 0
HUGE_GPA = 0x20_0000  # a 2 MiB-aligned run in slot 0 for 2 MiB guest pages
TABLES_GPA = 0x40_0000  # page-table pools: 64 frames per address space
TABLE_POOL_PAGES = 64
MAX_SPACES = (K.RAM_SIZE - TABLES_GPA) // (TABLE_POOL_PAGES << PAGE_SHIFT)
DIRTY_SLOT, DIRTY_GPA = 1, 0x100_0000  # slot 1: 16 pages, dirty logging switched by the program
RO_SLOT, RO_GPA = 2, 0x200_0000  # slot 2: 16 read-only pages
EXTRA_SLOT_PAGES = 16
MAX_OPS = K.LOG_ENTRY_MAX
MAX_EXITS = 10_000
FETCH_STUB = bytes((0x41, 0xFF, 0xE6))  # jmp r14: a fetched page returns to the program
RESERVED_BIT = 1 << 51  # above MAXPHYADDR 48: a reserved bit in every paging entry
_ADDR = 0x000F_FFFF_FFFF_F000  # the address bits of a 4-level paging entry


class ProgramError(KvmmuError, ValueError):
    """A guest program that cannot run: too many ops, a bad address space, a bad memslot."""


class HostCaptureError(KvmmuError, ValueError):
    """A stored host capture is missing or damaged."""


# -- the program -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Map:
    """A mapping in address space ``space``: ``gva`` -> ``gpa``, size "4K" or "2M".

    With ``table_of`` set, ``gpa`` is ignored and ``gva`` maps the guest's own leaf page table
    that maps ``table_of`` (as a kernel maps its page tables): CPL-3 stores there are guest
    PTE writes that reach the MMU as write faults, not as emulated stores. Such mappings are
    made after all the others.
    """

    gva: int
    gpa: int
    size: str = "4K"
    writable: bool = True
    user: bool = True
    nx: bool = False
    space: int = 0
    table_of: int | None = None


@dataclass(frozen=True, slots=True)
class Read:
    """A CPL-3 load of 8 bytes at ``gva``; the value is recorded."""

    gva: int


@dataclass(frozen=True, slots=True)
class Write:
    """A CPL-3 store of the 8-byte ``value`` at ``gva``."""

    gva: int
    value: int = 0x5A5A_5A5A


@dataclass(frozen=True, slots=True)
class Fetch:
    """A CPL-3 jump to ``gva``, which returns at once (``jmp r14`` is placed there)."""

    gva: int


@dataclass(frozen=True, slots=True)
class UpdatePte:
    """The guest kernel rewrites the entry at ``level`` on ``gva``'s path in ``space``.

    ``new = (old & ~clear) | set``; to re-point a leaf, clear the address bits and set the new
    gpa. Done by the kernel (CPL 0), so it is an emulated store, as in KVM.
    """

    gva: int
    set: int = 0
    clear: int = 0
    level: int = 1
    space: int = 0


@dataclass(frozen=True, slots=True)
class Invlpg:
    """The guest kernel's ``invlpg`` of ``gva``."""

    gva: int


@dataclass(frozen=True, slots=True)
class SwitchCr3:
    """The guest kernel loads CR3 with address space ``space``'s root."""

    space: int


@dataclass(frozen=True, slots=True)
class DirtyLog:
    """The VMM turns dirty logging on ``slot`` on or off (``KVM_MEM_LOG_DIRTY_PAGES``)."""

    enable: bool = True
    slot: int = DIRTY_SLOT


@dataclass(frozen=True, slots=True)
class GetDirtyLog:
    """The VMM fetches and clears ``slot``'s dirty log (``KVM_GET_DIRTY_LOG``)."""

    slot: int = DIRTY_SLOT


Op = Read | Write | Fetch | UpdatePte | Invlpg | SwitchCr3 | DirtyLog | GetDirtyLog


@dataclass(frozen=True, slots=True)
class Program:
    """A guest program: mappings, initial memory words, and the operations in order."""

    name: str
    mappings: tuple[Map, ...]
    ops: tuple[Op, ...]
    spaces: int = 1
    init: tuple[tuple[int, int], ...] = ()  # (gpa, 8-byte value) stored before the run
    description: str = ""

    def __post_init__(self) -> None:
        if not 1 <= self.spaces <= MAX_SPACES:
            raise ProgramError(f"spaces must be 1..{MAX_SPACES}, got {self.spaces}")
        if len(self.ops) > MAX_OPS:
            raise ProgramError(f"{len(self.ops)} ops; the guest's logs hold {MAX_OPS}: split it")
        for item in (*self.mappings, *self.ops):
            space = getattr(item, "space", 0)
            if not 0 <= space < self.spaces:
                raise ProgramError(f"{item} names space {space}; the program has {self.spaces}")
            slot = getattr(item, "slot", DIRTY_SLOT)
            if slot not in (DIRTY_SLOT, RO_SLOT):
                raise ProgramError(f"{item}: slot must be {DIRTY_SLOT} or {RO_SLOT}")


def user_page(index: int) -> int:
    """The gpa of user data frame ``index`` (0..255) in slot 0. No kernel counterpart."""
    if not 0 <= index < 256:
        raise ProgramError(f"user data frame {index} is outside 0..255")
    return USER_DATA_GPA + (index << PAGE_SHIFT)


# -- the guest memory image ------------------------------------------------------------------


@dataclass(slots=True)
class Image:
    """Guest memory with the program's tables, kernel and user code, ready for one machine."""

    memory: GuestMemory
    spaces: list[GuestPageTables]
    code: bytes
    blocks: list[tuple[int, int]]  # per op (and the final exit): [start gva, end gva)
    pte_gpas: dict[int, int]  # op index -> gpa of the entry an UpdatePte rewrites


def leaf_entry(read: Callable[[int], int], cr3: int, gva: int) -> tuple[int, int, int] | None:
    """(level, entry gpa, entry) of the leaf mapping ``gva`` from ``cr3``, None if unmapped.

    A read-only 4-level walk without A/D updates, for reading results. No kernel counterpart.
    """
    table = cr3 & ~0xFFF
    for level in (4, 3, 2, 1):
        gpa = table + ((gva >> (12 + 9 * (level - 1))) & 0x1FF) * 8
        entry = read(gpa)
        if not entry & Pte.PRESENT:
            return None
        if level == 1 or entry & Pte.PAGE_SIZE:
            return level, gpa, entry
        table = entry & _ADDR
    return None


def entry_gpa(read: Callable[[int], int], cr3: int, gva: int, level: int) -> int:
    """The gpa of the entry at ``level`` on ``gva``'s path. No kernel counterpart."""
    table = cr3 & ~0xFFF
    for lv in range(4, level, -1):
        entry = read(table + ((gva >> (12 + 9 * (lv - 1))) & 0x1FF) * 8)
        if not entry & Pte.PRESENT or entry & Pte.PAGE_SIZE:
            raise ProgramError(f"no level-{lv - 1} table on the path of {gva:#x}")
        table = entry & _ADDR
    return table + ((gva >> (12 + 9 * (level - 1))) & 0x1FF) * 8


def build_image(program: Program) -> Image:
    """Build the program's guest memory: slots, tables, kernel, user code, fetch stubs.

    No kernel counterpart: what a VMM does before the first ``KVM_RUN``.
    """
    memory = GuestMemory(K.RAM_SIZE, maxphyaddr=GUEST_MAXPHYADDR)
    memory.slots.add(DIRTY_GPA >> PAGE_SHIFT, EXTRA_SLOT_PAGES)
    memory.slots.add(RO_GPA >> PAGE_SHIFT, EXTRA_SLOT_PAGES, MemslotFlag.READONLY)
    spaces: list[GuestPageTables] = []
    for s in range(program.spaces):
        first = (TABLES_GPA >> PAGE_SHIFT) + s * TABLE_POOL_PAGES
        pt = GuestPageTables(
            memory,
            PagingMode.LEVEL4,
            maxphyaddr=GUEST_MAXPHYADDR,
            table_gfns=range(first, first + TABLE_POOL_PAGES),
        )
        if s == 0:
            pt.map(K.KERNEL_BASE, 0, "2M", length=K.RAM_SIZE)
        else:  # every space shares the kernel's half (one PML4 entry, as Linux does)
            pt.set_entry(K.KERNEL_BASE, 4, spaces[0].entry(K.KERNEL_BASE, 4))
        pt.map(K.USER_CODE_GVA, K.USER_CODE_GPA, length=K.USER_CODE_PAGES << 12, user=True)
        spaces.append(pt)
    ordered = sorted(program.mappings, key=lambda m: m.table_of is not None)
    for m in ordered:
        pt = spaces[m.space]
        gpa = m.gpa
        if m.table_of is not None:
            gpa = entry_gpa(memory.read, pt.cr3, m.table_of, 1) & ~0xFFF
        pt.map(m.gva, gpa, m.size, writable=m.writable, user=m.user, nx=m.nx)
    for gpa, value in program.init:
        memory.write(gpa, value)
    for gpa, data in K.kernel_image().items():
        memory.write_bytes(gpa, data)
    read = memory.read
    pte_gpas: dict[int, int] = {}
    for i, op in enumerate(program.ops):
        if isinstance(op, UpdatePte):
            pte_gpas[i] = entry_gpa(read, spaces[op.space].cr3, op.gva, op.level)
    _place_fetch_stubs(program, memory, spaces)
    code, blocks = assemble(program, spaces, pte_gpas)
    if len(code) > K.USER_CODE_PAGES << PAGE_SHIFT:
        raise ProgramError(f"the program's code is {len(code)} bytes; shorten the program")
    memory.write_bytes(K.USER_CODE_GPA, code)
    return Image(memory, spaces, code, blocks, pte_gpas)


def _gpa_of(memory: GuestMemory, pt: GuestPageTables, gva: int) -> int | None:
    leaf = leaf_entry(memory.read, pt.cr3, gva)
    if leaf is None:
        return None
    level, _, entry = leaf
    size_mask = (1 << (12 + 9 * (level - 1))) - 1
    return (entry & _ADDR & ~size_mask) | (gva & size_mask)


def _place_fetch_stubs(
    program: Program, memory: GuestMemory, spaces: list[GuestPageTables]
) -> None:
    """Put ``jmp r14`` where each Fetch lands; refuse a Write that would overwrite one."""
    stubs = set()
    for op in program.ops:
        if isinstance(op, Fetch):
            for pt in spaces:
                gpa = _gpa_of(memory, pt, op.gva)
                if gpa is not None and memory.slots.find(gpa >> PAGE_SHIFT) is not None:
                    memory.write_bytes(gpa, FETCH_STUB)
                    stubs.add(gpa)
    for op in program.ops:
        if not isinstance(op, Write):
            continue
        for pt in spaces:
            gpa = _gpa_of(memory, pt, op.gva)
            if gpa is not None and any(gpa < s + len(FETCH_STUB) and s < gpa + 8 for s in stubs):
                raise ProgramError(
                    f"{op} overwrites the code a Fetch jumps to; fetch from another offset"
                )


# -- the user process ------------------------------------------------------------------------


def _mov(reg: Register_, value: int) -> Instruction:
    return Instruction.create_reg_u64(Code.MOV_R64_IMM64, reg, value)


def _syscall(number: int) -> list[Instruction]:
    return [_mov(R.RAX, number), Instruction.create(Code.UD2)]


def _op_code(
    i: int, op: Op, resume: int, cr3s: list[int], pte_gpas: dict[int, int]
) -> list[Instruction]:
    """The instructions of op ``i``; ``resume`` is where the #PF handler continues."""
    head = [_mov(R.R13, i), _mov(R.R15, resume)]
    if isinstance(op, Read):
        load = Instruction.create_reg_mem(Code.MOV_R64_RM64, R.RSI, MemoryOperand(R.RBX))
        return [*head, _mov(R.RBX, op.gva), load, *_syscall(K.SYS_RECORD)]
    if isinstance(op, Write):
        store = Instruction.create_mem_reg(Code.MOV_RM64_R64, MemoryOperand(R.RBX), R.RSI)
        return [*head, _mov(R.RBX, op.gva), _mov(R.RSI, op.value), store]
    if isinstance(op, Fetch):
        jump = Instruction.create_reg(Code.JMP_RM64, R.RBX)
        return [*head, _mov(R.R14, resume), _mov(R.RBX, op.gva), jump]
    if isinstance(op, UpdatePte):
        args = [_mov(R.RDI, pte_gpas[i]), _mov(R.RSI, op.set), _mov(R.RDX, op.clear)]
        return [*head, *args, *_syscall(K.SYS_PTE_UPDATE)]
    if isinstance(op, Invlpg):
        return [*head, _mov(R.RDI, op.gva), *_syscall(K.SYS_INVLPG)]
    if isinstance(op, SwitchCr3):
        return [*head, _mov(R.RDI, cr3s[op.space]), *_syscall(K.SYS_LOAD_CR3)]
    return [*head, _mov(R.RDI, i), *_syscall(K.SYS_HOST)]  # DirtyLog, GetDirtyLog


def _encode(instructions: Sequence[Instruction], rip: int) -> bytes:
    out = bytearray()
    for ins in instructions:
        enc = Encoder(64)
        enc.encode(ins, rip + len(out))
        out += enc.take_buffer()
    return bytes(out)


def assemble(
    program: Program, spaces: list[GuestPageTables], pte_gpas: dict[int, int]
) -> tuple[bytes, list[tuple[int, int]]]:
    """The user process: one block per op, then an exit; returns code and block ranges.

    Each block loads R13 with its op index and R15 with its own end, the address the #PF
    handler resumes at, so a faulting access skips the rest of its block. No kernel counterpart.
    """
    cr3s = [pt.cr3 for pt in spaces]
    code = bytearray()
    blocks = []
    for i, op in enumerate(program.ops):
        start = K.USER_CODE_GVA + len(code)
        size = len(_encode(_op_code(i, op, 0, cr3s, pte_gpas), start))
        code += _encode(_op_code(i, op, start + size, cr3s, pte_gpas), start)
        blocks.append((start, start + size))
    start = K.USER_CODE_GVA + len(code)
    code += _encode([_mov(R.R13, len(program.ops)), *_syscall(K.SYS_EXIT)], start)
    blocks.append((start, K.USER_CODE_GVA + len(code)))
    return bytes(code), blocks


# -- running on both machines ----------------------------------------------------------------


@dataclass(slots=True)
class RunResult:
    """What one machine did with a program: the guest-visible results and the counters."""

    machine: str
    values: dict[int, int] = field(default_factory=dict)  # op -> value read
    faults: dict[int, tuple[int, int]] = field(default_factory=dict)  # op -> (cr2, error code)
    dirty: dict[int, list[int]] = field(default_factory=dict)  # op -> gfns of the dirty log
    accessed_dirty: dict[tuple[int, int], str] = field(default_factory=dict)  # (space, gva)
    counters: pd.Series = field(default_factory=lambda: pd.Series(dtype="int64"))
    seconds: float = 0.0  # time spent running the ops (not building or reading back)


def touched(program: Program) -> list[tuple[int, int]]:
    """(space, gva) of every page the program accesses or whose entry it edits, in order.

    No kernel counterpart.
    """
    space, seen = 0, dict[tuple[int, int], None]()
    for op in program.ops:
        if isinstance(op, SwitchCr3):
            space = op.space
        elif isinstance(op, Read | Write | Fetch):
            seen[(space, op.gva & ~0xFFF)] = None
        elif isinstance(op, UpdatePte):
            seen[(op.space, op.gva & ~0xFFF)] = None
    return list(seen)


def _accessed_dirty(
    read: Callable[[int], int], image: Image, program: Program
) -> dict[tuple[int, int], str]:
    """ "AD", "A-", "--" for the leaf of every touched page ("unmapped" when there is none)."""
    out = {}
    for space, gva in touched(program):
        leaf = leaf_entry(read, image.spaces[space].cr3, gva)
        if leaf is None:
            out[(space, gva)] = "unmapped"
            continue
        entry = leaf[2]
        out[(space, gva)] = ("A" if entry & Pte.ACCESSED else "-") + (
            "D" if entry & Pte.DIRTY else "-"
        )
    return out


def _code_pages(block: tuple[int, int]) -> range:
    start, end = block
    return range(start >> PAGE_SHIFT, ((end - 1) >> PAGE_SHIFT) + 1)


def emulated_store(vcpu: Vcpu, gpa: int, value: int) -> None:
    """A store by emulated CPL-0 code: memory, dirty log, then the MMU's write tracker.

    ``emulator_write_phys`` -> ``kvm_page_track_write`` -> ``kvm_mmu_track_write``: the path
    every guest-kernel store takes on this host, where CPL-0 code is emulated.
    """
    vcpu.memory.write(gpa, value)
    vcpu.memory.mark_page_dirty(gpa >> PAGE_SHIFT)
    track_write(vcpu, gpa, 8)


def run_kvmmu(program: Program, *, prefetch: bool = True, update_pte: bool = False) -> RunResult:
    """Play ``program`` on kvmmu: shadow paging, 4 KiB host pages, the vCPU at CPL 3.

    Each op first fetches its code page(s), as the CPU does (a TLB hit after the first time);
    guest-kernel work (page-table edits) goes through :func:`emulated_store`. ``prefetch`` and
    ``update_pte`` are :class:`~kvmmu.kvm.vcpu.Vm`'s: the defaults are today's kernel.
    No kernel counterpart.
    """
    image = build_image(program)
    vm = Vm(memory=image.memory, huge_pages=False, prefetch=prefetch, update_pte=update_pte)
    vcpu = vm.create_vcpu(image.spaces[0].cpu(cpl=3))
    result = RunResult("kvmmu")
    start = time.perf_counter()
    for i, op in enumerate(program.ops):
        _fetch_code(vcpu, image.blocks[i])
        if isinstance(op, Read):
            value = vcpu.read(op.gva, 8)
            if isinstance(value, int):
                result.values[i] = value
            else:
                _record_fault(result, i, value)
        elif isinstance(op, Write):
            _record_fault(result, i, vcpu.write(op.gva, op.value, 8))
        elif isinstance(op, Fetch):
            outcome = vcpu.access(op.gva, Access.FETCH)
            if not isinstance(outcome, int):
                _record_fault(result, i, outcome)
        elif isinstance(op, UpdatePte):
            gpa = image.pte_gpas[i]
            emulated_store(vcpu, gpa, (vm.memory.read(gpa) & ~op.clear) | op.set)
        elif isinstance(op, Invlpg):
            vcpu.invlpg(op.gva)
        elif isinstance(op, SwitchCr3):
            vcpu.set_cr3(image.spaces[op.space].cr3)
        elif isinstance(op, DirtyLog):
            flags = vm.memory.slots.get(op.slot).flags
            if op.enable:
                flags |= MemslotFlag.LOG_DIRTY_PAGES
            else:
                flags &= ~MemslotFlag.LOG_DIRTY_PAGES
            vm.set_memslot_flags(op.slot, flags)
        else:
            result.dirty[i] = vm.get_dirty_log(op.slot)
    _fetch_code(vcpu, image.blocks[-1])
    result.seconds = time.perf_counter() - start
    result.accessed_dirty = _accessed_dirty(vm.memory.read, image, program)
    result.counters = vm.mmu.stats.as_series()
    return result


def _fetch_code(vcpu: Vcpu, block: tuple[int, int]) -> None:
    for page in _code_pages(block):
        outcome = vcpu.access(page << PAGE_SHIFT, Access.FETCH)
        if not isinstance(outcome, int):
            raise ProgramError(f"the program's own code faulted: {outcome}; a kvmmu.host bug")


def _record_fault(result: RunResult, op: int, outcome: object) -> None:
    if isinstance(outcome, PageFault):
        result.faults[op] = (outcome.cr2, int(outcome.error_code))
    elif outcome is not None:
        raise ProgramError(f"op {op} ended in {outcome}; programs use canonical addresses")


def run_kvm(program: Program, *, timeout: float = 2.0) -> RunResult:
    """Run ``program`` on the host's ``/dev/kvm`` and read back what the guest logged.

    Counters are the vCPU's and the VM's binary stats, after minus before the run.
    Raises :class:`kvmmu.host.kvm.HostKvmUnavailable` when there is no usable KVM.
    No kernel counterpart.
    """
    image = build_image(program)
    result = RunResult("kvm")
    with Kvm() as kvm, kvm.create_vm() as vm:
        for slot in image.memory.slots:
            flags = KVM_MEM_READONLY if slot.readonly else 0
            gpa, size = slot.base_gfn << PAGE_SHIFT, slot.npages << PAGE_SHIFT
            host_slot = vm.set_user_memory_region(slot.slot_id, gpa, size, flags)
            host_slot.memory[:] = image.memory.read_bytes(gpa, size)
        vcpu = vm.create_vcpu()
        vcpu.set_sregs(K.long_mode_sregs(vcpu.get_sregs(), image.spaces[0].cr3))
        entry = K.kva(K.KERNEL_CODE + K.ENTRY_OFFSET)
        vcpu.set_regs(KvmRegs(rip=entry, rsp=K.kva(K.KERNEL_STACK_TOP), rflags=K.RFLAGS_FIXED))
        before = _kvm_counters(vm, vcpu)
        start = time.perf_counter()
        _run_to_exit(program, vm, vcpu, result, timeout)
        result.seconds = time.perf_counter() - start
        result.counters = (_kvm_counters(vm, vcpu) - before).astype("int64")
        read = _reader(vm)
        _read_logs(read, result)
        result.accessed_dirty = _accessed_dirty(read, image, program)
    return result


def _kvm_counters(vm: VmFd, vcpu: VcpuFd) -> pd.Series:
    both = pd.concat([vm.stats(), vcpu.stats()])
    summed: pd.Series = both.groupby(level=0).sum().astype("int64")
    return summed


def _reader(vm: VmFd) -> Callable[[int], int]:
    def read(gpa: int) -> int:
        return int.from_bytes(vm.read(gpa, 8), "little")

    return read


def _run_to_exit(
    program: Program, vm: VmFd, vcpu: VcpuFd, result: RunResult, timeout: float
) -> None:
    for _ in range(MAX_EXITS):
        ex = vcpu.run(timeout)
        if ex.reason == KVM_EXIT_MMIO:
            continue  # a store to the read-only slot: dropped, as kvmmu drops it
        if ex.reason != KVM_EXIT_IO or ex.port != K.HOST_PORT:
            rip = vcpu.get_regs().rip
            raise HostKvmError(f"the guest stopped with {ex.name} at rip {rip:#x}")
        if ex.value == K.HOST_EXIT:
            return
        if ex.value == K.HOST_FATAL:
            vector, word0, word1 = struct.unpack("<3Q", vm.read(K.FATAL_LOG + 8, 24))
            raise HostKvmError(
                f"the guest took vector {vector} (frame {word0:#x} {word1:#x}); a kvmmu.host bug"
            )
        i = vcpu.get_regs().rdi
        op = program.ops[i]
        if isinstance(op, DirtyLog):
            flags = vm.slots[op.slot].flags
            flags = (
                flags | KVM_MEM_LOG_DIRTY_PAGES if op.enable else flags & ~KVM_MEM_LOG_DIRTY_PAGES
            )
            vm.set_memslot_flags(op.slot, flags)
        elif isinstance(op, GetDirtyLog):
            result.dirty[i] = vm.get_dirty_log(op.slot)
    raise HostKvmError(f"the guest made more than {MAX_EXITS} exits; its program loops")


def _read_logs(read: Callable[[int], int], result: RunResult) -> None:
    for k in range(read(K.FAULT_LOG)):
        base = K.FAULT_LOG + 32 + 32 * k
        result.faults[read(base)] = (read(base + 8), read(base + 16))
    for k in range(read(K.VALUE_LOG)):
        base = K.VALUE_LOG + 16 + 16 * k
        result.values[read(base)] = read(base + 8)


# -- the comparison --------------------------------------------------------------------------

# kernel stat name -> kvmmu counter name (kvmmu.kvm.stats.MmuStats), None: no kvmmu counter
COUNTERS: dict[str, str | None] = {
    "pf_fixed": "pf_fixed",
    "pf_guest": "pf_guest",
    "pf_emulate": "pf_emulate",
    "pf_mmio_spte_created": "pf_mmio_spte_created",
    "mmu_cache_miss": "mmu_cache_miss",
    "mmu_pte_write": "mmu_pte_write",
    "mmu_pde_zapped": "mmu_pde_zapped",
    "mmu_flooded": "mmu_flooded",
    "mmu_shadow_zapped": "mmu_shadow_zapped",
    "mmu_recycled": "mmu_recycled",
    "mmu_unsync": "mmu_unsync",
    "mmio_exits": "mmio_exits",
    "pages_4k": "pages_4k",
    "pages_2m": "pages_2m",
    "pf_taken": "pf_taken",
    "pf_spurious": "pf_spurious",
    "invlpg": "invlpg",
    "tlb_flush": None,
    "insn_emulation": None,
    "exits": None,
}


@dataclass(frozen=True, slots=True)
class KnownDifference:
    """A counter that differs between kvmmu and the host KVM, the kernel function behind it,
    why, the standard programs where it shows ("*": every program), and whether the cause is
    the host's backend rather than kvmmu (the model is not bent to match a backend)."""

    counter: str
    function: str
    why: str
    programs: tuple[str, ...] = ("*",)
    backend: bool = False  # True: the host's KVM backend differs from upstream, not kvmmu

    def applies(self, program: str) -> bool:
        """True if this difference is expected in ``program``. No kernel counterpart."""
        return "*" in self.programs or program in self.programs


KNOWN_DIFFERENCES: tuple[KnownDifference, ...] = (
    KnownDifference(
        "mmu_pte_write",
        "kvm_mmu_track_write",
        "this backend (kvm_pvm), not upstream KVM: it emulates all guest CPL-0 code, so every "
        "guest-kernel store (log entries, stack, exception frames) is an emulated write and "
        "counts once indirect shadow pages exist; kvmmu counts the same way, but its guest "
        "kernel is not emulated, so only the program's own page-table stores count",
        backend=True,
    ),
)


def known_difference(counter: str, program: str) -> KnownDifference | None:
    """The entry of :data:`KNOWN_DIFFERENCES` for ``counter`` in ``program``, if any.

    No kernel counterpart.
    """
    for diff in KNOWN_DIFFERENCES:
        if diff.counter == counter and diff.applies(program):
            return diff
    return None


KERNEL_ONLY = "no kvmmu counter"


@dataclass(slots=True)
class Comparison:
    """One program on both machines: each table has columns kvmmu / kvm / equal."""

    program: str
    values: pd.DataFrame
    faults: pd.DataFrame
    accessed_dirty: pd.DataFrame
    dirty_logs: pd.DataFrame
    counters: pd.DataFrame  # index: kernel stat name; columns kvmmu / kvm / equal / why

    @property
    def behaviour_equal(self) -> bool:
        """True when values, faults, A/D bits and dirty logs all agree. No kernel counterpart."""
        tables = (self.values, self.faults, self.accessed_dirty, self.dirty_logs)
        return all(bool(t["equal"].all()) for t in tables)

    def unexplained(self) -> list[str]:
        """Counters that differ without an entry in :data:`KNOWN_DIFFERENCES`.

        No kernel counterpart."""
        c = self.counters
        return [str(n) for n in c.index[~c["equal"] & (c["why"] == "")]]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (:func:`comparison_from_dict` reverses it). No kernel counterpart."""
        out: dict[str, Any] = {"program": self.program}
        for name in TABLES:
            frame = getattr(self, name)
            out[name] = json.loads(frame.reset_index().to_json(orient="records"))
        return out


TABLES = ("values", "faults", "accessed_dirty", "dirty_logs", "counters")
_INDEX = {
    "values": ["op"],
    "faults": ["op"],
    "accessed_dirty": ["space", "gva"],
    "dirty_logs": ["op"],
    "counters": ["counter"],
}


def comparison_from_dict(data: dict[str, Any]) -> Comparison:
    """Rebuild a :class:`Comparison` from :meth:`Comparison.to_dict`. No kernel counterpart."""
    frames = {}
    for name in TABLES:
        columns = [*_INDEX[name], "kvmmu", "kvm", "equal"] + (["why"] if name == "counters" else [])
        frame = pd.DataFrame(data[name], columns=columns).set_index(_INDEX[name])
        if name == "counters":
            frame["kvmmu"] = frame["kvmmu"].astype("Int64")
            frame["why"] = frame["why"].fillna("")
        frame["equal"] = frame["equal"].astype(bool)
        frames[name] = frame
    return Comparison(str(data["program"]), **frames)


def _side_by_side(a: dict[Any, Any], b: dict[Any, Any], index: list[str]) -> pd.DataFrame:
    keys = sorted(set(a) | set(b))
    rows = [(*(k if isinstance(k, tuple) else (k,)), _fmt(a.get(k)), _fmt(b.get(k))) for k in keys]
    frame = pd.DataFrame(rows, columns=[*index, "kvmmu", "kvm"])
    frame["equal"] = frame["kvmmu"] == frame["kvm"]
    return frame.set_index(index)


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, tuple):
        return f"cr2={value[0]:#x} ec={value[1]:#x}"
    if isinstance(value, list):
        return " ".join(f"{g:#x}" for g in value) or "(none)"
    if isinstance(value, int):
        return f"{value:#x}"
    return str(value)


def counter_table(kvmmu: pd.Series, kvm: pd.Series, program: str = "") -> pd.DataFrame:
    """The counters side by side under the kernel's names, with the reason for each difference.

    No kernel counterpart.
    """
    rows = []
    for name, ours in COUNTERS.items():
        mine = int(kvmmu[ours]) if ours is not None else None
        theirs = int(kvm.get(name, 0))
        equal = mine == theirs
        why = ""
        if ours is None:
            why = KERNEL_ONLY
        elif not equal and (diff := known_difference(name, program)) is not None:
            why = f"{diff.function}: {diff.why}"
        rows.append((name, mine, theirs, equal, why))
    frame = pd.DataFrame(rows, columns=["counter", "kvmmu", "kvm", "equal", "why"])
    frame["kvmmu"] = frame["kvmmu"].astype("Int64")
    return frame.set_index("counter")


def compare_results(program: Program, ours: RunResult, theirs: RunResult) -> Comparison:
    """Put two runs of ``program`` side by side. No kernel counterpart."""
    ad_ours = {(s, f"{g:#x}"): v for (s, g), v in ours.accessed_dirty.items()}
    ad_theirs = {(s, f"{g:#x}"): v for (s, g), v in theirs.accessed_dirty.items()}
    return Comparison(
        program.name,
        _side_by_side(ours.values, theirs.values, ["op"]),
        _side_by_side(ours.faults, theirs.faults, ["op"]),
        _side_by_side(ad_ours, ad_theirs, ["space", "gva"]),
        _side_by_side(ours.dirty, theirs.dirty, ["op"]),
        counter_table(ours.counters, theirs.counters, program.name),
    )


def compare(program: Program, *, timeout: float = 2.0) -> Comparison:
    """Run ``program`` on kvmmu and on ``/dev/kvm`` and compare. No kernel counterpart."""
    return compare_results(program, run_kvmmu(program), run_kvm(program, timeout=timeout))


# -- the programs the lessons use ------------------------------------------------------------

DATA_GVA = 0x1000_0000
HUGE_GVA = 0x4000_0000
_W, _A, _D = int(Pte.WRITABLE), int(Pte.ACCESSED), int(Pte.DIRTY)


def _data(n: int) -> tuple[Map, ...]:
    return tuple(Map(DATA_GVA + (i << 12), user_page(i)) for i in range(n))


def _init(n: int) -> tuple[tuple[int, int], ...]:
    return tuple((user_page(i) + 8, 0x1000 + i) for i in range(n))


def _program_touch() -> Program:
    pages = [DATA_GVA + (i << 12) for i in range(8)]
    ops: list[Op] = [Read(g + 8) for g in pages]
    ops += [Write(g + 16, 0xAB00 + k) for k, g in enumerate(pages[:4])]
    ops += [Fetch(pages[5] + 0x800), Read(pages[0] + 16), Read(pages[3] + 16)]
    return Program("touch", _data(8), tuple(ops), init=_init(8), description="read, write, fetch")


def _program_pte_edits() -> Program:
    g0, g1 = DATA_GVA, DATA_GVA + 0x1000
    ops: tuple[Op, ...] = (
        Read(g0 + 8),
        Write(g0 + 16, 1),
        UpdatePte(g0, clear=_W),  # write-protect, without invlpg: the TLB may keep it
        Invlpg(g0),
        Write(g0 + 16, 2),  # write-protect fault
        UpdatePte(g0, set=_W),
        Invlpg(g0),
        Write(g0 + 16, 3),
        UpdatePte(g1, clear=_ADDR, set=user_page(9)),  # re-point g1 at frame 9
        Invlpg(g1),
        Read(g1 + 8),
        UpdatePte(g0, clear=_A | _D),
        Invlpg(g0),
        Read(g0 + 16),
    )
    return Program("pte_edits", _data(2), ops, init=_init(10), description="guest PTE edits")


def _program_address_spaces() -> Program:
    maps = tuple(Map(DATA_GVA, user_page(10 + s), space=s) for s in range(3))
    maps += tuple(Map(DATA_GVA + 0x1000, user_page(20), space=s) for s in range(3))
    ops: list[Op] = []
    for s in (0, 1, 2, 0, 2, 1):
        ops += [SwitchCr3(s), Read(DATA_GVA + 8), Read(DATA_GVA + 0x1008)]
    ops += [Write(DATA_GVA + 0x1010, 5), SwitchCr3(0), Read(DATA_GVA + 0x1010)]
    init = tuple((user_page(10 + s) + 8, 0x100 + s) for s in range(3))
    return Program("address_spaces", maps, tuple(ops), spaces=3, init=init)


def _program_faults() -> Program:
    g = DATA_GVA
    maps = (
        Map(g, user_page(0)),
        Map(g + 0x1000, user_page(1), writable=False),
        Map(g + 0x2000, user_page(2), user=False),
        Map(g + 0x3000, user_page(3), nx=True),
        Map(g + 0x4000, user_page(4)),
    )
    ops: tuple[Op, ...] = (
        Read(g + 0x9000),  # not present: 0x4
        Write(g + 0x9000),  # 0x6
        Fetch(g + 0x9000),  # 0x14
        Read(g + 0x1008),
        Write(g + 0x1008),  # write-protect: 0x7
        Read(g + 0x2008),  # user/supervisor: 0x5
        Read(g + 0x3008),
        Fetch(g + 0x3800),  # NX: 0x15
        Read(g + 0x4008),
        UpdatePte(g + 0x4000, set=RESERVED_BIT),
        Invlpg(g + 0x4000),
        Read(g + 0x4008),  # reserved bit: 0xd
        UpdatePte(g + 0x4000, clear=RESERVED_BIT),
        Invlpg(g + 0x4000),
        Read(g + 0x4008),
    )
    return Program("faults", maps, ops, init=_init(5), description="every fault kind")


def _program_huge() -> Program:
    maps = (Map(HUGE_GVA, HUGE_GPA, "2M"),)
    offsets = (0, 0x1000, 0x7000, 0x10_0000, 0x1F_F000)
    ops: list[Op] = [Read(HUGE_GVA + o + 8) for o in offsets]
    ops += [Write(HUGE_GVA + 0x2000, 9), Read(HUGE_GVA + 0x2000)]
    init = tuple((HUGE_GPA + o + 8, 0x200 + k) for k, o in enumerate(offsets))
    return Program("huge_page", maps, tuple(ops), init=init, description="a 2 MiB guest page")


def _program_dirty_log() -> Program:
    g = DATA_GVA + 0x10_0000
    maps = tuple(Map(g + (i << 12), DIRTY_GPA + (i << 12)) for i in range(6))
    ops: tuple[Op, ...] = (
        Write(g, 1),
        DirtyLog(True),
        GetDirtyLog(),
        Write(g + 0x1000, 2),
        Write(g + 0x3000, 3),
        Read(g + 0x4000),
        GetDirtyLog(),
        Write(g + 0x1000, 4),
        Write(g + 0x5000, 5),
        GetDirtyLog(),
        GetDirtyLog(),
        DirtyLog(False),
        Write(g + 0x2000, 6),
    )
    return Program("dirty_log", maps, ops, description="dirty logging on slot 1")


def _program_readonly_slot() -> Program:
    g = DATA_GVA + 0x20_0000
    maps = tuple(Map(g + (i << 12), RO_GPA + (i << 12)) for i in range(2))
    ops: tuple[Op, ...] = (Read(g + 8), Write(g + 8, 7), Read(g + 8), Write(g + 0x1010, 8))
    return Program("readonly_slot", maps, ops, init=((RO_GPA + 8, 0x42),))


def _program_unsync() -> Program:
    """The process writes its own page table from CPL 3: the shadowed table goes unsync."""
    table = 0x2000_0000  # where the leaf table of DATA_GVA is mapped
    repoint = user_page(9) | int(Pte.PRESENT | Pte.WRITABLE | Pte.USER)
    maps = (*_data(3), Map(table, 0, table_of=DATA_GVA))
    ops: tuple[Op, ...] = (
        Read(DATA_GVA + 8),
        Read(DATA_GVA + 0x1008),
        Write(table + 8, repoint),  # PTE 1 -> frame 9, a write fault on a shadowed gfn
        Read(DATA_GVA + 0x1008),  # the TLB (or the unsync spte) may still give frame 1
        Invlpg(DATA_GVA + 0x1000),  # syncs the page
        Read(DATA_GVA + 0x1008),
        Read(table + 8),
        Write(table + 0x10, 0),  # unmap page 2 through the table
        Invlpg(DATA_GVA + 0x2000),
        Read(DATA_GVA + 0x2008),
    )
    return Program("unsync", maps, ops, init=_init(10), description="CPL-3 guest PTE writes")


def _program_table_edits() -> Program:
    """Emulated stores to an upper-level table: a PDE rewritten, then write flooding."""
    g0, g1, big = DATA_GVA, DATA_GVA + 0x1000, 0x20_0000
    ops: tuple[Op, ...] = (
        Read(g0 + 8),
        Read(g1 + 8),
        UpdatePte(g0, set=_A, level=2),  # a present, shadowed PDE rewritten
        Invlpg(g0),
        Read(g0 + 8),
        UpdatePte(g0 + big, level=2),  # three stores to the page directory, no use between
        UpdatePte(g0 + 2 * big, level=2),
        UpdatePte(g0 + 3 * big, level=2),
        Read(g1 + 8),
        Read(g0 + 8),
    )
    return Program("table_edits", _data(2), ops, init=_init(2), description="PDE writes")


PROGRAMS: dict[str, Callable[[], Program]] = {
    "touch": _program_touch,
    "pte_edits": _program_pte_edits,
    "address_spaces": _program_address_spaces,
    "faults": _program_faults,
    "huge_page": _program_huge,
    "dirty_log": _program_dirty_log,
    "readonly_slot": _program_readonly_slot,
    "unsync": _program_unsync,
    "table_edits": _program_table_edits,
}


def program(name: str) -> Program:
    """One of the standard programs by name (see :data:`PROGRAMS`). No kernel counterpart."""
    if name not in PROGRAMS:
        raise ProgramError(f"no program {name!r}; choose one of {sorted(PROGRAMS)}")
    return PROGRAMS[name]()


# -- captures of real runs -------------------------------------------------------------------

CAPTURE_DIR: Path | Traversable = DATA_DIR / "kvm-captures"  # package data: a wheel has it


@dataclass(frozen=True, slots=True)
class HostCapture:
    """A stored run of the standard programs on a real KVM: host facts and the comparisons."""

    name: str
    host: dict[str, Any]
    comparisons: dict[str, Comparison]


def capture_to_dict(host: dict[str, Any], comparisons: Sequence[Comparison]) -> dict[str, Any]:
    """The JSON form of a capture. No kernel counterpart."""
    return {
        "format": 1,
        "host": host,
        "comparisons": [c.to_dict() for c in comparisons],
    }


def load_host_capture(name: str, capture_dir: Path | Traversable | None = None) -> HostCapture:
    """Read ``kvmmu/data/kvm-captures/<name>.json`` (written by ``scripts/capture_host_kvm.py``).

    :class:`HostCaptureError` names the file and what is wrong with it. No kernel counterpart.
    """
    root = CAPTURE_DIR if capture_dir is None else capture_dir
    path = root.joinpath(f"{name}.json")
    if not path.is_file():
        found = (
            sorted(p.name.removesuffix(".json") for p in root.iterdir() if p.name.endswith(".json"))
            if root.is_dir()
            else []
        )
        raise HostCaptureError(
            f"no host capture {name!r} in kvmmu/data/kvm-captures (have: {found}); run "
            "scripts/capture_host_kvm.py on a machine with /dev/kvm to make one"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != 1:
            raise KeyError("format")
        comparisons = [comparison_from_dict(c) for c in data["comparisons"]]
        host = dict(data["host"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise HostCaptureError(
            f"host capture {path.name} is damaged ({type(exc).__name__}: {exc}); "
            "restore it from git or capture again with scripts/capture_host_kvm.py"
        ) from exc
    return HostCapture(name, host, {c.program: c for c in comparisons})
