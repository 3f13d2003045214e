"""The language's newer forms on a real Dovecot: what the planner sends is a superset of the matches.

Each case appends messages, plans a condition for the dialect the session advertises, sends the
SEARCH through our writer and compares with the per-message reading of the language
(dsl/semantics.py) over the same bytes: server ⊇ matches, and server ∧ residual = matches.
"""

from __future__ import annotations

import datetime as dt
from email.header import Header
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailrules.cli import main
from mailrules.compile import Dialect, plan_condition
from mailrules.compile.explain import format_search
from mailrules.compile.serialize import needs_charset, serialize
from mailrules.dsl import ast as A
from mailrules.dsl.parser import parse_text
from mailrules.dsl.semantics import EvalContext, evaluate_condition
from mailrules.imap.session import ImapSession
from mailrules.message.view import MessageView
from tests.integration.helpers import append, snapshot, where_is, write_config
from tests.integration.servers import DovecotServer, make_message

pytestmark = pytest.mark.integration

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
CTX = EvalContext(NOW, dt.UTC)


def condition(text: str) -> A.Condition:
    rf, diags = parse_text(f'rule "r" {{ when {text} then flag }}', "t.rules")
    assert rf is not None and not [d for d in diags if d.severity == "error"], diags
    return rf.rules[0].condition


def seed(s: ImapSession, messages: list[bytes]) -> dict[int, bytes]:
    uids = {}
    for raw in messages:
        got = s.append("INBOX", raw)
        assert got is not None
        uids[got[1]] = raw
    s.select("INBOX")
    return uids


def holds(cond: A.Condition, raw: bytes) -> bool:
    return evaluate_condition(cond, MessageView.from_bytes(raw), CTX).ok


def compare(s: ImapSession, uids: dict[int, bytes], text: str) -> tuple[set[int], set[int], str]:
    """(the server's answer, the language's matches, the SEARCH as sent) for one condition."""
    dialect = Dialect.from_capabilities(s.capabilities, name="dovecot")
    cond = condition(text)
    plan = plan_condition(cond, dialect, NOW, dt.UTC)
    found = set(s.search(serialize(plan.server), charset="UTF-8" if needs_charset(plan.server) else None))
    matches = {uid for uid, raw in uids.items() if holds(cond, raw)}
    assert found >= matches, (text, format_search(plan, dialect), sorted(found), sorted(matches))
    exact = {uid for uid in found if plan.residual is None or holds(plan.residual, uids[uid])}
    assert exact == matches
    return found, matches, format_search(plan, dialect)


# -- addresses: why an address literal is searched as its atoms -----------------------------------

SENDERS = [
    "bob@github.com",
    "Bob B. <bob@github.com>",
    "bob@github (the hub) . com",  # obsolete syntax: white space and a comment around the dot
    "bob (c) @ github.com",  # a comment and white space around the "@"
    '"[SPAM] bob" <bob@GitHub.COM>',
    "[SPAM] <bob@github.com>",  # a malformed display name
    '"github com" <x@example.org>',
    "bob@example.org",
    "=?utf-8?q?B=C3=B6b?= <bob@mail.github.com>",
]


@pytest.mark.parametrize(
    ("text", "sent"),
    [
        ('from ends with "github.com"', "HEADER From github HEADER From com"),
        ('from is "bob@github.com"', "HEADER From bob HEADER From github"),
        ('from domain is "github.com"', "HEADER From github HEADER From com"),
    ],
)
def test_address_tests_are_searched_as_their_atoms(dv: ImapSession, text: str, sent: str) -> None:
    uids = seed(dv, [make_message("x", sender=s) for s in SENDERS])
    _, matches, search = compare(dv, uids, text)
    assert search == f"UID SEARCH RETURN (ALL) {sent}"
    by_sender = dict(zip(SENDERS, sorted(uids), strict=True))
    assert {by_sender["bob@github (the hub) . com"], by_sender["[SPAM] <bob@github.com>"]} <= matches


