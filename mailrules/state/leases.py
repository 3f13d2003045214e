"""Account leases in PostgreSQL: which replica owns which account, until when, under which token.

One row per account in `leases` (owner, expiry, fencing token) and one per replica in `replicas`
(its last heartbeat). Every time is the database's (`clock_timestamp()`), never a replica's own
clock: replicas whose clocks disagree still agree on who holds what. Why lease rows and not
session advisory locks, and how fencing keeps a paused replica from writing: docs/dev/leases.md.

- `acquire(account)`: takes a free or expired lease; the token grows by one at each acquisition.
- `renew(leases)`: pushes the expiry of those still held (the same token); the others are lost.
- `release(leases)`: lets them go at once (SIGTERM, or handing accounts over), token kept.
- `owners()`, `replicas()`: the view that `share.wanted` turns into what to take and give.

`SoloLeases` (state/solo.py) is the same interface for a SQLite state: one daemon owns every
account. Both satisfy `LeaseStore` (state/interface.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import secrets
import time
from collections.abc import Iterable, Sequence

from psycopg import errors as pg_errors

from mailrules.errors import StateError
from mailrules.state.interface import Holder, Lease, LeaseLost
from mailrules.state.pg_conn import Conn, Database

#: A lease counts as held locally for this fraction of `lease_seconds` after its renewal was
#: sent: what is left covers a slow clock and the time the answer took to come back.
SAFE_FRACTION = 0.9

_ACQUIRE = """
INSERT INTO leases AS l (account, owner, token, expires_at, acquired_at)
VALUES (%(account)s, %(me)s, 1, clock_timestamp() + make_interval(secs => %(secs)s), clock_timestamp())
ON CONFLICT (account) DO UPDATE SET owner = excluded.owner, token = l.token + 1,
    expires_at = excluded.expires_at, acquired_at = excluded.acquired_at
WHERE l.owner IS NULL OR l.expires_at <= clock_timestamp()
RETURNING l.token, l.expires_at
"""
#: A command (`mailrules run`, `mailrules undo`) claims an account by holding the session
#: advisory lock (CLAIM_CLASS, claim_key(account)) on a connection of its own (state/pg_claims.py):
#: the daemons then hand the account over in their next round and never acquire it while the
#: claim stands. The lock goes with the command's session, a crashed command's too.
CLAIM_CLASS = 0x6D726C63  # "mrlc": any int4 no other application of the database uses
_CLAIMED = """
SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2
    AND classid::bigint = %(cls)s
    AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
_ACQUIRE_UNCLAIMED = (
    """
INSERT INTO leases AS l (account, owner, token, expires_at, acquired_at)
SELECT %(account)s, %(me)s, 1, clock_timestamp() + make_interval(secs => %(secs)s), clock_timestamp()
WHERE NOT EXISTS ("""
    + _CLAIMED.strip()
    + """ AND objid::bigint = %(key)s)
ON CONFLICT (account) DO UPDATE SET owner = excluded.owner, token = l.token + 1,
    expires_at = excluded.expires_at, acquired_at = excluded.acquired_at
WHERE l.owner IS NULL OR l.expires_at <= clock_timestamp()
RETURNING l.token, l.expires_at
"""
)
_RENEW = """
UPDATE leases AS l SET expires_at = clock_timestamp() + make_interval(secs => %(secs)s)
FROM unnest(%(accounts)s::text[], %(tokens)s::bigint[]) AS h(account, token)
WHERE l.account = h.account AND l.token = h.token AND l.owner = %(me)s
    AND l.expires_at > clock_timestamp()
RETURNING l.account, l.token, l.expires_at
"""
#: A fenced write holds its account's lease row FOR SHARE until it commits (state/postgres.py),
#: and an UPDATE of the row waits for that: the renewal first renews the rows nobody holds
#: (SKIP LOCKED), so one write in flight never holds back the renewal of the other leases.
_RENEW_FREE = """
WITH free AS (
    SELECT l.account FROM leases AS l
    JOIN unnest(%(accounts)s::text[], %(tokens)s::bigint[]) AS h(account, token)
        ON l.account = h.account AND l.token = h.token
    WHERE l.owner = %(me)s AND l.expires_at > clock_timestamp()
    FOR NO KEY UPDATE OF l SKIP LOCKED
)
UPDATE leases AS l SET expires_at = clock_timestamp() + make_interval(secs => %(secs)s)
FROM free WHERE l.account = free.account
RETURNING l.account, l.token, l.expires_at
"""
#: Those still held (same owner and token, unexpired), read without waiting for any lock.
_HELD = """
SELECT l.account FROM leases AS l
JOIN unnest(%(accounts)s::text[], %(tokens)s::bigint[]) AS h(account, token)
    ON l.account = h.account AND l.token = h.token
WHERE l.owner = %(me)s AND l.expires_at > clock_timestamp()
"""
#: How long a renewal waits for a lease row a write in flight holds, as a fraction of
#: lease_seconds (0.5 s of 15 s); past that the lease is kept as it was until the next round.
BUSY_WAIT_FRACTION = 1 / 30
_RELEASE = """
UPDATE leases AS l SET owner = NULL, expires_at = clock_timestamp()
FROM unnest(%(accounts)s::text[], %(tokens)s::bigint[]) AS h(account, token)
WHERE l.account = h.account AND l.token = h.token AND l.owner = %(me)s
"""
_REGISTER = """
INSERT INTO replicas AS r (replica, incarnation, started_at, seen_at)
VALUES (%(me)s, %(incarnation)s, clock_timestamp(), clock_timestamp())
ON CONFLICT (replica) DO UPDATE SET incarnation = excluded.incarnation,
    started_at = excluded.started_at, seen_at = excluded.seen_at
WHERE r.incarnation = excluded.incarnation
    OR r.seen_at <= clock_timestamp() - make_interval(secs => %(secs)s)
RETURNING 1
"""


