"""Request middleware: request id, draining, OpenAI-shaped errors, and the one log line per
API request (`request.finished`)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.web_urldispatcher import MatchInfoError

from aiogw.admission.principal import ANONYMOUS, Principal
from aiogw.attempts.outcome import ClientDisconnected, Outcome
from aiogw.errors import (
    GatewayError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    ServiceUnavailable,
    StoreUnavailable,
)
from aiogw.ids import hex_id
from aiogw.ingress.body import too_large
from aiogw.server.keys import (
    AUTH,
    CORS,
    FEEDBACK,
    KEY_TICKET,
    LIFECYCLE,
    METRICS,
    MONEY,
    OUTCOME,
    PRINCIPAL,
    PUBLIC_MODEL,
    REQUEST_ID,
    RUNTIME,
    STREAM,
    TRACING,
)
from aiogw.store.base import Unreachable
from aiogw.telemetry import semconv as sc
from aiogw.telemetry.logs import CURRENT_REQUEST_ID, get_logger, info_line

log = get_logger("aiogw.request")

_CLIENT_ID = re.compile(r"^[\x21-\x7e]{1,200}$")  # printable, no spaces, bounded
_API_PREFIX = ("/v1/", "/anthropic/v1/")  # the Messages API is also served under /anthropic
_OPERATOR_PREFIX = "/v1/gateway/"  # health and spend: polled by dashboards, not API traffic
_ALWAYS_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})  # answered while draining too
_NAMELESS = frozenset({"model_not_found", "invalid_model_name"})  # error kinds whose model is no name of ours


def _request_id(request: web.Request) -> str:
    sent = request.headers.get("x-request-id")
    if sent and _CLIENT_ID.match(sent):
        return sent
    return "req_" + hex_id(12)


# How a route's errors look when its API is not OpenAI's (the Messages API): GatewayError,
# request id -> the JSON body. Set on a handler with `answers_errors_as`; read per request.
ErrorBody = Callable[[GatewayError, str], bytes]
_ERROR_BODY = "aiogw_error_body"
H = TypeVar("H")


# Paths whose requests no handler matched (an unknown path under them, a wrong method) but
# whose clients still expect that API's errors: prefix -> how its errors look.
_ERROR_BODY_BY_PATH: dict[str, ErrorBody] = {}


def answers_errors_as(handler: H, render: ErrorBody, *paths: str) -> H:
    """Mark `handler`: every error of its requests (auth included) is rendered by `render`,
    and so are those of requests under `paths` that no route matched (404, 405)."""
    setattr(handler, _ERROR_BODY, render)
    _ERROR_BODY_BY_PATH.update(dict.fromkeys(paths, render))
    return handler


def _error_body_of(request: web.Request) -> ErrorBody | None:
    render: ErrorBody | None = getattr(request.match_info.handler, _ERROR_BODY, None)
    if render is None and _ERROR_BODY_BY_PATH and isinstance(request.match_info, MatchInfoError):
        path = request.path
        render = next((r for prefix, r in _ERROR_BODY_BY_PATH.items() if path.startswith(prefix)), None)
    return render


def error_response(
    err: GatewayError, request_id: str, outcome: Outcome | None, render: ErrorBody | None = None
) -> web.Response:
    headers = {"x-request-id": request_id, **err.headers()}
    if outcome is not None and outcome.attempts:
        headers["x-aiogw-attempts"] = outcome.attempts_header
    if outcome is not None and outcome.route_reason:  # strategy quality chose before it failed
        headers["x-aiogw-route-reason"] = outcome.route_reason
    if render is not None:
        headers["request-id"] = request_id  # where Anthropic's SDKs look for it
    body = err.to_openai() if render is None else render(err, request_id)
    return web.Response(status=err.http_status(), body=body, content_type="application/json", headers=headers)


def _from_http_exception(exc: web.HTTPException, request: web.Request) -> GatewayError:
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return too_large(request.app[RUNTIME].config.server.max_body_bytes)
    if isinstance(exc, web.HTTPNotFound):
        return NotFound(f"Unknown path {request.path}.")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return MethodNotAllowed(f"{request.method} is not allowed on {request.path}.")
    return InvalidRequest(exc.reason or "Bad request", code=None)


@web.middleware
async def gateway_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    rid = _request_id(request)
    request[REQUEST_ID] = rid
    path = request.path
    if request.method == "OPTIONS" and (cors := request.app[CORS]) is not None:
        try:
            return cors.preflight(request)
        except GatewayError as exc:
            return error_response(exc, rid, None)
    if not path.startswith(_API_PREFIX) or path.startswith(_OPERATOR_PREFIX):
        if path not in _ALWAYS_PATHS and request.app[LIFECYCLE].draining:
            return error_response(
                ServiceUnavailable("The gateway is shutting down; retry on another replica."), rid, None
            )
        return await _plain(request, handler, rid)

    lifecycle = request.app[LIFECYCLE]
    render = _error_body_of(request)
    if lifecycle.draining:
        gone = ServiceUnavailable("The gateway is shutting down; retry on another replica.")
        return error_response(gone, rid, None, render)
    outcome = request[OUTCOME] = Outcome()
    # Every line logged while serving this request carries its id (aiohttp runs each
    # request in its own task, so the binding ends with it).
    CURRENT_REQUEST_ID.set(rid)
    tracing = request.app[TRACING]
    span = tracing.start_request(request.method, path, request.headers) if tracing is not None else None
    started = time.perf_counter()
    status = 500
    error: GatewayError | None = None
    client_closed = False
    auth = request.app[AUTH]
    principal = ANONYMOUS
    lifecycle.enter()
    try:
        try:
            # Who is calling, before any handler reads it; without auth configured, nobody
            # in particular (no await, no lookup).
            if auth is not None:
                principal = await auth.principal(request.headers)
            request[PRINCIPAL] = principal
            resp = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            error = _from_http_exception(exc, request)
            resp = error_response(error, rid, outcome, render)
        except GatewayError as exc:
            error = exc
            resp = error_response(exc, rid, outcome, render)
        except Unreachable as exc:  # keys or budgets could not be checked
            log.warning("store.unreachable", error=str(exc))
            error = StoreUnavailable(
                "The gateway's store (API keys, budgets) did not answer, so this request could not be "
                "checked; retry in a moment. Operators: see the gateway's store.unreachable log line."
            )
            resp = error_response(error, rid, outcome, render)
        status = resp.status
        return resp
    except (asyncio.CancelledError, ClientDisconnected):
        client_closed = True
        status = 499  # nginx's "client closed request"
        raise
    except Exception:
        log.exception("request.crashed", path=path)
        return error_response(GatewayError("The gateway hit an internal error."), rid, outcome, render)
    finally:
        lifecycle.leave()
        if (principal.rpm or principal.tpm) and (ticket := request.get(KEY_TICKET)) is not None:
            assert auth is not None  # only keys have limits
            # A cache hit used no tokens: its tpm reservation is given back whole.
            used = (
                outcome.usage.total_tokens
                if outcome.usage is not None
                else 0
                if outcome.cache_status == "hit"
                else None
            )
            auth.settle(ticket, used)
        if (money := request.app[MONEY]) is not None:  # settle the budget hold, queue the ledger rows
            money.finish(request, principal, rid, outcome, status, error, client_closed, time.perf_counter() - started)
        if (feedback := request.app[FEEDBACK]) is not None:  # remember what answered, for feedback
            feedback.finish(request, rid, outcome, status, error)
        _finished(request, rid, outcome, status, started, error, client_closed, principal)
        if span is not None:
            _end_span(request, span, rid, outcome, status, error)


async def _plain(request: web.Request, handler: Any, rid: str) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(_from_http_exception(exc, request), rid, None)
    except GatewayError as exc:
        return error_response(exc, rid, None)


def _finished(
    request: web.Request,
    rid: str,
    outcome: Outcome,
    status: int,
    started: float,
    error: GatewayError | None,
    client_closed: bool,
    principal: Principal,
) -> None:
    """The request's log line and its metrics, from the same facts."""
    duration_s = time.perf_counter() - started
    usage = outcome.usage
    target = outcome.target
    client_closed = client_closed or outcome.client_closed
    model = request.get(PUBLIC_MODEL)
    if error is not None:
        kind: str | None = error.code or error.type
    elif outcome.stream_error is not None:
        kind = "stream_error"
    elif client_closed:
        kind = "client_closed"
    else:
        kind = None
    request.app[METRICS].record_request(
        # An unknown or invalid model name is the client's free text: not a label value.
        model=(model or "") if kind not in _NAMELESS else "(unknown)",
        provider=target.provider if target else "",
        status=status,
        stream=request.get(STREAM, False),
        duration_s=duration_s,
        ttft_s=outcome.ttft_ms / 1000 if outcome.ttft_ms is not None else None,
        usage=(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens or 0, usage.reasoning_tokens or 0)
        if usage is not None
        else None,
        cost_usd=outcome.cost_usd,
        tags=outcome.tags,
        attempts=outcome.attempts,
        error_kind=kind,
        task=outcome.task,
    )
    fields: dict[str, Any] = {
        "request_id": rid,
        "path": request.path,
        "status": status,
        "model": request.get(PUBLIC_MODEL),
        "stream": request.get(STREAM, False),
        "provider": target.provider if target else None,
        "upstream_model": outcome.model,
        "duration_ms": round(duration_s * 1000, 2),
        "ttft_ms": round(outcome.ttft_ms, 2) if outcome.ttft_ms is not None else None,
        "attempts": [
            {"target": a.target, "ms": round(a.latency_ms, 2), "failure": a.failure, "error": a.error}
            if a.failure
            else {"target": a.target, "ms": round(a.latency_ms, 2)}
            for a in outcome.attempts
        ],
    }
    if principal.key_id is not None:  # who called (the key's id and name, never its secret)
        fields["key_id"] = principal.key_id
        fields["key_name"] = principal.key_name
    if usage is not None:
        fields["input_tokens"] = usage.prompt_tokens
        fields["output_tokens"] = usage.completion_tokens
        fields["cached_tokens"] = usage.cached_tokens
        fields["reasoning_tokens"] = usage.reasoning_tokens
    if outcome.finish_reasons:
        fields["finish_reasons"] = outcome.finish_reasons
    if error is not None:
        fields["error_type"] = error.type
        fields["error"] = error.message
    if outcome.cost_usd is not None:
        fields["cost_usd"] = outcome.cost_usd
    if outcome.tags:
        fields["tags"] = outcome.tags
    if outcome.cache_status:
        fields["cache"] = outcome.cache_status
    if outcome.route_reason:  # strategy quality: why this target, and the request's bucket
        fields["route_reason"] = outcome.route_reason
        fields["bucket"] = outcome.bucket
    if outcome.notes:
        fields["notes"] = outcome.notes
    if outcome.stream_error is not None:
        fields["stream_error"] = outcome.stream_error.describe()
    if client_closed:
        fields["client_closed"] = True
    info_line(log, "request.finished", fields)


def _end_span(
    request: web.Request, span: tuple[Any, object], rid: str, outcome: Outcome, status: int, error: GatewayError | None
) -> None:
    tracing = request.app[TRACING]
    assert tracing is not None
    attrs = tracing.usage_attributes(outcome.usage, outcome.finish_reasons, outcome.model)
    attrs.update(
        {
            sc.GEN_AI_OPERATION_NAME: "embeddings" if request.path.endswith("/embeddings") else "chat",
            sc.GEN_AI_REQUEST_MODEL: request.get(PUBLIC_MODEL),
            "aiogw.request_id": rid,
            "aiogw.provider": outcome.target.provider if outcome.target else None,
            "aiogw.attempts": int(outcome.attempts_header),
            "aiogw.cost_usd": outcome.cost_usd,
            "aiogw.tags": outcome.tags or None,
            "aiogw.stream": request.get(STREAM, False),
            sc.ERROR_TYPE: error.code or error.type if error is not None else None,
        }
    )
    if outcome.stream_error is not None:
        attrs["aiogw.stream_error"] = outcome.stream_error.describe()
    tracing.end_request(*span, status, attrs)
