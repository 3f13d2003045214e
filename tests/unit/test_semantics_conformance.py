"""Spec conformance: readings the language shares with Sieve (cases translated from Pigeonhole's
test suite), each held by the per-message semantics and by the engine on the fake store."""

from __future__ import annotations

import datetime as dt
import logging
from zoneinfo import ZoneInfo

import pytest

from mailrules.compile.dialect import Dialect
from mailrules.dsl import ast as A
from mailrules.dsl.parser import parse_text
from mailrules.dsl.semantics import EvalContext, TemplateError, evaluate_condition, render_template
from mailrules.engine.core import Engine
from mailrules.engine.ports import AccountContext, RunOptions
from mailrules.message.view import MessageView
from mailrules.source import Span
from tests.fakes import FakeServer, FakeStore

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
CTX = EvalContext(NOW, dt.UTC)
SP = Span("t.rules", 1, 1)


def condition(text: str) -> A.Condition:
    rf, diags = parse_text(f'rule "r" {{ when {text} then flag }}', "t.rules")
    assert rf is not None and not [d for d in diags if d.severity == "error"], diags
    return rf.rules[0].condition


def holds(text: str, raw: bytes) -> bool:
    """The semantics' answer, checked against the engine's (server prefilter + residual)."""
    ok = evaluate_condition(condition(text), MessageView(raw), CTX).ok
    server = FakeServer()
    server.append("INBOX", raw)
    rf, _ = parse_text(f'rule "r" {{ when {text} then flag }}', "t.rules")
    assert rf is not None
    report = Engine(RunOptions(NOW, dt.UTC, "r")).process(
        FakeStore(server, Dialect.named("dovecot"), NOW), AccountContext("a"), "INBOX", rf.rules
    )
    assert report.rules[0].matched == int(ok), "the engine and the semantics disagree"
    return ok


# -- RFC 5228 §2.7.4: an address that is not valid matches no :domain test ----------------------


@pytest.mark.parametrize("to", ["@example.org", "<@example.org>", "Someone <@example.org>"])
def test_an_address_without_local_part_has_no_domain(to: str) -> None:
    raw = f"To: {to}\r\nSubject: s\r\n\r\nb\r\n".encode()
    assert not holds('to domain is "example.org"', raw)
    assert not holds('to domain is "org"', raw)
    assert holds('to contains "example.org"', raw)  # the header text is still there


def test_a_valid_address_keeps_its_domain() -> None:
    raw = b"To: a@example.org, @example.org\r\nSubject: s\r\n\r\nb\r\n"
    assert holds('to domain is "example.org"', raw)
    assert not holds('to domain is "example.org"', b"To: a@\r\n\r\nb\r\n")


def test_from_domain_of_an_invalid_address_cannot_be_rendered() -> None:
    v = MessageView(b"From: @example.org\r\n\r\nb\r\n")
    tpl = A.Template("{from.domain}", (A.Placeholder("from.domain", 0, SP),), SP)
    with pytest.raises(TemplateError):
        render_template(tpl, v, None, CTX)


# -- RFC 2045 §6.4: a part in an unknown transfer encoding is application/octet-stream ----------


def test_body_does_not_search_a_part_in_an_unknown_encoding() -> None:
    raw = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: x-custom\r\n\r\nhidden words\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nvisible words\r\n--b--\r\n"
    )
    assert not holds('body contains "hidden"', raw)
    assert holds('body contains "visible"', raw)
    assert not holds("body matches /hidden/", raw)


# -- RFC 5322 §2.1: without the empty line after the header, a message has no body ------------


def test_a_message_without_the_empty_line_has_no_body() -> None:
    raw = b"From: a@example.org\r\nSubject: s\r\nthis line is not a header\r\n"
    assert not holds('body contains "header"', raw)
    assert not holds('text contains "this line"', raw)
    assert holds('subject is "s"', raw)


# -- dates past the datetime range -----------------------------------------------------------------


def test_year_placeholder_of_the_last_representable_date_does_not_overflow(
    caplog: pytest.LogCaptureFixture,
) -> None:
    v = MessageView(b"Date: Fri, 31 Dec 9999 23:59:59 -2359\r\n\r\nb\r\n")
    tpl = A.Template(
        "{year}/{month}/{day}",
        (
            A.Placeholder("year", 0, SP),
            A.TemplateText("/"),
            A.Placeholder("month", 0, SP),
            A.TemplateText("/"),
            A.Placeholder("day", 0, SP),
        ),
        SP,
    )
    with caplog.at_level(logging.INFO, logger="mailrules.dsl.templates"):
        for tz in (dt.UTC, ZoneInfo("Europe/Paris"), ZoneInfo("Pacific/Kiritimati")):
            assert render_template(tpl, v, None, EvalContext(NOW, tz)) == "9999/12/31"  # as written
    assert "used as written" in caplog.text
    west = dt.timezone(-dt.timedelta(hours=23, minutes=59))
    received = MessageView(b"\r\n", internaldate=dt.datetime(9999, 12, 31, 23, 59, tzinfo=west))
    assert render_template(tpl, received, None, CTX) == "9999/12/31"


def test_tests_on_such_dates_do_not_overflow() -> None:
    far = dt.datetime(9999, 12, 31, 23, 59, tzinfo=dt.timezone(-dt.timedelta(hours=23, minutes=59)))
    v = MessageView(b"Date: Fri, 31 Dec 9999 23:59:59 -2359\r\n\r\nb\r\n", internaldate=far)
    ctx = EvalContext(NOW, ZoneInfo("Europe/Paris"))
    assert evaluate_condition(condition("received after 2024-01-01"), v, ctx).ok
    assert evaluate_condition(condition("sent on 9999-12-31"), v, ctx).ok
    assert evaluate_condition(condition("newer than 1 day"), v, ctx).ok
    assert not evaluate_condition(condition("older than 1 day"), v, ctx).ok
