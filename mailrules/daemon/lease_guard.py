"""Among daemons sharing the accounts: may the engine still act on this account's server?

The lease keeper (state/keeper.py) stops an account's watchers once its lease's local deadline
passes (0.9 x lease_seconds after the last renewal sent), but a pass over a mailbox already in
hand used to go on acting on the IMAP server (IMAP has no fencing) while only its journal writes
were refused, though another replica might own the account by then. So the engine asks a
`LeaseGuard` before each command that changes the server and before each send
(`AccountContext.lease_check`, engine/sending.py `_held`), without a database round trip: the
keeper's lease and its local deadline on the monotonic clock.

- Held, its local deadline more than `margin` (MARGIN_FRACTION x lease_seconds) away: go. The
  margin leaves a command just sent time to reach the server before the lease could expire in the
  database; a keeper renewing on time (every third of lease_seconds) is never within it.
- No longer held (the keeper dropped it: lost, past its deadline, handed over, claimed, shut
  down): stop. LeaseLost is raised, the pass does nothing more (its messages stay for the next
  owner, its checkpoint is not moved), and `stopped(account)` counts it.
- Held but within the margin (a renewal is late): wait for the keeper's verdict, looking every
  POLL_SECONDS: renewed, go on; dropped, stop. The guard never decides against the keeper: a
  watcher stopped by a guard while the keeper renews the lease after all would leave the account
  held and unwatched. The keeper drops a lease within a second of its local deadline
  (daemon/cluster.py EXPIRE_CHECK_SECONDS), so a wait lasts about the margin and a second at most.
- Still held STUCK_SECONDS past its local deadline: the keeper itself is stuck (its thread died or
  starves), and the lease is certainly no longer surely held: stop as above, never wait for ever.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from mailrules.state.interface import LeaseLost
from mailrules.state.keeper import LeaseKeeper

log = logging.getLogger(__name__)

#: No command is started on an account's server within this fraction of lease_seconds of its
#: lease's local deadline (1.5 s of 15 s): with the deadline's own 10%, a command sent is left a
#: fifth of lease_seconds before the lease can expire in the database.
MARGIN_FRACTION = 0.1
#: How often a guard waiting for a late renewal looks at the keeper's leases again.
POLL_SECONDS = 0.05
#: A lease the keeper still lists this long after its local deadline (it drops one within a
#: second) means the keeper is stuck: the guard stops the pass instead of waiting any longer.
STUCK_SECONDS = 5.0


class LeaseGuard:
    """The engine's check for one account (`__call__`): returns while this process surely holds
    the account's lease, raises LeaseLost once it does not."""

    def __init__(
        self,
        keeper: LeaseKeeper,
        account: str,
        *,
        stopped: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.keeper = keeper
        self.account = account
        self.margin = keeper.leases.lease_seconds * MARGIN_FRACTION
        self._stopped = stopped
        self._clock = clock
        self._sleep = sleep

    def __call__(self) -> None:
        waited_since: float | None = None
        while True:
            lease = self.keeper.held.get(self.account)
            now = self._clock()
            if lease is None or now > lease.deadline + STUCK_SECONDS:
                self._count()
                late = "" if waited_since is None else " (its renewal was late)"
                if lease is not None:
                    late = f" (its local deadline passed {now - lease.deadline:.1f} s ago)"
                raise LeaseLost(
                    f"account {self.account}: this replica no longer holds its lease{late}; nothing "
                    "more is done on its server here (its next owner takes the messages left)"
                )
            if now + self.margin < lease.deadline:
                if waited_since is not None:
                    log.info(
                        "account %s: lease renewed after %.1f s; acting again",
                        self.account,
                        now - waited_since,
                    )
                return
            if waited_since is None:
                waited_since = now
                log.warning(
                    "account %s: the lease's renewal is late (%.1f s to its local deadline); "
                    "acting on nothing until it is renewed or given up",
                    self.account,
                    lease.deadline - now,
                )
            self._sleep(POLL_SECONDS)

    def _count(self) -> None:
        if self._stopped is None:
            return
        try:  # observers never break the work (house style 13)
            self._stopped(self.account)
        except Exception:
            log.exception("account %s: counting a lease stop failed", self.account)
