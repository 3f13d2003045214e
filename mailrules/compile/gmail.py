"""The Gmail dialect of the planner: tags are labels (X-GM-LABELS), X-GM-RAW prefilters ages and lists.

Google's "IMAP Extensions" page: `X-GM-LABELS` in SEARCH finds "all messages in the folder with a
given label"; `X-GM-RAW` takes a query "interpreted in the same manner as in the Gmail web
interface". Gmail's search operators work on words and on Gmail's own notions (of a list, of a
day), so an X-GM-RAW key is only ever a prefilter here: it is widened until it holds for every
message the language matches, ANDed to the generic key, and the residual stays.
"""

from __future__ import annotations

import datetime as dt
import re

from mailrules.compile import keys as K
from mailrules.dsl import ast as A
from mailrules.dsl.ages import subtract_age

_DAY = 86400
# A List-Id identifier Gmail's `list:` can be given as one token: a dot-atom, no quotes or spaces.
_LIST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)+")
_SYSTEM_FLAGS = frozenset({"\\seen", "\\flagged", "\\answered", "\\draft", "\\deleted"})


def refine(
    c: A.Condition, server: K.SearchKey, residual: A.Condition | None, now: dt.datetime, tz: dt.tzinfo
) -> tuple[K.SearchKey, A.Condition | None]:
    """The Gmail form of one atom's plan (`server`, `residual` as the generic planner made them)."""
    if isinstance(c, A.KeywordTest):
        return _label(c, server, residual)
    if isinstance(c, A.AgeTest):
        raw = age_query(c.older, c.amount, c.unit, now, tz)
        return (K.and_(server, K.GmRaw(raw)) if raw else server), residual
    if isinstance(c, A.StringTest) and c.target.field == "list" and c.target.header is None and c.op == "is":
        raw = list_query(c.value)
        return (K.and_(server, K.GmRaw(raw)) if raw else server), residual
    return server, residual


def _label(
    c: A.KeywordTest, server: K.SearchKey, residual: A.Condition | None
) -> tuple[K.SearchKey, A.Condition | None]:
    # language.md §4: on Gmail a tag is a label, so `tagged` reads labels. A system flag keeps its
    # flag key; a label is looked up by X-GM-LABELS. Gmail label names are unique ignoring case, and
    # the search is taken to ignore ASCII case as the language does; a non-ASCII name is not sent
    # (case folding beyond ASCII is Gmail's own), its labels are fetched and compared here.
    if c.keyword.lower() in _SYSTEM_FLAGS or not c.keyword:
        return server, residual
    if c.keyword.isascii() and c.keyword.isprintable():
        return K.GmLabels(c.keyword), None
    return K.ALL, c


def age_query(older: bool, amount: int, unit: str, now: dt.datetime, tz: dt.tzinfo) -> str | None:
    """`older_than:Nd` / `newer_than:Nd` holding for every message of `older|newer than amount unit`.

    Gmail counts whole days, from its own clock and maybe from a midnight in the account's zone:
    the query is a day wider than the test (and a clock skew of minutes fits in that day). None
    when no whole-day query can filter (`older than 30 minutes`).
    """
    try:
        threshold = subtract_age(now.astimezone(tz), amount, unit)
        span = now.astimezone(dt.UTC) - threshold.astimezone(dt.UTC)
    except (OverflowError, ValueError):
        return None
    seconds = span.days * _DAY + span.seconds
    if older:
        days = seconds // _DAY - 1
        return f"older_than:{days}d" if days >= 1 else None
    return f"newer_than:{-(-seconds // _DAY) + 1}d"


def list_query(value: str) -> str | None:
    """`list:ID` for `list is "ID"` when ID is one dotted identifier Gmail takes as a token."""
    return f"list:{value}" if _LIST_ID.fullmatch(value) else None
