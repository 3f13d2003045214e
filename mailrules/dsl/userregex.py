"""The language's regular expressions: Python `re` syntax and reading, run with a time limit.

The language's syntax and meaning are Python's `re` (docs/language.md), but `re` cannot be
stopped and holds the GIL for the whole search: `/invoice.*total/s` on 128 KB of hostile text
took 15 s and froze every other thread. The third-party `regex` module takes a `timeout` and
releases the GIL while it searches (`concurrent=True`), but reads some patterns differently:
its `\\w` is Unicode's word class (`²`, combining marks, 30,000 code points differ), its `\\s`
lacks U+001C..U+001F, `[[:alpha:]]` is a POSIX class there and a set of `[:alph` there, and its
case-insensitive matching knows neither `ı ~ i` nor `İ ~ I`.

So a pattern is parsed by `re` itself and its tree written out again for `regex` with nothing
left to interpretation: each single-character item (a literal under IGNORECASE, a class, `\\d`,
`\\w`, `\\s`, `.`) becomes a class of exactly the code points `re` matches with it (found by
running `re` over every code point once per distinct item; a large class is written as general
categories plus exceptions, see `_single`), `\\b` and `\\B` are lookarounds on `re`'s word class,
`^` and `$` explicit per MULTILINE, and `regex` runs with no flags. The one freedom taken: code
points this Python's Unicode database does not know (assigned in a later Unicode version) may
read as `regex`'s newer database says. Groups keep their numbers. Backreferences under
IGNORECASE use `regex`'s case folding (they differ from `re` only on `ı`/`İ`). A tree this module
cannot write out (none is known) runs on `re` as before, within the text caps but without a time
limit, and is logged once.
"""

from __future__ import annotations

import array
import hashlib
import importlib
import json
import logging
import os
import re
import sys
import threading
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from mailrules import __version__
from mailrules.bounds import EvaluationTimeout, current_deadline
from mailrules.cachedir import cache_directory, read_private, write_atomic
from mailrules.dsl.regex_lint import silence_set_warnings

if TYPE_CHECKING:  # `regex` itself is imported by the first compile: a run without `matches` never loads it
    import regex

__all__ = ["UserRegex", "compile_user_regex", "language_flags"]

log = logging.getLogger(__name__)
silence_set_warnings()  # `mailrules check` reports each at its place; at run time they only leak

_P: Any = importlib.import_module("re._parser")  # the parser behind `re` (3.11+)
_C: Any = importlib.import_module("re._constants")

_CASE_FLAGS = re.IGNORECASE | re.ASCII
_CATEGORY_SOURCE = {
    "CATEGORY_DIGIT": r"\d",
    "CATEGORY_NOT_DIGIT": r"\D",
    "CATEGORY_SPACE": r"\s",
    "CATEGORY_NOT_SPACE": r"\S",
    "CATEGORY_WORD": r"\w",
    "CATEGORY_NOT_WORD": r"\W",
}
_ANY_CHAR = "(?s:.)"
_NEVER = "(?!)"
#: A class of at most this many runs is written out; a larger one as general categories.
_FEW_RUNS = 16
_CATEGORIES = (
    *("Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc", "Pd", "Ps", "Pe"),
    *("Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co", "Cn"),
)


class _Caseless(str):
    """`(?i:c)` for one literal that `regex`'s case folding reads as `re` does."""

    __slots__ = ()


def language_flags(flags: str) -> int:
    """The `re` flags of a language regex: IGNORECASE unless `c`; `m`, `s`, `x` honoured."""
    f = 0 if "c" in flags else re.IGNORECASE
    f |= re.MULTILINE if "m" in flags else 0
    f |= re.DOTALL if "s" in flags else 0
    f |= re.VERBOSE if "x" in flags else 0
    return f


@dataclass(frozen=True, slots=True)
class UserRegex:
    """A compiled language regex; `search` obeys the current evaluation's deadline."""

    source: str
    compiled: regex.Pattern[str] | None  # None: the `re` fallback below
    fallback: re.Pattern[str] | None = None

    def search(self, text: str) -> regex.Match[str] | re.Match[str] | None:
        """`re.search` of the language's pattern in `text`; EvaluationTimeout past the deadline."""
        if self.compiled is None:
            assert self.fallback is not None
            return self.fallback.search(text)
        deadline = current_deadline()
        if deadline is None:
            return self.compiled.search(text, concurrent=True)
        deadline.check()
        try:
            return self.compiled.search(text, concurrent=True, timeout=max(deadline.remaining(), 0.001))
        except TimeoutError:
            raise EvaluationTimeout("regular expression time limit reached") from None


