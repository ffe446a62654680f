"""Bad values by the kind of argument they are given to: one table for every layer's tests.

Issue 13: ``tests/test_bad_input.py`` (hardware and KVM layers) and
``tests/teaching/test_bad_input_teaching.py`` (teaching layer) give each value of a kind to every
argument of that kind and expect a :class:`kvmmu.errors.KvmmuError` naming the argument. A kind
lists what a caller could plausibly get wrong: the wrong type, a truthy string for a flag, a
bool for a number, NaN, an infinity, a negative or an astronomically large size.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from kvmmu.errors import KvmmuError

_COMMON = [None, "x", 1.5, math.nan, math.inf, object(), [1]]
_NOT_NONE = [v for v in _COMMON if v is not None]

BAD: dict[str, list[Any]] = {
    # the hardware and KVM layers' kinds
    "int": [*_COMMON, -1, True, False, 2**200, "1"],
    "opt_int": [*_NOT_NONE, -1, True, 2**200, "1"],
    "bool": [*_COMMON, "no", "yes", 0, 1],
    "opt_bool": [*_NOT_NONE, "no", 0, 1],
    "obj": [*_COMMON, 1, True],
    "opt_obj": [*_NOT_NONE, 1, True],
    "flags": [*_COMMON, "RO", True, -1, 1 << 40],
    "str": [None, 1, 1.5, True, object(), b"x"],
    "opt_path": [v for v in _NOT_NONE if not isinstance(v, str)] + [1, True],
    "list": [v for v in _COMMON if not isinstance(v, list)] + [1, True],
    # the teaching layer's kinds
    "signed_int": [None, "x", 1.5, math.nan, math.inf, object(), [1], True, "1", 2**2000],
    "real": [None, "x", math.nan, math.inf, -math.inf, object(), [1], True, "1", -1, -0.5],
    "rate": [None, "x", math.nan, math.inf, object(), [1], True, "0.5", -0.1, 1.5, 2],
    "seed": [None, 1.5, math.nan, math.inf, object(), [1], True, False, b"x"],
    "choice": [None, "x", "", 1, 1.5, math.nan, True, object(), [1], b"x"],
    "opt_choice": ["x", "", 1, 1.5, math.nan, True, object(), [1], b"x"],
    "path": [None, 1, 1.5, True, object(), b"x", "", [1]],
    "strings": [None, "x", 1, 1.5, True, object(), [1], [None], b"x"],
    "answer": [None, 1.5, math.nan, math.inf, object(), [1], True, "x", b"x", "0xzz"],
    "bit": [None, "no", "yes", 2, -1, 1.5, math.nan, object(), [1], b"x"],
    "letters": [None, "q", "rwx", 1.5, math.nan, object(), [1], True, b"x"],
    "answer_map": [None, "x", 1, 1.5, True, object(), [1], ("level", 1)],
    "answer_seq": [None, "x", 1, 1.5, True, object(), {1: 2}],
    "callable": [None, "x", 1, 1.5, True, object(), [1]],
    "opt_callable": ["x", 1, 1.5, True, object(), [1]],
    "opt_strings": ["x", 1, 1.5, True, object(), [1], [None], b"x"],
    "student_id": [None, 1, 1.5, True, object(), [1], b"x", "", "  "],
    "address": [None, 1.5, math.nan, object(), [1], True, "x", "0xzz", "", b"x", -1, 2**64],
    "coord": [None, "x", math.nan, math.inf, object(), [1], True, "1"],
    "runs": [None, "x", 1, (), [None], ["x"], (1.5,), object(), True, tuple(range(1, 100))],
    "program": [None, "x", 1, (), [1], (1,), object(), True],
    "controls": [None, "x", 1, [1], [None], object(), True],
    "indices": ["x", 1, 1.5, True, [512], [-1], ["x"], [True], [1.5], object()],
}
"""Kind -> the bad values every argument of that kind must refuse."""


def public_callables(modules: dict[str, ModuleType]) -> set[str]:
    """Every public function, class and method defined in ``modules`` (short name -> module),
    as ``short.name`` and ``short.Class.method``; error classes are left out."""
    found: set[str] = set()
    for short, module in modules.items():
        names = getattr(module, "__all__", None) or [
            n for n in vars(module) if not n.startswith("_")
        ]
        for name in names:
            value = getattr(module, name)
            if getattr(value, "__module__", None) != module.__name__ or not callable(value):
                continue
            if inspect.isclass(value) and issubclass(value, BaseException):
                continue  # the error classes themselves
            found.add(f"{short}.{name}")
            if inspect.isclass(value) and not issubclass(value, (int, str)):
                for attr, member in vars(value).items():
                    if attr.startswith("_"):
                        continue
                    if inspect.isfunction(member) or isinstance(member, staticmethod):
                        found.add(f"{short}.{name}.{attr}")
    return found


Entry = tuple[str, str, str, Callable[[Any], object]]
"""A table row: (callable's qualified name, argument, kind, call with the bad value)."""


def cases(table: list[Entry]) -> list[Any]:
    """One pytest case per (row, bad value of the row's kind), named ``entry:arg=type<i>``."""
    out = []
    for name, arg, kind, call in table:
        for i, value in enumerate(BAD[kind]):
            shown = f"{type(value).__name__}{i}"
            out.append(pytest.param(arg, call, value, id=f"{name}:{arg}={shown}"))
    return out


def expect_typed_error(arg: str, call: Callable[[Any], object], value: object) -> None:
    """``call(value)`` raises a KvmmuError whose message names ``arg`` (in any case: a
    notebook's ``STUDENT_ID`` is the ``student_id`` argument)."""
    with pytest.raises(KvmmuError) as info:
        call(value)
    named = arg.rstrip("_").lower() in str(info.value).lower()
    assert named, f"the message should name {arg!r}: {info.value}"
