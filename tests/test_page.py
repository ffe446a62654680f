"""Specification of ``kvmmu.kvm.page``: the shadow page and the 2010 seed change.

"KVM: MMU: Don't allocate gfns page for direct mmu pages": a direct shadow page maps a linear
gfn range, so ``kvm_mmu_page_get_gfn`` computes ``gfn + (i << 9 * (level - 1))`` and the page
has no gfns array; ``kvm_mmu_page_set_gfn`` only checks (``BUG_ON``) on a direct page. Every
reader of the gfn behind an spte goes through ``get_gfn``, so the change touched one function.
The tests below prove both halves: the arithmetic, and that nothing else ever reads the gfns
of a direct page (by scanning the source and by poisoning the array in a full workload).
"""

import ast
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, NoReturn, TypeGuard

import pytest

import kvmmu
import kvmmu.kvm.mmu as mmu_module
from kvmmu.hw.guest import GuestPageTables
from kvmmu.hw.memory import MemslotFlag
from kvmmu.hw.x86 import Acc, Access, PagingMode, Pte
from kvmmu.kvm.audit import audit_violations
from kvmmu.kvm.mmu import unsync_page
from kvmmu.kvm.page import (
    AccessMismatchError,
    GfnMismatchError,
    MmuPage,
    new_gfns,
    standalone_page,
)
from kvmmu.kvm.role import MmuPageRole
from kvmmu.kvm.vcpu import Vm

MiB = 1 << 20
KVMMU_DIR = Path(kvmmu.__file__).parent


# --------------------------------------------------------------------------------------------
# get_gfn / set_gfn
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", [1, 2, 3])
@pytest.mark.parametrize("index", [0, 1, 7, 255, 511])
def test_direct_page_computes_its_gfns(level: int, index: int) -> None:
    """``kvm_mmu_page_get_gfn``: a direct page's spte ``i`` maps
    ``gfn + (i << 9 * (level - 1))``; nothing is stored (``gfns is None``)."""
    base = 0x40000  # aligned for every level up to 3 (a 1 GiB page is 0x40000 frames)
    sp = standalone_page(base, level, direct=True)
    assert sp.gfns is None
    assert sp.get_gfn(index) == base + (index << (9 * (level - 1)))


def test_direct_page_gfns_at_each_level_by_example() -> None:
    """Spte 3 covers the fourth 4 KiB page, 2 MiB page and 1 GiB page at levels 1, 2, 3."""
    assert standalone_page(0x200, 1, direct=True).get_gfn(3) == 0x203
    assert standalone_page(0, 2, direct=True).get_gfn(3) == 3 * 512
    assert standalone_page(0, 3, direct=True).get_gfn(3) == 3 * 512 * 512


def test_indirect_page_stores_its_gfns() -> None:
    """An indirect page records what ``set_gfn`` wrote: the gfn the guest entry named when the
    spte was made, which need not follow any pattern."""
    sp = standalone_page(0x1234, 1, direct=False)
    assert sp.gfns is not None and len(sp.gfns) == 512 and sp.gfns.itemsize == 8
    assert sp.gfns_bytes == 4096
    sp.set_gfn(5, 0x9999)
    sp.set_gfn(6, 0x17)
    assert (sp.get_gfn(5), sp.get_gfn(6)) == (0x9999, 0x17)
    assert int(sp.gfns[5]) == 0x9999


def test_set_gfn_on_a_direct_page_checks_and_stores_nothing() -> None:
    """``kvm_mmu_page_set_gfn`` on a direct page: the right gfn is accepted (nothing to store),
    a wrong one is the kernel's ``BUG_ON``, here :class:`GfnMismatchError`."""
    sp = standalone_page(0x400, 2, direct=True)
    sp.set_gfn(2, 0x400 + 2 * 512)
    assert sp.gfns is None
    with pytest.raises(GfnMismatchError, match=r"entry 2 maps gfn 0x800, not 0x801"):
        sp.set_gfn(2, 0x801)
    assert isinstance(GfnMismatchError("x"), kvmmu.errors.KvmmuError)


