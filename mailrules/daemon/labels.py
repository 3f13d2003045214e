"""The fixed label values of mailrules' metrics and the buckets of its histograms (daemon/metrics.py).

Label values come from these sets or from the configuration (accounts, mailboxes, rules), never
from mail or from a server: a value outside them is counted as OTHER. Also the shapes of what
`Metrics.instrument` labels by account: an account's settings, a session with hooks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

#: The label value for anything outside the configured set (bounded cardinality: no value from
#: mail or a server becomes a series).
OTHER = "other"

#: JournalEntry.action, spaces as underscores.
ACTIONS: tuple[str, ...] = (
    "move",
    "copy",
    "archive",
    "delete",
    "delete_permanently",
    "mark_read",
    "mark_unread",
    "flag",
    "unflag",
    "tag",
    "untag",
    "forward",
    "redirect",
)
ACTION_OUTCOMES: tuple[str, ...] = ("ok", "failed", "skipped", "dry_run")
MESSAGE_OUTCOMES: tuple[str, ...] = ("matched", "unmatched", "skipped", "failed")
#: Why a pass passed over a message at a `[limits]` bound (mailrules/engine/evaluation.py).
MESSAGE_SKIP_REASONS: tuple[str, ...] = ("evaluation_time",)
SCHEDULED_OUTCOMES: tuple[str, ...] = ("ok", "failed", "skipped")
RELOAD_OUTCOMES: tuple[str, ...] = ("success", "failure")
#: Why the HTTP server cut a connection short (mailrules/daemon/http.py).
HTTP_DROP_REASONS: tuple[str, ...] = ("limit", "evicted", "timeout", "disconnect")
IMAP_COMMANDS: tuple[str, ...] = (
    "SELECT",
    "SEARCH",
    "FETCH",
    "STORE",
    "MOVE",
    "COPY",
    "EXPUNGE",
    "APPEND",
    "LIST",
    "IDLE",
    "NOOP",
    "LOGIN",
    "OTHER",
)
# Names CommandCore uses that are one of the fixed set under another spelling.
_COMMAND_ALIASES = {"EXAMINE": "SELECT", "AUTHENTICATE": "LOGIN"}
# IMAP commands that carry out actions: their time, between two journal entries of one thread,
# is the time of the action group the next entry belongs to (see `_pending`).
ACTION_COMMANDS = frozenset({"STORE", "MOVE", "COPY", "EXPUNGE", "CREATE"})

_FAST = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
IMAP_BUCKETS = (*_FAST, 300.0, 900.0)  # IDLE lasts up to its 10-minute re-issue (RFC 2177)
CONNECT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
ARRIVAL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
RULE_BUCKETS = (0.001, *_FAST, 300.0)
RUN_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


class KnownAccounts:
    """The accounts the configuration names, for an `account` label: any other is OTHER.

    Thread-safe: `add` is called at start and on reload, the call from any thread that counts.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._names: set[str] = set()

    def add(self, accounts: Iterable[str]) -> list[str]:
        """Know `accounts` from now on; returns them (a list) for creating their series."""
        names = list(accounts)
        with self._lock:
            self._names.update(names)
        return names

    def __call__(self, account: str) -> str:
        """`account` if the configuration names it, else OTHER."""
        with self._lock:
            return account if account in self._names else OTHER


def command_label(name: str) -> str:
    """CommandCore's command name (`UID FETCH`, `EXAMINE`) as one of IMAP_COMMANDS."""
    word = name.upper().removeprefix("UID ").strip()
    word = _COMMAND_ALIASES.get(word, word)
    return word if word in IMAP_COMMANDS else "OTHER"


def action_label(action: str) -> str:
    """JournalEntry.action as a label value: `delete permanently` -> `delete_permanently`."""
    word = action.replace(" ", "_")
    return word if word in ACTIONS else OTHER


class NamedAccount(Protocol):
    """An account's settings, as far as `Metrics.instrument` needs them."""

    @property
    def name(self) -> str: ...


class HookedSession(Protocol):
    """A session with CommandCore's per-command and throttling hooks."""

    on_command: Callable[[str, float, bool], None] | None
    on_throttle: Callable[[str, float], None] | None


AccountT = TypeVar("AccountT", bound=NamedAccount)
SessionT = TypeVar("SessionT", bound=HookedSession)
