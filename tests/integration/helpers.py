"""Shared helpers for the `mailrules run` integration tests: account snapshots, configs, an SMTP sink."""

from __future__ import annotations

import datetime as dt
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from mailrules.config import Settings, load_config
from mailrules.dsl import ast as A
from mailrules.dsl.loader import load_rule_set
from mailrules.imap.session import ConnectionParams, ImapSession

#: (BODY[] bytes, flags without \Recent, INTERNALDATE)
Message = tuple[bytes, tuple[str, ...], dt.datetime | None]


@dataclass(frozen=True)
class MailboxSnapshot:
    uidvalidity: int
    uidnext: int | None
    messages: tuple[Message, ...]  # sorted


def _flags(flags: Sequence[str]) -> tuple[str, ...]:
    # \Recent belongs to a session, not to the message (RFC 3501 §2.3.2): any SELECT clears it.
    return tuple(sorted(f for f in flags if f.casefold() != "\\recent"))


def fetch_all(session: ImapSession, mailbox: str) -> tuple[int, int | None, list[Message]]:
    """EXAMINE `mailbox` (read-only: changes nothing) -> (UIDVALIDITY, UIDNEXT, messages)."""
    info = session.select(mailbox, readonly=True)
    uids = session.search([b"ALL"]) if info.exists else []
    got = session.fetch(uids, ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"]) if uids else {}
    messages = [
        (bytes(d.get("BODY.PEEK[]") or b""), _flags(d.get("FLAGS") or ()), d.get("INTERNALDATE"))
        for d in got.values()
    ]
    return info.uidvalidity, info.uidnext, messages


def snapshot(
    params: ConnectionParams, only: Callable[[str], bool] | None = None
) -> dict[str, MailboxSnapshot]:
    """Every mailbox of the account (or those `only` accepts) -> UIDVALIDITY, UIDNEXT, sorted messages."""
    with ImapSession.connect(params) as session:
        out = {}
        for mb in sorted(session.list_mailboxes(), key=lambda m: m.name):
            if "\\noselect" in {f.casefold() for f in mb.flags} or (only is not None and not only(mb.name)):
                continue
            uv, nxt, messages = fetch_all(session, mb.name)
            out[mb.name] = MailboxSnapshot(uv, nxt, tuple(sorted(messages, key=repr)))
        return out


def portable(params: ConnectionParams, snap: dict[str, MailboxSnapshot]) -> dict[str, MailboxSnapshot]:
    """The snapshot keyed by portable names, as rules spell them (imap/names.py): `INBOX.Lists.x`
    on Cyrus is `Lists/x`; the same keys on every server."""
    with ImapSession.connect(params) as session:
        ns = session.namespaces
    out = {}
    for name, box in snap.items():
        mapped = ns.to_portable(name)
        assert mapped is not None, f"{name!r} has no portable name on {ns.summary()}"
        out[mapped] = box
    return out


def placement(snap: dict[str, MailboxSnapshot]) -> dict[str, list[tuple[bytes, frozenset[str]]]]:
    """Which message (by bytes) is in which non-empty mailbox, with which flags (as FakeServer.state())."""
    return {
        name: sorted((raw, frozenset(flags)) for raw, flags, _ in s.messages)
        for name, s in sorted(snap.items())
        if s.messages
    }


def where_is(snap: dict[str, MailboxSnapshot], needle: bytes) -> list[tuple[str, tuple[str, ...]]]:
    """(mailbox, flags) of every message whose bytes contain `needle`."""
    return [(name, flags) for name, s in snap.items() for raw, flags, _ in s.messages if needle in raw]


def append(
    params: ConnectionParams,
    mailbox: str,
    messages: Sequence[tuple[bytes, Sequence[str], dt.datetime | None]],
    *,
    create: bool = True,
) -> list[str]:
    """APPEND each (bytes, flags, date); returns the error text of every message refused ("" if taken)."""
    from mailrules.errors import ImapError

    errors = []
    with ImapSession.connect(params) as session:
        for raw, flags, when in messages:
            try:
                session.append(mailbox, raw, flags, when, create=create)
                errors.append("")
            except ImapError as exc:
                if exc.kind == "reconnect":
                    raise
                errors.append(str(exc) or "refused")
    return errors


def write_config(
    tmp_path: Path,
    params: ConnectionParams,
    rules: str,
    *,
    smtp_port: int | None = None,
    account: str = "main",
    extra: str = "",
) -> Path:
    """A mailrules.toml (+ rules.d/10.rules) for this IMAP account; TLS verified against the fixture's CA."""
    rules_dir = tmp_path / "rules.d"
    rules_dir.mkdir(exist_ok=True)
    (rules_dir / "10.rules").write_text(rules, encoding="utf-8")
    tls = params.tls
    lines = [
        f'rules = "{rules_dir}"',
        f'state = "{tmp_path / "state.db"}"',
        'timezone = "UTC"',
        "",
        "[metrics]",
        'listen = ""',
        "",
        f"[accounts.{account}]",
        f'host = "{params.host}"',
        f"port = {params.port}",
        f'tls = "{tls}"',
        f'username = "{params.username}"',
        f'password = "{params.password}"',
    ]
    if params.ca_file:
        lines.append(f'ca_file = "{params.ca_file}"')
    if extra:
        lines.append(extra)
    if smtp_port is not None:
        lines += [
            "",
            f"[accounts.{account}.smtp]",
            'host = "127.0.0.1"',
            f"port = {smtp_port}",
            'tls = "none"',
            "allow_insecure = true",
            'from = "bot@example.com"',
        ]
    path = tmp_path / "mailrules.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def load(config: Path) -> tuple[Settings, tuple[A.Rule, ...]]:
    """Settings and checked rules of a config written by `write_config`."""
    settings = load_config(config, env={})
    result = load_rule_set(settings.rules)
    assert result.ok, result.render()
    return settings, result.rule_set.rules


# -- an SMTP sink on loopback (aiosmtpd) ----------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes


@dataclass
class Sink:
    """Keeps every message it receives."""

    messages: list[Received] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 2.0.0 queued"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def smtp_sink() -> Iterator[tuple[Sink, int]]:
    """(sink, port) of an aiosmtpd server on 127.0.0.1, stopped on exit."""
    sink = Sink()
    port = _free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()


def http_get(port: int, path: str, timeout: float) -> tuple[int, str]:
    """GET http://127.0.0.1:port/path -> (status, body); (0, "") when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""


def metric_total(exposition: str, name: str) -> float:
    """The sum of every sample of metric `name` (all label sets) in a Prometheus exposition."""
    total = 0.0
    for line in exposition.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total
