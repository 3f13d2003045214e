"""The planner: a condition becomes a server SEARCH key (a superset) and a client-side residual (exact)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from mailrules.compile import gmail
from mailrules.compile import keys as K
from mailrules.compile.dates import age_key, received_key, sent_key
from mailrules.compile.dialect import Dialect
from mailrules.compile.needs import FIELD_HEADERS, FetchNeeds, fetch_needs
from mailrules.compile.refusal import ServerOnlyError, server_refusal
from mailrules.compile.regex_literal import required_literal
from mailrules.compile.serialize import is_atom
from mailrules.dsl import ast as A

# Pushdown (server key; "exact" = no residual). Gmail: every textual test is ALL + residual.
#   FIELD contains S        HEADER From/To/Cc/Bcc/Sender/Reply-To/List-Id S, SUBJECT S   residual*
#   recipient contains S    OR HEADER To S OR HEADER Cc S HEADER Bcc S                   residual*
#   body|text contains S    OR BODY|TEXT S (non-text/plain messages)                     residual
#   is / starts / ends      the substring as above                                       residual
#   address is/.., domain   HEADER <field> <atom> for the two longest atoms of S         residual
#   FIELD user/detail/..    as `is` with the part's value (or its regex's literal)        residual
#   envelope to|from        the stand-in headers (Delivered-To, X-Original-To; Return-Path)
#   matches /RE/            required ASCII literal of RE as a substring, else presence   residual
#   header X exists         HEADER X ""                                                  exact
#   size > n, >= n, <, <=   LARGER n, LARGER n-1, SMALLER n, SMALLER n+1                 exact
#   flags, tagged           SEEN/UNSEEN/..., KEYWORD k (Gmail: X-GM-LABELS k, k ASCII)   exact
#   older/newer than        OLDER n-skew/YOUNGER n+skew with WITHIN, else a BEFORE/SINCE residual
#                           window (exact only with Dialect.clock_skew=0; Gmail: and X-GM-RAW
#                           older_than:/newer_than: a day wider)
#   list is ID              as `FIELD contains` (Gmail: and X-GM-RAW list:ID)            residual
#   received D              SINCE/BEFORE window valid for any server zone (-12..+14 h)   residual
#   sent D                  SENTBEFORE/SENTON/SENTSINCE (no Date: is 1970 on servers)    residual
#   has attachment          ALL (Gmail: X-GM-RAW has:attachment)                          residual
#   attachment name         ALL                                                          residual
#   gmail search Q          X-GM-RAW Q (Gmail only; elsewhere ServerOnlyError)           exact
#   category is C           X-GM-RAW category:C (likewise)                               exact
#   thread tagged K         UID <threads with K>: the store asks THREAD=REFERENCES or     exact
#                           X-GM-THRID (compile/threads.py); no threads: ServerOnlyError
#   and / or / not          AND split; OR and NOT on the server only when exact          -
# *S itself when it is ASCII (or caseless CJK-like text on a UTF-8 server) without CR/LF/NUL or
#  white-space runs, else the longest clean ASCII piece; always a prefilter (exact_text_search),
#  so `not subject contains S` is ALL + residual: the complement of a superset is no superset.

# FROM/TO/CC/BCC are not used: Dovecot matches them against the re-formatted parsed addresses, so
# a malformed display name (`[SPAM] <a@b>`) or quoting hides substrings that the decoded header
# has; HEADER From "x" is a substring search of the decoded text (checked live against Dovecot 2.3).
_TEXT_KEY: dict[str, K.TextKind] = {"subject": "SUBJECT", "body": "BODY", "text": "TEXT"}
_FLAG_KEY: dict[str, tuple[K.FlagName, K.FlagName]] = {
    "\\Seen": ("SEEN", "UNSEEN"),
    "\\Flagged": ("FLAGGED", "UNFLAGGED"),
    "\\Answered": ("ANSWERED", "UNANSWERED"),
    "\\Draft": ("DRAFT", "UNDRAFT"),
    "\\Deleted": ("DELETED", "UNDELETED"),
}
# RFC 5322 §3.6.8 field-name: printable US-ASCII except colon.
_FTEXT = frozenset(chr(c) for c in range(33, 127) if c != 58)
# Where a value is cut before it goes to the server: CR/LF (command injection, RFC 9051 §4.3), NUL
# (not a CHAR8), and white space other than single spaces (Dovecot compresses runs of it in header
# values, so `"two  spaces"` finds nothing there; checked live).
_VALUE_CUTS = re.compile(r"\x00|\s{2,}|[^\S ]")
_WORD_CUTS = re.compile(r"[\x00\s]+")
_ADDR_CUTS = re.compile(r"[@.]")
# A body the server may search differently: HTML is searched raw (tags and entities intact) and
# attached text parts are searched too, while the language reads decoded text parts with HTML
# stripped. Only single-part text/plain messages (or no Content-Type: text/plain by default)
# give the same text on both sides; every other message stays a candidate.
_NOT_PLAIN = K.and_(K.Header("Content-Type", ""), K.Not(K.Header("Content-Type", "text/plain")))
_MIN_PREFILTER = 2  # shorter substrings filter almost nothing


@dataclass(frozen=True, slots=True)
class ConditionPlan:
    """`server` holds for every match (a superset); `server and residual` is exactly the condition."""

    server: K.SearchKey
    residual: A.Condition | None
    needs: FetchNeeds

    @property
    def exact(self) -> bool:
        return self.residual is None


@dataclass(frozen=True, slots=True)
class _Ctx:
    dialect: Dialect
    now: dt.datetime
    tz: dt.tzinfo


_Part = tuple[K.SearchKey, "A.Condition | None"]


def plan_condition(cond: A.Condition, dialect: Dialect, now: dt.datetime, tz: dt.tzinfo) -> ConditionPlan:
    """Split `cond` into a server key (superset of the matches) and a residual that makes it exact."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    server, residual = _plan(cond, _Ctx(dialect, now, tz))
    return ConditionPlan(server, residual, fetch_needs(residual))


