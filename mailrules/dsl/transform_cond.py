"""Lark parse tree -> AST conditions: boolean structure, every test atom, `any [...]` desugaring."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, cast

from lark import Token

from mailrules.dsl import ast
from mailrules.dsl.lexemes import header_name_problem, keyword_problem, label_problem
from mailrules.dsl.transform_base import (
    AGE_UNITS,
    FIELDS,
    FLAG_WORDS,
    SIZE_UNITS,
    BuilderBase,
    spanless,
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
    "envelope",
    "gmail",
    "category",
    "thread",
)


class ConditionBuilder(BuilderBase):
    """Condition callbacks; a test with a problem becomes an `All` placeholder (the rule is dropped)."""

    # ------------------------------------------------------------ boolean structure
    def or_expr(self, span: Span, ch: list[Any]) -> ast.Condition:
        self.bool_nodes += 1
        return ast.Or(tuple(c for c in ch if not isinstance(c, Token)), span)

    def and_expr(self, span: Span, ch: list[Any]) -> ast.Condition:
        self.bool_nodes += 1
        return ast.And(tuple(c for c in ch if not isinstance(c, Token)), span)

    def not_(self, span: Span, ch: list[Any]) -> ast.Condition:
        self.bool_nodes += 1
        return ast.Not(ch[1], span)

    def paren(self, span: Span, ch: list[Any]) -> ast.Condition:
        """The inner condition, its span widened to the parentheses."""
        return cast(ast.Condition, dataclasses.replace(ch[1], span=span))

    # ------------------------------------------------------------ pieces
    def field_ref(self, span: Span, ch: list[Any]) -> ast.FieldRef | None:
        tok: Token = ch[0]
        if tok.type == "HEADER":
            name = self.string(ch[1])
            problem = header_name_problem(name)
            if problem:
                self.error(self.span(ch[1]), problem)
            return ast.FieldRef(None, name, span)
        if tok.type == "ENVELOPE":
            which = str(ch[1]).lower()
            if which not in ("to", "from"):
                self.error(self.span(ch[1]), f"expected 'to' or 'from' after 'envelope', got '{ch[1]}'")
                return None
            return ast.FieldRef(cast(ast.FieldName, f"envelope {which}"), None, span)
        word = str(tok).lower()
        if word not in FIELDS:
            hint = suggest(word, FIELDS) or "; expected one of: " + ", ".join(FIELDS) + ', header "Name"'
            self.error(self.span(tok), f"unknown field '{tok}'{hint}")
            return None
        return ast.FieldRef(cast(ast.FieldName, word), None, span)

    @spanless
    def str_op(self, _span: Span | None, ch: list[Any]) -> str:
        return {"CONTAINS": "contains", "IS": "is", "STARTS": "starts_with", "ENDS": "ends_with"}[ch[0].type]

    @spanless
    def date_rel(self, _span: Span | None, ch: list[Any]) -> str:
        return str(ch[0]).lower()

    def _any(self, span: Span, items: list[ast.Condition]) -> ast.Condition:
        if len(items) == 1:
            return items[0]
        self.bool_nodes += 1
        return ast.Or(tuple(items), span)

    @spanless
    def string_list(self, _span: Span | None, ch: list[Any]) -> list[Token]:
        return [t for t in ch if isinstance(t, Token) and t.type == "STRING"]

    @spanless
    def regex_list(self, _span: Span | None, ch: list[Any]) -> list[Token]:
        return [t for t in ch if isinstance(t, Token) and t.type == "REGEX"]

    def _test_span(self, span: Span, tok: Token) -> Span:
        """From the start of the test to the end of this value: one item of a desugared `any`."""
        return Span(span.file, span.line, span.column, (tok.end_line or 1) + self.off, tok.end_column or 1)

    # ------------------------------------------------------------ string and regex tests
    def string_test(self, span: Span, ch: list[Any]) -> ast.Condition:
        field, op, tok = ch
        value = self.string(tok)
        if field is None:
            return ast.All(span)
        return ast.StringTest(field, op, value, span)

    def string_any(self, span: Span, ch: list[Any]) -> ast.Condition:
        field, op, _, toks = ch
        values = [(self.string(t), t) for t in toks]
        if field is None:
            return ast.All(span)
        return self._any(span, [ast.StringTest(field, op, v, self._test_span(span, t)) for v, t in values])

    def regex_test(self, span: Span, ch: list[Any]) -> ast.Condition:
        field, _, tok = ch
        regex = self.regex(tok)
        if field is None:
            return ast.All(span)
        return ast.RegexTest(field, regex, span)

    def regex_any(self, span: Span, ch: list[Any]) -> ast.Condition:
        field, _, _, toks = ch
        regexes = [(self.regex(t), t) for t in toks]
        if field is None:
            return ast.All(span)
        return self._any(span, [ast.RegexTest(field, r, self._test_span(span, t)) for r, t in regexes])

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

    def domain_test(self, span: Span, ch: list[Any]) -> ast.Condition:
        field, tok = ch[0], ch[3]
        domain = self._domain(field, tok)
        if field is None or domain is None:
            return ast.All(span)
        return ast.DomainTest(field, domain, span)

    def domain_any(self, span: Span, ch: list[Any]) -> ast.Condition:
        field, toks = ch[0], ch[4]
        items: list[ast.Condition] = []
        for t in toks:
            domain = self._domain(field, t)
            if field is not None and domain is not None:
                items.append(ast.DomainTest(field, domain, self._test_span(span, t)))
        if len(items) != len(toks):
            return ast.All(span)
        return self._any(span, items)

    # ------------------------------------------------------------ address parts
    @spanless
    def addr_part(self, _span: Span | None, ch: list[Any]) -> Token:
        return cast(Token, ch[0])

    def _address_field(self, field: ast.FieldRef | None, part: Token) -> bool:
        if field is not None and (field.header is not None or field.field not in ast.ADDRESS_FIELDS):
            fields = ", ".join(sorted(ast.ADDRESS_FIELDS))
            self.error(field.span, f"'{str(part).lower()}' needs an address field ({fields}), not {field}")
            return False
        return field is not None

    def _parts(
        self, span: Span, field: ast.FieldRef | None, part: Token, op: str, toks: list[Token]
    ) -> ast.Condition:
        """One test per value (an `or` of them for `any [...]`), or `all` after a reported problem."""
        which = cast(ast.AddressPart, str(part).lower())
        items: list[ast.Condition] = []
        ok = self._address_field(field, part)
        for tok in toks:
            where = self._test_span(span, tok) if len(toks) > 1 else span
            if tok.type == "REGEX":
                rx = self.regex(tok)
                if ok and field is not None:
                    items.append(ast.AddressPartTest(field, which, "matches", None, rx, where))
            else:
                value = self.string(tok)
                if ok and field is not None:
                    string_op = cast(ast.StringOp, op)
                    items.append(ast.AddressPartTest(field, which, string_op, value, None, where))
        return self._any(span, items) if items else ast.All(span)

    def part_test(self, span: Span, ch: list[Any]) -> ast.Condition:
        return self._parts(span, ch[0], ch[1], ch[2], [ch[3]])

    def part_any(self, span: Span, ch: list[Any]) -> ast.Condition:
        return self._parts(span, ch[0], ch[1], ch[2], ch[4])

    def part_regex(self, span: Span, ch: list[Any]) -> ast.Condition:
        return self._parts(span, ch[0], ch[1], "matches", [ch[3]])

    def part_regex_any(self, span: Span, ch: list[Any]) -> ast.Condition:
        return self._parts(span, ch[0], ch[1], "matches", ch[4])

    # ------------------------------------------------------------ Gmail's search
    def gmail_search(self, span: Span, ch: list[Any]) -> ast.Condition:
        query = self.string(ch[2])
        if not query.strip():
            self.error(self.span(ch[2]), "the Gmail search is empty")
        elif any(c in query for c in "\r\n\x00"):
            self.error(self.span(ch[2]), "a Gmail search cannot hold a line break or NUL")
        return ast.GmailSearch(query, span)

    def _category(self, span: Span, tok: Token) -> ast.Condition:
        value = self.string(tok).strip().lower()
        if value not in ast.GMAIL_CATEGORIES:
            hint = suggest(value, ast.GMAIL_CATEGORIES) or "; expected " + ", ".join(ast.GMAIL_CATEGORIES)
            self.error(self.span(tok), f"unknown Gmail category {self.string(tok)!r}{hint}")
            return ast.All(span)
        return ast.GmailCategory(value, span)

    def category_test(self, span: Span, ch: list[Any]) -> ast.Condition:
        return self._category(span, ch[2])

    def category_any(self, span: Span, ch: list[Any]) -> ast.Condition:
        return self._any(span, [self._category(self._test_span(span, t), t) for t in ch[3]])

    def thread_tagged(self, span: Span, ch: list[Any]) -> ast.Condition:
        kw = self.string(ch[2])
        problem = keyword_problem(kw) and label_problem(kw)
        if problem:
            self.error(self.span(ch[2]), problem)
        return ast.ThreadTagged(kw, span)

    def header_exists(self, span: Span, ch: list[Any]) -> ast.Condition:
        name = self.string(ch[1])
        problem = header_name_problem(name)
        if problem:
            self.error(self.span(ch[1]), problem)
        return ast.HeaderExists(name, span)

    # ------------------------------------------------------------ size, age, dates
    def size_test(self, span: Span, ch: list[Any]) -> ast.Condition:
        op, num = str(ch[1]), ch[2]
        mult = 1
        if len(ch) > 3:
            unit = str(ch[3]).lower()
            if unit not in SIZE_UNITS:
                self.error(self.span(ch[3]), f"unknown size unit '{ch[3]}'; expected B, KB, MB or GB")
                return ast.All(span)
            mult = SIZE_UNITS[unit]
        amount = float(str(num)) if "." in str(num) else int(str(num))
        return ast.SizeTest(cast(Any, op), int(amount * mult), span)

    def _age(self, span: Span, ch: list[Any], older: bool) -> ast.Condition:
        unit_tok = ch[3]
        unit = AGE_UNITS.get(str(unit_tok).lower())
        if unit is None:
            hint = suggest(str(unit_tok), list(AGE_UNITS))
            self.error(
                self.span(unit_tok),
                f"unknown time unit '{unit_tok}'; "
                f"expected minutes, hours, days, weeks, months or years{hint}",
            )
            return ast.All(span)
        return ast.AgeTest(older, int(ch[2]), unit, span)

    def older_test(self, span: Span, ch: list[Any]) -> ast.Condition:
        return self._age(span, ch, True)

    def newer_test(self, span: Span, ch: list[Any]) -> ast.Condition:
        return self._age(span, ch, False)

    def _date(self, span: Span, ch: list[Any], which: str) -> ast.Condition:
        try:
            day = dt.date.fromisoformat(str(ch[2]))
        except ValueError:
            self.error(self.span(ch[2]), f"invalid date '{ch[2]}'; expected YYYY-MM-DD")
            return ast.All(span)
        return ast.DateTest(cast(Any, which), cast(Any, ch[1]), day, span)

    def received_test(self, span: Span, ch: list[Any]) -> ast.Condition:
        return self._date(span, ch, "received")

    def sent_test(self, span: Span, ch: list[Any]) -> ast.Condition:
        return self._date(span, ch, "sent")

    # ------------------------------------------------------------ flags, keywords, attachments
    def word_test(self, span: Span, ch: list[Any]) -> ast.Condition:
        tok: Token = ch[0]
        word = str(tok).lower()
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

    def tagged_test(self, span: Span, ch: list[Any]) -> ast.Condition:
        kw = self.string(ch[1])
        # a Gmail label ("Réunions", "\\Important") parses; the checker warns that only Gmail has it
        problem = keyword_problem(kw) and label_problem(kw)
        if problem:
            self.error(self.span(ch[1]), problem)
        return ast.KeywordTest(kw, span)

    def has_attachment(self, span: Span, ch: list[Any]) -> ast.Condition:
        return ast.HasAttachment(span)

    def attachment_test(self, span: Span, ch: list[Any]) -> ast.Condition:
        return ast.AttachmentNameTest(ch[2], self.string(ch[3]), None, span)

    def attachment_any(self, span: Span, ch: list[Any]) -> ast.Condition:
        op, toks = ch[2], ch[4]
        return self._any(
            span, [ast.AttachmentNameTest(op, self.string(t), None, self._test_span(span, t)) for t in toks]
        )

    def attachment_regex(self, span: Span, ch: list[Any]) -> ast.Condition:
        return ast.AttachmentNameTest("matches", None, self.regex(ch[3]), span)

    def attachment_regex_any(self, span: Span, ch: list[Any]) -> ast.Condition:
        toks = ch[4]
        return self._any(
            span,
            [ast.AttachmentNameTest("matches", None, self.regex(t), self._test_span(span, t)) for t in toks],
        )
