"""`mailrules doctor`'s SMTP probes: DNS, TCP, EHLO, TLS and AUTH of the server forward and redirect use."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Callable

from mailrules.commands.doctor.net import (
    Clock,
    Endpoint,
    NoGreeting,
    PlaintextRefused,
    dns_tcp,
    fail,
    tls_row,
)
from mailrules.commands.doctor.report import Check, Status
from mailrules.config import AccountSettings, SmtpSettings
from mailrules.dsl import ast as A
from mailrules.errors import ConfigError, MailrulesError
from mailrules.oauth.accounts import process_tokens
from mailrules.smtp.sender import SmtpParams, SmtpSender


def smtp_checks(
    account: AccountSettings, rules: list[A.Rule] | None, timeout: float, rows: list[Check]
) -> None:
    """The SMTP server of the account when one is set or a rule forwards or redirects (`rules` None: the
    rules did not load; a broken SMTP server then only warns)."""
    users = sorted({r.name for r in rules or () for a in r.actions if isinstance(a, A.Forward | A.Redirect)})
    s = account.smtp
    if s is None:
        if users:
            table = f"[accounts.{account.name}.smtp]"
            rows.append(
                Check(
                    "SMTP",
                    "FAIL",
                    f"no {table}, but rules forward or redirect: " + ", ".join(repr(u) for u in users),
                    hint=f"add an {table} table (host, port, tls, username, ...)",
                )
            )
        else:
            rows.append(Check("SMTP", "INFO", "not configured (no rule forwards or redirects)"))
        return
    # A broken SMTP that no rule uses does not fail the diagnosis.
    bad: Status = "FAIL" if users else "WARN"
    source = s.password.source if s.password is not None else ""
    ep = Endpoint("SMTP", s.host, s.port, s.tls, s.username, source)
    ca = str(account.ca_file) if account.ca_file else None
    try:
        params = SmtpParams.from_settings(
            s, ca_file=ca, timeout=timeout, tokens=process_tokens().for_account(account)
        )
    except ConfigError as exc:
        if s.tls == "none" and not s.allow_insecure:
            rows.append(fail("SMTP TLS", PlaintextRefused(str(exc)), ep, Clock(), bad))
        else:
            rows.append(Check("SMTP settings", bad, str(exc), hint="fix the [smtp] table"))
        return
    connected = dns_tcp(ep, "SMTP ", timeout, rows, bad)
    if connected is None:
        return
    connected[0].close()
    # the very context forward/redirect use (system CAs, or only ca_file when set)
    sender = SmtpSender(params)
    _smtp_session(s, sender.tls_context(), ep, timeout, bad, rows, sender)


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
    s: SmtpSettings,
    ctx: ssl.SSLContext,
    ep: Endpoint,
    timeout: float,
    bad: Status,
    rows: list[Check],
    sender: SmtpSender,
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
            rows.append(fail("SMTP EHLO", exc, ep, clock, bad))
            return
        rows.append(_ehlo_row(conn, clock))
        offered = conn.has_extn("starttls")
        _quit(conn)
        if s.tls == "starttls" and not offered:
            rows.append(
                Check(
                    "SMTP TLS",
                    bad,
                    "the server does not offer STARTTLS on this port",
                    hint='use tls = "implicit" (port 465) if the server offers it',
                )
            )
            return
    if s.tls != "none":
        rows.append(tls_row("SMTP TLS", s.host, open_tls, ctx, ep, bad))
        if rows[-1].status == bad:
            return
    clock = Clock()
    try:
        conn = _smtp_open(s, None if s.tls == "none" else ctx, timeout)
    except errors as exc:
        rows.append(fail("SMTP", exc, ep, clock, bad))
        return
    try:
        if s.tls == "implicit":
            rows.append(_ehlo_row(conn, clock))
        if s.username is None or (s.password is None and not s.oauth2):
            rows.append(Check("SMTP AUTH", "INFO", "no username set: not tried"))
            return
        clock = Clock()
        sender.authenticate(conn)  # as forward and redirect log in: the password, or XOAUTH2
        how = " (XOAUTH2, the account's token)" if s.oauth2 else ""
        rows.append(Check("SMTP AUTH", "OK", f"authenticated as {s.username}{how}", clock.ms()))
    except errors as exc:
        rows.append(fail("SMTP AUTH", exc, ep, clock, bad))
    finally:
        _quit(conn)


def _ehlo_row(conn: smtplib.SMTP, clock: Clock) -> Check:
    lines = (conn.ehlo_resp or b"").decode("utf-8", "replace").splitlines()
    ext = sorted(k.upper() for k in conn.esmtp_features)
    server = lines[0] if lines else "?"
    return Check(
        "SMTP EHLO",
        "OK",
        f"{server}; extensions: {', '.join(ext) or 'none'}",
        clock.ms(),
        details={"extensions": ext},
    )


def _quit(conn: smtplib.SMTP) -> None:
    """QUIT (never any mail); close the socket whatever happens."""
    try:
        conn.quit()
    except (OSError, smtplib.SMTPException):
        conn.close()
