"""examples/kubernetes, checked without a cluster: what `kubectl kustomize` renders, and the files.

Every check runs twice: on the objects `kubectl kustomize examples/kubernetes` renders (skipped
with a message where kubectl is missing), and on the objects read from the files the
kustomization lists, with its ConfigMaps built as kustomize builds them (names without the hash;
kustomize rewrites the references to the hashed names, so a name that matches here matches
there). The configuration in the ConfigMap loads with the real loader, with the environment the
image and the Deployment give it; its rules load with the real rule loader; the probes ask the
daemon's real HTTP server for the paths they name, on the port the daemon listens on; every
object passes Kubernetes' OpenAPI schemas, strictly (kubernetes-validate, offline).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from mailrules.config import load_config
from mailrules.config.model import PostgresUrl
from mailrules.daemon.http import MetricsServer
from mailrules.daemon.metrics import Metrics
from mailrules.dsl.loader import load_rule_set
from mailrules.errors import ConfigError
from tests.integration.test_container_files import DOCKERFILE, _final_stage, _image_env
from tests.needs import unavailable

yaml = pytest.importorskip("yaml", reason="PyYAML is in the `test` extra: pip install -e '.[test]'")

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "examples" / "kubernetes"
SELECTOR = {"app.kubernetes.io/name": "mailrules", "app.kubernetes.io/component": "daemon"}

Obj = dict[str, Any]


def _kustomization() -> Obj:
    data = yaml.safe_load((KUBE / "kustomization.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _from_files() -> list[Obj]:
    """The kustomization's resources, and its ConfigMaps as kustomize generates them (no hash)."""
    k = _kustomization()
    objects: list[Obj] = []
    for resource in k["resources"]:
        objects += [o for o in yaml.safe_load_all((KUBE / resource).read_text(encoding="utf-8")) if o]
    for generator in k.get("configMapGenerator", []):
        data = {}
        for item in generator["files"]:
            key, _, source = item.rpartition("=")
            data[key or PurePosixPath(source).name] = (KUBE / source).read_text(encoding="utf-8")
        objects.append(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]}, "data": data}
        )
    return objects


