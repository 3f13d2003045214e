"""Gmail's search in the language (issue 16): `gmail search "..."`, `category is "..."`, test blocks."""
# ruff: noqa: E501

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from mailrules.commands.explain import explain_rule
from mailrules.commands.rule_tests import run_tests
from mailrules.compile import Dialect, plan_condition
from mailrules.compile import keys as K
from mailrules.compile.refusal import ServerOnlyError, server_refusal
from mailrules.compile.serialize import render, serialize
from mailrules.dsl import ast as A
from mailrules.dsl import unparse
from mailrules.dsl.check import check_rule_set
from mailrules.dsl.loader import load_rule_set
from mailrules.dsl.parser import parse_text
from mailrules.dsl.semantics import EvalContext, evaluate_condition, evaluate_message
from mailrules.dsl.semantics import ServerOnlyError as NoAnswer
from mailrules.engine.core import Engine
from mailrules.engine.ports import AccountContext, RunOptions
from mailrules.imap.store import ImapStore
from mailrules.message.view import MessageView
from tests.fakes import FakeServer, FakeStore, RecordingSender
from tests.unit.test_gmail_dialect import gmail_session

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
GMAIL, DOVECOT = Dialect.named("gmail"), Dialect.named("dovecot")


def rules_of(text: str) -> tuple[A.Rule, ...]:
    rf, diags = parse_text(text, "g.rules")
    assert rf is not None and not diags, [d.message for d in diags]
    return rf.rules


def cond(text: str) -> A.Condition:
    return rules_of(f'rule "r" for account "g" {{ when {text} then archive }}')[0].condition


def checked(text: str) -> list[tuple[str, str]]:
    rf, diags = parse_text(text, "g.rules")
    assert rf is not None and not diags, [d.message for d in diags]
    return [(d.severity, d.message) for d in check_rule_set(A.RuleSet((rf,)))]


# -- the language -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ('GMAIL Search "category:promotions older_than:1y"', 'gmail search "category:promotions older_than:1y"'),
        ('category IS "Promotions"', 'category is "promotions"'),
        ('category is any ["social", "forums"]', 'category is "social" or category is "forums"'),
        ('not category is "primary" and seen', 'not category is "primary" and seen'),
    ],
)  # fmt: skip
def test_spelling(written: str, canonical: str) -> None:
    assert unparse.condition(cond(written)) == canonical
    assert unparse.condition(cond(canonical)) == canonical


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('category is "promo"', "unknown Gmail category 'promo'; did you mean 'promotions'?"),
        ('category is "spam"', "unknown Gmail category 'spam'; expected primary, social, promotions, updates, forums"),
        ('gmail search ""', "the Gmail search is empty"),
        ('gmail "x"', "unexpected string"),
        ('category contains "x"', "unexpected 'contains'; expected 'is'"),
    ],
)  # fmt: skip
def test_errors(text: str, message: str) -> None:
    _, diags = parse_text(f'rule "r" {{ when {text} then flag }}', "g.rules")
    assert any(message in d.message for d in diags), [d.message for d in diags]


def test_a_gmail_rule_names_its_accounts() -> None:
    assert checked('rule "r" { when category is "social" then archive }') == [
        ("error", "category is \"social\" is answered by Gmail's search alone: name the rule's Gmail accounts "
                  'with `for account "..."` (on any other server the rule is refused)'),
    ]  # fmt: skip
    assert checked('rule "r" for account "g" { when category is "social" then archive }') == []


@pytest.mark.parametrize(
    ("condition", "problem"),
    [
        ('category is "social" and subject contains "x"', None),  # and: the server's part, exact
        ('category is "social" or category is "forums" or flagged', None),
        ('not category is "social"', None),
        ('(category is "social" or size > 1 MB) and not tagged "$Done"', None),
        ('category is "social" or subject contains "x"', 'subject contains "x"'),
        ('not (gmail search "is:important" and older than 2 days)', "older than 2 days"),
        ('category is "social" or header "X-Spam" exists', 'header "X-Spam" exists'),
    ],
)
def test_gmail_tests_sit_where_the_server_answers_the_whole_branch(
    condition: str, problem: str | None
) -> None:
    found = checked(f'rule "r" for account "g" {{ when {condition} then archive }}')
    if problem is None:
        assert found == []
    else:
        (only,) = found
        assert only[0] == "error" and f"with {problem}, which is checked here" in only[1]


