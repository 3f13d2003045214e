"""Connections to the PostgreSQL state: a pool, errors as StateError, retries across a lost server.

The password never reaches a conninfo string, a log line, an error or a repr: it is split off the
URL (`split_password`) and handed to libpq as a separate keyword; what messages show is the URL
without it (`Database.where`).

An operation that meets a lost connection (PostgreSQL restarted, a failover, a network cut) is
tried again on a fresh connection (the pool checks each one it hands out) for `retry_seconds`,
then fails as StateError. A write whose COMMIT was sent when the connection died may or may not
have committed: an idempotent write (a checkpoint, a confirmation) is simply written again, any
other (a journal batch, an intent) fails at once rather than risk a second copy or a lost
"already announced".
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool, PoolClosed

from mailrules.errors import StateError, StateOpenError

log = logging.getLogger(__name__)

T = TypeVar("T")
Conn = psycopg.Connection[Any]

#: How long an operation waits for PostgreSQL to come back before it fails (StateError).
RETRY_SECONDS = 30.0
#: Connections per replica for the state (the leases keep one more of their own).
POOL_MAX = 8
#: libpq settings a URL may override: give up connecting after 10 s; notice a dead peer (a
#: partition, a host gone) within about 20 s of silence instead of the kernel's two hours.
CONNECT_DEFAULTS: dict[str, Any] = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}

#: SQLSTATE class (or code) -> what it means for an operator.
_HINTS: dict[str, str] = {
    "28": "PostgreSQL refused the login: check the user in `state`, and the password "
    "(state_password_file, the URL, or PGPASSWORD)",
    "3D000": "the database does not exist: create it (owned by the user in `state`)",
    "42501": "the user lacks a privilege: the state's database should be owned by the user in `state`",
    "53100": "PostgreSQL's disk is full: nothing past this point was done; free space",
    "53300": "PostgreSQL has no connection slot left: raise max_connections or run fewer replicas",
    "57P01": "PostgreSQL is shutting down or restarting",
    "57P03": "PostgreSQL is starting up or shutting down",
    "08": "the connection to PostgreSQL failed: is it running and reachable?",
}


#: What a refused connection says -> its SQLSTATE (for the hint).
_CONNECT_TEXTS = (
    ("password authentication failed", "28P01"),
    ("no password supplied", "28P01"),
    ("authentication failed", "28000"),
    ("no pg_hba.conf entry", "28000"),
    ('role "', "28000"),  # FATAL: role "x" does not exist
    ("does not exist", "3D000"),
    ("too many clients", "53300"),
    ("remaining connection slots", "53300"),
    ("is starting up", "57P03"),
    ("is shutting down", "57P03"),
)


def split_password(url: str) -> tuple[str, str | None]:
    """(the URL without its password, the password or None) for a `postgresql://` URL.

    The password may be in the user part (percent-encoded) or a `password=` query parameter."""
    parts = urlsplit(url)
    password: str | None = None
    netloc = parts.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if at and ":" in userinfo:
        user, _, secret = userinfo.partition(":")
        password = unquote(secret)
        netloc = f"{user}@{hostport}"
    query = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(k, v) for k, v in query if k != "password"]
    if len(kept) != len(query):
        password = next(v for k, v in query if k == "password")
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(kept), parts.fragment)), password


def describe(exc: BaseException) -> str:
    """What went wrong, on one line, and what it means: the server's primary message only (its
    DETAIL may quote a row: a Message-ID, an address), never the connection string."""
    text = ""
    sqlstate = getattr(exc, "sqlstate", None)
    diag = getattr(exc, "diag", None)
    if diag is not None and diag.message_primary:
        text = str(diag.message_primary)
    if not text:
        text = str(exc).split("\nDETAIL:", 1)[0]
    text = " ".join(text.split()) or type(exc).__name__
    if isinstance(exc, psycopg.OperationalError) and sqlstate is None:
        # A failure to connect carries no SQLSTATE, only the server's text (in English whatever
        # lc_messages says: libpq sends the startup packet before any setting applies).
        lowered = text.lower()
        sqlstate = next((code for needle, code in _CONNECT_TEXTS if needle in lowered), "08")
    hint = None
    if sqlstate:
        hint = _HINTS.get(sqlstate) or _HINTS.get(sqlstate[:2])
    return f"{text} ({hint})" if hint else text


def transient(exc: BaseException) -> bool:
    """Whether trying again later may succeed: a lost or refused connection, a server restarting,
    a serialization failure or a deadlock (the transaction was rolled back)."""
    if isinstance(exc, PoolClosed):
        return False  # this process closed the state: nothing comes back
    if isinstance(exc, pg_errors.SerializationFailure | pg_errors.DeadlockDetected):
        return True
    if isinstance(exc, psycopg.OperationalError):
        # a refused login, a missing database, a full disk do not mend by waiting; a lock wait
        # that timed out (lock_timeout) is the caller's to decide
        state = getattr(exc, "sqlstate", None) or ""
        return not state.startswith(("28", "3D", "53100", "42", "55P03"))
    return False


class Database:
    """One PostgreSQL database for one process: a pool of connections, the connection a thread's
    `transaction()` holds, and `run()`, which does one operation with retries.

    `connect_kwargs` (password, application_name, libpq defaults) never appear in `where`."""

    def __init__(
        self,
        url: str,
        password: str | None = None,
        *,
        application_name: str = "mailrules",
        retry_seconds: float = RETRY_SECONDS,
        idle_seconds: float = 60.0,
        max_size: int = POOL_MAX,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        bare, in_url = split_password(url)
        self.where = bare
        self.retry_seconds = retry_seconds
        self.idle_seconds = idle_seconds
        self.on_retry = on_retry
        self.retries = 0  # operations tried again after a lost connection (for tests and metrics)
        given = conninfo_to_dict(bare)
        self._conninfo = make_conninfo("", **{**CONNECT_DEFAULTS, **given})
        self._kwargs: dict[str, Any] = {"application_name": application_name}
        if password is not None or in_url is not None:
            self._kwargs["password"] = password if password is not None else in_url
        self._local = threading.local()
        self._pool: ConnectionPool[Conn] | None = None
        self._max_size = max_size

    def __repr__(self) -> str:
        return f"Database({self.where!r})"

    def sibling(self, *, max_size: int, retry_seconds: float, idle_seconds: float) -> Database:
        """Another pool on the same database with the same login (the leases keep their own, so
        that a heartbeat never waits behind the work for a connection)."""
        other = Database(
            self.where,
            self._kwargs.get("password"),
            application_name=self._kwargs["application_name"],
            retry_seconds=retry_seconds,
            idle_seconds=idle_seconds,
            max_size=max_size,
        )
        other._conninfo = self._conninfo
        return other

    def connect(self, application_name: str | None = None) -> Conn:
        """One new autocommit connection, set up as the pool's are (StateOpenError if it fails)."""
        kwargs = dict(self._kwargs)
        if application_name:
            kwargs["application_name"] = application_name[:63]
        try:
            conn = psycopg.connect(self._conninfo, autocommit=True, **kwargs)
            self._configure(conn)
        except psycopg.Error as exc:
            raise StateOpenError(f"state {self.where}: cannot connect: {describe(exc)}") from None
        return conn

    def open_pool(self, min_size: int = 1) -> None:
        """Start the pool (after `connect()` proved the server answers)."""
        self._pool = ConnectionPool(
            self._conninfo,
            kwargs={**self._kwargs, "autocommit": True},
            min_size=min_size,
            max_size=max(min_size, self._max_size),
            open=False,
            configure=self._configure,
            check=ConnectionPool.check_connection,
            name="mailrules-state",
            timeout=self.retry_seconds,
            reconnect_timeout=max(self.retry_seconds, 60.0),
        )
        self._pool.open(wait=False)

    def _configure(self, conn: Conn) -> None:
        # UTC: timestamptz values come back as aware UTC datetimes. A session idle inside a
        # transaction (a replica paused mid-write) is ended, so its row locks do not hold back the
        # replica taking its accounts over.
        conn.execute(
            "SELECT set_config('TimeZone', 'UTC', false), "
            "set_config('idle_in_transaction_session_timeout', %s, false)",
            (str(int(self.idle_seconds * 1000)),),
        )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()

    # -- operations ---------------------------------------------------------------------------

    def bound(self) -> Conn | None:
        """The connection of this thread's open `transaction()`, if any."""
        conn: Conn | None = getattr(self._local, "conn", None)
        return conn

    def error(self, doing: str, exc: BaseException) -> StateError:
        """`state URL: cannot DOING: WHY (HINT)` for the caller to raise."""
        return StateError(f"state {self.where}: cannot {doing}: {describe(exc)}")

    @contextmanager
    def transaction(self, doing: str) -> Iterator[Conn]:
        """A transaction on a connection bound to this thread; nested: a savepoint."""
        conn = self.bound()
        if conn is not None:
            try:
                with conn.transaction():
                    yield conn
            except psycopg.Error as exc:
                raise self.error(doing, exc) from exc
            return
        if self._pool is None:
            raise StateError(f"state {self.where}: closed")
        try:
            with self._pool.connection() as conn:
                self._local.conn = conn
                try:
                    with conn.transaction():
                        yield conn
                finally:
                    self._local.conn = None
        except psycopg.Error as exc:
            raise self.error(doing, exc) from exc

    def run(self, doing: str, fn: Callable[[Conn], T], *, write: bool = False, idempotent: bool = True) -> T:
        """`fn(conn)` (in a transaction if `write`), tried again on a new connection while the
        failure is `transient` and `retry_seconds` have not passed; psycopg errors as StateError."""
        bound = self.bound()
        if bound is not None:  # inside transaction(): a savepoint; the block fails as a whole
            try:
                with bound.transaction():
                    return fn(bound)
            except psycopg.Error as exc:
                raise self.error(doing, exc) from exc
        if self._pool is None:
            raise StateError(f"state {self.where}: closed")
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.05
        while True:
            committing = False
            try:
                with self._pool.connection(timeout=max(deadline - time.monotonic(), 0.1)) as conn:
                    if not write:
                        return fn(conn)
                    with conn.transaction():
                        result = fn(conn)
                        committing = True
                    return result
            except psycopg.Error as exc:
                if committing and not idempotent:
                    raise StateError(
                        f"state {self.where}: cannot {doing}: the connection was lost while "
                        f"committing, so it may or may not be written ({describe(exc)})"
                    ) from exc
                if not transient(exc) or time.monotonic() + delay > deadline:
                    raise self.error(doing, exc) from exc
                self.retries += 1
                log.warning("state %s: %s: %s; trying again", self.where, doing, describe(exc))
                if self.on_retry is not None:
                    try:
                        self.on_retry(doing)
                    except Exception:  # an observer never breaks the work
                        log.exception("state retry observer failed")
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 2.0)
