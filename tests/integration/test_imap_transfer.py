"""MOVE, its COPY/STORE/UID EXPUNGE fallback, COPY with COPYUID, TRYCREATE, APPEND and FETCH, live.

On Dovecot, pymap and Cyrus (INBOX. and "."; altnamespace with "."), mailbox names portable.
"""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from mailrules.errors import ImapError
from mailrules.imap.bodystructure import bodystructure_attachments
from mailrules.imap.session import ImapSession
from tests.integration.servers import DovecotServer, PymapServer, make_message

pytestmark = pytest.mark.integration


def _subjects(s: ImapSession, mailbox: str) -> dict[int, str]:
    s.select(mailbox, readonly=True)
    item = "BODY.PEEK[HEADER.FIELDS (Subject)]"
    got = s.fetch(s.search([b"ALL"]), [item])
    return {uid: v[item].decode().strip().removeprefix("Subject: ") for uid, v in got.items()}


def _append(s: ImapSession, mailbox: str, *subjects: str) -> list[int]:
    out = []
    for subject in subjects:
        got = s.append(mailbox, make_message(subject))
        assert got is not None
        out.append(got[1])
    return out


@pytest.fixture(params=["dovecot", "pymap", "cyrus", "cyrus-alt"])
def box(request: pytest.FixtureRequest) -> tuple[ImapSession, str, str]:
    """(session, source mailbox, destination mailbox) on each server; both exist and are empty."""
    if request.param == "dovecot":
        return request.getfixturevalue("dv"), "INBOX", "Archive"
    if request.param.startswith("cyrus"):
        cyrus: ImapSession = request.getfixturevalue("cy" if request.param == "cyrus" else "cy_alt")
        cyrus.create("Archive")  # INBOX.Archive on Cyrus without altnamespace
        return cyrus, "INBOX", "Archive"
    s: ImapSession = request.getfixturevalue("pm")
    server: PymapServer = request.getfixturevalue("pymap")
    src, dest = server.fresh_mailbox(), server.fresh_mailbox()
    s.create(src)
    s.create(dest)
    return s, src, dest


def test_move_with_move(box: tuple[ImapSession, str, str]) -> None:
    s, src, dest = box
    a, b, c = _append(s, src, "one", "two", "three")
    s.select(src)
    before = s.command_count
    mapping = s.move([a, c], dest)
    assert s.command_count == before + 1  # one UID MOVE
    assert set(mapping) == {a, c}
    assert _subjects(s, dest) == {mapping[a]: "one", mapping[c]: "three"}
    assert _subjects(s, src) == {b: "two"}


def test_move_fallback_expunges_only_our_uids(box: tuple[ImapSession, str, str]) -> None:
    s, src, dest = box
    a, other, b = _append(s, src, "ours-1", "theirs", "ours-2")
    # "Another client" marks a message between ours \Deleted and has not expunged it yet.
    s.select(src)
    s.store_flags([other], ["\\Deleted"], add=True)
    s.mask_capabilities("MOVE")
    mapping = s.move([a, b], dest)
    assert set(mapping) == {a, b}
    assert sorted(_subjects(s, dest).values()) == ["ours-1", "ours-2"]
    assert _subjects(s, src) == {other: "theirs"}
    s.select(src)
    assert "\\Deleted" in s.fetch([other], ["FLAGS"])[other]["FLAGS"]


