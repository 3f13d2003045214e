"""Lark parse tree -> typed AST: rules, triggers, actions and test blocks (conditions: transform_cond)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, cast

from lark import Token

from mailrules.dsl import ast
from mailrules.dsl.lexemes import keyword_problem, label_problem, mailbox_problem
from mailrules.dsl.transform_base import (
    ACTION_WORDS,
    DAYS,
    GIVEN_FLAGS,
    INTERVAL_UNITS,
    MAX_CONDITION_DEPTH,
    Clause,
    Keep,
    condition_depth,
    spanless,
    suggest,
)
from mailrules.dsl.transform_cond import ConditionBuilder
from mailrules.dsl.unparse import quote
from mailrules.dsl.unparse import trigger as unparse_trigger
from mailrules.source import Span


class AstBuilder(ConditionBuilder):
    """Builds the items of one file (or chunk of it); see BuilderBase for error collection."""

    # ------------------------------------------------------------ file and rule
    @spanless
    def start(self, _span: Span | None, children: list[Any]) -> list[Any]:
        out: list[Any] = []
        for c in children:
            if isinstance(c, list):  # a group: its rules, in order
                out.extend(c)
            elif c is not None:
                out.append(c)
        return out

    def group(self, span: Span, ch: list[Any]) -> list[ast.Rule]:
        """`group "NAME" TRIGGER { rule ... }`: each rule takes the group's name and trigger."""
        name = self.string(ch[1])
        trigger = ch[2]
        rules = [c for c in ch[4:-1] if isinstance(c, ast.Rule)]
        failed = any(c is None for c in ch[4:-1])
        if not name.strip():
            self.error(self.span(ch[1]), "group name is empty")
        if isinstance(trigger, ast.OnArrival | ast.Manually | ast.FlagChange):
            self.error(
                trigger.span,
                f"a group runs on a schedule (every ..., cron ...), not '{unparse_trigger(trigger)}': "
                "arrival rules already run together, in order",
            )
        for rule in rules:
            own = rule.trigger
            implicit = (own.span.line, own.span.column) == (rule.span.line, rule.span.column)
            if not (isinstance(own, ast.OnArrival) and implicit):
                self.error(
                    own.span,
                    f"rule {quote(rule.name)} is in group {quote(name)}: it runs on the "
                    "group's schedule; remove its own trigger",
                )
        out = [dataclasses.replace(r, group=name, trigger=trigger) for r in rules]
        if failed:
            self._pending += 1  # an inner rule was dropped: the group is not whole
        return cast(list[ast.Rule], self.finish_item(out)) or []

    def rule(self, span: Span, ch: list[Any]) -> ast.Rule | None:
        name_tok = ch[1]
        name = self.string(name_tok)
        if not name.strip():
            self.error(self.span(name_tok), "rule name is empty")
        mailboxes: tuple[str, ...] = ("INBOX",)
        accounts: tuple[str, ...] = ()
        trigger: ast.Trigger = ast.OnArrival(self.span(ch[0]))
        limit: int | None = None
        body: tuple[ast.Condition, tuple[ast.Action, ...]] | None = None
        seen: set[str] = set()
        for c in ch[2:]:
            if isinstance(c, Token):
                continue
            kind = c.kind if isinstance(c, Clause) else "trigger"
            if kind in seen:
                what = {"in": "'in'", "accounts": "'for account'", "limit": "'limit'"}.get(kind, "a trigger")
                self.error(c.span, f"this rule already has {what}; give it once")
            seen.add(kind)
            if isinstance(c, Clause):
                if c.kind == "in":
                    mailboxes = c.values
                elif c.kind == "accounts":
                    accounts = c.values
                elif c.kind == "limit":
                    limit = c.values[0]
                elif c.kind == "body":
                    body = (c.values[0], c.values[1])
            elif isinstance(c, (ast.OnArrival, ast.Every, ast.At, ast.Cron, ast.Manually, ast.FlagChange)):
                trigger = c
        if body is None:  # unreachable with the grammar; keeps the types honest
            return cast(None, self.finish_item(None))
        rule = ast.Rule(
            name=name,
            mailboxes=mailboxes,
            accounts=accounts,
            trigger=trigger,
            limit=limit,
            condition=body[0],
            actions=body[1],
            span=span,
            name_span=self.span(name_tok),
        )
        return cast("ast.Rule | None", self.finish_item(rule))

    def in_clause(self, span: Span, ch: list[Any]) -> Clause:
        names = []
        for tok in self.tokens(ch):
            if tok.type == "STRING":
                names.append(self._mailbox(tok))
        return Clause("in", tuple(names), span)

    def _mailbox(self, tok: Token) -> str:
        name = self.string(tok)
        problem = mailbox_problem(name)
        if problem:
            self.error(self.span(tok), problem)
        return name

    def account_clause(self, span: Span, ch: list[Any]) -> Clause:
        names = []
        for tok in self.tokens(ch):
            if tok.type == "STRING":
                value = self.string(tok)
                if not value.strip():
                    self.error(self.span(tok), "account name is empty")
                names.append(value)
        return Clause("accounts", tuple(names), span)

    def limit_clause(self, span: Span, ch: list[Any]) -> Clause:
        return Clause("limit", (int(ch[1]),), span)

    # ------------------------------------------------------------ triggers
    def on_arrival(self, span: Span, ch: list[Any]) -> ast.OnArrival:
        return ast.OnArrival(span)

    def manually(self, span: Span, ch: list[Any]) -> ast.Manually:
        return ast.Manually(span)

    def on_flag_change(self, span: Span, ch: list[Any]) -> ast.FlagChange:
        return ast.FlagChange(span)

    def cron(self, span: Span, ch: list[Any]) -> ast.Cron:
        return ast.Cron(self.string(ch[1]), span)

    def every_interval(self, span: Span, ch: list[Any]) -> ast.Every:
        unit_tok = ch[2]
        unit = INTERVAL_UNITS.get(str(unit_tok).lower())
        if unit is None:
            hint = suggest(str(unit_tok), list(INTERVAL_UNITS))
            self.error(
                self.span(unit_tok), f"unknown interval unit '{unit_tok}'; expected minutes or hours{hint}"
            )
            unit = "minutes"
        return ast.Every(int(ch[1]), cast(Any, unit), span)

    def every_unit(self, span: Span, ch: list[Any]) -> ast.Every:
        word = str(ch[1]).lower()
        unit = INTERVAL_UNITS.get(word)
        if unit is None:
            if word in DAYS or word == "day":
                self.error(self.span(ch[1]), f"expected 'at HH:MM' after 'every {ch[1]}'")
            else:
                self.error(
                    self.span(ch[1]),
                    f"expected a number, 'day' or a day of the week after 'every', got '{ch[1]}'",
                )
            unit = "minutes"
        return ast.Every(1, cast(Any, unit), span)

    def every_at(self, span: Span, ch: list[Any]) -> ast.At:
        words = [t for t in self.tokens(ch) if t.type == "WORD"]
        days: set[int] = set()
        for w in words:
            key = str(w).lower()
            if key in ("day", "days"):
                if len(words) > 1:
                    self.error(self.span(w), "'every day' cannot be combined with days of the week")
                continue
            if key not in DAYS:
                hint = suggest(key, [*DAYS, "day"])
                self.error(
                    self.span(w), f"unknown day '{w}'; expected day, monday..sunday, weekday or weekend{hint}"
                )
                continue
            days.update(DAYS[key])
        time_tok = ch[-1]
        hour, minute = (int(x) for x in str(time_tok).split(":"))
        return ast.At(tuple(sorted(days)), hour, minute, span)

    # ------------------------------------------------------------ body and actions
    def body(self, span: Span, ch: list[Any]) -> Clause:
        cond: ast.Condition | None = None
        actions: list[Any] = []
        then_tok: Token | None = None
        for c in ch:
            if isinstance(c, Clause) and c.kind == "when":
                cond = c.values[0]
            elif isinstance(c, Token) and c.type == "THEN":
                then_tok = c
            elif isinstance(c, list):
                actions = c
        if cond is None:
            assert then_tok is not None
            cond = ast.All(self.span(then_tok))
        out: list[ast.Action] = []
        for a in actions:
            if isinstance(a, Keep):
                self.error(
                    a.span, "'keep' is only for 'expect' in tests; a rule that does nothing has no use"
                )
            elif a is not None:
                out.append(a)
        return Clause("body", (cond, tuple(out)), span)

    def when_clause(self, span: Span, ch: list[Any]) -> Clause:
        # A condition is at most one deeper than its count of And, Or and Not nodes: walk it
        # only when that count allows a depth over the limit.
        nodes, self.bool_nodes = self.bool_nodes, 0
        if nodes >= MAX_CONDITION_DEPTH and condition_depth(ch[1]) > MAX_CONDITION_DEPTH:
            self.error(
                self.span(ch[0]),
                f"this condition is nested more than {MAX_CONDITION_DEPTH} levels deep; simplify it",
            )
        return Clause("when", (ch[1],), span)

    @spanless
    def actions(self, _span: Span | None, ch: list[Any]) -> list[Any]:
        return [c for c in ch if not isinstance(c, Token)]

    @spanless
    def action_mod(self, _span: Span | None, ch: list[Any]) -> Token:
        if len(ch) == 2:  # `not important`: one modifier, from `not` to the end of `important`
            first, last = cast(Token, ch[0]), cast(Token, ch[1])
            tok = first.update("NOT_IMPORTANT", f"{first} {last}")
            tok.end_line, tok.end_column, tok.end_pos = last.end_line, last.end_column, last.end_pos
            return tok
        return cast(Token, ch[0])

    def action(self, span: Span, ch: list[Any]) -> Any:
        word_tok: Token = ch[0]
        mod: Token | None = None
        to: Token | None = None
        arg: Token | None = None
        for t in ch[1:]:
            if t.type == "TO":
                to = t
            elif t.type == "STRING":
                arg = t
            else:
                mod = t
        word = str(word_tok).lower()
        if word == "keep" and mod is None and to is None and arg is None:
            return Keep(span)
        if word not in ACTION_WORDS:
            hint = suggest(word, ACTION_WORDS) or "; expected one of: " + ", ".join(ACTION_WORDS)
            self.error(self.span(word_tok), f"unknown action '{word_tok}'{hint}")
            return None
        mod_word = " ".join(str(mod).lower().split()) if mod is not None else None
        wants_to = word in ("move", "copy", "forward", "redirect") or (word == "archive" and arg is not None)
        wants_arg = word in ("move", "copy", "forward", "redirect", "tag", "untag")
        if mod is not None and not (
            (word == "delete" and mod_word == "permanently")
            or (word == "mark" and mod_word in ("read", "unread", "important", "not important"))
        ):
            self.error(self.span(mod), f"'{word} {mod}' is not an action")
            return None
        if word == "mark" and mod is None:
            self.error(
                self.span(word_tok), "expected 'read', 'unread', 'important' or 'not important' after 'mark'"
            )
            return None
        if wants_to and to is None:
            self.error(self.span(arg or word_tok), f"expected 'to' after '{word}'")
            return None
        if not wants_to and to is not None:
            what = "a mailbox name" if word == "archive" else "nothing"
            self.error(self.span(to), f"unexpected 'to' after '{word}'; expected {what}")
            return None
        if wants_arg and arg is None:
            wanted = {
                "forward": "an address",
                "redirect": "an address",
                "tag": "a keyword",
                "untag": "a keyword",
            }
            self.error(
                self.span(to or word_tok), f"expected {wanted.get(word, 'a mailbox name')} after '{word}'"
            )
            return None
        if arg is not None and not wants_arg and word != "archive":
            self.error(self.span(arg), f"'{word}' takes no argument")
            return None
        if word in ("move", "copy"):
            assert arg is not None
            return (ast.Move if word == "move" else ast.Copy)(self.template(arg), span)
        if word == "archive":
            return ast.Archive(self.template(arg) if arg is not None else None, span)
        if word == "delete":
            return ast.Delete(mod is not None, span)
        if word == "mark" and mod_word in ("important", "not important"):
            return ast.SetFlag("\\Important", mod_word == "important", span)
        if word == "mark":
            return ast.SetFlag("\\Seen", mod_word == "read", span)
        if word in ("flag", "unflag"):
            return ast.SetFlag("\\Flagged", word == "flag", span)
        if word in ("tag", "untag"):
            assert arg is not None
            if "{" in arg or "}" in arg:  # placeholders: `tag "lists/{list}"`
                template = self.template(arg, "tag name")
                literal = "".join(p.text for p in template.parts if isinstance(p, ast.TemplateText))
                problem = label_problem(literal) if literal.strip() else None
                if template.raw.startswith("\\"):
                    problem = "a tag name with placeholders cannot start with '\\' (a system flag or label)"
                if problem:
                    self.error(self.span(arg), problem.replace(repr(literal), repr(template.raw)))
                return ast.Tag(template.raw, word == "tag", span, template)
            kw = self.string(arg)
            # A name that is no IMAP keyword but a valid Gmail label ("Label with spaces") parses;
            # the checker warns that only Gmail takes it.
            problem = keyword_problem(kw) and label_problem(kw)
            if problem:
                self.error(self.span(arg), problem)
            return ast.Tag(kw, word == "tag", span)
        if word in ("forward", "redirect"):
            assert arg is not None
            return (ast.Forward if word == "forward" else ast.Redirect)(self.string(arg), span)
        return ast.Stop(span)

    # ------------------------------------------------------------ tests (spec section 7)
    def test(self, span: Span, ch: list[Any]) -> ast.TestBlock | None:
        name = self.string(ch[1])
        given, expect = ch[3], ch[4]
        if not name.strip():
            self.error(self.span(ch[1]), "test name is empty")
        if given is None or expect is None:
            return cast("ast.TestBlock | None", self.finish_item(None))
        block = ast.TestBlock(name, given, expect, span)
        return cast("ast.TestBlock | None", self.finish_item(block))

    def given(self, span: Span, ch: list[Any]) -> ast.Given | None:
        path = self.string(ch[1])
        if not path.strip():
            self.error(self.span(ch[1]), "message file name is empty")
        flags: list[str] = []
        values: dict[str, Any] = {}
        for c in ch[2:]:
            if not isinstance(c, Clause):
                continue
            if c.kind == "flags":
                flags.extend(f for f in c.values if f not in flags)
                continue
            if c.kind == "gmail" and c.values[0] is None:
                continue  # a problem in it was reported
            if c.kind == "thread":
                tags = values.get("thread", ())
                values["thread"] = (*tags, *(v for v in c.values if v not in tags))
                continue
            if c.kind in values:
                self.error(c.span, f"'{c.kind}' is given twice")
            values[c.kind] = c.values[0]
        return ast.Given(
            path=path,
            flags=tuple(flags),
            received=values.get("received"),
            mailbox=values.get("in", "INBOX"),
            account=values.get("account"),
            now=values.get("now"),
            span=span,
            gmail=values.get("gmail"),
            thread=ast.ThreadFacts(values["thread"]) if "thread" in values else None,
            changed="changed" in values,
        )

    def flag_item(self, span: Span, ch: list[Any]) -> str | None:
        tok: Token = ch[0]
        if tok.type == "STRING":
            value = self.string(tok)
            system = {v.lower(): v for v in GIVEN_FLAGS.values()}
            if value.lower() in system:
                return system[value.lower()]
            problem = keyword_problem(value)
            if problem:
                self.error(self.span(tok), problem)
            return value
        flag = GIVEN_FLAGS.get(str(tok).lower())
        if flag is None:
            hint = suggest(str(tok), list(GIVEN_FLAGS))
            self.error(
                self.span(tok),
                f"unknown flag '{tok}'; expected seen, flagged, answered, draft, deleted "
                f'or a "$Keyword"{hint}',
            )
        return flag

    def given_flags(self, span: Span, ch: list[Any]) -> Clause:
        items = [c for c in ch if isinstance(c, str) and not isinstance(c, Token)]
        return Clause("flags", tuple(items), span)

    def given_tagged(self, span: Span, ch: list[Any]) -> Clause:
        value = self.string(ch[1])
        problem = keyword_problem(value)
        if problem:
            self.error(self.span(ch[1]), problem)
        return Clause("flags", (value,), span)

    def _datetime(self, date_tok: Token, time_tok: Token | None) -> dt.datetime | None:
        if date_tok.type == "DATETIME":  # 2024-05-01T12:00
            day_part, _, time_part = str(date_tok).partition("T")
            date_tok = date_tok.update("DATE", day_part)
            time_tok = date_tok.update("TIME", time_part)
        try:
            day = dt.date.fromisoformat(str(date_tok))
        except ValueError:
            self.error(self.span(date_tok), f"invalid date '{date_tok}'; expected YYYY-MM-DD")
            return None
        hour = minute = 0
        if time_tok is not None:
            hour, minute = (int(x) for x in str(time_tok).split(":"))
            if hour > 23 or minute > 59:
                self.error(
                    self.span(time_tok), f"invalid time '{time_tok}'; expected HH:MM from 00:00 to 23:59"
                )
                return None
        return dt.datetime(day.year, day.month, day.day, hour, minute)

    def given_received(self, span: Span, ch: list[Any]) -> Clause:
        return Clause("received", (self._datetime(ch[1], ch[2] if len(ch) > 2 else None),), span)

    def given_now(self, span: Span, ch: list[Any]) -> Clause:
        return Clause("now", (self._datetime(ch[1], ch[2] if len(ch) > 2 else None),), span)

    def given_in(self, span: Span, ch: list[Any]) -> Clause:
        return Clause("in", (self._mailbox(ch[1]),), span)

    def given_gmail(self, span: Span, ch: list[Any]) -> Clause:
        """`gmail [category WORD] [search "QUERY"]...`: the message is on Gmail, with these facts."""
        category: str | None = None
        searches: list[str] = []
        for fact in ch[1:]:
            if not isinstance(fact, Clause):
                continue
            if fact.kind == "category":
                if category is not None:
                    self.error(fact.span, "'category' is given twice")
                category = fact.values[0]
            elif fact.values[0] not in searches:
                searches.append(fact.values[0])
        return Clause("gmail", (ast.GmailFacts(category, tuple(searches)),), span)

    def fact_category(self, span: Span, ch: list[Any]) -> Clause:
        word = str(ch[1]).lower()
        if word not in ast.GMAIL_CATEGORIES:
            hint = suggest(word, ast.GMAIL_CATEGORIES) or "; expected " + ", ".join(ast.GMAIL_CATEGORIES)
            self.error(self.span(ch[1]), f"unknown Gmail category '{ch[1]}'{hint}")
        return Clause("category", (word,), span)

    def fact_search(self, span: Span, ch: list[Any]) -> Clause:
        query = self.string(ch[1])
        if not query.strip():
            self.error(self.span(ch[1]), "the Gmail search is empty")
        return Clause("search", (query,), span)

    def given_thread(self, span: Span, ch: list[Any]) -> Clause:
        value = self.string(ch[2])
        problem = keyword_problem(value) and label_problem(value)
        if problem:
            self.error(self.span(ch[2]), problem)
        return Clause("thread", (value,), span)

    def given_changed(self, span: Span, ch: list[Any]) -> Clause:
        return Clause("changed", (True,), span)

    def given_account(self, span: Span, ch: list[Any]) -> Clause:
        return Clause("account", (self.string(ch[1]),), span)

    def expect(self, span: Span, ch: list[Any]) -> tuple[ast.Action, ...] | None:
        items: list[Any] = ch[1]
        keeps = [a for a in items if isinstance(a, Keep)]
        if keeps and len(items) > 1:
            self.error(keeps[0].span, "'keep' means no action and cannot be combined with actions")
            return None
        if any(a is None for a in items):
            return None
        return tuple(a for a in items if not isinstance(a, Keep))
