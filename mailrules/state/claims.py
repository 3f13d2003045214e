"""`claim_accounts`: a command (`mailrules run`, `mailrules undo`) takes the accounts it acts on
away from the daemons for as long as it runs.

A SQLite state needs nothing more: its file lock already keeps the command and the daemon apart
(the command opened the state with `lock=`). A PostgreSQL state is shared by daemons that hold the
accounts' leases, not a lock of the state: the command claims the accounts, the daemons hand them
over, the command leases them and works through a fenced view (state/pg_claims.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from mailrules.state.interface import State
from mailrules.state.store import StateStore

if TYPE_CHECKING:
    from mailrules.config.model import Settings

#: How long a command waits for the daemons to hand its accounts over, in `lease_seconds`: a
#: live daemon does within two rounds (two thirds of a lease), a dead or paused one's lease
#: runs out after one.
CLAIM_WAIT_LEASES = 2.0


@contextmanager
def claim_accounts(
    state: State, settings: Settings, accounts: Sequence[str], command: str
) -> Iterator[State]:
    """The state to act on `accounts` with, no daemon working on them until the block ends.
    StateLocked (exit 75) when another command claims one, or a daemon keeps one longer than
    CLAIM_WAIT_LEASES × `lease_seconds`."""
    if isinstance(state, StateStore):
        yield state
        return
    from mailrules.state.pg_claims import Claim
    from mailrules.state.postgres import PostgresState

    if not isinstance(state, PostgresState):
        raise TypeError(f"no claims on {type(state).__name__}")
    seconds = settings.cluster.lease_seconds
    with Claim(state, accounts, lease_seconds=seconds, command=command) as claim:
        yield claim.take(wait=CLAIM_WAIT_LEASES * seconds)
