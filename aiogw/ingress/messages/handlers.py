"""`POST /v1/messages` and `POST /v1/messages/count_tokens`: a Messages request decoded into
the canonical one, then the same admission, routing, attempts and accounting as Chat
Completions (`admit_chat`, `answer`), with answers and stream events in Messages' shape.
A target that speaks Messages itself (Anthropic) gets the body as the client sent it."""

from __future__ import annotations

import msgspec
import orjson
from aiohttp import web

from aiogw.accounting.cost import cost_field
from aiogw.adapters._base import Target, content_text
from aiogw.errors import GatewayError
from aiogw.ingress.body import read_body
from aiogw.ingress.cached import through_cache
from aiogw.ingress.chat import admit_chat, admit_key, answer, request_control
from aiogw.ingress.messages import errors
from aiogw.ingress.messages.decode import parse_count, parse_messages
from aiogw.ingress.messages.native import MessagesNative
from aiogw.ingress.messages.reply import message_body
from aiogw.ingress.messages.stream import MessagesEncoder
from aiogw.runtime import Runtime
from aiogw.server.keys import CACHE, DISPATCHER, OUTCOME, PRINCIPAL, PUBLIC_MODEL, REQUEST_ID, RUNTIME
from aiogw.streaming.encode import estimate_tokens
from aiogw.streaming.relay import StreamEncoder
from aiogw.streaming.sse import data_objects
from aiogw.types import MESSAGES_API, ChatRequest, Reply

_encode = msgspec.json.Encoder().encode

DROPPED_BETAS = "x-aiogw-dropped-betas"
TOKEN_COUNT = "x-aiogw-token-count"  # exact | estimated


class MessagesFormat:
    """The Messages API as a `ClientFormat` for `answer`."""

    __slots__ = ("_betas", "_runtime")

    def __init__(self, runtime: Runtime, betas: str | None) -> None:
        self._runtime = runtime
        self._betas = betas

    def encoder(self, target: Target, prompt_estimate: int) -> StreamEncoder:
        return MessagesEncoder(
            model=target.model, prompt_estimate=prompt_estimate, usage_extra=cost_field(target.price)
        )

    def error_event(self, err: GatewayError) -> bytes:
        return errors.error_event(err)

    def reply_body(self, reply: Reply) -> bytes:
        return reply.body if reply.native == MESSAGES_API else message_body(reply.body)

    def answer_text(self, data: bytes, stream: bool) -> str:
        if stream:  # the text blocks' deltas
            return "".join(
                str(d.get("text") or "")
                for ev in data_objects(data)
                if ev.get("type") == "content_block_delta" and isinstance(d := ev.get("delta"), dict)
                and d.get("type") == "text_delta"
            )  # fmt: skip
        try:
            blocks = orjson.loads(data).get("content") or []
        except (orjson.JSONDecodeError, AttributeError):
            return ""
        return "".join(str(b.get("text") or "") for b in blocks if isinstance(b, dict) and b.get("type") == "text")

    def headers_for(self, target: Target) -> dict[str, str]:
        """`anthropic-beta` reaches only targets that speak Messages; elsewhere it is
        dropped, and the answer says which betas were."""
        if not self._betas or self._runtime.adapter(target).native_api == MESSAGES_API:
            return {}
        return {DROPPED_BETAS: ",".join(b.strip() for b in self._betas.split(",") if b.strip())}


async def messages(request: web.Request) -> web.StreamResponse:
    parsed, notes = parse_messages(await read_body(request), request.headers)
    route, control = await admit_chat(request, parsed)
    request[OUTCOME].notes.extend(notes)
    fmt = MessagesFormat(request.app[RUNTIME], request.headers.get("anthropic-beta"))
    assert parsed.native is not None  # parse_messages keeps the client's body
    native = MessagesNative(parsed.native)
    if (cache := request.app[CACHE]) is not None:  # entries of Messages answers, kept apart
        p = request[PRINCIPAL]
        d = cache.prepare(request.headers, parsed, route.name, p.key_id, p.team, control.task, MESSAGES_API)
        if d is not None:
            return await through_cache(
                request,
                cache,
                d,
                parsed,
                lambda h, r: answer(request, parsed, route, control, h, r, fmt, native=native),
                MESSAGES_API,
            )
    return await answer(request, parsed, route, control, fmt=fmt, native=native)


async def count_tokens(request: web.Request) -> web.Response:
    """Exact from the first target that counts natively (Anthropic; never billed), else the
    gateway's estimate over system, messages and tools, marked `x-aiogw-token-count: estimated`."""
    parsed = parse_count(await read_body(request), request.headers)
    request[PUBLIC_MODEL] = parsed.req.model
    runtime = request.app[RUNTIME]
    route = runtime.resolve(parsed.req.model)
    principal = request[PRINCIPAL]
    control = request_control(request, runtime, principal.tags)
    if principal.key_id is not None:  # the key's models and rpm apply; a count uses no tokens
        await admit_key(request, route, control, lambda: 0)
    outcome = request[OUTCOME]
    outcome.tags, outcome.task = control.tags, control.task or "count_tokens"
    exact = await request.app[DISPATCHER].count_tokens(parsed, route, outcome, control)
    kind, n = ("exact", exact) if exact is not None else ("estimated", estimate_prompt(parsed.req))
    headers = {"x-request-id": request[REQUEST_ID], TOKEN_COUNT: kind}
    return web.Response(body=orjson.dumps({"input_tokens": n}), content_type="application/json", headers=headers)


def estimate_prompt(req: ChatRequest) -> int:
    """Every part of the prompt a model reads: system and message text, tool calls' arguments
    and the tools' definitions (an estimate without the tools is far too low for agents)."""
    chars = 0
    for m in req.messages:
        chars += len(content_text(getattr(m, "content", None)))
        for call in getattr(m, "tool_calls", None) or ():
            chars += len(call.function.name) + len(call.function.arguments)
    if req.tools:
        chars += len(_encode(req.tools))
    return estimate_tokens(chars)
