"""Shared test configuration: Hypothesis profiles.

``dev`` is the default. ``ci`` is chosen when the ``CI`` environment variable is set: it is
derandomized, so a failure in CI reproduces on any machine, and keeps no example database.
Neither profile has a deadline: simulated MMU operations are slow enough on a small CI machine
for timing-based failures to be noise. Pick one by hand with ``--hypothesis-profile=NAME``.
"""

import os

from hypothesis import settings

settings.register_profile("dev", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True, database=None, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
