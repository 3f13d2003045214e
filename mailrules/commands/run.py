"""`mailrules run` and `mailrules undo`: rules applied to the mail already there, account by account."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from mailrules.accounts import (
    SessionFactory,
    build_accounts,
    count_limits,
    default_session,
    log_entry,
    session_factory,
    walk,
)
from mailrules.cliexit import run_collector
from mailrules.config import Settings
from mailrules.dsl import ast as A
from mailrules.engine.core import Engine, merge_reports
from mailrules.engine.flagpass import MarkedOwnChanges
from mailrules.engine.limits import LimitLedger
from mailrules.engine.loops import LoopGuard
from mailrules.engine.ports import EngineObserver, MailboxReport, RunOptions
from mailrules.errors import MailrulesError
from mailrules.imap.modseq import recording
from mailrules.imap.session import ImapSession
from mailrules.imap.store import ImapStore
from mailrules.logs import printable
from mailrules.oauth.accounts import TokenManagers, process_tokens
from mailrules.oauth.shared import stores_of
from mailrules.state.claims import claim_accounts
from mailrules.state.factory import open_state
from mailrules.state.interface import State
from mailrules.state.keys import new_run_id
from mailrules.state.models import JournalEntry, UndoFlag, UndoMove


def select_rules(rules: Sequence[A.Rule], names: Sequence[str]) -> list[A.Rule]:
    """`--rule` names (case-insensitive; a group's name: its rules), in rule-set order; without
    names every rule but `manually`."""
    if not names:
        return [r for r in rules if not isinstance(r.trigger, A.Manually)]
    wanted = {n.casefold() for n in names}
    groups = {r.group.casefold() for r in rules if r.group is not None}
    unknown = wanted - {r.name.casefold() for r in rules} - groups
    if unknown:
        raise MailrulesError(f"no rule named {', '.join(sorted(repr(u) for u in unknown))}")
    return [r for r in rules if r.name.casefold() in wanted or (r.group or "").casefold() in wanted]


@dataclass
class RunResult:
    """What a run did, over every account."""

    run_id: str
    reports: list[MailboxReport] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # accounts or mailboxes that could not be processed
    #: OAuth2 accounts stopped until `mailrules auth login ACCOUNT`, and why (exit code 78)
    login_required: dict[str, str] = field(default_factory=dict)

    @property
    def failed_actions(self) -> int:
        return sum(r.failed for r in self.reports)

    @property
    def limited(self) -> list[str]:
        """Rules that acted on nothing because they matched more than their `limit`."""
        return sorted({rr.rule for r in self.reports for rr in r.rules if rr.limited})

    @property
    def ok(self) -> bool:
        """No error, no failed action, no rule stopped by its limit (exit code 0)."""
        return not self.errors and not self.failed_actions and not self.limited

    def summary(self) -> dict[str, dict[str, int]]:
        return merge_reports(self.reports)


@contextmanager
def open_store(
    settings: Settings, lock: str | None = None, claim: Sequence[str] | None = None
) -> Iterator[State]:
    """The configured state; `lock`: the command that acts on it (daemon, run, undo) takes its
    exclusive lock (StateLocked when another process holds it); readers pass None. `claim`: the
    accounts the command acts on, taken from the daemons sharing a PostgreSQL state for as long
    as the block runs (state/claims.py; nothing more on SQLite, whose lock is enough)."""
    store = open_state(settings, lock=lock)
    try:
        if claim is None:
            yield store
        else:
            with claim_accounts(store, settings, claim, lock or "mailrules") as fenced:
                yield fenced
    finally:
        store.close()


def run_rules(
    settings: Settings,
    rules: Sequence[A.Rule],
    *,
    accounts: Sequence[str] = (),
    dry_run: bool = False,
    force: bool = False,
    state: State | None = None,
    connect: SessionFactory | None = None,
    trigger: str = "run",
    now: dt.datetime | None = None,
    observer: EngineObserver | None = None,
    sources: dict[str, str] | None = None,
    oauth: TokenManagers | None = None,
) -> RunResult:
    """Apply `rules` to the messages already in their mailboxes, for each selected account.

    The walk (mailrules/accounts.py) skips an account whose rules or configuration name a mailbox
    its server cannot have, and reports each such name as an error (exit 1); `sources` (the rule
    files' text) puts the rule's line under each in the log. OAuth2 accounts take their tokens
    from `oauth` (default: the run's own), through `connect` (default: `session_factory(oauth)`).
    """
    run_collector()  # in a `run` process of its own: fewer young collections (cliexit.py)
    oauth = oauth or TokenManagers()
    if state is not None and oauth.stores is None:  # a PostgreSQL state keeps the daemons' tokens
        oauth.stores = stores_of(state)
    connect = connect or session_factory(oauth)
    if state is not None and not dry_run:  # the daemon's `on flag change` never runs on our STOREs
        connect = recording(connect, MarkedOwnChanges(state.note_own_changes, state.get_flag_mark))
    now = now or dt.datetime.now(dt.UTC)
    run_id = state.begin_run(trigger, dry_run) if state is not None else new_run_id(now)
    options = RunOptions(
        now=now,
        tz=settings.timezone,
        run_id=run_id,
        dry_run=dry_run,
        force=force,
        bounds=settings.limits.bounds,
    )
    selected = build_accounts(
        [a for n, a in settings.accounts.items() if not accounts or n in accounts], connect, oauth
    )
    limits = LimitLedger()
    guard = LoopGuard.from_limits(settings.limits)  # mailboxes created, sends per address: this run's
    if not force:
        count_limits(selected, rules, now, settings.timezone, limits, bounds=settings.limits.bounds)
    done = walk(
        selected,
        rules,
        lambda: Engine(options, journal=state, on_entry=log_entry, observer=observer, limits=limits),
        guard=guard,
        # A second connection searches and fetches later rules while the first acts
        # (engine/prefetch.py); a dry run acts on nothing, so there is nothing to overlap.
        prefetch=not dry_run,
        sources=sources,
    )
    result = RunResult(run_id, done.reports, done.errors, oauth.login_required())
    if state is not None:
        state.end_run(run_id, {"rules": result.summary(), "errors": result.errors})
    return result


def format_summary(result: RunResult, dry_run: bool = False) -> str:
    """Per rule: how many messages matched and what was done to them."""
    lines = [f"run {result.run_id}{' (dry run: nothing was changed)' if dry_run else ''}"]
    summary = result.summary()
    width = max((len(n) for n in summary), default=4) + 2
    for name, counts in summary.items():
        parts = [f"{k} {v}" for k, v in sorted(counts.items()) if k not in ("matched", "limited") and v]
        limited = " LIMIT EXCEEDED: nothing done" if counts.get("limited") else ""
        quoted = f'"{name}"'
        done = "  " + ", ".join(parts) if parts else ""
        lines.append(f"  {quoted:<{width}} matched {counts.get('matched', 0):>5}{done}{limited}")
    for r in result.reports:
        if r.skipped_messages:
            lines.append(f"  {r.account}/{r.mailbox}: {r.skipped_messages} message(s) skipped (see log)")
    for e in result.errors:
        lines.append(f"  error: {printable(e)}")
    tail = f"{result.failed_actions} failed actions, {len(result.errors)} errors"
    if result.limited:
        tail += f", {len(result.limited)} rule(s) stopped by their limit (see above; --force to act)"
    lines.append(tail)
    return "\n".join(lines)


@dataclass
class UndoResult:
    """What undoing a run did, and what it refused."""

    run_id: str
    undone: int = 0
    refused: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def undo_run(
    settings: Settings, state: State, run_id: str, *, connect: SessionFactory = default_session
) -> UndoResult:
    """Move back what run `run_id` moved and restore the flags it changed, from the journal."""
    if process_tokens().stores is None:  # its sessions' tokens: a PostgreSQL state keeps the daemons'
        process_tokens().stores = stores_of(state)
    if state.get_run(run_id) is None:
        raise MailrulesError(f"no run {run_id!r} in the journal (see `mailrules log`)")
    plan = state.undo_plan(run_id)
    if plan.undone_by:
        # A second undo would replay moves and flag changes on messages already put back.
        raise MailrulesError(f"run {run_id} was already undone by {', '.join(plan.undone_by)}")
    # What the undo puts back is mailrules' own change: no flag-change rule reacts to it.
    connect = recording(connect, MarkedOwnChanges(state.note_own_changes, state.get_flag_mark))
    undo_id = state.begin_run("undo", False)
    result = UndoResult(undo_id)
    result.refused = [
        f"{r.journal.rule}: {r.journal.action} of uid {r.journal.uid} in {r.journal.mailbox}: {r.reason}"
        for r in plan.refused
    ]
    by_account: dict[str, list[UndoFlag | UndoMove]] = {}
    steps: list[UndoFlag | UndoMove] = [*plan.flags, *plan.moves]  # flags first, then moves back
    for step in steps:
        where = step.where if isinstance(step, UndoFlag) else step.source
        by_account.setdefault(where.account, []).append(step)
    known = [name for name in by_account if name in settings.accounts]
    # Beside daemons sharing a PostgreSQL state: the accounts are taken from them meanwhile
    # (StateLocked when they cannot be); the undo's journal rows carry the leases' tokens.
    with claim_accounts(state, settings, known, "mailrules undo") as fenced:
        entries = _undo_accounts(settings, by_account, undo_id, result, connect)
        fenced.record_many(entries)
    state.end_run(undo_id, {"undo_of": run_id, "undone": result.undone, "errors": result.errors})
    return result


def _undo_accounts(
    settings: Settings,
    by_account: dict[str, list[UndoFlag | UndoMove]],
    undo_id: str,
    result: UndoResult,
    connect: SessionFactory,
) -> list[JournalEntry]:
    entries: list[JournalEntry] = []
    now = dt.datetime.now(dt.UTC)
    for name, account_steps in by_account.items():
        acct = settings.accounts.get(name)
        if acct is None:
            result.errors.append(f"account {name!r} is no longer configured")
            continue
        try:
            session = connect(acct)
        except MailrulesError as exc:
            result.errors.append(f"account {name}: {exc}")
            continue
        try:
            entries += [_undo_step(session, step, undo_id, now, result) for step in account_steps]
        finally:
            session.logout()
    return entries


def _undo_step(
    session: ImapSession, step: UndoFlag | UndoMove, undo_id: str, now: dt.datetime, result: UndoResult
) -> JournalEntry:
    where = step.where if isinstance(step, UndoFlag) else step.source
    j = step.journal
    outcome, error, dest, new_uid = "ok", None, None, None
    try:
        info = session.select(where.mailbox)
        if where.uidvalidity is not None and info.uidvalidity != where.uidvalidity:
            raise MailrulesError(
                f"UIDVALIDITY of {where.mailbox!r} changed since the run: the recorded UID means nothing now"
            )
        if isinstance(step, UndoFlag):
            # through the store: on Gmail a label (a tag, the \Inbox an archive removed) is
            # set with X-GM-LABELS, not as a flag
            ImapStore(session).store_flags([where.uid], [step.flag], step.add)
            action = f"undo {j.action}"
        else:
            dest = step.target
            new_uid = session.move([where.uid], step.target, create=True).get(where.uid)
            action = f"undo {j.action}"
        result.undone += 1
    except MailrulesError as exc:
        outcome, error = "failed", str(exc)
        action = f"undo {j.action}"
        result.errors.append(f"{j.rule}: uid {where.uid} in {where.mailbox}: {exc}")
    return JournalEntry(
        run_id=undo_id,
        rule=j.rule,
        rule_span=j.rule_span,
        account=where.account,
        mailbox=where.mailbox,
        uidvalidity=where.uidvalidity or 0,
        uid=where.uid,
        message_id=j.message_id,
        action=action,
        detail=j.detail,
        destination=dest,
        new_uidvalidity=None,
        new_uid=new_uid,
        outcome=outcome,  # type: ignore[arg-type]
        error=error,
        at=now,
    )
