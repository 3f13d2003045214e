"""Carries out one rule's actions on its matched messages: one command per (action, destination)."""

from __future__ import annotations

import copy
import datetime as dt
import logging
import operator
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import replace

from mailrules.compile.needs import FetchNeeds
from mailrules.dsl import ast as A
from mailrules.dsl.semantics import EvalContext, TemplateError, render_tag, render_template
from mailrules.dsl.templates import gmail_label_refusal, important_flag
from mailrules.engine.claims import Claim, claim_group, transfer_key
from mailrules.engine.loops import SOURCE_MAILBOX, LoopGuard
from mailrules.engine.ports import (
    ARCHIVED_LABEL,
    AccountContext,
    EntryHook,
    Journal,
    LoopBudgets,
    MailboxStore,
    RuleReport,
    RunOptions,
)
from mailrules.engine.sending import SendActions
from mailrules.engine.targets import Target, action_word, needs_of_template, union_needs
from mailrules.errors import ActionError, ImapError, MailrulesError
from mailrules.logs import printable
from mailrules.message.view import MessageView
from mailrules.state.models import JournalEntry

log = logging.getLogger("mailrules.actions")

#: Why an action was skipped when what it asks for is already so: the flag is set (or clear), an
#: earlier run made the copy (the journal says). Their lines are DEBUG, not INFO (accounts.log_entry).
ALREADY_SO = "already so"
ALREADY_COPIED = "already copied (journal)"
ALREADY_DONE = frozenset({ALREADY_SO, ALREADY_COPIED})
_ACTION_OUTCOME = operator.attrgetter("action", "outcome")

#: `store.copy` or `store.move`
Transfer = Callable[..., tuple[int | None, dict[int, int]]]


