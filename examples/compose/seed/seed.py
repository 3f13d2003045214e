"""Seed the compose demo's mailboxes, then keep mail arriving so the daemon has work to show.

Runs in the mailrules image (`entrypoint: python`), so `mailrules.demo.sample_mail` is importable:

1. waits for the IMAP server and, with SEED_WAIT_URL, for the daemon's /readyz: the daemon files
   what arrives after it started watching (existing mail is left to `mailrules run`), so the
   backlog is appended once it watches, and the demo shows it being filed. With
   SEED_WAIT_ACCOUNTS=N (several daemons sharing the accounts: compose.cluster.yaml), it waits
   until the daemons at every address of SEED_WAIT_URL's host are ready and own N accounts
   together (their `mailrules_cluster_accounts_owned`), so that no account is left unwatched;
2. for each account whose mailboxes are all empty: appends a backlog of generated mail
   (three years of lists, notifications, invoices...) and the sample .eml files;
3. every SEED_INTERVAL seconds appends one of the sample .eml files, with a fresh Message-ID
   and Date, to a random account. SEED_INTERVAL=0 stops after step 2.

Plain IMAP without TLS, as the demo's Dovecot offers it inside the compose network only.
Settings (environment): SEED_HOST, SEED_PORT, SEED_WAIT_URL, SEED_WAIT_ACCOUNTS (count),
SEED_ACCOUNTS ("user:password_file,..."), SEED_SAMPLES (a directory of *.eml), SEED_BACKLOG
(count), SEED_INTERVAL (seconds).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import imaplib
import os
import random
import re
import signal
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

from mailrules.demo.sample_mail import crlf, generate


def log(message: str) -> None:
    print(f"seed: {message}", flush=True)


def connect(host: str, port: int, user: str, password: str, wait: float = 90.0) -> imaplib.IMAP4:
    deadline = time.monotonic() + wait
    while True:
        try:
            imap = imaplib.IMAP4(host, port, timeout=10)
            imap.login(user, password)
            return imap
        except (OSError, imaplib.IMAP4.error) as exc:
            if time.monotonic() > deadline:
                raise SystemExit(f"seed: cannot log in as {user} at {host}:{port}: {exc}") from None
            time.sleep(2)


def wait_ready(url: str, wait: float = 180.0) -> None:
    """Until `url` answers 200 (the daemon's /readyz: rules loaded, every watcher connected)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except (OSError, urllib.error.URLError) as exc:
            if time.monotonic() > deadline:
                raise SystemExit(f"seed: {url} is not ready: {exc}") from None
            time.sleep(2)


OWNED = "mailrules_cluster_accounts_owned"


def addresses(host: str, port: int) -> list[str]:
    """Every address `host` resolves to: one per replica for a compose service's name."""
    try:
        return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})
    except OSError:
        return []


def owned_by_ready(url: str, resolve: Callable[[str, int], list[str]] | None = None) -> int:
    """The accounts owned by the daemons at `url`'s host that answer `url` (/readyz) with 200;
    `resolve` (host, port) -> addresses, `addresses` by default."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or 80
    total = 0
    for address in (resolve or addresses)(parts.hostname or "", port):
        base = f"{parts.scheme}://{'[' + address + ']' if ':' in address else address}:{port}"
        try:
            with urllib.request.urlopen(base + parts.path, timeout=5):
                pass
            with urllib.request.urlopen(base + "/metrics", timeout=5) as answer:
                body = answer.read().decode("utf-8", "replace")
        except (OSError, urllib.error.URLError):
            continue  # not listening yet, or not ready (503): its accounts do not count yet
        total += sum(int(float(ln.split()[-1])) for ln in body.splitlines() if ln.startswith(OWNED + " "))
    return total


def wait_owned(
    url: str, accounts: int, wait: float = 180.0, resolve: Callable[[str, int], list[str]] | None = None
) -> None:
    """Until the ready daemons behind `url`'s host own `accounts` accounts together."""
    deadline = time.monotonic() + wait
    while True:
        owned = owned_by_ready(url, resolve)
        if owned >= accounts:
            log(f"the daemons own {owned} of {accounts} accounts")
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"seed: the ready daemons at {url} own {owned} of {accounts} accounts")
        time.sleep(2)


def quoted(mailbox: str) -> str:
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'


