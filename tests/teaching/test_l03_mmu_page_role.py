"""Specifications of kvmmu.teaching.lessons.l03_mmu_page_role: the role word, one gfn with several
pages, the pages of a setup and its widget, a real address space shadowed, the role exercise."""

from __future__ import annotations

import itertools

import pandas as pd
import pytest
from widget_output import controls, shown

from kvmmu.errors import KvmmuError, ModeError
from kvmmu.hw.capture import load_capture
from kvmmu.hw.guest import GuestPageTables
from kvmmu.hw.x86 import Access, PagingMode
from kvmmu.kvm.vcpu import Vm
from kvmmu.teaching import draw
from kvmmu.teaching.lessons import l03_mmu_page_role as lesson


def test_role_layout_table_covers_role_word_bit_by_bit() -> None:
    table = lesson.role_layout_table()
    assert table["width"].sum() == 32 - 5  # bits 19..23 are unused
    assert table.loc["direct", "bits"] == "7"
    assert table.loc["smm", "bits"] == "31:24"


def test_role_scenarios_give_one_gfn_several_pages() -> None:
    wp = lesson.role_scenario("cr0_wp")
    assert sorted(wp.groupby("gfn")["cr0_wp"].nunique().unique()) == [2]
    quad = lesson.role_scenario("quadrants")
    assert sorted(quad[quad["level"] == 2]["quadrant"]) == [0, 1, 2, 3]
    assert sorted(quad[quad["level"] == 1]["quadrant"]) == [0, 1]
    acc = lesson.role_scenario("access")
    assert sorted(acc[acc["level"] == 1]["access"]) == ["-wx", "uwx"]
    large = lesson.role_scenario("large_guest_page")
    assert large["direct"].tolist() == [False, False, False, True]
    assert large.loc[large["direct"], "gfns bytes"].tolist() == [0]
    with pytest.raises(KvmmuError, match="name must be one of"):
        lesson.role_scenario("nope")


@pytest.mark.parametrize("mode", ["32-bit", "PAE", "4-level", "5-level"])
def test_setup_with_tdp_has_only_direct_pages(mode: str) -> None:
    pages = lesson.setup_shadow_pages(mode, tdp=True)
    assert pages["direct"].all() and (pages["gfns bytes"] == 0).all()


@pytest.mark.parametrize("mode", ["32-bit", "PAE", "4-level", "5-level"])
def test_setup_shadow_paging_makes_indirect_pages(mode: str) -> None:
    pages = lesson.setup_shadow_pages(mode, tdp=False)
    assert not pages["direct"].any()
    assert pages["4-byte gpte"].all() == (mode == "32-bit")


def test_large_guest_pages_without_host_huge_pages_become_direct_pages() -> None:
    pages = lesson.setup_shadow_pages("4-level", large_guest_pages=True, host_huge_pages=False)
    # two 2 MiB guest pages read (clean guest PTEs: mapped u-x), then one written: the write
    # needs a direct page with role.access uwx, a different role for the same gfn
    assert sorted(pages.loc[pages["direct"], "access"]) == ["u-x", "u-x", "uwx"]
    huge = lesson.setup_shadow_pages("4-level", large_guest_pages=True, host_huge_pages=True)
    assert not huge["direct"].any()


def test_setup_cr0_wp_is_in_every_role() -> None:
    assert not lesson.setup_shadow_pages("PAE", cr0_wp=False)["cr0_wp"].any()
    with pytest.raises(ModeError):
        lesson.setup_shadow_pages("6-level")


def test_paging_off_under_shadow_paging_maps_with_direct_pages() -> None:
    """nonpaging_page_fault: with paging off the shadow MMU builds direct pages only."""
    assert lesson.setup_shadow_pages("paging off", tdp=False)["direct"].all()


def test_role_widget_shows_the_pages_of_the_chosen_setup() -> None:
    widget = lesson.make_role_widget()
    mode, wp, tdp, large, huge = controls(widget)
    text, frame = lesson.role_setup_view("4-level")
    assert shown(widget) == [text + "\n", repr(frame)]
    assert "changed" not in frame.columns
    mode.value = "32-bit"
    large.value = True
    huge.value = False
    wp.value = False
    assert "changed" in shown(widget)[1] and "since the last setup" in shown(widget)[0]
    before = lesson.setup_shadow_pages("32-bit", False, False, True, False)
    tdp.value = True
    text, frame = lesson.role_setup_view("32-bit", False, True, True, False, before)
    assert shown(widget) == [text + "\n", repr(frame)]
    assert (frame["changed"] == "new").all()  # TDP pages are all direct: none existed before


