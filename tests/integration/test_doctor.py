"""`mailrules doctor` against the private Dovecot, Cyrus (each namespace), pymap and an aiosmtpd sink:
one config per case."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from click.testing import CliRunner

from mailrules.cli import main
from mailrules.imap.session import ImapSession
from tests.integration.cyrus import CyrusServer
from tests.integration.servers import DovecotServer, PymapServer, free_port

RULES = """\
rule "done" { when subject contains "done" then move to "Done" }
rule "bin" { when subject contains "spam" then delete }
rule "keep" { when subject contains "keep" then archive }
"""
FORWARD = 'rule "fwd" { when subject contains "receipt" then forward to "acc@example.org" }\n'
SMTP_USER, SMTP_PASSWORD = "bot", "smtp-Pa55word"

pytestmark = pytest.mark.integration


def doctor(
    tmp_path: Path,
    account: str,
    *args: str,
    rules: str = RULES,
    env: dict[str, str] | None = None,
    extra: str = "",
) -> tuple[int, dict[str, Any], str]:
    """Run `mailrules doctor --json` on a config with one account "a"; (exit code, JSON, text output)."""
    (tmp_path / "rules.d").mkdir(exist_ok=True)
    (tmp_path / "rules.d" / "a.rules").write_text(rules)
    config = tmp_path / "mailrules.toml"
    head = 'rules = "rules.d"\nstate = "state.db"\n[accounts.a]\nhost = "127.0.0.1"\n'
    config.write_text(f"{head}{account}\n{extra}")
    runner = CliRunner()
    result = runner.invoke(main, ["doctor", "--config", str(config), "--json", *args], env=env)
    text = runner.invoke(main, ["doctor", "--config", str(config), *args], env=env)
    assert text.exit_code == result.exit_code, text.output
    data = json.loads(result.stdout) if result.stdout.startswith("{") else {}
    return result.exit_code, data, text.output


def rows(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["check"]: c for c in data["accounts"]["a"]["checks"]}


def results(data: dict[str, Any], name: str) -> list[str]:
    """The results of every row named `name` (the dialect and the names take several), in order."""
    return [c["result"] for c in data["accounts"]["a"]["checks"] if c["check"] == name]


def dovecot_account(
    dovecot: DovecotServer,
    tls: str = "starttls",
    *,
    port: int | None = None,
    ca: str | None = None,
    password: str | None = None,
) -> tuple[str, str]:
    """The [accounts.a] body for a fresh Dovecot user, and that user's real password."""
    user, real = dovecot.fresh_user()
    port = port or (dovecot.imaps_port if tls == "implicit" else dovecot.imap_port)
    body = (
        f'port = {port}\ntls = "{tls}"\nusername = "{user}"\npassword = "{password or real}"\n'
        f'ca_file = "{ca or dovecot.ca_file}"\n'
    )
    return body, real


def test_healthy_starttls_account(dovecot: DovecotServer, tmp_path: Path) -> None:
    account, password = dovecot_account(dovecot)
    code, data, text = doctor(tmp_path, account)
    checks = rows(data)
    assert code == 0, text
    assert data["ok"] is True
    informative = {"SMTP", "dialect", "mailbox names", "destinations"}
    every = data["accounts"]["a"]["checks"]
    assert all(c["status"] == ("INFO" if c["check"] in informative else "OK") for c in every), text
    for cap in ("IDLE", "MOVE", "UIDPLUS", "CONDSTORE", "ESEARCH", "WITHIN", "SPECIAL-USE", "NOTIFY"):
        assert checks[f"capability {cap}"]["result"] == "present"
    tls = checks["TLS handshake"]
    assert tls["details"]["protocol"].startswith("TLSv1")
    assert tls["details"]["subject"] == "CN=localhost" and tls["details"]["hostname_matches"] is True
    assert checks["archive"]["result"] == "'Archive' (the server's \\Archive mailbox): exists"
    assert checks["trash"]["result"] == "'Trash' (the server's \\Trash mailbox): exists"
    assert checks["trash"]["details"] == {
        "mailbox": "Trash",
        "server": "Trash",
        "source": "SPECIAL-USE",
        "exists": True,
    }
    uses = ["trash", "archive", "junk", "sent"]
    assert [n for n in checks if n in uses] == uses and all(checks[n]["details"]["exists"] for n in uses)
    # names map as written here: the mapping is said, no name is listed
    assert results(data, "mailbox names") == [
        "personal prefix '', separator '/', from NAMESPACE",
        'names in rules and configuration are used as written ("/" between levels)',
    ]
    assert results(data, "destinations") == ["separator '/', personal prefix ''"]
    assert results(data, "dialect") == [
        "IMAP server (a), budget 5 connections: it has every extension mailrules uses"
    ]
    assert "will be created" in checks["mailbox 'Done'"]["result"]
    assert all(isinstance(checks[n]["ms"], float) for n in ("DNS", "TCP connect", "TLS handshake", "login"))
    assert "everything needed works" in text and " ms " in text
    assert password not in text and password not in json.dumps(data)


