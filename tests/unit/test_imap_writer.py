"""Our command writer and the chunked UID commands, against a scripted fake of imaplib's primitives."""

from __future__ import annotations

import datetime as dt
import logging
import re
import types
from collections.abc import Callable
from typing import Any

import pytest

from mailrules.compile import keys as K
from mailrules.compile.serialize import Lit, serialize
from mailrules.errors import ImapError
from mailrules.imap import session as session_mod
from mailrules.imap.session import ConnectionParams, ImapSession

Handler = Callable[[bytes, bytes], list[bytes]]


class FakeImap:
    """Speaks just enough of imaplib's private interface; `handler(tag, command)` scripts the server."""

    def __init__(self, handler: Handler, reject_literals: bool = False) -> None:
        self.handler = handler
        self.reject_literals = reject_literals
        self.untagged_responses: dict[str, list[Any]] = {}
        self.tagged_commands: dict[bytes, Any] = {}
        self.tagnum = 0
        self.sends: list[bytes] = []
        self.commands: list[bytes] = []  # complete commands, literals inlined as {n}data
        self.pending: list[bytes] = []
        self._buf = b""
        self._command = b""
        self._literal_left = 0

    def _new_tag(self) -> bytes:
        self.tagnum += 1
        tag = b"T%d" % self.tagnum
        self.tagged_commands[tag] = None
        return tag

    def send(self, data: bytes) -> None:
        self.sends.append(data)
        self._buf += data
        while self._buf:
            if self._literal_left:
                take = self._buf[: self._literal_left]
                self._command += take
                self._literal_left -= len(take)
                self._buf = self._buf[len(take) :]
                continue
            end = self._buf.find(b"\r\n")
            if end < 0:
                return
            line, self._buf = self._buf[:end], self._buf[end + 2 :]
            m = re.search(rb"\{(\d+)(\+?)\}$", line)
            self._command += line
            if m:
                self._literal_left = int(m.group(1))
                if not m.group(2):
                    tag = self._command.split(b" ", 1)[0]
                    if self.reject_literals:
                        self.pending.append(tag + b" NO [CANNOT] no literals today")
                        self._literal_left = 0
                        self._command = b""
                        self._buf = b""
                        return
                    self.pending.append(b"+ go ahead")
                continue
            tag, _, rest = self._command.partition(b" ")
            self.commands.append(self._command)
            self._command = b""
            self.pending.extend(self.handler(tag, rest))

    def _get_response(self) -> bytes | None:
        line = self.pending.pop(0)
        if line.startswith(b"+"):
            return None
        if line.startswith(b"* "):
            m = re.match(rb"\* (\d+ )?([A-Z]+) ?(.*)$", line)
            assert m
            # imaplib keeps "<n> <rest>" for "* <n> FETCH|EXPUNGE <rest>", the text otherwise.
            typ, data = m.group(2).decode(), (m.group(1) or b"") + m.group(3)
            self.untagged_responses.setdefault(typ, []).append(data)
            code = re.match(rb"\[([A-Z]+) ?(.*?)\]", m.group(3))
            if typ in ("OK", "NO") and code:
                self.untagged_responses.setdefault(code.group(1).decode(), []).append(code.group(2))
            return line
        tag, typ, *rest = line.split(b" ", 2)
        text = rest[0] if rest else b""
        self.tagged_commands[tag] = (typ.decode(), [text])
        code = re.match(rb"\[([A-Z]+) ?(.*?)\]", text)
        if code:
            self.untagged_responses.setdefault(code.group(1).decode(), []).append(code.group(2))
        return line

    def _get_tagged_response(self, tag: bytes) -> tuple[str, list[bytes]]:
        while self.tagged_commands[tag] is None:
            self._get_response()
        return self.tagged_commands.pop(tag)  # type: ignore[no-any-return]

    def _check_bye(self) -> None:
        pass


class FakeClient:
    def __init__(self, imap: FakeImap) -> None:
        self._imap = imap


PARAMS = ConnectionParams("imap.example", 993, "implicit", "alice", "s3cret-pw", name="work")


def make(handler: Handler, caps: str, **kw: Any) -> tuple[ImapSession, FakeImap]:
    imap = FakeImap(handler, **kw)
    s = ImapSession(FakeClient(imap), PARAMS)
    s._caps = frozenset(caps.upper().split())
    return s, imap


