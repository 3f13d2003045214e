"""examples/grafana/mailrules-dashboard.json: every query parses, names only metrics the daemon exposes,
is filtered by the dashboard's variables, and returns data from a real Prometheus scraping a real daemon
(against the Dovecot fixture) that has filed mail and run a scheduled rule."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailrules.daemon.cluster_metrics import ClusterMetrics
from mailrules.daemon.metrics import Metrics
from mailrules.daemon.notify_metrics import NotifyMetrics
from tests.integration.servers import DovecotServer, make_message
from tests.integration.test_daemon import Running, append, counts, free_port, wait_until
from tests.needs import require_tool

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "examples" / "grafana" / "mailrules-dashboard.json"
ALERTS = ROOT / "examples" / "prometheus" / "alerts.yml"

#: Grafana's variables as the test substitutes them (longest first: `$__range` is not `$__rate_interval`).
SUBSTITUTIONS = {
    "$__rate_interval": "90s",  # covers the whole activity below (the scheduled run waits up to 60 s)
    "$__interval": "1s",
    "$__range": "5m",
    "$instance": ".*",
    "$account": ".*",
    "$job": ".*",
}
SCHEDULED_RULE = (
    'rule "sweep filed" in "Filed" cron "* * * * *" { when subject contains "file me" then mark read }\n'
)
#: Panels (or "panel / refId") whose every query must return a finite, non-zero value after the activity.
MOVED = {
    "Mail processed per minute by outcome",
    "Messages seen and malformed per minute / A",  # B (malformed) stays at 0
    "Top rules by matches",
    "Actions per minute by type",
    "Arrival to action latency",
    "Arrivals within 5 s (SLO 99 %)",
    "IMAP command latency p99",
    "Rules loaded",
    "Watchers up",
    "Daemon up",
    "Last reload",
}


#: Panels of OAuth2 accounts: no data from the live daemon below, whose account has a password.
OAUTH2_ONLY = {"OAuth2 token expires in", "OAuth2 refreshes and failed logins"}


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _panels() -> Iterator[dict[str, Any]]:
    for p in _dashboard()["panels"]:
        yield p
        yield from p.get("panels", [])


def queries() -> list[tuple[str, str]]:
    """(panel title / refId, PromQL as written in the dashboard) for every panel target."""
    return [(f"{p['title']} / {t['refId']}", t["expr"]) for p in _panels() for t in p.get("targets", [])]


def annotation_queries() -> list[str]:
    return [a["expr"] for a in _dashboard()["annotations"]["list"] if "expr" in a]


def variable_selectors() -> list[str]:
    """The series selector of every `label_values(selector, label)` variable query."""
    out = []
    for v in _dashboard()["templating"]["list"]:
        if v["type"] == "query":
            m = re.fullmatch(r"label_values\((.+), *\w+\)", v["definition"])
            assert m, v["definition"]
            out.append(m.group(1))
    return out


def substitute(expr: str) -> str:
    for var in sorted(SUBSTITUTIONS, key=len, reverse=True):
        expr = expr.replace(var, SUBSTITUTIONS[var])
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


def _alert_exprs_text() -> str:
    return "\n".join(line for line in ALERTS.read_text().splitlines() if not line.lstrip().startswith("#"))


def metric_names(text: str) -> set[str]:
    return set(re.findall(r"\bmailrules_[a-z_]+\b", text))


def exposed_labels(exposition: str) -> dict[str, set[str]]:
    """Sample name -> its label names, from an exposition in the text format."""
    out: dict[str, set[str]] = {}
    for line in exposition.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition("{")
        name = name.split(" ", 1)[0]
        labels = set(re.findall(r'(\w+)="', rest)) if rest else set()
        out.setdefault(name, set()).update(labels)
    return out


def _static_exposition() -> str:
    m = Metrics()
    m.init({"work": ["INBOX", "Lists"]}, ["a rule"], scheduled=["a rule"])
    m.oauth.init(["work"])  # as if "work" logged in with OAuth2: those series exist for such accounts
    ClusterMetrics(m.registry).init(["work"])  # the daemon adds the lease keeper's observer
    NotifyMetrics(m.registry, m._account).init(["work"])  # and the watching modes (NotifyPlan)
    return m.exposition().decode()


def _require(binary: str) -> str:
    return require_tool(binary, "prometheus")


# -- static ------------------------------------------------------------------------------------------


def test_dashboard_identity_and_variables() -> None:
    d = _dashboard()
    assert (d["uid"], d["title"]) == ("mailrules", "mailrules")
    assert 36 <= d["schemaVersion"] <= 41
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "instance", "account"):
        assert variables[name]["type"] == "query"
        assert variables[name]["definition"].startswith("label_values(")
        assert variables[name]["datasource"]["uid"] == "${datasource}"
    kinds = {p["type"] for p in _panels()}
    assert {"timeseries", "stat", "table"} <= kinds
    for p in _panels():
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p.get("targets"), p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", p["title"]


def test_every_range_is_a_grafana_interval() -> None:
    for where, expr in [*queries(), *(("annotation", e) for e in annotation_queries())]:
        for rng in re.findall(r"\[([^\]]+)\]", expr):
            assert rng in ("$__rate_interval", "$__range", "$__range:$__interval"), (where, rng)
        for call in re.findall(r"\brate\([^\[]*\[([^\]]+)\]", expr):
            assert call == "$__rate_interval", (where, call)


def test_every_selector_is_filtered_by_the_variables() -> None:
    labels = exposed_labels(_static_exposition())
    for where, expr in [*queries(), *(("annotation", e) for e in annotation_queries())]:
        selectors = re.findall(r"\b(mailrules_[a-z_]+|up)(\{[^}]*\})?", expr)
        assert selectors, where
        for name, matchers in selectors:
            assert 'job=~"$job"' in matchers and 'instance=~"$instance"' in matchers, (where, name)
            if "account" in labels.get(name, set()):
                assert 'account=~"$account"' in matchers, (where, name)


def test_dashboard_and_alerts_name_only_exposed_metrics() -> None:
    exposed = set(exposed_labels(_static_exposition()))
    text = DASHBOARD.read_text()
    assert metric_names(text) <= exposed, sorted(metric_names(text) - exposed)
    alerts = metric_names(_alert_exprs_text())
    assert alerts <= exposed, sorted(alerts - exposed)
    for le in re.findall(r'le=\\?"([^"\\]+)', text + _alert_exprs_text()):
        assert f'le="{le}"' in _static_exposition(), f"le={le} is not a bucket boundary as exposed"


def test_every_metric_the_daemon_exposes_has_a_panel() -> None:
    def family(name: str) -> str:
        return re.sub(r"_(bucket|sum|count|created)$", "", name)

    exposed = {family(n) for n in exposed_labels(_static_exposition())}
    shown = {family(n) for n in metric_names(DASHBOARD.read_text())}
    assert exposed <= shown, sorted(exposed - shown)


#: What issue 9's bounds count: the "Hostile mail" row shows each of them.
HOSTILE_MAIL = {
    "mailrules_messages_skipped_total",
    "mailrules_message_text_cut_total",
    "mailrules_actions_skipped_total",
    "mailrules_mailbox_creations_refused_total",
    "mailrules_state_errors_total",
    "mailrules_http_connections_dropped_total",
}


def test_the_hostile_mail_row_shows_every_bound() -> None:
    panels = _dashboard()["panels"]
    start = next(i for i, p in enumerate(panels) if p["type"] == "row" and p["title"] == "Hostile mail")
    end = next((i for i, p in enumerate(panels) if i > start and p["type"] == "row"), len(panels))
    row = panels[start + 1 : end]
    shown = {name for p in row for t in p["targets"] for name in metric_names(t["expr"])}
    assert shown == HOSTILE_MAIL
    # the panels sit under their row: below it, above the next one
    top = panels[start]["gridPos"]["y"]
    bottom = panels[end]["gridPos"]["y"] if end < len(panels) else math.inf
    assert all(top < p["gridPos"]["y"] < bottom for p in row)


def test_every_query_parses(tmp_path: Path) -> None:
    """promtool parses each query (variables substituted) as the expression of a recording rule."""
    promtool = _require("promtool")
    exprs = [substitute(e) for _, e in queries()]
    exprs += [substitute(e) for e in annotation_queries()] + [substitute(s) for s in variable_selectors()]
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:q{i}", "expr": e} for i, e in enumerate(exprs)],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    done = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in done.stdout


# -- live --------------------------------------------------------------------------------------------


class Prometheus:
    """A private Prometheus scraping one target every second, with alerts.yml loaded."""

    def __init__(self, tmp: Path, target_port: int) -> None:
        self.binary = _require("prometheus")
        self.dir = tmp / "prometheus"
        self.dir.mkdir()
        shutil.copy(ALERTS, self.dir / "alerts.yml")
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["alerts.yml"],
            "scrape_configs": [
                {"job_name": "mailrules", "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}
            ],
        }
        (self.dir / "prometheus.yml").write_text(json.dumps(config))
        self.log = self.dir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.dir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.dir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("prometheus did not become ready:\n" + self.log.read_text()[-3000:])

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as e:  # a bad query is a 400 with the parser's message
            body = json.loads(e.read())
        assert body["status"] == "success", (path, params, body)
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] in ("vector", "scalar"), data
        result: list[dict[str, Any]] = data["result"] if data["resultType"] == "vector" else [data]
        return result

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def _values(result: list[dict[str, Any]]) -> list[float]:
    return [float(r["value"][1]) for r in result]


@pytest.mark.integration
def test_every_panel_returns_data_from_a_live_daemon(dovecot: DovecotServer, tmp_path: Path) -> None:
    user, pw = dovecot.fresh_user()
    d = Running(tmp_path, dovecot, user, pw, None)
    (d.rules / "20-scheduled.rules").write_text(SCHEDULED_RULE)
    prom = Prometheus(tmp_path, d.metrics_port)
    prom.start()
    try:
        # The scheduled rule runs at the top of each minute: give the daemon a few seconds before it,
        # so Prometheus sees its counters at 0 first.
        if 60 - time.time() % 60 < 10:
            time.sleep(60 - time.time() % 60 + 0.5)
        d.start()
        try:
            # Prometheus applies new targets only every 5 s: wait for its first scrape of the daemon.
            wait_until(lambda: bool(prom.query('up{job="mailrules"} == 1')), 20, "the first scrape", d)
            # Two batches, each seen by several scrapes (counters move between scrapes); the first
            # also creates `Filed`, which the scheduled rule reads.
            append(dovecot, user, pw, [make_message(f"first {i}, file me") for i in range(3)])
            wait_until(lambda: counts(dovecot, user, pw).get("Filed") == 3, 30, "the first arrivals", d)
            time.sleep(2)
            append(dovecot, user, pw, [make_message(f"second {i}, file me") for i in range(5)])
            append(dovecot, user, pw, [make_message("from bob", sender="bob@example.com")])
            append(dovecot, user, pw, [make_message("nothing matches this one")])
            wait_until(lambda: counts(dovecot, user, pw).get("Filed") == 8, 30, "the later arrivals", d)
            wait_until(
                lambda: d.metric("mailrules_scheduled_runs_total") >= 1, 70, "the scheduled rule to run", d
            )
            time.sleep(3)
            scrape = d.get("/metrics")[1]
            failures = _check_queries(prom)
            alerts = prom.api("alerts")["alerts"]
            rules = prom.api("rules")["groups"]
        finally:
            assert d.stop() == 0
    finally:
        prom.stop()

    assert not failures, "\n".join(failures)
    # every name in the dashboard and the alerts is one the live daemon exposes
    # (declared counts: the OAuth2 families have series only for OAuth2 accounts, none here)
    live = set(exposed_labels(scrape)) | set(re.findall(r"^# TYPE (\w+)", scrape, re.M))
    for text in (DASHBOARD.read_text(), _alert_exprs_text()):
        assert metric_names(text) <= live, sorted(metric_names(text) - live)
    # alerts.yml evaluates without error and, against a healthy daemon, nothing is pending or firing
    # (in particular not MailrulesWatcherDown for `Filed`, read only by the scheduled rule)
    bad = [(r["name"], r.get("lastError")) for g in rules for r in g["rules"] if r["health"] != "ok"]
    assert not bad, bad
    assert sum(len(g["rules"]) for g in rules) >= 16
    assert not alerts, alerts


def _check_queries(prom: Prometheus) -> list[str]:
    failures = []
    for where, expr in queries():
        q = substitute(expr)
        try:
            result = prom.query(q)
        except AssertionError as exc:
            failures.append(f"{where}: {q}: {exc}")
            continue
        if not result and where.rsplit(" / ", 1)[0] not in OAUTH2_ONLY:
            failures.append(f"{where}: no data: {q}")
        elif (where in MOVED or where.rsplit(" / ", 1)[0] in MOVED) and not any(
            math.isfinite(v) and v > 0 for v in _values(result)
        ):
            failures.append(f"{where}: nothing moved ({result}): {q}")
    for selector in variable_selectors():
        if not prom.query(substitute(selector)):
            failures.append(f"variable query: no series for {selector}")
    for expr in annotation_queries():
        prom.query(substitute(expr))  # parses and runs; a reload need not have happened in the window
    # the scheduled rule's run is in the table
    last_run = [e for w, e in queries() if w.startswith("Scheduled rules: last run") and w.endswith("/ A")]
    assert last_run
    ages = _values(prom.query(substitute(last_run[0])))
    if not (ages and all(0 <= a < 120 for a in ages)):
        failures.append(f"scheduled rules: last run ages {ages}")
    return failures
