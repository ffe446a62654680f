"""The guest page-table walker, after ``FNAME(walk_addr_generic)`` in ``paging_tmpl.h``.

One walker serves every mode; a :class:`~kvmmu.hw.x86.ModeSpec` supplies the geometry, as the
``PTTYPE`` template parameter does in the kernel. The order of checks is KVM's, level by level
from the root: the entry must be present, then have no reserved bit set; the rights of all
levels are combined (AND of R/W and U/S, OR of XD); at the leaf, one permission check decides.
Only when the walk succeeds are the accessed bits (and, for a write, the leaf's dirty bit) set.

Where KVM and hardware may differ, KVM wins and the docstring says so:

* hardware may set accessed bits on upper levels even when the access then faults; KVM (and
  this walker) set them only after the permission check passes;
* a table that lies outside every memslot cannot be read; KVM's walker then injects a
  not-present fault (``kvm_is_error_hva`` -> ``goto error``), and so does this one. Real
  hardware would read whatever the bus returns. A table that points back to itself cannot
  make the walk loop: a walk visits each level once;
* accessed/dirty bits are not written into a read-only memslot (KVM skips them when the host
  mapping is not writable, ``pte_writable``).

Guest-visible faults are values: :class:`PageFault` carries the architectural error code and
CR2; a non-canonical address is a :class:`GeneralProtection`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from kvmmu.errors import (
    AddressError,
    MemslotError,
    ModeError,
    check_bool,
    check_instance,
    check_int,
)
from kvmmu.hw.memory import GuestMemory
from kvmmu.hw.x86 import (
    PAGE_MASK,
    PAGE_SHIFT,
    PKEY_MASK,
    PKEY_SHIFT,
    Acc,
    Access,
    Cr0,
    Cr4,
    Efer,
    ModeSpec,
    PagingMode,
    PfErr,
    Pte,
    Rflags,
    check_maxphyaddr,
    paging_mode,
    pdpte_rsvd_mask,
    rsvd_bits,
)

_P, _W, _U, _A, _D, _PS = 1, 2, 4, 1 << 5, 1 << 6, 1 << 7
_XD = 1 << 63
_RSVD, _FETCH, _PK = int(PfErr.RSVD), int(PfErr.FETCH), int(PfErr.PK)
_AC = int(Rflags.AC)
_BOOL: type = bool  # compared by identity on the walk's entry, where isinstance costs more
_ACC = tuple(Acc(i) for i in range(8))
_U64_MAX = (1 << 64) - 1
_WRITE, _FETCH_ACCESS, _PAE = Access.WRITE, Access.FETCH, PagingMode.PAE


# --------------------------------------------------------------------------------------------
# CPU state
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CpuState:
    """The vCPU registers a page walk depends on.

    ``maxphyaddr`` is CPUID's physical-address width (QEMU's default for TCG is 40);
    ``gbpages`` says whether 1 GiB pages are supported (CPUID.80000001H:EDX.Page1GB).
    In PAE mode ``pdptes`` holds the four PDPTEs the CPU loaded with CR3: build the state with
    :func:`load_cr3` so that they are read, and checked, the way a MOV to CR3 does.
    """

    cr0: int = 0
    cr3: int = 0
    cr4: int = 0
    efer: int = 0
    cpl: int = 0
    rflags: int = int(Rflags.FIXED)
    pkru: int = 0
    maxphyaddr: int = 40
    gbpages: bool = True
    pdptes: tuple[int, int, int, int] | None = None
    # the walker's context for these registers, found on the first walk (the per-vCPU
    # ``struct kvm_mmu`` with its reserved-bit masks, computed once)
    _walk_ctx: _Context | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("cr0", "cr3", "cr4", "efer", "rflags"):
            check_int(name, getattr(self, name))
        check_int("pkru", self.pkru, bits=32)
        # Fix: True passed as CPL 1 (bool is an int subclass).
        if isinstance(self.cpl, bool) or not (isinstance(self.cpl, int) and 0 <= self.cpl <= 3):
            raise ModeError(f"cpl must be 0, 1, 2 or 3, got {self.cpl!r}")
        check_maxphyaddr(self.maxphyaddr)
        if not isinstance(self.gbpages, bool):
            raise ModeError(f"gbpages must be True or False, got {self.gbpages!r}")
        mode = paging_mode(self.cr0, self.cr4, self.efer)
        # Fix: PCIDE outside long mode, and CR3 bits no MOV to CR3 can store, were accepted
        # (and the bits then silently dropped by root_gpa). kvm_set_cr4 refuses PCIDE unless
        # is_long_mode(); kvm_set_cr3 refuses CR3 bits above MAXPHYADDR in long mode
        # (kvm_vcpu_is_illegal_gpa); outside long mode CR3 is a 32-bit register.
        if self.cr4 & Cr4.PCIDE and not self.efer & Efer.LMA:
            raise ModeError(
                "CR4.PCIDE=1 needs long mode (EFER.LMA=1): setting it elsewhere is a #GP; "
                "clear Cr4.PCIDE or use a 4- or 5-level mode"
            )
        long_mode = mode in (PagingMode.LEVEL4, PagingMode.LEVEL5)
        width = self.maxphyaddr if long_mode else 32
        if self.cr3 >> width:
            where = f"MAXPHYADDR={self.maxphyaddr}" if long_mode else "32 bits outside long mode"
            raise ModeError(
                f"cr3={self.cr3:#x} sets bits {self.cr3 >> width << width:#x} above {where}; "
                f"a MOV to CR3 with them #GPs (use load_cr3 to see the guest's #GP), so pass "
                f"cr3 < {1 << width:#x}"
            )
        if mode is PagingMode.PAE and self.pdptes is None:
            raise ModeError("PAE paging needs its four PDPTEs: create the state with load_cr3()")
        if mode is PagingMode.PAE:
            self._check_pdptes(self.pdptes)

    def _check_pdptes(self, pdptes: object) -> None:
        # Fix: PDPTE registers holding a present entry with reserved bits were accepted and
        # then walked without any reserved-bit check. No CPU can be in that state: the MOV to
        # CR3 that loads them #GPs instead (SDM 4.4.1), so it is an impossible combination.
        if not (isinstance(pdptes, tuple) and len(pdptes) == 4):
            raise ModeError(f"pdptes must be a tuple of four PDPTEs, got {pdptes!r}")
        bad = pdpte_rsvd_mask(self.maxphyaddr)
        for i, e in enumerate(pdptes):
            check_int(f"pdptes[{i}]", e)
            if e & _P and e & bad:
                raise ModeError(
                    f"PDPTE{i}={e:#x} sets reserved bits {e & bad:#x}; a MOV to CR3 would #GP "
                    "instead of loading it (build PAE states with load_cr3())"
                )

    @property
    def mode(self) -> PagingMode:
        """The paging mode these registers select."""
        return paging_mode(self.cr0, self.cr4, self.efer)

    @property
    def root_gpa(self) -> int:
        """Guest physical address of the top-level table (the PDPT in PAE mode)."""
        return self.cr3 & _cr3_mask(self.mode, self.maxphyaddr)


def cpu_for_mode(
    mode: PagingMode,
    *,
    cr3: int = 0,
    wp: bool = True,
    nxe: bool = True,
    pse: bool = True,
    pge: bool = False,
    smep: bool = False,
    smap: bool = False,
    pke: bool = False,
    cpl: int = 0,
    ac: bool = False,
    pkru: int = 0,
    maxphyaddr: int = 40,
    pdptes: tuple[int, int, int, int] | None = None,
) -> CpuState:
    """Registers that put the CPU in ``mode`` with the given features enabled.

    What a guest kernel writes to CR0, CR4 and EFER on its way into a paging mode
    (``kvm_set_cr0``/``kvm_set_cr4``/``kvm_set_efer``). For PAE, pass ``pdptes`` or use
    :func:`load_cr3` afterwards.
    """
    # Fix: "4-level", None or 4 fell through every test below and gave 32-bit paging.
    check_instance("mode", mode, PagingMode, "a PagingMode, e.g. PagingMode.LEVEL4", ModeError)
    flags = {"wp": wp, "nxe": nxe, "pse": pse, "pge": pge, "smep": smep, "smap": smap}
    for name, value in (*flags.items(), ("pke", pke), ("ac", ac)):
        check_bool(name, value, ModeError)
    cr0 = int(Cr0.PE | (Cr0.PG if mode is not PagingMode.NONE else 0) | (Cr0.WP if wp else 0))
    cr4 = 0
    efer = int(Efer.NXE) if nxe else 0
    if mode is PagingMode.BITS32 and pse:
        cr4 |= Cr4.PSE
    if mode in (PagingMode.PAE, PagingMode.LEVEL4, PagingMode.LEVEL5):
        cr4 |= Cr4.PAE
    if mode in (PagingMode.LEVEL4, PagingMode.LEVEL5):
        efer |= Efer.LME | Efer.LMA
    if mode is PagingMode.LEVEL5:
        cr4 |= Cr4.LA57
    for flag, on in ((Cr4.PGE, pge), (Cr4.SMEP, smep), (Cr4.SMAP, smap), (Cr4.PKE, pke)):
        if on:
            cr4 |= flag
    rflags = int(Rflags.FIXED | (Rflags.AC if ac else 0))
    if mode is PagingMode.PAE and pdptes is None:
        pdptes = (0, 0, 0, 0)
    return CpuState(cr0, cr3, int(cr4), int(efer), cpl, rflags, pkru, maxphyaddr, True, pdptes)


@dataclass(frozen=True, slots=True)
class GeneralProtection:
    """A #GP the guest receives (vector 13): a non-canonical address, a bad CR3 or PDPTE."""

    address: int
    reason: str
    vector: int = 13


