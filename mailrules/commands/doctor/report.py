"""`mailrules doctor`: per account, the checks an administrator does by hand, in one table with timings."""

from __future__ import annotations

import dataclasses
import json
import smtplib
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from mailrules.commands.doctor.net import (
    Clock,
    Endpoint,
    NoGreeting,
    PlaintextRefused,
    SockAddr,
    connect_first,
    describe_tls,
    diagnose,
    imap_starttls,
    insecure_context,
    resolve,
    show_address,
)
from mailrules.commands.run import connection_params, mailboxes_of
from mailrules.config import AccountSettings, Settings, SmtpSettings
from mailrules.dsl import ast as A
from mailrules.errors import ConfigError, MailrulesError
from mailrules.imap.commands import MailboxInfo
from mailrules.imap.session import ImapSession
from mailrules.imap.special_use import attributes_to_uses, names_to_uses
from mailrules.redact import redact
from mailrules.smtp.sender import SmtpParams, SmtpSender
from mailrules.state.health import check_state
from mailrules.tls import ssl_context

Status = Literal["OK", "WARN", "FAIL", "INFO", "SKIP"]

#: The capabilities mailrules uses, and what it does when one is absent (`{poll}`: poll_interval).
CAPABILITIES: dict[str, str] = {
    "IDLE": "no push: new mail is found by polling every {poll} s",
    "MOVE": "moves are COPY + \\Deleted + UID EXPUNGE",
    "UIDPLUS": "no UID EXPUNGE: `delete permanently` is refused; without MOVE, moved originals stay "
    "flagged \\Deleted",
    "CONDSTORE": "flag changes are found by re-reading FLAGS",
    "ESEARCH": "plain SEARCH: one long `* SEARCH` line on big mailboxes",
    "WITHIN": "ages are searched by day (SINCE/BEFORE) and refined locally",
    "SPECIAL-USE": "archive and trash are found by name (Archive, Trash, ...) unless configured",
    "NOTIFY": "each watched mailbox keeps its own IDLE connection (within max_connections)",
}
EXPIRY_WARN_DAYS = 1


@dataclass
class Check:
    """One row: what was checked, how it went, how long it took, and what to do about a failure."""

    check: str
    status: Status
    result: str
    ms: float | None = None
    hint: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class AccountReport:
    """Every check of one account, in the order they ran."""

    name: str
    target: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.status != "FAIL" for c in self.checks)


@dataclass
class Report:
    """The whole diagnosis: configuration and rules first, then one section per account."""

    general: list[Check] = field(default_factory=list)
    accounts: list[AccountReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.status != "FAIL" for c in self.general) and all(a.ok for a in self.accounts)


# -- running --------------------------------------------------------------------------------------


def run_doctor(settings: Settings, *, accounts: Sequence[str] = (), timeout: float = 10.0) -> Report:
    """Check the rules, then every (selected) account: IMAP from DNS to mailboxes, and SMTP when set."""
    from mailrules.dsl.loader import load_rule_set

    report = Report()
    report.general.append(Check("config", "OK", str(settings.config_path)))
    report.general += [Check("config warning", "WARN", w) for w in settings.warnings]
    clock = Clock()
    loaded = load_rule_set(settings.rules)
    rules: list[A.Rule] | None = list(loaded.rule_set.rules)
    if loaded.ok:
        n = len(loaded.rule_set.rules)
        report.general.append(Check("rules", "OK", f"{n} rules from {settings.rules}", clock.ms()))
    else:
        rules = None
        report.general.append(Check(
            "rules", "FAIL", f"{len(loaded.errors)} errors in {settings.rules}", clock.ms(),
            f"run `mailrules check {settings.rules}` to see them; mailbox checks are skipped",
        ))
    report.general += [Check(f.check, f.status, f.result, None, f.hint) for f in check_state(settings.state)]
    for name, account in settings.accounts.items():
        if accounts and name not in accounts:
            continue
        report.accounts.append(check_account(account, rules, timeout=timeout))
    return report


