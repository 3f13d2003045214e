"""IMAP IDLE (RFC 2177) done robustly: EOF, BYE and silence are errors, never an empty answer.

imapclient 4.1's idle() raises when an untagged response precedes the continuation, and its
idle_check() swallows EOF (returning [] at once, forever) and can split a line across reads
(imap-notes, imapclient#519). This module reads whole lines itself, over the same imaplib file.
"""

from __future__ import annotations

import select
import socket
import ssl
import time
from typing import Any

from imapclient.imapclient import _parse_untagged_response

from mailrules.errors import ImapError
from mailrules.imap.errors import TokenExpired, classify, is_token_expired
from mailrules.imap.session import ImapSession

#: RFC 2177 §3 says re-issue before 29 minutes; NATs and providers drop sooner (imap-notes 1).
#: The default of `[accounts.X] idle_renew_seconds`.
IDLE_RENEW_SECONDS = 9 * 60
#: The default of `[accounts.X] idle_timeout_seconds`: the answer to IDLE or DONE, and a line that
#: started arriving, must come within this long, or the connection is declared stalled.
IDLE_TIMEOUT_SECONDS = 30.0


class Stalled(ImapError):
    """The connection went silent: no answer within the time-out (a half-open connection, a NAT or
    firewall that dropped the flow without a FIN or RST). It is closed and the watcher reconnects
    (docs/operations.md, "Silent connections")."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "reconnect")


def is_stall(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) is a time-out waiting for the server: a stalled connection."""
    seen: BaseException | None = exc
    for _ in range(5):  # the chain of causes is short; never loop on a cycle
        if seen is None:
            return False
        if isinstance(seen, Stalled | TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class Idler:
    """IDLE on one session's selected mailbox: `start()`, then `wait()` repeatedly, then `done()`."""

    def __init__(self, session: ImapSession, timeout: float = IDLE_TIMEOUT_SECONDS) -> None:
        self.session = session
        self.timeout = timeout
        self._client: Any = session._client
        self._imap: Any = self._client._imap
        self._tag: bytes | None = None
        self.started_at = 0.0

    @property
    def active(self) -> bool:
        return self._tag is not None

    def start(self) -> list[tuple[Any, ...]]:
        """Send IDLE and wait for the continuation; untagged responses before it are returned."""
        early: list[tuple[Any, ...]] = []
        try:
            self._sock().settimeout(self.timeout)
            tag = self._imap._command("IDLE")
            self.session.command_count += 1
            while True:
                resp = self._imap._get_response()
                if resp is None:  # "+ idling": continuation (RFC 2177 §3)
                    break
                if self._imap.tagged_commands.get(tag):
                    typ, data = self._imap.tagged_commands.pop(tag)
                    raise ImapError(f"{self.session.account}: IDLE refused: {typ} {data!r}", "reconnect")
                # RFC 9051 §5.2: untagged responses may come at any time, even before the "+".
                early.append(_parse_untagged_response(resp if isinstance(resp, bytes) else bytes(resp)))
        except ImapError:
            raise
        except Exception as exc:
            raise self._error(exc) from exc
        self._tag = tag
        self.started_at = time.monotonic()
        return early

    def wait(self, timeout: float) -> list[tuple[Any, ...]]:
        """Untagged responses that arrive within `timeout` seconds (all of a burst), or [].

        Raises ImapError(kind="reconnect") on EOF, BYE, a reset or a line that never completes.
        """
        out: list[tuple[Any, ...]] = []
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self._buffered():
                    out.append(self._read())
                    continue
                if out:
                    return out
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return out
                if self._readable(remaining):
                    out.append(self._read())
                else:
                    return out
        except ImapError:
            raise
        except Exception as exc:
            raise self._error(exc) from exc

    def done(self) -> list[tuple[Any, ...]]:
        """Send DONE and read up to the IDLE's tagged completion; return what came meanwhile.

        Raises Stalled when the completion does not come within `timeout` seconds."""
        if self._tag is None:
            return []
        tag, self._tag = self._tag, None
        out: list[tuple[Any, ...]] = []
        try:
            self._sock().settimeout(self.timeout)
            self._imap.send(b"DONE\r\n")
            while True:
                line = self._imap._get_line()
                if line.startswith(tag + b" "):
                    if not line[len(tag) + 1 :].upper().startswith(b"OK"):
                        raise ImapError(f"{self.session.account}: IDLE ended badly: {line!r}", "reconnect")
                    return out
                if line.startswith(b"* "):
                    out.append(self._parse(line))
        except ImapError:
            raise
        except Exception as exc:
            raise self._error(exc) from exc
        finally:
            self._sock().settimeout(self.session._params.timeout)

    # -- reading ------------------------------------------------------------------------------------

    def _sock(self) -> socket.socket:
        sock: socket.socket = self._client.socket()
        return sock

    def _buffered(self) -> bool:
        """Whether a line's start already sits in imaplib's buffer or the TLS layer (poll can't see it)."""
        sock = self._sock()
        sock.setblocking(False)
        try:
            return bool(self._imap.file.peek(1))
        except (BlockingIOError, ssl.SSLWantReadError, InterruptedError):
            return False
        finally:
            sock.settimeout(self.timeout)

    def _readable(self, timeout: float) -> bool:
        poller = select.poll()
        poller.register(self._sock().fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(max(0, int(timeout * 1000))))

    def _read(self) -> tuple[Any, ...]:
        self._sock().settimeout(self.timeout)
        line = self._imap._get_line()  # raises imaplib.abort on EOF ("socket error: EOF")
        if not line.startswith(b"* "):
            raise ImapError(
                f"{self.session.account}: unexpected line during IDLE: {line[:80]!r}", "reconnect"
            )
        return self._parse(line)

    def _parse(self, line: bytes) -> tuple[Any, ...]:
        parsed: tuple[Any, ...] = _parse_untagged_response(line)
        if parsed and parsed[0] == b"BYE":
            # RFC 9051 §7.1.5: the server is closing the connection.
            if is_token_expired(line):  # Exchange: refresh the OAuth2 token, then reconnect
                raise TokenExpired(f"{self.session.account}: the access token expired: {line[:120]!r}")
            raise ImapError(f"{self.session.account}: server said BYE: {line[:120]!r}", "reconnect")
        return parsed

    def _error(self, exc: BaseException) -> ImapError:
        if is_stall(exc):
            # Nothing came within the time-out: the socket is closed, the watcher reconnects.
            self.session._dead = True
            return Stalled(
                f"{self.session.account}: IDLE: no answer from the server within "
                f"{self.timeout:g} s; the connection is stalled"
            )
        err = classify(exc, context=f"{self.session.account}: IDLE")
        if isinstance(err, TokenExpired):
            return err
        return ImapError(str(err), "reconnect", err.code)


def has_new_mail(responses: list[tuple[Any, ...]]) -> bool:
    """EXISTS is what signals arrivals (RFC 9051 §7.4.1); RECENT and FETCH are not triggers."""
    return any(len(r) >= 2 and r[1] == b"EXISTS" for r in responses)


def news_heard(session: ImapSession) -> tuple[int | None, bool]:
    """What the answers read since the last call announced about the selected mailbox, then
    forgotten: (the last `* n EXISTS` count, or None; whether an EXPUNGE or VANISHED came).

    Untagged responses that come with a command's answer (RFC 9051 §5.2, §7.4.1) are kept aside by
    imaplib (`untagged_responses`), where no IDLE wait sees them, and a server announces a new
    message once: Dovecot syncs a mailbox at the end of each command, so a `UID SEARCH` does not
    see a message that arrived since the previous command, and announces it after the SEARCH's
    result (imap-notes). The watchers read them here before they IDLE (daemon/watcher.py).
    """
    counts = [c for c in session._take("EXISTS") if isinstance(c, bytes) and c.strip().isdigit()]
    expunged = bool(session._take("EXPUNGE")) | bool(session._take("VANISHED"))
    return (int(counts[-1]) if counts else None), expunged
