"""A smoke run of `mailrules run` on pymap (no SPECIAL-USE, no ESEARCH), with MOVE and without it."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailrules.commands.run import format_summary, run_rules
from mailrules.config import AccountSettings
from mailrules.imap.session import ImapSession
from tests.integration.helpers import append, load, smtp_sink, snapshot, where_is, write_config
from tests.integration.servers import PymapServer, make_message

pytestmark = pytest.mark.integration

# No keywords here: pymap keeps none set by STORE (PERMANENTFLAGS without \*); see the last test.
RULES = """
rule "move"    in "{src}" {{ when subject is "t-move"    then move to "{p}New/Box" }}
rule "copy"    in "{src}" {{ when subject is "t-copy"    then copy to "{p}Copies", flag }}
rule "archive" in "{src}" {{ when subject is "t-archive" then mark read, archive }}
rule "yearly"  in "{src}" {{ when subject is "t-yearly"  then archive to "{p}Y/{{year}}" }}
rule "delete"  in "{src}" {{ when subject is "t-delete"  then delete }}
rule "purge"   in "{src}" {{ when subject is "t-purge"   then delete permanently }}
rule "unread"  in "{src}" {{ when subject is "t-unread"  then mark unread, unflag }}
rule "send" in "{src}" {{ when subject is "t-send" then forward to "f@x.org", redirect to "r@x.org", stop }}
rule "late"    in "{src}" {{ when subject starts with "t-s" then flag }}
"""


@pytest.mark.parametrize("move", [True, False], ids=["MOVE", "no-MOVE"])
def test_every_action_on_pymap(pymap: PymapServer, tmp_path: Path, move: bool) -> None:
    src = pymap.fresh_mailbox()
    p = f"{src}-"
    params = pymap.params()
    subjects = [
        "t-move",
        "t-copy",
        "t-archive",
        "t-yearly",
        "t-delete",
        "t-purge",
        "t-unread",
        "t-send",
        "t-so",
    ]
    flags = {"t-unread": ["\\Seen", "\\Flagged"]}
    assert not any(append(params, src, [(make_message(s), flags.get(s, []), None) for s in subjects]))
    append(params, src, [(make_message("t-bystander"), [], None)])
    with ImapSession.connect(params) as other:  # another client's \Deleted message must survive
        other.select(src)
        (uid,) = other.search([b'SUBJECT "t-bystander"'])
        other.store_flags([uid], ["\\Deleted"], True)

    def connect(account: AccountSettings) -> ImapSession:
        session = ImapSession.connect(params)
        if not move:
            session.mask_capabilities("MOVE")
        return session

    with smtp_sink() as (sink, port):
        extra = f'archive = "{p}Archive"\ntrash = "{p}Trash"'
        config = write_config(tmp_path, params, RULES.format(src=src, p=p), smtp_port=port, extra=extra)
        settings, rules = load(config)
        result = run_rules(settings, rules, connect=connect)
    assert result.ok, format_summary(result)
    after = snapshot(params, only=lambda name: name == src or name.startswith(p))

    def at(subject: str) -> list[tuple[str, tuple[str, ...]]]:
        return where_is(after, f"Subject: {subject}\r\n".encode())

    assert at("t-move") == [(f"{p}New/Box", ())]
    # copy, then flag: the copy was made before the original was flagged (per-message reading)
    assert sorted(at("t-copy")) == [(src, ("\\Flagged",)), (f"{p}Copies", ())]
    assert at("t-archive") == [(f"{p}Archive", ("\\Seen",))]
    assert at("t-yearly")[0][0].startswith(f"{p}Y/20")
    assert at("t-delete") == [(f"{p}Trash", ())]
    assert at("t-purge") == []
    assert at("t-bystander") == [(src, ("\\Deleted",))]
    assert at("t-unread") == [(src, ())]
    assert at("t-send") == [(src, ())]  # stopped: "late" did not flag it
    assert at("t-so") == [(src, ("\\Flagged",))]
    assert sorted(m.rcpt_tos[0] for m in sink.messages) == ["f@x.org", "r@x.org"]
    # nothing left behind \Deleted by the fallback: exactly the moved UIDs were expunged
    assert sum(1 for _, f, _ in after[src].messages if "\\Deleted" in f) == 1


def test_keyword_the_server_does_not_keep_is_a_failed_action(
    pymap: PymapServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """pymap answers OK to STORE +FLAGS ($Work) and keeps nothing: that is reported, not journalled ok."""
    src = pymap.fresh_mailbox()
    params = pymap.params()
    append(params, src, [(make_message("t-tag"), [], None), (make_message("t-untag"), ["$Work"], None)])
    rules = (
        f'rule "tag" in "{src}" {{ when subject is "t-tag" then tag "$Work", flag }}\n'
        f'rule "untag" in "{src}" {{ when subject is "t-untag" then untag "$Work" }}\n'
    )
    settings, parsed = load(write_config(tmp_path, params, rules))
    result = run_rules(settings, parsed)
    summary = result.summary()
    assert summary["tag"] == {"matched": 1, "limited": 0, "tag failed": 1, "flag ok": 1}
    assert summary["untag"] == {"matched": 1, "limited": 0, "untag failed": 1}
    assert not result.ok  # `mailrules run` exits 1
    after = snapshot(params, only=lambda name: name == src)
    assert where_is(after, b"Subject: t-tag\r\n") == [(src, ("\\Flagged",))]
    assert where_is(after, b"Subject: t-untag\r\n") == [(src, ("$Work",))]
    (line,) = [
        r.getMessage()
        for r in caplog.records
        if 'rule "tag"' in r.getMessage() and "tag $Work" in r.getMessage()
    ]
    assert "tag $Work: failed" in line and "does not keep $Work" in line and "PERMANENTFLAGS" in line
