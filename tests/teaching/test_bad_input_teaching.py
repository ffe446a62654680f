"""Bad input, by class, at every public entry point of the teaching layer (issue 13).

The same rule as ``tests/test_bad_input.py`` for the hardware and KVM layers: a wrong argument
raises a :class:`kvmmu.errors.KvmmuError` subclass whose message names the argument, never a
bare TypeError/AttributeError/KeyError from inside (a checker given the wrong problem, an
unhashable value reaching a cache, ``None`` given to a widget), and is never silently accepted
(``"no"`` for a flag, NaN for a cost, ``rounds=2**200``). One table lists every public callable
of ``kvmmu.teaching``, ``kvmmu.teaching.lessons`` and ``kvmmu.lab`` with the kind of each
argument; the bad values of each kind are ``tests/bad_values.py``'s, shared with the other
layers. A second test introspects the modules so that no public callable is missing.
"""

from __future__ import annotations

import functools
import importlib
import math
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np
import pytest
from bad_values import BAD, Entry, cases, expect_typed_error, public_callables
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from widget_output import controls

import kvmmu.teaching
import kvmmu.teaching.lessons
from kvmmu import lab
from kvmmu.errors import (
    ArgumentError,
    KvmmuError,
    check_choice,
    check_count,
    check_path,
    check_real,
    check_strings,
)
from kvmmu.host.program import HostCapture, load_host_capture
from kvmmu.hw.capture import Capture, load_capture
from kvmmu.hw.guest import GuestPageTables
from kvmmu.hw.memory import GuestMemory
from kvmmu.hw.walk import CpuState
from kvmmu.hw.x86 import PagingMode
from kvmmu.kvm.vcpu import Vcpu, Vm
from kvmmu.teaching import batch, draw, experiments, grading, memo, problems, ui, workloads
from kvmmu.teaching.lessons import l01_guest_page_tables as l01
from kvmmu.teaching.lessons import l02_shadow_paging as l02
from kvmmu.teaching.lessons import l03_mmu_page_role as l03
from kvmmu.teaching.lessons import l04_lazy_gfns as l04
from kvmmu.teaching.lessons import l05_write_protection as l05
from kvmmu.teaching.lessons import l06_unsync as l06
from kvmmu.teaching.lessons import l07_memory_savings as l07
from kvmmu.teaching.lessons import l08_tdp_vs_shadow as l08
from kvmmu.teaching.lessons import l09_lab as l09
from kvmmu.teaching.lessons import l10_beside_kvm as l10

MIB = 1 << 20
GIB = 1 << 30
SEED = "s1234567"

# ----------------------------------------------------------------------------------------------
# Good arguments to hold still while one argument is bad (cached where building takes time;
# a bad call never changes them: every check runs before any work)
# ----------------------------------------------------------------------------------------------


def _guest() -> tuple[GuestMemory, CpuState]:
    memory = GuestMemory(8 * MIB)
    pt = GuestPageTables(memory, PagingMode.LEVEL4)
    pt.map(0x400000, 0x100000, user=True)
    return memory, pt.cpu()


def _mem() -> GuestMemory:
    return _guest()[0]


def _cpu() -> CpuState:
    return _guest()[1]


def _vm() -> Vm:
    return Vm(8 * MIB)


def _vcpu() -> Vcpu:
    return Vm(8 * MIB, tdp=True).create_vcpu()


def _fig() -> Figure:
    return Figure()


def _ax() -> Axes:
    return _fig().add_subplot()


@functools.cache
def _capture() -> Capture:
    return load_capture("x86_64-4level")


@functools.cache
def _host() -> HostCapture:
    return load_host_capture(l10.STORED)


@functools.cache
def _problem(name: str) -> Any:
    return l09.EXERCISES[name][0](SEED)


@functools.cache
def _shadow_problem() -> l02.ShadowFaultProblem:
    return l02.shadow_fault_problem(SEED)


@functools.cache
def _demo_vm() -> Vm:
    return l04.demo_mixed_vm()


@functools.cache
def _writer() -> l05.TableWriter:
    return l05.table_writer()


@functools.cache
def _fix_pt() -> GuestPageTables:
    return l01.fix_guest(SEED)[1]


def _identity_summary(name: str) -> Callable[[Any], object]:
    def call(value: Any) -> object:
        good: dict[str, Any] = {"size": 2 << 20, "page_size": 4096, "host_huge_pages": True}
        return batch.identity_shadow_summary(**(good | {name: value}))

    return call


def _plan() -> batch.Plan:
    return batch.plan_direct(_vcpu(), detail=False)


def _slider() -> widgets.IntSlider:
    return widgets.IntSlider()


def _out() -> widgets.Output:
    return widgets.Output()


def _text() -> str:
    return "x"


def _box(**bad: Any) -> None:
    draw.box(**{"ax": _ax(), "x": 0, "y": 0, "w": 1, "h": 1, "text": "t", "colour": "red"} | bad)


def _arrow(**bad: Any) -> None:
    draw.arrow(**{"ax": _ax(), "x0": 0, "y0": 0, "x1": 1, "y1": 1} | bad)


def _grade(**bad: Any) -> object:
    paths = {"autograder": Path("a.zip"), "submissions": Path("s"), "outdir": Path("o")}
    return grading.grade(**paths | bad)