def _check_memory_and_cpu(memory: object, cpu: object) -> None:
    # Fix: a wrong memory or cpu argument used to escape as AttributeError.
    if not isinstance(memory, GuestMemory):
        raise MemslotError(f"memory must be a GuestMemory, got {type(memory).__name__}")
    if not isinstance(cpu, CpuState):
        raise ModeError(
            f"cpu must be a CpuState (see cpu_for_mode and load_cr3), got {type(cpu).__name__}"
        )


def load_cr3(memory: GuestMemory, cpu: CpuState, cr3: int) -> CpuState | GeneralProtection:
    """The state after a MOV to CR3 (``kvm_set_cr3``, and ``load_pdptrs`` in PAE mode).

    In long mode, CR3 bits at or above MAXPHYADDR make the MOV #GP (bit 63 is the PCID
    no-flush hint and is not stored). In PAE mode the four PDPTEs are read now, from the
    32-byte-aligned table CR3 names, and a present one with a reserved bit set, or a table
    outside guest memory, makes the MOV #GP; later walks use these loaded copies.
    """
    _check_memory_and_cpu(memory, cpu)
    check_int("cr3", cr3)
    mode = cpu.mode
    if mode in (PagingMode.LEVEL4, PagingMode.LEVEL5):
        if cpu.cr4 & Cr4.PCIDE:
            cr3 &= ~(1 << 63)
        if cr3 >> cpu.maxphyaddr:
            return GeneralProtection(
                cr3, f"CR3 bits above MAXPHYADDR={cpu.maxphyaddr} are reserved"
            )
        return replace(cpu, cr3=cr3)
    if mode is not PagingMode.PAE:
        return replace(cpu, cr3=cr3 & 0xFFFF_FFFF, pdptes=None)
    base = cr3 & 0xFFFF_FFE0
    words = memory.table_words(base >> PAGE_SHIFT)
    if words is None:
        return GeneralProtection(cr3, f"PDPT at {base:#x} is outside guest memory")
    first = (base & PAGE_MASK) >> 3
    pdptes = tuple(int(words[first + i]) for i in range(4))
    bad = pdpte_rsvd_mask(cpu.maxphyaddr)
    for i, e in enumerate(pdptes):
        if e & _P and e & bad:
            return GeneralProtection(cr3, f"PDPTE{i}={e:#x} sets reserved bits {e & bad:#x}")
    return replace(cpu, cr3=cr3 & 0xFFFF_FFFF, pdptes=(pdptes[0], pdptes[1], pdptes[2], pdptes[3]))


