"""The FETCH fast path gives exactly what imapclient's parser gives, or steps aside."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from imapclient.datetime_util import parse_to_datetime
from imapclient.response_parser import parse_fetch_response

from mailrules.imap.fastfetch import internaldate, parse_simple_fetch


def reference(group: list[Any]) -> tuple[int, dict[bytes, Any]]:
    parsed = parse_fetch_response(group, normalise_times=False, uid_is_key=False)
    ((seq, msg),) = parsed.items()
    return seq, {k.upper(): v for k, v in msg.items() if k != b"SEQ"}


HEADER = b"Message-ID: <a@b>\r\nSubject: x\r\n\r\n"
CASES: list[list[Any]] = [
    [b"1 (UID 5 FLAGS (\\Seen $Work) RFC822.SIZE 1234)"],
    [b"12 (UID 99 FLAGS ())"],
    [
        (
            b"3 (UID 7 FLAGS (\\Seen) BODY[HEADER.FIELDS (MESSAGE-ID)] {" + str(len(HEADER)).encode() + b"}",
            HEADER,
        ),
        b")",
    ],
    [
        (b"3 (UID 7 BODY[HEADER.FIELDS (MESSAGE-ID SUBJECT)] {" + str(len(HEADER)).encode() + b"}", HEADER),
        b' FLAGS (\\Flagged) INTERNALDATE "05-Jan-2024 23:30:00 -0800")',
    ],
    [b'4 (UID 8 INTERNALDATE "17-Jul-1996 02:44:25 -0700" RFC822.SIZE 4286 MODSEQ (12))'],
    [b"5 (UID 9 BODY[] NIL)"],
    [b'6 (UID 10 BODY[HEADER.FIELDS (FROM)] "")'],
]


def test_known_shapes_agree() -> None:
    for group in CASES:
        fast = parse_simple_fetch(group)
        assert fast is not None, group
        assert fast == reference(group), group


def test_unknown_shapes_step_aside() -> None:
    for group in (
        [b'1 (UID 5 BODYSTRUCTURE ("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 10 1 NIL NIL NIL NIL))'],
        [b"1 (UID 5 ENVELOPE (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL))"],
        [b"1 (UID 5 FLAGS (\\Seen)"],  # no closing parenthesis
        [b"1 (UID 5 FLAGS (\\Seen)) trailing"],
        [(b"1 (UID 5 BODY[] {3}", b"abcd"), b")"],  # literal length does not match
    ):
        assert parse_simple_fetch(group) is None, group


FLAG = st.sampled_from([b"\\Seen", b"\\Flagged", b"$Work", b"\\Answered", b"NonJunk"])
ITEM = st.one_of(
    st.integers(1, 10**9).map(lambda n: b"RFC822.SIZE %d" % n),
    st.lists(FLAG, max_size=4).map(lambda fs: b"FLAGS (" + b" ".join(fs) + b")"),
    st.sampled_from(
        [b'INTERNALDATE "05-Jan-2024 23:30:00 -0800"', b'INTERNALDATE " 1-Feb-2020 00:00:01 +0000"']
    ),
    st.integers(1, 10**6).map(lambda n: b"MODSEQ (%d)" % n),
)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 10**6),
    st.integers(1, 10**6),
    st.lists(ITEM, max_size=4),
    st.one_of(st.none(), st.binary(max_size=200)),
    st.booleans(),
)
def test_generated_answers_agree(
    seq: int, uid: int, items: list[bytes], body: bytes | None, body_first: bool
) -> None:
    names = [i.split(b" ", 1)[0] for i in items]
    if len(set(names)) != len(names):
        return  # a repeated item: servers don't, and the two parsers keep different ones
    head = b"%d (UID %d" % (seq, uid)
    if body is None:
        group: list[Any] = [head + b"".join(b" " + i for i in items) + b")"]
    elif body_first:
        group = [(head + b" BODY[HEADER] {%d}" % len(body), body), b"".join(b" " + i for i in items) + b")"]
    else:
        group = [(head + b"".join(b" " + i for i in items) + b" BODY[HEADER] {%d}" % len(body), body), b")"]
    fast = parse_simple_fetch(group)
    assert fast is not None
    assert fast == reference(group)
    assert parse_simple_fetch(group) == fast  # again, now by the shape the first parse kept


SECTION = st.sampled_from(
    [b"BODY[HEADER.FIELDS (MESSAGE-ID)]", b"BODY[]", b"body[header]", b"BODY[TEXT]<0>", b"RFC822.HEADER"]
)
SECTION_VALUE = st.one_of(
    st.just(b"NIL"), st.just(b"nil"), st.binary(max_size=40).map(lambda b: b'"' + b.hex().encode() + b'"')
)
SPACE = st.sampled_from([b" ", b""])


@st.composite
def answers(draw: st.DrawFn) -> list[Any]:
    """One FETCH response as imaplib stores it: the items of ITEM and a section in any order, with
    the spellings and spacing servers use, a literal or not, its length right or (rarely) wrong."""
    items = [b"UID %d" % draw(st.integers(1, 99)), *draw(st.lists(ITEM, max_size=3))]
    if draw(st.booleans()):
        items[0] = items[0].lower()
    items = draw(st.permutations(items))
    gaps = [draw(SPACE) for _ in items]
    text = b"%d (" % draw(st.integers(1, 99)) + b"".join(i + g for i, g in zip(items, gaps, strict=True))
    text = text.rstrip(b" ") if draw(st.booleans()) else text
    if not draw(st.booleans()):
        return [text + b" " + draw(SECTION) + b" " + draw(SECTION_VALUE) + b")"]
    body = draw(st.binary(max_size=60))
    size = len(body) + draw(st.sampled_from([0, 0, 0, 0, 1]))
    tail = draw(st.lists(ITEM, max_size=2))
    trailer = draw(SPACE) + b" ".join(tail) + b")"
    return [(text + b" " + draw(SECTION) + b" {%d}" % size, body), trailer]


@settings(max_examples=400, deadline=None)
@given(st.lists(answers(), min_size=1, max_size=8))
def test_answers_of_changing_shapes_agree(groups: list[list[Any]]) -> None:
    # one after another, as a FETCH's answers come: kept shapes must never read another shape
    for group in groups:
        fast = parse_simple_fetch(group)
        if fast is None:
            continue  # imapclient's parser reads it
        names = [k for k in fast[1]]
        assert len(set(names)) == len(names)
        assert fast == reference(group), group


def _date_outcome(parse: Any, value: bytes) -> tuple[Any, ...]:
    try:
        d = parse(value)
        return (d.replace(tzinfo=None), d.utcoffset(), type(d.tzinfo))
    except ValueError:
        return ("ValueError",)


@settings(max_examples=1000, deadline=None)
@given(
    st.sampled_from([b"%02d", b"%d", b"% d"]),
    st.integers(0, 40),
    st.sampled_from([b"Jan", b"Feb", b"Jun", b"Dec", b"jan", b"Foo"]),
    st.integers(0, 10000),
    st.tuples(st.integers(0, 30), st.integers(0, 70), st.integers(0, 70)),
    st.sampled_from([b"+", b"-"]),
    st.integers(0, 9999),
)
def test_internaldate_is_imapclients(
    day_form: bytes, day: int, month: bytes, year: int, hms: tuple[int, int, int], sign: bytes, zone: int
) -> None:
    value = (day_form % day) + b"-" + month + b"-%04d %02d:%02d:%02d " % (year, *hms) + sign + b"%04d" % zone
    expected = _date_outcome(lambda v: parse_to_datetime(v, normalise=False), value)
    assert _date_outcome(internaldate, value) == expected, value


def test_internaldate_of_the_usual_forms() -> None:
    for value in (b"05-Jan-2024 23:30:00 -0800", b" 1-Feb-2020 00:00:01 +0000", b"1-Feb-2020 00:00:01 -0000"):
        assert _date_outcome(internaldate, value) == _date_outcome(
            lambda v: parse_to_datetime(v, normalise=False), value
        )
    assert internaldate(b"05-Jan-2024 23:30:00 -0800").utcoffset() == dt.timedelta(hours=-8)
