"""`mailrules explain --server NAME` says how the rules' mailbox names map on that server (issue 12)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from click.testing import CliRunner

from mailrules.cli import main
from mailrules.commands.explain import explain_rule_set, names_block
from mailrules.compile.dialect import Dialect
from mailrules.dsl import ast as A
from mailrules.dsl.loader import load_rule_set

RULES = """\
rule "py" in "Lists/python" { when subject contains "x" then move to "Archive/{list}" }
rule "v" { when subject contains "y" then copy to "v1.2" }
"""


def _rules(tmp_path: Path) -> list[A.Rule]:
    (tmp_path / "a.rules").write_text(RULES)
    return list(load_rule_set(tmp_path / "a.rules").rule_set.rules)


def test_cyrus_names_map_under_the_inbox_prefix(tmp_path: Path) -> None:
    lines = names_block(_rules(tmp_path), "cyrus")
    assert lines[0] == "# mailbox names: personal prefix 'INBOX.', separator '.', from NAMESPACE"
    assert "#   'Lists/python' -> 'INBOX.Lists.python'" in lines
    assert "#   'Archive/x' -> 'INBOX.Archive.x'" in lines  # a placeholder shown as one level, x
    assert "#   'INBOX' -> 'INBOX'" in lines
    refused = [line for line in lines if line.startswith("#   'v1.2': ")]
    assert len(refused) == 1 and "cannot exist on this server" in refused[0]


def test_a_server_without_a_known_namespace_points_to_doctor(tmp_path: Path) -> None:
    assert names_block(_rules(tmp_path), "microsoft") == [
        "# mailbox names: not known for a microsoft server without a connection; "
        "`mailrules doctor` shows how they map"
    ]


def test_the_block_follows_the_head(tmp_path: Path) -> None:
    now = dt.datetime(2025, 1, 2, 3, 4, tzinfo=dt.UTC)
    text = explain_rule_set(_rules(tmp_path), Dialect.named("dovecot"), now=now, tz=dt.UTC)
    head, first_rule = text.split("\n\n")[:2]
    assert head.splitlines() == [
        "# planned for a dovecot server; relative dates as of 2025-01-02 03:04 UTC",
        "# mailbox names: personal prefix '', separator '/', from NAMESPACE",
        '# names in rules and configuration are used as written ("/" between levels)',
        "#   'Lists/python' -> 'Lists/python'",
        "#   'Archive/x' -> 'Archive/x'",
        "#   'INBOX' -> 'INBOX'",
        "#   'v1.2' -> 'v1.2'",
    ]
    assert first_rule.startswith('rule "py"')


def test_the_command_prints_it(tmp_path: Path) -> None:
    (tmp_path / "a.rules").write_text(RULES)
    result = CliRunner().invoke(main, ["explain", str(tmp_path / "a.rules"), "--server", "gmail"])
    assert result.exit_code == 0, result.output
    assert "# mailbox names: personal prefix '', separator '/', from NAMESPACE" in result.output