def check_account(
    account: AccountSettings, rules: list[A.Rule] | None, *, timeout: float = 10.0
) -> AccountReport:
    """IMAP: DNS, TCP, TLS, login, capabilities, archive/trash, rule mailboxes; then SMTP."""
    target = f"{account.username}@{account.host}:{account.port}, tls = {account.tls}"
    out = AccountReport(account.name, target)
    secrets = tuple(s.reveal() for s in (account.password, account.smtp and account.smtp.password) if s)
    mine = [r for r in rules or () if not r.accounts or account.name in r.accounts]
    _imap_checks(account, mine if rules is not None else None, timeout, out.checks)
    _smtp_checks(account, mine, timeout, out.checks)
    for c in out.checks:  # belt and braces: nothing a server echoed may show a password
        c.result, c.hint = redact(c.result, secrets), redact(c.hint, secrets)
    return out


def _fail(name: str, exc: BaseException, ep: Endpoint, clock: Clock, status: Status = "FAIL") -> Check:
    result, hint = diagnose(exc, ep)
    return Check(name, status, result, clock.ms(), hint, {"error": type(exc).__name__})


def _dns_tcp(
    ep: Endpoint, prefix: str, timeout: float, rows: list[Check], bad: Status
) -> tuple[Any, SockAddr] | None:
    """The DNS and TCP rows; the connected socket (the caller closes it) or None when either failed."""
    clock = Clock()
    try:
        addresses = resolve(ep.host, ep.port)
    except OSError as exc:
        rows.append(_fail(f"{prefix}DNS", exc, ep, clock, bad))
        return None
    shown = ", ".join(str(a[1][0]) for a in addresses)
    rows.append(Check(f"{prefix}DNS", "OK", f"{ep.host} -> {shown}", clock.ms(), details={"found": shown}))
    clock = Clock()
    try:
        sock, sockaddr = connect_first(addresses, timeout)
    except OSError as exc:
        rows.append(_fail(f"{prefix}TCP connect", exc, ep, clock, bad))
        return None
    rows.append(Check(f"{prefix}TCP connect", "OK", show_address(sockaddr), clock.ms()))
    return sock, sockaddr


#: Opens a TLS connection with the given context -> (the TLS socket, a function that closes it all).
TlsOpener = Callable[[ssl.SSLContext], tuple[ssl.SSLSocket, Callable[[], None]]]


def _tls_row(name: str, host: str, open_tls: TlsOpener, ctx: ssl.SSLContext, ep: Endpoint, bad: Status
             ) -> Check:
    """Run `open_tls(ctx)` -> (SSLSocket, close); on a certificate failure look again without verifying."""
    clock = Clock()
    try:
        sock, close = open_tls(ctx)
    except ssl.SSLCertVerificationError as exc:
        row = _fail(name, exc, ep, clock, bad)
        try:
            sock, close = open_tls(insecure_context())
            try:
                line, info = describe_tls(sock, host, verified=False)
            finally:
                close()
            row.result += f" | the server presented (NOT verified, for diagnosis only): {line}"
            row.details.update(info)
        except (OSError, MailrulesError, smtplib.SMTPException) as again:
            row.result += f" | a second, non-verifying look failed too: {again}"
        return row
    except (OSError, MailrulesError, smtplib.SMTPException) as exc:
        return _fail(name, exc, ep, clock, bad)
    try:
        line, info = describe_tls(sock, host, verified=True)
    finally:
        close()
    ms = clock.ms()
    days = info.get("days_left")
    if days is not None and days < EXPIRY_WARN_DAYS:
        return Check(name, "WARN", line, ms, "the certificate expires within a day: renew it", info)
    return Check(name, "OK", line, ms, details=info)


# -- IMAP -----------------------------------------------------------------------------------------


