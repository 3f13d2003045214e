"""Suite-wide settings: property tests are deterministic under CI=true and explore locally."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

from hypothesis import settings

# The cache directory (mailrules/cachedir.py: Lark's tables, parsed rule files, regex translations)
# is the suite's own, made afresh each run and inherited by the daemons the tests start: a result
# cached by another checkout or an earlier version of the code can't decide a test.
# pip, which test_wheel runs, keeps its own cache where it was.
_USER_CACHE = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
os.environ.setdefault("PIP_CACHE_DIR", os.path.join(_USER_CACHE, "pip"))
_CACHE_HOME = tempfile.mkdtemp(prefix="mailrules-test-cache-")
os.environ["XDG_CACHE_HOME"] = _CACHE_HOME
atexit.register(shutil.rmtree, _CACHE_HOME, True)

# CI must judge the code, not the dice: the same examples every run (a failure found locally is a
# bug to fix; CI should not land or reject a change by luck). Locally, each run explores anew.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI") == "true":
    settings.load_profile("ci")
