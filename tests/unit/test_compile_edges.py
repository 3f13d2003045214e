"""Planner edge cases, dialects, the reference evaluator and explain output."""

from __future__ import annotations

import dataclasses
import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from mailrules.compile import Dialect, plan_condition
from mailrules.compile import keys as K
from mailrules.compile.explain import explain_condition, explain_plan, format_key, format_search
from mailrules.compile.needs import FetchNeeds
from mailrules.compile.plan import server_value
from mailrules.compile.reference import search_matches
from mailrules.compile.regex_literal import required_literal
from mailrules.compile.serialize import serialize
from mailrules.dsl import ast as A
from mailrules.message.view import MessageView
from mailrules.source import Span

S = Span("edge.rules", 1, 1)
NOW = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
DOVECOT, RFC, GMAIL = Dialect.named("dovecot"), Dialect.named("rfc3501"), Dialect.named("gmail")


def f(name: str) -> A.FieldRef:
    return A.FieldRef(name, None, S)  # type: ignore[arg-type]


def h(name: str) -> A.FieldRef:
    return A.FieldRef(None, name, S)


def search(cond: A.Condition, d: Dialect = DOVECOT, tz: dt.tzinfo = dt.UTC) -> str:
    return "UID SEARCH " + format_key(plan_condition(cond, d, NOW, tz).server)


# -- dialects -------------------------------------------------------------------------------------


def test_named_dialects() -> None:
    assert DOVECOT.within and DOVECOT.esearch and DOVECOT.condstore and DOVECOT.utf8_search
    assert DOVECOT.literal_plus and DOVECOT.move and DOVECOT.uidplus and DOVECOT.special_use
    assert not DOVECOT.gmail
    assert GMAIL.gmail and GMAIL.esearch and GMAIL.utf8_search and GMAIL.literal_minus and GMAIL.move
    assert not GMAIL.within and not GMAIL.literal_plus
    assert not (RFC.within or RFC.esearch or RFC.gmail or RFC.utf8_search or RFC.move or RFC.uidplus)
    with pytest.raises(ValueError):
        Dialect.named("exchange")


def test_from_capabilities() -> None:
    d = Dialect.from_capabilities([b"IMAP4rev1", b"within", "MOVE", "LITERAL+", "QRESYNC"])
    assert d.within and d.move and d.literal_plus and d.condstore and not d.esearch and not d.utf8_search
    rev2 = Dialect.from_capabilities(["IMAP4rev2"])
    assert rev2.esearch and rev2.utf8_search and rev2.move and rev2.uidplus


# -- planner edges --------------------------------------------------------------------------------


def test_cr_lf_values_never_reach_a_key() -> None:
    cond = A.StringTest(f("subject"), "contains", "x\r\nZ1 CREATE Injected", S)
    for d in (RFC, DOVECOT, GMAIL):
        plan = plan_condition(cond, d, NOW, dt.UTC)
        assert plan.residual == cond  # the residual makes it exact
        wire = b"".join(p if isinstance(p, bytes) else p.data for p in serialize(plan.server))
        assert b"\r" not in wire and b"\n" not in wire
    assert search(cond) == 'UID SEARCH SUBJECT "Z1 CREATE Injected"'
    assert server_value("a\x00bc", True) == ("bc", False)


def test_non_ascii_values() -> None:
    assert server_value("café", False) == ("caf", False)
    assert server_value("日本", True) == ("日本", True)  # caseless: exact where UTF-8 search works
    assert server_value("日本", False) == (None, False)
    assert server_value("ÄÖ", True) == (None, False)  # cased non-ASCII: the server may not fold it


