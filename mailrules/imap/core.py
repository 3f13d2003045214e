"""Our own command writer over imaplib's primitives, with capability masking, counting and timing."""

from __future__ import annotations

import imaplib
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from imapclient import imap_utf7

from mailrules.compile.serialize import Lit
from mailrules.errors import ImapError
from mailrules.imap.errors import Throttled, classify, from_response
from mailrules.imap.pacing import GENERIC, Backoff, Pacing

log = logging.getLogger(__name__)

Piece = bytes | Lit
T = TypeVar("T")

# RFC 7888 §5: LITERAL- allows non-synchronizing literals up to 4096 octets only.
LITERAL_MINUS_MAX = 4096
# RFC 9051 §9 flag: "\\" atom or a keyword atom (a conservative subset of ATOM-CHAR).
_FLAG = re.compile(r"\\?[!#$&'+-Z^-z|~]+")


@dataclass(frozen=True, slots=True)
class Reply:
    """The tagged completion of one command: `OK`/`NO`/`BAD` and its resp-text."""

    tag: bytes
    typ: str
    text: bytes


class UnsendableValue(ImapError, ValueError):
    """A value that cannot go on the wire (CR/LF/NUL, a malformed flag): refused before sending.

    An ImapError, so the engine records the action as failed instead of stopping the run; still a
    ValueError for callers that test arguments.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, "permanent")


def quote(value: bytes) -> bytes:
    """A quoted string (RFC 9051 §4.3); CR, LF, NUL and 8-bit cannot be quoted and are refused."""
    if any(b in value for b in (0, 10, 13)) or any(b > 127 for b in value):
        raise UnsendableValue(f"cannot send {value!r} as a quoted string")
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def login_arg(value: str) -> Piece:
    """A LOGIN argument (RFC 9051 §6.2.3 astring): a quoted string when it is printable ASCII, else a
    literal of its UTF-8 bytes (8-bit, a tab). CR, LF and NUL are refused; the value, a username or
    a password, never appears in the error."""
    data = value.encode("utf-8")
    if any(b in (0, 10, 13) for b in data):
        raise UnsendableValue("a LOGIN argument contains CR, LF or NUL")
    if all(0x20 <= b < 0x7F for b in data):
        return quote(data)
    return Lit(data)


def mailbox_arg(name: str) -> bytes:
    """A mailbox name for the wire: modified UTF-7 (RFC 3501 §5.1.3), always quoted."""
    if any(c in name for c in "\r\n\x00"):
        raise UnsendableValue(f"CR, LF or NUL in a mailbox name: {name!r}")
    return quote(imap_utf7.encode(name))


def flag_list(flags: Iterable[str]) -> bytes:
    """`(\\Seen $Label)`; a flag is `\\atom` or a keyword atom (RFC 9051 §9 flag)."""
    words = list(flags)
    for flag in words:
        if not _FLAG.fullmatch(flag):
            hint = (
                ""
                if flag.startswith("\\")
                else ' (an IMAP keyword is one word of printable ASCII without ( ) { % * " \\ ]; '
                "only Gmail takes other names, as labels)"
            )
            raise UnsendableValue(f"not a valid IMAP flag: {flag!r}{hint}")
    return b"(" + " ".join(words).encode("ascii") + b")"


class CommandCore:
    """Transport layer shared by the command mixins: sends, counts, times and classifies commands."""

    def __init__(self, client: Any, account: str, host: str, secrets: Sequence[str] = ()) -> None:
        self._client = client  # imapclient.IMAPClient; untyped, so kept behind this class
        self._account = account
        self._host = host
        self._secrets = tuple(s for s in secrets if s)
        self._caps: frozenset[str] = frozenset()
        self._masked: set[str] = set()
        self._dead = False
        self.command_count = 0
        #: Called after every command with (name, seconds, ok); the metrics layer attaches here.
        self.on_command: Callable[[str, float, bool], None] | None = None
        #: Called with (name, seconds held back) when the server answers that it is throttling us.
        self.on_throttle: Callable[[str, float], None] | None = None
        #: Per-dialect limits (imap/pacing.py); the store sets them from the server's dialect.
        self.pacing: Pacing = GENERIC
        self.backoff = Backoff()

    # -- capabilities -------------------------------------------------------------------------------

    @property
    def capabilities(self) -> frozenset[str]:
        """What the server advertised after login (upper case), minus masked capabilities."""
        masked = self._masked
        return frozenset(c for c in self._caps if c not in masked and c.split("=")[0] not in masked)

    def has(self, cap: str) -> bool:
        """True when the server advertises `cap` and it is not masked."""
        return cap.upper() in self.capabilities

    def mask_capabilities(self, *caps: str) -> None:
        """Behave as if the server lacked `caps` (a server with a broken extension; tests of fallbacks)."""
        self._masked.update(c.upper() for c in caps)

    # -- running commands ---------------------------------------------------------------------------

    @property
    def _context(self) -> str:
        return f"{self._account} ({self._host})"

    def _record(self, name: str, started: float, ok: bool, ended: float | None = None) -> None:
        if self.on_command is not None:
            try:
                self.on_command(name, (ended or time.perf_counter()) - started, ok)
            except Exception:  # a metrics bug must not break mail processing
                log.exception("on_command hook failed")

    def _fail(self, exc: BaseException, name: str) -> ImapError:
        err = classify(exc, context=f"{self._context}: {name}", secrets=self._secrets)
        if err.kind == "reconnect":
            self._dead = True
        return self._throttled(err, name)

    def _broken(self, exc: Exception, name: str, started: float) -> Exception:
        """A command of ours that raised `exc` before its reply was read (`_run`, `_pipelined`):
        recorded as failed; the error to raise, classified for a lost connection or imaplib's own
        exceptions, else `exc` itself."""
        self._record(name, started, False)
        if isinstance(exc, (OSError, EOFError)) or _is_imap_exception(exc):
            return self._fail(exc, name)
        return exc

    def _throttled(self, err: ImapError, name: str) -> ImapError:
        """After a throttling answer, hold this connection's commands back (imap/pacing.py)."""
        if isinstance(err, Throttled) and err.kind == "retry":
            held = self.backoff.hold(err.retry_after)
            log.warning(
                "%s: %s: the server is throttling; commands held back %.0f s", self._context, name, held
            )
            if self.on_throttle is not None:
                try:
                    self.on_throttle(name, held)
                except Exception:  # a metrics bug must not break mail processing
                    log.exception("on_throttle hook failed")
        return err

    def _check_alive(self, name: str) -> None:
        if self._dead:
            raise ImapError(f"{self._context}: {name}: connection is closed", "reconnect")
        wait = self.backoff.remaining()
        if wait > 0 and name != "LOGOUT":
            # Sending now would only be throttled again (and lengthen the penalty): try later.
            raise Throttled(f"{self._context}: {name}: not sent, the server asked for {wait:.0f} s", wait)

    def _call(self, name: str, fn: Callable[[], T]) -> T:
        """Run one imapclient call that sends one command; count, time and classify it."""
        self._check_alive(name)
        self.command_count += 1
        started = time.perf_counter()
        ok = False
        try:
            result = fn()
            ok = True
            return result
        except ImapError:
            raise
        except (OSError, EOFError, ValueError, UnicodeError) as exc:
            raise self._fail(exc, name) from exc
        except Exception as exc:
            if _is_imap_exception(exc):
                raise self._fail(exc, name) from exc
            raise
        finally:
            self._record(name, started, ok)

    def _run(
        self,
        name: str,
        pieces: Sequence[Piece],
        *,
        accept: tuple[str, ...] = ("OK",),
        expected: Callable[[Reply], bool] | None = None,
        read: Callable[[bytes], Reply] | None = None,
    ) -> Reply:
        """Send `tag <pieces>` through our own writer; a reply outside `accept` raises ImapError.

        `expected(reply)`, asked of a NO: True when it is an answer the caller acts on rather than a
        failure (a missing destination it creates and retries), so the command hook is told `ok`
        and `mailrules_imap_command_errors_total` does not count it. `read(tag)`: reads the
        answer up to the tagged completion instead of `_finish` (a FETCH's own reader).
        """
        self._check_alive(name)
        self.command_count += 1
        started = time.perf_counter()
        ok = False
        try:
            reply = self._write(pieces, read)
        except Exception as exc:
            failure = self._broken(exc, name, started)
            if failure is exc:
                raise
            raise failure from exc
        ended = time.perf_counter()
        ok = reply.typ == "OK"
        if not ok and reply.typ == "NO" and expected is not None:
            try:
                ok = expected(reply)
            finally:
                self._record(name, started, ok, ended)
        else:
            self._record(name, started, ok, ended)
        if reply.typ not in accept:
            raise self._throttled(from_response(name, reply.typ, reply.text, context=self._context), name)
        return reply

    def _pipelined(self, commands: Sequence[tuple[str, bytes]]) -> list[Reply]:
        """Send `commands` (name, line without tag; no literals) in one write, then read their
        tagged replies in order: one round trip for all. Only for commands whose answers do not
        depend on one another's outcome (RFC 9051 §5.5). Each is counted, timed from the write and
        told to the hook as `_run` does; the replies come back whatever their status."""
        if not commands:
            return []
        self._check_alive(commands[0][0])
        imap = self._client._imap
        for key in ("OK", "NO", "BAD"):
            imap.untagged_responses.pop(key, None)
        tagged = [(name, imap._new_tag(), line) for name, line in commands]
        self.command_count += len(tagged)
        started = time.perf_counter()
        replies: list[Reply] = []
        name = tagged[0][0]
        try:
            imap.send(b"".join(b"%s %s\r\n" % (tag, line) for _, tag, line in tagged))
            for name, tag, _ in tagged:
                reply = self._finish(tag)
                self._record(name, started, reply.typ == "OK")
                replies.append(reply)
        except Exception as exc:
            failure = self._broken(exc, name, started)
            if failure is exc:
                raise
            raise failure from exc
        return replies

    def _write(self, pieces: Sequence[Piece], read: Callable[[bytes], Reply] | None = None) -> Reply:
        imap = self._client._imap
        # Same hygiene as imaplib._command: codes left by earlier commands must not be read as ours.
        for key in ("OK", "NO", "BAD"):
            imap.untagged_responses.pop(key, None)
        tag: bytes = imap._new_tag()
        literal_plus = self.has("LITERAL+")
        literal_minus = self.has("LITERAL-")
        out: list[bytes] = [tag, b" "]  # joined once per send: no quadratic bytes concatenation
        for piece in pieces:
            if isinstance(piece, bytes):
                out.append(piece)
                continue
            size = len(piece.data)
            if literal_plus or (literal_minus and size <= LITERAL_MINUS_MAX):
                # RFC 7888: no round trip, so keep filling one buffer (one send, no Nagle stalls).
                out += [b"{%d+}\r\n" % size, piece.data]
                continue
            out.append(b"{%d}\r\n" % size)
            imap.send(b"".join(out))
            # RFC 9051 §4.3: wait for "+"; a tagged NO/BAD instead means the command is over.
            while imap._get_response() is not None:
                if imap.tagged_commands.get(tag):
                    return self._finish(tag)
            out = [piece.data]
        out.append(b"\r\n")
        imap.send(b"".join(out))
        return self._finish(tag) if read is None else read(tag)

    def _finish(self, tag: bytes) -> Reply:
        imap = self._client._imap
        typ, data = imap._get_tagged_response(tag)
        imap._check_bye()
        text = data[0] if data and isinstance(data[0], bytes) else b""
        return Reply(tag, str(typ), text)

    def _take(self, name: str) -> list[Any]:
        """Pop (and so clear) the untagged responses of one kind that imaplib accumulated."""
        taken: list[Any] = self._client._imap.untagged_responses.pop(name, [])
        return [item for item in taken if item is not None]


def _is_imap_exception(exc: BaseException) -> bool:
    # imapclient's IMAPClientError *is* imaplib.IMAP4.error; abort and readonly derive from it.
    return isinstance(exc, imaplib.IMAP4.error)
