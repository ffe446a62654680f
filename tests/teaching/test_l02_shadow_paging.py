"""Specifications of kvmmu.teaching.lessons.l02_shadow_paging: the demo program, guest and shadow
tables side by side, the step widget, and the shadow-fault exercise."""

from __future__ import annotations

import pytest
from widget_output import controls, shown

from kvmmu.errors import KvmmuError
from kvmmu.teaching.lessons import l02_shadow_paging as lesson


def test_run_program_is_deterministic_and_builds_pages_on_first_touch() -> None:
    first, again = lesson.run_program(3), lesson.run_program(3)
    assert first.outcomes == again.outcomes
    assert [sp.gfn for sp in first.vm.mmu.active] == [sp.gfn for sp in again.vm.mmu.active]
    assert lesson.run_program(0).vm.mmu.stats.pf_fixed == 0
    assert first.vm.mmu.stats.pf_fixed == 3
    with pytest.raises(KvmmuError):
        lesson.run_program(len(lesson.DEMO_PROGRAM) + 1)


def test_shadow_tables_figure_draws_every_guest_table_and_shadow_page() -> None:
    run = lesson.run_program(4)
    fig = lesson.shadow_tables_figure(run.vm, run.vcpu)
    n_pages = len(run.vm.mmu.active)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert sum(t.startswith("sp#") for t in texts) == n_pages
    assert sum(t.startswith("guest ") and "\n" in t for t in texts) == len(run.pt.tables)


def test_shadow_step_view_shows_the_user_fault_of_the_demo_program() -> None:
    text, pages, counters = lesson.shadow_step_view(len(lesson.DEMO_PROGRAM))
    assert "#PF to the guest, error 0x5" in text
    assert counters.iloc[0]["pf_guest"] == 1
    assert counters.iloc[0]["shadow_pages"] == len(pages)


def test_shadow_steps_widget_follows_the_slider_and_the_next_button() -> None:
    widget = lesson.make_shadow_steps_widget()
    slider, step, reset = controls(widget)

    def expected(k: int) -> list[str]:
        text, pages, counters = lesson.shadow_step_view(k)
        return [text + "\n", repr(pages), repr(counters)]

    assert shown(widget) == expected(0)
    step.click()
    step.click()
    assert slider.value == 2
    assert shown(widget) == expected(2)
    slider.value = len(lesson.DEMO_PROGRAM)
    step.click()  # already at the end: stays
    assert shown(widget) == expected(len(lesson.DEMO_PROGRAM))
    reset.click()
    assert shown(widget) == expected(0)


def _shadow_seed(created: int) -> lesson.ShadowFaultProblem:
    for seed in range(100):
        p = lesson.shadow_fault_problem(seed)
        if p._created == created:
            return p
    raise AssertionError(f"no seed creates {created} pages")


def test_shadow_fault_same_seed_same_problem() -> None:
    assert lesson.shadow_fault_problem("s1").text == lesson.shadow_fault_problem("s1").text
    assert lesson.shadow_fault_problem(1).text != lesson.shadow_fault_problem(2).text


@pytest.mark.parametrize("created", [0, 1, 2, 3])
def test_shadow_fault_right_answer_passes(created: int) -> None:
    p = _shadow_seed(created)
    assert lesson.check_shadow_fault(p, created)
    assert lesson.check_shadow_fault(p, str(created))


def test_shadow_fault_each_wrong_answer_gets_its_hint() -> None:
    p = _shadow_seed(1)
    assert "at most 4" in lesson.check_shadow_fault(p, 5).message
    assert "root" in lesson.check_shadow_fault(p, 4).message
    assert "shared" in lesson.check_shadow_fault(p, 3).message
    assert "new to the MMU" in lesson.check_shadow_fault(p, 0).message
    for wrong in (0, 3, 4, 5):
        assert "1" not in lesson.check_shadow_fault(p, wrong).message