def test_passthrough_page_answers_its_own_gfn() -> None:
    """``kvm_mmu_page_get_gfn``: a passthrough page shadows no guest table at its level."""
    sp = MmuPage(
        gfn=0x77,
        role=MmuPageRole(level=4, passthrough=True),
        pfn=0,
        spt=memoryview(bytearray(4096)).cast("Q"),
        gfns=new_gfns(False),
    )
    assert sp.get_gfn(0) == sp.get_gfn(300) == 0x77


def test_gfns_bytes_saved_per_direct_page() -> None:
    """The saving of the seed change: 4096 bytes (512 gfns of 8 bytes) per direct page."""
    assert standalone_page(0, 1, direct=False).gfns_bytes == 4096
    assert standalone_page(0, 1, direct=True).gfns_bytes == 0


def test_tdp_vm_allocates_no_gfns_arrays() -> None:
    """With TDP every shadow page is direct, so a whole VM's pages hold no gfns at all; with
    shadow paging the indirect pages each hold 4 KiB."""
    vm = Vm(64 * MiB, tdp=True, huge_pages=False)
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4)
    pt.map(0x400000, 0x100000, length=4 * MiB)
    vcpu = vm.create_vcpu(pt.cpu())
    for gva in range(0x400000, 0x800000, 0x80000):
        vcpu.access(gva)
    pages = list(vm.mmu.active)
    assert len(pages) >= 5 and all(sp.direct for sp in pages)
    assert sum(sp.gfns_bytes for sp in pages) == 0

    shadow = Vm(64 * MiB)
    spt = GuestPageTables(shadow.memory, PagingMode.LEVEL4)
    spt.map(0x400000, 0x100000)
    shadow.create_vcpu(spt.cpu()).access(0x400000)
    indirect = [sp for sp in shadow.mmu.active if not sp.direct]
    assert sum(sp.gfns_bytes for sp in shadow.mmu.active) == 4096 * len(indirect) > 0


# --------------------------------------------------------------------------------------------
# Nothing reads the gfns of a direct page: (a) the source
# --------------------------------------------------------------------------------------------


def _functions(tree: ast.AST) -> Iterator[tuple[str, ast.AST]]:
    """Every node with the name of the innermost function around it ("" at module level)."""

    def visit(node: ast.AST, name: str) -> Iterator[tuple[str, ast.AST]]:
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, ast.FunctionDef) else name
            yield inner, child
            yield from visit(child, inner)

    yield from visit(tree, "")


def _is_field(node: ast.AST) -> TypeGuard[ast.Attribute]:
    """``<something>.gfns``: the page's field, not a local list that happens to be named so."""
    return isinstance(node, ast.Attribute) and node.attr == "gfns"


def gfns_uses(source: str, module: str) -> list[tuple[str, str, int]]:
    """Uses of a shadow page's ``gfns`` field in ``source``: ``("index", function, line)`` for
    ``x.gfns[...]`` (or ``g[...]`` after ``g = x.gfns``) and ``("read", function, line)`` for
    any other use of ``x.gfns`` outside ``page.py`` than an identity test against None."""
    tree = ast.parse(source)
    nodes = list(_functions(tree))
    identity_checked = {
        id(cmp.left)
        for _, cmp in nodes
        if isinstance(cmp, ast.Compare)
        and all(isinstance(op, ast.Is | ast.IsNot) for op in cmp.ops)
        and all(isinstance(c, ast.Constant) and c.value is None for c in cmp.comparators)
    }
    aliases = {
        (func, target.id)
        for func, node in nodes
        if isinstance(node, ast.Assign) and _is_field(node.value)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    aliased = {id(node.value) for func, node in nodes if isinstance(node, ast.Assign)}
    uses = []
    for func, node in nodes:
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Subscript) and (
            _is_field(node.value)
            or (isinstance(node.value, ast.Name) and (func, node.value.id) in aliases)
        ):
            uses.append(("index", func, line))
        elif (
            _is_field(node)
            and isinstance(node.ctx, ast.Load)
            and module != "page.py"
            and id(node) not in identity_checked
            and not any(isinstance(sub, ast.Subscript) and sub.value is node for _, sub in nodes)
            and id(node) not in aliased
        ):
            uses.append(("read", func, line))
    return uses


