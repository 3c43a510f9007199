"""HTTP handlers: the OpenAI-compatible API and the probes."""

from __future__ import annotations

import asyncio
import re

import msgspec
from aiohttp import web

from aiogw.cost import format_usd
from aiogw.dispatch import ClientDisconnected, Control, Outcome
from aiogw.errors import GatewayError, InvalidRequest, ModelNotFound, NestedTooDeep, ServiceUnavailable
from aiogw.health import now as health_now
from aiogw.router import STRATEGIES
from aiogw.runtime import Runtime
from aiogw.server.body import read_body
from aiogw.server.keys import DISPATCHER, HEALTH_CHECKER, LIFECYCLE, OUTCOME, PUBLIC_MODEL, REQUEST_ID, RUNTIME, STREAM
from aiogw.server.sse import SSESink
from aiogw.streaming.encode import error_event
from aiogw.types import ChatRequest, EmbeddingRequest, ModelCard, ModelList, ParsedChat

_decode_chat = msgspec.json.Decoder(ChatRequest).decode
_decode_embedding = msgspec.json.Decoder(EmbeddingRequest).decode
_decode_raw = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
_encode = msgspec.json.Encoder().encode

_MISSING = re.compile(r"Object missing required field `([^`]+)`")
_AT = re.compile(r"^(.*?) - at `\$\.?(.*)`$", re.DOTALL)


def invalid_body(exc: msgspec.MsgspecError) -> InvalidRequest:
    """A decoding error as a 400 naming the offending field in `param`."""
    if not isinstance(exc, msgspec.ValidationError):  # (ValidationError subclasses DecodeError)
        return InvalidRequest(
            f"We could not parse the JSON body of your request ({exc}). The body must be a JSON object.",
            code="invalid_json",
        )
    text = str(exc)
    m = _AT.match(text)
    what, path = (m.group(1), m.group(2)) if m else (text, "")
    missing = _MISSING.match(what)
    if missing:
        param = f"{path}.{missing.group(1)}" if path else missing.group(1)
        return InvalidRequest(f"Missing required parameter: '{param}'.", code="missing_required_parameter", param=param)
    if not path:
        return InvalidRequest(f"Invalid request body: {what}.", code="invalid_type")
    return InvalidRequest(f"Invalid value for '{path}': {what}.", code="invalid_value", param=path)


def parse_chat(body: bytes) -> ParsedChat:
    try:
        return ParsedChat(req=_decode_chat(body), raw=_decode_raw(body))
    except msgspec.MsgspecError as exc:
        raise invalid_body(exc) from None
    except RecursionError:
        raise NestedTooDeep() from None


def _base_headers(request: web.Request) -> dict[str, str]:
    return {"x-request-id": request[REQUEST_ID]}


def _answer_headers(request: web.Request, outcome: Outcome, model: str | None) -> dict[str, str]:
    headers = _base_headers(request)
    assert outcome.target is not None
    headers["x-aiogw-provider"] = outcome.target.provider
    # The model the upstream reports is its text: a line break in a header would drop the
    # client's connection unanswered (the configured or client's name passed the name rule).
    headers["x-aiogw-model"] = model if model and model.isprintable() else outcome.target.model
    headers["x-aiogw-attempts"] = outcome.attempts_header
    if outcome.cost_usd is not None:
        headers["x-aiogw-cost-usd"] = format_usd(outcome.cost_usd)
    return headers


MAX_TIMEOUT_MS = 24 * 3600 * 1000
_TAG = re.compile(r"^[A-Za-z0-9_.:/-]{1,64}=[A-Za-z0-9_.:/@ -]{0,128}$")


