"""Bad input, by class, at every public entry point of the hardware and KVM layers.

Issue 13: a wrong argument must raise a :class:`kvmmu.errors.KvmmuError` subclass whose message
names the argument, never a bare TypeError/AttributeError/KeyError from deep inside, and never
be silently accepted (a truthy ``"no"`` turning a feature on, ``True`` counted as 1, NaN or a
negative size). One table lists every public callable with the kind of each argument; every
kind has one list of bad values, and each (entry, bad value) pair is a test case. A second test
introspects the modules so that no public callable is missing from the table.
"""

from __future__ import annotations

import importlib
import io
import lzma
import pkgutil
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bad_values import Entry, cases, expect_typed_error, public_callables

import kvmmu.hw
import kvmmu.kvm
from kvmmu.hw import capture, guest, memory, walk, x86
from kvmmu.hw.capture import CaptureError, load_capture
from kvmmu.hw.guest import GuestPageTables
from kvmmu.hw.memory import GuestMemory, HostMemory, Memslots
from kvmmu.hw.walk import CpuState, cpu_for_mode
from kvmmu.hw.x86 import PagingMode
from kvmmu.kvm import accounting, audit, stats, tdp, trace
from kvmmu.kvm.vcpu import Vcpu, Vm

MiB = 1 << 20
LEVEL4 = PagingMode.LEVEL4
ERA = accounting.ERAS[0]


def _mem() -> GuestMemory:
    return GuestMemory(4 * MiB)


def _pt() -> GuestPageTables:
    pt = GuestPageTables(_mem(), LEVEL4)
    pt.map(0x40_0000, 0x10_0000)
    return pt


def _vm() -> Vm:
    return Vm(8 * MiB)


def _vcpu() -> Vcpu:
    vm = _vm()
    pt = GuestPageTables(vm.memory, LEVEL4)
    pt.map(0x40_0000, 0x10_0000, writable=True)
    return vm.create_vcpu(pt.cpu())


def _cpu() -> CpuState:
    return cpu_for_mode(LEVEL4)


def _step() -> walk.WalkResult:
    pt = _pt()
    result = walk.walk(pt.memory, pt.cpu(), 0x40_0000)
    assert isinstance(result, walk.WalkResult)
    return result


S4 = x86.PagingMode.LEVEL4.spec

