"""Journal rows as the backends write them (mailrules/state/rows.py)."""

from __future__ import annotations

import datetime as dt

import pytest

from mailrules.state.rows import JOURNAL_COLUMNS, aware, entry_from_row, entry_row, journal_inserts, ts
from tests.unit.test_state_store import entry


def test_a_row_holds_every_column_in_order_and_reads_back() -> None:
    e = entry("r1", message_id="<m@x>", error="NO [OVERQUOTA]", outcome="failed")
    row = entry_row(e)
    assert len(row) == len(JOURNAL_COLUMNS)
    assert row == tuple(ts(e.at) if c == "at" else getattr(e, c) for c in JOURNAL_COLUMNS)
    assert entry_from_row(row) == e
    assert entry_row(e, aware)[-1] == e.at.astimezone(dt.UTC)  # PostgreSQL's timestamptz


def test_entries_sharing_a_moment_share_its_text_and_others_do_not() -> None:
    at = dt.datetime(2026, 12, 3, 12, 0, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    rows = [entry_row(entry("r1", uid=uid, at=at)) for uid in (1, 2, 3)]
    assert {r[-1] for r in rows} == {"2026-12-03T10:00:00.123456+00:00"}
    later = entry_row(entry("r1", at=at + dt.timedelta(microseconds=1)))
    assert later[-1] == "2026-12-03T10:00:00.123457+00:00"


def test_a_naive_moment_or_an_unknown_outcome_is_refused_every_time() -> None:
    naive = dt.datetime(2026, 12, 3, 12, 0)
    for _ in range(2):  # a refusal is not cached as an answer
        with pytest.raises(ValueError, match="timezone-aware"):
            ts(naive)
    with pytest.raises(ValueError, match="unknown outcome"):
        entry_row(entry("r1")._replace(outcome="maybe"))  # type: ignore[arg-type]
    bad = [entry("r1"), entry("r1")._replace(outcome="maybe")]  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown outcome 'maybe'"):
        next(journal_inserts(bad))  # before the first statement
    with pytest.raises(ValueError, match="timezone-aware"):
        next(journal_inserts([entry("r1", at=naive)]))
