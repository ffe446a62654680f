"""Specification of ``kvmmu.kvm.spte``: shadow PTE encoding, KVM's software bits, MMIO sptes.

The rules are ``arch/x86/kvm/mmu/spte.h`` and ``spte.c`` (``make_spte``, ``make_nonleaf_spte``,
``make_mmio_spte``, ``is_mmio_spte``, ``get_mmio_spte_generation``) and the hardware PTE format
(SDM vol. 3 tables 4-19 and 4-20).
"""

from hypothesis import given
from hypothesis import strategies as st

from kvmmu.hw.x86 import Acc
from kvmmu.kvm import spte as S

PFN = 0x12345


def _leaf(access: int = int(Acc.ALL), **kw: bool) -> int:
    args = {"large": False, "writable": True, "mmu_writable": True}
    args.update(kw)
    return S.make_spte(PFN, access, **args)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Bit positions
# --------------------------------------------------------------------------------------------


def test_hardware_bits_are_the_x86_pte_bits() -> None:
    """SDM table 4-19: P=0, R/W=1, U/S=2, A=5, D=6, PS=7, G=8, XD=63."""
    assert (S.PRESENT, S.WRITABLE, S.USER) == (1 << 0, 1 << 1, 1 << 2)
    assert (S.ACCESSED, S.DIRTY, S.LARGE, S.GLOBAL) == (1 << 5, 1 << 6, 1 << 7, 1 << 8)
    assert S.NX == 1 << 63


def test_software_bits_are_the_ones_kvm_uses() -> None:
    """``spte.h``: host-writable is bit 9, MMU-writable bit 10 (``SPTE_HOST_WRITABLE``,
    ``SPTE_MMU_WRITABLE`` for non-EPT sptes), MMU-present bit 11
    (``SPTE_MMU_PRESENT_MASK``): bits the CPU ignores in a PTE."""
    assert (S.HOST_WRITABLE, S.MMU_WRITABLE, S.MMU_PRESENT) == (1 << 9, 1 << 10, 1 << 11)


# --------------------------------------------------------------------------------------------
# Leaf and non-leaf sptes
# --------------------------------------------------------------------------------------------


def test_leaf_spte_carries_frame_rights_and_software_bits() -> None:
    """``make_spte``: present + MMU-present, the pfn at bit 12, U from the access, W and D for a
    writable spte, MMU-writable and host-writable as asked, A unless prefetched."""
    spte = _leaf()
    assert S.spte_to_pfn(spte) == PFN
    assert spte & S.PRESENT and spte & S.MMU_PRESENT
    assert spte & S.USER and spte & S.WRITABLE and spte & S.DIRTY and spte & S.ACCESSED
    assert spte & S.MMU_WRITABLE and spte & S.HOST_WRITABLE
    assert not spte & S.NX and not spte & S.LARGE and not spte & S.GLOBAL
    assert S.is_shadow_present(spte) and S.is_writable(spte) and not S.is_mmio(spte)
    assert S.is_last(spte, 1) and not S.is_last(spte, 2)


def test_read_only_leaf_has_no_w_and_no_d() -> None:
    """A spte that must not be written (write-protected gfn, clean guest PTE) lacks W; KVM sets
    D only together with W, so the first write faults and can set the guest's D bit."""
    spte = _leaf(writable=False, mmu_writable=False)
    assert not spte & (S.WRITABLE | S.DIRTY | S.MMU_WRITABLE)
    assert not S.is_writable(spte)


def test_mmu_writable_without_writable_is_dirty_logging_protection() -> None:
    """Dirty logging clears W but keeps MMU-writable: the MMU may make it writable again
    without a shadow-page decision (``kvm_mmu_slot_remove_write_access``)."""
    spte = _leaf(writable=False, mmu_writable=True)
    assert spte & S.MMU_WRITABLE and not spte & S.WRITABLE


def test_missing_exec_right_becomes_nx() -> None:
    """``make_spte``: ``if (!(pte_access & ACC_EXEC_MASK)) spte |= shadow_nx_mask``."""
    assert _leaf(int(Acc.USER | Acc.WRITE)) & S.NX
    assert not _leaf(int(Acc.EXEC)) & S.NX


def test_supervisor_only_spte_has_no_user_bit() -> None:
    """No ``ACC_USER_MASK``: the U/S bit stays clear, user accesses fault."""
    assert not _leaf(int(Acc.EXEC | Acc.WRITE)) & S.USER


def test_large_prefetched_global_and_host_readonly_variants() -> None:
    """PS for a 2 MiB/1 GiB leaf; no A when prefetched; G copied; host-writable cleared for a
    read-only host mapping (a read-only memslot)."""
    assert _leaf(large=True) & S.LARGE and S.is_large(_leaf(large=True))
    assert S.is_last(_leaf(large=True), 2)
    assert not _leaf(accessed=False) & S.ACCESSED
    assert _leaf(global_=True) & S.GLOBAL
    assert not _leaf(host_writable=False) & S.HOST_WRITABLE