TABLE: list[Entry] = [
    # -- kvmmu.hw.x86 --------------------------------------------------------------------------
    ("x86.paging_mode", "cr0", "int", lambda v: x86.paging_mode(v, 0, 0)),
    ("x86.paging_mode", "cr4", "int", lambda v: x86.paging_mode(1, v, 0)),
    ("x86.paging_mode", "efer", "int", lambda v: x86.paging_mode(1, 0, v)),
    ("x86.rsvd_bits", "low", "int", lambda v: x86.rsvd_bits(v, 8)),
    ("x86.rsvd_bits", "high", "int", lambda v: x86.rsvd_bits(1, v)),
    ("x86.is_canonical", "addr", "int", lambda v: x86.is_canonical(v, 48)),
    ("x86.is_canonical", "va_bits", "int", lambda v: x86.is_canonical(0, v)),
    ("x86.canonicalize", "addr", "int", lambda v: x86.canonicalize(v, 48)),
    ("x86.canonicalize", "va_bits", "int", lambda v: x86.canonicalize(0, v)),
    ("x86.check_maxphyaddr", "maxphyaddr", "int", lambda v: x86.check_maxphyaddr(v)),
    ("x86.pdpte_rsvd_mask", "maxphyaddr", "int", lambda v: x86.pdpte_rsvd_mask(v)),
    ("x86.describe_flags", "entry", "int", lambda v: x86.describe_flags(v)),
    ("x86.ModeSpec.check_level", "level", "int", lambda v: S4.check_level(v)),
    ("x86.ModeSpec.shift", "level", "int", lambda v: S4.shift(v)),
    ("x86.ModeSpec.index", "addr", "int", lambda v: S4.index(v, 1)),
    ("x86.ModeSpec.index", "level", "int", lambda v: S4.index(0, v)),
    ("x86.ModeSpec.level_size", "level", "int", lambda v: S4.level_size(v)),
    ("x86.ModeSpec.entry_name", "level", "int", lambda v: S4.entry_name(v)),
    # -- kvmmu.hw.memory -----------------------------------------------------------------------
    ("memory.HostMemory.alloc_range", "npages", "int", lambda v: HostMemory().alloc_range(v)),
    ("memory.HostMemory.free_page", "pfn", "int", lambda v: HostMemory().free_page(v)),
    ("memory.HostMemory.free_range", "pfn", "int", lambda v: HostMemory().free_range(v, 1)),
    ("memory.HostMemory.free_range", "npages", "int", lambda v: HostMemory().free_range(1, v)),
    ("memory.HostMemory.raw", "pfn", "int", lambda v: HostMemory().raw(v)),
    ("memory.HostMemory.page", "pfn", "int", lambda v: HostMemory().page(v)),
    ("memory.HostMemory.words", "pfn", "int", lambda v: HostMemory().words(v)),
    ("memory.HostMemory.words", "entry_size", "int", lambda v: HostMemory().words(1, v)),
    ("memory.Memslots", "host", "obj", lambda v: Memslots(v)),
    ("memory.Memslots", "maxphyaddr", "int", lambda v: Memslots(HostMemory(), v)),
    ("memory.Memslots.get", "slot_id", "int", lambda v: _mem().slots.get(v)),
    ("memory.Memslots.add", "base_gfn", "int", lambda v: _mem().slots.add(v, 1)),
    ("memory.Memslots.add", "npages", "int", lambda v: _mem().slots.add(0x1000, v)),
    ("memory.Memslots.add", "flags", "flags", lambda v: _mem().slots.add(0x1000, 1, v)),
    ("memory.Memslots.delete", "slot_id", "int", lambda v: _mem().slots.delete(v)),
    ("memory.Memslots.move", "slot_id", "int", lambda v: _mem().slots.move(v, 0x1000)),
    ("memory.Memslots.move", "new_base_gfn", "int", lambda v: _mem().slots.move(0, v)),
    ("memory.Memslots.set_flags", "slot_id", "int", lambda v: _mem().slots.set_flags(v, 0)),
    ("memory.Memslots.set_flags", "flags", "flags", lambda v: _mem().slots.set_flags(0, v)),
    ("memory.GuestMemory", "size", "int", lambda v: GuestMemory(v)),
    ("memory.GuestMemory", "host", "opt_obj", lambda v: GuestMemory(MiB, host=v)),
    ("memory.GuestMemory", "maxphyaddr", "int", lambda v: GuestMemory(MiB, maxphyaddr=v)),
    ("memory.GuestMemory.slot_of", "gfn", "int", lambda v: _mem().slot_of(v)),
    ("memory.GuestMemory.gfn_to_pfn", "gfn", "int", lambda v: _mem().gfn_to_pfn(v)),
    ("memory.GuestMemory.page", "gfn", "int", lambda v: _mem().page(v)),
    ("memory.GuestMemory.read_bytes", "gpa", "int", lambda v: _mem().read_bytes(v, 1)),
    ("memory.GuestMemory.read_bytes", "size", "int", lambda v: _mem().read_bytes(0, v)),
    ("memory.GuestMemory.write_bytes", "gpa", "int", lambda v: _mem().write_bytes(v, b"x")),
    ("memory.GuestMemory.write_bytes", "data", "obj", lambda v: _mem().write_bytes(0, v)),
    ("memory.GuestMemory.read", "gpa", "int", lambda v: _mem().read(v)),
    ("memory.GuestMemory.read", "size", "int", lambda v: _mem().read(0, v)),
    ("memory.GuestMemory.write", "gpa", "int", lambda v: _mem().write(v, 0)),
    ("memory.GuestMemory.write", "value", "int", lambda v: _mem().write(0, v)),
    ("memory.GuestMemory.write", "size", "int", lambda v: _mem().write(0, 0, v)),
    ("memory.GuestMemory.mark_page_dirty", "gfn", "int", lambda v: _mem().mark_page_dirty(v)),
    # -- kvmmu.hw.walk -------------------------------------------------------------------------
    *[
        (f"walk.CpuState[{name}]", name, "int", lambda v, name=name: CpuState(**{name: v}))
        for name in ("cr0", "cr3", "cr4", "efer", "cpl", "rflags", "pkru", "maxphyaddr")
    ],
    ("walk.CpuState[gbpages]", "gbpages", "bool", lambda v: CpuState(gbpages=v)),
    ("walk.cpu_for_mode", "mode", "obj", lambda v: cpu_for_mode(v)),
    *[
        (
            f"walk.cpu_for_mode[{name}]",
            name,
            "int",
            lambda v, n=name: cpu_for_mode(LEVEL4, **{n: v}),
        )
        for name in ("cr3", "cpl", "pkru", "maxphyaddr")
    ],
    *[
        (f"walk.cpu_for_mode[{n}]", n, "bool", lambda v, n=n: cpu_for_mode(LEVEL4, **{n: v}))
        for n in ("wp", "nxe", "pse", "pge", "smep", "smap", "pke", "ac")
    ],
    ("walk.load_cr3", "memory", "obj", lambda v: walk.load_cr3(v, _cpu(), 0)),
    ("walk.load_cr3", "cpu", "obj", lambda v: walk.load_cr3(_mem(), v, 0)),
    ("walk.load_cr3", "cr3", "int", lambda v: walk.load_cr3(_mem(), _cpu(), v)),
    ("walk.reserved_mask", "cpu", "obj", lambda v: walk.reserved_mask(v, 1, False)),
    ("walk.reserved_mask", "level", "int", lambda v: walk.reserved_mask(_cpu(), v, False)),
    ("walk.reserved_mask", "large", "bool", lambda v: walk.reserved_mask(_cpu(), 2, v)),
    ("walk.walk", "memory", "obj", lambda v: walk.walk(v, _cpu(), 0)),
    ("walk.walk", "cpu", "obj", lambda v: walk.walk(_mem(), v, 0)),
    ("walk.walk", "gva", "int", lambda v: walk.walk(_mem(), _cpu(), v)),
    ("walk.walk", "access", "obj", lambda v: walk.walk(_mem(), _cpu(), 0, v)),
    ("walk.walk", "implicit", "bool", lambda v: walk.walk(_mem(), _cpu(), 0, implicit=v)),
    ("walk.walk", "set_ad", "bool", lambda v: walk.walk(_mem(), _cpu(), 0, set_ad=v)),
    ("walk.walk_many", "memory", "obj", lambda v: walk.walk_many(v, _cpu(), [0])),
    ("walk.walk_many", "cpu", "obj", lambda v: walk.walk_many(_mem(), v, [0])),
    ("walk.walk_many", "gvas", "list", lambda v: walk.walk_many(_mem(), _cpu(), v)),
    ("walk.walk_many", "gva", "int", lambda v: walk.walk_many(_mem(), _cpu(), [v])),
    ("walk.walk_many", "access", "obj", lambda v: walk.walk_many(_mem(), _cpu(), [0], v)),
    ("walk.WalkResult.table_gfn", "level", "int", lambda v: _step().table_gfn(v)),
    (
        "walk.update_accessed_dirty",
        "memory",
        "obj",
        lambda v: walk.update_accessed_dirty(v, _step(), False),
    ),
    (
        "walk.update_accessed_dirty",
        "result",
        "obj",
        lambda v: walk.update_accessed_dirty(_mem(), v, False),
    ),
    (
        "walk.update_accessed_dirty",
        "write",
        "bool",
        lambda v: walk.update_accessed_dirty(_mem(), _step(), v),
    ),
    ("walk.WalkResult.gpte", "level", "int", lambda v: _step().gpte(v)),
    ("walk.WalkResult.pt_access", "level", "int", lambda v: _step().pt_access(v)),
    # -- kvmmu.hw.guest ------------------------------------------------------------------------
    ("guest.format_size", "size", "int", lambda v: guest.format_size(v)),
    ("guest.TablePagePool", "gfns", "obj", lambda v: guest.TablePagePool(v)),
    ("guest.TablePagePool.free", "gfn", "int", lambda v: guest.TablePagePool(range(4)).free(v)),
    ("guest.GuestPageTables", "memory", "obj", lambda v: GuestPageTables(v, LEVEL4)),
    ("guest.GuestPageTables", "mode", "obj", lambda v: GuestPageTables(_mem(), v)),
    *[
        (
            f"guest.GuestPageTables[{n}]",
            n,
            "bool",
            lambda v, n=n: GuestPageTables(_mem(), LEVEL4, **{n: v}),
        )
        for n in ("wp", "nxe", "pse", "pge", "smep", "smap", "pke")
    ],
    (
        "guest.GuestPageTables[maxphyaddr]",
        "maxphyaddr",
        "int",
        lambda v: GuestPageTables(_mem(), LEVEL4, maxphyaddr=v),
    ),
    (
        "guest.GuestPageTables[table_gfns]",
        "table_gfns",
        "opt_obj",
        lambda v: GuestPageTables(_mem(), LEVEL4, table_gfns=v),
    ),
    (
        "guest.GuestPageTables[on_write]",
        "on_write",
        "opt_obj",
        lambda v: GuestPageTables(_mem(), LEVEL4, on_write=v),
    ),
    ("guest.GuestPageTables.cpu[cpl]", "cpl", "int", lambda v: _pt().cpu(cpl=v)),
    ("guest.GuestPageTables.cpu[pkru]", "pkru", "int", lambda v: _pt().cpu(pkru=v)),
    ("guest.GuestPageTables.cpu[ac]", "ac", "bool", lambda v: _pt().cpu(ac=v)),
    *[
        (f"guest.GuestPageTables.cpu[{n}]", n, "opt_bool", lambda v, n=n: _pt().cpu(**{n: v}))
        for n in ("wp", "nxe", "pse", "pge", "smep", "smap", "pke")
    ],
    (
        "guest.GuestPageTables.cpu[maxphyaddr]",
        "maxphyaddr",
        "opt_int",
        lambda v: _pt().cpu(maxphyaddr=v),
    ),
    ("guest.GuestPageTables.map", "gva", "int", lambda v: _pt().map(v, 0x1000)),
    ("guest.GuestPageTables.map", "gpa", "int", lambda v: _pt().map(0x1000, v)),
    ("guest.GuestPageTables.map", "size", "int", lambda v: _pt().map(0x1000, 0x1000, v)),
    (
        "guest.GuestPageTables.map[length]",
        "length",
        "opt_int",
        lambda v: _pt().map(0x1000, 0x1000, length=v),
    ),
    ("guest.GuestPageTables.map[pkey]", "pkey", "int", lambda v: _pt().map(0x1000, 0x1000, pkey=v)),
    *[
        (
            f"guest.GuestPageTables.map[{n}]",
            n,
            "bool",
            lambda v, n=n: _pt().map(0x1000, 0x1000, **{n: v}),
        )
        for n in ("writable", "user", "nx", "global_", "accessed", "dirty", "pwt", "pcd")
    ],
    ("guest.GuestPageTables.unmap", "gva", "int", lambda v: _pt().unmap(v)),
    ("guest.GuestPageTables.unmap", "length", "opt_int", lambda v: _pt().unmap(0x40_0000, v)),
    ("guest.GuestPageTables.protect", "gva", "int", lambda v: _pt().protect(v, writable=False)),
    (
        "guest.GuestPageTables.protect",
        "length",
        "opt_int",
        lambda v: _pt().protect(0x40_0000, v, nx=True),
    ),
    *[
        (
            f"guest.GuestPageTables.protect[{n}]",
            n,
            "opt_bool",
            lambda v, n=n: _pt().protect(0x40_0000, **{n: v}),
        )
        for n in ("writable", "user", "nx")
    ],
    ("guest.GuestPageTables.entry", "gva", "int", lambda v: _pt().entry(v, 1)),
    ("guest.GuestPageTables.entry", "level", "int", lambda v: _pt().entry(0x40_0000, v)),
    ("guest.GuestPageTables.set_entry", "gva", "int", lambda v: _pt().set_entry(v, 1, 0)),
    ("guest.GuestPageTables.set_entry", "level", "int", lambda v: _pt().set_entry(0, v, 0)),
    ("guest.GuestPageTables.set_entry", "value", "int", lambda v: _pt().set_entry(0, 1, v)),
    ("guest.GuestPageTables.leaves", "limit", "opt_int", lambda v: list(_pt().leaves(limit=v))),
    ("guest.GuestPageTables.mappings", "limit", "opt_int", lambda v: _pt().mappings(limit=v)),
    ("guest.GuestPageTables.info_mem", "limit", "opt_int", lambda v: _pt().info_mem(limit=v)),
    # -- kvmmu.hw.capture ----------------------------------------------------------------------
    ("capture.list_captures", "data_dir", "opt_path", lambda v: capture.list_captures(v)),
    ("capture.load_capture", "name", "str", lambda v: load_capture(v)),
    ("capture.load_capture", "data_dir", "opt_obj", lambda v: load_capture("x", v)),
    ("capture.parse_info_tlb", "text", "str", lambda v: capture.parse_info_tlb(v)),
    ("capture.parse_info_mem", "text", "str", lambda v: capture.parse_info_mem(v)),
    ("capture.ptdump", "memory", "obj", lambda v: capture.ptdump(v, _cpu())),
    ("capture.ptdump", "cpu", "obj", lambda v: capture.ptdump(_mem(), v)),
    ("capture.ptdump", "limit", "int", lambda v: capture.ptdump(_mem(), _cpu(), limit=v)),
    ("capture.qemu_tlb_fields", "pte", "int", lambda v: capture.qemu_tlb_fields(v, 1)),
    ("capture.qemu_tlb_fields", "level", "int", lambda v: capture.qemu_tlb_fields(1, v)),
    # -- kvmmu.kvm.vcpu ------------------------------------------------------------------------
    ("vcpu.Vm", "memory_size", "int", lambda v: Vm(v)),
    ("vcpu.Vm[memory]", "memory", "opt_obj", lambda v: Vm(memory=v)),
    (
        "vcpu.Vm[n_max_mmu_pages]",
        "n_max_mmu_pages",
        "opt_int",
        lambda v: Vm(MiB, n_max_mmu_pages=v),
    ),
    ("vcpu.Vm[maxphyaddr]", "maxphyaddr", "int", lambda v: Vm(MiB, maxphyaddr=v)),
    ("vcpu.Vm[tdp_levels]", "tdp_levels", "int", lambda v: Vm(MiB, tdp_levels=v)),
    *[
        (f"vcpu.Vm[{n}]", n, "bool", lambda v, n=n: Vm(MiB, **{n: v}))
        for n in ("tdp", "huge_pages", "allow_unsync")
    ],
    ("vcpu.Vm.create_vcpu", "cpu", "opt_obj", lambda v: _vm().create_vcpu(v)),
    ("vcpu.Vm.add_memslot", "base_gfn", "int", lambda v: _vm().add_memslot(v, 1)),
    ("vcpu.Vm.add_memslot", "npages", "int", lambda v: _vm().add_memslot(0x4000, v)),
    ("vcpu.Vm.add_memslot", "flags", "flags", lambda v: _vm().add_memslot(0x4000, 1, v)),
    ("vcpu.Vm.delete_memslot", "slot_id", "int", lambda v: _vm().delete_memslot(v)),
    ("vcpu.Vm.delete_memslot", "zap_all", "bool", lambda v: _vm().delete_memslot(0, zap_all=v)),
    ("vcpu.Vm.move_memslot", "slot_id", "int", lambda v: _vm().move_memslot(v, 0x4000)),
    ("vcpu.Vm.move_memslot", "new_base_gfn", "int", lambda v: _vm().move_memslot(0, v)),
    ("vcpu.Vm.move_memslot", "zap_all", "bool", lambda v: _vm().move_memslot(0, 0x4000, zap_all=v)),
    ("vcpu.Vm.set_memslot_flags", "slot_id", "int", lambda v: _vm().set_memslot_flags(v, 0)),
    ("vcpu.Vm.set_memslot_flags", "flags", "flags", lambda v: _vm().set_memslot_flags(0, v)),
    ("vcpu.Vm.get_dirty_log", "slot_id", "int", lambda v: _vm().get_dirty_log(v)),
    *[
        (
            f"vcpu.Vcpu.set_registers[{n}]",
            n,
            "opt_int",
            lambda v, n=n: _vcpu().set_registers(**{n: v}),
        )
        for n in ("cr0", "cr4", "efer", "cr3")
    ],
    ("vcpu.Vcpu.set_cr3", "cr3", "int", lambda v: _vcpu().set_cr3(v)),
    ("vcpu.Vcpu.set_cpl", "cpl", "int", lambda v: _vcpu().set_cpl(v)),
    ("vcpu.Vcpu.set_ac", "ac", "bool", lambda v: _vcpu().set_ac(v)),
    ("vcpu.Vcpu.set_pkru", "pkru", "int", lambda v: _vcpu().set_pkru(v)),
    ("vcpu.Vcpu.invlpg", "gva", "int", lambda v: _vcpu().invlpg(v)),
    *[
        (f"vcpu.Vcpu.{m}", "gva", "int", lambda v, m=m: getattr(_vcpu(), m)(v))
        for m in ("access", "translate", "read")
    ],
    *[
        (f"vcpu.Vcpu.{m}[kind]", "kind", "obj", lambda v, m=m: getattr(_vcpu(), m)(0x40_0000, v))
        for m in ("access", "translate")
    ],
    *[
        (
            f"vcpu.Vcpu.{m}[cpl]",
            "cpl",
            "opt_int",
            lambda v, m=m: getattr(_vcpu(), m)(0x40_0000, cpl=v),
        )
        for m in ("access", "translate", "read")
    ],
    *[
        (
            f"vcpu.Vcpu.{m}[implicit]",
            "implicit",
            "bool",
            lambda v, m=m: getattr(_vcpu(), m)(0x40_0000, implicit=v),
        )
        for m in ("access", "translate")
    ],
    ("vcpu.Vcpu.read[size]", "size", "int", lambda v: _vcpu().read(0x40_0000, v)),
    ("vcpu.Vcpu.write", "gva", "int", lambda v: _vcpu().write(v, 0)),
    ("vcpu.Vcpu.write", "value", "int", lambda v: _vcpu().write(0x40_0000, v)),
    ("vcpu.Vcpu.write[size]", "size", "int", lambda v: _vcpu().write(0x40_0000, 0, v)),
    ("vcpu.Vcpu.write[cpl]", "cpl", "opt_int", lambda v: _vcpu().write(0x40_0000, 0, cpl=v)),
    # -- kvmmu.kvm: accounting, audit, stats, trace, tdp ---------------------------------------
    ("accounting.check_era", "era", "str", lambda v: accounting.check_era(v)),
    ("accounting.gfns_bytes", "era", "str", lambda v: accounting.gfns_bytes(v, True)),
    ("accounting.gfns_bytes", "direct", "bool", lambda v: accounting.gfns_bytes(ERA, v)),
    ("accounting.page_bytes", "era", "str", lambda v: accounting.page_bytes(v, True)),
    ("accounting.page_bytes", "direct", "bool", lambda v: accounting.page_bytes(ERA, v)),
    (
        "accounting.expected_bytes",
        "n_direct",
        "int",
        lambda v: accounting.expected_bytes(v, 0, ERA),
    ),
    (
        "accounting.expected_bytes",
        "n_indirect",
        "int",
        lambda v: accounting.expected_bytes(0, v, ERA),
    ),
    ("accounting.expected_bytes", "era", "str", lambda v: accounting.expected_bytes(0, 0, v)),
    (
        "accounting.memory_from_counts",
        "n_direct",
        "int",
        lambda v: accounting.memory_from_counts(v, 0),
    ),
    (
        "accounting.memory_from_counts",
        "n_indirect",
        "int",
        lambda v: accounting.memory_from_counts(0, v),
    ),
    ("accounting.live_pages", "source", "obj", lambda v: accounting.live_pages(v)),
    ("accounting.memory_by_era", "source", "obj", lambda v: accounting.memory_by_era(v)),
    ("accounting.memory_of_pages", "pages", "obj", lambda v: accounting.memory_of_pages(v)),
    ("audit.audit", "vm", "obj", lambda v: audit.audit(v)),
    ("audit.audit_report", "vm", "obj", lambda v: audit.audit_report(v)),
    ("audit.audit_violations", "vm", "obj", lambda v: audit.audit_violations(v)),
    ("trace.Tracer.emit", "event", "str", lambda v: trace.Tracer().emit(v)),
    ("tdp.two_dimensional_refs", "guest_levels", "int", lambda v: tdp.two_dimensional_refs(v, 4)),
    ("tdp.two_dimensional_refs", "tdp_levels", "int", lambda v: tdp.two_dimensional_refs(4, v)),
    ("tdp.shadow_refs", "levels", "int", lambda v: tdp.shadow_refs(v)),
    ("tdp.measure_refs", "target", "obj", lambda v: tdp.measure_refs(v, 0)),
    ("tdp.measure_refs", "gva", "int", lambda v: tdp.measure_refs(_vcpu(), v)),
    ("tdp.measure_refs", "kind", "obj", lambda v: tdp.measure_refs(_vcpu(), 0x40_0000, v)),
    ("tdp.walk_cost_table", "measure", "bool", lambda v: tdp.walk_cost_table(measure=v)),
]

