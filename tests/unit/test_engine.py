"""The set-based engine against the fake store: actions, ordering, limit, dry run, and the oracle."""

from __future__ import annotations

import copy
import datetime as dt
import threading
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailrules.compile.dialect import Dialect
from mailrules.dsl import ast as A
from mailrules.dsl.parser import parse_text
from mailrules.dsl.semantics import EvalContext
from mailrules.engine.core import Engine
from mailrules.engine.ports import AccountContext, MailboxReport, RunOptions
from mailrules.engine.prefetch import SEARCH_AHEAD_MIN_MESSAGES
from mailrules.errors import ImapError
from tests.fakes import FakeServer, FakeStore, RecordingSender, oracle

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
UTC = dt.UTC


def rules_of(text: str) -> tuple[A.Rule, ...]:
    rf, diags = parse_text(text, "t.rules")
    assert rf is not None and not [d for d in diags if d.severity == "error"], diags
    return rf.rules


def msg(frm: str = "a@example.com", subject: str = "hello", extra: str = "", body: str = "body") -> bytes:
    return (
        f"From: {frm}\r\nTo: me@example.com\r\nSubject: {subject}\r\n"
        f"Message-ID: <{abs(hash((frm, subject, extra, body)))}@t>\r\n"
        "Date: Sat, 01 Mar 2025 10:00:00 +0000\r\n"
        f"{extra}\r\n{body}\r\n"
    ).encode()


def run(
    server: FakeServer,
    rules: tuple[A.Rule, ...],
    mailbox: str = "INBOX",
    dialect: str = "dovecot",
    **kw: object,
) -> tuple[MailboxReport, FakeStore, RecordingSender]:
    store = FakeStore(server, Dialect.named(dialect), NOW)
    sender = RecordingSender()
    account = AccountContext("acct", sender=sender)
    engine = Engine(RunOptions(NOW, UTC, "run1", **kw))  # type: ignore[arg-type]
    report = engine.process(store, account, mailbox, rules)
    return report, store, sender


def test_move_and_mark_read_ends_in_destination_read() -> None:
    server = FakeServer()
    server.append("INBOX", msg("notifications@github.com", "PR"))
    server.append("INBOX", msg("mum@family.example", "lunch"))
    server.mailbox("GitHub")  # exists: no TRYCREATE round (test_commands_grow... has one)
    rules = rules_of(
        'rule "gh" { when from contains "notifications@github.com" then move to "GitHub" mark read }'
    )
    report, store, _ = run(server, rules)
    assert [m.flags for m in server.mailbox("GitHub").messages.values()] == [{"\\Seen"}]
    assert len(server.mailbox("INBOX").messages) == 1
    assert report.rules[0].matched == 1
    # one SEARCH, one FETCH, one STORE, one MOVE: the command count follows rules, not messages
    assert store.commands.count("MOVE") == 1 and store.commands.count("STORE") == 1


def test_commands_grow_with_rules_not_messages() -> None:
    server = FakeServer()
    for i in range(200):
        server.append(
            "INBOX",
            msg(f"user{i % 7}@lists.example.org", f"post {i}", f"List-Id: <l{i % 3}.example.org>\r\n"),
        )
    rules = rules_of('rule "lists" { when list matches /^<?([a-z0-9-]+)\\./ then move to "Lists/{match.1}" }')
    _, store, _ = run(server, rules)
    assert sorted(server.mailboxes) == ["INBOX", "Lists/l0", "Lists/l1", "Lists/l2"]
    # one per destination, and one before it that met [TRYCREATE]: the creation is counted
    # against the run's budget (actions/loops.py) only once the mailbox is known to be missing
    assert store.commands.count("MOVE") == 6
    assert store.commands.count("SEARCH") == 2  # ALL + the rule's