def test_move_fallback_without_uidplus_leaves_originals_flagged(
    dv: ImapSession, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = _append(dv, "INBOX", "keep-1", "keep-2")
    dv.select("INBOX")
    dv.mask_capabilities("MOVE", "UIDPLUS")
    with caplog.at_level(logging.WARNING):
        dv.move([a], "Archive")
    assert "neither MOVE nor UIDPLUS" in caplog.text
    assert sorted(_subjects(dv, "Archive").values()) == ["keep-1"]
    dv.select("INBOX")
    flags = dv.fetch([a, b], ["FLAGS"])
    assert "\\Deleted" in flags[a]["FLAGS"] and "\\Deleted" not in flags[b]["FLAGS"]
    with pytest.raises(ImapError, match="UIDPLUS"):
        dv.expunge_uids([a])


def test_copy_with_copyuid(box: tuple[ImapSession, str, str]) -> None:
    s, src, dest = box
    uids = _append(s, src, "c1", "c2", "c3")
    s.select(src)
    mapping = s.copy(uids, dest)
    assert sorted(mapping) == uids
    assert _subjects(s, dest) == {mapping[u]: f"c{i + 1}" for i, u in enumerate(uids)}
    assert len(_subjects(s, src)) == 3


def test_trycreate_creates_and_retries(box: tuple[ImapSession, str, str]) -> None:
    s, src, dest = box
    (uid,) = _append(s, src, "to a new folder")
    s.select(src)
    target = f"{dest}-new"
    with pytest.raises(ImapError) as info:
        s.copy([uid], target)
    assert info.value.code == "TRYCREATE"
    mapping = s.move([uid], target, create=True)
    assert list(_subjects(s, target).values()) == ["to a new folder"]
    assert set(mapping) == {uid}
    s.create(target)  # ALREADYEXISTS is fine


def test_append_reports_appenduid_and_date(box: tuple[ImapSession, str, str]) -> None:
    s, src, _ = box
    when = dt.datetime(2024, 1, 5, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-8)))
    got = s.append(src, make_message("dated"), ["\\Flagged", "$Rules"], when)
    info = s.select(src)
    assert got is not None and got[0] == info.uidvalidity
    fetched = s.fetch([got[1]], ["INTERNALDATE", "FLAGS"])[got[1]]
    assert fetched["INTERNALDATE"] == when  # the same instant (Dovecot may store it in UTC)
    assert {"\\Flagged", "$Rules"} <= set(fetched["FLAGS"])


def test_fetch_items_and_attachments(dovecot: DovecotServer, dv: ImapSession) -> None:
    raw = (
        b"From: a@example.com\r\nSubject: report\r\nList-Id: <x.example.com>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nbody text\r\n"
        b"--B\r\nContent-Type: application/pdf\r\n"
        b"Content-Disposition: attachment; filename*=utf-8''caf%C3%A9.pdf\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--B--\r\n"
    )
    (_, uid) = dv.append("INBOX", raw) or (0, 0)
    dv.select("INBOX")
    items = [
        "BODY.PEEK[HEADER.FIELDS (Subject List-Id)]",
        "BODY.PEEK[]",
        "BODYSTRUCTURE",
        "RFC822.SIZE",
        "INTERNALDATE",
        "FLAGS",
    ]
    got = dv.fetch([uid, 999], items)
    assert list(got) == [uid]  # non-existent UIDs are silently absent (RFC 9051 §6.4.9)
    v = got[uid]
    assert set(v) == set(items)
    assert b"Subject: report" in v[items[0]] and b"List-Id:" in v[items[0]] and b"From:" not in v[items[0]]
    assert v["BODY.PEEK[]"] == raw
    assert v["RFC822.SIZE"] == len(raw)
    assert v["INTERNALDATE"].tzinfo is not None
    assert "\\Seen" not in v["FLAGS"]  # PEEK does not set \Seen
    atts = bodystructure_attachments(v["BODYSTRUCTURE"])
    assert [(a.filename, a.content_type, a.disposition) for a in atts] == [
        ("café.pdf", "application/pdf", "attachment")
    ]
    assert "\\Seen" not in dv.fetch([uid], ["FLAGS"])[uid]["FLAGS"]


def test_non_ascii_mailbox_names_round_trip(box: tuple[ImapSession, str, str]) -> None:
    s, src, dest = box
    name = f"{dest}/Küche & Café"  # modified UTF-7 on the wire (RFC 3501 §5.1.3), "&" escaped too
    s.create(name)
    assert name in {s.namespaces.to_portable(m.name) for m in s.list_mailboxes()}
    (uid,) = _append(s, src, "for the kitchen")
    s.select(src)
    s.move([uid], name)
    assert list(_subjects(s, name).values()) == ["for the kitchen"]
