"""Runs the `test` blocks of a rule set offline against their .eml files (language.md §7)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from mailrules.dsl.ast import (
    Action,
    Archive,
    Copy,
    Delete,
    Forward,
    Move,
    Redirect,
    RuleSet,
    SetFlag,
    Stop,
    Tag,
    TestBlock,
)
from mailrules.dsl.semantics import EvalContext, PlannedAction, evaluate_message
from mailrules.message.view import MessageView

__all__ = ["TestOutcome", "format_action", "format_outcomes", "run_tests"]


@dataclass(frozen=True, slots=True)
class TestOutcome:
    """The result of one `test` block; `expected`/`actual` are canonical action strings."""

    __test__ = False  # not a pytest test class, despite the name

    test: TestBlock
    file: str
    passed: bool
    expected: list[str]
    actual: list[str]
    error: str | None = None


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_action(action: Action, destination: str | None = None) -> str:
    """The canonical text of an action, e.g. `move to "GitHub"`, `mark read`, `delete permanently`.

    Mailbox actions show `destination` when given, else their template as written.
    """
    if isinstance(action, (Move, Copy, Archive)):
        verb = type(action).__name__.lower()
        if action.dest is None:
            return verb
        return f"{verb} to {_quote(destination if destination is not None else action.dest.raw)}"
    if isinstance(action, Delete):
        return "delete permanently" if action.permanently else "delete"
    if isinstance(action, SetFlag):
        if action.flag == "\\Seen":
            return "mark read" if action.on else "mark unread"
        return "flag" if action.on else "unflag"
    if isinstance(action, Tag):
        return f"{'tag' if action.on else 'untag'} {_quote(action.keyword)}"
    if isinstance(action, Forward):
        return f"forward to {_quote(action.address)}"
    if isinstance(action, Redirect):
        return f"redirect to {_quote(action.address)}"
    if isinstance(action, Stop):
        return "stop"
    raise TypeError(f"unknown action {type(action).__name__}")


def _format_planned(p: PlannedAction) -> str:
    if p.error is not None:
        return f"{format_action(p.action)} (error: {p.error})"
    return format_action(p.action, p.destination)


def _aware(d: dt.datetime, tz: dt.tzinfo) -> dt.datetime:
    return d if d.tzinfo is not None else d.replace(tzinfo=tz)


def _run_one(rule_set: RuleSet, test: TestBlock, tz: dt.tzinfo) -> TestOutcome:
    file = test.span.file
    expected = [format_action(a) for a in test.expect]
    given = test.given
    path = Path(given.path)
    if not path.is_absolute():
        path = Path(file).parent / path
    try:
        raw = path.read_bytes()
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return TestOutcome(test, file, False, expected, [], f"cannot read {path}: {reason}")
    now = _aware(given.now, tz) if given.now is not None else dt.datetime.now(tz)
    probe = MessageView.from_bytes(raw)
    if given.received is not None:
        received = _aware(given.received, tz)
    else:
        received = probe.sent_date or now
    view = MessageView.from_bytes(raw, size=len(raw), internaldate=received, flags=given.flags)
    ctx = EvalContext(now=now, tz=tz)
    try:
        planned = evaluate_message(
            rule_set.rules, view, account=given.account, mailbox=given.mailbox or "INBOX", ctx=ctx
        )
    except Exception as exc:  # a bug, not a user error: report it on the test, not as a traceback
        return TestOutcome(test, file, False, expected, [], f"evaluation failed: {exc!r}")
    actual = [_format_planned(p) for p in planned]
    return TestOutcome(test, file, actual == expected, expected, actual, None)


def run_tests(rule_set: RuleSet, *, tz: dt.tzinfo = dt.UTC) -> list[TestOutcome]:
    """Run every `test` block of `rule_set` with all its rules, whatever their trigger.

    `.eml` paths are relative to the rule file holding the test. Naive `received`/`now` values are
    read in `tz`, which is also the zone of calendar days; `received` defaults to the Date header,
    else now; `now` to the current time. Never raises for a bad test: it fails with an error.
    """
    return [_run_one(rule_set, t, tz) for t in rule_set.tests]


def format_outcomes(outcomes: list[TestOutcome]) -> str:
    """Each failure as `path:line:col: test "name" failed` with expected/actual, then a summary."""
    lines: list[str] = []
    for o in outcomes:
        if o.passed:
            continue
        lines.append(f'{o.test.span}: test "{o.test.name}" failed')
        if o.error is not None:
            lines.append(f"    error:    {o.error}")
        lines.append(f"    expected: {', '.join(o.expected) or 'keep'}")
        actual = ", ".join(o.actual) or "keep"
        lines.append(f"    actual:   {actual if o.error is None else '(not run)'}")
    passed = sum(o.passed for o in outcomes)
    lines.append(f"{passed} passed, {len(outcomes) - passed} failed")
    return "\n".join(lines)