def test_removed_messages_are_not_seen_by_later_rules_and_stop() -> None:
    server = FakeServer()
    server.append("INBOX", msg("x@a.example", "one"))
    server.append("INBOX", msg("y@b.example", "two"))
    rules = rules_of(
        'rule "a" { when from contains "a.example" then move to "A" }\n'
        'rule "s" { when from contains "b.example" then stop }\n'
        'rule "all" { when all then flag }'
    )
    report, _, _ = run(server, rules)
    assert [r.matched for r in report.rules] == [1, 1]  # "all" had nothing left
    assert all(not m.flags for m in server.mailbox("INBOX").messages.values())


def test_limit_guard_rail_acts_on_none() -> None:
    server = FakeServer()
    for i in range(5):
        server.append("INBOX", msg(subject=f"s{i}"))
    rules = rules_of('rule "wide" limit 3 { when all then delete }')
    report, _, _ = run(server, rules)
    assert report.rules[0].limited and len(server.mailbox("INBOX").messages) == 5
    report, _, _ = run(server, rules, force=True)
    assert not report.rules[0].limited and not server.mailbox("INBOX").messages
    assert len(server.mailbox("Trash").messages) == 5


def test_dry_run_changes_nothing_and_follows_earlier_flag_changes() -> None:
    server = FakeServer()
    server.append("INBOX", msg(subject="a"))
    rules = rules_of('rule "r" { when all then mark read }\nrule "s" { when seen then move to "Seen" }')
    before = copy.deepcopy(server.state())
    report, store, _ = run(server, rules, dry_run=True)
    assert server.state() == before
    assert not {"MOVE", "STORE", "COPY", "EXPUNGE"} & set(store.commands)
    # the dry run still says the second rule would move it, as a real run would
    assert report.rules[1].matched == 1 and report.rules[1].outcomes["move dry-run"] == 1


def test_flag_already_set_is_journalled_as_skipped() -> None:
    server = FakeServer()
    server.append("INBOX", msg(), flags=["\\Seen"])
    report, store, _ = run(server, rules_of('rule "r" { when all then mark read }'))
    assert report.rules[0].outcomes == {"mark read skipped": 1}
    assert "STORE" not in store.commands


def test_forward_reads_raw_and_delete_permanently_ends_it() -> None:
    server = FakeServer()
    server.append("INBOX", msg("bob@example.com", "big"))
    rules = rules_of(
        'rule "r" { when from is "bob@example.com" '
        'then forward to "arch@example.org", delete permanently, flag }'
    )
    _, _, sender = run(server, rules)
    assert [(k, to) for k, to, _ in sender.sent] == [("forward", "arch@example.org")]
    assert not server.mailbox("INBOX").messages and "Trash" not in server.mailboxes


def test_archive_and_delete_resolve_special_use() -> None:
    server = FakeServer()
    server.append("INBOX", msg(subject="old"))
    server.append("INBOX", msg(subject="junk"))
    rules = rules_of(
        'rule "a" { when subject is "old" then archive }\nrule "d" { when subject is "junk" then delete }'
    )
    run(server, rules)
    assert len(server.mailbox("Archive").messages) == 1 and len(server.mailbox("Trash").messages) == 1


def test_template_error_leaves_message_for_later_rules() -> None:
    server = FakeServer()
    server.append("INBOX", msg(subject="no list here"))
    rules = rules_of('rule "l" { when all then move to "Lists/{list}" }\nrule "f" { when all then flag }')
    report, _, _ = run(server, rules)
    assert report.rules[0].outcomes == {"move failed": 1}
    assert [m.flags for m in server.mailbox("INBOX").messages.values()] == [{"\\Flagged"}]


# -- the differential test: engine == naive per-message oracle ---------------------------------------