def _imap_checks(
    account: AccountSettings, rules: list[A.Rule] | None, timeout: float, rows: list[Check]
) -> None:
    source = account.password.source
    ep = Endpoint("IMAP", account.host, account.port, account.tls, account.username, source)
    if account.tls == "none" and not account.allow_insecure:
        rows.append(_fail("TLS", PlaintextRefused("tls = none"), ep, Clock()))
        rows.append(Check("login", "SKIP", "not attempted: the password would travel unencrypted"))
        return
    connected = _dns_tcp(ep, "", timeout, rows, "FAIL")
    if connected is None:
        rows.append(Check("login", "SKIP", "not attempted: no connection"))
        return
    sock, sockaddr = connected
    spare = [sock]  # the first handshake uses the socket the TCP row opened
    if account.tls == "none":
        sock.close()
        rows.append(Check("TLS", "WARN", "none: plaintext (allowed by allow_insecure)", 0.0,
                          'use tls = "starttls" or "implicit" unless this is loopback or a trusted network'))
    else:
        clock = Clock()
        try:
            ctx = ssl_context(str(account.ca_file) if account.ca_file else None)
        except (OSError, ssl.SSLError) as exc:
            sock.close()
            rows.append(Check("TLS", "FAIL", f"cannot read ca_file {account.ca_file}: {exc}", clock.ms(),
                              "ca_file must name a readable PEM file with the CA certificate"))
            rows.append(Check("login", "SKIP", "not attempted: no TLS"))
            return

        def open_tls(context: ssl.SSLContext) -> tuple[ssl.SSLSocket, Callable[[], None]]:
            raw = spare.pop() if spare else connect_first([(sock.family, sockaddr)], timeout)[0]
            try:
                if account.tls == "starttls":
                    imap_starttls(raw, min(timeout, 5.0))
                tls = context.wrap_socket(raw, server_hostname=account.host)
            except BaseException:
                raw.close()
                raise
            return tls, tls.close

        tls_row = _tls_row("TLS handshake", account.host, open_tls, ctx, ep, "FAIL")
        rows.append(tls_row)
        if tls_row.status == "FAIL":
            rows.append(Check("login", "SKIP", "not attempted: TLS failed"))
            return
    clock = Clock()
    try:
        session = ImapSession.connect(dataclasses.replace(connection_params(account), timeout=timeout))
    except MailrulesError as exc:
        rows.append(_fail("login", exc, ep, clock))
        return
    try:
        rows.append(Check("login", "OK", f"logged in as {account.username}", clock.ms()))
        _capabilities(session, account, rows)
        _mailboxes(session, account, rules, rows)
    except MailrulesError as exc:
        rows.append(_fail("after login", exc, ep, clock))
    finally:
        session.logout()


def _capabilities(session: ImapSession, account: AccountSettings, rows: list[Check]) -> None:
    caps = sorted(session.capabilities)
    rows.append(Check("capabilities", "OK", f"{len(caps)} advertised after login", details={"all": caps}))
    for cap, without in CAPABILITIES.items():
        if session.has(cap):
            rows.append(Check(f"capability {cap}", "OK", "present"))
            continue
        text = without.format(poll=f"{account.poll_interval:g}")
        if cap == "MOVE" and not session.has("UIDPLUS"):
            text = "moves are COPY + \\Deleted; without UIDPLUS the originals stay, flagged \\Deleted"
        degraded = cap == "UIDPLUS" or (cap == "MOVE" and not session.has("UIDPLUS"))
        status: Status = "WARN" if degraded else "INFO"
        rows.append(Check(f"capability {cap}", status, f"absent: {text}"))


def _exists(name: str, listing: list[MailboxInfo]) -> bool:
    def norm(n: str) -> str:
        return "INBOX" if n.upper() == "INBOX" else n

    selectable = {norm(b.name) for b in listing if not any(f.lower() == "\\noselect" for f in b.flags)}
    return norm(name) in selectable


def _mailboxes(
    session: ImapSession, account: AccountSettings, rules: list[A.Rule] | None, rows: list[Check]
) -> None:
    clock = Clock()
    listing = session.list_mailboxes()
    special = session.special_use()
    by_attr, by_name = attributes_to_uses(listing), names_to_uses(listing, {})
    rows.append(Check("LIST", "OK", f"{len(listing)} mailboxes", clock.ms()))
    actions = [a for r in rules or () for a in r.actions]
    uses = (
        ("archive", "\\Archive", account.archive, "Archive", any(isinstance(a, A.Archive) and a.dest is None
                                                                 for a in actions)),
        ("trash", "\\Trash", account.trash, "Trash", any(isinstance(a, A.Delete) and not a.permanently
                                                         for a in actions)),
    )
    for word, use, override, default, needed in uses:
        if override:
            name, how = override, "config override"
        elif use in special:
            name = special[use]
            from_attr = by_attr.get(use) == name or by_name.get(use) != name
            how = "SPECIAL-USE" if from_attr else "name fallback (no SPECIAL-USE mark)"
        else:
            name, how = default, "default name (neither SPECIAL-USE nor a known name found)"
        rows.append(_box_row(word, name, how, listing, account, needed, destination=True))
    if rules is None:
        return
    sources = {b: "rules read it" for b in mailboxes_of(rules, account.name)}
    for box in account.watch:
        sources.setdefault(box, "watched")
    for box, how in sources.items():
        rows.append(_box_row(f"mailbox {box!r}", box, how, listing, account, True, False))
    templates: dict[str, A.Template] = {}
    for a in actions:
        if isinstance(a, A.Move | A.Copy | A.Archive) and a.dest is not None:
            templates.setdefault(a.dest.raw, a.dest)
    for raw, tpl in templates.items():
        if tpl.is_literal:
            rows.append(_box_row(f"mailbox {raw!r}", raw, "rules file into it", listing, account, True, True))
        elif account.create_mailboxes:
            rows.append(Check(f"mailbox {raw!r}", "INFO", "named per message: created when first needed"))
        else:
            rows.append(Check(f"mailbox {raw!r}", "WARN", "named per message: must already exist",
                              hint="create_mailboxes = false: a missing one makes the action fail"))


