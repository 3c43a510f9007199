"""Prometheus metrics: counters and histograms recorded once per request from its Outcome,
gauges (breakers, in-flight, rate-limit headroom) read from live state at scrape time, and
the text exposition format (version 0.0.4) for `GET /metrics`.

Hand-rolled rather than the OpenTelemetry metrics SDK or prometheus_client: recording a
request is a handful of dict lookups and integer adds (about 2 µs), where a generic
instrument per value with attribute sets costs an order of magnitude more on a path that
is measured against a bare proxy. Client-controlled label values (model names of failed
lookups, tags) are bounded: past `MAX_SERIES` label sets a metric folds new ones into
`other`, so a client cannot grow memory without bound."""

from __future__ import annotations

import bisect
import resource
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from aiogw.names import MAX_SERIES, OTHER

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
Labels = tuple[str, ...]


def _escape(v: str) -> str:
    if "\\" in v or '"' in v or "\n" in v:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return v


def _label_text(names: Sequence[str], values: Labels, extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _num(v: float) -> str:
    if v == float("inf"):
        return "+Inf"
    if isinstance(v, int) or v.is_integer():
        return str(int(v))
    return repr(v)


class _Metric:
    kind = ""

    def __init__(self, name: str, help_: str, labels: Sequence[str]) -> None:
        self.name, self.help, self.labels = name, help_, tuple(labels)

    def _key(self, values: Labels, series: dict[Labels, object]) -> Labels:
        if values in series or len(series) < MAX_SERIES:
            return values
        return (OTHER,) * len(values)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help_: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help_, labels)
        self.series: dict[Labels, float] = {}

    def inc(self, values: Labels, amount: float = 1) -> None:
        s = self.series
        if values in s:
            s[values] += amount
        else:
            key = self._key(values, s)  # type: ignore[arg-type]
            s[key] = s.get(key, 0) + amount

    def render(self) -> list[str]:
        lines = self.header()
        lines.extend(f"{self.name}{_label_text(self.labels, k)} {_num(v)}" for k, v in self.series.items())
        return lines


class Histogram(_Metric):
    kind = "histogram"

    def __init__(
        self, name: str, help_: str, labels: Sequence[str] = (), buckets: Sequence[float] = LATENCY_BUCKETS
    ) -> None:
        super().__init__(name, help_, labels)
        self.buckets = tuple(buckets)
        self.series: dict[Labels, list[float]] = {}  # per-bucket counts (+Inf last), then sum

    def observe(self, values: Labels, v: float) -> None:
        row = self.series.get(values)
        if row is None:
            key = self._key(values, self.series)  # type: ignore[arg-type]
            row = self.series.get(key)
            if row is None:
                row = self.series[key] = [0] * (len(self.buckets) + 2)
        row[bisect.bisect_left(self.buckets, v)] += 1
        row[-1] += v

    def render(self) -> list[str]:
        lines = self.header()
        n = len(self.buckets)
        # Label text once per series, not once per bucket line: a scrape renders up to
        # MAX_SERIES x 18 lines per histogram.
        les = ['le="' + _num(bound) + '"}' for bound in (*self.buckets, float("inf"))]
        bucket = self.name + "_bucket{"
        for k, row in self.series.items():
            labels = _label_text(self.labels, k)
            head = bucket + labels[1:-1] + "," if labels else bucket
            running = 0.0
            for i, le in enumerate(les):
                running += row[i]
                lines.append(f"{head}{le} {int(running)}")
            lines.append(f"{self.name}_sum{labels} {_num(row[n + 1])}")
            lines.append(f"{self.name}_count{labels} {int(running)}")
        return lines


class Gauge(_Metric):
    """Read at scrape time: `collect` yields (label values, value). `kind="counter"` for a
    total kept elsewhere (the kernel's CPU time), which only ever grows."""

    def __init__(
        self, name: str, help_: str, labels: Sequence[str], collect: Callable[[], Iterable[tuple[Labels, float]]],
        kind: str = "gauge",
    ) -> None:  # fmt: skip
        super().__init__(name, help_, labels)
        self.collect = collect
        self.kind = kind

    def render(self) -> list[str]:
        lines = self.header()
        lines.extend(f"{self.name}{_label_text(self.labels, k)} {_num(v)}" for k, v in self.collect())
        return lines


class Registry:
    def __init__(self) -> None:
        self.metrics: list[Counter | Histogram | Gauge] = []

    def add(self, metric: Counter | Histogram | Gauge) -> Counter | Histogram | Gauge:
        self.metrics.append(metric)
        return metric

    def render(self) -> bytes:
        lines: list[str] = []
        for m in self.metrics:
            lines.extend(m.render())
        return ("\n".join(lines) + "\n").encode()


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


MAX_TASK_LABELS = 32  # distinct x-aiogw-task values kept as a metrics label; the rest are "other"