CONDITIONS = [
    'from contains "example.org"',
    'from is "bob@example.com"',
    'subject contains "invoice"',
    "subject matches /^(re|fwd): (\\w+)/",
    "list matches /^<?([a-z0-9-]+)\\./",
    "seen",
    "unseen",
    "flagged",
    'tagged "$Work"',
    "size > 300 B",
    "older than 30 days",
    "newer than 400 days",
    "received before 2025-03-01",
    "sent after 2025-01-15",
    'header "X-Spam" exists',
    'header "X-Spam" is "yes"',
    'from domain is "example.org"',
    "has attachment",
    "all",
    'to contains "me@"',
    'body contains "unsubscribe"',
    'recipient ends with "@example.com"',
]
ACTIONS = [
    'move to "A"',
    'move to "Lists/{match.1}"',
    'copy to "C"',
    'copy to "A"',  # into the mailbox a rule "in A" reads: skipped (loop safety)
    'copy to "{list}"',  # "Loop <INBOX>" names the mailbox itself
    'move to "INBOX"',
    "archive",
    'archive to "Y/{year}"',
    "delete",
    "delete permanently",
    "mark read",
    "mark unread",
    "flag",
    "unflag",
    'tag "$Work"',
    'untag "$Work"',
    'forward to "f@example.net"',
    'redirect to "r@example.net"',
    "stop",
]
FROMS = [
    "bob@example.com",
    "alice@example.org",
    "x@news.example.org",
    "=?UTF-8?Q?Ren=C3=A9?= <rene@example.fr>",
]
SUBJECTS = ["Re: invoice 42", "hello", "Fwd: report", "=?UTF-8?Q?caf=C3=A9?= invoice"]
EXTRAS = [
    "",
    "List-Id: Dev <dev.lists.example.org>\r\n",
    "X-Spam: yes\r\n",
    "X-Spam: no\r\nCc: b@example.com\r\n",
    "List-Id: Loop <INBOX>\r\n",
    "Auto-Submitted: auto-replied\r\n",  # never forwarded nor redirected
]
FLAGS = [[], ["\\Seen"], ["\\Flagged"], ["\\Seen", "$Work"]]
DAYS = [1, 20, 100, 200, 500]


@st.composite
def rule_sets(draw: st.DrawFn) -> str:
    out = []
    for i in range(draw(st.integers(1, 4))):
        conds = draw(st.lists(st.sampled_from(CONDITIONS), min_size=1, max_size=3))
        joiners = [draw(st.sampled_from([" and ", " or ", " and not "])) for _ in conds[1:]]
        cond = conds[0] + "".join(j + c for j, c in zip(joiners, conds[1:]))
        acts = draw(st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=3))
        mailbox = draw(st.sampled_from(["", "", ' in "INBOX", "A"']))
        out.append(f'rule "r{i}"{mailbox} {{ when {cond} then {", ".join(acts)} }}')
    return "\n".join(out)


@st.composite
def mailboxes(draw: st.DrawFn) -> list[tuple[bytes, list[str], dt.datetime]]:
    n = draw(st.integers(1, 8))
    return [
        (
            msg(
                draw(st.sampled_from(FROMS)),
                draw(st.sampled_from(SUBJECTS)),
                draw(st.sampled_from(EXTRAS)),
                draw(st.sampled_from(["body", "click to unsubscribe", "x" * 400])) + f" {i}",
            ),
            draw(st.sampled_from(FLAGS)),
            NOW - dt.timedelta(days=draw(st.sampled_from(DAYS)), hours=draw(st.integers(0, 23))),
        )
        for i in range(n)
    ]


