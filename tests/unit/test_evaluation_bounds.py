"""Bounded evaluation: a message out of time is skipped, counted and left; the next one is filed;
and no hostile message, however built, keeps an evaluation from returning."""

from __future__ import annotations

import base64
import datetime as dt
import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailrules.bounds import Bounds, MessageBudgets
from mailrules.compile.dialect import Dialect
from mailrules.daemon.metrics import Metrics
from mailrules.dsl import ast as A
from mailrules.dsl.parser import parse_text
from mailrules.dsl.semantics import EvalContext, Match
from mailrules.engine.core import Engine
from mailrules.engine.evaluation import EVALUATION_TIME, BoundedEvaluator
from mailrules.engine.ports import AccountContext, RunOptions
from mailrules.message.view import MessageView
from tests.fakes import FakeServer, FakeStore

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
CTX = EvalContext(NOW, dt.UTC)
TIGHT = Bounds(part_text_bytes=64 * 1024, message_text_bytes=256 * 1024, evaluation_seconds=0.25)


def rules_of(text: str) -> tuple[A.Rule, ...]:
    rf, diags = parse_text(text, "t.rules")
    assert rf is not None and not [d for d in diags if d.severity == "error"], diags
    return rf.rules


RULES = rules_of(
    """
rule "slow" { when body matches /(x+x+)+y/ then move to "Slow" }
rule "plain" { when subject contains "plain" then move to "Plain" }
"""
)


def message(subject: str, body: str, message_id: str) -> bytes:
    return (
        f"From: a@example.org\r\nSubject: {subject}\r\nMessage-ID: {message_id}\r\n"
        f"Content-Type: text/plain\r\n\r\n{body}\r\n"
    ).encode()


def test_a_message_out_of_time_is_skipped_left_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    server = FakeServer()
    # The Message-ID decodes to a line break and a forged log line: it must reach the log escaped.
    forged = "=?utf-8?b?" + base64.b64encode(b"<x@y>\r\nERROR forged line").decode() + "?="
    server.append("INBOX", message("plain hostile", "x" * 30_000, forged))
    server.append("INBOX", message("plain", "nothing to see", "<ok@example.org>"))
    metrics = Metrics()
    metrics.init({"acct": ["INBOX"]}, [r.name for r in RULES])
    engine = Engine(RunOptions(NOW, dt.UTC, "r", bounds=TIGHT), observer=metrics)
    with caplog.at_level(logging.INFO):
        report = engine.process(
            FakeStore(server, Dialect.named("dovecot"), NOW), AccountContext("acct"), "INBOX", RULES
        )
    inbox = [m.raw for m in server.mailbox("INBOX").messages.values()]
    assert len(inbox) == 1 and b"plain hostile" in inbox[0]  # left in place, by both rules
    assert [b"nothing to see" in m.raw for m in server.mailbox("Plain").messages.values()] == [True]
    assert report.skipped_for == {EVALUATION_TIME: 1} and report.skipped_messages == 1
    sample = metrics.registry.get_sample_value
    assert sample("mailrules_messages_skipped_total", {"account": "acct", "reason": EVALUATION_TIME}) == 1
    warnings = [r.getMessage() for r in caplog.records if "evaluation_seconds" in r.getMessage()]
    assert len(warnings) == 1
    assert "uid 1" in warnings[0] and "\\r\\nERROR forged line" in warnings[0]
    assert "\n" not in warnings[0] and "\r" not in warnings[0]