# -- the planner --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "search"),
    [
        ('gmail search "category:promotions older_than:1y"', 'X-GM-RAW "category:promotions older_than:1y"'),
        ('category is "promotions"', "X-GM-RAW category:promotions"),
        ('not category is "primary"', "NOT X-GM-RAW category:primary"),
        ('category is any ["social", "forums"] and seen', "OR X-GM-RAW category:social X-GM-RAW category:forums SEEN"),
    ],
)  # fmt: skip
def test_gmail_plans_are_exact(text: str, search: str) -> None:
    plan = plan_condition(cond(text), GMAIL, NOW, dt.UTC)
    assert render(serialize(plan.server)) == search
    assert plan.exact and plan.needs.nothing


def test_elsewhere_the_rule_is_refused_with_the_reason() -> None:
    c = cond('subject contains "x" and category is "social"')
    assert server_refusal(c, GMAIL) is None
    why = 'category is "social" needs Gmail\'s search (X-GM-RAW), which this server (dovecot) does not offer (no X-GM-EXT-1)'
    assert server_refusal(c, DOVECOT) == why
    with pytest.raises(ServerOnlyError, match=r"g\.rules:1: category is"):
        plan_condition(c, DOVECOT, NOW, dt.UTC)
    (rule,) = rules_of('rule "r" for account "g" { when category is "social" then archive }')
    text = explain_rule(rule, DOVECOT, now=NOW, tz=dt.UTC)
    assert f"  refused:  {why}: the rule does not run on such a server" in text


def test_there_is_no_local_reading() -> None:
    view = MessageView.from_bytes(b"Subject: x\r\n\r\nbody\r\n")
    with pytest.raises(NoAnswer, match="answered by Gmail's search only"):
        evaluate_condition(cond('category is "social"'), view, EvalContext(NOW, dt.UTC))


# -- test blocks declare what Gmail answers -----------------------------------------------------------

RULES = """
rule "promotions" for account "gmail" {
    when category is "promotions"
    then archive
}

rule "old social" for account "gmail" {
    when gmail search "category:social  older_than:1y"
    then delete
}

rule "labels" for account "gmail" {
    when subject matches /invoice/
    then tag "Bills/{match.0}"
}

rule "updates" for account "gmail" {
    when gmail search "Category:Updates"
    then mark read
}

rule "everyone" {
    when subject contains "hello"
    then flag
}

test "a promotion" {
    given "m.eml" gmail category promotions
    expect archive
}

test "old social, declared by its query" {
    given "m.eml" gmail category social search "CATEGORY:social older_than:1y"
    expect delete
}

test "social by category alone is not the query" {
    given "m.eml" gmail category social
    expect keep
}

test "category:X as a query follows the category" {
    given "c.eml" gmail category updates
    expect mark read
}

test "not on gmail: the gmail rules do not run" {
    given "m.eml"
    expect keep
}

test "flagged everywhere" {
    given "hello.eml" gmail category primary
    expect flag
}
"""


def test_test_blocks(tmp_path: Path) -> None:
    (tmp_path / "m.eml").write_bytes(b"From: a@example.com\r\nSubject: news\r\n\r\nbody\r\n")
    (tmp_path / "c.eml").write_bytes(b"From: a@example.com\r\nSubject: x\r\n\r\nbody\r\n")
    (tmp_path / "hello.eml").write_bytes(b"From: a@example.com\r\nSubject: hello\r\n\r\nbody\r\n")
    (tmp_path / "g.rules").write_text(RULES, encoding="utf-8")
    result = load_rule_set(tmp_path)
    assert result.ok, result.render()
    outcomes = run_tests(result.rule_set)
    assert [(o.test.name, o.passed, o.error) for o in outcomes if not o.passed] == []
    given = result.rule_set.tests[1].given
    assert unparse.given(given) == (
        'given "m.eml" gmail category social search "CATEGORY:social older_than:1y"'
    )


# -- the engine ----------------------------------------------------------------------------------------


