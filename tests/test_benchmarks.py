"""The benchmarks run and print what they promise; ``benchmarks/timing.py`` computes right.

Speed is never asserted here (the machine is shared): each benchmark runs in its ``--quick``
mode in a subprocess, as a reader runs it, and its output must hold the tables and goal lines
with figures that parse. The timing module's statistics are checked on fake cases whose
durations come from a fake clock, so every median, range and ratio is known exactly.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import astuple
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import timing  # noqa: E402  (the benchmarks' own module, imported as the scripts import it)

SPREAD = r"(\d[\d,]*\.\d+) \((\d[\d,]*\.\d+)-(\d[\d,]*\.\d+)\)"  # median (min-max)


# -- timing.py on a fake clock ------------------------------------------------------------------


class FakeClock:
    """Nanoseconds that move only when a fake case says it ran for so long."""

    def __init__(self) -> None:
        self.now = 0
        self.log: list[str] = []

    def __call__(self) -> int:
        return self.now

    def case(self, name: str, durations: list[int], ops: int = 1) -> timing.Case:
        """A case whose k-th run (warm-up first) lasts ``durations[k]`` ns."""
        runs = iter(durations)

        def run() -> None:
            self.log.append(name)
            self.now += next(runs)

        return timing.Case.plain(name, run, ops)


def test_median_and_range_per_case_and_the_warmup_round_is_dropped() -> None:
    clock = FakeClock()
    cases = [
        clock.case("a", [999, 10, 30, 20]),  # warm-up 999, then 10, 30, 20 ns
        clock.case("b", [999, 40, 40, 100], ops=2),  # per op: 20, 20, 50
    ]
    res = timing.measure(cases, 3, timer=clock)
    assert res.samples["a"] == pytest.approx([10e-9, 30e-9, 20e-9])
    assert astuple(res.spread("a")) == pytest.approx((20e-9, 10e-9, 30e-9))
    assert astuple(res.spread("b")) == pytest.approx((20e-9, 20e-9, 50e-9))


def test_order_rotates_from_round_to_round() -> None:
    clock = FakeClock()
    cases = [clock.case(n, [1] * 4) for n in "xyz"]
    timing.measure(cases, 3, timer=clock)  # warm-up is round -1: it starts at z
    assert "".join(clock.log) == "zxy" + "xyz" + "yzx" + "zxy"


def test_ratio_is_the_median_of_per_round_ratios_not_the_ratio_of_medians() -> None:
    clock = FakeClock()
    cases = [clock.case("num", [0, 10, 60, 30]), clock.case("den", [0, 10, 20, 10])]
    res = timing.measure(cases, 3, timer=clock)
    assert astuple(res.ratio("num", "den")) == pytest.approx((3.0, 1.0, 3.0))  # ratios 1, 3, 3
    assert res.ratio_of_medians("num", "den") == pytest.approx(3.0)  # 30 / 10
    cases = [clock.case("num", [0, 10, 40, 90]), clock.case("den", [0, 10, 10, 90])]
    res = timing.measure(cases, 3, timer=clock)
    assert res.ratio("num", "den").median == pytest.approx(1.0)  # per round: 1, 4, 1
    assert res.ratio_of_medians("num", "den") == pytest.approx(4.0)  # 40 / 10


def test_prepare_is_untimed_and_a_failed_check_stops_the_benchmark() -> None:
    clock = FakeClock()
    prepared: list[int] = []

    def prepare() -> timing.Trial:
        clock.now += 1000  # slow preparation: not in the figure
        prepared.append(clock.now)
        return timing.Trial(lambda: setattr(clock, "now", clock.now + 5))

    res = timing.measure([timing.Case("p", prepare)], 2, timer=clock)
    assert res.samples["p"] == pytest.approx([5e-9, 5e-9]) and len(prepared) == 3
    did = []

    def bad_check() -> None:
        timing.expect(bool(did), "the run to record itself")

    with pytest.raises(timing.BenchError, match="the run to record itself"):
        timing.measure([timing.Case.plain("q", lambda: None, 1, bad_check)], 1, timer=clock)


def test_bad_arguments_say_what_to_fix() -> None:
    case = timing.Case.plain("a", lambda: None)
    with pytest.raises(timing.BenchError, match="rounds=0"):
        timing.measure([case], 0)
    with pytest.raises(timing.BenchError, match="clock='sun'"):
        timing.measure([case], 1, clock="sun")
    with pytest.raises(timing.BenchError, match="differ"):
        timing.measure([case, case], 1)
    with pytest.raises(timing.BenchError, match="at least one"):
        timing.Spread.of([])


def test_formatting_of_spreads_goal_lines_and_tables() -> None:
    spread = timing.Spread(1.5, 1.25, 2.0)
    assert spread.format() == "1.50 (1.25-2.00)"
    assert spread.scaled(1e3).format(0) == "1500 (1250-2000)"
    assert timing.goal_line("f / w", 5.0, 6, "walks") == "goal: f / w <= 6 walks: 5.00 walks, met"
    assert timing.goal_line("t", 1.3, 1.2, "x", "x").endswith("1.30 x (x), NOT met")
    assert timing.table(("a", "b"), [(1, 2)]).splitlines() == [
        "| a | b |",
        "| --- | ---: |",
        "| 1 | 2 |",
    ]


def test_real_clocks_time_real_work() -> None:
    # no bound on the time: only that both clocks see a run that does something
    work = timing.Case.plain("sum", lambda: sum(range(20000)), 1)
    for clock in timing.CLOCKS:
        res = timing.measure([work], 2, clock=clock)
        assert res.clock == clock and all(s > 0 for s in res.samples["sum"])


# -- every benchmark, --quick, as a reader runs it ----------------------------------------------


def run_bench(script: str, *args: str, timeout: int = 600) -> str:
    """The output of ``python benchmarks/SCRIPT --quick ARGS``; it must exit 0."""
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--quick", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def figures(line: str) -> list[tuple[float, float, float]]:
    """Every ``median (min-max)`` on ``line``, each in order low <= median <= high."""
    found = [tuple(float(x.replace(",", "")) for x in m) for m in re.findall(SPREAD, line)]
    for med, low, high in found:
        assert low <= med <= high, line
    return found  # type: ignore[return-value]


def goal(output: str, name: str) -> float:
    """The value on the goal line for ``name``; the line must give a verdict."""
    pattern = rf"^goal: {re.escape(name)} <= [\d.]+ \S+: ([\d.]+) \S+.*, (met|NOT met)$"
    match = re.search(pattern, output, re.MULTILINE)
    assert match, f"no goal line for {name!r} in:\n{output}"
    return float(match.group(1))


def row(output: str, label: str) -> str:
    """The table row that starts with ``label``."""
    rows = [line for line in output.splitlines() if line.startswith(f"| {label} |")]
    assert len(rows) == 1, f"no single row {label!r} in:\n{output}"
    return rows[0]


def test_bench_walk_quick_prints_both_tables_and_the_goal() -> None:
    out = run_bench("bench_walk.py")
    assert "CPU time" in out and "median (min-max)" in out.splitlines()[0]
    for page in ("4 KiB", "2 MiB", "1 GiB"):
        assert len(figures(row(out, page))) == 5  # three times, two ratios
    assert len(figures(row(out, "5-level"))) == 1
    assert goal(out, "walk_unchecked / reference, 4-level 4 KiB") > 0


def test_bench_mmu_quick_prints_every_operation_ratios_goals_and_batch() -> None:
    out = run_bench("bench_mmu.py")
    for label in (
        "guest walk (4-level, 4 KiB)",
        "shadow page fault (4-level, 4 KiB)",
        "TDP page fault (4-level guest, 4 KiB)",
        "access, TLB miss (shadow walk, no fault)",
        "access, TLB hit, 4 KiB entry",
        "access, TLB hit, 2 MiB entry",
        "access, TLB hit, 1 GiB entry",
        "CR3 switch, root cache",
        "CR3 switch, no root cache",
        "sync_page on CR3 load, per page",
        "TDP, 4 KiB leaves: count only, no tables built",
        "the shadow fault's 3 walks alone",
    ):
        assert len(figures(row(out, label))) == 1, label
    for name in ("shadow fault / walk", "TLB-miss access / walk", "TDP fault / shadow fault"):
        assert goal(out, name) > 0
        assert len(figures(row(out, name))) == 1
    # how the shadow fault divides: its own walks plus the rest make up the whole, in walks
    parts = [
        row(out, label)
        for label in ("its 3 walks alone / walk", "the rest of the shadow fault / walk")
    ]
    medians = [float(part.split("|")[2]) for part in parts]
    assert all(len(figures(part)) == 1 for part in parts)
    assert sum(medians) == pytest.approx(float(row(out, "shadow fault / walk").split("|")[2]), 0.02)
    assert "0.00 s" not in out


def test_bench_faultin_quick_prints_one_table_with_cost_per_mib_and_the_goal() -> None:
    out = run_bench("bench_faultin.py")
    for mib in (4, 8, 16):
        line = row(out, f"{mib} MiB")
        assert f"| {mib * 256:,} |" in line  # one fault per 4 KiB page
        assert len(figures(line)) == 6  # CPU, wall, per MiB, per fault, two RSS
    assert re.search(r"^cost per MiB, 16 MiB / 4 MiB: [\d.]+x", out, re.MULTILINE)
    assert goal(out, "1 GiB fault-in, CPU time") > 0
    assert "estimated from 16 MiB" in out  # a quick run says its 1 GiB figure is an estimate


def test_bench_widgets_quick_times_one_move_per_widget_and_gives_the_goal() -> None:
    out = run_bench("bench_widgets.py")
    for widget in ("l01 walk", "l02 steps", "l03 role", "l04 gfn", "l05 table writes"):
        assert any(line.startswith(f"| {widget} |") for line in out.splitlines()), widget
    rows = [line for line in out.splitlines() if line.startswith("| l0")]
    assert len(rows) >= 9 and all(len(figures(line)) == 2 for line in rows)
    assert goal(out, "slowest widget update, median") > 0
    assert re.search(r"^over 100 ms \(median\): ", out, re.MULTILINE)


def test_bench_notebooks_quick_runs_a_notebook_and_nbval_over_it() -> None:
    out = run_bench("bench_notebooks.py")
    assert len(figures(row(out, "00_welcome.ipynb"))) == 1
    assert goal(out, "slowest notebook, top to bottom") > 0
    assert goal(out, "strict nbval over 1 notebooks") > 0
    # where nbval's time went: every part a figure, the kernel's start and the cells not nothing
    parts = re.search(r"^nbval's last run, ([\d.]+) s wall: (.+)$", out, re.MULTILINE)
    assert parts, out
    seconds = dict(re.findall(r"([a-z][a-z ,()]+?) (-?[\d.]+) s", parts.group(2)))
    assert set(seconds) == {
        "pytest start, collection and report",
        "kernel starts",
        "first cells (the imports)",
        "other cells",
        "kernel stops",
    }
    assert float(seconds["kernel starts"]) > 0 and float(seconds["first cells (the imports)"]) > 0
    assert sum(map(float, seconds.values())) == pytest.approx(float(parts.group(1)), abs=0.05)


def test_bench_host_quick_compares_kvm_and_kvmmu_or_says_why_not() -> None:
    out = run_bench("bench_host.py")
    if out.startswith("skipped: "):  # no usable /dev/kvm here: the reason is the output
        assert len(out.strip()) > len("skipped: ")
        return
    for machine in ("host KVM", "kvmmu"):
        assert re.fullmatch(r"\| .+ \| [\d,]+ \| [\d,]+ \| [\d,]+ \|", row(out, machine))
    assert re.search(r"^KVM / kvmmu: [\d.]+x median of per-round ratios", out, re.MULTILINE)


def test_bench_mmu_fault_walks_case_makes_the_three_walks_and_nothing_else() -> None:
    """The walks-alone row: a faulting shadow walk, a guest walk that sets A, a shadow walk
    that lands, per page; no fault handled, and its check refuses a run that did otherwise."""
    import bench_mmu

    case = bench_mmu.fault_walks_case(4)
    trial = case.prepare()
    trial.run()
    trial.check()  # the walks it claims, the A bits set, no fault counted
    trial = case.prepare()
    with pytest.raises(timing.BenchError, match="expected the walks"):
        trial.check()  # not run: no walks made


def test_bench_mmu_checks_catch_a_run_that_did_not_do_what_its_row_says() -> None:
    import bench_mmu

    from kvmmu.teaching.workloads import identity_guest

    _, vcpu, _ = identity_guest(4 << 20)
    vcpu.access(0x1000)  # faulted in: a second read is a TLB hit, no fault
    trial = bench_mmu.checked(vcpu, bench_mmu.reads(vcpu, [0x1000]), {"pf_fixed": 1})
    trial.run()
    with pytest.raises(timing.BenchError, match=r"stats.pf_fixed to grow by 1, it grew by 0"):
        trial.check()
    trial = bench_mmu.checked(vcpu, bench_mmu.reads(vcpu, [0x2000]), {"tlb_hits": 1}, ("pf_fixed",))
    trial.run()  # a fresh page: a miss and a fault
    with pytest.raises(timing.BenchError, match="tlb_hits to grow by 1"):
        trial.check()
