"""Forward and redirect, each at most once: the intent is durable before the mail leaves.

The action runner's part that talks to the account's Sender (engine/ports.py): loop safety
(engine/loops.py: automatic mail is never sent on, a rate per address), the at-most-once keys
(state/keys.py) and what a failed send leaves (released for a later try, or in doubt).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence

from mailrules.dsl import ast as A
from mailrules.engine.loops import LOOP_HEADER, VANISHED, header_digest, send_refusal
from mailrules.engine.ports import (
    AccountContext,
    EntryHook,
    Journal,
    LoopBudgets,
    MailboxStore,
    RunOptions,
    Sender,
    SendError,
)
from mailrules.engine.targets import Target
from mailrules.errors import MailrulesError, StateError
from mailrules.logs import printable
from mailrules.state.keys import intent_key, message_intent_key
from mailrules.state.models import JournalEntry, Outcome

__all__ = ["SendActions"]

log = logging.getLogger("mailrules.actions")  # as engine/actions.py


class SendActions:
    """Forward and redirect for ActionRunner (engine/actions.py), which sets the attributes below;
    and `_entry`, the journal entry of one action on one message, which both make."""

    account: AccountContext
    options: RunOptions
    store: MailboxStore
    journal: Journal | None
    guard: LoopBudgets
    mailbox: str
    uidvalidity: int
    emit: EntryHook
    #: why this pass stopped acting (`_held`), raised once the rule's journal rows are written
    lease_stop: StateError | None = None
    #: UIDs a MOVE or COPY answered with COPYUID showed gone (expunged by another client, `_made`):
    #: no later command of this pass is sent for them, no later rule sees them
    gone: set[int]

    def _entry(
        self,
        rule: A.Rule,
        word: str,
        detail: str,
        t: Target,
        dest: str | None,
        outcome: Outcome,
        error: str | None,
        new_uv: int | None = None,
        new_uid: int | None = None,
        *,
        quiet: bool = False,
        at: dt.datetime | None = None,
    ) -> JournalEntry:
        """The journal entry of one action on one message; logged and counted (`emit`) unless
        `quiet` (an intent's planned entry) or a send's "ok" (emitted once the send is confirmed).
        `at`: when, if not now (the entries of one command share its moment)."""
        entry = JournalEntry(
            run_id=self.options.run_id,
            rule=rule.name,
            rule_span=rule.span.short,
            account=self.account.name,
            mailbox=self.mailbox,
            uidvalidity=self.uidvalidity,
            uid=t.uid,
            # what a message can make up (its Message-ID, a destination rendered from it, an error
            # naming either) is escaped: a journal row or its log line never holds a line break
            message_id=printable(t.view.message_id),
            action=word,
            detail=printable(detail),
            destination=printable(dest),
            new_uidvalidity=new_uv,
            new_uid=new_uid,
            outcome=outcome,
            error=printable(error),
            at=at or dt.datetime.now(dt.UTC),
        )
        if not quiet and not (word in ("forward", "redirect") and outcome == "ok"):
            self.emit(entry)
        return entry

    def _made(
        self,
        rule: A.Rule,
        word: str,
        detail: str,
        dest: str | None,
        group: Sequence[Target],
        new_uv: int | None,
        new_uids: Mapping[int, int],
        at: dt.datetime,
    ) -> list[JournalEntry]:
        """The "ok" entries of one command carried out on `group` (a move, a copy, a flag
        change, a delete), each as `_entry` makes it and emitted in order; what they share is
        worked out once (the most common entries: one per message filed).

        A MOVE or COPY the server answered with COPYUID (RFC 4315; RFC 6851 for MOVE: `new_uv` set)
        that leaves some of our UIDs out did not move or copy them: another client expunged them
        after our SEARCH or FETCH, and a UID set naming messages that no longer exist is no error
        (RFC 9051 §6.4.9). They are journalled "skipped" (VANISHED), and kept in `gone`. Without
        COPYUID (no UIDPLUS) nothing tells them apart: every message is journalled "ok".
        """
        if new_uv is not None and len(new_uids) < len(group):
            missing = [t for t in group if t.uid not in new_uids]
            if missing:
                self.gone.update(t.uid for t in missing)
                group = [t for t in group if t.uid in new_uids]
                made = self._made(rule, word, detail, dest, group, new_uv, new_uids, at)
                return made + self._gone(rule, word, detail, dest, missing, at)[0]
        run_id, name, span = self.options.run_id, rule.name, rule.span.short
        account, mailbox, uidvalidity = self.account.name, self.mailbox, self.uidvalidity
        detail, destination = printable(detail), printable(dest)
        new_uid = new_uids.get
        entries = [
            JournalEntry(
                run_id, name, span, account, mailbox, uidvalidity, t.uid, printable(t.view.message_id),
                word, detail, destination, new_uv, new_uid(t.uid), "ok", None, at,
            )
            for t in group
        ]  # fmt: skip
        if word not in ("forward", "redirect"):  # as `_entry`: a send's is emitted once confirmed
            for entry in entries:
                self.emit(entry)
        return entries

    def _gone(
        self,
        rule: A.Rule,
        word: str,
        detail: str,
        dest: str | None,
        group: Sequence[Target],
        at: dt.datetime | None = None,
    ) -> tuple[list[JournalEntry], list[Target]]:
        """The "skipped" entries of the messages of `group` found gone (`gone`), and the others."""
        at = at or dt.datetime.now(dt.UTC)
        gone = [
            self._entry(rule, word, detail, t, dest, "skipped", VANISHED, at=at)
            for t in group
            if t.uid in self.gone
        ]
        return gone, [t for t in group if t.uid not in self.gone]

    def _send(
        self, rule: A.Rule, action: A.Forward | A.Redirect, word: str, address: str, targets: Sequence[Target]
    ) -> list[JournalEntry]:
        sender = self.account.sender
        if sender is None and not self.options.dry_run:
            msg = f"account {self.account.name!r} has no [smtp] settings: cannot {word}"
            return [self._entry(rule, word, address, t, None, "failed", msg) for t in targets]
        try:
            raw = self.store.fetch_raw([t.uid for t in targets])
        except MailrulesError as exc:
            return [self._entry(rule, word, address, t, None, "failed", str(exc)) for t in targets]
        entries = []
        for t in targets:
            original = raw.get(t.uid)
            if original is None:
                entries.append(self._entry(rule, word, address, t, None, "failed", "message vanished"))
                continue
            # automatic mail, bounces, reports and bulk mail are never sent on (loop safety)
            refusal = send_refusal(original)
            if refusal is not None:
                entries.append(self._entry(rule, word, address, t, None, "skipped", refusal))
            elif self.options.dry_run or sender is None:
                entries.append(self._entry(rule, word, address, t, None, "dry-run", None))
            elif not self._held(rule, word, len(targets) - len(entries)):
                break  # before the intent: nothing is left in doubt
            else:
                entries.append(self._send_one(rule, action, word, address, t, original, sender))
        return entries

    def _send_one(
        self,
        rule: A.Rule,
        action: A.Forward | A.Redirect,
        word: str,
        address: str,
        t: Target,
        original: bytes,
        sender: Sender,
    ) -> JournalEntry:
        """One send, at most once (the intent is durable before the mail leaves, confirmed after)."""
        key, legacy = self._intent_keys(t, original, rule, word, address)
        if self.journal is not None and legacy is not None and self.journal.is_confirmed(legacy):
            return self._entry(rule, word, address, t, None, "skipped", "already sent (journal)")
        account = self.account.name
        limited = self.guard.sends.take(account, address, self._history if self.journal is not None else None)
        if limited is not None:
            if self.journal is not None and self.journal.is_confirmed(key):
                limited = "already sent (journal)"
            return self._entry(rule, word, address, t, None, "skipped", limited)
        planned = self._entry(rule, word, address, t, None, "ok", None)
        if self.journal is not None and not self.journal.intent(key, planned):
            self.guard.sends.give_back(account, address)
            why = "already sent" if self.journal.is_confirmed(key) else "an earlier attempt may have sent it"
            return self._entry(rule, word, address, t, None, "skipped", f"{why} (journal)")
        try:
            if isinstance(action, A.Forward):
                sender.send_forward(original, address, rule=rule.name, idempotency_key=key)
            else:
                sender.send_redirect(original, address, rule=rule.name, idempotency_key=key)
        except MailrulesError as exc:
            # Release only what certainly did not leave; a connection lost during DATA keeps
            # its intent (at most once: a person decides, see `mailrules log`).
            maybe_sent = isinstance(exc, SendError) and exc.maybe_sent
            if not maybe_sent:
                if self.journal is not None:
                    self.journal.release(key)
                self.guard.sends.give_back(account, address)
            if isinstance(exc, SendError) and exc.kind == "loop":  # our own loop header: never again
                return self._entry(rule, word, address, t, None, "skipped", LOOP_HEADER)
            return self._entry(rule, word, address, t, None, "failed", str(exc))
        if self.journal is not None:
            self.journal.confirm(key)
        self.emit(planned)
        return planned

    def _held(self, rule: A.Rule, word: str, left: int) -> bool:
        """Whether the next command that changes the server (or the next send) may go: among
        daemons sharing the accounts, only while this process surely holds the account's lease
        (`AccountContext.lease_check`); outside, always. Once not, nothing more is done in this
        pass: `lease_stop` is kept and raised when the rule's journal rows are written
        (ActionRunner.run_rule), so the batch keeps its checkpoint and its messages stay for the
        account's next owner. `left`: the messages this command was for (for the log line)."""
        if self.lease_stop is not None:
            return False
        check = self.account.lease_check
        if check is None or self.options.dry_run:
            return True
        try:
            check()
        except StateError as exc:  # LeaseLost (daemon/lease_guard.py)
            self.lease_stop = exc
            log.warning(
                '%s: rule "%s": %s of %d message(s) in %s/%s not done, nor anything after it in this '
                "pass: %s",
                rule.span.short,
                rule.name,
                word,
                left,
                self.account.name,
                printable(self.mailbox),
                exc,
            )
            return False
        return True

    def _history(self, account: str, address: str, since: dt.datetime) -> list[dt.datetime]:
        assert self.journal is not None
        return self.journal.sends_since(account, address, since)

    def _intent_keys(
        self, t: Target, original: bytes, rule: A.Rule, word: str, address: str
    ) -> tuple[str, str | None]:
        """The at-most-once key of one send, and the key an older mailrules gave it (or None).

        By Message-ID and a digest of the header block where there is a Message-ID (stable across
        UIDVALIDITY changes and moves, and a stranger who sends first under a predicted
        Message-ID does not share it), else by UIDVALIDITY and UID. Sends journalled under the
        Message-ID alone (before the digest) still count as done.
        """
        mid = (t.view.message_id or "").strip()
        acct = self.account.name
        if mid:
            digest = header_digest(original)
            return (
                message_intent_key(acct, mid, rule.name, word, address, digest=digest),
                message_intent_key(acct, mid, rule.name, word, address),
            )
        return intent_key(acct, self.mailbox, self.uidvalidity, t.uid, rule.name, word, address), None
