"""Run every standard guest program on this machine's KVM and on kvmmu; store the comparison.

    .venv/bin/python scripts/capture_host_kvm.py [NAME]

writes ``kvmmu/data/kvm-captures/NAME.json`` (default: the backend module, e.g. ``kvm_pvm``) with the
host facts (kernel release, backend, the MMU parameters, the KVM API version) and, for each
program of ``kvmmu.host.program.PROGRAMS``, the values, faults, A/D bits, dirty logs and
counters of both machines. ``kvmmu.host.program.load_host_capture(NAME)`` reads it back.
Needs a usable ``/dev/kvm`` (root or the kvm group) and the ``[host]`` extra.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from kvmmu.host.detect import detect_host_mmu, host_facts
from kvmmu.host.kvm import HostKvmUnavailable, Kvm
from kvmmu.host.program import CAPTURE_DIR, PROGRAMS, capture_to_dict, compare


def main(argv: list[str]) -> int:
    name = argv[1] if len(argv) > 1 else (detect_host_mmu().backend or "unknown")
    try:
        with Kvm() as kvm:
            api = kvm.api_version
    except HostKvmUnavailable as exc:
        print(f"cannot capture: {exc}", file=sys.stderr)
        return 1
    comparisons = [compare(make()) for make in PROGRAMS.values()]
    data = capture_to_dict(host_facts(api_version=api), comparisons)
    folder = Path(str(CAPTURE_DIR))  # the checkout's kvmmu/data/kvm-captures (editable install)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    for c in comparisons:
        differ = [str(n) for n in c.counters.index[~c.counters["equal"]]]
        print(f"{c.program:15} behaviour equal: {c.behaviour_equal}; counters differing: {differ}")
    print(f"wrote kvmmu/data/kvm-captures/{path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
