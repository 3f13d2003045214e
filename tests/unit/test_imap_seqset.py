"""Sequence-set, COPYUID and APPENDUID parsing."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailrules.imap.seqset import MAX_EXPANDED, parse_appenduid, parse_copyuid, parse_sequence_set


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


_REF_NUMBER = re.compile(r"[1-9][0-9]*")


def reference_parse_sequence_set(
    text: str | bytes, *, star: int | None = None, limit: int = MAX_EXPANDED
) -> list[int]:
    """parse_sequence_set as it was before its speed-up (issue 13), kept as the reference."""
    if isinstance(text, bytes):
        text = text.decode("ascii")
    text = text.strip()
    if not text:
        return []
    out: list[int] = []
    for part in text.split(","):
        bounds = part.split(":")
        if len(bounds) > 2:
            raise ValueError(text)
        nums = []
        for token in bounds:
            if token == "*":
                if star is None:
                    raise ValueError(text)
                nums.append(star)
            elif not _REF_NUMBER.fullmatch(token) or int(token) > 0xFFFFFFFF:
                raise ValueError(text)
            else:
                nums.append(int(token))
        lo, hi = (nums[0], nums[0]) if len(nums) == 1 else (min(nums), max(nums))
        if len(out) + (hi - lo + 1) > limit:
            raise ValueError(text)
        out.extend(range(lo, hi + 1))
    return out


NUMBER = st.one_of(
    st.integers(1, 50).map(str),
    st.sampled_from(["*", "0", "4294967295", "4294967296", "99999999999", "007", "", " ", "x", "-3"]),
)
ITEM = st.one_of(
    NUMBER, st.tuples(NUMBER, NUMBER).map(":".join), st.lists(NUMBER, min_size=3, max_size=3).map(":".join)
)
SETS = st.one_of(
    st.lists(ITEM, max_size=12).map(",".join),
    st.text(alphabet="0123456789:,* \n\t", max_size=30),
)


def _outcome(parse: Callable[..., list[int]], text: str | bytes, **kw: Any) -> list[int] | str:
    try:
        return parse(text, **kw)
    except ValueError:
        return "ValueError"


@settings(max_examples=300, deadline=None)
@given(
    SETS,
    st.one_of(st.none(), st.integers(1, 60)),
    st.sampled_from([MAX_EXPANDED, 40, 0]),
    st.booleans(),
)
def test_parse_sequence_set_equals_the_reference(text: str, star: int | None, limit: int, raw: bool) -> None:
    value: str | bytes = text.encode("ascii") if raw else text
    assert _outcome(parse_sequence_set, value, star=star, limit=limit) == _outcome(
        reference_parse_sequence_set, value, star=star, limit=limit
    )


def test_parse_sequence_set_equals_the_reference_on_server_sized_sets() -> None:
    # COPYUID of a chunk of scattered UIDs, and ESEARCH ALL of a mailbox with gaps
    scattered = ",".join(str(u) for u in range(7, 40_000, 3))
    ranges = ",".join(f"{u}:{u + 5}" if u % 2 else str(u) for u in range(1, 30_000, 9))
    for text in (scattered, ranges, "1:20000", "20000:1,5", f"{scattered},1:*"):
        assert _outcome(parse_sequence_set, text, star=9) == _outcome(
            reference_parse_sequence_set, text, star=9
        )
    with pytest.raises(ValueError):
        parse_sequence_set(",".join("7" for _ in range(41)), limit=40)
