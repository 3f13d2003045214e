"""Suite-wide settings: property tests are deterministic under CI=true and explore locally."""

from __future__ import annotations

import os

from hypothesis import settings

# CI must judge the code, not the dice: the same examples every run (a failure found locally is a
# bug to fix; CI should not land or reject a change by luck). Locally, each run explores anew.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI") == "true":
    settings.load_profile("ci")
