"""The nesting limit of conditions at its edge (the depth is measured only when it could be over)."""

from __future__ import annotations

from mailrules.dsl.parser import parse_text

TOO_DEEP = "this condition is nested more than 100 levels deep; simplify it"


def _messages(condition: str) -> list[str]:
    _, diags = parse_text('rule "r" { when ' + condition + " then stop }\n", "d.rules")
    return [d.message for d in diags]


def test_depth_100_is_allowed_101_is_not() -> None:
    assert _messages("not " * 99 + "seen") == []
    assert _messages("not " * 100 + "seen") == [TOO_DEEP]
    assert _messages("(" * 99 + "seen and flagged" + ")" * 99) == []
    assert _messages("(seen and " * 100 + "seen" + ")" * 100) == [TOO_DEEP]


def test_many_shallow_nodes_are_not_too_deep() -> None:
    wide = " or ".join(f'(from contains "a{i}" and not seen)' for i in range(150))
    assert _messages(wide) == []
    assert _messages('subject contains any ["a", "b"] and ' * 120 + "seen") == []


def test_each_rule_is_measured_on_its_own() -> None:
    shallow = " or ".join(["(seen and not flagged)"] * 80)  # 160 nodes, depth 4
    text = (
        f'rule "a" {{ when {shallow} then stop }}\n'
        f'rule "b" {{ when {"not " * 60}seen then stop }}\n'
        f'rule "c" {{ when {"not " * 101}seen then stop }}\n'
    )
    rule_file, diags = parse_text(text, "d.rules")
    assert rule_file is not None and [r.name for r in rule_file.rules] == ["a", "b"]
    assert [(d.span.line, d.message) for d in diags] == [(3, TOO_DEEP)]
