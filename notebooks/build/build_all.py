"""Rebuild every notebook from its build script, executed, deterministically.

    python notebooks/build/build_all.py            # all notebooks
    python notebooks/build/build_all.py 03 07      # only these

Each ``build_NN_*.py`` writes ``notebooks/NN_*.ipynb`` with its outputs (see ``lesson.py``).
Run this after any change to ``kvmmu`` that moves a number a notebook prints: nbval compares the
stored outputs with what the code produces.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BUILD = Path(__file__).resolve().parent


def main(selected: list[str]) -> None:
    for script in sorted(BUILD.glob("build_[0-9][0-9]_*.py")):
        if not selected or script.name.split("_")[1] in selected:
            print(f"building {script.name}", flush=True)
            subprocess.run([sys.executable, str(script)], check=True)


if __name__ == "__main__":
    main(sys.argv[1:])