def test_source_indexes_gfns_only_in_get_gfn_and_set_gfn() -> None:
    """The seed change's discipline, checked on the source of every ``kvmmu`` module: a page's
    gfns array is indexed only inside ``page.py``'s ``get_gfn`` and ``set_gfn``; elsewhere
    ``.gfns`` may only be compared with ``None`` by identity, which reads nothing."""
    files = sorted(KVMMU_DIR.rglob("*.py"))
    assert {"page.py", "mmu.py", "sync.py", "rmap.py"} <= {f.name for f in files}
    bad = [
        f"{path.name}:{line} in {func or '<module>'} ({kind})"
        for path in files
        for kind, func, line in gfns_uses(path.read_text(), path.name)
        if not (path.name == "page.py" and func in ("get_gfn", "set_gfn"))
    ]
    assert not bad, f"gfns used outside get_gfn/set_gfn: {bad}; call sp.get_gfn/sp.set_gfn"


def test_page_py_indexes_gfns_in_get_gfn_and_set_gfn_only() -> None:
    """The scan is not vacuous: in ``page.py`` it finds exactly the two accessors."""
    uses = gfns_uses((KVMMU_DIR / "kvm" / "page.py").read_text(), "page.py")
    assert {func for kind, func, _ in uses if kind == "index"} == {"get_gfn", "set_gfn"}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def f(sp):\n    return sp.gfns[3]\n", [("index", "f", 2)]),
        ("def f(sp, i):\n    sp.gfns[i] = 7\n", [("index", "f", 2)]),
        ("def f(sp):\n    g = sp.gfns\n    return g[0]\n", [("index", "f", 3)]),
        ("def f(sp):\n    return list(sp.gfns)\n", [("read", "f", 2)]),
        ("def f(sp):\n    return sp.gfns.tolist()\n", [("read", "f", 2)]),
        ("def f(sp):\n    return sp.gfns is None\n", []),
        ("def f(sp):\n    return sp.get_gfn(3)\n", []),
        ("def f():\n    gfns = [1, 2]\n    return gfns[0]\n", []),
    ],
    ids=["index", "store", "alias", "list", "method", "identity", "accessor", "local-list"],
)
def test_scan_tells_reads_from_identity_tests(
    source: str, expected: list[tuple[str, str, int]]
) -> None:
    """What the scan flags: any indexing or use of the field; not an identity test, not the
    accessors, not a local variable that is merely called ``gfns``."""
    assert gfns_uses(source, "other.py") == expected


# --------------------------------------------------------------------------------------------
# Nothing reads the gfns of a direct page: (b) behaviour, with the array poisoned
# --------------------------------------------------------------------------------------------


class GfnsRead(AssertionError):
    """Something read the gfns of a direct page."""


class PoisonedGfns:
    """Stands where a direct page's ``gfns`` would be: every use of it is logged and raises.

    (An identity test such as ``sp.gfns is None`` cannot be intercepted, and reads nothing.)
    """

    log: ClassVar[list[str]] = []

    def _touch(self, what: str) -> NoReturn:
        where = "".join(traceback.format_stack(limit=6)[:-2])
        PoisonedGfns.log.append(f"{what}\n{where}")
        raise GfnsRead(f"the gfns of a direct page were used ({what})")

    def __getattribute__(self, name: str) -> Any:
        if name == "_touch":
            return object.__getattribute__(self, name)
        object.__getattribute__(self, "_touch")(f"attribute {name}")

    def __getitem__(self, key: object) -> NoReturn:
        self._touch(f"[{key!r}]")

    def __setitem__(self, key: object, value: object) -> NoReturn:
        self._touch(f"[{key!r}] = {value!r}")

    def __len__(self) -> NoReturn:
        self._touch("len()")

    def __iter__(self) -> NoReturn:
        self._touch("iter()")

    def __contains__(self, item: object) -> NoReturn:
        self._touch("in")

    def __bool__(self) -> NoReturn:
        self._touch("bool()")

    def __eq__(self, other: object) -> NoReturn:
        self._touch("==")

    def __ne__(self, other: object) -> NoReturn:
        self._touch("!=")

    __hash__ = None  # type: ignore[assignment]

    def __array__(self, *args: object, **kwargs: object) -> NoReturn:
        self._touch("np.asarray()")

    def __index__(self) -> NoReturn:
        self._touch("index()")

    def __repr__(self) -> str:  # for pytest's reports; shows no contents
        return "<poisoned gfns>"

    def __copy__(self) -> NoReturn:
        self._touch("copy()")

    def __deepcopy__(self, memo: object) -> NoReturn:
        self._touch("deepcopy()")


