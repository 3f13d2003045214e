"""Mailbox commands: SELECT, UID SEARCH (own writer, ESEARCH), chunked UID FETCH/STORE, APPEND, LIST."""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from imapclient import imap_utf7
from imapclient.response_parser import parse_fetch_response, parse_response

from mailrules.compile.serialize import Lit, chunk_uid_sets
from mailrules.errors import ImapError
from mailrules.imap.answers import answer_plan, item_name
from mailrules.imap.core import CommandCore, Piece, Reply, UnsendableValue, flag_list, mailbox_arg
from mailrules.imap.errors import from_response, is_throttled, response_code
from mailrules.imap.fastfetch import parse_simple_fetch, read_fetch_answer, reads_fast
from mailrules.imap.names import Namespaces, ServerName
from mailrules.imap.seqset import count_uids, parse_appenduid, parse_sequence_set

log = logging.getLogger(__name__)

#: Pauses before a transfer into a mailbox just created is asked again, when the server still says
#: the mailbox is missing: another session created it at the same moment and the server holds it
#: reserved, not ready (Cyrus, two watchers filing into one new mailbox: its CREATE answered that
#: the mailbox exists, the MOVE that it does not). 1.4 s in all; then the NO stands.
CREATE_SETTLE_SECONDS = (0.1, 0.3, 1.0)
#: The pause before a transfer refused without a code into a mailbox LIST shows is asked once more.
LISTED_PAUSE = 0.3

# RFC 7162 §4: keep command lines near 8 KB; the rest of the line (tag, command, mailbox) fits in 1 KB.
# The default of `pacing.uid_set_bytes`; a dialect may ask for less (imap/pacing.py).
UID_SET_BYTES = 7000
# The responses and literals one UID FETCH's answer may hold before it is taken for an endless
# one (the connection is then dropped, docs/operations.md): per message asked (an answer with a
# header block is two: its line and its literal), and more for what other sessions' changes bring
# meanwhile (a mailbox emptied elsewhere: an EXPUNGE per message).
ANSWER_PARTS_PER_UID = 8
ANSWER_PARTS_EXTRA = 100_000
# MULTIAPPEND batches: literals do not count toward line limits, but keep one command bounded.
APPEND_BATCH_BYTES = 4_000_000
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_ESEARCH_TAG = re.compile(rb'^\(TAG "([^"]*)"\)\s*(.*)$', re.S)


@dataclass(frozen=True, slots=True)
class SelectInfo:
    """What SELECT/EXAMINE reported (RFC 9051 §6.3.2; HIGHESTMODSEQ from RFC 7162 §3.1.2.1)."""

    mailbox: str
    uidvalidity: int
    uidnext: int | None
    exists: int
    highestmodseq: int | None
    permanentflags: frozenset[str]
    readonly: bool


@dataclass(frozen=True, slots=True)
class MailboxInfo:
    """One LIST answer: decoded name, hierarchy delimiter (None for flat), attributes as sent."""

    name: str
    delimiter: str | None
    flags: frozenset[str]