class ActionRunner(SendActions):
    """Executes rules' actions in one selected mailbox, journals each message's outcome."""

    def __init__(
        self,
        store: MailboxStore,
        account: AccountContext,
        mailbox: str,
        uidvalidity: int,
        options: RunOptions,
        journal: Journal | None,
        emit: EntryHook,
    ) -> None:
        self.store = store
        self.account = account
        self.mailbox = mailbox
        self.uidvalidity = uidvalidity
        self.options = options
        self.journal = journal
        self.emit = emit
        self.guard: LoopBudgets = account.guard if account.guard is not None else LoopGuard()
        #: dry run only: the flags each message would have now, after earlier rules
        self.flag_overlay: dict[int, frozenset[str]] = {}
        self._special: dict[str, str] | None = None
        #: destination -> whether it is this mailbox: asked up to twice per message and removing
        #: action, answered once per name (the names a pass files into are few)
        self._source: dict[str, bool] = {}
        self.gone: set[int] = set()  # SendActions.gone
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
                needs = union_needs(needs, needs_of_template(action.dest))
            elif isinstance(action, A.SetFlag | A.Tag):
                needs = union_needs(needs, FetchNeeds(flags=True))
                if isinstance(action, A.Tag):  # `tag "lists/{list}"` reads what its template reads
                    needs = union_needs(needs, needs_of_template(action.template))
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
        """Carry out `rule`'s actions on `targets`; return the UIDs no later rule may see.

        The journal rows are written once the rule is done, and also when it stops half way (a
        StateError from a claim, a bug): what the server already carried out is journalled, so
        `undo` finds it.
        """
        entries: list[JournalEntry] = []
        try:
            removed = self._carry_out(rule, targets, ctx, entries)
        except Exception:
            self._record_after_failure(rule, entries)
            raise
        # counted by pair (C), then one key each: not an f-string per message and action
        for (word, outcome), n in Counter(map(_ACTION_OUTCOME, entries)).items():
            rr.outcomes[f"{word} {outcome}"] += n
        if self.journal is not None and entries:
            self.journal.record_many(entries)
        if self.lease_stop is not None:  # the lease is not surely held: the pass ends here
            raise self.lease_stop
        return removed

    def _record_after_failure(self, rule: A.Rule, entries: list[JournalEntry]) -> None:
        if self.journal is None or not entries:
            return
        try:
            self.journal.record_many(entries)
        except Exception:  # the journal is what failed: the original error goes up, this one logged
            log.exception(
                '%s: rule "%s": %d journal rows of %s/%s could not be written after a failure',
                rule.span.short,
                rule.name,
                len(entries),
                self.account.name,
                self.mailbox,
            )

    def _carry_out(
        self, rule: A.Rule, targets: Sequence[Target], ctx: EvalContext, entries: list[JournalEntry]
    ) -> set[int]:
        """The actions of `rule` on `targets`, their journal entries appended to `entries` as
        they are made."""
        actions = list(rule.actions)
        for i, action in enumerate(actions):
            if isinstance(action, A.Delete) and action.permanently:
                actions = actions[: i + 1]  # nothing is left to act on after it
                break
        removals = [a for a in actions if isinstance(a, A.REMOVING_ACTIONS)]
        stops = any(isinstance(a, A.Stop) for a in actions)
        for action in actions:
            if not isinstance(action, A.Stop | A.Move | A.Archive | A.Delete):
                entries += self._run_action(rule, action, targets, ctx)
        removed: set[int] = {t.uid for t in targets} if stops else set()
        # Each message leaves by the last removing action that can be carried out for it (the
        # per-message reading runs them all; earlier ones only set where the later one starts).
        # A removing action whose destination is this very mailbox is skipped as if it were not
        # written (loop safety, engine/loops.py); the message has still left the later rules.
        chosen: dict[int, list[Target]] = defaultdict(list)
        in_place: list[Target] = []
        for t in targets:
            stays = False
            for idx in range(len(removals) - 1, -1, -1):
                word = action_word(removals[idx])[0]
                try:
                    dest = self._removal_destination(removals[idx], t, ctx)
                except (TemplateError, MailrulesError) as exc:
                    entries.append(self._entry(rule, word, "", t, None, "failed", str(exc)))
                    continue
                if dest is not None and self._is_source(dest):
                    entries.append(self._entry(rule, word, "", t, dest, "skipped", SOURCE_MAILBOX))
                    stays = True
                    continue
                if self._archives_in_place(removals[idx], dest) and not any(
                    self._leaves(r, t, ctx) for r in removals[:idx]
                ):
                    in_place.append(t)
                else:
                    chosen[idx].append(t)
                break
            else:
                if stays:
                    removed.add(t.uid)
        for idx in sorted(chosen):
            done = self._run_action(rule, removals[idx], chosen[idx], ctx)
            entries += done
            # skipped: the journal says an earlier run moved it (a move without MOVE, claims.py)
            removed |= {e.uid for e in done if e.outcome in ("ok", "dry-run", "skipped")}
        if in_place:
            # Gmail's archive from a label's mailbox: the \Inbox label goes, the message stays
            # (a MOVE to All Mail would remove this mailbox's label instead). It has left the pass.
            done = self._group(rule, "archive", ARCHIVED_LABEL, None, in_place, self.store.archive_in_place)
            entries += done
            removed |= {e.uid for e in done if e.outcome in ("ok", "dry-run")}
        if self.gone:  # not in the mailbox any more, whatever this rule meant to do with them
            removed |= {t.uid for t in targets if t.uid in self.gone}
        return removed

    def _archives_in_place(self, action: A.Action, dest: str | None) -> bool:
        """Whether this removal is the archive into the \\Archive mailbox that this store does in
        place from this mailbox (`MailboxStore.archives_in_place`: Gmail, from a label's mailbox)."""
        if not isinstance(action, A.Archive) or action.dest is not None or dest is None:
            return False
        if not self.store.archives_in_place(self.mailbox):
            return False
        archive = self._special_uses().get("\\Archive")
        return archive is not None and self.store.same_mailbox(dest, archive)

    def _leaves(self, action: A.Action, t: Target, ctx: EvalContext) -> bool:
        """Whether an earlier removing action would take the message elsewhere (so a later
        archive starts from there, not from this mailbox); an archive in place does not."""
        try:
            dest = self._removal_destination(action, t, ctx)
        except (TemplateError, MailrulesError):
            return False
        return dest is None or not (self._is_source(dest) or self._archives_in_place(action, dest))

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
        if isinstance(action, A.Tag) and action.template is not None:
            return self._templated_tag(rule, word, action, action.template, targets, ctx)
        if isinstance(action, A.SetFlag | A.Tag):
            flag = action.flag if isinstance(action, A.SetFlag) else action.keyword
            gmail = self.store.dialect.gmail
            if isinstance(action, A.SetFlag) and flag == "\\Important":
                flag = important_flag(gmail)  # Gmail's label, else RFC 8457's keyword
            elif isinstance(action, A.Tag) and flag.startswith("\\") and not gmail:  # `tag "\\Starred"`
                why = gmail_label_refusal(flag)
                return [self._entry(rule, word, flag, t, None, "failed", why) for t in targets]
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
            if self._is_source(dest):
                entries.append(self._entry(rule, word, "", t, dest, "skipped", SOURCE_MAILBOX))
                continue
            groups[dest].append(t)
        op = self.store.copy if isinstance(action, A.Copy) else self.store.move
        for dest, group in groups.items():
            if not self._held(rule, word, len(group)):  # before the intents: none left in doubt
                break
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
                        self._entry(rule, word, "", t, dest, "skipped", ALREADY_COPIED)
                        for t in group
                        if t.uid in done
                    ]
                    group = [t for t in group if t.uid not in done]

            def command(uids: list[int], dest: str = dest) -> object:
                return self._into(op, uids, dest)

            claim = self._claim(rule, word, dest, group)
            if claim is None:
                entries += self._group(rule, word, "", dest, group, command)
                continue
            entries += [self._entry(rule, word, "", t, dest, "skipped", why) for t, why in claim.skipped]
            made = self._group(rule, word, "", dest, claim.go, claim.watch(command), held=True)
            claim.settle(made)
            entries += made
        return entries

    def _claim(self, rule: A.Rule, word: str, dest: str, group: list[Target]) -> Claim[Target] | None:
        """The intents of a copy (or a move without MOVE) into `dest`, written before it is made
        (engine/claims.py); None when the command may be sent again without harm, or nothing is
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

    def _into(self, op: Transfer, uids: list[int], dest: str) -> tuple[int | None, dict[int, int]]:
        """COPY or MOVE `uids` to `dest`; a missing `dest` is created only within the run's
        mailbox creation budget (a template can name a new mailbox per message)."""
        if not self.account.create_mailboxes:
            return op(uids, dest, create=False)
        try:
            return op(uids, dest, create=False)
        except ImapError as exc:
            if exc.code != "TRYCREATE":
                raise
        refusal = self.guard.creations.take(self.account.name, dest)
        if refusal is not None:
            raise ActionError(refusal)
        return op(uids, dest, create=True)

    def _is_source(self, dest: str) -> bool:
        """Whether `dest` is the mailbox the rule reads, as the server tells names apart (loop safety)."""
        known = self._source.get(dest)
        if known is None:
            known = self._source[dest] = self.store.same_mailbox(dest, self.mailbox)
        return known

    def _removal_destination(self, action: A.Action, t: Target, ctx: EvalContext) -> str | None:
        """Where a removing action takes this message (None: `delete permanently`); raises when
        its template cannot be rendered."""
        if isinstance(action, A.Delete) and action.permanently:
            return None
        assert isinstance(action, A.Move | A.Archive | A.Delete)
        return self._destination(action, t, ctx)

    def _destination(
        self, action: A.Move | A.Copy | A.Archive | A.Delete, t: Target, ctx: EvalContext
    ) -> str:
        if isinstance(action, A.Move | A.Copy) or (isinstance(action, A.Archive) and action.dest is not None):
            assert action.dest is not None
            parts = action.dest.parts
            if len(parts) == 1 and isinstance(parts[0], A.TemplateText):
                return parts[0].text  # a literal name: the same for every message, nothing to render
            return render_template(action.dest, t.view, t.match.captures, ctx, whole=t.match.whole)
        use, override, fallback = (
            ("\\Archive", self.account.archive, "Archive")
            if isinstance(action, A.Archive)
            else ("\\Trash", self.account.trash, "Trash")
        )
        if override:
            return override
        return self._special_uses().get(use, fallback)

    def _special_uses(self) -> dict[str, str]:
        if self._special is None:
            self._special = self.store.special_use()
        return self._special

    def _flags(
        self, rule: A.Rule, word: str, flag: str, on: bool, targets: Sequence[Target]
    ) -> list[JournalEntry]:
        folded = flag.casefold()
        change = [t for t in targets if (folded in {f.casefold() for f in self._flags_of(t)}) != on]
        changing = {t.uid for t in change}
        same = [t for t in targets if t.uid not in changing]
        # A change that changes nothing is journalled as skipped: undo must never clear a flag
        # the message had before the run.
        entries = [self._entry(rule, word, flag, t, None, "skipped", ALREADY_SO) for t in same]
        entries += self._group(
            rule, word, flag, None, change, lambda uids: self.store.store_flags(uids, [flag], on)
        )
        # What the next flag action of this rule (and, in a dry run, of later rules) must see.
        for t in change:
            flags = {f for f in self._flags_of(t) if f.casefold() != folded}
            self.flag_overlay[t.uid] = frozenset(flags | ({flag} if on else set()))
        return entries

    def _templated_tag(
        self,
        rule: A.Rule,
        word: str,
        action: A.Tag,
        template: A.Template,
        targets: Sequence[Target],
        ctx: EvalContext,
    ) -> list[JournalEntry]:
        """`tag "lists/{list}"`: one flag action per name rendered (a Gmail label on Gmail); a
        message whose name cannot be rendered, or is no keyword this server takes, fails alone."""
        tags = replace(ctx, labels=self.store.dialect.gmail)
        named: dict[str, list[Target]] = defaultdict(list)
        entries: list[JournalEntry] = []
        for t in targets:
            try:
                named[render_tag(template, t.view, t.match.captures, tags, whole=t.match.whole)].append(t)
            except TemplateError as exc:
                entries.append(self._entry(rule, word, action.keyword, t, None, "failed", str(exc)))
        for name, group in named.items():
            entries += self._flags(rule, word, name, action.on, group)
        return entries

    def _flags_of(self, t: Target) -> frozenset[str]:
        return self.flag_overlay.get(t.uid, t.view.flags)

    # -- one command for a group ---------------------------------------------------------------------

    def _group(
        self,
        rule: A.Rule,
        word: str,
        detail: str,
        dest: str | None,
        group: Sequence[Target],
        command: Callable[[list[int]], object],
        *,
        held: bool = False,
    ) -> list[JournalEntry]:
        """`command` on `group`'s UIDs, an entry per message. Not sent once the account's lease is
        not surely held (`_held`; `held`: asked already, before the group's intents)."""
        if not group:
            return []
        if self.gone and not self.gone.isdisjoint(t.uid for t in group):  # seen gone in this pass
            gone, group = self._gone(rule, word, detail, dest, group)
            return gone + self._group(rule, word, detail, dest, group, command, held=held)
        uids = [t.uid for t in group]
        if not (held or self.options.dry_run or self._held(rule, word, len(group))):
            return []
        if self.options.dry_run:
            at = dt.datetime.now(dt.UTC)
            return [self._entry(rule, word, detail, t, dest, "dry-run", None, at=at) for t in group]
        try:
            result = command(uids)
        except MailrulesError as exc:
            at = dt.datetime.now(dt.UTC)
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
            return [self._entry(rule, word, detail, t, dest, "failed", str(exc), at=at) for t in group]
        new_uv, mapping = result if isinstance(result, tuple) else (None, {})
        at = dt.datetime.now(dt.UTC)  # the command's moment for all its entries: one row stamp for them
        return self._made(rule, word, detail, dest, group, new_uv, mapping, at)

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