@pytest.fixture
def poisoned(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[MmuPage]]:
    """Every direct page the MMU creates gets a :class:`PoisonedGfns`; yields the pages."""
    made: list[MmuPage] = []
    real_alloc = mmu_module.Mmu.alloc_shadow_page

    def poisoned_new_gfns(direct: bool) -> Any:
        return PoisonedGfns() if direct else new_gfns(False)

    def alloc(self: mmu_module.Mmu, gfn: int, role: MmuPageRole) -> MmuPage:
        sp = real_alloc(self, gfn, role)
        if role.direct:
            made.append(sp)
        return sp

    monkeypatch.setattr(mmu_module, "new_gfns", poisoned_new_gfns)
    monkeypatch.setattr(mmu_module.Mmu, "alloc_shadow_page", alloc)
    PoisonedGfns.log = []
    yield made
    assert not PoisonedGfns.log, "gfns of a direct page read:\n" + "\n".join(PoisonedGfns.log)
    # the poison really was in place (type() reads nothing through the object)
    assert made and all(type(sp.gfns) is PoisonedGfns for sp in made)


def _audit_ignoring_poison(vm: Vm) -> None:
    """The audit, minus the one finding the poison itself causes: the audit sees that a direct
    page's ``gfns`` is not None (an identity test) and says so, once per live direct page."""
    violations = audit_violations(vm)
    expected = [v for v in violations if "a direct page has a gfns array" in v.detail]
    live_direct = [sp for sp in vm.mmu.by_pfn.values() if sp.direct]
    assert len(expected) == len(live_direct)
    rest = [str(v) for v in violations if v not in expected]
    assert not rest, rest


def test_tdp_workload_never_reads_direct_gfns(poisoned: list[MmuPage]) -> None:
    """TDP: faults, writes, MMIO, dirty logging, write protection, memslot moves and deletes,
    zaps, fast zap and reclaim, all over direct pages whose gfns are poisoned."""
    vm = Vm(64 * MiB, tdp=True, huge_pages=False, n_max_mmu_pages=64)
    data = vm.add_memslot(0x10000, 64)
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4, table_gfns=range(0x3000, 0x3100))
    pt.map(0x400000, 0x100000, length=2 * MiB, writable=True)
    pt.map(0x40000000, 0x10000000, length=64 << 12, writable=True)
    pt.map(0x80000000, 0x20000000, writable=True)  # no memslot: MMIO
    vcpu = vm.create_vcpu(pt.cpu())

    for i in range(0, 512, 37):
        assert vcpu.write(0x400000 + (i << 12), i) is None
        assert vcpu.read(0x400000 + (i << 12)) == i
    assert vcpu.read(0x80000000) == (1 << 64) - 1  # MMIO read
    # dirty logging
    vm.set_memslot_flags(data.slot_id, MemslotFlag.LOG_DIRTY_PAGES)
    for i in (1, 3, 5):
        vcpu.write(0x40000000 + (i << 12), i)
    assert vm.get_dirty_log(data.slot_id) == [0x10001, 0x10003, 0x10005]
    vcpu.write(0x40003000, 7)
    assert vm.get_dirty_log(data.slot_id) == [0x10003]
    vm.set_memslot_flags(data.slot_id, MemslotFlag.NONE)
    # write protection through the rmap
    vm.mmu.write_protect_gfn(0x100, mmu_protect=True)
    vcpu.tlb.flush()
    assert vcpu.write(0x400000, 9) is None and vm.memory.read(0x100000) == 9
    _audit_ignoring_poison(vm)
    # a new memslot makes the MMIO spte stale; moving and deleting slots zaps through the rmap
    vm.add_memslot(0x20000, 16)
    assert vcpu.write(0x80000000, 0x55) is None and vm.memory.read(0x20000000) == 0x55
    vm.move_memslot(data.slot_id, 0x30000, zap_all=False)
    vm.delete_memslot(data.slot_id, zap_all=False)
    assert vcpu.read(0x40000000) == (1 << 64) - 1
    # zap one direct page, then everything, fast
    leaf = next(sp for sp in vm.mmu.active if sp.level == 1 and sp.root_count == 0)
    vm.mmu.zap_page(leaf)
    assert vcpu.read(0x400000) == 9
    vm.mmu.zap_all_fast()
    assert vcpu.read(0x400000) == 9
    # reclaim: touch more 2 MiB regions than the 64-page budget holds
    for k in range(70):
        pt.map(0x100000000 + (k << 21), k << 21)
        vcpu.read(0x100000000 + (k << 21))
    assert vm.mmu.stats.mmu_recycled > 0
    _audit_ignoring_poison(vm)
    vm.mmu.zap_all()
    assert len(poisoned) > 70


