"""Specification of ``kvmmu.kvm.stats`` and ``kvmmu.kvm.trace``: KVM's counters and trace events.

The counter names are those of ``struct kvm_vm_stat`` / ``kvm_vcpu_stat`` (debugfs); the events
those of ``arch/x86/kvm/mmu/mmutrace.h``, emitted where the kernel emits them:
``kvm_mmu_pagetable_walk`` at the start of ``FNAME(walk_addr_generic)``, ``kvm_mmu_get_page``
in ``kvm_mmu_get_shadow_page``, ``kvm_mmu_spte_requested`` once ``FNAME(fetch)`` knows the
level it will map at, ``kvm_mmu_set_spte`` in ``mmu_set_spte``.
"""

import ast
from pathlib import Path

import pandas as pd

import kvmmu
from kvmmu.hw.guest import GuestPageTables
from kvmmu.hw.x86 import Access, PagingMode
from kvmmu.kvm.stats import GAUGES, MmuStats
from kvmmu.kvm.trace import EVENTS, Tracer
from kvmmu.kvm.vcpu import Vm

MiB = 1 << 20
KERNEL_COUNTERS = (
    "pf_taken",
    "pf_fixed",
    "pf_spurious",
    "pf_guest",
    "pf_emulate",
    "pf_mmio_spte_created",
    "mmu_cache_miss",
    "mmu_pte_write",
    "mmu_pte_updated",
    "mmu_pde_zapped",
    "mmu_flooded",
    "mmu_shadow_zapped",
    "mmu_recycled",
    "mmu_unsync",
    "max_mmu_rmap_size",
    "mmio_exits",
    "invlpg",
    "tlb_flush",
    "pages_4k",
    "pages_2m",
    "pages_1g",
)


def _guest() -> tuple[Vm, GuestPageTables]:
    vm = Vm(64 * MiB)
    pt = GuestPageTables(vm.memory, PagingMode.LEVEL4)
    pt.map(0x400000, 0x100000, length=0x2000, writable=True)
    return vm, pt


# --------------------------------------------------------------------------------------------
# Counters
# --------------------------------------------------------------------------------------------


def test_counters_are_a_pandas_series_with_kernel_names() -> None:
    """``as_series``: int64 counts indexed by name, the kernel's names first."""
    series = MmuStats().as_series()
    assert isinstance(series, pd.Series)
    assert series.dtype == "int64" and series.name == "count"
    assert list(series.index[: len(KERNEL_COUNTERS)]) == list(KERNEL_COUNTERS)
    assert (series == 0).all()


def test_counters_count_one_fault() -> None:
    """One first access: four shadow pages made (``mmu_cache_miss``, ``shadow_pages``), one
    fault taken and fixed (``pf_taken``, ``pf_fixed``), one leaf spte (``pages_4k``), one TLB
    miss; the series shows it and the Vm exposes the same."""
    vm, pt = _guest()
    vcpu = vm.create_vcpu(pt.cpu())
    vcpu.access(0x400000)
    series = vm.mmu.stats.as_series()
    assert series["pf_fixed"] == 1 and series["mmu_cache_miss"] == 4
    assert series["shadow_pages"] == 4 and series["pf_taken"] == 1 and series["pages_4k"] == 1
    assert series["tlb_misses"] == 1 and series["tlb_hits"] == 0
    assert series["pf_guest"] == 0
    assert vm.stats is vm.mmu.stats
    vcpu.access(0x400000)
    assert vm.mmu.stats.as_series()["tlb_hits"] == 1
    assert series["tlb_hits"] == 0  # a snapshot, not a live view


def test_reset_zeroes_events_and_keeps_gauges() -> None:
    """``shadow_pages``, ``mmu_unsync`` and the leaf gauges describe the current state and
    survive a reset."""
    vm, pt = _guest()
    vm.create_vcpu(pt.cpu()).access(0x400000)
    vm.mmu.stats.reset()
    series = vm.mmu.stats.as_series()
    assert set(GAUGES) == {"shadow_pages", "mmu_unsync", "pages_4k", "pages_2m", "pages_1g"}
    assert series["shadow_pages"] == 4 and series["pages_4k"] == 1
    assert (series.drop(list(GAUGES)) == 0).all()


# --------------------------------------------------------------------------------------------
# Trace events
# --------------------------------------------------------------------------------------------


def test_invlpg_tlb_flush_and_the_rmap_peak_count_as_the_kernel_counts() -> None:
    """``kvm_mmu_invlpg`` counts ``invlpg``; ``kvm_vcpu_flush_tlb_guest`` (a CR4.PGE toggle)
    counts ``tlb_flush``; ``rmap_add`` keeps ``max_mmu_rmap_size``, the most sptes already on
    one gfn's rmap when another was added: three gvas mapping one frame give 2."""
    vm, pt = _guest()
    pt.map(0x401000, 0x100000)
    pt.map(0x402000, 0x100000)
    vcpu = vm.create_vcpu(pt.cpu())
    for gva in (0x400000, 0x401000, 0x402000):
        assert vcpu.access(gva) == 0x100000
    assert vm.stats.max_mmu_rmap_size == 2
    vcpu.invlpg(0x400000)
    vcpu.invlpg(0x401000)
    assert vcpu.set_registers(cr4=vcpu.cpu.cr4 ^ (1 << 7)) is None  # CR4.PGE
    assert (vm.stats.invlpg, vm.stats.tlb_flush) == (2, 1)


