"""The search-ahead connection (engine/prefetch.py): a rule taken up there sees exactly the
messages still in play at its turn, whatever the second connection did or failed to do."""

from __future__ import annotations

import copy
import datetime as dt
import threading
from collections.abc import Sequence

import pytest

from mailrules.bounds import Bounds
from mailrules.compile import keys as K
from mailrules.compile.dialect import Dialect
from mailrules.compile.needs import FetchNeeds
from mailrules.dsl import ast as A
from mailrules.dsl.parser import parse_text
from mailrules.dsl.semantics import EvalContext
from mailrules.engine.core import Engine
from mailrules.engine.evaluation import BoundedEvaluator
from mailrules.engine.ports import AccountContext, MailboxReport, RunOptions
from mailrules.errors import ImapError
from mailrules.message.view import MessageView
from tests.fakes import FakeServer, FakeStore, oracle

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
UTC = dt.UTC
DOVECOT = Dialect.named("dovecot")


def rules_of(text: str) -> tuple[A.Rule, ...]:
    rf, diags = parse_text(text, "t.rules")
    assert rf is not None and not [d for d in diags if d.severity == "error"], diags
    return rf.rules


def msg(frm: str, subject: str) -> bytes:
    return (
        f"From: {frm}\r\nTo: me@example.com\r\nSubject: {subject}\r\n"
        f"Message-ID: <{abs(hash((frm, subject)))}@t>\r\n"
        "Date: Sat, 01 Mar 2025 10:00:00 +0000\r\n\r\nbody\r\n"
    ).encode()


class Recording(FakeStore):
    """Keeps the UIDs of each FETCH, and the searches' keys."""

    def __init__(self, server: FakeServer) -> None:
        super().__init__(server, DOVECOT, NOW)
        self.fetched: list[list[int]] = []
        self.keys: list[K.SearchKey] = []

    def search(self, key: K.SearchKey) -> list[int]:
        self.keys.append(key)
        return super().search(key)

    def fetch_views(self, uids: Sequence[int], needs: FetchNeeds) -> dict[int, MessageView]:
        self.fetched.append(list(uids))
        return super().fetch_views(uids, needs)


def uid_sets(key: K.SearchKey) -> list[frozenset[int]]:
    """The UID sets that restrict a search."""
    parts = key.items if isinstance(key, K.And) else (key,)
    return [k.uids for k in parts if isinstance(k, K.Uid)]


def ahead_run(
    server: FakeServer, rules: tuple[A.Rule, ...], main: FakeStore, ahead: FakeStore
) -> MailboxReport:
    engine = Engine(RunOptions(NOW, UTC, "r"), search_ahead_min=0)
    return engine.process(main, AccountContext("acct"), "INBOX", rules, prefetch=lambda: ahead)


def expected_after(server: FakeServer, rules: tuple[A.Rule, ...]) -> FakeServer:
    expected = copy.deepcopy(server)
    oracle(expected, rules, AccountContext("acct"), ["INBOX"], EvalContext(NOW, UTC))
    return expected


def test_a_rule_after_one_that_moves_is_fetched_without_the_messages_moved_away() -> None:
    server = FakeServer()
    for i in range(8):
        server.append("INBOX", msg(f"{'bulk' if i < 5 else 'u'}{i}@example.org", f"s{i}"))
    rules = rules_of(
        'rule "a" { when from contains "bulk" then move to "Bulk" }\n'
        'rule "b" { when subject contains "s" then flag }\n'  # a residual: its hits are fetched
    )
    server.mailbox("Bulk")  # exists: no TRYCREATE round
    expected = expected_after(server, rules)
    main, ahead = Recording(server), Recording(server)
    report = ahead_run(server, rules, main, ahead)
    assert server.state() == expected.state()
    assert report.searched_ahead and [r.matched for r in report.rules] == [5, 3]
    # both rules were searched, fetched and judged on the second connection; rule b fetched
    # only the three messages rule a did not take (its search, made while rule a was matched or
    # after, over the mailbox as it was or with those three UIDs)
    assert ahead.fetched == [[1, 2, 3, 4, 5], [6, 7, 8]]
    assert uid_sets(ahead.keys[0]) == [] and uid_sets(ahead.keys[1]) in ([], [{6, 7, 8}])
    assert main.commands == ["SELECT", "SEARCH", "MOVE", "STORE"]  # the first connection only acted


