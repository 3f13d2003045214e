"""Sequence-set, COPYUID and APPENDUID parsing."""

from __future__ import annotations

import pytest

from mailrules.imap.seqset import parse_appenduid, parse_copyuid, parse_sequence_set


def test_sequence_sets() -> None:
    assert parse_sequence_set("1:3,7") == [1, 2, 3, 7]
    assert parse_sequence_set(b"5") == [5]
    assert parse_sequence_set("4:2") == [2, 3, 4]  # RFC 9051 §9: 4:2 == 2:4
    assert parse_sequence_set("") == []
    assert parse_sequence_set("3:*", star=5) == [3, 4, 5]


@pytest.mark.parametrize("bad", ["1::3", "a", "0", "1,,x", "1:2:3", "*", "-1", "4294967296"])
def test_malformed_sets_raise(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_sequence_set(bad)


def test_huge_range_is_refused() -> None:
    with pytest.raises(ValueError):
        parse_sequence_set("1:4294967295")
    assert len(parse_sequence_set("1:20000")) == 20000


def test_copyuid() -> None:
    assert parse_copyuid("1795701817 3:5,7 10:13") == (1795701817, {3: 10, 4: 11, 5: 12, 7: 13})
    assert parse_copyuid(b"[COPYUID 9 1,2 8,9] Copy completed.") == (9, {1: 8, 2: 9})
    assert parse_copyuid("Copy completed.") is None
    assert parse_copyuid("9 1:3 8:9") is None  # sets that do not pair up


def test_appenduid() -> None:
    text = b"[APPENDUID 1795701817 1] Append completed (0.001 + 0.000 secs)."
    assert parse_appenduid(text) == (1795701817, 1)
    assert parse_appenduid("APPEND completed.") is None
