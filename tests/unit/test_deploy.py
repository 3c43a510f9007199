"""Files under deploy/ that can be validated here are validated, without Docker or a cluster:
every YAML parses; every aiogw config in them (files and ConfigMap keys, found wherever they
are) is accepted by the loader and by the real `aiogw check-config`; and the compose,
nginx, Prometheus, collector, Kubernetes and Docker files agree with each other and with
the configs on what operators rely on (ports, probes, drain budgets, non-root, files that
exist, every package in the image)."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pytest
import yaml

from aiogw import config, config_load, extras
from aiogw.runtime import Runtime

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"
ENV = {
    "OPENAI_API_KEY": "sk-test",
    "ANTHROPIC_API_KEY": "sk-ant-test",
    "GEMINI_API_KEY": "AIza-test",
    "AIOGW_REDIS_URL": "redis://redis:6379/0",
    "AIOGW_STORE_URL": "postgresql://aiogw:pg-secret@postgres:5432/aiogw",
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
}
CONFIG_KEYS = set(config.Config.__struct_fields__)
_REQUIRED_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")  # no :-default


def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def k8s_docs(name: str) -> list[dict]:
    return docs(DEPLOY / "k8s" / name)


def _is_aiogw_config(data: object) -> bool:
    return (
        isinstance(data, dict) and bool(data) and set(data) <= CONFIG_KEYS and bool({"providers", "models"} & set(data))
    )


def embedded_configs() -> list[tuple[str, str]]:
    """(where, YAML text) of every aiogw config under deploy/: whole files, and ConfigMap
    data keys, recognised by their top-level keys, so a new one is validated too."""
    out = []
    for path in yaml_files():
        rel = path.relative_to(DEPLOY).as_posix()
        for doc in docs(path):
            if _is_aiogw_config(doc):
                out.append((rel, path.read_text()))
            elif doc.get("kind") == "ConfigMap":
                for key, text in (doc.get("data") or {}).items():
                    if key.endswith((".yaml", ".yml")) and _is_aiogw_config(yaml.safe_load(text)):
                        out.append((f"{rel}:{doc['metadata']['name']}/{key}", text))
    return out


CONFIGS = embedded_configs()


def load(text: str, env: dict[str, str] | None = None) -> config.Config:
    return config_load.from_builtins(yaml.safe_load(text), env=ENV if env is None else env)


def cli() -> list[str]:
    """The installed `aiogw` console script next to this interpreter, as users run it."""
    script = Path(sys.executable).with_name("aiogw")
    return [str(script)] if script.is_file() else [sys.executable, "-P", "-m", "aiogw"]


# --- every file parses, every config is accepted ---------------------------------------


def test_every_yaml_under_deploy_parses():
    files = yaml_files()
    assert {"compose.yaml", "aiogw.yaml", "aiogw.compose.yaml", "otel-collector.yaml", "prometheus.yml"} <= {
        f.name for f in files
    }
    for f in files:
        assert docs(f), f
    for f in (DEPLOY / "k8s").glob("*.yaml"):
        for doc in docs(f):  # multi-document; every object names its API and itself
            assert doc.get("apiVersion") and doc.get("kind") and doc.get("metadata", {}).get("name"), (f, doc)


def test_the_configs_are_found_wherever_they_are():
    where = {w for w, _ in CONFIGS}
    assert {"aiogw.yaml", "aiogw.compose.yaml"} <= where
    assert {"k8s/sidecar.yaml:chat-app-aiogw/aiogw.yaml", "k8s/deployment.yaml:aiogw/aiogw.yaml"} <= where


@pytest.mark.parametrize("where,text", CONFIGS, ids=[w for w, _ in CONFIGS])
def test_every_config_is_accepted_by_the_loader_and_by_aiogw_check_config(where, text, tmp_path):
    cfg = load(text)
    assert Runtime.build(cfg).public_models()
    path = tmp_path / "aiogw.yaml"
    path.write_text(text)
    out = subprocess.run(
        [*cli(), "check-config", str(path)], capture_output=True, text=True, env=ENV, check=False, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert f"{path}: OK" in out.stdout
    assert "sk-test" not in out.stdout + out.stderr  # keys are never printed
    # A key the config needs and the environment lacks is a precise error, never "".
    required = _REQUIRED_VAR.findall(text)
    if required:
        env = {k: v for k, v in ENV.items() if k not in required}
        out = subprocess.run(
            [*cli(), "check-config", str(path)], capture_output=True, text=True, env=env, check=False, timeout=60
        )
        assert out.returncode == 2 and f"environment variable {required[0]} is not set" in out.stderr, out.stderr


# --- compose ---------------------------------------------------------------------------

COMPOSE_TEXT = (DEPLOY / "compose.yaml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
SERVICES = COMPOSE["services"]
AIOGW_SERVICES = sorted(
    name
    for name, s in SERVICES.items()
    if s.get("build", {}).get("dockerfile") == "deploy/Dockerfile" and "entrypoint" not in s
)


def _arg(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def _compose_config_path(svc: dict) -> Path:
    target = _arg(svc["command"], "--config")
    for volume in svc["volumes"]:
        source, dest = volume.split(":")[:2]
        if dest == target:
            return DEPLOY / source
    raise AssertionError(f"{target} is not mounted")


def _healthcheck_url(check: list[str]) -> str:
    m = re.search(r"https?://[^'\" ]+", " ".join(check))
    assert m, check
    return m.group(0)


COMPOSE_CFG = load(_compose_config_path(SERVICES["aiogw-1"]).read_text(), env={})  # no keys set on the host


def test_compose_runs_two_aiogw_replicas_with_redis_a_collector_prometheus_and_a_load_balancer():
    assert AIOGW_SERVICES == ["aiogw-1", "aiogw-2"]
    assert {"lb", "redis", "otel-collector", "prometheus", "simulator"} <= set(SERVICES)
    assert "redis-cli" in SERVICES["redis"]["healthcheck"]["test"]
    assert "8080:8080" in SERVICES["lb"]["ports"]
    for name, svc in SERVICES.items():
        for dep in svc.get("depends_on", {}):
            assert dep in SERVICES, (name, dep)


def test_compose_references_only_files_that_exist():
    for name, svc in SERVICES.items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):  # a named volume, declared at the top level
                assert source in COMPOSE["volumes"], (name, volume)
                continue
            assert source.startswith("./") and (DEPLOY / source).is_file(), (name, volume)
        if "build" in svc:
            context = (DEPLOY / svc["build"]["context"]).resolve()
            assert context == ROOT and (context / svc["build"]["dockerfile"]).is_file(), name
        for env_file in svc.get("env_file", []):
            assert (DEPLOY / env_file).is_file(), (name, env_file)


@pytest.mark.parametrize("name", AIOGW_SERVICES)
def test_compose_aiogw_services_are_healthchecked_on_readyz_and_drain_within_their_stop_grace(name):
    svc = SERVICES[name]
    cfg = load(_compose_config_path(svc).read_text(), env={})
    url = urlsplit(_healthcheck_url(svc["healthcheck"]["test"]))
    assert (url.path, url.port) == ("/readyz", cfg.server.port)
    assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
    assert float(svc["stop_grace_period"].rstrip("s")) > cfg.server.shutdown_grace
    assert svc["image"] == SERVICES["simulator"]["image"]


def test_compose_passes_keys_through_by_name_so_the_config_defaults_apply():
    # Passing keys by name keeps an unset key unset; and since ${KEY:-default} treats "" as
    # unset (as the shell does), an empty one also falls back to the simulated default.
    for name in AIOGW_SERVICES:
        env = SERVICES[name].get("environment", [])
        assert isinstance(env, list), name
        for entry in env:
            assert "=" not in entry or entry.split("=", 1)[1] not in ("", "${" + entry.split("=")[0] + ":-}"), entry
    cfg = load(_compose_config_path(SERVICES["aiogw-1"]).read_text(), env={"OPENAI_API_KEY": ""})
    assert cfg.providers["openai"].api_key.reveal()


def test_the_compose_config_needs_no_keys_and_names_compose_services():
    cfg = COMPOSE_CFG
    redis = urlsplit(cfg.state.redis_url)
    assert redis.scheme == "redis" and redis.hostname in SERVICES
    otlp = urlsplit(cfg.telemetry.otlp_endpoint)
    collector = yaml.safe_load((DEPLOY / "otel-collector.yaml").read_text())
    http_receiver = collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    assert otlp.hostname == "otel-collector" in SERVICES and str(otlp.port) == http_receiver.rsplit(":", 1)[1]
    sim_port = int(_arg(SERVICES["simulator"]["entrypoint"], "--port"))
    for account in cfg.providers.values():
        url = urlsplit(account.base_url)
        assert (url.hostname, url.port) == ("simulator", sim_port)
    assert all(t.model.startswith("sim-") for group in cfg.models for t in group.targets)  # visibly simulated
    assert cfg.server.cors is not None and cfg.server.cors.allow_origins


def test_compose_keeps_the_store_on_a_shared_volume_or_in_its_optional_postgres():
    """SQLite by default, in the image's AIOGW_DATA_DIR on a volume both replicas mount (the
    root file system is read-only); AIOGW_STORE_URL switches to the postgres service, which
    starts only with its profile, healthy before the replicas."""
    data_dir = re.search(r"AIOGW_DATA_DIR=(\S+)", " ".join(arg for op, arg in _instructions() if op == "ENV"))
    assert data_dir and COMPOSE_CFG.store is not None
    assert COMPOSE_CFG.store.url == f"sqlite:///{data_dir.group(1)}/aiogw.db"
    for name in AIOGW_SERVICES:
        svc = SERVICES[name]
        assert any(
            v.split(":")[1] == data_dir.group(1) and v.split(":")[0] in COMPOSE["volumes"] for v in svc["volumes"]
        )
        assert "AIOGW_STORE_URL" in svc["environment"]
        assert svc["depends_on"]["postgres"] == {"condition": "service_healthy", "required": False}
    postgres = SERVICES["postgres"]
    assert postgres["profiles"] == ["postgres"] and "pg_isready" in postgres["healthcheck"]["test"]
    env = postgres["environment"]
    url = "postgresql://aiogw:aiogw@postgres:5432/aiogw"  # the one compose.yaml's comment gives
    assert f"AIOGW_STORE_URL={url}" in COMPOSE_TEXT
    parts = urlsplit(
        load(_compose_config_path(SERVICES["aiogw-1"]).read_text(), env={"AIOGW_STORE_URL": url}).store.url
    )
    assert (parts.username, parts.hostname, parts.path) == (env["POSTGRES_USER"], "postgres", f"/{env['POSTGRES_DB']}")
    assert env["POSTGRES_PASSWORD"] == f"${{POSTGRES_PASSWORD:-{parts.password}}}"


def test_compose_services_from_the_aiogw_image_check_their_own_port():
    # The image's HEALTHCHECK asks :8080; the simulator listens elsewhere and says so.
    sim = SERVICES["simulator"]
    assert sim["entrypoint"][:3] == ["python", "-m", "aiogw.bench.simulator"]
    url = urlsplit(_healthcheck_url(sim["healthcheck"]["test"]))
    assert url.port == int(_arg(sim["entrypoint"], "--port"))
    assert SERVICES["aiogw-1"]["depends_on"]["simulator"]["condition"] == "service_healthy"


def test_prometheus_scrapes_every_replica_on_the_aiogw_port():
    scrape = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())["scrape_configs"]
    job = next(j for j in scrape if j["job_name"] == "aiogw")
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = {t for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {f"{name}:{COMPOSE_CFG.server.port}" for name in AIOGW_SERVICES}


def test_the_collector_receives_otlp_on_4317_and_4318_and_its_pipeline_names_defined_parts():
    otel = yaml.safe_load((DEPLOY / "otel-collector.yaml").read_text())
    protocols = otel["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"].endswith(":4317") and protocols["http"]["endpoint"].endswith(":4318")
    traces = otel["service"]["pipelines"]["traces"]
    assert "otlp" in traces["receivers"]
    for kind in ("receivers", "processors", "exporters"):
        for part in traces.get(kind, []):
            assert part in otel[kind], (kind, part)
    assert "4318:4318" in SERVICES["otel-collector"]["ports"]


def test_nginx_balances_the_replicas_unbuffered_and_keeps_the_clients_request_id():
    nginx = (DEPLOY / "nginx.conf").read_text()
    servers = set(re.findall(r"^\s*server\s+([\w.-]+:\d+)", nginx, re.M))
    assert servers == {f"{name}:{COMPOSE_CFG.server.port}" for name in AIOGW_SERVICES}
    assert re.search(r"^\s*listen\s+8080;", nginx, re.M)
    assert "proxy_buffering off;" in nginx
    size = re.search(r"client_max_body_size\s+(\d+)m;", nginx)
    assert size and int(size.group(1)) * 1024 * 1024 >= COMPOSE_CFG.server.max_body_bytes
    read_timeout = re.search(r"proxy_read_timeout\s+(\d+)s;", nginx)
    assert read_timeout and int(read_timeout.group(1)) > max(
        COMPOSE_CFG.server.sse_heartbeat_s, config.DEFAULT_TOTAL_TIMEOUT_S
    )
    assert not re.search(r"X-Request-Id\s+\$request_id;", nginx, re.I)  # a client's id is kept
    retry = re.search(r"proxy_next_upstream\s+([^;]+);", nginx)
    assert retry and "http_503" in retry.group(1) and "timeout" not in retry.group(1)  # draining: retry elsewhere


# --- Kubernetes ------------------------------------------------------------------------

DOCKERFILE = (DEPLOY / "Dockerfile").read_text()
IMAGE_UID = int(re.search(r"^USER (\d+)", DOCKERFILE, re.M).group(1))


def _pod(docs_: list[dict]) -> tuple[dict, dict]:
    deployment = next(d for d in docs_ if d["kind"] == "Deployment")
    return deployment, deployment["spec"]["template"]["spec"]


def _gateway(pod: dict) -> dict:
    return next(c for c in pod.get("initContainers", []) + pod["containers"] if c["name"] == "aiogw")


def _port(container: dict, port: int | str) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p.get("name") == port)


def _k8s_config(docs_: list[dict], gw: dict) -> config.Config:
    """The config the gateway container really reads: --config's file, from the ConfigMap
    mounted at that directory."""
    path = PurePosixPath(_arg(gw["args"], "--config"))
    mount = next(m for m in gw["volumeMounts"] if m["mountPath"] == str(path.parent))
    _, pod = _pod(docs_)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    cm = next(d for d in docs_ if d["kind"] == "ConfigMap" and d["metadata"]["name"] == volume["configMap"]["name"])
    text = cm["data"][path.name]
    required = set(_REQUIRED_VAR.findall(text))
    given = {e["name"] for e in gw.get("env", [])}
    assert required <= given or any("secretRef" in e for e in gw.get("envFrom", [])), required - given
    return load(text)


K8S_FILES = sorted(p.name for p in (DEPLOY / "k8s").glob("*.yaml"))


@pytest.mark.parametrize("version", ["1.29.0", "latest"])  # native sidecars need 1.29
@pytest.mark.parametrize("name", K8S_FILES)
def test_kubernetes_objects_match_the_api_schemas_strictly(name, version):
    """Every field known to the API at that version (a misspelt `readinesProbe` fails),
    against the schemas kubernetes-validate bundles: no cluster, no network."""
    kv = pytest.importorskip("kubernetes_validate")
    version = kv.latest_version() if version == "latest" else version
    for doc in k8s_docs(name):
        kv.validate(doc, version, strict=True)


@pytest.mark.parametrize("name", ["sidecar.yaml", "deployment.yaml"])
def test_kubernetes_gateway_probes_drain_resources_and_non_root(name):
    docs_ = k8s_docs(name)
    deployment, pod = _pod(docs_)
    gw = _gateway(pod)
    cfg = _k8s_config(docs_, gw)
    assert (
        deployment["spec"]["selector"]["matchLabels"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    if name == "sidecar.yaml":
        assert gw in pod["initContainers"] and gw["restartPolicy"] == "Always"  # native sidecar
    port = gw["ports"][0]["containerPort"]
    assert port == cfg.server.port
    # The kubelet probes the pod IP: a gateway bound to loopback would never turn ready.
    assert cfg.server.host == "0.0.0.0"
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = gw[probe]["httpGet"]
        assert get["path"] == path and _port(gw, get["port"]) == port, probe
    # preStop sleeps while endpoints are removed, then SIGTERM drains for shutdown_grace:
    # the pod's grace period must cover both.
    pre_stop = gw["lifecycle"]["preStop"]
    sleep = pre_stop["sleep"]["seconds"] if "sleep" in pre_stop else float(pre_stop["exec"]["command"][-1])
    assert sleep >= 1
    assert pod["terminationGracePeriodSeconds"] > cfg.server.shutdown_grace + sleep
    assert gw["resources"]["requests"]["cpu"] and gw["resources"]["requests"]["memory"]
    assert gw["resources"]["limits"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == IMAGE_UID
    assert gw["securityContext"]["readOnlyRootFilesystem"] is True
    assert gw["securityContext"]["allowPrivilegeEscalation"] is False
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics" and int(annotations["prometheus.io/port"]) == port
    assert pod.get("enableServiceLinks") is False  # no AIOGW_PORT=tcp://... from a Service named aiogw


def test_the_sidecars_app_talks_to_the_gateway_on_loopback():
    docs_ = k8s_docs("sidecar.yaml")
    _, pod = _pod(docs_)
    gw = _gateway(pod)
    app = next(c for c in pod["containers"] if c["name"] == "app")
    env = {e["name"]: e.get("value") for e in app["env"]}
    assert env["OPENAI_BASE_URL"] == f"http://127.0.0.1:{gw['ports'][0]['containerPort']}/v1"
    assert "preStop" in app["lifecycle"]


def test_the_deployment_has_a_service_a_disruption_budget_an_autoscaler_and_a_network_policy():
    docs_ = k8s_docs("deployment.yaml")
    deployment, pod = _pod(docs_)
    gw = _gateway(pod)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    kinds = {d["kind"]: d for d in docs_}
    assert {"Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy", "ConfigMap"} <= set(kinds)
    service = kinds["Service"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert _port(gw, service["spec"]["ports"][0]["targetPort"]) == gw["ports"][0]["containerPort"]
    pdb = kinds["PodDisruptionBudget"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = kinds["HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2 and deployment["spec"]["replicas"] >= 2
    # A drain never takes the last replicas away at once, yet a node can always be drained.
    assert pdb["spec"].get("maxUnavailable", 0) >= 1 or pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]
    cfg = _k8s_config(docs_, gw)
    assert cfg.state.redis_url  # replicas share state
    assert cfg.store is not None and cfg.store.url.startswith("postgresql://")  # and one durable store
    policy = kinds["NetworkPolicy"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert any(
        p["port"] == gw["ports"][0]["containerPort"] for rule in policy["spec"]["ingress"] for p in rule["ports"]
    )


# --- Dockerfile and what goes into the image -------------------------------------------

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    return [
        (m.group(1).upper(), m.group(2).strip())
        for m in re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", text, re.M)
        if not m.group(0).lstrip().startswith("#")
    ]


def test_dockerfile_is_multi_stage_non_root_with_a_healthcheck_and_exec_form_entrypoint():
    ins = _instructions()
    assert sum(1 for op, _ in ins if op == "FROM") >= 2
    assert IMAGE_UID != 0
    assert any(op == "COPY" and arg.startswith("--from=") for op, arg in ins)
    healthcheck = next(arg for op, arg in ins if op == "HEALTHCHECK")
    default_cfg = config_load.load(DEPLOY / "aiogw.yaml", env=ENV)
    url = urlsplit(_healthcheck_url([healthcheck]))
    assert (url.path, url.port) == ("/healthz", default_cfg.server.port)
    assert ("EXPOSE", str(default_cfg.server.port)) in ins
    entrypoint = next(arg for op, arg in ins if op == "ENTRYPOINT")
    assert json.loads(entrypoint) == ["aiogw", "serve"]  # exec form: aiogw is PID 1 and gets SIGTERM
    env = " ".join(arg for op, arg in ins if op == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    # The image's default config is the one validated here, at the path AIOGW_CONFIG names.
    config_path = re.search(r"AIOGW_CONFIG=(\S+)", env).group(1)
    assert ("COPY", f"deploy/aiogw.yaml {config_path}") in ins


def test_dockerfile_copies_every_package_folder_and_the_readme_the_build_needs():
    copied = {arg for op, arg in _instructions() if op == "COPY"}
    copied_dirs = {arg.split()[0] for arg in copied if len(arg.split()) == 2 and arg.split()[0] == arg.split()[1]}
    folders = {d.split("/")[0] for d in SETUPTOOLS["package-dir"].values()}
    assert folders <= copied_dirs, folders - copied_dirs
    sources = {s for arg in copied if not arg.startswith("--") for s in arg.split()[:-1]}
    assert "pyproject.toml" in sources and PYPROJECT["project"]["readme"] in sources


def _arg_default(name: str) -> str:
    value = next(
        (arg.split("=", 1)[1] for op, arg in _instructions() if op == "ARG" and arg.startswith(name + "=")), None
    )
    assert value is not None, f"no ARG {name}=default in the Dockerfile"
    return value


def test_the_image_installs_the_pinned_versions_of_constraints_txt():
    """PIP_CONSTRAINT set before the first pip applies to every install, including the
    isolated environment that builds aiogw's wheel (its setuptools is pinned too)."""
    ins = _instructions()
    first_pip = next(i for i, (op, arg) in enumerate(ins) if op == "RUN" and re.search(r"\bpip\b", arg))
    workdir = next(arg for op, arg in ins[:first_pip] if op == "WORKDIR")
    env = " ".join(arg for op, arg in ins[:first_pip] if op == "ENV")
    constraint = re.search(r"PIP_CONSTRAINT=(\S+)", env)
    assert constraint and constraint.group(1) == f"{workdir}/constraints.txt"
    copied = [shlex.split(arg) for op, arg in ins[:first_pip] if op == "COPY"]
    assert any("constraints.txt" in c[:-1] and c[-1] in ("./", ".", workdir, workdir + "/") for c in copied)