def test_a_message_whose_move_failed_stays_in_play_and_is_fetched_by_the_first_connection() -> None:
    class Refusing(Recording):
        def move(self, uids: Sequence[int], dest: str, *, create: bool) -> tuple[int | None, dict[int, int]]:
            if 2 in uids:
                raise ImapError("NO [OVERQUOTA] over quota", "permanent")
            return super().move(uids, dest, create=create)

    server = FakeServer()
    server.append("INBOX", msg("u1@example.org", "keep one"))
    server.append("INBOX", msg("bulk@example.org", "refused"))
    server.append("INBOX", msg("u3@example.org", "keep three"))
    rules = rules_of(
        'rule "a" { when from contains "bulk" then move to "Bulk" }\n'
        'rule "b" { when subject contains "e" then flag }\n'
    )
    main, ahead = Refusing(server), Recording(server)
    report = ahead_run(server, rules, main, ahead)
    assert report.rules[0].outcomes == {"move failed": 1}
    # rule b saw every message still there: the refused one too, judged on the first connection
    assert report.rules[1].matched == 3
    assert all(m.flags == {"\\Flagged"} for m in server.mailbox("INBOX").messages.values())
    assert ahead.fetched[1] == [1, 3]  # expected to have left: not fetched ahead
    assert main.fetched == [[2]]
    assert uid_sets(main.keys[-1]) == [{2}]


def test_a_failure_on_the_second_connection_leaves_the_rule_to_the_first() -> None:
    class Failing(Recording):
        def fetch_views(self, uids: Sequence[int], needs: FetchNeeds) -> dict[int, MessageView]:
            if len(self.fetched) == 1:  # the second rule's FETCH
                self.fetched.append(list(uids))
                raise ImapError("connection reset", "retry")
            return super().fetch_views(uids, needs)

    server = FakeServer()
    for i in range(6):
        server.append("INBOX", msg(f"u{i}@example.org", f"s{i} {'x' if i % 2 else 'y'}"))
    rules = rules_of(
        'rule "a" { when subject contains "x" then move to "X" }\n'
        'rule "b" { when subject contains "s" then flag }\n'
        'rule "c" { when from contains "u4" then move to "C" }\n'
    )
    expected = expected_after(server, rules)
    main, ahead = Recording(server), Failing(server)
    report = ahead_run(server, rules, main, ahead)
    assert server.state() == expected.state()
    assert [r.matched for r in report.rules] == [3, 3, 1]
    assert main.fetched == [[1, 3, 5]]  # rule b, searched and fetched again on the first one
    assert len(ahead.fetched) == 3  # rule c was still done ahead


class Crash(BaseException):
    """What `except Exception` does not catch (as KeyboardInterrupt or SystemExit)."""


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_thread_ended_by_any_exception_leaves_every_later_rule_to_the_first_connection() -> None:
    class Crashing(Recording):
        def fetch_views(self, uids: Sequence[int], needs: FetchNeeds) -> dict[int, MessageView]:
            raise Crash

    server = FakeServer()
    for i in range(4):
        server.append("INBOX", msg(f"u{i}@example.org", f"s{i}"))
    rules = rules_of(
        'rule "a" { when from contains "u1" then move to "A" }\n'
        'rule "b" { when subject contains "s" then flag }\n'
    )
    expected = expected_after(server, rules)
    main = Recording(server)
    report = ahead_run(server, rules, main, Crashing(server))  # returns: no turn waits forever
    assert server.state() == expected.state()
    assert [r.matched for r in report.rules] == [1, 3]
    assert main.fetched == [[2], [1, 3, 4]]


def test_the_thread_stops_when_the_pass_fails_while_it_waits() -> None:
    """The rule after one the first connection is matching waits for it; a pass that fails
    there ends the wait (the thread is joined), and nothing more is asked of the second one."""

    class Broken(FakeStore):
        def search(self, key: K.SearchKey) -> list[int]:
            if not isinstance(key, K.All):  # rule s's own search, before it is matched
                raise RuntimeError("a bug")
            return super().search(key)

    server = FakeServer()
    for i in range(3):
        server.append("INBOX", msg(f"u{i}@example.org", f"s{i}"), ["\\Seen"])
    rules = rules_of(
        'rule "r" { when all then mark unread }\n'
        'rule "s" { when unseen then move to "S" }\n'  # tests a flag rule r changes: not ahead
        'rule "t" { when subject contains "s" then flag }\n'
    )
    ahead = Recording(server)
    with pytest.raises(RuntimeError, match="a bug"):
        ahead_run(server, rules, Broken(server, DOVECOT, NOW), ahead)
    assert [t.name for t in threading.enumerate() if t.name.startswith("prefetch:")] == []
    assert len(ahead.fetched) == 1  # rule r only: rule t's fetch waited for s, never matched


