"""Loop safety: what no message, however built, can make an action do.

A sender writes the List-Id, the From domain and whatever a regular expression captures, so a
template can render any mailbox name; and what mailrules forwards can come back as a bounce.
The action runner (engine/actions.py) applies these checks and budgets before it acts:

- `same_mailbox`: a copy, move, archive or delete whose destination is the mailbox the rule is
  looking at is skipped. A copy into a watched mailbox arrives there as new mail, which the rule
  copies again: one message flooded INBOX with 815 copies in 8 seconds.
- `send_refusal`: forward and redirect skip automatic mail (RFC 3834 §2: `Auto-Submitted` other
  than `no`, `Precedence: bulk|junk|list`), bounces (RFC 5321 §4.5.5: an empty `Return-Path`)
  and delivery or disposition reports (RFC 6522, 3464, 8098), so that mailrules and an
  auto-responder, or a target that bounces, cannot ping-pong. Our own loop header is checked by
  the SMTP sender, which knows its address (smtp/sender.py).
- `CreationBudget`: the mailboxes one run may create per account (the daemon's arrivals: per
  hour); `SendLimiter`: forwards and redirects to one address per hour per account.

Each reason a message is skipped for is a fixed text (journalled as the entry's `error`, outcome
"skipped") with a fixed metric label: `skip_label` maps one to the other.
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mailrules.config.model import LimitsSettings
from mailrules.message.view import MessageView

log = logging.getLogger("mailrules.actions")

#: The default of `[limits] mailboxes_created_per_run`.
MAILBOXES_CREATED_PER_RUN = LimitsSettings().mailboxes_created_per_run
#: The default of `[limits] forwards_per_address_per_hour` (forward and redirect together).
FORWARDS_PER_ADDRESS_PER_HOUR = LimitsSettings().forwards_per_address_per_hour
HOUR = 3600.0

# -- why an action was skipped (the journal's text) and its metric label -------------------------

SOURCE_MAILBOX = "destination is the source mailbox"
AUTO_SUBMITTED = "automatic mail (Auto-Submitted)"
NULL_SENDER = "a bounce (empty Return-Path)"
REPORT = "a delivery or disposition report"
PRECEDENCE = "bulk or list mail (Precedence)"
LOOP_HEADER = "sent by this mailrules already (X-Mailrules-Loop)"
RATE_LIMIT = "rate limit reached"
#: Not loop safety: a UID the server left out of its COPYUID answer to our MOVE or COPY, which
#: therefore moved or copied nothing (engine/actions.py `_group`).
VANISHED = "gone before the command (expunged by another client)"

SKIP_REASONS: dict[str, str] = {
    SOURCE_MAILBOX: "source_mailbox",
    AUTO_SUBMITTED: "auto_submitted",
    NULL_SENDER: "null_sender",
    REPORT: "report",
    PRECEDENCE: "precedence",
    LOOP_HEADER: "loop_header",
    RATE_LIMIT: "rate_limit",
    VANISHED: "vanished",
}
#: The metric labels, in a fixed order (children initialised at start).
SKIP_LABELS: tuple[str, ...] = tuple(SKIP_REASONS.values())

#: The start of the error of an action refused by the mailbox creation budget.
CREATION_LIMIT = "mailbox creation limit reached"


def skip_label(error: str | None) -> str | None:
    """The metric label of a skipped entry's reason, or None for the other reasons (already so...)."""
    if not error:
        return None
    for text, label in SKIP_REASONS.items():
        if error.startswith(text):
            return label
    return None


# -- the source mailbox ---------------------------------------------------------------------------


def _canonical(name: str, separator: str) -> str:
    """A mailbox name as the server tells names apart: `INBOX` in any case (RFC 9051 §5.1; also
    as the first level of a hierarchy, as Dovecot and Cyrus treat it) and no trailing separator."""
    if separator:
        name = name.rstrip(separator) or name
        head, sep, rest = name.partition(separator)
    else:
        head, sep, rest = name, "", ""
    if head.upper() == "INBOX":
        head = "INBOX"
    return head + sep + rest


def same_mailbox(a: str, b: str, separator: str) -> bool:
    """Whether the names `a` and `b` are one mailbox on a server with this hierarchy separator."""
    return _canonical(a, separator) == _canonical(b, separator)


# -- forward and redirect: mail never to send on ----------------------------------------------------

_REPORT_TYPES = frozenset(
    {
        "multipart/report",
        "message/delivery-status",
        "message/global-delivery-status",
        "message/disposition-notification",
        "message/global-disposition-notification",
    }
)
# A report part anywhere in the message (a part's own header): linear, no MIME parse of the body.
_REPORT_PART = re.compile(
    rb"^content-type:[ \t]*(?:\r?\n[ \t]+)?(?:multipart/report|message/(?:global-)?"
    rb"(?:delivery-status|disposition-notification))\b",
    re.IGNORECASE | re.MULTILINE,
)
_COMMENT = re.compile(r"\([^()]*\)")
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")


def header_block(raw: bytes) -> bytes:
    """The header of a message: everything before the first empty line (all of it if none)."""
    m = _BLANK_LINE.search(raw)
    return raw if m is None else raw[: m.start()]


def _token(value: str) -> str:
    """The first word of a structured field, comments and parameters left out, lower-cased."""
    return _COMMENT.sub(" ", value).split(";", 1)[0].strip().lower()


