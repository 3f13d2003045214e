"""An in-memory mailbox store for unit tests of the engine, and the naive per-message oracle."""

from __future__ import annotations

import copy
import datetime as dt
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Concatenate, ParamSpec, TypeVar

from mailrules.compile import keys as K
from mailrules.compile.dialect import Dialect
from mailrules.compile.needs import FetchNeeds
from mailrules.compile.reference import search_matches
from mailrules.compile.threads import expand, reference_threads
from mailrules.dsl import ast as A
from mailrules.dsl.semantics import EvalContext, evaluate_message
from mailrules.engine.loops import same_mailbox, send_refusal
from mailrules.engine.ports import ARCHIVED_LABEL, AccountContext, MailboxStore, Sender
from mailrules.errors import ImapError
from mailrules.imap.gmail import is_label
from mailrules.message.view import MessageView


@dataclass
class FakeMessage:
    raw: bytes
    flags: set[str]
    internaldate: dt.datetime
    #: Gmail labels, apart from the flags as on Gmail (X-GM-LABELS); only a Gmail FakeStore sets them.
    labels: set[str] = field(default_factory=set)


@dataclass
class FakeMailbox:
    uidvalidity: int
    next_uid: int = 1
    messages: dict[int, FakeMessage] = field(default_factory=dict)

    def add(self, msg: FakeMessage) -> int:
        uid = self.next_uid
        self.next_uid += 1
        self.messages[uid] = msg
        return uid


class FakeServer:
    """Mailboxes by name; `state()` is what the differential tests compare."""

    def __init__(self) -> None:
        self.mailboxes: dict[str, FakeMailbox] = {}
        self._uv = 1000
        # Two FakeStores on one server stand for two connections: each command is atomic.
        self.lock = threading.RLock()

    def __deepcopy__(self, memo: dict[int, object]) -> FakeServer:
        twin = FakeServer()
        twin.mailboxes = copy.deepcopy(self.mailboxes, memo)
        twin._uv = self._uv
        return twin

    def mailbox(self, name: str, create: bool = True) -> FakeMailbox:
        if name not in self.mailboxes:
            if not create:
                raise ImapError(f"[TRYCREATE] no mailbox {name!r}", "permanent", "TRYCREATE")
            self._uv += 1
            self.mailboxes[name] = FakeMailbox(self._uv)
        return self.mailboxes[name]

    def append(
        self, name: str, raw: bytes, flags: Sequence[str] = (), when: dt.datetime | None = None
    ) -> int:
        when = when or dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
        return self.mailbox(name).add(FakeMessage(raw, set(flags), when))

    def state(self) -> dict[str, list[tuple[bytes, frozenset[str]]]]:
        """Mailbox -> sorted (message bytes, flags): which messages are where, with which flags."""
        return {
            name: sorted((m.raw, frozenset(m.flags | m.labels)) for m in mb.messages.values())
            for name, mb in sorted(self.mailboxes.items())
            if mb.messages
        }


P = ParamSpec("P")
R = TypeVar("R")


