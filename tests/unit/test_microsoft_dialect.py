"""The Microsoft 365 / Exchange dialect: what it lacks, command sizes, throttling, token expiry, slow MOVEs.

No Microsoft server is reachable from the tests, and Microsoft publishes no IMAP transcript: the
answers below are the ones third-party reports quote verbatim (imap-notes.md, docs/operations.md):
    * CAPABILITY IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS MOVE ID UNSELECT
      CLIENTACCESSRULES CLIENTNETWORKPRESENCELOCATION BACKENDAUTHENTICATE CHILDREN IDLE NAMESPACE LITERAL+
    NO Request is throttled. Suggested Backoff Time: 299609 milliseconds
    NO Server Unavailable. 15
    * BYE Session invalidated - AccessTokenExpired
"""

from __future__ import annotations

import imaplib

import pytest
from imapclient import exceptions as imx

from mailrules.compile import Dialect
from mailrules.compile.dialect import DOVECOT_CAPS, GMAIL_CAPS, MICROSOFT_CAPS
from mailrules.errors import ImapError
from mailrules.imap.dialects import describe_dialect
from mailrules.imap.errors import Throttled, TokenExpired, classify, from_response, throttle_delay
from mailrules.imap.pacing import (
    MICROSOFT_TRANSFER_BATCH,
    TRANSFER_TIMEOUT_MAX,
    Backoff,
    Pacing,
)
from mailrules.imap.store import ImapStore
from tests.unit.test_imap_writer import make

EXCHANGE_PREAUTH = (
    "IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS ID UNSELECT CHILDREN IDLE NAMESPACE LITERAL+"
)
THROTTLED = b"Request is throttled. Suggested Backoff Time: 299609 milliseconds"


# -- what the dialect says ----------------------------------------------------------------------------


def test_exchange_capabilities_make_a_microsoft_dialect_that_degrades() -> None:
    d = Dialect.from_capabilities(MICROSOFT_CAPS)
    assert d.microsoft and d.move and d.uidplus and d.literal_plus
    # none of these is advertised: plain SEARCH, no CONDSTORE, names for Trash, windows for ages,
    # an ASCII prefilter for non-ASCII text
    assert not (d.esearch or d.condstore or d.special_use or d.within or d.utf8_search or d.gmail)
    assert d.uid_set_bytes == 4000
    assert Dialect.from_capabilities(EXCHANGE_PREAUTH.split()).microsoft  # no MOVE before login
    assert Dialect.named("microsoft") == Dialect.from_capabilities(MICROSOFT_CAPS, name="microsoft")


@pytest.mark.parametrize("caps", [DOVECOT_CAPS, GMAIL_CAPS, ("IMAP4rev1",)])
def test_other_servers_are_not_microsoft(caps: tuple[str, ...]) -> None:
    d = Dialect.from_capabilities(caps)
    assert not d.microsoft and d.uid_set_bytes == 7000


def test_pacing_per_dialect() -> None:
    ms = Pacing.for_dialect(Dialect.named("microsoft"))
    assert (ms.uid_set_bytes, ms.transfer_batch) == (4000, MICROSOFT_TRANSFER_BATCH)
    assert ms.transfer_seconds(500, 30.0) == 325.0
    assert ms.transfer_seconds(10**6, 30.0) == TRANSFER_TIMEOUT_MAX
    generic = Pacing.for_dialect(Dialect.named("dovecot"))
    assert (generic.uid_set_bytes, generic.transfer_batch) == (7000, None)
    assert generic.transfer_seconds(0, 30.0) == 120.0 and generic.transfer_seconds(0, 600.0) == 600.0
    assert ms.batches([5, 1, 3, 1]) == [[1, 3, 5]] and generic.batches([]) == []
    assert len(ms.batches(range(1, 1201))) == 3


# -- classification -------------------------------------------------------------------------------------