def send_refusal(raw: bytes) -> str | None:
    """Why `raw` must not be forwarded or redirected (one of the reasons above), or None."""
    view = MessageView.from_bytes(header_block(raw) + b"\r\n\r\n")
    if any(_token(v) != "no" for v in view.header_values("Auto-Submitted")):
        return AUTO_SUBMITTED
    if any(re.sub(r"\s", "", _COMMENT.sub("", v)) == "<>" for v in view.header_values("Return-Path")):
        return NULL_SENDER
    if any(_token(v) in ("bulk", "junk", "list") for v in view.header_values("Precedence")):
        return PRECEDENCE
    if any(_token(v) in _REPORT_TYPES for v in view.header_values("Content-Type")[:1]):
        return REPORT
    if _REPORT_PART.search(raw):
        return REPORT
    return None


def header_digest(raw: bytes) -> str:
    """SHA-256 of the header block (line ends as CRLF): what tells one delivered message from another.

    A stranger can send a message with the Message-ID of one still to come, but not with its
    Received trail, Date and the rest byte for byte; a copy or move keeps the header as it is.
    """
    block = re.sub(rb"\r?\n", b"\r\n", header_block(raw))
    return hashlib.sha256(block).hexdigest()


# -- budgets ----------------------------------------------------------------------------------------


@dataclass
class CreationBudget:
    """How many mailboxes each account may still create: `limit` over the budget's lifetime (one
    run, one scheduled firing) or, with `window` seconds, over any such sliding window (the
    daemon's arrivals: an hour). Thread-safe: the daemon's watchers share one."""

    limit: int = MAILBOXES_CREATED_PER_RUN
    window: float | None = None
    clock: Callable[[], float] = time.monotonic
    _made: dict[str, collections.deque[float]] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def take(self, account: str, mailbox: str) -> str | None:
        """Count one creation and return None, or say why none is allowed now."""
        now = self.clock()
        with self._lock:
            made = self._made.setdefault(account, collections.deque())
            if self.window is not None:
                while made and made[0] <= now - self.window:
                    made.popleft()
            if len(made) < self.limit:
                made.append(now)
                return None
            count = len(made)
        scope = "in the last hour" if self.window == HOUR else "in this run"
        if self.window not in (None, HOUR):
            scope = f"in the last {self.window:.0f} s"
        return (
            f"{CREATION_LIMIT}: {count} mailboxes created {scope} for account {account} "
            f"([limits] mailboxes_created_per_run = {self.limit}); {mailbox!r} not created"
        )


History = Callable[[str, str, dt.datetime], list[dt.datetime]]


@dataclass
class SendLimiter:
    """At most `limit` forwards and redirects to one address per hour per account.

    The sends of the last hour come from the state (`history`: the intents of that account and
    address since a moment), read the first time an address is seen, so a restart does not reset
    the count; after that the limiter counts in memory (another process sending meanwhile is not
    seen). A send is counted when it is allowed (`take`) and given back (`give_back`) when it
    certainly did not happen. Thread-safe; one per process.
    """

    limit: int = FORWARDS_PER_ADDRESS_PER_HOUR
    clock: Callable[[], float] = time.time
    _sent: dict[tuple[str, str], collections.deque[float]] = field(
        default_factory=dict, init=False, repr=False
    )
    _limited: set[tuple[str, str]] = field(default_factory=set, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def take(self, account: str, address: str, history: History | None) -> str | None:
        """Count one send to `address` and return None, or say why it must be skipped now."""
        key = (account, address.lower())
        now = self.clock()
        with self._lock:
            sent = self._sent.get(key)
            if sent is None:
                since = dt.datetime.fromtimestamp(now - HOUR, dt.UTC)
                past = history(account, key[1], since) if history is not None else []
                sent = self._sent[key] = collections.deque(sorted(p.timestamp() for p in past))
            while sent and sent[0] <= now - HOUR:
                sent.popleft()
            if len(sent) < self.limit:
                sent.append(now)
                self._limited.discard(key)
                return None
            first = key not in self._limited
            self._limited.add(key)
            count = len(sent)
            again = dt.datetime.fromtimestamp(sent[0] + HOUR, dt.UTC)
        if first:  # once per time the limit is reached, not once per message
            log.warning(
                "account %s: %d forwards/redirects to %s in the last hour, the limit "
                "([limits] forwards_per_address_per_hour); more are skipped until %s",
                account,
                count,
                address,
                f"{again:%Y-%m-%d %H:%M:%S} UTC",
            )
        return (
            f"{RATE_LIMIT}: {count} sends to {address} in the last hour "
            f"([limits] forwards_per_address_per_hour = {self.limit})"
        )

    def give_back(self, account: str, address: str) -> None:
        """Undo the last `take`: that send certainly did not leave."""
        with self._lock:
            sent = self._sent.get((account, address.lower()))
            if sent:
                sent.pop()


@dataclass
class LoopGuard:
    """The budgets one run applies: its own mailbox creations, and the process's send limiter."""

    creations: CreationBudget = field(default_factory=CreationBudget)
    sends: SendLimiter = field(default_factory=SendLimiter)

    @classmethod
    def from_limits(
        cls, limits: LimitsSettings, *, window: float | None = None, sends: SendLimiter | None = None
    ) -> LoopGuard:
        """The guard of one run (`window` None: the budget lasts the run) or of the daemon's
        arrivals (`window` HOUR), sharing `sends` with the other guards of the process."""
        return cls(
            CreationBudget(limits.mailboxes_created_per_run, window),
            sends if sends is not None else SendLimiter(limits.forwards_per_address_per_hour),
        )