def _s(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _internaldate(when: dt.datetime) -> bytes:
    """RFC 9051 date-time `"dd-Mon-yyyy hh:mm:ss +zzzz"`; a naive datetime is taken as UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    offset = when.utcoffset() or dt.timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    zone = f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"
    text = f"{when.day:02d}-{_MONTHS[when.month - 1]}-{when.year:04d} {when:%H:%M:%S} {zone}"
    return b'"' + text.encode("ascii") + b'"'


class MailboxCommands(CommandCore):
    """Commands on mailboxes and messages; every UID set is compressed and chunked (house style 5).

    Mailbox names are portable (imap/names.py) and mapped to the server's here, once, when
    `names` is set (the session sets it from NAMESPACE after login); a `ServerName` from LIST is
    used as it is.
    """

    selected: SelectInfo | None = None
    names: Namespaces | None = None
    #: Server names a COPY/MOVE/APPEND found missing on this connection (created before the retry).
    _missing: frozenset[str] = frozenset()
    #: Called after each UID STORE, its untagged answers unread: `on flag change` reads the MODSEQs
    #: our own changes got there (imap/modseq.py, daemon/flagwatch.py).
    after_store: Callable[[], None] | None = None

    def server_name(self, mailbox: str) -> str:
        """The server's name for the portable `mailbox`; UnportableName when it cannot exist there."""
        return mailbox if self.names is None else self.names.to_server(mailbox)

    # -- SELECT -------------------------------------------------------------------------------------

    def select(self, mailbox: str, readonly: bool = False) -> SelectInfo:
        """SELECT (or EXAMINE when `readonly`) `mailbox` and report its UID state."""
        name = "EXAMINE" if readonly else "SELECT"
        server = self.server_name(mailbox)
        raw: dict[bytes, Any] = self._call(
            name, lambda: self._client.select_folder(server, readonly=readonly)
        )
        perm = raw.get(b"PERMANENTFLAGS") or ()
        info = SelectInfo(
            mailbox=mailbox,
            uidvalidity=int(raw[b"UIDVALIDITY"]),
            uidnext=int(raw[b"UIDNEXT"]) if b"UIDNEXT" in raw else None,
            exists=int(raw.get(b"EXISTS", 0)),
            highestmodseq=int(raw[b"HIGHESTMODSEQ"]) if raw.get(b"HIGHESTMODSEQ") is not None else None,
            permanentflags=frozenset(_s(f) for f in perm),
            readonly=readonly or not raw.get(b"READ-WRITE", False),
        )
        self.selected = info
        return info

    def noop(self) -> None:
        """NOOP: nothing asked, but the server sends what changed in the selected mailbox
        (EXISTS, EXPUNGE, FETCH) with its answer (RFC 9051 §6.1.2): a poller's way to hear news."""
        self._run("NOOP", [b"NOOP"])

    # -- SEARCH -------------------------------------------------------------------------------------

    def search(self, pieces: Sequence[Piece], charset: str | None = None) -> list[int]:
        """`UID SEARCH [RETURN (ALL)] [CHARSET cs] <pieces>` -> ascending UIDs.

        `pieces` concatenate exactly into the search criteria (see compile.serialize); a Lit goes out
        as a literal, `{n+}` with LITERAL+, else `{n}` after the server's continuation. ESEARCH
        (RFC 4731) is used when advertised: one compact answer instead of a 1 MB `* SEARCH` line.
        """
        esearch = self.has("ESEARCH")
        head = b"UID SEARCH "
        if esearch:
            head += b"RETURN (ALL) "  # RFC 4731 §3.1: return options come before CHARSET
        if charset:
            if not re.fullmatch(r"[A-Za-z0-9._:-]+", charset):
                raise UnsendableValue(f"not a charset name: {charset!r}")
            head += b"CHARSET " + charset.encode("ascii") + b" "
        self._take("SEARCH")
        self._take("ESEARCH")
        reply = self._run("UID SEARCH", [head, *pieces])
        found: list[int] = []
        answered = False
        for line in self._take("ESEARCH"):
            if not isinstance(line, bytes):
                continue
            m = _ESEARCH_TAG.match(line)
            if m and m.group(1) != reply.tag:
                continue  # an answer to someone else's ESEARCH (cannot happen on our own connection)
            answered = True
            found.extend(_esearch_all(m.group(2) if m else line))
        for line in self._take("SEARCH"):
            if isinstance(line, bytes) and not answered:
                # CONDSTORE may append "(MODSEQ n)" (RFC 7162 §3.1.5): drop it.
                found.extend(int(w) for w in re.sub(rb"\(.*?\)", b" ", line).split() if w.isdigit())
        return sorted(set(found))

    # -- FETCH --------------------------------------------------------------------------------------

    def fetch(self, uids: Iterable[int], items: Sequence[str]) -> dict[int, dict[str, Any]]:
        """UID FETCH `items` for `uids` -> {uid: {item as requested: value}} in ~7 KB chunks.

        Values: bytes for BODY sections, int for RFC822.SIZE, aware datetime for INTERNALDATE,
        tuple[str, ...] for FLAGS, imapclient's BodyData for BODYSTRUCTURE. Missing UIDs are absent
        (RFC 9051 §6.4.9: non-existent UIDs are ignored); unsolicited FETCHes are dropped.
        """
        wanted = set(uids)
        if not wanted or not items:
            return {}
        for item in items:
            if not item.isascii() or any(c in item for c in "\r\n"):
                raise UnsendableValue(f"bad FETCH item: {item!r}")
        spec = ("(" + " ".join(items) + ")").encode("ascii")
        out: dict[int, dict[str, Any]] = {}
        plans: dict[tuple[str, ...], list[tuple[str, str, bool]]] = {}
        for uid_set in chunk_uid_sets(wanted, self.pacing.uid_set_bytes):
            self._take("FETCH")
            read, fetched = self._answer_reader(uid_set)
            self._run("UID FETCH", [b"UID FETCH " + uid_set.encode("ascii") + b" " + spec], read=read)
            for uid, answers in self._fetch_answers(fetched + self._take("FETCH")):
                if uid not in wanted:
                    continue
                shape = tuple(answers)
                plan = plans.get(shape)
                if plan is None:
                    plan = plans[shape] = answer_plan(items, answers)
                entry = out.get(uid)
                if entry is None:
                    entry = out[uid] = {}
                for item, key, is_flags in plan:
                    value = answers[key]
                    entry[item] = tuple(_s(f) for f in value) if is_flags else value
        return out

    def _answer_reader(self, uid_set: str) -> tuple[Callable[[bytes], Reply] | None, list[Any]]:
        """A reader of one UID FETCH's answer straight from the socket (imap/fastfetch.py) and the
        list it fills with the FETCH responses; (None, []) where imaplib has to read it."""
        imap = self._client._imap
        fetched: list[Any] = []
        if not reads_fast(imap):
            return None, fetched
        # One response per message asked, a few more per message (RFC 9051 §7.5.2 lets a server
        # split one message's items) and what other sessions' changes bring (EXPUNGE, FETCH FLAGS).
        most = ANSWER_PARTS_PER_UID * count_uids(uid_set) + ANSWER_PARTS_EXTRA

        def read(tag: bytes) -> Reply:
            fetched.extend(read_fetch_answer(imap, tag, most))
            return self._finish(tag)

        return read, fetched

    @staticmethod
    def _fetch_answers(data: list[Any]) -> Iterable[tuple[int, dict[str, Any]]]:
        # imaplib stores one response as zero or more (line, literal) tuples ending with a bytes
        # trailer. Parse each response alone so an unsolicited `* 5 FETCH (FLAGS ...)` without UID
        # can never be merged into the answer for UID 5.
        group: list[Any] = []
        for entry in data:
            group.append(entry)
            if isinstance(entry, tuple):
                continue
            fast = parse_simple_fetch(group)
            if fast is not None:
                group = []
                _seq, msg = fast
                if b"UID" in msg:
                    yield int(msg[b"UID"]), {item_name(k): v for k, v in msg.items()}
                continue
            parsed = parse_fetch_response(group, normalise_times=False, uid_is_key=False)
            group = []
            for msg in parsed.values():
                if b"UID" not in msg:
                    continue
                yield int(msg[b"UID"]), {item_name(k): v for k, v in msg.items()}

    # -- flags and expunge --------------------------------------------------------------------------

    def store_flags(self, uids: Iterable[int], flags: Iterable[str], add: bool = True) -> None:
        """`UID STORE +FLAGS.SILENT` (or -FLAGS.SILENT): no FETCH echo to parse (RFC 9051 §6.4.6)."""
        flags_arg = flag_list(flags)
        op = b"+FLAGS.SILENT " if add else b"-FLAGS.SILENT "
        for uid_set in chunk_uid_sets(set(uids), self.pacing.uid_set_bytes):
            self._run("UID STORE", [b"UID STORE " + uid_set.encode("ascii") + b" " + op + flags_arg])
            if self.after_store is not None:
                self.after_store()

    def expunge_uids(self, uids: Iterable[int]) -> None:
        """UID EXPUNGE exactly `uids` (RFC 4315 §2.1); never a bare EXPUNGE, which hits other clients."""
        if not self.has("UIDPLUS"):
            raise ImapError(
                f"{self._context}: server lacks UIDPLUS; refusing a bare EXPUNGE that would also remove "
                "messages other clients marked \\Deleted",
                "permanent",
            )
        for uid_set in chunk_uid_sets(set(uids), self.pacing.uid_set_bytes):
            self._run("UID EXPUNGE", [b"UID EXPUNGE " + uid_set.encode("ascii")])

    # -- APPEND -------------------------------------------------------------------------------------

    def append(
        self,
        mailbox: str,
        data: bytes,
        flags: Iterable[str] = (),
        date: dt.datetime | None = None,
        *,
        create: bool = False,
    ) -> tuple[int, int] | None:
        """APPEND one message -> (uidvalidity, uid) from APPENDUID (RFC 4315 §3), None without UIDPLUS."""
        mailbox = self.server_name(mailbox)
        head = b"APPEND " + mailbox_arg(mailbox) + b" " + flag_list(flags) + b" "
        if date is not None:
            head += _internaldate(date) + b" "
        reply = self._with_trycreate("APPEND", mailbox, create, [head, Lit(data)])
        return parse_appenduid(reply.text)

    def append_many(
        self, mailbox: str, messages: Sequence[bytes], flags: Iterable[str] = ()
    ) -> list[int] | None:
        """Append several messages: one MULTIAPPEND command (RFC 3502) per ~4 MB where advertised.

        Returns the new UIDs in order when the server sent APPENDUID for every message, else None.
        """
        words = list(flags)
        flags_arg = flag_list(words)
        uids: list[int] | None = []
        mailbox = ServerName(self.server_name(mailbox))
        if not self.has("MULTIAPPEND"):
            singles = [self.append(mailbox, msg, words) for msg in messages]
            return None if any(got is None for got in singles) else [got[1] for got in singles if got]
        batch: list[bytes] = []
        size = 0
        for i, msg in enumerate(messages):
            batch.append(msg)
            size += len(msg)
            if size >= APPEND_BATCH_BYTES or i == len(messages) - 1:
                pieces: list[Piece] = [b"APPEND " + mailbox_arg(mailbox)]
                for one in batch:
                    pieces += [b" " + flags_arg + b" ", Lit(one)]
                reply = self._run("APPEND", pieces)
                m = re.search(rb"\[APPENDUID \d+ ([0-9:,]+)\]", reply.text)
                new = parse_sequence_set(m.group(1)) if m else []
                uids = uids + new if uids is not None and len(new) == len(batch) else None
                batch, size = [], 0
        return uids

    # -- mailboxes ----------------------------------------------------------------------------------

    def create(self, mailbox: str) -> None:
        """CREATE `mailbox`; one that already exists is fine (RFC 5530 ALREADYEXISTS, or found by LIST)."""
        self._create(self.server_name(mailbox))

    def _create(self, server: str) -> bool:
        """CREATE `server`: True when this session made it, False when it existed already."""
        try:
            self._run("CREATE", [b"CREATE " + mailbox_arg(server)])
        except ImapError as err:
            if err.code == "ALREADYEXISTS" or (err.kind == "permanent" and self._exists(server)):
                return False
            raise
        finally:
            self._missing = self._missing - {server}
        return True

    def _exists(self, server: str) -> bool:
        """LIST says the mailbox `server` (the server's name) exists."""
        # LIST's pattern treats * and % as wildcards: ask for the name and compare exactly.
        return any(m.name == server for m in self.list_mailboxes(server))

    def list_mailboxes(self, pattern: str = "*") -> list[MailboxInfo]:
        """`LIST "" pattern` -> every mailbox with its delimiter and attributes."""
        return self._list([b'LIST "" ' + mailbox_arg(pattern)])

    def _list(self, pieces: Sequence[Piece]) -> list[MailboxInfo]:
        self._take("LIST")
        self._run("LIST", pieces)
        data = [d for d in self._take("LIST") if d not in (b"", None)]
        if not data:
            return []
        parsed = list(parse_response(data))
        out: list[MailboxInfo] = []
        # We never ask for extended LIST data, so each answer is exactly (flags, delimiter, name).
        for i in range(0, len(parsed) - 2, 3):
            flags, delim, name = parsed[i : i + 3]
            raw = name if isinstance(name, bytes) else str(name).encode()
            out.append(
                MailboxInfo(
                    name=ServerName(imap_utf7.decode(raw)),
                    delimiter=_s(delim) if delim is not None else None,
                    flags=frozenset(_s(f) for f in flags),
                )
            )
        return out

    # -- helpers for the transfer commands -----------------------------------------------------------

    def _with_trycreate(self, name: str, mailbox: str, create: bool, pieces: Sequence[Piece]) -> Any:
        """Run a COPY/MOVE/APPEND into `mailbox` (the server's name); a missing one is created
        (when `create`) and the command retried once.

        Missing means `NO [TRYCREATE]` (RFC 9051 §6.4.7), or a NO without a code, or with
        NONEXISTENT, for a mailbox LIST does not show: Cyrus answers a plain `NO Mailbox does not
        exist` outside its personal namespace, and other servers never send TRYCREATE. Such a NO
        is an answer, not a command error (not counted in mailrules_imap_command_errors_total).
        Without `create` it is raised with the code TRYCREATE, so the engine can create the
        mailbox within its budget and call again; that second call creates first, without asking
        the server to refuse once more.
        """
        if create and mailbox in self._missing:
            log.info("%s: creating missing mailbox %r", self._account, mailbox)
            return self._after_create(name, pieces, mailbox, self._create(mailbox))
        missing = False

        def absent(reply: Reply) -> bool:
            nonlocal missing
            code = response_code(reply.text)
            if is_throttled(reply.text):  # Exchange's "not now" has no code either: ask nothing more
                return False
            missing = code == "TRYCREATE" or (code in (None, "NONEXISTENT") and not self._exists(mailbox))
            return missing

        reply = self._run(name, pieces, accept=("OK", "NO"), expected=absent)
        if reply.typ == "OK":
            return reply
        err = self._throttled(from_response(name, reply.typ, reply.text, context=self._context), name)
        if not missing and err.code is None and not is_throttled(reply.text):
            # LIST shows it, the server refused it without a code: a mailbox another session is
            # creating right now can be listed before it takes mail (Cyrus). Asked once more.
            log.info(
                "%s: %r refused though listed; asking again in %.1f s", self._account, mailbox, LISTED_PAUSE
            )
            time.sleep(LISTED_PAUSE)
            return self._after_create(name, pieces, mailbox, False, ())
        if not missing:
            raise err
        self._missing = self._missing | {mailbox}
        if not create:
            raise ImapError(str(err), "permanent", "TRYCREATE")
        log.info(
            "%s: creating missing mailbox %r after %s",
            self._account,
            mailbox,
            "TRYCREATE" if err.code == "TRYCREATE" else "a NO and a LIST without it",
        )
        return self._after_create(name, pieces, mailbox, self._create(mailbox))

    def _after_create(
        self,
        name: str,
        pieces: Sequence[Piece],
        mailbox: str,
        made: bool,
        pauses: Sequence[float] = CREATE_SETTLE_SECONDS,
    ) -> Reply:
        """The transfer into `mailbox` once CREATE was sent (`made`: by this session). While the
        server still says the mailbox is missing, it is asked again after each pause of
        CREATE_SETTLE_SECONDS: a mailbox another session made at the same moment may be reserved,
        not ready (a NO without a code then means that, though LIST shows the name); one this
        session made is missing only while LIST does not show it. Then the NO stands. `pauses`: the
        waits (fewer where nothing says the mailbox is being made)."""

        def not_ready(reply: Reply) -> bool:
            code = response_code(reply.text)
            if is_throttled(reply.text) or code not in (None, "TRYCREATE", "NONEXISTENT"):
                return False
            return code is not None or not made or not self._exists(mailbox)

        for pause in (*pauses, None):
            waiting = False

            def expected(reply: Reply) -> bool:
                nonlocal waiting
                waiting = not_ready(reply)
                return waiting

            reply = self._run(name, pieces, accept=("OK", "NO"), expected=expected if pause else None)
            if reply.typ == "OK":
                return reply
            if pause is None or not waiting:
                raise self._throttled(from_response(name, reply.typ, reply.text, context=self._context), name)
            log.info(
                "%s: %r is not ready after its creation; asking again in %.1f s",
                self._account,
                mailbox,
                pause,
            )
            time.sleep(pause)
        raise AssertionError("unreachable")  # the last pass returns or raises


def _esearch_all(rest: bytes) -> list[int]:
    """The ALL result of one ESEARCH answer: `UID ALL 1:3,7 COUNT 4` -> [1, 2, 3, 7] (RFC 4731 §3.1)."""
    words = rest.split()
    if words and words[0].upper() == b"UID":
        words = words[1:]
    for key, value in zip(words[0::2], words[1::2]):
        if key.upper() == b"ALL":
            return parse_sequence_set(value)
    return []
