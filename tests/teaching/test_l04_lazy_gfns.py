"""Specifications of kvmmu.teaching.lessons.l04_lazy_gfns: gfns computed and stored, their readers,
the audit, the bytes saved, the gfn widget, and the gfn and saving exercises."""

from __future__ import annotations

import pytest
from widget_output import controls, shown

from kvmmu.errors import KvmmuError
from kvmmu.teaching.lessons import l04_lazy_gfns as lesson


def test_gfn_table_and_lookup_agree_with_get_gfn() -> None:
    vm = lesson.demo_mixed_vm()
    direct = next(sp for sp in vm.mmu.active if sp.direct)
    table = lesson.gfn_table(direct, [0, 5])
    assert table.loc[5, "get_gfn"] == hex(direct.gfn + 5)
    assert table.loc[5, "stored gfns[i]"] == "(no array)"
    text = lesson.gfn_lookup(vm, direct.serial, 5)
    assert f"= {direct.gfn + 5:#x}; nothing stored" in text
    indirect = next(sp for sp in vm.mmu.active if not sp.direct and sp.level == 1)
    index = int(indirect.present_indices()[0])
    assert table.loc[5, "note"] == "computed: no array needed"
    notes = lesson.gfn_table(indirect)
    formula_wrong = notes["gfn + (i << 9*(level-1))"] != notes["stored gfns[i]"]
    assert formula_wrong.any()
    assert (notes.loc[formula_wrong, "note"] == "stored: the formula is not this page's rule").all()
    assert f"gfns[{index}] = {indirect.get_gfn(index):#x}" in lesson.gfn_lookup(
        vm, indirect.serial, index
    )
    with pytest.raises(KvmmuError, match="no shadow page"):
        lesson.gfn_lookup(vm, 999, 0)
    with pytest.raises(KvmmuError, match=r"0\.\.511"):
        lesson.gfn_lookup(vm, direct.serial, 512)


def test_gfn_readers_name_kvmmu_functions_that_exist() -> None:
    import importlib

    for path in lesson.gfn_readers()["kvmmu"]:
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


def test_gfn_audit_finds_no_mismatch_and_catches_a_corrupted_gfns_entry() -> None:
    vm = lesson.demo_mixed_vm()
    assert lesson.gfn_audit(vm)["mismatches"].sum() == 0
    indirect = next(sp for sp in vm.mmu.active if not sp.direct and sp.level == 1)
    assert indirect.gfns is not None
    index = int(indirect.present_indices()[0])
    indirect.gfns[index] += 1
    assert lesson.gfn_audit(vm).loc[f"sp#{indirect.serial}", "mismatches"] == 1


def test_gfns_savings_saves_one_page_per_direct_page() -> None:
    vm = lesson.demo_mixed_vm()
    table = lesson.gfns_savings(vm)
    n_direct = sum(sp.direct for sp in vm.mmu.active)
    assert table.loc["direct", "saved"] == 4096 * n_direct
    assert table.loc["indirect", "saved"] == 0
    assert table.loc["total", "count"] == len(vm.mmu.active)


def test_gfn_widget_shows_get_gfn_of_the_chosen_page_and_index() -> None:
    vm = lesson.demo_mixed_vm()
    widget = lesson.make_gfn_widget(vm)
    page, index = controls(widget)
    direct = next(sp for sp in vm.mmu.active if sp.direct)
    page.value = direct.serial
    index.value = 77
    assert shown(widget) == [lesson.gfn_lookup(vm, direct.serial, 77) + "\n"]
    assert "nothing stored" in shown(widget)[0]


def test_gfn_hints_for_each_slip() -> None:
    p = next(lesson.gfn_problem(s) for s in range(50) if lesson.gfn_problem(s).page.level == 2)
    sp, i = p.page, p.index
    right = sp.gfn + (i << 9)
    assert sp.gfns is None and lesson.check_gfn(p, right).passed
    assert "guest-physical address" in lesson.check_gfn(p, right << 12).message
    assert "page's own gfn" in lesson.check_gfn(p, i << 9).message
    assert "more than one frame" in lesson.check_gfn(p, sp.gfn + i).message
    assert "off by one level" in lesson.check_gfn(p, sp.gfn + (i << 18)).message
    assert hex(right) not in lesson.check_gfn(p, 1).message


def test_saving_counts_every_direct_page() -> None:
    p = next(lesson.saving_problem(s) for s in range(50) if not lesson.saving_problem(s).huge_pages)
    n_leaf = p.size_mib // 2
    right = (n_leaf + 3) * 4096  # last-level pages, one each at levels 2 and 3, the root
    assert lesson.check_saving(p, right).passed
    assert "last-level pages only" in lesson.check_saving(p, n_leaf * 4096).message
    assert "give bytes" in lesson.check_saving(p, n_leaf + 3).message
    assert "direct ones too" in lesson.check_saving(p, 0).message
