"""The "ok" entries of a command (ActionRunner._made) are the rows and the hook calls that one
`_entry` per message made before: same columns, same values, same order; only built faster."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

import pytest

from mailrules.compile.dialect import Dialect
from mailrules.dsl import ast as A
from mailrules.engine.actions import ActionRunner
from mailrules.engine.core import Engine
from mailrules.engine.ports import AccountContext, RunOptions
from mailrules.engine.targets import Target
from mailrules.state.models import JournalEntry
from mailrules.state.rows import entry_row
from mailrules.state.store import StateStore
from tests.fakes import FakeServer, FakeStore
from tests.unit.test_engine_safety import rules_of

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)

RULES = (
    'rule "flags" { when subject matches /^(a)/ then mark read, flag, tag "K{match.1}" }\n'
    'rule "copies" { when subject matches /^(b\\S*)/ then copy to "Copies/{match.1}" }\n'
    'rule "moves" { when subject contains "c" then move to "Done" }\n'
    'rule "trash" { when all then delete }'
)


def message(i: int) -> bytes:
    # Message-IDs and subjects (templated into destinations and keywords) with control
    # characters, which the journal escapes
    subject = ["a", "b", "c", "a b", "b\x1bc"][i % 5] + f" {i}"
    mid = f"=?utf-8?q?=3Cm{i}=40t=3E=0D=0AFAKE?=" if i % 3 == 0 else f"<m{i}@t>"
    return f"From: x@t\r\nSubject: {subject}\r\nMessage-ID: {mid}\r\n\r\nbody\r\n".encode()


def per_entry(
    self: ActionRunner,
    rule: A.Rule,
    word: str,
    detail: str,
    dest: str | None,
    group: Sequence[Target],
    new_uv: int | None,
    new_uids: Mapping[int, int],
    at: dt.datetime,
) -> list[JournalEntry]:
    """What `_group` did before `_made`: one `_entry` per message."""
    return [
        self._entry(rule, word, detail, t, dest, "ok", None, new_uv, new_uids.get(t.uid), at=at)
        for t in group
    ]


def run(dialect: str) -> tuple[list[tuple[object, ...]], list[JournalEntry], list[list[tuple[str, int]]]]:
    server = FakeServer()
    for i in range(20):
        server.append("INBOX", message(i))
    server.mailbox("Done")
    state = StateStore.open(":memory:")
    run_id = state.begin_run("run", False, now=NOW)
    emitted: list[JournalEntry] = []
    engine = Engine(RunOptions(NOW, dt.UTC, run_id), journal=state, on_entry=emitted.append)
    report = engine.process(
        FakeStore(server, Dialect.named(dialect), NOW),
        AccountContext("a", create_mailboxes=True),
        "INBOX",
        rules_of(RULES),
    )
    entries = state.run_entries(run_id)
    assert {e.run_id for e in [*entries, *emitted]} == {run_id}
    outcomes = [list(rr.outcomes.items()) for rr in report.rules]  # in their order: the INFO line's
    return [entry_row(e)[1:] for e in entries], [e._replace(run_id="") for e in emitted], outcomes


@pytest.mark.parametrize("dialect", ["dovecot", "rfc3501"])
def test_the_rows_and_hook_calls_are_those_of_one_entry_per_message(
    dialect: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows, emitted, outcomes = run(dialect)
    monkeypatch.setattr(ActionRunner, "_made", per_entry)
    before, emitted_before, outcomes_before = run(dialect)

    # `at` is each command's moment: compared as the order of the commands, the run's id (new
    # each run) by run(), all else as it is
    def same_moment(rows: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
        moments = sorted({str(r[-1]) for r in rows})
        return [(*r[:-1], moments.index(str(r[-1]))) for r in rows]

    assert same_moment(rows) == same_moment(before)
    assert [e[:-1] for e in emitted] == [e[:-1] for e in emitted_before]
    assert outcomes == outcomes_before and outcomes[0] == [("mark read ok", 8), ("flag ok", 8), ("tag ok", 8)]
    assert len(rows) > 40 and {r[12] for r in rows} == {"ok"}
    assert {r[7] for r in rows} == {"mark read", "flag", "tag", "copy", "move", "delete"}
    assert any("\\r\\nFAKE" in str(r[6]) for r in rows) and all("\r" not in str(r[6]) for r in rows)
    assert len({r[9] for r in rows if r[7] == "copy"}) == 2  # two rendered destinations, two groups
    assert any(r[11] is not None for r in rows if r[7] == "copy")  # COPYUID's new UIDs
