"""The doctor's hint classifier on synthetic failures, its hostname matcher, its output and exit codes."""

from __future__ import annotations

import errno
import json
import smtplib
import socket
import ssl
from pathlib import Path

import pytest
from click.testing import CliRunner
from imapclient.exceptions import LoginError

from mailrules.cli import main
from mailrules.commands.doctor.mailboxes import mailbox_checks
from mailrules.commands.doctor.net import (
    Endpoint,
    NoGreeting,
    PlaintextRefused,
    StarttlsRefused,
    diagnose,
    hostname_matches,
)
from mailrules.commands.doctor.report import AccountReport, Check, Report, format_json, format_report
from mailrules.commands.doctor.smtp import smtp_checks
from mailrules.config import AccountSettings, Secret, SmtpSettings
from mailrules.dsl import ast as A
from mailrules.dsl.loader import load_rule_set
from mailrules.imap.commands import MailboxInfo
from mailrules.imap.errors import classify
from mailrules.imap.names import KNOWN_NAMESPACES, Namespaces

IMAP_PLAIN = Endpoint("IMAP", "mail.example.com", 143, "implicit", "me", "password_file /run/secrets/imap")
IMAP_TLS = Endpoint("IMAP", "mail.example.com", 993, "starttls", "me", "$IMAP_PASSWORD")
IMAP_OK = Endpoint("IMAP", "mail.example.com", 993, "implicit", "me", "$IMAP_PASSWORD")
SMTP = Endpoint("SMTP", "smtp.example.com", 587, "implicit", "bot", "$SMTP_PASSWORD")


def cert_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    text = f"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {message}"
    exc = ssl.SSLCertVerificationError(1, text)
    exc.verify_code = code
    exc.verify_message = message
    return exc


def test_wrong_version_number_means_implicit_tls_on_a_plaintext_port() -> None:
    exc = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)")
    result, hint = diagnose(exc, IMAP_PLAIN)
    assert "wrong version number" in result
    assert hint == 'port 143 speaks plaintext/STARTTLS: use tls = "starttls" or port 993'


def test_wrong_version_number_on_smtp_names_the_smtp_port() -> None:
    exc = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)")
    _, hint = diagnose(exc, SMTP)
    assert hint == 'port 587 speaks plaintext/STARTTLS: use tls = "starttls" or port 465'


def test_no_greeting_means_starttls_on_an_implicit_port() -> None:
    result, hint = diagnose(NoGreeting("nothing received within 5 s"), IMAP_TLS)
    assert result.startswith("no IMAP greeting")
    assert 'use tls = "implicit" or port 143' in hint


def test_starttls_refused_points_to_implicit_tls() -> None:
    result, hint = diagnose(StarttlsRefused("STARTTLS refused: BAD Unknown command"), IMAP_TLS)
    assert result == "STARTTLS refused: BAD Unknown command"
    assert 'use tls = "implicit" (port 993)' in hint


def test_eof_during_the_handshake() -> None:
    exc = ssl.SSLEOFError(8, "[SSL: UNEXPECTED_EOF_WHILE_READING] EOF occurred in violation of protocol")
    result, hint = diagnose(exc, IMAP_OK)
    assert "closed the connection during the TLS handshake" in result and "TLS version" in hint


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        (10, "certificate has expired", "has expired"),
        (18, "self-signed certificate", 'set ca_file = "/path/to/ca.pem"'),
        (20, "unable to get local issuer certificate", "private CA"),
        (62, "Hostname mismatch, certificate is not valid for 'mail.example.com'.", "does not name"),
    ],
)
def test_certificate_failures(code: int, message: str, expected: str) -> None:
    result, hint = diagnose(cert_error(code, message), IMAP_OK)
    assert result == f"certificate failed verification: {message}"
    assert expected in hint
    assert "ca_file" in hint


def test_certificate_failure_wrapped_by_imap_classify_keeps_its_hint() -> None:
    original = cert_error(18, "self-signed certificate")
    try:
        raise classify(original, context="a: connect") from original
    except Exception as wrapped:
        _, hint = diagnose(wrapped, IMAP_OK)
    assert "self-signed" in hint


def test_connection_refused() -> None:
    result, hint = diagnose(ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), IMAP_OK)
    assert result == "connection refused by mail.example.com:993"
    assert "nothing listens there" in hint and "firewall" in hint


def test_dns_failure() -> None:
    result, hint = diagnose(socket.gaierror(socket.EAI_NONAME, "Name or service not known"), IMAP_OK)
    assert result == "cannot resolve 'mail.example.com': Name or service not known"
    assert "host name" in hint and "DNS" in hint