def test_double_negation_and_de_morgan() -> None:
    inexact = A.StringTest(f("from"), "is", "bob@example.com", S)
    nn = A.Not(A.Not(inexact, S), S)
    plan = plan_condition(nn, DOVECOT, NOW, dt.UTC)
    assert plan.server == K.and_(K.Header("From", "bob"), K.Header("From", "example")) and plan.residual == nn
    exact_nn = A.Not(A.Not(A.FlagTest("\\Seen", True, S), S), S)
    assert plan_condition(exact_nn, DOVECOT, NOW, dt.UTC).server == K.Flag("SEEN")
    demorgan = A.Not(A.Or((inexact, A.FlagTest("\\Flagged", True, S)), S), S)
    plan = plan_condition(demorgan, DOVECOT, NOW, dt.UTC)
    assert plan.server == K.Flag("UNFLAGGED")
    assert plan.residual == A.Not(inexact, S)


def test_age_needs_a_positive_interval_for_within() -> None:
    zero = A.AgeTest(True, 0, "minutes", S)
    plan = plan_condition(zero, DOVECOT, NOW, dt.UTC)
    assert not isinstance(plan.server, K.Older) and plan.residual == zero
    trusted = dataclasses.replace(DOVECOT, clock_skew=0)
    assert search(A.AgeTest(True, 1, "minutes", S), trusted) == "UID SEARCH OLDER 60"
    # the server counts back from its own clock when the SEARCH runs: widened by the skew
    assert search(A.AgeTest(True, 10, "minutes", S)) == "UID SEARCH OLDER 300"
    assert search(A.AgeTest(False, 10, "minutes", S)) == "UID SEARCH YOUNGER 900"
    assert search(A.AgeTest(True, 1, "minutes", S)).startswith("UID SEARCH BEFORE ")


def test_dates_at_the_ends_of_the_calendar() -> None:
    for d in (dt.date(1, 1, 1), dt.date(9999, 12, 31)):
        for which in ("received", "sent"):
            for rel in ("before", "after", "on"):
                cond = A.DateTest(which, rel, d, S)
                for tz in (dt.UTC, ZoneInfo("Pacific/Kiritimati"), ZoneInfo("Etc/GMT+12")):
                    plan = plan_condition(cond, RFC, NOW, tz)
                    serialize(plan.server)
                    assert plan.residual == cond
    huge = A.AgeTest(True, 10_000, "years", S)
    serialize(plan_condition(huge, DOVECOT, NOW, dt.UTC).server)


def test_received_windows_allow_for_any_server_zone() -> None:
    on = A.DateTest("received", "on", dt.date(2024, 1, 10), S)
    assert search(on, RFC, dt.UTC) == "UID SEARCH SINCE 9-Jan-2024 BEFORE 12-Jan-2024"
    assert search(on, RFC, ZoneInfo("Pacific/Kiritimati")) == "UID SEARCH SINCE 8-Jan-2024 BEFORE 11-Jan-2024"
    assert search(on, RFC, ZoneInfo("Etc/GMT+12")) == "UID SEARCH SINCE 10-Jan-2024 BEFORE 13-Jan-2024"


def test_keywords_and_header_names_the_server_cannot_take() -> None:
    bad_kw = A.KeywordTest("two words", S)
    assert plan_condition(bad_kw, DOVECOT, NOW, dt.UTC).server == K.ALL
    assert search(A.KeywordTest("\\Seen", S)) == "UID SEARCH SEEN"
    bad_header = A.HeaderExists("X Bad:Name", S)
    plan = plan_condition(bad_header, DOVECOT, NOW, dt.UTC)
    assert plan.server == K.ALL and plan.residual == bad_header


def test_size_boundaries() -> None:
    assert search(A.SizeTest(">=", 0, S)) == "UID SEARCH ALL"
    assert search(A.SizeTest(">=", 1, S)) == "UID SEARCH LARGER 0"
    assert search(A.SizeTest("<=", 0, S)) == "UID SEARCH SMALLER 1"
    assert search(A.SizeTest("<", 0, S)) == "UID SEARCH SMALLER 0"