def _box_row(
    label: str, name: str, how: str, listing: list[MailboxInfo], account: AccountSettings, needed: bool,
    destination: bool,
) -> Check:
    details = {"mailbox": name, "source": how}
    if _exists(name, listing):
        return Check(label, "OK", f"{name!r} exists ({how})", details=details)
    if destination and account.create_mailboxes:
        return Check(label, "OK" if needed else "INFO", f"{name!r} will be created when first used ({how})",
                     details=details)
    if not needed:
        return Check(label, "INFO", f"{name!r} does not exist ({how}); no rule uses it", details=details)
    if destination:
        hint = f"create {name!r} on the server, or set create_mailboxes = true"
    else:
        hint = f"create {name!r} on the server, or fix the rule's `in` clause (or `watch`)"
    return Check(label, "FAIL", f"{name!r} does not exist ({how})", hint=hint, details=details)


# -- SMTP -----------------------------------------------------------------------------------------


def _smtp_checks(account: AccountSettings, rules: list[A.Rule], timeout: float, rows: list[Check]) -> None:
    users = sorted({r.name for r in rules for a in r.actions if isinstance(a, A.Forward | A.Redirect)})
    s = account.smtp
    if s is None:
        if users:
            table = f"[accounts.{account.name}.smtp]"
            rows.append(Check("SMTP", "FAIL", f"no {table}, but rules forward or redirect: "
                              + ", ".join(repr(u) for u in users),
                              hint=f"add an {table} table (host, port, tls, username, ...)"))
        else:
            rows.append(Check("SMTP", "INFO", "not configured (no rule forwards or redirects)"))
        return
    # A broken SMTP that no rule uses does not fail the diagnosis.
    bad: Status = "FAIL" if users else "WARN"
    source = s.password.source if s.password is not None else ""
    ep = Endpoint("SMTP", s.host, s.port, s.tls, s.username, source)
    ca = str(account.ca_file) if account.ca_file else None
    try:
        params = SmtpParams.from_settings(s, ca_file=ca, timeout=timeout)
    except ConfigError as exc:
        if s.tls == "none" and not s.allow_insecure:
            rows.append(_fail("SMTP TLS", PlaintextRefused(str(exc)), ep, Clock(), bad))
        else:
            rows.append(Check("SMTP settings", bad, str(exc), hint="fix the [smtp] table"))
        return
    connected = _dns_tcp(ep, "SMTP ", timeout, rows, bad)
    if connected is None:
        return
    connected[0].close()
    # the very context forward/redirect use (system CAs, or only ca_file when set)
    _smtp_session(s, SmtpSender(params)._tls_context(), ep, timeout, bad, rows)


def _smtp_open(s: SmtpSettings, ctx: ssl.SSLContext | None, timeout: float) -> smtplib.SMTP:
    """Connected, greeted, EHLO sent, TLS on (implicit or STARTTLS) when ctx is given."""
    try:
        if s.tls == "implicit":
            conn: smtplib.SMTP = smtplib.SMTP_SSL(s.host, s.port, timeout=timeout, context=ctx)
        else:
            conn = smtplib.SMTP(s.host, s.port, timeout=timeout)
    except (smtplib.SMTPServerDisconnected, TimeoutError) as exc:
        if s.tls == "implicit":
            raise
        raise NoGreeting(f"no greeting within {timeout:g} s ({exc})") from exc
    try:
        conn.ehlo()
        if s.tls == "starttls" and ctx is not None:
            conn.starttls(context=ctx)
            conn.ehlo()
    except BaseException:
        conn.close()
        raise
    return conn


