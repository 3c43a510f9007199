"""The config file: typed Structs, loading by extension, `${VAR}` expansion, precise errors.

Loading is four steps: read and decode to builtins (YAML, JSON or TOML by extension);
expand `${VAR}` / `${VAR:-default}` while walking the tree with its key path; convert to
`Config` with msgspec; when that fails, search the tree for every invalid value and raise
them as `ConfigError(file, path, expected)` (the first, carrying all in `.errors`).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import msgspec
import yaml
from msgspec import Meta

from aiogw.errors import ConfigError
from aiogw.extras import missing_extras
from aiogw.names import model_name_problem
from aiogw.types import Secret

# Named defaults, each with its reason.
DEFAULT_PORT = 8080
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024  # large enough for a few base64 images
DEFAULT_CONNECT_TIMEOUT_S = 5.0  # a healthy provider accepts a TCP+TLS handshake in well under 1 s
DEFAULT_TOTAL_TIMEOUT_S = 600.0  # long reasoning answers run for minutes
# Once an answer has started, the longest silence between its pieces. Providers that think
# mid-answer stream the thinking or send pings (Anthropic `ping`, DeepSeek `: keep-alive`);
# those that think silently (OpenAI, Gemini) do it before the first token, where
# `first_token` applies instead. Two minutes of nothing after that is a stuck upstream.
DEFAULT_IDLE_TIMEOUT_S = 120.0
DEFAULT_SHUTDOWN_GRACE_S = 30.0  # Kubernetes' default terminationGracePeriodSeconds
DEFAULT_BODY_TIMEOUT_S = 30.0  # 8 MiB in 30 s is 2.2 Mbit/s; a client trickling slower holds a connection


class Strict(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Config base: a typo fails loudly with its key path instead of being ignored."""


Seconds = Annotated[float, Meta(gt=0)]


class Timeouts(Strict, kw_only=True):
    connect: Seconds | None = None
    first_token: Seconds | None = None  # time to the first streamed token / to the response
    idle: Seconds | None = None  # between pieces of an answer that has started
    total: Seconds | None = None


class Price(Strict, kw_only=True):
    """USD per million tokens."""

    input: Annotated[float, Meta(ge=0)] = 0.0
    output: Annotated[float, Meta(ge=0)] = 0.0
    cached_input: Annotated[float, Meta(ge=0)] | None = None


class Limits(Strict, kw_only=True):
    rpm: Annotated[int, Meta(ge=1)] | None = None
    tpm: Annotated[int, Meta(ge=1)] | None = None
    concurrency: Annotated[int, Meta(ge=1)] | None = None


class Cors(Strict, kw_only=True):
    """Browsers calling aiogw directly. `["*"]` allows any origin (never with credentials)."""

    allow_origins: list[str] = []
    allow_credentials: bool = False
    allow_headers: list[str] = []  # beyond the defaults (authorization, content-type, x-aiogw-*)
    max_age: Annotated[int, Meta(ge=0)] = 600  # seconds a browser may cache a preflight

    def __post_init__(self) -> None:
        if self.allow_credentials and "*" in self.allow_origins:
            raise ValueError("allow_credentials cannot be combined with allow_origins '*'; list the origins")


class ServerConfig(Strict, kw_only=True):
    host: str = "0.0.0.0"
    port: Annotated[int, Meta(ge=0, le=65535)] = DEFAULT_PORT
    workers: Annotated[int, Meta(ge=1, le=256)] = 1
    max_body_bytes: Annotated[int, Meta(ge=1024)] = DEFAULT_MAX_BODY_BYTES  # after decompression
    body_timeout_s: Seconds = DEFAULT_BODY_TIMEOUT_S  # the whole request body must arrive within this
    shutdown_grace: Annotated[float, Meta(ge=0)] = DEFAULT_SHUTDOWN_GRACE_S
    cors: Cors | None = None
    # Comment lines sent while a stream waits for its first token, so that proxies and load
    # balancers with idle timeouts keep the connection; 0 turns them off.
    sse_heartbeat_s: Annotated[float, Meta(ge=0)] = 10.0
    pages: bool = True  # GET /playground and /dashboard
    # A separate listener for GET /metrics: worker i of `--workers N` serves it on
    # metrics_port + i, so Prometheus scrapes each worker (the main port reaches a random one).
    metrics_port: Annotated[int, Meta(ge=1, le=65535)] | None = None