_L4 = PagingMode.LEVEL4
_MIX: dict[str, Any] = {"tlb_misses": 100, "pt_writes": 1, "cr3_loads": 1}
MODE_WORKLOAD = tuple(_MIX)
GIVEN_KIND = {
    "level": "answer",
    "quadrant": "answer",
    "access": "letters",
    "direct": "bit",
    "has_4_byte_gpte": "bit",
    "cr0_wp": "bit",
}
"""The kind of answer each role field takes (l03.ROLE_FIELDS)."""
SETUP_FLAGS = ("cr0_wp", "tdp", "large_guest_pages", "host_huge_pages")


# ----------------------------------------------------------------------------------------------
# The table: (callable's qualified name, argument, kind, call with the bad value)
# ----------------------------------------------------------------------------------------------


def _each(name: str, kind: str, args: tuple[str, ...], call: Callable[..., object]) -> list[Entry]:
    """One row per keyword argument of ``args``, all of one kind: ``call(**{arg: bad})``."""
    return [(f"{name}[{a}]", a, kind, lambda v, a=a: call(**{a: v})) for a in args]


TABLE: list[Entry] = [
    # -- kvmmu.teaching.problems ---------------------------------------------------------------
    ("problems.fail", "message", "str", lambda v: problems.fail(v)),
    ("problems.ok", "message", "str", lambda v: problems.ok(v)),
    ("problems.seeded_rng", "seed", "seed", lambda v: problems.seeded_rng(v)),
    ("problems.parse_int", "name", "str", lambda v: problems.parse_int(v, 1)),
    ("problems.parse_int", "value", "answer", lambda v: problems.parse_int("value", v)),
    # -- kvmmu.teaching.memo -------------------------------------------------------------------
    ("memo.pure", "maxsize", "int", lambda v: memo.pure(v)),
    ("memo.pure", "check", "opt_callable", lambda v: memo.pure(check=v)),
    # -- kvmmu.teaching.draw -------------------------------------------------------------------
    ("draw.acc_text", "acc", "flags", lambda v: draw.acc_text(v)),
    ("draw.size_text", "nbytes", "signed_int", lambda v: draw.size_text(v)),
    ("draw.style", "fig", "obj", lambda v: draw.style(v)),
    ("draw.new_figure", "figsize", "obj", lambda v: draw.new_figure(v)),
    ("draw.new_figure", "figsize", "real", lambda v: draw.new_figure((v, 1.0))),
    ("draw.new_figure", "dpi", "real", lambda v: draw.new_figure((1.0, 1.0), v)),
    ("draw.new_figure", "layout", "opt_choice", lambda v: draw.new_figure((1.0, 1.0), 100, v)),
    ("draw.bar_axes", "fig", "obj", lambda v: draw.bar_axes(v)),
    ("draw.box", "ax", "obj", lambda v: draw.box(v, 0, 0, 1, 1, "t", "red")),
    *_each("draw.box", "coord", ("x", "y"), _box),
    *_each("draw.box", "real", ("w", "h"), _box),
    *_each("draw.box", "str", ("text", "colour"), _box),
    ("draw.arrow", "ax", "obj", lambda v: draw.arrow(v, 0, 0, 1, 1)),
    *_each("draw.arrow", "coord", ("x0", "y0", "x1", "y1"), _arrow),
    ("draw.arrow", "label", "str", lambda v: draw.arrow(_ax(), 0, 0, 1, 1, v)),
    ("draw.arrow", "dashed", "bool", lambda v: draw.arrow(_ax(), 0, 0, 1, 1, dashed=v)),
    ("draw.legend", "ax", "obj", lambda v: draw.legend(v)),
    ("draw.legend", "loc", "choice", lambda v: draw.legend(_ax(), v)),
    ("draw.role_frame", "pages", "obj", lambda v: draw.role_frame(v)),
    ("draw.tidy_trace", "frame", "obj", lambda v: draw.tidy_trace(v)),
    ("draw.check_frame", "frame", "obj", lambda v: draw.check_frame("frame", v)),
    # -- kvmmu.teaching.ui ---------------------------------------------------------------------
    ("ui.figure_png", "fig", "obj", lambda v: ui.figure_png(v)),
    ("ui.KeptFigure", "fig", "obj", lambda v: ui.KeptFigure(v, [])),
    ("ui.KeptFigure", "changing", "controls", lambda v: ui.KeptFigure(_fig(), v)),
    ("ui.show", "fig", "obj", lambda v: ui.show(v)),
    ("ui.show_figure", "fig", "obj", lambda v: ui.show_figure(v)),
    ("ui.render_into", "out", "obj", lambda v: ui.render_into(v, _text)),
    ("ui.render_into", "produce", "callable", lambda v: ui.render_into(_out(), v)),
    ("ui.panel", "controls", "controls", lambda v: ui.panel(v, _out())),
    ("ui.panel", "out", "obj", lambda v: ui.panel([_slider()], v)),
    ("ui.wire", "controls", "controls", lambda v: ui.wire(v, _text)),
    ("ui.wire", "produce", "callable", lambda v: ui.wire([_slider()], v)),
    ("ui.wire", "memo", "int", lambda v: ui.wire([_slider()], _text, memo=v)),
    # -- kvmmu.teaching.workloads --------------------------------------------------------------
    ("workloads.tables_needed", "size", "int", lambda v: workloads.tables_needed(v, _L4, 4096)),
    ("workloads.tables_needed", "mode", "obj", lambda v: workloads.tables_needed(GIB, v, 4096)),
    ("workloads.tables_needed", "page_size", "int", lambda v: workloads.tables_needed(GIB, _L4, v)),
    (
        "workloads.fast_identity_tables",
        "vm",
        "obj",
        lambda v: workloads.fast_identity_tables(v, 2 * MIB, 4096),
    ),
    (
        "workloads.fast_identity_tables",
        "size",
        "int",
        lambda v: workloads.fast_identity_tables(_vm(), v, 4096),
    ),
    (
        "workloads.fast_identity_tables",
        "page_size",
        "int",
        lambda v: workloads.fast_identity_tables(_vm(), 2 * MIB, v),
    ),
    ("workloads.identity_guest", "size", "int", lambda v: workloads.identity_guest(v)),
    ("workloads.identity_guest", "mode", "obj", lambda v: workloads.identity_guest(MIB, v)),
    *_each(
        "workloads.identity_guest",
        "bool",
        ("tdp", "huge_pages", "allow_unsync", "writable", "dirty"),
        lambda **k: workloads.identity_guest(MIB, **k),
    ),
    (
        "workloads.identity_guest",
        "page_size",
        "int",
        lambda v: workloads.identity_guest(MIB, page_size=v),
    ),
    (
        "workloads.identity_guest",
        "n_max_mmu_pages",
        "opt_int",
        lambda v: workloads.identity_guest(MIB, n_max_mmu_pages=v),
    ),
    ("workloads.full_touch", "size", "int", lambda v: workloads.full_touch(v)),
    ("workloads.full_touch", "mode", "obj", lambda v: workloads.full_touch(MIB, v)),
    ("workloads.full_touch", "tdp", "bool", lambda v: workloads.full_touch(MIB, tdp=v)),
    ("workloads.full_touch", "page_size", "int", lambda v: workloads.full_touch(MIB, page_size=v)),
    (
        "workloads.full_touch",
        "huge_pages",
        "bool",
        lambda v: workloads.full_touch(MIB, huge_pages=v),
    ),
    ("workloads.full_touch", "kind", "obj", lambda v: workloads.full_touch(MIB, kind=v)),
    ("workloads.many_processes", "n", "int", lambda v: workloads.many_processes(v, 4)),
    ("workloads.many_processes", "pages_each", "int", lambda v: workloads.many_processes(2, v)),
    *_each(
        "workloads.many_processes",
        "int",
        ("kernel_size", "memory_size", "rounds", "seed"),
        lambda **k: workloads.many_processes(2, 4, **k),
    ),
    *_each(
        "workloads.many_processes",
        "bool",
        ("tdp", "root_cache"),
        lambda **k: workloads.many_processes(2, 4, **k),
    ),
    ("workloads.pte_writer", "rate", "rate", lambda v: workloads.pte_writer(v)),
    *_each(
        "workloads.pte_writer",
        "int",
        ("ops", "user_pages", "memory_size", "seed"),
        lambda **k: workloads.pte_writer(0.5, **k),
    ),
    *_each(
        "workloads.pte_writer",
        "bool",
        ("tdp", "allow_unsync"),
        lambda **k: workloads.pte_writer(0.5, **k),
    ),
    ("workloads.drop_prev_roots", "vcpu", "obj", lambda v: workloads.drop_prev_roots(v)),
    # -- kvmmu.teaching.experiments ------------------------------------------------------------
    *[
        row
        for f in ("batch_summary", "expected_pages", "formula_table")
        for row in (
            (
                f"experiments.{f}",
                "scenario",
                "choice",
                lambda v, f=f: getattr(experiments, f)(v, GIB),
            ),
            (
                f"experiments.{f}",
                "size",
                "int",
                lambda v, f=f: getattr(experiments, f)("tdp-4k", v),
            ),
        )
    ],
    ("experiments.savings_by_size", "scenario", "choice", lambda v: experiments.savings_by_size(v)),
    (
        "experiments.savings_by_size",
        "sizes",
        "runs",
        lambda v: experiments.savings_by_size("tdp-4k", v),
    ),
    ("experiments.savings_scenarios", "size", "int", lambda v: experiments.savings_scenarios(v)),
    (
        "experiments.savings_scenarios",
        "processes",
        "int",
        lambda v: experiments.savings_scenarios(processes=v),
    ),
    ("experiments.pte_write_exits", "rates", "runs", lambda v: experiments.pte_write_exits(v)),
    ("experiments.pte_write_exits", "ops", "int", lambda v: experiments.pte_write_exits(ops=v)),
    ("experiments.pte_write_exits", "seed", "int", lambda v: experiments.pte_write_exits(seed=v)),
    (
        "experiments.tdp_vs_shadow_memory",
        "size",
        "int",
        lambda v: experiments.tdp_vs_shadow_memory(v),
    ),
    # -- kvmmu.teaching.batch ------------------------------------------------------------------
    ("batch.summary_of_mmu", "vcpu_or_mmu", "obj", lambda v: batch.summary_of_mmu(v)),
    ("batch.iter_leaves", "vcpu_or_mmu", "obj", lambda v: list(batch.iter_leaves(v))),
    ("batch.plan_direct", "vcpu", "obj", lambda v: batch.plan_direct(v)),
    ("batch.plan_direct", "max_level", "int", lambda v: batch.plan_direct(_vcpu(), max_level=v)),
    ("batch.plan_direct", "detail", "bool", lambda v: batch.plan_direct(_vcpu(), detail=v)),
    ("batch.build_direct", "vcpu", "obj", lambda v: batch.build_direct(v)),
    ("batch.build_direct", "max_level", "int", lambda v: batch.build_direct(_vcpu(), max_level=v)),
    ("batch.plan_shadow", "vcpu", "obj", lambda v: batch.plan_shadow(v)),
    ("batch.plan_shadow", "detail", "bool", lambda v: batch.plan_shadow(_vcpu(), detail=v)),
    ("batch.build_shadow", "vcpu", "obj", lambda v: batch.build_shadow(v)),
    ("batch.plan_disallowed", "plan", "obj", lambda v: batch.plan_disallowed(v)),
    ("batch.identity_shadow_summary", "size", "int", _identity_summary("size")),
    ("batch.identity_shadow_summary", "page_size", "choice", _identity_summary("page_size")),
    (
        "batch.identity_shadow_summary",
        "host_huge_pages",
        "bool",
        _identity_summary("host_huge_pages"),
    ),
    ("batch.Plan.kept", "level", "int", lambda v: _plan().kept(v)),
    # -- kvmmu.teaching.grading and kvmmu.lab --------------------------------------------------
    ("grading.lab_problems", "student_id", "student_id", lambda v: grading.lab_problems(v)),
    ("grading.lab_solutions", "student_id", "student_id", lambda v: grading.lab_solutions(v)),
    ("grading.grade_part", "question", "choice", lambda v: grading.grade_part(v, "gfn", SEED, 1)),
    ("grading.grade_part", "part", "choice", lambda v: grading.grade_part("gfn", v, SEED, 1)),
    (
        "grading.grade_part",
        "student_id",
        "student_id",
        lambda v: grading.grade_part("gfn", "gfn", v, 1),
    ),
    ("grading.require", "question", "choice", lambda v: grading.require(v, "gfn", SEED, {})),
    ("grading.require", "part", "choice", lambda v: grading.require("gfn", v, SEED, {})),
    ("grading.require", "answers", "answer_map", lambda v: grading.require("gfn", "gfn", SEED, v)),
    ("grading.assign", "outdir", "path", lambda v: grading.assign(v)),
    ("grading.assign", "master", "path", lambda v: grading.assign(Path("out"), v)),
    *_each("grading.grade", "path", ("autograder", "submissions", "outdir"), _grade),
    ("grading.main", "argv", "opt_strings", lambda v: grading.main(v)),
    ("lab.lab_command", "argv", "strings", lambda v: lab.lab_command(v, root=False, cwd=Path())),
    ("lab.lab_command", "root", "bool", lambda v: lab.lab_command([], root=v, cwd=Path())),
    ("lab.lab_command", "cwd", "path", lambda v: lab.lab_command([], root=False, cwd=v)),
    ("lab.main", "argv", "opt_strings", lambda v: lab.main(v)),
    # -- lesson 1 ------------------------------------------------------------------------------
    ("l01.parse_address", "text", "address", lambda v: l01.parse_address(v)),
    ("l01.parse_access", "kind", "choice", lambda v: l01.parse_access(v)),
    *[
        row
        for f in ("walk_text", "walk_tree_figure")
        for row in (
            (f"l01.{f}", "memory", "obj", lambda v, f=f: getattr(l01, f)(v, _cpu(), 0x400000)),
            (f"l01.{f}", "cpu", "obj", lambda v, f=f: getattr(l01, f)(_mem(), v, 0x400000)),
            (f"l01.{f}", "address", "address", lambda v, f=f: getattr(l01, f)(*_guest(), v)),
            (f"l01.{f}", "access", "choice", lambda v, f=f: getattr(l01, f)(*_guest(), 0, v)),
            (f"l01.{f}", "cpl", "int", lambda v, f=f: getattr(l01, f)(*_guest(), 0, cpl=v)),
        )
    ],
    ("l01.address_split", "address", "address", lambda v: l01.address_split(v)),
    ("l01.decode_error_code", "code", "int", lambda v: l01.decode_error_code(v)),
    ("l01.make_walk_widget", "memory", "obj", lambda v: l01.make_walk_widget(v, _cpu())),
    ("l01.make_walk_widget", "cpu", "obj", lambda v: l01.make_walk_widget(_mem(), v)),
    ("l01.make_walk_widget", "address", "str", lambda v: l01.make_walk_widget(*_guest(), v)),
    (
        "l01.make_walk_widget",
        "access",
        "choice",
        lambda v: l01.make_walk_widget(*_guest(), access=v),
    ),
    ("l01.make_walk_widget", "cpl", "int", lambda v: l01.make_walk_widget(*_guest(), cpl=v)),
    ("l01.make_walk_widget", "draw", "bool", lambda v: l01.make_walk_widget(*_guest(), draw=v)),
    ("l01.region_of", "gvas", "obj", lambda v: l01.region_of(v)),
    ("l01.address_space_layout", "leaves", "obj", lambda v: l01.address_space_layout(v)),
    ("l01.kpti_comparison", "capture", "obj", lambda v: l01.kpti_comparison(v)),
    ("l01.walk_problem", "seed", "seed", lambda v: l01.walk_problem(v)),
    ("l01.check_walk", "problem", "obj", lambda v: l01.check_walk(v, 0)),
    ("l01.check_walk", "answer", "answer", lambda v: l01.check_walk(_problem("walk"), v)),
    ("l01.fix_guest", "seed", "seed", lambda v: l01.fix_guest(v)),
    ("l01.fix_problem", "seed", "seed", lambda v: l01.fix_problem(v)),
    ("l01.check_fix", "problem", "obj", lambda v: l01.check_fix(v, (1, 0))),
    ("l01.check_fix", "answer", "answer_seq", lambda v: l01.check_fix(_problem("fix"), v)),
    ("l01.fix_answer", "problem", "obj", lambda v: l01.fix_answer(v, _fix_pt())),
    ("l01.fix_answer", "pt", "obj", lambda v: l01.fix_answer(_problem("fix"), v)),
    # -- lesson 2 ------------------------------------------------------------------------------
    *[
        row
        for f in ("run_program", "shadow_step_view")
        for row in (
            (f"l02.{f}", "steps", "int", lambda v, f=f: getattr(l02, f)(v)),
            (f"l02.{f}", "program", "program", lambda v, f=f: getattr(l02, f)(0, v)),
        )
    ],
    ("l02.shadow_tables_figure", "vm", "obj", lambda v: l02.shadow_tables_figure(v, _vcpu())),
    ("l02.shadow_tables_figure", "vcpu", "obj", lambda v: l02.shadow_tables_figure(_vm(), v)),
    (
        "l02.make_shadow_steps_widget",
        "program",
        "program",
        lambda v: l02.make_shadow_steps_widget(v),
    ),
    (
        "l02.make_shadow_steps_widget",
        "steps",
        "int",
        lambda v: l02.make_shadow_steps_widget(steps=v),
    ),
    ("l02.shadow_fault_problem", "seed", "seed", lambda v: l02.shadow_fault_problem(v)),
    ("l02.check_shadow_fault", "problem", "obj", lambda v: l02.check_shadow_fault(v, 1)),
    (
        "l02.check_shadow_fault",
        "answer",
        "answer",
        lambda v: l02.check_shadow_fault(_shadow_problem(), v),
    ),
    # -- lesson 3 ------------------------------------------------------------------------------
    ("l03.role_scenario", "name", "choice", lambda v: l03.role_scenario(v)),
    *[
        row
        for f in ("setup_shadow_pages", "role_setup_view")
        for row in (
            (f"l03.{f}", "mode", "choice", lambda v, f=f: getattr(l03, f)(v)),
            *_each(f"l03.{f}", "bool", SETUP_FLAGS, getattr(l03, f)),
        )
    ],
    ("l03.role_setup_view", "previous", "opt_obj", lambda v: l03.role_setup_view(previous=v)),
    ("l03.make_role_widget", "mode", "choice", lambda v: l03.make_role_widget(v)),
    *_each("l03.make_role_widget", "bool", SETUP_FLAGS, l03.make_role_widget),
    ("l03.capture_shadow_census", "capture", "obj", lambda v: l03.capture_shadow_census(v)),
    (
        "l03.capture_shadow_census",
        "kernel_per_region",
        "int",
        lambda v: l03.capture_shadow_census(_capture(), kernel_per_region=v),
    ),
    ("l03.role_problem", "seed", "seed", lambda v: l03.role_problem(v)),
    ("l03.role_field_right", "problem", "obj", lambda v: l03.role_field_right(v, "level", 1)),
    (
        "l03.role_field_right",
        "name",
        "choice",
        lambda v: l03.role_field_right(_problem("role"), v, 1),
    ),
    *[
        (
            f"l03.role_field_right[{f}]",
            "given",
            kind,
            lambda v, f=f: l03.role_field_right(_problem("role"), f, v),
        )
        for f, kind in GIVEN_KIND.items()
    ],
    ("l03.check_role", "problem", "obj", lambda v: l03.check_role(v, {})),
    ("l03.check_role", "answer", "answer_map", lambda v: l03.check_role(_problem("role"), v)),
    # -- lesson 4 ------------------------------------------------------------------------------
    ("l04.gfn_table", "sp", "obj", lambda v: l04.gfn_table(v)),
    (
        "l04.gfn_table",
        "indices",
        "indices",
        lambda v: l04.gfn_table(next(iter(_demo_vm().mmu.active)), v),
    ),
    ("l04.gfn_audit", "vm", "obj", lambda v: l04.gfn_audit(v)),
    ("l04.gfns_savings", "vm", "obj", lambda v: l04.gfns_savings(v)),
    ("l04.gfn_lookup", "vm", "obj", lambda v: l04.gfn_lookup(v, 0, 0)),
    ("l04.gfn_lookup", "serial", "int", lambda v: l04.gfn_lookup(_demo_vm(), v, 0)),
    ("l04.gfn_lookup", "index", "int", lambda v: l04.gfn_lookup(_demo_vm(), 1, v)),
    ("l04.make_gfn_widget", "vm", "opt_obj", lambda v: l04.make_gfn_widget(v)),
    ("l04.make_gfn_widget", "serial", "opt_int", lambda v: l04.make_gfn_widget(_demo_vm(), v)),
    ("l04.make_gfn_widget", "index", "int", lambda v: l04.make_gfn_widget(_demo_vm(), index=v)),
    ("l04.gfn_problem", "seed", "seed", lambda v: l04.gfn_problem(v)),
    ("l04.check_gfn", "problem", "obj", lambda v: l04.check_gfn(v, 1)),
    ("l04.check_gfn", "answer", "answer", lambda v: l04.check_gfn(_problem("gfn"), v)),
    ("l04.saving_problem", "seed", "seed", lambda v: l04.saving_problem(v)),
    ("l04.check_saving", "problem", "obj", lambda v: l04.check_saving(v, 1)),
    ("l04.check_saving", "answer", "answer", lambda v: l04.check_saving(_problem("saving"), v)),
    # -- lesson 5 ------------------------------------------------------------------------------
    ("l05.TableWriter.touch", "i", "int", lambda v: _writer().touch(v)),
    ("l05.TableWriter.write_pte", "i", "int", lambda v: _writer().write_pte(v)),
    *_each(
        "l05.TableWriter.write_pte",
        "bool",
        ("accessed", "clear"),
        lambda **k: _writer().write_pte(0, **k),
    ),
    ("l05.TableWriter.write_pde", "k", "int", lambda v: _writer().write_pde(v)),
    ("l05.table_writer", "pages", "int", lambda v: l05.table_writer(v)),
    *_each("l05.table_writer", "bool", ("unsync", "update_pte"), l05.table_writer),
    ("l05.table_write_counters", "pte_writes", "int", lambda v: l05.table_write_counters(v)),
    ("l05.table_write_counters", "pde_writes", "int", lambda v: l05.table_write_counters(1, v)),
    *_each(
        "l05.table_write_counters",
        "bool",
        ("accessed", "clear", "unsync"),
        lambda **k: l05.table_write_counters(1, **k),
    ),
    ("l05.table_write_workload", "pte_rate", "int", lambda v: l05.table_write_workload(v)),
    ("l05.table_write_workload", "pde_rate", "int", lambda v: l05.table_write_workload(1, v)),
    (
        "l05.table_write_workload",
        "accesses",
        "int",
        lambda v: l05.table_write_workload(1, accesses=v),
    ),
    ("l05.table_write_workload", "unsync", "bool", lambda v: l05.table_write_workload(1, unsync=v)),
    *[
        row
        for f in ("table_write_view", "make_table_write_widget")
        for row in (
            *_each(f"l05.{f}", "int", ("pte_rate", "pde_rate"), getattr(l05, f)),
            (f"l05.{f}", "unsync", "bool", lambda v, f=f: getattr(l05, f)(unsync=v)),
        )
    ],
    ("l05.counters_problem", "seed", "seed", lambda v: l05.counters_problem(v)),
    ("l05.counter_right", "problem", "obj", lambda v: l05.counter_right(v, "pf_emulate", 1)),
    (
        "l05.counter_right",
        "name",
        "choice",
        lambda v: l05.counter_right(_problem("counters"), v, 1),
    ),
    (
        "l05.counter_right",
        "given",
        "answer",
        lambda v: l05.counter_right(_problem("counters"), "pf_emulate", v),
    ),
    ("l05.check_counters", "problem", "obj", lambda v: l05.check_counters(v, {})),
    (
        "l05.check_counters",
        "answer",
        "answer_map",
        lambda v: l05.check_counters(_problem("counters"), v),
    ),
    # -- lesson 6 ------------------------------------------------------------------------------
    *[
        (f"l06.{f}", "actions", "strings", lambda v, f=f: getattr(l06, f)(v))
        for f in ("sync_run", "sync_view", "make_sync_widget")
    ],
    ("l06.sync_problem", "seed", "seed", lambda v: l06.sync_problem(v)),
    *[
        row
        for f in ("sync_accesses_right", "check_sync")
        for row in (
            (f"l06.{f}", "problem", "obj", lambda v, f=f: getattr(l06, f)(v, [])),
            (
                f"l06.{f}",
                "answer",
                "answer_seq",
                lambda v, f=f: getattr(l06, f)(_problem("sync"), v),
            ),
        )
    ],
    # -- lesson 7 ------------------------------------------------------------------------------
    ("l07.savings_figure", "frame", "obj", lambda v: l07.savings_figure(v)),
    *[
        row
        for f in ("savings_view", "make_savings_widget")
        for row in (
            (f"l07.{f}", "size_gib", "int", lambda v, f=f: getattr(l07, f)(v)),
            *_each(f"l07.{f}", "choice", ("mode", "page_size"), getattr(l07, f)),
        )
    ],
    # -- lesson 8 ------------------------------------------------------------------------------
    ("l08.walk_cost_figure", "table", "obj", lambda v: l08.walk_cost_figure(v)),
    ("l08.pte_exit_figure", "frame", "obj", lambda v: l08.pte_exit_figure(v)),
    *[
        row
        for f in ("mode_costs", "mode_winner", "mode_view")
        for row in _each(
            f"l08.{f}", "real", MODE_WORKLOAD, lambda f=f, **k: getattr(l08, f)(**_MIX | k)
        )
    ],
    *_each(
        "l08.mode_costs",
        "real",
        ("ref_cycles", "exit_cycles"),
        lambda **k: l08.mode_costs(**_MIX | k),
    ),
    *_each(
        "l08.mode_costs",
        "int",
        ("guest_levels", "tdp_levels"),
        lambda **k: l08.mode_costs(**_MIX | k),
    ),
    ("l08.mode_winner", "model", "choice", lambda v: l08.mode_winner(**_MIX, **{str(v): 1})),
    *_each("l08.make_mode_widget", "int", MODE_WORKLOAD, l08.make_mode_widget),
    ("l08.mode_problem", "seed", "seed", lambda v: l08.mode_problem(v)),
    ("l08.check_mode", "problem", "obj", lambda v: l08.check_mode(v, "tdp")),
    ("l08.check_mode", "answer", "answer", lambda v: l08.check_mode(_problem("mode"), v)),
    # -- lesson 9 ------------------------------------------------------------------------------
    ("l09.student_seed", "student_id", "student_id", lambda v: l09.student_seed(v)),
    ("l09.describe", "name", "choice", lambda v: l09.describe(v, SEED)),
    ("l09.describe", "student_id", "student_id", lambda v: l09.describe("gfn", v)),
    ("l09.hint", "name", "choice", lambda v: l09.hint(v, SEED, 1)),
    ("l09.hint", "student_id", "student_id", lambda v: l09.hint("gfn", v, 1)),
    # -- lesson 10 -----------------------------------------------------------------------------
    *[
        (f"l10.{f}", "capture", "obj", lambda v, f=f: getattr(l10, f)(v))
        for f in ("host_table", "behaviour_summary", "counter_matrix", "differences", "replay")
    ],
    ("l10.program_table", "name", "choice", lambda v: l10.program_table(v)),
    ("l10.live_or_stored", "name", "choice", lambda v: l10.live_or_stored(v)),
    ("l10.check_spurious", "counter", "str", lambda v: l10.check_spurious(v, 1, _host())),
    ("l10.check_spurious", "count", "int", lambda v: l10.check_spurious("pf_spurious", v, _host())),
    ("l10.check_spurious", "capture", "opt_obj", lambda v: l10.check_spurious("pf_spurious", 1, v)),
    ("l10.what_the_kernel_adds", "capture", "obj", lambda v: l10.what_the_kernel_adds(v)),
    *_each(
        "l10.what_the_kernel_adds",
        "strings",
        ("programs", "counters"),
        lambda **k: l10.what_the_kernel_adds(_host(), **k),
    ),
]