# --------------------------------------------------------------------------------------------
# Per-mode context: reserved masks and switches, computed once per register combination
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Context:
    spec: ModeSpec
    shifts: tuple[int, ...]  # index shift per level (index 0 unused)
    index_masks: tuple[int, ...]
    rsvd: tuple[tuple[int, ...], tuple[int, ...]]  # [bit 7][level] as KVM's rsvd_bits_mask
    large_ok: tuple[bool, ...]  # PS is honoured at this level
    addr_mask: int  # address bits of a table pointer
    nx: bool  # XD is honoured
    wp: bool
    smep: bool
    smap: bool
    pke: bool
    fetch_errcode: bool  # report I/D in the error code
    pse36_bits: int  # 32-bit paging: physical-address bits above 31 in a 4 MiB PDE
    cr3_mask: int  # CR3 bits that address the root table
    canonical_shift: int  # va_bits - 1 where addresses must be canonical, else 0
    canonical_top: int  # gva >> canonical_shift of a canonical upper-half address
    # the levels a walk reads from tables, root first (below the PDPT in PAE mode), each as
    # (level, index shift, index mask, reserved bits with bit 7 clear, with bit 7 set,
    # PS honoured): one unpacking per level
    walk_levels: tuple[tuple[int, int, int, int, int, bool], ...]
    root_level: int  # spec.root_level, 0 with paging off
    entry_size: int  # spec.entry_size: 4 or 8 bytes
    pae: bool  # the root is the PDPT, loaded at CR3 load
    gva_max: int  # the largest linear address of the mode (2**32 - 1 or 2**64 - 1)
    # permission_fault's table, as update_permission_bitmask fills mmu->permissions: indexed by
    # write | user << 1 | fetch << 2 | (AC lifts SMAP) << 3, bit ``acc`` set where an access of
    # that kind faults on a page whose combined rights are ``acc`` (protection keys aside)
    permissions: tuple[int, ...]


_CONTEXTS: dict[tuple[int, int, int, int, bool], _Context] = {}


def _context(cpu: CpuState) -> _Context:
    ctx = cpu._walk_ctx
    if ctx is None:
        key = (cpu.cr0, cpu.cr4, cpu.efer, cpu.maxphyaddr, cpu.gbpages)
        ctx = _CONTEXTS.get(key)
        if ctx is None:
            ctx = _CONTEXTS[key] = _build_context(cpu)
        object.__setattr__(cpu, "_walk_ctx", ctx)  # frozen: set once, derived from the fields
    return ctx


def _build_context(cpu: CpuState) -> _Context:
    """Reserved bits per level, as ``__reset_rsvds_bits_mask`` computes them (SDM 4.3-4.5)."""
    spec = cpu.mode.spec
    levels = spec.root_level
    m = cpu.maxphyaddr
    nxe = bool(cpu.efer & Efer.NXE)
    leaf: list[int] = [0] * (levels + 1)  # bit 7 set (large page, or PAT at level 1)
    table: list[int] = [0] * (levels + 1)  # bit 7 clear
    large_ok = [False] * (levels + 1)
    pse36_bits = 0
    addr_mask = rsvd_bits(PAGE_SHIFT, 51)
    if spec.mode is PagingMode.BITS32:
        addr_mask = 0xFFFF_F000
        if cpu.cr4 & Cr4.PSE:  # SDM 4.3: PS honoured only with CR4.PSE
            large_ok[2] = True
            pse36_bits = min(m, 40) - 32
            leaf[2] = rsvd_bits(13 + pse36_bits, 21)
    elif spec.mode is not PagingMode.NONE:
        high = rsvd_bits(m, 62 if spec.mode is PagingMode.PAE else 51)
        if not nxe:  # XD is reserved unless EFER.NXE (SDM 4.4.2, 4.5.4)
            high |= _XD
        for level in range(1, levels + 1):
            table[level] = leaf[level] = high
        leaf[2] |= rsvd_bits(13, 20)  # 2 MiB page: low address bits
        large_ok[2] = True
        if spec.mode is not PagingMode.PAE:
            large_ok[3] = True
            leaf[3] |= rsvd_bits(13, 29)  # 1 GiB page: low address bits
            if not cpu.gbpages:
                leaf[3] |= _PS
            for level in range(4, levels + 1):  # PML4E/PML5E: PS is reserved
                table[level] |= _PS
                leaf[level] = table[level]
        # level 3 in PAE mode is the PDPT, read at CR3 load and not walked here
    shifts = tuple([0] + [spec.shift(lv) for lv in range(1, levels + 1)])
    masks = [0] + [(1 << spec.index_bits) - 1] * levels
    if spec.mode is PagingMode.PAE:
        masks[3] = 3
    top = 2 if spec.mode is PagingMode.PAE else levels
    walk_levels = tuple(
        (lv, shifts[lv], masks[lv], table[lv], leaf[lv], large_ok[lv]) for lv in range(top, 0, -1)
    )
    return _Context(
        spec=spec,
        shifts=shifts,
        index_masks=tuple(masks),
        rsvd=(tuple(table), tuple(leaf)),
        large_ok=tuple(large_ok),
        addr_mask=addr_mask,
        nx=nxe and spec.entry_size == 8,
        wp=bool(cpu.cr0 & Cr0.WP),
        smep=bool(cpu.cr4 & Cr4.SMEP),
        smap=bool(cpu.cr4 & Cr4.SMAP),
        pke=bool(cpu.cr4 & Cr4.PKE) and bool(cpu.efer & Efer.LMA),
        # SDM 4.7: I/D is reported when SMEP is on, or NXE with PAE/4-level/5-level paging.
        fetch_errcode=bool(cpu.cr4 & Cr4.SMEP) or (nxe and spec.entry_size == 8),
        pse36_bits=pse36_bits,
        cr3_mask=_cr3_mask(spec.mode, m),
        walk_levels=walk_levels,
        canonical_shift=spec.va_bits - 1 if spec.va_bits > 32 else 0,
        canonical_top=(1 << (65 - spec.va_bits)) - 1,
        root_level=spec.root_level,
        entry_size=spec.entry_size,
        pae=spec.mode is PagingMode.PAE,
        gva_max=(1 << (32 if spec.va_bits == 32 else 64)) - 1,
        permissions=_permission_bitmask(
            wp=bool(cpu.cr0 & Cr0.WP),
            smep=bool(cpu.cr4 & Cr4.SMEP),
            smap=bool(cpu.cr4 & Cr4.SMAP),
        ),
    )


