"""ipywidgets for the notebooks: thin shells over the pure functions of :mod:`kvmmu.teaching.viz`.

Each ``make_xxx_widget(...)`` builds controls and an ``Output``, wires them by hand with
``observe`` (not ``interact``, whose output differs under nbval), draws the current state once,
and returns the container; the ``Output`` is always the container's last child. All logic lives
in the pure function the widget calls, which the tests call directly with the values the
controls would hold. The Output is filled with ``append_stdout``/``append_display_data``, so it
works, and can be tested, without a running kernel. No kernel counterpart.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import pandas as pd
from IPython.display import Image, display
from matplotlib.figure import Figure

from kvmmu.errors import KvmmuError
from kvmmu.hw.memory import GuestMemory
from kvmmu.hw.walk import CpuState
from kvmmu.kvm.vcpu import Vm
from kvmmu.teaching import viz

__all__ = [
    "figure_png",
    "make_gfn_widget",
    "make_role_widget",
    "make_shadow_steps_widget",
    "make_walk_widget",
    "render_into",
    "show",
]


def figure_png(fig: Figure) -> bytes:
    """A Figure as PNG bytes (transparent background, the figure's own dpi).

    No kernel counterpart.
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", transparent=True, bbox_inches="tight")
    return buffer.getvalue()


def show(fig: Figure) -> None:
    """Display a Figure in a notebook as a PNG only, with no ``<Figure ...>`` text beside it.

    The stored notebook output then holds an image (which nbval does not compare) and no text
    that could differ between runs.
    """
    png = base64.b64encode(figure_png(fig)).decode()
    display({"image/png": png}, raw=True)  # type: ignore[no-untyped-call]


def _append(out: Any, value: object) -> None:
    if isinstance(value, str):
        out.append_stdout(value + "\n")
    elif isinstance(value, Figure):
        out.append_display_data(Image(data=figure_png(value)))  # type: ignore[no-untyped-call]
    elif isinstance(value, tuple):
        for item in value:
            _append(out, item)
    elif isinstance(value, pd.Series):
        out.append_display_data(value.to_frame())
    else:
        out.append_display_data(value)


def render_into(out: Any, produce: Callable[[], object]) -> None:
    """Replace what ``out`` (an ``ipywidgets.Output``) shows with what ``produce()`` returns.

    Text is appended as stdout, DataFrames as rich display data, Figures as PNG images; a tuple
    shows each of its items in turn. An input error (:class:`KvmmuError`) is shown as its
    message, so a reader who types a bad value sees what to fix instead of a traceback.
    """
    out.outputs = ()
    try:
        value = produce()
    except KvmmuError as err:
        out.append_stdout(f"error: {err}\n")
        return
    _append(out, value)


def _box(controls: list[Any], out: Any) -> Any:
    return widgets.VBox([widgets.HBox(controls), out])


def _wire(controls: list[Any], produce: Callable[[], object]) -> Any:
    """Controls above an Output that shows ``produce()`` now and after every change of value."""
    out = widgets.Output()

    def update(_: object = None) -> None:
        render_into(out, produce)

    for control in controls:
        control.observe(update, names="value")
    update()
    return _box(controls, out)


def make_walk_widget(
    memory: GuestMemory,
    cpu: CpuState,
    address: str = "0x400123",
    access: str = "read",
    cpl: int = 3,
    *,
    draw: bool = False,
) -> Any:
    """Type an address, pick an access kind and a CPL, see the walk (:func:`viz.walk_text`).

    With ``draw`` the chain picture (:func:`viz.walk_tree_figure`) is shown under the text.
    Controls, in order: address (Text), access (Dropdown), CPL (Dropdown).
    """
    text = widgets.Text(value=address, description="address")
    kind = widgets.Dropdown(options=["read", "write", "fetch"], value=access, description="access")
    level = widgets.Dropdown(options=[0, 3], value=cpl, description="CPL")

    def produce() -> object:
        trace = viz.walk_text(memory, cpu, text.value, kind.value, level.value)
        if not draw:
            return trace
        return trace, viz.walk_tree_figure(memory, cpu, text.value, kind.value, level.value)

    return _wire([text, kind, level], produce)


def make_shadow_steps_widget(
    program: tuple[viz.ProgramStep, ...] = viz.DEMO_PROGRAM, steps: int = 0
) -> Any:
    """Step through a small guest program and watch shadow pages appear.

    A slider picks how many steps have run; "next step" moves it by one. Shows
    :func:`viz.shadow_step_view`: the log, the shadow pages, the counters.
    Controls, in order: steps (IntSlider), next (Button), reset (Button).

    No kernel counterpart: a widget over :func:`viz.shadow_step_view`.
    """
    slider = widgets.IntSlider(value=steps, min=0, max=len(program), description="steps")
    step = widgets.Button(description="next step")
    reset = widgets.Button(description="reset")
    out = widgets.Output()

    def update(_: object = None) -> None:
        render_into(out, lambda: viz.shadow_step_view(slider.value, program))

    def advance(_: object) -> None:
        slider.value = min(slider.value + 1, slider.max)

    def restart(_: object) -> None:
        slider.value = 0

    slider.observe(update, names="value")
    step.on_click(advance)
    reset.on_click(restart)
    update()
    return _box([slider, step, reset], out)


def make_role_widget(
    mode: str = "4-level",
    cr0_wp: bool = True,
    tdp: bool = False,
    large_guest_pages: bool = False,
    host_huge_pages: bool = True,
) -> Any:
    """Change the guest's setup and see which shadow pages exist, with their roles.

    Shows :func:`viz.setup_shadow_pages`. Controls, in order: mode (Dropdown), CR0.WP, TDP,
    guest large pages, host huge pages (Checkboxes).

    No kernel counterpart: a widget over :func:`viz.setup_shadow_pages`.
    """
    modes = widgets.Dropdown(
        options=["paging off", "32-bit", "PAE", "4-level", "5-level"],
        value=mode,
        description="mode",
    )
    wp = widgets.Checkbox(value=cr0_wp, description="CR0.WP")
    use_tdp = widgets.Checkbox(value=tdp, description="TDP")
    large = widgets.Checkbox(value=large_guest_pages, description="guest large pages")
    huge = widgets.Checkbox(value=host_huge_pages, description="host huge pages")
    return _wire(
        [modes, wp, use_tdp, large, huge],
        lambda: viz.setup_shadow_pages(
            modes.value, wp.value, use_tdp.value, large.value, huge.value
        ),
    )


def make_gfn_widget(vm: Vm | None = None, serial: int | None = None, index: int = 0) -> Any:
    """Pick a shadow page and an entry; see the gfn computed and, if indirect, stored.

    Shows :func:`viz.gfn_lookup` for the VM (default :func:`viz.demo_mixed_vm`, which has
    direct and indirect pages). Controls, in order: page (Dropdown of serials), index
    (IntSlider 0..511).
    """
    machine = vm if vm is not None else viz.demo_mixed_vm()
    pages = sorted(machine.mmu.active, key=lambda sp: sp.serial)
    if not pages:
        raise KvmmuError("this VM has no shadow pages yet; run some guest accesses first")
    options = [(sp.describe(), sp.serial) for sp in pages]
    first = serial if serial is not None else pages[-1].serial
    page = widgets.Dropdown(
        options=options, value=first, description="page", layout=widgets.Layout(width="30em")
    )
    slot = widgets.IntSlider(value=index, min=0, max=511, description="index")
    return _wire([page, slot], lambda: viz.gfn_lookup(machine, page.value, slot.value))


# -- lessons 5-8 (appended by the notebooks 05-09 engineer) ----------------------------------


def show_figure(fig: Figure) -> None:
    """Display a Figure in a notebook as a PNG image (no ``<Figure ...>`` text repr)."""
    from IPython.display import display

    display(Image(data=figure_png(fig)))  # type: ignore[no-untyped-call]


def make_table_write_widget(pte_rate: int = 10, pde_rate: int = 0, unsync: bool = False) -> Any:
    """Pick how often the guest writes its page tables; see the MMU's counters.

    Shows :func:`viz.table_write_view`. Controls, in order: PTE stores per 100 reads
    (IntSlider 0..100), PDE stores per 100 reads (IntSlider 0..20), unsync (Checkbox).
    """
    pte = widgets.IntSlider(value=pte_rate, min=0, max=100, description="PTE / 100")
    pde = widgets.IntSlider(value=pde_rate, min=0, max=20, description="PDE / 100")
    allow = widgets.Checkbox(value=unsync, description="allow unsync")
    return _wire([pte, pde, allow], lambda: viz.table_write_view(pte.value, pde.value, allow.value))


def make_sync_widget(actions: tuple[str, ...] = ()) -> Any:
    """Buttons edit / access / invlpg / CR3 reload / reset, in any order; the table shows the
    guest PTE, the spte, the TLB and the unsync flag after each action (:func:`viz.sync_view`).

    Controls, in order: edit, access, invlpg, cr3, reset (Buttons). The actions so far are
    kept on the container as ``actions`` (a list).
    """
    from kvmmu.teaching.exercises import SYNC_ACTIONS

    done: list[str] = list(actions)
    buttons = [widgets.Button(description=name) for name in SYNC_ACTIONS]
    reset = widgets.Button(description="reset")
    out = widgets.Output()

    def update() -> None:
        render_into(out, lambda: viz.sync_view(tuple(done)))

    def press(name: str) -> Callable[[object], None]:
        def handler(_: object) -> None:
            done.append(name)
            update()

        return handler

    def restart(_: object) -> None:
        done.clear()
        update()

    for name, button in zip(SYNC_ACTIONS, buttons, strict=True):
        button.on_click(press(name))
    reset.on_click(restart)
    update()
    box = _box([*buttons, reset], out)
    box.actions = done
    return box


def make_mode_widget(tlb_misses: int = 2000, pt_writes: int = 20, cr3_loads: int = 10) -> Any:
    """Set a workload mix; see which paging mode costs less (:func:`viz.mode_view`).

    Controls, in order: TLB misses, page-table stores, CR3 loads per million instructions
    (IntSliders).
    """
    tlb = widgets.IntSlider(value=tlb_misses, min=0, max=20000, step=100, description="TLB miss")
    writes = widgets.IntSlider(value=pt_writes, min=0, max=500, step=5, description="PT stores")
    cr3 = widgets.IntSlider(value=cr3_loads, min=0, max=200, step=1, description="CR3 loads")
    return _wire([tlb, writes, cr3], lambda: viz.mode_view(tlb.value, writes.value, cr3.value))


def make_savings_widget(size_gib: int = 4, mode: str = "TDP", page_size: str = "4 KiB") -> Any:
    """Pick a guest size, a paging mode and a page size; see shadow-page memory by era.

    Shows :func:`viz.savings_view`. Controls, in order: size in GiB (IntSlider 1..64), mode
    (Dropdown TDP/shadow), page size (Dropdown 4 KiB / 2 MiB).
    """
    size = widgets.IntSlider(value=size_gib, min=1, max=64, description="GiB")
    paging = widgets.Dropdown(options=["TDP", "shadow"], value=mode, description="mode")
    pages = widgets.Dropdown(options=["4 KiB", "2 MiB"], value=page_size, description="page size")
    return _wire(
        [size, paging, pages], lambda: viz.savings_view(size.value, paging.value, pages.value)
    )