def claim_key(account: str) -> int:
    """The second key (an int4) of `account`'s claim lock: the first four bytes of its sha256."""
    return int.from_bytes(hashlib.sha256(account.encode()).digest()[:4], "big", signed=True)


class Leases:
    """The leases of one replica (`replica`, unique per daemon) in the PostgreSQL state."""

    def __init__(self, db: Database, replica: str, lease_seconds: float) -> None:
        if not replica:
            raise ValueError("a replica needs a name")
        if not (math.isfinite(lease_seconds) and lease_seconds > 0):
            raise ValueError("lease_seconds must be a positive number")
        self._db = db
        self._replica = replica
        self._seconds = float(lease_seconds)
        self.incarnation = secrets.token_hex(8)  # this process, among restarts under one name

    @classmethod
    def open(cls, state_db: Database, replica: str, lease_seconds: float) -> Leases:
        """Leases on the state's database, over a pool of their own (two connections)."""
        db = state_db.sibling(max_size=2, retry_seconds=lease_seconds / 3, idle_seconds=lease_seconds)
        db.open_pool()
        return cls(db, replica, lease_seconds)

    @property
    def replica(self) -> str:
        return self._replica

    @property
    def lease_seconds(self) -> float:
        return self._seconds

    def close(self) -> None:
        self._db.close()

    def _lease(self, account: str, token: int, expires_at: dt.datetime, sent: float) -> Lease:
        return Lease(account, self._replica, token, expires_at, sent + self._seconds * SAFE_FRACTION)

    # -- replicas -------------------------------------------------------------------------------

    def register(self, *, wait: float | None = None) -> None:
        """Announce this replica. A live daemon under the same name (seen within `lease_seconds`)
        is waited for up to `wait` seconds (default: twice `lease_seconds`: a crashed predecessor
        stops being seen by then), then refused: two daemons must not share a name."""
        params = {"me": self._replica, "incarnation": self.incarnation, "secs": self._seconds}
        deadline = time.monotonic() + (2 * self._seconds if wait is None else wait)
        while True:
            row = self._db.run(
                "register this replica", lambda c: c.execute(_REGISTER, params).fetchone(), write=True
            )
            if row is not None:
                return
            if time.monotonic() >= deadline:
                raise StateError(
                    f"state {self._db.where}: replica name {self._replica!r} is in use by another "
                    "running daemon: give each daemon its own [cluster] replica"
                )
            time.sleep(min(1.0, self._seconds / 4))

    def heartbeat(self) -> None:
        """Say this replica is alive; LeaseLost if another daemon registered under its name."""
        query = "UPDATE replicas SET seen_at = clock_timestamp() WHERE replica = %s AND incarnation = %s"
        params = (self._replica, self.incarnation)
        if self._db.run("record a heartbeat", lambda c: c.execute(query, params).rowcount, write=True) != 1:
            raise LeaseLost(
                f"state {self._db.where}: replica name {self._replica!r} was taken by another daemon"
            )

    def replicas(self) -> list[str]:
        """The replicas whose last heartbeat is at most `lease_seconds` old, by name."""
        query = (
            "SELECT replica FROM replicas WHERE seen_at > clock_timestamp() - make_interval(secs => %s) "
            "ORDER BY replica"
        )
        rows = self._db.run("read the replicas", lambda c: c.execute(query, (self._seconds,)).fetchall())
        return [str(r[0]) for r in rows]

    def retire(self) -> None:
        """Forget this replica (a clean stop): the others need not wait for it to look dead."""
        query = "DELETE FROM replicas WHERE replica = %s AND incarnation = %s"
        params = (self._replica, self.incarnation)
        self._db.run("retire this replica", lambda c: c.execute(query, params), write=True)

    # -- leases ---------------------------------------------------------------------------------

    def acquire(self, account: str, *, claimant: bool = False) -> Lease | None:
        """Take `account` when nobody holds it or its lease expired; None when it is held (or
        the row is busy: a write of the holder in flight finishes first, then the next round).
        A daemon never takes an account a command claims (`claimed`); the `claimant` does."""
        params = {"account": account, "me": self._replica, "secs": self._seconds}
        params.update(cls=CLAIM_CLASS, key=claim_key(account) & 0xFFFFFFFF)
        wait_ms = str(max(1, int(self._seconds * 1000 / 3)))
        query = _ACQUIRE if claimant else _ACQUIRE_UNCLAIMED

        def take(conn: Conn) -> tuple[int, dt.datetime] | None:
            conn.execute("SELECT set_config('lock_timeout', %s, true)", (wait_ms,))
            row = conn.execute(query, params).fetchone()
            return None if row is None else (int(row[0]), row[1])

        sent = time.monotonic()
        try:
            got = self._db.run("acquire a lease", take, write=True, idempotent=False)
        except StateError as exc:
            if isinstance(exc.__cause__, pg_errors.LockNotAvailable):
                return None
            raise
        return None if got is None else self._lease(account, got[0], got[1], sent)

    def renew(self, leases: Iterable[Lease]) -> list[Lease]:
        """The leases of `leases` still held (same owner, token, unexpired), with a new expiry.
        A lease missing from the answer is lost: stop working on its account.

        A lease whose row a write in flight holds (FOR SHARE until it commits: a thread paused
        inside its transaction holds it up to lease_seconds) is waited for BUSY_WAIT_FRACTION of
        lease_seconds at most; then it is returned as it was given (held, its expiry and local
        deadline not pushed), for the next round to renew. The other leases never wait for it."""
        held = [lease for lease in leases if lease.owner == self._replica]
        if not held:
            return []
        sent = time.monotonic()
        rows = self._db.run(
            "renew the leases", lambda c: c.execute(_RENEW_FREE, self._params(held)).fetchall(), write=True
        )
        out = {str(a): self._lease(str(a), int(t), e, sent) for a, t, e in rows}
        rest = [lease for lease in held if lease.account not in out]
        if rest:  # busy, or lost (expired, taken over): the busy ones waited for a little
            out.update({x.account: x for x in self._renew_busy(rest)})
        return sorted(out.values(), key=lambda x: x.account)

    def _params(self, held: Sequence[Lease]) -> dict[str, object]:
        return {
            "accounts": [lease.account for lease in held],
            "tokens": [lease.token for lease in held],
            "me": self._replica,
            "secs": self._seconds,
        }

    def _renew_busy(self, rest: Sequence[Lease]) -> list[Lease]:
        """`rest`'s leases renewed, waiting a little for a write in flight; those still busy then,
        as they were given; the lost ones not at all."""
        params = self._params(rest)
        wait_ms = str(max(1, int(self._seconds * 1000 * BUSY_WAIT_FRACTION)))

        def renew(conn: Conn) -> list[tuple[str, int, dt.datetime]]:
            conn.execute("SELECT set_config('lock_timeout', %s, true)", (wait_ms,))
            return [(str(a), int(t), e) for a, t, e in conn.execute(_RENEW, params).fetchall()]

        sent = time.monotonic()
        try:
            rows = self._db.run("renew the leases", renew, write=True)
        except StateError as exc:
            if not isinstance(exc.__cause__, pg_errors.LockNotAvailable):
                raise
            read = self._db.run("read the leases", lambda c: c.execute(_HELD, params).fetchall())
            still = {str(r[0]) for r in read}
            return [lease for lease in rest if lease.account in still]
        return [self._lease(a, t, e, sent) for a, t, e in rows]

    def release(self, leases: Iterable[Lease]) -> None:
        """Let `leases` go at once: their accounts are free for any replica's next round."""
        mine = [lease for lease in leases if lease.owner == self._replica]
        if not mine:
            return
        params = {
            "accounts": [lease.account for lease in mine],
            "tokens": [lease.token for lease in mine],
            "me": self._replica,
        }
        self._db.run("release the leases", lambda c: c.execute(_RELEASE, params), write=True)

    def claimed(self, accounts: Iterable[str]) -> set[str]:
        """Those of `accounts` a command (`mailrules run`, `undo`) claims now: hand them over,
        do not take them (a claim key shared by two names claims both: harmless, rare)."""
        by_key: dict[int, list[str]] = {}
        for account in accounts:
            by_key.setdefault(claim_key(account) & 0xFFFFFFFF, []).append(account)
        rows = self._db.run("read the claims", lambda c: c.execute(_CLAIMED, {"cls": CLAIM_CLASS}).fetchall())
        return {a for r in rows for a in by_key.get(int(r[0]), [])}

    def owners(self, accounts: Sequence[str] | None = None) -> dict[str, Holder]:
        """account -> Holder for every account leased (or only `accounts`), as of now."""
        query = (
            "SELECT account, owner, token, expires_at, "
            "owner IS NOT NULL AND expires_at > clock_timestamp() FROM leases"
        )
        params: tuple[object, ...] = ()
        if accounts is not None:
            query += " WHERE account = ANY(%s)"
            params = (list(accounts),)
        rows = self._db.run("read the leases", lambda c: c.execute(query, params).fetchall())
        return {str(r[0]): Holder(str(r[0]), r[1], int(r[2]), r[3], bool(r[4])) for r in rows}
