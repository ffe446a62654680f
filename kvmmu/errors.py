"""Typed errors for bad input to kvmmu.

A fault the *guest* would see (a page fault, a #GP) is never an exception here: it is a value
(see ``kvmmu.hw.walk.PageFault``). The classes below are for programming and input mistakes, and
each message says what to fix.
"""

from enum import IntFlag
from typing import TypeVar

_T = TypeVar("_T")
_F = TypeVar("_F", bound=IntFlag)


class KvmmuError(Exception):
    """Base class of every error kvmmu raises on bad input."""


class AddressError(KvmmuError, ValueError):
    """An address or frame number is out of range, misaligned, or of the wrong type."""


class MemslotError(KvmmuError, ValueError):
    """A memslot is malformed, overlaps another, or a gfn has no memslot where one is needed."""


class ModeError(KvmmuError, ValueError):
    """A CPU register combination that no x86 CPU accepts, or an operation the mode lacks."""


class MappingError(KvmmuError, ValueError):
    """A guest page-table edit that cannot be made (bad size, overlap, unmapped range)."""


def check_int(name: str, value: object, *, bits: int = 64) -> int:
    """Return ``value`` if it is a non-negative int below ``2**bits``, else raise AddressError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise AddressError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 0 or value >> bits:
        raise AddressError(
            f"{name}={value:#x} does not fit in {bits} bits; pass 0 <= {name} < 2**{bits}"
        )
    return value


class ArgumentError(KvmmuError, TypeError):
    """An argument of the wrong type or kind: a string where a flag or an int is meant, say."""


# --------------------------------------------------------------------------------------------
# Validators for the public entry points. Each raises with the argument's name and what to
# pass instead, and is called once at the API edge, never inside a walk or fault loop.
# --------------------------------------------------------------------------------------------


def _shown(value: object) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def check_bool(name: str, value: object, error: type[KvmmuError] = ArgumentError) -> bool:
    """Return ``value`` if it is ``True`` or ``False``; a truthy ``"no"`` is not a flag.

    No kernel counterpart.
    """
    if not isinstance(value, bool):
        raise error(f"{name} must be True or False, got {_shown(value)}")
    return value


def check_count(
    name: str,
    value: object,
    *,
    minimum: int = 0,
    bits: int = 64,
    error: type[KvmmuError] = AddressError,
) -> int:
    """Return ``value`` if it is an int with ``minimum <= value < 2**bits`` (not a bool).

    For sizes, counts and budgets: 100.5, NaN, ``"100"`` and ``True`` are refused.
    No kernel counterpart.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(f"{name} must be an int, got {_shown(value)}")
    if value < minimum or value >> bits:
        wanted = "a non-negative int" if minimum == 0 else f"an int of at least {minimum}"
        raise error(f"{name}={value} is out of range: pass {wanted} below 2**{bits}")
    return value


def check_optional_count(
    name: str, value: object, *, minimum: int = 0, error: type[KvmmuError] = AddressError
) -> int | None:
    """:func:`check_count`, with None allowed (meaning "the default").

    No kernel counterpart.
    """
    return None if value is None else check_count(name, value, minimum=minimum, error=error)


def check_instance(
    name: str, value: object, cls: type[_T], hint: str, error: type[KvmmuError] = ArgumentError
) -> _T:
    """Return ``value`` if it is a ``cls``; otherwise raise naming ``hint``, what to pass.

    No kernel counterpart.
    """
    if not isinstance(value, cls):
        raise error(f"{name} must be {hint}, got {_shown(value)}")
    return value


def check_flags(
    name: str, value: object, cls: type[_F], error: type[KvmmuError] = ArgumentError
) -> _F:
    """Return ``value`` as a ``cls`` flag set if it is one (or an int) with only known bits.

    What ``check_memory_region_flags`` does for memslot flags: unknown bits are refused.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        known = " | ".join(f"{cls.__name__}.{m.name}" for m in cls if m.value)
        raise error(f"{name} must be {cls.__name__} flags ({known}), got {_shown(value)}")
    allowed = 0
    for member in cls:
        allowed |= member.value
    if value < 0 or value & ~allowed:
        raise error(
            f"{name}={value:#x} sets bits {value & ~allowed:#x} that {cls.__name__} does not "
            f"define; known bits: {allowed:#x}"
        )
    return cls(value)


def check_callable(name: str, value: object, *, optional: bool = True) -> None:
    """Refuse a non-callable hook (``on_write=5``); None is allowed when ``optional``.

    No kernel counterpart.
    """
    if value is None and optional:
        return
    if not callable(value):
        raise ArgumentError(f"{name} must be a function or None, got {_shown(value)}")
