"""Typed errors for bad input to kvmmu.

A fault the *guest* would see (a page fault, a #GP) is never an exception here: it is a value
(see ``kvmmu.hw.walk.PageFault``). The classes below are for programming and input mistakes, and
each message says what to fix.
"""


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
