"""A fast contextual lexer for the grammar: one scan regex, keywords resolved by the parser state.

Lark's contextual lexer tries a regex union per parser state for every token; this one scans
with a single compiled pattern and decides keyword-or-word with a set lookup, which makes
parsing a large rule set about twice as fast. The token patterns come from the grammar's own
terminals (grammar/mailrules.lark stays the single source of truth); the decisions are the
ones the grammar's comments describe: keywords are whole, case-insensitive words, a word that
is not a keyword here is a WORD (unless reserved), and a word that fits nowhere is reported
as the keyword it is, so errors read "unexpected 'then'".
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, ClassVar

from lark.exceptions import UnexpectedCharacters
from lark.lexer import Lexer, LexerState, Token

_KEYWORD_PATTERN = re.compile(r"^([a-z]+)\(\?!")
_RESERVED_PATTERN = re.compile(r"\(\?!\(\?:([a-z|]+)\)")
_GENERIC_WORD = r"[A-Za-z][A-Za-z0-9_-]*"
# Scanned as one piece: a pattern per class of token, in the order they must be tried.
_CLASSES = ("WS", "COMMENT", "STRING", "REGEX", "DATETIME", "DATE", "TIME", "NUMBER", "CMP", "WORD", "PUNCT")


class FastLexer(Lexer):
    """Lark custom lexer (interface 2): `lex(lexer_state, parser_state)` yields Tokens."""

    __future_interface__: ClassVar[int] = 2

    def __init__(self, lexer_conf: Any) -> None:
        by_name = {t.name: t for t in lexer_conf.terminals}
        self.keywords: dict[str, str] = {}
        self.punct: dict[str, str] = {}
        for term in lexer_conf.terminals:
            pattern = term.pattern
            if pattern.type == "str":
                self.punct[pattern.value] = term.name
            elif term.priority == 2:
                m = _KEYWORD_PATTERN.match(pattern.value)
                if m:
                    self.keywords[m.group(1)] = term.name
        reserved = _RESERVED_PATTERN.search(by_name["WORD"].pattern.value)
        self.reserved = frozenset(reserved.group(1).split("|")) if reserved else frozenset()

        def source(name: str) -> str:
            term = by_name[name]
            flags = "".join(term.pattern.flags)
            return f"(?{flags}:{term.pattern.value})" if flags else term.pattern.value

        puncts = sorted((p for p in self.punct), key=len, reverse=True)
        pieces = {
            "WS": source("WS"),
            "COMMENT": source("COMMENT"),
            "STRING": source("STRING"),
            "REGEX": source("REGEX"),
            "DATETIME": source("DATETIME"),
            "DATE": source("DATE"),
            "TIME": source("TIME"),
            "NUMBER": source("NUMBER"),
            "CMP": source("CMP"),
            "WORD": _GENERIC_WORD,
            "PUNCT": "|".join(re.escape(p) for p in puncts),
        }
        self.scanner = re.compile("|".join(f"(?P<{c}>{pieces[c]})" for c in _CLASSES))
        self.terminal_names = set(by_name)

    def lex(self, lexer_state: LexerState, parser_state: Any) -> Iterator[Token]:
        text_slice: Any = lexer_state.text
        text: str = text_slice.text
        pos: int = text_slice.start
        end: int = text_slice.end
        states = parser_state.parse_conf.parse_table.states
        keywords, reserved, punct = self.keywords, self.reserved, self.punct
        match = self.scanner.match
        line, line_start = 1, 0
        while pos < end:
            m = match(text, pos, end)
            if m is None:
                accepts = set(states[parser_state.position])
                raise UnexpectedCharacters(  # type: ignore[no-untyped-call]
                    text, pos, line, pos - line_start + 1, allowed=accepts, state=parser_state
                )
            kind = m.lastgroup or ""
            value = m.group()
            start, pos = pos, m.end()
            if kind == "WS" or kind == "COMMENT":
                newlines = value.count("\n")
                if newlines:
                    line += newlines
                    line_start = start + value.rindex("\n") + 1
                continue
            accepts = states[parser_state.position]
            if kind == "WORD":
                low = value.lower()
                keyword = keywords.get(low)
                if keyword is not None and keyword in accepts:
                    kind = keyword
                elif "WORD" in accepts and low not in reserved:
                    kind = "WORD"
                elif keyword is not None:
                    kind = keyword
            elif kind == "NUMBER" and "." not in value and ("INT" in accepts or "NUMBER" not in accepts):
                kind = "INT"
            elif kind == "PUNCT":
                kind = punct[value]
            col = start - line_start + 1
            tok = Token(kind, value, start, line, col, line, col + len(value), pos)
            lexer_state.last_token = tok
            yield tok
