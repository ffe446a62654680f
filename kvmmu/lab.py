"""Start JupyterLab on the lessons, as root or not: ``python -m kvmmu.lab [NOTEBOOK] [OPTIONS]``.

No kernel counterpart: a launcher. It runs ``jupyter lab`` with this interpreter, opening
``notebooks/00_welcome.ipynb`` when the current folder is a checkout and no notebook is named,
and passes every other argument through (``--no-browser``, ``--port=8888``, ...). Jupyter refuses
to start as root ("Running as root is not recommended"), and in containers and on course machines
people often are root, so for root it adds ``--allow-root``.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from kvmmu.errors import KvmmuError, check_bool, check_path, check_strings

WELCOME = Path("notebooks") / "00_welcome.ipynb"


class LabError(KvmmuError):
    """JupyterLab cannot be started as asked; the message says what to install or name."""


def running_as_root() -> bool:
    """Whether this process runs as root (never on a system without user ids).

    No kernel counterpart.
    """
    return hasattr(os, "geteuid") and os.geteuid() == 0


def lab_command(argv: Sequence[str], *, root: bool, cwd: Path) -> list[str]:
    """The ``jupyter lab`` command line for ``argv``, run from ``cwd``.

    A notebook named in ``argv`` must exist; with none named, the welcome lesson is opened if
    ``cwd`` holds it. ``root`` adds ``--allow-root`` unless ``argv`` has it already.

    No kernel counterpart.
    """
    args = check_strings("argv", argv, LabError)
    check_bool("root", root, LabError)
    cwd = check_path("cwd", cwd, LabError)
    named = [a for a in args if not a.startswith("-") and a.endswith(".ipynb")]
    missing = [a for a in named if not (cwd / a).is_file()]
    if missing:
        raise LabError(
            f"no notebook {missing[0]!r} under {cwd}: name one of notebooks/NN_*.ipynb, "
            "or run from the repository's top folder"
        )
    if not named and (cwd / WELCOME).is_file():
        args.insert(0, WELCOME.as_posix())
    if root and "--allow-root" not in args:
        args.append("--allow-root")
    return [sys.executable, "-m", "jupyter", "lab", *args]


def main(argv: Sequence[str] | None = None) -> int:
    """Run JupyterLab until it exits; its exit status, or 2 when it cannot start.

    No kernel counterpart.
    """
    if argv is not None:
        check_strings("argv", argv, LabError)
    try:
        if importlib.util.find_spec("jupyterlab") is None:
            raise LabError(
                "JupyterLab is not installed in this environment: install the lab extra, "
                "`python -m pip install -e '.[lab]'` in a clone (or `kvmmu[lab]`)"
            )
        command = lab_command(
            sys.argv[1:] if argv is None else argv, root=running_as_root(), cwd=Path.cwd()
        )
    except LabError as err:
        print(f"kvmmu.lab: {err}", file=sys.stderr)
        return 2
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
