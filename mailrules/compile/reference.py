"""A reference evaluator of SEARCH keys with RFC 9051 §6.4.4 semantics (property tests, fake store)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Protocol

from mailrules.compile import keys as K

EPOCH_DAY = dt.date(1970, 1, 1)  # what servers take as the sent date of a message without Date:
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_TEXT_HEADERS = {"FROM": "From", "TO": "To", "CC": "Cc", "BCC": "Bcc", "SUBJECT": "Subject"}
_FLAGS = {
    "SEEN": "\\seen",
    "FLAGGED": "\\flagged",
    "ANSWERED": "\\answered",
    "DRAFT": "\\draft",
    "DELETED": "\\deleted",
}


class SearchableMessage(Protocol):
    """What the reference evaluator reads of a message (MessageView provides it)."""

    size: int
    internaldate: dt.datetime | None
    flags: frozenset[str]
    uid: int | None

    def header_values(self, name: str) -> list[str]: ...

    def has_header(self, name: str) -> bool: ...

    def field_text(self, field: str) -> list[str]: ...

    @property
    def sent_date(self) -> dt.datetime | None: ...

    @property
    def has_attachment(self) -> bool: ...


def ascii_fold(s: str) -> str:
    """Lower-case ASCII letters only: servers SHOULD fold the ASCII range (RFC 9051 §6.4.4)."""
    return s.translate(_ASCII_LOWER)


def _contains(values: Iterable[str], needle: str) -> bool:
    n = ascii_fold(needle)
    return any(n in ascii_fold(v) for v in values)


def search_matches(
    key: K.SearchKey,
    view: SearchableMessage,
    server_tz: dt.tzinfo = dt.UTC,
    *,
    now: dt.datetime | None = None,
) -> bool:
    """Whether an RFC server in zone `server_tz` at time `now` returns this message for `key`.

    Strings: ASCII-case-insensitive substring of the decoded field; `HEADER x ""` is presence.
    Dates: the server's calendar day; SENT* use the Date: header's own day, 1970-01-01 without one.
    """
    if isinstance(key, K.All):
        return True
    if isinstance(key, K.And):
        return all(search_matches(k, view, server_tz, now=now) for k in key.items)
    if isinstance(key, K.Or):
        return search_matches(key.a, view, server_tz, now=now) or search_matches(
            key.b, view, server_tz, now=now
        )
    if isinstance(key, K.Not):
        return not search_matches(key.key, view, server_tz, now=now)
    if isinstance(key, K.Text):
        if key.kind == "BODY":
            return _contains(view.field_text("body"), key.value)
        if key.kind == "TEXT":
            return _contains(view.field_text("text"), key.value)
        return _contains(view.header_values(_TEXT_HEADERS[key.kind]), key.value)
    if isinstance(key, K.Header):
        if key.value == "":
            return view.has_header(key.name)
        return _contains(view.header_values(key.name), key.value)
    if isinstance(key, K.Flag):
        flags = {f.lower() for f in view.flags}
        if key.name.startswith("UN"):
            return _FLAGS[key.name[2:]] not in flags
        return _FLAGS[key.name] in flags
    if isinstance(key, K.Keyword | K.Unkeyword):
        has = key.keyword.lower() in {f.lower() for f in view.flags}
        return has if isinstance(key, K.Keyword) else not has
    if isinstance(key, K.Larger):
        return view.size > key.n
    if isinstance(key, K.Smaller):
        return view.size < key.n
    if isinstance(key, K.Date):
        return _date(key, view, server_tz)
    if isinstance(key, K.Older | K.Younger):
        if view.internaldate is None:
            return False
        current = now if now is not None else dt.datetime.now(dt.UTC)
        age = current - view.internaldate  # aware: an instant difference, no conversion to overflow
        limit = dt.timedelta(seconds=key.seconds)
        return age > limit if isinstance(key, K.Older) else age < limit
    if isinstance(key, K.Uid):
        return view.uid is not None and view.uid in key.uids
    if isinstance(key, K.UidFrom):
        return view.uid is not None and view.uid >= key.first
    if isinstance(key, K.GmLabels):
        # Labels are where a Gmail view keeps them: among the flags (imap/gmail.py merges them).
        return ascii_fold(key.label) in {ascii_fold(f) for f in view.flags}
    if isinstance(key, K.GmRaw):
        return all(_gmail_term(t, view, now) for t in key.query.split())
    raise TypeError(f"not a search key: {key!r}")  # pragma: no cover


def _gmail_term(term: str, view: SearchableMessage, now: dt.datetime | None) -> bool:
    """The strictest reading of one Gmail operator the planner writes (compile/gmail.py): a planned
    X-GM-RAW key must hold for every match even so. Other syntax does not filter here."""
    op, _, arg = term.lower().partition(":")
    if op == "has" and arg == "attachment":
        return view.has_attachment
    if op in ("older_than", "newer_than") and arg[:-1].isdigit() and arg.endswith("d"):
        if view.internaldate is None:
            return False
        current = now if now is not None else dt.datetime.now(dt.UTC)
        age = current - view.internaldate  # aware: an instant difference, no conversion to overflow
        limit = dt.timedelta(days=int(arg[:-1]))
        return age > limit if op == "older_than" else age < limit
    if op == "list" and arg:
        return any(ascii_fold(v.strip()) == arg for v in view.field_text("list"))
    return True


def _date(key: K.Date, view: SearchableMessage, server_tz: dt.tzinfo) -> bool:
    if key.kind.startswith("SENT"):
        sent = view.sent_date
        day = sent.date() if sent is not None else EPOCH_DAY
        rel = key.kind[4:]
    else:
        if view.internaldate is None:
            return False
        try:
            day = view.internaldate.astimezone(server_tz).date()
        except OverflowError:  # 9999-12-31 23:59:59 -2359 and the like: the day as written
            day = view.internaldate.date()
        rel = key.kind
    if rel == "BEFORE":
        return day < key.date
    if rel == "ON":
        return day == key.date
    return day >= key.date
