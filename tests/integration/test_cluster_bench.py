"""bench/cluster_bench.py at a tiny size (3 replicas, 3 accounts x 2 mailboxes, leases of 3 s), so
that the benchmark cannot rot: every phase runs to the end and its results hold together. No
timing is asserted (the numbers belong to bench/README.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.postgres import postgres_bindir
from tests.integration.servers import ServerUnavailable, dovecot_binary
from tests.needs import unavailable

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # about 40 s: three daemons started twice, a lease expiry, a rejoin
def test_the_cluster_bench_runs_at_a_tiny_size(tmp_path: Path) -> None:
    try:
        dovecot_binary()
        postgres_bindir()
    except ServerUnavailable as exc:
        unavailable(str(exc))
    out = tmp_path / "results.json"
    command = [
        sys.executable,
        str(ROOT / "bench" / "cluster_bench.py"),
        *("--sizes", "3x2", "--lease-seconds", "3", "--window", "2", "--settle", "1"),
        *("--filed-timeout", "60", "--tree", str(ROOT), "--json", str(out)),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert "SIGKILL -> all its accounts leased again" in done.stdout
    (result,) = json.loads(out.read_text())
    assert result["watched"] == 6 and result["mode"] == "idle"
    steady = result["steady"]
    assert [s["replica"] for s in steady] == ["r0", "r1", "r2"]
    assert sorted(s["accounts"] for s in steady) == [1, 1, 1]
    for s in steady:  # every watched mailbox its own IDLE connection, on its owner only
        assert s["watchers"] == s["imap_connections"] == 2 * s["accounts"]
        assert s["pg_connections"] >= 1 and s["rss_mb"] > 0
    assert result["idle"]["statements"] > 0 and result["mail"]["messages"] > 0
    assert result["failover_accounts"] == 1 and result["failover_messages"] == 2
    survivors = result["after_failover"]
    assert [s["replica"] for s in survivors] == ["r1", "r2"]
    assert sum(s["accounts"] for s in survivors) == 3
    assert result["moved_twice"] == 0
    assert result["sigterm_exit_codes"] == [0, 0, 0]
