"""Specifications of kvmmu.teaching.viz: the pure functions behind the notebooks' tables and
widgets."""

from __future__ import annotations

import pytest
from matplotlib.figure import Figure

from kvmmu.errors import AddressError, KvmmuError, ModeError
from kvmmu.hw.capture import load_capture, ptdump
from kvmmu.hw.x86 import Access
from kvmmu.kvm.vcpu import Vm
from kvmmu.teaching import viz


def test_parse_address_reads_hex_decimal_and_underscores() -> None:
    assert viz.parse_address("0x40_1000") == 0x401000
    assert viz.parse_address(" 4096 ") == 4096
    assert viz.parse_address(7) == 7


@pytest.mark.parametrize("bad", ["banana", "-1", True, str(1 << 64)])
def test_parse_address_rejects_bad_input_with_a_typed_error(bad: object) -> None:
    with pytest.raises(AddressError):
        viz.parse_address(bad)  # type: ignore[arg-type]


def test_parse_access_names_the_choices() -> None:
    assert viz.parse_access("Write") is Access.WRITE
    with pytest.raises(ModeError, match="read"):
        viz.parse_access("jump")


def test_walk_text_lists_every_level_and_the_ad_bits_a_write_sets(guest) -> None:  # type: ignore[no-untyped-def]
    memory, pt = guest
    text = viz.walk_text(memory, pt.cpu(), "0x400123", "write", 3)
    lines = text.splitlines()
    assert [line.split("[")[0].strip() for line in lines[1:5]] == ["PML4E", "PDPTE", "PDE", "PTE"]
    assert "gpa 0x100123" in lines[5]
    assert lines[6] == "A/D bits the walk sets: PML4E A, PDPTE A, PDE A, PTE A+D"


def test_walk_text_does_not_touch_guest_memory(guest) -> None:  # type: ignore[no-untyped-def]
    memory, pt = guest
    before = pt.entry(0x400000, 1)
    viz.walk_text(memory, pt.cpu(), 0x400000, "write", 3)
    assert pt.entry(0x400000, 1) == before


def test_walk_text_decodes_a_not_present_fault(guest) -> None:  # type: ignore[no-untyped-def]
    memory, pt = guest
    last = viz.walk_text(memory, pt.cpu(), 0x500000, "write", 3).splitlines()[-1]
    assert last.startswith("#PF error code 0x6 (W|U)")


def test_walk_text_reports_a_non_canonical_address_as_gp(guest) -> None:  # type: ignore[no-untyped-def]
    memory, pt = guest
    assert "#GP" in viz.walk_text(memory, pt.cpu(), 0x0000_8000_0000_0000)


def test_decode_error_code_names_each_bit() -> None:
    assert viz.decode_error_code(0x27) == {"P": 1, "W": 1, "U": 1, "RSVD": 0, "I/D": 0, "PK": 1}
    with pytest.raises(AddressError):
        viz.decode_error_code(-1)


def test_address_split_uses_each_modes_geometry() -> None:
    table = viz.address_split(0x7FFF_1234_5678)
    assert table.loc["32-bit", "split"] == "10+10+12"
    assert table.loc["PAE", "split"] == "2+9+9+12"
    assert table.loc["4-level", "L4 index"] == "0xff"
    assert table.loc["5-level", "L5 index"] == "0x0"
    assert table.loc["32-bit", "L2 index"] == hex(0x1234_5678 >> 22)


def test_fault_examples_decode_the_architectural_error_codes() -> None:
    table = viz.fault_examples()
    codes = dict(zip(table.index, table["error code"], strict=True))
    assert codes["read of an unmapped page"] == "0x04"
    assert codes["fetch from an XD data page"] == "0x15"
    assert codes["user write under pkey 1 (PKRU.WD1)"] == "0x27"
    assert codes["read through a PTE with bit 51 set"] == "0x09"
    assert table.loc["kernel write to read-only text (WP=1)", "U"] == 0