def test_the_engine_refuses_the_rule_on_another_server_and_runs_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = FakeServer()
    server.append("INBOX", b"From: a@example.com\r\nSubject: hello\r\nMessage-ID: <1@t>\r\n\r\nbody\r\n")
    rules = rules_of(
        'rule "promos" for account "acct" { when category is "promotions" then delete }\n'
        'rule "hello" { when subject contains "hello" then flag }\n'
    )
    store = FakeStore(server, DOVECOT, NOW)
    report = Engine(RunOptions(NOW, dt.UTC, "run1")).process(
        store, AccountContext("acct", sender=RecordingSender()), "INBOX", rules
    )
    assert [(r.rule, dict(r.outcomes)) for r in report.rules] == [
        ("promos", {"rule failed": 1}),
        ("hello", {"flag ok": 1}),
    ]
    assert report.failed == 1
    assert (
        'g.rules:1: rule "promos": not run in acct/INBOX: category is "promotions" needs Gmail\'s search'
        in caplog.text
    )
    assert [m.flags for m in server.mailbox("INBOX").messages.values()] == [{"\\Flagged"}]


@pytest.mark.parametrize("arrival", [False, True])
def test_on_gmail_the_server_answers(arrival: bool) -> None:
    # `has:attachment` is a query the fake's reference reads as Gmail would; the engine takes the
    # answer as it is, on arrival batches too (no local reading: the batch is searched)
    server = FakeServer()
    plain = b"From: a@example.com\r\nSubject: a\r\nMessage-ID: <1@t>\r\n\r\nbody\r\n"
    attached = (
        b"From: a@example.com\r\nSubject: b\r\nMessage-ID: <2@t>\r\nContent-Type: multipart/mixed; boundary=B\r\n"
        b"\r\n--B\r\nContent-Type: text/plain\r\n\r\nx\r\n--B\r\nContent-Type: application/pdf\r\n"
        b'Content-Disposition: attachment; filename="a.pdf"\r\n\r\ny\r\n--B--\r\n'
    )
    server.append("INBOX", plain)
    server.append("INBOX", attached)
    rules = rules_of('rule "r" for account "acct" { when gmail search "has:attachment" then mark read }')
    store = FakeStore(server, GMAIL, NOW)
    uids = sorted(server.mailbox("INBOX").messages) if arrival else None
    Engine(RunOptions(NOW, dt.UTC, "run1")).process(
        store, AccountContext("acct", sender=RecordingSender()), "INBOX", rules, uids
    )
    flags = [m.flags for m in server.mailbox("INBOX").messages.values()]
    assert flags == [set(), {"\\Seen"}]
    assert "SEARCH" in store.commands


def test_the_documented_gmail_command_goes_out() -> None:
    def handler(tag: bytes, cmd: bytes) -> list[bytes]:
        return [b"* SEARCH 3 7", tag + b" OK SEARCH (Success)"]

    s, imap, _ = gmail_session(handler, "IMAP4rev1 X-GM-EXT-1")
    plan = plan_condition(
        cond('category is "promotions" and gmail search "older_than:1y"'), GMAIL, NOW, dt.UTC
    )
    assert ImapStore(s).search(plan.server) == [3, 7]
    assert imap.commands == [b"T1 UID SEARCH X-GM-RAW category:promotions X-GM-RAW older_than:1y"]
    assert plan.server == K.and_(K.GmRaw("category:promotions"), K.GmRaw("older_than:1y"))


# -- Gmail actions: importance, system labels, any label ------------------------------------------------


def test_mark_important_spelling() -> None:
    (rule,) = rules_of('rule "r" { then mark important, mark NOT Important }')
    assert rule.actions == (
        A.SetFlag("\\Important", True, rule.actions[0].span),
        A.SetFlag("\\Important", False, rule.actions[1].span),
    )
    assert [unparse.action(a) for a in rule.actions] == ["mark important", "mark not important"]
    _, diags = parse_text('rule "r" { then mark not read }', "g.rules")
    assert [d.message for d in diags] == ["unexpected 'read'; expected 'important'"]


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ('tag "\\\\Important"', [("warning", "'\\\\Important' is a Gmail system label: only Gmail has it; on any other server this action fails")]),
        ('tag "\\\\Starred" untag "\\\\Inbox"', [("warning", "'\\\\Starred' is a Gmail system label: only Gmail has it; on any other server this action fails"),
                                              ("warning", "'\\\\Inbox' is a Gmail system label: only Gmail has it; on any other server this action fails")]),
        ('tag "Réunions"', [("warning", "keyword 'Réunions' contains 'é', which an IMAP keyword cannot contain: only Gmail takes it, as a label; on any other server this action fails")]),
        ("mark important", []),
    ],
)  # fmt: skip
def test_labels_of_any_name(text: str, found: list[tuple[str, str]]) -> None:
    assert checked(f'rule "r" {{ then {text} }}') == found


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('tag "\\\\Seen"', "'\\\\Seen' is a system flag; use seen, flagged, answered, draft or deleted"),
        ('tag "\\\\Two words"', "is no Gmail system label: those are a backslash and a word"),
        ('tagged "\\\\Flagged"', "is a system flag"),
    ],
)
def test_system_flags_stay_words(text: str, message: str) -> None:
    where = "when " + text + " then flag" if text.startswith("tagged") else "then " + text
    _, diags = parse_text(f'rule "r" {{ {where} }}', "g.rules")
    assert any(message in d.message for d in diags), [d.message for d in diags]


