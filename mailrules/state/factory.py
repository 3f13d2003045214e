"""`open_state(settings)`: the configured state, SQLite or PostgreSQL, behind the one interface."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mailrules.errors import StateOpenError
from mailrules.state.interface import State
from mailrules.state.store import StateStore

if TYPE_CHECKING:
    from mailrules.config.model import Settings


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
