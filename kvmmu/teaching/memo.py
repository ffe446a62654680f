"""Caches of the teaching layer: a pure result asked for again is not computed again.

A widget's slider comes back to values it showed before, and a notebook often shows a result in
a cell and then again as a widget's first state. :func:`pure` caches a function of plain
values (ints, strings, bools, enums, tuples of frozen dataclasses) whose result depends on
nothing else, and hands each caller a deep copy, so that changing a returned DataFrame cannot
change what the next caller gets. Arguments that cannot be hashed (a list, say) skip the cache:
the call then runs as if undecorated. A ``check`` given to :func:`pure` runs before the cache is
consulted, so a bad argument, hashable or not, raises its typed error before any lookup. Errors
are never cached. :func:`clear` empties every cache at once (a benchmark's first visit, a test
comparing cached with uncached results). No kernel counterpart.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from kvmmu.errors import ArgumentError, check_callable, check_count

__all__ = ["clear", "pure"]

P = ParamSpec("P")
R = TypeVar("R")

_CLEARS: list[Callable[[], None]] = []
MAXSIZE_LIMIT = 1 << 16
"""The most results one cache keeps (each a DataFrame or a few; more would hold memory)."""


def pure(
    maxsize: int = 256, *, check: Callable[..., object] | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a pure function with an LRU cache of ``maxsize`` results.

    ``check``, called with the same arguments, validates them first, on every call: a cached
    result is never returned for arguments the function would refuse, and a bad argument
    never reaches the cache's hashing (its typed error, not a ``TypeError``).

    Arguments are told apart by type as well as value (``typed=True``), so ``f(1)`` and
    ``f(True)`` are separate entries and a check that refuses bools still sees the bool.
    Only for functions whose arguments are values: an object hashed by identity (a ``Vm``)
    could change between two calls and the cache would not know. No kernel counterpart.
    """
    check_count("maxsize", maxsize, maximum=MAXSIZE_LIMIT, error=ArgumentError)
    check_callable("check", check)

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        lru = functools.lru_cache(maxsize=maxsize, typed=True)(func)
        _CLEARS.append(lru.cache_clear)
        cached: Callable[..., R] = lru  # called only with arguments that hash

        @functools.wraps(func)
        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            if check is not None:
                check(*args, **kwargs)
            try:
                hash((args, tuple(kwargs.items())))
            except TypeError:
                return func(*args, **kwargs)
            return copy.deepcopy(cached(*args, **kwargs))

        return call

    return decorate


def clear() -> None:
    """Empty every cache made by :func:`pure`; no kernel counterpart."""
    for clear_one in _CLEARS:
        clear_one()
