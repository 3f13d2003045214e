"""OAuth2 tokens in the PostgreSQL state: one row per account (`oauth_tokens`), shared by every
daemon, so that the one owning an account refreshes with the refresh token the previous owner
rotated. Plain JSON here (oauth/shared.py turns it into `Tokens`); `locked(account)` is a session
advisory lock on a connection of its own, held while a refresh runs (its HTTP request included:
a transaction would be cut by `idle_in_transaction_session_timeout`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from psycopg.types.json import Jsonb

from mailrules.errors import StateError
from mailrules.state.pg_conn import Conn, Database

#: pg_advisory_lock's first key for a token refresh (the second: the account's hash): "mrlt".
TOKEN_LOCK_CLASS = 0x6D726C74


def _key(account: str) -> int:
    return int.from_bytes(hashlib.sha256(account.encode()).digest()[:4], "big", signed=True)


class TokenRows:
    """The `oauth_tokens` rows of one PostgreSQL state."""

    def __init__(self, db: Database) -> None:
        self._db = db

    @property
    def where(self) -> str:
        return self._db.where

    def load(self, account: str) -> Any | None:
        """The account's tokens as stored (the JSON of `Tokens.to_json`), None when none are."""
        query = "SELECT tokens FROM oauth_tokens WHERE account = %s"
        row = self._db.run("read the OAuth2 tokens", lambda c: c.execute(query, (account,)).fetchone())
        return None if row is None else row[0]

    def save(self, account: str, data: Any) -> None:
        """Store the account's tokens (replacing any), durably before returning."""
        query = (
            "INSERT INTO oauth_tokens (account, tokens, updated_at) VALUES (%s, %s, clock_timestamp()) "
            "ON CONFLICT (account) DO UPDATE SET tokens = excluded.tokens, updated_at = excluded.updated_at"
        )
        self._db.run(
            "store the OAuth2 tokens", lambda c: c.execute(query, (account, Jsonb(data))), write=True
        )

    def delete(self, account: str) -> bool:
        """Forget the account's tokens; False when there were none."""
        query = "DELETE FROM oauth_tokens WHERE account = %s"
        gone = self._db.run(
            "remove the OAuth2 tokens", lambda c: c.execute(query, (account,)).rowcount, write=True
        )
        return bool(gone)

    @contextmanager
    def locked(self, account: str, holder: str) -> Iterator[None]:
        """One refresh of `account` at a time across every process sharing the state."""
        conn: Conn = self._db.connect(holder)
        try:
            try:
                conn.execute("SELECT pg_advisory_lock(%s, %s)", (TOKEN_LOCK_CLASS, _key(account)))
            except Exception as exc:  # psycopg's: the connection went
                raise StateError(
                    f"state {self.where}: cannot lock the OAuth2 tokens of {account!r}: {exc}"
                ) from None
            yield
        finally:
            conn.close()  # the session lock goes with it