def test_no_whole_address_literal_is_a_superset_on_dovecot(dv: ImapSession) -> None:
    """Why `from ends with "github.com"` is not `HEADER From github.com` (issue 16), live.

    HEADER From searches the decoded header text, where the obsolete syntax splits the domain;
    FROM searches Dovecot's parse, which loses a malformed display name that ours reads; and an
    OR of the two reads both the way the first one does (Dovecot 2.3.19: the header is decoded
    once per message, for whichever key asks first). Each misses a message the language matches.
    """
    uids = seed(dv, [make_message("x", sender=s) for s in SENDERS])
    by_sender = dict(zip(SENDERS, sorted(uids), strict=True))
    obsolete, malformed = by_sender["bob@github (the hub) . com"], by_sender["[SPAM] <bob@github.com>"]

    def search(criteria: bytes) -> set[int]:
        return set(dv.search([criteria]))

    header = search(b"HEADER From github.com")
    assert obsolete not in header and malformed in header
    assert obsolete in search(b"FROM github.com") and malformed not in search(b"FROM github.com")
    assert search(b"OR HEADER From github.com FROM github.com") == search(b"HEADER From github.com")
    assert search(b"OR FROM github.com HEADER From github.com") == search(b"FROM github.com")


# -- address parts and the envelope's stand-ins ------------------------------------------------------

ENVELOPES = [
    make_message(
        "plus",
        sender="Shop <orders+eu@shop.example>",
        extra="Delivered-To: ada+receipts@example.org\r\nReturn-Path: <bounces+7@mail.shop.example>\r\n",
    ),
    make_message("alias", extra="X-Original-To: ada+lists@example.org\r\nDelivered-To: ada@example.org\r\n"),
    make_message("bounce", sender="MAILER-DAEMON@example.org", extra="Return-Path: <>\r\n"),
    make_message(
        "comment", sender="ada+news (x) @ example.org", extra="Delivered-To: ada (y) @example.org\r\n"
    ),
    make_message("no envelope", sender="ada@example.org"),
]


@pytest.mark.parametrize(
    "text",
    [
        'from user is "orders"',
        'from detail is "eu"',
        'from localpart is "ada+news"',
        'from user is "ada"',
        'envelope to detail is any ["receipts", "lists"]',
        'envelope to is "ada@example.org"',
        'envelope to user is "ada"',
        'envelope from domain is "shop.example"',
        'envelope from detail is "7"',
        'not envelope to contains "ada"',
        "from detail matches /^(eu|news)$/",
        'from user is "mailer-daemon"',
    ],
)
def test_address_parts_and_envelope(dv: ImapSession, text: str) -> None:
    uids = seed(dv, ENVELOPES)
    _, matches, _ = compare(dv, uids, text)
    assert matches, text  # each case matches some message here: the superset is not vacuous


# -- templates in tag names, filters -----------------------------------------------------------------

TAG_RULES = """
rule "by list" { when header "List-Id" exists then tag "lists/{list}" }
rule "by topic" { when subject matches /^\\[([^\\]]+)\\]/ then tag "topic/{match.1|lower}" }
rule "shout" { when subject matches /^\\[([^\\]]+)\\]/ then move to "Topics/{match.1|upper}" }
"""


def test_templated_tags_and_filters_end_to_end(dovecot: DovecotServer, tmp_path: Path) -> None:
    params = dovecot.params(*dovecot.fresh_user())
    raws = [
        make_message("[Alpha Beta] one", extra="List-Id: Dev <dev.lists.example.org>\r\n"),
        make_message("[Réunion] two"),
        make_message("plain three"),
    ]
    assert not any(append(params, "INBOX", [(r, [], None) for r in raws]))
    config = write_config(tmp_path, params, TAG_RULES)
    result = CliRunner().invoke(main, ["run", "--config", str(config)], catch_exceptions=False)
    after = snapshot(params)

    def at(subject: str) -> list[tuple[str, tuple[str, ...]]]:
        return where_is(after, f"Subject: {subject}\r\n".encode())

    tags = ("lists/dev.lists.example.org", "topic/alpha_beta")
    assert at("[Alpha Beta] one") == [("Topics/ALPHA BETA", tags)]
    # no IMAP keyword can hold "réunion": that tag fails, the move goes on
    assert at(Header("[Réunion] two", "utf-8").encode()) == [("Topics/RÉUNION", ())]
    assert at("plain three") == [("INBOX", ())]
    assert "tag failed 1" in result.stdout, result.stdout
    assert result.exit_code == 1  # a failed action


# -- Gmail's search on a server that is not Gmail --------------------------------------------------------

GMAIL_RULES = """
rule "promotions" for account "main" { when category is "promotions" then delete }
rule "hello" { when subject is "hello" then flag }
"""