def _smtp_session(
    s: SmtpSettings, ctx: ssl.SSLContext, ep: Endpoint, timeout: float, bad: Status, rows: list[Check]
) -> None:
    errors = (OSError, MailrulesError, smtplib.SMTPException)

    def open_tls(context: ssl.SSLContext) -> tuple[ssl.SSLSocket, Callable[[], None]]:
        c = _smtp_open(s, context, timeout)
        assert isinstance(c.sock, ssl.SSLSocket)
        return c.sock, c.close

    if s.tls != "implicit":
        clock = Clock()
        try:
            conn = _smtp_open(s, None, timeout)
        except errors as exc:
            rows.append(_fail("SMTP EHLO", exc, ep, clock, bad))
            return
        rows.append(_ehlo_row(conn, clock))
        offered = conn.has_extn("starttls")
        _quit(conn)
        if s.tls == "starttls" and not offered:
            rows.append(Check("SMTP TLS", bad, "the server does not offer STARTTLS on this port",
                              hint='use tls = "implicit" (port 465) if the server offers it'))
            return
    if s.tls != "none":
        rows.append(_tls_row("SMTP TLS", s.host, open_tls, ctx, ep, bad))
        if rows[-1].status == bad:
            return
    clock = Clock()
    try:
        conn = _smtp_open(s, None if s.tls == "none" else ctx, timeout)
    except errors as exc:
        rows.append(_fail("SMTP", exc, ep, clock, bad))
        return
    try:
        if s.tls == "implicit":
            rows.append(_ehlo_row(conn, clock))
        if s.username is None or s.password is None:
            rows.append(Check("SMTP AUTH", "INFO", "no username set: not tried"))
            return
        clock = Clock()
        conn.login(s.username, s.password.reveal())
        rows.append(Check("SMTP AUTH", "OK", f"authenticated as {s.username}", clock.ms()))
    except errors as exc:
        rows.append(_fail("SMTP AUTH", exc, ep, clock, bad))
    finally:
        _quit(conn)


def _ehlo_row(conn: smtplib.SMTP, clock: Clock) -> Check:
    lines = (conn.ehlo_resp or b"").decode("utf-8", "replace").splitlines()
    ext = sorted(k.upper() for k in conn.esmtp_features)
    server = lines[0] if lines else "?"
    return Check("SMTP EHLO", "OK", f"{server}; extensions: {', '.join(ext) or 'none'}", clock.ms(),
                 details={"extensions": ext})


def _quit(conn: smtplib.SMTP) -> None:
    """QUIT (never any mail); close the socket whatever happens."""
    try:
        conn.quit()
    except (OSError, smtplib.SMTPException):
        conn.close()


# -- output ---------------------------------------------------------------------------------------


def format_report(report: Report) -> str:
    """Readable tables: status, check, time, result, and an indented hint under a row that needs one."""
    lines: list[str] = []
    for title, checks in [("mailrules doctor", report.general)] + [
        (f"account {a.name!r}: {a.target}", a.checks) for a in report.accounts
    ]:
        lines.append(title)
        width = max((len(c.check) for c in checks), default=5)
        for c in checks:
            ms = f"{c.ms:8.1f} ms" if c.ms is not None else " " * 11
            lines.append(f"  {c.status:<4}  {c.check:<{width}}  {ms}  {c.result}")
            if c.hint:
                lines.append(f"  {'':<4}  {'':<{width}}  {'':11}  hint: {c.hint}")
        lines.append("")
    fails = sum(c.status == "FAIL" for c in report.general + [c for a in report.accounts for c in a.checks])
    lines.append("everything needed works" if report.ok else f"{fails} check(s) failed")
    return "\n".join(lines)


def format_json(report: Report) -> str:
    """The same as data: {"ok", "general": [...], "accounts": {name: {"target", "ok", "checks"}}}."""
    data = {
        "ok": report.ok,
        "general": [dataclasses.asdict(c) for c in report.general],
        "accounts": {
            a.name: {"target": a.target, "ok": a.ok, "checks": [dataclasses.asdict(c) for c in a.checks]}
            for a in report.accounts
        },
    }
    return json.dumps(data, indent=2, default=str)
