"""Parser robustness: random bytes and token soup never raise and give only clean user diagnostics."""

from __future__ import annotations

import functools
import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lark import Lark
from lark.exceptions import UnexpectedInput

from mailrules.dsl import ast
from mailrules.dsl.check import check_rule_set
from mailrules.dsl.loader import decode
from mailrules.dsl.parser import _parse_chunk, grammar_text, parse_text
from mailrules.dsl.transform import AstBuilder
from mailrules.source import render_all

INTERNAL = (
    "__ANON",
    "ESCAPED_STRING",
    "Token(",
    "Tree(",
    "lark",
    "Lark",
    "Traceback",
    "$END",
    "RBRACE",
    "LBRACE",
    "WORD",
    "STRING",
    "REGEX",
    "NUMBER",
)
QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
HEAD = re.compile(r"^f\.rules:\d+:\d+: (error|warning): .+")

TOKENS = [
    "rule",
    "test",
    "when",
    "then",
    "and",
    "or",
    "not",
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    ",",
    ";",
    "in",
    "for",
    "account",
    "every",
    "5",
    "minutes",
    "day",
    "monday",
    "at",
    "03:00",
    "25:99",
    "cron",
    "manually",
    "limit",
    "0",
    "from",
    "subject",
    "form",
    "contains",
    "is",
    "starts",
    "with",
    "ends",
    "matches",
    "any",
    "domain",
    "header",
    "exists",
    "size",
    ">",
    "<=",
    "1",
    "MB",
    "older",
    "than",
    "days",
    "received",
    "before",
    "2020-01-01",
    "2020-13-45",
    "seen",
    "unseen",
    "tagged",
    "has",
    "attachment",
    "name",
    "move",
    "to",
    "copy",
    "archive",
    "delete",
    "permanently",
    "mark",
    "read",
    "flag",
    "tag",
    "forward",
    "redirect",
    "stop",
    "keep",
    "given",
    "flags",
    "expect",
    "now",
    '"x"',
    '"a\\"b"',
    '"{match.3}"',
    '"unterminated',
    "/re/",
    "/(/",
    "/a\\/b/i",
    "/open",
    "# comment",
    "\n",
    " ",
    "\t",
    "\\",
    "\x00",
    "é",
    "\ufeff",
    "@",
    "*",
    "%",
]


def check_clean(text: str) -> None:
    rule_file, diags = parse_text(text, "f.rules")
    if rule_file is not None:
        diags = diags + check_rule_set(ast.RuleSet((rule_file,), {"f.rules": text}))
    rendered = render_all(diags, {"f.rules": text})
    for d in diags:
        first = d.render().splitlines()[0]
        assert HEAD.match(first), first
        assert "internal error" not in d.message, d.message
        ours = QUOTED.sub("", d.message)  # the user's own text is quoted and may say anything
        for word in INTERNAL:
            assert word not in ours, d.message
    assert "Traceback" not in rendered


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_random_bytes_never_raise(data: bytes) -> None:
    text, _ = decode(data, "f.rules")
    check_clean(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(TOKENS), max_size=40))
def test_token_soup_never_raises(tokens: list[str]) -> None:
    check_clean(" ".join(tokens))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(TOKENS), max_size=25))
def test_soup_inside_a_rule_never_raises(tokens: list[str]) -> None:
    check_clean('rule "r" { when ' + " ".join(tokens) + ' }\nrule "s" { then ' + " ".join(tokens) + " }")


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=120))
def test_random_text_never_raises(text: str) -> None:
    check_clean(text)


@functools.cache
def _reference_parser() -> Lark:
    """Lark's own contextual lexer, parse tree and propagated positions over the same grammar."""
    return Lark(grammar_text(), parser="lalr", lexer="contextual", propagate_positions=True)


def _reference(text: str) -> object:
    try:
        tree = _reference_parser().parse(text)
    except UnexpectedInput:
        return ("error",)
    builder = AstBuilder("f.rules")
    return ("ok", tuple(builder.transform(tree)), [d.message for d in builder.diagnostics])


def _fast(text: str) -> object:
    items, diags, failed = _parse_chunk(text, "f.rules", 0)
    return ("error",) if failed else ("ok", tuple(items), [d.message for d in diags])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(TOKENS), max_size=30))
def test_fast_path_agrees_with_lark_tree_and_positions(tokens: list[str]) -> None:
    """The fast lexer + inline AST building give the same AST, spans included, as plain Lark."""
    text = 'rule "r" { when ' + " ".join(tokens) + " }"
    assert _fast(text) == _reference(text)


def test_fast_path_agrees_on_the_spec_examples() -> None:
    path = Path(__file__).resolve().parents[1] / "fixtures" / "dsl" / "ok" / "spec_examples.rules"
    text = path.read_text(encoding="utf-8")
    fast = _fast(text)
    assert fast[0] == "ok" and fast == _reference(text)  # type: ignore[index]
