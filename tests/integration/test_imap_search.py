"""UID SEARCH through our own writer: quoting, 8-bit literals, ESEARCH and plain SEARCH, on each server."""

from __future__ import annotations

import pytest

from mailrules.compile.serialize import Lit, SearchKeyError, string_pieces
from mailrules.imap.core import Piece
from mailrules.imap.session import ImapSession
from tests.integration.servers import PymapServer, make_message

pytestmark = pytest.mark.integration

SUBJECTS = ["paren(x) report", "café menu", 'say "hi" \\ there', "brace{3} and 50%", "plain subject"]


def _seed(s: ImapSession, mailbox: str) -> dict[str, int]:
    if mailbox != "INBOX":
        s.create(mailbox)
    uids = {}
    for subject in SUBJECTS:
        got = s.append(mailbox, make_message(subject))
        assert got is not None
        uids[subject] = got[1]
    s.select(mailbox)
    return uids


def _subject(value: str) -> list[Piece]:
    return [b"SUBJECT ", *string_pieces(value)]


@pytest.fixture(params=["dovecot", "pymap", "cyrus"])
def seeded(request: pytest.FixtureRequest) -> tuple[ImapSession, dict[str, int]]:
    if request.param in ("dovecot", "cyrus"):
        s: ImapSession = request.getfixturevalue("dv" if request.param == "dovecot" else "cy")
        return s, _seed(s, "INBOX")
    s = request.getfixturevalue("pm")
    server: PymapServer = request.getfixturevalue("pymap")
    return s, _seed(s, server.fresh_mailbox())


@pytest.mark.parametrize("mode", ["as advertised", "plain SEARCH", "synchronizing literals"])
def test_search_values_that_need_quoting_or_literals(
    seeded: tuple[ImapSession, dict[str, int]], mode: str
) -> None:
    s, uids = seeded
    if mode == "plain SEARCH":
        s.mask_capabilities("ESEARCH")
    if mode == "synchronizing literals":
        s.mask_capabilities("LITERAL+")
    assert s.search(_subject("paren(x)")) == [uids["paren(x) report"]]
    assert s.search(_subject('"hi"')) == [uids['say "hi" \\ there']]
    assert s.search(_subject("\\ there")) == [uids['say "hi" \\ there']]
    assert s.search(_subject("brace{3}")) == [uids["brace{3} and 50%"]]
    assert s.search([b"SUBJECT ", Lit("café".encode())], charset="UTF-8") == [uids["café menu"]]
    assert s.search([b"ALL"]) == sorted(uids.values())
    assert s.search([b'SUBJECT "no such thing"']) == []
    assert s.search([b"OR ", *_subject("paren(x)"), b" ", *_subject("plain")]) == sorted(
        [uids["paren(x) report"], uids["plain subject"]]
    )


def test_esearch_is_used_where_advertised(dv: ImapSession) -> None:
    uids = _seed(dv, "INBOX")
    before = dv._client._imap.tagnum
    assert dv.has("ESEARCH")
    assert dv.search([b"ALL"]) == sorted(uids.values())
    assert dv._client._imap.tagnum == before + 1  # one command, answered with * ESEARCH


def test_cr_lf_can_never_reach_the_wire(dv: ImapSession) -> None:
    _seed(dv, "INBOX")
    with pytest.raises(SearchKeyError):
        string_pieces("x\r\nZ1 CREATE Injected")
    # Inside a literal, CR LF is data, not the end of a command: no second command is run.
    assert dv.search([b"SUBJECT ", Lit(b"x\r\nZ1 CREATE Injected")], charset="UTF-8") == []
    assert "Injected" not in {m.name for m in dv.list_mailboxes()}
    with pytest.raises(ValueError):
        dv.create("evil\r\nZ2 CREATE Injected")