def test_walk_tree_figure_draws_one_box_per_level_plus_cr3_and_page(guest) -> None:  # type: ignore[no-untyped-def]
    memory, pt = guest
    fig = viz.walk_tree_figure(memory, pt.cpu(), 0x400123)
    assert isinstance(fig, Figure)
    assert len(fig.axes[0].patches) == 6
    texts = " ".join(t.get_text() for t in fig.axes[0].texts)
    assert "bits 47:39" in texts and "gpa 0x100123" in texts
    faulted = viz.walk_tree_figure(memory, pt.cpu(), 0x500000)
    assert "#PF" in " ".join(t.get_text() for t in faulted.axes[0].texts)


def test_address_space_layout_names_the_linux_regions_of_a_real_capture() -> None:
    capture = load_capture("x86_64-4level")
    layout = viz.address_space_layout(ptdump(capture.memory, capture.cpu))
    assert {"user space (VMAs)", "direct map of all RAM", "ESPFIX stacks"} <= set(layout.index)
    assert layout.loc["ESPFIX stacks", "4 KiB"] == 65536
    assert layout.loc["direct map of all RAM", "1 GiB"] >= 1
    assert (
        layout.loc["user space (VMAs)", "user leaves"] == layout.loc["user space (VMAs)", "4 KiB"]
    )
    assert layout.drop("user space (VMAs)")["user leaves"].sum() == 0


def test_kpti_user_view_maps_far_less_kernel_than_the_kernel_view() -> None:
    table = viz.kpti_comparison(load_capture("x86_64-4level-pti"))
    total = table.loc["kernel half, total"]
    assert total["user CR3 leaves"] < total["kernel CR3 leaves"]
    assert table.loc["vmalloc / ioremap", "user CR3 leaves"] == 0
    assert table.loc["cpu_entry_area", "user CR3 leaves"] > 0


def test_tidy_trace_keeps_event_names_and_formats_gfns_in_hex() -> None:
    run = viz.run_program(0)
    with run.vm.mmu.trace.recording() as trace:
        run.vcpu.access(0x400000, Access.FETCH)
    table = viz.tidy_trace(trace.frame())
    assert "kvm_mmu_get_page" in set(table["event"])
    assert table["details"].str.contains("gfn=0x").any()


def test_run_program_is_deterministic_and_builds_pages_on_first_touch() -> None:
    first, again = viz.run_program(3), viz.run_program(3)
    assert first.outcomes == again.outcomes
    assert [sp.gfn for sp in first.vm.mmu.active] == [sp.gfn for sp in again.vm.mmu.active]
    assert viz.run_program(0).vm.mmu.stats.pf_fixed == 0
    assert first.vm.mmu.stats.pf_fixed == 3
    with pytest.raises(KvmmuError):
        viz.run_program(len(viz.DEMO_PROGRAM) + 1)


def test_shadow_step_view_shows_the_user_fault_of_the_demo_program() -> None:
    text, pages, counters = viz.shadow_step_view(len(viz.DEMO_PROGRAM))
    assert "#PF to the guest, error 0x5" in text
    assert counters.iloc[0]["pf_guest"] == 1
    assert counters.iloc[0]["pages"] == len(pages)


def test_shadow_tables_figure_draws_every_guest_table_and_shadow_page() -> None:
    run = viz.run_program(4)
    fig = viz.shadow_tables_figure(run.vm, run.vcpu)
    n_pages = len(run.vm.mmu.active)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert sum(t.startswith("sp#") for t in texts) == n_pages
    assert sum(t.startswith("guest ") and "\n" in t for t in texts) == len(run.pt.tables)


def test_role_layout_table_covers_role_word_bit_by_bit() -> None:
    table = viz.role_layout_table()
    assert table["width"].sum() == 32 - 5  # bits 19..23 are unused
    assert table.loc["direct", "bits"] == "7"
    assert table.loc["smm", "bits"] == "31:24"