def _bad_header(name: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid header '{name}': {why}.", code="invalid_header", param=name)


def request_control(request: web.Request, runtime: Runtime) -> Control:
    """The `x-aiogw-*` routing headers, validated; a bad value is a 400 naming the header."""
    h = request.headers
    deadline = strategy = None
    fallbacks = ()
    tags = ""
    if (v := h.get("x-aiogw-timeout-ms")) is not None:
        try:
            ms = float(v)
        except ValueError:
            raise _bad_header("x-aiogw-timeout-ms", f"expected milliseconds as a number, got {v!r}") from None
        if not 0 < ms <= MAX_TIMEOUT_MS:
            raise _bad_header("x-aiogw-timeout-ms", f"must be between 1 and {MAX_TIMEOUT_MS}")
        deadline = asyncio.get_running_loop().time() + ms / 1000
    if (v := h.get("x-aiogw-strategy")) is not None:
        strategy = v.strip()
        if strategy not in STRATEGIES:
            raise _bad_header("x-aiogw-strategy", f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    if (v := h.get("x-aiogw-fallbacks")) is not None:
        names = [n.strip() for n in v.split(",") if n.strip()]
        if not names or len(names) > 8:
            raise _bad_header("x-aiogw-fallbacks", "expected 1 to 8 comma-separated model names")
        try:
            fallbacks = tuple(runtime.resolve(n) for n in names)
        except (ModelNotFound, InvalidRequest) as exc:
            raise _bad_header("x-aiogw-fallbacks", exc.message.rstrip(".")) from None
    if (v := h.get("x-aiogw-tags")) is not None:
        pairs = [p.strip() for p in v.split(",") if p.strip()]
        bad = [p for p in pairs if not _TAG.match(p)]
        if bad or len(pairs) > 16:
            raise _bad_header("x-aiogw-tags", "expected up to 16 comma-separated key=value pairs (e.g. team=search,feature=qa)")
        tags = ",".join(sorted(pairs))
    return Control(deadline=deadline, strategy=strategy, fallbacks=fallbacks, tags=tags)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    parsed = parse_chat(await read_body(request))
    request[PUBLIC_MODEL] = parsed.req.model
    request[STREAM] = parsed.req.is_stream
    runtime = request.app[RUNTIME]
    route = runtime.resolve(parsed.req.model)
    control = request_control(request, runtime)
    dispatcher = request.app[DISPATCHER]
    outcome = request[OUTCOME]

    if not parsed.req.is_stream:
        reply = await dispatcher.complete(parsed, route, outcome, control)
        headers = _answer_headers(request, outcome, reply.model)
        return web.Response(body=reply.body, content_type="application/json", headers=headers)

    sink = SSESink(request, _base_headers(request), outcome, runtime.config.server.sse_heartbeat_s)
    lifecycle = request.app[LIFECYCLE]
    task = asyncio.current_task()
    assert task is not None
    lifecycle.streams.add(task)
    try:
        try:
            await dispatcher.stream(parsed, route, outcome, sink, control)
        except GatewayError as exc:
            if not sink.opened:
                raise  # nothing sent yet: the middleware answers with the error's status
            # Heartbeats already sent a 200: the error ends the stream instead.
            outcome.stream_error = exc
            await sink.write(error_event(exc))
        await sink.finish()
    except ClientDisconnected:
        outcome.client_closed = True  # nothing left to tell anyone; the log line says so
    except asyncio.CancelledError:
        # Cancelled while the client is still there means the grace period of a shutdown
        # ran out: end the stream properly rather than cutting it.
        if lifecycle.draining and sink.opened:
            try:
                await sink.write(error_event(ServiceUnavailable("The gateway shut down before this stream finished.")))
                await sink.finish()
            except ClientDisconnected:
                pass
        raise
    finally:
        sink.stop_heartbeats()
        lifecycle.streams.discard(task)
    assert sink.response is not None
    return sink.response


async def embeddings(request: web.Request) -> web.Response:
    body = await read_body(request)
    try:
        req = _decode_embedding(body)
    except msgspec.MsgspecError as exc:
        raise invalid_body(exc) from None
    except RecursionError:
        raise NestedTooDeep() from None
    request[PUBLIC_MODEL] = req.model
    runtime = request.app[RUNTIME]
    route = runtime.resolve(req.model)
    outcome = request[OUTCOME]
    reply = await request.app[DISPATCHER].embed(req, route, outcome, request_control(request, runtime))
    headers = _answer_headers(request, outcome, None)
    return web.Response(body=reply.body, content_type="application/json", headers=headers)


async def list_models(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    cards = [ModelCard(id=n, created=runtime.loaded_at, owned_by="aiogw") for n in runtime.public_models()]
    return web.Response(body=_encode(ModelList(data=cards)), content_type="application/json")


async def get_model(request: web.Request) -> web.Response:
    """One model by any name a completion accepts: a public name or `<provider>/<model>`
    of a configured provider (the slash may come percent-encoded, as the SDKs send it)."""
    runtime = request.app[RUNTIME]
    name = request.match_info["model"]
    runtime.resolve(name)  # 404 model_not_found for anything else
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
    out = []
    for tid, t in targets.items():
        h = dispatcher.health.get(tid)
        h.available(now)  # moves an open breaker whose cooldown has passed to half-open
        s = h.stats(now)
        out.append(
            {
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
                "health_check": checker.report(tid, h.state) if checker is not None else None,  # type: ignore[attr-defined]
            }
        )
    shared = dispatcher.shared
    state = (
        {"backend": "redis", "connected": shared.up, "replica": shared.replica, "bad_records": shared.bad_records}
        if shared is not None
        else {"backend": "local", "connected": True, "replica": None}
    )
    return web.json_response({"window_s": 60, "shared_state": state, "targets": out})


async def gateway_spend(request: web.Request) -> web.Response:
    """Spend since start from the cost ledger, one row per (public model, provider,
    upstream model, task, tags)."""
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


ROUTES = [
    web.post("/v1/chat/completions", chat_completions),
    web.post("/v1/embeddings", embeddings),
    web.get("/v1/models", list_models),
    web.get("/v1/models/{model:.+}", get_model),
    web.get("/v1/gateway/health", gateway_health),
    web.get("/v1/gateway/spend", gateway_spend),
    web.get("/healthz", healthz),
    web.get("/readyz", readyz),
]
