"""The role of a shadow page: ``union kvm_mmu_page_role`` (``arch/x86/include/asm/kvm_host.h``).

Two shadow pages of the same guest frame are interchangeable only if everything that changes
how the guest's entries must be translated is equal: the level, whether the guest entries are
4 bytes wide, which part of a 32-bit guest table is shadowed (``quadrant``), whether the page
shadows a guest table at all (``direct``), the rights inherited from the levels above
(``access``), and the CPU state that changes permission semantics (``cr0_wp``, ``efer_nx``,
``smep_andnot_wp``, ``smap_andnot_wp``). The role is part of the hash key, so a change of any
of these in the guest makes the MMU build, or find, different shadow pages.

The CPU role (``union kvm_cpu_role``: this base role plus ``kvm_mmu_extended_role``) describes
the guest's paging as a whole; which register bits reset the MMU context is here too
(``KVM_MMU_CR0_ROLE_BITS``, ``KVM_MMU_CR4_ROLE_BITS``, ``KVM_MMU_EFER_ROLE_BITS``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from functools import lru_cache

from kvmmu.errors import ModeError
from kvmmu.hw.x86 import Acc, Cr0, Cr4, Efer, PagingMode, paging_mode

# bit layout of the packed word, field -> (first bit, width), as in kvm_host.h
ROLE_LAYOUT: dict[str, tuple[int, int]] = {
    "level": (0, 4),
    "has_4_byte_gpte": (4, 1),
    "quadrant": (5, 2),
    "direct": (7, 1),
    "access": (8, 3),
    "invalid": (11, 1),
    "efer_nx": (12, 1),
    "cr0_wp": (13, 1),
    "smep_andnot_wp": (14, 1),
    "smap_andnot_wp": (15, 1),
    "ad_disabled": (16, 1),
    "guest_mode": (17, 1),
    "passthrough": (18, 1),
    "smm": (24, 8),
}


@dataclass(frozen=True, slots=True)
class MmuPageRole:
    """Every field of ``union kvm_mmu_page_role``; :attr:`word` packs them as the kernel does.

    ``invalid`` is kept out of the hash key by the MMU (an invalid page is never found again);
    ``ad_disabled`` and ``guest_mode`` concern EPT without A/D bits and nested guests, which
    kvmmu does not model, so they stay 0; ``smm`` is 0 outside System Management Mode.
    """

    level: int
    has_4_byte_gpte: bool = False
    quadrant: int = 0
    direct: bool = False
    access: int = int(Acc.ALL)
    invalid: bool = False
    efer_nx: bool = False
    cr0_wp: bool = False
    smep_andnot_wp: bool = False
    smap_andnot_wp: bool = False
    ad_disabled: bool = False
    guest_mode: bool = False
    passthrough: bool = False
    smm: int = 0

    def __post_init__(self) -> None:
        for name, (_, width) in ROLE_LAYOUT.items():
            value = int(getattr(self, name))
            if not 0 <= value < (1 << width):
                raise ModeError(f"role.{name}={value} does not fit its {width}-bit field")
        if not 1 <= self.level <= 5:
            raise ModeError(f"role.level={self.level} must be 1..5")

    @property
    def word(self) -> int:
        """The packed 32-bit ``role.word`` the kernel hashes and compares."""
        word = 0
        for name, (shift, _) in ROLE_LAYOUT.items():
            word |= int(getattr(self, name)) << shift
        return word

    @classmethod
    def from_word(cls, word: int) -> MmuPageRole:
        """Unpack a ``role.word``."""
        values: dict[str, int | bool] = {}
        for f in fields(cls):
            shift, width = ROLE_LAYOUT[f.name]
            v = (word >> shift) & ((1 << width) - 1)
            values[f.name] = bool(v) if f.type in ("bool", bool) else v
        return cls(**values)  # type: ignore[arg-type]

    def child(self, *, direct: bool, access: int, quadrant: int = 0) -> MmuPageRole:
        """The role of a page one level down (``kvm_mmu_child_role``).

        A 32-bit guest's page table maps 4 MiB with 1024 entries; a PAE shadow table maps 2 MiB,
        so two shadow tables shadow one guest table and ``quadrant`` (0 or 1, the low bit of the
        parent's spte index) says which half. The caller computes it.
        """
        return _child_role(self, direct, access, quadrant)

    def with_invalid(self) -> MmuPageRole:
        """The same role with ``invalid`` set, as zapping does."""
        return replace(self, invalid=True)

    def describe(self) -> str:
        """A compact one-line summary for tables and plots.

        Like ``KVM_MMU_PAGE_PRINTK`` in ``mmutrace.h``.
        """
        bits = [f"L{self.level}", "direct" if self.direct else "indirect"]
        if self.has_4_byte_gpte:
            bits.append(f"4-byte q{self.quadrant}")
        bits.append(
            "acc="
            + "".join(
                c if self.access & b else "-"
                for c, b in (("u", Acc.USER), ("w", Acc.WRITE), ("x", Acc.EXEC))
            )
        )
        bits.append(f"wp={int(self.cr0_wp)}")
        if self.invalid:
            bits.append("invalid")
        return " ".join(bits)


# Roles are immutable values and few: the role computations below are pure functions of their
# arguments, so each result is computed once and shared (typed: True is not taken for 1).
_role_cache = lru_cache(maxsize=1024, typed=True)


@_role_cache
def _child_role(parent: MmuPageRole, direct: bool, access: int, quadrant: int) -> MmuPageRole:
    return replace(
        parent,
        level=parent.level - 1,
        direct=direct,
        access=access,
        quadrant=quadrant,
        passthrough=False,
    )


# The register bits whose change resets the MMU context (mmu.h): kvm_post_set_cr0,
# kvm_post_set_cr4 and kvm_set_efer call kvm_mmu_reset_context when one of them flips.
CR0_ROLE_BITS = int(Cr0.PG | Cr0.WP)  # KVM_MMU_CR0_ROLE_BITS
CR4_ROLE_BITS = int(Cr4.PSE | Cr4.PAE | Cr4.LA57 | Cr4.SMEP | Cr4.SMAP | Cr4.PKE)
EFER_ROLE_BITS = int(Efer.LME | Efer.NXE)  # KVM_MMU_EFER_ROLE_BITS


@dataclass(frozen=True, slots=True)
class MmuExtendedRole:
    """``union kvm_mmu_extended_role``: CPU state the MMU context depends on beyond the page role.

    These bits change how KVM walks and checks guest entries in software (``cr4_pse``: whether
    bit 7 of a 32-bit PDE means PS; ``cr4_smep``/``cr4_smap``: permission checks even with
    CR0.WP=1; ``cr4_pke`` and ``cr4_la57`` only in long mode), but are not part of a shadow
    page's identity. ``valid`` tells a computed role from the all-zero one; ``execonly`` is
    for EPT, which kvmmu's shadow MMU does not model, so it stays False.
    """

    valid: bool = False
    execonly: bool = False
    cr4_pse: bool = False
    cr4_pke: bool = False
    cr4_smap: bool = False
    cr4_smep: bool = False
    cr4_la57: bool = False
    efer_lma: bool = False


@dataclass(frozen=True, slots=True)
class CpuRole:
    """``union kvm_cpu_role``: the guest's paging described as a base page role plus the
    extended role. ``vcpu->arch.mmu->cpu_role`` in the kernel."""

    base: MmuPageRole
    ext: MmuExtendedRole


@_role_cache
def calc_cpu_role(cr0: int, cr4: int, efer: int) -> CpuRole:
    """The role of the guest's own paging (``kvm_calc_cpu_role``).

    With paging off the base role is direct and only ``ext.valid`` is set (the kernel's level
    is 0 there; kvmmu's role needs 1..5, so it says 1 and the MMU picks the level).
    """
    mode = paging_mode(cr0, cr4, efer)
    if mode is PagingMode.NONE:
        return CpuRole(MmuPageRole(level=1, direct=True), MmuExtendedRole(valid=True))
    wp = bool(cr0 & Cr0.WP)
    lma = bool(efer & Efer.LMA)
    base = MmuPageRole(
        level=mode.spec.root_level,
        has_4_byte_gpte=mode is PagingMode.BITS32,
        efer_nx=bool(efer & Efer.NXE),
        cr0_wp=wp,
        smep_andnot_wp=bool(cr4 & Cr4.SMEP) and not wp,
        smap_andnot_wp=bool(cr4 & Cr4.SMAP) and not wp,
    )
    ext = MmuExtendedRole(
        valid=True,
        cr4_pse=bool(cr4 & Cr4.PSE),
        cr4_pke=lma and bool(cr4 & Cr4.PKE),  # PKE and LA57 count only in long mode
        cr4_smap=bool(cr4 & Cr4.SMAP),
        cr4_smep=bool(cr4 & Cr4.SMEP),
        cr4_la57=lma and bool(cr4 & Cr4.LA57),
        efer_lma=lma,
    )
    return CpuRole(base, ext)


def cpu_root_role(cr0: int, cr4: int, efer: int) -> MmuPageRole:
    """The base page role of the guest's own paging (``kvm_calc_cpu_role``'s ``base``).

    With paging off the page is direct and the level meaningless; the MMU picks the level.
    """
    return calc_cpu_role(cr0, cr4, efer).base


@_role_cache
def shadow_root_role(cr0: int, cr4: int, efer: int) -> MmuPageRole:
    """The role of the shadow MMU's root (``kvm_init_shadow_mmu``).

    KVM shadows every non-64-bit guest with PAE tables (root level at least 3: four PAE page
    directories under a PDPT). With paging off the root is direct.

    Deliberate difference: today's kernel forces ``efer_nx`` to 1 here, because it may use the
    NX bit of sptes itself, so shadow pages built while the guest had EFER.NXE set are reused
    after it clears it, and the guest keeps reading through entries whose bit 63 the SDM now
    calls reserved (SDM 4.5: #PF with RSVD). kvmmu keeps the guest's EFER.NXE in the role, as
    the 2010 kernel's ``role.nxe`` did, so those pages are not found again. The hardware still
    runs with EFER.NX=1 (:meth:`kvmmu.kvm.vcpu.Vcpu.hardware_cpu`).
    """
    role = cpu_root_role(cr0, cr4, efer)
    level = 3 if role.direct else max(role.level, 3)
    if role.direct:
        return replace(role, level=level, efer_nx=True)
    return replace(role, level=level)


@_role_cache
def tdp_root_role(levels: int = 4) -> MmuPageRole:
    """The role of a TDP root (``kvm_calc_tdp_mmu_root_page_role``): direct, all rights.

    The guest's CR0/CR4 do not matter: the guest walks its own tables in hardware.
    """
    return MmuPageRole(level=levels, direct=True, efer_nx=True, cr0_wp=True)
