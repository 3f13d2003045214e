"""Gmail (X-GM-EXT-1) on the wire: labels in FETCH and STORE, archive and delete as Gmail means them.

Sources (nothing here was run against Gmail; tests/unit/test_gmail_dialect.py holds the writer and
the parsers to the transcripts of these pages):
- Google, "IMAP Extensions" (developers.google.com/workspace/gmail/imap/imap-extensions):
  X-GM-LABELS is "a list of ASTRINGs, encoded in UTF-7 as appropriate", added with
  `STORE 1 +X-GM-LABELS (foo)`, searched with `SEARCH X-GM-LABELS foo`; X-GM-MSGID and
  X-GM-THRID are unsigned 64-bit numbers; every LIST carries the special-use attributes.
- Google, "How actions sync in IMAP" (support.google.com/mail/answer/77657): moving a message to a
  folder applies a label; deleting it from a folder removes that label, from the inbox removes it
  from the inbox; moving it to [Gmail]/Trash trashes it; deleting it from [Gmail]/Spam or
  [Gmail]/Trash deletes it for good.
- Google, "IMAP, POP, and SMTP" (developers.google.com/workspace/gmail/imap/imap-smtp): a session
  lasts about 24 hours, with OAuth2 about as long as the access token.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from imapclient import imap_utf7
from imapclient.response_parser import parse_fetch_response

from mailrules.compile.serialize import chunk_uid_sets, label_arg
from mailrules.config.schema import PROVIDER_MAX_CONNECTIONS, PROVIDERS
from mailrules.errors import ImapError
from mailrules.imap.session import ImapSession

log = logging.getLogger(__name__)

#: Simultaneous IMAP connections Gmail allows one account (the user's own clients count too; the
#: 16th login gets `[ALERT] Too many simultaneous connections.`). Widely reported, not on a page
#: of Google's that this project could cite (imap-notes.md).
GMAIL_MAX_CONNECTIONS = PROVIDER_MAX_CONNECTIONS["gmail"]
#: The `provider = "gmail"` preset's max_connections: room for a phone and a desktop client.
GMAIL_CONNECTION_BUDGET: int = PROVIDERS["gmail"]["max_connections"]
#: The FETCH item that reads a message's labels.
LABELS_ITEM = "X-GM-LABELS"
#: Special uses whose mailboxes no watcher or default run should read: \All holds every message
#: again under another UID (rules would act twice), \Junk is Gmail's spam.
NEVER_WATCHED_USES = ("\\All", "\\Junk")
_SYSTEM_FLAGS = frozenset({"\\seen", "\\answered", "\\flagged", "\\deleted", "\\draft", "\\recent"})
_INBOX_LABEL = "\\Inbox"


def is_label(flag: str) -> bool:
    """Whether `tag "flag"` sets a Gmail label: anything but an IMAP system flag (`\\Important`,
    `\\Starred` and user labels are labels)."""
    return flag.lower() not in _SYSTEM_FLAGS


def store_label_commands(
    uids: Iterable[int], labels: Sequence[str], add: bool, uid_set_bytes: int
) -> list[bytes]:
    """`UID STORE <set> +X-GM-LABELS (<labels>)` (or `-`), one per chunk of the UID set.

    The documented form (`a011 STORE 1 +X-GM-LABELS (foo)`); Google documents no `.SILENT`, so
    Gmail echoes each message's labels in a FETCH, which `labels_from_fetch` reads back.
    """
    if not labels:
        return []
    names = b"(" + b" ".join(label_arg(label) for label in labels) + b")"
    op = b" +X-GM-LABELS " if add else b" -X-GM-LABELS "
    return [b"UID STORE " + s.encode("ascii") + op + names for s in chunk_uid_sets(set(uids), uid_set_bytes)]


def decode_labels(value: Any) -> tuple[str, ...]:
    """X-GM-LABELS as imapclient parses it (bytes, and ints for all-digit names) -> label names.

    System labels keep their backslash (`\\Inbox`); user labels are decoded from modified UTF-7.
    """
    if value is None:
        return ()
    items = value if isinstance(value, tuple | list) else (value,)
    out: list[str] = []
    for item in items:
        raw = item if isinstance(item, bytes) else str(item).encode("ascii", "replace")
        if raw.startswith(b"\\"):
            out.append(raw.decode("ascii", "replace"))
        else:
            out.append(imap_utf7.decode(raw))
    return tuple(out)


def gm_id(value: Any) -> int | None:
    """X-GM-MSGID / X-GM-THRID: an unsigned 64-bit number, or None when the answer is not one."""
    try:
        n = int(value)
    except (TypeError, ValueError):
        return None
    return n if 0 <= n < 2**64 else None


def labels_from_fetch(lines: Sequence[Any]) -> dict[int, tuple[str, ...]]:
    """{uid (or sequence number when no UID came): labels} from untagged FETCH data as imaplib keeps it."""
    out: dict[int, tuple[str, ...]] = {}
    for line in lines:
        if not isinstance(line, bytes):
            continue
        for seq, msg in parse_fetch_response([line], normalise_times=False, uid_is_key=False).items():
            if b"X-GM-LABELS" in msg:
                out[int(msg.get(b"UID", seq))] = decode_labels(msg[b"X-GM-LABELS"])
    return out


def with_labels(flags: Iterable[str], labels: Iterable[str]) -> tuple[str, ...]:
    """A view's flags with the message's labels among them: `tagged` reads both (language.md §4)."""
    seen: dict[str, str] = {}
    for name in (*flags, *labels):
        seen.setdefault(name.lower(), name)
    return tuple(seen.values())


def store_labels(
    session: ImapSession, uids: Sequence[int], labels: Sequence[str], add: bool, uid_set_bytes: int
) -> dict[int, tuple[str, ...]]:
    """Add or remove labels; returns the labels Gmail echoed per UID (absent: not echoed)."""
    echoed: dict[int, tuple[str, ...]] = {}
    for command in store_label_commands(uids, labels, add, uid_set_bytes):
        session._take("FETCH")
        session._run("UID STORE", [command])
        answers = session._take("FETCH")
        echoed.update(labels_from_fetch(answers))
        if session.after_store is not None:
            # The echo carries the MODSEQ of our change too (CONDSTORE, RFC 7162 §3.1.3): the STORE
            # listener reads it where every STORE's answer is (`on flag change`, imap/modseq.py).
            session._client._imap.untagged_responses["FETCH"] = answers
            session.after_store()
    return echoed


# -- special uses, watching -------------------------------------------------------------------------


def special_uses(found: dict[str, str]) -> dict[str, str]:
    """Gmail marks no \\Archive: archiving is leaving the inbox for All Mail (`\\All`), whatever the
    account's language calls it ("[Gmail]/All Mail", "[Google Mail]/Alle Nachrichten")."""
    out = dict(found)
    if "\\Archive" not in out and "\\All" in out:
        out["\\Archive"] = out["\\All"]
    return out


