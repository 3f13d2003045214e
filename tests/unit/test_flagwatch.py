"""The flag pass of a watcher (daemon/flagwatch.py) without a server: what each look does with the
state's mark, the server's CHANGEDSINCE answer and the engine, faked at their seams."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from mailrules.accounts import Account
from mailrules.config.model import AccountSettings
from mailrules.daemon import flagwatch
from mailrules.daemon.flagwatch import FlagWatch
from mailrules.daemon.watcher import WatchContext
from mailrules.dsl import ast as A
from mailrules.dsl.parser import parse_text
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
def watch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], FlagWatch]:
    Ran.calls = []
    monkeypatch.setattr(flagwatch, "Engine", Ran)
    state = StateStore.open(tmp_path / "s.db")
    settings = AccountSettings(name="a", host="127.0.0.1", port=143, tls="none", username="u", password=None)

    def make(text: str = RULES) -> FlagWatch:
        rf, diags = parse_text(text, "t.rules")
        assert rf is not None and not diags
        ctx = WatchContext(state, dt.UTC, lambda: rf.rules, lambda a, m: None, run_id="r")  # type: ignore[arg-type, return-value]
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