def test_tagged_reads_system_and_non_ascii_labels_on_gmail() -> None:
    assert render(serialize(plan_condition(cond('tagged "\\\\Important"'), GMAIL, NOW, dt.UTC).server)) == (
        "X-GM-LABELS \\Important"
    )
    plan = plan_condition(cond('tagged "Réunions"'), GMAIL, NOW, dt.UTC)
    assert plan.server == K.ALL and plan.residual is not None and plan.needs.flags  # labels fetched


@pytest.mark.parametrize("dialect", ["gmail", "dovecot"])
def test_importance_and_system_labels_in_the_engine(dialect: str) -> None:
    server = FakeServer()
    server.append("INBOX", b"From: boss@example.com\r\nSubject: a\r\nMessage-ID: <1@t>\r\n\r\nbody\r\n")
    server.append(
        "INBOX", b"From: x@example.com\r\nSubject: b\r\nMessage-ID: <2@t>\r\n\r\nbody\r\n", ["$Important"]
    )
    rules = rules_of(
        'rule "boss" { when from is "boss@example.com" then mark important, tag "\\\\Starred" }\n'
        'rule "others" { when not from is "boss@example.com" then mark not important }\n'
    )
    store = FakeStore(server, Dialect.named(dialect), NOW)
    report = Engine(RunOptions(NOW, dt.UTC, "run1")).process(
        store, AccountContext("acct", sender=RecordingSender()), "INBOX", rules
    )
    boss, other = server.mailbox("INBOX").messages.values()
    outcomes = {r.rule: dict(r.outcomes) for r in report.rules}
    if dialect == "gmail":
        assert boss.labels == {"\\Important", "\\Starred"} and boss.flags == set()
        assert outcomes["boss"] == {"mark important ok": 1, "tag ok": 1}
    else:  # RFC 8457's keyword; a Gmail system label fails with the reason
        assert boss.flags == {"$Important"} and other.flags == set()
        assert outcomes == {
            "boss": {"mark important ok": 1, "tag failed": 1},
            "others": {"mark not important ok": 1},
        }
    view = MessageView.from_bytes(b"From: boss@example.com\r\nSubject: a\r\n\r\nbody\r\n")
    planned = evaluate_message(
        rules, view, account=None, mailbox="INBOX", ctx=EvalContext(NOW, dt.UTC, labels=dialect == "gmail")
    )
    errors = [p.error for p in planned]
    assert errors[0] is None and (errors[1] is None) == (dialect == "gmail")


def test_importance_is_undone_with_the_flag_the_run_set() -> None:
    from mailrules.state import JournalEntry, plan_undo

    base = JournalEntry(
        run_id="r",
        rule="boss",
        rule_span="g.rules:1",
        account="g",
        mailbox="INBOX",
        uidvalidity=7,
        uid=1,
        message_id="<1@t>",
        action="mark important",
        detail="\\Important",
        destination=None,
        new_uidvalidity=None,
        new_uid=None,
        outcome="ok",
        error=None,
        at=NOW,
    )
    entries = [base, base._replace(uid=2, action="mark not important", detail="$Important")]
    plan = plan_undo("r", entries)
    assert [(f.where.uid, f.flag, f.add) for f in plan.flags] == [
        (2, "$Important", True),
        (1, "\\Important", False),
    ]
    assert plan.refused == ()