def test_fetch_needs() -> None:
    cond = A.And(
        (
            A.RegexTest(f("recipient"), A.Regex("x", "", S), S),
            A.DateTest("sent", "on", dt.date(2024, 1, 1), S),
            A.AgeTest(True, 1, "days", S),
            A.HasAttachment(S),
            A.RegexTest(h("X-Spam Level"), A.Regex("x", "", S), S),
        ),
        S,
    )
    needs = plan_condition(cond, RFC, NOW, dt.UTC).needs
    assert needs == FetchNeeds(frozenset({"To", "Cc", "Bcc", "Date", "X-Spam Level"}), False, True, True)
    assert needs.fetch_items() == [
        'BODY.PEEK[HEADER.FIELDS (Bcc Cc Date To "X-Spam Level")]',
        "BODYSTRUCTURE",
        "INTERNALDATE",
    ]
    body = plan_condition(A.StringTest(f("body"), "is", "x", S), RFC, NOW, dt.UTC).needs
    assert body.fetch_items() == ["BODY.PEEK[]"]


def test_required_literals() -> None:
    assert required_literal(r"x@y\.com") == "x@y.com"
    assert required_literal(r"^Re:\s+(?:\[list\])? hello world") == " hello world"
    assert required_literal("a|bcd") is None
    assert required_literal("(") is None
    assert required_literal(r"caf\u00e9 menu") == " menu"
    assert required_literal("a b c", "x") == "abc"


# -- reference evaluator ----------------------------------------------------------------------------


def test_reference_evaluator() -> None:
    raw = (
        b"From: =?utf-8?q?J=C3=BCrgen?= <j@example.org>\r\nSubject: Caf\xc3\xa9 MENU\r\n"
        b"X-Empty:\r\n\r\nHello body\r\n"
    )
    view = MessageView.from_bytes(
        raw,
        size=100,
        flags={"\\Seen", "$Work"},
        internaldate=dt.datetime(2024, 1, 10, 23, 30, tzinfo=dt.UTC),
        uid=7,
    )

    def m(key: K.SearchKey, tz: dt.tzinfo = dt.UTC) -> bool:
        return search_matches(key, view, tz, now=NOW)

    assert m(K.Text("FROM", "jürgen")) and m(K.Text("SUBJECT", "menu")) and m(K.Text("SUBJECT", "CAF"))
    assert not m(K.Text("SUBJECT", "CAFÉ"))  # ASCII folding only
    assert m(K.Header("X-Empty", "")) and not m(K.Header("X-Missing", ""))
    assert m(K.Text("BODY", "hello")) and m(K.Text("TEXT", "subject: caf"))
    assert m(K.Flag("SEEN")) and m(K.Flag("UNFLAGGED")) and m(K.Keyword("$work"))
    assert m(K.Larger(99)) and not m(K.Larger(100)) and m(K.Smaller(101)) and not m(K.Smaller(100))
    assert m(K.Date("ON", dt.date(2024, 1, 10)))
    assert m(K.Date("ON", dt.date(2024, 1, 11)), ZoneInfo("Europe/Berlin"))
    assert m(K.Date("SENTON", dt.date(1970, 1, 1)))  # no Date: header
    assert m(K.Older(60)) and not m(K.Younger(60))
    assert m(K.Uid(frozenset({7}))) and not m(K.Uid(frozenset({8})))
    assert m(K.UidFrom(7)) and m(K.UidFrom(1)) and not m(K.UidFrom(8))
    assert not m(K.GmRaw("has:attachment")) and m(K.GmRaw("label:x"))
    assert m(K.Or(K.Not(K.ALL), K.And((K.Flag("SEEN"), K.ALL))))


# -- explain ------------------------------------------------------------------------------------------


def test_explain() -> None:
    cond = A.And(
        (
            A.Or((A.RegexTest(f("from"), A.Regex("x@y", "", S), S), A.HasAttachment(S)), S),
            A.StringTest(f("subject"), "contains", "日本", S),
            A.Not(A.DateTest("received", "on", dt.date(2024, 1, 2), S), S),
        ),
        S,
    )
    plan = plan_condition(cond, DOVECOT, NOW, dt.UTC)
    assert explain_plan(plan, DOVECOT).splitlines() == [
        "server:   UID SEARCH RETURN (ALL) CHARSET UTF-8 SUBJECT {6}日本",
        "residual: (from matches /x@y/ (checked on the fetched From header) or has attachment (checked on "
        'the fetched BODYSTRUCTURE)) and subject contains "日本" (checked on the fetched Subject header) '
        "and not received on 2024-01-02 (checked on the fetched INTERNALDATE)",
        "fetch:    BODY.PEEK[HEADER.FIELDS (From Subject)] BODYSTRUCTURE INTERNALDATE",
    ]
    assert explain_condition(None).startswith("nothing")
    assert format_search(plan, RFC) == "UID SEARCH CHARSET UTF-8 SUBJECT {6}日本"


