"""A private Dovecot 2.3 for the benchmarks: loopback, passwd-file users, maildir, a rawlog per user.

Like tests/integration/servers.py, plus `rawlog_dir`: Dovecot writes every byte each client sends
after login to `rawlog/<user>/*.in`, so the commands of every tool are counted by the same
counter (`count_commands`). Users are all created before the server starts (no passwd-file
re-read wait); `clone_user` copies a seeded maildir to another user, indexes included.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"

CONF = """\
protocols = imap
listen = 127.0.0.1
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
info_log_path = {dir}/dovecot.log
instance_name = mailrules-bench-{tag}
{login_users}
ssl = yes
ssl_cert = <{dir}/ssl/cert.pem
ssl_key = <{dir}/ssl/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = {first_uid}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {dir}/users
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={dir}/home/%u
}}
mail_location = maildir:{dir}/mail/%u
mail_fsync = never
# Every byte a client sends after login, one .in/.out pair per connection (Dovecot >= 2.2.26).
rawlog_dir = {dir}/rawlog/%u
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Drafts {{
    special_use = \\Drafts
    auto = subscribe
  }}
  mailbox Junk {{
    special_use = \\Junk
    auto = subscribe
  }}
  mailbox Trash {{
    special_use = \\Trash
    auto = subscribe
  }}
  mailbox Sent {{
    special_use = \\Sent
    auto = subscribe
  }}
  mailbox Archive {{
    special_use = \\Archive
    auto = subscribe
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Dovecot:
    directory: Path
    port: int
    ca_file: Path
    proc: subprocess.Popen[bytes]
    users: dict[str, str]
    owner: tuple[str, str] | None  # chown target for copied maildirs (root runs mail as nobody)

    def maildir(self, user: str) -> Path:
        return self.directory / "mail" / user

    def rawlog(self, user: str) -> Path:
        return self.directory / "rawlog" / user

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

    def du(self, user: str) -> int:
        return sum(p.stat().st_size for p in self.maildir(user).rglob("*") if p.is_file())


_STAMP = re.compile(rb"(?m)^\d+\.\d+ ")
_LITERAL = re.compile(rb"\{(\d+)\+?\}\r?$")


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


def _self_signed(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    key.chmod(0o600)
    return cert


def start(user_names: list[str]) -> Dovecot:
    binary = shutil.which("dovecot") or "/usr/sbin/dovecot"
    if not Path(binary).exists():
        raise SystemExit("bench: dovecot is not installed (make system-deps)")
    directory = Path(tempfile.mkdtemp(prefix="mr-bench-"))
    directory.chmod(0o755)
    for sub in ("run", "state", "mail", "home", "rawlog"):
        (directory / sub).mkdir()
    users = {u: secrets.token_urlsafe(12) for u in user_names}
    (directory / "users").write_text("".join(f"{u}:{{PLAIN}}{p}::::::\n" for u, p in users.items()))
    for u in users:
        (directory / "rawlog" / u).mkdir()
    cert = _self_signed(directory / "ssl")
    owner: tuple[str, str] | None
    if os.geteuid() == 0:
        uid, gid, first_uid, login_users = "nobody", "nogroup", 500, ""
        owner = ("nobody", "nogroup")
        dirs = [str(directory / d) for d in ("mail", "home", "rawlog")]
        subprocess.run(["chown", "-R", "nobody:nogroup", *dirs], check=True)
    else:
        import pwd

        me = os.getuid()
        uid, gid, first_uid = str(me), str(os.getgid()), me
        name = pwd.getpwuid(me).pw_name
        login_users = f"default_login_user = {name}\ndefault_internal_user = {name}\n"
        owner = None
    port = free_port()
    conf = directory / "dovecot.conf"
    conf.write_text(CONF.format(dir=directory, tag=directory.name, imap_port=port, uid=uid, gid=gid,
                                first_uid=first_uid, login_users=login_users))
    with (directory / "foreground.out").open("wb") as out:
        proc = subprocess.Popen([binary, "-F", "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT)
    server = Dovecot(directory, port, cert, proc, users, owner)
    deadline = time.monotonic() + 15
    while True:
        if proc.poll() is not None:
            log = (directory / "dovecot.log").read_text(errors="replace")
            raise SystemExit(f"bench: dovecot exited: {log}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                break
        except OSError:
            if time.monotonic() > deadline:
                stop(server)
                raise SystemExit("bench: dovecot did not start listening") from None
            time.sleep(0.05)
    return server


def stop(server: Dovecot, keep: bool = False) -> None:
    proc = server.proc
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    if not keep:
        shutil.rmtree(server.directory, ignore_errors=True)
