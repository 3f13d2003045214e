"""`on flag change` at run time, without a server: which changes are someone else's (engine/flagpass.py),
what wakes a watcher (daemon/flagwatch.py), and the MODSEQs of our own STOREs (imap/modseq.py)."""

from __future__ import annotations

from collections.abc import Mapping

from mailrules.daemon.flagwatch import flag_news
from mailrules.daemon.plan import has_scheduled, watched
from mailrules.dsl import ast as A
from mailrules.dsl.parser import parse_text
from mailrules.engine.flagpass import OwnChanges, first_mark, flag_change_rules, look
from mailrules.imap.modseq import _modseq
from mailrules.state.models import FlagMark


def rules(text: str) -> tuple[A.Rule, ...]:
    rf, diags = parse_text(text, "t.rules")
    assert rf is not None and not diags
    return rf.rules


def test_someone_elses_changes_run_ours_and_arrivals_do_not() -> None:
    mark = FlagMark(7, 100, 40, own={3: 105, 4: 101})
    found = look(mark, {2: 103, 3: 105, 4: 106, 41: 104, 45: 108})
    # 2: someone else; 3: our own STORE is its latest change; 4: changed again after ours (106 >
    # 101); 41 and 45: arrived since the last look (UID above 40)
    assert found.uids == [2, 4] and found.own == 1
    assert found.mark == FlagMark(7, 108, 45)


def test_nothing_changed_keeps_the_mark() -> None:
    mark = FlagMark(7, 100, 40)
    assert look(mark, {}).mark == mark and look(mark, {}).uids == []


def test_the_first_look_stands_where_the_mailbox_is() -> None:
    assert first_mark(7, 100, 41, 0) == FlagMark(7, 100, 40)
    assert first_mark(7, 100, None, 12) == FlagMark(7, 100, 12)  # no UIDNEXT: the highest UID


def test_own_changes_are_kept_only_where_a_flag_change_rule_reads() -> None:
    rs = rules(
        'rule "f" in "Work" for account "a" on flag change { when flagged then copy to "F" }\n'
        'rule "r" { when all then mark read }\n'
    )
    kept: list[tuple[str, str, int, Mapping[int, int]]] = []
    own = OwnChanges(lambda *args: kept.append(args), lambda: rs)
    own("a", "INBOX", 7, {1: 2})  # no flag-change rule reads INBOX
    own("b", "Work", 7, {1: 2})  # nor account b's Work
    own("a", "Work", 7, {})  # nothing to keep
    own("a", "Work", 7, {1: 2})
    assert kept == [("a", "Work", 7, {1: 2})]
    assert [r.name for r in flag_change_rules(rs, "a", "Work")] == ["f"]


def test_watchers_serve_flag_change_rules_which_are_not_scheduled() -> None:
    from mailrules.config.model import AccountSettings

    rs = rules('rule "f" in "Work" on flag change { when flagged then copy to "F" }\n')
    assert not has_scheduled(rs, "a")
    account = AccountSettings(name="a", host="h", port=143, tls="none", username="u", password=None)
    assert watched(rs, {"a": account}) == {"a": ["Work"]}


def test_a_flags_fetch_wakes_a_watcher_and_modseqs_parse() -> None:
    assert flag_news([(4, b"FETCH", (b"FLAGS", (b"\\Seen",), b"MODSEQ", (12,)))])
    assert not flag_news([(4, b"EXISTS"), (b"OK", b"Still here")])
    assert not flag_news([(4, b"FETCH", (b"UID", 9))])
    assert _modseq((12,)) == 12 and _modseq(b"13") == 13 and _modseq(None) is None


def test_mailrules_run_keeps_own_changes_where_the_daemon_has_a_mark() -> None:
    from mailrules.engine.flagpass import MarkedOwnChanges

    asked: list[tuple[str, str]] = []

    def mark(account: str, mailbox: str) -> FlagMark | None:
        asked.append((account, mailbox))
        return FlagMark(7, 1, 1) if mailbox == "INBOX" else None

    kept: list[tuple[str, str, int, Mapping[int, int]]] = []
    own = MarkedOwnChanges(lambda *args: kept.append(args), mark)
    for _ in range(2):
        own("a", "INBOX", 7, {1: 5})
        own("a", "Work", 7, {1: 5})
    assert kept == [("a", "INBOX", 7, {1: 5})] * 2
    assert asked == [("a", "INBOX"), ("a", "Work")]  # once per mailbox