class LogConfig(Strict, kw_only=True):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"  # auto: console on a TTY, else JSON


class Account(Strict, kw_only=True, tag_field="type"):
    """One provider account. `type` selects the adapter."""

    api_key: Secret | None = None
    base_url: str | None = None
    headers: dict[str, str] = {}  # extra upstream headers (e.g. OpenAI-Organization)
    timeouts: Timeouts = Timeouts()
    # TLS to this account's upstream: CAs to trust instead of the system's (PEM file), and a
    # client certificate (PEM; its key in `client_key` or in the same file) for mutual TLS.
    ca_bundle: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    # http://[user:password@]host:port; unset: HTTPS_PROXY / HTTP_PROXY / NO_PROXY decide.
    proxy: str | None = None

    def __post_init__(self) -> None:
        if self.client_key and not self.client_cert:
            raise ValueError("client_key is set without client_cert")


class OpenAIAccount(Account, kw_only=True, tag="openai"):
    pass


class OpenAICompatibleAccount(Account, kw_only=True, tag="openai-compatible"):
    base_url: str  # required: there is no public default


class AnthropicAccount(Account, kw_only=True, tag="anthropic"):
    pass


class GeminiAccount(Account, kw_only=True, tag="gemini"):
    pass


class MistralAccount(Account, kw_only=True, tag="mistral"):
    pass


class DeepSeekAccount(Account, kw_only=True, tag="deepseek"):
    pass


class QwenAccount(Account, kw_only=True, tag="qwen"):
    pass


AccountConfig = (
    OpenAIAccount
    | OpenAICompatibleAccount
    | AnthropicAccount
    | GeminiAccount
    | MistralAccount
    | DeepSeekAccount
    | QwenAccount
)


class TargetConfig(Strict, kw_only=True):
    provider: str
    model: str
    weight: Annotated[float, Meta(ge=0)] = 1.0
    price: Price | None = None
    limits: Limits | None = None
    timeouts: Timeouts | None = None
    context_window: Annotated[int, Meta(ge=1)] | None = None
    # Default for providers that require an output cap (Anthropic's max_tokens) when the
    # client sends none; otherwise the adapter's per-model table decides.
    max_output_tokens: Annotated[int, Meta(ge=1)] | None = None


Strategy = Literal["priority", "weighted", "lowest-cost", "lowest-latency", "least-busy"]
Ratio = Annotated[float, Meta(ge=0, le=1)]
Count = Annotated[int, Meta(ge=1)]


class BreakerConfig(Strict, kw_only=True):
    """Circuit breaker (the defaults of the README's "Routing and failover"): open above `error_rate` over at least
    `min_calls` calls in the 60 s window, or after `consecutive_failures`; stay open
    `open_s`; then `half_open_probes` probes at a time; close after `close_after` successes."""

    error_rate: Ratio = 0.05
    min_calls: Count = 20
    consecutive_failures: Count = 5
    open_s: Seconds = 30.0
    half_open_probes: Count = 1
    close_after: Count = 3


class RetryConfig(Strict, kw_only=True):
    """After every target of the plan failed with a retryable error: walk the plan again up
    to `max_rounds` times, after exponential backoff with full jitter (or the provider's
    `retry-after` when it fits the deadline), while the retry budget allows: extra rounds
    may add at most `budget_ratio` of the recent request rate, plus `budget_min_per_s`."""

    max_rounds: Annotated[int, Meta(ge=0, le=10)] = 1
    backoff_base_ms: Annotated[float, Meta(ge=0)] = 100.0
    backoff_max_ms: Annotated[float, Meta(ge=0)] = 2000.0
    budget_ratio: Ratio = 0.2
    budget_min_per_s: Annotated[float, Meta(ge=0)] = 2.0


