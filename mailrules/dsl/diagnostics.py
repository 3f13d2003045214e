"""Lark syntax errors -> user diagnostics in user words (no terminal names, no Lark internals)."""

from __future__ import annotations

import difflib

from lark import Token
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from mailrules.source import Diagnostic, Span

_KEYWORDS = [
    "RULE",
    "TEST",
    "GROUP",
    "IN",
    "FOR",
    "ACCOUNT",
    "LIMIT",
    "ON",
    "ARRIVAL",
    "EVERY",
    "AT",
    "CRON",
    "MANUALLY",
    "WHEN",
    "THEN",
    "TO",
    "PERMANENTLY",
    "READ",
    "UNREAD",
    "IMPORTANT",
    "OR",
    "AND",
    "NOT",
    "MATCHES",
    "ANY",
    "DOMAIN",
    "USER",
    "DETAIL",
    "LOCALPART",
    "ENVELOPE",
    "GMAIL",
    "SEARCH",
    "CATEGORY",
    "THREAD",
    "IS",
    "CONTAINS",
    "STARTS",
    "ENDS",
    "WITH",
    "HEADER",
    "EXISTS",
    "SIZE",
    "OLDER",
    "NEWER",
    "THAN",
    "RECEIVED",
    "SENT",
    "BEFORE",
    "AFTER",
    "TAGGED",
    "HAS",
    "ATTACHMENT",
    "NAME",
    "GIVEN",
    "FLAGS",
    "NOW",
    "EXPECT",
]

_PUNCT = {
    "LBRACE": "{",
    "RBRACE": "}",
    "LPAR": "(",
    "RPAR": ")",
    "LSQB": "[",
    "RSQB": "]",
    "COMMA": ",",
    "SEMI": ";",
}

_PHRASES = {
    "STRING": 'a string ("...")',
    "REGEX": "a regular expression (/.../)",
    "INT": "a whole number",
    "NUMBER": "a number",
    "DATE": "a date (YYYY-MM-DD)",
    "DATETIME": "a date and time (YYYY-MM-DDTHH:MM)",
    "TIME": "a time (HH:MM)",
    "CMP": "a comparison (>, <, >=, <=)",
    "$END": "the end of the file",
}

_CONDITION_START = {
    "NOT",
    "LPAR",
    "HEADER",
    "SIZE",
    "OLDER",
    "NEWER",
    "RECEIVED",
    "SENT",
    "TAGGED",
    "HAS",
    "WORD",
}
#: Tokens that may also start a condition, named by "a condition" when the others are expected.
_MORE_CONDITION_STARTS = {"ATTACHMENT", "ENVELOPE", "GMAIL", "CATEGORY", "THREAD"}
_STRING_OPS = {"CONTAINS", "IS", "STARTS", "ENDS"}
#: After a field: `from user is ...` (named with the operators).
_ADDRESS_PARTS = {"USER", "DETAIL", "LOCALPART"}
_OPERATOR_WORDS = ("contains", "is", "starts", "ends", "matches", "domain")
_TRIGGERS = {"ON", "EVERY", "CRON", "MANUALLY"}
_GIVEN_CLAUSES = {"FLAGS", "TAGGED", "RECEIVED", "IN", "ACCOUNT", "NOW", "GMAIL", "THREAD", "CHANGED"}

#: What a WORD means, by the token before it.
_WORD_AFTER = {
    "THEN": "an action",
    "EXPECT": "an action or 'keep'",
    "COMMA": "a name",
    "DAY_LIST": "a day of the week",
    "SEMI": "an action",
    "STRING": "an action",
    "EVERY": "a number, 'day' or a day of the week",
    "INT": "a unit",
    "NUMBER": "a size unit (B, KB, MB, GB)",
    "FLAGS": "a flag (seen, flagged, answered, draft, deleted)",
}


def _word_phrase(prev: str | None) -> str:
    if prev in ("PERMANENTLY", "READ", "UNREAD", "WORD", "TO"):
        return "an action"
    return _WORD_AFTER.get(prev or "", "a word")


