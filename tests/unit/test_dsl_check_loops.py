"""`check` warnings for loops: sender-chosen top-level mailboxes, self-filing rules, arrival circles."""

from __future__ import annotations

import pytest

from mailrules.dsl import ast
from mailrules.dsl.check import check_rule_set
from mailrules.dsl.check_loops import sender_picks_top_level
from mailrules.dsl.parser import parse_text
from mailrules.source import Diagnostic


def check(text: str) -> list[Diagnostic]:
    rule_file, diags = parse_text(text, "c.rules")
    assert not diags, [d.message for d in diags]
    assert rule_file is not None
    return check_rule_set(ast.RuleSet((rule_file,), {"c.rules": text}), {"c.rules": text})


def warnings(text: str) -> list[str]:
    return [d.message for d in check(text) if d.severity == "warning"]


def template(raw: str) -> ast.Template:
    rule_file, diags = parse_text(
        f'rule "r" {{ when subject matches /(a)(b)/ then move to "{raw}" }}', "c.rules"
    )
    assert rule_file is not None and not diags
    action = rule_file.rules[0].actions[0]
    assert isinstance(action, ast.Move)
    return action.dest


@pytest.mark.parametrize(
    ("raw", "picks"),
    [
        ("{list}", True),
        ("{from.domain}", True),
        ("{match.1}", True),
        ("{match.0}", True),
        ("{list}/x", True),
        ("{list}.x", True),  # "." is the separator of Courier-style servers
        ("{list}{match.2}", True),
        ("Lists/{list}", False),
        ("x{list}", False),
        ("{year}", False),  # digits: no sender writes them
        ("{year}{list}", False),
        ("{match.1}{year}/x", False),
        ("Archive/{year}", False),
        ("INBOX", False),  # static: the self-filing warning's business
    ],
)
def test_which_templates_let_the_sender_pick_the_top_level(raw: str, picks: bool) -> None:
    assert sender_picks_top_level(template(raw)) is picks
    text = f'rule "r" {{ when subject matches /(a)(b)/ then move to "{raw}" }}'
    assert any("starts with a value from the message" in m for m in warnings(text)) is picks


def test_the_sender_chosen_warning_points_at_the_template() -> None:
    text = 'rule "lists" {\n  when all\n  then copy to "{list}"\n}\n'
    (d,) = check(text)
    assert (d.severity, d.span.line, d.span.column) == ("warning", 3, 16)
    assert d.message == (
        'the mailbox name "{list}" starts with a value from the message: its sender can pick any '
        'top-level mailbox (INBOX, Trash, Junk...); put a fixed folder first, e.g. "Filed/{list}"'
    )


@pytest.mark.parametrize(
    ("rule", "warned"),
    [
        ('rule "r" { when all then copy to "INBOX" }', True),
        ('rule "r" { when all then copy to "inbox" }', True),  # INBOX in any case
        ('rule "r" in "Work" { when all then move to "Work" }', True),
        ('rule "r" in "Work" { when all then move to "Work/" }', True),  # trailing separator
        ('rule "r" in "Work" { when all then move to "work" }', False),  # other names: exact
        ('rule "r" in "A", "B" { when all then archive to "B" }', True),
        ('rule "r" in "Work" every 1 hours { when all then copy to "Work" }', True),
        ('rule "r" { when all then copy to "INBOX/sub" }', False),
        ('rule "r" { when all then move to "Filed" }', False),
    ],
)
def test_a_rule_filing_into_the_mailbox_it_reads(rule: str, warned: bool) -> None:
    found = [m for m in warnings(rule) if "files into it: this action is always skipped" in m]
    assert bool(found) is warned
    if found and "every" not in rule:
        assert found[0].endswith("(on arrival it would come in again as new mail, without end)")


def test_arrival_rules_in_a_circle() -> None:
    text = (
        'rule "out" { when from domain is "example.com" then move to "Work" }\n'
        'rule "back" in "Work" { when all then copy to "Lists" }\n'
        'rule "home" in "Lists" { when all then move to "INBOX" }\n'
        'rule "elsewhere" in "Lists" { when all then copy to "Kept" }\n'
    )
    (d,) = [d for d in check(text) if "circle" in d.message]
    assert d.message == (
        'arrival rules "out", "back", "home" file mail round a circle of mailboxes '
        '("INBOX", "Lists", "Work"): a message they all match would go round without end'
    )
    assert (d.span.line, d.span.column) == (1, 53)


@pytest.mark.parametrize(
    "second",
    [
        'rule "back" in "Work" every 10 minutes { when all then move to "INBOX" }',  # not on arrival
        'rule "back" in "Work" for account "b" { when all then move to "INBOX" }',  # other account
        'rule "back" in "Work" { when all then move to "Lists/{list}" }',  # not static
    ],
)
def test_no_circle(second: str) -> None:
    text = 'rule "out" for account "a" { when all then move to "Work" }\n' + second
    assert not [m for m in warnings(text) if "circle" in m]


def test_a_circle_within_one_account() -> None:
    text = (
        'rule "out" for account "a" { when all then move to "Work" }\n'
        'rule "back" in "Work" for account "a", "b" { when all then move to "INBOX" }\n'
    )
    assert len([m for m in warnings(text) if "circle" in m]) == 1