def opener(store: FakeStore) -> Callable[[], FakeStore]:
    """`Engine.process(prefetch=)`: the second connection, here a store already made."""
    return lambda: store


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rule_sets(),
    mailboxes(),
    st.sampled_from(["dovecot", "rfc3501", "gmail"]),
    st.sampled_from(["whole", "arrival", "ahead"]),
)
def test_engine_equals_per_message_oracle(
    text: str, messages: list[tuple[bytes, list[str], dt.datetime]], dialect: str, path: str
) -> None:
    """Every path: the whole mailbox (SEARCH per rule), given arrival UIDs (one FETCH, local),
    and the whole mailbox with searches and fetches done ahead on a second connection."""
    rules = rules_of(text)
    server = FakeServer()
    for raw, flags, when in messages:
        server.append("INBOX", raw, flags, when)
    server.mailbox("A")
    expected_server = copy.deepcopy(server)
    account = AccountContext("acct", sender=RecordingSender())
    order = ["INBOX", "A"]
    sent_expected = oracle(
        expected_server, rules, account, order, EvalContext(NOW, UTC), gmail=dialect == "gmail"
    )

    sender = RecordingSender()
    account = AccountContext("acct", sender=sender)
    store = FakeStore(server, Dialect.named(dialect), NOW)
    engine = Engine(RunOptions(NOW, UTC, "run"), search_ahead_min=0)  # ahead whatever the size
    for mailbox in order:
        uids = sorted(server.mailbox(mailbox).messages) if path == "arrival" else None
        ahead = FakeStore(server, Dialect.named(dialect), NOW)
        engine.process(
            store, account, mailbox, rules, uids, prefetch=opener(ahead) if path == "ahead" else None
        )
    assert server.state() == expected_server.state()
    assert sorted(sender.sent) == sent_expected


@pytest.mark.parametrize("dialect", ["dovecot", "rfc3501", "gmail"])
def test_examples_rule_set_equals_oracle(dialect: str) -> None:
    from pathlib import Path

    from mailrules.dsl.loader import load_rule_set

    result = load_rule_set(Path(__file__).resolve().parents[2] / "rules.d")
    assert result.ok
    rules = result.rule_set.rules
    server = FakeServer()
    samples = Path(__file__).resolve().parents[2] / "rules.d" / "samples"
    for i, p in enumerate(sorted(samples.glob("*.eml"))):
        server.append("INBOX", p.read_bytes(), ["\\Seen"] if i % 2 else [], NOW - dt.timedelta(days=200 * i))
    expected = copy.deepcopy(server)
    account = AccountContext("work", sender=RecordingSender())
    sent = oracle(expected, rules, account, ["INBOX"], EvalContext(NOW, UTC), gmail=dialect == "gmail")
    sender = RecordingSender()
    Engine(RunOptions(NOW, UTC, "r")).process(
        FakeStore(server, Dialect.named(dialect), NOW), AccountContext("work", sender=sender), "INBOX", rules
    )
    assert server.state() == expected.state()
    assert sorted(sender.sent) == sent


def test_forward_is_sent_once_per_message_id_even_under_a_new_uid() -> None:
    """A UIDVALIDITY change or a move gives the message a new UID; the journal still knows it."""
    from mailrules.state.store import StateStore

    state = StateStore.open(":memory:")
    rules = rules_of('rule "f" in "INBOX", "Other" { when all then forward to "a@example.org" }')
    raw = msg("bob@example.com", "once")
    sender = RecordingSender()
    for mailbox in ("INBOX", "Other"):
        server = FakeServer()
        server.append(mailbox, raw)
        run_id = state.begin_run("run", False)
        report = Engine(RunOptions(NOW, UTC, run_id), journal=state).process(
            FakeStore(server, Dialect.named("dovecot"), NOW),
            AccountContext("a", sender=sender),
            mailbox,
            rules,
        )
    assert len(sender.sent) == 1
    assert report.rules[0].outcomes == {"forward skipped": 1}
    state.close()