# Public callables that take no argument a caller could get wrong.
NO_ARGUMENTS = {
    "memory.HostMemory",
    "walk.WalkResult.table_gpas",
    "walk.WalkResult.entry_gpas",
    "walk.WalkResult.leaf_table_gpa",
    "walk.PageFault.entry_gpas",
    "memory.HostMemory.alloc_page",
    "guest.TablePagePool.alloc",
    "guest.GuestPageTables.table_graph",
    "guest.SelfReference.describe",
    "guest.TableGraph.describe",
    "walk.WalkStep.describe",
    "vcpu.Vcpu.current_roots",
    "vcpu.Vcpu.all_roots",
    "vcpu.Vcpu.reload",
    "vcpu.Vcpu.hardware_cpu",
    "stats.MmuStats.as_series",
    "stats.MmuStats.reset",
    "trace.Tracer",
    "trace.Tracer.recording",
    "trace.Tracer.frame",
    "trace.Tracer.clear",
}

# Records that kvmmu builds and hands out (results, rows, counters); a caller reads them.
RECORDS = {
    "memory.Memslot",
    "memory.MemslotFlag",
    "walk.GeneralProtection",
    "walk.PageFault",
    "walk.WalkResult",
    "walk.WalkStep",
    "guest.GuestMapping",
    "guest.SelfReference",
    "guest.TableGraph",
    "capture.Capture",
    "capture.CaptureView",
    "vcpu.Translation",
    "audit.Violation",
    "stats.MmuStats",
    "x86.ModeSpec",
    *(f"x86.{name}" for name in ("Cr0", "Cr4", "Efer", "Rflags", "Pte", "PfErr", "Acc")),
    "x86.Access",
    "x86.PagingMode",
}

