"""Checks refined after review: shadowing by templated moves, actions after delete permanently, {match.0}."""

from __future__ import annotations

from mailrules.dsl.ast import RuleSet
from mailrules.dsl.check import check_rule_set
from mailrules.dsl.parser import parse_text


def diagnostics(text: str) -> list[str]:
    rf, diags = parse_text(text, "t.rules")
    assert rf is not None and not diags, diags
    return [
        f"{d.severity}: {d.message}"
        for d in check_rule_set(RuleSet((rf,), {"t.rules": text}), {"t.rules": text})
    ]


def test_a_move_that_may_fail_does_not_shadow() -> None:
    text = 'rule "l" { when all then move to "Lists/{list}" }\nrule "later" { when all then flag }'
    assert not [d for d in diagnostics(text) if "never sees" in d]


def test_a_move_that_cannot_fail_shadows() -> None:
    text = 'rule "y" { when all then move to "Y/{year}" }\nrule "later" { when all then flag }'
    assert [d for d in diagnostics(text) if "never sees" in d]


def test_actions_after_delete_permanently_are_flagged() -> None:
    out = diagnostics('rule "d" { when all then delete permanently, forward to "a@example.org" }')
    assert out == [
        "warning: this action comes after 'delete permanently' and never runs: the message is gone"
    ]


def test_match_zero_is_the_whole_match() -> None:
    assert diagnostics('rule "m" { when subject matches /bug \\d+/ then move to "Bugs/{match.0}" }') == []
