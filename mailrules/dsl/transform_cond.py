"""Lark parse tree -> AST conditions: boolean structure, every test atom, `any [...]` desugaring."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, cast

from lark import Token

from mailrules.dsl import ast
from mailrules.dsl.lexemes import header_name_problem, keyword_problem
from mailrules.dsl.transform_base import (
    AGE_UNITS,
    FIELDS,
    FLAG_WORDS,
    SIZE_UNITS,
    BuilderBase,
    Position,
    suggest,
)
from mailrules.source import Span

_CONDITION_WORDS = (
    *FLAG_WORDS,
    "all",
    "header",
    "size",
    "older",
    "newer",
    "received",
    "sent",
    "tagged",
    "has",
)


class ConditionBuilder(BuilderBase):
    """Condition callbacks; a test with a problem becomes an `All` placeholder (the rule is dropped)."""

    # ------------------------------------------------------------ boolean structure
    def or_expr(self, meta: Position, ch: list[Any]) -> ast.Condition:
        return ast.Or(tuple(c for c in ch if not isinstance(c, Token)), self.mspan(meta))

    def and_expr(self, meta: Position, ch: list[Any]) -> ast.Condition:
        return ast.And(tuple(c for c in ch if not isinstance(c, Token)), self.mspan(meta))

    def not_(self, meta: Position, ch: list[Any]) -> ast.Condition:
        return ast.Not(ch[1], self.mspan(meta))

    def paren(self, meta: Position, ch: list[Any]) -> ast.Condition:
        """The inner condition, its span widened to the parentheses."""
        return cast(ast.Condition, dataclasses.replace(ch[1], span=self.mspan(meta)))

    # ------------------------------------------------------------ pieces
    def field_ref(self, meta: Position, ch: list[Any]) -> ast.FieldRef | None:
        tok: Token = ch[0]
        if tok.type == "HEADER":
            name = self.string(ch[1])
            problem = header_name_problem(name)
            if problem:
                self.error(self.span(ch[1]), problem)
            return ast.FieldRef(None, name, self.mspan(meta))
        word = str(tok).lower()
        if word not in FIELDS:
            hint = suggest(word, FIELDS) or "; expected one of: " + ", ".join(FIELDS) + ', header "Name"'
            self.error(self.span(tok), f"unknown field '{tok}'{hint}")
            return None
        return ast.FieldRef(cast(ast.FieldName, word), None, self.mspan(meta))

    def str_op(self, meta: Position, ch: list[Any]) -> str:
        return {"CONTAINS": "contains", "IS": "is", "STARTS": "starts_with", "ENDS": "ends_with"}[ch[0].type]

    def date_rel(self, meta: Position, ch: list[Any]) -> str:
        return str(ch[0]).lower()

    def _any(self, meta: Position, items: list[ast.Condition]) -> ast.Condition:
        return items[0] if len(items) == 1 else ast.Or(tuple(items), self.mspan(meta))

    def string_list(self, meta: Position, ch: list[Any]) -> list[Token]:
        return [t for t in ch if isinstance(t, Token) and t.type == "STRING"]

    def regex_list(self, meta: Position, ch: list[Any]) -> list[Token]:
        return [t for t in ch if isinstance(t, Token) and t.type == "REGEX"]

    def _test_span(self, meta: Position, tok: Token) -> Span:
        """From the start of the test to the end of this value: one item of a desugared `any`."""
        s = self.mspan(meta)
        e = self.span(tok)
        return Span(s.file, s.line, s.column, e.end_line, e.end_column)

    # ------------------------------------------------------------ string and regex tests
    def string_test(self, meta: Position, ch: list[Any]) -> ast.Condition:
        field, op, tok = ch
        value = self.string(tok)
        if field is None:
            return ast.All(self.mspan(meta))
        return ast.StringTest(field, op, value, self.mspan(meta))

    def string_any(self, meta: Position, ch: list[Any]) -> ast.Condition:
        field, op, _, toks = ch
        values = [(self.string(t), t) for t in toks]
        if field is None:
            return ast.All(self.mspan(meta))
        return self._any(meta, [ast.StringTest(field, op, v, self._test_span(meta, t)) for v, t in values])

    def regex_test(self, meta: Position, ch: list[Any]) -> ast.Condition:
        field, _, tok = ch
        regex = self.regex(tok)
        if field is None:
            return ast.All(self.mspan(meta))
        return ast.RegexTest(field, regex, self.mspan(meta))

    def regex_any(self, meta: Position, ch: list[Any]) -> ast.Condition:
        field, _, _, toks = ch
        regexes = [(self.regex(t), t) for t in toks]
        if field is None:
            return ast.All(self.mspan(meta))
        return self._any(meta, [ast.RegexTest(field, r, self._test_span(meta, t)) for r, t in regexes])

    def _domain(self, field: ast.FieldRef | None, tok: Token) -> str | None:
        value = self.string(tok).strip().lower().lstrip("@.")
        if field is not None and (field.header is not None or field.field not in ast.ADDRESS_FIELDS):
            fields = ", ".join(sorted(ast.ADDRESS_FIELDS))
            self.error(field.span, f"'domain is' needs an address field ({fields}), not {field}")
            return None
        if not value or any(c.isspace() or c in "@,<>" for c in value):
            self.error(
                self.span(tok), f'invalid domain {self.string(tok)!r}; expected a domain like "example.org"'
            )
            return None
        return value

    def domain_test(self, meta: Position, ch: list[Any]) -> ast.Condition:
        field, tok = ch[0], ch[3]
        domain = self._domain(field, tok)
        if field is None or domain is None:
            return ast.All(self.mspan(meta))
        return ast.DomainTest(field, domain, self.mspan(meta))

    def domain_any(self, meta: Position, ch: list[Any]) -> ast.Condition:
        field, toks = ch[0], ch[4]
        items: list[ast.Condition] = []
        for t in toks:
            domain = self._domain(field, t)
            if field is not None and domain is not None:
                items.append(ast.DomainTest(field, domain, self._test_span(meta, t)))
        if len(items) != len(toks):
            return ast.All(self.mspan(meta))
        return self._any(meta, items)

    def header_exists(self, meta: Position, ch: list[Any]) -> ast.Condition:
        name = self.string(ch[1])
        problem = header_name_problem(name)
        if problem:
            self.error(self.span(ch[1]), problem)
        return ast.HeaderExists(name, self.mspan(meta))

    # ------------------------------------------------------------ size, age, dates
    def size_test(self, meta: Position, ch: list[Any]) -> ast.Condition:
        op, num = str(ch[1]), ch[2]
        mult = 1
        if len(ch) > 3:
            unit = str(ch[3]).lower()
            if unit not in SIZE_UNITS:
                self.error(self.span(ch[3]), f"unknown size unit '{ch[3]}'; expected B, KB, MB or GB")
                return ast.All(self.mspan(meta))
            mult = SIZE_UNITS[unit]
        amount = float(str(num)) if "." in str(num) else int(str(num))
        return ast.SizeTest(cast(Any, op), int(amount * mult), self.mspan(meta))

    def _age(self, meta: Position, ch: list[Any], older: bool) -> ast.Condition:
        unit_tok = ch[3]
        unit = AGE_UNITS.get(str(unit_tok).lower())
        if unit is None:
            hint = suggest(str(unit_tok), list(AGE_UNITS))
            self.error(
                self.span(unit_tok),
                f"unknown time unit '{unit_tok}'; "
                f"expected minutes, hours, days, weeks, months or years{hint}",
            )
            return ast.All(self.mspan(meta))
        return ast.AgeTest(older, int(ch[2]), unit, self.mspan(meta))

    def older_test(self, meta: Position, ch: list[Any]) -> ast.Condition:
        return self._age(meta, ch, True)

    def newer_test(self, meta: Position, ch: list[Any]) -> ast.Condition:
        return self._age(meta, ch, False)

    def _date(self, meta: Position, ch: list[Any], which: str) -> ast.Condition:
        try:
            day = dt.date.fromisoformat(str(ch[2]))
        except ValueError:
            self.error(self.span(ch[2]), f"invalid date '{ch[2]}'; expected YYYY-MM-DD")
            return ast.All(self.mspan(meta))
        return ast.DateTest(cast(Any, which), cast(Any, ch[1]), day, self.mspan(meta))

    def received_test(self, meta: Position, ch: list[Any]) -> ast.Condition:
        return self._date(meta, ch, "received")

    def sent_test(self, meta: Position, ch: list[Any]) -> ast.Condition:
        return self._date(meta, ch, "sent")

    # ------------------------------------------------------------ flags, keywords, attachments
    def word_test(self, meta: Position, ch: list[Any]) -> ast.Condition:
        tok: Token = ch[0]
        word = str(tok).lower()
        span = self.mspan(meta)
        if word == "all":
            return ast.All(span)
        if word in FLAG_WORDS:
            flag, present = FLAG_WORDS[word]
            return ast.FlagTest(flag, present, span)
        if word in FIELDS:
            self.error(self.span(tok), f"expected a test after '{tok}', e.g. {word} contains \"...\"")
        else:
            hint = suggest(word, [*_CONDITION_WORDS, *FIELDS])
            self.error(self.span(tok), f"unknown condition '{tok}'{hint}")
        return ast.All(span)

    def tagged_test(self, meta: Position, ch: list[Any]) -> ast.Condition:
        kw = self.string(ch[1])
        problem = keyword_problem(kw)
        if problem:
            self.error(self.span(ch[1]), problem)
        return ast.KeywordTest(kw, self.mspan(meta))

    def has_attachment(self, meta: Position, ch: list[Any]) -> ast.Condition:
        return ast.HasAttachment(self.mspan(meta))

    def attachment_test(self, meta: Position, ch: list[Any]) -> ast.Condition:
        return ast.AttachmentNameTest(ch[2], self.string(ch[3]), None, self.mspan(meta))

    def attachment_any(self, meta: Position, ch: list[Any]) -> ast.Condition:
        op, toks = ch[2], ch[4]
        return self._any(
            meta, [ast.AttachmentNameTest(op, self.string(t), None, self._test_span(meta, t)) for t in toks]
        )

    def attachment_regex(self, meta: Position, ch: list[Any]) -> ast.Condition:
        return ast.AttachmentNameTest("matches", None, self.regex(ch[3]), self.mspan(meta))

    def attachment_regex_any(self, meta: Position, ch: list[Any]) -> ast.Condition:
        toks = ch[4]
        return self._any(
            meta,
            [ast.AttachmentNameTest("matches", None, self.regex(t), self._test_span(meta, t)) for t in toks],
        )
