"""State of mailrules: checkpoints, the action journal, side-effect intents and undo plans: SQLite
by default, PostgreSQL when several daemons share it (`State` is the one interface of both)."""

from __future__ import annotations

from mailrules.errors import StateError, StateLocked, StateOpenError
from mailrules.state.interface import Lease, LeaseLost, State
from mailrules.state.keys import intent_key, new_run_id
from mailrules.state.models import (
    Checkpoint,
    FlagMark,
    Intent,
    JournalEntry,
    Location,
    Outcome,
    RunInfo,
    UndoFlag,
    UndoMove,
    UndoPlan,
    UndoRefused,
)
from mailrules.state.schema import SCHEMA_VERSION, migrate
from mailrules.state.store import StateStore
from mailrules.state.undo import plan_undo

__all__ = [
    "SCHEMA_VERSION",
    "Checkpoint",
    "FlagMark",
    "Intent",
    "JournalEntry",
    "Lease",
    "LeaseLost",
    "Location",
    "Outcome",
    "RunInfo",
    "State",
    "StateError",
    "StateLocked",
    "StateOpenError",
    "StateStore",
    "UndoFlag",
    "UndoMove",
    "UndoPlan",
    "UndoRefused",
    "intent_key",
    "migrate",
    "new_run_id",
    "plan_undo",
]
