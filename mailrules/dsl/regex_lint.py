"""Regex readings that surprise authors from other tools: POSIX classes, possessive quantifiers, sets.

The language's regular expressions are Python's `re` (docs/language.md). Sieve's `:regex` is POSIX
extended and imapfilter's is PCRE, and a pattern copied from them can be valid Python that means
something else:

- `[[:digit:]]` is no class in Python: it is the set `[[:digt]` followed by a literal `]` (Python
  3.11 also warns "Possible nested set" on stderr, with no file or line). An error, with the Python
  spelling of the class.
- `.*+` is a possessive quantifier in Python 3.11 (it never gives back what it matched), where
  POSIX and Sieve authors read a greedy `.*` then a `+`: a warning.
- `[[`, `--`, `&&`, `~~`, `||` inside a set: Python warns that a later version may read them as
  set operations (FutureWarning); a warning here, at the place, instead.

Positions are offsets in the pattern as written between the slashes (`\\/` counted as written), so a
diagnostic points at the very characters. The scan is linear and reads only the pattern's text.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Literal

__all__ = ["RegexFinding", "lint_pattern", "silence_set_warnings"]

#: The Python spelling of each POSIX class (ASCII, as POSIX's C locale reads them).
POSIX_CLASSES: dict[str, str] = {
    "digit": r"\d or [0-9]",
    "alpha": "[a-zA-Z]",
    "alnum": "[a-zA-Z0-9]",
    "upper": "[A-Z]",
    "lower": "[a-z]",
    "space": r"\s",
    "blank": r"[ \t]",
    "punct": r"[!-/:-@\[-`{-~]",
    "xdigit": "[0-9a-fA-F]",
    "word": r"\w",
    "cntrl": r"[\x00-\x1f\x7f]",
    "print": "[ -~]",
    "graph": "[!-~]",
}
_SET_OPERATIONS = {"-": "difference", "&": "intersection", "~": "symmetric difference", "|": "union"}
_REPEAT = re.compile(r"\{[0-9]*(,[0-9]*)?\}")


@dataclass(frozen=True, slots=True)
class RegexFinding:
    """One problem at `offset` (characters into the pattern as written), `length` characters long."""

    offset: int
    length: int
    message: str
    severity: Literal["error", "warning"]


def silence_set_warnings() -> None:
    """Keep Python's "Possible nested set / set operation" FutureWarnings off stderr for good.

    `lint_pattern` reports each of them at its file, line and column when the rules are checked;
    the runtime compiles the same patterns again (the engine, explain's prefilter), where the
    warning would only leak to stderr without a place. Installed once, at import: a filter added
    per compile (`catch_warnings`) would race between the daemon's threads.
    """
    warnings.filterwarnings(
        "ignore",
        message=r"Possible (nested set|set (difference|intersection|symmetric difference|union)) at position",
        category=FutureWarning,
    )


def lint_pattern(pattern: str, verbose: bool = False) -> list[RegexFinding]:
    """The findings of one pattern as written between the slashes (escapes as written).

    `verbose`: the `x` flag, where an unescaped `#` outside a set starts a comment.
    """
    out: list[RegexFinding] = []
    i, n = 0, len(pattern)
    after_quantifier = False
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            i += 2
            after_quantifier = False
            continue
        if ch == "[":
            i = _set(pattern, i, out)
            after_quantifier = False
            continue
        if verbose and ch == "#":
            break
        if ch == "(" and pattern.startswith("(?#", i):  # a comment group: nothing in it counts
            close = pattern.find(")", i)
            i = n if close < 0 else close + 1
            after_quantifier = False
            continue
        if ch == "(" and pattern.startswith("(?", i):
            i += 2  # `?` opens group syntax here, it repeats nothing
            after_quantifier = False
            continue
        if ch in "*+?":
            if after_quantifier and ch == "+":
                out.append(_possessive(pattern, i))
            # a `?` after a quantifier makes it lazy; any quantifier ends with it
            after_quantifier = not after_quantifier
            i += 1
            continue
        if ch == "{":
            m = _REPEAT.match(pattern, i)
            if m is not None and m.group(0) not in ("{}", "{,}"):
                i = m.end()
                after_quantifier = True
                continue
        after_quantifier = False
        i += 1
    return out


def _possessive(pattern: str, at: int) -> RegexFinding:
    start = at - 1
    if pattern[start] == "}":
        start = pattern.rfind("{", 0, start)
    quantifier = pattern[start : at + 1]
    greedy = quantifier[:-1]
    return RegexFinding(
        start,
        len(quantifier),
        f"'{quantifier}' is a possessive quantifier in Python: it never gives back what it matched, "
        f"where POSIX and Sieve read '{greedy}' then '+'; write '{greedy}\\+' for a literal '+', or "
        f"the atomic group '(?>...{greedy})' to keep it possessive",
        "warning",
    )


def _set(pattern: str, start: int, out: list[RegexFinding]) -> int:
    """Scan the set opening at `start`; returns the offset after its closing `]`."""
    n = len(pattern)
    i = start + 1
    if i < n and pattern[i] == "^":
        i += 1
    first = i
    if i < n and pattern[i] == "[" and not _posix_at(pattern, i):
        out.append(
            RegexFinding(
                i,
                1,
                "'[' at the start of a set: a later Python may read it as a nested set; write '\\[' "
                "for the character",
                "warning",
            )
        )
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "]" and i > first:
            return i + 1
        if ch == "[" and _posix_at(pattern, i):
            end = pattern.find(pattern[i + 1] + "]", i + 2)
            name = pattern[i + 2 : end]
            written = pattern[i : end + 2]
            instead = POSIX_CLASSES.get(name.lower()) if pattern[i + 1] == ":" else None
            hint = f"write {instead}" if instead else "write the characters it stands for"
            out.append(
                RegexFinding(
                    i,
                    len(written),
                    f"'{written}' is a POSIX class, which Python's regular expressions do not have "
                    f"(Python reads its characters as members of the set); {hint}",
                    "error",
                )
            )
            i = end + 2
            continue
        if ch in _SET_OPERATIONS and i > first and i + 1 < n and pattern[i + 1] == ch:
            out.append(
                RegexFinding(
                    i,
                    2,
                    f"'{ch}{ch}' in a set: a later Python may read it as set {_SET_OPERATIONS[ch]}; "
                    f"escape it ('\\{ch}\\{ch}') for the characters",
                    "warning",
                )
            )
            i += 2
            continue
        i += 1
    return n


def _posix_at(pattern: str, i: int) -> bool:
    """`[:name:]`, `[=c=]` or `[.c.]` (POSIX classes, equivalence classes, collating symbols) at i."""
    if i + 1 >= len(pattern) or pattern[i + 1] not in ":=.":
        return False
    end = pattern.find(pattern[i + 1] + "]", i + 2)
    return end > i + 1 and "]" not in pattern[i + 2 : end]
