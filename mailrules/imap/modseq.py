"""CONDSTORE for `on flag change` (RFC 7162): the messages whose flags changed since a MODSEQ, and
the MODSEQs that our own STOREs got (so that a change of ours is never taken for someone else's).

imapclient's `fetch(..., modifiers=["CHANGEDSINCE n"])` raises on the `1:*` range in 4.1.0 (it
filters its answer by the UIDs asked for, imap-notes (a)): the command is sent and its answers are
read here, through the session's own command path (counted, timed, classified like the others).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from mailrules.imap.commands import MailboxCommands
from mailrules.imap.session import ImapSession


@dataclass(frozen=True, slots=True)
class Changed:
    """One message of a `CHANGEDSINCE` answer: its flags now and the MODSEQ of its latest change."""

    flags: tuple[str, ...]
    modseq: int


def _modseq(value: Any) -> int | None:
    """`MODSEQ (12)` as imapclient parses it: a tuple of one int (or the int)."""
    if isinstance(value, tuple | list) and value:
        value = value[0]
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return int(value) if isinstance(value, int) or (isinstance(value, str) and value.isdigit()) else None


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def changed_since(session: ImapSession, modseq: int) -> dict[int, Changed]:
    """`UID FETCH 1:* (UID FLAGS MODSEQ) (CHANGEDSINCE modseq)` on the selected mailbox (RFC 7162
    §3.1.4.1): every message whose MODSEQ is above `modseq`, new ones included."""
    session._take("FETCH")  # what earlier commands left is not part of this answer
    command = b"UID FETCH 1:* (UID FLAGS MODSEQ) (CHANGEDSINCE %d)" % modseq
    session._run("UID FETCH", [command])
    out: dict[int, Changed] = {}
    for uid, answers in MailboxCommands._fetch_answers(session._take("FETCH")):
        mod = _modseq(answers.get("MODSEQ"))
        if mod is None or "FLAGS" not in answers:
            continue  # not an answer to this FETCH (an unsolicited one without the items)
        out[uid] = Changed(tuple(_text(f) for f in answers["FLAGS"]), mod)
    return out


def stored_modseqs(session: ImapSession) -> dict[int, int]:
    """UID -> MODSEQ from the untagged FETCHes a UID STORE answered with (with CONDSTORE enabled,
    Dovecot and Cyrus send `* n FETCH (UID u MODSEQ (m))` even for `.SILENT`, RFC 7162 §3.1.3)."""
    out: dict[int, int] = {}
    for uid, answers in MailboxCommands._fetch_answers(session._take("FETCH")):
        mod = _modseq(answers.get("MODSEQ"))
        if mod is not None:
            out[uid] = max(mod, out.get(uid, 0))
    return out


def condstore_problem(session: ImapSession, highestmodseq: int | None) -> str | None:
    """Why `on flag change` cannot work on this connection's selected mailbox, or None."""
    if not session.has("CONDSTORE"):
        return "the server lacks the CONDSTORE capability (RFC 7162), which `on flag change` needs"
    if highestmodseq is None:
        return "the mailbox keeps no MODSEQs (NOMODSEQ, RFC 7162 §3.1.2.2), which `on flag change` needs"
    return None


#: (account, mailbox, UIDVALIDITY, {uid: MODSEQ}): where our own STOREs' MODSEQs go.
OwnNote = Callable[[str, str, int, Mapping[int, int]], None]


class _Named(Protocol):
    @property
    def name(self) -> str: ...


S = TypeVar("S", bound=_Named)


def record_own_changes(session: ImapSession, account: str, note: OwnNote) -> None:
    """After each UID STORE of `session`, give `note` the MODSEQs its answer carried."""

    def after_store() -> None:
        selected = session.selected
        changes = stored_modseqs(session)
        if selected is not None and changes:
            note(account, selected.mailbox, selected.uidvalidity, changes)

    session.after_store = after_store


def recording(connect: Callable[[S], ImapSession], note: OwnNote) -> Callable[[S], ImapSession]:
    """`connect`, each session it opens recording our own STOREs' MODSEQs (`record_own_changes`)."""

    def connect_recording(settings: S) -> ImapSession:
        session = connect(settings)
        record_own_changes(session, settings.name, note)
        return session

    return connect_recording
