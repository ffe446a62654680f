"""One module per lesson: each notebook's tables, figures, widget builders and exercises.

A notebook imports its lesson's module, for example
``from kvmmu.teaching.lessons import l04_lazy_gfns as lesson``, and each module reads top to
bottom in the order of its notebook; its docstring names the notebook that uses it.

| notebook | module |
| --- | --- |
| ``00_welcome.ipynb`` | (none: the welcome teaches with a few lines of its own) |
| ``01_guest_page_tables.ipynb`` | :mod:`.l01_guest_page_tables` |
| ``02_shadow_paging.ipynb`` | :mod:`.l02_shadow_paging` |
| ``03_mmu_page_role.ipynb`` | :mod:`.l03_mmu_page_role` |
| ``04_lazy_gfns.ipynb`` | :mod:`.l04_lazy_gfns` |
| ``05_write_protection.ipynb`` | :mod:`.l05_write_protection` |
| ``06_unsync.ipynb`` | :mod:`.l06_unsync` |
| ``07_memory_savings.ipynb`` | :mod:`.l07_memory_savings` |
| ``08_tdp_vs_shadow.ipynb`` | :mod:`.l08_tdp_vs_shadow` |
| ``09_lab.ipynb`` | :mod:`.l09_lab` (gathers the exercises of lessons 1-8) |
| ``10_beside_kvm.ipynb`` | :mod:`.l10_beside_kvm` (a stored real-KVM run; live with ``/dev/kvm``) |

What more than one lesson uses lives beside this package: :mod:`kvmmu.teaching.draw` (colours,
boxes, bar axes, the shadow-page and trace tables), :mod:`kvmmu.teaching.ui` (ipywidgets wiring,
figures as images), :mod:`kvmmu.teaching.memo` (caches of pure results) and
:mod:`kvmmu.teaching.problems` (the exercise base: ``Problem``, ``Check``, seeds, answer
parsing). A lesson module imports those, and otherwise only earlier lessons'
modules, never a later one. No kernel counterpart.
"""
