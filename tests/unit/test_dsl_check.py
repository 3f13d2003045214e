"""Semantic checks: cron validation, never-matching conditions, shadowing, templates, test blocks."""

from __future__ import annotations

import pytest

from mailrules.dsl import ast
from mailrules.dsl.check import check_rule_set
from mailrules.dsl.check_logic import contradiction, shape
from mailrules.dsl.cron import cron_problem
from mailrules.dsl.parser import parse_text
from mailrules.source import Diagnostic


def check(text: str) -> list[Diagnostic]:
    rule_file, diags = parse_text(text, "c.rules")
    assert not diags, [d.message for d in diags]
    assert rule_file is not None
    return check_rule_set(ast.RuleSet((rule_file,), {"c.rules": text}), {"c.rules": text})


def messages(text: str, severity: str | None = None) -> list[str]:
    return [d.message for d in check(text) if severity is None or d.severity == severity]


def cond_of(text: str) -> ast.Condition:
    rule_file, _ = parse_text(f'rule "r" {{ when {text} then stop }}', "c.rules")
    assert rule_file is not None
    return rule_file.rules[0].condition


@pytest.mark.parametrize(
    "expr",
    [
        "* * * * *",
        "*/5 8-18 * * mon-fri",
        "0 3 1,15 jan,jul 0",
        "0 0 * * 7",
        "15-45/10 */2 1-31 1-12 sun",
        "0 9 * * MON",
    ],
)
def test_valid_cron(expr: str) -> None:
    assert cron_problem(expr) is None


@pytest.mark.parametrize(
    ("expr", "fragment"),
    [
        ("* * * *", "expected 5 fields"),
        ("60 * * * *", "minute field: 60 is out of range 0-59"),
        ("* 24 * * *", "hour field: 24"),
        ("* * 0 * *", "day of month field: 0"),
        ("* * * 13 * ", "month field: 13"),
        ("* * * * 8", "day of week field: 8"),
        ("*/0 * * * *", "step '0'"),
        ("5-1 * * * *", "range 5-1 goes backwards"),
        ("* * * foo *", "'foo' is not a number or a name"),
        ("1,,2 * * * *", "empty item"),
        ("@daily", "expected 5 fields"),
        ("? * * * *", "'?' is not a number"),
    ],
)
def test_invalid_cron(expr: str, fragment: str) -> None:
    problem = cron_problem(expr)
    assert problem is not None and fragment in problem


@pytest.mark.parametrize(
    "text",
    [
        "seen and unseen",
        "flagged and not flagged",
        "not all",
        "size > 10 MB and size < 1 MB",
        "size >= 5 and size <= 4",
        "older than 20 days and newer than 10 days",
        "older than 2 years and newer than 12 months",
        "received before 2020-01-01 and received after 2021-01-01",
        "sent on 2020-01-01 and sent on 2020-01-02",
        'subject is "a" and not subject is "a"',
        "(seen and unseen) or not all",
        "draft and (seen and unseen)",
    ],
)
def test_never_matches(text: str) -> None:
    assert contradiction(cond_of(text)) is not None


@pytest.mark.parametrize(
    "text",
    [
        "seen or unseen",
        "older than 10 days and newer than 20 days",
        "size > 1 MB and size < 10 MB",
        "older than 11 months and newer than 1 year",
        "received after 2020-01-01 and received before 2020-01-03",
        "received before 2020-01-01 and sent after 2021-01-01",
        "not (seen and unseen)",
        "all",
    ],
)
def test_can_match(text: str) -> None:
    assert contradiction(cond_of(text)) is None


def test_shape_ignores_spans() -> None:
    assert shape(cond_of('from is "a" and seen')) == shape(cond_of('from   is "a"\n and seen'))
    assert shape(cond_of('from is "a"')) != shape(cond_of('from is "b"'))


SHADOW = (
    'rule "first" {head} {{ when {cond} then {action} }}\n'
    'rule "second" {head2} {{ when {cond2} then flag }}\n'
)


