"""The simulator speaking Anthropic's Messages API: `POST /v1/messages` (default account) and
`/{account}/v1/messages`, so an `anthropic` provider's `base_url` is `Simulator.root(account)`.

Written from Anthropic's API reference and the official SDK's types
(anthropic-sdk-python: types/message.py, raw_message_stream_event.py, usage.py; errors in
_exceptions.py) — never from aiogw's adapter. Same profiles, faults and deterministic
answers as the OpenAI simulator (sim_core), rendered in Anthropic's wire format:
`event:`-named SSE events ending with `message_stop` (no `[DONE]`), `ping`s, cumulative
usage in `message_delta`, native error bodies and `anthropic-ratelimit-*` headers.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web

from aiogw.bench.sim_core import (
    Answer,
    Profile,
    SimulatorState,
    Stats,
    account_for,
    answer_time_s,
    draw_fault,
    record,
    send_body,
    send_stream,
)

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_MESSAGES = {
    "overloaded_error": "Overloaded",
    "rate_limit_error": "Number of request tokens has exceeded your per-minute rate limit (simulated).",
    "api_error": "Internal server error (simulated).",
    "authentication_error": "invalid x-api-key",
    "not_found_error": "model: not found (simulated)",
    "timeout_error": "Request timed out (simulated).",
    "billing_error": "Your credit balance is too low (simulated).",
    "permission_error": "Your API key does not have permission (simulated).",
    "request_too_large": "Request exceeds the maximum allowed number of bytes.",
    "invalid_request_error": "Invalid request (simulated).",
}
STOP_REASON = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def _rate_headers() -> dict[str, str]:
    reset = (datetime.now(UTC) + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "anthropic-ratelimit-requests-limit": "4000",
        "anthropic-ratelimit-requests-remaining": "3999",
        "anthropic-ratelimit-requests-reset": reset,
        "anthropic-ratelimit-tokens-limit": "2000000",
        "anthropic-ratelimit-tokens-remaining": "1999000",
        "anthropic-ratelimit-tokens-reset": reset,
    }


def error(status: int, message: str | None = None, etype: str | None = None) -> web.Response:
    etype = etype or _ERROR_TYPES.get(status, "api_error")
    rid = "req_sim" + secrets.token_hex(8)
    body = {
        "type": "error",
        "error": {"type": etype, "message": message or _MESSAGES.get(etype, "error")},
        "request_id": rid,
    }
    headers = {"request-id": rid}
    if status in (429, 529):
        headers["retry-after"] = "1"
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    out = []
    for b in content or []:
        if isinstance(b, dict):
            if b.get("type") == "text":
                out.append(b.get("text", ""))
            elif b.get("type") == "tool_result":
                out.append(_text(b.get("content")))
    return " ".join(out)


def _message_view(m: dict[str, Any]) -> dict[str, Any]:
    """A user turn of tool_result blocks answers tools (OpenAI's `tool` role); an assistant
    turn's tool_use blocks are its calls."""
    content = m.get("content")
    blocks = [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []
    view: dict[str, Any] = {"role": m.get("role"), "content": _text(content)}
    if m.get("role") == "user" and blocks and all(b.get("type") == "tool_result" for b in blocks):
        view["role"] = "tool"
    calls = [{"type": "function", "function": {"name": b.get("name")}} for b in blocks if b.get("type") == "tool_use"]
    if calls:
        view["tool_calls"] = calls
    return view


def openai_view(body: dict[str, Any]) -> dict[str, Any]:
    """The fields sim_core's Answer reads, from an Anthropic request."""
    system = body.get("system")
    messages = [{"role": "system", "content": _text(system)}] if system else []
    messages += [_message_view(m) for m in body["messages"]]
    view: dict[str, Any] = {"model": body["model"], "messages": messages, "max_tokens": body.get("max_tokens")}
    tools = [
        {"type": "function", "function": {"name": t["name"], "parameters": t.get("input_schema", {})}}
        for t in body.get("tools") or []
        if isinstance(t, dict) and "name" in t
    ]
    fmt = (body.get("output_config") or {}).get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        # Structured outputs: the answer text is an instance of the schema.
        view["response_format"] = {"type": "json_schema", "json_schema": {"schema": fmt.get("schema") or {}}}
    if tools:
        view["tools"] = tools
        choice = body.get("tool_choice") or {"type": "auto"}
        ctype = choice.get("type")
        if ctype == "any":
            view["tool_choice"] = "required"
        elif ctype == "tool":
            view["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
        elif ctype == "none":
            view["tool_choice"] = "none"
        if not choice.get("disable_parallel_tool_use"):
            view["parallel_tool_calls"] = True
    return view


class NativeAnswer:
    """An Answer rendered as Anthropic content blocks."""

    def __init__(self, body: dict[str, Any], profile: Profile) -> None:
        self.a = Answer(openai_view(body), profile)
        self.id = "msg_sim" + secrets.token_hex(10)
        self.model = body["model"]
        self.thinking = isinstance(body.get("thinking"), dict) and body["thinking"].get("type") in (
            "enabled",
            "adaptive",
        )
        self.tools = [("toolu_sim" + secrets.token_hex(8), name, args) for _, name, args in self.a.tool_calls]
        self.stop_reason = STOP_REASON[self.a.finish]
        self.input_tokens = self.a.prompt_tokens
        self.output_tokens = self.a.completion_tokens() + (8 if self.thinking else 0)

    THOUGHT = "Considering the question step by step."

    def usage(self, *, output: int) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": output,
            "service_tier": "standard",
        }

    def message(self) -> bytes:
        content: list[dict[str, Any]] = []
        if self.thinking:
            content.append({"type": "thinking", "thinking": self.THOUGHT, "signature": "EqSim" + secrets.token_hex(16)})
        if self.tools:
            content += [{"type": "tool_use", "id": i, "name": n, "input": orjson.loads(a)} for i, n, a in self.tools]
        else:
            content.append({"type": "text", "text": self.a.text(0)})
        return orjson.dumps({
            "id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": content,
            "stop_reason": self.stop_reason, "stop_sequence": None, "usage": self.usage(output=self.output_tokens),
        })  # fmt: skip

    def events(self, per_chunk: int) -> list[tuple[bytes, bool]]:
        """(SSE event bytes, carries a token), in order, `message_stop` last."""

        def ev(kind: str, data: dict[str, Any]) -> bytes:
            return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"

        start = {"id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": [],
                 "stop_reason": None, "stop_sequence": None, "usage": self.usage(output=1)}  # fmt: skip
        out = [(ev("message_start", {"message": start}), False), (ev("ping", {}), False)]
        index = 0
        if self.thinking:
            out.append(
                (
                    ev("content_block_start", {"index": index, "content_block": {"type": "thinking", "thinking": ""}}),
                    False,
                )
            )
            out.append(
                (
                    ev(
                        "content_block_delta",
                        {"index": index, "delta": {"type": "thinking_delta", "thinking": self.THOUGHT}},
                    ),
                    True,
                )
            )
            sig = {"type": "signature_delta", "signature": "EqSim" + secrets.token_hex(16)}
            out.append((ev("content_block_delta", {"index": index, "delta": sig}), False))
            out.append((ev("content_block_stop", {"index": index}), False))
            index += 1
        if self.tools:
            for tid, name, args in self.tools:
                block = {"type": "tool_use", "id": tid, "name": name, "input": {}}
                out.append((ev("content_block_start", {"index": index, "content_block": block}), False))
                out.append(
                    (
                        ev(
                            "content_block_delta",
                            {"index": index, "delta": {"type": "input_json_delta", "partial_json": ""}},
                        ),
                        False,
                    )
                )
                for j in range(0, len(args), 9):  # fragments split anywhere, even mid-string
                    d = {"type": "input_json_delta", "partial_json": args[j : j + 9]}
                    out.append((ev("content_block_delta", {"index": index, "delta": d}), True))
                out.append((ev("content_block_stop", {"index": index}), False))
                index += 1
        else:
            out.append(
                (ev("content_block_start", {"index": index, "content_block": {"type": "text", "text": ""}}), False)
            )
            for piece in self.a.pieces(0, per_chunk):
                out.append(
                    (ev("content_block_delta", {"index": index, "delta": {"type": "text_delta", "text": piece}}), True)
                )
            out.append((ev("content_block_stop", {"index": index}), False))
        delta = {
            "delta": {"stop_reason": self.stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": self.output_tokens},
        }
        out.append((ev("message_delta", delta), False))
        out.append((ev("message_stop", {}), False))
        return out


_TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")


def invalid(body: dict[str, Any]) -> str | None:
    """The request rules the Messages API enforces that a translator can get wrong (API
    reference "Create a Message"; the error texts are Anthropic's where documented)."""
    for field in ("model", "messages", "max_tokens"):
        if field not in body:
            return f"{field}: Field required"
    msgs = body["messages"]
    if not isinstance(msgs, list) or not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1:
        return "messages: Input should be a valid list; max_tokens: a positive integer"
    has_tool_blocks = False
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        content = m.get("content")
        if content == [] or content == "":
            return f"messages.{i}: all messages must have non-empty content except for the optional final assistant message"
        for j, b in enumerate(content if isinstance(content, list) else []):
            kind = b.get("type") if isinstance(b, dict) else None
            if kind == "text" and not b.get("text"):
                return f"messages.{i}.content.{j}.text: text content blocks must be non-empty"
            if kind in ("tool_use", "tool_result"):
                has_tool_blocks = True
                tid = b.get("id") if kind == "tool_use" else b.get("tool_use_id")
                if not isinstance(tid, str) or not _TOOL_ID.match(tid):
                    return f"messages.{i}.content.{j}.{kind}.id: String should match pattern '^[a-zA-Z0-9_-]+$'"
            if (kind == "tool_use" and m["role"] != "assistant") or (kind == "tool_result" and m["role"] != "user"):
                return f"messages.{i}.content.{j}: {kind} blocks are not allowed in {m['role']} messages"
    if msgs and msgs[0].get("role") != "user":
        return 'messages: first message must use the "user" role'
    if has_tool_blocks and not body.get("tools"):
        return "Requests which include `tool_use` or `tool_result` blocks must define tools."
    t = body.get("temperature")
    if t is not None and not 0 <= t <= 1:
        return "temperature: Input should be less than or equal to 1"
    if t is not None and body.get("top_p") is not None:
        return "`temperature` and `top_p` cannot both be specified for this model. Please use only one."
    if any(not s.strip() for s in body.get("stop_sequences") or []):
        return "stop_sequences: each stop sequence must contain non-whitespace"
    choice = body.get("tool_choice") or {}
    if choice.get("type") == "none" and len(choice) > 1:
        return "tool_choice.none: Extra inputs are not permitted"
    thinking = body.get("thinking") or {}
    if thinking.get("type") in ("enabled", "adaptive"):
        if choice.get("type") in ("any", "tool"):
            return "Thinking may not be enabled when tool_choice forces tool use."
        budget = thinking.get("budget_tokens")
        if thinking["type"] == "enabled" and (not isinstance(budget, int) or not 1024 <= budget < body["max_tokens"]):
            return "`max_tokens` must be greater than `thinking.budget_tokens`, which must be at least 1024"
    return None


async def _received(request: web.Request) -> tuple[SimulatorState, Profile, Stats, dict[str, Any]] | web.Response:
    """What every Messages endpoint checks first, in Anthropic's order (a readable body, the
    key, the version header): (account state, profile, stats, body), or the error answer."""
    state, p, stats = account_for(request)
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return error(400, "There was an error parsing the body of your request.")
    record(stats, request, body)
    if p.api_key is not None and request.headers.get("x-api-key") != p.api_key:
        return error(401)
    if "anthropic-version" not in request.headers:
        return error(400, "anthropic-version: header is required")
    return state, p, stats, body


async def messages(request: web.Request) -> web.StreamResponse:
    got = await _received(request)
    if isinstance(got, web.Response):
        return got
    state, p, stats, body = got
    if problem := invalid(body):
        return error(400, problem)
    fault = await draw_fault(state, p)
    if fault == "status":
        return error(p.fault_status)
    answer = NativeAnswer(body, p)
    if p.context_window is not None and answer.input_tokens > p.context_window:
        # Anthropic counts the prompt only (an answer that runs out of room stops with
        # model_context_window_exceeded); the documented wording follows.
        return error(400, f"prompt is too long: {answer.input_tokens} tokens > {p.context_window} maximum")
    headers = {"request-id": "req_sim" + secrets.token_hex(8), **_rate_headers()}
    if body.get("stream"):
        overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        return await send_stream(
            request, {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache", **headers},
            answer.events(max(1, p.chunk_tokens)), p, fault, stats,
            malformed=b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_de\n\n',
            error_event=b"event: error\ndata: " + orjson.dumps(overloaded) + b"\n\n",
        )  # fmt: skip
    return await send_body(request, answer.message(), fault, answer_time_s(p, answer.output_tokens), headers)


async def count_tokens(request: web.Request) -> web.Response:
    """`POST /v1/messages/count_tokens` (API reference "Count tokens in a Message"): the
    prompt side of a Messages request (no max_tokens) -> `{"input_tokens": N}`, the count a
    message for the same prompt reports as its input (tools' definitions included)."""
    got = await _received(request)
    if isinstance(got, web.Response):
        return got
    _, p, _, body = got
    if problem := invalid({**body, "max_tokens": body.get("max_tokens", 4096)}):
        return error(400, problem)
    tools = len(orjson.dumps(body.get("tools") or [])) // 4 if body.get("tools") else 0
    answer = NativeAnswer(body, p)
    return web.Response(
        body=orjson.dumps({"input_tokens": answer.input_tokens + tools}), content_type="application/json"
    )


def add_routes(app: web.Application) -> None:
    for prefix in ("", "/{account}"):
        app.router.add_post(prefix + "/v1/messages", messages)
        app.router.add_post(prefix + "/v1/messages/count_tokens", count_tokens)
