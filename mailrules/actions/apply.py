"""Carries out one rule's actions on its matched messages: one command per (action, destination)."""

from __future__ import annotations

import copy
import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailrules.actions.claims import Claim, claim_group, transfer_key
from mailrules.compile.plan import FetchNeeds
from mailrules.dsl import ast as A
from mailrules.errors import ImapError, MailrulesError
from mailrules.logs import printable
from mailrules.message import MessageView
from mailrules.semantics import EvalContext, Match, TemplateError, render_template
from mailrules.state.models import JournalEntry
from mailrules.state.store import intent_key, message_intent_key

if TYPE_CHECKING:
    from mailrules.engine import AccountContext, Journal, MailboxStore, RuleReport, RunOptions

log = logging.getLogger("mailrules.actions")


@dataclass(frozen=True, slots=True)
class Target:
    """A matched message: its UID, its decoded view, and the match (captures for templates)."""

    uid: int
    view: MessageView
    match: Match


def union_needs(a: FetchNeeds, b: FetchNeeds) -> FetchNeeds:
    return FetchNeeds(
        a.headers | b.headers,
        a.body or b.body,
        a.bodystructure or b.bodystructure,
        a.internaldate or b.internaldate,
        a.size or b.size,
        a.flags or b.flags,
    )


def action_word(action: A.Action) -> tuple[str, str]:
    """(action as the language spells it, detail: flag, keyword or address)."""
    match action:
        case A.Move():
            return "move", ""
        case A.Copy():
            return "copy", ""
        case A.Archive():
            return "archive", ""
        case A.Delete(permanently=True):
            return "delete permanently", ""
        case A.Delete():
            return "delete", ""
        case A.SetFlag(flag="\\Seen", on=on):
            return ("mark read" if on else "mark unread"), "\\Seen"
        case A.SetFlag(on=on):
            return ("flag" if on else "unflag"), "\\Flagged"
        case A.Tag(keyword=k, on=on):
            return ("tag" if on else "untag"), k
        case A.Forward(address=a):
            return "forward", a
        case A.Redirect(address=a):
            return "redirect", a
        case A.Stop():
            return "stop", ""
    raise AssertionError(action)


def _needs_of_template(t: A.Template | None) -> FetchNeeds:
    if t is None:
        return FetchNeeds()
    headers: set[str] = set()
    internaldate = False
    for p in t.parts:
        if isinstance(p, A.Placeholder):
            if p.name in ("year", "month", "day"):
                internaldate = True
                headers.add("Date")
            elif p.name == "from.domain":
                headers.add("From")
            elif p.name == "list":
                headers.add("List-Id")
    return FetchNeeds(headers=frozenset(headers), internaldate=internaldate)


