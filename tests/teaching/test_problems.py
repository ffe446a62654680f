"""Specifications of kvmmu.teaching.problems: a verdict shows itself and its hint."""

from __future__ import annotations

from kvmmu.teaching import problems as E


def test_check_displays_verdict_and_hint() -> None:
    c = E.Check(False, "the offset is wrong")
    assert str(c) == "not yet: the offset is wrong"
    assert "**not yet**" in c._repr_markdown_()
    assert not c and E.Check(True, "x")
