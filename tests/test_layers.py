"""The package's house rules, read from its source: layers import one way, and nothing cycles.

``kvmmu`` has four layers, each a subpackage: ``hw`` (the x86 CPU and the guest OS), ``kvm`` (the
shadow MMU), ``host`` (the machine's own KVM) and ``teaching`` (lessons, workloads,
experiments). A module may import its own layer and the layers below it; ``kvmmu.errors`` and
``kvmmu.reference`` sit under all of them (with ``kvmmu.lab``, the launcher). Every ``import``
statement counts, wherever it is: inside a function or under ``if TYPE_CHECKING:`` a cycle is
still a cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

import kvmmu

PACKAGE = Path(kvmmu.__file__).resolve().parent
# the rank of each layer: a module may import only modules of its own rank or lower
RANKS = {"base": 0, "hw": 1, "kvm": 2, "host": 3, "teaching": 4}


def module_name(path: Path, root: Path = PACKAGE) -> str:
    """``kvmmu/kvm/mmu.py`` -> ``kvmmu.kvm.mmu``; a package's ``__init__`` is the package."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    """Every module of the package under ``root``, by dotted name."""
    return {module_name(path, root): path for path in sorted(root.rglob("*.py"))}


def imports_of(source: str, name: str, known: Iterable[str], is_package: bool = False) -> set[str]:
    """The package modules that ``source`` (module ``name``) imports, from every import
    statement in it. ``from a import b`` names module ``a.b`` when that is a module, else ``a``."""
    known = set(known)
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in known:
                    found.add(sub)
                elif base in known:
                    found.add(base)
    found.discard(name)
    return found


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package modules it imports."""
    mods = modules(root)
    return {
        name: imports_of(path.read_text(), name, mods, path.name == "__init__.py")
        for name, path in mods.items()
    }


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def layer_of(name: str) -> str:
    """``kvmmu.kvm.mmu`` -> ``kvm``; the top-level modules and the package are ``base``."""
    parts = name.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in RANKS) else "base"


def layer_violations(graph: Mapping[str, set[str]]) -> list[str]:
    """Imports that point up: a module importing a layer above its own."""
    return [
        f"{src} ({layer_of(src)}) imports {dst} ({layer_of(dst)})"
        for src, targets in sorted(graph.items())
        for dst in sorted(targets)
        if RANKS[layer_of(dst)] > RANKS[layer_of(src)]
    ]


# --------------------------------------------------------------------------------------------
# the package itself
# --------------------------------------------------------------------------------------------


def test_kvmmu_has_no_import_cycles() -> None:
    """No group of modules imports each other in a circle, counting every import statement."""
    found = cycles(import_graph())
    assert not found, f"import cycles: {found}; move the shared piece to a module below both"


def test_imports_point_down_the_layers() -> None:
    """teaching -> host -> kvm -> hw -> base, never the other way."""
    bad = layer_violations(import_graph())
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_every_module_lives_in_a_layer() -> None:
    """Only the shared base modules sit at the top of the package; the rest are in a layer."""
    top = {name for name in modules() if layer_of(name) == "base"}
    assert top == {"kvmmu", "kvmmu.errors", "kvmmu.reference", "kvmmu.lab"}  # lab: the launcher


def test_the_mmu_reaches_the_vcpu_only_through_its_interface() -> None:
    """The shadow MMU's modules never import the vCPU module (the vCPU calls into the MMU)."""
    graph = import_graph()
    for name in ("mmu", "sync", "fault", "page_track"):
        assert "kvmmu.kvm.vcpu" not in graph[f"kvmmu.kvm.{name}"], name


# --------------------------------------------------------------------------------------------
# the checks are not vacuous
# --------------------------------------------------------------------------------------------


def _fake_package(tmp_path: Path, files: Mapping[str, str]) -> Path:
    root = tmp_path / "kvmmu"
    for rel, text in {"__init__.py": "", **files}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.mark.parametrize(
    "importer",
    [
        "from kvmmu.kvm import mmu\n",
        "def f():\n    from kvmmu.kvm.mmu import Mmu\n",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import kvmmu.kvm.mmu\n",
        "from . import mmu\n",
        "from .mmu import Mmu\n",
    ],
    ids=["top-level", "in-function", "type-checking", "relative", "relative-name"],
)
def test_a_cycle_is_found_however_it_is_hidden(tmp_path: Path, importer: str) -> None:
    root = _fake_package(
        tmp_path,
        {
            "kvm/__init__.py": "",
            "kvm/mmu.py": "from kvmmu.kvm.vcpu import Vcpu\n",
            "kvm/vcpu.py": importer,
        },
    )
    assert cycles(import_graph(root)) == [["kvmmu.kvm.mmu", "kvmmu.kvm.vcpu"]]


def test_an_upward_import_is_reported(tmp_path: Path) -> None:
    root = _fake_package(
        tmp_path,
        {
            "hw/__init__.py": "",
            "hw/walk.py": "def f():\n    from kvmmu.teaching import lessons\n",
            "teaching/__init__.py": "",
            "teaching/lessons.py": "from kvmmu.hw.walk import f\n",
        },
    )
    graph = import_graph(root)
    assert layer_violations(graph) == [
        "kvmmu.hw.walk (hw) imports kvmmu.teaching.lessons (teaching)"
    ]
    assert cycles(graph) == [["kvmmu.hw.walk", "kvmmu.teaching.lessons"]]


def test_a_clean_tree_passes(tmp_path: Path) -> None:
    root = _fake_package(
        tmp_path,
        {
            "errors.py": "",
            "hw/__init__.py": "",
            "hw/x86.py": "from kvmmu.errors import X\n",
            "kvm/__init__.py": "",
            "kvm/mmu.py": "from kvmmu.hw import x86\nfrom kvmmu import errors\n",
        },
    )
    graph = import_graph(root)
    assert graph["kvmmu.kvm.mmu"] == {"kvmmu.hw.x86", "kvmmu.errors"}
    assert not cycles(graph)
    assert not layer_violations(graph)
