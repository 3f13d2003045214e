"""SASL XOAUTH2/OAUTHBEARER: the messages byte for byte, the mechanism choice, the error challenge,
and the exchange's odd legs against a scripted loopback peer (the real ones run on Dovecot)."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from imapclient import IMAPClient

from mailrules.errors import ImapError
from mailrules.imap.sasl import (
    OAuthLoginError,
    authenticate_oauth,
    choose_mechanism,
    client_response,
    oauthbearer_response,
    parse_error_challenge,
    xoauth2_response,
)

TOKEN = "ya29.a0Af-H_x~y+z/w=="


def test_xoauth2_message_is_googles_format() -> None:
    assert xoauth2_response("me@example.org", TOKEN) == (
        b"user=me@example.org\x01auth=Bearer ya29.a0Af-H_x~y+z/w==\x01\x01"
    )


def test_oauthbearer_message_is_rfc7628_with_host_and_port() -> None:
    assert oauthbearer_response("me@example.org", TOKEN, "imap.example.org", 993) == (
        b"n,a=me@example.org,\x01host=imap.example.org\x01port=993\x01"
        b"auth=Bearer ya29.a0Af-H_x~y+z/w==\x01\x01"
    )


def test_oauthbearer_escapes_comma_and_equals_in_the_authzid() -> None:
    # RFC 5801 §4: "=" -> "=3D" first, then "," -> "=2C".
    message = oauthbearer_response("a=b,c@example.org", TOKEN, "h", 143)
    assert message.startswith(b"n,a=a=3Db=2Cc@example.org,\x01host=h\x01port=143\x01")


def test_client_response_dispatches_on_the_mechanism() -> None:
    assert client_response("xoauth2", "u", TOKEN, "h", 1) == xoauth2_response("u", TOKEN)
    assert client_response("OAUTHBEARER", "u", TOKEN, "h", 1) == oauthbearer_response("u", TOKEN, "h", 1)
    with pytest.raises(ImapError, match="not an OAuth2 mechanism"):
        client_response("PLAIN", "u", TOKEN, "h", 1)


@pytest.mark.parametrize("token", ["has space", "new\nline", "ctl\x01", "", "ä-umlaut"])
def test_a_token_that_is_not_a_bearer_token_is_refused_without_being_shown(token: str) -> None:
    with pytest.raises(ImapError) as info:
        xoauth2_response("u", token)
    assert info.value.kind == "permanent"
    if token:
        assert token not in str(info.value)


@pytest.mark.parametrize("user", ["a\x01b", "a\r\nb", "a\x00"])
def test_control_characters_in_the_user_are_refused(user: str) -> None:
    with pytest.raises(ImapError, match="control character"):
        oauthbearer_response(user, TOKEN, "h", 1)


def test_port_out_of_range_is_refused() -> None:
    with pytest.raises(ImapError, match="out of range"):
        oauthbearer_response("u", TOKEN, "h", 0)


@pytest.mark.parametrize(
    ("caps", "configured", "expected"),
    [
        (["IMAP4rev1", "AUTH=XOAUTH2", "AUTH=OAUTHBEARER"], "auto", "OAUTHBEARER"),  # Gmail
        (["IMAP4rev1", "AUTH=PLAIN", "AUTH=XOAUTH2"], "auto", "XOAUTH2"),  # Microsoft
        (["auth=xoauth2", "auth=oauthbearer"], "xoauth2", "XOAUTH2"),
        (["AUTH=OAUTHBEARER"], "OAuthBearer", "OAUTHBEARER"),
    ],
)
def test_choose_mechanism(caps: list[str], configured: str, expected: str) -> None:
    assert choose_mechanism(caps, configured) == expected


def test_choose_mechanism_says_what_the_server_offers() -> None:
    with pytest.raises(ImapError, match=r"no OAuth2 login .*AUTH=LOGIN, AUTH=PLAIN"):
        choose_mechanism(["IMAP4rev1", "AUTH=PLAIN", "AUTH=LOGIN"])
    with pytest.raises(ImapError, match=r"does not offer AUTH=OAUTHBEARER .*AUTH=XOAUTH2"):
        choose_mechanism(["AUTH=XOAUTH2"], "oauthbearer")
    with pytest.raises(ImapError, match="unknown OAuth2 mechanism"):
        choose_mechanism(["AUTH=XOAUTH2"], "plain")


def _b64json(obj: object) -> bytes:
    return base64.b64encode(json.dumps(obj).encode())


def test_parse_error_challenge() -> None:
    assert parse_error_challenge(_b64json({"status": "401", "schemes": "bearer", "scope": "mail"})) == {
        "status": "401",
        "schemes": "bearer",
        "scope": "mail",
    }
    only_status = parse_error_challenge(_b64json({"status": "invalid_token", "other": "x"}))
    assert only_status == {"status": "invalid_token"}
    assert parse_error_challenge(_b64json({"status": "bad\r\nline"})) == {"status": "bad\\x0d\\x0aline"}
    for junk in (b"", None, b"not base64!", base64.b64encode(b"not json"), _b64json(["a list"])):
        assert parse_error_challenge(junk) == {}
    assert parse_error_challenge(_b64json({"status": "x" * 5000})) == {}  # longer than MAX_CHALLENGE


# -- the exchange against a scripted peer -----------------------------------------------------------


@dataclass
class ScriptedPeer:
    """A loopback 'server' that greets with `caps`, then answers each line the client sends with
    the next reply of `replies` (`{tag}` is replaced by the client's tag). Records what it got."""

    caps: str
    replies: list[str]
    received: list[bytes] = field(default_factory=list)
    sock: socket.socket = field(default_factory=socket.socket)
    thread: threading.Thread | None = None

    def start(self) -> int:
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        port: int = self.sock.getsockname()[1]
        return port

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn, conn.makefile("rb") as reader:
            conn.sendall(f"* OK [CAPABILITY IMAP4rev1 {self.caps}] scripted\r\n".encode())
            # imaplib asks CAPABILITY right after the greeting.
            cap_tag = reader.readline().split(b" ", 1)[0]
            conn.sendall(f"* CAPABILITY IMAP4rev1 {self.caps}\r\n".encode() + cap_tag + b" OK done\r\n")
            tag = b""
            for reply in self.replies:
                line = reader.readline()
                if not line:
                    return
                self.received.append(line)
                tag = tag or line.split(b" ", 1)[0]
                if reply:
                    conn.sendall(reply.replace("{tag}", tag.decode()).encode() + b"\r\n")
            if not self.replies:
                self.received.extend(line for line in iter(reader.readline, b""))
        # Closing after the last reply: the client reads what is buffered, then sees the end.


Box = tuple[list[ScriptedPeer], list[IMAPClient]]


@pytest.fixture
def peer_client() -> Iterator[Box]:
    peers: list[ScriptedPeer] = []
    clients: list[IMAPClient] = []
    yield peers, clients
    for client in clients:
        with contextlib.suppress(OSError):  # a test may have shut it down already
            client.shutdown()
    for peer in peers:
        peer.sock.close()


def _connect(box: Box, caps: str, replies: list[str]) -> tuple[ScriptedPeer, IMAPClient]:
    peer = ScriptedPeer(caps, replies)
    port = peer.start()
    client = IMAPClient("127.0.0.1", port, ssl=False, timeout=5)
    box[0].append(peer)
    box[1].append(client)
    return peer, client


def test_sasl_ir_sends_the_response_on_the_command_line(peer_client: Box) -> None:
    peer, client = _connect(peer_client, "SASL-IR AUTH=XOAUTH2", ["{tag} OK [CAPABILITY IMAP4rev1 MOVE] in"])
    authenticate_oauth(client, "XOAUTH2", "u@example.org", TOKEN, "h", 143)
    initial = base64.b64encode(xoauth2_response("u@example.org", TOKEN))
    assert peer.received[0].endswith(b" AUTHENTICATE XOAUTH2 " + initial + b"\r\n")
    assert client._imap.state == "AUTH"


def test_without_sasl_ir_the_response_follows_the_continuation(peer_client: Box) -> None:
    peer, client = _connect(peer_client, "AUTH=OAUTHBEARER", ["+ ", "{tag} OK in"])
    authenticate_oauth(client, "OAUTHBEARER", "u", TOKEN, "h", 143)
    assert peer.received[0].endswith(b" AUTHENTICATE OAUTHBEARER\r\n")
    assert peer.received[1] == base64.b64encode(oauthbearer_response("u", TOKEN, "h", 143)) + b"\r\n"


def test_error_challenge_is_answered_with_x01_and_the_no_carries_the_status(peer_client: Box) -> None:
    challenge = _b64json({"status": "invalid_token", "scope": "imap"}).decode()
    peer, client = _connect(
        peer_client,
        "SASL-IR AUTH=OAUTHBEARER",
        [f"+ {challenge}", "{tag} NO [AUTHENTICATIONFAILED] Authentication failed."],
    )
    with pytest.raises(OAuthLoginError) as info:
        authenticate_oauth(client, "OAUTHBEARER", "u", TOKEN, "h", 143)
    assert peer.received[1] == b"AQ==\r\n"  # base64 of %x01 (RFC 7628 §3.2.3)
    err = info.value
    assert (err.kind, err.code) == ("auth", "AUTHENTICATIONFAILED")
    assert (err.status, err.scope) == ("invalid_token", "imap")
    assert "status=invalid_token, scope=imap" in str(err)
    assert TOKEN not in str(err)


def test_a_second_challenge_is_cancelled_not_answered_with_the_token(peer_client: Box) -> None:
    challenge = _b64json({"status": "401"}).decode()
    peer, client = _connect(
        peer_client,
        "SASL-IR AUTH=XOAUTH2",
        [f"+ {challenge}", "+ again", "{tag} BAD cancelled"],
    )
    with pytest.raises(ImapError) as info:
        authenticate_oauth(client, "XOAUTH2", "u", TOKEN, "h", 143)
    assert peer.received[1:] == [b"\r\n", b"*\r\n"]  # empty answer (XOAUTH2), then cancel
    assert not isinstance(info.value, OAuthLoginError)  # BAD: our bug, not a token to refresh
    assert info.value.kind == "permanent"


def test_unavailable_is_a_retry_not_a_refresh(peer_client: Box) -> None:
    _, client = _connect(peer_client, "SASL-IR AUTH=XOAUTH2", ["{tag} NO [UNAVAILABLE] auth process down"])
    with pytest.raises(OAuthLoginError) as info:
        authenticate_oauth(client, "XOAUTH2", "u", TOKEN, "h", 143)
    assert info.value.kind == "retry"


def test_a_server_that_echoes_the_token_does_not_get_it_into_the_error(peer_client: Box) -> None:
    _, client = _connect(peer_client, "SASL-IR AUTH=XOAUTH2", [f"{{tag}} NO bad token {TOKEN}"])
    with pytest.raises(OAuthLoginError) as info:
        authenticate_oauth(client, "XOAUTH2", "u", TOKEN, "h", 143)
    assert TOKEN not in str(info.value)
    assert info.value.kind == "auth"


def test_a_dropped_connection_is_a_reconnect(peer_client: Box) -> None:
    _, client = _connect(peer_client, "SASL-IR AUTH=XOAUTH2", ["* BYE going away"])
    with pytest.raises(ImapError) as info:
        authenticate_oauth(client, "XOAUTH2", "u", TOKEN, "h", 143)
    assert info.value.kind == "reconnect"
    assert TOKEN not in str(info.value)


def test_a_mechanism_the_server_lacks_is_not_tried(peer_client: Box) -> None:
    peer, client = _connect(peer_client, "AUTH=PLAIN", [])
    with pytest.raises(ImapError, match="does not offer AUTH=XOAUTH2"):
        authenticate_oauth(client, "XOAUTH2", "u", TOKEN, "h", 143)
    client.shutdown()
    assert peer.thread is not None
    peer.thread.join(timeout=5)
    assert peer.received == []  # everything the client sent after CAPABILITY: nothing
