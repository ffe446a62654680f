"""The README's Python example runs as written and prints what its comments promise."""

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    """Every ```python block of the README."""
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_readme_has_a_python_example() -> None:
    assert python_blocks(), "README.md lost its Public API example"


def test_readme_example_runs_and_reaches_the_mapped_page() -> None:
    namespace: dict[str, object] = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(python_blocks()[0], "README.md", "exec"), namespace)
    vcpu = namespace["vcpu"]
    assert vcpu.access(0x400123) == 0x100123  # type: ignore[attr-defined]
    assert "0x100123" in out.getvalue()
    assert "pf_fixed" in out.getvalue()