def _permission_bitmask(*, wp: bool, smep: bool, smap: bool) -> tuple[int, ...]:
    """``update_permission_bitmask``: for each kind of access, the rights that fault.

    Index: write | user << 1 | fetch << 2 | ac << 3, where ``ac`` says EFLAGS.AC lifts SMAP
    for this (explicit, supervisor) access. Value: bit ``acc`` is set when an access of that
    kind to a page with combined rights ``acc`` (ACC_EXEC 1, ACC_WRITE 2, ACC_USER 4) is a
    permission fault; the order of :func:`_permission_reason` is the SDM 4.6 order.
    """
    table = []
    for index in range(16):
        write, user, fetch, ac = (bool(index >> bit & 1) for bit in range(4))
        table.append(
            sum(
                1 << acc
                for acc in range(8)
                if _permission_reason(acc, write, user, fetch, wp, smep, smap and not ac)
            )
        )
    return tuple(table)


def _permission_reason(
    acc: int, write: bool, user: bool, fetch: bool, wp: bool, smep: bool, smap: bool
) -> str:
    """Why an access with these rights faults (SDM 4.6), or "" when it is allowed."""
    if user and not acc & _U:
        return "user access to a supervisor page"
    if write and not acc & _W and (user or wp):
        return "write to a read-only page" + ("" if user else " (CR0.WP=1)")
    if fetch and not acc & 1:
        return "fetch from an XD page"
    if fetch and not user and smep and acc & _U:
        return "supervisor fetch from a user page (SMEP)"
    if not fetch and not user and smap and acc & _U:
        return "supervisor data access to a user page (SMAP)"
    return ""


def _cr3_mask(mode: PagingMode, maxphyaddr: int) -> int:
    if mode is PagingMode.PAE:
        return 0xFFFF_FFE0
    if mode is PagingMode.BITS32:
        return 0xFFFF_F000
    return rsvd_bits(PAGE_SHIFT, maxphyaddr - 1)


def reserved_mask(cpu: CpuState, level: int, large: bool) -> int:
    """Reserved bits of an entry at ``level`` (bit 7 set when ``large``) for these registers.

    KVM keeps them in ``rsvd_bits_mask[large][level - 1]`` (``reset_guest_rsvds_bits_mask``).
    """
    # One cheap test: the MMU asks this for every guest entry it checks.
    if cpu.__class__ is not CpuState or large.__class__ is not bool or level.__class__ is not int:
        check_instance("cpu", cpu, CpuState, "a CpuState (see cpu_for_mode)", ModeError)
        check_bool("large", large, ModeError)
        check_int("level", level)
    ctx = _context(cpu)
    if not 1 <= level <= ctx.spec.root_level:
        raise ModeError(f"level {level} does not exist in {ctx.spec.mode.value} paging")
    return ctx.rsvd[int(large)][level]


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WalkStep:
    """One level of a walk: where the entry was read, what it held, and what the walker decided."""

    level: int
    name: str  # PML5E, PML4E, PDPTE, PDE or PTE
    entry_gpa: int
    index: int
    entry: int
    decision: str

    def describe(self) -> str:
        """One readable line, in the spirit of OSTEP's ``-c`` answers."""
        where = f"{self.name}[{self.index:#05x}] @ {self.entry_gpa:#x}"
        return f"{where} = {self.entry:#018x}: {self.decision}"


# raw step: (level, entry gpa, index, entry, rights accumulated above this level)
_RawStep = tuple[int, int, int, int, int]

# what a walk recorded, enough to rebuild its steps: the context, the address of the first
# table read (the PDPT in PAE mode), and each entry read, root first
_Trail = tuple[_Context, int, list[int]]


