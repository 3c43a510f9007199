"""`GET /metrics`: the gateway's metrics registry plus gauges read from live state at scrape
time (breakers, windows, in-flight, rate-limit headroom)."""

from __future__ import annotations

from collections.abc import Iterator

from aiohttp import web

from aiogw.adapters._base import Target
from aiogw.routing.health import TargetHealth
from aiogw.routing.health import now as health_now
from aiogw.server.keys import DISPATCHER, LIFECYCLE, METRICS, RUNTIME
from aiogw.telemetry.metrics import CONTENT_TYPE, GatewayMetrics, Labels

_STATES = ("closed", "open", "half_open")
_SLO_STATES = ("ok", "breach", "unknown")
_HEADROOM = {
    "rpm_remaining": "rpm",
    "tpm_remaining": "tpm",
    "concurrency_remaining": "concurrency",
    "provider_remaining_requests": "provider_requests",
    "provider_remaining_tokens": "provider_tokens",
}


def install(app: web.Application) -> None:
    m = app[METRICS] = GatewayMetrics()

    def targets() -> Iterator[tuple[str, Target, TargetHealth]]:
        if DISPATCHER not in app:  # not started yet
            return
        dispatcher = app[DISPATCHER]
        for tid, t in app[RUNTIME].targets(dispatcher.health.all()).items():
            yield tid, t, dispatcher.health.get(tid)

    def breaker() -> Iterator[tuple[Labels, float]]:
        now = health_now()
        for tid, _, h in targets():
            h.available(now)  # an open breaker past its cooldown reads half-open
            for state in _STATES:
                yield (tid, state), 1.0 if h.state == state else 0.0

    def window(attr: str) -> Iterator[tuple[Labels, float]]:
        now = health_now()
        for tid, _, h in targets():
            v = getattr(h.stats(now), attr)
            if v is not None:
                yield (tid,), v

    def target_in_flight() -> Iterator[tuple[Labels, float]]:
        for tid, _, h in targets():
            yield (tid,), h.in_flight

    def headroom() -> Iterator[tuple[Labels, float]]:
        now = health_now()
        limiter = app[DISPATCHER].limiter if DISPATCHER in app else None
        for tid, t, _ in targets():
            for key, v in limiter.headroom(t, now).items():  # type: ignore[union-attr]
                if v is not None:
                    yield (tid, _HEADROOM.get(key, key)), v

    m.gauge("aiogw_in_flight_requests", "API requests in progress.", (), lambda: [((), app[LIFECYCLE].in_flight)])
    m.gauge(
        "aiogw_breaker_state",
        "Circuit breaker state per target (1 for the current state).",
        ("target", "state"),
        breaker,
    )
    m.gauge(
        "aiogw_target_error_rate", "Failure share over the sliding window.", ("target",), lambda: window("error_rate")
    )
    m.gauge(
        "aiogw_target_requests_window",
        "Attempts counted in the sliding window.",
        ("target",),
        lambda: window("requests"),
    )
    m.gauge(
        "aiogw_target_latency_p95_seconds",
        "p95 attempt latency over the sliding window.",
        ("target",),
        lambda: ((k, v / 1000) for k, v in window("latency_p95_ms")),
    )
    m.gauge("aiogw_target_in_flight", "Attempts in progress per target.", ("target",), target_in_flight)
    m.gauge(
        "aiogw_ratelimit_remaining",
        "Remaining allowance per target and kind (local limits and provider-reported).",
        ("target", "kind"),
        headroom,
    )
    if any(r.slo is not None for r in app[RUNTIME].routes.values()):

        def slo_status() -> Iterator[tuple[Labels, float]]:
            slo = app[DISPATCHER].slo if DISPATCHER in app else None
            for group, tid, status in slo.statuses() if slo is not None else ():
                for s in _SLO_STATES:
                    yield (group, tid, s), 1.0 if status == s else 0.0

        m.gauge(
            "aiogw_slo_status",
            "Per model group with an SLO and target: 1 for the current status (ok/breach/unknown).",
            ("model", "target", "status"),
            slo_status,
        )
    app.router.add_get("/metrics", metrics)


async def metrics(request: web.Request) -> web.Response:
    return _render(request.app[METRICS])


def _render(m: GatewayMetrics) -> web.Response:
    return web.Response(body=m.registry.render(), headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-cache"})


def listener_app(app: web.Application) -> web.Application:
    """The `server.metrics_port` listener: /metrics of this worker, and nothing else."""

    async def handler(_: web.Request) -> web.Response:
        return _render(app[METRICS])

    side = web.Application()
    side.router.add_get("/metrics", handler)
    return side
