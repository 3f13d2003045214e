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
from mailrules.imap.errors import classify

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
        "check": "login", "status": "FAIL", "result": "authentication failed", "ms": 12.25,
        "hint": "check the password from $X", "details": {},
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
