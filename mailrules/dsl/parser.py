"""parse_text(): rule-file text -> RuleFile + diagnostics, recovering at each top-level rule/test."""

from __future__ import annotations

import functools
import hashlib
import itertools
import os
import re
import threading
import typing
from collections.abc import Callable
from typing import Any, cast

from lark import Lark, Token
from lark.exceptions import LarkError, UnexpectedInput, UnexpectedToken

from mailrules.cachedir import cache_directory
from mailrules.dsl import ast
from mailrules.dsl.codekey import grammar_text
from mailrules.dsl.diagnostics import syntax_diagnostic
from mailrules.dsl.gcpause import gc_paused
from mailrules.dsl.lalr import FusedParser
from mailrules.dsl.lexer import FastLexer
from mailrules.dsl.transform import AstBuilder
from mailrules.dsl.transform_base import Keep
from mailrules.source import Diagnostic, Span

__all__ = ["build_parser", "gc_paused", "get_parser", "grammar_text", "parse_text", "tables_cache_file"]

_ACTIONS: tuple[type, ...] = typing.get_args(ast.Action)

#: A line whose first word is `rule`, `test` or `group` starts a new top-level item (used for
#: recovery); the rules inside a group belong to the group's item (`_chunks`).
_ITEM_START = re.compile(r"^[ \t\ufeff]*(?:rule|test|group)(?=[\s\"]|$)", re.IGNORECASE | re.MULTILINE)
_GROUP_START = re.compile(r"[ \t\ufeff]*group(?=[\s\"]|$)", re.IGNORECASE)
#: What a brace count skips: strings, comments and regular expressions (which may hold braces).
_NOT_BRACES = re.compile(r'"(?:[^"\\\n]|\\[^\n])*"|#[^\n]*|/(?:[^/\\\n]|\\[^\n])+/')


class _Callbacks:
    """Lark's inline transformer: each grammar rule calls the parser's AstBuilder as it reduces.

    Building the AST while parsing (no parse tree, no second pass) halves the time of loading
    a large rule set. Positions come from the children (BuilderBase.span_at), because Lark
    gives no Meta to inline callbacks. Lark asks for each callback once, when the parser is
    built, so the builder is one object, `reset` for each chunk: the parser is shared, so one
    parse runs at a time (`lock`). A whole file without a syntax error is read by `fused`
    (dsl/lalr.py), which calls the same builder methods with the same children and spans.
    """

    def __init__(self) -> None:
        self.builder = AstBuilder("", 0)
        self.lock = threading.Lock()
        #: The loop of our own over the same tables and callbacks, for text without a syntax error.
        self.fused: FusedParser | None = None

    def method(self, name: str) -> tuple[Callable[[Span | None, list[Any]], Any], bool] | None:
        """The builder's method for a grammar rule and whether it reads no span, or None."""
        if name.startswith("_") or not callable(getattr(AstBuilder, name, None)):
            return None
        method = getattr(self.builder, str(name))
        return method, bool(getattr(method, "spanless", False))

    def __getattr__(self, name: str) -> Callable[[list[Any]], Any]:
        found = self.method(name)
        if found is None:
            raise AttributeError(name)
        method, spanless = found
        if spanless:
            return functools.partial(method, None)
        span_at = self.builder.span_at

        def call(children: list[Any]) -> Any:
            return method(span_at(children), children)

        return call


def tables_cache_file(grammar: str) -> str | None:
    """Where Lark may keep the grammar's parser tables: a file in the cache directory
    (mailrules/cachedir.py: `$XDG_CACHE_HOME/mailrules`), or None to build them in memory.

    Building the LALR tables takes ~40 ms of every process start, loading them ~6 ms. Lark
    writes the tables with pickle, and loading a pickle runs code, so the directory must be
    this user's own and writable by nobody else (cache_directory checks it). Lark checks the
    grammar, its options and its own version inside the file and builds afresh on any mismatch
    or unreadable file; a failed write is ignored (Lark's logger, silent by default).
    """
    directory = cache_directory()
    if directory is None:
        return None
    return os.path.join(directory, f"grammar-{grammar_digest(grammar)}.lark-tables")


def grammar_digest(grammar: str) -> str:
    """16 hex digits of the grammar's SHA-256: part of every cache key that depends on it."""
    return hashlib.sha256(grammar.encode("utf-8")).hexdigest()[:16]


def _plain_rule_names(parser: Lark) -> None:
    """Make each grammar rule's name the very string object that keys the parse table.

    Lark names rules with Tokens (a str subclass with its own `__eq__`); after every reduction
    it looks the rule's name up in a table keyed by plain strings, so each of those lookups
    calls `Token.__eq__` in Python. Equal strings hash the same, so nothing else changes. A
    Lark whose objects are laid out differently is left as it is.
    """
    table = getattr(getattr(getattr(parser.parser, "parser", None), "parser", None), "parse_table", None)
    states = getattr(table, "states", None)
    if not isinstance(states, dict):
        return
    keys: dict[str, str] = {key: key for actions in states.values() for key in actions}
    for actions in states.values():
        for _, arg in actions.values():
            origin: Any = getattr(arg, "origin", None)
            name = getattr(origin, "name", None)
            if isinstance(name, str) and name in keys:
                origin.name = keys[name]


def build_parser(grammar: str, cache_file: str | None) -> tuple[Lark, _Callbacks]:
    """A new LALR parser and its callbacks, with the tables from/to `cache_file` when given."""
    callbacks = _Callbacks()
    options: dict[str, Any] = {"cache": cache_file} if cache_file else {}
    parser = Lark(grammar, parser="lalr", lexer=FastLexer, transformer=callbacks, **options)
    _plain_rule_names(parser)
    callbacks.fused = FusedParser.build(parser, callbacks.builder, callbacks.method)
    return parser, callbacks