# Public callables that take no argument a caller could get wrong.
NO_ARGUMENTS = {
    "batch.BatchSummary.frame",
    "batch.BatchSummary.memory",
    "batch.Plan.summary",
    "experiments.walk_costs",
    "l01.fault_examples",
    "l03.role_layout_table",
    "l04.demo_mixed_vm",
    "l04.gfn_readers",
    "l05.TableWriter.counters",
    "l05.TableWriter.leaf_table_gfn",
    "l10.known_differences",
    "lab.running_as_root",
    "memo.clear",
    "ui.KeptFigure.png",
}

# Records kvmmu builds and hands out (results, problems, verdicts, program steps); a caller
# reads them, and the functions that take them back check their type.
RECORDS = {
    "batch.BatchSummary",
    "batch.Plan",  # built by plan_direct / plan_shadow
    "l01.FixProblem",
    "l01.WalkProblem",
    "l02.ProgramRun",
    "l02.ProgramStep",  # a program's steps are checked by run_program, their values by Vcpu
    "l02.ShadowFaultProblem",
    "l03.RoleProblem",
    "l04.GfnProblem",
    "l04.SavingProblem",
    "l05.CountersProblem",
    "l05.TableWriter",  # built by table_writer
    "l06.SyncProblem",
    "l08.ModeProblem",
    "l09.Description",
    "problems.Check",
    "problems.Problem",
    "workloads.ProcessesResult",
    "workloads.PteWriterResult",
    "workloads.TouchResult",
}