class HedgeConfig(Strict, kw_only=True):
    """Start the next target when the current one has produced no first token within
    `delay_ms` (a number, or "p95": the target's recent p95 time to first token)."""

    delay_ms: Annotated[float, Meta(gt=0)] | Literal["p95"]
    max_parallel: Annotated[int, Meta(ge=2, le=4)] = 2


class HealthCheckConfig(Strict, kw_only=True):
    """Active health checks: while a target's breaker is open or half-open, the cheapest real
    call (a one-word chat with `max_tokens: 1`) every `interval_s`, bounded by `timeout_s`.
    Passing checks close the breaker, so recovery is confirmed without user requests."""

    enabled: bool = True  # false: a group opts out of the routing default
    interval_s: Annotated[float, Meta(ge=0.1, le=3600)] = 10.0
    timeout_s: Annotated[float, Meta(gt=0, le=600)] = 5.0


class RoutingConfig(Strict, kw_only=True):
    """Defaults for every model group; a group may override each section."""

    breaker: BreakerConfig = BreakerConfig()
    retry: RetryConfig = RetryConfig()
    health_check: HealthCheckConfig | None = None  # off unless set here or on a group


class SLOConfig(Strict, kw_only=True):
    """A model group's service-level objectives over the health window: a target outside
    them is ranked after those within, and a breach fires `slo.breach`."""

    ttft_p95_ms: Annotated[float, Meta(gt=0)] | None = None
    latency_p95_ms: Annotated[float, Meta(gt=0)] | None = None
    error_rate: Ratio | None = None


class ModelGroup(Strict, kw_only=True):
    name: str
    strategy: Strategy = "priority"
    targets: Annotated[list[TargetConfig], Meta(min_length=1)]
    breaker: BreakerConfig | None = None
    retry: RetryConfig | None = None
    hedge: HedgeConfig | None = None
    health_check: HealthCheckConfig | None = None
    slo: SLOConfig | None = None


class TelemetryConfig(Strict, kw_only=True):
    """OpenTelemetry traces, exported over OTLP/HTTP when an endpoint is set (off otherwise)."""

    otlp_endpoint: str | None = None  # e.g. http://otel-collector:4318 (/v1/traces is appended)
    otlp_headers: dict[str, str] = {}
    service_name: str = "aiogw"
    sample_ratio: Annotated[float, Meta(ge=0, le=1)] = 1.0  # of traces started here (a caller's choice is kept)
    export_delay_ms: Annotated[int, Meta(ge=10, le=60_000)] = 2000  # batch export interval


class StateConfig(Strict, kw_only=True):
    """Where rate-limit counters, breaker state and health windows live: in-process unless
    a Redis URL is set, then shared by every replica that names the same Redis and prefix."""

    redis_url: str | None = None
    key_prefix: str = "aiogw"
    sync_interval_ms: Annotated[int, Meta(ge=50, le=10_000)] = 250  # health windows pushed/pulled
    timeout_ms: Annotated[int, Meta(ge=1, le=10_000)] = 50  # per Redis call on the hot path


class AuthConfig(Strict, kw_only=True):
    """Who may call: the master key opens /admin/v1/* (no admin API without it); with
    `require_keys` every /v1 request needs a valid virtual key."""

    master_key: Secret | None = None
    require_keys: bool = False
    # The server-side secret mixed into every stored key hash (HMAC-SHA256). Unset: derived
    # from the master key, so changing the master key invalidates every virtual key.
    pepper: Secret | None = None
    key_cache_size: Annotated[int, Meta(ge=1)] = 10_000  # verified keys held in process

    def __post_init__(self) -> None:
        if self.require_keys and self.master_key is None and self.pepper is None:
            raise ValueError("require_keys needs master_key (to manage keys) or pepper (to verify them)")

    @property
    def configured(self) -> bool:
        """Virtual keys are in play: the store is opened and /v1 requests are authenticated."""
        return self.master_key is not None or self.require_keys


