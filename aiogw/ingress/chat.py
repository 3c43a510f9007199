"""The Chat Completions ingress (and Embeddings, its sibling): the OpenAI wire format in
(body, `x-aiogw-*` headers) and out (answer headers, the SSE stream), around one call into
the attempt stage. Another API (Messages, Responses) is another module here, with its own
decoding and encoding and the same dispatcher underneath."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Protocol, TypeVar

import msgspec
from aiohttp import web

from aiogw.accounting.cost import format_usd
from aiogw.adapters._base import Target
from aiogw.attempts.outcome import ClientDisconnected, Control, Native, Outcome, StreamFormat, StreamSink
from aiogw.attempts.walk import chat_tokens_estimate, embedding_tokens_estimate
from aiogw.errors import (
    GatewayError,
    InvalidRequest,
    ModelNotFound,
    NestedTooDeep,
    ServiceUnavailable,
)
from aiogw.ingress.body import read_body
from aiogw.ingress.cached import through_cache
from aiogw.ingress.sse import RecordingSSESink, SSESink
from aiogw.routing.router import STRATEGIES
from aiogw.runtime import ModelRoute, Runtime
from aiogw.server.keys import (
    AUTH,
    CACHE,
    DISPATCHER,
    FEEDBACK,
    FEEDBACK_PENDING,
    KEY_TICKET,
    LIFECYCLE,
    MONEY,
    OUTCOME,
    PRINCIPAL,
    PUBLIC_MODEL,
    REQUEST_ID,
    RUNTIME,
    STREAM,
)
from aiogw.streaming.encode import error_event
from aiogw.types import ChatRequest, EmbeddingRequest, ParsedChat, Reply

T = TypeVar("T")

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


def decoded(decode: Callable[[bytes], T], body: bytes) -> T:
    """`decode(body)`, a failure as the 400 that names the field (or says the JSON nests
    too deeply to decode): every API's body is decoded through this."""
    try:
        return decode(body)
    except msgspec.MsgspecError as exc:
        raise invalid_body(exc) from None
    except RecursionError:
        raise NestedTooDeep() from None


def parse_chat(body: bytes) -> ParsedChat:
    return ParsedChat(req=decoded(_decode_chat, body), raw=decoded(_decode_raw, body))


class ClientFormat(StreamFormat, Protocol):
    """Another API in front of the same path (Messages, Responses): how its answers look."""

    def reply_body(self, reply: Reply) -> bytes:
        """A non-streaming answer (`reply.body` is an OpenAI `chat.completion`) in this API."""
        ...

    def answer_text(self, data: bytes, stream: bool) -> str:
        """The answer's text from what the client got (a body, or a stream's SSE bytes): what
        a spot check grades."""
        ...


# A ClientFormat may also have `headers_for(target) -> dict[str, str]`: answer headers that
# depend on the target that answered (e.g. what was dropped for it). Optional.
HeadersFor = Callable[[Target], dict[str, str]]


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
    if outcome.route_reason:
        headers["x-aiogw-route-reason"] = outcome.route_reason
    return headers


MAX_TIMEOUT_MS = 24 * 3600 * 1000
_TAG = re.compile(r"^[A-Za-z0-9_.:/-]{1,64}=[A-Za-z0-9_.:/@ -]{0,128}$")
_TASK = re.compile(r"^[A-Za-z0-9_.:/-]{1,64}$")  # a tag's key rule: a label, not free text


def valid_tag(pair: str) -> bool:
    """`key=value` as `x-aiogw-tags` takes it (also the rule for a virtual key's tags)."""
    return _TAG.match(pair) is not None


def merge_tags(sent: str, key_tags: str) -> str:
    """The request's tags joined with its key's (both canonical "k=v,..."): on the same
    name the key's value wins, so a client cannot book its spend to another team."""
    merged = dict(p.partition("=")[::2] for p in sent.split(",") if p)
    merged.update(p.partition("=")[::2] for p in key_tags.split(","))
    return ",".join(sorted(f"{k}={v}" for k, v in merged.items()))


