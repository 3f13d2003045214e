"""Accounts at work, for `mailrules run` and the daemon alike: sessions, the engine's account context,
each account's rules and mailboxes, the server's check of the mailbox names, and the one walk.

`run` and a scheduled firing of the daemon both hand `walk` the accounts (`Account`, one per
configured account) and the rules; the daemon adds its connection budget (`open_account`) and its
per-mailbox locks (`lock_for`). The arrival watchers connect through the same `Account`.

An `Account` is also where an account's credentials live: a password today; with OAuth2, a token
manager per account, built in `Account.__init__`, read by `connect` and the SMTP sender, and told
by `on_auth_expired` when a server ended or refused a login because the token ran out.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mailrules.bounds import DEFAULT_BOUNDS, Bounds
from mailrules.config import AccountSettings
from mailrules.dsl import ast as A
from mailrules.engine.actions import ALREADY_DONE
from mailrules.engine.core import Engine
from mailrules.engine.limits import LimitLedger, precount
from mailrules.engine.loops import LoopGuard
from mailrules.engine.ports import AccountContext, MailboxReport, MailboxStore
from mailrules.engine.prefetch import StoreOpener
from mailrules.errors import ImapError, MailrulesError, StateError
from mailrules.imap.errors import TokenExpired
from mailrules.imap.names import Namespaces, check_names
from mailrules.imap.session import ConnectionParams, ImapSession
from mailrules.imap.store import ImapStore
from mailrules.logs import printable
from mailrules.oauth.accounts import AccountTokens, TokenManagers, process_tokens
from mailrules.source import Diagnostic, source_line
from mailrules.state.models import JournalEntry

if TYPE_CHECKING:
    from mailrules.smtp.sender import SmtpSender

log = logging.getLogger(__name__)
#: The line per action (`log_entry`), whichever command or trigger did it; the engine's line per
#: rule and mailbox goes to the same logger.
actions_log = logging.getLogger("mailrules.run")

SessionFactory = Callable[[AccountSettings], ImapSession]


def connection_params(account: AccountSettings, tokens: AccountTokens | None = None) -> ConnectionParams:
    """The IMAP session's parameters from an account's settings (the secret revealed only here).
    An OAuth2 account logs in with `tokens` (default: the process's, `process_tokens()`)."""
    if account.oauth2 is not None:
        tokens = tokens or process_tokens().for_account(account)
    elif account.password is None:
        raise ImapError(f"{account.name}: no password to log in with", "permanent")
    return ConnectionParams(
        host=account.host,
        port=account.port,
        tls=account.tls,
        username=account.username,
        password=account.password.reveal() if account.password is not None else "",
        ca_file=str(account.ca_file) if account.ca_file else None,
        allow_insecure=account.allow_insecure,
        timeout=account.idle_timeout_seconds,  # every read waits this long at most (a stall)
        name=account.name,
        tokens=tokens,
    )


def default_session(account: AccountSettings) -> ImapSession:
    """A logged-in session on the account's server."""
    return ImapSession.connect(connection_params(account))


def session_factory(oauth: TokenManagers) -> SessionFactory:
    """Logged-in sessions whose OAuth2 accounts take their tokens from `oauth` (the daemon's, the
    run's: one token manager per account, shared with its SMTP sender and observed)."""

    def connect(account: AccountSettings) -> ImapSession:
        return ImapSession.connect(connection_params(account, oauth.for_account(account)))

    return connect


# -- rules and mailboxes per account --------------------------------------------------------------------


def rules_for(rules: Iterable[A.Rule], account: str) -> list[A.Rule]:
    """The rules in scope for `account` (no `for account`, or one naming it), in rule-set order."""
    return [r for r in rules if not r.accounts or account in r.accounts]


def mailboxes_of(rules: Sequence[A.Rule], account: str) -> list[str]:
    """The mailboxes the rules look at for this account, in order of first appearance."""
    out: list[str] = []
    for r in rules_for(rules, account):
        for m in r.mailboxes:
            if m not in out:
                out.append(m)
    return out


def configured_names(account: AccountSettings) -> list[tuple[str, str]]:
    """(setting, mailbox name) for every mailbox the account's configuration names."""
    where = f"accounts.{account.name}"
    out = [
        (f"{where}.{key}", name)
        for key, name in (("trash", account.trash), ("archive", account.archive))
        if name
    ]
    return out + [(f"{where}.watch", name) for name in account.watch]


def render_problem(d: Diagnostic, account: str, sources: Mapping[str, str] | None = None) -> str:
    """A name problem in the rule errors' format, with the rule's line and a caret when the rule
    file's text is at hand; a configured name (no line) as `accounts.X.trash: error: ...`."""
    message = f"account {account}: {d.message}"
    if d.span.line <= 0:
        return f"{d.span.file}: {d.severity}: {message}"
    text = (sources or {}).get(d.span.file)
    return dataclasses.replace(d, message=message).render(
        source_line(text, d.span.line) if text is not None else None
    )


# -- one account -----------------------------------------------------------------------------------------


@dataclass
class Connection:
    """An account's open connection as the engine uses it; `prefetch` opens (once) a second one
    searching ahead, when a pass is large enough to use it (engine/prefetch.py)."""

    store: MailboxStore
    namespaces: Namespaces = field(default_factory=Namespaces)
    prefetch: StoreOpener | None = None


class _SecondConnection:
    """An account's search-ahead connection: logged in by the first pass that asks for it (in its
    prefetch thread, so the first rule does not wait for the login), kept for the account's later
    passes, logged out with the first connection. A login that fails is not tried again."""

    def __init__(self, account: Account) -> None:
        self._account = account
        self._lock = threading.Lock()  # each pass's prefetch thread asks in turn; never two at once
        self._session: ImapSession | None = None
        self._store: ImapStore | None = None
        self._refused: MailrulesError | None = None

    def store(self) -> MailboxStore:
        with self._lock:
            if self._refused is not None:
                raise self._refused
            if self._store is None:
                try:
                    self._session = self._account.connect()
                except MailrulesError as exc:
                    log.info(
                        "account %s: no second connection (%s); searching rule by rule",
                        self._account.name,
                        exc,
                    )
                    self._refused = exc
                    raise
                self._store = ImapStore(self._session)
            return self._store

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                self._session.logout()


class Account:
    """One configured account as `run` and the daemon use it: how to log in, what the engine needs
    of it (`context`), which names its rules and configuration use, and what a session that ended
    for its credentials means (`session_ended`). Shared by threads: nothing here changes after
    construction."""

    def __init__(
        self,
        settings: AccountSettings,
        connect: SessionFactory = default_session,
        oauth: TokenManagers | None = None,
    ) -> None:
        self.settings = settings
        self._connect = connect
        #: an OAuth2 account's tokens (None: a password), from `oauth` (give `connect` the same:
        #: `session_factory(oauth)`), else the process's
        self.tokens = (oauth or process_tokens()).for_account(settings)
        # Sends open a connection of their own each (smtp/sender.py): one sender serves every thread.
        self.sender: SmtpSender | None = None
        if settings.smtp is not None:
            from mailrules.smtp.sender import SmtpParams, SmtpSender  # only with [smtp]: smtplib, email

            self.sender = SmtpSender(
                SmtpParams.from_settings(
                    settings.smtp,
                    ca_file=str(settings.ca_file) if settings.ca_file else None,
                    tokens=self.tokens,
                )
            )
        #: among daemons sharing the accounts, the engine's check before it acts (daemon/lease_guard.py:
        #: set by the daemon before any thread uses this account); None: no check
        self.lease_check: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return f"Account({self.name!r})"

    @property
    def name(self) -> str:
        return self.settings.name

    def connect(self) -> ImapSession:
        """A new logged-in session (ImapError when the server cannot be reached or refuses)."""
        return self._connect(self.settings)

    def context(self, guard: LoopGuard | None = None) -> AccountContext:
        """What the engine needs of this account: archive/trash overrides, mailbox creation, the
        SMTP sender, and the loop guard of the run or trigger (engine/loops.py; None: defaults)."""
        s = self.settings
        return AccountContext(
            s.name,
            archive=s.archive,
            trash=s.trash,
            create_mailboxes=s.create_mailboxes,
            sender=self.sender,
            guard=guard,
            lease_check=self.lease_check,
        )

    def name_problems(self, namespaces: Namespaces, rules: Iterable[A.Rule]) -> list[Diagnostic]:
        """The names in this account's rules and configuration that cannot exist on its server."""
        return check_names(namespaces, rules_for(rules, self.name), configured_names(self.settings))

    def session_ended(self, error: ImapError) -> None:
        """A session of this account ended with `error`: when its credentials ran out or were
        refused, the next login must use fresh ones (`on_auth_expired`)."""
        if isinstance(error, TokenExpired) or error.kind == "auth":
            try:
                self.on_auth_expired(error)
            except Exception:  # a refresh that fails shows at the next login, with its own error
                log.exception("account %s: renewing the credentials failed", self.name)

    def on_auth_expired(self, error: ImapError) -> None:
        """The server ended a session because its access token expired (TokenExpired), or refused
        the login (kind "auth"). A password has nothing to renew: the next login uses it again.
        An OAuth2 account's next login refreshes the token first after a TokenExpired (a refused
        login was refreshed and tried again already, imap/session.py)."""
        if self.tokens is not None and isinstance(error, TokenExpired):
            log.info(
                "account %s: the server ended a session, its access token expired; the next "
                "login refreshes it",
                self.name,
            )
            self.tokens.expired()
            return
        log.debug(
            "account %s: login ended or refused (%s); a password is used as configured", self.name, error
        )

    @contextmanager
    def open(self, *, prefetch: bool = False) -> Iterator[Connection]:
        """A connection for the time of the block, logged out after; `prefetch`: also a second one
        when the budget allows, opened only if a pass uses it (a failure there only means searching
        rule by rule)."""
        session = self.connect()
        ahead = _SecondConnection(self) if prefetch and self.settings.max_connections >= 2 else None
        try:
            yield Connection(
                ImapStore(session), session.namespaces, ahead.store if ahead is not None else None
            )
        finally:
            session.logout()
            if ahead is not None:
                ahead.close()


def build_accounts(
    accounts: Iterable[AccountSettings],
    connect: SessionFactory = default_session,
    oauth: TokenManagers | None = None,
) -> list[Account]:
    """An Account for each of `accounts`, all connecting through `connect` (OAuth2: with `oauth`)."""
    return [Account(a, connect, oauth) for a in accounts]


# -- the walk --------------------------------------------------------------------------------------------

#: (account, prefetch wanted) -> an open connection for the block (Account.open, or the daemon's
#: within its connection budget).
Opener = Callable[[Account, bool], AbstractContextManager[Connection]]


def _open(account: Account, prefetch: bool) -> AbstractContextManager[Connection]:
    return account.open(prefetch=prefetch)


@dataclass
class WalkResult:
    """What a walk did: a report per mailbox pass, an error line per account or mailbox that could
    not be done, and the rules those errors kept from running everywhere."""

    reports: list[MailboxReport] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    failed_rules: set[str] = field(default_factory=set)

    def fail(self, where: str, why: object, rules: Iterable[A.Rule]) -> None:
        self.errors.append(f"{where}: {why}")
        self.failed_rules.update(r.name for r in rules)


def walk(
    accounts: Iterable[Account],
    rules: Sequence[A.Rule],
    engine: Callable[[], Engine],
    *,
    guard: LoopGuard | None = None,
    prefetch: bool = False,
    open_account: Opener = _open,
    lock_for: Callable[[str, str], AbstractContextManager[Any]] | None = None,
    sources: Mapping[str, str] | None = None,
    label: str = "",
) -> WalkResult:
    """Apply `rules` to the mail already in their mailboxes, account by account (`mailrules run`,
    a scheduled firing).

    Per account: connect (a failure is the account's error; `engine()` is made per account), check
    the mailbox names its rules and configuration use against the server (any problem: the account
    is skipped before anything moves), then each mailbox its rules name, in order of first
    appearance, under `lock_for(account, mailbox)`. A mailbox that fails is an error and the next
    one is tried, unless the failure ended the session (kind "reconnect" or "auth"): the account
    ends there. A StateError stops the walk (the journal cannot say what was done). `label`
    prefixes the log lines ("schedule nightly").
    """
    result = WalkResult()
    prefix = f"{label}: " if label else ""
    for account in accounts:
        mine = rules_for(rules, account.name)
        if not mine:
            continue
        try:
            with open_account(account, prefetch and len(mine) > 1) as conn:
                problems = account.name_problems(conn.namespaces, mine)
                if problems:
                    _refuse(account, problems, mine, result, sources, prefix)
                    continue
                _walk_account(account, conn, mine, engine(), guard, lock_for, result, prefix)
        except StateError:
            raise
        except MailrulesError as exc:  # no connection (or none within the daemon's budget)
            log.error("%saccount %s: %s", prefix, account.name, exc)
            result.fail(f"account {account.name}", exc, mine)
            if isinstance(exc, ImapError):
                account.session_ended(exc)
    return result


def _refuse(
    account: Account,
    problems: list[Diagnostic],
    rules: list[A.Rule],
    result: WalkResult,
    sources: Mapping[str, str] | None,
    prefix: str,
) -> None:
    """The account is left alone: each name its server cannot have is an error line."""
    log.error(
        "%saccount %s: not run: mailbox names this server cannot have:\n%s",
        prefix,
        account.name,
        "\n".join(render_problem(d, account.name, sources) for d in problems),
    )
    for d in problems:
        where = d.span.file if d.span.line <= 0 else str(d.span)
        result.fail(f"account {account.name}", f"{where}: {d.message}", rules)


def _walk_account(
    account: Account,
    conn: Connection,
    rules: list[A.Rule],
    engine: Engine,
    guard: LoopGuard | None,
    lock_for: Callable[[str, str], AbstractContextManager[Any]] | None,
    result: WalkResult,
    prefix: str,
) -> None:
    ctx = account.context(guard)
    for mailbox in mailboxes_of(rules, account.name):
        here = [r for r in rules if r.applies_to(account.name, mailbox)]
        where = f"account {account.name} mailbox {mailbox!r}"
        try:
            with lock_for(account.name, mailbox) if lock_for is not None else nullcontext():
                result.reports.append(engine.process(conn.store, ctx, mailbox, rules, prefetch=conn.prefetch))
        except StateError:
            raise
        except ImapError as exc:
            log.error("%s%s: %s", prefix, where, exc)
            result.fail(where, exc, here)
            if exc.ends_session:  # this connection is gone: what is left of the account waits
                account.session_ended(exc)
                break
        except MailrulesError as exc:
            log.error("%s%s: %s", prefix, where, exc)
            result.fail(where, exc, here)
        except Exception:
            # A bug of ours: say where, keep the other mailboxes and accounts going.
            log.exception("%s%s: internal error; mailbox skipped", prefix, where)
            result.fail(where, "internal error (see log)", here)


def count_limits(
    accounts: Sequence[Account],
    rules: Sequence[A.Rule],
    now: dt.datetime,
    tz: dt.tzinfo,
    ledger: LimitLedger,
    open_account: Opener = _open,
    *,
    bounds: Bounds = DEFAULT_BOUNDS,
) -> None:
    """Before a walk: count the matches of each `limit` rule the walk looks at in more than one
    pass (engine/limits.py), each account on a connection of its own from `open_account`, each
    message within the run's `[limits]` bounds."""
    by_name = {a.name: a for a in accounts}

    @contextmanager
    def store_of(name: str) -> Iterator[MailboxStore]:
        with open_account(by_name[name], False) as conn:
            yield conn.store

    precount(list(by_name), rules, now, tz, ledger, store_of, bounds=bounds)


# -- the line per action ---------------------------------------------------------------------------------


def format_entry(e: JournalEntry) -> str:
    """The log line of one action on one message: rule, account, mailbox, UID, Message-ID, what.

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
    """The engine's `on_entry`: the action's line, with its fields for the JSON log.

    House style 10: the engine logs one line per rule and mailbox at INFO (engine/core.py), so an
    action done, or found already done, is a DEBUG line (the journal keeps every one: `mailrules
    log`); what a reader must see message by message stays INFO (a dry run's, a send held back by
    the journal or the loop guard, a move into the mailbox read); a failure is a WARNING.
    """
    if e.outcome == "failed":
        level = logging.WARNING
    elif e.outcome == "ok" or (e.outcome == "skipped" and e.error in ALREADY_DONE):
        level = logging.DEBUG
    else:
        level = logging.INFO
    if not actions_log.isEnabledFor(level):
        return  # one record per message and action: 10% of a 20,000-message run when built
    actions_log.log(
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
