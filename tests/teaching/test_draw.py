"""Specifications of kvmmu.teaching.draw: the tables several lessons show."""

from __future__ import annotations

from kvmmu.hw.x86 import Access
from kvmmu.kvm.vcpu import Vm
from kvmmu.teaching import draw
from kvmmu.teaching.lessons import l02_shadow_paging


def test_tidy_trace_keeps_event_names_and_formats_gfns_in_hex() -> None:
    run = l02_shadow_paging.run_program(0)
    with run.vm.mmu.trace.recording() as trace:
        run.vcpu.access(0x400000, Access.FETCH)
    table = draw.tidy_trace(trace.frame())
    assert "kvm_mmu_get_page" in set(table["event"])
    assert table["details"].str.contains("gfn=0x").any()


def test_vm_is_not_needed_for_role_frame_of_a_page_list() -> None:
    vm = Vm(4 << 20)
    assert draw.role_frame(vm).empty


def test_size_text_picks_the_unit() -> None:
    assert [draw.size_text(n) for n in (0, 512, 12288, 9 << 19, 2 << 30)] == [
        "0 B",
        "512 B",
        "12.0 KiB",
        "4.50 MiB",
        "2.00 GiB",
    ]