# Called on every access, walk or fault with values the caller above already checked: they
# stay unchecked so that validation happens once, at the API edge (issue 13: keep hot paths
# fast). Each is reached only through an entry of TABLE.
HOT_PATH = {
    "memory.Memslot.contains": "Memslots.find, per gfn lookup",
    "memory.Memslot.gfn_to_pfn": "table_words, per table read of a walk",
    "memory.Memslots.find": "every walk's A/D update and every fault",
    "memory.GuestMemory.table_words": "every level of every walk",
    "walk.walk_unchecked": "the MMU's own walks; walk() and Vcpu.translate check first",
    "vcpu.HostPhysical": "built by Vm",
    "vcpu.HostPhysical.table_words": "every level of every shadow walk",
    "vcpu.Tlb": "built by Vcpu",
    "vcpu.Tlb.lookup": "every access",
    "vcpu.Tlb.insert": "every TLB fill",
    "vcpu.Tlb.invlpg": "Vcpu.invlpg, after its check",
    "vcpu.Tlb.flush": "CR3 loads and memslot changes",
    "vcpu.Vcpu": "built by Vm.create_vcpu",
    "vcpu.Vcpu.flush_tlb_guest": "no arguments: the CR4.PGE flush inside set_registers",
}

# The MMU's own modules: functions the fault path calls with shadow pages, sptes and roles it
# made itself (arch/x86/kvm/mmu/*.c has no argument checks there either). Being optimised and
# restructured by other work; the API edge above (Vm, Vcpu) validates before reaching them.
MMU_INTERNALS = {"mmu", "sync", "fault", "page_track", "spte", "rmap", "role", "page"}