# Called in the batch path's inner loop with values it computed itself; reached only through
# build_direct / build_shadow, which check first.
HOT_PATH = {"batch.ascending_faults": "once per level-1 page of a build"}

# Where the answer is the student's: any value is a verdict (a failed Check with a hint), not
# an error; tested below with answers of every bad kind.
VERDICT_ANSWERS = {"grading.grade_part": "answer", "l09.hint": "answer"}


def _modules() -> dict[str, Any]:
    """kvmmu.teaching's modules, its lessons (by their short name, ``l01``...), and kvmmu.lab."""
    found: dict[str, Any] = {"lab": lab}
    for package in (kvmmu.teaching, kvmmu.teaching.lessons):
        for info in pkgutil.iter_modules(package.__path__):
            if info.ispkg:
                continue
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            found[info.name.split("_")[0] if package is kvmmu.teaching.lessons else info.name] = (
                module
            )
    return found


def _covered(name: str) -> bool:
    tabled = {entry[0].split("[")[0] for entry in TABLE}
    return name in tabled or name in NO_ARGUMENTS or name in RECORDS or name in HOT_PATH


def test_every_public_teaching_callable_is_in_the_table() -> None:
    """A new public function, class or method of the teaching layer must be added to TABLE (or
    classified) to pass."""
    missing = sorted(name for name in public_callables(_modules()) if not _covered(name))
    assert missing == [], f"add these to TABLE in {Path(__file__).name}: {missing}"