def test_nonleaf_spte_points_to_the_child_with_all_rights() -> None:
    """``make_nonleaf_spte``: P, W, U, A and the child's frame; rights are enforced at the
    leaf, so one child page can serve every parent that reaches it with the same role."""
    spte = S.make_nonleaf_spte(0x777)
    assert S.spte_to_pfn(spte) == 0x777
    assert spte & S.PRESENT and spte & S.WRITABLE and spte & S.USER and spte & S.ACCESSED
    assert S.is_shadow_present(spte) and not S.is_large(spte) and not S.is_last(spte, 2)
    assert not spte & S.NX


def test_describe_spte() -> None:
    """The readable form shows kind, frame and rights."""
    assert S.describe_spte(0, 1) == "empty"
    assert S.describe_spte(_leaf(int(Acc.USER | Acc.EXEC), writable=False), 1) == (
        f"leaf pfn={PFN:#x} u-x"
    )
    assert S.describe_spte(S.make_nonleaf_spte(5), 3) == "table pfn=0x5 uwx"
    assert S.describe_spte(S.make_mmio_spte(0x42, 0, 7), 1) == "mmio gfn=0x42 gen=7"


# --------------------------------------------------------------------------------------------
# MMIO sptes
# --------------------------------------------------------------------------------------------


def test_mmio_spte_sets_a_reserved_bit_and_is_not_present() -> None:
    """An MMIO spte makes the hardware fault with PFERR.RSVD (a reserved address bit) and is
    not a shadow-present entry (``is_mmio_spte``, ``is_shadow_present_pte``)."""
    spte = S.make_mmio_spte(0x1000, int(Acc.WRITE), 3)
    assert S.is_mmio(spte)
    assert spte & S.PRESENT and spte & (1 << 51)
    assert not S.is_shadow_present(spte)
    assert not S.is_mmio(0)
    assert not S.is_mmio(_leaf())
    assert not S.is_mmio(S.make_nonleaf_spte(1))


def test_mmio_generation_is_split_over_bits_3_to_10_and_52_to_62() -> None:
    """``spte.h``: generation bits 0..7 go to spte bits 3..10 (``MMIO_SPTE_GEN_LOW_*``), bits
    8..18 to spte bits 52..62 (``MMIO_SPTE_GEN_HIGH_*``): 19 bits in all."""
    base = S.make_mmio_spte(0, 0, 0)
    assert S.make_mmio_spte(0, 0, 0xFF) ^ base == 0xFF << 3
    assert S.make_mmio_spte(0, 0, 1 << 8) ^ base == 1 << 52
    assert S.make_mmio_spte(0, 0, (1 << 19) - 1) ^ base == (0xFF << 3) | (0x7FF << 52)
    assert S.MMIO_GEN_MASK == (1 << 19) - 1
    # the generation wraps at 19 bits
    assert S.mmio_generation(S.make_mmio_spte(0, 0, (1 << 19) + 5)) == 5


def test_mmio_spte_records_write_and_user_access_only() -> None:
    """``shadow_mmio_access_mask``: the MMIO spte remembers W and U (ACC_WRITE, ACC_USER);
    the exec right is not kept."""
    spte = S.make_mmio_spte(0x99, int(Acc.ALL), 0)
    assert S.mmio_access(spte) == int(Acc.WRITE | Acc.USER)
    assert S.mmio_access(S.make_mmio_spte(0x99, int(Acc.EXEC), 0)) == 0


@given(
    gfn=st.integers(0, (1 << 39) - 1),
    access=st.sampled_from([0, int(Acc.WRITE), int(Acc.USER), int(Acc.WRITE | Acc.USER)]),
    generation=st.integers(0, (1 << 19) - 1),
)
def test_mmio_spte_round_trips(gfn: int, access: int, generation: int) -> None:
    """``get_mmio_spte_gfn``, ``get_mmio_spte_access``, ``get_mmio_spte_generation`` give back
    what ``make_mmio_spte`` stored, and the fields never collide."""
    spte = S.make_mmio_spte(gfn, access, generation)
    assert S.is_mmio(spte)
    assert S.mmio_gfn(spte) == gfn
    assert S.mmio_access(spte) == access
    assert S.mmio_generation(spte) == generation
    assert not S.is_shadow_present(spte)


@given(
    pfn=st.integers(0, (1 << 39) - 1),
    access=st.integers(0, 7),
    writable=st.booleans(),
    large=st.booleans(),
)
def test_no_leaf_spte_looks_like_mmio(pfn: int, access: int, writable: bool, large: bool) -> None:
    """A present spte always has MMU-present, which an MMIO spte never has."""
    spte = S.make_spte(pfn, access, large=large, writable=writable, mmu_writable=writable)
    assert not S.is_mmio(spte)
    assert S.spte_to_pfn(spte) == pfn
    assert bool(spte & S.NX) is not bool(access & Acc.EXEC)