@lru_cache(maxsize=1024)
def compile_user_regex(pattern: str, flags: str) -> UserRegex | None:
    """The language's regex `/pattern/flags`, or None when `re` does not accept it (the checker
    reports it; an invalid pattern matches nothing)."""
    f = language_flags(flags)
    try:
        fallback = re.compile(pattern, f)
        tree = _P.parse(pattern, f)
    except (re.error, RecursionError, OverflowError, ValueError):
        return None
    import regex

    try:
        source = _Writer().pattern(tree, tree.state.flags)
        return UserRegex(source, regex.compile(source, regex.V0))
    except (_Untranslatable, regex.error, RecursionError, OverflowError, ValueError) as exc:
        log.warning(
            "regular expression /%s/ runs without a time limit: %s",
            pattern[:80].encode("unicode_escape").decode("ascii"),
            exc,
        )
        return UserRegex("", None, fallback)


class _Untranslatable(Exception):
    pass


def _combine(flags: int, add: int, remove: int) -> int:
    # re._compiler._combine_flags: a type flag (ASCII, UNICODE) replaces the other.
    if add & (re.ASCII | re.UNICODE):
        flags &= ~(re.ASCII | re.UNICODE)
    return (flags | add) & ~remove


class _Writer:
    """Writes a parsed `re` tree as a `regex` pattern with the same reading."""

    def pattern(self, tree: Any, flags: int) -> str:
        out: list[str] = []
        for op, av in tree.data:
            item = self.item(op, av, flags)
            if isinstance(item, _Caseless) and out and isinstance(out[-1], _Caseless):
                item = _Caseless(out.pop()[:-1] + item[4:])  # (?i:ab) for (?i:a)(?i:b)
            out.append(item)
        return "".join(out)

    def item(self, op: Any, av: Any, flags: int) -> str:  # one dispatch over re's opcodes
        name = str(op)
        if name in ("LITERAL", "NOT_LITERAL", "IN"):
            return _single(_single_source(name, av), flags & _CASE_FLAGS, name == "LITERAL")
        if name == "ANY":
            return _ANY_CHAR if flags & re.DOTALL else r"[^\n]"
        if name == "BRANCH":
            return "(?:" + "|".join(self.pattern(p, flags) for p in av[1]) + ")"
        if name == "SUBPATTERN":
            group, add, remove, sub = av
            body = self.pattern(sub, _combine(flags, add, remove))
            return f"(?:{body})" if group is None else f"({body})"
        if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, high, sub = av
            count = f"{{{low},}}" if high == _C.MAXREPEAT else f"{{{low},{high}}}"
            suffix = {"MAX_REPEAT": "", "MIN_REPEAT": "?", "POSSESSIVE_REPEAT": "+"}[name]
            return f"(?:{self.pattern(sub, flags)}){count}{suffix}"
        if name == "ATOMIC_GROUP":
            return f"(?>{self.pattern(av, flags)})"
        if name == "AT":
            return _anchor(str(av), flags)
        if name == "GROUPREF":
            return f"(?i:\\g<{av}>)" if flags & re.IGNORECASE else f"(?:\\g<{av}>)"
        if name == "GROUPREF_EXISTS":
            group, yes, no = av
            other = "" if no is None else "|" + self.pattern(no, flags)
            return f"(?({group}){self.pattern(yes, flags)}{other})"
        if name in ("ASSERT", "ASSERT_NOT"):
            direction, sub = av
            kind = {(1, True): "=", (1, False): "!", (-1, True): "<=", (-1, False): "<!"}
            return f"(?{kind[direction, name == 'ASSERT']}{self.pattern(sub, flags)})"
        if name == "CATEGORY":
            return _single(_CATEGORY_SOURCE[str(av)], flags & _CASE_FLAGS, False)
        raise _Untranslatable(f"unsupported construct {name}")


def _char(code: int) -> str:
    return f"\\U{code:08x}"