def test_age_arithmetic_is_one_function_and_handles_edges() -> None:
    from mailrules.compile import dates
    from mailrules.dsl.ages import subtract_age
    from mailrules.dsl.semantics import subtract_age as semantics

    planner = vars(dates)["subtract_age"]  # the planner's own name for it (imported, not re-exported)
    assert planner is subtract_age is semantics  # one definition of "N units ago"
    paris = ZoneInfo("Europe/Paris")
    # DST: a day is 24 h of elapsed time; months keep the wall clock, clamping the day
    assert subtract_age(dt.datetime(2024, 3, 31, 12, 0, tzinfo=paris), 1, "days") == dt.datetime(
        2024, 3, 30, 11, 0, tzinfo=paris
    )
    assert subtract_age(dt.datetime(2024, 3, 31, 1, 30, tzinfo=paris), 1, "months") == dt.datetime(
        2024, 2, 29, 1, 30, tzinfo=paris
    )
    assert subtract_age(dt.datetime(2024, 2, 29, 23, 59, tzinfo=dt.UTC), 10**9, "weeks").year == 1


# -- what a live Dovecot 2.3 search showed (ad-hoc differential runs) ---------------------------------


def test_body_and_text_are_prefilters_never_exact() -> None:
    # Dovecot searches HTML raw (tags, entities: "hello<br>world", "AT&amp;T") and attached text parts,
    # the language reads stripped HTML of inline text parts: only single-part text/plain mail is
    # filtered by BODY; everything else stays a candidate for the residual.
    for field in ("body", "text"):
        cond = A.StringTest(f(field), "contains", "hello", S)
        plan = plan_condition(cond, DOVECOT, NOW, dt.UTC)
        assert plan.residual == cond and plan.needs.body
        assert format_key(plan.server) == (
            f'OR {field.upper()} hello (HEADER Content-Type "" NOT HEADER Content-Type text/plain)'
        )
    # `text` joins headers as "name: value": only white-space-free words go to the server
    words = A.StringTest(f("text"), "contains", "subject:  hello there", S)
    assert format_key(plan_condition(words, DOVECOT, NOW, dt.UTC).server).startswith("OR TEXT subject: ")


def test_white_space_runs_are_cut() -> None:
    # Dovecot compresses runs of white space in header values: SUBJECT "two  spaces" found nothing.
    cond = A.StringTest(f("subject"), "contains", "two  spaces", S)
    plan = plan_condition(cond, DOVECOT, NOW, dt.UTC)
    assert plan.server == K.Text("SUBJECT", "spaces") and plan.residual == cond
    assert server_value("a\tb c", False) == ("b c", False)


def test_address_tests_use_atoms_between_at_and_dots() -> None:
    # `bob(comment)@example.org` parses to bob@example.org, which is not in the header text.
    cond = A.StringTest(f("from"), "is", "bob@example.org", S)
    plan = plan_condition(cond, DOVECOT, NOW, dt.UTC)
    assert plan.server == K.and_(K.Header("From", "bob"), K.Header("From", "example"))
    dom = A.DomainTest(f("from"), "lists.example.org", S)
    dom_key = plan_condition(dom, DOVECOT, NOW, dt.UTC).server
    assert format_key(dom_key) == "HEADER From lists HEADER From example"
    # `contains` reads the decoded header text itself: pushed whole (still checked locally)
    contains = A.StringTest(f("from"), "contains", "bob@example.org", S)
    assert plan_condition(contains, DOVECOT, NOW, dt.UTC).server == K.Header("From", "bob@example.org")
