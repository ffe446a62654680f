"""The experiments of notebooks 7 (memory saved by the 2010 change) and 8 (TDP against shadow).

No kernel counterpart: pure functions that run workloads or batch builds and return pandas
DataFrames. Every number comes from the simulation (the fault path, or the batch path that the
tests prove equal to it); where a closed form exists it is computed independently beside it, and
a ``match`` column says whether the two agree.

Scenarios (``SCENARIOS``, from ``kvmmu/data/workloads/scenarios.csv``) name a guest that maps all
its memory at gva = gpa and touches it:

* ``tdp-4k``: TDP, host memory in 4 KiB pages, so every TDP leaf is 4 KiB: direct pages only;
* ``tdp-huge``: TDP, host memory in huge pages: 2 MiB or 1 GiB TDP leaves;
* ``shadow-4k``: shadow paging, guest tables with 4 KiB pages: one indirect page per guest table;
* ``shadow-2m``: shadow paging, guest 2 MiB pages on huge host pages: 2 MiB sptes, except where a
  guest table sits inside a 2 MiB page (then a direct page of 4 KiB sptes below it).
"""

from __future__ import annotations

import pandas as pd

from kvmmu.errors import KvmmuError, check_choice, check_count, check_real
from kvmmu.kvm.accounting import ERAS, expected_bytes, memory_by_era, memory_from_counts
from kvmmu.kvm.tdp import walk_cost_table
from kvmmu.kvm.vcpu import Vm
from kvmmu.reference import scenario as scenario_spec
from kvmmu.reference import scenarios
from kvmmu.teaching.batch import BatchSummary, plan_direct, plan_shadow
from kvmmu.teaching.memo import pure
from kvmmu.teaching.workloads import fast_identity_tables, many_processes, pte_writer

SCENARIOS: tuple[str, ...] = tuple(scenarios().index)
GIB = 1 << 30
MIB = 1 << 20


class ExperimentError(KvmmuError, ValueError):
    """Experiment arguments that cannot run; the message says what to change."""


def _cell(frame: pd.DataFrame, row: str, column: str) -> int:
    return int(frame[column].loc[row])


def _check_scenario(scenario: object) -> str:
    return check_choice("scenario", scenario, SCENARIOS, ExperimentError)


MAX_SIZE = 256 * GIB
"""The largest guest these experiments build (the batch path's tables take seconds there)."""
MAX_RUNS = 64
"""The most sizes, rates or processes one experiment runs."""


def _check_size(size: object, name: str = "size") -> int:
    check_count(name, size, minimum=1, maximum=MAX_SIZE, error=ExperimentError)
    assert isinstance(size, int)
    if size % (2 * MIB):
        raise ExperimentError(f"{name} must be a positive multiple of 2 MiB, got {size!r}")
    return size


def _check_runs(name: str, values: object) -> tuple[object, ...]:
    """A tuple or list of at most :data:`MAX_RUNS` values, one per run."""
    if not isinstance(values, tuple | list) or not 1 <= len(values) <= MAX_RUNS:
        raise ExperimentError(
            f"{name} must be a tuple or list of 1..{MAX_RUNS} values, one per run; got "
            f"{type(values).__name__} {str(values)[:40]}"
        )
    return tuple(values)


def _check_scenario_size(scenario: object, size: object) -> None:
    """What :func:`batch_summary` accepts, checked before its cache is consulted."""
    _check_scenario(scenario)
    _check_size(size)


@pure(maxsize=512, check=_check_scenario_size)
def batch_summary(scenario: str, size: int) -> BatchSummary:
    """Counts of the shadow pages ``scenario`` builds in a guest of ``size`` bytes (batch path).

    Cached (:func:`kvmmu.teaching.memo.pure`): a widget's slider that comes back to a size, or
    another experiment at the same size, does not rebuild the guest's tables. No kernel
    counterpart.
    """
    budget = 1 << 22
    spec = scenario_spec(scenario)
    vm = Vm(size, tdp=spec.tdp, huge_pages=spec.host_huge_pages, n_max_mmu_pages=budget)
    if spec.tdp:
        return plan_direct(vm.create_vcpu(), detail=False).summary()
    vcpu = fast_identity_tables(vm, size, spec.guest_page_size)
    return plan_shadow(vcpu, detail=False).summary()