def test_implicit_tls_on_the_imaps_port(dovecot: DovecotServer, tmp_path: Path) -> None:
    account, _ = dovecot_account(dovecot, "implicit")
    code, data, text = doctor(tmp_path, account)
    assert code == 0, text
    assert rows(data)["TLS handshake"]["status"] == "OK"
    assert rows(data)["login"]["status"] == "OK"


def test_implicit_tls_on_the_plaintext_port_says_wrong_port(dovecot: DovecotServer, tmp_path: Path) -> None:
    account, _ = dovecot_account(dovecot, "implicit", port=dovecot.imap_port)
    code, data, text = doctor(tmp_path, account)
    tls = rows(data)["TLS handshake"]
    assert code == 1
    assert tls["status"] == "FAIL" and "wrong version number" in tls["result"]
    wanted = f'port {dovecot.imap_port} speaks plaintext/STARTTLS: use tls = "starttls" or port 993'
    assert wanted in tls["hint"]
    assert rows(data)["login"]["status"] == "SKIP"
    assert "hint: port" in text


def test_starttls_on_the_imaps_port_gets_no_greeting(dovecot: DovecotServer, tmp_path: Path) -> None:
    account, _ = dovecot_account(dovecot, "starttls", port=dovecot.imaps_port)
    code, data, _ = doctor(tmp_path, account, "--timeout", "1")
    tls = rows(data)["TLS handshake"]
    assert code == 1 and tls["status"] == "FAIL"
    assert "no IMAP greeting" in tls["result"] and 'use tls = "implicit"' in tls["hint"]


def test_wrong_ca_still_shows_the_certificate(dovecot: DovecotServer, wrong_ca: str, tmp_path: Path) -> None:
    account, _ = dovecot_account(dovecot, ca=wrong_ca)
    code, data, _ = doctor(tmp_path, account)
    tls = rows(data)["TLS handshake"]
    assert code == 1 and tls["status"] == "FAIL"
    assert "certificate failed verification" in tls["result"]
    assert "NOT verified" in tls["result"] and "subject CN=localhost" in tls["result"]
    assert tls["details"]["verified"] is False
    assert "ca_file" in tls["hint"]
    assert rows(data)["login"]["status"] == "SKIP"


def test_wrong_password_names_its_source_never_the_value(dovecot: DovecotServer, tmp_path: Path) -> None:
    user, real = dovecot.fresh_user()
    account = (
        f'port = {dovecot.imap_port}\ntls = "starttls"\nusername = "{user}"\n'
        f'password_env = "DOCTOR_PW"\nca_file = "{dovecot.ca_file}"\n'
    )
    code, data, text = doctor(tmp_path, account, env={"DOCTOR_PW": "not-" + real})
    login = rows(data)["login"]
    assert code == 1 and login["status"] == "FAIL"
    assert login["result"].startswith("authentication failed") and "AUTHENTICATIONFAILED" in login["result"]
    assert "$DOCTOR_PW" in login["hint"] and repr(user) in login["hint"]
    assert "not-" + real not in text and "not-" + real not in json.dumps(data)


def test_port_nobody_listens_on_is_refused(dovecot: DovecotServer, tmp_path: Path) -> None:
    account, _ = dovecot_account(dovecot, port=free_port())
    code, data, _ = doctor(tmp_path, account)
    tcp = rows(data)["TCP connect"]
    assert code == 1 and tcp["status"] == "FAIL" and "connection refused" in tcp["result"]
    assert "nothing listens there" in tcp["hint"]


