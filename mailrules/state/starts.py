"""The lease keeper's starts, run on a thread of their own so that a round never waits for them.

Starting an account (its watchers, ~1 s at 30 mailboxes on a loaded replica) used to run inside
the keeper's round: a round that took 80 accounts ran for 80 s and renewed nothing meanwhile, so
the leases taken first expired while it went on (bench/README.md, cluster_bench). Here the round
only acquires the leases and hands them over (`submit`); one thread starts them, one after
another, in the order taken, while the keeper's next rounds renew them.

Fencing is unchanged: a lease is acquired (with its new token) before its start is submitted, and
the account's work writes only through `state.fenced([lease])`, so nobody else writes the account
while it waits here, and a previous holder's late writes are refused. An account dropped by the
keeper (lost, handed over, shutdown) goes through `settle` first: a start still waiting is
cancelled (nothing to stop), one in flight is waited for, so a stop never runs beside the start of
the same account.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence

from mailrules.state.interface import Lease

log = logging.getLogger(__name__)


class Starts:
    """Starts accounts on one thread, in the order submitted; thread-safe."""

    def __init__(self, start: Callable[[Lease], None], *, name: str = "lease-starts") -> None:
        self._start = start
        self._name = name
        self._cond = threading.Condition()
        self._queue: deque[Lease] = deque()
        self._current: str | None = None
        self._started: set[str] = set()  # started, not settled since
        self._failed: list[Lease] = []  # whose start raised, not yet collected by `failed()`
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, lease: Lease) -> None:
        """Start `lease.account` after the starts submitted before it (the thread begins here)."""
        with self._cond:
            if self._closed:
                raise RuntimeError("lease starts closed")
            self._queue.append(lease)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def pending(self) -> int:
        """Accounts submitted and not started yet (waiting, or being started now)."""
        with self._cond:
            return len(self._queue) + (self._current is not None)

    def settle(self, accounts: Sequence[str]) -> list[str]:
        """Before `accounts` are stopped: cancel their starts still waiting, wait for one in flight;
        the accounts (in the order given) whose start ran to the end, i.e. those to stop."""
        wanted = set(accounts)
        with self._cond:
            self._queue = deque(x for x in self._queue if x.account not in wanted)
            while self._current is not None and self._current in wanted:
                self._cond.wait()
            out = [a for a in accounts if a in self._started]
            self._started -= wanted
            self._failed = [x for x in self._failed if x.account not in wanted]
        return out

    def failed(self) -> list[Lease]:
        """The leases whose start raised since the last call (the keeper releases them)."""
        with self._cond:
            out, self._failed = self._failed, []
        return out

    def close(self) -> None:
        """No more starts: those still waiting are dropped, the one in flight finishes."""
        with self._cond:
            self._closed = True
            self._queue.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                lease = self._queue.popleft()
                self._current = lease.account
            ok = False
            try:
                self._start(lease)
                ok = True
            except Exception:  # the keeper releases it in its next round (another replica may take it)
                log.exception("leases: starting %s failed; releasing it", lease.account)
            finally:
                with self._cond:
                    self._current = None
                    if ok:
                        self._started.add(lease.account)
                    else:
                        self._failed.append(lease)
                    self._cond.notify_all()
