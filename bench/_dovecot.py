"""The benchmarks' private Dovecot 2.3: tests/integration/servers.py's (`launch_dovecot`), with bench extras.

Loopback, passwd-file users, maildir, STARTTLS only. The run bench adds `rawlog_dir`: Dovecot writes
every byte each client sends after login to `rawlog/<user>/*.in`, so the commands of every tool are
counted by the same counter (`count_commands`). Users are all created before the server starts (no
passwd-file re-read wait); `clone_user` copies a seeded maildir to another user, indexes included.
The latency and scale benches pass their own mailboxes, mail uid and limits (`start`'s arguments).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

# `python bench/x.py` puts bench/ on sys.path, not the repository root (an editable install does).
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.integration.servers import (  # noqa: E402
    HOST,
    ServerUnavailable,
    autocreate_mailboxes,
    free_port,
    launch_dovecot,
    special_use_mailboxes,
)
from tests.integration.servers import stop as stop_process  # noqa: E402

__all__ = ["HOST", "Dovecot", "autocreate_mailboxes", "free_port", "start", "stop", "stop_process"]


@dataclass
class Dovecot:
    directory: Path
    port: int
    ca_file: Path
    proc: subprocess.Popen[bytes]
    users: dict[str, str]
    owner: tuple[str, str] | None  # chown target for copied maildirs (as root: start's mail_owner)
    rawlog_dir: Path | None = None  # Dovecot's rawlog_dir without the /%u

    def maildir(self, user: str) -> Path:
        return self.directory / "mail" / user

    def log_tail(self) -> str:
        try:
            return (self.directory / "dovecot.log").read_text(errors="replace")[-3000:]
        except OSError:
            return "(no log)"

    def rawlog(self, user: str) -> Path:
        if self.rawlog_dir is None:
            raise RuntimeError("this Dovecot was started without a rawlog")
        return self.rawlog_dir / user

    def clone_user(self, source: str, dest: str) -> None:
        """Give `dest` an identical copy of `source`'s maildir (messages, flags, UIDs, indexes)."""
        target = self.maildir(dest)
        if target.exists():
            shutil.rmtree(target)
        subprocess.run(["cp", "-a", str(self.maildir(source)), str(target)], check=True)
        if self.owner is not None:
            subprocess.run(["chown", "-R", ":".join(self.owner), str(target)], check=True)

    def reset_rawlog(self, user: str) -> None:
        d = self.rawlog(user)
        for p in d.glob("*"):
            p.unlink()

    def count_commands(self, user: str) -> Counter[str]:
        """Commands the user's clients sent after login, by name (`UID FETCH`, `SELECT`...)."""
        counts: Counter[str] = Counter()
        for path in sorted(self.rawlog(user).glob("*.in")):
            counts.update(parse_commands(path.read_bytes()))
        return counts

    def server_seconds(self, user: str) -> dict[str, float]:
        """Per command name: seconds from the command's arrival to its tagged reply (rawlog stamps)."""
        out: dict[str, float] = {}
        for path in sorted(self.rawlog(user).glob("*.in")):
            sent = command_stamps(path.read_bytes())
            reply = path.with_suffix(".out")
            if not reply.exists():
                continue
            for line in reply.read_bytes().split(b"\n"):
                words = line.split(None, 3)
                if len(words) >= 3 and words[2] in (b"OK", b"NO", b"BAD") and words[1] in sent:
                    name, t0 = sent.pop(words[1])
                    out[name] = out.get(name, 0.0) + float(words[0]) - t0
        return out

    def rawlog_bytes(self, user: str) -> tuple[int, int]:
        """(bytes the user's clients sent, bytes Dovecot answered) after login, stamps taken off."""
        sent = got = 0
        for path in self.rawlog(user).glob("*.in"):
            sent += len(_STAMP.sub(b"", path.read_bytes()))
        for path in self.rawlog(user).glob("*.out"):
            got += len(_STAMP.sub(b"", path.read_bytes()))
        return sent, got

    def first_command_at(self, user: str) -> float | None:
        """Unix time at which the first command after login reached Dovecot (any connection)."""
        stamps = []
        for path in self.rawlog(user).glob("*.in"):
            with path.open("rb") as f:
                m = re.match(rb"(\d+\.\d+) ", f.readline())
            if m:
                stamps.append(float(m.group(1)))
        return min(stamps, default=None)

    def cpu_seconds(self) -> float:
        """User + system CPU of the whole Dovecot: the master, its live children (imap, imap-login
        (which carries TLS for the whole session), auth, ...) and every child it has reaped
        (cutime/cstime). The difference around a tool's run is that run's Dovecot CPU, once the
        run's processes have exited (`settle`)."""
        master = self.proc.pid
        ticks = sum(own + reaped for pid, ppid, own, reaped in _proc_stats() if master in (pid, ppid))
        return ticks / _CLK_TCK

    def settle(self, before: set[int], timeout: float = 5.0) -> None:
        """Wait until the children Dovecot had in `before` are all it has (a tool's imap and
        imap-login processes exited and were reaped), at most `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.children() - before:
                return
            time.sleep(0.02)

    def children(self) -> set[int]:
        master = self.proc.pid
        return {pid for pid, ppid, _, _ in _proc_stats() if ppid == master}

    def du(self, user: str) -> int:
        return sum(p.stat().st_size for p in self.maildir(user).rglob("*") if p.is_file())


_STAMP = re.compile(rb"(?m)^\d+\.\d+ ")
_LITERAL = re.compile(rb"\{(\d+)\+?\}\r?$")
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _proc_stats() -> list[tuple[int, int, int, int]]:
    """(pid, ppid, utime + stime, cutime + cstime) in clock ticks for every process (proc(5))."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # exited meanwhile
        fields = stat[stat.rfind(b")") + 2 :].split()  # after "pid (comm) ": state is field 3
        out.append(
            (int(entry), int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14]))
        )
    return out


