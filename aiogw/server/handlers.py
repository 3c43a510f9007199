"""HTTP handlers of the gateway itself: models, health, spend and the probes; the API
handlers live in `aiogw.ingress` (one module per wire format)."""

from __future__ import annotations

import msgspec
from aiohttp import web

from aiogw.admission.auth import allowed as key_may_call
from aiogw.errors import ModelNotAllowed
from aiogw.ingress.chat import chat_completions, embeddings
from aiogw.ingress.messages import handlers as anthropic_messages
from aiogw.ingress.messages.errors import error_body as anthropic_error_body
from aiogw.ingress.params import in_client_params
from aiogw.ingress.responses.handlers import create_response, delete_response, get_response
from aiogw.routing.health import now as health_now
from aiogw.server.admin import require_admin
from aiogw.server.keys import DISPATCHER, HEALTH_CHECKER, LIFECYCLE, MONEY, PRINCIPAL, RUNTIME
from aiogw.server.middleware import answers_errors_as
from aiogw.types import ModelCard, ModelList

_encode = msgspec.json.Encoder().encode


async def list_models(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    names = runtime.public_models()
    if (allowed := request[PRINCIPAL].models) is not None:  # a key sees the models it may call
        names = [n for n in names if key_may_call(allowed, n)]
    cards = [ModelCard(id=n, created=runtime.loaded_at, owned_by="aiogw") for n in names]
    return web.Response(body=_encode(ModelList(data=cards)), content_type="application/json")


async def get_model(request: web.Request) -> web.Response:
    """One model by any name a completion accepts: a public name or `<provider>/<model>`
    of a configured provider (the slash may come percent-encoded, as the SDKs send it)."""
    runtime = request.app[RUNTIME]
    name = request.match_info["model"]
    runtime.resolve(name)  # 404 model_not_found for anything else
    if (allowed := request[PRINCIPAL].models) is not None and not key_may_call(allowed, name):
        raise ModelNotAllowed(f"This API key may not call the model '{name}'.")
    card = ModelCard(id=name, created=runtime.loaded_at, owned_by=runtime.owner(name))
    return web.Response(body=_encode(card), content_type="application/json")


async def gateway_health(request: web.Request) -> web.Response:
    """Every configured target (and any addressed directly since start): breaker state and
    the sliding window's numbers, plus rate-limit headroom."""
    runtime = request.app[RUNTIME]
    dispatcher = request.app[DISPATCHER]
    now = health_now()
    targets = runtime.targets(dispatcher.health.all())
    checker = request.app.get(HEALTH_CHECKER)
    slo = dispatcher.slo
    out = []
    for tid, t in targets.items():
        h = dispatcher.health.get(tid)
        h.available(now)  # moves an open breaker whose cooldown has passed to half-open
        s = h.stats(now)
        row = {
            "id": tid,
            "provider": t.provider,
            "model": t.model,
            "type": t.type,
            "state": h.state,
            "requests": s.requests,
            "failures": s.failures,
            "failures_by_kind": s.failures_by_kind,
            "error_rate": s.error_rate,
            "latency_p50_ms": s.latency_p50_ms,
            "latency_p95_ms": s.latency_p95_ms,
            "ttft_p50_ms": s.ttft_p50_ms,
            "ttft_p95_ms": s.ttft_p95_ms,
            "in_flight": h.in_flight,
            "consecutive_failures": h.consecutive_failures,
            "last_error": h.last_error,
            "seconds_since_failure": round(now - h.last_failure_at, 1) if h.last_failure_at else None,
            "limits": dispatcher.limiter.headroom(t, now),
            # Provider-reported prompt tokens per token of the local estimate (this replica's).
            "token_ratio": dispatcher.ratios.get(t).report(),
            "health_check": checker.report(tid, h.state) if checker is not None else None,
        }
        if slo is not None and (report := slo.report(tid)) is not None:
            row["slo"] = report  # only targets of a group with an SLO have the field
        out.append(row)
    shared = dispatcher.shared
    state = (
        {"backend": "redis", "connected": shared.up, "replica": shared.replica, "bad_records": shared.bad_records}
        if shared is not None
        else {"backend": "local", "connected": True, "replica": None}
    )
    return web.json_response({"window_s": 60, "shared_state": state, "targets": out})


async def gateway_spend(request: web.Request) -> web.Response:
    """Spend since start from the cost ledger, one row per (public model, provider,
    upstream model, task, tags); from the durable ledger when the store is open. With
    virtual keys configured, everyone's dollar figures are for the master key only."""
    if request.app[RUNTIME].config.auth.configured:
        require_admin(request)
    if (money := request.app[MONEY]) is not None:
        return web.json_response(await money.gateway_spend())
    ledger = request.app[DISPATCHER].ledger
    rows = [
        {
            "model": model,
            "provider": provider,
            "upstream_model": upstream,
            "task": task,
            "tags": tags,
            "requests": r.requests,
            "prompt_tokens": r.prompt_tokens,
            "completion_tokens": r.completion_tokens,
            "cost_usd": round(r.cost_usd, 9),
        }
        for (model, provider, upstream, task, tags), r in ledger.rows.items()
    ]
    total = round(sum(r.cost_usd for r in ledger.rows.values()), 9)
    return web.json_response({"since": ledger.since, "total_usd": total, "rows": rows})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    if request.app[LIFECYCLE].draining:
        return web.json_response({"status": "draining"}, status=503)
    return web.json_response({"status": "ready"})


# The Messages API answers its errors in Anthropic's shape (its SDKs read that).
# Anthropic's clients get Anthropic's errors, also for a path or method the API does not have.
# Errors name the fields as each API spells them (an adapter names the canonical chat field).
_MESSAGES_PARAMS = {"max_completion_tokens": "max_tokens", "reasoning_effort": "thinking", "stop": "stop_sequences",
                    "user": "metadata.user_id"}  # fmt: skip
_RESPONSES_PARAMS = {"messages": "input", "max_tokens": "max_output_tokens", "max_completion_tokens": "max_output_tokens",
                     "reasoning_effort": "reasoning.effort", "response_format": "text.format"}  # fmt: skip
_messages = answers_errors_as(
    in_client_params(anthropic_messages.messages, _MESSAGES_PARAMS, {"parameters": "input_schema"}),
    anthropic_error_body,
    "/anthropic/",
    "/v1/messages",
)
_create_response = in_client_params(create_response, _RESPONSES_PARAMS, {})
_count_tokens = answers_errors_as(anthropic_messages.count_tokens, anthropic_error_body)

ROUTES = [
    web.post("/v1/chat/completions", chat_completions),
    web.post("/v1/embeddings", embeddings),
    web.post("/v1/messages", _messages),
    web.post("/v1/messages/count_tokens", _count_tokens),
    web.post("/anthropic/v1/messages", _messages),  # the base URL some Anthropic clients are given
    web.post("/anthropic/v1/messages/count_tokens", _count_tokens),
    web.post("/v1/responses", _create_response),
    web.get("/v1/responses/{response_id}", get_response),
    web.delete("/v1/responses/{response_id}", delete_response),
    web.get("/v1/models", list_models),
    web.get("/v1/models/{model:.+}", get_model),
    web.get("/v1/gateway/health", gateway_health),
    web.get("/v1/gateway/spend", gateway_spend),
    web.get("/healthz", healthz),
    web.get("/readyz", readyz),
]
