"""How state rows are written and read: journal columns, timestamps, entries as rows and as JSON."""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from itertools import chain
from typing import Any

from mailrules.state.models import OUTCOMES, FlagMark, JournalEntry

JOURNAL_COLUMNS = (
    "run_id", "rule", "rule_span", "account", "mailbox", "uidvalidity", "uid", "message_id", "action",
    "detail", "destination", "new_uidvalidity", "new_uid", "outcome", "error", "at",
)  # fmt: skip
INSERT_JOURNAL = (
    f"INSERT INTO journal ({', '.join(JOURNAL_COLUMNS)}) VALUES ({', '.join('?' for _ in JOURNAL_COLUMNS)})"
)
SELECT_JOURNAL = f"SELECT {', '.join(JOURNAL_COLUMNS)} FROM journal"
#: Journal rows per INSERT statement in SQLite (journal_inserts): 60 x 16 parameters stay under
#: the 999 that SQLite before 3.32 allows in one statement.
ROWS_PER_INSERT = 60
assert JournalEntry._fields == JOURNAL_COLUMNS  # an entry is its row, but for `at` (entry_row)
_WIDTH = len(JOURNAL_COLUMNS)
_OUTCOME = operator.itemgetter(JOURNAL_COLUMNS.index("outcome"))


@lru_cache(maxsize=16)  # the entries of one command share their moment: one conversion for them all
def ts(moment: datetime) -> str:
    """Fixed-width UTC ISO text, so that text order is time order in SQL."""
    if moment.tzinfo is None:
        raise ValueError("state timestamps must be timezone-aware")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def parse_ts(text: str) -> datetime:
    """A timestamp written by `ts`."""
    return datetime.fromisoformat(text)


def aware(moment: datetime) -> datetime:
    """`moment` in UTC, as a timestamptz parameter (PostgreSQL); refused without a time zone, as `ts`."""
    if moment.tzinfo is None:
        raise ValueError("state timestamps must be timezone-aware")
    return moment.astimezone(UTC)


def entry_row(e: JournalEntry, stamp: Callable[[datetime], Any] = ts) -> tuple[Any, ...]:
    """The journal row of `e`, in JOURNAL_COLUMNS order; `at` through `stamp` (text for SQLite,
    `aware` for PostgreSQL's timestamptz)."""
    if e.outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {e.outcome!r}")
    return (*e[:-1], stamp(e.at))  # the entry is a tuple in JOURNAL_COLUMNS order


@lru_cache(maxsize=4)
def _insert_rows(n: int) -> str:
    one = f"({', '.join('?' for _ in JOURNAL_COLUMNS)})"
    return f"INSERT INTO journal ({', '.join(JOURNAL_COLUMNS)}) VALUES {', '.join([one] * n)}"


def journal_inserts(entries: Sequence[JournalEntry]) -> Iterator[tuple[str, list[Any]]]:
    """SQLite statements that insert the rows of `entries` (entry_row's) in order,
    ROWS_PER_INSERT to a statement; ValueError before the first for an unknown outcome.

    Not `executemany` of one row's INSERT: SQLite runs each row as a statement of its own, with
    its own statement transaction: 24,000 rows took 2.46 G instructions that way, 1.27 G in
    statements of 60 (bench/README.md, "What remains"). Ids are given in the rows' order either way.
    A statement's parameters are its entries' values in a row (they are tuples in column order),
    every `at` turned into text by a slice: no Python step per row or value.
    """
    if not OUTCOMES.issuperset(map(_OUTCOME, entries)):
        bad = next(e.outcome for e in entries if e.outcome not in OUTCOMES)
        raise ValueError(f"unknown outcome {bad!r}")
    for i in range(0, len(entries), ROWS_PER_INSERT):
        part = entries[i : i + ROWS_PER_INSERT]
        params = list(chain.from_iterable(part))
        params[_WIDTH - 1 :: _WIDTH] = map(ts, params[_WIDTH - 1 :: _WIDTH])
        yield _insert_rows(len(part)), params


def entry_from_row(row: Sequence[Any]) -> JournalEntry:
    """The entry of a row selected with SELECT_JOURNAL."""
    return JournalEntry._make((*row[:-1], parse_ts(row[-1])))  # _make checks the length


def entry_data(e: JournalEntry) -> dict[str, Any]:
    """`e` as the JSON object kept with an intent (`at` as `ts` text)."""
    row = e._asdict()
    row["at"] = ts(e.at)
    return row


def entry_to_json(e: JournalEntry) -> str:
    """`e` as the JSON kept with an intent."""
    return json.dumps(entry_data(e), sort_keys=True)


def entry_from_data(values: dict[str, Any]) -> JournalEntry:
    """The entry of an intent's JSON object (PostgreSQL's jsonb arrives decoded)."""
    return JournalEntry(**{**values, "at": parse_ts(values["at"])})


def entry_from_json(text: str) -> JournalEntry:
    """The entry of an intent's JSON."""
    return entry_from_data(json.loads(text))


def flag_mark_row(account: str, mailbox: str, mark: FlagMark) -> tuple[str, str, int, int, int]:
    """The `flag_marks` row of a mark (its `own` MODSEQs are rows of their own: `own_rows`)."""
    return (account, mailbox, mark.uidvalidity, mark.highestmodseq, mark.last_uid)


def own_rows(
    account: str, mailbox: str, uidvalidity: int, changes: Mapping[int, int]
) -> list[tuple[str, str, int, int, int]]:
    """The `own_modseqs` rows of UID -> MODSEQ, in UID order."""
    return [(account, mailbox, uidvalidity, uid, modseq) for uid, modseq in sorted(changes.items())]