def expected_pages(scenario: str, size: int) -> tuple[int, int]:
    """Closed form (direct pages, indirect pages) for ``scenario`` at ``size``; a check.

    No kernel counterpart. With 4-level tables: a level-1 page per 2 MiB, a level-2 page per
    1 GiB, one level-3 page per 512 GiB and one root. ``tdp-huge`` maps with 1 GiB leaves where
    a whole aligned GiB fits, else 2 MiB ones. ``shadow-2m`` adds one direct page per 2 MiB
    that holds guest tables (they sit at the top of memory: 2 + one per GiB of them).
    """
    _check_scenario(scenario)
    _check_size(size)
    l1 = size // (2 * MIB)
    l2 = -(-size // GIB)
    l3 = -(-size // (512 * GIB))
    if scenario == "tdp-4k":
        return l1 + l2 + l3 + 1, 0
    if scenario == "tdp-huge":
        partial = 1 if size % GIB else 0  # only the last GiB needs a level-2 page
        return partial + l3 + 1, 0
    if scenario == "shadow-4k":
        return 0, l1 + l2 + l3 + 1
    tables = 2 + l2
    return -(-tables // 512), l2 + l3 + 1


def savings_by_size(
    scenario: str = "tdp-4k", sizes: tuple[int, ...] = (GIB, 4 * GIB, 16 * GIB, 64 * GIB)
) -> pd.DataFrame:
    """Notebook 7: pages and kernel bytes by era as the guest grows, batch path and formula.

    No kernel counterpart. One row per size: ``pages`` (batch) and ``pages (formula)``, bytes
    for each era from the batch counts, ``saved by 2010`` and its closed form, and ``match``.
    """
    _check_scenario(scenario)
    for size in _check_runs("sizes", sizes):
        _check_size(size, "sizes")
    rows = []
    for size in sizes:
        summary = batch_summary(scenario, size)
        n_direct, n_indirect = expected_pages(scenario, size)
        mem = summary.memory()
        row: dict[str, object] = {
            "size GiB": size / GIB,
            "pages": summary.n_pages,
            "pages (formula)": n_direct + n_indirect,
            "direct pages": summary.n_direct,
            "indirect pages": summary.n_indirect,
        }
        for era in ERAS:
            row[f"{era} bytes"] = _cell(mem, era, "total bytes")
        saved = _cell(mem, "2010 seed", "saved vs pre-2010")
        row["saved by 2010"] = saved
        row["saved (formula)"] = expected_bytes(n_direct, n_indirect, "pre-2010") - (
            expected_bytes(n_direct, n_indirect, "2010 seed")
        )
        row["match"] = row["pages"] == row["pages (formula)"] and saved == row["saved (formula)"]
        rows.append(row)
    return pd.DataFrame(rows).set_index("size GiB")


def savings_scenarios(size: int = 64 * MIB, *, processes: int = 4) -> pd.DataFrame:
    """Notebook 7: kernel memory by era for each scenario at one size, plus many processes.

    No kernel counterpart. The four identity-map scenarios come from the batch path; "many
    processes" runs the fault path (:func:`kvmmu.teaching.workloads.many_processes`, ``processes``
    address spaces of 16 user pages each). Rows (scenario, era).
    """
    _check_size(size)
    check_count("processes", processes, minimum=1, maximum=MAX_RUNS, error=ExperimentError)
    frames = []
    for scenario in SCENARIOS:
        frame = batch_summary(scenario, size).memory()
        frames.append(frame.assign(scenario=scenario))
    result = many_processes(processes, 16)
    frames.append(memory_by_era(result.vm).assign(scenario=f"{processes} processes"))
    out = pd.concat(frames).reset_index().set_index(["scenario", "era"])
    return out


def formula_table(scenario: str, size: int) -> pd.DataFrame:
    """The by-era table from the closed form alone (:func:`expected_pages`). No kernel
    counterpart."""
    n_direct, n_indirect = expected_pages(scenario, size)
    return memory_from_counts(n_direct, n_indirect)


# ------------------------------------------------------------------------------------------
# notebook 8: TDP against shadow paging
# ------------------------------------------------------------------------------------------


def walk_costs() -> pd.DataFrame:
    """Notebook 8: TLB-miss references, formula against simulation
    (:func:`kvmmu.kvm.tdp.walk_cost_table`). No kernel counterpart."""
    return walk_cost_table(measure=True)


PTE_CONFIGS: tuple[tuple[str, bool, bool], ...] = (
    ("shadow, unsync", False, True),
    ("shadow, no unsync", False, False),
    ("TDP", True, True),
)


def pte_write_exits(
    rates: tuple[float, ...] = (0.0, 0.1, 0.3), *, ops: int = 150, seed: int = 0
) -> pd.DataFrame:
    """Notebook 8: exits caused by a guest that rewrites its PTEs at each rate.

    No kernel counterpart. For each rate and each of shadow paging with unsync pages, shadow
    paging without them (every PTE store emulated) and TDP, runs
    :func:`kvmmu.teaching.workloads.pte_writer` and reports the exits by cause and per 1000
    operations.
    """
    for rate in _check_runs("rates", rates):
        check_real("rates", rate, minimum=0, maximum=1, error=ExperimentError)
    check_count("ops", ops, minimum=1, maximum=100_000, error=ExperimentError)
    check_count("seed", seed, error=ExperimentError)
    rows = []
    for rate in rates:
        for name, tdp, unsync in PTE_CONFIGS:
            r = pte_writer(rate, ops=ops, tdp=tdp, allow_unsync=unsync, seed=seed)
            rows.append(
                {
                    "rate": rate,
                    "paging": name,
                    "pte writes": r.pte_writes,
                    "exits on pte writes": r.exits_pte_writes,
                    "invlpg exits": r.exits_invlpg,
                    "other exits": r.exits_other,
                    "emulated": int(r.stats["pf_emulate"]),
                    "exits per 1000 ops": round(1000 * r.exits / r.ops, 1),
                }
            )
    return pd.DataFrame(rows).set_index(["rate", "paging"])


def tdp_vs_shadow_memory(size: int = GIB) -> pd.DataFrame:
    """Notebook 8: shadow pages and kernel bytes today for each scenario at ``size``.

    No kernel counterpart. Batch path; the ``bytes today`` column uses today's allocation.
    """
    _check_size(size)
    rows = []
    for scenario in SCENARIOS:
        summary = batch_summary(scenario, size)
        mem = summary.memory()
        rows.append(
            {
                "scenario": scenario,
                "pages": summary.n_pages,
                "direct pages": summary.n_direct,
                "indirect pages": summary.n_indirect,
                "leaf sptes": sum(summary.leaves.values()),
                "bytes today": _cell(mem, "today", "total bytes"),
            }
        )
    return pd.DataFrame(rows).set_index("scenario")
