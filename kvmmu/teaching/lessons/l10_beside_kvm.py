"""Lesson 10 (``notebooks/10_beside_kvm.ipynb``): kvmmu beside your kernel's KVM.

The same guest programs (``kvmmu.host.program.PROGRAMS``) ran on a real KVM with shadow paging
and on kvmmu; ``kvmmu/data/kvm-captures/`` keeps that run, so the lesson reads the same on a
machine without ``/dev/kvm``. The functions here turn a capture into the lesson's tables and replay
kvmmu today against the stored real run. No kernel counterpart: views over
:mod:`kvmmu.host.program`.
"""

from __future__ import annotations

import pandas as pd

from kvmmu.errors import check_choice, check_count, check_instance, check_str, check_strings
from kvmmu.host.kvm import kvm_usable
from kvmmu.host.program import (
    COUNTERS,
    KERNEL_ONLY,
    KNOWN_DIFFERENCES,
    PROGRAMS,
    Comparison,
    HostCapture,
    compare,
    load_host_capture,
    program,
    run_kvmmu,
)

BEHAVIOUR = ("values", "faults", "accessed_dirty", "dirty_logs")
STORED = "kvm_pvm"
SAME_NAME_COUNTERS = tuple(k for k, v in COUNTERS.items() if v == k)
"""Counters kvmmu keeps under the kernel's own name (what :func:`what_the_kernel_adds` shows)."""


def _check_capture(capture: object) -> HostCapture:
    hint = "a HostCapture (kvmmu.host.program.load_host_capture)"
    return check_instance("capture", capture, HostCapture, hint)


def _check_program(name: object) -> str:
    return check_choice("name", name, tuple(PROGRAMS))


def host_table(capture: HostCapture) -> pd.DataFrame:
    """The host the capture came from, one fact per row. No kernel counterpart."""
    _check_capture(capture)
    facts = dict(capture.host)
    params = facts.pop("parameters", {})
    rows = [(k, str(v)) for k, v in facts.items()]
    rows += [
        (f"{module}.{name}", value)
        for module, values in sorted(params.items())
        for name, value in sorted(values.items())
    ]
    return pd.DataFrame(rows, columns=["fact", "value"]).set_index("fact")


def behaviour_summary(capture: HostCapture) -> pd.DataFrame:
    """Per program: how many values, faults, A/D bits and dirty logs agreed, of how many.

    No kernel counterpart.
    """
    _check_capture(capture)
    rows: dict[str, dict[str, object]] = {}
    for name, c in capture.comparisons.items():
        row: dict[str, object] = {
            t: f"{int(getattr(c, t)['equal'].sum())}/{len(getattr(c, t))}" for t in BEHAVIOUR
        }
        row["all equal"] = c.behaviour_equal
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def counter_matrix(capture: HostCapture) -> pd.DataFrame:
    """Counters (rows) by program (columns) as ``kvmmu / kvm``, kvmmu-less counters left out.

    No kernel counterpart.
    """
    _check_capture(capture)
    columns = {}
    for name, c in capture.comparisons.items():
        kept = c.counters[c.counters["why"] != KERNEL_ONLY]
        columns[name] = [f"{m} / {k}" for m, k in zip(kept["kvmmu"], kept["kvm"], strict=True)]
        index = kept.index
    return pd.DataFrame(columns, index=index)


def differences(capture: HostCapture) -> pd.DataFrame:
    """Every counter that differs, where, by how much, and the kernel function behind it.

    No kernel counterpart.
    """
    _check_capture(capture)
    rows = []
    for name, c in capture.comparisons.items():
        for counter, row in c.counters.iterrows():
            if row["equal"] or row["why"] == KERNEL_ONLY:
                continue
            func, _, why = str(row["why"]).partition(": ")
            rows.append((counter, name, int(row["kvmmu"]), int(row["kvm"]), func, why))
    columns = ["counter", "program", "kvmmu", "kvm", "kernel function", "why"]
    return pd.DataFrame(rows, columns=columns)


def program_table(name: str) -> pd.DataFrame:
    """The operations of one standard program, one per row. No kernel counterpart."""
    _check_program(name)
    ops = program(name).ops
    return pd.DataFrame({"op": [repr(op) for op in ops]}).rename_axis("index")


