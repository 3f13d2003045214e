"""IMAP NOTIFY (RFC 5465): one connection hears of new mail and flag changes in many mailboxes.

`notify_set` asks for events in the selected mailbox (EXISTS, EXPUNGE, FETCH FLAGS, as in IDLE) and
in every watched mailbox (an unsolicited `STATUS` naming it), with the STATUS indicator, so the
answer reports each watched mailbox's UIDVALIDITY and UIDNEXT: what a catch-up after a (re)connect
compares with the checkpoints (RFC 5465 §3.1). `notify_events` reads what IDLE (or any command)
brought back. A server without NOTIFY, or one that refuses NOTIFY SET, raises `NotifyRefused`: the
daemon then watches each mailbox with IDLE (docs/operations.md, "Watching").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from imapclient import imap_utf7
from imapclient.response_parser import parse_response

from mailrules.errors import ImapError
from mailrules.imap.core import mailbox_arg
from mailrules.imap.session import ImapSession

#: RFC 5465 §5: MessageNew and MessageExpunge go together, and FlagChange needs both.
EVENTS = b"(MessageNew MessageExpunge FlagChange)"
#: Keep the command near 8 KB (RFC 7162 §4, imap-notes 25): past that, `personal` is asked instead
#: of the list, and events for mailboxes that are not watched are ignored.
MAX_COMMAND_BYTES = 8000
#: Dovecot 2.3 answers `NO [NOTIFICATIONOVERFLOW] Too many mailbox names` past 100 names (measured):
#: more are asked as `personal` too.
MAX_NAMES = 100
#: The unsolicited STATUS of a non-selected mailbox (RFC 5465 §5.2, §5.3).
STATUS = "STATUS"


class NotifyRefused(ImapError):
    """The server does not advertise NOTIFY, or answered NOTIFY SET with NO or BAD (RFC 5465 §3.1):
    this account's mailboxes are watched with IDLE each; `reason` says why, in words."""

    def __init__(self, account: str, reason: str) -> None:
        super().__init__(f"{account}: NOTIFY not used: {reason}", "permanent")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class MailboxStatus:
    """What a STATUS response said of one mailbox (None: not in that response)."""

    uidvalidity: int | None = None
    uidnext: int | None = None
    messages: int | None = None
    highestmodseq: int | None = None


@dataclass(slots=True)
class NotifyEvents:
    """What a batch of untagged responses asks for: mailboxes (server names, as STATUS wrote them)
    that changed, whether the selected one changed (EXISTS, or FETCH with FLAGS), and whether the
    server dropped events (`[NOTIFICATIONOVERFLOW]`, RFC 5465 §5.8: resynchronise)."""

    mailboxes: set[str] = field(default_factory=set)
    selected: bool = False
    overflow: bool = False

    def __bool__(self) -> bool:
        return bool(self.mailboxes) or self.selected or self.overflow

    def add(self, other: NotifyEvents) -> None:
        self.mailboxes |= other.mailboxes
        self.selected = self.selected or other.selected
        self.overflow = self.overflow or other.overflow


def mailbox_key(server_name: str) -> str:
    """The name under which a server name is matched: INBOX in any case is INBOX (RFC 9051 §5.1)."""
    return "INBOX" if server_name.upper() == "INBOX" else server_name


def notify_pieces(
    server_names: Sequence[str], *, status: bool = True, personal: bool = False
) -> tuple[list[bytes], bool]:
    """The NOTIFY SET command's pieces for `server_names`, and whether `personal` stood in for the
    list (asked, or too many names). Each name goes through `mailbox_arg`: modified UTF-7, quoted,
    CR/LF refused, so no configured name can end the command early or add one."""
    head = [b"NOTIFY SET ", b"STATUS " if status else b"", b"(selected ", EVENTS, b") "]
    names = b" ".join(mailbox_arg(n) for n in server_names)
    if personal or len(server_names) > MAX_NAMES or len(names) + 64 > MAX_COMMAND_BYTES:
        return [*head, b"(personal ", EVENTS, b")"], True
    return [*head, b"(mailboxes (", names, b") ", EVENTS, b")"], False


