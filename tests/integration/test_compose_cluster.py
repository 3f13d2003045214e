"""examples/compose/compose.cluster.yaml, checked without a Docker engine: three daemons, PostgreSQL.

The compose file is parsed and cross-checked (mounted paths, secrets, volumes, the replicas and
their ports); `docker compose config` checks it too where the Compose plugin is installed. The
daemons' configuration loads with the environment the image and the compose file give it, and
names the compose network's PostgreSQL, Dovecot users and Mailpit; Prometheus finds every replica
and `promtool` accepts its configuration; the seed's wait for the replicas to own every account
is run against servers exporting the daemon's real cluster metrics. End to end on the host: a
private PostgreSQL, Dovecot with the cluster's users, three daemons on the cluster's configuration
and rules (one loopback address each, as each container has its own), the seed waiting for them
through the service name: two accounts each, every message seen once, every forward sent once.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from mailrules.config import load_config
from mailrules.config.model import PostgresUrl
from mailrules.daemon.cluster_metrics import ClusterMetrics
from mailrules.dsl.loader import load_rule_set
from tests.integration.helpers import metric_total
from tests.integration.test_container_files import DOCKERFILE, _final_stage, _image_env
from tests.needs import unavailable

yaml = pytest.importorskip("yaml", reason="PyYAML is in the `test` extra: pip install -e '.[test]'")

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "examples" / "compose"
CLUSTER = COMPOSE_DIR / "compose.cluster.yaml"
SERVICES = {"postgres", "dovecot", "mailpit", "mailrules", "seed", "prometheus", "grafana"}


def _compose(path: Path = CLUSTER) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for item in service.get("volumes", []):
        assert isinstance(item, str), "short syntax only"
        source, target = item.split(":")[:2]
        out.append((source, target))
    return out


def _host_path(service: str, container_path: str) -> Path:
    """The host file behind a container path of `service`, through its bind mounts."""
    target = PurePosixPath(container_path)
    for source, mounted in _mounts(_compose()["services"][service]):
        if source.startswith(".") and (
            target == PurePosixPath(mounted) or PurePosixPath(mounted) in target.parents
        ):
            return (COMPOSE_DIR / source / target.relative_to(mounted)).resolve()
    raise AssertionError(f"{container_path} is not bind-mounted into {service}")


def _users() -> dict[str, str]:
    """Dovecot's users in the cluster demo (the file mounted over the image's /etc/dovecot/users)."""
    text = _host_path("dovecot", "/etc/dovecot/users").read_text(encoding="utf-8")
    return dict(line.split(":{PLAIN}") for line in text.splitlines() if line)


def _secret(name: str) -> str:
    return str((COMPOSE_DIR / _compose()["secrets"][name]["file"]).read_text(encoding="utf-8").rstrip("\n"))


def test_cluster_services_paths_and_replicas() -> None:
    data = _compose()
    assert set(data["services"]) == SERVICES
    for name, service in data["services"].items():
        for source, _ in _mounts(service):
            if source.startswith("."):
                assert (COMPOSE_DIR / source).exists(), f"{name}: mounted {source} does not exist"
                assert (COMPOSE_DIR / source).resolve().is_relative_to(ROOT), source
            else:
                assert source in data["volumes"], f"{name}: volume {source} is not declared"
        for secret in service.get("secrets", []):
            assert secret in data["secrets"], (name, secret)
        for dependency in service.get("depends_on", []):
            assert dependency in data["services"], (name, dependency)
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: publish demo ports on loopback only"
    for name, secret in data["secrets"].items():
        assert (COMPOSE_DIR / secret["file"]).is_file(), name
    mailrules = data["services"]["mailrules"]
    assert mailrules["deploy"]["replicas"] == 3
    # Each replica is named by its host name (the container's id): a fixed one would give all
    # three the same [cluster] replica name, and a fixed container name cannot be replicated.
    assert "hostname" not in mailrules and "container_name" not in mailrules
    [ports] = mailrules["ports"]
    host_range, _, container = ports.rpartition(":")
    low, _, high = host_range.rpartition(":")[2].partition("-")
    assert int(high) - int(low) + 1 == 3, "one host port per replica"
    assert int(container) == 9464
    assert mailrules["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert mailrules["stop_grace_period"] == "15s"
    # The same images as the single-daemon demo.
    demo = _compose(COMPOSE_DIR / "compose.yaml")["services"]
    for name in ("mailrules", "dovecot"):
        assert data["services"][name]["image"] == demo[name]["image"]
        assert data["services"][name]["build"] == demo[name]["build"]
    assert data["services"]["seed"]["image"] == mailrules["image"]
    assert data["services"]["seed"]["healthcheck"] == {"disable": True}


def test_cluster_config_loads_and_names_the_compose_services(tmp_path: Path) -> None:
    data = _compose()
    service = data["services"]["mailrules"]
    image_cmd = json.loads(dict(_final_stage(DOCKERFILE))["CMD"])
    config = _host_path("mailrules", image_cmd[image_cmd.index("--config") + 1])
    env = {k: v for k, v in _image_env(DOCKERFILE).items() if k.startswith("MAILRULES_")}
    env.update({k: str(v) for k, v in service["environment"].items()})
    (tmp_path / "secrets").mkdir()
    for name in service["secrets"]:
        (tmp_path / "secrets" / name).write_text(_secret(name) + "\n", encoding="utf-8")
    env = {k: v.replace("/run/secrets/", f"{tmp_path}/secrets/") for k, v in env.items()}
    settings = load_config(config, env=env)
    assert settings.warnings == ()
    # The shared state: the compose network's PostgreSQL, as its image creates the login and database.
    postgres = data["services"]["postgres"]["environment"]
    assert isinstance(settings.state, PostgresUrl), "the image's SQLite default is overridden"
    url = urlsplit(settings.state.url)
    assert url.hostname == "postgres" and url.port == 5432 and url.password is None
    assert url.username == postgres["POSTGRES_USER"] and url.path == "/" + postgres["POSTGRES_DB"]
    assert postgres["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert settings.state.password is not None
    assert settings.state.password.reveal() == _secret("postgres_password")
    # Six accounts for three replicas: two each; every one a Dovecot user with its password.
    users = _users()
    assert len(settings.accounts) == 6
    for account in settings.accounts.values():
        assert account.host == "dovecot" and account.port == 143
        assert account.password is not None and users[account.username] == account.password.reveal()
        assert account.smtp is not None and account.smtp.host == "mailpit"
    assert settings.metrics.address == ("0.0.0.0", 9464)
    result = load_rule_set(_host_path("mailrules", str(settings.rules)))
    assert result.ok and not result.errors, result.render()
    for rule in result.rule_set.rules:
        assert set(rule.accounts) <= set(settings.accounts), (rule.name, rule.accounts)
    # The seed appends to exactly those accounts, and waits until all of them are owned.
    seed = data["services"]["seed"]["environment"]
    seeded = [item.split(":") for item in seed["SEED_ACCOUNTS"].split(",")]
    assert sorted(user for user, _ in seeded) == sorted(a.username for a in settings.accounts.values())
    for user, password_file in seeded:
        assert users[user] == _secret(password_file.removeprefix("/run/secrets/"))
    assert int(seed["SEED_WAIT_ACCOUNTS"]) == len(settings.accounts)
    assert urlsplit(seed["SEED_WAIT_URL"]).hostname == "mailrules"
    assert urlsplit(seed["SEED_WAIT_URL"]).path == "/readyz"


def test_cluster_prometheus_finds_every_replica(tmp_path: Path) -> None:
    config = _host_path("prometheus", "/etc/prometheus/prometheus.yml")
    prom = yaml.safe_load(config.read_text(encoding="utf-8"))
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "mailrules")
    [sd] = job["dns_sd_configs"]
    assert sd["names"] == ["mailrules"] and sd["type"] == "A" and sd["port"] == 9464
    promtool = shutil.which("promtool")
    if promtool is None:
        unavailable("promtool is not installed (Debian package prometheus)")
    assert promtool is not None
    alerts_source, alerts_target = next(
        (s, t) for s, t in _mounts(_compose()["services"]["prometheus"]) if s.endswith("alerts.yml")
    )
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    shutil.copy(COMPOSE_DIR / alerts_source, rules_dir / PurePosixPath(alerts_target).name)
    text = config.read_text(encoding="utf-8").replace(
        str(PurePosixPath(alerts_target).parent), str(rules_dir)
    )
    (tmp_path / "prometheus.yml").write_text(text, encoding="utf-8")
    done = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 rule files found" in done.stdout


def test_docker_compose_config_accepts_the_file() -> None:
    docker = shutil.which("docker")
    probe = (
        subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, timeout=30, check=False
        )
        if docker
        else None
    )
    if probe is None or probe.returncode != 0:
        # The Compose plugin is no part of `make test`'s system packages: the YAML checks above stand in.
        pytest.skip("the Docker Compose plugin is not installed: `docker compose config` not run")
    assert docker is not None
    done = subprocess.run(
        [docker, "compose", "-f", str(CLUSTER), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=COMPOSE_DIR,
    )
    assert done.returncode == 0, done.stderr


# -- the seed's wait for the replicas ---------------------------------------------------------------


def _seed() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compose_seed", COMPOSE_DIR / "seed" / "seed.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Replica:
    """A stand-in daemon on one loopback address: /readyz as told, /metrics with the daemon's
    real cluster metrics (ClusterMetrics) saying how many accounts it owns."""

    def __init__(self, address: str, port: int) -> None:
        self.ready = False
        registry = CollectorRegistry()
        self.metrics = ClusterMetrics(registry)
        replica = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/readyz":
                    status, body = (200, b"ready\n") if replica.ready else (503, b"not ready\n")
                else:
                    status, body = 200, generate_latest(registry)
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((address, port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def replicas() -> Iterator[list[_Replica]]:
    first = _Replica("127.0.0.1", 0)
    port = first.server.server_address[1]
    try:
        second = _Replica("127.0.0.2", port)  # the same port on another loopback address
    except OSError as exc:
        first.close()
        pytest.skip(f"cannot listen on 127.0.0.2: {exc}")
    yield [first, second]
    first.close()
    second.close()


def test_seed_waits_until_the_ready_replicas_own_every_account(replicas: list[_Replica]) -> None:
    seed = _seed()
    port = replicas[0].server.server_address[1]
    url = f"http://mailrules:{port}/readyz"
    resolved: list[tuple[str, int]] = []

    def resolve(host: str, port: int) -> list[str]:
        resolved.append((host, port))
        return ["127.0.0.1", "127.0.0.2", "127.0.0.3"]  # the third is a replica not listening yet

    first, second = replicas
    first.metrics.count.set(4)
    second.metrics.count.set(2)
    assert seed.owned_by_ready(url, resolve) == 0, "neither is ready"
    first.ready = True
    assert seed.owned_by_ready(url, resolve) == 4, "the unready one's accounts do not count"
    second.ready = True
    assert seed.owned_by_ready(url, resolve) == 6
    seed.wait_owned(url, 6, wait=5.0, resolve=resolve)  # returns at once
    assert resolved[0] == ("mailrules", port)
    second.ready = False
    with pytest.raises(SystemExit, match="own 4 of 6 accounts"):
        seed.wait_owned(url, 6, wait=0.0, resolve=resolve)


# -- the cluster demo, end to end, without Docker ------------------------------------------------------


def _get(address: str, port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{address}:{port}{path}", timeout=5) as answer:
            return int(answer.status), answer.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), ""
    except OSError:
        return 0, ""


@pytest.mark.integration
def test_cluster_demo_files_three_daemons_without_docker(
    tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL, Dovecot with the cluster's users, three daemons on the cluster's configuration
    and rules, the seed waiting for them: every account owned, every message seen once, forwards sent."""
    import os
    import signal
    import sys
    import tempfile
    import time

    from aiosmtpd.controller import Controller

    from mailrules.config.cluster import split_url
    from tests.integration.servers import dovecot_binary, free_port, stop, wait_for_port
    from tests.integration.test_container_files import _local_dovecot_conf

    addresses = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    http_port = free_port()
    try:
        for address in addresses[1:]:
            with socket.create_server((address, http_port)):
                pass
    except OSError as exc:
        pytest.skip(f"cannot listen on {address}:{http_port}: {exc}")
    try:
        binary = dovecot_binary()
    except Exception as exc:
        unavailable(str(exc))
        raise
    directory = Path(tempfile.mkdtemp(prefix="mr-cc-"))  # short: Dovecot's socket paths
    directory.chmod(0o755)
    for sub in ("run", "state", "mail"):
        (directory / sub).mkdir()
    if os.geteuid() == 0:
        subprocess.run(["chown", "nobody:nogroup", str(directory / "mail")], check=True)
    shutil.copy(_host_path("dovecot", "/etc/dovecot/users"), directory / "users")
    imap_port, smtp_port = free_port(), free_port()
    (directory / "dovecot.conf").write_text(_local_dovecot_conf(directory, imap_port), encoding="utf-8")

    received: list[bytes] = []

    class Sink:
        async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
            received.append(bytes(envelope.original_content or envelope.content))
            return "250 OK"

    controller = Controller(Sink(), hostname="127.0.0.1", port=smtp_port)
    data = _compose()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with (directory / "dovecot.out").open("wb") as out:
            procs.append(
                subprocess.Popen(
                    [binary, "-F", "-c", str(directory / "dovecot.conf")],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        wait_for_port(imap_port, procs[0], directory / "dovecot.out")
        controller.start()

        # The daemons' environment: the image's, the compose file's, with the secrets as files here,
        # PostgreSQL, Dovecot and the sink on loopback, and a replica name each (in compose the
        # default, the container's host name, differs between replicas; here it would not).
        service = data["services"]["mailrules"]
        (tmp_path / "secrets").mkdir()
        for name in service["secrets"]:
            (tmp_path / "secrets" / name).write_text(_secret(name) + "\n", encoding="utf-8")
        url, password = split_url(pg_dsn)
        assert password is not None
        (tmp_path / "secrets" / "postgres_password").write_text(password + "\n", encoding="utf-8")
        base = {k: v for k, v in os.environ.items() if not k.upper().startswith(("MAILRULES_", "SEED_"))}
        env = {k: v for k, v in _image_env(DOCKERFILE).items() if k.startswith("MAILRULES_")}
        env.update(
            {
                k: str(v).replace("/run/secrets/", f"{tmp_path}/secrets/")
                for k, v in service["environment"].items()
            }
        )
        env.update(
            {
                "MAILRULES_STATE": url,
                "MAILRULES_RULES": str(_host_path("mailrules", "/etc/mailrules/rules.d")),
            }
        )
        config = _host_path("mailrules", "/etc/mailrules/mailrules.toml")
        accounts = load_config(config, env=env).accounts
        for name in accounts:
            key = f"MAILRULES_ACCOUNTS__{name.upper()}"
            env.update(
                {
                    f"{key}__HOST": "127.0.0.1",
                    f"{key}__PORT": str(imap_port),
                    f"{key}__SMTP__HOST": "127.0.0.1",
                    f"{key}__SMTP__PORT": str(smtp_port),
                }
            )
        for n, address in enumerate(addresses):
            replica_env = {
                **base,
                **env,
                "MAILRULES_METRICS__LISTEN": f"{address}:{http_port}",
                "MAILRULES_CLUSTER__REPLICA": f"mailrules-{n + 1}",
                # Rounds every second instead of every 5 s: the share settles sooner (nothing here
                # waits for a lease to run out).
                "MAILRULES_CLUSTER__LEASE_SECONDS": "3",
            }
            with (tmp_path / f"daemon-{n + 1}.out").open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "mailrules", "daemon", "--config", str(config)],
                        env=replica_env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )

        def logs() -> str:
            return "\n".join(
                f"--- daemon {n + 1}\n"
                + (tmp_path / f"daemon-{n + 1}.out").read_text(errors="replace")[-2000:]
                for n in range(len(addresses))
            )

        # All three up and settled (two accounts each) before mail arrives, so that no account
        # moves while the backlog is filed and each message is seen exactly once.
        def settled() -> bool:
            if not all(_get(a, http_port, "/readyz")[0] == 200 for a in addresses):
                return False
            owned = [
                metric_total(_get(a, http_port, "/metrics")[1], "mailrules_cluster_accounts_owned")
                for a in addresses
            ]
            return owned == [len(accounts) / len(addresses)] * len(addresses)

        deadline = time.monotonic() + 120
        while not settled():
            assert time.monotonic() < deadline, logs()
            assert all(p.poll() is None for p in procs), logs()
            time.sleep(0.5)

        # The seed, in this process: the compose name `mailrules` resolves to the three addresses.
        seed = _seed()
        resolved: list[str] = []

        def resolve(host: str, port: int) -> list[str]:
            resolved.append(host)
            return addresses

        monkeypatch.setattr(seed, "addresses", resolve)
        seed_env = {k: str(v) for k, v in data["services"]["seed"]["environment"].items()}
        seed_env["SEED_ACCOUNTS"] = seed_env["SEED_ACCOUNTS"].replace("/run/secrets/", f"{tmp_path}/secrets/")
        samples = _host_path("seed", seed_env["SEED_SAMPLES"])
        seed_env.update(
            {
                "SEED_HOST": "127.0.0.1",
                "SEED_PORT": str(imap_port),
                "SEED_SAMPLES": str(samples),
                "SEED_WAIT_URL": seed_env["SEED_WAIT_URL"].replace(":9464/", f":{http_port}/"),
                "SEED_BACKLOG": "5",
                "SEED_INTERVAL": "0",
            }
        )
        for key, value in seed_env.items():
            monkeypatch.setenv(key, value)
        previous = signal.getsignal(signal.SIGTERM)
        try:
            assert seed.main() == 0, logs()
        finally:
            signal.signal(signal.SIGTERM, previous)
        assert set(resolved) == {"mailrules"}

        # Every account owned by one ready replica, two each; every seeded message seen once.
        expected = len(accounts) * (5 + len(list(samples.glob("*.eml"))))

        def exposition(address: str) -> str:
            return _get(address, http_port, "/metrics")[1]

        deadline = time.monotonic() + 120
        while True:
            bodies = [exposition(a) for a in addresses]
            seen = sum(metric_total(b, "mailrules_messages_seen_total") for b in bodies)
            if seen >= expected or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert seen == expected, logs()
        owned = [metric_total(b, "mailrules_cluster_accounts_owned") for b in bodies]
        assert sum(owned) == len(accounts) and max(owned) - min(owned) <= 1, (owned, logs())
        assert all(_get(a, http_port, "/readyz")[0] == 200 for a in addresses), logs()
        failed = sum(
            metric_total(b, 'mailrules_actions_total{action="forward",outcome="failed"}') for b in bodies
        )
        forwards = sum(
            metric_total(b, 'mailrules_actions_total{action="forward",outcome="ok"}') for b in bodies
        )
        assert failed == 0 and forwards > 0, logs()
        deadline = time.monotonic() + 30
        while len(received) < forwards and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(received) == forwards, "each forward reached the sink once"

        for proc in procs[1:]:
            proc.send_signal(signal.SIGTERM)
        for proc in procs[1:]:
            assert proc.wait(timeout=30) == 0, logs()
    finally:
        for proc in reversed(procs):
            stop(proc)
        controller.stop()
        shutil.rmtree(directory, ignore_errors=True)