def _raw_steps(ctx: _Context, gva: int, first_table: int, ptes: list[int]) -> list[_RawStep]:
    """Rebuild each level's (level, entry gpa, index, entry, rights above) from a walk's entries.

    The walk keeps only the entries it read, one append per level: where each entry lies follows
    from the entry above it (the next table's address) and from the address walked.
    """
    out: list[_RawStep] = []
    acc = 7
    level = ctx.spec.root_level
    table = first_table
    entry_size = ctx.spec.entry_size
    for i, pte in enumerate(ptes):
        if i == 0 and ctx.spec.mode is PagingMode.PAE:  # a PDPTE: no rights of its own
            index = (gva >> 30) & 3
            out.append((3, table + index * 8, index, pte, acc))
            table, level = pte & ctx.addr_mask, 2
            continue
        index = (gva >> ctx.shifts[level]) & ctx.index_masks[level]
        out.append((level, table + index * entry_size, index, pte, acc))
        acc &= (pte & 6) | (0 if ctx.nx and pte & _XD else 1)
        table, level = pte & ctx.addr_mask, level - 1
    return out


def _entry_gpas(ctx: _Context, gva: int, first_table: int, ptes: list[int]) -> list[int]:
    """The gpa of each entry a walk read, root first: the entry-address column of
    :func:`_raw_steps`, without the rest."""
    if not ptes:
        return []
    addr_mask, entry_size = ctx.addr_mask, ctx.entry_size
    shifts, index_masks = ctx.shifts, ctx.index_masks
    out: list[int] = []
    table, below, level = first_table, ptes, ctx.root_level
    if ctx.pae:  # a PDPTE, 8 bytes, indexed by bits 31:30
        out.append(first_table + ((gva >> 30) & 3) * 8)
        table, below, level = ptes[0] & addr_mask, ptes[1:], 2
    for pte in below:
        out.append(table + ((gva >> shifts[level]) & index_masks[level]) * entry_size)
        table = pte & addr_mask
        level -= 1
    return out


def _trace(spec: ModeSpec, raw: list[_RawStep], outcome: str) -> tuple[WalkStep, ...]:
    steps = []
    for i, (level, gpa, index, entry, _) in enumerate(raw):
        last = i == len(raw) - 1
        if last:
            decision = outcome
        elif spec.mode is PagingMode.PAE and level == 3:
            decision = f"present -> page directory at {entry & rsvd_bits(12, 51):#x}"
        else:
            nxt = entry & (0xFFFF_F000 if spec.entry_size == 4 else rsvd_bits(12, 51))
            decision = f"present, {_rights(entry, spec)} -> next table at {nxt:#x}"
        steps.append(WalkStep(level, spec.entry_name(level), gpa, index, entry, decision))
    return tuple(steps)


def _rights(entry: int, spec: ModeSpec) -> str:
    w = "rw" if entry & _W else "ro"
    u = "user" if entry & _U else "supervisor"
    x = ", XD" if spec.entry_size == 8 and entry & _XD else ""
    return f"{w}, {u}{x}"


@dataclass(slots=True, init=False)
class WalkResult:
    """A successful walk: where the access lands and why.

    ``level`` is the level of the leaf (1 for a 4 KiB page, 2 for 2/4 MiB, 3 for 1 GiB, 0 with
    paging off); ``access`` the rights the translation grants, combined over every level
    (``walker->pte_access``); ``pte`` the leaf entry as read; ``pkey`` its protection key.
    The entries read on the way are kept as read (``walker->ptes``); :attr:`raw` and
    :attr:`trace` describe each level from them when asked.
    """

    gva: int
    gpa: int
    level: int
    access: Acc
    pte: int
    _ctx: _Context = field(repr=False, compare=False)
    _first_table: int = field(default=0, repr=False)
    _ptes: list[int] = field(default_factory=list, repr=False)

    def __init__(  # written out: the generated one tests for the default factory each time
        self,
        gva: int,
        gpa: int,
        level: int,
        access: Acc,
        pte: int,
        _ctx: _Context,
        _first_table: int = 0,
        _ptes: list[int] | None = None,
    ) -> None:
        self.gva = gva
        self.gpa = gpa
        self.level = level
        self.access = access
        self.pte = pte
        self._ctx = _ctx
        self._first_table = _first_table
        self._ptes = [] if _ptes is None else _ptes

    @property
    def gfn(self) -> int:
        """The guest frame reached (``walker->gfn``)."""
        return self.gpa >> PAGE_SHIFT

    @property
    def mode(self) -> PagingMode:
        """The paging mode of the walk."""
        return self._ctx.spec.mode

    @property
    def page_size(self) -> int:
        """Bytes of the page reached (4096 with paging off)."""
        return 1 << self._ctx.shifts[self.level] if self.level else 4096

    @property
    def pkey(self) -> int:
        """The leaf's protection key (bits 62:59 of an 8-byte entry; 0 for 4-byte entries)."""
        return (self.pte >> PKEY_SHIFT) & PKEY_MASK if self._ctx.spec.entry_size == 8 else 0

    @property
    def refs(self) -> int:
        """Entries the walk read: its memory references. kvmmu's own."""
        return len(self._ptes)

    @property
    def raw(self) -> list[_RawStep]:
        """(level, entry gpa, index, entry, rights above) for each level read, root first."""
        return _raw_steps(self._ctx, self.gva, self._first_table, self._ptes)

    def table_gpas(self) -> list[int]:
        """The address of each table read, root first (the PDPT's in PAE mode). kvmmu's own:
        what the hardware walk of the shadow tables tells the vCPU about the pages it used."""
        if not self._ptes:
            return []
        mask = self._ctx.addr_mask
        return [self._first_table] + [pte & mask for pte in self._ptes[:-1]]

    def entry_gpas(self) -> list[int]:
        """The address of each entry read, root first (a PDPTE first in PAE mode): the entry
        column of :attr:`raw`. kvmmu's own: the guest-physical references a two-dimensional
        walk translates."""
        return _entry_gpas(self._ctx, self.gva, self._first_table, self._ptes)

    def leaf_table_gpa(self) -> int:
        """The address of the table that holds the leaf entry: ``table_gpas()[-1]`` without
        building the list. kvmmu's own: the shadow page whose spte the hardware used."""
        ptes = self._ptes
        return ptes[-2] & self._ctx.addr_mask if len(ptes) > 1 else self._first_table

    @property
    def trace(self) -> tuple[WalkStep, ...]:
        """Each level's table address, index, entry and decision, root first."""
        return _trace(
            self.mode.spec,
            self.raw,
            f"leaf, {self.page_size >> 10} KiB page, rights {_acc_str(self.access)} "
            f"-> gpa {self.gpa:#x}",
        )

    def table_gfn(self, level: int) -> int:
        """Gfn of the guest table read at ``level`` (``walker->table_gfn[level - 1]``)."""
        return self._step(level)[1] >> PAGE_SHIFT

    def gpte(self, level: int) -> int:
        """The guest entry read at ``level`` (``walker->ptes[level - 1]``)."""
        return self._step(level)[3]

    def pt_access(self, level: int) -> Acc:
        """Rights combined over the levels above ``level`` (``walker->pt_access[level - 1]``)."""
        return Acc(self._step(level)[4])

    def _step(self, level: int) -> _RawStep:
        check_int("level", level)
        for step in self.raw:
            if step[0] == level:
                return step
        raise ModeError(f"this walk read no entry at level {level}")


