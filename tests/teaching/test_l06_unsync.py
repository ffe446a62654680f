"""Specifications of kvmmu.teaching.lessons.l06_unsync: the edit / access / invlpg / CR3 replay,
its widget, and the sync exercise."""

from __future__ import annotations

import pytest
from widget_output import controls, shown

from kvmmu.errors import KvmmuError
from kvmmu.teaching.lessons import l06_unsync as lesson


def test_sync_run_stale_until_invlpg_then_cr3() -> None:
    t = lesson.sync_run(["edit", "access", "invlpg", "access", "edit", "cr3", "access"])
    assert list(t["access returns"][t["action"] == "access"]) == [
        "0x100000",
        "0x200000",
        "0x300000",
    ]
    assert t.loc[1, "unsync"] and t.loc[1, "spte ->"] == "0x100000"
    assert t.loc[3, "spte ->"] == "-" and t.loc[3, "unsync"]  # invlpg dropped the stale spte
    assert not t.loc[6, "unsync"]  # the CR3 load synced the whole page
    with pytest.raises(KvmmuError, match="unknown action"):
        lesson.sync_run(["flush"])


def test_sync_widget_buttons_append_actions_in_any_order() -> None:
    widget = lesson.make_sync_widget()
    edit, access, invlpg, cr3, reset = controls(widget)
    for button in (edit, access, invlpg, access):
        button.click()
    assert widget.actions == ["edit", "access", "invlpg", "access"]
    assert shown(widget) == [lesson.sync_view(("edit", "access", "invlpg", "access")).to_string()]
    cr3.click()
    assert widget.actions[-1] == "cr3"
    reset.click()
    assert widget.actions == [] and shown(widget) == [lesson.sync_view(()).to_string()]


def test_sync_answers() -> None:
    p = lesson.sync_problem(0)  # edit edit access access invlpg access
    assert p.actions == ("edit", "edit", "access", "access", "invlpg", "access")
    assert lesson.check_sync(p, [0x100000, 0x100000, 0x300000]).passed
    assert (
        "does not see the latest edit"
        in lesson.check_sync(p, [0x300000, 0x100000, 0x300000]).message
    )
    assert "misses both" in lesson.check_sync(p, [0x100000, 0x100000, 0x100000]).message
    assert "one gpa per access" in lesson.check_sync(p, [1]).message
