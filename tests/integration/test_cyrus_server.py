"""mailrules' own IMAP session against Cyrus IMAP 3.6 in its four namespace variants, and the launcher.

What issue 12 builds on: login, NAMESPACE, CREATE, APPEND, SELECT, SEARCH, UID MOVE and push IDLE
(idled) through mailrules.imap, plus what Cyrus does differently (no top-level personal mailbox
without altnamespace, [TRYCREATE] only for names the user may create).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from mailrules.compile.serialize import string_pieces
from mailrules.errors import ImapError
from mailrules.imap.idle import Idler, has_new_mail
from mailrules.imap.names import ServerName
from mailrules.imap.session import ImapSession
from tests.integration.cyrus import DEFAULT_VARIANT, CyrusServer, running_cyrus
from tests.integration.servers import make_message
from tests.needs import pytest_without_server

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _connect(server: CyrusServer, **kw: Any) -> tuple[str, ImapSession]:
    user, _ = server.fresh_user()
    return user, ImapSession.connect(server.params(user, **kw))


def test_login_namespace_and_capabilities(cyrus_each: CyrusServer) -> None:
    variant = cyrus_each.variant
    _, s = _connect(cyrus_each)
    with s:
        assert s.separator == variant.separator
        ns = s._client.namespace()
        assert [(p, d) for p, d in ns.personal] == [(variant.personal_prefix, variant.separator)]
        assert {"IDLE", "MOVE", "UIDPLUS", "ESEARCH", "CONDSTORE", "QRESYNC", "SPECIAL-USE"} <= s.capabilities
        assert s.enabled == frozenset({"CONDSTORE", "QRESYNC"})
        # Cyrus lists LOGINDISABLED after login too (imap-notes (d)); it must not matter once logged in.
        assert "LOGINDISABLED" in s.capabilities
        info = s.select("INBOX")
        assert info.exists == 0
        assert "\\*" in info.permanentflags  # keywords are kept


def test_create_append_search_move(cyrus_each: CyrusServer) -> None:
    sep = cyrus_each.variant.separator
    lists = "Lists/python"  # portable: the session maps it (imap/names.py)
    on_server = f"{cyrus_each.variant.personal_prefix}Lists{sep}python"
    _, s = _connect(cyrus_each)
    with s:
        s.create(lists)
        s.create(lists)  # already there: fine
        s.create(ServerName(on_server))  # the server's own name for it: the same mailbox
        assert on_server in {m.name for m in s.list_mailboxes()}
        uids = {}
        for subject in ("python-list digest", "café menu", "other"):
            got = s.append("INBOX", make_message(subject))
            assert got is not None
            uids[subject] = got[1]
        assert s.select("INBOX").exists == 3
        found = s.search([b"SUBJECT ", *string_pieces("python-list")])
        assert found == [uids["python-list digest"]]
        moved = s.move(found, lists)
        assert list(moved) == found
        assert s.last_copyuid_uidvalidity is not None
        assert s.search([b"ALL"]) == sorted([uids["café menu"], uids["other"]])
        assert s.select(lists).exists == 1
        assert s.search([b"ALL"]) == list(moved.values())


def test_top_level_mailbox_needs_the_personal_prefix_unless_altnamespace(cyrus_each: CyrusServer) -> None:
    _, s = _connect(cyrus_each)
    with s:
        if cyrus_each.variant.altnamespace:
            s.create(ServerName("CI"))
            assert "CI" in {m.name for m in s.list_mailboxes()}
        else:
            # Debian's default namespace: personal folders live under INBOX. (imap-notes (d)).
            with pytest.raises(ImapError) as info:
                s.create(ServerName("CI"))
            assert info.value.kind == "permanent"
        # The portable name "CI" is relative to the personal namespace: it works on every variant.
        s.create("CI/builds")
        assert f"{cyrus_each.variant.personal_prefix}CI{cyrus_each.separator}builds" in {
            m.name for m in s.list_mailboxes()
        }


# A name the user may not create, per variant: top level without altnamespace, "/" inside a
# component with "." as the separator; with altnamespace and "/" every name here is creatable.
UNCREATABLE = {"std-dot": "Trash", "std-slash": "Trash", "alt-dot": "GitHub/acme"}


def test_trycreate_only_where_the_user_may_create(cyrus_each: CyrusServer) -> None:
    # Cyrus sends [TRYCREATE] exactly when the user could create the destination (measured on all
    # four variants); a name outside the personal namespace or with an invalid character gets a
    # plain NO, which is what issue 12's users met with "Trash" and "GitHub/acme". As server names
    # (no mapping): mailrules then LISTs, tries CREATE, and reports the CREATE's refusal.
    _, s = _connect(cyrus_each)
    with s:
        got = [s.append("INBOX", make_message(f"m{i}")) for i in (1, 2)]
        uids = [g[1] for g in got if g is not None]
        s.select("INBOX")
        archive = f"{cyrus_each.variant.personal_prefix}Archive"
        assert list(s.move(uids[:1], archive, create=True)) == uids[:1]
        assert archive in {m.name for m in s.list_mailboxes()}
        bad = UNCREATABLE.get(cyrus_each.variant.id)
        if bad is not None:
            with pytest.raises(ImapError) as info:
                s.move(uids[1:], ServerName(bad), create=True)
            assert info.value.kind == "permanent"
            assert info.value.code != "TRYCREATE"
            assert "CREATE failed" in str(info.value)
            assert s.search([b"ALL"]) == uids[1:]  # nothing lost
        # The same names written portably land in the personal namespace and are created there.
        for portable in ("Trash", "GitHub/acme"):
            s.move(uids[1:], portable, create=True)
            s.select(portable)
            uids = [0, *s.search([b"ALL"])]


def test_idle_sees_an_append_from_another_connection(cyrus_each: CyrusServer) -> None:
    user, watcher = _connect(cyrus_each)
    with watcher, ImapSession.connect(cyrus_each.params(user)) as writer:
        watcher.select("INBOX")
        idler = Idler(watcher)
        early = idler.start()
        assert not has_new_mail(early)
        writer.append("INBOX", make_message("pushed by idled"))
        seen: list[tuple[Any, ...]] = []
        for _ in range(5):  # a burst may hold other untagged responses first; each wait returns at once
            seen += idler.wait(30)
            if has_new_mail(seen):
                break
        seen += idler.done()
        assert has_new_mail(seen)
        assert watcher.search([b"ALL"]) != []


def test_starttls_with_the_servers_certificate(cyrus: CyrusServer) -> None:
    _, s = _connect(cyrus, tls="starttls")
    with s:
        assert "STARTTLS" not in s.capabilities
        assert s.select("INBOX").exists == 0


def test_wrong_password_is_auth(cyrus: CyrusServer) -> None:
    user, _ = cyrus.fresh_user()
    with pytest.raises(ImapError) as info:
        ImapSession.connect(cyrus.params(user, "not-the-password-x9"))
    assert info.value.kind == "auth"


def _group(pgid: int) -> dict[int, list[str]]:
    """{pid: argv} of every process in process group `pgid` (from /proc)."""
    out: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        # Field 5 (pgrp) follows the ")" that ends the command name.
        if int(stat.rsplit(")", 1)[1].split()[2]) == pgid:
            out[int(entry.name)] = [a.decode() for a in argv if a]
    return out


def test_private_instance_and_clean_stop() -> None:
    with running_cyrus(DEFAULT_VARIANT) as server:
        conf = str(server.directory / "imapd.conf")
        user, _ = server.fresh_user()
        with ImapSession.connect(server.params(user)) as s:  # imapd forks per connection
            s.select("INBOX")
            processes = _group(server.pid)
            names = sorted(Path(argv[0]).name for argv in processes.values())
            assert names[:2] == ["idled", "imapd"] and "master" in names
            # master passes no -C on: every process must carry the private one, never /etc/imapd.conf.
            assert all(argv[argv.index("-C") + 1] == conf for argv in processes.values())
            if os.geteuid() == 0:
                for pid in processes:
                    assert Path(f"/proc/{pid}").stat().st_uid != 0  # Cyrus never runs as root
        directory, pgid = server.directory, server.pid
    assert _group(pgid) == {}
    assert not directory.exists()


@pytest.mark.parametrize(("ci", "expected"), [("", "1 skipped"), ("true", "1 error")])
def test_missing_cyrus_skips_locally_and_fails_in_ci(tmp_path: Path, ci: str, expected: str) -> None:
    stdout = pytest_without_server(
        tmp_path, "cyrus", {"MAILRULES_CYRUS_ROOT": "/nonexistent/cyrus"}, ci, also=("cyrus_fleet",)
    )
    assert expected in stdout, stdout
    assert "cyrus-imapd" in stdout and "make test" in stdout