def _rendered() -> list[Obj]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        # Not unavailable(): under CI the same checks run on the files ("files" below).
        pytest.skip("kubectl is not installed: the rendered objects are not checked (the files are)")
    done = subprocess.run(
        [kubectl, "kustomize", str(KUBE)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return [o for o in yaml.safe_load_all(done.stdout) if o]


@pytest.fixture(scope="module", params=["kustomize", "files"])
def objects(request: pytest.FixtureRequest) -> list[Obj]:
    return _rendered() if request.param == "kustomize" else _from_files()


def _one(objects: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [o for o in objects if o["kind"] == kind and (name is None or _is(o, name))]
    assert len(found) == 1, (kind, name, [o["metadata"]["name"] for o in objects if o["kind"] == kind])
    return found[0]


def _is(obj: Obj, name: str) -> bool:
    """`obj` is named `name`, or is the ConfigMap/Secret kustomize generated from it (`name-HASH`)."""
    actual = str(obj["metadata"]["name"])
    if actual == name:
        return True
    base, _, suffix = actual.rpartition("-")
    return obj["kind"] in ("ConfigMap", "Secret") and base == name and len(suffix) == 10


def _container(objects: list[Obj]) -> Obj:
    containers = _one(objects, "Deployment", "mailrules")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["mailrules"]
    return containers[0]  # type: ignore[no-any-return]


def _volume_source(objects: list[Obj], mount_path: str) -> tuple[Obj, Obj]:
    """(the volume, the ConfigMap or Secret behind it) of the container's mount at `mount_path`."""
    pod = _one(objects, "Deployment", "mailrules")["spec"]["template"]["spec"]
    mount = next(m for m in _container(objects)["volumeMounts"] if m["mountPath"] == mount_path)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    if "configMap" in volume:
        return volume, _one(objects, "ConfigMap", volume["configMap"]["name"])
    return volume, _one(objects, "Secret", volume["secret"]["secretName"])


def _secret_data(secret: Obj) -> dict[str, str]:
    import base64

    out = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
    out.update(secret.get("stringData", {}))
    return out


def _env(objects: list[Obj]) -> dict[str, str]:
    """The daemon's MAILRULES_* environment: the image's, then the Deployment's (which wins)."""
    env = {k: v for k, v in _image_env(DOCKERFILE).items() if k.startswith("MAILRULES_")}
    for item in _container(objects).get("env", []):
        assert "value" in item, f"{item['name']}: secrets come as files, not as variables"
        env[item["name"]] = item["value"]
    return env


# -- the objects --------------------------------------------------------------------------------------


def test_kinds_replicas_and_rollout(objects: list[Obj]) -> None:
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == ["ConfigMap", "ConfigMap", "Deployment", "PodDisruptionBudget", "Secret", "Service"]
    deployment = _one(objects, "Deployment", "mailrules")
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, (
        "an old pod stops once a new one is ready"
    )
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"] == SELECTOR and SELECTOR.items() <= labels.items()
    pod = spec["template"]["spec"]
    # SIGTERM releases the leases after the daemon's ~8 s stop: room for it before SIGKILL.
    assert pod["terminationGracePeriodSeconds"] >= 15
    assert pod["securityContext"]["runAsUser"] == 10001 and pod["securityContext"]["runAsNonRoot"] is True
    container = _container(objects)
    assert container.get("args") in (None, json.loads(dict(_final_stage(DOCKERFILE))["CMD"]))
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # ...so the home (grammar cache, OAuth2 token stores) and /tmp are volumes.
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/var/lib/mailrules", "/tmp"} <= mounts
    requests = container["resources"]["requests"]
    assert requests["memory"].endswith("Mi") and int(requests["memory"][:-2]) >= 207, "measured peak: 207 MB"
    assert "cpu" in requests and "memory" in container["resources"]["limits"]


def test_pdb_service_and_monitor_select_the_pods(objects: list[Obj]) -> None:
    labels = _one(objects, "Deployment", "mailrules")["spec"]["template"]["metadata"]["labels"]
    pdb = _one(objects, "PodDisruptionBudget", "mailrules")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"].get("maxUnavailable") == 1 or pdb["spec"].get("minAvailable") == 2
    service = _one(objects, "Service", "mailrules")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["publishNotReadyAddresses"] is True, "an unready replica's metrics are scraped"
    ports = {p["name"]: p for p in _container(objects)["ports"]}
    [port] = service["spec"]["ports"]
    assert port["targetPort"] in ports and ports[port["targetPort"]]["containerPort"] == port["port"]
    # The ServiceMonitor (not in the default kustomization: it needs the operator's CRD).
    monitor = yaml.safe_load((KUBE / "prometheus" / "servicemonitor.yaml").read_text(encoding="utf-8"))
    assert monitor["kind"] == "ServiceMonitor"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == port["name"] and endpoint["path"] == "/metrics"
    # Its job label is the Service's name: the alerts' up{job="mailrules"} needs that.
    assert service["metadata"]["name"] == "mailrules"
    resources = _kustomization()["resources"]
    assert "prometheus/servicemonitor.yaml" not in resources
    assert "# - prometheus/servicemonitor.yaml" in (KUBE / "kustomization.yaml").read_text(encoding="utf-8")


def test_every_secret_key_referenced_exists(objects: list[Obj]) -> None:
    volume, secret = _volume_source(objects, "/run/secrets/mailrules")
    keys = _secret_data(secret)
    assert volume["secret"].get("defaultMode") in (0o440, 0o400, 0o444)
    referenced = {
        value.removeprefix("/run/secrets/mailrules/")
        for name, value in _env(objects).items()
        if name.endswith("_FILE") and value.startswith("/run/secrets/mailrules/")
    }
    assert referenced, "the passwords come from the Secret"
    assert referenced <= set(keys), referenced - set(keys)
    assert set(keys) <= referenced, f"keys nobody reads: {set(keys) - referenced}"
    for item in volume["secret"].get("items", []):
        assert item["key"] in keys
    for key, value in keys.items():
        assert value.startswith("REPLACE-ME"), f"{key}: a template holds placeholders, never a secret"


def test_the_configmap_config_and_rules_load(objects: list[Obj], tmp_path: Path) -> None:
    image_cmd = json.loads(dict(_final_stage(DOCKERFILE))["CMD"])
    config_path = image_cmd[image_cmd.index("--config") + 1]
    mount = next(m for m in _container(objects)["volumeMounts"] if m["mountPath"] == config_path)
    _, configmap = _volume_source(objects, config_path)
    config = tmp_path / "mailrules.toml"
    config.write_text(configmap["data"][mount["subPath"]], encoding="utf-8")
    # The Secret's files under tmp_path, where the Deployment mounts them under /run/secrets.
    _, secret = _volume_source(objects, "/run/secrets/mailrules")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for key, value in _secret_data(secret).items():
        (secrets / key).write_text(value + "\n", encoding="utf-8")
    env = {
        k: v.replace("/run/secrets/mailrules/", f"{secrets}/") if k.endswith("_FILE") else v
        for k, v in _env(objects).items()
    }
    settings = load_config(config, env=env)
    assert settings.warnings == ()
    # The variables Kubernetes adds for each Service of the namespace ("service links") would stop
    # the start: the Service is called mailrules, so they are MAILRULES_SERVICE_HOST... Off.
    service = _one(objects, "Service", "mailrules")
    links = {
        f"{service['metadata']['name'].upper().replace('-', '_')}_SERVICE_HOST": "10.0.0.10",
        f"{service['metadata']['name'].upper().replace('-', '_')}_PORT": "tcp://10.0.0.10:9464",
    }
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(config, env={**env, **links})
    assert _one(objects, "Deployment", "mailrules")["spec"]["template"]["spec"]["enableServiceLinks"] is False
    # The shared PostgreSQL state, its password from the Secret, never in the URL.
    assert isinstance(settings.state, PostgresUrl), "the image's SQLite default is overridden"
    assert ":" not in settings.state.url.split("://", 1)[1].split("@", 1)[0]
    assert settings.state.password is not None
    assert settings.state.password.reveal() == _secret_data(secret)["postgres-password"]
    assert settings.cluster.lease_seconds == 15
    assert set(settings.accounts) == {"support", "sales"}
    for account in settings.accounts.values():
        assert account.password is not None and account.password.reveal().startswith("REPLACE-ME")
        assert account.tls != "none" and not account.allow_insecure
    # The probes and Prometheus reach the daemon's port.
    assert settings.metrics.address == ("0.0.0.0", 9464)
    assert {p["containerPort"] for p in _container(objects)["ports"]} == {9464}
    # The rules: the ConfigMap mounted where `rules` points, loaded by the real loader.
    _, rules_map = _volume_source(objects, str(settings.rules))
    rules = tmp_path / "rules.d"
    rules.mkdir()
    for name, text in rules_map["data"].items():
        assert name.endswith(".rules"), name
        (rules / name).write_text(text, encoding="utf-8")
    result = load_rule_set(rules)
    assert result.ok and not result.errors, result.render()
    assert result.rule_set.rules
    for rule in result.rule_set.rules:
        assert set(rule.accounts) <= set(settings.accounts), (rule.name, rule.accounts)


def test_probes_ask_the_daemon_for_its_paths(objects: list[Obj]) -> None:
    container = _container(objects)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    listen = _env(objects)["MAILRULES_METRICS__LISTEN"]
    probes = {
        kind: container[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    for probe in probes.values():
        port = probe["port"]
        assert (ports[port] if isinstance(port, str) else port) == int(listen.rpartition(":")[2])
    assert probes["livenessProbe"]["path"] == "/healthz" and probes["startupProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    annotations = _one(objects, "Deployment", "mailrules")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(ports["metrics"])
    # The daemon's own server: liveness answers whatever readiness says; readiness follows it.
    state = {"ready": (False, "leases: first round not done")}
    server = MetricsServer("127.0.0.1:0", Metrics(), lambda: state["ready"])
    server.start()
    try:

        def status(path: str) -> int:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=5) as r:
                    return int(r.status)
            except urllib.error.HTTPError as exc:
                return int(exc.code)

        assert status(probes["livenessProbe"]["path"]) == 200
        assert status(probes["readinessProbe"]["path"]) == 503
        state["ready"] = (True, "replica mailrules-0 owns 1 of 2 accounts")
        assert status(probes["readinessProbe"]["path"]) == 200
        assert status(annotations["prometheus.io/path"]) == 200
    finally:
        server.stop()


def test_the_plain_scrape_config(tmp_path: Path) -> None:
    path = KUBE / "prometheus" / "scrape-config.yml"
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    [job] = config["scrape_configs"]
    assert job["job_name"] == "mailrules", 'the alerts\' up{job="mailrules"}'
    assert [sd["role"] for sd in job["kubernetes_sd_configs"]] == ["pod"]
    kept = {
        tuple(r["source_labels"]): r["regex"] for r in job["relabel_configs"] if r.get("action") == "keep"
    }
    assert kept[("__meta_kubernetes_pod_annotation_prometheus_io_scrape",)] == "true"
    assert kept[("__meta_kubernetes_pod_container_port_name",)] == "metrics"
    promtool = shutil.which("promtool")
    if promtool is None:
        unavailable("promtool is not installed (Debian package prometheus)")
    assert promtool is not None
    done = subprocess.run(
        [promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    if "kubernetes_sd_configs not found" in done.stdout + done.stderr:
        # Debian's promtool is built without Kubernetes discovery: check the rest of the job, its
        # relabelling included, with a static target in its place.
        del job["kubernetes_sd_configs"]
        job["static_configs"] = [{"targets": ["10.0.0.1:9464"]}]
        local = tmp_path / "scrape-config.yml"
        local.write_text(yaml.safe_dump(config), encoding="utf-8")
        done = subprocess.run(
            [promtool, "check", "config", str(local)], capture_output=True, text=True, timeout=60, check=False
        )
    assert done.returncode == 0, done.stdout + done.stderr


#: The oldest Kubernetes release still maintained by the big providers, and the newest known.
KUBERNETES_VERSIONS = ("1.28.0", "latest")


def test_every_object_is_valid_kubernetes(objects: list[Obj]) -> None:
    """Strict OpenAPI validation (kubernetes-validate, offline): a misspelt field is an error."""
    try:
        import kubernetes_validate  # type: ignore[import-untyped]
    except ImportError:
        unavailable("kubernetes-validate is not installed (the `test` extra: pip install -e '.[test]')")
    for version in KUBERNETES_VERSIONS:
        wanted = kubernetes_validate.latest_version() if version == "latest" else version
        for obj in objects:
            try:
                kubernetes_validate.validate(obj, wanted, strict=True)
            except kubernetes_validate.ValidationError as exc:
                raise AssertionError(f"{obj['kind']}/{obj['metadata']['name']} ({wanted}): {exc}") from None
    # A misspelt field is caught (so that the loop above would catch one).
    deployment = json.loads(json.dumps(_one(objects, "Deployment", "mailrules")))
    deployment["spec"]["template"]["spec"]["enableServiceLink"] = False
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), strict=True)


def test_kustomization_lists_only_existing_files() -> None:
    k = _kustomization()
    files = [*k["resources"], *(f.rpartition("=")[2] for g in k["configMapGenerator"] for f in g["files"])]
    for name in files:
        assert (KUBE / name).is_file(), name
    assert (KUBE / "README.md").is_file()
    on_disk = {p.name for p in (KUBE / "rules.d").glob("*.rules")}
    assert on_disk == {
        PurePosixPath(f).name for g in k["configMapGenerator"] for f in g["files"] if "rules.d/" in f
    }