def test_plaintext_without_allow_insecure_is_refused_before_login(
    dovecot: DovecotServer, tmp_path: Path
) -> None:
    account, _ = dovecot_account(dovecot, "none")
    code, data, _ = doctor(tmp_path, account)
    checks = rows(data)
    assert code == 1
    assert checks["TLS"]["status"] == "FAIL" and "allow_insecure" in checks["TLS"]["hint"]
    assert checks["login"]["status"] == "SKIP"
    assert "TCP connect" not in checks  # refused before any connection


def test_plaintext_with_allow_insecure_warns_but_passes(dovecot: DovecotServer, tmp_path: Path) -> None:
    account, _ = dovecot_account(dovecot, "none")
    code, data, text = doctor(tmp_path, account + "allow_insecure = true\n")
    assert code == 0, text
    assert rows(data)["TLS"]["status"] == "WARN" and rows(data)["login"]["status"] == "OK"


def test_missing_source_mailbox_fails(dovecot: DovecotServer, tmp_path: Path) -> None:
    account, _ = dovecot_account(dovecot)
    rules = 'rule "r" in "Nowhere" { when subject contains "x" then mark read }\n'
    code, data, _ = doctor(tmp_path, account + "create_mailboxes = false\n", rules=rules + RULES)
    checks = rows(data)
    assert code == 1
    assert checks["mailbox 'Nowhere'"]["status"] == "FAIL"
    assert checks["mailbox 'Done'"]["status"] == "FAIL"
    assert "create_mailboxes" in checks["mailbox 'Done'"]["hint"]


def test_pymap_without_special_use_falls_back_to_names(pymap: PymapServer, tmp_path: Path) -> None:
    # the names test_imap_special_use creates too (CREATE of an existing mailbox is fine)
    with ImapSession.connect(pymap.params()) as session:
        session.create("Archives")
        session.create("Deleted Messages")
    account = (
        f'port = {pymap.port}\ntls = "starttls"\nusername = "{pymap.username}"\n'
        f'password = "{pymap.password}"\nca_file = "{pymap.ca_file}"\n'
    )
    code, data, text = doctor(tmp_path, account)
    checks = rows(data)
    assert code == 0, text
    assert checks["capability SPECIAL-USE"]["status"] == "INFO"
    special_use = checks["capability SPECIAL-USE"]["result"]
    assert special_use.startswith("absent: archive and trash are found by name")
    fallback = "name fallback (no SPECIAL-USE mark)"
    assert checks["archive"]["details"] == {
        "mailbox": "Archives",
        "server": "Archives",
        "source": fallback,
        "exists": True,
    }
    assert checks["trash"]["details"]["mailbox"] == "Deleted Messages"
    assert "'Archives' (the server's \\Archive mailbox): exists" in text
    no_namespace = "personal prefix '', separator '/', from no NAMESPACE; LIST \"\" \"\""
    assert results(data, "mailbox names")[0] == no_namespace
    by_name = "no SPECIAL-USE: Trash and Archive found by name (Archive = Archives, Trash = Deleted Messages)"
    assert by_name in results(data, "dialect")


CYRUS_RULES = """\
rule "py" in "Lists/python" { when subject contains "x" then mark read }
rule "done" { when subject contains "done" then move to "Filed/done" }
rule "bin" { when subject contains "spam" then delete }
rule "keep" { when subject contains "keep" then archive }
"""


def cyrus_account(server: CyrusServer, *, mailboxes: tuple[str, ...] = ()) -> str:
    """The [accounts.a] body for a fresh Cyrus user (STARTTLS), with `mailboxes` created (portable names)."""
    user, password = server.fresh_user()
    with ImapSession.connect(server.params(user, tls="starttls")) as session:
        for box in mailboxes:
            session.create(box)
    return (
        f'port = {server.port}\ntls = "starttls"\nusername = "{user}"\npassword = "{password}"\n'
        f'ca_file = "{server.ca_file}"\n'
    )