def plan_rule(rule: A.Rule, dialect: Dialect, now: dt.datetime, tz: dt.tzinfo) -> ConditionPlan:
    """`plan_condition` of a rule's `when`."""
    return plan_condition(rule.condition, dialect, now, tz)


def _plan(c: A.Condition, x: _Ctx) -> _Part:
    if isinstance(c, A.And):
        servers: list[K.SearchKey] = []
        residuals: list[A.Condition] = []
        for item in c.items:
            s, r = _plan(item, x)
            servers.append(s)
            if r is not None:
                residuals.extend(r.items if isinstance(r, A.And) else (r,))
        residual: A.Condition | None = None
        if len(residuals) == 1:
            residual = residuals[0]
        elif residuals:
            residual = A.And(tuple(residuals), c.span)
        return K.and_(*servers), residual
    if isinstance(c, A.Or):
        parts = [_plan(item, x) for item in c.items]
        server = K.any_of(s for s, _ in parts) if parts else K.Not(K.ALL)
        # Exact only when every operand is; else the prefilters' OR is still a superset.
        return server, (None if all(r is None for _, r in parts) else c)
    if isinstance(c, A.Not):
        inner = c.item
        if isinstance(inner, A.Not):  # not not X: X's prefilter; the residual keeps the original
            s, r = _plan(inner.item, x)
            return s, (None if r is None else c)
        s, r = _plan(inner, x)
        if r is None:
            return K.not_(s), None
        if isinstance(inner, A.Or):
            # De Morgan: not (A or B) = not A and not B, so exact negated operands still filter.
            return _plan(A.And(tuple(A.Not(i, i.span) for i in inner.items), c.span), x)
        return K.ALL, c  # the complement of a prefilter is no prefilter of the complement
    if isinstance(c, A.All):
        return K.ALL, None
    handler = _ATOMS.get(type(c))
    if handler is None:  # pragma: no cover - exhaustive over Condition
        raise TypeError(f"not a condition: {c!r}")
    server, residual = handler(c, x)
    if x.dialect.gmail:  # labels for tags, X-GM-RAW prefilters (compile/gmail.py)
        return gmail.refine(c, server, residual, x.now, x.tz)
    return server, residual


# ---------------------------------------------------------------------------
# String tests
# ---------------------------------------------------------------------------


def _target_key(target: A.FieldRef, value: str) -> K.SearchKey:
    """The substring key for a field (or a header) and a value; "" asks for presence."""
    if target.header is not None:
        return K.Header(target.header, value)
    f = target.field
    assert f is not None
    if len(FIELD_HEADERS[f]) > 1:  # recipient: To, Cc or Bcc; envelope to: Delivered-To or X-Original-To
        return K.any_of(K.Header(h, value) for h in FIELD_HEADERS[f])
    kind = _TEXT_KEY.get(f)
    if kind is not None and (value or kind in ("BODY", "TEXT")):
        return K.Text(kind, value)
    return K.Header(FIELD_HEADERS[f][0], value)


def _presence(target: A.FieldRef) -> K.SearchKey:
    if target.header is None and target.field in ("body", "text"):
        return K.ALL
    return _target_key(target, "")


def _target_pushable(target: A.FieldRef, x: _Ctx) -> bool:
    """Can the server search this field at all? Gmail's search is word-based: never exact."""
    if x.dialect.gmail:
        return False
    return target.header is None or (bool(target.header) and all(ch in _FTEXT for ch in target.header))


