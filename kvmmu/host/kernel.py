"""The tiny guest kernel kvmmu boots on the host KVM, and the registers that start it.

A user process is what runs natively on KVM's shadow tables here (this backend emulates guest
CPL-0 code one instruction at a time, so CPL-0 accesses never reach the shadow MMU). The
kernel therefore only sets the stage and serves its one process:

* a GDT (kernel and user code/data, a 64-bit TSS), an IDT, a TSS whose RSP0 is the kernel
  stack: what ``arch/x86/kernel/cpu/common.c`` sets up, in a few hundred bytes;
* a #PF handler that logs the faulting op, CR2 and the error code (``exc_page_fault``) and
  resumes the process at the address it left in R15 (the fault is a value, not a crash);
* a "system call" entered by ``ud2`` (#UD), since ``int n`` and ``out`` fail from CPL 3 on
  this backend (and ``syscall`` would need its MSRs set up): record a value, ``invlpg``, a
  CR3 load, a read-modify-write of a guest page-table entry, a call to the host VMM, exit;
* a stub for every other vector that reports it to the host and stops.

Guest physical layout (slot 0, :data:`RAM_SIZE`) and the direct map of all of it at
:data:`KERNEL_BASE` (Linux's ``page_offset_base``) are fixed constants here, shared with
:mod:`kvmmu.host.program`. No kernel counterpart beyond the names above.
"""

from __future__ import annotations

import struct

from iced_x86 import Code, Instruction, MemoryOperand
from iced_x86 import Register as R

from kvmmu.host.asm import Asm, AsmError
from kvmmu.host.kvm import KvmSegment, KvmSregs

RAM_SIZE = 8 << 20
KERNEL_BASE = 0xFFFF_8880_0000_0000  # the direct map: kernel gva = KERNEL_BASE + gpa
KERNEL_CODE = 0x1000  # entry; handlers follow at fixed offsets
ENTRY_OFFSET, UD_OFFSET, PF_OFFSET, FATAL_OFFSET = 0x0, 0x200, 0x400, 0x600
VECTOR_STUB_SIZE = 16
GDT, IDT, TSS = 0x8000, 0x9000, 0xA000
KERNEL_STACK_TOP = 0x10000
FAULT_LOG, VALUE_LOG, FATAL_LOG = 0x10000, 0x11000, 0x12000
LOG_ENTRY_MAX = 120
USER_CODE_GPA, USER_CODE_GVA, USER_CODE_PAGES = 0x80000, 0x40_0000, 16
HOST_PORT = 0xE9  # `out` from CPL 0 reaches the VMM: the value says why

# the system calls (RAX at ud2)
SYS_EXIT, SYS_RECORD, SYS_INVLPG, SYS_LOAD_CR3, SYS_PTE_UPDATE, SYS_HOST = range(6)
# what the kernel tells the host with `out HOST_PORT, al`
HOST_EXIT, HOST_CALL, HOST_FATAL = range(3)

KERNEL_CS, KERNEL_DS, USER_DS, USER_CS, TSS_SEL = 0x08, 0x10, 0x1B, 0x23, 0x28
CR0_PE, CR0_ET, CR0_NE, CR0_WP, CR0_PG = 1, 1 << 4, 1 << 5, 1 << 16, 1 << 31
CR4_PAE = 1 << 5
EFER_LME, EFER_LMA, EFER_NXE = 1 << 8, 1 << 10, 1 << 11
RFLAGS_FIXED = 0x2


def kva(gpa: int) -> int:
    """The kernel's direct-map address of ``gpa`` (``__va``)."""
    return KERNEL_BASE + gpa


def _entry(user_rip: int) -> Asm:
    """Switch to the process: build an interrupt frame and ``iretq`` to CPL 3."""
    a = Asm()
    for value in (USER_DS, 0, RFLAGS_FIXED, USER_CS, user_rip):
        a.mov_imm(R.RAX, value)
        a.add(Instruction.create_reg(Code.PUSH_R64, R.RAX))
    a.op(Code.IRETQ)
    return a


def _host_call(a: Asm, why: int) -> None:
    a.mov_imm(R.RDX, HOST_PORT)
    a.mov_imm(R.RAX, why)
    a.add(Instruction.create_reg_reg(Code.OUT_DX_AL, R.DX, R.AL))


