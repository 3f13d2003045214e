"""Plain data kept by the state store: journal entries, runs, checkpoints, intents and undo plans."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NamedTuple

Outcome = Literal["ok", "failed", "skipped", "dry-run"]
OUTCOMES: frozenset[str] = frozenset({"ok", "failed", "skipped", "dry-run"})


class JournalEntry(NamedTuple):
    """One action applied (or planned, or refused) to one message, as the engine saw it.

    A NamedTuple, not a frozen dataclass like the other records: the engine makes one per action
    and message (24,000 at 20,000 messages), and a frozen dataclass of 16 fields took ~2.6 µs to
    build (each field through `object.__setattr__`), a tuple ~0.2 µs; it is also the journal
    row but for `at` (state/rows.py entry_row). Immutable as they are; `_replace` for a copy.

    `action` is spelled as in the language ("move", "archive", "delete", "delete permanently",
    "copy", "mark read", "mark unread", "flag", "unflag", "tag", "untag", "forward", "redirect").
    `detail` is the flag or keyword changed, or the address forwarded/redirected to.
    `new_uidvalidity`/`new_uid` come from COPYUID (RFC 4315) for moves and copies.
    A flag change that changed nothing (the flag was already so) is recorded as "skipped",
    so that undo never clears a flag the message had before the run.
    """

    run_id: str
    rule: str
    rule_span: str
    account: str
    mailbox: str
    uidvalidity: int
    uid: int
    message_id: str | None
    action: str
    detail: str
    destination: str | None
    new_uidvalidity: int | None
    new_uid: int | None
    outcome: Outcome
    error: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class RunInfo:
    """One run of the engine: what started it, whether it was a dry run, what it did."""

    run_id: str
    trigger: str
    dry_run: bool
    started_at: datetime
    ended_at: datetime | None
    summary: dict[str, Any] | None
    entries: int


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """How far a mailbox has been processed; only valid while `uidvalidity` is unchanged."""

    uidvalidity: int
    last_uid: int
    highestmodseq: int | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class FlagMark:
    """Where `on flag change` last looked at a mailbox (engine/flagpass.py): its HIGHESTMODSEQ and
    highest UID then, and `own`: UID -> the MODSEQ of mailrules' own latest STORE on it since."""

    uidvalidity: int
    highestmodseq: int
    last_uid: int
    own: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Intent:
    """A side effect (forward/redirect) announced before it was attempted."""

    key: str
    entry: JournalEntry
    created_at: datetime
    confirmed_at: datetime | None


@dataclass(frozen=True, slots=True)
class Location:
    """Where one message is: account, mailbox, and its UID under the given UIDVALIDITY."""

    account: str
    mailbox: str
    uidvalidity: int | None
    uid: int


@dataclass(frozen=True, slots=True)
class UndoMove:
    """Move the message at `source` back to mailbox `target` (of the same account).

    The caller must check that `source.uidvalidity` is still the mailbox's UIDVALIDITY before
    acting, and that `target_uidvalidity` is still the target's (else the UIDs recorded mean
    nothing any more).
    """

    source: Location
    target: str
    target_uidvalidity: int
    journal: JournalEntry


@dataclass(frozen=True, slots=True)
class UndoFlag:
    """Add (`add=True`) or remove `flag` on the message at `where` (its location after the run)."""

    where: Location
    flag: str
    add: bool
    journal: JournalEntry


@dataclass(frozen=True, slots=True)
class UndoRefused:
    """An action of the run that will not be undone, and why."""

    journal: JournalEntry
    reason: str


@dataclass(frozen=True, slots=True)
class UndoPlan:
    """What undoing one run takes: flag changes first (on the final locations), then moves back.

    Pure data: the engine executes it under a new run with trigger "undo" and
    `summary={"undo_of": run_id, ...}`; `undone_by` lists such earlier undo runs.
    """

    run_id: str
    flags: tuple[UndoFlag, ...]
    moves: tuple[UndoMove, ...]
    refused: tuple[UndoRefused, ...]
    undone_by: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        """True when there is nothing to execute."""
        return not self.flags and not self.moves
