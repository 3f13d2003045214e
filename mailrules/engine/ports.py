"""The engine's ports: the Protocols and value types that imap/, smtp/, state/, daemon/, commands/
and the tests code against. Nothing else of the engine is imported here, so an implementation
never depends on how the engine works, only on what it asks for.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from mailrules.bounds import DEFAULT_BOUNDS, Bounds
from mailrules.compile import keys as K
from mailrules.compile.dialect import Dialect
from mailrules.compile.needs import FetchNeeds
from mailrules.dsl import ast as A
from mailrules.errors import ActionError
from mailrules.message.view import MessageView
from mailrules.state.models import JournalEntry

__all__ = [
    "ARCHIVED_LABEL",
    "AccountContext",
    "Claims",
    "EngineObserver",
    "EntryHook",
    "Journal",
    "LimitPolicy",
    "LoopBudgets",
    "MailboxCreations",
    "MailboxReport",
    "MailboxStore",
    "RuleReport",
    "RunOptions",
    "SendBudget",
    "SendError",
    "SendErrorKind",
    "SendHistory",
    "Sender",
]

# -- the mailboxes -----------------------------------------------------------------------------------

#: The label `MailboxStore.archive_in_place` removes; journalled as the `detail` of that archive
#: (destination None: the message stayed), so that undo adds it back (state/undo.py).
ARCHIVED_LABEL = "\\Inbox"


class MailboxStore(Protocol):
    """One account's mailboxes as the engine sees them: `imap/store.py: ImapStore` in production,
    `tests/fakes.py: FakeStore` in unit tests.

    Names are portable (`/` between levels, relative to the personal namespace); the store maps
    them to the server's. Commands act on the mailbox last selected. A failure raises
    `mailrules.errors.ImapError` (its `kind` says whether the command may be sent again, or the
    connection is gone); a missing destination without `create` raises one with code TRYCREATE.
    """

    @property
    def dialect(self) -> Dialect:
        """What the server can do (MOVE, WITHIN, Gmail's labels...): the planner renders for it."""

    @property
    def separator(self) -> str:
        """The hierarchy separator of the names the engine uses (`/` for portable names)."""

    def select(self, mailbox: str) -> int:
        """Select `mailbox` for changes; return its UIDVALIDITY."""

    def search(self, key: K.SearchKey) -> list[int]:
        """UIDs of the selected mailbox that satisfy `key`, ascending."""

    def fetch_views(self, uids: Sequence[int], needs: FetchNeeds) -> dict[int, MessageView]:
        """Decoded views holding at least what `needs` names (plus Message-ID); a UID expunged
        meanwhile is absent."""

    def fetch_raw(self, uids: Sequence[int]) -> dict[int, bytes]:
        """The whole messages, without setting \\Seen."""

    def move(self, uids: Sequence[int], dest: str, *, create: bool) -> tuple[int | None, dict[int, int]]:
        """Move to `dest`; (destination UIDVALIDITY, {old uid: new uid}) as far as the server says."""

    def copy(self, uids: Sequence[int], dest: str, *, create: bool) -> tuple[int | None, dict[int, int]]:
        """Copy to `dest`; like move."""

    def store_flags(self, uids: Sequence[int], flags: Sequence[str], add: bool) -> None:
        """Add or remove flags/keywords (labels on Gmail) on exactly these UIDs."""

    def delete_permanently(self, uids: Sequence[int]) -> None:
        """Remove exactly these UIDs for good (\\Deleted and UID EXPUNGE; never a mailbox-wide
        EXPUNGE)."""

    def special_use(self) -> dict[str, str]:
        """{"\\Archive": name, "\\Trash": name, ...} as the server reports them (portable names)."""

    def same_mailbox(self, a: str, b: str) -> bool:
        """Whether the names `a` and `b` are one mailbox on this server (`INBOX.Lists` and `Lists`
        on Cyrus; `inbox` and `INBOX` everywhere): what no action may target from `a` (loop safety)."""

    def archives_in_place(self, source: str) -> bool:
        """Whether `archive` from `source` into the \\Archive mailbox is done by `archive_in_place`
        rather than a move (Gmail from a label's mailbox: a MOVE would remove that label instead)."""

    def archive_in_place(self, uids: Sequence[int]) -> None:
        """Archive these UIDs where they are: the \\Inbox label goes, the message stays (Gmail).
        Only called when `archives_in_place(selected mailbox)` is true."""


# -- forward and redirect ------------------------------------------------------------------------------

#: Why a send failed: its address ("invalid"), our own loop header ("loop"), the connection or its
#: time-out, TLS, the login ("auth"), the server refusing the sender, a recipient or the message,
#: the dialogue itself ("protocol"), or settings that cannot work as written ("config").
SendErrorKind = Literal[
    "invalid",
    "loop",
    "connection",
    "timeout",
    "tls",
    "auth",
    "sender",
    "recipient",
    "rejected",
    "protocol",
    "config",
]


class SendError(ActionError):
    """A forward or redirect failed; `kind` classifies why.

    `maybe_sent` is True only when the connection broke while the message was being submitted, so
    the mail may have left: the engine then keeps its intent in doubt (at most once) instead of
    releasing it for a retry. `kind == "loop"`: the message carries our own loop header; it is
    journalled as skipped, never tried again.
    """

    def __init__(self, message: str, kind: SendErrorKind, *, maybe_sent: bool = False) -> None:
        super().__init__(message)
        self.kind: SendErrorKind = kind
        self.maybe_sent = maybe_sent


class Sender(Protocol):
    """Sends mail for forward and redirect with one account's SMTP settings (`smtp/sender.py:
    SmtpSender`). Raises `SendError` when the mail was not (or maybe not) sent; the same
    `idempotency_key` gives the same Message-ID, so a duplicate is recognisable."""

    def send_forward(self, original: bytes, to: str, *, rule: str, idempotency_key: str) -> str:
        """Forward `original` to `to` as an attachment; return the new Message-ID."""

    def send_redirect(self, original: bytes, to: str, *, rule: str, idempotency_key: str) -> None:
        """Resend `original` unchanged (plus Resent-* fields) to the envelope recipient `to`."""


# -- the journal ---------------------------------------------------------------------------------------


class Claims(Protocol):
    """The intents of a group of IMAP actions that must not repeat (copies; moves without MOVE):
    written durably in one transaction before the command (engine/claims.py)."""

    def claim(self, items: Sequence[tuple[str, JournalEntry]]) -> set[str]:
        """Write the intents not written yet; return the keys that are new (those may go ahead)."""

    def confirm_many(self, keys: Sequence[str]) -> None:
        """The actions of these intents were carried out."""

    def release_many(self, keys: Sequence[str]) -> None:
        """These actions certainly did not happen: forget their intents (a later run tries again)."""

    def confirmed_keys(self, keys: Sequence[str]) -> set[str]:
        """The keys among `keys` whose intents are confirmed."""


class Journal(Claims, Protocol):
    """Where actions are recorded, and forwards, redirects and copies made at most once
    (`state/store.py: StateStore`). A failure raises `mailrules.errors.StateError`: the work that
    depends on it is not done. Intents are written outside any transaction (on disk before the
    side effect)."""

    def record_many(self, entries: Sequence[JournalEntry]) -> None:
        """Append journal rows (one per action on one message)."""

    def intent(self, key: str, entry: JournalEntry) -> bool:
        """Announce one send; False when `key` was announced before (done, or in doubt)."""

    def confirm(self, key: str) -> None:
        """The send announced under `key` happened."""

    def release(self, key: str) -> bool:
        """The send under `key` certainly did not happen: forget it. False when it was not pending."""

    def is_confirmed(self, key: str) -> bool:
        """Whether a send under `key` happened."""

    def already_done(
        self,
        account: str,
        mailbox: str,
        uidvalidity: int,
        uids: Sequence[int],
        rule: str,
        action: str,
        destination: str | None,
    ) -> set[int]:
        """The UIDs among `uids` on which `rule` already carried out `action` into `destination`."""

    def sends_since(self, account: str, address: str, since: dt.datetime) -> list[dt.datetime]:
        """When the forwards/redirects of `account` to `address` since `since` were announced."""


# -- what watches the engine ---------------------------------------------------------------------------

#: Called once per journal entry (the log line of `run` and the daemon). Like an EngineObserver,
#: it cannot stop the work: the engine catches and logs what it raises.
EntryHook = Callable[[JournalEntry], None]


class EngineObserver(Protocol):
    """Watches what the engine does (metrics): one call per action, per rule, per mailbox pass.

    An observer cannot change or stop the work: the engine calls it inside try/except, logs what
    it raises, and writes the journal row of every action the server carried out regardless.
    """

    def entry(self, entry: JournalEntry) -> None:
        """One action on one message (any outcome, dry runs included)."""

    def rule_done(self, report: RuleReport, seconds: float) -> None:
        """One rule over one mailbox: SEARCH, FETCH, residual and actions took `seconds`."""

    def mailbox_done(self, report: MailboxReport, seconds: float) -> None:
        """One pass over one mailbox finished."""


@dataclass
class RuleReport:
    """What one rule did in one mailbox."""

    rule: str
    account: str
    mailbox: str
    candidates: int = 0
    matched: int = 0
    limited: bool = False
    outcomes: Counter[str] = field(default_factory=Counter)  # "move ok", "forward failed", ...

    @property
    def failed(self) -> int:
        return sum(n for k, n in self.outcomes.items() if k.endswith(" failed"))


@dataclass
class MailboxReport:
    """One pass of the rules over one mailbox."""

    account: str
    mailbox: str
    uidvalidity: int
    examined: int
    last_uid: int
    rules: list[RuleReport] = field(default_factory=list)
    skipped_messages: int = 0  # malformed or vanished messages passed over
    retry: list[int] = field(default_factory=list)  # refused for now; safe to process again later
    #: messages passed over at a `[limits]` bound, by reason (`evaluation_time`); in skipped_messages too
    skipped_for: Counter[str] = field(default_factory=Counter)
    text_cut: int = 0  # messages whose decoded text went past a [limits] cap (searched up to it)
    searched_ahead: bool = False  # later rules were searched ahead on a second connection (prefetch.py)

    @property
    def failed(self) -> int:
        return sum(r.failed for r in self.rules)


# -- a run's budgets -----------------------------------------------------------------------------------

#: (account, address, since) -> when the sends to that address were announced (Journal.sends_since)
SendHistory = Callable[[str, str, dt.datetime], list[dt.datetime]]


class MailboxCreations(Protocol):
    """How many mailboxes an account may still create (engine/loops.py: CreationBudget)."""

    def take(self, account: str, mailbox: str) -> str | None:
        """Count one creation and return None, or say why none is allowed now."""


class SendBudget(Protocol):
    """Forwards and redirects to one address per hour (engine/loops.py: SendLimiter)."""

    def take(self, account: str, address: str, history: SendHistory | None) -> str | None:
        """Count one send to `address` and return None, or say why it must be skipped now."""

    def give_back(self, account: str, address: str) -> None:
        """Undo the last `take`: that send certainly did not leave."""


class LoopBudgets(Protocol):
    """The budgets one run applies (engine/loops.py: LoopGuard)."""

    @property
    def creations(self) -> MailboxCreations: ...

    @property
    def sends(self) -> SendBudget: ...


class LimitPolicy(Protocol):
    """A run's `limit N` accounting across its passes (engine/limits.py: LimitLedger)."""

    def decide(self, rule: A.Rule, account: str, mailbox: str, matched: int) -> int | None:
        """None: the rule may act on this pass's `matched`; else the run total over its limit."""


# -- what a run is given -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccountContext:
    """What the engine needs to know of an account beyond its mailbox store."""

    name: str
    archive: str | None = None  # configured override of SPECIAL-USE \Archive
    trash: str | None = None  # configured override of SPECIAL-USE \Trash
    create_mailboxes: bool = True
    sender: Sender | None = None
    #: the mailbox creation budget and send limiter of this run (engine/loops.py); None: defaults
    guard: LoopBudgets | None = None
    #: Among daemons sharing the accounts (daemon/lease_guard.py): called before each command that
    #: changes the server and before each send; raises (state/interface.py LeaseLost) once this
    #: process no longer surely holds the account's lease, and the pass stops there. None: no check.
    lease_check: Callable[[], None] | None = None


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How a run behaves: its clock, dry-run, whether `limit` guard rails may be exceeded."""

    now: dt.datetime
    tz: dt.tzinfo
    run_id: str
    dry_run: bool = False
    force: bool = False
    bounds: Bounds = DEFAULT_BOUNDS  # `[limits]` on one message's evaluation (engine/evaluation.py)