def _ud_handler() -> Asm:
    """The system call: RAX selects, RDI/RSI/RDX are arguments; returns past the ``ud2``."""
    a = Asm()
    labels = {n: a.label() for n in range(6)}
    done, unknown = a.label(), a.label()
    a.add(Instruction.create_reg(Code.PUSH_R64, R.RBX))
    a.add(Instruction.create_reg(Code.PUSH_R64, R.RCX))
    a.mov_imm(R.RCX, KERNEL_BASE)
    for number, label in labels.items():
        a.reg_imm(Code.CMP_RM64_IMM32, R.RAX, number)
        a.jmp(Code.JE_REL32_64, label)
    a.jmp(Code.JMP_REL32_64, unknown)

    a.bind(labels[SYS_EXIT])
    _host_call(a, HOST_EXIT)
    a.jmp(Code.JMP_REL32_64, labels[SYS_EXIT])  # the host never resumes after an exit

    a.bind(labels[SYS_RECORD])  # value log: count, then (op, value) pairs
    a.mov_imm(R.RCX, kva(VALUE_LOG))
    a.mov_load(R.RBX, R.RCX)
    a.reg_imm(Code.SHL_RM64_IMM8, R.RBX, 4)
    a.reg_reg(Code.ADD_R64_RM64, R.RBX, R.RCX)
    a.mov_store(R.RBX, R.R13, disp=16)
    a.mov_store(R.RBX, R.RSI, disp=24)
    _bump_count(a)
    a.jmp(Code.JMP_REL32_64, done)

    a.bind(labels[SYS_INVLPG])
    a.add(Instruction.create_mem(Code.INVLPG_M, MemoryOperand(R.RDI)))
    a.jmp(Code.JMP_REL32_64, done)

    a.bind(labels[SYS_LOAD_CR3])
    a.reg_reg(Code.MOV_CR_R64, R.CR3, R.RDI)
    a.jmp(Code.JMP_REL32_64, done)

    a.bind(labels[SYS_PTE_UPDATE])  # *(u64 *)__va(rdi) = (old & ~rdx) | rsi
    a.mov_load(R.RBX, R.RCX, R.RDI)
    a.reg_reg(Code.MOV_R64_RM64, R.RAX, R.RDX)
    a.add(Instruction.create_reg(Code.NOT_RM64, R.RAX))
    a.reg_reg(Code.AND_R64_RM64, R.RBX, R.RAX)
    a.reg_reg(Code.OR_R64_RM64, R.RBX, R.RSI)
    a.mov_store(R.RCX, R.RBX, R.RDI)
    a.jmp(Code.JMP_REL32_64, done)

    a.bind(labels[SYS_HOST])
    _host_call(a, HOST_CALL)
    a.jmp(Code.JMP_REL32_64, done)

    a.bind(unknown)
    a.mov_imm(R.RAX, 6)  # an unknown system call is reported as a stray #UD
    a.jmp(Code.JMP_REL32_64, kva(KERNEL_CODE + FATAL_OFFSET))

    a.bind(done)
    a.mov_load(R.RBX, R.RSP, disp=16)
    a.reg_imm(Code.ADD_RM64_IMM8, R.RBX, 2)
    a.mov_store(R.RSP, R.RBX, disp=16)
    a.add(Instruction.create_reg(Code.POP_R64, R.RCX))
    a.add(Instruction.create_reg(Code.POP_R64, R.RBX))
    a.op(Code.IRETQ)
    return a


def _bump_count(a: Asm) -> None:
    """``[rcx] += 1``, the log's entry count."""
    a.mov_load(R.RBX, R.RCX)
    a.reg_imm(Code.ADD_RM64_IMM8, R.RBX, 1)
    a.mov_store(R.RCX, R.RBX)


def _pf_handler() -> Asm:
    """#PF: log (op in R13, CR2, error code), resume at R15 (``exc_page_fault``)."""
    a = Asm()
    for reg in (R.RAX, R.RBX, R.RCX):
        a.add(Instruction.create_reg(Code.PUSH_R64, reg))
    # the frame now: RCX, RBX, RAX, error code (+24), RIP (+32), CS, RFLAGS, RSP, SS
    a.mov_imm(R.RCX, kva(FAULT_LOG))
    a.mov_load(R.RAX, R.RCX)
    a.reg_imm(Code.SHL_RM64_IMM8, R.RAX, 5)
    a.reg_reg(Code.ADD_R64_RM64, R.RAX, R.RCX)
    a.mov_store(R.RAX, R.R13, disp=32)
    a.reg_reg(Code.MOV_R64_CR, R.RBX, R.CR2)
    a.mov_store(R.RAX, R.RBX, disp=40)
    a.mov_load(R.RBX, R.RSP, disp=24)
    a.mov_store(R.RAX, R.RBX, disp=48)
    _bump_count(a)
    a.mov_store(R.RSP, R.R15, disp=32)
    for reg in (R.RCX, R.RBX, R.RAX):
        a.add(Instruction.create_reg(Code.POP_R64, reg))
    a.reg_imm(Code.ADD_RM64_IMM8, R.RSP, 8)
    a.op(Code.IRETQ)
    return a


def _fatal() -> Asm:
    """Any other vector: store (vector, two words of the frame) and tell the host."""
    a = Asm()
    a.mov_imm(R.RCX, kva(FATAL_LOG))
    a.mov_store(R.RCX, R.RAX, disp=8)
    a.mov_load(R.RBX, R.RSP)
    a.mov_store(R.RCX, R.RBX, disp=16)
    a.mov_load(R.RBX, R.RSP, disp=8)
    a.mov_store(R.RCX, R.RBX, disp=24)
    a.mov_imm(R.RBX, 1)
    a.mov_store(R.RCX, R.RBX)
    loop = a.label()
    a.bind(loop)
    _host_call(a, HOST_FATAL)
    a.jmp(Code.JMP_REL32_64, loop)
    return a


