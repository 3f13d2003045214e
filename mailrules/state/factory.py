"""`open_state(settings)`: the configured state, SQLite or PostgreSQL, behind the one interface."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mailrules.errors import StateOpenError
from mailrules.state.interface import LeaseStore, State
from mailrules.state.solo import SoloLeases
from mailrules.state.store import StateStore

if TYPE_CHECKING:
    from mailrules.config.model import Settings
    from mailrules.state.pg_tokens import TokenRows


def open_state(settings: Settings, *, lock: str | None = None) -> State:
    """The state of `settings.state`: a SQLite file (StateStore) or a PostgreSQL URL
    (PostgresState, with `state_password_file` and `[cluster]`).

    `lock`: the command that is to act on the state alone ("mailrules run", "mailrules undo",
    "mailrules daemon"), StateLocked when another process does; readers pass None. Every failure
    to open is a StateOpenError (the CLI exits 78); psycopg is imported only for PostgreSQL.
    """
    target = settings.state
    if isinstance(target, Path):
        return StateStore.open(target, lock=lock)
    try:
        from mailrules.state.postgres import PostgresState
    except ImportError as exc:
        raise StateOpenError(
            f"state {target}: PostgreSQL needs psycopg and psycopg-pool "
            f"(pip install 'mailrules[postgres]'): {exc}"
        ) from None
    return PostgresState.open(
        target.url,
        password=None if target.password is None else target.password.reveal(),
        replica=settings.cluster.replica,
        lease_seconds=settings.cluster.lease_seconds,
        lock=lock,
    )


def open_leases(state: State, settings: Settings) -> LeaseStore:
    """The leases that decide which accounts this daemon works on: PostgreSQL's (`Leases`, on a
    pool of their own, named by `[cluster] replica`) for a PostgreSQL state, else `SoloLeases`
    (the one daemon owns every account; close() is then a no-op)."""
    if isinstance(state, StateStore):
        return SoloLeases(settings.cluster.replica)
    from mailrules.state.leases import Leases
    from mailrules.state.postgres import PostgresState

    if not isinstance(state, PostgresState):
        raise TypeError(f"no leases for {type(state).__name__}")
    return Leases.open(state.database, settings.cluster.replica, settings.cluster.lease_seconds)


def token_rows(state: State) -> TokenRows | None:
    """Where daemons sharing a PostgreSQL state keep the OAuth2 tokens (`oauth_tokens`,
    state/pg_tokens.py); None for any other state (SQLite, a test's fake: the token files)."""
    if isinstance(state, StateStore):
        return None
    try:  # psycopg: only where a PostgreSQL state can exist
        from mailrules.state.pg_tokens import TokenRows
        from mailrules.state.postgres import PostgresState
    except ImportError:
        return None
    if not isinstance(state, PostgresState):
        return None

    return TokenRows(state.database)
