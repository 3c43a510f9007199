"""Config loading: formats, ${VAR} expansion, and precise errors (file, key path, expected)."""

import json

import pytest
from procs import run_cli

from aiogw import config_load
from aiogw.errors import ConfigError
from aiogw.runtime import Runtime

YAML = """
server: {port: 9000, max_body_bytes: 2048}
providers:
  openai: {type: openai, api_key: "${OPENAI_API_KEY}"}
  local: {type: openai-compatible, base_url: "${LOCAL_URL:-http://127.0.0.1:8000/v1}"}
models:
  - name: smart
    targets:
      - {provider: openai, model: gpt-5, timeouts: {first_token: 5}}
      - {provider: local, model: qwen3-8b, price: {input: 0, output: 0}, limits: {concurrency: 8}}
"""


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_yaml_config_expands_env_vars_and_defaults(tmp_path):
    cfg = config_load.load(write(tmp_path, "c.yaml", YAML), env={"OPENAI_API_KEY": "sk-test-123"})
    assert cfg.server.port == 9000
    assert cfg.providers["openai"].api_key.reveal() == "sk-test-123"
    assert cfg.providers["local"].base_url == "http://127.0.0.1:8000/v1"
    rt = Runtime.build(cfg)
    targets = rt.resolve("smart").targets
    assert [t.id for t in targets] == ["openai/gpt-5", "local/qwen3-8b"]
    assert targets[0].first_token_timeout_s == 5
    assert targets[0].base_url == "https://api.openai.com/v1"
    assert targets[1].concurrency == 8


def test_missing_env_var_names_key_path(tmp_path):
    p = write(tmp_path, "c.yaml", YAML)
    with pytest.raises(ConfigError) as exc:
        config_load.load(p, env={})
    assert exc.value.path == "providers.openai.api_key"
    assert "OPENAI_API_KEY" in exc.value.expected
    assert str(p) in str(exc.value)


def test_empty_env_var_is_not_an_empty_key(tmp_path):
    with pytest.raises(ConfigError) as exc:
        config_load.load(write(tmp_path, "c.yaml", YAML), env={"OPENAI_API_KEY": ""})
    assert exc.value.path == "providers.openai.api_key"


def test_an_empty_variable_takes_its_default_as_in_the_shell():
    data = {"server": {"host": "${HOST:-127.0.0.1}", "port": "${PORT:-9000}"}}
    cfg = config_load.from_builtins(data, env={"HOST": "", "PORT": ""})
    assert (cfg.server.host, cfg.server.port) == ("127.0.0.1", 9000)
    assert config_load.from_builtins(data, env={"HOST": "0.0.0.0"}).server.host == "0.0.0.0"
    # `-` without the colon: only an unset variable takes the default, "" stays "".
    plain = {"telemetry": {"otlp_endpoint": "${OTLP-http://collector:4318}"}}
    assert config_load.from_builtins(plain, env={}).telemetry.otlp_endpoint == "http://collector:4318"
    assert config_load.from_builtins(plain, env={"OTLP": ""}).telemetry.otlp_endpoint == ""


def test_json_and_toml_are_accepted(tmp_path):
    data = {
        "providers": {"o": {"type": "openai", "api_key": "k"}},
        "models": [{"name": "m", "targets": [{"provider": "o", "model": "gpt-4o"}]}],
    }
    assert config_load.load(write(tmp_path, "c.json", json.dumps(data)), env={}).models[0].name == "m"
    toml = '[providers.o]\ntype = "openai"\napi_key = "k"\n[[models]]\nname = "m"\ntargets = [{provider = "o", model = "gpt-4o"}]\n'
    assert config_load.load(write(tmp_path, "c.toml", toml), env={}).providers["o"].api_key.reveal() == "k"


@pytest.mark.parametrize(
    ("text", "path", "expected"),
    [
        ("server: {prot: 1}", "server", "unknown field `prot`"),
        ("server: {port: -1}", "server.port", ">= 0"),
        ("providers: {x: {type: nope}}", "providers.x.type", "Invalid value 'nope'"),
        ("providers: {x: {type: openai-compatible}}", "providers.x", "base_url"),
        (
            "models: [{name: a, targets: [{provider: ghost, model: m}]}]",
            "models[0].targets[0].provider",
            "unknown provider 'ghost'",
        ),
        ("models: [{name: a, targets: []}]", "models[0].targets", "length >= 1"),
        ("server: [", "", "cannot parse yaml"),
        ("routing: {health_check: {interval_s: 0}}", "routing.health_check.interval_s", ">= 0.1"),
        ("routing: {health_check: {timeout_s: -1}}", "routing.health_check.timeout_s", "> 0"),
        ("routing: {health_check: {every: 5}}", "routing.health_check", "unknown field `every`"),
        ("routing: {health_check: true}", "routing.health_check", "Expected `object`"),
    ],
)
def test_invalid_config_names_path_and_expectation(tmp_path, text, path, expected):
    with pytest.raises(ConfigError) as exc:
        config_load.load(write(tmp_path, "c.yaml", text), env={})
    assert exc.value.path == path
    assert expected in exc.value.expected


def test_openai_provider_without_key_is_rejected_at_build(tmp_path):
    cfg = config_load.load(write(tmp_path, "c.yaml", "providers: {o: {type: openai}}"), env={})
    with pytest.raises(ConfigError) as exc:
        Runtime.build(cfg)
    assert exc.value.path == "providers.o.api_key"


