"""Typed errors for bad input to kvmmu.

A fault the *guest* would see (a page fault, a #GP) is never an exception here: it is a value
(see ``kvmmu.hw.walk.PageFault``). The classes below are for programming and input mistakes, and
each message says what to fix.
"""

import math
import os
from collections.abc import Sequence
from enum import Enum, IntFlag
from pathlib import Path
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
    maximum: int | None = None,
    bits: int = 64,
    error: type[KvmmuError] = AddressError,
) -> int:
    """Return ``value`` if it is an int with ``minimum <= value < 2**bits`` (not a bool),
    and ``value <= maximum`` when a maximum is given.

    For sizes, counts and budgets: 100.5, NaN, ``"100"`` and ``True`` are refused, and a
    ``maximum`` keeps ``rounds=2**200`` from running for ever. No kernel counterpart.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(f"{name} must be an int, got {_shown(value)}")
    if maximum is not None and not minimum <= value <= maximum:
        where = "above the limit" if value > maximum else "out of range"
        raise error(f"{name}={_short(value)} is {where}: pass {minimum}..{maximum}")
    if value < minimum or value >> bits:
        wanted = "a non-negative int" if minimum == 0 else f"an int of at least {minimum}"
        raise error(f"{name}={_short(value)} is out of range: pass {wanted} below 2**{bits}")
    return value


def _short(value: int) -> str:
    """An int for a message: in full unless it is huge (``2**200`` is not printed whole)."""
    return (
        str(value)
        if abs(value) < 1 << 64
        else f"{'-' if value < 0 else ''}2**{value.bit_length() - 1}+"
    )


def check_optional_count(
    name: str,
    value: object,
    *,
    minimum: int = 0,
    maximum: int | None = None,
    error: type[KvmmuError] = AddressError,
) -> int | None:
    """:func:`check_count`, with None allowed (meaning "the default").

    No kernel counterpart.
    """
    if value is None:
        return None
    return check_count(name, value, minimum=minimum, maximum=maximum, error=error)


def check_real(
    name: str,
    value: object,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    error: type[KvmmuError] = ArgumentError,
) -> float:
    """Return ``value`` as a float if it is a finite real number within the bounds given.

    An int, a float or a numpy number; a bool, NaN, an infinity and text are refused, so a
    cost or a rate cannot silently turn a comparison into False. No kernel counterpart.
    """
    if isinstance(value, bool) or (not isinstance(value, int | float) and not _numpy_real(value)):
        raise error(f"{name} must be a number, got {_shown(value)}")
    if isinstance(value, int) and abs(value) >> 1023:
        raise error(f"{name}={_short(value)} is too large to be a finite number")
    number = float(value)  # type: ignore[arg-type]
    if not math.isfinite(number):
        raise error(f"{name} must be a finite number, got {number}")
    low = -math.inf if minimum is None else minimum
    high = math.inf if maximum is None else maximum
    if not low <= number <= high:
        raise error(f"{name}={number:g} is out of range: pass {_range_text(minimum, maximum)}")
    return number


def _numpy_real(value: object) -> bool:
    """A numpy integer or float scalar, without importing numpy here."""
    kind = getattr(getattr(value, "dtype", None), "kind", None)
    return kind in ("i", "u", "f") and getattr(value, "ndim", None) == 0


def _range_text(minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f"a number from {minimum:g} to {maximum:g}"
    if minimum == 0:
        return "a non-negative number"
    if minimum is not None:
        return f"a number of at least {minimum:g}"
    return f"a number of at most {maximum:g}"


def check_choice(
    name: str, value: object, choices: Sequence[_T], error: type[KvmmuError] = ArgumentError
) -> _T:
    """Return the member of ``choices`` that ``value`` is; otherwise raise listing them all.

    Compared by type and value, so ``True`` is not ``1`` and an unhashable value is refused
    like any other (no lookup in a dict or a cache first). No kernel counterpart.
    """
    for choice in choices:
        same_kind = isinstance(value, type(choice)) and isinstance(value, bool) == isinstance(
            choice, bool
        )
        if same_kind and value == choice:
            return choice
    accepted = ", ".join(
        f"{type(c).__name__}.{c.name}" if isinstance(c, Enum) else repr(c) for c in choices
    )
    raise error(f"{name} must be one of {accepted}; got {_shown(value)}")


def check_str(name: str, value: object, *, error: type[KvmmuError] = ArgumentError) -> str:
    """Return ``value`` if it is a ``str`` (not bytes, not a number); no kernel counterpart."""
    if not isinstance(value, str):
        raise error(f"{name} must be a string, got {_shown(value)}")
    return value


def check_strings(
    name: str, value: object, error: type[KvmmuError] = ArgumentError, *, limit: int = 10_000
) -> list[str]:
    """Return ``value`` as a list if it is a list or tuple of at most ``limit`` strings.

    One string is refused: its letters would be taken for the items (``argv="--help"``,
    ``actions="edit"``). No kernel counterpart.
    """
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise error(f"{name} must be a list of strings such as ['a', 'b'], got {_shown(value)}")
    if len(value) > limit:
        raise error(f"{name} has {len(value)} items, above the limit of {limit}")
    return list(value)


def check_path(name: str, value: object, error: type[KvmmuError] = ArgumentError) -> Path:
    """Return ``value`` as a :class:`~pathlib.Path` if it is a non-empty ``str`` or a path.

    Bytes, numbers and None are refused, so a command names the argument it could not use.
    No kernel counterpart.
    """
    text = os.fspath(value) if isinstance(value, str | os.PathLike) else None
    if not isinstance(text, str) or not text.strip() or "\x00" in text:
        raise error(
            f"{name} must be a file or folder path (a str or pathlib.Path), got {_shown(value)}"
        )
    return Path(text)


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
        wanted = "a function or None" if optional else "a function"
        raise ArgumentError(f"{name} must be {wanted}, got {_shown(value)}")