@lru_cache(maxsize=4096)
def server_value(value: str, utf8: bool, words: bool = False) -> tuple[str | None, bool]:
    """(substring to send, whole?) for a case-insensitive `contains value`.

    Servers need only fold ASCII case (RFC 9051 §6.4.4), while the language folds Unicode case, so
    the whole value goes out only when it is ASCII or made of caseless characters (CJK, ...) and
    the server takes UTF-8. Even then the answer is a superset (`exact_text_search`). Dovecot
    compresses runs of white space in header values, and CR, LF, NUL can never be sent: such a
    value is cut there. Whatever is not whole gets the longest ASCII piece as a sound prefilter
    (a substring of the value). `words`: cut at every white space.
    """
    pieces = (_WORD_CUTS if words else _VALUE_CUTS).split(value)
    clean = len(pieces) == 1
    if clean and value.isascii():
        return value, True
    if clean and utf8 and all(ch.isascii() or _caseless(ch) for ch in value):
        return value, True
    best = ""
    for p in pieces:
        run = []
        for ch in p + "\x00":
            if ch.isascii() and ch.isprintable():
                run.append(ch)
                continue
            if len(run) > len(best):
                best = "".join(run)
            run = []
    return (best if len(best.strip()) >= _MIN_PREFILTER else None), False


def exact_text_search(dialect: Dialect) -> bool:
    """Whether this server's substring search equals the language's `contains` (no residual needed).

    No dialect guarantees it today, so every string test is checked locally on the fetched headers
    (or body): RFC 9051 §6.4.4 only asks servers to fold ASCII case, RFC 2683 §3.2.3 lets indexed
    servers deviate, and they fold more than the language does (imap-notes (d)): Dovecot 2.3 finds
    `SUBJECT cafe` in "café" and matches "two spaces" in "two  spaces"; Cyrus 3.6 (search_skipdiacrit,
    on by default) finds `HEADER From Jurgen` in "Jürgen"; Gmail matches words, not substrings. A
    server answering a superset is what a prefilter needs, never what an exact test may assume.
    """
    return False


def _caseless(ch: str) -> bool:
    # Letters of caseless scripts above U+3040 (kana, CJK, Hangul...): no case mapping, and no
    # other character folds into them.
    return ord(ch) >= 0x3040 and ch.upper() == ch == ch.casefold() and ch.isprintable()


def _substring(target: A.FieldRef, value: str, x: _Ctx) -> tuple[K.SearchKey, bool]:
    """A sound server key for "the field contains `value`", and whether it is exact."""
    if not _target_pushable(target, x):
        return K.ALL, False
    whole_message = target.header is None and target.field in ("body", "text")
    # `text` joins decoded headers as "name: value" lines: only white-space-free words are sure
    # to appear as such in the raw message the server searches.
    sent, exact = server_value(value, x.dialect.utf8_search, target.field == "text" and whole_message)
    if sent is None or not sent:
        return _presence(target), False
    if whole_message:
        return K.or_(_target_key(target, sent), _NOT_PLAIN), False
    return _target_key(target, sent), exact


def _addr_spec_key(target: A.FieldRef, value: str, x: _Ctx) -> K.SearchKey:
    """A prefilter for tests on parsed addr-specs (`is`, `starts with`, `ends with`, `domain is`).

    Parsing drops comments and white space between the atoms of an address
    (`bob(c)@example.org` is bob@example.org; checked live against Dovecot), so only the atoms
    between "@" and "." are sure to be in the header text: the two longest must both be there.
    The whole literal is no superset anywhere (tests/integration/test_language_dovecot.py):
    `HEADER From github.com` misses `bob@github (hub) . com` (obsolete RFC 5322 syntax, which
    parsers must read); Dovecot's `FROM github.com` reads its own parse and misses
    `[SPAM] <bob@github.com>`; and Dovecot 2.3.19 reads `OR HEADER From x FROM x` both ways as
    the first key says.
    """
    if not _target_pushable(target, x):
        return K.ALL
    pieces = [p for p in _ADDR_CUTS.split(value) if len(p) >= _MIN_PREFILTER]
    longest = sorted(pieces, key=len, reverse=True)[:2]  # "com", "org" filter next to nothing
    pieces = [p for p in pieces if p in longest]
    return K.and_(*(_substring(target, p, x)[0] for p in pieces)) if pieces else _presence(target)


def _string_test(c: A.StringTest, x: _Ctx) -> _Part:
    if c.op != "contains" and c.target.header is None and c.target.field in A.ADDRESS_FIELDS:
        return _addr_spec_key(c.target, c.value, x), c
    key, exact = _substring(c.target, c.value, x)
    if c.op == "contains" and exact and c.value and exact_text_search(x.dialect):
        return key, None
    return key, c  # is / starts with / ends with: the substring is only a prefilter