class GatewayMetrics:
    """Every metric aiogw exports. `record_request` is the one call on the request path."""

    def __init__(self) -> None:
        self.started = time.time()
        r = self.registry = Registry()
        self.requests = Counter(
            "aiogw_requests_total",
            "API requests by public model, answering provider, HTTP status and streaming.",
            ("model", "provider", "status", "stream"),
        )
        self.errors = Counter(
            "aiogw_errors_total",
            "Failed API requests by public model and kind (error type or stream_error / client_closed).",
            ("model", "kind"),
        )
        self.duration = Histogram(
            "aiogw_request_duration_seconds",
            "Time from request to the last byte of the answer.",
            ("model", "provider", "stream"),
        )
        self.ttft = Histogram(
            "aiogw_time_to_first_token_seconds",
            "Time from request to the first streamed content.",
            ("model", "provider"),
        )
        self.tokens = Counter(
            "aiogw_tokens_total",
            "Tokens by public model, provider, kind (input/output/cached/reasoning) and tags.",
            ("model", "provider", "kind", "tags"),
        )
        self.cost = Counter(
            "aiogw_cost_usd_total", "Spend in USD at the configured or listed prices.", ("model", "provider", "tags")
        )
        self.attempts = Counter(
            "aiogw_upstream_attempts_total",
            "Attempts per target by result (ok, a failure class, or a skip reason).",
            ("target", "result"),
        )
        self.tasks = Counter(
            "aiogw_task_requests_total",
            f"API requests by public model and task (x-aiogw-task; the first {MAX_TASK_LABELS} seen, then 'other').",
            ("model", "task"),
        )
        self._task_labels: set[str] = set()
        self.failovers = Counter(
            "aiogw_failovers_total", "Requests answered by a later target after an earlier one failed.", ("model",)
        )
        self.health_checks = Counter(
            "aiogw_health_checks_total",
            "Active health checks per target by outcome (ok, a failure class, or refused: the target refused the check itself).",
            ("target", "outcome"),
        )
        self.alerts = Counter(
            "aiogw_alerts_total",
            "Alert events by type and outcome (fired, duplicate: already fired here or by another replica, dropped: the queue was full).",
            ("type", "outcome"),
        )
        self.alert_deliveries = Counter(
            "aiogw_alert_deliveries_total",
            "Webhook deliveries by webhook (its index under alerts.webhooks) and outcome (delivered, retried, failed, abandoned).",
            ("webhook", "outcome"),
        )
        self.quality_observations = Counter(
            "aiogw_quality_observations_total",
            "Quality observations fed to the routing estimates, by source (feedback, spot_check) and origin (local: "
            "taken here; replica: heard from another replica).",
            ("source", "origin"),
        )
        self.spot_checks = Counter(
            "aiogw_spot_checks_total",
            "Spot checks by outcome (pass, fail, no_verdict: the judge's answer had none, failed: the judge call "
            "failed, dropped: the queue was full).",
            ("outcome",),
        )
        for m in (
            self.requests,
            self.errors,
            self.duration,
            self.ttft,
            self.tokens,
            self.cost,
            self.attempts,
            self.tasks,
            self.failovers,
            self.health_checks,
            self.alerts,
            self.alert_deliveries,
            self.quality_observations,
            self.spot_checks,
        ):
            r.add(m)
        cpu = resource.getrusage
        r.add(
            Gauge(
                "process_cpu_seconds_total",
                "User and system CPU time of this process.",
                (),
                lambda: [((), _cpu(cpu))],
                kind="counter",
            )
        )
        r.add(
            Gauge("process_resident_memory_bytes", "Resident memory of this process.", (), lambda: [((), _rss_bytes())])
        )
        r.add(Gauge("process_start_time_seconds", "Start time since the epoch.", (), lambda: [((), self.started)]))

    def record_request(
        self,
        *,
        model: str,
        provider: str,
        status: int,
        stream: bool,
        duration_s: float,
        ttft_s: float | None,
        usage: tuple[int, int, int, int] | None,  # input, output, cached, reasoning
        cost_usd: float | None,
        tags: str,
        attempts: Iterable[Any],  # records with .target (id) and .failure (None when it answered)
        error_kind: str | None,
        task: str = "",
    ) -> None:
        s = "true" if stream else "false"
        self.requests.inc((model, provider, str(status), s))
        if task:
            if task not in self._task_labels:  # x-aiogw-task is the client's: a bounded label set
                if len(self._task_labels) >= MAX_TASK_LABELS:
                    task = "other"
                self._task_labels.add(task)
            self.tasks.inc((model, task))
        self.duration.observe((model, provider, s), duration_s)
        if ttft_s is not None:
            self.ttft.observe((model, provider), ttft_s)
        if error_kind is not None:
            self.errors.inc((model, error_kind))
        if usage is not None:
            for kind, n in zip(("input", "output", "cached", "reasoning"), usage, strict=True):
                if n:
                    self.tokens.inc((model, provider, kind, tags), n)
        if cost_usd:
            self.cost.inc((model, provider, tags), cost_usd)
        failed_before = False
        for a in attempts:
            failure = a.failure
            self.attempts.inc((a.target, failure or "ok"))
            if failure is None and failed_before:
                self.failovers.inc((model,))
            failed_before = failed_before or failure is not None

    def record_health_check(
        self,
        *,
        target: str,
        provider: str,
        outcome: str,
        usage: tuple[int, int] | None,
        cost_usd: float | None,
        tags: str,
    ) -> None:
        """One active health check; its tokens and cost count like a request's, under the
        target's id as the model and its own tags."""
        self.health_checks.inc((target, outcome))
        if usage is not None:
            for kind, n in zip(("input", "output"), usage, strict=True):
                if n:
                    self.tokens.inc((target, provider, kind, tags), n)
        if cost_usd:
            self.cost.inc((target, provider, tags), cost_usd)

    def gauge(
        self, name: str, help_: str, labels: Sequence[str], collect: Callable[[], Iterable[tuple[Labels, float]]]
    ) -> None:
        self.registry.add(Gauge(name, help_, labels, collect))


def _cpu(getrusage: Callable[[int], resource.struct_rusage]) -> float:
    u = getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def _rss_bytes() -> float:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    except OSError:  # not Linux: the peak is the best there is
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