def test_text_past_a_cap_is_counted_once_per_message() -> None:
    server = FakeServer()
    server.append("INBOX", message("big", "word " * 20_000 + "needle", "<big@x>"))  # 100 KB > 64 KB
    rules = rules_of(
        'rule "a" { when body contains "needle" then flag }\nrule "b" { when text contains "z" then flag }'
    )
    metrics = Metrics()
    metrics.init({"acct": ["INBOX"]}, ["a", "b"])
    engine = Engine(RunOptions(NOW, dt.UTC, "r", bounds=TIGHT), observer=metrics)
    store = FakeStore(server, Dialect.named("dovecot"), NOW)
    report = engine.process(store, AccountContext("acct"), "INBOX", rules)
    assert report.rules[0].matched == 0  # the needle is past the part cap
    assert report.text_cut == 1
    assert metrics.registry.get_sample_value("mailrules_message_text_cut_total", {"account": "acct"}) == 1


def test_the_budget_is_summed_over_the_rules_of_a_pass() -> None:
    budgets = MessageBudgets(2.0)
    budgets.charge(7, 1.5)
    budgets.charge(7, 0.25)
    assert budgets.spent(7) == 1.75 and budgets.spent(8) == 0.0
    assert 0.0 < budgets.start(7).remaining() <= 0.25
    ev = BoundedEvaluator(Bounds(evaluation_seconds=1.0), CTX, "acct/INBOX")
    view = MessageView(b"Subject: s\r\n\r\nbody\r\n")
    cond = rules_of('rule "r" { when subject contains "s" then flag }')[0]
    assert ev.evaluate(cond, cond.condition, view, 1) == Match(True)
    ev.budgets.charge(1, 1.0)  # earlier rules used up this message's time
    assert ev.evaluate(cond, cond.condition, view, 1) is None
    assert ev.over_time == {1}
    assert ev.evaluate(cond, cond.condition, view, 2) == Match(True)  # others are not charged


# -- no hostile message keeps an evaluation from returning ------------------------------------------

_FRAGMENTS = ("<", "<!--", "<a ", "<a b='", "</", "<?", "&amp;", "<p>x", "<script>", "x", "invoice ", "\r\n")


def _html(frags: list[str], reps: int) -> bytes:
    return ("".join(frags) * reps).encode()


_PART = st.one_of(
    st.builds(
        lambda frags, reps: b"Content-Type: text/html\r\n\r\n" + _html(frags, reps),
        st.lists(st.sampled_from(_FRAGMENTS), min_size=1, max_size=4),
        st.integers(1, 200_000),
    ),
    st.builds(
        lambda n: (
            b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + base64.encodebytes(b"x" * n)
        ),
        st.integers(0, 2_000_000),
    ),
    st.builds(lambda n: b"Content-Type: text/plain\r\n\r\n" + b"x" * n, st.integers(0, 2_000_000)),
)


@st.composite
def hostile_messages(draw: st.DrawFn) -> bytes:
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(draw(st.integers(0, 20_000))))
    headers += b"Subject: " + b"s" * draw(st.integers(0, 300_000)) + b"\r\n"
    parts = draw(st.lists(_PART, min_size=1, max_size=3))
    many = draw(st.integers(0, 500))  # many small MIME parts on top
    body = b"".join(b"--b\r\n" + p + b"\r\n" for p in parts)
    body += b"".join(b"--b\r\nContent-Type: text/html\r\n\r\n<p>%d<a \r\n" % i for i in range(many))
    return headers + b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + body + b"--b--\r\n"


HOSTILE_RULES = rules_of(
    r"""
rule "r1" { when body matches /(x+x+)+y/ then flag }
rule "r2" { when text contains "needle" or body matches /invoice.*total/s then flag }
rule "r3" { when subject matches /^(s|s)*$/ and body contains "x" then flag }
"""
)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(hostile_messages())
def test_every_evaluation_returns_a_result_or_a_limit(raw: bytes) -> None:
    # Nothing here measures time: a hang would hold the test, the deadline is what ends it.
    ev = BoundedEvaluator(Bounds(evaluation_seconds=0.2), CTX, "acct/INBOX")
    view = MessageView(raw)
    for rule in HOSTILE_RULES:
        outcome = ev.evaluate(rule, rule.condition, view, 1)
        assert isinstance(outcome, Match) or (outcome is None and 1 in ev.over_time)
