"""Sequence-set parsing (RFC 9051 §9) for ESEARCH ALL, COPYUID and APPENDUID answers."""

from __future__ import annotations

import re

# Guard against a hostile or broken server answering `1:4294967295`: expanding it would eat memory.
MAX_EXPANDED = 5_000_000

# RFC 9051 §9 sequence-set, checked whole in one match: seq-number = nz-number / "*".
_SEQ_NUMBER = r"(?:[1-9][0-9]*|\*)"
_SEQ_ITEM = _SEQ_NUMBER + r"(?::" + _SEQ_NUMBER + r")?"
_SET = re.compile(_SEQ_ITEM + r"(?:," + _SEQ_ITEM + r")*")
# A number of more than 9 digits may exceed nz-number's 32 bits (4294967295).
_LONG = re.compile(r"[0-9]{10}")


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
    # One regular expression validates the whole set; the parts are then split without one.
    if _SET.fullmatch(text) is None:
        raise ValueError(f"malformed sequence set: {text!r}")
    if _LONG.search(text) is not None and any(
        int(n) > 0xFFFFFFFF for n in re.split(r"[:,]", text) if n != "*"
    ):
        raise ValueError(f"malformed sequence set: {text!r}")
    if "*" in text:
        if star is None:
            raise ValueError(f"'*' in a sequence set where a number is required: {text!r}")
        text = text.replace("*", str(star))
    if ":" not in text:  # COPYUID and ESEARCH sets of scattered UIDs: no ranges at all
        out = list(map(int, text.split(",")))
    else:
        out = []
        extend, append = out.extend, out.append
        for part in text.split(","):
            lo_text, colon, hi_text = part.partition(":")
            if not colon:
                append(int(lo_text))
                continue
            lo, hi = int(lo_text), int(hi_text)
            if lo > hi:
                lo, hi = hi, lo
            if len(out) + (hi - lo + 1) > limit:  # checked before a range is expanded
                raise ValueError(f"sequence set expands to more than {limit} numbers")
            extend(range(lo, hi + 1))
    if len(out) > limit:
        raise ValueError(f"sequence set expands to more than {limit} numbers")
    return out


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


def count_uids(uid_set: str) -> int:
    """How many UIDs a sequence set of ours (no `*`, compile.serialize.chunk_uid_sets) names,
    counted without expanding it: "1:3,7,10:8" -> 7."""
    total = 0
    for part in uid_set.split(","):
        low, _, high = part.partition(":")
        total += abs(int(high or low) - int(low)) + 1
    return total
