"""The flag pass of a watcher (daemon/flagwatch.py) without a server: what each look does with the
state's mark, the server's CHANGEDSINCE answer and the engine, faked at their seams; and what it
counts (daemon/flag_metrics.py)."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from mailrules.accounts import Account
from mailrules.config.model import AccountSettings
from mailrules.daemon import flagwatch
from mailrules.daemon.flagwatch import FlagWatch
from mailrules.daemon.metrics import Metrics
from mailrules.daemon.watcher import WatchContext
from mailrules.dsl import ast as A
from mailrules.dsl.parser import parse_text
from mailrules.errors import ImapError
from mailrules.imap.commands import SelectInfo
from mailrules.imap.modseq import Changed
from mailrules.state.models import FlagMark
from mailrules.state.store import StateStore

RULES = 'rule "f" on flag change { when flagged then copy to "F" }\n'


class FakeSession:
    def __init__(self, caps: str = "IMAP4rev1 CONDSTORE") -> None:
        self.caps = set(caps.split())

    def has(self, cap: str) -> bool:
        return cap in self.caps


class Ran:
    """Engine stand-in: records what the flag pass ran, on which UIDs."""

    calls: list[tuple[str, list[str], list[int]]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def process(
        self, store: Any, account: Any, mailbox: str, rules: Sequence[A.Rule], uids: list[int], **kw: Any
    ) -> None:
        Ran.calls.append((mailbox, [r.name for r in rules], list(uids)))


class Uids:
    """ImapStore stand-in for the UID SEARCH of a first look without UIDNEXT."""

    def __init__(self, uids: list[int]) -> None:
        self.uids = uids

    def search(self, key: object) -> list[int]:
        return self.uids


def info(uidvalidity: int = 7, uidnext: int | None = 41, modseq: int | None = 100) -> SelectInfo:
    return SelectInfo("INBOX", uidvalidity, uidnext, 40, modseq, frozenset({"\\*"}), False)


@pytest.fixture
def metrics() -> Metrics:
    """The daemon's metrics, account "a" configured: the flag passes' observer (`metrics.flags`)."""
    m = Metrics()
    m.init({"a": ["INBOX"]}, [])
    return m


def flag_values(m: Metrics) -> tuple[float, float, float, float]:
    """(looks, changes, own changes, refused) of account "a"."""
    names = ("flag_change_looks_total", "flag_changes_total", "flag_changes_own_total", "flag_change_refused")
    got = [m.registry.get_sample_value(f"mailrules_{n}", {"account": "a"}) for n in names]
    assert None not in got, got  # every series exists from init()
    return got[0] or 0.0, got[1] or 0.0, got[2] or 0.0, got[3] or 0.0


@pytest.fixture
def watch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, metrics: Metrics) -> Callable[[str], FlagWatch]:
    Ran.calls = []
    monkeypatch.setattr(flagwatch, "Engine", Ran)
    state = StateStore.open(tmp_path / "s.db")
    settings = AccountSettings(name="a", host="127.0.0.1", port=143, tls="none", username="u", password=None)

    def make(text: str = RULES) -> FlagWatch:
        rf, diags = parse_text(text, "t.rules")
        assert rf is not None and not diags
        lock = threading.Lock()
        ctx = WatchContext(
            state, dt.UTC, lambda: rf.rules, lambda a, m: lock, run_id="r", flag_observer=metrics.flags
        )
        return FlagWatch(Account(settings), ctx, state)

    return make


def answer(monkeypatch: pytest.MonkeyPatch, changed: dict[int, int]) -> list[int]:
    asked: list[int] = []

    def changed_since(session: Any, modseq: int) -> dict[int, Changed]:
        asked.append(modseq)
        return {uid: Changed(("\\Flagged",), mod) for uid, mod in changed.items()}

    monkeypatch.setattr(flagwatch, "changed_since", changed_since)
    return asked


def test_no_flag_change_rule_no_look(
    watch: Callable[[str], FlagWatch], monkeypatch: pytest.MonkeyPatch
) -> None:
    w = watch('rule "r" { when all then flag }\n')
    asked = answer(monkeypatch, {1: 200})
    assert w.look(FakeSession(), None, "INBOX", info()) == 0  # type: ignore[arg-type]
    assert asked == [] and w.state.get_flag_mark("a", "INBOX") is None


def test_the_first_look_sets_the_mark_then_changes_run(
    watch: Callable[[str], FlagWatch], monkeypatch: pytest.MonkeyPatch
) -> None:
    w = watch(RULES)
    asked = answer(monkeypatch, {3: 101, 5: 104, 41: 103})
    assert w.look(FakeSession(), None, "INBOX", info()) == 0  # type: ignore[arg-type]
    assert asked == [] and w.state.get_flag_mark("a", "INBOX") == FlagMark(7, 100, 40)
    w.state.note_own_changes("a", "INBOX", 7, {5: 104})  # our own STORE on 5
    assert w.look(FakeSession(), None, "INBOX", info()) == 1  # type: ignore[arg-type]
    assert asked == [100] and Ran.calls == [("INBOX", ["f"], [3])]  # 41 arrived, 5 was ours
    assert w.state.get_flag_mark("a", "INBOX") == FlagMark(7, 104, 41)  # 104 spent


def test_a_new_uidvalidity_starts_afresh(
    watch: Callable[[str], FlagWatch], monkeypatch: pytest.MonkeyPatch
) -> None:
    w = watch(RULES)
    asked = answer(monkeypatch, {3: 101})
    w.state.set_flag_mark("a", "INBOX", FlagMark(6, 900, 900))
    assert w.look(FakeSession(), Uids([2, 9]), "INBOX", info(uidvalidity=7, uidnext=None)) == 0  # type: ignore[arg-type]
    assert asked == [] and Ran.calls == []
    assert w.state.get_flag_mark("a", "INBOX") == FlagMark(7, 100, 9)  # no UIDNEXT: the highest UID


@pytest.mark.parametrize(
    ("caps", "modseq", "why"),
    [
        ("IMAP4rev1", 100, "lacks the CONDSTORE capability"),
        ("IMAP4rev1 CONDSTORE", None, "keeps no MODSEQs (NOMODSEQ"),
    ],
)
def test_without_modseqs_the_rules_are_refused_once(
    watch: Callable[[str], FlagWatch],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    caps: str,
    modseq: int | None,
    why: str,
) -> None:
    w = watch(RULES)
    answer(monkeypatch, {})
    for _ in range(3):
        assert w.look(FakeSession(caps), None, "INBOX", info(modseq=modseq)) == 0  # type: ignore[arg-type]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and why in errors[0] and 'flag-change rule(s) "f" (t.rules:1:1)' in errors[0]
    assert w.refused == {"INBOX": errors[0].split("refused for INBOX: ")[1].split("; the account")[0]}
    assert w.state.get_flag_mark("a", "INBOX") is None


def test_looks_changes_and_own_changes_are_counted(
    watch: Callable[[str], FlagWatch], metrics: Metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = watch(RULES)
    answer(monkeypatch, {3: 101, 5: 104, 41: 103})
    assert w.look(FakeSession(), None, "INBOX", info()) == 0  # type: ignore[arg-type]
    assert flag_values(metrics) == (0, 0, 0, 0)  # the first look only sets the mark: no CHANGEDSINCE
    w.state.note_own_changes("a", "INBOX", 7, {5: 104})
    assert w.look(FakeSession(), None, "INBOX", info()) == 1  # type: ignore[arg-type]
    assert flag_values(metrics) == (1, 1, 1, 0)  # 3 someone else's, 5 ours, 41 an arrival
    answer(monkeypatch, {})
    assert w.look(FakeSession(), None, "INBOX", info()) == 0  # type: ignore[arg-type]
    assert flag_values(metrics) == (2, 1, 1, 0)


def test_a_look_that_stops_on_a_lost_connection_is_not_counted(
    watch: Callable[[str], FlagWatch], metrics: Metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Lost(Ran):
        def process(self, *args: Any, **kw: Any) -> None:
            raise ImapError("connection lost", "reconnect")

    w = watch(RULES)
    w.state.set_flag_mark("a", "INBOX", FlagMark(7, 100, 40))
    answer(monkeypatch, {3: 101})
    monkeypatch.setattr(flagwatch, "Engine", Lost)
    with pytest.raises(ImapError):
        w.look(FakeSession(), None, "INBOX", info())  # type: ignore[arg-type]
    assert flag_values(metrics) == (1, 0, 0, 0)  # asked, but the same change is looked at again
    monkeypatch.setattr(flagwatch, "Engine", Ran)
    assert w.look(FakeSession(), None, "INBOX", info()) == 1  # type: ignore[arg-type]
    assert flag_values(metrics) == (2, 1, 0, 0)


def test_the_refused_gauge_holds_while_any_mailbox_of_the_account_is_refused(
    watch: Callable[[str], FlagWatch], metrics: Metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer(monkeypatch, {})
    inbox, other = watch(RULES), watch(RULES)  # two watchers of account "a" (IDLE: one per mailbox)
    for w in (inbox, other):
        w.state.set_flag_mark("a", "INBOX", FlagMark(7, 100, 40))
    assert inbox.look(FakeSession("IMAP4rev1"), None, "INBOX", info()) == 0  # type: ignore[arg-type]
    assert other.look(FakeSession("IMAP4rev1"), None, "INBOX", info(modseq=None)) == 0  # type: ignore[arg-type]
    assert flag_values(metrics)[3] == 1
    assert inbox.look(FakeSession(), None, "INBOX", info()) == 0  # type: ignore[arg-type]
    assert flag_values(metrics) == (1, 0, 0, 1)  # CONDSTORE back on inbox's server; other still refused
    other.close()  # its watcher ended
    assert flag_values(metrics)[3] == 0
    inbox.look(FakeSession("IMAP4rev1"), None, "INBOX", info())  # type: ignore[arg-type]
    assert flag_values(metrics)[3] == 1


def test_a_refused_changedsince_sets_the_gauge_until_the_rules_go(
    watch: Callable[[str], FlagWatch], metrics: Metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(session: Any, modseq: int) -> dict[int, Changed]:
        raise ImapError("UID FETCH failed: BAD Unknown FETCH modifier", "permanent")

    monkeypatch.setattr(flagwatch, "changed_since", refused)
    w = watch(RULES)
    w.state.set_flag_mark("a", "INBOX", FlagMark(7, 100, 40))
    for _ in range(2):
        assert w.look(FakeSession(), None, "INBOX", info()) == 0  # type: ignore[arg-type]
    assert flag_values(metrics) == (0, 0, 0, 1)  # a refused look is no look
    w.rules = lambda mailbox: []  # type: ignore[method-assign]  # a reload took the rule away
    assert w.look(FakeSession(), None, "INBOX", info()) == 0  # type: ignore[arg-type]
    assert flag_values(metrics)[3] == 0 and w.refused == {}


def test_a_failing_observer_does_not_stop_the_look(
    watch: Callable[[str], FlagWatch], metrics: Metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> None:
        raise RuntimeError("observer bug")

    monkeypatch.setattr(metrics.flags, "found", broken)
    w = watch(RULES)
    w.state.set_flag_mark("a", "INBOX", FlagMark(7, 100, 40))
    answer(monkeypatch, {3: 101})
    assert w.look(FakeSession(), None, "INBOX", info()) == 1  # type: ignore[arg-type]
    assert Ran.calls == [("INBOX", ["f"], [3])]
    assert w.state.get_flag_mark("a", "INBOX") == FlagMark(7, 101, 40)  # the mark moved on