def _vector_stub(vector: int) -> Asm:
    a = Asm()
    a.mov_imm(R.RAX, vector)
    a.jmp(Code.JMP_REL32_64, kva(KERNEL_CODE + FATAL_OFFSET))
    return a


def _handler_address(vector: int) -> int:
    if vector == 6:
        return kva(KERNEL_CODE + UD_OFFSET)
    if vector == 14:
        return kva(KERNEL_CODE + PF_OFFSET)
    return kva(KERNEL_CODE + FATAL_OFFSET + 0x100 + VECTOR_STUB_SIZE * vector)


def _place(image: dict[int, bytes], gpa: int, code: Asm, room: int) -> None:
    data = code.encode(kva(gpa))
    if len(data) > room:
        raise AsmError(f"kernel code at {gpa:#x} is {len(data)} bytes, room for {room}")
    image[gpa] = data


def _gdt() -> bytes:
    tss = kva(TSS)
    tss_low = (
        0x67
        | (tss & 0xFFFFFF) << 16
        | 0x89 << 40  # present, 64-bit TSS (available)
        | ((tss >> 24) & 0xFF) << 56
    )
    entries = (
        0,
        0x00AF_9A00_0000_FFFF,  # kernel code, 64-bit
        0x00CF_9200_0000_FFFF,  # kernel data
        0x00CF_F200_0000_FFFF,  # user data, DPL 3
        0x00AF_FA00_0000_FFFF,  # user code, 64-bit, DPL 3
        tss_low,
        tss >> 32,
    )
    return struct.pack("<7Q", *entries)


def _idt() -> bytes:
    gates = []
    for vector in range(32):
        h = _handler_address(vector)
        low = (h & 0xFFFF) | KERNEL_CS << 16 | 0x8E << 40 | ((h >> 16) & 0xFFFF) << 48
        gates += [low, h >> 32]
    return struct.pack(f"<{len(gates)}Q", *gates)


def _tss() -> bytes:
    tss = bytearray(0x68)
    struct.pack_into("<Q", tss, 4, kva(KERNEL_STACK_TOP))  # RSP0
    struct.pack_into("<H", tss, 0x66, 0x68)  # no I/O permission bitmap
    return bytes(tss)


def kernel_image(user_rip: int = USER_CODE_GVA) -> dict[int, bytes]:
    """The kernel's code and tables, gpa -> bytes, to copy into guest RAM before the run.

    No kernel counterpart.
    """
    image: dict[int, bytes] = {}
    _place(image, KERNEL_CODE + ENTRY_OFFSET, _entry(user_rip), UD_OFFSET - ENTRY_OFFSET)
    _place(image, KERNEL_CODE + UD_OFFSET, _ud_handler(), PF_OFFSET - UD_OFFSET)
    _place(image, KERNEL_CODE + PF_OFFSET, _pf_handler(), FATAL_OFFSET - PF_OFFSET)
    _place(image, KERNEL_CODE + FATAL_OFFSET, _fatal(), 0x100)
    for vector in range(32):
        stub = KERNEL_CODE + FATAL_OFFSET + 0x100 + VECTOR_STUB_SIZE * vector
        _place(image, stub, _vector_stub(vector), VECTOR_STUB_SIZE)
    image[GDT] = _gdt()
    image[IDT] = _idt()
    image[TSS] = _tss()
    return image


def _segment(selector: int, seg_type: int, *, code: bool = False) -> KvmSegment:
    return KvmSegment(
        base=0,
        limit=0xFFFFFFFF,
        selector=selector,
        type=seg_type,
        present=1,
        dpl=0,
        db=0 if code else 1,
        s=1,
        l=1 if code else 0,
        g=1,
    )


def long_mode_sregs(sregs: KvmSregs, cr3: int) -> KvmSregs:
    """Fill ``sregs`` for 4-level long mode at CPL 0 with this kernel's GDT, IDT and TSS.

    What ``KVM_SET_SREGS`` needs for a vCPU that starts in long mode, the state a boot loader
    leaves (``arch/x86/boot/compressed/head_64.S`` reaches it step by step).
    """
    sregs.cs = _segment(KERNEL_CS, 0xB, code=True)
    for name in ("ds", "es", "fs", "gs", "ss"):
        setattr(sregs, name, _segment(KERNEL_DS, 0x3))
    sregs.tr = KvmSegment(base=kva(TSS), limit=0x67, selector=TSS_SEL, type=0xB, present=1)
    sregs.ldt = KvmSegment(base=0, limit=0xFFFF, selector=0, type=0x2, present=1)
    sregs.gdt.base, sregs.gdt.limit = kva(GDT), 7 * 8 - 1
    sregs.idt.base, sregs.idt.limit = kva(IDT), 32 * 16 - 1
    sregs.cr0 = CR0_PE | CR0_ET | CR0_NE | CR0_WP | CR0_PG
    sregs.cr3 = cr3
    sregs.cr4 = CR4_PAE
    sregs.efer = EFER_LME | EFER_LMA | EFER_NXE
    return sregs