def parse_commands(data: bytes) -> Counter[str]:
    """Count the tagged commands in a rawlog `.in` file (client to server), skipping literals."""
    # Dovecot prefixes every logged line with "<unix time>.<usec> ": take it off again.
    data = _STAMP.sub(b"", data)
    counts: Counter[str] = Counter()
    pos, n = 0, len(data)
    continuing = False  # the current line continues a command after a literal
    while pos < n:
        end = data.find(b"\n", pos)
        if end < 0:
            end = n
        line = data[pos:end]
        pos = end + 1
        if not continuing:
            words = line.split(None, 3)
            if len(words) >= 2:
                name = words[1].upper().decode("ascii", "replace")
                if name == "UID" and len(words) >= 3:
                    name = "UID " + words[2].upper().decode("ascii", "replace")
                elif name in ("DONE",):
                    name = ""
                if name:
                    counts[name] += 1
        m = _LITERAL.search(line)
        if m:
            pos += int(m.group(1))  # skip the literal; the command goes on after it
            continuing = True
        else:
            continuing = False
    return counts


def command_stamps(data: bytes) -> dict[bytes, tuple[str, float]]:
    """{tag: (command name, arrival time)} of a rawlog `.in` file (its first line's stamp)."""
    out: dict[bytes, tuple[str, float]] = {}
    skip = 0
    for line in data.split(b"\n"):
        words = line.split(None, 4)
        if skip > 0:
            skip -= len(line) + 1 - (len(words[0]) + 1 if words else 0)
            if skip > 0:
                continue
            m = _LITERAL.search(line)
            skip = int(m.group(1)) if m else 0
            continue
        if len(words) >= 3 and re.fullmatch(rb"\d+\.\d+", words[0]):
            name = words[2].upper()
            if name == b"UID" and len(words) >= 4:
                name += b" " + words[3].upper()
            out[words[1]] = (name.decode("ascii", "replace"), float(words[0]))
        m = _LITERAL.search(line)
        skip = int(m.group(1)) if m else 0
    return out


def start(
    user_names: list[str],
    *,
    prefix: str = "mr-bench-",
    mailboxes: str | None = None,
    rawlog_dir: str | Path | None = "rawlog",
    mail_owner: tuple[str, str] = ("nobody", "nogroup"),
    extra: str = "",
    login_extra: str = "",
) -> Dovecot:
    """Dovecot with `user_names` (random passwords) and, by default, the special-use mailboxes (the
    run bench's rules archive and trash into them) and a rawlog per user in `rawlog_dir` (relative:
    below the server's directory; None: no rawlog). As root, mail is owned by `mail_owner`.
    Exits (SystemExit) if Dovecot is missing or does not start."""
    users = {u: secrets.token_urlsafe(12) for u in user_names}
    try:
        launched = launch_dovecot(
            users=users,
            prefix=prefix,
            purpose="bench",
            imaps=False,
            mailboxes=special_use_mailboxes() if mailboxes is None else mailboxes,
            mail_owner=mail_owner,
            rawlog_dir=rawlog_dir,
            extra=extra,
            login_extra=login_extra,
        )
    except ServerUnavailable as exc:
        raise SystemExit(f"bench: {exc} (make system-deps)") from None
    except RuntimeError as exc:
        raise SystemExit(f"bench: {exc}") from None
    rawlog = None if rawlog_dir is None else launched.directory / rawlog_dir
    return Dovecot(
        launched.directory,
        launched.imap_port,
        launched.ca_file,
        launched.proc,
        users,
        launched.mail_owner,
        rawlog,
    )


def stop(server: Dovecot, keep: bool = False) -> None:
    stop_process(server.proc)
    if not keep:
        shutil.rmtree(server.directory, ignore_errors=True)