def _acc_str(acc: int) -> str:
    return "".join(
        c if acc & b else "-" for c, b in (("u", Acc.USER), ("w", Acc.WRITE), ("x", Acc.EXEC))
    )


@dataclass(frozen=True, slots=True)
class PageFault:
    """A #PF the guest receives (vector 14): the error code and the address that goes to CR2.

    :attr:`steps` describes each level the walk read, built from the entries it kept only
    when someone asks: most faults are handled without being printed.
    """

    error_code: PfErr
    address: int
    reason: str = ""
    _trail: _Trail | None = field(default=None, compare=False, repr=False)
    vector: int = 14

    def __init__(  # written out: the generated one of a frozen class costs twice as much
        self,
        error_code: PfErr,
        address: int,
        reason: str = "",
        _trail: _Trail | None = None,
        vector: int = 14,
    ) -> None:
        _PF_SET[0](self, error_code)
        _PF_SET[1](self, address)
        _PF_SET[2](self, reason)
        _PF_SET[3](self, _trail)
        _PF_SET[4](self, vector)

    @property
    def cr2(self) -> int:
        """CR2 holds the faulting linear address."""
        return self.address

    @property
    def raw(self) -> list[_RawStep]:
        """(level, entry gpa, index, entry, rights above) for each level read, root first; the
        last is where the walk faulted."""
        if self._trail is None:
            return []
        ctx, first_table, ptes = self._trail
        return _raw_steps(ctx, self.address, first_table, ptes)

    def entry_gpas(self) -> list[int]:
        """The address of each entry read, root first; the last is where the walk faulted.
        kvmmu's own, as :meth:`WalkResult.entry_gpas`."""
        if self._trail is None:
            return []
        ctx, first_table, ptes = self._trail
        return _entry_gpas(ctx, self.address, first_table, ptes)

    @property
    def steps(self) -> tuple[WalkStep, ...]:
        """Each level's table address, index, entry and decision, root first; the last one is
        where the walk faulted."""
        if self._trail is None:
            return ()
        return _trace(self._trail[0].spec, self.raw, f"fault: {self.reason}")

    @property
    def pte(self) -> int:
        """The entry the walk faulted on (0 for a table outside guest memory, or no entry).
        kvmmu's own: what ``handle_mmio_page_fault`` reads back as the faulting spte."""
        return self._trail[2][-1] if self._trail is not None and self._trail[2] else 0


_PFERR = tuple(PfErr(i) for i in range(64))  # every error code a walk can report
# the slots' own setters, which a frozen class's __setattr__ does not go through
_PF_SET = tuple(
    getattr(PageFault, name).__set__
    for name in ("error_code", "address", "reason", "_trail", "vector")
)


# --------------------------------------------------------------------------------------------
# The walk
# --------------------------------------------------------------------------------------------


def walk(
    memory: GuestMemory,
    cpu: CpuState,
    gva: int,
    access: Access = Access.READ,
    *,
    implicit: bool = False,
    set_ad: bool = True,
) -> WalkResult | PageFault | GeneralProtection:
    """Translate ``gva`` for one access, as the CPU would (``FNAME(walk_addr_generic)``).

    ``access`` is a data read, a data write or an instruction fetch; it is a user access when
    ``cpu.cpl == 3`` unless ``implicit`` marks a supervisor access the CPU makes on its own
    (descriptor tables, for example: SDM 4.6, these ignore EFLAGS.AC for SMAP). With ``set_ad``
    a successful walk sets accessed bits on every entry used and the leaf's dirty bit on a
    write, writing them back to guest memory; without it memory is left untouched.

    The arguments are checked here, once; the walk itself is :func:`walk_unchecked`.
    """
    if not (  # one cheap test for the usual arguments; the checks below name what is wrong
        access.__class__ is Access
        and cpu.__class__ is CpuState
        and gva.__class__ is int
        and 0 <= gva <= (cpu._walk_ctx or _context(cpu)).gva_max
        and implicit.__class__ is _BOOL
        and set_ad.__class__ is _BOOL
        and isinstance(memory, GuestMemory)
    ):
        _check_walk_arguments(memory, cpu, gva, access, implicit, set_ad)
    return walk_unchecked(memory, cpu, gva, access, implicit, set_ad)