def test_timeout() -> None:
    result, hint = diagnose(TimeoutError("timed out"), IMAP_OK)
    assert "timed out" in result and "firewall" in hint


def test_unreachable() -> None:
    result, hint = diagnose(OSError(errno.EHOSTUNREACH, "No route to host"), IMAP_OK)
    assert "unreachable" in result and "route" in hint


def test_login_error_names_the_password_source_not_the_password() -> None:
    exc = LoginError("b'[AUTHENTICATIONFAILED] Authentication failed.'")
    result, hint = diagnose(exc, IMAP_OK)
    assert result == "authentication failed: [AUTHENTICATIONFAILED] Authentication failed."
    assert "$IMAP_PASSWORD" in hint and "'me'" in hint


def test_login_error_as_raised_by_imap_session() -> None:
    original = LoginError("b'[AUTHENTICATIONFAILED] Authentication failed.'")
    try:
        raise classify(original, context="a (host): connect") from original
    except Exception as wrapped:
        result, hint = diagnose(wrapped, IMAP_OK)
    assert result.startswith("authentication failed: [AUTHENTICATIONFAILED]")
    assert "$IMAP_PASSWORD" in hint


def test_smtp_authentication_failure() -> None:
    exc = smtplib.SMTPAuthenticationError(535, b"5.7.8 Authentication credentials invalid")
    result, hint = diagnose(exc, SMTP)
    assert result == "authentication failed: 535 5.7.8 Authentication credentials invalid"
    assert "$SMTP_PASSWORD" in hint


def test_inline_password_is_named_as_the_config_file() -> None:
    ep = Endpoint("IMAP", "h", 993, "implicit", "me", "password")
    _, hint = diagnose(LoginError("[AUTHENTICATIONFAILED] no"), ep)
    assert "the password in the config file" in hint


def test_plaintext_refused() -> None:
    result, hint = diagnose(PlaintextRefused("tls = none"), IMAP_PLAIN)
    assert "unencrypted" in result and "allow_insecure = true" in hint


@pytest.mark.parametrize(
    ("host", "sans", "expected"),
    [
        ("mail.example.com", [("DNS", "mail.example.com")], True),
        ("MAIL.example.com", [("DNS", "*.example.com")], True),
        ("a.b.example.com", [("DNS", "*.example.com")], False),
        ("example.com", [("DNS", "*.example.com")], False),
        ("127.0.0.1", [("IP Address", "127.0.0.1")], True),
        ("127.0.0.1", [("DNS", "127.0.0.1")], False),
        ("::1", [("IP Address", "0:0:0:0:0:0:0:1\n")], True),
        ("other.example.com", [("DNS", "mail.example.com")], False),
    ],
)
def test_hostname_matching(host: str, sans: list[tuple[str, str]], expected: bool) -> None:
    assert hostname_matches(host, sans) is expected


# -- report, output, SMTP needs -------------------------------------------------------------------


def sample() -> Report:
    report = Report([Check("config", "OK", "/etc/mailrules.toml")])
    acct = AccountReport("work", "me@h:993, tls = implicit")
    acct.checks = [
        Check("DNS", "OK", "h -> 192.0.2.1", 0.4),
        Check("login", "FAIL", "authentication failed", 12.25, "check the password from $X"),
        Check("capability MOVE", "INFO", "absent: moves are COPY + \\Deleted + UID EXPUNGE"),
    ]
    report.accounts.append(acct)
    return report


def test_text_table_has_times_and_hints() -> None:
    text = format_report(sample())
    assert "account 'work': me@h:993, tls = implicit" in text
    assert "FAIL  login" in text and "12.2 ms" in text
    assert "hint: check the password from $X" in text
    assert text.endswith("1 check(s) failed")


def test_json_output() -> None:
    data = json.loads(format_json(sample()))
    assert data["ok"] is False and data["accounts"]["work"]["ok"] is False
    assert data["accounts"]["work"]["checks"][1] == {
        "check": "login",
        "status": "FAIL",
        "result": "authentication failed",
        "ms": 12.25,
        "hint": "check the password from $X",
        "details": {},
    }


def test_info_and_warn_do_not_fail() -> None:
    report = sample()
    report.accounts[0].checks[1].status = "WARN"
    assert report.ok


def _account(smtp: SmtpSettings | None = None) -> AccountSettings:
    return AccountSettings("work", "h", 993, "implicit", "me", Secret("pw", "$PW"), smtp=smtp)


def _rules(tmp_path: Path, text: str) -> list[A.Rule]:
    (tmp_path / "a.rules").write_text(text)
    return list(load_rule_set(tmp_path / "a.rules").rule_set.rules)


