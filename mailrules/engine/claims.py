"""At most once for the IMAP actions that must not repeat: a copy, and a move without MOVE.

Sending `UID COPY` twice makes two copies, and a move on a server without MOVE copies first. So,
as for forwards (journal before, confirm after), the intent comes first: before the command, one
durable intent per message (`Journal.claim`, one transaction for the whole group); a message whose
intent exists already is not acted on again, whether the earlier attempt was confirmed (done) or
not (in doubt: `mailrules log --pending`). If the intents cannot be written (a full disk), the
command is not sent: the StateError goes up and the batch keeps its checkpoint. After the command
the intents of what was done are confirmed, and those of what the server certainly refused (a
tagged NO or BAD, a refusal of ours before sending) or certainly did not copy (a UID its COPYUID
answer left out: expunged by another client) are released, so that a later run tries again;
a connection lost during the command leaves them in doubt.

A restart therefore never repeats a copy it made, even when the journal row of that copy could
not be written (the intent was).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from mailrules.engine.loops import VANISHED
from mailrules.engine.ports import Claims
from mailrules.errors import ImapError
from mailrules.state.models import JournalEntry

#: the past tense of each action, for "already copied (journal)"
_DONE = {"copy": "copied", "move": "moved", "archive": "archived", "delete": "deleted"}


class _Message(Protocol):
    """A matched message (engine/targets.py: Target): only its UID matters here."""

    @property
    def uid(self) -> int: ...


Target = TypeVar("Target", bound=_Message)


def transfer_key(
    account: str, mailbox: str, uidvalidity: int, uid: int, rule: str, action: str, destination: str
) -> str:
    """The key of one copy (or move) of one message by one rule into one mailbox.

    By UIDVALIDITY and UID, as the journal's own "already copied" check; the destination keeps
    its case (mailbox names are case-sensitive but for INBOX). `/` and `%` are escaped in each part.
    """
    parts = ("imap", account, mailbox, str(uidvalidity), str(uid), rule, action, destination)
    return "/".join(p.replace("%", "%25").replace("/", "%2F") for p in parts)


@dataclass
class Claim(Generic[Target]):
    """The intents of one group (one rule, action and destination): who goes ahead, who does not."""

    journal: Claims
    word: str
    keys: dict[int, str]  # uid -> intent key, of the messages that go ahead
    go: list[Target]
    skipped: list[tuple[Target, str]]  # (message, why it is not acted on again)
    failure: BaseException | None = field(default=None)

    def watch(self, command: Callable[[list[int]], object]) -> Callable[[list[int]], object]:
        """`command`, remembering how it failed (to tell a refusal from a lost connection)."""

        def watched(uids: list[int]) -> object:
            try:
                return command(uids)
            except BaseException as exc:
                self.failure = exc
                raise

        return watched

    def settle(self, entries: Sequence[JournalEntry]) -> None:
        """After the command: confirm what was done, release what certainly was not (refused, or
        left out of the server's COPYUID answer: gone before the command, nothing was copied)."""
        done = [self.keys[e.uid] for e in entries if e.outcome == "ok" and e.uid in self.keys]
        if done:
            self.journal.confirm_many(done)
        gone = [self.keys[e.uid] for e in entries if e.error == VANISHED and e.uid in self.keys]
        if gone:
            self.journal.release_many(gone)
        failed = [self.keys[e.uid] for e in entries if e.outcome == "failed" and e.uid in self.keys]
        if failed and not (isinstance(self.failure, ImapError) and self.failure.kind == "reconnect"):
            self.journal.release_many(failed)


def claim_group(
    journal: Claims,
    group: Sequence[Target],
    key: Callable[[Target], str],
    planned: Callable[[Target], JournalEntry],
    word: str,
) -> Claim[Target]:
    """Write the intents of `group` (raises StateError when it cannot: then nothing may be done)."""
    keys = {t.uid: key(t) for t in group}
    new = journal.claim([(keys[t.uid], planned(t)) for t in group])
    old = [keys[t.uid] for t in group if keys[t.uid] not in new]
    confirmed = journal.confirmed_keys(old) if old else set()
    past = _DONE.get(word, "done")
    skipped = [
        (t, f"already {past}" if keys[t.uid] in confirmed else f"an earlier attempt may have {past} it")
        for t in group
        if keys[t.uid] not in new
    ]
    skipped = [(t, f"{why} (journal)") for t, why in skipped]
    go = [t for t in group if keys[t.uid] in new]
    return Claim(journal, word, {t.uid: keys[t.uid] for t in go}, go, skipped)
