"""Specifications of kvmmu.teaching.lessons.l01_guest_page_tables: the walk as text and as a
picture, address splits, error codes, the Linux address space, the walk widget, and the walk and
fix exercises."""

from __future__ import annotations

import base64

import pytest
from matplotlib.figure import Figure
from widget_output import controls, shown

from kvmmu.errors import AddressError, KvmmuError, ModeError
from kvmmu.hw.capture import load_capture, ptdump
from kvmmu.hw.walk import PageFault, WalkResult
from kvmmu.hw.x86 import Access, Pte
from kvmmu.teaching import ui
from kvmmu.teaching.lessons import l01_guest_page_tables as lesson


def test_parse_address_reads_hex_decimal_and_underscores() -> None:
    assert lesson.parse_address("0x40_1000") == 0x401000
    assert lesson.parse_address(" 4096 ") == 4096
    assert lesson.parse_address(7) == 7


@pytest.mark.parametrize("bad", ["banana", "-1", True, str(1 << 64)])
def test_parse_address_rejects_bad_input_with_a_typed_error(bad: object) -> None:
    with pytest.raises(AddressError):
        lesson.parse_address(bad)  # type: ignore[arg-type]


def test_parse_access_names_the_choices() -> None:
    assert lesson.parse_access("Write") is Access.WRITE
    with pytest.raises(ModeError, match="read"):
        lesson.parse_access("jump")


def test_walk_text_lists_every_level_and_the_ad_bits_a_write_sets(guest) -> None:  # type: ignore[no-untyped-def]
    memory, pt = guest
    text = lesson.walk_text(memory, pt.cpu(), "0x400123", "write", 3)
    lines = text.splitlines()
    assert [line.split("[")[0].strip() for line in lines[1:5]] == ["PML4E", "PDPTE", "PDE", "PTE"]
    assert "gpa 0x100123" in lines[5]
    assert lines[6] == "A/D bits the walk sets: PML4E A, PDPTE A, PDE A, PTE A+D"


def test_walk_text_does_not_touch_guest_memory(guest) -> None:  # type: ignore[no-untyped-def]
    memory, pt = guest
    before = pt.entry(0x400000, 1)
    lesson.walk_text(memory, pt.cpu(), 0x400000, "write", 3)
    assert pt.entry(0x400000, 1) == before


def test_walk_text_decodes_a_not_present_fault(guest) -> None:  # type: ignore[no-untyped-def]
    memory, pt = guest
    last = lesson.walk_text(memory, pt.cpu(), 0x500000, "write", 3).splitlines()[-1]
    assert last.startswith("#PF error code 0x6 (W|U)")


def test_walk_text_reports_a_non_canonical_address_as_gp(guest) -> None:  # type: ignore[no-untyped-def]
    memory, pt = guest
    assert "#GP" in lesson.walk_text(memory, pt.cpu(), 0x0000_8000_0000_0000)


def test_walk_tree_figure_draws_one_box_per_level_plus_cr3_and_page(guest) -> None:  # type: ignore[no-untyped-def]
    memory, pt = guest
    fig = lesson.walk_tree_figure(memory, pt.cpu(), 0x400123)
    assert isinstance(fig, Figure)
    assert len(fig.axes[0].patches) == 6
    texts = " ".join(t.get_text() for t in fig.axes[0].texts)
    assert "bits 47:39" in texts and "gpa 0x100123" in texts
    faulted = lesson.walk_tree_figure(memory, pt.cpu(), 0x500000)
    assert "#PF" in " ".join(t.get_text() for t in faulted.axes[0].texts)


def test_address_split_uses_each_modes_geometry() -> None:
    table = lesson.address_split(0x7FFF_1234_5678)
    assert table.loc["32-bit", "split"] == "10+10+12"
    assert table.loc["PAE", "split"] == "2+9+9+12"
    assert table.loc["4-level", "L4 index"] == "0xff"
    assert table.loc["5-level", "L5 index"] == "0x0"
    assert table.loc["32-bit", "L2 index"] == hex(0x1234_5678 >> 22)


def test_decode_error_code_names_each_bit() -> None:
    assert lesson.decode_error_code(0x27) == {"P": 1, "W": 1, "U": 1, "RSVD": 0, "I/D": 0, "PK": 1}
    with pytest.raises(AddressError):
        lesson.decode_error_code(-1)


def test_fault_examples_decode_the_architectural_error_codes() -> None:
    table = lesson.fault_examples()
    codes = dict(zip(table.index, table["error code"], strict=True))
    assert codes["read of an unmapped page"] == "0x04"
    assert codes["fetch from an XD data page"] == "0x15"
    assert codes["user write under pkey 1 (PKRU.WD1)"] == "0x27"
    assert codes["read through a PTE with bit 51 set"] == "0x09"
    assert table.loc["kernel write to read-only text (WP=1)", "U"] == 0


def test_walk_widget_shows_the_walk_for_the_typed_address(guest) -> None:  # type: ignore[no-untyped-def]
    memory, pt = guest
    cpu = pt.cpu()
    widget = lesson.make_walk_widget(memory, cpu)
    assert shown(widget) == [lesson.walk_text(memory, cpu, "0x400123", "read", 3) + "\n"]
    address, access, cpl = controls(widget)
    address.value = "0x500000"
    access.value = "write"
    cpl.value = 0
    assert shown(widget) == [lesson.walk_text(memory, cpu, "0x500000", "write", 0) + "\n"]


def test_walk_widget_shows_a_typing_error_instead_of_a_traceback(guest) -> None:  # type: ignore[no-untyped-def]
    memory, pt = guest
    widget = lesson.make_walk_widget(memory, pt.cpu())
    controls(widget)[0].value = "0xZZ"
    (text,) = shown(widget)
    assert text.startswith("error: address: could not read '0xZZ'")