@functools.cache
def _parser_and_callbacks() -> tuple[Lark, _Callbacks]:
    grammar = grammar_text()
    return build_parser(grammar, tables_cache_file(grammar))


def get_parser() -> Lark:
    """The LALR parser (built once per process); `parse()` returns the list of AST items."""
    return _parser_and_callbacks()[0]


def _previous_type(err: UnexpectedInput) -> str | None:
    """The type of the last token before the error (to name what a WORD would be there)."""
    ip = getattr(err, "interactive_parser", None)
    if ip is None:
        return None
    stack: list[Any] = list(ip.parser_state.value_stack)
    if len(stack) >= 2 and isinstance(stack[-1], Token) and stack[-1].type in ("COMMA", "SEMI"):
        before = stack[-2]
        if isinstance(before, (*_ACTIONS, Keep)) or before is None:
            return "SEMI"  # a separator in an action list: an action follows
        if isinstance(before, Token) and before.type == "WORD":
            return "DAY_LIST"
        if isinstance(before, str):
            return "FLAGS"
    while stack:
        top = stack[-1]
        if isinstance(top, Token):
            return top.type
        if isinstance(top, (*_ACTIONS, Keep)):
            return "WORD"  # after an action comes another action
        if isinstance(top, list) and top:
            stack = list(top)
        else:
            stack.pop()
    return None


def _parse_chunk(text: str, path: str, line_offset: int) -> tuple[list[Any], list[Diagnostic], bool]:
    """Items, diagnostics, and whether there was a syntax error."""
    parser, callbacks = _parser_and_callbacks()
    builder = callbacks.builder
    with callbacks.lock:  # the builder's diagnostics are read before another parse resets it
        builder.reset(path, line_offset)
        try:
            items: list[Any] = cast(list[Any], parser.parse(text))
        except UnexpectedInput as err:
            prev = _previous_type(err) if isinstance(err, UnexpectedToken) else None
            return [], [syntax_diagnostic(err, text, path, line_offset, prev)], True
        except LarkError:  # pragma: no cover - defensive: never show a Lark error to a user
            diag = Diagnostic(Span(path, line_offset + 1, 1), "cannot parse this part of the file")
            return [], [diag], True
        except Exception as err:  # pragma: no cover - a bug of ours must still not show a traceback
            return (
                [],
                [
                    *builder.diagnostics,
                    Diagnostic(
                        Span(path, line_offset + 1, 1),
                        f"cannot read this part of the file (internal error: {type(err).__name__})",
                    ),
                ],
                False,
            )
        return items, builder.diagnostics, False


def _chunks(text: str) -> list[tuple[str, int]]:
    """Split at lines starting with `rule`/`test`: (chunk text, number of lines before it)."""
    starts = [m.start() for m in _ITEM_START.finditer(text)]
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    starts = _whole_groups(text, starts)
    starts.append(len(text))
    out = []
    line = 0
    for a, b in itertools.pairwise(starts):
        out.append((text[a:b], line))
        line += text.count("\n", a, b)
    return out


def _whole_groups(text: str, starts: list[int]) -> list[int]:
    """Item starts without those inside a group: a group's item runs to its closing brace (counted
    outside strings, comments and regular expressions), so its rules stay in it."""
    out: list[int] = []
    end = -1
    for start in starts:
        if start < end:
            continue
        out.append(start)
        if _GROUP_START.match(text, start):
            depth, pos, opened = 0, start, False
            for m in re.finditer(r"[{}]|" + _NOT_BRACES.pattern, text[start:]):
                token = m.group(0)
                if token in "{}":
                    depth += 1 if token == "{" else -1
                    opened = True
                    if depth <= 0:
                        pos = start + m.end()
                        break
            else:
                pos = len(text)
            end = pos if opened else -1
    return out


def _parse_whole(text: str, path: str) -> tuple[list[Any], list[Diagnostic]] | None:
    """Items and diagnostics of the whole text in one parse, or None on any error at all."""
    parser, callbacks = _parser_and_callbacks()
    builder = callbacks.builder
    with callbacks.lock:
        builder.reset(path, 0)
        try:
            if callbacks.fused is not None:
                got = callbacks.fused.parse(text)
                if got is None:  # a syntax error: parse_text reads it item by item
                    return None
                items: list[Any] = cast(list[Any], got)
            else:
                items = cast(list[Any], parser.parse(text))
        except Exception:  # a syntax error (or a bug): parse_text reads it item by item
            return None
        return items, builder.diagnostics


def parse_text(text: str, path: str) -> tuple[ast.RuleFile | None, list[Diagnostic]]:
    """Parse one rule file. Returns the items that parsed cleanly and every diagnostic found.

    A file with a syntax error is read item by item (a line starting with `rule` or `test`
    starts an item), so one syntax error per rule or test is reported and the other items still
    parse. A file without one is parsed in one go, which gives the same items and diagnostics
    (in valid text such a line can only start an item) and spares a parse per item.
    """
    with gc_paused():
        whole = _parse_whole(text, path)
        if whole is not None:
            items, diags = whole
        else:
            items, diags = [], []
            for chunk, offset in _chunks(text):
                got, chunk_diags, _ = _parse_chunk(chunk, path, offset)
                items.extend(got)
                diags.extend(chunk_diags)
    rules = tuple(i for i in items if isinstance(i, ast.Rule))
    tests = tuple(i for i in items if isinstance(i, ast.TestBlock))
    diags.sort(key=lambda d: (d.span.line, d.span.column))
    return ast.RuleFile(path, rules, tests), diags
