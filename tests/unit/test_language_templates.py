"""Templates in tag names and the filters `lower`, `upper`, `capitalize` in every template (issue 16)."""

from __future__ import annotations

import datetime as dt

import pytest

from mailrules.compile.dialect import Dialect
from mailrules.dsl import ast as A
from mailrules.dsl import unparse
from mailrules.dsl.check import check_rule_set
from mailrules.dsl.parser import parse_text
from mailrules.dsl.semantics import EvalContext, evaluate_message
from mailrules.dsl.templates import render_tag, render_template, sanitize_tag_value
from mailrules.engine.core import Engine
from mailrules.engine.ports import AccountContext, RunOptions
from mailrules.engine.prefetch import independent_rules
from mailrules.message.view import MessageView
from mailrules.source import Span
from tests.fakes import FakeServer, FakeStore, RecordingSender, oracle

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
CTX = EvalContext(NOW, dt.UTC)
GMAIL_CTX = EvalContext(NOW, dt.UTC, labels=True)


def msg(subject: str = "hello", list_id: str | None = "Python Dev <python-dev.python.org>") -> bytes:
    lid = f"List-Id: {list_id}\r\n" if list_id else ""
    return (
        f"From: a@example.com\r\nTo: me@example.com\r\nSubject: {subject}\r\n{lid}"
        f"Message-ID: <{abs(hash((subject, list_id)))}@t>\r\n"
        "Date: Sat, 01 Mar 2025 10:00:00 +0000\r\n\r\nbody\r\n"
    ).encode()


def rules_of(text: str) -> tuple[A.Rule, ...]:
    rf, diags = parse_text(text, "t.rules")
    assert rf is not None and not [d for d in diags if d.severity == "error"], [d.message for d in diags]
    return rf.rules


def the_tag(text: str) -> A.Tag:
    (rule,) = rules_of(text)
    tag = rule.actions[0]
    assert isinstance(tag, A.Tag)
    return tag


# -- the language ------------------------------------------------------------------------------------


def test_a_tag_with_placeholders_has_a_template() -> None:
    tag = the_tag('rule "r" { when subject matches /^\\[(\\w+)\\]/ then tag "lists/{match.1|lower}" }')
    assert tag.keyword == "lists/{match.1|lower}" and tag.template is not None
    assert [unparse.unparse(p) for p in tag.template.parts] == ["lists/", "{match.1|lower}"]
    assert tag.template.parts[1] == A.Placeholder("match", 1, tag.template.parts[1].span, ("lower",))  # type: ignore[union-attr]
    assert unparse.action(tag) == 'tag "lists/{match.1|lower}"'
    assert unparse.action(tag, "lists/python") == 'tag "lists/python"'
    assert the_tag('rule "r" { then tag "$Plain" }').template is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('tag "{lists"', "unclosed '{' in tag name; placeholders look like {year}"),
        ('tag "lists}"', "unmatched '}' in tag name"),
        ('tag "{nope}"', "unknown placeholder '{nope}'"),
        ('tag "{list|lowr}"', "unknown filter 'lowr'; did you mean 'lower'?"),
        ('move to "L/{list|title}"', "unknown filter 'title'; expected lower, upper, capitalize"),
        ('tag "\\\\{list}"', "a tag name with placeholders cannot start with '\\'"),
    ],
)
def test_template_errors(text: str, message: str) -> None:
    _, diags = parse_text(f'rule "r" {{ then {text} }}', "t.rules")
    assert any(message in d.message for d in diags), [d.message for d in diags]


def test_the_checker_reads_tag_templates() -> None:
    rf, diags = parse_text(
        'rule "a" { then tag "x/{match.1}" }\n'
        'rule "b" { when subject matches /(a)/ then tag "x/{match.2}" }\n'
        'rule "c" { when subject matches /(a)/ then tag "x/{match.1}" untag "{list}" }\n'
        'rule "d" { then tag "my label/{list}" }\n',
        "t.rules",
    )
    assert rf is not None and not diags
    found = [(d.severity, d.message) for d in check_rule_set(A.RuleSet((rf,)))]
    assert found == [
        ("error", "{match.1} needs a 'matches' test in this rule's condition"),
        ("error", "{match.2} cannot be filled: this rule's regular expressions have at most 1 capture group"),
        ("warning", "keyword 'my label/{list}' contains ' ', which an IMAP keyword cannot contain: only "
                    "Gmail "
                    "takes it, as a label; on any other server this action fails"),
    ]  # fmt: skip


# -- rendering -----------------------------------------------------------------------------------------


def render(text: str, raw: bytes, labels: bool = False) -> str:
    (rule,) = rules_of(text)
    planned = evaluate_message(
        (rule,), MessageView.from_bytes(raw), account=None, mailbox="INBOX", ctx=GMAIL_CTX if labels else CTX
    )
    assert planned and planned[0].error is None, planned
    assert planned[0].destination is not None
    return planned[0].destination


