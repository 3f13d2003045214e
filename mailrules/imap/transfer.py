"""COPY and MOVE with COPYUID, TRYCREATE handling and the RFC 6851-equivalent fallback without MOVE."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from mailrules.compile.serialize import chunk_uid_sets
from mailrules.imap.commands import MailboxCommands
from mailrules.imap.core import Piece, Reply, mailbox_arg
from mailrules.imap.pacing import read_timeout
from mailrules.imap.seqset import count_uids, parse_copyuid

log = logging.getLogger(__name__)


class TransferCommands(MailboxCommands):
    """copy/move on UID sets; results map old UID -> new UID where the server says (COPYUID)."""

    #: The destination UIDVALIDITY of the last COPYUID answer of copy()/move() (None without one):
    #: a new UID means nothing without it (RFC 4315 §3), and the journal needs both to undo.
    last_copyuid_uidvalidity: int | None = None

    def copy(self, uids: Iterable[int], dest: str, *, create: bool = False) -> dict[int, int]:
        """UID COPY `uids` to `dest` -> {old uid: new uid} (empty without UIDPLUS)."""
        mapping: dict[int, int] = {}
        self.last_copyuid_uidvalidity = None
        dest = self.server_name(dest)
        for uid_set in self._transfer_sets(uids):
            mapping.update(self._copy_chunk(uid_set, dest, create))
        return mapping

    def move(self, uids: Iterable[int], dest: str, *, create: bool = False) -> dict[int, int]:
        """Move `uids` to `dest` -> {old uid: new uid} from COPYUID when the server sends it.

        UID MOVE where advertised (RFC 6851). Otherwise UID COPY, `\\Deleted` on exactly these UIDs,
        UID EXPUNGE of exactly these UIDs (RFC 4315 §2.1). Without UIDPLUS the originals are left
        copied and flagged `\\Deleted` (a warning says so): a bare EXPUNGE or CLOSE would also remove
        messages other clients marked `\\Deleted`, and losing mail is worse than a duplicate.
        """
        wanted = set(uids)
        mapping: dict[int, int] = {}
        self.last_copyuid_uidvalidity = None
        if not wanted:
            return mapping
        dest = self.server_name(dest)  # portable -> the server's name, once (imap/names.py)
        if self.has("MOVE"):
            for uid_set in self._transfer_sets(wanted):
                self._take("COPYUID")
                pieces = [b"UID MOVE " + uid_set.encode("ascii") + b" " + mailbox_arg(dest)]
                reply = self._transfer("UID MOVE", dest, create, pieces, uid_set)
                mapping.update(self._copyuid(reply))
            return mapping
        can_expunge = self.has("UIDPLUS")
        for uid_set in self._transfer_sets(wanted):
            mapping.update(self._copy_chunk(uid_set, dest, create))
            set_bytes = uid_set.encode("ascii")
            self._run("UID STORE", [b"UID STORE " + set_bytes + b" +FLAGS.SILENT (\\Deleted)"])
            if can_expunge:
                self._run("UID EXPUNGE", [b"UID EXPUNGE " + set_bytes])
        if not can_expunge:
            log.warning(
                "%s: server has neither MOVE nor UIDPLUS: %d message(s) copied to %r and left marked "
                "\\Deleted in %r (not expunged, to spare other clients' \\Deleted messages)",
                self._account,
                len(wanted),
                dest,
                self.selected.mailbox if self.selected else "?",
            )
        return mapping

    def _copy_chunk(self, uid_set: str, dest: str, create: bool) -> dict[int, int]:
        self._take("COPYUID")
        pieces = [b"UID COPY " + uid_set.encode("ascii") + b" " + mailbox_arg(dest)]
        reply = self._transfer("UID COPY", dest, create, pieces, uid_set)
        return self._copyuid(reply)

    def _transfer_sets(self, uids: Iterable[int]) -> list[str]:
        """UID sets for MOVE/COPY: at most `pacing.transfer_batch` messages (Exchange) and
        `pacing.uid_set_bytes` bytes each, ascending."""
        return [
            s
            for batch in self.pacing.batches(list(uids))
            for s in chunk_uid_sets(batch, self.pacing.uid_set_bytes)
        ]

    def _transfer(self, name: str, dest: str, create: bool, pieces: Sequence[Piece], uid_set: str) -> Any:
        """One MOVE/COPY with a read time-out sized for it (imap/pacing.py): a server copying into a
        very large folder may take minutes, and a time-out would end the connection."""
        seconds = self.pacing.transfer_seconds(count_uids(uid_set), None)
        with read_timeout(getattr(self._client._imap, "sock", None), seconds):
            return self._with_trycreate(name, dest, create, pieces)

    def _copyuid(self, reply: Reply) -> dict[int, int]:
        # COPY answers COPYUID in the tagged OK; MOVE in an untagged OK before the EXPUNGEs
        # (RFC 6851 §4.3). imaplib files both under untagged_responses["COPYUID"]: read and clear.
        untagged = [d for d in self._take("COPYUID") if isinstance(d, bytes)]
        mapping: dict[int, int] = {}
        for data in untagged or [reply.text]:
            parsed = parse_copyuid(data)
            if parsed is not None:
                self.last_copyuid_uidvalidity = parsed[0]
                mapping.update(parsed[1])
        return mapping