def test_walk_widget_can_draw_the_chain(guest) -> None:  # type: ignore[no-untyped-def]
    memory, pt = guest
    widget = lesson.make_walk_widget(memory, pt.cpu(), draw=True)
    kinds = [item["output_type"] for item in widget.children[-1].outputs]
    assert kinds == ["stream", "display_data"]
    assert "image/png" in widget.children[-1].outputs[1]["data"]


def test_drawn_walk_widget_redraws_what_the_guest_changed_and_only_that(guest) -> None:  # type: ignore[no-untyped-def]
    memory, pt = guest
    cpu = pt.cpu()
    widget = lesson.make_walk_widget(memory, cpu, "0x400123", "read", 3, draw=True)
    address = controls(widget)[0]

    def picture() -> str:
        return str(widget.children[-1].outputs[1]["data"]["image/png"])

    first = picture()
    address.value = "0x7000"  # not mapped: a fault, another picture
    assert picture() != first
    address.value = "0x400123"
    assert picture() == first  # the same walk, the same picture
    pt.map(0x400000, 0x200000, user=True, writable=False)  # the guest re-points the page
    address.value = "0x7000"
    address.value = "0x400123"
    redrawn = ui.figure_png(lesson.walk_tree_figure(memory, cpu, "0x400123", "read", 3))
    assert picture() != first and picture() == base64.b64encode(redrawn).decode()


def test_address_space_layout_names_the_linux_regions_of_a_real_capture() -> None:
    capture = load_capture("x86_64-4level")
    layout = lesson.address_space_layout(ptdump(capture.memory, capture.cpu))
    assert {"user space (VMAs)", "direct map of all RAM", "ESPFIX stacks"} <= set(layout.index)
    assert layout.loc["ESPFIX stacks", "4 KiB"] == 65536
    assert layout.loc["direct map of all RAM", "1 GiB"] >= 1
    assert (
        layout.loc["user space (VMAs)", "user leaves"] == layout.loc["user space (VMAs)", "4 KiB"]
    )
    assert layout.drop("user space (VMAs)")["user leaves"].sum() == 0


def test_kpti_user_view_maps_far_less_kernel_than_the_kernel_view() -> None:
    table = lesson.kpti_comparison(load_capture("x86_64-4level-pti"))
    total = table.loc["kernel half, total"]
    assert total["user CR3 leaves"] < total["kernel CR3 leaves"]
    assert table.loc["vmalloc / ioremap", "user CR3 leaves"] == 0
    assert table.loc["cpu_entry_area", "user CR3 leaves"] > 0


def _walk_seed(kind: str, level: int | None = None) -> lesson.WalkProblem:
    for seed in range(200):
        p = lesson.walk_problem(seed)
        r = p._result
        if kind == "fault" and isinstance(r, PageFault):
            return p
        if kind == "ok" and isinstance(r, WalkResult) and (level is None or r.level == level):
            return p
    raise AssertionError("no seed gives that walk")


def test_seed_must_be_int_or_string() -> None:
    with pytest.raises(KvmmuError, match="student number"):
        lesson.walk_problem(1.5)  # type: ignore[arg-type]


def test_walk_right_gpa_passes_and_offset_slip_is_named() -> None:
    p = _walk_seed("ok", 1)
    gpa = p._result.gpa  # type: ignore[union-attr]
    assert lesson.check_walk(p, gpa).passed
    assert lesson.check_walk(p, hex(gpa)).passed
    hint = lesson.check_walk(p, gpa ^ 0x8).message
    assert "page offset" in hint and hex(gpa) not in hint


def test_walk_large_page_used_as_4k_gets_the_ps_hint() -> None:
    p = _walk_seed("ok", 2)
    r = p._result
    assert isinstance(r, WalkResult)
    as_4k = (r.pte & ((1 << 52) - 1) & ~0x1F_FFFF) | (p.gva & 0xFFF)
    if as_4k == r.gpa:  # offset bits 20:12 of the gva happen to be zero
        pytest.skip("this seed's gva has no offset in bits 20:12")
    msg = lesson.check_walk(p, as_4k).message
    assert "PS (bit 7)" in msg and "4 KiB" in msg


def test_walk_fault_answers() -> None:
    p = _walk_seed("fault")
    r = p._result
    assert isinstance(r, PageFault)
    assert lesson.check_walk(p, f"fault {int(r.error_code):#x}").passed
    assert "does not complete" in lesson.check_walk(p, 0x1000).message
    wrong_user = int(r.error_code) ^ int(Pte.USER)
    assert "CPL 3" in lesson.check_walk(p, f"#PF {wrong_user:#x}").message
    ok = _walk_seed("ok")
    assert "walk succeeds" in lesson.check_walk(ok, "fault 0x4").message


def test_fix_accepts_the_one_bit_fix_and_reports_what_the_walk_does() -> None:
    seen = set()
    for seed in range(60):
        p = lesson.fix_problem(seed)
        if p.bug in seen:
            continue
        seen.add(p.bug)
        _, pt, _ = lesson.fix_guest(seed)
        level, value = lesson.fix_answer(p, pt)
        assert lesson.check_fix(p, (level, value)).passed, p.bug
        msg = lesson.check_fix(p, (level, 0)).message
        assert "still faults" in msg or "never reaches" in msg
        moved = lesson.check_fix(p, (level, value ^ 0x10_0000)).message
        assert "lands at gpa" in moved or "neighbouring" in moved or "still faults" in moved
    assert seen == set(lesson._BUGS)
