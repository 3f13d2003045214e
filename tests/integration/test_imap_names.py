"""Portable mailbox names, default destinations and create-and-retry on real servers (issue 12).

The same names on Dovecot, pymap and Cyrus in its four namespace variants: "Lists/python" lands
under INBOX. (or INBOX/) on Cyrus without altnamespace, beside INBOX with it; a name that cannot
exist is refused before anything is sent; a missing destination is created and the command retried,
and the NO that said so is not a command error.
"""

from __future__ import annotations

import pytest

from mailrules.imap.destinations import destination_lines, destinations
from mailrules.imap.names import UnportableName, describe
from mailrules.imap.session import ConnectionParams, ImapSession
from mailrules.imap.store import ImapStore
from tests.integration.cyrus import CyrusServer
from tests.integration.servers import DovecotServer, PymapServer, make_message

pytestmark = pytest.mark.integration


def _server_name(server: CyrusServer, *levels: str) -> str:
    return server.variant.personal_prefix + server.separator.join(levels)


def test_portable_names_on_cyrus(cyrus_each: CyrusServer) -> None:
    params = cyrus_each.params(cyrus_each.fresh_user()[0])
    with ImapSession.connect(params) as s:
        assert s.namespaces.personal == cyrus_each.variant.personal_prefix
        assert s.namespaces.separator == cyrus_each.separator
        got = [s.append("INBOX", make_message(f"m{i}")) for i in range(3)]
        uids = [g[1] for g in got if g is not None]
        s.select("inbox")
        # a missing destination: created and the MOVE retried (TRYCREATE, then CREATE)
        moved = s.move(uids[:1], "Lists/python", create=True)
        assert list(moved) == uids[:1]
        s.copy(uids[1:2], "Archive/2024", create=True)
        names = {m.name for m in s.list_mailboxes()}
        lists = _server_name(cyrus_each, "Lists", "python")
        assert {lists, _server_name(cyrus_each, "Archive", "2024")} <= names
        assert s.select("Lists/python").exists == 1
        assert s.selected is not None and s.selected.mailbox == "Lists/python"  # as the caller named it
        # the server's own spelling, prefix included, is the same mailbox
        if cyrus_each.variant.personal_prefix:
            assert s.select(lists).exists == 1
        lines = describe(s.namespaces, ["Lists/python"])
        assert lines[-1] == f"  'Lists/python' -> {lists!r}"


def test_a_name_that_cannot_exist_is_refused_before_anything_is_sent(cyrus_each: CyrusServer) -> None:
    params = cyrus_each.params(cyrus_each.fresh_user()[0])
    with ImapSession.connect(params) as s:
        got = s.append("INBOX", make_message("stays"))
        assert got is not None
        s.select("INBOX")
        before = s.command_count
        if cyrus_each.separator == ".":
            with pytest.raises(UnportableName, match=r"'\.' separates levels here"):
                s.move([got[1]], "Projects/v1.2", create=True)
            assert s.command_count == before
        else:  # "/" servers take a "." inside a level
            s.move([got[1]], "Projects/v1.2", create=True)
            assert s.select("Projects/v1.2").exists == 1


def test_destinations_on_cyrus_come_from_the_personal_namespace(cyrus_each: CyrusServer) -> None:
    params = cyrus_each.params(cyrus_each.fresh_user()[0])
    with ImapSession.connect(params) as s:
        trash = _server_name(cyrus_each, "Trash")
        lines = destination_lines(s)
        assert lines[0].endswith(f"; Trash will be {trash!r} (created on first use)")
        shown = "'Trash'" if trash == "Trash" else f"'Trash' is {trash!r}"
        assert lines[1] == (
            f"Trash: {shown} (no \\Trash mailbox: the default name in the personal "
            "namespace): missing, created on first use"
        )
        got = s.append("INBOX", make_message("to the bin"))
        assert got is not None
        s.select("INBOX")
        store = ImapStore(s)
        # The engine's fallback: no \Trash mailbox, so "Trash", which lands in the personal namespace.
        assert store.special_use().get("\\Trash", "Trash") == "Trash"
        store.move([got[1]], "Trash", create=True)
        assert destinations(s)[0].exists
        assert store.same_mailbox("Trash", trash) and not store.same_mailbox("Trash", "Archive")
        refused = destination_lines(s, trash="Bin.old", create_mailboxes=False)[1]
        if cyrus_each.separator == ".":
            assert refused.startswith("Trash: 'Bin.old' (configured): mailbox 'Bin.old' cannot exist")
        else:
            assert refused.endswith("missing, and create_mailboxes = false: actions into it fail")


def test_destinations_on_dovecot_are_its_special_use_mailboxes(dv: ImapSession) -> None:
    lines = destination_lines(dv)
    assert lines == [
        "separator '/', personal prefix ''",
        "Trash: 'Trash' (the server's \\Trash mailbox): exists",
        "Archive: 'Archive' (the server's \\Archive mailbox): exists",
        "Junk: 'Junk' (the server's \\Junk mailbox): exists",
        "Sent: 'Sent' (the server's \\Sent mailbox): exists",
    ]


def _no_command_errors(params: ConnectionParams, dest: str) -> list[tuple[str, bool]]:
    """The engine's pattern (apply._into): without `create`, then with it after TRYCREATE."""
    calls: list[tuple[str, bool]] = []
    with ImapSession.connect(params) as s:
        s.on_command = lambda name, seconds, ok: calls.append((name, ok))
        got = s.append("INBOX", make_message("moving on"))
        assert got is not None
        s.select("INBOX")
        store = ImapStore(s)
        with pytest.raises(Exception) as info:
            store.move([got[1]], dest, create=False)
        assert getattr(info.value, "code", None) == "TRYCREATE"
        _, mapping = store.move([got[1]], dest, create=True)
        assert list(mapping) == [got[1]]
    return calls


@pytest.mark.parametrize("server", ["dovecot", "pymap", "cyrus"])
def test_create_and_retry_is_not_a_command_error(server: str, request: pytest.FixtureRequest) -> None:
    # `make demo` (pymap) counted 12 MOVE "errors" in mailrules_imap_command_errors_total before.
    if server == "dovecot":
        dovecot: DovecotServer = request.getfixturevalue("dovecot")
        params, dest = dovecot.params(*dovecot.fresh_user()), "New/Box"
    elif server == "pymap":
        pymap: PymapServer = request.getfixturevalue("pymap")
        params, dest = pymap.params(), pymap.fresh_mailbox() + "-new/box"
    else:
        cyrus: CyrusServer = request.getfixturevalue("cyrus")
        params, dest = cyrus.params(cyrus.fresh_user()[0]), "New/Box"
    calls = _no_command_errors(params, dest)
    assert [c for c in calls if not c[1]] == []
    assert [c for c, _ in calls].count("CREATE") == 1
