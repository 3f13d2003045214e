"""Sequence-set parsing (RFC 9051 §9) for ESEARCH ALL, COPYUID and APPENDUID answers."""

from __future__ import annotations

import re

# Guard against a hostile or broken server answering `1:4294967295`: expanding it would eat memory.
MAX_EXPANDED = 5_000_000

_NUMBER = re.compile(r"[1-9][0-9]*")


def parse_sequence_set(text: str | bytes, *, star: int | None = None, limit: int = MAX_EXPANDED) -> list[int]:
    """Expand `"1:3,7,9:8"` into `[1, 2, 3, 7, 8, 9]` in the server's order.

    Ranges may be written high:low (RFC 9051 §9: "2:4" and "4:2" are equivalent); `*` is accepted only
    when `star` (the largest number in use) is given. Raises ValueError on anything malformed.
    """
    if isinstance(text, bytes):
        text = text.decode("ascii")
    text = text.strip()
    if not text:
        return []
    out: list[int] = []
    for part in text.split(","):
        bounds = part.split(":")
        if len(bounds) > 2:
            raise ValueError(f"malformed sequence set: {text!r}")
        nums = [_number(b, star, text) for b in bounds]
        lo, hi = (nums[0], nums[0]) if len(nums) == 1 else (min(nums), max(nums))
        if len(out) + (hi - lo + 1) > limit:
            raise ValueError(f"sequence set expands to more than {limit} numbers")
        out.extend(range(lo, hi + 1))
    return out


def _number(token: str, star: int | None, text: str) -> int:
    if token == "*":
        if star is None:
            raise ValueError(f"'*' in a sequence set where a number is required: {text!r}")
        return star
    if not _NUMBER.fullmatch(token) or int(token) > 0xFFFFFFFF:
        raise ValueError(f"malformed sequence set: {text!r}")
    return int(token)


def parse_copyuid(text: str | bytes) -> tuple[int, dict[int, int]] | None:
    """`COPYUID <uidvalidity> <src-set> <dst-set>` (RFC 4315 §3) -> (uidvalidity, {src: dst}).

    Accepts the response-code data alone or a whole resp-text containing `[COPYUID ...]`.
    Returns None when there is no COPYUID or the two sets do not pair up (the server is wrong then).
    """
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    m = re.search(r"(?:\[COPYUID |^)(\d+) ([0-9:,]+) ([0-9:,]+)", text.strip())
    if not m:
        return None
    try:
        src = parse_sequence_set(m.group(2))
        dst = parse_sequence_set(m.group(3))
    except ValueError:
        return None
    if len(src) != len(dst):
        return None
    # RFC 4315 §3: both sets list the UIDs in the order the messages were copied, i.e. ascending source.
    return int(m.group(1)), dict(zip(src, dst))


def parse_appenduid(text: str | bytes) -> tuple[int, int] | None:
    """`[APPENDUID <uidvalidity> <uid>]` (RFC 4315 §3) -> (uidvalidity, uid); None when absent."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    m = re.search(r"\[APPENDUID (\d+) (\d+)(?:[:,][0-9:,]*)?\]", text)
    if not m:
        return None
    return int(m.group(1)), int(m.group(2))