def test_forwarding_rule_without_smtp_fails(tmp_path: Path) -> None:
    rules = _rules(tmp_path, 'rule "fwd" { when subject contains "x" then forward to "a@example.org" }\n')
    rows: list[Check] = []
    smtp_checks(_account(), rules, 1.0, rows)
    assert [(r.check, r.status) for r in rows] == [("SMTP", "FAIL")]
    assert "'fwd'" in rows[0].result and "[accounts.work.smtp]" in rows[0].hint


def test_no_smtp_and_no_forwarding_is_fine(tmp_path: Path) -> None:
    rules = _rules(tmp_path, 'rule "r" { when subject contains "x" then mark read }\n')
    rows: list[Check] = []
    smtp_checks(_account(), rules, 1.0, rows)
    assert [(r.check, r.status) for r in rows] == [("SMTP", "INFO")]


def test_smtp_plaintext_without_allow_insecure_is_refused(tmp_path: Path) -> None:
    smtp = SmtpSettings("s", 25, "none", "bot", Secret("pw", "$S"), "bot@example.com")
    rules = _rules(tmp_path, 'rule "fwd" { when subject contains "x" then redirect to "a@example.org" }\n')
    rows: list[Check] = []
    smtp_checks(_account(smtp), rules, 1.0, rows)
    assert [(r.check, r.status) for r in rows] == [("SMTP TLS", "FAIL")]
    assert "allow_insecure" in rows[0].hint


# -- mailbox rows (issue 12: names as the server spells them) -------------------------------------------


class FakeLister:
    """What the mailbox rows ask of a session: its namespaces, LIST and the special uses LIST shows."""

    def __init__(self, ns: Namespaces, names: list[str], special: dict[str, str] | None = None) -> None:
        self.namespaces = ns
        self.special = special or {}
        marks = {v: k for k, v in self.special.items()}
        self.listing = [
            MailboxInfo(n, ns.separator, frozenset({marks[n]} if n in marks else set())) for n in names
        ]

    def list_mailboxes(self, pattern: str = "*") -> list[MailboxInfo]:
        return list(self.listing)

    def special_use(self) -> dict[str, str]:
        return dict(self.special)


CYRUS = KNOWN_NAMESPACES["cyrus"]
CYRUS_RULES = """\
rule "py" in "Lists/python" { when subject contains "x" then move to "Lists/old" }
rule "bin" { when subject contains "spam" then delete }
rule "keep" { when subject contains "keep" then archive }
"""


def _mailbox_rows(
    tmp_path: Path, lister: FakeLister, rules: str, account: AccountSettings | None = None
) -> list[Check]:
    rows: list[Check] = []
    mailbox_checks(lister, account or _account(), _rules(tmp_path, rules), rows)
    return rows


def _by_name(rows: list[Check], name: str) -> list[Check]:
    return [r for r in rows if r.check == name]


def test_a_portable_name_is_found_under_the_servers_name(tmp_path: Path) -> None:
    # Cyrus lists INBOX.Lists.python: the rules' "Lists/python" exists (it was reported missing)
    lister = FakeLister(CYRUS, ["INBOX", "INBOX.Lists", "INBOX.Lists.python"])
    rows = _mailbox_rows(tmp_path, lister, CYRUS_RULES)
    [python] = _by_name(rows, "mailbox 'Lists/python'")
    assert (python.status, python.result) == (
        "OK",
        "'Lists/python' (on the server 'INBOX.Lists.python') exists (rules read it)",
    )
    [old] = _by_name(rows, "mailbox 'Lists/old'")
    assert old.status == "OK" and "will be created when first used" in old.result
    assert [r.result for r in _by_name(rows, "mailbox names")] == [
        "personal prefix 'INBOX.', separator '.', from NAMESPACE",
        "names in rules and configuration use \"/\" between levels: 'Lists/python' is 'INBOX.Lists.python'",
        "a name starting with 'INBOX.' is the server's own and is used as written",
        "a level cannot contain '.' (it separates levels on this server)",
        "'Lists/python' -> 'INBOX.Lists.python'",
        "'Lists/old' -> 'INBOX.Lists.old'",
    ]