def total_messages(imap: imaplib.IMAP4) -> int:
    """Messages in every selectable mailbox of the account."""
    total = 0
    _, listing = imap.list()
    for line in listing:
        text = line.decode() if isinstance(line, bytes) else str(line)
        match = re.match(r'\((?P<flags>[^)]*)\) (?:"[^"]*"|NIL) (?P<name>.+)$', text)
        if match is None or "\\Noselect" in match["flags"] or "\\NonExistent" in match["flags"]:
            continue
        name = match["name"]
        if name.startswith('"'):
            name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        _, status = imap.status(quoted(name), "(MESSAGES)")
        found = re.search(rb"MESSAGES (\d+)", status[0] or b"")
        total += int(found.group(1)) if found else 0
    return total


def append(imap: imaplib.IMAP4, raw: bytes, flags: tuple[str, ...], when: dt.datetime) -> None:
    typ, data = imap.append("INBOX", "(" + " ".join(flags) + ")" if flags else None,
                            imaplib.Time2Internaldate(when), raw)
    if typ != "OK":
        raise SystemExit(f"seed: APPEND failed: {data!r}")


def fresh(raw: bytes, now: dt.datetime) -> bytes:
    """A sample with a new Message-ID and Date, so that each copy is a new message, its lines
    ending in CRLF (the .eml samples are LF text files; Cyrus refuses bare newlines in APPEND)."""
    head, sep, body = raw.partition(b"\r\n\r\n") if b"\r\n\r\n" in raw else raw.partition(b"\n\n")
    eol = b"\r\n" if sep == b"\r\n\r\n" else b"\n"
    lines = [ln for ln in head.split(eol) if not re.match(rb"(?i)(message-id|date):", ln)]
    lines.append(f"Message-ID: <{uuid.uuid4().hex}@seed.example>".encode())
    lines.append(f"Date: {email.utils.format_datetime(now)}".encode())
    return crlf(eol.join(lines) + sep + body)


def main() -> int:
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))  # PID 1 in its container
    host = os.environ.get("SEED_HOST", "dovecot")
    port = int(os.environ.get("SEED_PORT", "143"))
    accounts = []
    for item in os.environ.get("SEED_ACCOUNTS", "").split(","):
        if item.strip():
            user, _, password_file = item.strip().partition(":")
            accounts.append((user, Path(password_file).read_text(encoding="utf-8").rstrip("\r\n")))
    if not accounts:
        raise SystemExit("seed: SEED_ACCOUNTS is empty (user:password_file,...)")
    samples = sorted(Path(os.environ.get("SEED_SAMPLES", "/samples")).glob("*.eml"))
    backlog = int(os.environ.get("SEED_BACKLOG", "150"))
    interval = float(os.environ.get("SEED_INTERVAL", "30"))
    wait_url = os.environ.get("SEED_WAIT_URL", "")
    wait_accounts = int(os.environ.get("SEED_WAIT_ACCOUNTS", "0"))
    if wait_url and wait_accounts:
        log(f"waiting until the ready daemons at {wait_url} own {wait_accounts} accounts")
        wait_owned(wait_url, wait_accounts)
    elif wait_url:
        log(f"waiting for {wait_url}")
        wait_ready(wait_url)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)

    for n, (user, password) in enumerate(accounts):
        imap = connect(host, port, user, password)
        try:
            if total_messages(imap):
                log(f"{user}: already has mail, no backlog")
                continue
            for m in generate(backlog, seed=7 + n, now=now, years=3):
                append(imap, m.raw, m.flags, m.internaldate)
            for p in samples:
                append(imap, fresh(p.read_bytes(), now), (), now - dt.timedelta(days=3))
            log(f"{user}: appended {backlog} generated messages and {len(samples)} samples to INBOX")
        finally:
            imap.logout()

    if interval <= 0 or not samples:
        return 0
    log(f"appending one sample every {interval:g} s (SEED_INTERVAL=0 to stop after the backlog)")
    rng = random.Random()
    while True:
        time.sleep(interval)
        user, password = rng.choice(accounts)
        sample = rng.choice(samples)
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        imap = connect(host, port, user, password)
        try:
            append(imap, fresh(sample.read_bytes(), now), (), now)
        finally:
            imap.logout()
        log(f"{user}: new mail {sample.name}")


if __name__ == "__main__":
    sys.exit(main())
