"""`POST /v1/responses`, `GET` and `DELETE /v1/responses/{id}`: a Responses request
through the same steps as a chat request (model, x-aiogw-* controls, the key's limits,
budgets, routing and attempts in `answer`), in the Responses format."""

from __future__ import annotations

import time

import msgspec
import orjson
from aiohttp import web

from aiogw.attempts.outcome import StreamSink
from aiogw.errors import InvalidRequest, NotFound, StoreUnavailable
from aiogw.ingress.body import read_body
from aiogw.ingress.cached import through_cache
from aiogw.ingress.chat import admit_chat, answer
from aiogw.ingress.responses.answer import assistant_turn, echo, new_id, skeleton
from aiogw.ingress.responses.decode import decode_request, input_messages, to_chat
from aiogw.ingress.responses.format import ResponsesFormat, ResponsesSink
from aiogw.ingress.responses.native import ResponsesNative
from aiogw.ingress.responses.state import RESPONSES
from aiogw.server.keys import CACHE, OUTCOME, PRINCIPAL, PUBLIC_MODEL
from aiogw.telemetry.logs import get_logger
from aiogw.types import RESPONSES_API  # the client API in cache keys: replayed to Responses clients only

log = get_logger("aiogw.responses")
_decode_raw = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode

# A stored response is a new one, with its own id, each time: never answered from the cache.
_CACHE_BYPASS = {"x-aiogw-cache-status": "bypass", "x-aiogw-cache-reason": "stored"}


def _owner(request: web.Request) -> str:
    """Whose stored responses a caller sees: its key's, the master key's, or anonymous."""
    p = request[PRINCIPAL]
    return p.key_id or ("master" if p.admin else "anonymous")


async def create_response(request: web.Request) -> web.StreamResponse:
    body = await read_body(request)
    req = decode_request(body)
    request[PUBLIC_MODEL] = req.model  # before admission: a refusal is logged under it
    stream = req.stream is True
    principal = request[PRINCIPAL]
    state = request.app[RESPONSES]
    history = []
    prev = req.previous_response_id
    if isinstance(prev, str):
        if state is None:
            raise InvalidRequest(
                "previous_response_id is not supported: this gateway keeps no responses (responses.store is off). "
                "Send the whole conversation in input instead.",
                code="previous_response_not_supported",
                param="previous_response_id",
            )
        found = await state.get(_owner(request), prev)
        if found is None:
            raise InvalidRequest(f"Previous response with id '{prev}' not found.", code="previous_response_not_found",
                                 param="previous_response_id")  # fmt: skip
        history = found.history
    new = input_messages(req)
    parsed, native_only = to_chat(req, history, new)
    route, control = await admit_chat(request, parsed, "responses")
    outcome = request[OUTCOME]
    keep = state is not None and req.store is not False
    extra = None
    cache = request.app[CACHE]
    if cache is not None and keep:  # a stored response is a new one each time (its own id)
        outcome.cache_status = "bypass"
        extra = dict(_CACHE_BYPASS)
    settings = echo(req)
    settings["store"] = keep
    fmt = ResponsesFormat(skeleton(new_id("resp"), int(time.time()), req.model, settings))
    native = ResponsesNative(_decode_raw(body), fmt, local=isinstance(prev, str), native_only=native_only)
    owner = _owner(request)

    async def save(resp: dict) -> None:
        assert state is not None
        await state.put(owner, resp, history + new + assistant_turn(resp["output"]))

    def responses_sink(sink: StreamSink) -> StreamSink:
        return ResponsesSink(sink, fmt, save if keep else None, _store_failed)

    wrap = responses_sink if stream else None
    if cache is not None and not keep:  # stateless: entries of Responses answers, kept apart
        d = cache.prepare(
            request.headers, parsed, route.name, principal.key_id, principal.team, control.task, RESPONSES_API
        )
        if d is not None:
            return await through_cache(
                request,
                cache,
                d,
                parsed,
                lambda h, r: answer(request, parsed, route, control, h, r, fmt, sink_wrap=wrap, native=native),
                RESPONSES_API,
            )
    resp = await answer(request, parsed, route, control, extra, None, fmt, sink_wrap=wrap, native=native)
    if not stream and keep and fmt.final is not None:  # before the answer leaves: a continuation finds it at once
        try:
            await save(fmt.final)
        except Exception as exc:
            log.warning("responses.store_failed", error=str(exc))
            raise StoreUnavailable("The response could not be stored (responses.store); retry in a moment.") from None
    return resp


def _store_failed(exc: Exception) -> None:
    log.warning("responses.store_failed", error=str(exc))


def _not_found(response_id: str) -> NotFound:
    return NotFound(f"Response with id '{response_id}' not found.", code="not_found")


async def get_response(request: web.Request) -> web.Response:
    rid = request.match_info["response_id"]
    state = request.app[RESPONSES]
    found = await state.get(_owner(request), rid) if state is not None else None
    if found is None:
        raise _not_found(rid)
    return web.Response(body=found.response, content_type="application/json")


async def delete_response(request: web.Request) -> web.Response:
    rid = request.match_info["response_id"]
    state = request.app[RESPONSES]
    if state is None or not await state.delete(_owner(request), rid):
        raise _not_found(rid)
    body = orjson.dumps({"id": rid, "object": "response", "deleted": True})
    return web.Response(body=body, content_type="application/json")