def describe_expected(expected: set[str], prev: str | None) -> str:
    """`'a', 'b' or c` for a set of terminal names, grouped into what a user would call them."""
    exp = set(expected)
    phrases: list[str] = []
    if exp >= _CONDITION_START:
        exp -= _CONDITION_START | _MORE_CONDITION_STARTS
        phrases.append("a condition")
    if exp >= _STRING_OPS:
        exp -= _STRING_OPS | {"MATCHES", "DOMAIN"} | _ADDRESS_PARTS
        phrases.append("an operator (contains, is, starts with, ends with, matches, domain is)")
    if exp >= {"TO", "PERMANENTLY", "READ", "UNREAD"}:
        # what fits depends on the action word
        exp -= {"TO", "PERMANENTLY", "READ", "UNREAD", "IMPORTANT", "NOT", "STRING"}
    if exp >= _TRIGGERS:
        exp -= _TRIGGERS
        phrases.append('a trigger (on arrival, every ..., cron "...", manually)')
    if len(_GIVEN_CLAUSES & exp) >= 4:
        exp -= _GIVEN_CLAUSES
        phrases.append("a given clause (flags, tagged, received, in, account, now, gmail, thread, changed)")
    for name in sorted(exp, key=_order):
        if name == "WORD":
            phrases.append(_word_phrase(prev))
        elif name in _PUNCT:
            phrases.append(f"'{_PUNCT[name]}'")
        elif name in _PHRASES:
            phrases.append(_PHRASES[name])
        elif name in _KEYWORDS:
            phrases.append(f"'{name.lower()}'")
        else:  # a terminal this table does not know: never show its internal name
            phrases.append("something else")
    phrases = list(dict.fromkeys(phrases))
    if not phrases:
        return "something else"
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " or " + phrases[-1]


def _order(name: str) -> tuple[int, str]:
    if name in _KEYWORDS:
        return (0, str(_KEYWORDS.index(name)).zfill(3))
    return (1 if name not in _PUNCT else 2, name)


def describe_token(tok: Token) -> str:
    """How a user sees a token: `'move'`, `string "x"`, `'{'`, `end of file`."""
    if tok.type == "$END":
        return "end of file"
    value = str(tok)
    if len(value) > 30:
        value = value[:27] + "..."
    if tok.type == "STRING":
        return f"string {value}"
    if tok.type == "REGEX":
        return f"regular expression {value}"
    if tok.type in ("INT", "NUMBER"):
        return f"number {value}"
    if tok.type in ("DATE", "TIME", "DATETIME"):
        return value
    return f"'{value}'"


def _char_name(ch: str) -> str:
    if not ch:
        return "end of file"
    if not ch.isprintable() or ch.isspace():
        return f"character U+{ord(ch):04X}"
    return f"character '{ch}'"


def syntax_diagnostic(
    err: UnexpectedInput, text: str, path: str, line_offset: int, prev: str | None
) -> Diagnostic:
    """The one diagnostic for a Lark syntax error, in user words, pointing at the place."""
    if isinstance(err, UnexpectedToken):
        tok = err.token
        wanted = set(err.expected)
        if tok.type == "$END" and "RBRACE" in wanted:
            wanted = {"RBRACE"}  # at the end, the one thing surely missing is the closing brace
        expected = describe_expected(wanted, prev)
        if tok.type == "WORD" and wanted >= _STRING_OPS:
            close = difflib.get_close_matches(str(tok).lower(), _OPERATOR_WORDS, n=1, cutoff=0.6)
            if close:
                expected = f"an operator; did you mean '{close[0]}'?"
        if tok.type == "$END":
            line, col = (tok.end_line or 1), (tok.end_column or 1)
            if tok.line is None or prev is None:
                line, col = 1, 1
                message = f"expected {expected}"
            else:
                message = f"expected {expected} after this"
            return Diagnostic(Span(path, line + line_offset, col), message)
        span = Span(
            path,
            (tok.line or 1) + line_offset,
            tok.column or 1,
            (tok.end_line or 1) + line_offset,
            tok.end_column or 1,
        )
        return Diagnostic(span, f"unexpected {describe_token(tok)}; expected {expected}")
    if isinstance(err, UnexpectedCharacters):
        pos = err.pos_in_stream or 0
        ch = text[pos] if 0 <= pos < len(text) else ""
        line, col = (err.line or 1) + line_offset, err.column or 1
        span = Span(path, line, col, line, col + 1)
        allowed = set(err.allowed or ())
        if ch == '"':
            rest = text[pos + 1 :].split("\n", 1)[0]
            if '\\"' in rest:
                return Diagnostic(
                    span, 'unterminated string: \\" is an escaped quote (write \\\\ for a backslash)'
                )
            return Diagnostic(span, 'unterminated string: a string ends with " on the same line')
        if ch == "/" and "REGEX" in allowed:
            return Diagnostic(
                span,
                "unterminated regular expression: it ends with / on the same line "
                "(write a / inside it as \\/)",
            )
        if ch == "\x00":
            return Diagnostic(span, "NUL character (U+0000) in the file; rule files are text")
        if ch == "\ufffd":
            return Diagnostic(span, "invalid UTF-8 in the file; rule files are UTF-8 text")
        message = f"unexpected {_char_name(ch)}"
        if allowed:
            message += f"; expected {describe_expected(allowed, prev)}"
        return Diagnostic(span, message)
    line = getattr(err, "line", 1) or 1
    col = getattr(err, "column", 1) or 1
    return Diagnostic(Span(path, line + line_offset, col), "syntax error")
