"""SEARCH serializer: atoms vs quoted vs literals, grouping, CR/LF safety, UID compression and chunking."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailrules.compile import keys as K
from mailrules.compile.serialize import (
    Lit,
    SearchKeyError,
    chunk_uid_sets,
    compress_uids,
    format_date,
    is_atom,
    needs_charset,
    parse_uid_set,
    render,
    search_arguments,
    serialize,
)


def text(key: K.SearchKey) -> str:
    return render(serialize(key))


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        ("invoice", b"SUBJECT invoice"),
        ("bob@example.com", b"SUBJECT bob@example.com"),
        ("paren(x)", b'SUBJECT "paren(x)"'),
        ("brace{3}", b'SUBJECT "brace{3}"'),
        ("a*b", b'SUBJECT "a*b"'),
        ("50%", b'SUBJECT "50%"'),
        ("x]y", b'SUBJECT "x]y"'),
        ("two words", b'SUBJECT "two words"'),
        ('say "hi"', b'SUBJECT "say \\"hi\\""'),
        ("back\\slash", b'SUBJECT "back\\\\slash"'),
        ("", b'SUBJECT ""'),
        ("tab\there", b'SUBJECT "tab\there"'),
    ],
)
def test_ascii_values_are_atoms_only_when_every_char_is_an_atom_char(value: str, wire: bytes) -> None:
    assert serialize(K.Text("SUBJECT", value)) == [wire]
    assert not needs_charset(K.Text("SUBJECT", value))


def test_atom_chars() -> None:
    assert is_atom("a-b.c@d+e_f!#$&'~|")
    for bad in ["(", ")", "{", "%", "*", '"', "\\", "]", " ", "\x7f", "\x01", "\t", "é"]:
        assert not is_atom(f"a{bad}b"), bad
    assert not is_atom("")


def test_eight_bit_values_are_utf8_literals() -> None:
    pieces = serialize(K.Text("SUBJECT", "café"))
    assert pieces == [b"SUBJECT ", Lit("café".encode())]
    assert needs_charset(K.Text("SUBJECT", "café"))
    assert render(pieces) == "SUBJECT {5}café"
    args = search_arguments(K.and_(K.Flag("UNSEEN"), K.Text("FROM", "Jürgen")))
    assert args == [b"CHARSET UTF-8 UNSEEN FROM ", Lit("Jürgen".encode())]


@pytest.mark.parametrize("value", ["x\r\nZ1 CREATE Injected", "x\rZ", "x\nZ", "nul\x00"])
def test_cr_lf_nul_never_reach_the_wire(value: str) -> None:
    for key in (K.Text("SUBJECT", value), K.Header("X-Test", value), K.Header(value, ""), K.GmRaw(value)):
        with pytest.raises(SearchKeyError):
            serialize(key)


def test_nested_or_not_and_groups() -> None:
    key = K.and_(
        K.or_(K.Text("FROM", "a"), K.and_(K.Text("TO", "b"), K.Flag("SEEN"))),
        K.Not(K.or_(K.Larger(10), K.Smaller(5))),
        K.Not(K.and_(K.Keyword("$X"), K.Flag("FLAGGED"))),
    )
    # negations are pushed down: no NOT reaches a range key (a Dovecot 2.3 simplifier bug)
    assert text(key) == "OR FROM a (TO b SEEN) SMALLER 11 LARGER 4 OR UNKEYWORD $X UNFLAGGED"
    assert text(K.Not(K.and_(K.Text("FROM", "a"), K.Text("TO", "b")))) == "OR NOT FROM a NOT TO b"
    assert text(K.Not(K.or_(K.Text("FROM", "a"), K.Not(K.Text("TO", "b"))))) == "NOT FROM a TO b"
    # three-way OR nests to the right, one space between keys, none inside parentheses
    assert text(K.any_of([K.Text("CC", "x"), K.Text("CC", "y"), K.Text("CC", "z")])) == (
        "OR CC x OR CC y CC z"
    )
    assert text(K.ALL) == "ALL"
    assert text(K.Not(K.ALL)) == "NOT ALL"


def test_every_key_spelling() -> None:
    d = dt.date(2024, 1, 5)
    cases: list[tuple[K.SearchKey, str]] = [
        (K.Header("List-Id", ""), 'HEADER List-Id ""'),
        (K.Header("X-Spam Flag", "yes"), 'HEADER "X-Spam Flag" yes'),
        (K.Larger(1048576), "LARGER 1048576"),
        (K.Smaller(20480), "SMALLER 20480"),
        (K.Date("BEFORE", d), "BEFORE 5-Jan-2024"),
        (K.Date("SENTSINCE", dt.date(999, 12, 31)), "SENTSINCE 31-Dec-0999"),
        (K.Older(3600), "OLDER 3600"),
        (K.Younger(60), "YOUNGER 60"),
        (K.Flag("UNDELETED"), "UNDELETED"),
        (K.Unkeyword("$Junk"), "UNKEYWORD $Junk"),
        (K.Uid(frozenset({1, 2, 3, 7})), "UID 1:3,7"),
        (K.UidFrom(42), "UID 42:*"),
        (K.UidFrom(0), "UID 1:*"),  # UIDs start at 1 (the watcher's "after checkpoint 0")
        (K.Date("SINCE", dt.date(2026, 3, 5)), "SINCE 5-Mar-2026"),
        (K.GmRaw("has:attachment"), "X-GM-RAW has:attachment"),
        (K.GmRaw("from:bob subject:x"), 'X-GM-RAW "from:bob subject:x"'),
        (K.Text("BODY", "x"), "BODY x"),
        (K.Text("TEXT", "x y"), 'TEXT "x y"'),
    ]
    for key, wire in cases:
        assert text(key) == wire
    assert format_date(dt.date(2024, 12, 31)) == "31-Dec-2024"


def test_invalid_keyword_and_empty_uid_set_raise() -> None:
    with pytest.raises(SearchKeyError):
        serialize(K.Keyword("two words"))
    with pytest.raises(SearchKeyError):
        serialize(K.Uid(frozenset()))


def test_negation_never_reaches_a_range_key() -> None:
    d = dt.date(2024, 1, 5)
    cases: list[tuple[K.SearchKey, str]] = [
        (K.Not(K.Larger(1023)), "SMALLER 1024"),
        (K.Not(K.Smaller(102)), "LARGER 101"),
        (K.Not(K.Smaller(0)), "ALL"),
        (K.Not(K.Older(7200)), "YOUNGER 7201"),
        (K.Not(K.Younger(7200)), "OLDER 7199"),
        (K.Not(K.Younger(1)), "NOT YOUNGER 1"),
        (K.Not(K.Date("BEFORE", d)), "SINCE 5-Jan-2024"),
        (K.Not(K.Date("SENTSINCE", d)), "SENTBEFORE 5-Jan-2024"),
        (K.Not(K.Date("ON", d)), "OR BEFORE 5-Jan-2024 SINCE 6-Jan-2024"),
        (K.Not(K.Date("SENTON", dt.date(9999, 12, 31))), "SENTBEFORE 31-Dec-9999"),
        (K.Not(K.Or(K.Larger(1023), K.Larger(101))), "SMALLER 1024 SMALLER 102"),
        (K.Not(K.And((K.Larger(1023), K.Larger(101)))), "OR SMALLER 1024 SMALLER 102"),
    ]
    for key, wire in cases:
        assert text(key) == wire


def test_smart_constructors_simplify() -> None:
    a, b = K.Text("FROM", "a"), K.Flag("SEEN")
    assert K.and_() == K.ALL
    assert K.and_(K.ALL, a) == a
    assert K.and_(K.and_(a, b), K.ALL, a) == K.And((a, b))
    assert K.or_(a, K.ALL) == K.ALL
    assert K.or_(a, a) == a
    assert K.not_(K.not_(a)) == a
    assert K.not_(b) == K.Flag("UNSEEN")
    assert K.not_(K.Keyword("$x")) == K.Unkeyword("$x")
    assert K.any_of([a, K.ALL]) == K.ALL
    with pytest.raises(ValueError):
        K.any_of([])


def test_search_arguments_put_return_before_charset() -> None:
    key = K.Text("SUBJECT", "日本")
    assert render(search_arguments(key, esearch=True)) == "RETURN (ALL) CHARSET UTF-8 SUBJECT {6}日本"
    assert search_arguments(K.Flag("SEEN"), esearch=False) == [b"SEEN"]


# -- UID sets -------------------------------------------------------------------------------------


def test_compress_uids() -> None:
    assert compress_uids([]) == []
    assert compress_uids([5, 1, 2, 3, 3, 7, 8, 10]) == ["1:3", "5", "7:8", "10"]
    assert compress_uids(range(1, 20001)) == ["1:20000"]
    with pytest.raises(ValueError):
        compress_uids([0, 1])


def test_chunk_20000_sparse_uids() -> None:
    rng = random.Random(7)
    uids = sorted(rng.sample(range(1, 10_000_000), 20_000))
    chunks = chunk_uid_sets(uids, max_bytes=7000)
    assert len(chunks) > 1
    assert all(len(c.encode()) <= 7000 for c in chunks)
    back = [u for c in chunks for u in parse_uid_set(c)]
    assert back == uids  # every UID exactly once, ascending
    # the whole command stays under the ~8 KB line limit (RFC 7162 §4)
    assert all(len(f"A1 UID FETCH {c} (FLAGS)\r\n") < 8192 for c in chunks)


def test_chunk_mixed_ranges_round_trip() -> None:
    uids = [*range(1, 5000), *range(6000, 60000, 3), 70000]
    chunks = chunk_uid_sets(uids, max_bytes=100)
    assert all(len(c) <= 100 for c in chunks)
    assert [u for c in chunks for u in parse_uid_set(c)] == sorted(set(uids))
    assert chunk_uid_sets([]) == []
    assert chunk_uid_sets(range(1, 20001)) == ["1:20000"]
    with pytest.raises(ValueError):
        chunk_uid_sets([123456789], max_bytes=3)


def reference_compress_uids(uids: Iterable[int]) -> list[str]:
    """compress_uids as it was before its speed-up (issue 13), kept as the reference."""
    ordered = sorted(set(uids))
    if ordered and ordered[0] < 1:
        raise ValueError("UIDs are positive integers")
    out: list[str] = []
    i = 0
    n = len(ordered)
    while i < n:
        j = i
        while j + 1 < n and ordered[j + 1] == ordered[j] + 1:
            j += 1
        out.append(str(ordered[i]) if i == j else f"{ordered[i]}:{ordered[j]}")
        i = j + 1
    return out


# runs of neighbours and scattered UIDs, duplicates, the smallest and largest UIDs, 0 (refused)
UIDS = st.lists(
    st.tuples(st.one_of(st.integers(0, 40), st.integers(1, 0xFFFFFFF0)), st.integers(1, 30)),
    max_size=30,
).map(lambda runs: [u for start, n in runs for u in range(start, start + n)])


@settings(max_examples=300, deadline=None)
@given(UIDS)
def test_compress_uids_equals_the_reference(uids: list[int]) -> None:
    try:
        expected: list[str] | type[ValueError] = reference_compress_uids(uids)
    except ValueError:
        expected = ValueError
    if expected is ValueError:
        with pytest.raises(ValueError):
            compress_uids(uids)
    else:
        assert compress_uids(uids) == expected
        assert compress_uids(iter(uids)) == expected  # any iterable, consumed once
