"""`on flag change` (issue 15): the trigger, its checks, and `given ... changed` in test blocks."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailrules.commands.rule_tests import run_tests
from mailrules.dsl import ast as A
from mailrules.dsl import unparse
from mailrules.dsl.check import check_rule_set
from mailrules.dsl.loader import load_rule_set
from mailrules.dsl.parser import parse_text
from mailrules.source import Diagnostic

FOLLOW_UP = 'rule "follow-up" on flag change { when flagged then copy to "Follow-up" }\n'


def parsed(text: str) -> A.RuleFile:
    rf, diags = parse_text(text, "t.rules")
    assert rf is not None and not diags, [d.message for d in diags]
    return rf


def diagnostics(text: str) -> list[Diagnostic]:
    return check_rule_set(A.RuleSet((parsed(text),)))


def test_the_trigger_parses_in_any_case_and_round_trips() -> None:
    rf = parsed(FOLLOW_UP + 'rule "x" in "Lists" ON Flag CHANGE limit 5 { when tagged "$Todo" then flag }\n')
    first, second = rf.rules
    assert isinstance(first.trigger, A.FlagChange)
    assert (first.trigger.span.line, first.trigger.span.column) == (1, 18)
    assert isinstance(second.trigger, A.FlagChange) and second.limit == 5
    text = unparse.rule_file(rf)
    assert 'rule "follow-up" on flag change {' in text
    assert 'rule "x" in "Lists" on flag change limit 5 {' in text
    again = parsed(text)
    assert [r.trigger.__class__ for r in again.rules] == [A.FlagChange, A.FlagChange]
    assert unparse.rule_file(again) == text


def test_a_group_cannot_run_on_flag_changes() -> None:
    _rf, diags = parse_text(
        'group "g" on flag change { rule "r" { when flagged then mark read } }', "t.rules"
    )
    assert [d.message for d in diags] == [
        "a group runs on a schedule (every ..., cron ...), not 'on flag change': "
        "arrival rules already run together, in order"
    ]


def test_a_rule_that_changes_what_it_tests_is_refused_with_its_place() -> None:
    (d,) = diagnostics('rule "self" on flag change { when unseen then mark read }\n')
    assert d.severity == "error"
    assert (d.span.line, d.span.column) == (1, 47)
    assert d.message.startswith(
        'rule "self" runs on flag changes and sets \\Seen, which its own condition tests'
    )
    assert "mailrules never runs a rule on its own change" in d.message


def test_keywords_compare_without_case_and_templates_count_as_any_keyword() -> None:
    (d,) = diagnostics('rule "k" on flag change { when tagged "$todo" then untag "$TODO" }\n')
    assert d.severity == "error" and 'clears the keyword "$TODO"' in d.message
    (d,) = diagnostics('rule "k" on flag change { when tagged "$x" then tag "l/{list}" }\n')
    assert d.severity == "error"


def test_the_two_rule_ping_pong_is_refused_once_naming_the_cycle() -> None:
    text = (
        'rule "A" on flag change { when flagged then mark read }\n'
        'rule "B" on flag change { when seen then flag }\n'
    )
    (d,) = diagnostics(text)
    assert d.severity == "error" and (d.span.line, d.span.column) == (1, 45)
    assert 'flag-change rules set each other off: "A" -> "B" -> "A"' in d.message


def test_no_cycle_on_different_mailboxes_or_accounts() -> None:
    text = (
        'rule "A" on flag change { when flagged then mark read }\n'
        'rule "B" in "Work" on flag change { when seen then flag }\n'
        'rule "C" for account "a" on flag change { when seen then flag }\n'
        'rule "D" for account "b" on flag change { when flagged then mark read }\n'
    )
    errors = [d for d in diagnostics(text) if d.severity == "error"]
    # A and C share INBOX and every account (A has no `for account`): that is a cycle; C and D not.
    assert [(d.span.line, d.message.split(":")[1].split(";")[0].strip()) for d in errors] == [
        (1, '"A" -> "C" -> "A" (each changes a flag or keyword the next one tests, on the same mailbox)')
    ]


def test_other_rules_changing_what_a_flag_change_rule_tests_get_a_warning() -> None:
    (d,) = diagnostics(FOLLOW_UP + 'rule "arr" { when subject contains "x" then flag }\n')
    assert d.severity == "warning" and (d.span.line, d.span.column) == (2, 45)
    assert (
        'which flag-change rule "follow-up" (t.rules:1:1) tests; it will not run on this change' in d.message
    )


def test_copies_and_flags_nobody_tests_are_fine() -> None:
    text = FOLLOW_UP + 'rule "r" on flag change { when flagged then mark read, copy to "INBOX/x" }\n'
    assert diagnostics(text) == []


@pytest.mark.parametrize(
    ("given", "actual"),
    [
        ("flags seen, flagged changed", ['copy to "Follow-up"']),
        ("flags flagged", ['tag "$New"']),  # not a flag change: only the arrival rule runs
        ("changed", []),  # changed, to no flags: the flag-change rule runs and does nothing
    ],
)
def test_test_blocks_say_changed(tmp_path: Path, given: str, actual: list[str]) -> None:
    sample = Path(__file__).parents[2] / "rules.d" / "samples" / "from-mum.eml"
    (tmp_path / "m.eml").write_bytes(sample.read_bytes())
    expect = ", ".join(actual) or "keep"
    text = (
        FOLLOW_UP
        + 'rule "arrival" { when all then tag "$New" }\n'
        + f'test "t" {{ given "m.eml" {given} expect {expect} }}\n'
    )
    (tmp_path / "t.rules").write_text(text, encoding="utf-8")
    result = load_rule_set(tmp_path)
    assert result.ok, result.render()
    assert [(o.passed, o.actual) for o in run_tests(result.rule_set)] == [(True, actual)]
    assert unparse.given(result.rule_set.tests[0].given) == f'given "m.eml" {given}'


def test_changed_is_a_given_clause_in_syntax_errors() -> None:
    _rf, diags = parse_text('test "t" { given "m.eml" changed changed expect keep }', "t.rules")
    assert [d.message for d in diags] == ["'changed' is given twice"]


def test_a_flag_change_rule_is_shadowed_only_by_an_earlier_flag_change_rule() -> None:
    text = (
        'rule "arrival" { when all then move to "X" }\n'
        'rule "f1" on flag change { when flagged then move to "Y" }\n'
        'rule "f2" on flag change { when flagged and seen then copy to "Z" }\n'
    )
    (d,) = [d for d in diagnostics(text) if "never sees" in d.message]
    assert d.severity == "warning" and d.message.startswith('rule "f2" never sees a message: rule "f1"')


def test_explain_says_what_a_flag_change_rule_runs_on_and_refuses_it_without_condstore() -> None:
    import datetime as dt

    from mailrules.commands.explain import explain_rule
    from mailrules.compile.dialect import Dialect

    (rule,) = parsed(FOLLOW_UP).rules
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    text = explain_rule(rule, Dialect(condstore=True), now=now, tz=dt.UTC)
    assert "trigger:  on flag change (the messages someone else changed" in text
    assert "refused" not in text and "search:" in text
    text = explain_rule(rule, Dialect(), now=now, tz=dt.UTC)
    assert "refused:  the server lacks CONDSTORE (RFC 7162), which `on flag change` needs" in text