def test_cyrus_names_and_destinations_in_each_namespace(cyrus_each: CyrusServer, tmp_path: Path) -> None:
    variant = cyrus_each.variant
    prefix, sep = variant.personal_prefix, variant.separator
    code, data, text = doctor(
        tmp_path, cyrus_account(cyrus_each, mailboxes=("Lists/python",)), rules=CYRUS_RULES
    )
    checks = rows(data)
    assert code == 0, text
    # the portable name is found under its server name (it was reported missing before)
    server_name, filed = f"{prefix}Lists{sep}python", f"{prefix}Filed{sep}done"
    names = results(data, "mailbox names")
    assert names[0] == f"personal prefix {prefix!r}, separator {sep!r}, from NAMESPACE"
    python = checks["mailbox 'Lists/python'"]
    assert python["status"] == "OK", text
    if server_name == "Lists/python":  # altnamespace with "/": names are used as written
        assert python["result"] == "'Lists/python' exists (rules read it)"
        assert len(names) == 2
    else:
        assert python["details"] == {
            "mailbox": "Lists/python",
            "source": "rules read it",
            "server": server_name,
        }
        assert python["result"] == f"'Lists/python' (on the server {server_name!r}) exists (rules read it)"
        assert checks["mailbox 'Filed/done'"]["result"] == (
            f"'Filed/done' (on the server {filed!r}) will be created when first used (rules file into it)"
        )
        assert f"'Lists/python' -> {server_name!r}" in names and f"'Filed/done' -> {filed!r}" in names
    # a fresh Cyrus user has no Trash: the default in the personal namespace, created on first use
    trash = f"{prefix}Trash"
    assert results(data, "destinations") == [
        f"separator {sep!r}, personal prefix {prefix!r}; Trash will be {trash!r} (created on first use)"
    ]
    shown = "'Trash'" if trash == "Trash" else f"'Trash' is {trash!r}"
    assert checks["trash"]["result"] == (
        f"{shown} (no \\Trash mailbox: the default name in the personal namespace): missing, created on "
        "first use"
    )
    assert checks["trash"]["status"] == checks["archive"]["status"] == "OK"
    assert checks["trash"]["details"] == {
        "mailbox": "Trash",
        "server": trash,
        "source": "default",
        "exists": False,
    }
    assert results(data, "dialect")[0].startswith("IMAP server (a)")


def test_cyrus_refuses_a_name_that_cannot_exist_there(cyrus: CyrusServer, tmp_path: Path) -> None:
    rules = 'rule "v" in "v1.2" { when subject contains "x" then mark read }\n'
    account = cyrus_account(cyrus) + 'trash = "Deleted.Items"\ncreate_mailboxes = false\n'
    code, data, text = doctor(tmp_path, account, rules=rules + RULES)
    assert code == 1, text
    failed = [c for c in data["accounts"]["a"]["checks"] if c["status"] == "FAIL"]
    refused = {c["result"].split(" cannot exist")[0]: c for c in failed if c["check"] == "mailbox names"}
    assert set(refused) == {"mailbox 'v1.2'", "mailbox 'Deleted.Items'"}
    assert "'.' separates levels here" in refused["mailbox 'v1.2'"]["result"]
    assert refused["mailbox 'v1.2'"]["hint"] == f"written at {tmp_path / 'rules.d' / 'a.rules'}:1"
    assert refused["mailbox 'Deleted.Items'"]["hint"] == "set by accounts.a.trash in the configuration"
    assert "mailbox 'v1.2'" not in rows(data)  # no second row claiming it is merely missing
    trash = rows(data)["trash"]
    assert trash["status"] == "FAIL" and "cannot exist" in trash["result"]
    # with create_mailboxes = false, a destination that is missing fails
    done = rows(data)["mailbox 'Done'"]
    assert done["status"] == "FAIL" and done["hint"].startswith("create 'INBOX.Done' on the server")
    assert "cannot exist on this server" in text


# -- SMTP -------------------------------------------------------------------------------------


def test_forward_rule_without_smtp_fails(dovecot: DovecotServer, tmp_path: Path) -> None:
    account, _ = dovecot_account(dovecot)
    code, data, _ = doctor(tmp_path, account, rules=RULES + FORWARD)
    assert code == 1
    assert rows(data)["SMTP"]["status"] == "FAIL" and "'fwd'" in rows(data)["SMTP"]["result"]


class _Handler:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raise AssertionError("doctor must never send mail")


def _auth(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        SMTP_USER.encode(),
        SMTP_PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False)


