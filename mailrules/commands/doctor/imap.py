"""`mailrules doctor`'s IMAP probes: DNS, TCP, TLS, login, capabilities and the dialect; mailboxes.py then."""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Callable

from mailrules.accounts import connection_params, mailboxes_of, rules_for
from mailrules.commands.doctor.flags import flag_change_rows
from mailrules.commands.doctor.mailboxes import mailbox_checks
from mailrules.commands.doctor.net import (
    Clock,
    Endpoint,
    PlaintextRefused,
    connect_first,
    dns_tcp,
    fail,
    imap_starttls,
    tls_row,
)
from mailrules.commands.doctor.oauth import sasl_rows
from mailrules.commands.doctor.report import Check, Status
from mailrules.config import AccountSettings
from mailrules.dsl import ast as A
from mailrules.errors import MailrulesError
from mailrules.imap.dialects import describe_dialect
from mailrules.imap.names import UnportableName
from mailrules.imap.notify import NotifyRefused, notify_none, notify_set
from mailrules.imap.session import ImapSession
from mailrules.imap.store import ImapStore
from mailrules.tls import ssl_context

#: The capabilities mailrules uses, and what it does when one is absent (`{poll}`: poll_interval).
CAPABILITIES: dict[str, str] = {
    "IDLE": "no push: new mail is found by polling every {poll} s",
    "MOVE": "moves are COPY + \\Deleted + UID EXPUNGE",
    "UIDPLUS": "no UID EXPUNGE: `delete permanently` is refused; without MOVE, moved originals stay "
    "flagged \\Deleted",
    "CONDSTORE": "`on flag change` rules are refused for this account",
    "ESEARCH": "plain SEARCH: one long `* SEARCH` line on big mailboxes",
    "WITHIN": "ages are searched by day (SINCE/BEFORE) and refined locally",
    "SPECIAL-USE": "archive and trash are found by name (Archive, Trash, ...) unless configured",
    "NOTIFY": "each watched mailbox keeps its own IDLE connection (within max_connections)",
}


def imap_checks(
    account: AccountSettings, rules: list[A.Rule] | None, timeout: float, rows: list[Check]
) -> None:
    """DNS, TCP, TLS, login; once logged in, the capabilities and the mailboxes (`rules` None: the
    rules did not load, so only archive and trash are looked at)."""
    source = account.password.source if account.password is not None else ""
    ep = Endpoint("IMAP", account.host, account.port, account.tls, account.username, source)
    if account.tls == "none" and not account.allow_insecure:
        rows.append(fail("TLS", PlaintextRefused("tls = none"), ep, Clock()))
        rows.append(Check("login", "SKIP", "not attempted: the password would travel unencrypted"))
        return
    connected = dns_tcp(ep, "", timeout, rows, "FAIL")
    if connected is None:
        rows.append(Check("login", "SKIP", "not attempted: no connection"))
        return
    sock, sockaddr = connected
    spare = [sock]  # the first handshake uses the socket the TCP row opened
    if account.tls == "none":
        sock.close()
        rows.append(
            Check(
                "TLS",
                "WARN",
                "none: plaintext (allowed by allow_insecure)",
                0.0,
                'use tls = "starttls" or "implicit" unless this is loopback or a trusted network',
            )
        )
    else:
        clock = Clock()
        try:
            ctx = ssl_context(str(account.ca_file) if account.ca_file else None)
        except (OSError, ssl.SSLError) as exc:
            sock.close()
            rows.append(
                Check(
                    "TLS",
                    "FAIL",
                    f"cannot read ca_file {account.ca_file}: {exc}",
                    clock.ms(),
                    "ca_file must name a readable PEM file with the CA certificate",
                )
            )
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

        handshake = tls_row("TLS handshake", account.host, open_tls, ctx, ep, "FAIL")
        rows.append(handshake)
        if handshake.status == "FAIL":
            rows.append(Check("login", "SKIP", "not attempted: TLS failed"))
            return
    clock = Clock()
    try:
        session = ImapSession.connect(dataclasses.replace(connection_params(account), timeout=timeout))
    except MailrulesError as exc:
        rows.append(fail("login", exc, ep, clock))
        return
    try:
        rows.append(Check("login", "OK", f"logged in as {account.username}", clock.ms()))
        rows += sasl_rows(session)  # OAuth2: the mechanism the server offered and the one used
        _capabilities(session, account, rows)
        rows += flag_change_rows(session, account, rules)
        store = ImapStore(session)
        rows += [
            Check("dialect", "INFO", line)
            for line in describe_dialect(
                store.dialect,
                max_connections=account.max_connections,
                special_use=store.special_use(),
                archive=account.archive,
                trash=account.trash,
            )
        ]
        mailbox_checks(session, account, rules, rows)
        rows.append(watching(session, account, rules))
    except MailrulesError as exc:
        rows.append(fail("after login", exc, ep, clock))
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


def watching(session: ImapSession, account: AccountSettings, rules: list[A.Rule] | None) -> Check:
    """How the daemon would watch this account, and why (docs/operations.md, "Watching"): one
    NOTIFY connection (tried here as the daemon does, then `NOTIFY NONE`), IDLE per mailbox, or
    polling; with the connections it takes within max_connections."""
    mine = rules_for(rules or [], account.name)
    arrival = [r for r in mine if isinstance(r.trigger, A.OnArrival)]
    boxes = mailboxes_of(arrival, account.name) + list(account.watch)
    boxes = list(dict.fromkeys(boxes))
    if not boxes:
        return Check("watching", "INFO", "nothing to watch (no `on arrival` rule, no `watch`)")
    n = len(boxes)
    if not session.has("IDLE"):
        return Check(
            "watching",
            "INFO",
            f"polling: no IDLE, each of {n} mailboxes is looked at every {account.poll_interval:g} s",
        )
    scheduled = any(not isinstance(r.trigger, A.OnArrival | A.Manually) for r in mine)
    available = account.max_connections - (1 if scheduled else 0)
    idle = n if n <= available else max(0, available - 1)
    split = f"{idle} IDLE connections" + (f", 1 more polls {n - idle} in turn" if idle < n else "")
    if account.notify == "off":
        return Check("watching", "INFO", f'IDLE per mailbox (notify = "off"): {split}')
    try:
        names = [session.server_name(m) for m in boxes]
    except UnportableName:
        return Check("watching", "INFO", f"IDLE per mailbox: {split} (a watched name cannot exist here)")
    try:
        _, personal = notify_set(session, names)
    except NotifyRefused as exc:
        status: Status = "INFO" if not session.has("NOTIFY") else "WARN"
        hint = 'notify = "off" skips the attempt' if status == "WARN" else ""
        return Check(
            "watching", status, f"IDLE per mailbox: {split}; NOTIFY not used: {exc.reason}", hint=hint
        )
    notify_none(session)
    how = " (all personal mailboxes asked: the list is too long)" if personal else ""
    return Check("watching", "OK", f"NOTIFY: one connection watches {n} mailboxes{how}")
