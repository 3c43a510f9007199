"""Files under deploy/ that can be validated here are validated: every YAML parses, every
aiogw config in them is accepted by the loader and by `aiogw check-config`, and the
compose, Kubernetes and Docker files hold what operators rely on."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from aiogw import config
from aiogw.runtime import Runtime

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"
ENV = {
    "OPENAI_API_KEY": "sk-test", "ANTHROPIC_API_KEY": "sk-ant-test", "GEMINI_API_KEY": "AIza-test",
    "AIOGW_REDIS_URL": "redis://redis:6379/0", "PATH": "/usr/bin:/bin",
}


def k8s_docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()) if d]


def embedded_configs() -> list[tuple[str, str]]:
    """(where, YAML text) of every aiogw config under deploy/."""
    out = [(p.name, p.read_text()) for p in (DEPLOY / "aiogw.yaml", DEPLOY / "aiogw.compose.yaml")]
    for name in ("sidecar.yaml", "deployment.yaml"):
        for doc in k8s_docs(name):
            if doc["kind"] == "ConfigMap":
                out.append((f"{name}:{doc['metadata']['name']}", doc["data"]["aiogw.yaml"]))
    return out


def test_every_yaml_parses():
    files = [*DEPLOY.glob("*.yaml"), *DEPLOY.glob("*.yml"), *DEPLOY.glob("k8s/*.yaml")]
    assert len(files) >= 7
    for f in files:
        assert list(yaml.safe_load_all(f.read_text())), f


@pytest.mark.parametrize("where,text", embedded_configs(), ids=[w for w, _ in embedded_configs()])
def test_every_embedded_config_is_accepted_by_the_loader_and_the_cli(where, text, tmp_path):
    cfg = config.from_builtins(yaml.safe_load(text), file=where, env=ENV)
    assert Runtime.build(cfg).public_models()
    path = tmp_path / "aiogw.yaml"
    path.write_text(text)
    out = subprocess.run([sys.executable, "-P", "-m", "aiogw", "check-config", str(path)],
                         capture_output=True, text=True, env=ENV, check=False)
    assert out.returncode == 0, out.stderr
    assert "sk-test" not in out.stdout


def test_the_compose_config_runs_on_the_bundled_simulator_without_keys():
    cfg = config.from_builtins(yaml.safe_load((DEPLOY / "aiogw.compose.yaml").read_text()), env={})
    assert cfg.state.redis_url == "redis://redis:6379/0"
    assert cfg.telemetry.otlp_endpoint == "http://otel-collector:4318"
    assert {a.base_url for a in cfg.providers.values()} == {"http://simulator:9000/v1", "http://simulator:9000"}


def test_compose_has_replicas_redis_collector_prometheus_and_only_existing_files():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"aiogw-1", "aiogw-2", "lb", "redis", "otel-collector", "prometheus", "simulator"} <= set(services)
    for name in ("aiogw-1", "aiogw-2"):
        svc = services[name]
        assert "/readyz" in " ".join(svc["healthcheck"]["test"])
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
    assert "redis-cli" in services["redis"]["healthcheck"]["test"]
    for svc in services.values():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            assert (DEPLOY / source).is_file(), volume
    scrape = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())["scrape_configs"][0]
    assert scrape["metrics_path"] == "/metrics"
    assert set(scrape["static_configs"][0]["targets"]) == {"aiogw-1:8080", "aiogw-2:8080"}
    otel = yaml.safe_load((DEPLOY / "otel-collector.yaml").read_text())
    assert otel["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    assert "otlp" in otel["service"]["pipelines"]["traces"]["receivers"]
    nginx = (DEPLOY / "nginx.conf").read_text()
    assert "proxy_buffering off" in nginx and "aiogw-1:8080" in nginx and "aiogw-2:8080" in nginx


def _grace(text: str) -> float:
    return config.from_builtins(yaml.safe_load(text), env=ENV).server.shutdown_grace


@pytest.mark.parametrize("name", ["sidecar.yaml", "deployment.yaml"])
def test_kubernetes_probes_drain_resources_and_non_root(name):
    docs = k8s_docs(name)
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    containers = pod.get("initContainers", []) + pod["containers"]
    gw = next(c for c in containers if c["name"] == "aiogw")
    if name == "sidecar.yaml":
        assert gw in pod["initContainers"] and gw["restartPolicy"] == "Always"  # native sidecar
    port = gw["ports"][0]["containerPort"]
    assert gw["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port}
    assert gw["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}
    assert gw["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert "preStop" in gw["lifecycle"]
    assert pod["terminationGracePeriodSeconds"] > _grace(cm["data"]["aiogw.yaml"]) + 5  # preStop sleeps 5 s
    # The kubelet probes the pod IP: a gateway bound to loopback would never turn ready.
    assert config.from_builtins(yaml.safe_load(cm["data"]["aiogw.yaml"]), env=ENV).server.host == "0.0.0.0"
    assert gw["resources"]["requests"]["cpu"] and gw["resources"]["requests"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert gw["securityContext"]["readOnlyRootFilesystem"] is True
    assert deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
    assert any(v.get("configMap", {}).get("name") == cm["metadata"]["name"] for v in pod["volumes"])


def test_the_deployment_has_a_service_and_a_disruption_budget():
    kinds = {d["kind"]: d for d in k8s_docs("deployment.yaml")}
    assert {"Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"} <= set(kinds)
    assert kinds["Service"]["spec"]["ports"][0]["targetPort"] == 8080
    assert kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == {"app": "aiogw"}


def test_dockerfile_is_non_root_with_a_healthcheck_and_copies_every_package_folder():
    text = (DEPLOY / "Dockerfile").read_text()
    assert "USER 10001" in text and "HEALTHCHECK" in text and "/healthz" in text
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    folders = {d.split("/")[0] for d in pyproject["tool"]["setuptools"]["package-dir"].values()}
    copied = set(re.findall(r"^COPY (\S+) \1$", text, re.M))
    assert folders <= copied, folders - copied
    assert "deploy/aiogw.yaml" in text  # the image's default config exists
    assert (DEPLOY / "aiogw.yaml").is_file()