MODULES = {
    "x86": x86,
    "memory": memory,
    "walk": walk,
    "guest": guest,
    "capture": capture,
    "vcpu": importlib.import_module("kvmmu.kvm.vcpu"),
    "accounting": accounting,
    "audit": audit,
    "stats": stats,
    "trace": trace,
    "tdp": tdp,
}


def _covered(name: str) -> bool:
    tabled = {entry[0].split("[")[0] for entry in TABLE}
    return name in tabled or name in NO_ARGUMENTS or name in RECORDS or name in HOT_PATH


def test_every_public_callable_is_in_the_table() -> None:
    """A new public function must be added to TABLE (or classified) to pass."""
    missing = sorted(name for name in public_callables(MODULES) if not _covered(name))
    assert missing == [], f"add these to TABLE in {Path(__file__).name}: {missing}"


def test_every_module_of_the_layers_is_covered_or_named_internal() -> None:
    """Each module of kvmmu.hw and kvmmu.kvm is walked here or listed as an MMU internal."""
    for package in (kvmmu.hw, kvmmu.kvm):
        for info in pkgutil.iter_modules(package.__path__):
            assert info.name in MODULES or info.name in MMU_INTERNALS, info.name


@pytest.mark.parametrize(("arg", "call", "value"), cases(TABLE))
def test_bad_value_is_a_typed_error_naming_the_argument(
    arg: str, call: Callable[[Any], object], value: object
) -> None:
    expect_typed_error(arg, call, value)