class ActionRunner:
    """Executes rules' actions in one selected mailbox, journals each message's outcome."""

    def __init__(
        self,
        store: MailboxStore,
        account: AccountContext,
        mailbox: str,
        uidvalidity: int,
        options: RunOptions,
        journal: Journal | None,
        emit: Callable[[JournalEntry], None],
    ) -> None:
        self.store = store
        self.account = account
        self.mailbox = mailbox
        self.uidvalidity = uidvalidity
        self.options = options
        self.journal = journal
        self.emit = emit
        #: dry run only: the flags each message would have now, after earlier rules
        self.flag_overlay: dict[int, frozenset[str]] = {}
        self._special: dict[str, str] | None = None
        #: UIDs whose action the server refused for now (RFC 5530 UNAVAILABLE, INUSE, LIMIT,
        #: SERVERBUG) and that can safely be sent again: the daemon tries them again later.
        self.retry_uids: set[int] = set()

    # -- what to fetch -------------------------------------------------------------------------------

    def needs_for(self, rule: A.Rule) -> FetchNeeds:
        """Message-ID for the journal, what templates read, flags when flag actions are to be judged."""
        needs = FetchNeeds(headers=frozenset({"Message-ID"}))
        for action in rule.actions:
            if isinstance(action, A.Move | A.Copy | A.Archive):
                # {match.N} needs nothing more: `matches` is always in the residual, whose
                # needs are fetched anyway.
                needs = union_needs(needs, _needs_of_template(action.dest))
            elif isinstance(action, A.SetFlag | A.Tag):
                needs = union_needs(needs, FetchNeeds(flags=True))
        return needs

    def with_overlay(self, uid: int, view: MessageView, fresh: bool = True) -> MessageView:
        """The view with the flags this pass left it: in a real run a `fresh` FETCH is the truth;
        a dry run, or a view fetched before earlier rules acted (`fresh=False`), gets the flags
        earlier rules set or would have set."""
        if fresh and not self.options.dry_run:
            if uid in self.flag_overlay:  # keep what a view fetched ahead must be corrected to
                self.flag_overlay[uid] = view.flags
            return view
        flags = self.flag_overlay.get(uid)
        if flags is None:
            return view
        shadow = copy.copy(view)  # shares the decoded caches; only the flags differ
        shadow.flags = flags
        return shadow

    # -- running a rule ------------------------------------------------------------------------------

    def run_rule(self, rule: A.Rule, targets: Sequence[Target], ctx: EvalContext, rr: RuleReport) -> set[int]:
        """Carry out `rule`'s actions on `targets`; return the UIDs no later rule may see."""
        actions = list(rule.actions)
        for i, action in enumerate(actions):
            if isinstance(action, A.Delete) and action.permanently:
                actions = actions[: i + 1]  # nothing is left to act on after it
                break
        removals = [a for a in actions if isinstance(a, A.REMOVING_ACTIONS)]
        stops = any(isinstance(a, A.Stop) for a in actions)
        entries: list[JournalEntry] = []
        for action in actions:
            if not isinstance(action, A.Stop | A.Move | A.Archive | A.Delete):
                entries += self._run_action(rule, action, targets, ctx)
        removed: set[int] = {t.uid for t in targets} if stops else set()
        # Each message leaves by the last removing action that can be carried out for it (the
        # per-message reading runs them all; earlier ones only set where the later one starts).
        chosen: dict[int, list[Target]] = defaultdict(list)
        for t in targets:
            for idx in range(len(removals) - 1, -1, -1):
                error = self._cannot(removals[idx], t, ctx)
                if error is None:
                    chosen[idx].append(t)
                    break
                entries.append(self._entry(rule, action_word(removals[idx])[0], "", t, None, "failed", error))
        for idx in sorted(chosen):
            done = self._run_action(rule, removals[idx], chosen[idx], ctx)
            entries += done
            # skipped: the journal says an earlier run moved it (a move without MOVE, claims.py)
            removed |= {e.uid for e in done if e.outcome in ("ok", "dry-run", "skipped")}
        for e in entries:
            rr.outcomes[f"{e.action} {e.outcome}"] += 1
        if self.journal is not None and entries:
            self.journal.record_many(entries)
        return removed

    def _run_action(
        self, rule: A.Rule, action: A.Action, targets: Sequence[Target], ctx: EvalContext
    ) -> list[JournalEntry]:
        word, detail = action_word(action)
        if isinstance(action, A.Move | A.Copy | A.Archive | A.Delete) and not (
            isinstance(action, A.Delete) and action.permanently
        ):
            return self._transfer(rule, action, word, targets, ctx)
        if isinstance(action, A.Delete):
            return self._group(
                rule, word, "", None, targets, lambda uids: self.store.delete_permanently(uids)
            )
        if isinstance(action, A.SetFlag | A.Tag):
            flag = action.flag if isinstance(action, A.SetFlag) else action.keyword
            return self._flags(rule, word, flag, action.on, targets)
        if isinstance(action, A.Forward | A.Redirect):
            return self._send(rule, action, word, detail, targets)
        raise AssertionError(action)

    def _transfer(
        self,
        rule: A.Rule,
        action: A.Move | A.Copy | A.Archive | A.Delete,
        word: str,
        targets: Sequence[Target],
        ctx: EvalContext,
    ) -> list[JournalEntry]:
        groups: dict[str, list[Target]] = defaultdict(list)
        entries: list[JournalEntry] = []
        for t in targets:
            try:
                dest = self._destination(action, t, ctx)
            except (TemplateError, MailrulesError) as exc:
                entries.append(self._entry(rule, word, "", t, None, "failed", str(exc)))
                continue
            groups[dest].append(t)
        op = self.store.copy if isinstance(action, A.Copy) else self.store.move
        create = self.account.create_mailboxes
        for dest, group in groups.items():
            if isinstance(action, A.Copy) and self.journal is not None and not self.options.dry_run:
                # A copy is made once per message, rule and mailbox: a second `mailrules run`, or
                # a batch processed again after a crash, does not copy again (the journal says).
                done = self.journal.already_done(
                    self.account.name,
                    self.mailbox,
                    self.uidvalidity,
                    [t.uid for t in group],
                    rule.name,
                    word,
                    printable(dest),  # as `_entry` journals it
                )
                if done:
                    entries += [
                        self._entry(rule, word, "", t, dest, "skipped", "already copied (journal)")
                        for t in group
                        if t.uid in done
                    ]
                    group = [t for t in group if t.uid not in done]

            def command(uids: list[int], dest: str = dest) -> object:
                return op(uids, dest, create=create)

            claim = self._claim(rule, word, dest, group)
            if claim is None:
                entries += self._group(rule, word, "", dest, group, command)
                continue
            entries += [self._entry(rule, word, "", t, dest, "skipped", why) for t, why in claim.skipped]
            made = self._group(rule, word, "", dest, claim.go, claim.watch(command))
            claim.settle(made)
            entries += made
        return entries

    def _claim(self, rule: A.Rule, word: str, dest: str, group: list[Target]) -> Claim[Target] | None:
        """The intents of a copy (or a move without MOVE) into `dest`, written before it is made
        (actions/claims.py); None when the command may be sent again without harm, or nothing is
        journalled. Raises StateError, and nothing is done, when they cannot be written."""
        if self.journal is None or self.options.dry_run or not group or self._repeatable(word):
            return None

        def key(t: Target) -> str:
            return transfer_key(
                self.account.name, self.mailbox, self.uidvalidity, t.uid, rule.name, word, dest
            )

        def planned(t: Target) -> JournalEntry:
            return self._entry(rule, word, "", t, dest, "ok", None, quiet=True)

        return claim_group(self.journal, group, key, planned, word)

    def _cannot(self, action: A.Action, t: Target, ctx: EvalContext) -> str | None:
        """Why a removing action cannot be carried out for this message (its template), or None."""
        if isinstance(action, A.Delete) and action.permanently:
            return None
        assert isinstance(action, A.Move | A.Archive | A.Delete)
        try:
            self._destination(action, t, ctx)
        except (TemplateError, MailrulesError) as exc:
            return str(exc)
        return None

    def _destination(
        self, action: A.Move | A.Copy | A.Archive | A.Delete, t: Target, ctx: EvalContext
    ) -> str:
        if isinstance(action, A.Move | A.Copy) or (isinstance(action, A.Archive) and action.dest is not None):
            assert action.dest is not None
            return render_template(action.dest, t.view, t.match.captures, ctx, whole=t.match.whole)
        use, override, fallback = (
            ("\\Archive", self.account.archive, "Archive")
            if isinstance(action, A.Archive)
            else ("\\Trash", self.account.trash, "Trash")
        )
        if override:
            return override
        if self._special is None:
            self._special = self.store.special_use()
        return self._special.get(use, fallback)

    def _flags(
        self, rule: A.Rule, word: str, flag: str, on: bool, targets: Sequence[Target]
    ) -> list[JournalEntry]:
        folded = flag.casefold()
        change = [t for t in targets if (folded in {f.casefold() for f in self._flags_of(t)}) != on]
        changing = {t.uid for t in change}
        same = [t for t in targets if t.uid not in changing]
        # A change that changes nothing is journalled as skipped: undo must never clear a flag
        # the message had before the run.
        entries = [self._entry(rule, word, flag, t, None, "skipped", "already so") for t in same]
        entries += self._group(
            rule, word, flag, None, change, lambda uids: self.store.store_flags(uids, [flag], on)
        )
        # What the next flag action of this rule (and, in a dry run, of later rules) must see.
        for t in change:
            flags = {f for f in self._flags_of(t) if f.casefold() != folded}
            self.flag_overlay[t.uid] = frozenset(flags | ({flag} if on else set()))
        return entries

    def _flags_of(self, t: Target) -> frozenset[str]:
        return self.flag_overlay.get(t.uid, t.view.flags)

    def _send(
        self, rule: A.Rule, action: A.Forward | A.Redirect, word: str, address: str, targets: Sequence[Target]
    ) -> list[JournalEntry]:
        if self.options.dry_run:
            return [self._entry(rule, word, address, t, None, "dry-run", None) for t in targets]
        sender = self.account.sender
        if sender is None:
            msg = f"account {self.account.name!r} has no [smtp] settings: cannot {word}"
            return [self._entry(rule, word, address, t, None, "failed", msg) for t in targets]
        try:
            raw = self.store.fetch_raw([t.uid for t in targets])
        except MailrulesError as exc:
            return [self._entry(rule, word, address, t, None, "failed", str(exc)) for t in targets]
        entries = []
        for t in targets:
            key = self._intent_key(t, rule, word, address)
            planned = self._entry(rule, word, address, t, None, "ok", None)
            if t.uid not in raw:
                entries.append(self._entry(rule, word, address, t, None, "failed", "message vanished"))
                continue
            if self.journal is not None and not self.journal.intent(key, planned):
                why = (
                    "already sent"
                    if self.journal.is_confirmed(key)
                    else "an earlier attempt may have sent it"
                )
                entries.append(self._entry(rule, word, address, t, None, "skipped", f"{why} (journal)"))
                continue
            try:
                if isinstance(action, A.Forward):
                    sender.send_forward(raw[t.uid], address, rule=rule.name, idempotency_key=key)
                else:
                    sender.send_redirect(raw[t.uid], address, rule=rule.name, idempotency_key=key)
            except MailrulesError as exc:
                # Release only what certainly did not leave; a connection lost during DATA keeps
                # its intent (at most once: a person decides, see `mailrules log`).
                if self.journal is not None and not getattr(exc, "maybe_sent", False):
                    self.journal.release(key)
                entries.append(self._entry(rule, word, address, t, None, "failed", str(exc)))
                continue
            if self.journal is not None:
                self.journal.confirm(key)
            entries.append(planned)
            self.emit(planned)
        return entries

    def _intent_key(self, t: Target, rule: A.Rule, word: str, address: str) -> str:
        """By Message-ID where there is one (stable across UIDVALIDITY changes and moves), else
        by UIDVALIDITY and UID."""
        mid = (t.view.message_id or "").strip()
        if mid:
            return message_intent_key(self.account.name, mid, rule.name, word, address)
        return intent_key(self.account.name, self.mailbox, self.uidvalidity, t.uid, rule.name, word, address)

    # -- one command for a group ---------------------------------------------------------------------

    def _group(
        self,
        rule: A.Rule,
        word: str,
        detail: str,
        dest: str | None,
        group: Sequence[Target],
        command: Callable[[list[int]], object],
    ) -> list[JournalEntry]:
        if not group:
            return []
        uids = [t.uid for t in group]
        if self.options.dry_run:
            return [self._entry(rule, word, detail, t, dest, "dry-run", None) for t in group]
        try:
            result = command(uids)
        except MailrulesError as exc:
            again = isinstance(exc, ImapError) and exc.kind == "retry" and self._repeatable(word)
            log.error(
                '%s: rule "%s": %s failed in %s/%s: %s%s',
                rule.span.short,
                rule.name,
                word,
                self.account.name,
                self.mailbox,
                printable(str(exc)),
                " (the server refused it for now)" if again else "",
            )
            if again:
                self.retry_uids.update(uids)
            return [self._entry(rule, word, detail, t, dest, "failed", str(exc)) for t in group]
        new_uv, mapping = result if isinstance(result, tuple) else (None, {})
        return [
            self._entry(rule, word, detail, t, dest, "ok", None, new_uv, mapping.get(t.uid)) for t in group
        ]

    def _repeatable(self, word: str) -> bool:
        """Whether sending the refused command again can do no harm whatever part of it took.

        A flag STORE and `UID EXPUNGE` of given UIDs are idempotent, and so is `UID MOVE` (UIDs
        already moved are no longer there). A COPY, or the COPY + STORE + EXPUNGE fallback without
        MOVE, may have copied a chunk already: again would duplicate it. Forwards keep their own
        at-most-once journal and are never repeated here.
        """
        if word in ("move", "archive", "delete"):
            return self.store.dialect.move
        return word in ("delete permanently", "mark read", "mark unread", "flag", "unflag", "tag", "untag")

    def _entry(
        self,
        rule: A.Rule,
        word: str,
        detail: str,
        t: Target,
        dest: str | None,
        outcome: str,
        error: str | None,
        new_uv: int | None = None,
        new_uid: int | None = None,
        *,
        quiet: bool = False,
    ) -> JournalEntry:
        """The journal entry of one action on one message; logged and counted (`emit`) unless
        `quiet` (an intent's planned entry) or a send's "ok" (emitted once the send is confirmed)."""
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
            outcome=outcome,  # type: ignore[arg-type]
            error=printable(error),
            at=dt.datetime.now(dt.UTC),
        )
        if not quiet and not (word in ("forward", "redirect") and outcome == "ok"):
            self.emit(entry)
        return entry
