"""Unit tests of the per-message semantics: every test form, captures, ages and dates."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from mailrules.dsl import ast as A
from mailrules.dsl.semantics import EvalContext, compile_regex, evaluate_condition, subtract_age
from mailrules.message.view import AttachmentInfo, MessageView
from mailrules.source import Span

EML = Path(__file__).resolve().parent.parent / "fixtures" / "eml"
SP = Span("t.rules", 1, 1)
UTC = dt.UTC
NOW = dt.datetime(2024, 3, 31, 12, 0, tzinfo=UTC)
CTX = EvalContext(now=NOW, tz=UTC)


def F(name: str) -> A.FieldRef:
    return A.FieldRef(name, None, SP)  # type: ignore[arg-type]


def H(name: str) -> A.FieldRef:
    return A.FieldRef(None, name, SP)


def st(target: A.FieldRef, op: str, value: str) -> A.StringTest:
    return A.StringTest(target, op, value, SP)  # type: ignore[arg-type]


def rx(target: A.FieldRef, pattern: str, flags: str = "") -> A.RegexTest:
    return A.RegexTest(target, A.Regex(pattern, flags, SP), SP)


def view(name: str, **kw: Any) -> MessageView:
    return MessageView.from_file(EML / name, **kw)


def ok(cond: A.Condition, v: MessageView, ctx: EvalContext = CTX) -> bool:
    return evaluate_condition(cond, v, ctx).ok


MUM = view("from-mum.eml")
GH = view("github-pr.eml")
LIST = view("list-python.eml")
INVOICE = view("invoice.eml")


@pytest.mark.parametrize(
    ("cond", "expected"),
    [
        # address fields: contains reads the whole decoded value, display names included
        (st(F("from"), "contains", "MUM <"), True),
        (st(F("cc"), "contains", "doe, jane"), True),
        # is: equality with an addr-spec, never the display name
        (st(F("from"), "is", "MUM@family.example"), True),
        (st(F("from"), "is", "Mum"), False),
        (st(F("from"), "is", "Mum <mum@family.example>"), False),
        (st(F("cc"), "starts_with", "dad@"), True),
        (st(F("cc"), "ends_with", "@FAMILY.example"), True),
        (st(F("from"), "ends_with", ">"), False),  # addr-specs carry no brackets
        (st(F("recipient"), "is", "jane@family.example"), True),
        (st(F("to"), "is", "jane@family.example"), False),
        (st(F("bcc"), "contains", ""), False),  # a missing header is false, even for ""
        (st(F("reply-to"), "ends_with", "x"), False),
        # other fields: decoded value
        (st(F("subject"), "is", "  sunday LUNCH?  "), False),  # the needle is not stripped
        (st(F("subject"), "is", "sunday lunch?"), True),
        (st(F("subject"), "starts_with", "SUN"), True),
        (st(F("subject"), "ends_with", "lunch?"), True),
        (st(F("subject"), "contains", "Lunch"), True),
        (st(F("body"), "contains", "ARE YOU"), True),
        (st(F("text"), "contains", "subject: sunday"), True),
        (st(F("text"), "contains", "are you coming"), True),
        (st(F("list"), "is", "x"), False),
        # named headers: every occurrence, whole-value semantics
        (st(H("To"), "is", "Me <me@example.net>"), True),
        (st(H("X-Nope"), "contains", ""), False),
        (A.HeaderExists("cc", SP), True),
        (A.HeaderExists("List-Id", SP), False),
        (A.Not(A.HeaderExists("List-Id", SP), SP), True),
        (rx(F("subject"), r"^sunday"), True),
        (rx(F("subject"), r"^sunday", "c"), False),
        (rx(F("subject"), r"^Sunday", "c"), True),
        (rx(F("text"), r"^subject: sunday", "m"), True),
        (rx(F("text"), r"^subject: sunday"), False),  # without m, ^ is the start of the text
        (rx(F("body"), r"are.you", "s"), True),
        (rx(F("subject"), r"sun day  # comment", "x"), True),
        (rx(F("subject"), r"(unclosed"), False),  # invalid: matches nothing
        (A.All(SP), True),
    ],
)
def test_string_and_regex_tests(cond: A.Condition, expected: bool) -> None:
    assert ok(cond, MUM) is expected


def test_header_every_occurrence_and_list_field() -> None:
    dup = view("broken/duplicate-headers.eml")
    assert ok(st(H("Subject"), "is", "two"), dup)
    assert ok(st(F("subject"), "is", "one"), dup)
    assert ok(st(F("list"), "is", "second.example.com"), dup)
    assert ok(st(F("list"), "is", "python-list.python.org"), LIST)
    assert ok(st(F("list"), "starts_with", "general discussion"), LIST)


def test_domain_is() -> None:
    mk = view("marketing.eml")

    def dom(field: str, d: str, v: MessageView) -> bool:
        return ok(A.DomainTest(F(field), d, SP), v)

    assert dom("from", "marketing.example.com", mk)
    assert dom("from", "example.com", mk)
    assert dom("from", "news.marketing.example.com", mk)
    assert not dom("from", "ing.example.com", mk)  # not a label boundary
    assert not dom("from", "example.co", mk)
    assert dom("recipient", "family.example", MUM)
    assert not dom("sender", "family.example", MUM)


def test_size() -> None:
    v = view("bob-big.eml", size=2 * 1024 * 1024)
    assert ok(A.SizeTest(">", 1024 * 1024, SP), v)
    assert not ok(A.SizeTest("<", 1024 * 1024, SP), v)
    assert ok(A.SizeTest(">=", 2 * 1024 * 1024, SP), v)
    assert ok(A.SizeTest("<=", 2 * 1024 * 1024, SP), v)
    assert not ok(A.SizeTest(">", 2 * 1024 * 1024, SP), v)


def test_age() -> None:
    def age(older: bool, n: int, unit: str, when: dt.datetime | None) -> bool:
        v = MessageView.from_bytes(b"Subject: x\n\n", internaldate=when)
        return ok(A.AgeTest(older, n, unit, SP), v)  # type: ignore[arg-type]

    assert age(True, 365, "days", NOW - dt.timedelta(days=366))
    assert not age(True, 365, "days", NOW - dt.timedelta(days=364))
    assert age(False, 365, "days", NOW - dt.timedelta(days=364))
    exact = NOW - dt.timedelta(hours=2)
    assert not age(True, 2, "hours", exact) and not age(False, 2, "hours", exact)  # strict
    assert age(False, 30, "minutes", NOW - dt.timedelta(minutes=29))
    assert age(True, 1, "weeks", NOW - dt.timedelta(days=8))
    # calendar months: 2024-03-31 minus 1 month is 2024-02-29 12:00 (clamped)
    assert age(True, 1, "months", dt.datetime(2024, 2, 29, 11, 59, tzinfo=UTC))
    assert not age(True, 1, "months", dt.datetime(2024, 2, 29, 12, 1, tzinfo=UTC))
    assert age(True, 1, "years", dt.datetime(2023, 3, 31, 11, 0, tzinfo=UTC))
    assert not age(True, 1, "days", None) and not age(False, 1, "days", None)


def test_age_cutoff_follows_the_context_whatever_was_asked_before() -> None:
    """The cut-off is worked out once per (now, tz, amount, unit), not per message: a context with
    another time zone or another `now` gets its own."""
    paris = EvalContext(now=NOW, tz=ZoneInfo("Europe/Paris"))
    later = EvalContext(now=NOW + dt.timedelta(hours=1), tz=UTC)
    # 2024-03-31 14:00 in Paris (CEST) minus a calendar month: 2024-02-29 14:00 CET = 13:00 UTC
    v = MessageView.from_bytes(b"Subject: x\n\n", internaldate=dt.datetime(2024, 2, 29, 12, 30, tzinfo=UTC))
    month = A.AgeTest(True, 1, "months", SP)
    for _ in range(2):
        assert ok(month, v, paris) and not ok(month, v, CTX) and ok(month, v, later)


def test_subtract_age_calendar() -> None:
    assert subtract_age(dt.datetime(2024, 2, 29), 1, "years") == dt.datetime(2023, 2, 28)
    assert subtract_age(dt.datetime(2024, 1, 31), 13, "months") == dt.datetime(2022, 12, 31)
    assert subtract_age(dt.datetime(2024, 5, 31), 1, "months") == dt.datetime(2024, 4, 30)
    assert subtract_age(dt.datetime(2024, 5, 31, tzinfo=UTC), 10**12, "minutes").year == 1


def test_received_dates_use_ctx_tz() -> None:
    paris = EvalContext(now=NOW, tz=ZoneInfo("Europe/Paris"))
    # 23:30 UTC on the 14th is 00:30 on the 15th in Paris
    v = MessageView.from_bytes(b"x: y\n\n", internaldate=dt.datetime(2023, 3, 14, 23, 30, tzinfo=UTC))

    def rec(rel: str, d: dt.date, ctx: EvalContext) -> bool:
        return ok(A.DateTest("received", rel, d, SP), v, ctx)  # type: ignore[arg-type]

    assert rec("on", dt.date(2023, 3, 14), CTX) and rec("on", dt.date(2023, 3, 15), paris)
    assert rec("after", dt.date(2023, 3, 14), paris) and not rec("after", dt.date(2023, 3, 14), CTX)
    assert rec("before", dt.date(2023, 3, 15), CTX) and not rec("before", dt.date(2023, 3, 15), paris)
    nodate = MessageView.from_bytes(b"x: y\n\n")
    assert not ok(A.DateTest("received", "before", dt.date(2099, 1, 1), SP), nodate)


def test_sent_dates_use_the_header_offset() -> None:
    paris = EvalContext(now=NOW, tz=ZoneInfo("Europe/Paris"))
    # Date: Wed, 15 Mar 2023 23:30:00 -0500 is the 15th as written (the 16th in UTC)
    for ctx in (CTX, paris):
        assert ok(A.DateTest("sent", "on", dt.date(2023, 3, 15), SP), LIST, ctx)
        assert ok(A.DateTest("sent", "before", dt.date(2023, 3, 16), SP), LIST, ctx)
        assert ok(A.DateTest("sent", "after", dt.date(2023, 3, 14), SP), LIST, ctx)
        assert not ok(A.DateTest("sent", "after", dt.date(2023, 3, 15), SP), LIST, ctx)
    bad = view("broken/bad-date.eml")
    for rel in ("before", "after", "on"):
        assert not ok(A.DateTest("sent", rel, dt.date(2099, 1, 1), SP), bad)
        assert not ok(A.DateTest("sent", rel, dt.date(1970, 1, 1), SP), bad)


def test_flags_and_keywords() -> None:
    v = MessageView.from_bytes(b"x: y\n\n", flags=["\\SEEN", "$Work"])
    assert ok(A.FlagTest("\\Seen", True, SP), v)
    assert not ok(A.FlagTest("\\Seen", False, SP), v)
    assert ok(A.FlagTest("\\Flagged", False, SP), v)
    assert not ok(A.FlagTest("\\Answered", True, SP), v)
    assert ok(A.KeywordTest("$work", SP), v)
    assert not ok(A.KeywordTest("$Home", SP), v)


def test_attachments() -> None:
    def name(op: str, value: str | None = None, pattern: str | None = None) -> A.AttachmentNameTest:
        regex = A.Regex(pattern, "", SP) if pattern is not None else None
        return A.AttachmentNameTest(op, value, regex, SP)  # type: ignore[arg-type]

    assert ok(A.HasAttachment(SP), INVOICE) and not ok(A.HasAttachment(SP), MUM)
    assert ok(name("matches", pattern=r"\.PDF$"), INVOICE)
    assert ok(name("contains", "märz"), INVOICE)
    assert ok(name("is", "LOGO.png"), INVOICE)
    assert ok(name("starts_with", "rechnung"), INVOICE)
    assert not ok(name("ends_with", ".doc"), INVOICE)
    assert not ok(name("contains", ""), MUM)
    only_headers = MessageView.from_bytes(
        b"Subject: x\n\n", attachments=[AttachmentInfo("r.pdf", "application/pdf", "attachment")]
    )
    assert ok(name("ends_with", ".pdf"), only_headers)


def test_boolean_structure_and_short_circuit() -> None:
    t, f = A.All(SP), A.Not(A.All(SP), SP)
    assert ok(A.And((t, t), SP), MUM) and not ok(A.And((t, f), SP), MUM)
    assert ok(A.Or((f, t), SP), MUM) and not ok(A.Or((f, f), SP), MUM)
    assert ok(A.Not(f, SP), MUM)


def test_captures_last_true_matches_in_order_outside_not() -> None:
    a = rx(F("subject"), r"(sun)(xx)?")
    b = rx(F("from"), r"(\w+)@(family)")
    m = evaluate_condition(A.And((a, b), SP), MUM, CTX)
    assert m.ok and m.captures == ("mum", "family") and m.whole == "mum@family"
    m = evaluate_condition(A.And((b, a), SP), MUM, CTX)
    assert m.captures == ("Sun", "") and m.whole == "Sun"  # unmatched group -> ""
    # Or short-circuits: b is never evaluated
    assert evaluate_condition(A.Or((a, b), SP), MUM, CTX).captures == ("Sun", "")
    # a test inside `not` never provides captures
    m = evaluate_condition(A.And((a, A.Not(A.Not(b, SP), SP)), SP), MUM, CTX)
    assert m.ok and m.captures == ("Sun", "")
    # a false matches test leaves the earlier captures alone
    miss = rx(F("subject"), r"(nothing)")
    assert evaluate_condition(A.Or((A.And((a, miss), SP), A.All(SP)), SP), MUM, CTX).captures == ("Sun", "")
    assert evaluate_condition(st(F("subject"), "contains", "x"), MUM, CTX).captures is None


def test_regex_cache_and_flags() -> None:
    assert compile_regex("a", "") is compile_regex("a", "")
    p = compile_regex("a", "cmsx")
    assert p is not None and not p.flags & 2  # re.IGNORECASE == 2
    assert compile_regex("(", "") is None


def test_age_is_elapsed_time_across_dst_but_months_are_calendar() -> None:
    paris = ZoneInfo("Europe/Paris")
    # 2024-03-31 03:30 CEST is 01:30 UTC; clocks jumped from 02:00 to 03:00 an hour and a half ago
    ctx = EvalContext(now=dt.datetime(2024, 3, 31, 3, 30, tzinfo=paris), tz=paris)
    v = MessageView.from_bytes(b"x: y\n\n", internaldate=dt.datetime(2024, 3, 31, 0, 0, tzinfo=UTC))
    assert not ok(A.AgeTest(True, 2, "hours", SP), v, ctx)  # only 1.5 h have elapsed
    assert ok(A.AgeTest(False, 2, "hours", SP), v, ctx)
    assert subtract_age(ctx.now, 1, "days") == dt.datetime(2024, 3, 30, 1, 30, tzinfo=UTC)
    # a month before 2024-03-31 03:30 in Paris is 2024-02-29 03:30 in Paris (clamped)
    assert subtract_age(ctx.now, 1, "months") == dt.datetime(2024, 2, 29, 3, 30, tzinfo=paris)
    same_zone = MessageView.from_bytes(b"x: y\n\n", internaldate=dt.datetime(2024, 3, 31, 1, 0, tzinfo=paris))
    assert ok(A.AgeTest(False, 2, "hours", SP), same_zone, ctx)  # 01:00 CET = 00:00 UTC