def notify_set(session: ImapSession, server_names: Sequence[str]) -> tuple[dict[str, MailboxStatus], bool]:
    """Ask for events in `server_names`; (their status now, keyed by `mailbox_key`; whether
    `personal` was asked). NotifyRefused when the server lacks NOTIFY or refuses the command."""
    if not session.has("NOTIFY"):
        raise NotifyRefused(session.account, "the server does not advertise NOTIFY (RFC 5465)")
    pieces, personal = notify_pieces(server_names)
    reply = session._run("NOTIFY", [b"".join(pieces)], accept=("OK", "NO", "BAD"))
    if reply.typ == "NO" and b"NOTIFICATIONOVERFLOW" in reply.text.upper() and not personal:
        # Too many names for this server (RFC 5465 §5.8): all personal mailboxes, ours filtered.
        pieces, personal = notify_pieces(server_names, personal=True)
        reply = session._run("NOTIFY", [b"".join(pieces)], accept=("OK", "NO", "BAD"))
    if reply.typ == "OK":
        session.noop()  # Dovecot sends some of the STATUS answers after the tagged OK: these too
    statuses = dict(status_responses(session._take(STATUS)))
    if reply.typ != "OK":
        text = reply.text.decode("ascii", "replace")[:200]
        raise NotifyRefused(session.account, f"the server answered NOTIFY SET with {reply.typ} {text}")
    return statuses, personal


def notify_none(session: ImapSession) -> None:
    """`NOTIFY NONE`: no more events on this connection (RFC 5465 §3.1)."""
    session._run("NOTIFY", [b"NOTIFY NONE"])


def mailbox_status(session: ImapSession, server_name: str) -> tuple[MailboxStatus | None, set[str]]:
    """`STATUS name (UIDNEXT UIDVALIDITY MESSAGES)` of a mailbox that is not selected (RFC 9051
    §6.3.11): (its status, the other mailboxes that unsolicited STATUS responses named meanwhile)."""
    arg = mailbox_arg(server_name)
    session._run("STATUS", [b"STATUS ", arg, b" (UIDNEXT UIDVALIDITY MESSAGES)"])
    key, found, others = mailbox_key(server_name), None, set()
    for name, status in status_responses(session._take(STATUS)):
        if name == key:
            found = status
        else:
            others.add(name)
    return found, others


def take_events(session: ImapSession) -> NotifyEvents:
    """The events that came with the answers to other commands (imaplib kept them aside): unsolicited
    STATUS, and EXISTS or FETCH in the selected mailbox. Read before a SELECT, which forgets them."""
    out = NotifyEvents(mailboxes={name for name, _ in status_responses(session._take(STATUS))})
    out.selected = bool(session._take("EXISTS")) or bool(session._take("FETCH"))
    return out


def status_responses(items: Iterable[Any]) -> list[tuple[str, MailboxStatus]]:
    """(mailbox_key, status) of each `STATUS name (...)` that imaplib kept (the text after STATUS)."""
    out = []
    for item in items:
        if not isinstance(item, bytes):
            continue  # a name sent as a literal: modified UTF-7 names never need one
        try:
            parsed = parse_response([item])
        except Exception:
            continue
        if len(parsed) >= 2:
            out.append(_status(parsed[0], parsed[1]))
    return out


def notify_events(responses: Iterable[tuple[Any, ...]]) -> NotifyEvents:
    """The events in responses parsed by imapclient (imap/idle.py `Idler` returns these)."""
    out = NotifyEvents()
    for r in responses:
        if len(r) >= 3 and r[0] == b"STATUS":
            out.mailboxes.add(_status(r[1], r[2])[0])
        elif len(r) >= 2 and r[1] == b"EXISTS":
            out.selected = True
        elif len(r) >= 3 and r[1] == b"FETCH" and b"FLAGS" in (r[2] if isinstance(r[2], tuple) else ()):
            out.selected = True  # FlagChange in the selected mailbox (RFC 5465 §5.3)
        elif r and r[0] in (b"OK", b"NO") and len(r) > 1 and b"[NOTIFICATIONOVERFLOW]" in bytes(r[1]).upper():
            out.overflow = True
    return out


def _status(name: Any, items: Any) -> tuple[str, MailboxStatus]:
    raw = name if isinstance(name, bytes) else str(name).encode("ascii")
    values: dict[str, int] = {}
    if isinstance(items, tuple):
        for key, value in zip(items[::2], items[1::2], strict=False):
            if isinstance(key, bytes) and isinstance(value, int):
                values[key.decode("ascii", "replace").upper()] = value
    status = MailboxStatus(
        values.get("UIDVALIDITY"), values.get("UIDNEXT"), values.get("MESSAGES"), values.get("HIGHESTMODSEQ")
    )
    return mailbox_key(imap_utf7.decode(raw)), status
