"""The typed IMAP SEARCH key tree (RFC 9051 §6.4.4, RFC 5032, Gmail X-GM-*) and simplifying constructors."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Union

TextKind = Literal["FROM", "TO", "CC", "BCC", "SUBJECT", "BODY", "TEXT"]
DateKind = Literal["BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"]
FlagName = Literal[
    "SEEN",
    "UNSEEN",
    "FLAGGED",
    "UNFLAGGED",
    "ANSWERED",
    "UNANSWERED",
    "DRAFT",
    "UNDRAFT",
    "DELETED",
    "UNDELETED",
]

#: Each flag key and its complement, so that NOT SEEN is written UNSEEN.
FLAG_COMPLEMENT: dict[str, FlagName] = {
    "SEEN": "UNSEEN",
    "UNSEEN": "SEEN",
    "FLAGGED": "UNFLAGGED",
    "UNFLAGGED": "FLAGGED",
    "ANSWERED": "UNANSWERED",
    "UNANSWERED": "ANSWERED",
    "DRAFT": "UNDRAFT",
    "UNDRAFT": "DRAFT",
    "DELETED": "UNDELETED",
    "UNDELETED": "DELETED",
}


@dataclass(frozen=True, slots=True)
class All:
    """ALL: every message."""


@dataclass(frozen=True, slots=True)
class Uid:
    """UID <set>: the messages with these UIDs."""

    uids: frozenset[int]


@dataclass(frozen=True, slots=True)
class UidFrom:
    """UID <first>:*: the messages from this UID on. `n:*` also names the highest UID when it is
    below n (RFC 9051 §6.4.9: `*` is the largest number in use): a caller drops what is < first."""

    first: int


@dataclass(frozen=True, slots=True)
class Header:
    """HEADER name value: substring of the named header's decoded text; "" means presence."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class Text:
    """FROM/TO/CC/BCC/SUBJECT/BODY/TEXT value: case-insensitive substring search."""

    kind: TextKind
    value: str


@dataclass(frozen=True, slots=True)
class Larger:
    """LARGER n: RFC822.SIZE > n."""

    n: int


@dataclass(frozen=True, slots=True)
class Smaller:
    """SMALLER n: RFC822.SIZE < n."""

    n: int


@dataclass(frozen=True, slots=True)
class Date:
    """BEFORE/ON/SINCE (internal date) and SENT* (Date: header), on the server's calendar day."""

    kind: DateKind
    date: dt.date


@dataclass(frozen=True, slots=True)
class Older:
    """OLDER n (RFC 5032 WITHIN): internal date more than n seconds before the server's now."""

    seconds: int


@dataclass(frozen=True, slots=True)
class Younger:
    """YOUNGER n (RFC 5032 WITHIN): internal date less than n seconds before the server's now."""

    seconds: int


@dataclass(frozen=True, slots=True)
class Flag:
    """A system-flag key: SEEN, UNSEEN, FLAGGED, ..."""

    name: FlagName


@dataclass(frozen=True, slots=True)
class Keyword:
    """KEYWORD k: the keyword flag is set."""

    keyword: str


@dataclass(frozen=True, slots=True)
class Unkeyword:
    """UNKEYWORD k: the keyword flag is not set."""

    keyword: str


@dataclass(frozen=True, slots=True)
class GmRaw:
    """X-GM-RAW query (Gmail X-GM-EXT-1): Gmail search syntax."""

    query: str


@dataclass(frozen=True, slots=True)
class GmLabels:
    """X-GM-LABELS label (Gmail X-GM-EXT-1): the message has the label (`\\Important`: a system one)."""

    label: str


@dataclass(frozen=True, slots=True)
class GmThread:
    """X-GM-THRID n (Gmail X-GM-EXT-1): the messages of this Gmail thread."""

    thrid: int


@dataclass(frozen=True, slots=True)
class ThreadKeyword:
    """The messages of the threads in which some message (of the selected mailbox) has `keyword`.

    No SEARCH key says it: the store resolves it into a UID set before the command is sent
    (compile/threads.py: THREAD=REFERENCES, RFC 5256; Gmail's X-GM-THRID).
    """

    keyword: str


@dataclass(frozen=True, slots=True)
class And:
    """Keys side by side: all must hold. Build with `and_()`."""

    items: tuple[SearchKey, ...]


@dataclass(frozen=True, slots=True)
class Or:
    """OR a b: binary, as IMAP spells it. Build with `or_()` / `any_of()`."""

    a: SearchKey
    b: SearchKey


@dataclass(frozen=True, slots=True)
class Not:
    """NOT k. Build with `not_()`."""

    key: SearchKey