def test_a_name_the_server_lists_is_not_mapped_again(tmp_path: Path) -> None:
    # the server marks INBOX.Deleted Messages \Trash; a rule reads "INBOX.Lists" (the prefix as written)
    lister = FakeLister(
        CYRUS, ["INBOX", "INBOX.Lists", "INBOX.Deleted Messages"], {"\\Trash": "INBOX.Deleted Messages"}
    )
    rule = 'rule "l" in "INBOX.Lists" { when subject contains "x" then delete }\n'
    rows = _mailbox_rows(tmp_path, lister, rule)
    [trash] = _by_name(rows, "trash")
    assert trash.status == "OK"
    assert trash.result == (
        "'Deleted Messages' is 'INBOX.Deleted Messages' (the server's \\Trash mailbox): exists"
    )
    assert trash.details["source"] == "SPECIAL-USE"
    assert _by_name(rows, "mailbox 'INBOX.Lists'")[0].status == "OK"


def test_destinations_say_where_trash_and_archive_go(tmp_path: Path) -> None:
    lister = FakeLister(CYRUS, ["INBOX"])
    account = AccountSettings("work", "h", 993, "implicit", "me", Secret("pw", "$PW"), create_mailboxes=False)
    rows = _mailbox_rows(tmp_path, lister, CYRUS_RULES, account)
    assert [r.result for r in _by_name(rows, "destinations")] == ["separator '.', personal prefix 'INBOX.'"]
    statuses = {r.check: r.status for r in rows if r.check in ("trash", "archive", "junk", "sent")}
    # rules delete and archive: those must exist; nothing uses Junk or Sent
    assert statuses == {"trash": "FAIL", "archive": "FAIL", "junk": "INFO", "sent": "INFO"}
    [trash] = _by_name(rows, "trash")
    assert trash.hint == "create 'INBOX.Trash' on the server, or set create_mailboxes = true"
    # with create_mailboxes, the summary says where Trash will be
    rows = _mailbox_rows(tmp_path, lister, CYRUS_RULES)
    assert [r.result for r in _by_name(rows, "destinations")] == [
        "separator '.', personal prefix 'INBOX.'; Trash will be 'INBOX.Trash' (created on first use)"
    ]
    assert {r.status for r in rows if r.check in ("trash", "archive")} == {"OK"}


def test_names_that_cannot_exist_fail_with_where_they_are_written(tmp_path: Path) -> None:
    lister = FakeLister(CYRUS, ["INBOX"])
    account = AccountSettings("work", "h", 993, "implicit", "me", Secret("pw", "$PW"), archive="Old.Mail")
    rows = _mailbox_rows(
        tmp_path, lister, 'rule "v" in "v1.2" { when subject contains "x" then archive }\n', account
    )
    failed = [r for r in _by_name(rows, "mailbox names") if r.status == "FAIL"]
    assert [r.result.split(":")[0] for r in failed] == [
        "mailbox 'v1.2' cannot exist on this server",
        "mailbox 'Old.Mail' cannot exist on this server",
    ]
    assert failed[0].hint == f"written at {tmp_path / 'a.rules'}:1"
    assert failed[1].hint == "set by accounts.work.archive in the configuration"
    assert not _by_name(rows, "mailbox 'v1.2'")  # not also reported as merely missing
    [archive] = _by_name(rows, "archive")
    assert archive.status == "FAIL"
    assert archive.result.startswith("'Old.Mail' (configured): mailbox 'Old.Mail' cannot exist")


def test_names_used_as_written_are_not_listed(tmp_path: Path) -> None:
    lister = FakeLister(
        KNOWN_NAMESPACES["dovecot"],
        ["INBOX", "Lists", "Lists/python", "Trash", "Archive"],
        {"\\Trash": "Trash", "\\Archive": "Archive"},
    )
    rows = _mailbox_rows(tmp_path, lister, CYRUS_RULES)
    assert [r.result for r in _by_name(rows, "mailbox names")] == [
        "personal prefix '', separator '/', from NAMESPACE",
        'names in rules and configuration are used as written ("/" between levels)',
    ]
    assert _by_name(rows, "mailbox 'Lists/python'")[0].result == "'Lists/python' exists (rules read it)"
    assert {r.status for r in rows if r.check in ("trash", "archive")} == {"OK"}


# -- the command ------------------------------------------------------------------------------


def test_invalid_config_exits_78(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[accounts.a]\nhost = "h"\nbogus = 1\n')
    result = CliRunner().invoke(main, ["doctor", "--config", str(config)])
    assert result.exit_code == 78


def test_unknown_account_is_a_usage_error(tmp_path: Path) -> None:
    config = tmp_path / "ok.toml"
    config.write_text('[accounts.a]\nhost = "h"\nusername = "u"\npassword = "p"\n')
    result = CliRunner().invoke(main, ["doctor", "--config", str(config), "--account", "zz"])
    assert result.exit_code == 2 and "no account named zz" in result.output