def test_later_rules_are_searched_ahead_on_the_second_connection() -> None:
    server = FakeServer()
    for i in range(6):
        server.append("INBOX", msg(f"u{i}@example.org", f"s{i}"), ["\\Seen"] if i % 2 else [])
    rules = rules_of(
        'rule "a" { when from contains "u0@" then move to "A" }\n'
        'rule "b" { when from contains "example.org" then mark read }\n'
        'rule "c" { when subject contains "s" then flag }\n'  # tests no flag: searched ahead
        'rule "d" { when seen then move to "Seen" }\n'  # tests \\Seen, which "b" changes: not ahead
    )
    expected = copy.deepcopy(server)
    oracle(expected, rules, AccountContext("acct"), ["INBOX"], EvalContext(NOW, UTC))
    ahead = FakeStore(server, Dialect.named("dovecot"), NOW)
    opened: list[str] = []

    def second() -> FakeStore:
        opened.append(threading.current_thread().name)
        return ahead

    report = Engine(RunOptions(NOW, UTC, "r"), search_ahead_min=6).process(
        FakeStore(server, Dialect.named("dovecot"), NOW),
        AccountContext("acct"),
        "INBOX",
        rules,
        prefetch=second,
    )
    assert server.state() == expected.state()
    assert ahead.commands.count("SEARCH") == 3  # a, b, c; never d
    assert opened == ["prefetch:INBOX"]  # opened once, by the prefetch thread: the first rule did not wait
    assert report.searched_ahead


def test_a_pass_under_the_search_ahead_size_opens_no_second_connection() -> None:
    """Below SEARCH_AHEAD_MIN_MESSAGES the second connection costs more than it saves (bench/README.md):
    it is never opened, and the pass searches rule by rule."""
    server = FakeServer()
    for i in range(6):
        server.append("INBOX", msg(f"u{i}@example.org", f"s{i}"))
    rules = rules_of(
        'rule "a" { when from contains "u0@" then move to "A" }\n'
        'rule "c" { when subject contains "s" then flag }'
    )
    expected = copy.deepcopy(server)
    oracle(expected, rules, AccountContext("acct"), ["INBOX"], EvalContext(NOW, UTC))
    opened: list[FakeStore] = []

    def second() -> FakeStore:
        opened.append(FakeStore(server, Dialect.named("dovecot"), NOW))
        return opened[-1]

    assert SEARCH_AHEAD_MIN_MESSAGES > 6
    for engine in (Engine(RunOptions(NOW, UTC, "r")), Engine(RunOptions(NOW, UTC, "r"), search_ahead_min=7)):
        store = FakeStore(server, Dialect.named("dovecot"), NOW)
        report = engine.process(store, AccountContext("acct"), "INBOX", rules, prefetch=second)
        assert opened == [] and not report.searched_ahead
        assert store.commands.count("SEARCH") == 3  # ALL, then each rule on the first connection
    assert server.state() == expected.state()


def test_a_second_connection_that_cannot_be_had_means_searching_rule_by_rule() -> None:
    server = FakeServer()
    for i in range(3):
        server.append("INBOX", msg(f"u{i}@example.org", f"s{i}"))
    rules = rules_of(
        'rule "a" { when from contains "u0@" then move to "A" }\n'
        'rule "c" { when subject contains "s" then flag }'
    )
    expected = copy.deepcopy(server)
    oracle(expected, rules, AccountContext("acct"), ["INBOX"], EvalContext(NOW, UTC))

    def refused() -> FakeStore:
        raise ImapError("too many connections", "retry")

    report = Engine(RunOptions(NOW, UTC, "r"), search_ahead_min=0).process(
        FakeStore(server, Dialect.named("dovecot"), NOW),
        AccountContext("acct"),
        "INBOX",
        rules,
        prefetch=refused,
    )
    assert server.state() == expected.state()
    assert not report.searched_ahead


