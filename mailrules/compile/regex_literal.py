"""Required-literal extraction: a plain ASCII run every match of a regular expression must contain."""

from __future__ import annotations

import importlib
import re
from functools import lru_cache
from typing import Any

from mailrules.dsl.regex_lint import silence_set_warnings

silence_set_warnings()  # the checker reports them at their place; here they would only leak
_P: Any
_C: Any
try:  # Python 3.11+: the parser behind `re`; only used to read the pattern's structure.
    _P = importlib.import_module("re._parser")
    _C = importlib.import_module("re._constants")
except ImportError:  # pragma: no cover - other interpreters: no prefilter, still correct
    _P = _C = None

_FLAG_BITS = {"m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE, "a": re.ASCII}
_MIN_LEN = 2


@lru_cache(maxsize=4096)
def required_literal(pattern: str, flags: str = "") -> str | None:
    """The longest printable-ASCII run that appears in every match, or None.

    Only consecutive LITERAL nodes of the top-level sequence (groups inlined, zero-width anchors
    skipped) count, so the run is contiguous in every match. A case-insensitive pattern may match it
    in any case, which is what the server's case-insensitive substring search does too.
    """
    if _P is None:
        return None
    bits = 0
    for ch in flags:
        bits |= _FLAG_BITS.get(ch, 0)
    try:
        parsed = _P.parse(pattern, bits)
    except (re.error, TypeError, ValueError, RecursionError, OverflowError):
        return None
    runs: list[str] = []
    current: list[str] = []
    _scan(list(parsed.data), current, runs)
    runs.append("".join(current))
    best = max(runs, key=len)
    return best if len(best.strip()) >= _MIN_LEN else None


def _scan(items: list[tuple[Any, Any]], current: list[str], runs: list[str]) -> None:
    for op, av in items:
        if op is _C.LITERAL:
            ch = chr(av)
            if ch.isascii() and ch.isprintable():
                current.append(ch)
                continue
        elif op is _C.SUBPATTERN:
            # (group, add_flags, del_flags, subpattern): matched contiguously, in place.
            _scan(list(av[-1].data), current, runs)
            continue
        elif op is _C.AT:
            continue  # zero-width anchors (^, $, \b, \A ...) consume nothing
        runs.append("".join(current))
        current.clear()
