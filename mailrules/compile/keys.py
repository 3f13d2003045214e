"""The typed IMAP SEARCH key tree (RFC 9051 §6.4.4, RFC 5032, X-GM-RAW) and simplifying constructors."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Union

TextKind = Literal["FROM", "TO", "CC", "BCC", "SUBJECT", "BODY", "TEXT"]
DateKind = Literal["BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"]
FlagName = Literal[
    "SEEN", "UNSEEN", "FLAGGED", "UNFLAGGED", "ANSWERED", "UNANSWERED",
    "DRAFT", "UNDRAFT", "DELETED", "UNDELETED",
]

#: Each flag key and its complement, so that NOT SEEN is written UNSEEN.
FLAG_COMPLEMENT: dict[str, FlagName] = {
    "SEEN": "UNSEEN", "UNSEEN": "SEEN", "FLAGGED": "UNFLAGGED", "UNFLAGGED": "FLAGGED",
    "ANSWERED": "UNANSWERED", "UNANSWERED": "ANSWERED", "DRAFT": "UNDRAFT", "UNDRAFT": "DRAFT",
    "DELETED": "UNDELETED", "UNDELETED": "DELETED",
}


@dataclass(frozen=True, slots=True)
class All:
    """ALL: every message."""


@dataclass(frozen=True, slots=True)
class Uid:
    """UID <set>: the messages with these UIDs."""

    uids: frozenset[int]


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
    All, Uid, Header, Text, Larger, Smaller, Date, Older, Younger, Flag, Keyword, Unkeyword, GmRaw,
    And, Or, Not,
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


def not_(k: SearchKey) -> SearchKey:
    """The negation: NOT NOT x is x; NOT SEEN is UNSEEN; NOT KEYWORD k is UNKEYWORD k."""
    if isinstance(k, Not):
        return k.key
    if isinstance(k, Flag):
        return Flag(FLAG_COMPLEMENT[k.name])
    if isinstance(k, Keyword):
        return Unkeyword(k.keyword)
    if isinstance(k, Unkeyword):
        return Keyword(k.keyword)
    return Not(k)


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
