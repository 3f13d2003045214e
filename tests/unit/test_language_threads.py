"""`thread tagged "k"` (issue 16): the server's threads, resolved into UIDs before the SEARCH."""
# ruff: noqa: E501

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from mailrules.commands.rule_tests import run_tests
from mailrules.compile import Dialect, plan_condition
from mailrules.compile import keys as K
from mailrules.compile.explain import format_search
from mailrules.compile.refusal import server_refusal
from mailrules.compile.serialize import SearchKeyError, render, serialize
from mailrules.compile.threads import expand, reference_threads
from mailrules.dsl import ast as A
from mailrules.dsl import unparse
from mailrules.dsl.check import check_rule_set
from mailrules.dsl.loader import load_rule_set
from mailrules.dsl.parser import parse_text
from mailrules.engine.core import Engine
from mailrules.engine.ports import AccountContext, RunOptions
from mailrules.engine.prefetch import independent_rules
from mailrules.imap.store import ImapStore
from mailrules.imap.threads import threads_of
from tests.fakes import FakeServer, FakeStore, RecordingSender
from tests.unit.test_gmail_dialect import gmail_session

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)


def rules_of(text: str) -> tuple[A.Rule, ...]:
    rf, diags = parse_text(text, "t.rules")
    assert rf is not None and not diags, [d.message for d in diags]
    return rf.rules


def cond(text: str) -> A.Condition:
    return rules_of(f'rule "r" {{ when {text} then archive }}')[0].condition


def test_spelling_and_errors() -> None:
    assert unparse.condition(cond('THREAD Tagged "killed" and not tagged "killed"')) == (
        'thread tagged "killed" and not tagged "killed"'
    )
    _, diags = parse_text('rule "r" { when thread tagged "\\\\Seen" then flag }', "t.rules")
    assert [d.message for d in diags] == [
        "'\\\\Seen' is a system flag; use seen, flagged, answered, draft or deleted"
    ]
    rf, diags = parse_text('rule "r" { when thread tagged "x" or subject contains "y" then flag }', "t.rules")
    assert rf is not None and not diags
    (problem,) = check_rule_set(A.RuleSet((rf,)))
    assert (
        'thread tagged "x" is answered by the server alone, so it cannot be combined under `or` or `not` with subject contains "y"'
        in problem.message
    )


@pytest.mark.parametrize(
    ("dialect", "search"),
    [
        ("dovecot", "UID SEARCH RETURN (ALL) UID <the threads of killed> UNKEYWORD killed"),
        ("gmail", "UID SEARCH RETURN (ALL) UID <the threads of killed> NOT X-GM-LABELS killed"),
    ],
)
def test_plans_are_exact_where_the_server_has_threads(dialect: str, search: str) -> None:
    d = Dialect.named(dialect)
    plan = plan_condition(cond('thread tagged "killed" and not tagged "killed"'), d, NOW, dt.UTC)
    assert format_search(plan, d) == search and plan.exact
    with pytest.raises(SearchKeyError):
        serialize(plan.server)  # never sent as it is: the store resolves it first


def test_refused_where_the_server_tells_no_threads() -> None:
    c = cond('thread tagged "killed"')
    assert server_refusal(c, Dialect.named("dovecot")) is None
    assert server_refusal(c, Dialect.named("rfc3501")) == (
        'thread tagged "killed" needs the server\'s threads, which this server (rfc3501) does not offer '
        "(neither THREAD=REFERENCES nor X-GM-EXT-1)"
    )
    assert Dialect.from_capabilities(["IMAP4rev1", "THREAD=REFERENCES"]).threads
    assert not Dialect.named("microsoft").threads


def test_expand_puts_the_threads_uids_in_place() -> None:
    key = K.and_(
        K.ThreadKeyword("a"), K.Not(K.ThreadKeyword("a")), K.or_(K.Flag("SEEN"), K.ThreadKeyword("b"))
    )
    asked: list[str] = []

    def members(k: str) -> frozenset[int]:
        asked.append(k)
        return frozenset({1, 2}) if k == "a" else frozenset()

    got = expand(key, members)
    assert render(serialize(got)) == "UID 1:2 NOT UID 1:2 OR SEEN NOT ALL"
    assert asked == ["a", "b"]  # once per keyword
    assert expand(K.Flag("SEEN"), members) == K.Flag("SEEN")


def test_reference_threads() -> None:
    threads = reference_threads([
        (1, "<a@x>", "", ""),
        (2, "<b@x>", "<a@x>", "<a@x>"),
        (3, "<c@x>", "<missing@x> <b@x>", ""),  # through b, and a parent not in the mailbox
        (4, "<d@x>", "", "<missing@x>"),  # its parent is missing: the same thread still
        (5, "<e@x>", "", ""),
        (6, "", "", ""),  # no Message-ID: alone
    ])  # fmt: skip
    assert sorted(sorted(t) for t in threads) == [[1, 2, 3, 4], [5], [6]]