def test_the_table_names_only_real_callables() -> None:
    """No stale row: every name in the table and the classifications still exists."""
    public = public_callables(_modules())
    named = {entry[0].split("[")[0] for entry in TABLE} | NO_ARGUMENTS | RECORDS | set(HOT_PATH)
    assert sorted(named - public) == []


@pytest.mark.parametrize(("arg", "call", "value"), cases(TABLE))
def test_bad_value_is_a_typed_error_naming_the_argument(
    arg: str, call: Callable[[Any], object], value: object
) -> None:
    expect_typed_error(arg, call, value)


def test_the_given_kinds_cover_every_role_field() -> None:
    assert set(GIVEN_KIND) == set(l03.ROLE_FIELDS)


# ----------------------------------------------------------------------------------------------
# Checkers given another exercise's problem, graders given malformed answers
# ----------------------------------------------------------------------------------------------

_CHECKERS: dict[str, Callable[[Any], object]] = {
    **{name: (lambda p, c=checker: c(p, 0)) for name, (_, checker) in l09.EXERCISES.items()},
    "shadow_fault": lambda p: l02.check_shadow_fault(p, 0),
    "role_field_right": lambda p: l03.role_field_right(p, "level", 1),
    "counter_right": lambda p: l05.counter_right(p, "pf_emulate", 1),
    "sync_accesses_right": lambda p: l06.sync_accesses_right(p, []),
    "fix_answer": lambda p: l01.fix_answer(p, _fix_pt()),
}
_OWN = {
    "shadow_fault": "",
    "role_field_right": "role",
    "counter_right": "counters",
    "sync_accesses_right": "sync",
    "fix_answer": "fix",
}