SearchKey = Union[
    All,
    Uid,
    UidFrom,
    Header,
    Text,
    Larger,
    Smaller,
    Date,
    Older,
    Younger,
    Flag,
    Keyword,
    Unkeyword,
    GmRaw,
    GmLabels,
    GmThread,
    ThreadKeyword,
    And,
    Or,
    Not,
]

ALL = All()


def and_(*keys: SearchKey) -> SearchKey:
    """The conjunction: nested Ands flattened, ALL dropped, duplicates dropped; ALL when empty."""
    out: list[SearchKey] = []
    for k in keys:
        if isinstance(k, All):
            continue
        parts: Iterable[SearchKey] = k.items if isinstance(k, And) else (k,)
        for p in parts:
            if p not in out:
                out.append(p)
    if not out:
        return ALL
    if len(out) == 1:
        return out[0]
    return And(tuple(out))


def or_(a: SearchKey, b: SearchKey) -> SearchKey:
    """The disjunction of two keys: ALL absorbs, OR x x is x."""
    if isinstance(a, All) or isinstance(b, All):
        return ALL
    if a == b:
        return a
    return Or(a, b)


def any_of(keys: Iterable[SearchKey]) -> SearchKey:
    """The disjunction of several keys, nested to the right: OR a OR b c."""
    items: list[SearchKey] = []
    for k in keys:
        if isinstance(k, All):
            return ALL
        if k not in items:
            items.append(k)
    if not items:
        raise ValueError("any_of() needs at least one key")
    acc = items[-1]
    for k in reversed(items[:-1]):
        acc = or_(k, acc)
    return acc


_DATE_COMPLEMENT: dict[str, DateKind] = {
    "BEFORE": "SINCE",
    "SINCE": "BEFORE",
    "SENTBEFORE": "SENTSINCE",
    "SENTSINCE": "SENTBEFORE",
}


def not_(k: SearchKey) -> SearchKey:
    """The negation, pushed down to the leaves (negation normal form).

    NOT NOT x is x, NOT SEEN is UNSEEN, NOT KEYWORD k is UNKEYWORD k, and range keys are turned
    around (NOT LARGER n is SMALLER n+1, NOT BEFORE d is SINCE d, ...). Besides being shorter, this
    keeps NOT away from range keys: Dovecot 2.3.19 merges two negated keys of one kind in a group
    with the wrong operator (`OR NOT LARGER 1023 NOT LARGER 101` found only the smaller ones;
    `NOT (LARGER 1023 LARGER 101)` and NOT OLDER/YOUNGER/BEFORE/SINCE pairs likewise; seen live).
    """
    if isinstance(k, Not):
        return k.key
    if isinstance(k, Flag):
        return Flag(FLAG_COMPLEMENT[k.name])
    if isinstance(k, Keyword):
        return Unkeyword(k.keyword)
    if isinstance(k, Unkeyword):
        return Keyword(k.keyword)
    if isinstance(k, Larger):
        return Smaller(k.n + 1)
    if isinstance(k, Smaller):
        return Larger(k.n - 1) if k.n >= 1 else ALL
    if isinstance(k, Older):
        return Younger(k.seconds + 1)  # whole seconds: age <= n is age < n + 1
    if isinstance(k, Younger) and k.seconds >= 2:
        return Older(k.seconds - 1)
    if isinstance(k, Date):
        other = _DATE_COMPLEMENT.get(k.kind)
        if other is not None:
            return Date(other, k.date)
        try:
            nxt = k.date + dt.timedelta(days=1)
        except OverflowError:
            return Date("BEFORE" if k.kind == "ON" else "SENTBEFORE", k.date)
        if k.kind == "SENTON":
            return Or(Date("SENTBEFORE", k.date), Date("SENTSINCE", nxt))
        return Or(Date("BEFORE", k.date), Date("SINCE", nxt))
    if isinstance(k, And):
        return any_of(not_(i) for i in k.items)
    if isinstance(k, Or):
        return and_(not_(k.a), not_(k.b))
    return Not(k)


def normalize(key: SearchKey) -> SearchKey:
    """`key` with every NOT pushed down by `not_` (what the serializer sends)."""
    if isinstance(key, Not):
        return not_(normalize(key.key))
    if isinstance(key, And):
        return and_(*(normalize(i) for i in key.items))
    if isinstance(key, Or):
        return or_(normalize(key.a), normalize(key.b))
    return key


def walk(key: SearchKey) -> Iterable[SearchKey]:
    """Every key of the tree, parents first."""
    yield key
    if isinstance(key, And):
        for k in key.items:
            yield from walk(k)
    elif isinstance(key, Or):
        yield from walk(key.a)
        yield from walk(key.b)
    elif isinstance(key, Not):
        yield from walk(key.key)