def test_the_image_carries_the_extras_every_config_under_deploy_switches_on():
    image = set(_arg_default("EXTRAS").split(","))
    optional = PYPROJECT["project"]["optional-dependencies"]
    for extra in image:  # the build reads each extra's list flat: no `aiogw[...]` inside
        assert extra in optional and not any(r.startswith("aiogw") for r in optional[extra]), extra
    run = " ".join(arg for op, arg in _instructions() if op == "RUN")
    assert '"aiogw[${EXTRAS}]"' in run  # the wheels built are the ones installed
    needed = {where: set(extras.needed(load(text)).values()) for where, text in CONFIGS}
    assert {e for n in needed.values() for e in n} == {"otlp", "redis", "postgres"}  # compose, the k8s fleet
    assert {where: n - image for where, n in needed.items() if n - image} == {}


def _package_of(folder: PurePosixPath) -> str | None:
    """The import name setuptools gives a folder through package-dir."""
    for name, src in sorted(SETUPTOOLS["package-dir"].items(), key=lambda kv: -len(kv[1])):
        src_path = PurePosixPath(src)
        if folder == src_path or src_path in folder.parents:
            return ".".join([name, *folder.relative_to(src_path).parts])
    return None


# Used from a checkout: a bench-peers target config, and the --workers scaling script with
# its nginx upstream (it reads bench/peers/aiogw.yaml).
# Used from a checkout (bench/peers/run.py, bench/scaling/run.sh), not shipped in the wheel.
NOT_SHIPPED = ("bench/peers/", "bench/scaling/")


