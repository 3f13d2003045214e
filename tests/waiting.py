"""Waiting in a test for another thread to get somewhere: bounded, so that a hung test fails; the
bound is never a measured duration (no timed asserts in tests)."""

from __future__ import annotations

import time
from collections.abc import Callable

#: How long a test waits for another thread at most (a bound, not a duration).
WAIT = 30.0


def until(condition: Callable[[], bool]) -> bool:
    """Wait for another thread to reach `condition`; False once WAIT has passed without it."""
    end = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.005)
    return True