def ok(tag: bytes, _cmd: bytes) -> list[bytes]:
    return [tag + b" OK done"]


# -- search -----------------------------------------------------------------------------------------


def test_search_literal_plus_goes_out_in_one_send_and_esearch_parses() -> None:
    def handler(tag: bytes, cmd: bytes) -> list[bytes]:
        return [b'* ESEARCH (TAG "' + tag + b'") UID ALL 1:3,7', tag + b" OK Search completed"]

    s, imap = make(handler, "IMAP4rev1 LITERAL+ ESEARCH")
    got = s.search([b"SUBJECT ", Lit("café".encode()), b' FROM "a b"'], charset="UTF-8")
    assert got == [1, 2, 3, 7]
    wire = 'T1 UID SEARCH RETURN (ALL) CHARSET UTF-8 SUBJECT {5+}\r\ncafé FROM "a b"\r\n'
    assert imap.sends == [wire.encode()]


def test_noop_and_the_watchers_searches_go_out_as_keys_serialize_them() -> None:
    def handler(tag: bytes, cmd: bytes) -> list[bytes]:
        if cmd == b"NOOP":
            return [b"* 4 EXISTS", tag + b" OK NOOP completed"]
        return [b"* SEARCH 3 4", tag + b" OK Search completed"]

    s, imap = make(handler, "IMAP4rev1")
    s.noop()
    assert s.search(serialize(K.UidFrom(3))) == [3, 4]
    assert s.search(serialize(K.Date("SINCE", dt.date(2026, 3, 5)))) == [3, 4]
    assert imap.commands == [b"T1 NOOP", b"T2 UID SEARCH UID 3:*", b"T3 UID SEARCH SINCE 5-Mar-2026"]


def test_search_sync_literal_waits_for_continuation_and_plain_search_parses() -> None:
    def handler(tag: bytes, cmd: bytes) -> list[bytes]:
        return [b"* SEARCH 2 5 (MODSEQ 917)", tag + b" OK done"]

    s, imap = make(handler, "IMAP4rev1")
    assert s.search([b"SUBJECT ", Lit(b"caf\xc3\xa9")], charset="UTF-8") == [2, 5]
    assert imap.sends[0] == b"T1 UID SEARCH CHARSET UTF-8 SUBJECT {5}\r\n"
    assert imap.sends[1] == b"caf\xc3\xa9\r\n"
    assert imap.commands == [b"T1 UID SEARCH CHARSET UTF-8 SUBJECT {5}caf\xc3\xa9"]


def test_literal_refused_before_continuation_stops_the_command() -> None:
    s, imap = make(ok, "IMAP4rev1", reject_literals=True)
    with pytest.raises(ImapError) as info:
        s.search([b"SUBJECT ", Lit(b"x\xff")], charset="UTF-8")
    assert info.value.code == "CANNOT"
    assert len(imap.sends) == 1  # the literal data never went out


def test_empty_esearch_and_bad_charset_name() -> None:
    s, _ = make(lambda tag, cmd: [b'* ESEARCH (TAG "' + tag + b'") UID', tag + b" OK"], "ESEARCH")
    assert s.search([b"ALL"]) == []
    with pytest.raises(ValueError):
        s.search([b"ALL"], charset="UTF-8\r\nX")


# -- chunking ---------------------------------------------------------------------------------------


def _fetch_handler(tag: bytes, cmd: bytes) -> list[bytes]:
    uid_set = cmd.split(b" ")[2].decode()
    lines = [b"* 1 FETCH (FLAGS (\\Seen))"]  # unsolicited, no UID: must not be merged into UID 1
    for part in uid_set.split(","):
        lo, _, hi = part.partition(":")
        for uid in range(int(lo), int(hi or lo) + 1):
            lines.append(b"* %d FETCH (UID %d RFC822.SIZE %d)" % (uid, uid, uid * 10))
    return [*lines, tag + b" OK Fetch completed"]