def test_a_rule_searched_while_its_fetch_waits_fetches_only_the_messages_still_in_play() -> None:
    """While the first connection matches a rule itself, the second one searches the next rule
    over the mailbox as it is; its fetch still waits, and leaves out what that rule moves."""
    searched_t = threading.Event()

    class AheadStore(Recording):
        def search(self, key: K.SearchKey) -> list[int]:
            hits = super().search(key)
            if len(self.keys) == 2:  # rule t's, after rule r's
                searched_t.set()
            return hits

    class MainStore(Recording):
        def search(self, key: K.SearchKey) -> list[int]:
            if not isinstance(key, K.All):  # rule s's own search waits for rule t's ahead
                assert searched_t.wait(30)
            return super().search(key)

    server = FakeServer()
    for i in range(4):
        server.append("INBOX", msg(f"u{i}@example.org", f"s{i}"), ["\\Seen"] if i < 2 else [])
    server.mailbox("S")
    rules = rules_of(
        'rule "r" { when from contains "u0" then mark unread }\n'
        'rule "s" { when unseen then move to "S" }\n'  # tests a flag rule r changes: not ahead
        'rule "t" { when subject contains "s" then flag }\n'
    )
    expected = expected_after(server, rules)
    main, ahead = MainStore(server), AheadStore(server)
    report = ahead_run(server, rules, main, ahead)
    assert server.state() == expected.state()
    assert [r.matched for r in report.rules] == [1, 3, 1]
    assert uid_sets(ahead.keys[1]) == []  # searched before rule s was matched: the whole mailbox
    assert ahead.fetched == [[1], [2]]  # but fetched without the three rule s moved


def test_rules_after_ones_that_only_flag_are_taken_up_at_once() -> None:
    """Only a rule that can take messages away makes the later ones wait for its matches."""
    server = FakeServer()
    for i in range(4):
        server.append("INBOX", msg(f"u{i}@example.org", f"s{i}"))
    rules = rules_of(
        'rule "f" { when from contains "u1" then flag }\n'
        'rule "g" { when from contains "u2" then copy to "G" }\n'
        'rule "h" { when subject contains "s" then move to "H" }\n'
    )
    expected = expected_after(server, rules)
    ahead = Recording(server)
    report = ahead_run(server, rules, Recording(server), ahead)
    assert server.state() == expected.state()
    assert [r.matched for r in report.rules] == [1, 1, 4]
    assert [uid_sets(k) for k in ahead.keys] == [[], [], []]  # none waited for another's matches
    assert ahead.fetched == [[2], [3], [1, 2, 3, 4]]


# -- the residual judged on the other thread, within the message's evaluation time ------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_verdict_judged_ahead_is_charged_at_its_turn_and_refused_past_the_time_left() -> None:
    clock = Clock()
    ev = BoundedEvaluator(Bounds(evaluation_seconds=2.0), EvalContext(NOW, UTC), "a/INBOX", clock)
    (rule,) = rules_of('rule "x" { when subject contains "s" then flag }')
    view = MessageView.from_bytes(msg("u@example.org", "s1"), uid=7)
    verdict = ev.judge_ahead(rule.condition, view, 7)
    assert verdict is not None and verdict[0].ok
    assert ev.budgets.spent(7) == 0.0 and not ev.over_time  # nothing charged until its turn
    assert ev.accept(7, view, 1.5)  # the seconds the other thread measured
    assert ev.budgets.spent(7) == 1.5
    # evaluated in turn, this one would have run out of time: not taken, judged again here
    assert not ev.accept(7, view, 0.6)
    assert ev.budgets.spent(7) == 1.5
    ev.over_time.add(8)
    assert ev.judge_ahead(rule.condition, view, 8) is None  # out of time already: never judged ahead


def test_a_message_the_other_thread_cannot_judge_is_judged_in_turn() -> None:
    """A broken message or one out of time ahead has no verdict: `evaluate` judges it at its
    turn, and logs and counts it there, once."""
    clock = Clock()
    ev = BoundedEvaluator(Bounds(evaluation_seconds=2.0), EvalContext(NOW, UTC), "a/INBOX", clock)
    (rule,) = rules_of('rule "x" { when subject contains "s" then flag }')
    view = MessageView.from_bytes(msg("u@example.org", "s1"), uid=3)
    ev.budgets.charge(3, 2.0)  # no time left to it when the other thread starts
    assert ev.judge_ahead(rule.condition, view, 3) is None
    assert not ev.over_time  # said only at its turn
    assert ev.evaluate(rule, rule.condition, view, 3) is None and ev.over_time == {3}