def test_a_gmail_rule_is_refused_on_dovecot_and_the_others_run(
    dovecot: DovecotServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    params = dovecot.params(*dovecot.fresh_user())
    assert not any(append(params, "INBOX", [(make_message("hello"), [], None)]))
    config = write_config(tmp_path, params, GMAIL_RULES)
    result = CliRunner().invoke(main, ["run", "--config", str(config)], catch_exceptions=False)
    assert result.exit_code == 1, result.output
    assert where_is(snapshot(params), b"Subject: hello\r\n") == [("INBOX", ("\\Flagged",))]
    assert "rule failed 1" in result.stdout, result.stdout
    assert (
        'rule "promotions": not run in main/INBOX: category is "promotions" needs Gmail\'s search (X-GM-RAW)'
        in caplog.text + result.output
    )


# -- importance and Gmail system labels off Gmail ----------------------------------------------------------

IMPORTANCE_RULES = """
rule "boss" { when from is "boss@example.com" then mark important }
rule "others" { when not from is "boss@example.com" then mark not important }
rule "star" { when from is "boss@example.com" then tag "\\\\Starred" }
"""


def test_mark_important_is_rfc_8457_s_keyword_off_gmail(dovecot: DovecotServer, tmp_path: Path) -> None:
    params = dovecot.params(*dovecot.fresh_user())
    messages = [
        (make_message("a", sender="boss@example.com"), [], None),
        (make_message("b", sender="x@example.com"), ["$Important"], None),
    ]
    assert not any(append(params, "INBOX", messages))
    config = write_config(tmp_path, params, IMPORTANCE_RULES)
    result = CliRunner().invoke(main, ["run", "--config", str(config)], catch_exceptions=False)
    after = snapshot(params)
    assert where_is(after, b"Subject: a\r\n") == [("INBOX", ("$Important",))]
    assert where_is(after, b"Subject: b\r\n") == [("INBOX", ())]
    # a Gmail system label fails there, with the reason, and nothing is sent for it
    assert "tag failed 1" in result.stdout and result.exit_code == 1, result.output


# -- a group of scheduled rules, run in order ------------------------------------------------------------

GROUP_RULES = """
group "sweep" every hour {
    rule "file invoices" { when subject contains "invoice" then move to "Invoices" }
    rule "flag the rest" { when all then flag }
}
rule "elsewhere" every hour { when all then tag "$Seen-by-another" }
"""


def test_a_group_runs_in_order_and_is_selected_by_name(dovecot: DovecotServer, tmp_path: Path) -> None:
    params = dovecot.params(*dovecot.fresh_user())
    assert not any(
        append(params, "INBOX", [(make_message("invoice 1"), [], None), (make_message("hello"), [], None)])
    )
    config = write_config(tmp_path, params, GROUP_RULES)
    result = CliRunner().invoke(
        main, ["run", "--config", str(config), "--rule", "SWEEP"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    after = snapshot(params)
    assert where_is(after, b"Subject: invoice 1\r\n") == [("Invoices", ())]  # moved before the flag rule
    assert where_is(after, b"Subject: hello\r\n") == [("INBOX", ("\\Flagged",))]  # "elsewhere" not selected


# -- thread tests: Dovecot's THREAD=REFERENCES ------------------------------------------------------------

THREAD_RULES = """
rule "kill" { when subject contains "unsubscribe me" then tag "killed" }
rule "archive killed threads" { when thread tagged "killed" then archive }
"""


def _reply(subject: str, mid: str, refs: str = "") -> bytes:
    refs_lines = f"References: {refs}\r\nIn-Reply-To: {refs.split()[-1]}\r\n" if refs else ""
    extra = f"Message-ID: {mid}\r\n{refs_lines}"
    return make_message(subject, extra=extra).replace(b"Message-ID: <", b"X-Old-Id: <", 1)


def test_thread_tagged_archives_the_whole_thread(dovecot: DovecotServer, tmp_path: Path) -> None:
    params = dovecot.params(*dovecot.fresh_user())
    messages = [
        _reply("Project kickoff", "<k1@example.com>"),
        _reply("Re: Project kickoff", "<k2@example.com>", "<k1@example.com>"),
        _reply("Re: Project kickoff, unsubscribe me", "<k3@x.org>", "<k1@example.com> <k2@example.com>"),
        _reply("Lunch on Friday", "<l1@example.com>"),
    ]
    assert not any(append(params, "INBOX", [(m, [], None) for m in messages]))
    with ImapSession.connect(params) as session:
        assert Dialect.from_capabilities(session.capabilities).threads  # THREAD=REFERENCES
    config = write_config(tmp_path, params, THREAD_RULES)
    result = CliRunner().invoke(main, ["run", "--config", str(config)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    after = snapshot(params)
    assert [m for m in after["INBOX"].messages if b"Lunch on Friday" in m[0]]
    assert len(after["INBOX"].messages) == 1
    assert len(after["Archive"].messages) == 3  # the thread of the killed message, whole
