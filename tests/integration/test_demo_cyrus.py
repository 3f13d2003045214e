"""`make demo`'s mail and rules on Cyrus, which refuses a message with a bare LF in APPEND ("NO
Message contains bare newlines"): the demo's seed appends there, and its rules file the mail as
they do on the demo's own server (pymap)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailrules.cli import main
from mailrules.demo import __main__ as demo_main
from mailrules.imap.session import ConnectionParams, ImapSession
from tests.integration.cyrus import CyrusServer
from tests.integration.helpers import smtp_sink
from tests.integration.servers import free_port

pytestmark = pytest.mark.integration


def run_demo(
    params: ConnectionParams, directory: Path, now: dt.datetime
) -> tuple[dict[str, int], dict[str, int], int, str]:
    """Seed INBOX as `make demo` does, run the demo's rules with its configuration: (the non-empty
    mailboxes' counts before and after, by portable name, messages forwarded, `run`'s output)."""
    with ImapSession.connect(params) as session:
        assert demo_main.seed(session, now) == 158
        before = portable(session, demo_main.counts(session))
    directory.mkdir()
    with smtp_sink() as (sink, smtp_port):
        config = demo_main.write_config(directory, params.port, smtp_port, user=params.username)
        done = CliRunner().invoke(
            main, ["run", "--config", str(config)], env={"DEMO_IMAP_PASSWORD": params.password}
        )
        sent = len(sink.messages)
    assert done.exit_code == 0, done.output
    with ImapSession.connect(params) as session:
        after = portable(session, demo_main.counts(session))
    return before, after, sent, done.output


def portable(session: ImapSession, counts: dict[str, int]) -> dict[str, int]:
    ns = session.namespaces
    out = {}
    for name, n in counts.items():
        mapped = ns.to_portable(name)
        assert mapped is not None, name
        if n:
            out[mapped] = n
    return out


def test_the_demo_runs_on_cyrus_as_on_pymap(cyrus: CyrusServer, tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    user, password = cyrus.fresh_user()
    on_cyrus = run_demo(cyrus.params(user, password), tmp_path / "cyrus", now)

    port = free_port()
    pymap = demo_main.start_imap(port)
    try:
        params = ConnectionParams(
            demo_main.HOST, port, "none", demo_main.USER, demo_main.PASSWORD, allow_insecure=True
        )
        on_pymap = run_demo(params, tmp_path / "pymap", now)
    finally:
        pymap.terminate()
        pymap.wait(timeout=10)

    before, after, sent, output = on_cyrus
    assert "0 failed actions, 0 errors" in output
    assert before == {"INBOX": 158}
    assert after["Lists/python-dev"] > 0 and after["GitHub"] > 0 and sent == 4
    assert sum(after.values()) > sum(before.values())  # `copy to "Finance/Invoices"` adds copies
    assert on_cyrus[:3] == on_pymap[:3]