@pytest.mark.parametrize("checker", list(_CHECKERS))
@pytest.mark.parametrize("other", list(l09.EXERCISES))
def test_a_checker_refuses_another_exercises_problem(checker: str, other: str) -> None:
    """The wrong problem type is an ExerciseError naming ``problem``, not an AttributeError."""
    if _OWN.get(checker, checker) == other:
        return  # its own problem: checked by the lesson's tests
    with pytest.raises(problems.ExerciseError, match="problem"):
        _CHECKERS[checker](_problem(other))


_ANSWERS = [v for kind in ("answer", "answer_map", "answer_seq") for v in BAD[kind]]


@pytest.mark.parametrize("name", list(l09.EXERCISES))
def test_a_malformed_answer_is_a_verdict_for_the_student(name: str) -> None:
    """``hint`` and ``grade_part`` take a student's answer as it is: anything malformed is a
    failed Check with a hint, never an exception that would stop the notebook or the grader."""
    parts = [part for part, _ in grading.PARTS[name]]
    for answer in _ANSWERS:
        assert not l09.hint(name, SEED, answer).passed
        assert not any(grading.grade_part(name, part, SEED, answer).passed for part in parts)


# ----------------------------------------------------------------------------------------------
# Limits, caches and the validators' good side
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "limit"),
    [
        (lambda: workloads.many_processes(2, 4, rounds=2**200), workloads.COUNT_LIMIT),
        (lambda: workloads.pte_writer(0.5, ops=2**200), workloads.COUNT_LIMIT),
        (lambda: workloads.full_touch(64 * GIB), workloads.FAULT_PATH_LIMIT),
        (lambda: workloads.identity_guest(64 * GIB), workloads.MAP_LIMIT),
        (lambda: experiments.batch_summary("tdp-4k", 2**200), experiments.MAX_SIZE),
        (lambda: l05.table_write_workload(1, accesses=10**9), l05.ACCESS_LIMIT),
        (lambda: l06.sync_run(["edit"] * 10**4), l06.ACTION_LIMIT),
        (lambda: ui.wire([_slider()], _text, memo=2**40), ui.MEMO_LIMIT),
    ],
)
def test_huge_sizes_are_refused_with_the_limit(call: Callable[[], object], limit: int) -> None:
    """A size or count far too large is refused at once, and the message gives the limit (and
    does not print a 61-digit number)."""
    with pytest.raises(KvmmuError) as info:
        call()
    assert str(limit) in str(info.value)
    assert len(str(info.value)) < 200