def test_throttling_answers_are_retried_later_with_the_suggested_delay() -> None:
    err = from_response("UID MOVE", "NO", THROTTLED)
    assert isinstance(err, Throttled) and err.kind == "retry" and err.retry_after == 299.609
    err = from_response("SELECT", "NO", b"Server Unavailable. 15")
    assert isinstance(err, Throttled) and err.kind == "retry" and err.retry_after is None
    assert throttle_delay("BAD Request is throttled. Suggested Backoff Time: 89117 milliseconds") == 89.117
    assert not isinstance(from_response("UID MOVE", "NO", b"[TRYCREATE] no such folder"), Throttled)
    err = classify(imaplib.IMAP4.error("FETCH command error: NO [b'Request is throttled.']"))
    assert isinstance(err, Throttled) and err.kind == "retry"


def test_a_lost_connection_stays_reconnect_whatever_it_said() -> None:
    err = classify(imaplib.IMAP4.abort("Server Unavailable. 15"))
    assert err.kind == "reconnect" and not isinstance(err, Throttled)


def test_gmail_connection_cap_at_login_is_a_reconnect_later_not_permanent() -> None:
    err = classify(imx.LoginError("[ALERT] Too many simultaneous connections. (Failure)"))
    assert isinstance(err, Throttled) and err.kind == "reconnect"


@pytest.mark.parametrize(
    "err",
    [
        from_response("LIST", "BYE", b"Session invalidated - AccessTokenExpired"),
        classify(imaplib.IMAP4.abort("Session invalidated - AccessTokenExpired")),
        classify(imaplib.IMAP4.abort("[UNAVAILABLE] Your session has expired. Please log in again")),
    ],
)
def test_token_expiry_is_told_apart_from_other_disconnects(err: ImapError) -> None:
    assert isinstance(err, TokenExpired) and err.kind == "reconnect" and err.auth_expired


def test_an_ordinary_bye_is_no_token_expiry() -> None:
    err = classify(imaplib.IMAP4.abort("Connection closed. 14"))
    assert err.kind == "reconnect" and not getattr(err, "auth_expired", False)


# -- the session holds back after a throttling answer --------------------------------------------------


def test_throttled_session_holds_commands_back_and_counts_it() -> None:
    def handler(tag: bytes, cmd: bytes) -> list[bytes]:
        return [tag + b" NO " + THROTTLED] if cmd.startswith(b"UID STORE") else [tag + b" OK done"]

    s, imap = make(handler, " ".join(MICROSOFT_CAPS))
    now = [1000.0]
    s.backoff = Backoff(clock=lambda: now[0])
    held: list[tuple[str, float]] = []
    s.on_throttle = lambda name, seconds: held.append((name, seconds))
    with pytest.raises(Throttled) as info:
        s.store_flags([1], ["\\Seen"])
    assert info.value.kind == "retry" and held == [("UID STORE", 299.609)]
    with pytest.raises(Throttled):  # not even sent: the server asked for five minutes
        s.fetch([1], ["FLAGS"])
    assert len(imap.commands) == 1
    now[0] += 300
    s.fetch([1], ["FLAGS"])
    assert imap.commands[-1] == b"T2 UID FETCH 1 (FLAGS)"


def test_a_broken_throttle_hook_never_breaks_the_work() -> None:
    s, _ = make(lambda t, c: [t + b" NO Server Unavailable. 15"], "IMAP4 IMAP4rev1")

    def broken(name: str, seconds: float) -> None:
        raise RuntimeError("metrics bug")

    s.on_throttle = broken
    with pytest.raises(Throttled):
        s.store_flags([1], ["\\Seen"])
    assert s.backoff.remaining() > 0


def test_a_throttled_move_is_not_taken_for_a_missing_mailbox() -> None:
    s, imap = make(lambda t, c: [t + b" NO " + THROTTLED], " ".join(MICROSOFT_CAPS))
    with pytest.raises(Throttled):
        s.move([1], "Archive", create=True)
    assert imap.commands == [b'T1 UID MOVE 1 "Archive"']  # no LIST, no CREATE


# -- chunking and time-outs ------------------------------------------------------------------------------


class RecordingSocket:
    def __init__(self, timeout: float) -> None:
        self.timeout: float | None = timeout
        self.set: list[float | None] = []

    def gettimeout(self) -> float | None:
        return self.timeout

    def settimeout(self, value: float | None) -> None:
        self.set.append(value)
        self.timeout = value