# ----------------------------------------------------------------------------------------------
# Damaged captures: a typed error naming the file
# ----------------------------------------------------------------------------------------------

REAL = capture.DATA_DIR / "x86_64-4level"


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A private copy of a real capture, to damage."""
    shutil.copytree(REAL, tmp_path / "cap")
    return tmp_path / "cap"


def _npz(**arrays: Any) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


# what to damage: (file, new contents from the old)
DAMAGES: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "json-not-utf8": ("capture.json", lambda raw: b"\xff\xfe{not utf-8"),
    "json-truncated": ("capture.json", lambda raw: raw[:40]),
    "json-wrong-keys": ("capture.json", lambda raw: b'{"maxphyaddr": 40}'),
    "npz-truncated": ("tables.npz", lambda raw: raw[:100]),
    "npz-wrong-keys": ("tables.npz", lambda raw: _npz(wrong=np.zeros(3))),
    "npz-wrong-shape": ("tables.npz", lambda raw: _npz(gpa=[0x1000], pages=np.zeros((1, 7)))),
    "xz-truncated": ("info-tlb-user.txt.xz", lambda raw: raw[:50]),
    "xz-not-utf8": ("info-tlb-user.txt.xz", lambda raw: lzma.compress(b"\xff\xfe\xfa")),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_capture_names_the_file(copy: Path, damage: str) -> None:
    """Non-UTF-8 or incomplete JSON, a truncated or wrong-keyed tables.npz and a corrupt .xz
    raise CaptureError naming the file, not UnicodeDecodeError/KeyError/BadZipFile/LZMAError."""
    load_capture("cap", copy.parent)  # intact, it loads
    name, change = DAMAGES[damage]
    path = copy / name
    path.write_bytes(change(path.read_bytes()))
    with pytest.raises(CaptureError, match=name.replace(".", r"\.")):
        load_capture("cap", copy.parent)


@pytest.mark.parametrize("name", ["../x86_64-4level", "a/b", "..", ".", "", "/etc", "x\x00"])
def test_capture_names_are_folder_names(name: str) -> None:
    """A name is one folder under the data directory: no ``..``, no separators."""
    with pytest.raises(CaptureError, match="name"):
        load_capture(name, capture.DATA_DIR / "x86_64-4level")