def test_fetch_of_20000_sparse_uids_is_chunked_under_8k() -> None:
    s, imap = make(_fetch_handler, "IMAP4rev1")
    uids = list(range(2, 40002, 2))  # 20,000 UIDs, no two adjacent: nothing compresses
    got = s.fetch(uids, ["RFC822.SIZE"])
    assert sorted(got) == uids
    assert got[40000] == {"RFC822.SIZE": 400000}
    assert len(imap.commands) > 1
    assert all(len(c) + 2 < 8192 for c in imap.commands)
    assert s.command_count == len(imap.commands)


def test_contiguous_uids_compress_to_one_range() -> None:
    s, imap = make(ok, "IMAP4rev1")
    s.store_flags(range(1, 20001), ["\\Seen"], add=True)
    assert imap.commands == [b"T1 UID STORE 1:20000 +FLAGS.SILENT (\\Seen)"]


def test_move_fallback_flags_and_expunges_exactly_the_same_sets() -> None:
    def handler(tag: bytes, cmd: bytes) -> list[bytes]:
        if cmd.startswith(b"UID COPY"):
            uid_set = cmd.split(b" ")[2]
            return [tag + b" OK [COPYUID 77 " + uid_set + b" " + uid_set + b"] done"]
        return [tag + b" OK done"]

    s, imap = make(handler, "IMAP4rev1 MOVE UIDPLUS")
    s.mask_capabilities("MOVE")
    uids = list(range(1, 40001, 2))
    mapping = s.move(uids, "Archive")
    assert mapping == {u: u for u in uids}
    copies = [c.split(b" ")[3] for c in imap.commands if b" UID COPY " in c]
    stores = [c.split(b" ")[3] for c in imap.commands if b" UID STORE " in c]
    expunges = [c.split(b" ")[3] for c in imap.commands if b" UID EXPUNGE " in c]
    assert len(copies) > 1 and copies == stores == expunges
    assert not any(c.split(b" ")[1] in (b"EXPUNGE", b"CLOSE") for c in imap.commands)
    assert all(len(c) < 8192 for c in imap.commands)


def test_move_without_uidplus_leaves_messages_flagged_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    s, imap = make(ok, "IMAP4rev1")
    with caplog.at_level(logging.WARNING):
        assert s.move([3, 4], "Archive") == {}
    assert [c.split(b" ", 2)[1] for c in imap.commands] == [b"UID", b"UID"]
    assert b"UID COPY 3:4" in imap.commands[0] and b"+FLAGS.SILENT (\\Deleted)" in imap.commands[1]
    assert "neither MOVE nor UIDPLUS" in caplog.text


def test_move_uses_untagged_copyuid() -> None:
    def handler(tag: bytes, cmd: bytes) -> list[bytes]:
        return [b"* OK [COPYUID 5 10:11 1:2] Moved", b"* 1 EXPUNGE", b"* 1 EXPUNGE", tag + b" OK Move done"]

    s, imap = make(handler, "IMAP4rev1 MOVE UIDPLUS")
    assert s.move([10, 11], "Archive") == {10: 1, 11: 2}
    assert imap.commands == [b'T1 UID MOVE 10:11 "Archive"']
    assert "COPYUID" not in imap.untagged_responses  # cleared after reading


def test_expunge_without_uidplus_refuses() -> None:
    s, imap = make(ok, "IMAP4rev1")
    with pytest.raises(ImapError, match="UIDPLUS"):
        s.expunge_uids([1])
    assert imap.commands == []


def test_trycreate_creates_then_retries_once() -> None:
    seen: list[bytes] = []

    def handler(tag: bytes, cmd: bytes) -> list[bytes]:
        seen.append(cmd)
        if cmd.startswith(b"UID COPY") and not any(c.startswith(b"CREATE") for c in seen):
            return [tag + b" NO [TRYCREATE] Mailbox does not exist"]
        return [tag + b" OK done"]

    s, _ = make(handler, "IMAP4rev1 UIDPLUS")
    s.copy([1], "New/Box", create=True)
    assert seen == [b'UID COPY 1 "New/Box"', b'CREATE "New/Box"', b'UID COPY 1 "New/Box"']
    s2, _ = make(lambda t, c: [t + b" NO [TRYCREATE] missing"], "IMAP4rev1")
    with pytest.raises(ImapError) as info:
        s2.copy([1], "Nope")
    assert info.value.code == "TRYCREATE"


# -- bookkeeping ------------------------------------------------------------------------------------


