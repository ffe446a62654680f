"""Shared test configuration: Hypothesis profiles and a small guest fixture.

``dev`` is the default. ``ci`` is chosen when the ``CI`` environment variable is set: it is
derandomized, so a failure in CI reproduces on any machine, and keeps no example database.
Neither profile has a deadline: simulated MMU operations are slow enough on a small CI machine
for timing-based failures to be noise. Pick one by hand with ``--hypothesis-profile=NAME``.
"""

import os

import pytest
from hypothesis import settings

from kvmmu.hw.guest import GuestPageTables
from kvmmu.hw.memory import GuestMemory
from kvmmu.hw.x86 import PagingMode

settings.register_profile("dev", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True, database=None, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(scope="module")
def guest() -> tuple[GuestMemory, GuestPageTables]:
    """8 MiB of guest memory with 4-level tables mapping one user page at 0x400000."""
    memory = GuestMemory(8 << 20)
    pt = GuestPageTables(memory, PagingMode.LEVEL4)
    pt.map(0x400000, 0x100000, user=True)
    return memory, pt
