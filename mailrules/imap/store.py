"""The engine's mailbox store on a live IMAP session: SEARCH, FETCH into MessageViews, actions."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

from mailrules.compile import keys as K
from mailrules.compile.dialect import Dialect
from mailrules.compile.needs import FetchNeeds
from mailrules.compile.serialize import needs_charset, serialize
from mailrules.compile.threads import expand
from mailrules.errors import ImapError
from mailrules.imap import gmail
from mailrules.imap.bodystructure import bodystructure_attachments
from mailrules.imap.names import PORTABLE_SEPARATOR, Namespaces
from mailrules.imap.pacing import Pacing
from mailrules.imap.session import ImapSession
from mailrules.imap.threads import thread_members
from mailrules.message.view import MessageView

log = logging.getLogger(__name__)


class ImapStore:
    """One account's session seen as a `MailboxStore` (mailrules.engine.ports).

    Mailbox names on this side are portable ("/" between levels, relative to the personal
    namespace); the session maps them to the server's (imap/names.py).
    """

    def __init__(self, session: ImapSession) -> None:
        self.session = session
        self._dialect = Dialect.from_capabilities(session.capabilities, name=session.account)
        # UID sets, MOVE/COPY batches and time-outs as this server takes them (imap/pacing.py).
        session.pacing = Pacing.for_dialect(self._dialect)
        self._names_of: Namespaces | None = None
        self._server_names: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"ImapStore({self.session.account!r})"

    @property
    def dialect(self) -> Dialect:
        return self._dialect

    @property
    def separator(self) -> str:
        """The engine's separator: always "/", the portable one (the session maps names). Template
        values lose every separator of every server anyway (semantics.sanitize_value)."""
        return PORTABLE_SEPARATOR

    @property
    def namespaces(self) -> Namespaces:
        """How names are mapped on this account (`names.describe` puts it in words)."""
        return self.session.namespaces

    def same_mailbox(self, a: str, b: str) -> bool:
        """Whether the portable names `a` and `b` are one mailbox here (`INBOX.Lists` and `Lists`
        on Cyrus): compares the server's names; a name that cannot exist is no other's."""
        return self._comparable(a) == self._comparable(b)

    def _comparable(self, name: str) -> str:
        """The server's name for `name`, INBOX in upper case; worked out once per name (the
        engine asks for every message it moves; the namespaces are fixed once logged in)."""
        ns = self.namespaces
        if ns is not self._names_of:  # the session's, from NAMESPACE at login: one per session
            self._names_of, self._server_names = ns, {}
        known = self._server_names.get(name)
        if known is None:
            server = name if ns.refusal(name) is not None else ns.to_server(name)
            known = server.upper() if server.upper() == "INBOX" else server
            if len(self._server_names) < 4096:  # names come from the rules and their templates
                self._server_names[name] = known
        return known

    def select(self, mailbox: str) -> int:
        return self.session.select(mailbox).uidvalidity

    def search(self, key: K.SearchKey) -> list[int]:
        # `thread tagged`: the server's threads first, as UIDs (compile/threads.py, imap/threads.py)
        key = expand(key, lambda k: thread_members(self.session, k, gmail=self._dialect.gmail))
        return self.session.search(serialize(key), "UTF-8" if needs_charset(key) else None)

    def fetch_views(self, uids: Sequence[int], needs: FetchNeeds) -> dict[int, MessageView]:
        items = needs.fetch_items()
        if not items:
            return {u: MessageView.from_bytes(b"", uid=u) for u in uids}
        labels = self._dialect.gmail and needs.flags
        if labels:
            items.append(gmail.LABELS_ITEM)  # on Gmail `tagged` reads labels: they join the flags
        answers = self.session.fetch(uids, items)
        # The answers' keys are the items asked: what each one is, worked out once per FETCH.
        sections = [i for i in items if i.startswith("BODY") and i != "BODYSTRUCTURE"]
        structure = "BODYSTRUCTURE" in items and not needs.body
        views: dict[int, MessageView] = {}
        for uid, data in answers.items():
            if _expunged(data, sections):
                continue  # absent: the engine skips it as vanished
            if labels:
                data["FLAGS"] = gmail.with_labels(
                    data.get("FLAGS") or (), gmail.decode_labels(data.pop(gmail.LABELS_ITEM, None))
                )
            views[uid] = _view(uid, data, sections, structure)
        return views

    def fetch_raw(self, uids: Sequence[int]) -> dict[int, bytes]:
        answers = self.session.fetch(uids, ["BODY.PEEK[]"])
        return {uid: bytes(v) for uid, d in answers.items() if (v := d.get("BODY.PEEK[]")) is not None}

    def move(self, uids: Sequence[int], dest: str, *, create: bool) -> tuple[int | None, dict[int, int]]:
        mapping = self.session.move(uids, dest, create=create)
        # The destination UIDVALIDITY from COPYUID: without it the journal cannot find the message
        # again, and `mailrules undo` refuses every move.
        return (self.session.last_copyuid_uidvalidity if mapping else None), mapping

    def copy(self, uids: Sequence[int], dest: str, *, create: bool) -> tuple[int | None, dict[int, int]]:
        mapping = self.session.copy(uids, dest, create=create)
        return (self.session.last_copyuid_uidvalidity if mapping else None), mapping

    def store_flags(self, uids: Sequence[int], flags: Sequence[str], add: bool) -> None:
        if self._dialect.gmail and any(gmail.is_label(f) for f in flags):
            # language.md §4: on Gmail a tag is a label (X-GM-LABELS, Gmail's IMAP extensions),
            # system labels (\Important, \Starred) included; the IMAP system flags stay flags.
            gmail.store_labels(
                self.session,
                uids,
                [f for f in flags if gmail.is_label(f)],
                add,
                self.session.pacing.uid_set_bytes,
            )
            flags = [f for f in flags if not gmail.is_label(f)]
            if not flags:
                return
        selected = self.session.selected
        allowed = {f.casefold() for f in selected.permanentflags} if selected is not None else set()
        lost = [f for f in flags if f.casefold() not in allowed]
        if selected is not None and allowed and "\\*" not in allowed and lost:
            # RFC 9051 §7.1: a flag outside PERMANENTFLAGS may be ignored or kept for this session
            # only (pymap drops keywords): the STORE answers OK and changes nothing that lasts.
            raise ImapError(
                f"{self.session.account}: the server does not keep {', '.join(lost)} in "
                f"{selected.mailbox!r} (not in its PERMANENTFLAGS)",
                "permanent",
            )
        self.session.store_flags(uids, flags, add)

    def archives_in_place(self, source: str) -> bool:
        """Whether `archive` from `source` into All Mail is `archive_in_place` rather than a MOVE:
        on Gmail, from a label's mailbox (`gmail.archive_moves`)."""
        return self._dialect.gmail and not gmail.archive_moves(source)

    def archive_in_place(self, uids: Sequence[int]) -> None:
        """Gmail's `archive` from a label's mailbox: the \\Inbox label goes, the message stays where
        it is (a MOVE to All Mail would remove this label instead; `gmail.archive_moves`)."""
        gmail.archive_in_place(self.session, uids, self.session.pacing.uid_set_bytes)

    def delete_permanently(self, uids: Sequence[int]) -> None:
        if self._dialect.gmail:
            # Gmail: \Deleted + EXPUNGE in a label's mailbox only removes the label (imap/gmail.py).
            uses = self.special_use()
            trash = uses.get("\\Trash")
            if trash is None:
                raise ImapError(
                    f"{self.session.account}: Gmail marks no \\Trash mailbox: refusing "
                    "`delete permanently` (an EXPUNGE here would only remove a label)",
                    "permanent",
                )
            gmail.delete_permanently(
                self.session, uids, trash, uses.get("\\Junk"), self.session.pacing.uid_set_bytes
            )
            return
        if not self.session.has("UIDPLUS"):
            # RFC 4315 §2.1: without UID EXPUNGE the only way out is a bare EXPUNGE, which would
            # also remove what other clients marked \Deleted.
            raise ImapError(
                "server lacks UIDPLUS: refusing `delete permanently` (a bare EXPUNGE would remove "
                "other clients' \\Deleted messages too)",
                "permanent",
            )
        self.session.store_flags(uids, ["\\Deleted"], True)
        self.session.expunge_uids(uids)

    def special_use(self) -> dict[str, str]:
        """{use: portable name} (a name with no portable form stays the server's, as LIST gave it)."""
        ns = self.namespaces
        out: dict[str, str] = {}
        found = self.session.special_use()
        if self._dialect.gmail:
            found = gmail.special_uses(found)  # \All is where Gmail archives
        for use, server in found.items():
            portable = ns.to_portable(server)
            if portable is None:
                log.debug(
                    "%s: %s mailbox %r has no portable name; used as the server names it",
                    self.session.account,
                    use,
                    server,
                )
            out[use] = server if portable is None else portable
        return out