@pytest.mark.parametrize(
    ("head", "cond", "action", "head2", "cond2", "shadowed"),
    [
        ("", "all", 'move to "X"', "", "seen", True),
        ("", "seen", "delete", "", "seen", True),
        ("", "seen", "stop", "", "flagged and seen", True),
        ("", "seen and draft", "archive", "", "seen", False),
        ("", "seen", "flag", "", "seen", False),
        ("", "seen", 'copy to "X"', "", "seen", False),
        ("limit 5", "seen", "delete", "", "seen", False),
        ("", "seen", "delete", 'in "Work"', "seen", False),
        ('in "Work", "INBOX"', "seen", "delete", 'in "inbox"', "seen", True),
        ('for account "a"', "seen", "delete", "", "seen", False),
        ('for account "a", "b"', "seen", "delete", 'for account "b"', "seen", True),
        ("manually", "seen", "delete", "manually", "seen", False),
        # scheduled rules outside a group run alone: neither sees the other's moves
        ("every 5 minutes", "seen", "delete", "every 5 minutes", "seen", False),
        ("every 5 minutes", "seen", "delete", "every 10 minutes", "seen", False),
        ("", "seen", "delete", "every 5 minutes", "seen", False),
        ("", "seen or draft", "delete", "", "draft or seen", False),
    ],
)
def test_shadowing(head: str, cond: str, action: str, head2: str, cond2: str, shadowed: bool) -> None:
    text = SHADOW.format(head=head, cond=cond, action=action, head2=head2, cond2=cond2)
    warnings = [m for m in messages(text, "warning") if "never sees a message" in m]
    assert bool(warnings) == shadowed, text
    if shadowed:
        assert warnings[0].startswith('rule "second" never sees a message: rule "first" (c.rules:1:1)')


def test_match_groups_count_across_regexes() -> None:
    ok = 'rule "r" { when subject matches /(a)/ or list matches /(b)(c)/ then move to "x/{match.2}" }'
    assert messages(ok) == []
    bad = 'rule "r" { when subject matches /(?:a)/ then move to "x/{match.1}" }'
    assert messages(bad) == [
        "{match.1} cannot be filled: this rule's regular expressions have no capture groups"
    ]
    attachment = r'rule "r" { when attachment name matches /(.*)\.pdf/ then move to "x/{match.1}" }'
    assert messages(attachment) == []


def test_regex_flags_are_used_to_compile() -> None:
    assert messages(r'rule "r" { when subject matches /a  # comment/x then stop }') == []
    assert messages('rule "r" { when subject matches /[/ then stop }')[0].startswith(
        "invalid regular expression"
    )


def test_addresses() -> None:
    assert messages('rule "r" { then forward to "a@b.org", redirect to "x.y+z@sub.example.com" }') == []
    for bad in ("a@b@c", "no-at", "Bob <b@c.org>", "a b@c.org", "@c.org", "a@"):
        assert messages(f'rule "r" {{ then forward to "{bad}" }}'), bad


def test_stop_then_more_is_a_warning_only_in_rules() -> None:
    text = 'rule "r" { then stop, flag }\n'
    diags = check(text)
    assert [(d.severity, d.span.column) for d in diags] == [("warning", 23)]


def test_empty_mailbox_template() -> None:
    assert messages('rule "r" { then move to "" }') == ["mailbox name is empty"]
    assert messages('rule "r" { then copy to "{year}" }') == []
    assert messages('rule "r" { then move to "A\\\\B" }') == []


def test_deep_nesting_is_refused_not_a_recursion_error() -> None:
    deep = 'rule "r" { when ' + "not " * 3000 + "seen then stop }"
    rule_file, diags = parse_text(deep, "c.rules")
    assert [d.message for d in diags] == ["this condition is nested more than 100 levels deep; simplify it"]
    assert rule_file is not None and rule_file.rules == ()
    ok = 'rule "r" { when ' + "(seen and " * 50 + "seen" + ")" * 50 + " then stop }"
    assert check(ok) == []


def test_gmail_label_names_parse_with_a_warning() -> None:
    # A Gmail label may hold spaces and non-ASCII; an IMAP keyword cannot: only Gmail takes it.
    text = 'rule "r" { when all then tag "Label with spaces"; untag "Réunions"; tag "$Fine" }'
    warned = messages(text, "warning")
    assert warned == [
        "keyword 'Label with spaces' contains ' ', which an IMAP keyword cannot contain: "
        "only Gmail takes it, as a label; on any other server this action fails",
        "keyword 'Réunions' contains 'é', which an IMAP keyword cannot contain: "
        "only Gmail takes it, as a label; on any other server this action fails",
    ]
    assert messages(text, "error") == []


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("", "keyword is empty"),
        ("  ", "keyword is empty"),
        ("\\\\Seen", "'\\\\Seen' is a system flag; use seen, flagged, answered, draft or deleted"),
    ],
)
def test_names_no_server_takes_stay_errors(name: str, error: str) -> None:
    _, diags = parse_text(f'rule "r" {{ when all then tag "{name}" }}', "c.rules")
    assert [d.message for d in diags] == [error]


def test_label_problem_refuses_control_characters() -> None:
    from mailrules.dsl.lexemes import label_problem

    assert label_problem("Work/Projects 2026") is None
    assert label_problem("a\tb") == "keyword 'a\\tb' contains a control character (U+0009)"
    assert label_problem("a\x7fb") == "keyword 'a\\x7fb' contains a control character (U+007F)"