def _single_source(name: str, av: Any) -> str:
    """An `re` pattern matching one character as the item does."""
    if name == "LITERAL":
        return _char(av)
    if name == "NOT_LITERAL":
        return f"[^{_char(av)}]"
    parts: list[str] = []
    for op, arg in av:
        kind = str(op)
        if kind == "NEGATE":
            parts.insert(0, "^")
        elif kind == "LITERAL":
            parts.append(_char(arg))
        elif kind == "RANGE":
            parts.append(f"{_char(arg[0])}-{_char(arg[1])}")
        elif kind == "CATEGORY":
            parts.append(_CATEGORY_SOURCE[str(arg)])
        else:
            raise _Untranslatable(f"unsupported class item {kind}")
    return "[" + "".join(parts) + "]" if parts else _NEVER


# -- sets of code points as sorted, disjoint, inclusive runs ----------------------------------------

Runs = list[tuple[int, int]]


@lru_cache(maxsize=1)
def _every_code_point() -> str:
    # The same string as "".join(map(chr, range(0x110000))) in a quarter of its 130 ms.
    return array.array("I", range(0x110000)).tobytes().decode("utf-32-le", "surrogatepass")


def _runs_of(pattern: Any) -> Runs:
    """The code points a one-character pattern (compiled, `re` or `regex`) matches, as runs."""
    return [(m.start(), m.end() - 1) for m in pattern.finditer(_every_code_point())]


def _size(runs: Runs) -> int:
    return sum(b - a + 1 for a, b in runs)


def _minus(x: Runs, y: Runs) -> Runs:
    out: Runs = []
    j = 0
    for a, b in x:
        while j < len(y) and y[j][1] < a:
            j += 1
        k = j
        while a <= b:
            if k < len(y) and y[k][0] <= b:
                if y[k][0] > a:
                    out.append((a, y[k][0] - 1))
                a = max(a, y[k][1] + 1)
                k += 1
            else:
                out.append((a, b))
                break
    return out


def _union(x: Runs, y: Runs) -> Runs:
    out: Runs = []
    for a, b in sorted(x + y):
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


@lru_cache(maxsize=1)
def _tables() -> tuple[dict[str, Runs], Runs]:
    """`regex`'s general categories, and the code points this Python's Unicode does not know."""
    import regex

    categories = {c: _runs_of(regex.compile(rf"\p{{{c}}}+")) for c in _CATEGORIES}
    unknown: Runs = []
    for code in range(0x110000):
        if unicodedata.category(chr(code)) == "Cn":
            if unknown and unknown[-1][1] == code - 1:
                unknown[-1] = (unknown[-1][0], code)
            else:
                unknown.append((code, code))
    return categories, unknown


def _class(runs: Runs) -> str:
    return "".join(_char(a) if a == b else f"{_char(a)}-{_char(b)}" for a, b in runs)


# -- the translations of single-character items, kept between processes -------------------------

#: Bumped when the file's layout changes; the translation code itself is keyed by its own hash.
_DISK_FORMAT = 1
#: A larger file is not read, and no more translations are added to it.
_DISK_MAX_BYTES = 4 << 20
_DISK_MAX_ITEMS = 4096
_disk_lock = threading.Lock()


@lru_cache(maxsize=1)
def _disk_file() -> str | None:
    """The JSON file of `_single`'s answers in the cache directory (mailrules/cachedir.py), named
    by everything they depend on: this module's code, mailrules', Python's and `regex`'s versions,
    and the Unicode database; None when there is no safe cache directory."""
    import regex

    directory = cache_directory()
    if directory is None:
        return None
    try:
        with open(__file__, "rb") as f:
            code = hashlib.sha256(f.read()).hexdigest()[:12]
    except OSError:
        code = "-"
    key = "-".join(
        (
            str(_DISK_FORMAT),
            __version__,
            code,
            f"py{sys.version_info[0]}.{sys.version_info[1]}",
            unicodedata.unidata_version,
            str(regex.__version__),
        )
    )
    return os.path.join(directory, f"userregex-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json")


@lru_cache(maxsize=1)
def _disk() -> dict[str, list[Any]]:
    """The translations an earlier process saved (empty when none, or the file is unusable)."""
    path = _disk_file()
    data = None if path is None else read_private(path, _DISK_MAX_BYTES)
    if data is None:
        return {}
    try:
        table = json.loads(data)
    except ValueError:
        return {}
    if not isinstance(table, dict):
        return {}
    return {
        k: v
        for k, v in table.items()
        if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and isinstance(v[1], bool)
    }