def _check_walk_arguments(
    memory: object, cpu: object, gva: object, access: object, implicit: object, set_ad: object
) -> None:
    """Raise the typed error :func:`walk`'s fast test found a reason for."""
    if not isinstance(access, Access):
        raise ModeError(f"access must be Access.READ, Access.WRITE or Access.FETCH, got {access!r}")
    _check_memory_and_cpu(memory, cpu)
    assert isinstance(cpu, CpuState)
    gva = check_int("gva", gva)
    check_bool("implicit", implicit, ModeError)
    check_bool("set_ad", set_ad, ModeError)
    spec = (cpu._walk_ctx or _context(cpu)).spec
    if spec.va_bits == 32 and gva >> 32:
        if spec.root_level == 0:
            raise AddressError(
                f"gva={gva:#x} does not fit in 32 bits; with paging off addresses are 32-bit"
            )
        raise AddressError(
            f"gva={gva:#x} does not fit in 32 bits, the linear-address width of "
            f"{spec.mode.value} paging"
        )


def walk_unchecked(
    memory: GuestMemory,
    cpu: CpuState,
    gva: int,
    access: Access = Access.READ,
    implicit: bool = False,
    set_ad: bool = True,
) -> WalkResult | PageFault | GeneralProtection:
    """:func:`walk` for callers that have checked the arguments: the MMU's own walks.

    ``FNAME(walk_addr_generic)`` itself. The caller guarantees what :func:`walk` checks:
    ``memory`` is a :class:`GuestMemory`, ``cpu`` a :class:`CpuState`, ``access`` an
    :class:`Access`, ``implicit`` and ``set_ad`` bools, and ``gva`` an int that fits the mode's
    linear addresses (32 bits with paging off, 32-bit or PAE paging; 64 bits otherwise). For
    such arguments the result is the same as :func:`walk`'s; a non-canonical address is still
    a :class:`GeneralProtection`, since that is the guest's fault, not the caller's.
    """
    ctx = cpu._walk_ctx or _context(cpu)
    if not ctx.root_level:
        return WalkResult(gva, gva, 0, _ACC[7], 0, ctx)
    if ctx.canonical_shift:  # _is_canonical, inline
        top = gva >> ctx.canonical_shift
        if top and top != ctx.canonical_top:
            return GeneralProtection(
                gva, f"{gva:#x} is not canonical for {ctx.spec.va_bits}-bit addresses"
            )

    write = access is _WRITE
    fetch = access is _FETCH_ACCESS
    user = cpu.cpl == 3 and not implicit
    ptes: list[int] = []  # walker->ptes: each entry read, root first
    acc = 7  # ACC_ALL
    entry_size = ctx.entry_size
    if ctx.pae:
        pdptes = cpu.pdptes
        assert pdptes is not None  # guaranteed by CpuState
        first = cpu.cr3 & 0xFFFF_FFE0
        pte = pdptes[(gva >> 30) & 3]
        ptes.append(pte)
        if not pte & _P:
            return _fault(ctx, write, user, fetch, 0, gva, first, ptes, "PDPTE not present")
        table = pte & ctx.addr_mask
    else:
        first = table = cpu.cr3 & ctx.cr3_mask

    views = memory.views[entry_size]  # table views by gfn; table_words() fills in the rest
    addr_mask = ctx.addr_mask
    nx = ctx.nx
    seen = -1  # AND of the entries read from tables: are their A bits already set?
    level = pte = shift = 0
    for level, shift, mask, rsvd_table, rsvd_leaf, large_ok in ctx.walk_levels:  # noqa: B007
        words = views.get(table >> PAGE_SHIFT)
        if words is None:
            words = memory.table_words(table >> PAGE_SHIFT, entry_size)
            if words is None:
                ptes.append(0)
                why = "table outside guest memory (KVM: not present)"
                return _fault(ctx, write, user, fetch, 0, gva, first, ptes, why)
        pte = words[(gva >> shift) & mask]
        ptes.append(pte)
        if not pte & _P:
            return _fault(ctx, write, user, fetch, 0, gva, first, ptes, "not present")
        if pte & (rsvd_leaf if pte & _PS else rsvd_table):
            return _fault(ctx, write, user, fetch, _P | _RSVD, gva, first, ptes, "reserved bit set")
        acc &= (pte & 6) | (0 if nx and pte & _XD else 1)
        seen &= pte
        if large_ok and pte & _PS:
            break  # a large page; otherwise the loop ends with the level-1 entry
        table = pte & addr_mask

    # permission_fault(): one lookup in the table update_permission_bitmask made
    ac = not user and not implicit and cpu.rflags & _AC
    fault = ctx.permissions[write | user << 1 | fetch << 2 | (8 if ac else 0)] >> acc & 1
    why = ""
    if fault:
        why = _permission_reason(acc, write, user, fetch, ctx.wp, ctx.smep, ctx.smap and not ac)
    pk = 0
    if ctx.pke and not fetch and acc & _U:
        pkey = (pte >> PKEY_SHIFT) & PKEY_MASK
        bits = (cpu.pkru >> (2 * pkey)) & 3
        if bits & 1 or (bits & 2 and write and (user or ctx.wp)):
            pk = _PK
            if not fault:
                why = f"protection key {pkey} denies the access (PKRU)"
            fault = 1
    if fault:
        return _fault(ctx, write, user, fetch, _P | pk, gva, first, ptes, why)

    if level == 1:
        gpa = (pte & addr_mask) | (gva & PAGE_MASK)
    elif entry_size == 4:  # 32-bit PSE page, PSE-36 bits 13.. hold address bits 32..
        offset = gva & ((1 << shift) - 1)
        high = (pte >> 13) & ((1 << ctx.pse36_bits) - 1)
        gpa = (pte & 0xFFC0_0000) | (high << 32) | offset
    else:
        offset_mask = (1 << shift) - 1
        gpa = (pte & addr_mask & ~offset_mask) | (gva & offset_mask)
    # update_accessed_dirty_bits, only when a bit is missing: every A, and D on a write's leaf
    if set_ad and (not seen & _A or (write and not pte & _D)):
        _update_accessed_dirty(memory, ctx, gva, first, ptes, write)
    return WalkResult(gva, gpa, level, _ACC[acc], pte, ctx, first, ptes)