def test_a_copy_is_made_once_per_message_rule_and_mailbox() -> None:
    """A second run, or a batch processed again after a crash, finds the copy in the journal."""
    from mailrules.state.store import StateStore

    state = StateStore.open(":memory:")
    server = FakeServer()
    server.append("INBOX", msg("bob@example.com", "invoice 1"))
    server.append("INBOX", msg("bob@example.com", "invoice 2"))
    rules = rules_of('rule "c" { when subject contains "invoice" then copy to "Finance", flag }')
    store = FakeStore(server, Dialect.named("dovecot"), NOW)
    first = Engine(RunOptions(NOW, UTC, state.begin_run("run", False)), journal=state)
    assert first.process(store, AccountContext("a"), "INBOX", rules).rules[0].outcomes["copy ok"] == 2
    server.append("INBOX", msg("bob@example.com", "invoice 3"))
    again = Engine(RunOptions(NOW, UTC, state.begin_run("run", False)), journal=state)
    outcomes = again.process(store, AccountContext("a"), "INBOX", rules).rules[0].outcomes
    assert outcomes["copy ok"] == 1 and outcomes["copy skipped"] == 2
    assert len(server.mailbox("Finance").messages) == 3
    state.close()


def test_a_value_the_wire_refuses_fails_the_action_not_the_run() -> None:
    from mailrules.imap.core import UnsendableValue

    class Refusing(FakeStore):
        def copy(self, uids, dest, *, create):  # type: ignore[no-untyped-def]
            raise UnsendableValue(f"CR, LF or NUL in a mailbox name: {dest!r}")

    server = FakeServer()
    server.append("INBOX", msg(subject="x"))
    rules = rules_of('rule "c" { when all then copy to "C", flag }')
    report = Engine(RunOptions(NOW, UTC, "r")).process(
        Refusing(server, Dialect.named("dovecot"), NOW), AccountContext("a"), "INBOX", rules
    )
    assert report.rules[0].outcomes == {"copy failed": 1, "flag ok": 1}


def test_the_entries_of_one_command_share_its_moment() -> None:
    """One clock read (and one row timestamp) per command, not per message."""
    from mailrules.state.store import StateStore

    state = StateStore.open(":memory:")
    server = FakeServer()
    for i in range(3):
        server.append("INBOX", msg("bob@example.com", f"invoice {i}"))
    rules = rules_of('rule "r" { when from contains "bob" then flag, move to "Invoices" }')
    run_id = state.begin_run("run", False)
    Engine(RunOptions(NOW, UTC, run_id), journal=state).process(
        FakeStore(server, Dialect.named("dovecot"), NOW), AccountContext("a"), "INBOX", rules
    )
    rows = state.run_entries(run_id)
    flags, moves = [r for r in rows if r.action == "flag"], [r for r in rows if r.action == "move"]
    assert len(flags) == len(moves) == 3
    assert len({r.at for r in flags}) == len({r.at for r in moves}) == 1
    assert flags[0].at <= moves[0].at
    state.close()


def test_a_destination_is_compared_with_the_source_once_per_name() -> None:
    """Loop safety asks, per message and removing action, whether the destination is the mailbox
    read: answered once per name, and a literal name is not rendered per message."""
    asked: list[tuple[str, str]] = []

    class Counting(FakeStore):
        def same_mailbox(self, a: str, b: str) -> bool:
            asked.append((a, b))
            return super().same_mailbox(a, b)

    server = FakeServer()
    for i in range(4):
        server.append("INBOX", msg("bob@example.com", f"s{i} {'inbox' if i == 3 else 'list'}"))
    rules = rules_of(
        'rule "home" { when subject contains "inbox" then move to "inbox" }\n'  # the source: skipped
        'rule "lists" { when subject contains "list" then move to "Lists", archive to "Lists" }'
    )
    expected = copy.deepcopy(server)
    oracle(expected, rules, AccountContext("a"), ["INBOX"], EvalContext(NOW, UTC))
    report = Engine(RunOptions(NOW, UTC, "r")).process(
        Counting(server, Dialect.named("dovecot"), NOW), AccountContext("a"), "INBOX", rules
    )
    assert server.state() == expected.state()
    assert report.rules[0].outcomes == {"move skipped": 1}
    assert report.rules[1].outcomes == {"archive ok": 3}
    assert sorted(set(asked)) == sorted(asked) == [("Lists", "INBOX"), ("inbox", "INBOX")]