def test_role_scenarios_give_one_gfn_several_pages() -> None:
    wp = viz.role_scenario("cr0_wp")
    assert sorted(wp.groupby("gfn")["cr0_wp"].nunique().unique()) == [2]
    quad = viz.role_scenario("quadrants")
    assert sorted(quad[quad["level"] == 2]["quadrant"]) == [0, 1, 2, 3]
    assert sorted(quad[quad["level"] == 1]["quadrant"]) == [0, 1]
    acc = viz.role_scenario("access")
    assert sorted(acc[acc["level"] == 1]["access"]) == ["-wx", "uwx"]
    large = viz.role_scenario("large_guest_page")
    assert large["direct"].tolist() == [False, False, False, True]
    assert large.loc[large["direct"], "gfns bytes"].tolist() == [0]
    with pytest.raises(KvmmuError, match="pick"):
        viz.role_scenario("nope")


@pytest.mark.parametrize("mode", ["32-bit", "PAE", "4-level", "5-level"])
def test_setup_with_tdp_has_only_direct_pages(mode: str) -> None:
    pages = viz.setup_shadow_pages(mode, tdp=True)
    assert pages["direct"].all() and (pages["gfns bytes"] == 0).all()


@pytest.mark.parametrize("mode", ["32-bit", "PAE", "4-level", "5-level"])
def test_setup_shadow_paging_makes_indirect_pages(mode: str) -> None:
    pages = viz.setup_shadow_pages(mode, tdp=False)
    assert not pages["direct"].any()
    assert pages["4-byte gpte"].all() == (mode == "32-bit")


def test_large_guest_pages_without_host_huge_pages_become_direct_pages() -> None:
    pages = viz.setup_shadow_pages("4-level", large_guest_pages=True, host_huge_pages=False)
    # two 2 MiB guest pages read (clean guest PTEs: mapped u-x), then one written: the write
    # needs a direct page with role.access uwx, a different role for the same gfn
    assert sorted(pages.loc[pages["direct"], "access"]) == ["u-x", "u-x", "uwx"]
    huge = viz.setup_shadow_pages("4-level", large_guest_pages=True, host_huge_pages=True)
    assert not huge["direct"].any()


def test_setup_cr0_wp_is_in_every_role() -> None:
    assert not viz.setup_shadow_pages("PAE", cr0_wp=False)["cr0_wp"].any()
    with pytest.raises(ModeError):
        viz.setup_shadow_pages("6-level")


def test_paging_off_under_shadow_paging_maps_with_direct_pages() -> None:
    """nonpaging_page_fault: with paging off the shadow MMU builds direct pages only."""
    assert viz.setup_shadow_pages("paging off", tdp=False)["direct"].all()


def test_capture_census_counts_real_shadow_pages() -> None:
    summary, per_level = viz.capture_shadow_census(
        load_capture("x86_64-4level"), kernel_per_region=8
    )
    assert summary["user leaves touched"] == 393
    assert summary["guest faults"] == 0
    assert summary["shadow pages"] == per_level.to_numpy().sum()
    assert summary["gfns bytes allocated"] == 4096 * summary["indirect pages"]
    assert per_level.loc[4, "indirect"] == 1


def test_gfn_table_and_lookup_agree_with_get_gfn() -> None:
    vm = viz.demo_mixed_vm()
    direct = next(sp for sp in vm.mmu.active if sp.direct)
    table = viz.gfn_table(direct, [0, 5])
    assert table.loc[5, "get_gfn"] == hex(direct.gfn + 5)
    assert table.loc[5, "stored gfns[i]"] == "(no array)"
    text = viz.gfn_lookup(vm, direct.serial, 5)
    assert f"= {direct.gfn + 5:#x}; nothing stored" in text
    indirect = next(sp for sp in vm.mmu.active if not sp.direct and sp.level == 1)
    index = int(indirect.present_indices()[0])
    assert f"gfns[{index}] = {indirect.get_gfn(index):#x}" in viz.gfn_lookup(
        vm, indirect.serial, index
    )
    with pytest.raises(KvmmuError, match="no shadow page"):
        viz.gfn_lookup(vm, 999, 0)
    with pytest.raises(KvmmuError, match=r"0\.\.511"):
        viz.gfn_lookup(vm, direct.serial, 512)


