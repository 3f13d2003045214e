"""Address parts (`from user is`, `to detail is`, `localpart`) and `envelope to|from` (issue 16)."""

from __future__ import annotations

import datetime as dt

import pytest

from mailrules.compile import Dialect, plan_condition
from mailrules.compile.explain import explain_plan
from mailrules.dsl import ast as A
from mailrules.dsl.parser import parse_text
from mailrules.dsl.semantics import EvalContext, address_parts, evaluate_condition
from mailrules.message.view import MessageView

NOW = dt.datetime(2026, 1, 5, 12, 0, tzinfo=dt.UTC)
CTX = EvalContext(NOW, dt.UTC)

MESSAGE = (
    b"Return-Path: <bounces+1234@mail.shop.example>\r\n"
    b"Delivered-To: ada+receipts@example.org\r\n"
    b"X-Original-To: ada+shop@example.org\r\n"
    b"From: Shop <orders+eu@shop.example>\r\n"
    b"To: Ada <ada+shop@example.org>, bob@example.org\r\n"
    b"Cc: team+@example.org\r\n"
    b"Subject: your order\r\n\r\nthanks\r\n"
)


def cond(text: str) -> A.Condition:
    rf, diags = parse_text(f'rule "r" {{ when {text} then flag }}', "a.rules")
    assert rf is not None and not diags, [d.message for d in diags]
    return rf.rules[0].condition


def holds(text: str, raw: bytes = MESSAGE) -> bool:
    return evaluate_condition(cond(text), MessageView.from_bytes(raw), CTX).ok


@pytest.mark.parametrize(
    ("addr", "localpart", "user", "detail"),
    [
        ("ada+shop@example.org", "ada+shop", "ada", "shop"),
        ("ada@example.org", "ada", "ada", None),
        ("ada+@example.org", "ada+", "ada", ""),
        ("a+b+c@example.org", "a+b+c", "a", "b+c"),
        ("local-only", "local-only", "local-only", None),
        ('"a@b"@example.org', '"a@b"', '"a@b"', None),
    ],
)
def test_parts_of_an_address(addr: str, localpart: str, user: str, detail: str | None) -> None:
    assert address_parts(addr, "localpart") == localpart
    assert address_parts(addr, "user") == user
    assert address_parts(addr, "detail") == detail


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('from user is "orders"', True),
        ('from user is "orders+eu"', False),
        ('from detail is "eu"', True),
        ('from localpart is "orders+eu"', True),
        ('to detail is "shop"', True),
        ('to user is any ["carl", "bob"]', True),  # bob@example.org has no detail, but a user
        ('to detail is "example"', False),
        ('cc detail is ""', True),  # team+@: an empty detail
        ('to detail starts with "sh"', True),
        ("recipient detail matches /^(shop|receipts)$/", True),
        ("to localpart matches /^ADA\\+/", True),
        ("to localpart matches /^ADA\\+/c", False),  # parts are compared lower-cased
        ('sender user is "orders"', False),  # no Sender header
        ('not bcc detail is "x"', True),
        # the envelope: Delivered-To and X-Original-To for `to`, Return-Path for `from`
        ('envelope to is "ada+receipts@example.org"', True),
        ('envelope to detail is any ["shop"]', True),  # X-Original-To
        ('envelope to contains "receipts"', True),
        ('envelope from domain is "shop.example"', True),
        ('envelope from user is "bounces"', True),
        ('envelope from detail is "1234"', True),
        ('envelope from is "orders+eu@shop.example"', False),
    ],
)
def test_evaluation(text: str, expected: bool) -> None:
    assert holds(text) is expected


def test_a_test_of_a_missing_envelope_header_is_false() -> None:
    plain = b"From: a@example.org\r\nSubject: x\r\n\r\nbody\r\n"
    assert not holds('envelope to contains "a"', plain)
    assert not holds('envelope from user is "a"', plain)
    assert not holds('envelope from is ""', b"Return-Path: <>\r\nSubject: x\r\n\r\n")  # a bounce has none
    assert holds('not envelope to detail is "x"', plain)


def test_captures_of_a_part_feed_templates() -> None:
    rf, diags = parse_text(
        'rule "by detail" { when to detail matches /^([a-z]+)$/ then move to "Plus/{match.1}" }', "a.rules"
    )
    assert rf is not None and not diags
    m = evaluate_condition(rf.rules[0].condition, MessageView.from_bytes(MESSAGE), CTX)
    assert m.ok and m.captures == ("shop",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'subject user is "x"',
            "'user' needs an address field (bcc, cc, envelope from, envelope to, from, "
            "recipient, reply-to, sender, to), not subject",
        ),
        ('header "X-To" detail is "x"', "'detail' needs an address field"),
        ('envelope cc is "x"', "expected 'to' or 'from' after 'envelope', got 'cc'"),
        ('from usr is "x"', "unexpected 'usr'; expected an operator"),
        ('from user "x"', "expected an operator"),
    ],
)
def test_errors(text: str, message: str) -> None:
    _, diags = parse_text(f'rule "r" {{ when {text} then flag }}', "a.rules")
    assert any(message in d.message for d in diags), [d.message for d in diags]


@pytest.mark.parametrize(
    ("text", "dialect", "server", "fetch"),
    [
        ('to detail is "lists"', "dovecot", "UID SEARCH RETURN (ALL) HEADER To lists",
         "BODY.PEEK[HEADER.FIELDS (To)]"),
        ('from user is "orders"', "rfc3501", "UID SEARCH HEADER From orders",
         "BODY.PEEK[HEADER.FIELDS (From)]"),
        ("to localpart matches /^ada\\+sh/", "rfc3501", "UID SEARCH HEADER To ada+sh",
         "BODY.PEEK[HEADER.FIELDS (To)]"),
        ('to detail is ""', "rfc3501", 'UID SEARCH HEADER To ""', "BODY.PEEK[HEADER.FIELDS (To)]"),
        ('envelope to is "ada@example.org"', "rfc3501",
         "UID SEARCH OR HEADER Delivered-To ada HEADER X-Original-To ada OR HEADER Delivered-To example "
         "HEADER X-Original-To example", "BODY.PEEK[HEADER.FIELDS (Delivered-To X-Original-To)]"),
        ('envelope from domain is "shop.example"', "rfc3501",
         "UID SEARCH HEADER Return-Path shop HEADER Return-Path example",
         "BODY.PEEK[HEADER.FIELDS (Return-Path)]"),
        ('to detail is "lists"', "gmail", "UID SEARCH RETURN (ALL) ALL", "BODY.PEEK[HEADER.FIELDS (To)]"),
    ],
)  # fmt: skip
def test_plans(text: str, dialect: str, server: str, fetch: str) -> None:
    d = Dialect.named(dialect)
    lines = explain_plan(plan_condition(cond(text), d, NOW, dt.UTC), d).splitlines()
    assert lines[0] == f"server:   {server}"
    assert lines[1].startswith(f"residual: {text} (checked on the fetched ")
    assert lines[2] == f"fetch:    {fetch}"
