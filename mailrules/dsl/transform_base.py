"""Shared vocabulary and token helpers of the AST builder (spans, strings, templates, regexes)."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast, get_args

from lark import Token, Tree

from mailrules.dsl import ast
from mailrules.dsl.lexemes import (
    Problem,
    split_regex,
    split_template,
    unescape_string,
)
from mailrules.dsl.slots import new_span
from mailrules.source import Diagnostic, Span

#: The one-word fields, in the language's order (ast.FieldName); `envelope to|from` has a rule of its own.
FIELDS: tuple[str, ...] = tuple(f for f in get_args(ast.FieldName) if " " not in f)
FLAG_WORDS: dict[str, tuple[ast.SystemFlag, bool]] = {
    "seen": ("\\Seen", True),
    "read": ("\\Seen", True),
    "unseen": ("\\Seen", False),
    "unread": ("\\Seen", False),
    "flagged": ("\\Flagged", True),
    "unflagged": ("\\Flagged", False),
    "answered": ("\\Answered", True),
    "unanswered": ("\\Answered", False),
    "draft": ("\\Draft", True),
    "undraft": ("\\Draft", False),
    "deleted": ("\\Deleted", True),
    "undeleted": ("\\Deleted", False),
}
ACTION_WORDS = (
    "move",
    "copy",
    "archive",
    "delete",
    "mark",
    "flag",
    "unflag",
    "tag",
    "untag",
    "forward",
    "redirect",
    "stop",
)
_AGE_PLURALS: tuple[ast.AgeUnit, ...] = ("minutes", "hours", "days", "weeks", "months", "years")
AGE_UNITS: dict[str, ast.AgeUnit] = {u: p for p in _AGE_PLURALS for u in (p, p[:-1])}
SIZE_UNITS = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}
INTERVAL_UNITS = {"minute": "minutes", "minutes": "minutes", "hour": "hours", "hours": "hours"}
DAYS: dict[str, tuple[int, ...]] = {
    **{
        d: (i,)
        for i, d in enumerate(("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"))
    },
    **{d: (i,) for i, d in enumerate(("mon", "tue", "wed", "thu", "fri", "sat", "sun"))},
    "weekday": (0, 1, 2, 3, 4),
    "weekdays": (0, 1, 2, 3, 4),
    "weekend": (5, 6),
    "weekends": (5, 6),
}
GIVEN_FLAGS = {
    "seen": "\\Seen",
    "read": "\\Seen",
    "flagged": "\\Flagged",
    "answered": "\\Answered",
    "draft": "\\Draft",
    "deleted": "\\Deleted",
}


#: Deeper conditions are refused: every later pass (checks, planner, evaluation) recurses.
MAX_CONDITION_DEPTH = 100


def condition_depth(cond: ast.Condition) -> int:
    """Nesting depth of a condition (an atom is 1), computed without recursion."""
    deepest = 0
    stack: list[tuple[ast.Condition, int]] = [(cond, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(node, (ast.And, ast.Or)):
            stack.extend((item, depth + 1) for item in node.items)
        elif isinstance(node, ast.Not):
            stack.append((node.item, depth + 1))
    return deepest


def suggest(word: str, choices: tuple[str, ...] | list[str]) -> str:
    """`; did you mean 'x'?` when a choice is close to `word`, else ``."""
    close = difflib.get_close_matches(word.lower(), choices, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


@dataclass(frozen=True, slots=True)
class Clause:
    kind: str
    values: tuple[Any, ...]
    span: Span


class Keep:
    """`keep` in an expect list: no action."""

    def __init__(self, span: Span) -> None:
        self.span = span


class Position(Protocol):
    """Where a grammar rule's text is, as Lark's tree Meta (propagate_positions) gives it."""

    empty: bool
    line: int
    column: int
    end_line: int
    end_column: int


_Method = TypeVar("_Method", bound=Callable[..., Any])


def spanless(method: _Method) -> _Method:
    """Mark a builder method that never reads its span: building while parsing passes None."""
    setattr(method, "spanless", True)  # noqa: B010 - an attribute of the function object
    return method


def _first(child: Any, off: int) -> tuple[int, int] | None:
    """Where a child starts (absolute line, column), or None for a child without a position."""
    if isinstance(child, Token):
        return ((child.line or 1) + off, child.column or 1)
    span = getattr(child, "span", None)
    if isinstance(span, Span):
        return (span.line, span.column)
    if isinstance(child, list):
        for c in child:
            pos = _first(c, off)
            if pos is not None:
                return pos
    return None


def _last(child: Any, off: int) -> tuple[int, int] | None:
    """Where a child ends (absolute line, column), or None for a child without a position."""
    if isinstance(child, Token):
        return ((child.end_line or 1) + off, child.end_column or 1)
    span = getattr(child, "span", None)
    if isinstance(span, Span):
        return (span.end_line, span.end_column)
    if isinstance(child, list):
        for c in reversed(child):
            pos = _last(c, off)
            if pos is not None:
                return pos
    return None


class BuilderBase:
    """Token helpers; problems go to `diagnostics` and drop the rule or test they are in."""

    def __init__(self, path: str, line_offset: int = 0) -> None:
        self.reset(path, line_offset)

    def reset(self, path: str, line_offset: int = 0) -> None:
        """Start on another file or chunk (the parser keeps one builder for its callbacks)."""
        self.path = path
        self.off = line_offset
        self.diagnostics: list[Diagnostic] = []
        self._pending = 0  # errors since the last finished rule or test
        self.bool_nodes = 0  # And, Or and Not nodes built since the last `when` (bounds its depth)

    def transform(self, tree: Tree[Token]) -> Any:
        """Build bottom-up from a parse tree made with propagate_positions (tests compare it with
        building while parsing): each rule of the grammar is a method `name(span, children)`."""
        children = [self.transform(c) if isinstance(c, Tree) else c for c in tree.children]
        method = getattr(self, str(tree.data))
        return method(self.mspan(tree.meta), children)

    def span_at(self, children: list[Any]) -> Span:
        """What Lark's propagate_positions gives a rule (its first child's start to its last
        child's end), computed from the children already built; `mspan` of an empty Meta when
        no child has a position."""
        off = self.off
        if children:
            first, last = children[0], children[-1]
            if type(first) is Token and type(last) is Token:  # the lexer makes exactly Tokens
                return new_span(
                    self.path,
                    (first.line or 1) + off,
                    first.column or 1,
                    (last.end_line or 1) + off,
                    last.end_column or 1,
                )
        start = end = None
        for c in children:
            if type(c) is Token:
                start = ((c.line or 1) + off, c.column or 1)
                break
            span = getattr(c, "span", None)  # an AST node or a clause: the commonest other child
            start = (span.line, span.column) if type(span) is Span else _first(c, off)
            if start is not None:
                break
        for c in reversed(children):
            if type(c) is Token:
                end = ((c.end_line or 1) + off, c.end_column or 1)
                break
            span = getattr(c, "span", None)
            end = (span.end_line, span.end_column) if type(span) is Span else _last(c, off)
            if end is not None:
                break
        if start is None or end is None:
            return new_span(self.path, 1 + off, 1)
        return new_span(self.path, start[0], start[1], end[0], end[1])

    # ------------------------------------------------------------ helpers
    def span(self, tok: Token) -> Span:
        off = self.off
        return new_span(
            self.path, (tok.line or 1) + off, tok.column or 1, (tok.end_line or 1) + off, tok.end_column or 1
        )

    def mspan(self, meta: Position) -> Span:
        if meta.empty:
            return Span(self.path, 1 + self.off, 1)
        return Span(self.path, meta.line + self.off, meta.column, meta.end_line + self.off, meta.end_column)

    def error(self, span: Span, message: str) -> None:
        self.diagnostics.append(Diagnostic(span, message))
        self._pending += 1

    def sub_span(self, tok: Token, offset: int, length: int) -> Span:
        line, col = (tok.line or 1) + self.off, (tok.column or 1) + offset
        return new_span(self.path, line, col, line, col + max(1, length))

    def problems(self, tok: Token, problems: list[Problem]) -> None:
        for p in problems:
            self.error(self.sub_span(tok, p.offset, p.length), p.message)

    def string(self, tok: Token) -> str:
        if "\\" not in tok:  # most strings: the text between the quotes (unescape_string's own shortcut)
            return tok[1:-1]
        value, _, problems = unescape_string(str(tok))
        self.problems(tok, problems)
        return value

    def template(self, tok: Token, what: str = "mailbox name") -> ast.Template:
        if "\\" not in tok and "{" not in tok and "}" not in tok:  # a plain name: one literal part
            value = tok[1:-1]
            return ast.Template(value, (ast.TemplateText(value),) if value else (), self.span(tok))
        value, where, problems = unescape_string(str(tok))
        self.problems(tok, problems)
        pieces, tproblems = split_template(value, what)

        def at(i: int) -> int:
            return where[i] if i < len(where) else len(str(tok)) - 1

        self.problems(tok, [Problem(at(p.offset), p.length, p.message) for p in tproblems])
        parts: list[ast.TemplateText | ast.Placeholder] = []
        for piece in pieces:
            if piece.name is None:
                parts.append(ast.TemplateText(piece.text))
            else:
                name = cast(Any, piece.name)
                place = self.sub_span(tok, at(piece.offset), piece.length)
                parts.append(ast.Placeholder(name, piece.index, place, cast(Any, piece.filters)))
        return ast.Template(value, tuple(parts), self.span(tok))

    def regex(self, tok: Token) -> ast.Regex:
        pattern, flags, problems = split_regex(str(tok))
        self.problems(tok, problems)
        return ast.Regex(pattern, flags, self.span(tok))

    @staticmethod
    def tokens(children: list[Any]) -> list[Token]:
        return [c for c in children if isinstance(c, Token)]

    def finish_item(self, item: Any) -> Any:
        failed = self._pending > 0
        self._pending = 0
        return None if failed else item