def test_a_cached_function_checks_before_the_cache() -> None:
    """``pure(check=...)``: bad arguments, hashable or not, get the check's typed error and
    neither reach the cache nor run the body; good ones are computed once."""
    calls: list[object] = []

    @memo.pure(check=lambda n: check_count("n", n, maximum=9, error=ArgumentError))
    def double(n: int) -> int:
        calls.append(n)
        return 2 * n

    assert double(2) == double(2) == 4
    for bad in ([1], {"a": 1}, True, -1, 10, np.array([1])):
        with pytest.raises(ArgumentError, match="n"):
            double(bad)  # type: ignore[arg-type]
    assert calls == [2]


def test_the_validators_accept_what_the_notebooks_pass() -> None:
    """numpy scalars as numbers, str or Path as a path, tuples as lists, enum members as
    choices; the value is returned as checked."""
    assert check_real("x", np.float64(0.5), minimum=0, maximum=1) == 0.5
    assert check_real("x", np.int64(3)) == 3.0
    assert check_count("n", 7, maximum=7) == 7
    assert check_choice("mode", PagingMode.PAE, tuple(PagingMode)) is PagingMode.PAE
    assert check_choice("level", 2, (1, 2, 3)) == 2
    assert check_path("p", "a/b") == check_path("p", Path("a/b")) == Path("a/b")
    assert check_strings("argv", ("--x",)) == ["--x"]
    assert draw.size_text(np.int64(3 << 20)) == draw.size_text(3 << 20) == "3.00 MiB"
    assert draw.size_text(-2048) == "-2.0 KiB"
    for bad in (math.nan, np.float64(math.inf), True, np.bool_(True)):
        with pytest.raises(ArgumentError, match="x"):
            check_real("x", bad)
    with pytest.raises(ArgumentError, match="1, 2, 3"):
        check_choice("level", True, (1, 2, 3))  # True == 1, but is not a level


def test_the_widgets_offer_the_choices_their_checks_accept() -> None:
    """A widget's controls and its argument checks list the same choices and ranges."""
    _, kind, level = controls(l01.make_walk_widget(*_guest()))
    assert (tuple(kind.options), tuple(level.options)) == (l01.WIDGET_ACCESSES, l01.WIDGET_CPLS)
    assert tuple(controls(l03.make_role_widget())[0].options) == l03.WIDGET_MODES
    size, paging, pages = controls(l07.make_savings_widget())
    got = (size.max, tuple(paging.options), tuple(pages.options))
    assert got == (l07.WIDGET_SIZE_LIMIT_GIB, l07.MODES, l07.PAGE_SIZES)
    tlb, writes, cr3 = controls(l08.make_mode_widget())
    assert (tlb.max, writes.max, cr3.max) == l08.MODE_LIMITS
    pte, pde, _ = controls(l05.make_table_write_widget())
    assert (pte.max, pde.max) == (100, 20)