def _fault(
    ctx: _Context,
    write: bool,
    user: bool,
    fetch: bool,
    bits: int,
    gva: int,
    first_table: int,
    ptes: list[int],
    why: str,
) -> PageFault:
    """The #PF for a walk that failed: the error code of the access plus ``bits``."""
    err = bits | (_W if write else 0) | (_U if user else 0)
    if fetch and ctx.fetch_errcode:
        err |= _FETCH
    return PageFault(_PFERR[err], gva, why, (ctx, first_table, ptes))


def _update_accessed_dirty(
    memory: GuestMemory,
    ctx: _Context,
    gva: int,
    first_table: int,
    ptes: list[int],
    write: bool,
    entry_gpas: list[int] | None = None,
) -> None:
    """Set A on every entry used and D on the leaf of a write (``update_accessed_dirty_bits``).

    Works from the walk's own entries (``walker->ptes``): entry ``i`` is at level
    ``root_level - i`` and its table is the one entry ``i - 1`` points to, or its address is
    ``entry_gpas[i]`` (the walk's :func:`_entry_gpas`, when the caller has them already). The
    PAE PDPTEs have no accessed bit and are skipped. Entries in a read-only memslot are left
    alone, as KVM leaves them when the host mapping is not writable.
    """
    last = len(ptes) - 1
    for i in range(1 if ctx.pae else 0, last):  # the PDPTE, read at CR3 load, has no A bit
        if not ptes[i] & _A:
            _set_entry_bits(memory, ctx, gva, first_table, ptes, i, _A, entry_gpas)
    want = _A | _D if write else _A
    if ptes[last] & want != want:  # a walk usually owes a bit to one entry or two
        _set_entry_bits(memory, ctx, gva, first_table, ptes, last, want, entry_gpas)


def _set_entry_bits(
    memory: GuestMemory,
    ctx: _Context,
    gva: int,
    first_table: int,
    ptes: list[int],
    i: int,
    bits: int,
    entry_gpas: list[int] | None,
) -> None:
    """Write ``bits`` into entry ``i`` of a walk, in guest memory, unless its memslot is
    read-only; a logging slot records the page dirty (``__try_cmpxchg_user`` in
    ``FNAME(update_accessed_dirty_bits)``, then ``mark_page_dirty_in_slot``)."""
    entry_size = ctx.entry_size
    if entry_gpas is not None:
        gpa = entry_gpas[i]
    else:  # this entry's address only
        table = ptes[i - 1] & ctx.addr_mask if i else first_table
        level = ctx.root_level - i
        gpa = table + ((gva >> ctx.shifts[level]) & ctx.index_masks[level]) * entry_size
    gfn = gpa >> PAGE_SHIFT
    slot = memory.slots.find(gfn)
    if slot is not None and not slot.readonly:
        words = memory.table_words(gfn, entry_size)
        assert words is not None
        words[(gpa & PAGE_MASK) // entry_size] = ptes[i] | bits
        if slot.dirty_logging:
            memory.mark_page_dirty(gfn)


def update_accessed_dirty(
    memory: GuestMemory, result: WalkResult, write: bool, entry_gpas: list[int] | None = None
) -> None:
    """Set the accessed bits a successful walk owes, and the leaf's dirty bit for a write
    (``FNAME(update_accessed_dirty_bits)``), from the entries the walk read.

    What :func:`walk` with ``set_ad`` does once its checks pass, for a walk made with
    ``set_ad=False`` whose access then went ahead: the two-dimensional walk sets the bits
    only after each guest-table reference was translated. ``entry_gpas``: the walk's
    :meth:`WalkResult.entry_gpas`, if the caller made them already (the two-dimensional walk
    did, to translate them), so they are not worked out twice.
    """
    if result.__class__ is not WalkResult or write.__class__ is not _BOOL:  # one cheap test
        check_instance("result", result, WalkResult, "a WalkResult from walk()", ModeError)
        check_bool("write", write, ModeError)
    if not isinstance(memory, GuestMemory):
        raise MemslotError(f"memory must be a GuestMemory, got {type(memory).__name__}")
    ptes = result._ptes
    if ptes:
        if entry_gpas is not None and len(entry_gpas) != len(ptes):
            raise ModeError(
                f"entry_gpas holds {len(entry_gpas)} addresses for a walk that read "
                f"{len(ptes)} entries: pass the walk's own entry_gpas()"
            )
        ctx = result._ctx
        _update_accessed_dirty(
            memory, ctx, result.gva, result._first_table, ptes, write, entry_gpas
        )


def walk_many(
    memory: GuestMemory, cpu: CpuState, gvas: list[int], access: Access = Access.READ
) -> list[WalkResult | PageFault | GeneralProtection]:
    """Walk several addresses with the same registers; a convenience for tables and plots.

    No kernel counterpart.
    """
    if not isinstance(gvas, (list, tuple, range)):
        raise AddressError(f"gvas must be a list of int addresses, got {type(gvas).__name__}")
    return [walk(memory, cpu, gva, access) for gva in gvas]


__all__ = [
    "CpuState",
    "GeneralProtection",
    "PageFault",
    "Pte",
    "WalkResult",
    "WalkStep",
    "cpu_for_mode",
    "load_cr3",
    "reserved_mask",
    "update_accessed_dirty",
    "walk",
    "walk_many",
    "walk_unchecked",
]
