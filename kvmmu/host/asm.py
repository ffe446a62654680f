"""A few lines of assembler over iced-x86's block encoder, for the guest code kvmmu runs on KVM.

iced-x86's Python package encodes one :class:`iced_x86.Instruction` at a time and lays out a
block with branches resolved (``BlockEncoder``), but has no label-based assembler. :class:`Asm`
adds labels the way iced's own Rust ``CodeAssembler`` does: a label is a placeholder instruction
address that the block encoder relocates. No kernel counterpart.
"""

from __future__ import annotations

from iced_x86 import BlockEncoder, Code, Code_, Instruction, MemoryOperand, Register, Register_

from kvmmu.errors import KvmmuError

_LABEL_BASE = 1 << 48  # placeholder addresses for labels, far from the sequence numbers


class AsmError(KvmmuError, ValueError):
    """Guest code that cannot be assembled: an unbound label, a label bound twice, no room."""


class Asm:
    """A list of instructions with labels, encoded at a chosen address by :meth:`encode`.

    No kernel counterpart.
    """

    def __init__(self) -> None:
        self._instructions: list[Instruction] = []
        self._pending: int | None = None
        self._bound: set[int] = set()
        self._labels = 0
        self._seq = 0

    def label(self) -> int:
        """A new, unbound label (use it in :meth:`jmp` before or after :meth:`bind`).

        No kernel counterpart."""
        self._labels += 1
        return _LABEL_BASE + self._labels

    def bind(self, label: int) -> None:
        """Attach ``label`` to the next instruction added. No kernel counterpart."""
        if label in self._bound or self._pending is not None:
            raise AsmError(f"label {label - _LABEL_BASE} is bound twice or shares an address")
        self._pending = label
        self._bound.add(label)

    def add(self, instruction: Instruction) -> None:
        """Append one instruction (built with ``Instruction.create*``)."""
        if self._pending is not None:
            instruction.ip = self._pending
            self._pending = None
        else:
            self._seq += 1
            instruction.ip = self._seq
        self._instructions.append(instruction)

    # -- the handful of instructions the guest kernel and the workloads use -----------------

    def op(self, code: Code_) -> None:
        """An instruction without operands (``hlt``, ``ud2``, ``iretq``). No kernel counterpart."""
        self.add(Instruction.create(code))

    def mov_imm(self, reg: Register_, value: int) -> None:
        """``mov reg64, imm64``. No kernel counterpart."""
        self.add(Instruction.create_reg_u64(Code.MOV_R64_IMM64, reg, value))

    def mov_load(
        self, reg: Register_, base: Register_, index: Register_ = Register.NONE, disp: int = 0
    ) -> None:
        """``mov reg64, [base + index + disp]``. No kernel counterpart."""
        mem = MemoryOperand(base, index, 1, disp, 8 if disp else 0)
        self.add(Instruction.create_reg_mem(Code.MOV_R64_RM64, reg, mem))

    def mov_store(
        self, base: Register_, reg: Register_, index: Register_ = Register.NONE, disp: int = 0
    ) -> None:
        """``mov [base + index + disp], reg64``. No kernel counterpart."""
        mem = MemoryOperand(base, index, 1, disp, 8 if disp else 0)
        self.add(Instruction.create_mem_reg(Code.MOV_RM64_R64, mem, reg))

    def reg_reg(self, code: Code_, dst: Register_, src: Register_) -> None:
        """A two-register instruction (``mov``, ``and``, ``or``, ``cmp``, ``imul``...).

        No kernel counterpart."""
        self.add(Instruction.create_reg_reg(code, dst, src))

    def reg_imm(self, code: Code_, reg: Register_, value: int) -> None:
        """A register-immediate instruction (``add r64, imm32``, ``cmp r64, imm32``...).

        No kernel counterpart."""
        self.add(Instruction.create_reg_i32(code, reg, value))

    def jmp(self, code: Code_, label: int) -> None:
        """A branch to ``label`` (``Code.JMP_REL32_64``, ``Code.JE_REL32_64``...)."""
        self.add(Instruction.create_branch(code, label))

    def encode(self, rip: int) -> bytes:
        """The machine code, laid out to run at guest address ``rip``. No kernel counterpart."""
        if self._pending is not None:
            raise AsmError("a label is bound after the last instruction; add one after it")
        encoder = BlockEncoder(64)
        encoder.add_many(self._instructions)
        try:
            return bytes(encoder.encode(rip))
        except ValueError as exc:
            raise AsmError(f"cannot encode the guest code at {rip:#x}: {exc}") from exc
