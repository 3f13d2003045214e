"""A fast contextual lexer for the grammar: one scan regex, keywords resolved by the parser state.

Lark's contextual lexer tries a regex union per parser state for every token; this one scans
with a single compiled pattern and decides keyword-or-word with a set lookup, which makes
parsing a large rule set about twice as fast. The token patterns come from the grammar's own
terminals (grammar/mailrules.lark stays the single source of truth); the decisions are the
ones the grammar's comments describe: keywords are whole, case-insensitive words, a word that
is not a keyword here is a WORD (unless reserved), and a word that fits nowhere is reported
as the keyword it is, so errors read "unexpected 'then'".

Each match of the scan pattern is the ignored text (white space, comments) before a token and
the token itself, found by `finditer` (one C-level step per token); the line is counted over
the skipped text only, and the parser state is read only for a word or a number.
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
#: Skipped before each token, in this order (the grammar's %ignore terminals).
_IGNORED = ("WS", "COMMENT")
#: Scanned as one piece: a pattern per class of token, in the order they must be tried.
_CLASSES = ("WORD", "STRING", "PUNCT", "DATETIME", "DATE", "TIME", "NUMBER", "CMP", "REGEX")

_new_str = str.__new__


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
        pieces = {name: source(name) for name in _CLASSES if name not in ("WORD", "PUNCT")}
        pieces["WORD"] = _GENERIC_WORD
        pieces["PUNCT"] = "|".join(re.escape(p) for p in puncts)
        # Possessive: white space and comments are never given back to find a token inside them.
        skip = "(?:" + "|".join(f"(?:{source(name)})" for name in _IGNORED) + ")*+"
        tokens = "|".join(f"(?P<{c}>{pieces[c]})" for c in _CLASSES)
        # The token is optional, so the pattern matches everywhere: at the end of the text, or
        # at a character no token starts with, the match is the skipped text alone.
        self.scanner = re.compile(f"{skip}(?:{tokens})?")
        #: The same scan with two groups, the skipped text and the token (for re.findall: no
        #: Match object per token; dsl/lalr.py tells the token's class from its first character).
        plain = "|".join(f"(?:{pieces[c]})" for c in _CLASSES)
        self.plain_scanner = re.compile(f"({skip})({plain})?")
        self.terminal_names = set(by_name)

    def lex(self, lexer_state: LexerState, parser_state: Any) -> Iterator[Token]:
        text_slice: Any = lexer_state.text
        text: str = text_slice.text
        end: int = text_slice.end
        states = parser_state.parse_conf.parse_table.states
        stack: list[Any] = parser_state.state_stack  # changed in place by the parser
        keywords, reserved, punct = self.keywords, self.reserved, self.punct
        count, rfind = text.count, text.rfind
        line, line_start, pos = 1, 0, text_slice.start
        tok: Token | None = None
        for m in self.scanner.finditer(text, pos, end):
            kind = m.lastgroup
            if kind is None:  # nothing but white space or comments: the end, or a stray character
                stop = m.end()
                if stop >= end:
                    break
                newlines = count("\n", pos, stop)
                if newlines:
                    line += newlines
                    line_start = rfind("\n", pos, stop) + 1
                if tok is not None:
                    lexer_state.last_token = tok
                accepts = set(states[stack[-1]])
                raise UnexpectedCharacters(  # type: ignore[no-untyped-call]
                    text, stop, line, stop - line_start + 1, allowed=accepts, state=parser_state
                )
            value = m.group(kind)
            start = m.start(kind)
            newlines = count("\n", pos, start)
            if newlines:
                line += newlines
                line_start = rfind("\n", pos, start) + 1
            pos = m.end()
            if kind == "WORD":
                accepts = states[stack[-1]]
                low = value.lower()
                keyword = keywords.get(low)
                if keyword is not None and keyword in accepts:
                    kind = keyword
                elif "WORD" in accepts and low not in reserved:
                    pass
                elif keyword is not None:
                    kind = keyword
            elif kind == "PUNCT":
                kind = punct[value]
            elif kind == "NUMBER" and "." not in value:
                accepts = states[stack[-1]]
                if "INT" in accepts or "NUMBER" not in accepts:
                    kind = "INT"
            # Token(kind, value, start, line, col, line, end col, pos), without Token.__new__'s
            # two Python-level calls: this runs once per token of every rule file.
            tok = _new_str(Token, value)
            tok.type = kind
            tok.start_pos = start
            tok.value = value
            tok.line = tok.end_line = line
            tok.column = col = start - line_start + 1
            tok.end_column = col + len(value)
            tok.end_pos = pos
            yield tok
        if tok is not None:
            lexer_state.last_token = tok
