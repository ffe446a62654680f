"""A built wheel is a whole kvmmu: installed outside the repository, every lesson runs from it.

The wheel is built from a copy of what a source distribution holds (``pyproject.toml``,
``README.md``, ``kvmmu/``), installed with ``--no-deps`` into a fresh venv in a temporary folder,
and that venv reuses this environment's third-party packages through a ``.pth`` line (so the test
stays offline and fast, and this environment's editable kvmmu is not seen: a plain path line in a
``.pth`` file does not run the ``.pth`` files of the folder it adds). From a temporary working
folder holding copies of the notebooks, the new interpreter loads a capture and the reference
tables, then runs the code cells of every lesson in ``notebooks/``. A data file the package
reads but the wheel lacks fails here; so does any path that still points into a checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

# Run in the wheel's venv, from the working folder: argv[1:] are the notebooks to run.
PROGRAM = r"""
import contextlib, io, json, sys
from pathlib import Path

import kvmmu
from kvmmu.hw.capture import list_captures, load_capture
from kvmmu.hw.walk import walk
from kvmmu.hw.x86 import Access
from kvmmu.reference import DATA_DIR, kernel_eras, scenarios

print("kvmmu", Path(kvmmu.__file__).resolve().parent)
print("data", DATA_DIR)
cap = load_capture("x86_64-4level")
leaf = cap.info_tlb.iloc[0]
result = walk(cap.memory, cap.cpu, int(leaf["gva"]), Access.READ, set_ad=False)
print("captures", ",".join(list_captures()))
print("walk", hex(result.gpa), hex(int(leaf["gpa"])))
print("eras", ",".join(kernel_eras().index))
print("scenarios", len(scenarios()))

import matplotlib.pyplot as plt
for name in sys.argv[1:]:
    cells = json.loads(Path(name).read_text())["cells"]
    namespace = {"__name__": "__notebook__"}
    with contextlib.redirect_stdout(io.StringIO()):
        for number, cell in enumerate(cells):
            if cell["cell_type"] != "code":
                continue
            lines = "".join(cell["source"]).splitlines()
            source = "\n".join(l for l in lines if not l.lstrip().startswith(("%", "!")))
            exec(compile(source, f"{name}, cell {number}", "exec"), namespace)
    plt.close("all")
    print("ran", name)
"""


def build_wheel(out: Path) -> Path:
    """``pip wheel`` of a copy of the source distribution's files; the wheel's path."""
    source = out / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "kvmmu", source / "kvmmu", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("kvmmu-*.whl")
    return wheel


def venv_with_wheel(folder: Path, wheel: Path) -> Path:
    """A fresh venv holding the wheel, with this environment's packages behind it."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q"]
    subprocess.run([*pip, "--no-deps", "--no-index", str(wheel)], check=True, timeout=300)
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    lines = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(purelib) / "kvmmu-test-deps.pth").write_text("\n".join(sorted(lines)) + "\n")
    return python


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def test_wheel_holds_every_data_file_of_the_package(wheel: Path) -> None:
    data = ROOT / "kvmmu" / "data"
    on_disk = {
        path.relative_to(ROOT).as_posix()
        for path in data.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert any(name.endswith("tables.npz") for name in on_disk), "kvmmu/data lost its captures"
    with zipfile.ZipFile(wheel) as archive:
        shipped = set(archive.namelist())
    missing = sorted(on_disk - shipped)
    assert not missing, (
        f"the wheel lacks {missing}: add a glob for them to [tool.setuptools.package-data] "
        "in pyproject.toml"
    )


def test_every_lesson_runs_from_the_installed_wheel(wheel: Path, tmp_path: Path) -> None:
    python = venv_with_wheel(tmp_path / "venv", wheel)
    work = tmp_path / "work"
    work.mkdir()
    for notebook in NOTEBOOKS:
        shutil.copy(notebook, work / notebook.name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["MPLBACKEND"] = "Agg"
    run = subprocess.run(
        [str(python), "-c", PROGRAM, *(n.name for n in NOTEBOOKS)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, f"a lesson failed from the wheel:\n{run.stderr[-3000:]}"
    lines = dict(line.split(" ", 1) for line in run.stdout.splitlines() if " " in line)
    installed = Path(lines["kvmmu"])
    assert installed.is_relative_to(tmp_path / "venv"), f"kvmmu was imported from {installed}"
    assert Path(lines["data"]).is_relative_to(installed), "the data is read from outside kvmmu"
    assert lines["captures"] == "x86_64-4level,x86_64-4level-pti,x86_64-5level"
    walked, qemu = lines["walk"].split()
    assert walked == qemu, "the walker disagrees with QEMU's info tlb on the capture's first leaf"
    assert lines["eras"] == "pre-2010,2010 seed,today"
    assert int(lines["scenarios"]) > 0
    ran = [line.split(" ", 1)[1] for line in run.stdout.splitlines() if line.startswith("ran ")]
    assert ran == [n.name for n in NOTEBOOKS]