def test_tracing_is_off_by_default_and_records_nothing() -> None:
    """Like a disabled tracepoint: faults, zaps and writes leave the buffer empty."""
    vm, pt = _guest()
    vcpu = vm.create_vcpu(pt.cpu())
    vcpu.access(0x400000, Access.WRITE)
    vm.mmu.zap_all()
    vcpu.access(0x401000)
    assert not vm.mmu.trace.enabled
    assert vm.mmu.trace.events == []
    frame = vm.mmu.trace.frame()
    assert frame.empty and list(frame.columns) == ["seq", "event"]


def test_recording_one_fault_gives_the_kernel_events_in_order() -> None:
    """Inside ``recording()`` one fault that builds three shadow pages records, in order:
    the exit (``kvm_page_fault``, ``trace.h``), the guest walk with its hardware error code
    (``pferr``) and one ``kvm_mmu_paging_element`` per level, a ``kvm_mmu_get_page`` per page
    built (level 3, 2, 1, all created), the
    requested level, and the spte installed at level 1 for the gfn."""
    vm, pt = _guest()
    vcpu = vm.create_vcpu(pt.cpu())
    vcpu.reload()  # the root exists before the fault, as when a vCPU has entered the guest
    with vm.mmu.trace.recording() as trace:
        assert vcpu.access(0x400000) == 0x100000
    assert not trace.enabled
    frame = trace.frame()
    assert list(frame["event"]) == [
        "kvm_page_fault",
        "kvm_mmu_pagetable_walk",
        *["kvm_mmu_paging_element"] * 4,
        "kvm_mmu_get_page",
        "kvm_mmu_get_page",
        "kvm_mmu_get_page",
        "kvm_mmu_spte_requested",
        "kvm_mmu_set_spte",
    ]
    assert list(frame.index) == list(range(11))
    exit_, walk = frame.iloc[0], frame.iloc[1]
    assert exit_["fault_address"] == 0x400000 and exit_["error_code"] == 0  # not present, read
    assert walk["addr"] == 0x400000 and walk["pferr"] == 0
    elements = frame[frame["event"] == "kvm_mmu_paging_element"]
    assert list(elements["level"]) == [4, 3, 2, 1]
    pages = frame[frame["event"] == "kvm_mmu_get_page"]
    assert list(pages["created"]) == [True, True, True]
    assert [role.split()[0] for role in pages["role"]] == ["L3", "L2", "L1"]
    spte = frame.iloc[-1]
    assert spte["gfn"] == 0x100 and spte["level"] == 1
    assert set(frame["event"]) <= set(EVENTS)


def test_a_second_fault_finds_the_pages_and_records_no_get_page_creation() -> None:
    """A fault in the same leaf table finds every shadow page: no ``kvm_mmu_get_page``."""
    vm, pt = _guest()
    vcpu = vm.create_vcpu(pt.cpu())
    vcpu.access(0x400000)
    with vm.mmu.trace.recording() as trace:
        vcpu.access(0x401000)
    assert list(trace.frame()["event"]) == [
        "kvm_page_fault",
        "kvm_mmu_pagetable_walk",
        *["kvm_mmu_paging_element"] * 4,
        "kvm_mmu_spte_requested",
        "kvm_mmu_set_spte",
    ]


def test_recording_starts_from_an_empty_buffer() -> None:
    """Each ``recording()`` block begins empty; events stay readable after the block."""
    tracer = Tracer()
    tracer.emit("kvm_mmu_get_page", gfn=1)
    assert tracer.events == []
    with tracer.recording():
        tracer.emit("kvm_mmu_get_page", gfn=1)
    with tracer.recording():
        tracer.emit("kvm_mmu_set_spte", gfn=2)
    assert [e["event"] for e in tracer.events] == ["kvm_mmu_set_spte"]
    tracer.emit("kvm_mmu_set_spte", gfn=3)  # off again
    assert len(tracer.events) == 1
    tracer.clear()
    assert tracer.events == []


def test_zap_is_traced_as_prepare_zap_page() -> None:
    """``kvm_mmu_prepare_zap_page`` names the page zapped."""
    vm, pt = _guest()
    vcpu = vm.create_vcpu(pt.cpu())
    vcpu.access(0x400000)
    leaf = next(sp for sp in vm.mmu.active if sp.level == 1)
    with vm.mmu.trace.recording() as trace:
        vm.mmu.zap_page(leaf)
    zaps = trace.frame()
    assert list(zaps["event"]) == ["kvm_mmu_prepare_zap_page"]
    assert zaps.iloc[0]["sp"] == leaf.serial and zaps.iloc[0]["gfn"] == leaf.gfn


def test_every_listed_event_is_emitted_and_every_emitted_event_is_listed() -> None:
    """``EVENTS`` names exactly the events kvmmu's code emits: each literal passed to
    ``Tracer.emit`` anywhere in the package is listed, and each listed name is emitted."""
    root = Path(kvmmu.__file__).parent
    emitted: set[str] = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "emit"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                emitted.add(str(node.args[0].value))
    assert emitted == set(EVENTS)
    assert len(EVENTS) == len(set(EVENTS))