def _atomic(method: Callable[Concatenate[FakeStore, P], R]) -> Callable[Concatenate[FakeStore, P], R]:
    def locked(self: FakeStore, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with self.server.lock:
            return method(self, *args, **kwargs)

    return locked


class FakeStore:
    """`MailboxStore` over a FakeServer; SEARCH by the reference evaluator. Counts commands.

    With a Gmail dialect it keeps Gmail's split (imap/gmail.py): a tag is a label, kept apart from
    the flags, searched by X-GM-LABELS, and seen in a fetched view only when flags are fetched;
    `archive` from a mailbox other than INBOX removes the \\Inbox label in place.
    `inbox_prefix`: the personal namespace is under INBOX, as on Cyrus: `INBOX/Lists` and `Lists`
    name one mailbox (`same_mailbox`; the server keeps the name as the engine gives it).
    """

    def __init__(
        self,
        server: FakeServer,
        dialect: Dialect,
        now: dt.datetime,
        special: dict[str, str] | None = None,
        *,
        inbox_prefix: bool = False,
    ) -> None:
        self.server = server
        self.inbox_prefix = inbox_prefix
        self._dialect = dialect
        self.now = now
        self.selected: str | None = None
        self.commands: list[str] = []
        self.sent: list[tuple[str, str, bytes]] = []
        self._special = special if special is not None else {"\\Archive": "Archive", "\\Trash": "Trash"}

    @property
    def dialect(self) -> Dialect:
        return self._dialect

    @property
    def separator(self) -> str:
        return "/"

    def _mb(self) -> FakeMailbox:
        assert self.selected is not None
        return self.server.mailbox(self.selected)

    def _view(self, uid: int, m: FakeMessage, needs: FetchNeeds | None = None) -> MessageView:
        flags: set[str] = m.flags | m.labels  # what the server searches
        if self._dialect.gmail and needs is not None and not needs.flags:
            flags = set()  # neither FLAGS nor X-GM-LABELS was fetched
        return MessageView.from_bytes(m.raw, internaldate=m.internaldate, flags=flags, uid=uid)

    @_atomic
    def select(self, mailbox: str) -> int:
        self.commands.append("SELECT")
        self.selected = mailbox
        return self.server.mailbox(mailbox).uidvalidity

    @_atomic
    def search(self, key: K.SearchKey) -> list[int]:
        self.commands.append("SEARCH")
        key = expand(key, self._thread_members)  # `thread tagged`: threads by References
        return sorted(
            uid
            for uid, m in self._mb().messages.items()
            if search_matches(key, self._view(uid, m), dt.UTC, now=self.now)
        )

    def _thread_members(self, keyword: str) -> frozenset[int]:
        """The server's threads as compile/threads.py's reference groups them (RFC 5256 REFERENCES)."""
        self.commands.append("THREAD")
        mb, wanted = self._mb(), keyword.casefold()
        views = {uid: self._view(uid, m) for uid, m in mb.messages.items()}
        tagged = {u for u, m in mb.messages.items() if wanted in {f.casefold() for f in m.flags | m.labels}}

        def header(view: MessageView, name: str) -> str:
            return " ".join(view.header_values(name))

        threads = reference_threads(
            (uid, header(v, "Message-ID"), header(v, "References"), header(v, "In-Reply-To"))
            for uid, v in views.items()
        )
        return frozenset(uid for t in threads if t & tagged for uid in t)

    @_atomic
    def fetch_views(self, uids: Sequence[int], needs: FetchNeeds) -> dict[int, MessageView]:
        self.commands.append("FETCH")
        mb = self._mb()
        return {u: self._view(u, mb.messages[u], needs) for u in uids if u in mb.messages}

    @_atomic
    def fetch_raw(self, uids: Sequence[int]) -> dict[int, bytes]:
        self.commands.append("FETCH")
        mb = self._mb()
        return {u: mb.messages[u].raw for u in uids if u in mb.messages}

    def _transfer(
        self, uids: Sequence[int], dest: str, create: bool, remove: bool
    ) -> tuple[int | None, dict[int, int]]:
        src = self._mb()
        target = self.server.mailbox(dest, create=create)
        mapping = {}
        for u in uids:
            if u in src.messages:
                m = src.messages[u]
                mapping[u] = target.add(FakeMessage(m.raw, set(m.flags), m.internaldate, set(m.labels)))
                if remove:
                    del src.messages[u]
        return target.uidvalidity, mapping

    @_atomic
    def move(self, uids: Sequence[int], dest: str, *, create: bool) -> tuple[int | None, dict[int, int]]:
        self.commands.append("MOVE")
        return self._transfer(uids, dest, create, remove=True)

    @_atomic
    def copy(self, uids: Sequence[int], dest: str, *, create: bool) -> tuple[int | None, dict[int, int]]:
        self.commands.append("COPY")
        return self._transfer(uids, dest, create, remove=False)

    @_atomic
    def store_flags(self, uids: Sequence[int], flags: Sequence[str], add: bool) -> None:
        self.commands.append("STORE")
        mb = self._mb()
        for u in uids:
            if u in mb.messages:
                m = mb.messages[u]
                for flag in flags:
                    # A message appended with a keyword of this name counts as labelled: the
                    # oracle knows no labels, and a view shows flags and labels together.
                    m.flags.discard(flag)
                    m.labels.discard(flag)
                    if add:
                        (m.labels if self._dialect.gmail and is_label(flag) else m.flags).add(flag)

    @_atomic
    def delete_permanently(self, uids: Sequence[int]) -> None:
        self.commands.append("EXPUNGE")
        mb = self._mb()
        for u in uids:
            mb.messages.pop(u, None)

    def special_use(self) -> dict[str, str]:
        return dict(self._special)

    def same_mailbox(self, a: str, b: str) -> bool:
        if self.inbox_prefix:
            a, b = (n[len("INBOX/") :] if n.upper().startswith("INBOX/") else n for n in (a, b))
        return same_mailbox(a, b, "/")

    def archives_in_place(self, source: str) -> bool:
        return self._dialect.gmail and source.upper() != "INBOX"

    @_atomic
    def archive_in_place(self, uids: Sequence[int]) -> None:
        assert self.selected is not None and self.archives_in_place(self.selected)
        self.commands.append("STORE")
        mb = self._mb()
        for u in uids:
            if u in mb.messages:
                mb.messages[u].labels.discard(ARCHIVED_LABEL)
                mb.messages[u].flags.discard(ARCHIVED_LABEL)


class RecordingSender:
    """A Sender that keeps what it sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, bytes]] = []

    def send_forward(self, original: bytes, to: str, *, rule: str, idempotency_key: str) -> str:
        self.sent.append(("forward", to, original))
        return "<id@test>"

    def send_redirect(self, original: bytes, to: str, *, rule: str, idempotency_key: str) -> None:
        self.sent.append(("redirect", to, original))


def oracle(
    server: FakeServer,
    rules: Sequence[A.Rule],
    account: AccountContext,
    mailboxes: Sequence[str],
    ctx: EvalContext,
    special: dict[str, str] | None = None,
    *,
    gmail: bool = False,
) -> list[tuple[str, str, bytes]]:
    """The naive reading of language.md §6: one message at a time, each action in order.

    Mailboxes are taken in the order given, each over the messages present when its turn comes.
    A mailbox action whose destination is the mailbox being read does nothing, nor does a
    forward or redirect of automatic, bulk or report mail (loop safety, engine/loops.py).
    `gmail`: `archive` into the \\Archive mailbox of a message still in the label's mailbox it
    was read in (not INBOX) removes the \\Inbox label there (imap/gmail.py `archive_moves`).
    Returns what was sent (forward/redirect), sorted.
    """
    special = special or {"\\Archive": "Archive", "\\Trash": "Trash"}
    sent = []
    for name in mailboxes:
        mb = server.mailbox(name)
        for uid in sorted(mb.messages):
            msg = mb.messages[uid]
            view = MessageView.from_bytes(msg.raw, internaldate=msg.internaldate, flags=msg.flags, uid=uid)
            planned = evaluate_message(rules, view, account=account.name, mailbox=name, ctx=ctx)
            where: FakeMailbox | None = mb  # where the message is now
            cur_uid = uid
            for p in planned:
                if where is None:
                    break  # deleted permanently: nothing left to act on
                m = where.messages[cur_uid]
                a = p.action
                if p.error is not None:
                    continue
                if isinstance(a, A.SetFlag | A.Tag):
                    # a tag's name from a template is the action's destination, as rendered
                    flag = a.flag if isinstance(a, A.SetFlag) else (p.destination or a.keyword)
                    if flag == "\\Important" and isinstance(a, A.SetFlag) and not gmail:
                        flag = "$Important"  # RFC 8457's keyword where there is no Gmail label
                    m.flags.discard(flag)
                    if a.on:
                        m.flags.add(flag)
                elif isinstance(a, A.Copy):
                    assert p.destination is not None
                    if same_mailbox(p.destination, name, "/"):
                        continue
                    server.mailbox(p.destination).add(FakeMessage(m.raw, set(m.flags), m.internaldate))
                elif isinstance(a, A.Move | A.Archive) or (isinstance(a, A.Delete) and not a.permanently):
                    dest = p.destination
                    if dest is None:
                        dest = (
                            (account.archive or special["\\Archive"])
                            if isinstance(a, A.Archive)
                            else (account.trash or special["\\Trash"])
                        )
                    if same_mailbox(dest, name, "/"):
                        continue
                    if (
                        gmail
                        and isinstance(a, A.Archive)
                        and p.destination is None
                        and where is mb
                        and name.upper() != "INBOX"
                        and same_mailbox(dest, special["\\Archive"], "/")
                    ):
                        m.flags.discard(ARCHIVED_LABEL)  # archived where it is: it stays here
                        m.labels.discard(ARCHIVED_LABEL)
                        continue
                    target = server.mailbox(dest)
                    del where.messages[cur_uid]
                    cur_uid = target.add(m)
                    where = target
                elif isinstance(a, A.Delete):
                    del where.messages[cur_uid]
                    where = None
                elif isinstance(a, A.Forward | A.Redirect) and send_refusal(m.raw) is None:
                    sent.append(("forward" if isinstance(a, A.Forward) else "redirect", a.address, m.raw))
    return sorted(sent)


def _ports(store: FakeStore, sender: RecordingSender) -> tuple[MailboxStore, Sender]:
    """Never called: mypy checks here that the fakes implement the engine's ports."""
    return store, sender