def _source_files() -> list[PurePosixPath]:
    """The files of the package folders that git tracks or would (not ignored), except hidden
    and backup files (an editor's), or every file outside a checkout."""
    folders = sorted({d.split("/")[0] for d in SETUPTOOLS["package-dir"].values()})
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *folders],
            cwd=ROOT,
            capture_output=True,
            check=True,
            timeout=30,
        )
        tracked = [PurePosixPath(p) for p in out.stdout.decode().split("\0") if p]
    except (OSError, subprocess.SubprocessError):
        tracked = []
    if tracked:
        return [p for p in tracked if (ROOT / p).is_file() and not p.name.startswith(".") and not p.name.endswith("~")]
    return [
        PurePosixPath(p.relative_to(ROOT).as_posix())
        for folder in folders
        for p in (ROOT / folder).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    ]


def test_every_module_and_data_file_of_the_package_folders_ships_in_the_wheel_the_image_installs():
    """The image installs the wheel that pyproject describes: a subpackage missing from
    `packages`, or a page or data file no package-data glob matches, would be absent from it."""
    packages = set(SETUPTOOLS["packages"])
    globs = SETUPTOOLS.get("package-data", {})
    missing = []
    for rel in _source_files():
        if rel.as_posix().startswith(NOT_SHIPPED):
            continue
        if rel.suffix == ".py":
            if _package_of(rel.parent) not in packages:
                missing.append(f"{rel}: package {_package_of(rel.parent)} is not in [tool.setuptools] packages")
            continue
        shipped = False
        for pkg, patterns in globs.items():
            src = PurePosixPath(SETUPTOOLS["package-dir"].get(pkg, pkg.replace(".", "/")))
            if src in rel.parents and any(fnmatch.fnmatch(rel.relative_to(src).as_posix(), p) for p in patterns):
                shipped = True
        if not shipped:
            missing.append(f"{rel}: no [tool.setuptools.package-data] glob matches it")
    assert not missing, "\n".join(missing)