def test_moves_on_exchange_go_in_batches_each_with_a_longer_timeout() -> None:
    seen: list[tuple[bytes, float | None]] = []
    sock = RecordingSocket(30.0)

    def handler(tag: bytes, cmd: bytes) -> list[bytes]:
        seen.append((cmd, sock.timeout))
        uid_set = cmd.split(b" ")[2]
        return [b"* OK [COPYUID 9 " + uid_set + b" " + uid_set + b"] moved", tag + b" OK MOVE completed."]

    s, imap = make(handler, " ".join(MICROSOFT_CAPS))
    imap.sock = sock  # type: ignore[attr-defined]
    ImapStore(s)  # sets the session's pacing from the dialect
    mapping = s.move(range(1, 1201), "Big Folder")
    assert [c for c, _ in seen] == [
        b'UID MOVE 1:500 "Big Folder"',
        b'UID MOVE 501:1000 "Big Folder"',
        b'UID MOVE 1001:1200 "Big Folder"',
    ]
    assert [t for _, t in seen] == [325.0, 325.0, 310.0]  # 300 s + 50 ms a message, during each command
    assert sock.timeout == 30.0  # and back afterwards
    assert len(mapping) == 1200


def test_sparse_uid_sets_stay_under_exchanges_line_limit() -> None:
    s, imap = make(lambda t, c: [t + b" OK"], " ".join(MICROSOFT_CAPS))
    ImapStore(s)
    s.store_flags(range(2, 40002, 2), ["\\Seen"])
    assert len(imap.commands) > 5
    assert all(len(c) < 4100 for c in imap.commands)


def test_other_servers_keep_one_move_per_7000_bytes() -> None:
    s, imap = make(lambda t, c: [t + b" OK"], " ".join(DOVECOT_CAPS))
    ImapStore(s)
    s.move(range(1, 5001), "Archive")
    assert imap.commands == [b'T1 UID MOVE 1:5000 "Archive"']


# -- what doctor says -----------------------------------------------------------------------------------


def test_doctor_describes_microsoft_and_what_it_lacks() -> None:
    lines = describe_dialect(Dialect.named("microsoft"), max_connections=5)
    assert lines[0] == (
        "Microsoft 365 / Exchange: no SPECIAL-USE, ESEARCH, CONDSTORE, WITHIN, UTF-8 SEARCH; 16 connections "
        "per user by default on-premises (Exchange Online publishes no number), budget 5"
    )
    text = "\n".join(lines)
    assert "4,000 bytes" in text and "500 messages per MOVE/COPY" in text and "AccessTokenExpired" in text
    uses = {"\\Trash": "Deleted Items", "\\Archive": "Archive"}
    text = "\n".join(describe_dialect(Dialect.named("microsoft"), special_use=uses))
    assert "found by name (Archive = Archive, Trash = Deleted Items)" in text


def test_doctor_on_other_servers() -> None:
    assert describe_dialect(Dialect.named("dovecot"), max_connections=5) == [
        "IMAP server (dovecot), budget 5 connections: it has every extension mailrules uses"
    ]
    lines = describe_dialect(Dialect.named("rfc3501"))
    assert lines[0] == "IMAP server (rfc3501): it lacks what follows"
    assert any(line.startswith("no UIDPLUS: `delete permanently` is refused") for line in lines)


def test_an_expired_token_during_idle_is_told_apart() -> None:
    from mailrules.imap.idle import Idler

    s, _ = make(lambda t, c: [t + b" OK"], " ".join(MICROSOFT_CAPS))
    idler = Idler(s)
    assert idler._parse(b"* 3 EXISTS") == (3, b"EXISTS")
    with pytest.raises(TokenExpired):
        idler._parse(b"* BYE Session invalidated - AccessTokenExpired")
    with pytest.raises(ImapError) as info:
        idler._parse(b"* BYE Connection closed. 14")
    assert info.value.kind == "reconnect" and not isinstance(info.value, TokenExpired)
    lost = imaplib.IMAP4.abort("Session invalidated - AccessTokenExpired")
    assert isinstance(idler._error(lost), TokenExpired)
