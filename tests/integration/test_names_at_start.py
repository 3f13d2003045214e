"""Mailbox names a server cannot have, checked as soon as an account is connected (mailrules/
accounts.py): `mailrules run` leaves that account alone and exits 1, the daemon does not start
(exit 78). On Cyrus with Debian's namespace (`INBOX.`, separator "."), where a level cannot hold
a ".", and with `unixhierarchysep` (`INBOX/`, "/"), where the same rules run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailrules.cli import main
from tests.integration.cyrus import CyrusFleet, CyrusServer, CyrusVariant
from tests.integration.helpers import append, snapshot, write_config
from tests.integration.servers import ServerUnavailable, make_message
from tests.needs import unavailable

pytestmark = pytest.mark.integration

RULES = (
    'rule "flag all" { when all then flag }\n'
    'rule "versions" {\n'
    '    when subject contains "v1.2"\n'
    '    then move to "Projects/v1.2"\n'
    "}\n"
)


def test_run_leaves_an_account_alone_when_its_rules_name_a_mailbox_the_server_cannot_have(
    cyrus: CyrusServer, tmp_path: Path
) -> None:
    params = cyrus.params(cyrus.fresh_user()[0])
    assert not any(append(params, "INBOX", [(make_message("v1.2 notes"), [], None)]))
    before = snapshot(params)
    config = write_config(tmp_path, params, RULES, extra='allow_insecure = true\ntrash = "Bin.old"')
    ran = CliRunner().invoke(main, ["run", "--config", str(config)])
    assert ran.exit_code == 1, ran.output
    errors = [line.strip() for line in ran.stdout.splitlines() if line.strip().startswith("error:")]
    assert len(errors) == 2, ran.stdout
    assert errors[0].startswith("error: account main: ") and "10.rules:4:" in errors[0]
    assert "mailbox 'Projects/v1.2' cannot exist on this server: '.' separates levels here" in errors[0]
    assert errors[1].startswith("error: account main: accounts.main.trash: mailbox 'Bin.old' cannot exist")
    assert snapshot(params) == before  # not even the flag of the other rule: nothing moved


def test_the_daemon_does_not_start_on_such_a_name(cyrus: CyrusServer, tmp_path: Path) -> None:
    params = cyrus.params(cyrus.fresh_user()[0])
    config = write_config(tmp_path, params, RULES, extra="allow_insecure = true")  # arrival rules
    done = subprocess.run(
        [sys.executable, "-m", "mailrules", "daemon", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 78, done.stderr
    assert "mailbox names the server cannot have; not starting" in done.stderr
    assert "10.rules:4:" in done.stderr and '    then move to "Projects/v1.2"' in done.stderr
    assert "Traceback" not in done.stderr


def test_the_same_rules_run_where_the_name_can_exist(cyrus_fleet: CyrusFleet, tmp_path: Path) -> None:
    # Cyrus with unixhierarchysep: "/" separates levels, so a level may hold a ".".
    try:
        server = cyrus_fleet.get(CyrusVariant(unixhierarchysep=True))
    except ServerUnavailable as exc:
        unavailable(str(exc))
    params = server.params(server.fresh_user()[0])
    assert not any(append(params, "INBOX", [(make_message("v1.2 notes"), [], None)]))
    config = write_config(tmp_path, params, RULES, extra="allow_insecure = true")
    ran = CliRunner().invoke(main, ["run", "--config", str(config)])
    assert ran.exit_code == 0, ran.output
    assert len(snapshot(params)["INBOX/Projects/v1.2"].messages) == 1
