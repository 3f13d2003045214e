"""Undo plans computed from the journal: moves back, inverse flags, and what is refused and why."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailrules.state import (
    JournalEntry,
    Location,
    StateError,
    StateStore,
    UndoFlag,
    UndoMove,
    plan_undo,
)

T0 = datetime(2026, 11, 26, 15, 8, 12, tzinfo=UTC)


def e(action: str, uid: int = 100, **changes: object) -> JournalEntry:
    base = JournalEntry(
        run_id="r",
        rule="lists",
        rule_span="rules.d/20-lists.rules:12",
        account="work",
        mailbox="INBOX",
        uidvalidity=7,
        uid=uid,
        message_id=f"<{uid}@example.com>",
        action=action,
        detail="",
        destination=None,
        new_uidvalidity=None,
        new_uid=None,
        outcome="ok",
        error=None,
        at=T0,
    )
    return base._replace(**changes)  # type: ignore[arg-type]


def moved(action: str = "move", uid: int = 100, to: str = "Lists", new_uid: int = 500) -> JournalEntry:
    return e(action, uid, destination=to, new_uidvalidity=9, new_uid=new_uid)


INBOX_100 = Location("work", "INBOX", 7, 100)


def test_flag_then_move_chain_is_undone_on_the_new_location() -> None:
    entries = [
        e("mark read", detail="\\Seen"),
        e("tag", detail="$List"),
        moved(),
    ]
    plan = plan_undo("r", entries)
    at_new_place = Location("work", "Lists", 9, 500)
    assert plan.flags == (
        UndoFlag(at_new_place, "$List", add=False, journal=entries[1]),
        UndoFlag(at_new_place, "\\Seen", add=False, journal=entries[0]),
    )
    assert plan.moves == (UndoMove(at_new_place, "INBOX", 7, journal=entries[2]),)
    assert plan.refused == ()
    assert not plan.empty


def test_flags_without_move_are_inverted_in_place_newest_first() -> None:
    entries = [e("flag"), e("mark unread", uid=101), e("untag", uid=101, detail="$Todo")]
    plan = plan_undo("r", entries)
    assert [(f.where.uid, f.flag, f.add) for f in plan.flags] == [
        (101, "$Todo", True),
        (101, "\\Seen", True),
        (100, "\\Flagged", False),
    ]
    assert all(f.where.mailbox == "INBOX" for f in plan.flags)
    assert plan.moves == ()


def test_archive_and_delete_to_trash_go_back() -> None:
    entries = [moved("archive", 1, "Archive/2026", 10), moved("delete", 2, "Trash", 20)]
    plan = plan_undo("r", entries)
    assert [(m.source.mailbox, m.source.uid, m.target) for m in plan.moves] == [
        ("Trash", 20, "INBOX"),
        ("Archive/2026", 10, "INBOX"),
    ]


def test_two_hops_go_straight_back_to_the_origin() -> None:
    first = moved(to="Sorting", new_uid=40)
    second = e(
        "move", 40, mailbox="Sorting", uidvalidity=9, destination="Lists", new_uidvalidity=11, new_uid=3
    )
    plan = plan_undo("r", [first, second])
    assert plan.moves == (UndoMove(Location("work", "Lists", 11, 3), "INBOX", 7, journal=second),)


def test_refused_parts_carry_reasons() -> None:
    no_copyuid = e("move", 5, destination="Lists")  # server without UIDPLUS
    flag_before = e("flag", 5)
    entries = [
        e("delete permanently", 1),
        e("forward", 2, detail="boss@example.com"),
        e("redirect", 3, detail="boss@example.com"),
        e("copy", 4, destination="Backup", new_uidvalidity=3, new_uid=9),
        flag_before,
        no_copyuid,
        e("frobnicate", 6),
    ]
    plan = plan_undo("r", entries)
    assert plan.empty
    reasons = {(r.journal.uid, r.journal.action): r.reason for r in plan.refused}
    assert "expunged" in reasons[(1, "delete permanently")]
    assert "cannot be recalled" in reasons[(2, "forward")]
    assert "cannot be recalled" in reasons[(3, "redirect")]
    assert "never removes mail" in reasons[(4, "copy")]
    assert "without a recorded new UID" in reasons[(5, "move")]
    assert "later moved" in reasons[(5, "flag")]
    assert "unknown action" in reasons[(6, "frobnicate")]
    assert [r.journal.uid for r in plan.refused] == [1, 2, 3, 4, 5, 5, 6]  # journal order


def test_only_ok_entries_count() -> None:
    entries = [
        e("move", 1, destination="X", new_uidvalidity=1, new_uid=1, outcome="failed", error="NO"),
        e("flag", 2, outcome="skipped"),
        e("move", 3, destination="X", outcome="dry-run"),
        e("forward", 4, outcome="failed"),
        e("stop", 5),
    ]
    plan = plan_undo("r", entries)
    assert plan.empty and plan.refused == ()


def test_store_undo_plan_and_undo_runs() -> None:
    store = StateStore.open(":memory:")
    run = store.begin_run("idle", dry_run=False)
    entries = [
        e("mark read")._replace(run_id=run),
        moved()._replace(run_id=run, at=T0 + timedelta(seconds=1)),
    ]
    store.record_many(entries)
    plan = store.undo_plan(run)
    assert plan.run_id == run and len(plan.flags) == 1 and len(plan.moves) == 1
    assert plan.undone_by == ()
    # the engine executes the plan as a run of its own, and says which run it undid
    dry = store.begin_run("undo", dry_run=True)
    store.end_run(dry, {"undo_of": run})
    undo = store.begin_run("undo", dry_run=False)
    store.end_run(undo, {"undo_of": run, "moved": 1})
    assert store.undo_plan(run).undone_by == (undo,)
    with pytest.raises(StateError, match="unknown run"):
        store.undo_plan("nope")