@lru_cache(maxsize=4096)
def _single(source: str, flags: int, literal: bool) -> str:
    """`_translate`, from the cache directory when an earlier process worked it out: scanning
    every code point costs 50-400 ms per distinct item, and each `mailrules run` is a new process.
    A miss is computed and the whole table written again (a new file renamed over the old)."""
    if source == _NEVER or (literal and not flags & re.IGNORECASE):
        return _translate(source, flags, literal)  # no scan: nothing worth keeping
    key = f"{source}\x00{flags}\x00{int(literal)}"
    with _disk_lock:
        known = _disk().get(key)
    if known is not None:
        return _Caseless(known[0]) if known[1] else known[0]
    out = _translate(source, flags, literal)
    path = _disk_file()
    with _disk_lock:
        table = _disk()
        if path is not None and len(table) < _DISK_MAX_ITEMS:
            table[key] = [str(out), isinstance(out, _Caseless)]
            write_atomic(path, json.dumps(table, ensure_ascii=True).encode("ascii"))
    return out


def _translate(source: str, flags: int, literal: bool) -> str:
    """A `regex` item matching exactly the code points `re` matches with `source` under `flags`.

    Code points this Python's Unicode database does not know (assigned in a later version, which
    `regex` may know) are the one freedom taken: `re`'s reading of them changes with the Python
    version anyway. A class of many runs (`\\w` has 734) is slow in `regex` (its sets are read
    member by member: `\\w+\\s+zzz` took 5 s on 1.4 MB), so it is written as the general
    categories it mostly is (`[\\p{Lu}\\p{Ll}...\\p{No}_]`) with the exceptions listed.
    """
    import regex

    if source == _NEVER:
        return _NEVER
    if literal and not flags & re.IGNORECASE:
        return regex.escape(chr(int(source[2:], 16)))
    runs = _runs_of(re.compile(f"(?:{source})+", flags))
    if literal:
        char = regex.escape(chr(int(source[2:], 16)))
        if _runs_of(regex.compile(f"(?i:{char})+")) == runs:
            return _Caseless(f"(?i:{char})")  # lets `regex` search for the literal string
    if not runs:
        return _NEVER
    if runs == [(0, 0x10FFFF)]:
        return _ANY_CHAR
    if len(runs) <= _FEW_RUNS:
        return "[" + _class(runs) + "]"
    categories, unknown = _tables()
    chosen = [
        c
        for c, members in categories.items()
        if _size(_minus(members, _minus(members, runs))) > _size(_minus(_minus(members, runs), unknown))
    ]
    base: Runs = []
    for c in chosen:
        base = _union(base, categories[c])
    wrong = _minus(_minus(base, runs), unknown)  # in the categories, not matched by `re`
    missing = _minus(_minus(runs, base), unknown)  # matched by `re`, not in the categories
    props = "".join(rf"\p{{{c}}}" for c in chosen)
    if not wrong:
        return "[" + props + _class(missing) + "]"
    if len(wrong) + len(missing) >= len(runs):
        return "[" + _class(runs) + "]"
    either = f"(?!{'[' + _class(wrong) + ']'})[{props}]" + (f"|[{_class(missing)}]" if missing else "")
    return f"(?:{either})"


def _word(flags: int) -> str:
    return _single(r"\w", flags & _CASE_FLAGS, False)


def _anchor(code: str, flags: int) -> str:
    multiline = bool(flags & re.MULTILINE)
    if code == "AT_BEGINNING":
        return r"(?<![^\n])" if multiline else r"\A"
    if code == "AT_END":
        return r"(?=\n|\Z)" if multiline else r"(?=\n?\Z)"
    if code == "AT_BEGINNING_STRING":
        return r"\A"
    if code == "AT_END_STRING":
        return r"\Z"
    w = _word(flags)
    if code == "AT_BOUNDARY":
        return f"(?:(?<={w})(?!{w})|(?<!{w})(?={w}))"
    if code == "AT_NON_BOUNDARY":
        # re (3.11) never matches \B in an empty string
        return f"(?:(?<={w})(?={w})|(?<!{w})(?!{w}))(?:(?<={_ANY_CHAR})|(?={_ANY_CHAR}))"
    raise _Untranslatable(f"unsupported anchor {code}")
