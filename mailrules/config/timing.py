"""An account's timing settings: `poll_interval`, and the silent-connection watchdog's
`idle_renew_seconds` and `idle_timeout_seconds` (docs/operations.md, "Silent connections")."""

from __future__ import annotations

import math
from typing import Any, Protocol

from mailrules.config.locate import KeyPath
from mailrules.config.schema import (
    DEFAULT_IDLE_RENEW,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_POLL_INTERVAL,
    IDLE_MAX_SECONDS,
    Kind,
)


class Context(Protocol):
    """What the loader's context offers this module (mailrules/config/context.py `Context`)."""

    def error(self, path: KeyPath, message: str, at: KeyPath | None = None) -> None: ...
    def get(self, table: dict[str, Any], path: KeyPath, key: str, kind: Kind) -> Any: ...


def timing_settings(t: dict[str, Any], p: KeyPath, cx: Context) -> dict[str, float]:
    """`poll_interval` (> 0), `idle_renew_seconds` and `idle_timeout_seconds` (1 s .. 29 min: RFC 2177
    §3 wants IDLE re-issued within 29 minutes) of the account table `t`, defaults filled in; a bad
    value is reported and replaced by its default."""
    poll = cx.get(t, p, "poll_interval", "number")
    if poll is not None and not (math.isfinite(poll) and poll > 0):
        cx.error((*p, "poll_interval"), f"must be a positive number of seconds, got {poll}")
        poll = None
    out = {"poll_interval": float(poll or DEFAULT_POLL_INTERVAL)}
    idle = (("idle_renew_seconds", DEFAULT_IDLE_RENEW), ("idle_timeout_seconds", DEFAULT_IDLE_TIMEOUT))
    for key, default in idle:
        value = cx.get(t, p, key, "number")
        if value is not None and not (math.isfinite(value) and 1 <= value <= IDLE_MAX_SECONDS):
            cx.error((*p, key), f"must be a number of seconds from 1 to {IDLE_MAX_SECONDS:g}, got {value}")
            value = None
        out[key] = float(value or default)
    return out
