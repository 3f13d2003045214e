"""The Gmail dialect held to Google's documented transcripts (no Gmail is reachable from the tests).

Transcripts: Google, "IMAP Extensions" (developers.google.com/workspace/gmail/imap/imap-extensions):
    a010 FETCH 1:4 (X-GM-LABELS)
    * 1 FETCH (X-GM-LABELS (\\Inbox \\Sent Important "Muy Importante"))
    * 2 FETCH (X-GM-LABELS (foo))
    * 3 FETCH (X-GM-LABELS ())
    * 4 FETCH (X-GM-LABELS (\\Drafts))
    a011 STORE 1 +X-GM-LABELS (foo)
    * 1 FETCH (X-GM-LABELS (\\Inbox \\Sent Important "Muy Importante" foo))
    a012 SEARCH X-GM-LABELS foo
    * SEARCH 1 2
    a005 SEARCH X-GM-RAW "has:attachment in:unread"
    a006 FETCH 1 (X-GM-MSGID)
    * 1 FETCH (X-GM-MSGID 1278455344230334865)
The command writer must produce the documented bytes (with UID, as mailrules only sends UID
commands), and the parsers must read the documented answers.
"""

from __future__ import annotations

import datetime as dt

import pytest
from imapclient import imap_utf7

from mailrules.compile import Dialect, plan_condition
from mailrules.compile import keys as K
from mailrules.compile.gmail import age_query, list_query
from mailrules.compile.reference import search_matches
from mailrules.compile.serialize import SearchKeyError, label_arg, mutf7_encode, render, serialize
from mailrules.dsl import ast as A
from mailrules.message import MessageView
from mailrules.source import Span

S = Span("gmail.rules", 1, 1)
NOW = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
GMAIL = Dialect.named("gmail")


def plan(c: A.Condition) -> tuple[str, A.Condition | None]:
    p = plan_condition(c, GMAIL, NOW, dt.UTC)
    return render(serialize(p.server)), p.residual


# -- labels on the wire -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["foo", "Muy Importante", "Réunions", "日本語", "a&b", "Été/Hiver", "~x^", "&", "Ω&é", "tab\there"],
)
def test_modified_utf7_agrees_with_imapclient(name: str) -> None:
    assert mutf7_encode(name) == imap_utf7.encode(name).decode("ascii")
    assert imap_utf7.decode(mutf7_encode(name).encode("ascii")) == name


@pytest.mark.parametrize(
    ("label", "wire"),
    [
        ("foo", b"foo"),  # as in `a012 SEARCH X-GM-LABELS foo`
        ("Muy Importante", b'"Muy Importante"'),  # as Gmail writes it in its FETCH answer
        ("\\Inbox", b"\\Inbox"),  # system labels in the flag form of `(\Inbox \Sent ...)`
        ("\\Important", b"\\Important"),
        ("Réunions", b"R&AOk-unions"),  # "encoded in UTF-7 as appropriate"
        ("Clients/Acme Corp", b'"Clients/Acme Corp"'),
        ('say "hi"', b'"say \\"hi\\""'),
        ("nil", b'"nil"'),  # never the NIL atom
        ("50%", b'"50%"'),
    ],
)
def test_label_arguments(label: str, wire: bytes) -> None:
    assert label_arg(label) == wire


@pytest.mark.parametrize("bad", ["", "a\r\nb", "x\x00"])
def test_unsendable_labels_are_refused(bad: str) -> None:
    with pytest.raises(SearchKeyError):
        label_arg(bad)


def test_search_by_label_is_the_documented_key() -> None:
    assert serialize(K.GmLabels("foo")) == [b"X-GM-LABELS foo"]
    assert serialize(K.not_(K.GmLabels("Muy Importante"))) == [b'NOT X-GM-LABELS "Muy Importante"']


def test_raw_search_is_the_documented_key() -> None:
    assert serialize(K.GmRaw("has:attachment in:unread")) == [b'X-GM-RAW "has:attachment in:unread"']


# -- the planner's Gmail dialect ----------------------------------------------------------------------


def tagged(name: str) -> A.KeywordTest:
    return A.KeywordTest(name, S)