def test_threads_of_the_thread_answer() -> None:
    # RFC 5256 §4's example: (2)(3 6 (4 23)(44 7 96)), as imapclient nests it
    assert threads_of([(2,), (3, 6, (4, 23), (44, 7, 96))]) == [
        frozenset({2}),
        frozenset({3, 6, 4, 23, 44, 7, 96}),
    ]


def msg(mid: str, subject: str, refs: str = "") -> bytes:
    extra = f"References: {refs}\r\nIn-Reply-To: {refs.split()[-1]}\r\n" if refs else ""
    return f"From: a@example.com\r\nSubject: {subject}\r\nMessage-ID: {mid}\r\n{extra}\r\nbody\r\n".encode()


@pytest.mark.parametrize("dialect", ["dovecot", "gmail"])
def test_the_whole_thread_is_archived_once_one_message_is_killed(dialect: str) -> None:
    server = FakeServer()
    server.append("INBOX", msg("<1@t>", "start"))
    server.append("INBOX", msg("<2@t>", "Re: start", "<1@t>"), ["killed"])
    server.append("INBOX", msg("<3@t>", "Re: Re: start", "<1@t> <2@t>"))
    server.append("INBOX", msg("<4@t>", "other"))
    rules = rules_of(
        'rule "kill threads" { when subject contains "Re: Re:" then tag "killed" }\n'
        'rule "archive killed threads" { when thread tagged "killed" then archive }\n'
    )
    store = FakeStore(server, Dialect.named(dialect), NOW)
    report = Engine(RunOptions(NOW, dt.UTC, "run1")).process(
        store, AccountContext("acct", sender=RecordingSender()), "INBOX", rules
    )
    assert [
        m.raw.split(b"Subject: ")[1].split(b"\r\n")[0] for m in server.mailbox("INBOX").messages.values()
    ] == [b"other"]
    assert len(server.mailbox("Archive").messages) == 3
    assert report.rules[1].matched == 3 and "THREAD" in store.commands


def test_a_thread_test_waits_for_the_rules_that_tag_before_it() -> None:
    rules = rules_of(
        'rule "a" { when subject contains "x" then tag "killed" }\n'
        'rule "b" { when thread tagged "killed" then archive }\n'
        'rule "c" { when thread tagged "other" then archive }\n'
    )
    assert [r.name for r in independent_rules(rules)] == ["a", "c"]


def test_the_imap_store_asks_gmail_for_the_thread_ids() -> None:
    def handler(tag: bytes, cmd: bytes) -> list[bytes]:
        if b"X-GM-LABELS" in cmd:
            return [b"* SEARCH 5", tag + b" OK SEARCH (Success)"]
        if b"FETCH" in cmd:
            return [b"* 1 FETCH (UID 5 X-GM-THRID 1266894439832287888)", tag + b" OK Success"]
        if b"X-GM-THRID" in cmd:
            return [b"* SEARCH 3 5 9", tag + b" OK SEARCH (Success)"]
        return [b"* SEARCH 3 5 9", tag + b" OK SEARCH (Success)"]  # the UID set itself

    s, imap, _ = gmail_session(handler, "IMAP4rev1 X-GM-EXT-1")
    plan = plan_condition(cond('thread tagged "killed"'), Dialect.named("gmail"), NOW, dt.UTC)
    assert ImapStore(s).search(plan.server) == [3, 5, 9]
    assert imap.commands == [
        b"T1 UID SEARCH X-GM-LABELS killed",
        b"T2 UID FETCH 5 (X-GM-THRID)",
        b"T3 UID SEARCH X-GM-THRID 1266894439832287888",
        b"T4 UID SEARCH UID 3,5,9",
    ]


RULES = """
rule "archive killed threads" {
    when thread tagged "killed"
    then archive
}

test "a message of a killed thread" {
    given "m.eml" thread tagged "killed"
    expect archive
}

test "the message itself counts" {
    given "m.eml" tagged "killed"
    expect archive
}

test "an ordinary thread" {
    given "m.eml" thread tagged "other"
    expect keep
}
"""


def test_test_blocks_declare_the_thread(tmp_path: Path) -> None:
    (tmp_path / "m.eml").write_bytes(msg("<1@t>", "x"))
    (tmp_path / "t.rules").write_text(RULES, encoding="utf-8")
    result = load_rule_set(tmp_path)
    assert result.ok, result.render()
    assert [(o.test.name, o.error) for o in run_tests(result.rule_set) if not o.passed] == []
    assert unparse.given(result.rule_set.tests[0].given) == 'given "m.eml" thread tagged "killed"'
