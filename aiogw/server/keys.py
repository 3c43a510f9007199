"""Typed keys for what lives on the application and on each request."""

from __future__ import annotations

from aiohttp import web

from aiogw.upstream import http
from aiogw.attempts.dispatcher import Dispatcher
from aiogw.attempts.outcome import Outcome
from aiogw.runtime import Runtime
from aiogw.server.cors import CorsPolicy
from aiogw.server.lifecycle import Lifecycle
from aiogw.telemetry.metrics import GatewayMetrics

RUNTIME = web.AppKey("runtime", Runtime)
HTTP = web.AppKey("http_client", http.Client)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
METRICS = web.AppKey("metrics", GatewayMetrics)
TRACING = web.AppKey("tracing", object)  # aiogw.telemetry.tracing.Tracing | None (imported only when on)
CORS = web.AppKey("cors", CorsPolicy | None)  # type: ignore[arg-type]
# aiogw.attempts.health_check.HealthChecker when health checks are configured (imported only then)
HEALTH_CHECKER = web.AppKey("health_checker", object)

# Per-request values.
REQUEST_ID = web.RequestKey("request_id", str)
OUTCOME = web.RequestKey("outcome", Outcome)
PUBLIC_MODEL = web.RequestKey("public_model", str)
STREAM = web.RequestKey("stream", bool)

__all__ = ["CORS", "DISPATCHER", "HEALTH_CHECKER", "HTTP", "LIFECYCLE", "METRICS", "OUTCOME", "PUBLIC_MODEL", "REQUEST_ID", "RUNTIME", "STREAM", "TRACING", "Outcome"]
