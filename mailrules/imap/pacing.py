"""How hard one server may be pushed: UID-set size, messages per MOVE/COPY, their time-out, throttling.

The numbers are per dialect (compile/dialect.py says which server it is) and documented in
docs/operations.md. A session gets its `Pacing` from the store (`ImapStore`); without one it uses
`GENERIC`.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from mailrules.compile.dialect import UID_SET_BYTES, Dialect

#: A MOVE/COPY gets at least this long before its socket read times out (the connection's own
#: time-out, 30 s by default, is for ordinary commands): servers copy message by message.
TRANSFER_TIMEOUT = 120.0
#: Exchange is slow to MOVE into a folder of hundreds of thousands of messages (minutes, in
#: third-party reports), so a transfer there starts from five minutes.
MICROSOFT_TRANSFER_TIMEOUT = 300.0
#: Added per message in the command, and the ceiling: a command that needs longer is split.
TRANSFER_SECONDS_PER_MESSAGE = 0.05
TRANSFER_TIMEOUT_MAX = 900.0
#: Messages per MOVE/COPY on Exchange: each command stays short enough to finish, and a command
#: that still times out costs the confirmations of one chunk, not of the whole batch (the chunks
#: before it are done and journalled).
MICROSOFT_TRANSFER_BATCH = 500
#: A throttling answer without a suggested backoff (`NO Server Unavailable. 15`) holds commands
#: back this long; a suggested one is followed up to the ceiling.
THROTTLE_BACKOFF = 60.0
THROTTLE_BACKOFF_MAX = 900.0


@dataclass(frozen=True, slots=True)
class Pacing:
    """Per-dialect limits: `uid_set_bytes` per command, `transfer_batch` messages per MOVE/COPY
    (None: only the byte limit), `transfer_timeout` the floor of a MOVE/COPY's read time-out."""

    uid_set_bytes: int = UID_SET_BYTES
    transfer_batch: int | None = None
    transfer_timeout: float = TRANSFER_TIMEOUT

    @classmethod
    def for_dialect(cls, dialect: Dialect) -> Pacing:
        """The pacing for a server of this dialect."""
        if dialect.microsoft:
            return cls(dialect.uid_set_bytes, MICROSOFT_TRANSFER_BATCH, MICROSOFT_TRANSFER_TIMEOUT)
        return cls(dialect.uid_set_bytes)

    def batches(self, uids: Sequence[int]) -> list[list[int]]:
        """The UIDs in ascending runs of at most `transfer_batch` (one run when unlimited)."""
        ordered = sorted(set(uids))
        size = self.transfer_batch or len(ordered) or 1
        return [ordered[i : i + size] for i in range(0, len(ordered), size)]

    def transfer_seconds(self, messages: int, base: float | None) -> float:
        """The read time-out for one MOVE/COPY of `messages` (never below the connection's `base`)."""
        want = self.transfer_timeout + TRANSFER_SECONDS_PER_MESSAGE * max(messages, 0)
        return max(min(want, TRANSFER_TIMEOUT_MAX), base or 0.0)


GENERIC = Pacing()


@contextlib.contextmanager
def read_timeout(sock: socket.socket | None, seconds: float) -> Iterator[None]:
    """The socket's read time-out raised to `seconds` for one command, then put back.

    imapclient sets the time-out on the socket itself (`_set_read_timeout`), and so does IDLE;
    a command on this connection never runs alongside another (one session per thread).
    """
    if sock is None:
        yield
        return
    previous = sock.gettimeout()
    if previous is not None and previous >= seconds:
        yield
        return
    sock.settimeout(seconds)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(previous)


class Backoff:
    """When a throttled server may be asked again: `hold(delay)` after a throttling answer,
    `remaining()` seconds left (0 when free). Thread-safe: the metrics thread may read it."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._until = 0.0
        self._lock = threading.Lock()

    def hold(self, suggested: float | None) -> float:
        """Hold commands back for the suggested seconds (THROTTLE_BACKOFF without one, at most
        THROTTLE_BACKOFF_MAX); returns the delay applied."""
        delay = THROTTLE_BACKOFF if suggested is None else min(max(suggested, 1.0), THROTTLE_BACKOFF_MAX)
        with self._lock:
            self._until = max(self._until, self._clock() + delay)
        return delay

    def remaining(self) -> float:
        with self._lock:
            return max(self._until - self._clock(), 0.0)