async def admit_key(request: web.Request, route: ModelRoute, control: Control, tokens: Callable[[], int]) -> None:
    """A virtual key's request: every model it names is in the key's list, and the key's
    rpm/tpm have room (`tokens` estimates the request, computed only for a tpm limit)."""
    p = request[PRINCIPAL]
    if p.models is None and not p.rpm and not p.tpm:
        return  # nothing of the key's to check
    auth = request.app[AUTH]
    assert auth is not None
    names = (route.name, *(f.name for f in control.fallbacks))
    ticket = await auth.admit(p, names, tokens() if p.tpm else 0)
    if ticket is not None:
        request[KEY_TICKET] = ticket


def _bad_header(name: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid header '{name}': {why}.", code="invalid_header", param=name)


def request_control(request: web.Request, runtime: Runtime, key_tags: str = "") -> Control:
    """The `x-aiogw-*` routing headers, validated; a bad value is a 400 naming the header.
    `key_tags`: the calling key's tags, joined to the request's."""
    h = request.headers
    deadline = strategy = None
    fallbacks: tuple[ModelRoute, ...] = ()
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
            raise _bad_header(
                "x-aiogw-tags", "expected up to 16 comma-separated key=value pairs (e.g. team=search,feature=qa)"
            )
        tags = ",".join(sorted(pairs))
    if key_tags:
        tags = merge_tags(tags, key_tags)
    task = ""
    if (v := h.get("x-aiogw-task")) is not None:
        task = v.strip()
        if not _TASK.match(task):
            raise _bad_header("x-aiogw-task", "expected a name of 1 to 64 characters from A-Z a-z 0-9 _ . : / -")
    floor = budget = None
    if (v := h.get("x-aiogw-quality-floor")) is not None:
        floor = _number(v)
        if floor is None or not 0 <= floor <= 1:
            raise _bad_header("x-aiogw-quality-floor", f"expected a number from 0 to 1, got {v[:40]!r}")
    if (v := h.get("x-aiogw-latency-budget-ms")) is not None:
        budget = _number(v)
        if budget is None or not 0 < budget <= MAX_TIMEOUT_MS:
            raise _bad_header(
                "x-aiogw-latency-budget-ms", f"expected milliseconds from 1 to {MAX_TIMEOUT_MS}, got {v[:40]!r}"
            )
    return Control(
        deadline=deadline, strategy=strategy, fallbacks=fallbacks, tags=tags, task=task,
        quality_floor=floor, latency_budget_ms=budget,
    )  # fmt: skip


def _number(v: str) -> float | None:
    try:
        return float(v)
    except ValueError:
        return None


async def admit_chat(request: web.Request, parsed: ParsedChat, operation: str = "chat") -> tuple[ModelRoute, Control]:
    """A decoded chat request (from any API) up to the cache: its model resolved, its
    x-aiogw-* controls read, its key's models and rpm/tpm checked, the outcome labelled
    (its task: x-aiogw-task, else `operation`)."""
    request[PUBLIC_MODEL] = parsed.req.model
    request[STREAM] = parsed.req.is_stream
    runtime = request.app[RUNTIME]
    route = runtime.resolve(parsed.req.model)
    principal = request[PRINCIPAL]
    control = request_control(request, runtime, principal.tags)
    if principal.key_id is not None:
        # Not routed yet: the prompt in the most token-hungry candidate's tokens.
        ratios = request.app[DISPATCHER].ratios
        candidates = (route, *control.fallbacks)
        await admit_key(
            request,
            route,
            control,
            lambda: chat_tokens_estimate(parsed, ratios.most(t for r in candidates for t in r.targets)),
        )
    outcome = request[OUTCOME]
    outcome.tags, outcome.task = control.tags, control.task or operation
    if (feedback := request.app[FEEDBACK]) is not None:  # remembered at its end; maybe sampled for a spot check
        feedback.begin(request, route.name, parsed)
    return route, control


async def chat_completions(request: web.Request) -> web.StreamResponse:
    parsed = parse_chat(await read_body(request))
    route, control = await admit_chat(request, parsed)
    principal = request[PRINCIPAL]
    if (cache := request.app[CACHE]) is not None:  # between admission and routing: a hit ends here
        decision = cache.prepare(request.headers, parsed, route.name, principal.key_id, principal.team, control.task)
        if decision is not None:
            return await through_cache(
                request, cache, decision, parsed, lambda h, r: answer(request, parsed, route, control, h, r)
            )
    return await answer(request, parsed, route, control)


async def answer(
    request: web.Request,
    parsed: ParsedChat,
    route: ModelRoute,
    control: Control,
    extra_headers: dict[str, str] | None = None,
    record: list[bytes] | None = None,
    fmt: ClientFormat | None = None,
    sink_wrap: Callable[[StreamSink], StreamSink] | None = None,
    native: Native | None = None,
) -> web.StreamResponse:
    """The request through budgets, routing and attempts. `extra_headers` go on the answer;
    `record` collects the SSE bytes the client gets (the cache's tee); `fmt`: the client's
    API when it is not Chat Completions (its answer body, stream events and late errors);
    `sink_wrap`: a stage between the stream and its client (a stored Responses stream);
    `native`: the client's API passed through to the targets that speak it."""
    dispatcher = request.app[DISPATCHER]
    outcome = request[OUTCOME]
    runtime = request.app[RUNTIME]
    if (money := request.app[MONEY]) is not None:  # budgets: hold the worst case (402 when no room)
        await money.admit(request, route, control, outcome, parsed=parsed)
    pending = request.get(FEEDBACK_PENDING)
    capture = pending.capture if pending is not None else None
    if capture is not None and fmt is not None:  # a spot check reads the answer in the client's API
        capture.read = fmt.answer_text

    if not parsed.req.is_stream:
        reply = await dispatcher.complete(parsed, route, outcome, control, native)
        headers = _answer_headers(request, outcome, reply.model)
        if extra_headers:
            headers.update(extra_headers)
        headers_for: HeadersFor | None = getattr(fmt, "headers_for", None)
        if headers_for is not None and outcome.target is not None:
            headers.update(headers_for(outcome.target))
        body = reply.body if fmt is None else fmt.reply_body(reply)
        if capture is not None:  # a spot check grades this answer after it is sent
            capture.body = body
        return web.Response(body=body, content_type="application/json", headers=headers)

    base = _base_headers(request)
    if extra_headers:
        base.update(extra_headers)
    if capture is not None:  # the stream as sent, for the spot check (shared with the cache's copy)
        if record is None:
            record = capture.chunks
        else:
            capture.chunks = record
    beat = runtime.config.server.sse_heartbeat_s
    sink = (
        SSESink(request, base, outcome, beat)
        if record is None
        else RecordingSSESink(request, base, outcome, beat, record)
    )
    sink.headers_for = getattr(fmt, "headers_for", None)
    lifecycle = request.app[LIFECYCLE]
    task = asyncio.current_task()
    assert task is not None
    lifecycle.streams.add(task)
    try:
        try:
            out: StreamSink = sink if sink_wrap is None else sink_wrap(sink)
            await dispatcher.stream(parsed, route, outcome, out, control, fmt, native)
        except GatewayError as exc:
            if not sink.opened:
                raise  # nothing sent yet: the middleware answers with the error's status
            # Heartbeats already sent a 200: the error ends the stream instead.
            outcome.stream_error = exc
            await sink.write(error_event(exc) if fmt is None else fmt.error_event(exc))
        await sink.finish()
    except ClientDisconnected:
        outcome.client_closed = True  # nothing left to tell anyone; the log line says so
    except asyncio.CancelledError:
        # Cancelled while the client is still there means the grace period of a shutdown
        # ran out: end the stream properly rather than cutting it.
        if lifecycle.draining and sink.opened:
            try:
                gone = ServiceUnavailable("The gateway shut down before this stream finished.")
                await sink.write(error_event(gone) if fmt is None else fmt.error_event(gone))
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
    req = decoded(_decode_embedding, await read_body(request))
    request[PUBLIC_MODEL] = req.model
    runtime = request.app[RUNTIME]
    route = runtime.resolve(req.model)
    outcome = request[OUTCOME]
    principal = request[PRINCIPAL]
    control = request_control(request, runtime, principal.tags)
    if principal.key_id is not None:
        await admit_key(request, route, control, lambda: embedding_tokens_estimate(req))
    outcome.tags, outcome.task = control.tags, control.task or "embeddings"
    if (money := request.app[MONEY]) is not None:
        await money.admit(request, route, control, outcome, embedding=req)
    reply = await request.app[DISPATCHER].embed(req, route, outcome, control)
    headers = _answer_headers(request, outcome, None)
    return web.Response(body=reply.body, content_type="application/json", headers=headers)