def never_watched(mailbox: str, special_use: dict[str, str]) -> str | None:
    """Why `mailbox` is not watched by default on Gmail (None when it may be)."""
    for use in NEVER_WATCHED_USES:
        if special_use.get(use) == mailbox:
            if use == "\\All":
                return f"{mailbox} holds every message a second time: rules would act twice"
            return f"{mailbox} is Gmail's spam"
    return None


# -- archive and delete ------------------------------------------------------------------------------


def archive_moves(source: str) -> bool:
    """Whether `archive` from `source` is a MOVE to All Mail (from INBOX: Gmail removes the inbox
    label and the message stays in All Mail) rather than removing the \\Inbox label in place (from
    a label's mailbox, where a MOVE would remove that label instead: `archive_in_place`)."""
    return source.upper() == "INBOX"


def archive_in_place(session: ImapSession, uids: Sequence[int], uid_set_bytes: int) -> None:
    """Gmail's archive seen from a label's mailbox: `-X-GM-LABELS (\\Inbox)`, the label stays."""
    store_labels(session, uids, [_INBOX_LABEL], False, uid_set_bytes)


def delete_permanently(
    session: ImapSession, uids: Sequence[int], trash: str, spam: str | None, uid_set_bytes: int
) -> int:
    """Delete for good, as Gmail understands it; returns how many messages were expunged.

    \\Deleted and UID EXPUNGE in a label's mailbox (INBOX included) only remove that label: the
    message stays in All Mail. So: MOVE to the trash (every label goes), then \\Deleted and UID
    EXPUNGE of the new UIDs there (deleting from [Gmail]/Trash or [Gmail]/Spam is for good), then
    the source is selected again. Without COPYUID the messages stay in the trash, which Gmail
    empties after 30 days (a warning says so).
    """
    selected = session.selected
    if selected is None:
        raise ImapError(f"{session.account}: delete permanently with no mailbox selected", "permanent")
    source = selected.mailbox
    if source in (trash, spam):
        session.store_flags(uids, ["\\Deleted"], True)
        session.expunge_uids(uids)
        return len(uids)
    mapping = session.move(uids, trash)
    new = sorted(mapping.values())
    try:
        if not new:
            log.warning(
                "%s: Gmail gave no COPYUID for %d message(s) moved to %r: they stay in the trash "
                "(Gmail empties it after 30 days)",
                session.account,
                len(uids),
                trash,
            )
            return 0
        session.select(trash)
        session.store_flags(new, ["\\Deleted"], True)
        session.expunge_uids(new)
    finally:
        # Back where the engine left off; a dead connection is the caller's to reconnect.
        if not session._dead and (session.selected is None or session.selected.mailbox != source):
            session.select(source)
    return len(new)
