"""examples/prometheus/alerts.yml: `promtool check rules` accepts it and its unit tests pass."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from mailrules.daemon.cluster_metrics import ClusterMetrics
from mailrules.daemon.labels import ARRIVAL_BUCKETS
from mailrules.daemon.metrics import Metrics
from tests.needs import require_tool

PROMETHEUS = Path(__file__).resolve().parents[2] / "examples" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
ALERTS_TEST = PROMETHEUS / "alerts_test.yml"


def _promtool() -> str:
    return require_tool("promtool", "prometheus")


def _run(*args: str) -> str:
    done = subprocess.run(
        [_promtool(), *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120, check=False
    )
    report = done.stdout + done.stderr
    assert done.returncode == 0, report
    return report


def test_promtool_check_rules() -> None:
    assert "SUCCESS" in _run("check", "rules", ALERTS.name)


def test_promtool_unit_tests_pass() -> None:
    assert "SUCCESS" in _run("test", "rules", ALERTS_TEST.name)


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    alerts = set(re.findall(r"^\s+- alert: (\w+)$", ALERTS.read_text(), re.M))
    tested = ALERTS_TEST.read_text()
    assert len(alerts) >= 8
    for name in alerts:
        # a firing case is an alertname followed (before the next test) by a non-empty exp_alerts
        firing = re.search(rf"alertname: {name}\n\s+exp_alerts:\n\s+- exp_labels:", tested)
        assert firing, f"no unit test makes {name} fire"


def test_every_metric_and_bucket_the_rules_use_is_exposed() -> None:
    m = Metrics()
    m.init({"work": ["INBOX"]}, ["r"])
    m.oauth.init(["work"])  # the OAuth2 series exist for OAuth2 accounts only
    ClusterMetrics(m.registry).init(["work"])  # the daemon adds the lease keeper's observer
    exposed = {
        line.split("{", 1)[0].split(" ", 1)[0]
        for line in m.exposition().decode().splitlines()
        if line and not line.startswith("#")
    }
    text = "\n".join(line for line in ALERTS.read_text().splitlines() if not line.lstrip().startswith("#"))
    used = set(re.findall(r"\bmailrules_[a-z_]+\b", text))
    assert used and used <= exposed, sorted(used - exposed)
    # le is matched as a string: it must be spelled as prometheus_client writes the boundary
    for le in re.findall(r'le="([^"]+)"', text):
        assert float(le) in ARRIVAL_BUCKETS and le == str(float(le)), le