def _regex_test(c: A.RegexTest, x: _Ctx) -> _Part:
    if not _target_pushable(c.target, x):
        return K.ALL, c
    lit = required_literal(c.regex.pattern, c.regex.flags)
    if lit is not None:
        return _substring(c.target, lit, x)[0], c
    return _presence(c.target), c


def _domain_test(c: A.DomainTest, x: _Ctx) -> _Part:
    return _addr_spec_key(c.target, c.domain, x), c


def _address_part(c: A.AddressPartTest, x: _Ctx) -> _Part:
    # A part is a piece of the addr-spec: its atoms are in the header text, as for `is`.
    value = c.value
    if c.regex is not None:
        value = required_literal(c.regex.pattern, c.regex.flags)
    return (_addr_spec_key(c.target, value, x) if value else _presence(c.target)), c


def _header_exists(c: A.HeaderExists, x: _Ctx) -> _Part:
    ref = A.FieldRef(None, c.header, c.span)
    if not _target_pushable(ref, x):
        return K.ALL, c
    return K.Header(c.header, ""), None


# ---------------------------------------------------------------------------
# Size, flags, keywords, attachments
# ---------------------------------------------------------------------------


def _size_test(c: A.SizeTest, x: _Ctx) -> _Part:
    # LARGER n is size > n, SMALLER n is size < n (RFC 9051 §6.4.4).
    n = c.bytes
    if c.op == ">":
        return (K.Larger(n) if n >= 0 else K.ALL), None
    if c.op == ">=":
        return (K.Larger(n - 1) if n >= 1 else K.ALL), None
    if c.op == "<":
        return (K.Smaller(n) if n >= 0 else K.Not(K.ALL)), None
    return (K.Smaller(n + 1) if n >= 0 else K.Not(K.ALL)), None


def _flag_test(c: A.FlagTest, x: _Ctx) -> _Part:
    pos, neg = _FLAG_KEY[c.flag]
    return K.Flag(pos if c.present else neg), None


def _keyword_test(c: A.KeywordTest, x: _Ctx) -> _Part:
    flag = next((v for k, v in _FLAG_KEY.items() if k.lower() == c.keyword.lower()), None)
    if flag is not None:
        return K.Flag(flag[0]), None
    if c.keyword and is_atom(c.keyword) and not c.keyword.startswith("\\"):
        return K.Keyword(c.keyword), None
    return K.ALL, c  # not a valid flag-keyword: the server cannot be asked


def _has_attachment(c: A.HasAttachment, x: _Ctx) -> _Part:
    if x.dialect.gmail:
        return K.GmRaw("has:attachment"), c
    return K.ALL, c


def _attachment_name(c: A.AttachmentNameTest, x: _Ctx) -> _Part:
    return K.ALL, c


def _gmail_raw(c: A.GmailSearch | A.GmailCategory, x: _Ctx) -> _Part:
    # Gmail's answer is the meaning of these tests (language.md): exact there, refused elsewhere.
    why = server_refusal(c, x.dialect)
    if why is not None:
        raise ServerOnlyError(f"{c.span.short}: {why}")
    query = c.query if isinstance(c, A.GmailSearch) else f"category:{c.category}"
    return K.GmRaw(query), None


def _thread_tagged(c: A.ThreadTagged, x: _Ctx) -> _Part:
    # The store resolves it into the UIDs of those threads (compile/threads.py): exact.
    why = server_refusal(c, x.dialect)
    if why is not None:
        raise ServerOnlyError(f"{c.span.short}: {why}")
    return K.ThreadKeyword(c.keyword), None


# ---------------------------------------------------------------------------
# Dates (the windows themselves are in dates.py)
# ---------------------------------------------------------------------------


def _date_test(c: A.DateTest, x: _Ctx) -> _Part:
    if c.which == "sent":
        return sent_key(c.relation, c.date), c
    return received_key(c.relation, c.date, x.tz), c


def _age_test(c: A.AgeTest, x: _Ctx) -> _Part:
    key, exact = age_key(c.older, c.amount, c.unit, x.now, x.tz, x.dialect.within, x.dialect.clock_skew)
    return key, (None if exact else c)


_ATOMS: dict[type, Callable[[Any, _Ctx], _Part]] = {}


def _register() -> None:
    _ATOMS.update(
        {
            A.StringTest: _string_test,
            A.RegexTest: _regex_test,
            A.DomainTest: _domain_test,
            A.AddressPartTest: _address_part,
            A.HeaderExists: _header_exists,
            A.SizeTest: _size_test,
            A.FlagTest: _flag_test,
            A.KeywordTest: _keyword_test,
            A.HasAttachment: _has_attachment,
            A.AttachmentNameTest: _attachment_name,
            A.DateTest: _date_test,
            A.AgeTest: _age_test,
            A.GmailSearch: _gmail_raw,
            A.GmailCategory: _gmail_raw,
            A.ThreadTagged: _thread_tagged,
        }
    )


_register()