def test_shadow_workload_never_reads_direct_gfns(poisoned: list[MmuPage]) -> None:
    """Shadow paging with guest 2 MiB pages the host backs with 4 KiB pages: direct pages
    under indirect ones. Faults, emulated table writes, unsync and sync (invlpg, CR3 load),
    write protection of a new guest table inside a large page, dirty logging, zaps and
    reclaim, with the direct pages' gfns poisoned."""
    vm = Vm(64 * MiB, huge_pages=False, n_max_mmu_pages=64)
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4, table_gfns=range(0x3000, 0x3100))
    big = 0x1000000  # gpa of a 2 MiB guest page, 16 MiB
    pt.map(0x40000000, big, "2M", length=4 * MiB, writable=True)
    pt.map(0x400000, 0x100000, length=0x4000, writable=True)
    leaf_table = pt.entry(0x400000, 2) & ~0xFFF & ((1 << 52) - 1)
    pt.map(0x10000000, leaf_table, writable=True)  # the guest maps its own page table
    vcpu = vm.create_vcpu(pt.cpu())

    for off in range(0, 4 * MiB, 0x3B000):
        assert vcpu.write(0x40000000 + off, off | 1) is None
        assert vcpu.read(0x40000000 + off) == off | 1
    assert any(sp.direct for sp in vm.mmu.active)
    for gva in range(0x400000, 0x404000, 0x1000):
        vcpu.read(gva)
    # the guest edits a leaf table: unsync, then invlpg and a CR3 load sync it
    entry = 0x200000 | int(Pte.PRESENT | Pte.WRITABLE | Pte.ACCESSED | Pte.DIRTY)
    vcpu.write(0x10000000 + 8, entry)
    assert vm.mmu.stats.mmu_unsync == 1
    vcpu.invlpg(0x401000)
    assert vcpu.read(0x401000, 8) == vm.memory.read(0x200000)
    vcpu.write(0x10000000 + 16, entry + 0x1000)
    vcpu.set_cr3(vcpu.cpu.cr3)
    assert vcpu.access(0x402000) == 0x201000
    # the guest turns a frame inside the 2 MiB page into a page table: write protection walks
    # the rmap, which holds sptes of direct pages
    table_gpa = big + 0x5000
    vcpu.write(0x40005000, 0x300000 | int(Pte.PRESENT | Pte.ACCESSED))
    pt.set_entry(0x20000000, 2, table_gpa | int(Pte.PRESENT | Pte.WRITABLE))
    assert vcpu.access(0x20000000) == 0x300000
    assert vcpu.write(0x40005008, 0) is None  # emulated: the frame is shadowed now
    # dirty logging over the memslot holding the large page
    slot = vm.memory.slots.find(big >> 12)
    assert slot is not None
    vm.set_memslot_flags(slot.slot_id, MemslotFlag.LOG_DIRTY_PAGES)
    vcpu.write(0x40100000, 1)
    assert (big >> 12) + 0x100 in vm.get_dirty_log(slot.slot_id)
    vm.set_memslot_flags(slot.slot_id, MemslotFlag.NONE)
    _audit_ignoring_poison(vm)
    # the guest unmaps half of the large range: an emulated write zaps the upper spte
    pt.unmap(0x40200000)
    vcpu.invlpg(0x40200000)
    assert vcpu.access(0x40200000) != 0x1200000
    # reclaim with many guest tables, then zap everything
    for k in range(80):
        pt.map(0x80000000 + (k << 21), 0x100000 + (k << 12))
        vcpu.read(0x80000000 + (k << 21))
    assert vm.mmu.stats.mmu_recycled > 0
    for off in range(0, 2 * MiB, 0x7B000):
        vcpu.read(0x40000000 + off)
    _audit_ignoring_poison(vm)
    vm.mmu.zap_all_fast()
    assert vcpu.read(0x40000000) == 1
    vm.mmu.zap_all()
    assert len(poisoned) >= 2