def test_secret_never_shows_in_repr(tmp_path):
    cfg = config_load.load(write(tmp_path, "c.yaml", YAML), env={"OPENAI_API_KEY": "sk-live-supersecret"})
    assert "supersecret" not in repr(cfg)
    assert "supersecret" not in repr(Runtime.build(cfg).resolve("smart"))


def test_check_config_prints_routing_table_or_exits_2(tmp_path):
    good = write(tmp_path, "good.yaml", YAML)
    env = {"OPENAI_API_KEY": "sk-x", "PATH": "/usr/bin:/bin"}
    out = run_cli("check-config", str(good), env=env)
    assert out.returncode == 0, out.stderr
    assert "openai/gpt-5" in out.stdout and "local/qwen3-8b" in out.stdout
    assert "sk-x" not in out.stdout
    bad = run_cli("check-config", str(good), env={"PATH": "/usr/bin:/bin"})
    assert bad.returncode == 2
    assert "providers.openai.api_key" in bad.stderr and str(good) in bad.stderr


def test_numbers_from_environment_variables_are_numbers():
    from aiogw.config_load import from_builtins

    cfg = from_builtins({"server": {"port": "${PORT}", "shutdown_grace": "${GRACE:-2.5}"}}, env={"PORT": "9000"})
    assert cfg.server.port == 9000 and cfg.server.shutdown_grace == 2.5


def test_check_config_names_the_state_backend_without_its_password(tmp_path):
    p = write(
        tmp_path,
        "shared.yaml",
        "state: {redis_url: 'redis://:hunter2@cache:6379/0'}\ntelemetry: {otlp_endpoint: 'http://collector:4318'}\n",
    )
    out = run_cli("check-config", str(p), env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert "shared through Redis at redis://:***@cache:6379/0" in out.stdout and "hunter2" not in out.stdout
    assert "OTLP/HTTP to http://collector:4318" in out.stdout


MANY_ERRORS = """
server: {prot: 1, port: -1}
log: {level: loud}
providers:
  a: {type: nope}
  b: {type: openai-compatible}
  c: {type: openai}
  d: {type: anthropic, api_key: "${MISSING_KEY}", base_url: "${MISSING_URL}"}
models:
  - name: m
    strategy: fastest
    targets: [{provider: ghost, model: x}]
  - name: m
    targets: []
"""


def test_every_error_is_reported_with_the_allowed_values(tmp_path):
    p = write(tmp_path, "many.yaml", MANY_ERRORS)
    with pytest.raises(ConfigError) as exc:
        config_load.load(p, env={})
    found = {(e.path, e.expected) for e in exc.value.errors}
    expected = {
        ("server", "unknown field `prot`; expected one of host, port, workers"),
        ("server.port", "Expected `int` >= 0"),
        ("log.level", "Invalid value 'loud'; expected one of debug, info, warning, error"),
        (
            "providers.a.type",
            "Invalid value 'nope'; expected one of openai, openai-compatible, anthropic, gemini, mistral, deepseek, qwen",
        ),
        ("providers.b", "missing required field `base_url`"),
        ("providers.c.api_key", "an api_key is required for this type"),
        ("providers.d.api_key", "environment variable MISSING_KEY is not set"),
        ("providers.d.base_url", "environment variable MISSING_URL is not set"),
        (
            "models[0].strategy",
            "Invalid value 'fastest'; expected one of priority, weighted, lowest-cost, lowest-latency, least-busy",
        ),
        ("models[0].targets[0].provider", "unknown provider 'ghost' (providers: a, b, c, d)"),
        ("models[1].name", "duplicate model name 'm'"),
        ("models[1].targets", "Expected `array` of length >= 1"),
    }
    for path, text in expected:
        assert any(fp == path and text in fe for fp, fe in found), (path, text, sorted(found))
    assert len(found) == len(expected), sorted(found)  # each fault once (an unset variable is not also an empty key)
    out = run_cli("check-config", str(p), env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == len(expected) and all(line.startswith(f"aiogw: invalid config: {p}: ") for line in lines)


def test_account_problems_are_all_reported_once_the_schema_is_valid(tmp_path):
    cfg = config_load.load(write(tmp_path, "c.yaml", "providers: {a: {type: openai}, b: {type: anthropic}}"), env={})
    with pytest.raises(ConfigError) as exc:
        Runtime.build(cfg)
    assert [e.path for e in exc.value.errors] == ["providers.a.api_key", "providers.b.api_key"]


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        ("c.yaml", "server:\n  port: 1\n bad: [\n", "line 3"),
        ("c.json", '{"server": {"port": 1,}}', "line 1"),
        ("c.toml", "[server]\nport = = 1\n", "line 2"),
    ],
)
def test_syntax_errors_name_the_file_and_the_line(tmp_path, name, text, where):
    p = write(tmp_path, name, text)
    with pytest.raises(ConfigError) as exc:
        config_load.load(p, env={})
    message = str(exc.value)
    assert message.startswith(f"{p}: cannot parse ") and where in message
    assert "<unicode string>" not in message


def test_version_names_the_installed_package():
    from importlib.metadata import version

    out = run_cli("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"aiogw {version('aiogw')}"
