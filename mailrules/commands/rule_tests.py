"""Runs the `test` blocks of a rule set offline against their .eml files (language.md §7)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from mailrules.dsl import unparse
from mailrules.dsl.ast import FlagChange, RuleSet, TestBlock, ThreadFacts
from mailrules.dsl.semantics import EvalContext, PlannedAction, evaluate_message
from mailrules.dsl.walk import gmail_only
from mailrules.message.view import MessageView

__all__ = ["TestOutcome", "format_outcomes", "run_tests"]


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


def _format_planned(p: PlannedAction) -> str:
    if p.error is not None:
        return f"{unparse.action(p.action)} (error: {p.error})"
    return unparse.action(p.action, p.destination)


def _aware(d: dt.datetime, tz: dt.tzinfo) -> dt.datetime:
    return d if d.tzinfo is not None else d.replace(tzinfo=tz)


def _run_one(rule_set: RuleSet, test: TestBlock, tz: dt.tzinfo) -> TestOutcome:
    file = test.span.file
    expected = [unparse.action(a) for a in test.expect]
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
    thread = given.thread or ThreadFacts()  # what its thread holds besides it (declared, or nothing)
    ctx = EvalContext(now=now, tz=tz, labels=given.gmail is not None, gmail=given.gmail, thread=thread)
    # A rule with a test only Gmail's search answers runs only on Gmail: the test says it is there.
    rules = [r for r in rule_set.rules if given.gmail is not None or not gmail_only(r.condition)]
    # `given ... changed`: someone else just changed its flags, which runs the `on flag change`
    # rules and only them; without it, the message is seen as a run or an arrival sees it.
    rules = [r for r in rules if isinstance(r.trigger, FlagChange) == given.changed]
    try:
        planned = evaluate_message(
            rules, view, account=given.account, mailbox=given.mailbox or "INBOX", ctx=ctx
        )
    except Exception as exc:  # a bug, not a user error: report it on the test, not as a traceback
        return TestOutcome(test, file, False, expected, [], f"evaluation failed: {exc!r}")
    actual = [_format_planned(p) for p in planned]
    return TestOutcome(test, file, actual == expected, expected, actual, None)


def run_tests(rule_set: RuleSet, *, tz: dt.tzinfo = dt.UTC) -> list[TestOutcome]:
    """Run every `test` block of `rule_set` with all its rules, whatever their trigger, but for
    `on flag change` rules, which run on (and only on) a test that says `given ... changed`.

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
        lines.append(f"{o.test.span}: test {unparse.quote(o.test.name)} failed")
        if o.error is not None:
            lines.append(f"    error:    {o.error}")
        lines.append(f"    expected: {', '.join(o.expected) or 'keep'}")
        actual = ", ".join(o.actual) or "keep"
        lines.append(f"    actual:   {actual if o.error is None else '(not run)'}")
    passed = sum(o.passed for o in outcomes)
    lines.append(f"{passed} passed, {len(outcomes) - passed} failed")
    return "\n".join(lines)