def _dockerignore_regexes() -> list[tuple[bool, re.Pattern[str]]]:
    out = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        rx = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                rx, i = rx + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                rx, i = rx + ".*", i + 2
            elif pattern[i] == "*":
                rx, i = rx + "[^/]*", i + 1
            elif pattern[i] == "?":
                rx, i = rx + "[^/]", i + 1
            else:
                rx, i = rx + re.escape(pattern[i]), i + 1
        out.append((negate, re.compile(rx + "$")))
    return out


def _docker_ignores(rel: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last matching pattern decides; a pattern matching a directory
    excludes what is in it."""
    parts = rel.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for negate, rx in rules:
        if any(rx.match(c) for c in candidates):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_everything_the_dockerfile_copies_and_drops_secrets_and_tests():
    rules = _dockerignore_regexes()
    sources = [
        s for op, arg in _instructions() if op == "COPY" and not arg.startswith("--") for s in shlex.split(arg)[:-1]
    ]
    files = []
    for source in sources:
        path = ROOT / source
        files += [p.relative_to(ROOT).as_posix() for p in path.rglob("*") if p.is_file()] if path.is_dir() else [source]
    kept = [f for f in files if "__pycache__" not in f]
    assert kept and not [f for f in kept if _docker_ignores(f, rules)]
    for unwanted in (".git/config", "tests/unit/test_deploy.py", "deploy/.env", ".env", "build/lib/x.py"):
        assert _docker_ignores(unwanted, rules), unwanted