class StoreConfig(Strict, kw_only=True):
    """Durable state (keys, budgets, the spend ledger): SQLite by default, PostgreSQL for a fleet."""

    url: str = "sqlite:///${AIOGW_DATA_DIR:-.}/aiogw.db"
    ledger_flush_ms: Annotated[int, Meta(ge=10, le=60_000)] = 500  # ledger rows written in batches
    ledger_batch: Annotated[int, Meta(ge=1, le=100_000)] = 500


Period = Literal["1d", "7d", "30d", "month", "total"]
BudgetScope = Literal["key", "team", "user", "model", "provider", "tag", "task", "global"]


class BudgetConfig(Strict, kw_only=True):
    scope: BudgetScope
    match: str | None = None  # the key id, team, model name, "k=v" tag...; none for global
    limit_usd: Annotated[float, Meta(gt=0)]
    period: Period = "month"
    alert_at: list[Annotated[float, Meta(gt=0, le=1)]] = msgspec.field(default_factory=lambda: [1.0])

    def __post_init__(self) -> None:
        if (self.scope == "global") != (self.match is None):
            raise ValueError("match is required for every scope but global (and not allowed there)")


class WebhookConfig(Strict, kw_only=True):
    url: str
    secret: Secret | None = None  # signs each body: x-aiogw-signature: sha256=<hex HMAC>
    events: list[str] = msgspec.field(
        default_factory=lambda: ["*"]
    )  # budget.threshold, budget.exceeded, budget.forecast, slo.breach, ...
    timeout_s: Seconds = 5.0
    max_attempts: Annotated[int, Meta(ge=1, le=20)] = 6


class AlertsConfig(Strict, kw_only=True):
    webhooks: list[WebhookConfig] = []
    key_expiring_s: Annotated[float, Meta(gt=0)] = 7 * 86400.0  # key.expiring this long before


class Config(Strict, kw_only=True):
    server: ServerConfig = ServerConfig()
    log: LogConfig = LogConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    state: StateConfig = StateConfig()
    routing: RoutingConfig = RoutingConfig()
    providers: dict[str, AccountConfig] = {}
    models: list[ModelGroup] = []
    auth: AuthConfig = AuthConfig()
    store: StoreConfig | None = None  # None: the default SQLite file, opened only when keys or budgets need it
    budgets: list[BudgetConfig] = []
    alerts: AlertsConfig = AlertsConfig()


# --- loading ----------------------------------------------------------------------------

# ${VAR}, ${VAR:-default} (unset or empty: default), ${VAR-default} (unset: default), $$.
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?)-([^}]*))?\}")