@pytest.mark.parametrize(
    ("action", "subject", "labels", "expected"),
    [
        ('tag "lists/{list}"', "x", False, "lists/python-dev.python.org"),
        ('tag "{list|upper}"', "x", False, "PYTHON-DEV.PYTHON.ORG"),
        ('tag "$T-{match.1|capitalize}"', "[hELLO world] x", False, "$T-Hello_world"),
        ('tag "$T-{match.1}"', "[a(b)c] x", False, "$T-a_b_c"),  # atom-specials and spaces: _
        ('tag "T/{match.1}"', "[a/b\\c] x", False, "T/a_b_c"),  # no new level, no system flag
        ('tag "T/{match.1}"', "[Projekt X] x", True, "T/Projekt X"),  # a Gmail label keeps its spaces
        ('tag "{match.1|lower}"', "[Réunion] x", True, "réunion"),
        ('move to "Lists/{match.1|lower}"', "[PyDev] x", False, "Lists/pydev"),
        ('copy to "{match.1|upper}/{year}"', "[a.b] x", False, "A_B/2025"),  # filters, then sanitizing
        ('archive to "A/{list|capitalize}"', "x", False, "A/Python-dev_python_org"),
    ],
)
def test_rendering(action: str, subject: str, labels: bool, expected: str) -> None:
    rule = f'rule "r" {{ when subject matches /^\\[?([^\\]]*)\\]?/ then {action} }}'
    assert render(rule, msg(subject), labels) == expected


def test_a_tag_that_is_no_keyword_fails_for_that_message() -> None:
    (rule,) = rules_of('rule "r" { when subject matches /^\\[(.*)\\]/ then tag "{match.1}" }')
    planned = evaluate_message(
        (rule,), MessageView.from_bytes(msg("[Réunion] x")), account=None, mailbox="INBOX", ctx=CTX
    )
    assert planned[0].error == (
        "t.rules:1: rule \"r\": tag '{match.1}' gives 'Réunion': keyword 'Réunion' contains 'é', which an "
        "IMAP keyword cannot contain; only Gmail takes it, as a label"
    )
    bare = MessageView.from_bytes(msg(list_id=None))
    no_list = evaluate_message(
        rules_of('rule "r" { then tag "l/{list}" }'), bare, account=None, mailbox="INBOX", ctx=CTX
    )
    assert no_list[0].error is not None
    assert no_list[0].error.endswith("{list}: the message has no List-Id header")


def test_sanitizing_a_tag_value() -> None:
    assert sanitize_tag_value(" a b\t(c)\x00 ", labels=False) == "a_b__c__"
    assert sanitize_tag_value(" a b\t(c)\x00 ", labels=True) == "a b\t(c)_".replace("\t", "_")
    assert sanitize_tag_value("", labels=True) == "_"
    assert len(sanitize_tag_value("x" * 500, labels=False)) == 100


def test_filters_in_mailbox_templates_come_before_sanitizing() -> None:
    here = Span("t.rules", 1, 1)
    t = A.Template("{list|upper}", (A.Placeholder("list", 0, here, ("upper",)),), here)
    view = MessageView.from_bytes(msg())
    assert render_template(t, view, None, CTX) == "PYTHON-DEV_PYTHON_ORG"
    assert render_tag(t, view, None, CTX) == "PYTHON-DEV.PYTHON.ORG"


# -- the engine ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["dovecot", "gmail"])
def test_the_engine_tags_each_message_with_its_rendered_name(dialect: str) -> None:
    server = FakeServer()
    server.append("INBOX", msg("[Alpha] one"))
    server.append("INBOX", msg("[alpha] two"))
    server.append("INBOX", msg("[Béta] three"))
    server.append("INBOX", msg("no brackets"))
    rules = rules_of(
        'rule "by subject" { when subject matches /^\\[(.+)\\]/ then tag "topic/{match.1|lower}" }\n'
        'rule "later" { when tagged "topic/alpha" then flag }\n'
    )
    twin = FakeServer()
    for m in server.mailbox("INBOX").messages.values():
        twin.append("INBOX", m.raw, (), m.internaldate)
    store = FakeStore(server, Dialect.named(dialect), NOW)
    account = AccountContext("acct", sender=RecordingSender())
    report = Engine(RunOptions(NOW, dt.UTC, "run1")).process(store, account, "INBOX", rules)
    gmail = dialect == "gmail"
    oracle(twin, rules, account, ["INBOX"], EvalContext(NOW, dt.UTC, labels=gmail), gmail=gmail)
    assert server.state() == twin.state()
    flags = {
        m.raw.split(b"Subject: ")[1].split(b"\r\n")[0]: m.flags | m.labels
        for m in server.mailbox("INBOX").messages.values()
    }
    assert flags[b"[Alpha] one"] == {"topic/alpha", "\\Flagged"}
    assert flags[b"[alpha] two"] == {"topic/alpha", "\\Flagged"}
    assert flags[b"no brackets"] == set()
    outcomes = report.rules[0].outcomes
    if gmail:  # a label may be any name
        assert flags[b"[B\xc3\xa9ta] three"] == {"topic/béta"} and outcomes["tag failed"] == 0
    else:  # no keyword: that message's action fails, the others go on
        assert flags[b"[B\xc3\xa9ta] three"] == set() and outcomes["tag failed"] == 1
    assert store.commands.count("STORE") == (3 if gmail else 2)  # one per name, and the flag


def test_a_templated_tag_makes_later_keyword_tests_wait_for_it() -> None:
    rules = rules_of(
        'rule "a" { when subject matches /(x)/ then tag "t/{match.1}" }\n'
        'rule "b" { when tagged "t/x" then flag }\n'
        'rule "c" { when seen then flag }\n'
        'rule "d" { when subject contains "y" then flag }\n'
    )
    assert [r.name for r in independent_rules(rules)] == ["a", "c", "d"]
