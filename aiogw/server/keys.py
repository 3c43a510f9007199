"""Typed keys for what lives on the application and on each request."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from aiogw.admission.principal import Principal
from aiogw.admission.reserve import Hold
from aiogw.alerts.sink import AlertSink
from aiogw.attempts.dispatcher import Dispatcher
from aiogw.attempts.outcome import Outcome
from aiogw.runtime import Runtime
from aiogw.server.cors import CorsPolicy
from aiogw.server.lifecycle import Lifecycle
from aiogw.telemetry.metrics import GatewayMetrics
from aiogw.upstream import http

if TYPE_CHECKING:  # imported only when configured
    from aiogw.admission.auth import Authenticator, Ticket
    from aiogw.attempts.health_check import HealthChecker
    from aiogw.cache import ResponseCache
    from aiogw.quality.book import QualityBook
    from aiogw.server.feedback import Feedback, Pending
    from aiogw.server.money import Money
    from aiogw.store.base import Store
    from aiogw.telemetry.tracing import Tracing

RUNTIME = web.AppKey("runtime", Runtime)
HTTP = web.AppKey("http_client", http.Client)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
METRICS = web.AppKey("metrics", GatewayMetrics)
TRACING: web.AppKey[Tracing | None] = web.AppKey("tracing")
CORS: web.AppKey[CorsPolicy | None] = web.AppKey("cors")
HEALTH_CHECKER: web.AppKey[HealthChecker | None] = web.AppKey("health_checker")
# Where any stage fires alerts (budgets, SLOs, breakers, keys): set before the stages are built.
ALERTS: web.AppKey[AlertSink] = web.AppKey("alerts")
# The store, the ledger writer and the budgets; None unless store, budgets or the admin API are configured.
MONEY: web.AppKey[Money | None] = web.AppKey("money")
STORE: web.AppKey[Store | None] = web.AppKey("store")  # opened only when something needs it
CACHE: web.AppKey[ResponseCache | None] = web.AppKey("cache")  # None: cache not configured
AUTH: web.AppKey[Authenticator | None] = web.AppKey("auth")  # None: auth not configured, everyone ANONYMOUS
# The request memory, POST /v1/feedback and spot checks; None unless some group uses quality or feedback.enabled.
FEEDBACK: web.AppKey[Feedback | None] = web.AppKey("feedback")
# The quality learner; None unless some model group uses strategy quality.
QUALITY: web.AppKey[QualityBook | None] = web.AppKey("quality")

# Per-request values.
REQUEST_ID = web.RequestKey("request_id", str)
OUTCOME = web.RequestKey("outcome", Outcome)
PUBLIC_MODEL = web.RequestKey("public_model", str)
STREAM = web.RequestKey("stream", bool)
PRINCIPAL = web.RequestKey("principal", Principal)  # set by admission before any handler reads it
HOLD = web.RequestKey("budget_hold", Hold)  # what admission holds against budgets, settled at the end
KEY_TICKET: web.RequestKey[Ticket] = web.RequestKey("key_ticket")  # a key's rpm/tpm taken, settled at the end
# A request to remember for feedback (its group, and what a sampled spot check captures), set by the ingress.
FEEDBACK_PENDING: web.RequestKey[Pending] = web.RequestKey("feedback_pending")

__all__ = [
    "ALERTS",
    "AUTH",
    "CACHE",
    "CORS",
    "DISPATCHER",
    "FEEDBACK",
    "FEEDBACK_PENDING",
    "HEALTH_CHECKER",
    "HOLD",
    "HTTP",
    "KEY_TICKET",
    "LIFECYCLE",
    "METRICS",
    "MONEY",
    "OUTCOME",
    "PRINCIPAL",
    "PUBLIC_MODEL",
    "QUALITY",
    "REQUEST_ID",
    "RUNTIME",
    "STORE",
    "STREAM",
    "TRACING",
    "Outcome",
]
