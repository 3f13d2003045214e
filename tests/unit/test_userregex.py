"""The language's regexes run by `regex` read every pattern as `re` does, and stop at the deadline."""

from __future__ import annotations

import re
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailrules.bounds import Deadline, EvaluationTimeout, deadline_scope
from mailrules.dsl.userregex import compile_user_regex, language_flags

FLAGS = ("", "c", "m", "s", "x", "cm", "cs", "ms")

# Patterns where `regex` on its own reads differently from `re` (\w, \s, \b, POSIX-looking sets,
# the Turkish i's), and the usual shapes of rules.
PATTERNS = (
    r"\w+",
    r"\W+",
    r"\bfoo\b",
    r"\Bx",
    r"\B",
    r"^a$",
    r"^\s*$",
    r"\s",
    r"\S+",
    r"\d+",
    r"\D",
    r"[[:alpha:]]+",
    r"[[:digit:]]",
    r"[^\W\d]+",
    r"[\w-]+",
    r"[^\s\S]",
    r"(a|b)*c",
    r"(?i)straße",
    r"(\d+)-(\d+)",
    r"(?P<x>a)(?P=x)",
    r"(a)?(?(1)b|c)",
    r"(?<=a)b",
    r"(?<!a)b",
    r"a{2,3}?",
    r"a++b",
    r"(?>a+)b",
    r"(?s:.)+",
    r".+",
    r"(?m)^\w+$",
    r"$",
    r"\Z",
    r"\A\w",
    r"[\d-]",
    r"(a*)*",
    r"(a|)*b",
    r"(?x) a b # c",
    r"invoice.*total",
    r"(?a)\w+",
    r"(?a:\b\w)",
    r"(?-i:Ab)c",
    "\u0130|\u0131",
    r"[a-z]+",
    r"[İı]",
    r"i",
    r"I",
    r"ſ",
    r"k",
    r"\N{KELVIN SIGN}",
    r"σ",
    r"ß",
    r"(.)\1",
    r"(?i)(.)\1",
    r"[\s\S]",
    r"\x1c\s",
    r"[^a]",
    r"(?:)",
    r"a|",
    r"()",
    r"(?=a)",
    r"\b\w+\b",
    r"^$",
    r"(?m)$",
    r"a{,3}",
    r"[^\n]+$",
    r"\d{3}\s?\d",
    r"(?i)[k-s]",
    r"(?i)[^k]",
    r"^\[([a-z0-9-]+)\]",
    r"order\s+#?(\d+)",
    r"\.pdf$",
    r"(?u)é",
    r"[à-ÿ]+",
)
STRINGS = (
    "",
    "a",
    "foo bar",
    "Foo",
    "straße STRASSE",
    "x²y ½",
    "e\u0301",
    "ab\n",
    "a\nb\n",
    "\x1c \t\x1f",
    "İstanbul ıi I",
    "KELVIN \u212a k K",
    "Σσς",
    "invoice: total 12",
    "aaa",
    "ab",
    "b",
    "c",
    "123-456 ٣٤٥",
    "ſ S s",
    "ǅ ǆ Ǆ",
    "aA",
    "\n",
    "\u00b2\u00b3",
    "\U0001d7d8",
    "_x_",
    "[lst-1] hi",
    "order #42",
    "report.PDF",
    "Ünïcödé ÀÿÞ",
    "日本語 テキスト",
    "\u2028x\u2029",
    "a_b-c",
)


def _outcome(m: re.Match[str] | object | None) -> tuple[tuple[int, int], tuple[str | None, ...]] | None:
    if m is None:
        return None
    return m.span(), m.groups()  # type: ignore[attr-defined]


def _same(pattern: str, flags: str, text: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # `[[` and `--` in sets warn under re
        try:
            expected = re.compile(pattern, language_flags(flags)).search(text)
        except re.error:
            assert compile_user_regex(pattern, flags) is None
            return
        compiled = compile_user_regex(pattern, flags)
    assert compiled is not None and compiled.compiled is not None, (pattern, flags)
    assert _outcome(compiled.search(text)) == _outcome(expected), (pattern, flags, text)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_regex_reads_every_pattern_as_re_does(pattern: str) -> None:
    for flags in FLAGS:
        for text in STRINGS:
            _same(pattern, flags, text)


_TOKENS = st.sampled_from(
    [
        "a",
        "b",
        "i",
        "k",
        "s",
        "ß",
        "é",
        "İ",
        "ı",
        ".",
        r"\w",
        r"\W",
        r"\d",
        r"\s",
        r"\b",
        r"\B",
        "^",
        "$",
        r"\A",
        r"\Z",
        "[a-k]",
        "[^b]",
        r"[\w.]",
        r"[^\d\s]",
        "(",
        ")",
        "(?:",
        "|",
        "*",
        "+",
        "?",
        "*?",
        "{1,2}",
        "(?=",
        "(?!",
        "(?<=a)",
        "(?i:",
        "(?-i:",
        "(?s:",
        "(?m:",
        "(?a:",
        r"\1",
        "*+",
    ]
)
_TEXT = st.text(alphabet="abikKsSßéÉİıI_ 1²\n\x1c.-", max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.lists(_TOKENS, max_size=8).map("".join), st.sampled_from(FLAGS), _TEXT)
def test_random_patterns_read_alike(pattern: str, flags: str, text: str) -> None:
    _same(pattern, flags, text)


def test_invalid_patterns_match_nothing() -> None:
    assert compile_user_regex("(", "") is None
    assert compile_user_regex(r"\p{L}", "") is None  # `regex` syntax that `re` does not accept


def test_a_catastrophic_pattern_stops_at_the_deadline() -> None:
    rx = compile_user_regex(r"(x+x+)+y", "")
    assert rx is not None
    with pytest.raises(EvaluationTimeout), deadline_scope(Deadline(0.05)):
        rx.search("x" * 50_000)
    # without a deadline it is the plain search
    assert rx.search("xxy") is not None


def test_an_expired_deadline_stops_before_searching() -> None:
    rx = compile_user_regex("a", "")
    assert rx is not None
    with pytest.raises(EvaluationTimeout), deadline_scope(Deadline(0.0)):
        rx.search("a")
