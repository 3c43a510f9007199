"""HTTP handlers: the OpenAI-compatible API and the probes."""

from __future__ import annotations

import asyncio
import re

import msgspec
from aiohttp import web

from aiogw.dispatch import ClientDisconnected
from aiogw.errors import InvalidRequest, ServiceUnavailable
from aiogw.server.keys import DISPATCHER, LIFECYCLE, OUTCOME, PUBLIC_MODEL, REQUEST_ID, RUNTIME, STREAM
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


def _base_headers(request: web.Request) -> dict[str, str]:
    return {"x-request-id": request[REQUEST_ID]}


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    parsed = parse_chat(body)
    request[PUBLIC_MODEL] = parsed.req.model
    request[STREAM] = parsed.req.is_stream
    route = request.app[RUNTIME].resolve(parsed.req.model)
    dispatcher = request.app[DISPATCHER]
    outcome = request[OUTCOME]

    if not parsed.req.is_stream:
        reply = await dispatcher.complete(parsed, route, outcome)
        headers = _base_headers(request)
        assert outcome.target is not None
        headers["x-aiogw-provider"] = outcome.target.provider
        headers["x-aiogw-model"] = reply.model or outcome.target.model
        headers["x-aiogw-attempts"] = outcome.attempts_header
        return web.Response(body=reply.body, content_type="application/json", headers=headers)

    sink = SSESink(request, _base_headers(request), outcome)
    lifecycle = request.app[LIFECYCLE]
    task = asyncio.current_task()
    assert task is not None
    lifecycle.streams.add(task)
    try:
        await dispatcher.stream(parsed, route, outcome, sink)
        await sink.finish()
    except ClientDisconnected:
        outcome.client_closed = True  # nothing left to tell anyone; the log line says so
    except asyncio.CancelledError:
        # Cancelled while the client is still there means the grace period of a shutdown
        # ran out: end the stream properly rather than cutting it.
        if lifecycle.draining and sink.started:
            try:
                await sink.write(error_event(ServiceUnavailable("The gateway shut down before this stream finished.")))
                await sink.finish()
            except ClientDisconnected:
                pass
        raise
    finally:
        lifecycle.streams.discard(task)
    assert sink.response is not None
    return sink.response


async def embeddings(request: web.Request) -> web.Response:
    try:
        req = _decode_embedding(await request.read())
    except msgspec.MsgspecError as exc:
        raise invalid_body(exc) from None
    request[PUBLIC_MODEL] = req.model
    route = request.app[RUNTIME].resolve(req.model)
    outcome = request[OUTCOME]
    reply = await request.app[DISPATCHER].embed(req, route, outcome)
    assert outcome.target is not None
    headers = _base_headers(request)
    headers["x-aiogw-provider"] = outcome.target.provider
    headers["x-aiogw-model"] = outcome.target.model
    headers["x-aiogw-attempts"] = outcome.attempts_header
    return web.Response(body=reply.body, content_type="application/json", headers=headers)


async def list_models(request: web.Request) -> web.Response:
    names = request.app[RUNTIME].public_models()
    body = _encode(ModelList(data=[ModelCard(id=n) for n in names]))
    return web.Response(body=body, content_type="application/json")


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
    web.get("/healthz", healthz),
    web.get("/readyz", readyz),
]