@pytest.mark.parametrize(
    ("name", "search", "exact"),
    [
        ("$Work", "X-GM-LABELS $Work", True),
        ("Muy Importante", 'X-GM-LABELS "Muy Importante"', True),
        ("\\Important", "X-GM-LABELS \\Important", True),
        ("\\Starred", "X-GM-LABELS \\Starred", True),
        ("\\Seen", "SEEN", True),  # an IMAP system flag stays a flag
        ("Réunions", "ALL", False),  # non-ASCII: labels fetched and compared here
    ],
)
def test_tagged_reads_labels(name: str, search: str, exact: bool) -> None:
    text, residual = plan(tagged(name))
    assert text == search
    assert (residual is None) == exact


def test_not_tagged_is_pushed_down() -> None:
    assert plan(A.Not(tagged("done"), S)) == ("NOT X-GM-LABELS done", None)


def test_tagged_elsewhere_stays_a_keyword() -> None:
    p = plan_condition(tagged("$Work"), Dialect.named("dovecot"), NOW, dt.UTC)
    assert render(serialize(p.server)) == "KEYWORD $Work"


@pytest.mark.parametrize(
    ("older", "amount", "unit", "query"),
    [
        (True, 3, "days", "older_than:2d"),
        (True, 36, "hours", None),  # a day and a half: no whole day to spare
        (True, 30, "minutes", None),
        (False, 7, "days", "newer_than:8d"),
        (False, 2, "hours", "newer_than:2d"),
        (True, 1, "years", "older_than:365d"),  # 2023-05-01 .. 2024-05-01 is 366 days
    ],
)
def test_age_queries_are_a_day_wider(older: bool, amount: int, unit: str, query: str | None) -> None:
    assert age_query(older, amount, unit, NOW, dt.UTC) == query


@pytest.mark.parametrize(
    ("value", "query"),
    [
        ("python-dev.python.org", "list:python-dev.python.org"),
        ("dev.lists.example.org", "list:dev.lists.example.org"),
        ("python", None),  # not a whole identifier: Gmail's token rules are its own
        ("Dev <dev.lists.example.org>", None),
        ("日本.example", None),
    ],
)
def test_list_queries(value: str, query: str | None) -> None:
    assert list_query(value) == query


def test_age_and_list_add_raw_prefilters_and_keep_the_residual() -> None:
    age = A.AgeTest(True, 3, "days", S)
    text, residual = plan(age)
    assert text.endswith(" X-GM-RAW older_than:2d") and residual == age
    lst = A.StringTest(A.FieldRef("list", None, S), "is", "python-dev.python.org", S)
    text, residual = plan(lst)
    assert text == "X-GM-RAW list:python-dev.python.org" and residual == lst


# -- the reference reading of the X-GM keys (fake store, property tests) --------------------------------


def view(raw: bytes, flags: tuple[str, ...] = (), age: dt.timedelta = dt.timedelta(days=1)) -> MessageView:
    return MessageView.from_bytes(raw, flags=flags, internaldate=NOW - age, uid=1)


def test_reference_labels_ignore_ascii_case_only() -> None:
    v = view(b"Subject: x\r\n\r\n", ("\\Seen", "Muy Importante", "$work"))
    assert search_matches(K.GmLabels("muy importante"), v, now=NOW)
    assert search_matches(K.GmLabels("$WORK"), v, now=NOW)
    assert not search_matches(K.GmLabels("foo"), v, now=NOW)


def test_reference_gmail_terms() -> None:
    v = view(b"List-Id: Python <python-dev.python.org>\r\n\r\nhi", age=dt.timedelta(days=3, hours=1))
    assert search_matches(K.GmRaw("older_than:2d list:python-dev.python.org"), v, now=NOW)
    assert not search_matches(K.GmRaw("older_than:4d"), v, now=NOW)
    assert search_matches(K.GmRaw("newer_than:4d"), v, now=NOW)
    assert not search_matches(K.GmRaw("list:python.org"), v, now=NOW)
    assert not search_matches(K.GmRaw("has:attachment"), v, now=NOW)
    assert search_matches(K.GmRaw("category:promotions"), v, now=NOW)  # unknown: no filter
