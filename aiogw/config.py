"""The config file's shape: typed Structs with their defaults and per-value rules.

Loading a file into a `Config` (`${VAR}` expansion, every invalid value reported) is
`aiogw.config_load`.
"""

from __future__ import annotations

import os
from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

from aiogw.alerts.sink import EVENT_TYPES
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
    cached_input: Annotated[float, Meta(ge=0)] | None = None  # unset: cache reads cost full input
    cache_write: Annotated[float, Meta(ge=0)] | None = None  # unset: cache writes cost full input


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
    # The upstream serves POST /v1/responses too, so Responses requests are passed through
    # unchanged; unset: yes for OpenAI itself (no base_url), no for anything else.
    responses_api: bool | None = None


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


Strategy = Literal["priority", "weighted", "lowest-cost", "lowest-latency", "least-busy", "quality"]
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
    # Fewer calls than this in a target's window: its status is "unknown", ranked as within
    # (a p95 of three calls says little, and an idle target must stay reachable).
    min_calls: Count = 20

    def __post_init__(self) -> None:
        if self.ttft_p95_ms is None and self.latency_p95_ms is None and self.error_rate is None:
            raise ValueError("an slo needs at least one of ttft_p95_ms, latency_p95_ms, error_rate")


_METRIC_NAME = r"^[A-Za-z0-9_.:-]{1,64}$"


class SpotCheckConfig(Strict, kw_only=True):
    """A sampled share of a quality group's answers graded by `judge` (a model group or
    `<provider>/<model>`) off the request path."""

    judge: str
    rate: Ratio = 0.02


class QualityConfig(Strict, kw_only=True):
    """`strategy: quality`: the cheapest healthy target whose estimated quality for the
    request's task (and prompt bucket) meets `floor` with confidence; see the README's
    "Routing by quality"."""

    floor: Ratio = 0.9
    prior: str | None = None  # a quality.json (from `aiogw eval run`), relative to the config file
    metric: Annotated[str, Meta(pattern=_METRIC_NAME)] = "correct"  # the metric routed on
    metrics: list[Annotated[str, Meta(pattern=_METRIC_NAME)]] = []  # declared beyond `correct`
    explore: Annotated[float, Meta(ge=0, le=0.5)] = 0.05  # share of requests routed by Thompson sampling
    # A target meets the floor when P(quality >= floor) >= confidence under its posterior.
    confidence: Annotated[float, Meta(ge=0.5, lt=1)] = 0.8
    prior_weight: Annotated[float, Meta(gt=0, le=10_000)] = 20.0  # a prior counts as at most this many observations
    # Observations (and the prior) lose half their weight after this many newer ones of the
    # same estimate: a target that got worse is noticed within about that many.
    half_life: Annotated[float, Meta(ge=1)] = 200.0
    spot_check: SpotCheckConfig | None = None

    def __post_init__(self) -> None:
        if self.metric != "correct" and self.metric not in self.metrics:
            raise ValueError(f"metric {self.metric!r} is not declared: add it to metrics (correct is always known)")

    @property
    def known_metrics(self) -> tuple[str, ...]:
        return ("correct", *(m for m in self.metrics if m != "correct"))


CachePolicy = Literal["deterministic", "opt_in", "always"]
CacheScope = Literal["key", "team", "global"]
DEFAULT_CACHE_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_CACHE_TTL_S = 3600.0
DEFAULT_CACHE_MAX_TTL_S = 86400.0


class CacheOverride(Strict, kw_only=True):
    """A model group's own cache settings; unset fields take the top-level `cache:` value."""

    enabled: bool | None = None
    ttl_s: Seconds | None = None
    policy: CachePolicy | None = None
    deterministic_tasks: list[str] | None = None
    cache_tool_calls: bool | None = None


class SemanticCacheConfig(Strict, kw_only=True):
    """The semantic tier: a request whose last user message is close enough (cosine of
    embeddings) to a stored one's, everything else equal, gets that answer. Needs numpy."""

    enabled: bool = False
    embedding_model: str = ""  # a public model name or provider/model, called through aiogw
    threshold: Annotated[float, Meta(gt=0, le=1)] = 0.95  # x-aiogw-cache-threshold may only raise it
    max_messages: Annotated[int, Meta(ge=1, le=1000)] = 4  # the request's last messages that count
    max_entries: Annotated[int, Meta(ge=1, le=10_000_000)] = 10_000  # vectors kept (oldest leave first)

    def __post_init__(self) -> None:
        if self.enabled and not self.embedding_model.strip():
            raise ValueError("cache.semantic.embedding_model is required when the semantic tier is enabled")


class CacheConfig(Strict, kw_only=True):
    """The exact-match response cache: deterministic answers served again without an
    upstream call. Off unless `enabled`."""

    enabled: bool = False
    backend: Literal["memory", "redis"] = "memory"  # redis: shared by replicas (state.redis_url)
    max_bytes: Annotated[int, Meta(ge=1024)] = DEFAULT_CACHE_MAX_BYTES  # memory backend: LRU past this
    ttl_s: Seconds = DEFAULT_CACHE_TTL_S
    max_ttl_s: Seconds = DEFAULT_CACHE_MAX_TTL_S  # caps ttl_s and x-aiogw-cache-ttl
    policy: CachePolicy = "deterministic"
    deterministic_tasks: list[str] = msgspec.field(default_factory=lambda: ["classification", "extraction"])
    scope: CacheScope = "team"
    cache_tool_calls: bool = False
    timeout_ms: Annotated[int, Meta(ge=1, le=10_000)] = 50  # per Redis call; past it the cache is skipped
    semantic: SemanticCacheConfig = SemanticCacheConfig()

    def __post_init__(self) -> None:
        if self.ttl_s > self.max_ttl_s:
            raise ValueError(f"ttl_s ({self.ttl_s:g}) is above max_ttl_s ({self.max_ttl_s:g})")


