"""A command's claim on accounts the daemons share (`mailrules run`, `mailrules undo` beside them).

The daemons sharing a PostgreSQL state hold the accounts' leases, not the state's lock, so a
command cannot simply lock the state: it claims the accounts it is to act on instead.

1. On a connection of its own, it takes the session advisory lock (CLAIM_CLASS, claim_key) of
   each account (`pg_try_advisory_lock`): another command claiming one of them already is
   refused at once (StateLocked, naming it).
2. Each daemon's next round (state/keeper.py) sees the claims, stops its work on the claimed
   accounts it holds and releases their leases; no daemon acquires a claimed account.
3. The command acquires each lease itself (under its own name, never a live replica's), waiting
   up to `wait` seconds (a daemon hands over within two rounds; a dead one's lease runs out after
   `lease_seconds`); whatever is still held then is refused (StateLocked, naming the holder).
4. It works through `state.fenced(leases)`: its writes carry the tokens, like a daemon's; a
   thread renews the leases every third of `lease_seconds` meanwhile.
5. At the end it releases the leases and closes the connection (the claims go with it; they go
   with a crashed command's session too), and the daemons take the accounts back in their next
   round and catch up from the checkpoints.

docs/dev/leases.md, "Commands beside the daemons", says why.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Sequence

from mailrules.errors import StateError, StateLocked
from mailrules.state.interface import Lease
from mailrules.state.leases import CLAIM_CLASS, Leases, claim_key
from mailrules.state.pg_conn import Conn
from mailrules.state.postgres import PostgresState

log = logging.getLogger(__name__)

#: How often the leases are looked at while waiting for the daemons to hand them over.
POLL_SECONDS = 0.2

_HOLDER = """
SELECT a.application_name, a.client_addr, a.backend_start FROM pg_locks l
JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
    AND l.classid::bigint = %s AND l.objid::bigint = %s AND a.pid <> pg_backend_pid()
"""


class Claim:
    """`command`'s claim on `accounts` of a PostgreSQL state shared by daemons; `take()` then
    `close()` (or `with`)."""

    def __init__(
        self, state: PostgresState, accounts: Sequence[str], *, lease_seconds: float, command: str
    ) -> None:
        self.state = state
        self.accounts = tuple(dict.fromkeys(accounts))
        self.command = command
        self.name = f"{command} on {socket.gethostname()} pid {os.getpid()}"
        self._seconds = lease_seconds
        self._conn: Conn | None = None
        self._leases: Leases | None = None
        self.held: dict[str, Lease] = {}
        self._halt = threading.Event()
        self._renewer: threading.Thread | None = None
        self._guard = threading.Lock()

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def take(self, wait: float) -> PostgresState:
        """Claim the accounts, wait for the daemons to hand them over, lease them; the state
        fenced by those leases. StateLocked when another command claims one of them, or a daemon
        still holds one after `wait` seconds."""
        self._conn = self.state.database.connect(self.name)
        for account in self.accounts:
            self._lock(self._conn, account)
        self._leases = Leases.open(self.state.database, self.name, self._seconds)
        deadline = time.monotonic() + wait
        waiting = list(self.accounts)
        while waiting:
            for account in list(waiting):
                lease = self._leases.acquire(account, claimant=True)
                if lease is not None:
                    self.held[account] = lease
                    waiting.remove(account)
            if not waiting:
                break
            if time.monotonic() >= deadline:
                holders = self._leases.owners(waiting)
                busy = ", ".join(
                    f"{a} (replica {holders[a].owner})" if a in holders and holders[a].owner else a
                    for a in waiting
                )
                raise StateLocked(
                    f"state {self.state.where}: the daemons did not hand over {busy} within "
                    f"{wait:.0f} s; {self.command} acts on an account only while no daemon works on "
                    "it: try again, or stop the daemons first"
                )
            time.sleep(POLL_SECONDS)
        log.info("%s: %d accounts handed over by the daemons", self.command, len(self.held))
        self._renewer = threading.Thread(target=self._renew, name="claim", daemon=True)
        self._renewer.start()
        return self.state.fenced(self.held.values())

    def _lock(self, conn: Conn, account: str) -> None:
        key = claim_key(account)
        try:
            got = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (CLAIM_CLASS, key)).fetchone()
            if got is not None and got[0]:
                return
            row = conn.execute(_HOLDER, (CLAIM_CLASS, key & 0xFFFFFFFF)).fetchone()
        except Exception as exc:  # psycopg's: the connection went
            raise StateError(f"state {self.state.where}: cannot claim account {account!r}: {exc}") from None
        holder = "another command"
        if row is not None:
            since = row[2].isoformat(timespec="seconds") if row[2] is not None else "?"
            holder = f"{row[0] or 'another command'} (from {row[1] or 'a local socket'}, since {since})"
        raise StateLocked(
            f"state {self.state.where}: account {account!r} is claimed by {holder}: "
            "one command at a time may act on an account"
        )

    def _renew(self) -> None:
        assert self._leases is not None
        while not self._halt.wait(self._seconds / 3):
            with self._guard:
                held = list(self.held.values())
            try:
                renewed = {x.account: x for x in self._leases.renew(held)}
            except StateError as exc:
                log.warning("%s: cannot renew the leases (%s); trying again", self.command, exc)
                continue
            lost = sorted(set(a.account for a in held) - set(renewed))
            if lost:
                # Its writes for them are refused from now on (LeaseLost): the run reports them.
                log.error("%s: the leases of %s were lost", self.command, ", ".join(lost))
            with self._guard:
                self.held = renewed

    def close(self) -> None:
        """Release the leases (the daemons take the accounts back) and the claims."""
        self._halt.set()
        if self._renewer is not None:
            self._renewer.join()
        try:
            if self._leases is not None:
                with self._guard:
                    held = list(self.held.values())
                    self.held = {}
                try:
                    self._leases.release(held)
                except StateError as exc:
                    log.warning(
                        "%s: cannot release the leases (they expire by themselves): %s", self.command, exc
                    )
                self._leases.close()
        finally:
            if self._conn is not None:
                self._conn.close()  # the claims go with the session
