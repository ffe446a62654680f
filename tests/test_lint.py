"""The code-quality gate: ``ruff check``, ``ruff format --check`` and ``mypy --strict``.

The house rules (README, pyproject.toml): lint-clean, formatted at line length 100, and strictly
typed. The tools run with the interpreter running the tests (``sys.executable -m ...``), from
the repository root so that ``pyproject.toml`` configures them. A failure shows the tools'
own output, which names each file, line and rule to fix.
"""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize(
    "command",
    [
        ("ruff", "check", "kvmmu", "tests"),
        ("ruff", "format", "--check", "kvmmu", "tests"),
        ("mypy", "--strict", "kvmmu"),
    ],
    ids=["ruff-check", "ruff-format", "mypy-strict"],
)
def test_tool_passes(command: tuple[str, ...]) -> None:
    """Each tool exits 0; otherwise its report is the failure message."""
    result = _run(*command)
    report = (result.stdout + result.stderr).strip()
    assert "No module named" not in report, f"{command[0]} is not installed: {report}"
    assert result.returncode == 0, f"`{' '.join(command)}` failed:\n{report}"
