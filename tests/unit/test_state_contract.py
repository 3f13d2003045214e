"""What every state backend does, the same way: the State interface's behaviour.

Run here on SQLite; tests/integration/test_state_postgres.py imports these tests and runs them on
a real PostgreSQL with its own `state` and `second` fixtures (another store on the same database:
another process, or another replica).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from mailrules.state import Checkpoint, JournalEntry, State, StateError, StateStore, intent_key

T0 = datetime(2026, 11, 26, 15, 8, 12, tzinfo=UTC)

Opener = Callable[[], State]


def entry(run_id: str, **changes: object) -> JournalEntry:
    base = JournalEntry(
        run_id=run_id, rule="lists", rule_span="rules.d/20-lists.rules:12", account="work",
        mailbox="INBOX", uidvalidity=7, uid=100, message_id="<a@example.com>", action="move",
        detail="", destination="Lists", new_uidvalidity=9, new_uid=500, outcome="ok", error=None, at=T0,
    )  # fmt: skip
    return base._replace(**changes)  # type: ignore[arg-type]


@pytest.fixture
def opener(tmp_path: Path) -> Iterator[Opener]:
    """Opens another store on the same state each call (closed at the end)."""
    opened: list[State] = []

    def open_() -> State:
        opened.append(StateStore.open(tmp_path / "state.db"))
        return opened[-1]

    yield open_
    for s in opened:
        s.close()


@pytest.fixture
def state(opener: Opener) -> State:
    return opener()


@pytest.fixture
def second(state: State, opener: Opener) -> State:
    """Another store on the same state, opened after `state`."""
    return opener()


# -- runs ---------------------------------------------------------------------------------------


def test_runs_are_listed_newest_first_with_their_summary(state: State) -> None:
    first = state.begin_run("idle", dry_run=False, now=T0)
    later = state.begin_run("schedule", dry_run=True, now=T0 + timedelta(seconds=1))
    assert re.fullmatch(r"20261126T150812-[0-9a-f]{6}", first) and first < later
    state.record_many([entry(first), entry(first, uid=101)])
    state.end_run(first, {"moved": 2, "when": T0}, now=T0 + timedelta(seconds=5))
    runs = state.runs(10)
    assert [r.run_id for r in runs] == [later, first]
    assert runs[0].dry_run and runs[0].ended_at is None and runs[0].summary is None
    assert runs[1].trigger == "idle" and runs[1].entries == 2
    assert runs[1].summary == {"moved": 2, "when": str(T0)}  # what JSON cannot hold, as text
    assert runs[1].ended_at == T0 + timedelta(seconds=5)
    assert state.runs(1) == runs[:1]
    assert state.runs(10, trigger="idle") == [runs[1]]
    assert state.get_run(first) == runs[1] and state.get_run("nope") is None


def test_the_end_of_an_unknown_run_is_an_error(state: State) -> None:
    with pytest.raises(StateError, match="unknown run"):
        state.end_run("nope", {})


# -- journal ------------------------------------------------------------------------------------


def test_journal_round_trip(state: State, second: State) -> None:
    run = state.begin_run("manual", dry_run=False)
    original = entry(run, at=T0.astimezone(timezone(timedelta(hours=2))), message_id=None)
    state.record(original)
    (back,) = second.find(run_id=run)
    assert back == original  # equal instants compare equal across time zones
    assert back.at.tzinfo is not None
    odd = entry(run, uid=2**31, uidvalidity=2**32 - 1, rule="r\u00e9gle \u2603", error="NO [x] 'quoted' %s ?")
    state.record(odd)
    assert second.find(run_id=run, rule="r\u00e9gle \u2603") == [odd]


def test_a_naive_time_or_an_unknown_outcome_writes_nothing(state: State) -> None:
    run = state.begin_run("manual", dry_run=False)
    with pytest.raises(ValueError, match="timezone"):
        state.record(entry(run, at=datetime(2026, 1, 1)))
    with pytest.raises(ValueError, match="outcome"):
        state.record(entry(run, outcome="maybe"))
    assert state.find() == []


def test_the_journal_needs_a_known_run_and_a_bad_row_spoils_its_batch(state: State) -> None:
    with pytest.raises(StateError, match=r"cannot record the journal: .*(?i:foreign key)"):
        state.record(entry("no-such-run"))
    run = state.begin_run("idle", dry_run=False)
    with pytest.raises(StateError):
        state.record_many([entry(run, uid=1), entry("unknown-run", uid=2)])
    assert state.find() == []
    state.record(entry(run, uid=3))  # the store is usable afterwards
    assert [e.uid for e in state.find()] == [3]


def test_find_filters_and_orders_newest_first(state: State) -> None:
    r1 = state.begin_run("manual", dry_run=False)
    r2 = state.begin_run("manual", dry_run=False)
    state.record_many(
        [
            entry(r1, uid=1, at=T0),
            entry(r1, uid=2, at=T0 + timedelta(minutes=2), rule="spam", message_id="<s@x>"),
            entry(r2, uid=3, at=T0 + timedelta(minutes=1), account="home"),
            entry(r2, uid=4, at=T0 + timedelta(minutes=1)),  # same instant: later insert first
        ]
    )
    assert [e.uid for e in state.find()] == [2, 4, 3, 1]
    assert [e.uid for e in state.find(rule="lists")] == [4, 3, 1]
    assert [e.uid for e in state.find(message_id="<s@x>")] == [2]
    assert [e.uid for e in state.find(run_id=r2)] == [4, 3]
    assert [e.uid for e in state.find(account="work", run_id=r2)] == [4]
    assert [e.uid for e in state.find(limit=2)] == [2, 4]
    assert [e.uid for e in state.run_entries(r2)] == [3, 4]


def test_already_done_is_by_rule_action_and_destination(state: State) -> None:
    run = state.begin_run("idle", dry_run=False)
    state.record_many(
        [
            entry(run, uid=1),
            entry(run, uid=2, outcome="failed"),
            entry(run, uid=3, destination="Other"),
            entry(run, uid=4, action="flag", destination=None, detail="\\Flagged"),
            entry(run, uid=5, mailbox="Sent"),
        ]
    )
    uids = list(range(1, 1200))  # more than one chunk of parameters
    assert state.already_done("work", "INBOX", 7, uids, "lists", "move", "Lists") == {1}
    assert state.already_done("work", "INBOX", 7, uids, "lists", "flag", None) == {4}
    assert state.already_done("work", "INBOX", 8, uids, "lists", "move", "Lists") == set()
    assert state.already_done("work", "INBOX", 7, [], "lists", "move", "Lists") == set()


def test_transaction_rollback_leaves_no_half_batch(state: State) -> None:
    run = state.begin_run("idle", dry_run=False)
    state.set_checkpoint("work", "INBOX", Checkpoint(7, 99, None, T0))
    with pytest.raises(RuntimeError), state.transaction():
        state.record_many([entry(run, uid=100), entry(run, uid=101)])
        state.set_checkpoint("work", "INBOX", Checkpoint(7, 101, 55, T0))
        raise RuntimeError("connection lost")
    assert state.find() == []
    assert state.get_checkpoint("work", "INBOX") == Checkpoint(7, 99, None, T0)


def test_a_batch_commits_with_its_checkpoint_and_a_nested_block_is_a_savepoint(
    state: State, second: State
) -> None:
    run = state.begin_run("idle", dry_run=False)
    with state.transaction():
        state.record(entry(run, uid=1))
        with pytest.raises(KeyError), state.transaction():
            state.record(entry(run, uid=2))
            raise KeyError("inner")
        state.record(entry(run, uid=3))
        state.set_checkpoint("work", "INBOX", Checkpoint(7, 3, 55, T0))
    assert [e.uid for e in second.run_entries(run)] == [1, 3]
    assert second.get_checkpoint("work", "INBOX") == Checkpoint(7, 3, 55, T0)


# -- checkpoints and retries -------------------------------------------------------------------


def test_a_checkpoint_never_moves_backwards(state: State, second: State) -> None:
    """Two writers (a slow batch finishing after a faster one): the higher UID stays; only a new
    UIDVALIDITY may lower it."""
    a, b = state, second
    assert a.get_checkpoint("work", "INBOX") is None
    a.set_checkpoint("work", "INBOX", Checkpoint(7, 100, None, T0))
    a.set_checkpoint("work", "Lists", Checkpoint(8, 3, 12, T0))
    b.set_checkpoint("work", "INBOX", Checkpoint(7, 200, None, T0 + timedelta(minutes=1)))
    a.set_checkpoint("work", "INBOX", Checkpoint(7, 150, None, T0 + timedelta(minutes=2)))
    assert a.get_checkpoint("work", "INBOX") == Checkpoint(7, 200, None, T0 + timedelta(minutes=1))
    a.set_checkpoint("work", "INBOX", Checkpoint(7, 200, 9, T0 + timedelta(minutes=3)))  # refreshed
    assert b.get_checkpoint("work", "INBOX") == Checkpoint(7, 200, 9, T0 + timedelta(minutes=3))
    b.set_checkpoint("work", "INBOX", Checkpoint(8, 5, None, T0 + timedelta(minutes=4)))  # renumbered
    assert a.get_checkpoint("work", "INBOX") == Checkpoint(8, 5, None, T0 + timedelta(minutes=4))
    a.set_checkpoint("work", "INBOX", Checkpoint(8, 4, None, T0 + timedelta(minutes=5)))
    assert a.get_checkpoint("work", "INBOX") == Checkpoint(8, 5, None, T0 + timedelta(minutes=4))
    assert b.get_checkpoint("work", "Lists") == Checkpoint(8, 3, 12, T0)
    assert b.get_checkpoint("home", "INBOX") is None


def test_retry_counts_are_kept_per_mailbox_and_uidvalidity(state: State, second: State) -> None:
    assert state.get_retries("work", "INBOX", 7) == {}
    state.set_retries("work", "INBOX", 7, {10: 1, 11: 3})
    state.set_retries("work", "Lists", 7, {10: 2})
    assert second.get_retries("work", "INBOX", 7) == {10: 1, 11: 3}
    assert second.get_retries("work", "INBOX", 8) == {}  # other UIDs under another UIDVALIDITY
    second.set_retries("work", "INBOX", 7, {11: 4})
    assert state.get_retries("work", "INBOX", 7) == {11: 4}
    state.set_retries("work", "INBOX", 7, {})
    assert second.get_retries("work", "INBOX", 7) == {} and second.get_retries("work", "Lists", 7) == {10: 2}


# -- intents ------------------------------------------------------------------------------------


def test_an_intent_confirmed_is_never_granted_again(state: State, second: State) -> None:
    key = intent_key("work", "INBOX", 7, 100, "boss", "forward", "me@example.com")
    run = state.begin_run("idle", dry_run=False)
    e = entry(run, action="forward", detail="me@example.com", destination=None)
    assert state.intent(key, e) is True  # go ahead
    state.confirm(key)
    assert state.is_confirmed(key) and second.is_confirmed(key)
    assert state.intent(key, e) is False and second.intent(key, e) is False
    assert second.pending_intents() == []
    assert second.release(key) is False  # a confirmed intent cannot be released


def test_an_intent_in_doubt_is_listed_not_granted_until_released(state: State, second: State) -> None:
    key = intent_key("work", "INBOX", 7, 100, "boss", "redirect", "me@example.com")
    run = state.begin_run("idle", dry_run=False)
    e = entry(run, action="redirect", detail="me@example.com", destination=None)
    assert state.intent(key, e, now=T0) is True
    # the process dies here: the other store sees an intent never confirmed
    assert second.intent(key, e) is False
    (pending,) = second.pending_intents()
    assert pending.key == key and pending.entry == e and pending.created_at == T0
    assert pending.confirmed_at is None and not second.is_confirmed(key)
    assert second.release(key) is True
    assert state.pending_intents() == []
    assert state.intent(key, e) is True


def test_confirming_an_unknown_intent_is_an_error(state: State) -> None:
    with pytest.raises(StateError, match="unknown intent"):
        state.confirm("nope")


def test_an_intent_is_refused_inside_a_transaction(state: State) -> None:
    run = state.begin_run("idle", dry_run=False)
    e = entry(run, action="forward", detail="a@b.c")
    with pytest.raises(StateError, match="outside transaction"), state.transaction():
        state.intent("k", e)
    with pytest.raises(StateError, match="outside transaction"), state.transaction():
        state.claim([("k", e)])
    assert state.intent("k", e) is True


def test_a_confirmation_commits_with_the_journal_entry(state: State) -> None:
    run = state.begin_run("idle", dry_run=False)
    e = entry(run, action="forward", detail="a@b.c")
    assert state.intent("k", e)
    with pytest.raises(RuntimeError), state.transaction():
        state.confirm("k")
        state.record(e)
        raise RuntimeError
    assert not state.is_confirmed("k") and state.find() == []
    with state.transaction():
        state.confirm("k")
        state.record(e)
    assert state.is_confirmed("k") and state.find() == [e]


def test_claims_grant_each_key_once(state: State, second: State) -> None:
    run = state.begin_run("idle", dry_run=False)
    items = [(f"imap/work/INBOX/7/{u}/c/copy/F", entry(run, uid=u, action="copy")) for u in range(1, 6)]
    assert state.claim(items[:3]) == {k for k, _ in items[:3]}
    assert second.claim(items) == {k for k, _ in items[3:]}
    state.confirm_many([items[0][0], items[3][0], "unknown"])
    state.release_many([items[1][0], items[4][0]])
    keys = [k for k, _ in items]
    assert second.confirmed_keys(keys) == {items[0][0], items[3][0]}
    assert sorted(p.entry.uid for p in second.pending_intents()) == [3]
    assert second.claim(items) == {items[1][0], items[4][0]}  # released: granted again
    assert second.confirmed_keys([]) == set()
    many = [f"k{i}" for i in range(1200)]  # more than one chunk of parameters
    state.claim([(k, entry(run, action="copy")) for k in many])
    state.confirm_many(many)
    assert state.confirmed_keys(many) == set(many)


def test_sends_since_counts_an_accounts_sends_to_an_address(state: State) -> None:
    run = state.begin_run("idle", dry_run=False)
    fwd = entry(run, action="forward", detail="Boss@Example.com", destination=None)
    state.intent("a", fwd, now=T0)
    state.intent("b", fwd._replace(uid=2), now=T0 + timedelta(minutes=10))
    state.intent("c", fwd._replace(account="home"), now=T0 + timedelta(minutes=10))
    state.intent("d", fwd._replace(detail="other@example.com"), now=T0 + timedelta(minutes=10))
    state.confirm("b")
    assert sorted(state.sends_since("work", "boss@example.COM", T0)) == [T0, T0 + timedelta(minutes=10)]
    assert state.sends_since("work", "boss@example.com", T0 + timedelta(minutes=1)) == [
        T0 + timedelta(minutes=10)
    ]


def test_one_intent_raced_from_many_threads_and_two_stores_is_granted_once(
    state: State, second: State
) -> None:
    run = state.begin_run("idle", dry_run=False)
    e = entry(run, action="forward", detail="a@b.c")
    start = threading.Barrier(8)
    won: list[bool] = []

    def race(store: State) -> None:
        start.wait()
        won.append(store.intent("race", e))

    threads = [threading.Thread(target=race, args=(s,)) for s in (state, second) * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won) == [False] * 7 + [True]


# -- undo ---------------------------------------------------------------------------------------


def test_the_undo_plan_is_read_from_the_journal(state: State, second: State) -> None:
    run = state.begin_run("idle", dry_run=False)
    state.record_many(
        [
            entry(run, uid=1, action="flag", detail="\\Flagged", destination=None, new_uid=None),
            entry(run, uid=1),
            entry(run, uid=2, action="forward", detail="a@b.c", destination=None),
        ]
    )
    plan = second.undo_plan(run)
    (move,) = plan.moves
    assert move.source.mailbox == "Lists" and move.source.uid == 500 and move.target == "INBOX"
    (flag,) = plan.flags
    assert flag.flag == "\\Flagged" and not flag.add and flag.where == move.source
    assert [r.journal.action for r in plan.refused] == ["forward"]
    assert plan.undone_by == ()
    undo = second.begin_run("undo", dry_run=False)
    second.end_run(undo, {"undo_of": run})
    dry = second.begin_run("undo", dry_run=True)
    second.end_run(dry, {"undo_of": run})
    assert state.undo_plan(run).undone_by == (undo,)
    with pytest.raises(StateError, match="unknown run"):
        state.undo_plan("nope")


# -- on flag change: marks and our own MODSEQs ---------------------------------------------------


def test_a_flag_mark_keeps_our_own_modseqs_until_it_passes_them(state: State, second: State) -> None:
    from mailrules.state import FlagMark

    assert state.get_flag_mark("work", "INBOX") is None
    state.set_flag_mark("work", "INBOX", FlagMark(7, 100, 40))
    second.note_own_changes("work", "INBOX", 7, {3: 101, 4: 105})
    second.note_own_changes("work", "INBOX", 7, {3: 99, 5: 110})  # a lower MODSEQ never replaces
    second.note_own_changes("work", "Other", 7, {3: 120})
    assert state.get_flag_mark("work", "INBOX") == FlagMark(7, 100, 40, own={3: 101, 4: 105, 5: 110})
    state.set_flag_mark("work", "INBOX", FlagMark(7, 105, 41))  # 101 and 105 are spent
    assert second.get_flag_mark("work", "INBOX") == FlagMark(7, 105, 41, own={5: 110})
    assert second.get_flag_mark("work", "Other") is None  # no mark there: its rows wait for one


def test_a_new_uidvalidity_forgets_the_old_own_modseqs(state: State) -> None:
    from mailrules.state import FlagMark

    state.set_flag_mark("work", "INBOX", FlagMark(7, 100, 40))
    state.note_own_changes("work", "INBOX", 7, {3: 200})
    state.set_flag_mark("work", "INBOX", FlagMark(8, 10, 2))
    state.note_own_changes("work", "INBOX", 8, {1: 11})
    assert state.get_flag_mark("work", "INBOX") == FlagMark(8, 10, 2, own={1: 11})
