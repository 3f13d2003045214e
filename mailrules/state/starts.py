"""The lease keeper's starts, run on a thread of their own so that a round never waits for them.

Starting an account (its watchers, ~1 s at 30 mailboxes on a loaded replica) used to run inside
the keeper's round: a round that took 80 accounts ran for 80 s and renewed nothing meanwhile, so
the leases taken first expired while it went on (bench/README.md, cluster_bench). Here the round
only acquires the leases and hands them over (`submit`); one thread starts them, one after
another, in the order taken, while the keeper's next rounds renew them.

Fencing is unchanged: a lease is acquired (with its new token) before its start is submitted, and
the account's work writes only through `state.fenced([lease])`, so nobody else writes the account
while it waits here, and a previous holder's late writes are refused. An account dropped by the
keeper (lost, expired, claimed, handed over, shutdown) goes through `stop`: a start still waiting
is cancelled (nothing to stop); an account started, or whose start is in flight, is stopped on
this same thread, after that start and before any later start of it, so a stop never runs beside
the start of the same account, and the keeper never waits for either. Stops come before the starts
still waiting (their order matters only per account, and a dropped account's waiting starts are
cancelled), so an account given up stops within the start in flight plus its own stop.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence

from mailrules.state.interface import Lease

log = logging.getLogger(__name__)


class Starts:
    """Starts and stops accounts on one thread (starts in the order submitted); thread-safe."""

    def __init__(
        self,
        start: Callable[[Lease], None],
        stop: Callable[[Sequence[str]], None] = lambda accounts: None,
        *,
        name: str = "lease-starts",
    ) -> None:
        self._start = start
        self._stop = stop
        self._name = name
        self._cond = threading.Condition()
        self._queue: deque[Lease] = deque()
        self._stops: list[str] = []  # accounts to stop, before the next start
        self._stopping = 0  # accounts being stopped now
        self._current: str | None = None
        self._dropped = False  # the start in flight was stopped meanwhile (its stop is queued)
        self._started: set[str] = set()  # started, not stopped since
        self._failed: list[Lease] = []  # whose start raised, not yet collected by `failed()`
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, lease: Lease) -> None:
        """Start `lease.account` after the starts submitted before it (the thread begins here)."""
        with self._cond:
            if self._closed:
                raise RuntimeError("lease starts closed")
            self._queue.append(lease)
            self._wake()

    def pending(self) -> int:
        """Accounts submitted and not started yet (waiting, or being started now)."""
        with self._cond:
            return len(self._queue) + (self._current is not None)

    def stop(self, accounts: Sequence[str]) -> list[str]:
        """`accounts` are no longer held: cancel their starts still waiting, and stop, on this
        thread, those started or being started (after that start); returns at once, with the
        accounts (in the order given) whose stop was queued. Once closed, they are stopped here."""
        wanted = set(accounts)
        with self._cond:
            self._queue = deque(x for x in self._queue if x.account not in wanted)
            flight = self._current if self._current in wanted and not self._dropped else None
            if flight is not None:
                self._dropped = True  # its start ends first (one thread), then its stop
            out = [a for a in accounts if a in self._started or a == flight]
            self._started -= wanted
            self._failed = [x for x in self._failed if x.account not in wanted]
            if out and not self._closed:
                self._stops += out
                self._wake()
                return out
        if out:
            self._stop(out)
        return out

    def stopping(self) -> int:
        """Accounts whose stop is queued or running, not yet done."""
        with self._cond:
            return len(self._stops) + self._stopping

    def failed(self) -> list[Lease]:
        """The leases whose start raised since the last call (the keeper releases them)."""
        with self._cond:
            out, self._failed = self._failed, []
        return out

    def close(self) -> None:
        """No more starts: those still waiting are dropped, the one in flight finishes, the stops
        queued are done (before this returns)."""
        with self._cond:
            self._closed = True
            self._queue.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _wake(self) -> None:
        """(Under the lock.) The thread begins at the first work; wake it."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stops and not self._closed:
                    self._cond.wait()
                stops, self._stops = self._stops, []
                self._stopping = len(stops)
                if not stops and self._closed:
                    return
                lease = None if stops else self._queue.popleft()
                if lease is not None:
                    self._current, self._dropped = lease.account, False
            if stops:
                try:
                    self._stop(stops)
                except Exception:  # the leases are gone either way; a failing stop must not end the thread
                    log.exception("leases: stopping %s failed", ", ".join(stops))
                finally:
                    with self._cond:
                        self._stopping = 0
                        self._cond.notify_all()
                continue
            assert lease is not None
            ok = False
            try:
                self._start(lease)
                ok = True
            except Exception:  # the keeper releases it in its next round (another replica may take it)
                log.exception("leases: starting %s failed; releasing it", lease.account)
            finally:
                with self._cond:
                    self._current = None
                    if not self._dropped:  # (dropped meanwhile: its stop is queued, nothing to record)
                        if ok:
                            self._started.add(lease.account)
                        else:
                            self._failed.append(lease)
                    self._dropped = False
                    self._cond.notify_all()
