"""Optional parts (pip extras): a config that switches one on without its packages is a
config error naming the extra, at load, from `aiogw check-config` and `aiogw serve` alike;
one that leaves them off needs none of them."""

from __future__ import annotations

import os
import subprocess

import pytest
from procs import run_cli, without_packages

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
REDIS = "state: {redis_url: 'redis://:hunter2@127.0.0.1:6379/0'}\n"
OTLP = "telemetry: {otlp_endpoint: 'http://127.0.0.1:4318'}\n"
POSTGRES = "store: {url: 'postgresql://aiogw:hunter2@127.0.0.1:5432/aiogw'}\n"
SEMANTIC = "cache: {enabled: true, semantic: {enabled: true, embedding_model: emb}}\n"


def aiogw(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env={**ENV, **env})


@pytest.mark.parametrize(
    "text,blocked,key,extra",
    [
        (REDIS, ["redis"], "state.redis_url", "redis"),
        (OTLP, ["opentelemetry"], "telemetry.otlp_endpoint", "otlp"),  # neither SDK nor exporter
        (OTLP, ["opentelemetry.exporter.otlp.proto.http"], "telemetry.otlp_endpoint", "otlp"),  # the SDK alone
        (POSTGRES, ["asyncpg"], "store.url", "postgres"),
        (SEMANTIC, ["numpy"], "cache.semantic.enabled", "semantic"),
    ],
    ids=["redis", "otlp-none", "otlp-sdk-only", "postgres", "semantic"],
)
def test_a_part_switched_on_without_its_extra_is_a_config_error_naming_the_extra(tmp_path, text, blocked, key, extra):
    path = tmp_path / "aiogw.yaml"
    path.write_text(text)
    env = without_packages(tmp_path, *blocked)
    expected = f"aiogw: invalid config: {path}: {key}: needs the '{extra}' extra: pip install 'aiogw[{extra}]'"
    for args in (["check-config", str(path)], ["serve", "--config", str(path), "--port", "0"]):
        out = aiogw(*args, env=env)
        assert out.returncode == 2, out.stderr
        assert out.stderr.strip() == expected  # one line, never an ImportError traceback
        assert "hunter2" not in out.stdout + out.stderr


def test_parts_left_off_need_no_extra(tmp_path):
    path = tmp_path / "aiogw.yaml"
    # `${VAR:-}` with VAR unset; a SQLite store is built in
    path.write_text("state: {redis_url: ''}\ntelemetry: {otlp_endpoint: ''}\nstore: {url: 'sqlite:///x.db'}\n")
    out = aiogw("check-config", str(path), env=without_packages(tmp_path, "redis", "opentelemetry", "asyncpg"))
    assert out.returncode == 0, out.stderr
    assert "state: in-process" in out.stdout and "traces:" not in out.stdout


def test_with_the_extras_installed_the_same_config_is_accepted(tmp_path):
    path = tmp_path / "aiogw.yaml"
    path.write_text(REDIS + OTLP + POSTGRES)
    out = aiogw("check-config", str(path), env={})
    assert out.returncode == 0, out.stderr
    assert "shared through Redis" in out.stdout and "OTLP/HTTP to http://127.0.0.1:4318" in out.stdout
    assert "store: postgresql://aiogw:***@127.0.0.1:5432/aiogw" in out.stdout
