"""The data sets kvmmu ships inside the package, and the reference tables among them.

No kernel counterpart. Everything kvmmu reads lives in ``kvmmu/data/`` and is package data, so a
wheel carries it and an installed kvmmu needs no checkout: :data:`DATA_DIR` is that folder as
:mod:`importlib.resources` finds it. ``kvmmu/data/reference/kernel_eras.csv`` records what each
kernel era allocated per shadow page and where the figures come from;
``kvmmu/data/workloads/scenarios.csv`` defines the guests of the memory-savings experiments;
``kvmmu/data/linux-guest/`` holds the Linux captures that :mod:`kvmmu.hw.capture` loads.
``kvmmu/data/README.md`` says where each data set came from and how to change it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

import pandas as pd

from kvmmu.errors import KvmmuError

# The package's data folder: a directory of the installed package (or of the checkout, in an
# editable install), or a folder inside a zip where Python imports kvmmu from one.
DATA_DIR: Path | Traversable = files("kvmmu") / "data"


class ReferenceDataError(KvmmuError):
    """A reference table is missing or malformed; the message names the file to fix."""


def _read(relative: str, columns: tuple[str, ...]) -> pd.DataFrame:
    path = DATA_DIR.joinpath(*relative.split("/"))
    if not path.is_file():
        raise ReferenceDataError(
            f"kvmmu/data/{relative} is missing from this installation of kvmmu; reinstall it "
            "(`pip install --force-reinstall kvmmu`, or `pip install -e .` in a clone)"
        )
    with path.open("rb") as stream:
        frame = pd.read_csv(stream, dtype=str, keep_default_na=False)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ReferenceDataError(f"kvmmu/data/{relative} lacks the columns {missing}")
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
