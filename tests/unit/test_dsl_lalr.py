"""The fused LALR loop (dsl/lalr.py) gives what Lark's own loop gives, or None at a syntax error."""

from __future__ import annotations

import functools
import importlib
import re
import sys
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lark import Lark

from mailrules.dsl import parser
from mailrules.dsl.lalr import FusedParser
from mailrules.dsl.parser import build_parser, grammar_text

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
#: The bench's rule set (bench/compile_bench.py), every one of its templates.
generate: Any = importlib.import_module("compile_bench").generate

RULE_FILES = sorted([*ROOT.glob("tests/fixtures/dsl/*/*.rules"), *ROOT.glob("rules.d/*.rules")])

#: Items with every kind of construct and semantic errors among them (a syntax error is elsewhere).
ITEMS = [
    'rule "a" { when from contains "x" then move to "X" }',
    'rule "b" in "INBOX", "Lists" every 10 minutes {\n  when subject matches /^\\[l\\] (.*)/\n'
    '  then move to "Lists/{match.1}"; mark read\n}',
    'Rule "c" for account "work", "home" { when (size > 2 KB or has attachment) and not seen then archive }',
    'rule "d" limit 5 { when header "X-Tag" is any ["a", "b",] then tag "$L", flag }',
    'rule "e" { when form contains "x" then stop }',
    'rule "f" { when older than 3 fortnights then delete permanently }',
    'rule "g" every monday, friday at 09:00 { then mark not important }',
    'rule "h" { when subject contains "bad \\q escape" then move to "A/{nope}" }',
    'rule "i" cron "0 * * * *" {\n  when from user is "bob" or to detail matches any [/a/, /b\\/c/i]\n'
    '  then copy to "C" }',
    'rule "j" on flag change { when flagged and thread tagged "$T" then unflag }',
    'rule "k" { when envelope to domain is any ["a.org", "b.org"] and received before 2024-01-01\n'
    '  then redirect "x@y.org" }',
    'rule "l" { when gmail search "has:attachment" or category is any ["social", "updates"]\n'
    '  then archive to "A" }',
    'rule "m" { when attachment name matches /\\.pdf$/ and size >= 1.5 MB then forward "x@y.org" }',
    'group "g" every 1 hour {\n  rule "n" { when unseen then mark read }\n  rule "o" { then stop }\n}',
    'test "t" { given "m.eml" flags seen, "$Kw" received 2024-05-01 12:00 in "Lists" expect keep }',
    'TEST "u" { given "m.eml" now 2024-13-01T25:00 gmail category social search "x" changed\n'
    '  expect move to "X" }',
    'rule "v" { when sent after 2024-02-30 then tag "lists/{list|lower}" }',
    "# a comment line",
    "",
]


@functools.cache
def _parsers() -> tuple[Lark, Any]:
    lark, callbacks = build_parser(grammar_text(), None)
    assert callbacks.fused is not None
    return lark, callbacks


def _both(text: str) -> tuple[Any, Any]:
    """(Lark's items and diagnostics, or its exception type; the fused loop's, or None)."""
    lark, callbacks = _parsers()
    builder = callbacks.builder
    builder.reset("f.rules", 0)
    try:
        by_lark: Any = (cast(list[Any], lark.parse(text)), list(builder.diagnostics))
    except Exception as err:
        by_lark = type(err)
    builder.reset("f.rules", 0)
    items = callbacks.fused.parse(text)
    return by_lark, None if items is None else (items, list(builder.diagnostics))


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_rule_files_as_lark_parses_them(path: Path) -> None:
    by_lark, fused = _both(path.read_text(encoding="utf-8"))
    if isinstance(by_lark, type):  # a syntax error: the caller parses with Lark
        assert fused is None
    else:
        assert fused == by_lark


def test_the_bench_rule_set_as_lark_parses_it() -> None:
    by_lark, fused = _both(generate(400))
    assert not isinstance(by_lark, type) and len(by_lark[0]) == 400
    assert fused == by_lark


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(ITEMS), max_size=8), st.sampled_from(["\n", " \n ", "\n\n# c\n\t"]))
def test_items_as_lark_parses_them(items: list[str], sep: str) -> None:
    by_lark, fused = _both(sep.join(items))
    assert not isinstance(by_lark, type)
    assert fused == by_lark


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(ITEMS[:17]), st.data())
def test_a_damaged_item_is_none_or_as_lark_parses_it(item: str, data: st.DataObject) -> None:
    """Any cut or inserted character: a syntax error is None (Lark raises), anything else equal."""
    at = data.draw(st.integers(0, len(item)))
    insert = data.draw(st.sampled_from(["", "{", "}", '"', "/", "(", ",", ";", "then", " rule ", "@", "\n"]))
    cut = data.draw(st.integers(0, 3))
    by_lark, fused = _both(item[:at] + insert + item[at + cut :])
    if isinstance(by_lark, type):
        assert fused is None
    else:
        assert fused == by_lark


def test_parse_text_takes_the_fused_loop_for_a_whole_file(monkeypatch: pytest.MonkeyPatch) -> None:
    _, callbacks = parser._parser_and_callbacks()
    assert callbacks.fused is not None
    calls: list[str] = []
    real = callbacks.fused.parse

    def spy(text: str) -> Any:
        calls.append(text)
        return real(text)

    monkeypatch.setattr(callbacks.fused, "parse", spy)
    rule_file, diags = parser.parse_text(ITEMS[0], "f.rules")
    assert calls == [ITEMS[0]] and rule_file is not None and len(rule_file.rules) == 1 and not diags


def test_a_grammar_with_placeholders_is_left_to_lark() -> None:
    """`[x]` gives None children the loop does not reproduce: build says so, Lark parses."""
    grammar = grammar_text().replace("limit_clause: LIMIT INT", "limit_clause: LIMIT [INT]")
    lark, callbacks = build_parser(grammar, None)
    assert callbacks.fused is None
    assert FusedParser.build(lark, callbacks.builder, callbacks.method) is None


def test_a_rule_without_a_method_is_left_to_lark() -> None:
    """Lark would make a Tree for a grammar rule the builder has no method for."""
    lark, callbacks = _parsers()

    def no_limit(name: str) -> Any:
        return None if name == "limit_clause" else callbacks.method(name)

    assert FusedParser.build(lark, callbacks.builder, no_limit) is None


# The language of STRING and REGEX as the grammar first wrote them (one alternation per
# character); the grammar now spells them as runs between escapes, which scan faster.
_OLD_STRING = r'"(?:[^"\\\n]|\\[^\n])*"'
_OLD_REGEX = r"(?i:\/(?:[^\/\\\n]|\\[^\n])+\/[a-z]*)"


def _terminal(name: str) -> re.Pattern[str]:
    lark, _ = _parsers()
    term = next(t for t in lark.terminals if t.name == name)
    flags = "".join(term.pattern.flags)
    return re.compile(f"(?{flags}:{term.pattern.value})" if flags else term.pattern.value)


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet='"/\\\nab{}iZ ', max_size=12))
def test_string_and_regex_terminals_match_what_they_matched(text: str) -> None:
    for name, old in (("STRING", re.compile(_OLD_STRING)), ("REGEX", re.compile(_OLD_REGEX))):
        new = _terminal(name)
        got, want = new.match(text), old.match(text)
        assert (got and got.group(0)) == (want and want.group(0)), name
