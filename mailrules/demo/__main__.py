"""`make demo`: a private IMAP server on loopback, sample mail, the example rules, before and after.

Pure Python: pymap's in-memory server (no TLS, loopback only, hence `allow_insecure = true` in the
demo's configuration) and an aiosmtpd sink that catches what `forward` sends.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from mailrules.demo.sample_mail import crlf, generate
from mailrules.imap.session import ConnectionParams, ImapSession

HOST = "127.0.0.1"
USER, PASSWORD = "demo", "demo-password"
ROOT = Path(__file__).resolve().parents[2]  # the checkout (mailrules/demo/__main__.py)
EXAMPLES = ROOT / "rules.d"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _wait(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"demo: {what} exited early with code {proc.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"demo: {what} did not start listening on {HOST}:{port}")


def start_imap(port: int) -> subprocess.Popen[bytes]:
    """pymap, in memory, plaintext on loopback, one user."""
    code = "import sys; from pymap.main import main; sys.argv[0] = 'pymap'; sys.exit(main())"
    args = ["--host", HOST, "--port", str(port), "--no-tls", "dict", "--demo-user", USER]
    args += ["--demo-password", PASSWORD]
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _wait(port, proc, "the IMAP server (pymap)")
    return proc


def start_smtp(port: int) -> tuple[Any, list[bytes]]:
    """An aiosmtpd sink on loopback that keeps what it receives."""
    from aiosmtpd.controller import Controller

    received: list[bytes] = []

    class Sink:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            received.append(bytes(envelope.original_content or envelope.content))
            return "250 OK"

    controller = Controller(Sink(), hostname=HOST, port=port)
    controller.start()
    return controller, received


def counts(session: ImapSession) -> dict[str, int]:
    out = {}
    for mb in session.list_mailboxes():
        if {f.lower() for f in mb.flags} & {"\\noselect", "\\nonexistent"}:
            continue  # a hierarchy level only (RFC 9051 §7.3.1)
        out[mb.name] = session.select(mb.name, readonly=True).exists
    return out


def seed(session: ImapSession, now: dt.datetime) -> int:
    """The rules' .eml samples (three days old) and 150 generated messages into INBOX, each in CRLF
    form (Cyrus refuses a bare LF); the number appended."""
    n = 0
    for p in sorted((EXAMPLES / "samples").glob("*.eml")):
        session.append("INBOX", crlf(p.read_bytes()), (), now - dt.timedelta(days=3))
        n += 1
    for m in generate(150, seed=7, now=now, years=3):
        session.append("INBOX", m.raw, m.flags, m.internaldate)
        n += 1
    return n


def write_config(directory: Path, imap_port: int, smtp_port: int, *, user: str = USER) -> Path:
    """The demo's mailrules.toml: account "work" on loopback without TLS, as `user`, its password in
    $DEMO_IMAP_PASSWORD; forwards go to the SMTP sink."""
    config = directory / "mailrules.toml"
    config.write_text(
        textwrap.dedent(
            f"""\
            # written by `make demo`
            rules = "{EXAMPLES}"
            state = "{directory / "state.db"}"
            timezone = "UTC"

            [metrics]
            listen = ""

            [accounts.work]
            host = "{HOST}"
            port = {imap_port}
            tls = "none"
            allow_insecure = true            # loopback demo server without TLS
            username = "{user}"
            password_env = "DEMO_IMAP_PASSWORD"

            [accounts.work.smtp]
            host = "{HOST}"
            port = {smtp_port}
            tls = "none"
            allow_insecure = true
            from = "me@example.com"
            """
        ),
        encoding="utf-8",
    )
    return config


def table(before: dict[str, int], after: dict[str, int]) -> str:
    names = sorted(set(before) | set(after), key=lambda n: (n != "INBOX", n.lower()))
    width = max(len(n) for n in names) + 2
    rows = [f"  {'mailbox':<{width}}{'before':>8}{'after':>8}"]
    rows += [f"  {n:<{width}}{before.get(n, 0):>8}{after.get(n, 0):>8}" for n in names]
    return "\n".join(rows)


def main() -> int:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    with tempfile.TemporaryDirectory(prefix="mailrules-demo-") as tmp:
        directory = Path(tmp)
        imap_port, smtp_port = _free_port(), _free_port()
        print(
            f"demo: starting an in-memory IMAP server on {HOST}:{imap_port} and an SMTP sink on :{smtp_port}"
        )
        server = start_imap(imap_port)
        controller, received = start_smtp(smtp_port)
        try:
            params = ConnectionParams(
                HOST, imap_port, "none", USER, PASSWORD, allow_insecure=True, name="demo"
            )
            with ImapSession.connect(params) as session:
                n = seed(session, now)
                before = counts(session)
            print(
                f"demo: seeded INBOX with {n} messages (three years of lists, notifications, invoices, ...)"
            )
            config = write_config(directory, imap_port, smtp_port)
            env = {**os.environ, "DEMO_IMAP_PASSWORD": PASSWORD}
            for cmd in (["test", str(EXAMPLES)], ["run", "--config", str(config), "--print-metrics"]):
                print(f"\n$ mailrules {' '.join(cmd)}")
                sys.stdout.flush()
                done = subprocess.run(
                    [sys.executable, "-m", "mailrules", *cmd],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                summary, _, exposition = done.stdout.partition("# HELP")
                print(summary.rstrip())
                shown = [m for m in exposition.splitlines() if m.startswith("mailrules_")]
                # counters and gauges that moved; the *_seconds histograms are for a scrape to read
                shown = [m for m in shown if "_seconds" not in m.split("{")[0] and float(m.split()[-1]) != 0]
                if shown:
                    print(f"  metrics (non-zero counters and gauges, {min(len(shown), 25)} of {len(shown)}):")
                    print("\n".join(f"  | {m}" for m in shown[:25]))
                log_lines = done.stderr.strip().splitlines()
                if log_lines:
                    print(f"  ({len(log_lines)} log lines, one per rule and mailbox; the first few:)")
                    for line in log_lines[:5]:
                        print(f"  | {line}")
                if done.returncode != 0:
                    print(f"demo: `mailrules {cmd[0]}` exited with {done.returncode}", file=sys.stderr)
                    return done.returncode
            with ImapSession.connect(params) as session:
                after = counts(session)
            print("\nfolders before and after:")
            print(table(before, after))
            print(f"\nthe SMTP sink received {len(received)} forwarded message(s)")
        finally:
            controller.stop()
            server.terminate()
            server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