def test_role_view_names_controls_without_effect_and_marks_changes() -> None:
    text, _ = lesson.role_setup_view("4-level", tdp=True)
    assert "guest large pages" in text.split("no effect in this setup: ")[1]
    text, _ = lesson.role_setup_view("4-level", tdp=False, host_huge_pages=False)
    assert "guest large pages" not in text
    before = lesson.setup_shadow_pages("4-level")
    text, frame = lesson.role_setup_view("4-level", cr0_wp=False, previous=before)
    assert set(frame["changed"]) == {"new"} and f"{len(frame)} new, {len(before)} gone" in text
    text, frame = lesson.role_setup_view("4-level", previous=before)
    assert set(frame["changed"]) == {""} and "0 new, 0 gone" in text


def test_capture_census_counts_real_shadow_pages() -> None:
    summary, per_level = lesson.capture_shadow_census(
        load_capture("x86_64-4level"), kernel_per_region=8
    )
    assert summary["user leaves touched"] == 393
    assert summary["guest faults"] == 0
    assert summary["shadow pages"] == per_level.to_numpy().sum()
    assert summary["gfns bytes allocated"] == 4096 * summary["indirect pages"]
    assert per_level.loc[4, "indirect"] == 1


def test_role_right_answer_passes_and_first_wrong_field_is_named() -> None:
    p = lesson.role_problem(3)
    role = p._role
    right = {f: getattr(role, f) for f in lesson.ROLE_FIELDS}
    assert lesson.check_role(p, right).passed
    letters = "".join(c if role.access & b else "-" for c, b in (("u", 4), ("w", 2), ("x", 1)))
    assert lesson.check_role(p, {**right, "access": letters}).passed
    msg = lesson.check_role(p, {**right, "direct": not role.direct}).message
    assert msg.startswith("1 field(s) wrong") and "direct:" in msg
    assert (
        "missing: cr0_wp"
        in lesson.check_role(p, {k: v for k, v in right.items() if k != "cr0_wp"}).message
    )
    msg = lesson.check_role(
        p, {**right, "cr0_wp": not role.cr0_wp, "level": role.level + 1}
    ).message
    assert msg.startswith("2 field(s) wrong") and "level:" in msg


def test_role_direct_page_below_a_guest_large_page() -> None:
    # some seed asks for the direct page a 2/4 MiB guest page needs with 4 KiB host pages
    found = [lesson.role_problem(s) for s in range(40)]
    assert any(p._role.direct and p._role.level == 1 for p in found)
    assert any(p._role.has_4_byte_gpte for p in found)


def _setup_written_in_place(
    mode: PagingMode, cr0_wp: bool, tdp: bool, large: bool, huge: bool
) -> pd.DataFrame:
    """The role setup with the guest's tables written straight into the VM's own memory."""
    vm = Vm(16 << 20, tdp=tdp, huge_pages=huge)
    if mode is PagingMode.NONE:
        vcpu = vm.create_vcpu()
    else:
        pt = GuestPageTables(vm.memory, mode, wp=cr0_wp)
        size = pt.page_sizes[1] if large else pt.page_sizes[0]
        pt.map(0x400000, 0x400000, size=size, length=4 << 20, user=True)
        vcpu = vm.create_vcpu(pt.cpu(cpl=3))
    for gva, kind, cpl in ((0x400000, Access.READ, 3), (0x600000, Access.READ, 3)):
        assert isinstance(vcpu.access(gva, kind, cpl=cpl), int)
    assert isinstance(vcpu.access(0x400000, Access.WRITE, cpl=0), int)
    return draw.role_frame(vm)


@pytest.mark.parametrize("mode", list(PagingMode))
def test_setups_with_copied_guest_tables_equal_tables_written_in_place(mode: PagingMode) -> None:
    # the guest's tables are written once per guest setup and copied into each host setup
    for flags in itertools.product((False, True), repeat=4):
        got = lesson.setup_shadow_pages(mode, *flags)
        assert got.equals(_setup_written_in_place(mode, *flags)), (mode, flags)