class ModelGroup(Strict, kw_only=True):
    name: str
    strategy: Strategy = "priority"
    targets: Annotated[list[TargetConfig], Meta(min_length=1)]
    breaker: BreakerConfig | None = None
    retry: RetryConfig | None = None
    hedge: HedgeConfig | None = None
    health_check: HealthCheckConfig | None = None
    slo: SLOConfig | None = None
    cache: CacheOverride | None = None
    quality: QualityConfig | None = None  # required by (and only read by) strategy: quality

    def __post_init__(self) -> None:
        if self.strategy == "quality" and self.quality is None:
            raise ValueError("strategy quality needs a quality block (quality: {floor: 0.9, prior: ...})")


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

    # A default is not expanded like the file's text: AIOGW_DATA_DIR is read here.
    url: str = msgspec.field(default_factory=lambda: f"sqlite:///{os.environ.get('AIOGW_DATA_DIR') or '.'}/aiogw.db")
    ledger_flush_ms: Annotated[int, Meta(ge=10, le=60_000)] = 500  # ledger rows written in batches
    ledger_batch: Annotated[int, Meta(ge=1, le=100_000)] = 500

    def __post_init__(self) -> None:
        if not self.url.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError(
                "expected sqlite:///PATH (sqlite:////ABSOLUTE/PATH) or postgresql://USER:PASSWORD@HOST:PORT/DB"
            )


class FeedbackConfig(Strict, kw_only=True):
    """`POST /v1/feedback` and the request memory it reads (request id -> caller, group,
    task, bucket, target). On for every group with `enabled`; groups with `strategy:
    quality` or a `quality` section are remembered without it."""

    enabled: bool = False
    retention_s: Seconds = 7 * 86400.0  # feedback for an older request is 404
    flush_ms: Annotated[int, Meta(ge=10, le=60_000)] = 500  # memory rows written in batches
    batch: Annotated[int, Meta(ge=1, le=100_000)] = 500
    # With state.redis_url: how long a memory is also held in Redis, so that another replica
    # finds it before this one's batch reaches the store (the store keeps it retention_s).
    shared_ttl_s: Annotated[float, Meta(ge=1, le=86400)] = 600.0
    spot_check_queue: Annotated[int, Meta(ge=1, le=100_000)] = 100  # waiting grades; past it dropped, counted


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
    events: list[str] = msgspec.field(default_factory=lambda: ["*"])  # "*" or names from EVENT_TYPES
    timeout_s: Seconds = 5.0  # one delivery attempt, connect to the end of the answer
    max_attempts: Annotated[int, Meta(ge=1, le=20)] = 6
    # Between attempts: exponential from backoff_base_s, capped at backoff_max_s, jittered;
    # a receiver's retry-after (on 429/503) is honoured up to backoff_max_s.
    backoff_base_s: Seconds = 1.0
    backoff_max_s: Seconds = 60.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url: expected an http:// or https:// URL")
        unknown = [e for e in self.events if e != "*" and e not in EVENT_TYPES]
        if unknown:
            raise ValueError(f"unknown event {unknown[0]!r} in events; expected '*' or one of {', '.join(EVENT_TYPES)}")


class AlertsConfig(Strict, kw_only=True):
    webhooks: list[WebhookConfig] = []
    key_expiring_s: Annotated[float, Meta(gt=0)] = 7 * 86400.0  # key.expiring this long before
    # Events waiting for delivery; when full the oldest is dropped (logged and counted), so a
    # dead receiver cannot grow memory.
    queue_size: Annotated[int, Meta(ge=1, le=1_000_000)] = 1000


class ResponsesConfig(Strict, kw_only=True):
    """POST /v1/responses: stateless unless `store` (then responses are kept in the store)."""

    store: bool = False  # keep each response and its conversation for previous_response_id, GET, DELETE
    ttl_s: Annotated[float, Meta(gt=0, le=365 * 86400)] = 86400.0  # how long a stored response is kept


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
    cache: CacheConfig = CacheConfig()
    feedback: FeedbackConfig = FeedbackConfig()
    responses: ResponsesConfig = ResponsesConfig()

    def __post_init__(self) -> None:
        if self.cache.backend == "redis" and self.cache_enabled and not self.state.redis_url:
            raise ValueError("cache.backend redis needs state.redis_url (the Redis the replicas share)")

    @property
    def store_url(self) -> str:
        """Where the durable store is: the configured URL, else the default SQLite file."""
        return (self.store or StoreConfig()).url

    @property
    def feedback_groups(self) -> frozenset[str] | None:
        """The groups whose answered requests are remembered for feedback: None for every
        route (`feedback.enabled`), else those using quality (empty: nothing is recorded)."""
        if self.feedback.enabled:
            return None
        # (strategy "quality" is the quality router's; compared as text until it is merged)
        return frozenset(g.name for g in self.models if g.quality is not None or str(g.strategy) == "quality")

    @property
    def cache_enabled(self) -> bool:
        """The cache is on for some model group (at the top level or by a group's override)."""
        if self.cache.enabled:
            return True
        return any(g.cache is not None and g.cache.enabled for g in self.models)