# --------------------------------------------------------------------------------------------
# shadowed_translation: today's kernel caches the access bits next to the gfn
# --------------------------------------------------------------------------------------------


def test_indirect_page_records_the_access_of_each_spte() -> None:
    """``kvm_mmu_page_set_access`` / ``kvm_mmu_page_get_access``: an indirect page keeps the
    guest's access bits per spte (the access half of ``shadowed_translation``); a direct page
    stores none and answers its role's access."""
    sp = standalone_page(0x1234, 1, direct=False)
    assert sp.access is not None and len(sp.access) == 512 and sp.access.itemsize == 1
    sp.set_access(5, int(Acc.USER | Acc.EXEC))
    assert sp.get_access(5) == int(Acc.USER | Acc.EXEC)
    direct = standalone_page(0x400, 1, direct=True)
    assert direct.access is None
    assert direct.get_access(7) == direct.role.access
    direct.set_access(7, direct.role.access)  # the same: nothing to store


def test_access_mismatch_on_a_direct_page_is_a_bookkeeping_error() -> None:
    """``kvm_mmu_page_set_translation`` warns when a direct page is handed other access bits
    than its role's ("access mismatch under direct page"); kvmmu raises, as for a gfn."""
    direct = standalone_page(0x400, 1, direct=True)
    with pytest.raises(AccessMismatchError, match=r"access mismatch under direct page 0x400"):
        direct.set_access(3, int(Acc.USER))
    assert isinstance(AccessMismatchError("x"), kvmmu.errors.KvmmuError)


def test_faults_and_sync_record_the_guest_access() -> None:
    """``mmu_set_spte`` -> ``rmap_add`` records the guest access of a new spte, and
    ``FNAME(sync_spte)`` refreshes it when the guest changed the PTE's rights. (A write fault,
    so the clean-PTE rule keeps W: ``FNAME(protect_clean_gpte)`` acts on read faults.)"""
    vm = Vm(64 * MiB)
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4)
    pt.map(0x400000, 0x100000, writable=True, user=True)
    vcpu = vm.create_vcpu(pt.cpu())
    assert vcpu.access(0x400000, Access.WRITE, cpl=3) == 0x100000
    leaf = next(sp for sp in vm.mmu.active if sp.level == 1 and not sp.direct)
    assert leaf.get_access(0) == int(Acc.USER | Acc.WRITE | Acc.EXEC)
    unsync_page(vm.mmu, leaf)  # the guest may now edit the table freely
    pt.protect(0x400000, writable=False)
    vcpu.invlpg(0x400000)  # syncs the spte
    assert leaf.get_access(0) == int(Acc.USER | Acc.EXEC)
    assert audit_violations(vm) == []