def test_gfn_audit_finds_no_mismatch_and_catches_a_corrupted_gfns_entry() -> None:
    vm = viz.demo_mixed_vm()
    assert viz.gfn_audit(vm)["mismatches"].sum() == 0
    indirect = next(sp for sp in vm.mmu.active if not sp.direct and sp.level == 1)
    assert indirect.gfns is not None
    index = int(indirect.present_indices()[0])
    indirect.gfns[index] += 1
    assert viz.gfn_audit(vm).loc[f"sp#{indirect.serial}", "mismatches"] == 1


def test_gfns_savings_saves_one_page_per_direct_page() -> None:
    vm = viz.demo_mixed_vm()
    table = viz.gfns_savings(vm)
    n_direct = sum(sp.direct for sp in vm.mmu.active)
    assert table.loc["direct", "saved"] == 4096 * n_direct
    assert table.loc["indirect", "saved"] == 0
    assert table.loc["total", "count"] == len(vm.mmu.active)


def test_gfn_readers_name_kvmmu_functions_that_exist() -> None:
    import importlib

    for path in viz.gfn_readers()["kvmmu"]:
        dotted = path.split(" ")[0]
        module, _, rest = dotted.rpartition(".")
        obj: object
        try:
            obj = importlib.import_module(module)
            obj = getattr(obj, rest)
        except ModuleNotFoundError:
            mod, _, cls = module.rpartition(".")
            obj = getattr(getattr(importlib.import_module(mod), cls), rest)
        assert callable(obj)


def test_vm_is_not_needed_for_role_frame_of_a_page_list() -> None:
    vm = Vm(4 << 20)
    assert viz.role_frame(vm).empty


# -- lessons 5-8 (appended by the notebooks 05-09 engineer) ----------------------------------


def test_table_write_view_counts_one_emulation_per_pte_store() -> None:
    frame, fig = viz.table_write_view(10, 0, False)
    assert frame.loc["pf_emulate", "count"] == 20  # 200 reads, 10 stores per 100
    assert frame.loc["mmu_pte_updated", "count"] == 20
    assert fig.axes[0].get_xlabel() == "events in 200 guest reads"


def test_lesson_7_and_8_figures_have_labelled_axes() -> None:
    from kvmmu.teaching import experiments as X

    sizes = X.savings_by_size("tdp-4k", sizes=(1 << 30, 4 << 30))
    ax = viz.savings_figure(sizes).axes[0]
    assert ax.get_xlabel() == "guest memory (GiB)" and "MiB" in ax.get_ylabel()
    assert len(ax.lines) == 3  # one line per era
    ax = viz.walk_cost_figure(X.walk_costs()).axes[0]
    assert ax.get_xlabel() == "memory references per TLB miss"
    exits = X.pte_write_exits((0.0, 0.2), ops=60)
    ax = viz.pte_exit_figure(exits).axes[0]
    assert len(ax.lines) == 3 and ax.get_ylabel() == "exits per 1000 operations"


def test_mode_view_and_savings_view_reject_bad_input() -> None:
    with pytest.raises(KvmmuError, match="non-negative"):
        viz.mode_view(-1, 0, 0)
    with pytest.raises(KvmmuError, match="size_gib"):
        viz.savings_view(0, "TDP", "4 KiB")
    with pytest.raises(KvmmuError, match="mode must be"):
        viz.savings_view(4, "EPT", "4 KiB")