def _expand(value: Any, path: str, file: str, env: dict[str, str], missing: list[ConfigError]) -> Any:
    """`value` with variables expanded; an unset variable without default is added to
    `missing` (every one is reported, not only the first)."""
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            if m.group(0) == "$$":  # `$$` escapes a literal dollar
                return "$"
            name, colon, default = m.group(1), m.group(2), m.group(3)
            value = env.get(name)
            if default is not None and (value is None or (colon and not value)):
                return default  # as in the shell: `:-` also covers a variable set to "", `-` does not
            if value is not None:
                return value
            missing.append(ConfigError(file, path, f"environment variable {name} is not set"))
            return ""

        return _VAR.sub(sub, value) if "$" in value else value
    if isinstance(value, dict):
        return {k: _expand(v, f"{path}.{k}" if path else str(k), file, env, missing) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{path}[{i}]", file, env, missing) for i, v in enumerate(value)]
    return value


def _dec_hook(typ: type, obj: Any) -> Any:
    if typ is Secret:
        if not isinstance(obj, str):
            raise TypeError("Expected `str`")
        if not obj:
            raise ValueError("an API key must not be empty")
        return Secret(obj)
    raise NotImplementedError


_PATH_IN_MESSAGE = re.compile(r"^(.*?)(?: - at `\$(.*)`)?$", re.DOTALL)


def _read(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            return json.loads(text)
        if suffix == ".toml":
            return tomllib.loads(text)
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        # PyYAML names the stream `<unicode string>`; the file is named by ConfigError.
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = "; ".join(str(x) for x in (exc.context, exc.problem) if x)
        raise ConfigError(str(path), "", f"cannot parse yaml{where}: {what}") from None
    except (ValueError, yaml.YAMLError) as exc:  # JSON and TOML errors give the line themselves
        raise ConfigError(str(path), "", f"cannot parse {suffix.lstrip('.') or 'yaml'}: {exc}") from None


def from_builtins(data: Any, *, file: str = "<config>", env: dict[str, str] | None = None) -> Config:
    """Expand variables, convert and cross-check an already-decoded config tree. Raises the
    first ConfigError found, carrying every one in `.errors`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(file, "$", "expected a mapping at the top level")
    missing: list[ConfigError] = []
    expanded = _expand(data, "", file, dict(os.environ) if env is None else env, missing)
    try:
        config = msgspec.convert(expanded, Config, dec_hook=_dec_hook, strict=False)  # "${PORT}" is a string
    except msgspec.ValidationError:
        config = None
    problems = list(missing)
    if config is None:  # the slow path: find every invalid value, not only msgspec's first
        unset = tuple(e.path for e in missing)  # their "" would only repeat the same fault
        problems += [e for e in _problems(expanded, Config, "", file) if not _under(e.path, unset)]
        providers = expanded.get("providers")
        for name, account in providers.items() if isinstance(providers, dict) else ():
            if not _under(f"providers.{name}", unset) and not _problems(account, AccountConfig, "", file):
                problems += account_problems(
                    name, msgspec.convert(account, AccountConfig, dec_hook=_dec_hook, strict=False), file
                )
    problems += _reference_problems(expanded, file)
    if config is not None:  # a part switched on whose extra is not installed
        problems += [ConfigError(file, key, why) for key, why in missing_extras(config)]
    if problems:
        raise ConfigError.of(problems)
    assert config is not None
    return config


def load(path: str | os.PathLike[str], *, env: dict[str, str] | None = None) -> Config:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(str(p), "", "file not found")
    return from_builtins(_read(p), file=str(p), env=env)


def account_problems(name: str, account: Account, file: str) -> list[ConfigError]:
    """What a provider account lacks for its type (checked once the config converts, by
    Runtime.build, and here for check-config's report when something else is invalid)."""
    from aiogw.adapters import REGISTRY  # noqa: PLC0415 - adapters import types, not config

    tag = type(account).__struct_config__.tag
    adapter = REGISTRY.get(tag) if isinstance(tag, str) else None
    if adapter is None:
        return [ConfigError(file, f"providers.{name}.type", f"provider type '{tag}' is not available in this build")]
    out = []
    if adapter.requires_base_url and not account.base_url:
        out.append(ConfigError(file, f"providers.{name}.base_url", "a base_url is required for this type"))
    if adapter.requires_api_key and account.api_key is None:
        out.append(ConfigError(file, f"providers.{name}.api_key", "an api_key is required for this type"))
    return out


def _reference_problems(data: dict[str, Any], file: str) -> list[ConfigError]:
    """Duplicate model names and targets naming an unconfigured provider, read from the raw
    tree so they are reported alongside any invalid value."""
    providers = data.get("providers")
    known = sorted(providers) if isinstance(providers, dict) else []
    models = data.get("models")
    out, seen = [], set()
    for i, group in enumerate(models if isinstance(models, list) else ()):
        if not isinstance(group, dict):
            continue
        name = group.get("name")
        if isinstance(name, str):
            if (problem := model_name_problem(name)) is not None:
                out.append(ConfigError(file, f"models[{i}].name", f"invalid model name {name!r}: the name {problem}"))
            if name in seen:
                out.append(ConfigError(file, f"models[{i}].name", f"duplicate model name '{name}'"))
            seen.add(name)
        targets = group.get("targets")
        for j, target in enumerate(targets if isinstance(targets, list) else ()):
            model = target.get("model") if isinstance(target, dict) else None
            if isinstance(model, str) and (problem := model_name_problem(model)) is not None:
                out.append(
                    ConfigError(
                        file, f"models[{i}].targets[{j}].model", f"invalid model name {model!r}: the name {problem}"
                    )
                )
            provider = target.get("provider") if isinstance(target, dict) else None
            if isinstance(provider, str) and provider not in known:
                out.append(ConfigError(
                    file, f"models[{i}].targets[{j}].provider",
                    f"unknown provider '{provider}' (providers: {', '.join(known) or 'none configured'})",
                ))  # fmt: skip
    return out


# --- every invalid value, for the report ----------------------------------------------------


def _problems(obj: Any, typ: Any, path: str, file: str) -> list[ConfigError]:
    """Every invalid value under `obj` for type `typ`, each with its key path; [] when it
    converts. msgspec stops at the first error, so a failing container is searched part by
    part; when no part fails alone (a rule across fields), the container's own error stands."""
    try:
        msgspec.convert(obj, typ, dec_hook=_dec_hook, strict=False)
        return []
    except msgspec.ValidationError as exc:
        m = _PATH_IN_MESSAGE.match(str(exc))
        assert m is not None
        where = _join(path, (m.group(2) or "").lstrip("."))
        whole = ConfigError(file, where, m.group(1))
    return _part_problems(obj, typ, path, file) or [whole]


def _part_problems(obj: Any, typ: Any, path: str, file: str) -> list[ConfigError]:
    origin, args = get_origin(typ), get_args(typ)
    if origin is Annotated:
        return _part_problems(obj, args[0], path, file)
    if origin is Literal:
        return [ConfigError(file, path, f"Invalid value {obj!r}; expected one of {', '.join(map(str, args))}")]
    if origin in (Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if obj is not None and len(options) == 1:
            return _problems(obj, options[0], path, file)
        tags = {a.__struct_config__.tag: a for a in options if isinstance(a, type) and issubclass(a, msgspec.Struct)}
        tag_field = options[0].__struct_config__.tag_field if tags and len(tags) == len(options) else None
        if tag_field and isinstance(obj, dict):
            if obj.get(tag_field) in tags:
                return _problems(obj, tags[obj[tag_field]], path, file)
            got = f"Invalid value {obj[tag_field]!r}" if tag_field in obj else "missing"
            return [ConfigError(file, _join(path, tag_field), f"{got}; expected one of {', '.join(map(str, tags))}")]
        words = [str(v) for a in options if get_origin(a) is Literal for v in get_args(a)]
        if words and isinstance(obj, str):  # e.g. a number or "p95"
            others = [
                getattr(get_args(a)[0] if get_origin(a) is Annotated else a, "__name__", str(a))
                for a in options
                if get_origin(a) is not Literal
            ]
            return [
                ConfigError(
                    file, path, f"Invalid value {obj!r}; expected one of {', '.join(words)}, or a {' or '.join(others)}"
                )
            ]
        return []
    if isinstance(typ, type) and issubclass(typ, msgspec.Struct) and isinstance(obj, dict):
        return _struct_problems(obj, typ, path, file)
    if origin is list and isinstance(obj, list):
        return [e for i, v in enumerate(obj) for e in _problems(v, args[0], f"{path}[{i}]", file)]
    if origin is dict and isinstance(obj, dict):
        return [e for k, v in obj.items() for e in _problems(v, args[1], _join(path, str(k)), file)]
    return []


def _struct_problems(obj: dict[str, Any], typ: type[msgspec.Struct], path: str, file: str) -> list[ConfigError]:
    fields = {f.encode_name: f for f in msgspec.structs.fields(typ)}
    config = typ.__struct_config__
    out = []
    for key, value in obj.items():
        if key in fields:
            out += _problems(value, fields[key].type, _join(path, str(key)), file)
        elif config.forbid_unknown_fields and key != config.tag_field:
            out.append(ConfigError(file, path, f"unknown field `{key}`; expected one of {', '.join(fields)}"))
    out += [
        ConfigError(file, path, f"missing required field `{name}`")
        for name, f in fields.items()
        if f.required and name not in obj
    ]
    return out


def _join(path: str, key: str) -> str:
    if not key:
        return path
    return f"{path}{key}" if not path or key.startswith("[") else f"{path}.{key}"


def _under(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == r or path.startswith((r + ".", r + "[")) for r in roots)