def _smtp_server(cert: Path, key: Path, implicit: bool = False) -> Iterator[int]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    port = free_port()
    tls: dict[str, Any] = (
        {"ssl_context": ctx, "auth_require_tls": False}
        if implicit
        else {"tls_context": ctx, "require_starttls": True, "auth_require_tls": True}
    )
    controller = Controller(_Handler(), hostname="127.0.0.1", port=port, authenticator=_auth, **tls)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


@pytest.fixture
def smtp_starttls(dovecot: DovecotServer) -> Iterator[int]:
    """aiosmtpd with STARTTLS + AUTH, using the Dovecot certificate (so the account's ca_file fits)."""
    yield from _smtp_server(dovecot.directory / "ssl" / "cert.pem", dovecot.directory / "ssl" / "key.pem")


def _smtp_table(port: int, password: str, tls: str = "starttls") -> str:
    return (
        f'[accounts.a.smtp]\nhost = "127.0.0.1"\nport = {port}\ntls = "{tls}"\n'
        f'username = "{SMTP_USER}"\npassword = "{password}"\nfrom = "bot@example.com"\n'
    )


def test_smtp_implicit_tls(dovecot: DovecotServer, tmp_path: Path) -> None:
    ssl_dir = dovecot.directory / "ssl"
    for port in _smtp_server(ssl_dir / "cert.pem", ssl_dir / "key.pem", implicit=True):
        account, _ = dovecot_account(dovecot)
        code, data, text = doctor(
            tmp_path, account, rules=RULES + FORWARD, extra=_smtp_table(port, SMTP_PASSWORD, "implicit")
        )
        checks = rows(data)
        assert code == 0, text
        assert [n for n in checks if n.startswith("SMTP")] == [
            "SMTP DNS",
            "SMTP TCP connect",
            "SMTP TLS",
            "SMTP EHLO",
            "SMTP AUTH",
        ]
        assert all(checks[n]["status"] == "OK" for n in checks if n.startswith("SMTP")), text


def test_smtp_untrusted_certificate(dovecot: DovecotServer, wrong_ca: str, tmp_path: Path) -> None:
    for port in _smtp_server(Path(wrong_ca), Path(wrong_ca).with_name("key.pem")):
        account, _ = dovecot_account(dovecot)
        code, data, text = doctor(
            tmp_path, account, rules=RULES + FORWARD, extra=_smtp_table(port, SMTP_PASSWORD)
        )
        tls = rows(data)["SMTP TLS"]
        assert code == 1 and tls["status"] == "FAIL", text
        assert "certificate failed verification" in tls["result"] and "NOT verified" in tls["result"]
        assert tls["details"]["verified"] is False and "ca_file" in tls["hint"]
        assert "SMTP AUTH" not in rows(data)


def test_smtp_starttls_and_auth(dovecot: DovecotServer, smtp_starttls: int, tmp_path: Path) -> None:
    account, _ = dovecot_account(dovecot)
    code, data, text = doctor(
        tmp_path, account, rules=RULES + FORWARD, extra=_smtp_table(smtp_starttls, SMTP_PASSWORD)
    )
    checks = rows(data)
    assert code == 0, text
    for name in ("SMTP DNS", "SMTP TCP connect", "SMTP EHLO", "SMTP TLS", "SMTP AUTH"):
        assert checks[name]["status"] == "OK", text
    assert "STARTTLS" in checks["SMTP EHLO"]["details"]["extensions"]
    assert checks["SMTP TLS"]["details"]["verified"] is True
    assert SMTP_PASSWORD not in text


def test_smtp_wrong_password(dovecot: DovecotServer, smtp_starttls: int, tmp_path: Path) -> None:
    account, _ = dovecot_account(dovecot)
    code, data, text = doctor(
        tmp_path, account, rules=RULES + FORWARD, extra=_smtp_table(smtp_starttls, "wrong-one")
    )
    auth = rows(data)["SMTP AUTH"]
    assert code == 1 and auth["status"] == "FAIL"
    assert auth["result"].startswith("authentication failed: 535") and "password" in auth["hint"]
    assert "wrong-one" not in text


def test_smtp_failure_without_forwarding_rules_only_warns(dovecot: DovecotServer, tmp_path: Path) -> None:
    account, _ = dovecot_account(dovecot)
    code, data, text = doctor(tmp_path, account, extra=_smtp_table(free_port(), "x"))
    assert code == 0, text
    assert rows(data)["SMTP TCP connect"]["status"] == "WARN"
