"""Ordered groups of scheduled rules (issue 16): `group "NAME" TRIGGER { rule ... }`."""
# ruff: noqa: E501

from __future__ import annotations

import pytest

from mailrules.commands.run import select_rules
from mailrules.dsl import ast as A
from mailrules.dsl import unparse
from mailrules.dsl.check import check_rule_set
from mailrules.dsl.parser import parse_text
from mailrules.errors import MailrulesError

SWEEP = """\
group "hourly sweep" every hour {
    rule "read newsletters" {
        when header "List-Unsubscribe" exists
        then mark read
             move to "Later"
    }

    rule "old read mail" in "INBOX", "Later" limit 500 {
        when seen and older than 30 days
        then archive
    }
}

rule "arrival" {
    when subject contains "urgent"
    then flag
}
"""


def parse(text: str) -> tuple[A.RuleFile, list[str]]:
    rf, diags = parse_text(text, "g.rules")
    assert rf is not None
    return rf, [d.message for d in diags]


def test_the_rules_of_a_group_carry_its_name_and_trigger() -> None:
    rf, diags = parse(SWEEP)
    assert diags == []
    assert [(r.name, r.group, unparse.trigger(r.trigger)) for r in rf.rules] == [
        ("read newsletters", "hourly sweep", "every 1 hour"),
        ("old read mail", "hourly sweep", "every 1 hour"),
        ("arrival", None, "on arrival"),
    ]
    assert rf.rules[1].mailboxes == ("INBOX", "Later") and rf.rules[1].limit == 500


def test_a_group_is_written_back_as_a_group() -> None:
    rf, _ = parse(SWEEP)
    text = unparse.rule_file(rf)
    assert text.startswith('group "hourly sweep" every 1 hour {\n    rule "read newsletters" {\n')
    back, diags = parse(text)
    assert diags == [] and unparse.rule_file(back) == text
    assert [(r.name, r.group) for r in back.rules] == [(r.name, r.group) for r in rf.rules]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('group "g" on arrival { rule "a" { then flag } }',
         "a group runs on a schedule (every ..., cron ...), not 'on arrival': arrival rules already run together, in order"),
        ('group "g" manually { rule "a" { then flag } }', "not 'manually'"),
        ('group "g" every hour { rule "a" every day at 03:00 { then flag } }',
         'rule "a" is in group "g": it runs on the group\'s schedule; remove its own trigger'),
        ('group "g" every hour { rule "a" on arrival { then flag } }', "remove its own trigger"),
        ('group "" every hour { rule "a" { then flag } }', "group name is empty"),
        ('group "g" every hour { }', "unexpected '}'; expected 'rule'"),
        ('group "g" { rule "a" { then flag } }', "expected a trigger"),
    ],
)  # fmt: skip
def test_errors(text: str, message: str) -> None:
    _, diags = parse(text)
    assert any(message in d for d in diags), diags


def test_an_error_in_one_group_leaves_the_others() -> None:
    text = (
        'group "a" every hour {\n    rule "a1" { when seen then flag }\n}\n'
        'group "b" every hour {\n    rule "b1" { when then flag }\n    rule "b2" { then flag }\n}\n'
        'rule "c" { then flag }\n'
    )
    rf, diags = parse(text)
    assert diags == ["unexpected 'then'; expected a condition"]
    assert [r.name for r in rf.rules] == ["a1", "c"]  # group "b" is dropped whole


def checked(text: str) -> list[str]:
    rf, diags = parse(text)
    assert diags == []
    return [d.message for d in check_rule_set(A.RuleSet((rf,)))]


def test_a_group_written_twice() -> None:
    text = (
        'group "g" every hour { rule "a" { then flag } }\n'
        'rule "b" every hour { then flag }\n'
        'group "G" every hour { rule "c" { then flag } }\n'
    )
    assert checked(text) == ['group "G" is written twice (first at g.rules:1:29); give each its own name']


def test_never_sees_a_message_follows_the_order_rules_really_run_in() -> None:
    # in a group, as among arrival rules: an earlier rule that takes everything hides the later
    grouped = (
        'group "g" every hour {\n'
        '    rule "first" { when seen then delete }\n'
        '    rule "second" { when seen and flagged then flag }\n'
        "}\n"
    )
    assert checked(grouped) == [
        'rule "second" never sees a message: rule "first" (g.rules:2:5) matches everything it matches '
        "first and takes it away"
    ]
    # outside a group each scheduled rule runs alone, even on the same schedule: no warning
    alone = (
        'rule "first" every hour { when seen then delete }\n'
        'rule "second" every hour { when seen and flagged then flag }\n'
    )
    assert checked(alone) == []
    # two groups on the same schedule are two firings: neither hides the other's messages
    two = grouped + 'group "h" every hour { rule "third" { when seen then flag } }\n'
    assert len(checked(two)) == 1


def test_mailrules_run_selects_a_group_by_name() -> None:
    rf, _ = parse(SWEEP)
    assert [r.name for r in select_rules(rf.rules, ["HOURLY SWEEP"])] == ["read newsletters", "old read mail"]
    assert [r.name for r in select_rules(rf.rules, ["arrival", "hourly sweep"])] == [
        "read newsletters", "old read mail", "arrival",
    ]  # fmt: skip
    with pytest.raises(MailrulesError, match="no rule named 'nope'"):
        select_rules(rf.rules, ["nope"])
