"""The gmail/google presets name no archive or trash: a localised Gmail account's SPECIAL-USE
mailboxes are where `archive` and `delete` go, and `archive`/`trash` in the configuration override them."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from mailrules.accounts import Account
from mailrules.compile import Dialect
from mailrules.config import AccountSettings, load_config
from mailrules.dsl.parser import parse_text
from mailrules.engine.core import Engine
from mailrules.engine.ports import ARCHIVED_LABEL, RunOptions
from mailrules.imap.dialects import describe_dialect
from tests.fakes import FakeServer, FakeStore
from tests.unit.test_gmail_dialect import LIST_ANSWER, gmail_session

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
GMAIL = Dialect.named("gmail")
ALL, TRASH = "[Google Mail]/Alle Nachrichten", "[Google Mail]/Papierkorb"
#: what the store of a German account gives (imap/store.py: Gmail's \All stands for \Archive)
GERMAN = {"\\All": ALL, "\\Archive": ALL, "\\Junk": "[Google Mail]/Spam", "\\Trash": TRASH}
RULES = """
rule "archive" in "INBOX", "Work" { when subject contains "old" then archive }
rule "delete" in "INBOX" { when subject contains "junk" then delete }
"""


def settings(
    tmp_path: Path, extra: str = "", env: dict[str, str] | None = None, provider: str = "gmail"
) -> AccountSettings:
    path = tmp_path / "mailrules.toml"
    path.write_text(
        f'[accounts.g]\nprovider = "{provider}"\nusername = "me@gmail.com"\npassword = "pw"\n{extra}',
        encoding="utf-8",
    )
    return load_config(path, env=env or {}).accounts["g"]


def run(account: AccountSettings) -> FakeServer:
    """INBOX: one message to archive, one to delete; Work (a label): one to archive."""
    rf, diags = parse_text(RULES, "g.rules")
    assert rf is not None and not diags, [d.message for d in diags]
    server = FakeServer()
    for box, subject in (("INBOX", "old news"), ("INBOX", "junk offer"), ("Work", "old report")):
        raw = f"From: a@example.com\r\nSubject: {subject}\r\n\r\nbody\r\n".encode()
        server.append(box, raw, [ARCHIVED_LABEL] if box == "Work" else [])
    for box in (ALL, TRASH):
        server.mailbox(box)
    store = FakeStore(server, GMAIL, NOW, dict(GERMAN))
    engine = Engine(RunOptions(NOW, dt.UTC, "run"))
    context = Account(account).context()
    for mailbox in ("INBOX", "Work"):
        engine.process(store, context, mailbox, rf.rules)
    return server


def subjects(server: FakeServer, mailbox: str) -> list[str]:
    return sorted(
        m.raw.split(b"Subject: ")[1].split(b"\r\n")[0].decode()
        for m in server.mailbox(mailbox).messages.values()
    )


@pytest.mark.parametrize("provider", ["gmail", "google"])
def test_a_german_account_archives_and_deletes_into_its_special_use_mailboxes(
    tmp_path: Path, provider: str
) -> None:
    server = run(settings(tmp_path, provider=provider))
    assert subjects(server, ALL) == ["old news"]
    assert subjects(server, TRASH) == ["junk offer"]
    assert subjects(server, "INBOX") == []
    # from a label's mailbox, archive into the \All mailbox is Gmail's: the Inbox label goes, in place
    (work,) = server.mailbox("Work").messages.values()
    assert ARCHIVED_LABEL not in work.flags | work.labels
    # no English mailbox made up beside the account's own
    assert not [name for name in server.mailboxes if name.startswith("[Gmail]")]


def test_archive_and_trash_in_the_file_are_the_users_override(tmp_path: Path) -> None:
    account = settings(tmp_path, 'archive = "Ablage"\ntrash = "Weg"\n')
    assert (account.archive, account.trash) == ("Ablage", "Weg")
    server = run(account)
    assert subjects(server, "Ablage") == ["old news", "old report"]  # a move: Ablage is not \All
    assert subjects(server, "Weg") == ["junk offer"]
    assert subjects(server, ALL) == subjects(server, TRASH) == []


def test_the_environment_overrides_too(tmp_path: Path) -> None:
    account = settings(tmp_path, env={"MAILRULES_ACCOUNTS__G__TRASH": "[Google Mail]/Bin"})
    assert (account.archive, account.trash) == (None, "[Google Mail]/Bin")
    server = run(account)
    assert subjects(server, "[Google Mail]/Bin") == ["junk offer"]
    assert subjects(server, ALL) == ["old news"]


def test_without_special_use_the_english_names_are_found_by_name() -> None:
    # A server like Gmail that marks nothing: the store finds "[Gmail]/All Mail" and "[Gmail]/Trash"
    # by their names (imap/special_use.py), as the presets' names did before.
    bare = [
        re.sub(rb" \\(All|Drafts|Important|Sent|Junk|Flagged|Trash)\b", b"", line) for line in LIST_ANSWER
    ]
    assert not [line for line in bare if b"\\Trash" in line or b"\\All" in line]
    caps = "IMAP4rev1 UNSELECT IDLE NAMESPACE QUOTA ID XLIST CHILDREN X-GM-EXT-1 UIDPLUS MOVE"
    s, _, _ = gmail_session(lambda t, c: [*bare, t + b" OK Success"], caps=caps)
    uses = s.special_use()
    assert (uses["\\Archive"], uses["\\Trash"]) == ("[Gmail]/All Mail", "[Gmail]/Trash")


def test_doctor_names_the_german_mailboxes_and_the_overrides() -> None:
    text = "\n".join(describe_dialect(GMAIL, special_use=GERMAN))
    assert f"archive from INBOX moves to {ALL};" in text
    assert f"delete moves to {TRASH} (every label goes)" in text
    assert "[Gmail]" not in text
    text = "\n".join(describe_dialect(GMAIL, special_use=GERMAN, archive="Ablage", trash="Weg"))
    assert f"archive moves to Ablage (the configured archive; All Mail is {ALL})" in text
    assert (
        f"delete moves to Weg (the configured trash, not Gmail's {TRASH}: the message stays in {ALL})" in text
    )
    assert f"delete permanently moves to {TRASH} and expunges it from there" in text
    # an override that names the server's own mailbox says what Gmail does there
    text = "\n".join(describe_dialect(GMAIL, special_use=GERMAN, archive=ALL, trash=TRASH))
    assert f"archive from INBOX moves to {ALL};" in text and f"delete moves to {TRASH} (every" in text