def test_on_command_hook_and_count() -> None:
    calls: list[tuple[str, bool]] = []
    s, _ = make(lambda t, c: [t + (b" NO [NONEXISTENT] x" if c.startswith(b"CREATE") else b" OK")], "")
    s.on_command = lambda name, seconds, ok: calls.append((name, ok)) if seconds >= 0 else None
    s.store_flags([1], ["\\Flagged"])
    with pytest.raises(ImapError):
        s._run("CREATE", [b'CREATE "x"'])
    assert calls == [("UID STORE", True), ("CREATE", False)]
    assert s.command_count == 2


def test_values_that_cannot_be_sent() -> None:
    s, imap = make(ok, "")
    with pytest.raises(ValueError):
        s.copy([1], "evil\r\nA1 DELETE INBOX")
    with pytest.raises(ValueError):
        s.store_flags([1], ["\\Seen)"])
    assert imap.commands == []


def test_password_not_in_reprs() -> None:
    s, _ = make(ok, "")
    assert "s3cret-pw" not in repr(PARAMS)
    assert repr(s) == "ImapSession(account='work', host='imap.example:993')"


def test_plaintext_refused_before_any_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_connect(*a: object, **k: object) -> None:
        raise AssertionError("must not connect")

    monkeypatch.setattr(session_mod, "IMAPClient", no_connect)
    params = ConnectionParams("imap.example", 143, "none", "alice", "pw")
    with pytest.raises(ImapError) as info:
        ImapSession.connect(params)
    assert info.value.kind == "permanent" and "allow_insecure" in str(info.value)


def test_fetch_keys_match_by_prefix_whatever_the_server_spelling() -> None:
    from mailrules.imap.answers import match_item

    answers = {'BODY[HEADER.FIELDS ("SUBJECT" "FROM")]': b"Subject: x", "BODY[]<0>": b"abc", "FLAGS": ()}
    assert match_item("BODY.PEEK[HEADER.FIELDS (Subject From)]", answers) == (True, b"Subject: x")
    assert match_item("BODY.PEEK[]<0.100>", answers) == (True, b"abc")
    assert match_item("BODY.PEEK[HEADER.FIELDS.NOT (Subject)]", answers) == (False, None)
    assert match_item("RFC822.SIZE", answers) == (False, None)


def test_socket_failure_during_setup_is_classified(monkeypatch: pytest.MonkeyPatch) -> None:
    closed: list[bool] = []

    class Broken:
        welcome = b"* OK [CAPABILITY IMAP4rev1] hi"
        _imap = types.SimpleNamespace(debug=5)  # ImapSession.connect turns imaplib's trace off

        def __init__(self, *a: object, **k: object) -> None:
            pass

        def socket(self) -> Any:
            raise ConnectionResetError(104, "reset by peer")

        def shutdown(self) -> None:
            closed.append(True)

    monkeypatch.setattr(session_mod, "IMAPClient", Broken)
    with pytest.raises(ImapError) as info:
        ImapSession.connect(PARAMS)
    assert info.value.kind == "reconnect"
    assert closed == [True]
    assert "s3cret-pw" not in str(info.value)


def test_append_many_with_and_without_multiappend() -> None:
    counter = iter(range(1, 100))

    def handler(tag: bytes, cmd: bytes) -> list[bytes]:
        n = cmd.count(b"{")
        first = next(counter)
        for _ in range(n - 1):
            next(counter)
        uid_set = b"%d" % first if n == 1 else b"%d:%d" % (first, first + n - 1)
        return [tag + b" OK [APPENDUID 9 " + uid_set + b"] Append completed."]

    s, imap = make(handler, "IMAP4rev1 LITERAL+ MULTIAPPEND UIDPLUS")
    assert s.append_many("INBOX", [b"a", b"bb", b"ccc"], ["\\Seen"]) == [1, 2, 3]
    assert imap.commands == [b'T1 APPEND "INBOX" (\\Seen) {1+}a (\\Seen) {2+}bb (\\Seen) {3+}ccc']
    s.mask_capabilities("MULTIAPPEND")
    assert s.append_many("INBOX", [b"d", b"e"]) == [4, 5]
    assert imap.commands[1:] == [b'T2 APPEND "INBOX" () {1+}d', b'T3 APPEND "INBOX" () {1+}e']
