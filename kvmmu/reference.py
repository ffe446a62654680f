"""Reference tables kept in the repository's ``data/`` folder, loaded as pandas DataFrames.

No kernel counterpart. ``data/reference/kernel_eras.csv`` records what each kernel era allocated
per shadow page and where the figures come from; ``data/workloads/scenarios.csv`` defines the
guests of the memory-savings experiments. ``data/README.md`` says where each table came from and
how to change it. The folder sits beside the package, so kvmmu must run from a checkout (the
README installs it in editable mode).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pandas as pd

from kvmmu.errors import KvmmuError

DATA_DIR = Path(__file__).resolve().parents[1] / "data"


class ReferenceDataError(KvmmuError):
    """A reference table is missing or malformed; the message names the file to fix."""


def _read(relative: str, columns: tuple[str, ...]) -> pd.DataFrame:
    path = DATA_DIR / relative
    if not path.is_file():
        raise ReferenceDataError(
            f"data/{relative} is missing; kvmmu reads it from the repository checkout, so "
            "install with `pip install -e .` from a clone"
        )
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ReferenceDataError(f"data/{relative} lacks the columns {missing}")
    return frame


def _yes(value: str, where: str) -> bool:
    if value not in ("yes", "no"):
        raise ReferenceDataError(f"{where}: expected 'yes' or 'no', got {value!r}")
    return value == "yes"


@cache
def kernel_eras() -> pd.DataFrame:
    """Per era: whether direct pages get gfns, gfns bytes of an indirect page, struct bytes.

    No kernel counterpart.
    """
    frame = _read(
        "reference/kernel_eras.csv",
        ("era", "gfns_for_direct_pages", "gfns_bytes_indirect", "struct_bytes_approx", "source"),
    )
    out = frame.set_index("era")
    out["gfns_for_direct_pages"] = [
        _yes(v, f"kernel_eras.csv era {era}") for era, v in out["gfns_for_direct_pages"].items()
    ]
    for column in ("gfns_bytes_indirect", "struct_bytes_approx"):
        out[column] = out[column].astype(int)
    return out


@cache
def scenarios() -> pd.DataFrame:
    """The experiment scenarios: TDP or not, host huge pages, the guest's page size.

    No kernel counterpart.
    """
    frame = _read(
        "workloads/scenarios.csv",
        ("scenario", "tdp", "host_huge_pages", "guest_page_size", "description"),
    )
    out = frame.set_index("scenario")
    for column in ("tdp", "host_huge_pages"):
        out[column] = [_yes(v, f"scenarios.csv {s}") for s, v in out[column].items()]
    out["guest_page_size"] = out["guest_page_size"].astype(int)
    return out


@dataclass(frozen=True, slots=True)
class Scenario:
    """One row of ``scenarios.csv``, typed."""

    name: str
    tdp: bool
    host_huge_pages: bool
    guest_page_size: int
    description: str


def scenario(name: str) -> Scenario:
    """The scenario called ``name``; :class:`ReferenceDataError` lists the known ones if absent."""
    table = scenarios()
    if name not in table.index:
        raise ReferenceDataError(f"unknown scenario {name!r}; pick one of {list(table.index)}")
    row = table.loc[name]
    return Scenario(
        name,
        bool(row["tdp"]),
        bool(row["host_huge_pages"]),
        int(str(row["guest_page_size"])),
        str(row["description"]),
    )
