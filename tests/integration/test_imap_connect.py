"""Connecting for real: STARTTLS and implicit TLS with verification on, refusals, auth failures."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from pathlib import Path

import pytest

from mailrules.errors import ImapError
from mailrules.imap.session import KEEPALIVE, ConnectionParams, ImapSession
from tests.integration.servers import DovecotServer, PymapServer
from tests.needs import pytest_without_server

pytestmark = pytest.mark.integration

# What pymap 0.36's dict backend advertised after login, recorded live: no ESEARCH, WITHIN,
# SPECIAL-USE, CONDSTORE, NAMESPACE or ENABLE, so it exercises every fallback.
PYMAP_CAPS = frozenset(
    {
        "IMAP4REV1",
        "LITERAL+",
        "ID",
        "BINARY",
        "UIDPLUS",
        "MOVE",
        "CHILDREN",
        "APPENDLIMIT=1000000000",
        "IDLE",
        "OBJECTID",
        "MULTIAPPEND",
    }
)


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
def test_dovecot_tls_with_verification(dovecot: DovecotServer, tls: str) -> None:
    user, password = dovecot.fresh_user()
    with ImapSession.connect(dovecot.params(user, password, tls=tls)) as s:  # type: ignore[arg-type]
        # Post-login capabilities (the pre-login list has no MOVE).
        assert {"MOVE", "UIDPLUS", "ESEARCH", "SPECIAL-USE", "CONDSTORE"} <= s.capabilities
        assert "STARTTLS" not in s.capabilities
        assert s.enabled == frozenset({"CONDSTORE", "QRESYNC"})  # QRESYNC: VANISHED ranges, not EXPUNGE lines
        assert "UTF8=ACCEPT" not in s.enabled
        assert s.separator == "/"
        assert s.select("INBOX").highestmodseq is not None  # CONDSTORE is on
        assert s.command_count >= 4


def test_hostname_is_checked_by_name_too(dovecot: DovecotServer) -> None:
    user, password = dovecot.fresh_user()
    params = ConnectionParams(
        "localhost", dovecot.imaps_port, "implicit", user, password, ca_file=dovecot.ca_file
    )
    with ImapSession.connect(params) as s:
        assert s.has("IMAP4rev1")


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
def test_wrong_ca_is_a_clear_certificate_error(dovecot: DovecotServer, wrong_ca: str, tls: str) -> None:
    user, password = dovecot.users[0]
    with pytest.raises(ImapError) as info:
        ImapSession.connect(dovecot.params(user, password, tls=tls, ca_file=wrong_ca))  # type: ignore[arg-type]
    assert info.value.kind == "permanent"
    assert "certificate verification failed" in str(info.value)
    assert "ca_file" in str(info.value)
    assert password not in str(info.value)


def test_plaintext_refused_before_any_login() -> None:
    # A listener that records whatever a client would send it.
    received: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(1.0)
    port = listener.getsockname()[1]

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.sendall(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] fake ready\r\n")
            conn.settimeout(1.0)
            with contextlib.suppress(OSError):
                received.append(conn.recv(4096))

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with pytest.raises(ImapError) as info:
            ImapSession.connect(ConnectionParams("127.0.0.1", port, "none", "alice", "pw", name="plain"))
    finally:
        thread.join()
        listener.close()
    assert info.value.kind == "permanent"
    assert "allow_insecure" in str(info.value)
    assert not any(b"LOGIN" in r for r in received)


def test_plaintext_allowed_when_configured(dovecot: DovecotServer) -> None:
    user, password = dovecot.fresh_user()
    params = dovecot.params(user, password, tls="none", allow_insecure=True)
    with ImapSession.connect(params) as s:
        assert s.select("INBOX").exists == 0


def test_wrong_password_is_auth(dovecot: DovecotServer) -> None:
    user, _ = dovecot.users[0]
    with pytest.raises(ImapError) as info:
        ImapSession.connect(dovecot.params(user, "not-the-password-x9"))
    assert info.value.kind == "auth"
    assert info.value.code == "AUTHENTICATIONFAILED"
    assert "not-the-password-x9" not in str(info.value)


def test_dead_connection_means_reconnect_and_logout_never_raises(dovecot: DovecotServer) -> None:
    user, password = dovecot.fresh_user()
    s = ImapSession.connect(dovecot.params(user, password))
    s._client._imap.sock.shutdown(socket.SHUT_RDWR)  # the connection dies under us
    with pytest.raises(ImapError) as info:
        s.select("INBOX")
    assert info.value.kind == "reconnect"
    s.logout()
    s.logout()
    with pytest.raises(ImapError) as again:
        s.search([b"ALL"])
    assert again.value.kind == "reconnect"


def test_pymap_starttls_and_recorded_capabilities(pymap: PymapServer) -> None:
    with ImapSession.connect(pymap.params()) as s:
        assert s.capabilities == PYMAP_CAPS
        assert s.separator == "/"  # from LIST "" "" (no NAMESPACE)
        assert s.enabled == frozenset()


def test_pymap_wrong_password_is_auth(pymap: PymapServer) -> None:
    with pytest.raises(ImapError) as info:
        ImapSession.connect(pymap.params(password="wrong"))
    assert info.value.kind == "auth"


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
def test_keepalive_is_on(dovecot: DovecotServer, tls: str) -> None:
    # Set on the TCP socket before STARTTLS, and still there on the TLS socket after it: a dead peer
    # is noticed within 60 + 3 x 10 s of silence (docs/operations.md, "Silent connections").
    user, password = dovecot.users[0]
    with ImapSession.connect(dovecot.params(user, password, tls=tls)) as s:  # type: ignore[arg-type]
        sock = s._client.socket()
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        for name, value in KEEPALIVE:
            if hasattr(socket, name):
                assert sock.getsockopt(socket.IPPROTO_TCP, getattr(socket, name)) == value
    assert dict(KEEPALIVE) == {"TCP_KEEPIDLE": 60, "TCP_KEEPINTVL": 10, "TCP_KEEPCNT": 3}


@pytest.mark.parametrize(("ci", "expected"), [("", "1 skipped"), ("true", "1 error")])
def test_missing_dovecot_skips_locally_and_fails_in_ci(tmp_path: Path, ci: str, expected: str) -> None:
    stdout = pytest_without_server(tmp_path, "dovecot", {"MAILRULES_DOVECOT": "/nonexistent/dovecot"}, ci)
    assert expected in stdout, stdout
    assert "make test" in stdout


def test_password_never_logged_at_debug(dovecot: DovecotServer, caplog: pytest.LogCaptureFixture) -> None:
    user, password = dovecot.fresh_user()
    with caplog.at_level(logging.DEBUG):
        with ImapSession.connect(dovecot.params(user, password)) as s:
            s.select("INBOX")
        with pytest.raises(ImapError):
            ImapSession.connect(dovecot.params(user, password + "-wrong"))
    assert caplog.records  # imapclient's wire log was captured
    assert password not in caplog.text


@pytest.mark.parametrize(("level", "debug"), [(logging.INFO, 0), (logging.DEBUG, 5)])
def test_imaplib_trace_formatted_only_when_logged(dovecot: DovecotServer, level: int, debug: int) -> None:
    """imapclient asks imaplib for its per-line trace (debug 5); the session turns it off unless the
    "imapclient.imaplib" logger would show it: formatting every line read costs a run ~6% for nothing."""
    user, password = dovecot.fresh_user()
    trace = logging.getLogger("imapclient.imaplib")
    before = trace.level
    trace.setLevel(level)
    try:
        with ImapSession.connect(dovecot.params(user, password)) as s:
            assert s._client._imap.debug == debug
            assert s.select("INBOX").exists == 0  # the session works either way
    finally:
        trace.setLevel(before)