def _expunged(data: dict[str, Any], sections: Sequence[str]) -> bool:
    """A message another session expunged, not yet announced to ours: Dovecot still answers its
    FETCH, with NIL for every body section (RFC 9051 §7.4.1 lets it). An empty message it is not.

    `sections`: the body sections asked for (the keys of `data` are the items asked)."""
    return any(item in data and data[item] is None for item in sections)


def _view(uid: int, data: dict[str, Any], sections: Sequence[str], structure: bool) -> MessageView:
    """The view of one answer; `structure`: BODYSTRUCTURE was asked for and no whole body was."""
    raw = b""
    for item in sections:
        value = data.get(item)
        if isinstance(value, bytes | bytearray):
            raw = bytes(value)  # no copy of bytes
    internaldate = data.get("INTERNALDATE")
    size = data.get("RFC822.SIZE")
    return MessageView.from_bytes(
        raw,
        size=int(size) if size is not None else None,
        # MessageView takes a naive INTERNALDATE as UTC
        internaldate=internaldate if isinstance(internaldate, dt.datetime) else None,
        flags=data.get("FLAGS") or (),
        uid=uid,
        attachments=bodystructure_attachments(data["BODYSTRUCTURE"])
        if structure and "BODYSTRUCTURE" in data
        else None,
    )
