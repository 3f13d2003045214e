"""`mailrules run` and `mailrules undo`: rules applied to the mail already there, account by account."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from mailrules.config import AccountSettings, Settings
from mailrules.dsl import ast as A
from mailrules.engine.core import (
    AccountContext,
    Engine,
    EngineObserver,
    MailboxReport,
    RunOptions,
    merge_reports,
)
from mailrules.engine.limits import LimitLedger, precount
from mailrules.engine.loops import LoopGuard
from mailrules.errors import ImapError, MailrulesError, StateError
from mailrules.imap.session import ConnectionParams, ImapSession
from mailrules.imap.store import ImapStore
from mailrules.logs import printable
from mailrules.smtp.sender import SmtpParams, SmtpSender
from mailrules.state.models import JournalEntry, UndoFlag, UndoMove
from mailrules.state.store import StateStore, new_run_id

log = logging.getLogger("mailrules.run")


def connection_params(account: AccountSettings) -> ConnectionParams:
    """The IMAP session's parameters from an account's settings (the secret revealed only here)."""
    return ConnectionParams(
        host=account.host,
        port=account.port,
        tls=account.tls,
        username=account.username,
        password=account.password.reveal() if account.password is not None else "",
        ca_file=str(account.ca_file) if account.ca_file else None,
        allow_insecure=account.allow_insecure,
        name=account.name,
    )


def account_context(account: AccountSettings, guard: LoopGuard | None = None) -> AccountContext:
    """What the engine needs of an account: overrides, mailbox creation, an SMTP sender, and the
    loop guard of the run (actions/loops.py; None: a guard with the default limits per pass)."""
    sender = None
    if account.smtp is not None:
        sender = SmtpSender(
            SmtpParams.from_settings(account.smtp, ca_file=str(account.ca_file) if account.ca_file else None)
        )
    return AccountContext(
        account.name,
        archive=account.archive,
        trash=account.trash,
        create_mailboxes=account.create_mailboxes,
        sender=sender,
        guard=guard,
    )


def select_rules(rules: Sequence[A.Rule], names: Sequence[str]) -> list[A.Rule]:
    """`--rule` names (case-insensitive), in rule-set order; without names every rule but `manually`."""
    if not names:
        return [r for r in rules if not isinstance(r.trigger, A.Manually)]
    wanted = {n.casefold() for n in names}
    unknown = wanted - {r.name.casefold() for r in rules}
    if unknown:
        raise MailrulesError(f"no rule named {', '.join(sorted(repr(u) for u in unknown))}")
    return [r for r in rules if r.name.casefold() in wanted]


def mailboxes_of(rules: Sequence[A.Rule], account: str) -> list[str]:
    """The mailboxes the rules look at for this account, in order of first appearance."""
    out: list[str] = []
    for r in rules:
        if r.accounts and account not in r.accounts:
            continue
        for m in r.mailboxes:
            if m not in out:
                out.append(m)
    return out


@dataclass
class RunResult:
    """What a run did, over every account."""

    run_id: str
    reports: list[MailboxReport] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # accounts or mailboxes that could not be processed

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


def format_entry(e: JournalEntry) -> str:
    """The one log line per action (house style 10): rule, account, mailbox, UID, Message-ID, what.

    Every field is escaped again (`printable` changes nothing twice): rows written before the
    engine escaped them may hold a line break a sender chose.
    """
    what = e.action + (
        f" {printable(e.detail)}" if e.detail and e.action in ("tag", "untag", "forward", "redirect") else ""
    )
    if e.destination:
        what += f' to "{printable(e.destination)}"'
    tail = f" ({printable(e.error)})" if e.error else ""
    return (
        f'rule "{printable(e.rule)}" account={e.account} mailbox="{printable(e.mailbox)}" uid={e.uid} '
        f"message-id={printable(e.message_id) or '-'}: {what}: {e.outcome}{tail}"
    )


def log_entry(e: JournalEntry) -> None:
    level = logging.WARNING if e.outcome == "failed" else logging.INFO
    log.log(
        level,
        "%s",
        format_entry(e),
        extra={
            "rule": e.rule,
            "account": e.account,
            "mailbox": e.mailbox,
            "uid": e.uid,
            "message_id": e.message_id,
            "action": e.action,
            "outcome": e.outcome,
            "run_id": e.run_id,
        },
    )


@contextmanager
def open_store(settings: Settings, lock: str | None = None) -> Iterator[StateStore]:
    """The configured state; `lock`: the command that acts on it (daemon, run, undo) takes its
    exclusive lock (StateLocked when another process holds it); readers pass None."""
    store = StateStore.open(settings.state, lock=lock)
    try:
        yield store
    finally:
        store.close()


SessionFactory = Callable[[AccountSettings], ImapSession]


def default_session(account: AccountSettings) -> ImapSession:
    return ImapSession.connect(connection_params(account))


@contextmanager
def _counting_store(connect: SessionFactory, account: AccountSettings) -> Iterator[ImapStore]:
    session = connect(account)
    try:
        yield ImapStore(session)
    finally:
        session.logout()


def run_rules(
    settings: Settings,
    rules: Sequence[A.Rule],
    *,
    accounts: Sequence[str] = (),
    dry_run: bool = False,
    force: bool = False,
    state: StateStore | None = None,
    connect: SessionFactory = default_session,
    trigger: str = "run",
    now: dt.datetime | None = None,
    observer: EngineObserver | None = None,
) -> RunResult:
    """Apply `rules` to the messages already in their mailboxes, for each selected account."""
    now = now or dt.datetime.now(dt.UTC)
    run_id = state.begin_run(trigger, dry_run) if state is not None else new_run_id(now)
    result = RunResult(run_id)
    options = RunOptions(
        now=now,
        tz=settings.timezone,
        run_id=run_id,
        dry_run=dry_run,
        force=force,
        bounds=settings.limits.bounds,
    )
    selected = [a for n, a in settings.accounts.items() if not accounts or n in accounts]
    limits = LimitLedger()
    guard = LoopGuard.from_limits(settings.limits)  # mailboxes created, sends per address: this run's
    if not force:
        by_name = {a.name: a for a in selected}
        precount(
            list(by_name),
            rules,
            now,
            settings.timezone,
            limits,
            lambda n: _counting_store(connect, by_name[n]),
        )
    for acct in selected:
        account_rules = [r for r in rules if not r.accounts or acct.name in r.accounts]
        if not account_rules:
            continue
        try:
            session = connect(acct)
        except MailrulesError as exc:
            result.errors.append(f"account {acct.name}: {exc}")
            log.error("account %s: %s", acct.name, exc)
            continue
        ahead: ImapSession | None = None
        if acct.max_connections >= 2 and len(account_rules) > 1 and not dry_run:
            # A second connection searches and fetches later rules while the first acts
            # (mailrules/engine/prefetch.py); without one, rules are searched one by one.
            try:
                ahead = connect(acct)
            except MailrulesError as exc:
                log.info("account %s: no second connection (%s); searching rule by rule", acct.name, exc)
        try:
            store = ImapStore(session)
            prefetch = ImapStore(ahead) if ahead is not None else None
            engine = Engine(options, journal=state, on_entry=log_entry, observer=observer, limits=limits)
            ctx = account_context(acct, guard)
            for mailbox in mailboxes_of(account_rules, acct.name):
                try:
                    result.reports.append(
                        engine.process(store, ctx, mailbox, account_rules, prefetch=prefetch)
                    )
                except StateError:
                    raise  # the journal cannot be written: act on nothing more (the caller says so)
                except ImapError as exc:
                    result.errors.append(f"account {acct.name} mailbox {mailbox!r}: {exc}")
                    log.error("account %s mailbox %r: %s", acct.name, mailbox, exc)
                    if exc.ends_session:
                        break
                except MailrulesError as exc:
                    result.errors.append(f"account {acct.name} mailbox {mailbox!r}: {exc}")
                    log.error("account %s mailbox %r: %s", acct.name, mailbox, exc)
                except Exception:
                    # A bug of ours: say where, keep the other mailboxes and accounts going, exit 1.
                    log.exception(
                        "account %s mailbox %r: internal error; mailbox skipped", acct.name, mailbox
                    )
                    result.errors.append(f"account {acct.name} mailbox {mailbox!r}: internal error (see log)")
        finally:
            session.logout()
            if ahead is not None:
                ahead.logout()
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
    settings: Settings, state: StateStore, run_id: str, *, connect: SessionFactory = default_session
) -> UndoResult:
    """Move back what run `run_id` moved and restore the flags it changed, from the journal."""
    if state.get_run(run_id) is None:
        raise MailrulesError(f"no run {run_id!r} in the journal (see `mailrules log`)")
    plan = state.undo_plan(run_id)
    if plan.undone_by:
        # A second undo would replay moves and flag changes on messages already put back.
        raise MailrulesError(f"run {run_id} was already undone by {', '.join(plan.undone_by)}")
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
    state.record_many(entries)
    state.end_run(undo_id, {"undo_of": run_id, "undone": result.undone, "errors": result.errors})
    return result


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
            session.store_flags([where.uid], [step.flag], step.add)
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