def check_spurious(counter: str, count: int, capture: HostCapture | None = None) -> str:
    """The exercise: in ``table_edits`` some faults fixed nothing (their leaf spte was already
    right); which kernel counter took them, and how many? Returns a verdict.
    No kernel counterpart."""
    check_str("counter", counter)
    check_count("count", count)
    if capture is not None:
        _check_capture(capture)
    c = (capture or load_host_capture(STORED)).comparisons["table_edits"].counters
    expected = int(c["kvm"].to_dict()["pf_spurious"])
    if counter != "pf_spurious":
        return f"not {counter}: look for the counter KVM bumps on RET_PF_SPURIOUS"
    if count != expected:
        return (
            f"pf_spurious is right, but not {count}: pf_taken counts every fault, and "
            "pf_fixed only those that changed an spte"
        )
    return f"right: {expected} faults found their leaf spte already in place (RET_PF_SPURIOUS)"


SETTINGS = {
    "today's kernel": {},
    "no prefetch": {"prefetch": False},
    "2010 pte update": {"update_pte": True},
}
"""kvmmu's switches for what the kernel does beyond the 2010 design (``Vm`` options)."""


def what_the_kernel_adds(
    capture: HostCapture,
    programs: tuple[str, ...] = ("huge_page", "pte_edits", "faults"),
    counters: tuple[str, ...] = ("pf_fixed", "pages_4k"),
) -> pd.DataFrame:
    """``counters`` of ``programs`` on the stored KVM and on kvmmu with each of
    :data:`SETTINGS`: prefetch and the zap of a written spte are what make them equal.

    No kernel counterpart (``direct_pte_prefetch``, ``kvm_mmu_track_write`` are behind it).
    """
    _check_capture(capture)
    for name in check_strings("programs", programs, limit=len(capture.comparisons)):
        check_choice("programs", name, tuple(capture.comparisons))
    for counter in check_strings("counters", counters, limit=len(SAME_NAME_COUNTERS)):
        check_choice("counters", counter, SAME_NAME_COUNTERS)
    rows = {}
    for name in programs:
        saved = capture.comparisons[name].counters["kvm"]
        for counter in counters:
            row: dict[str, int] = {"kvm": int(saved[counter])}
            for label, options in SETTINGS.items():
                row[label] = int(run_kvmmu(program(name), **options).counters[counter])
            rows[(name, counter)] = row
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis(["program", "counter"])


def known_differences() -> pd.DataFrame:
    """``KNOWN_DIFFERENCES`` as a table. No kernel counterpart."""
    rows = [(d.counter, d.function, ", ".join(d.programs), d.why) for d in KNOWN_DIFFERENCES]
    return pd.DataFrame(rows, columns=["counter", "kernel function", "programs", "why"])


def replay(capture: HostCapture) -> pd.DataFrame:
    """Run kvmmu now on every program of ``capture`` and check it against the stored KVM run.

    ``behaviour`` is True when today's values, faults and A/D bits equal the real run's;
    ``counters`` when every counter without a known difference does. No kernel counterpart.
    """
    _check_capture(capture)
    rows = {}
    for name, saved in capture.comparisons.items():
        fresh = run_kvmmu(program(name))
        values = {op: f"{v:#x}" for op, v in fresh.values.items()}
        faults = {op: f"cr2={a:#x} ec={e:#x}" for op, (a, e) in fresh.faults.items()}
        ad = {(s, f"{g:#x}"): v for (s, g), v in fresh.accessed_dirty.items()}
        behaviour = (
            saved.values["kvm"].to_dict() == values
            and saved.faults["kvm"].to_dict() == faults
            and saved.accessed_dirty["kvm"].to_dict() == ad
        )
        same = []
        for counter, row in saved.counters.iterrows():
            if row["why"] == "":
                ours = _kvmmu_name(str(counter))
                same.append(int(fresh.counters[ours]) == int(row["kvm"]))
        rows[name] = {"behaviour": behaviour, "counters": all(same), "compared": len(same)}
    return pd.DataFrame.from_dict(rows, orient="index")


def _kvmmu_name(counter: str) -> str:
    name = COUNTERS[counter]
    assert name is not None
    return name


def live_or_stored(name: str) -> tuple[Comparison, str]:
    """``compare(program(name))`` on this machine's KVM if usable, else the stored run.

    Returns the comparison and where it came from. No kernel counterpart.
    """
    _check_program(name)
    usable, why = kvm_usable()
    if usable:
        return compare(program(name)), "this machine's KVM"
    return load_host_capture(STORED).comparisons[name], f"the stored run ({why})"
