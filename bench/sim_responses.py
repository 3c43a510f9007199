"""The simulator speaking OpenAI's Responses API: `POST /v1/responses` (default account) and
`/{account}/v1/responses`, beside the same account's Chat Completions.

Written from OpenAI's API reference ("Responses": create, the Response object, streaming
events) and openai-python's `types/responses/` — never from aiogw's encoder. Same profiles,
faults and deterministic answers as the Chat Completions simulator (sim_core), rendered as a
Response: output items (`message` with `output_text`, `function_call`), `usage` with
`input_tokens`/`output_tokens` and their details, `status` `incomplete` at
`max_output_tokens`; streamed as `event:`-named events with `sequence_number`s from
`response.created` to `response.completed` | `response.incomplete` (no `[DONE]`).
Stateless: a `previous_response_id` is a 400, as from an OpenAI project that stores nothing.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import orjson
from aiohttp import web

from aiogw.bench.sim_core import (
    Answer,
    account_for,
    answer_time_s,
    check_auth,
    draw_fault,
    json_error,
    read_json,
    record,
    send_body,
    send_stream,
)

SSE = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(p.get("text", "") for p in content or [] if isinstance(p, dict) and "text" in p)


def chat_view(body: dict[str, Any]) -> dict[str, Any]:
    """The fields sim_core's Answer reads, from a Responses request."""
    messages: list[dict[str, Any]] = []
    if body.get("instructions"):
        messages.append({"role": "system", "content": body["instructions"]})
    inp = body.get("input")
    for item in [{"role": "user", "content": inp}] if isinstance(inp, str) else inp or []:
        kind = item.get("type", "message")
        if kind == "message":
            messages.append({"role": item.get("role"), "content": _text(item.get("content"))})
        elif kind == "function_call":
            messages.append(
                {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": item.get("name")}}]}
            )
        elif kind == "function_call_output":
            messages.append({"role": "tool", "content": _text(item.get("output"))})
    view: dict[str, Any] = {"model": body["model"], "messages": messages}
    if isinstance(body.get("max_output_tokens"), int):
        view["max_completion_tokens"] = body["max_output_tokens"]
    tools = [{"type": "function", "function": t} for t in body.get("tools") or [] if t.get("type") == "function"]
    if tools:
        view["tools"] = tools
        choice = body.get("tool_choice", "auto")
        view["tool_choice"] = (
            {"type": "function", "function": {"name": choice.get("name")}} if isinstance(choice, dict) else choice
        )
        view["parallel_tool_calls"] = body.get("parallel_tool_calls", True)
    fmt = (body.get("text") or {}).get("format") or {}
    if fmt.get("type") in ("json_object", "json_schema"):
        view["response_format"] = {"type": fmt["type"], "json_schema": {"schema": fmt.get("schema") or {}}}
    return view


class ResponsesAnswer:
    """An Answer rendered as a Response object and its stream events."""

    def __init__(self, body: dict[str, Any], answer: Answer) -> None:
        self.body, self.a = body, answer
        self.id = "resp_" + secrets.token_hex(24)
        self.msg_id = "msg_" + secrets.token_hex(24)
        self.created = int(time.time())
        self.incomplete = answer.finish == "length"

    def usage(self) -> dict[str, Any]:
        u = self.a.usage()
        return {"input_tokens": u["prompt_tokens"], "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": u["completion_tokens"], "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": u["total_tokens"]}  # fmt: skip

    def items(self, status: str = "completed") -> list[dict[str, Any]]:
        if self.a.tool_calls:
            return [{"id": "fc_" + cid, "type": "function_call", "status": "completed", "call_id": cid, "name": name,
                     "arguments": args} for cid, name, args in self.a.tool_calls]  # fmt: skip
        part = {"type": "output_text", "text": self.a.text(0), "annotations": [], "logprobs": []}
        return [{"id": self.msg_id, "type": "message", "status": status, "role": "assistant", "content": [part]}]

    def response(self, status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None) -> dict[str, Any]:
        b = self.body
        return {
            "id": self.id, "object": "response", "created_at": self.created, "status": status, "background": False,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": b.get("instructions"), "max_output_tokens": b.get("max_output_tokens"),
            "model": b["model"], "output": output, "parallel_tool_calls": b.get("parallel_tool_calls", True),
            "previous_response_id": None, "reasoning": {"effort": None, "summary": None},
            "store": b.get("store", True), "temperature": b.get("temperature", 1.0),
            "text": b.get("text") or {"format": {"type": "text"}}, "tool_choice": b.get("tool_choice", "auto"),
            "tools": b.get("tools") or [], "top_p": b.get("top_p", 1.0), "truncation": "disabled",
            "usage": usage, "user": None, "metadata": b.get("metadata") or {},
        }  # fmt: skip

    def whole(self) -> bytes:
        status = "incomplete" if self.incomplete else "completed"
        return orjson.dumps(self.response(status, self.items(status), self.usage()))

    def events(self, per_chunk: int) -> list[tuple[bytes, bool]]:
        seq = iter(range(1_000_000))

        def ev(kind: str, data: dict[str, Any], token: bool = False) -> tuple[bytes, bool]:
            data = {"type": kind, **data, "sequence_number": next(seq)}
            return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n", token

        out = [ev("response.created", {"response": self.response("in_progress", [], None)}),
               ev("response.in_progress", {"response": self.response("in_progress", [], None)})]  # fmt: skip
        status = "incomplete" if self.incomplete else "completed"
        done_items = self.items(status)
        for i, item in enumerate(done_items):
            ids = {"item_id": item["id"], "output_index": i}
            if item["type"] == "function_call":
                out.append(ev("response.output_item.added", {"output_index": i, "item": {**item, "arguments": "",
                                                                                       "status": "in_progress"}}))  # fmt: skip
                out.append(ev("response.function_call_arguments.delta", {**ids, "delta": item["arguments"]}, True))
                out.append(ev("response.function_call_arguments.done", {**ids, "arguments": item["arguments"]}))
            else:
                empty = {**item, "status": "in_progress", "content": []}
                out.append(ev("response.output_item.added", {"output_index": i, "item": empty}))
                part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                out.append(ev("response.content_part.added", {**ids, "content_index": 0, "part": part}))
                for piece in self.a.pieces(0, per_chunk):
                    out.append(ev("response.output_text.delta", {**ids, "content_index": 0, "delta": piece,
                                                                 "logprobs": []}, True))  # fmt: skip
                text = item["content"][0]["text"]
                out.append(ev("response.output_text.done", {**ids, "content_index": 0, "text": text, "logprobs": []}))
                out.append(ev("response.content_part.done", {**ids, "content_index": 0, "part": item["content"][0]}))
            out.append(ev("response.output_item.done", {"output_index": i, "item": item}))
        final = self.response(status, done_items, self.usage())
        out.append(ev(f"response.{status}", {"response": final}))
        return out


async def responses(request: web.Request) -> web.StreamResponse:
    state, p, stats = account_for(request)
    body = await read_json(request)
    if isinstance(body, web.Response):
        return body
    record(stats, request, body)
    if (denied := check_auth(request, p)) is not None:
        return denied
    for required in ("model", "input"):
        if required not in body:
            return json_error(400, message=f"Missing required parameter: '{required}'.", param=required,
                              code="missing_required_parameter")  # fmt: skip
    if body.get("previous_response_id"):
        return json_error(400, message=f"Previous response with id '{body['previous_response_id']}' not found.",
                          param="previous_response_id", code="previous_response_not_found")  # fmt: skip
    fault = await draw_fault(state, p)
    if fault == "status":
        return json_error(p.fault_status)
    answer = ResponsesAnswer(body, Answer(chat_view(body), p))
    headers = {"x-request-id": "req_sim_" + secrets.token_hex(6)}
    if body.get("stream"):
        failed = {"type": "error", "code": "server_error", "message": "The server had an error.", "param": None,
                  "sequence_number": 999}  # fmt: skip
        return await send_stream(
            request, {**SSE, **headers}, answer.events(max(1, p.chunk_tokens)), p, fault, stats,
            malformed=b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"cu\n\n',
            error_event=b"event: error\ndata: " + orjson.dumps(failed) + b"\n\n",
        )  # fmt: skip
    return await send_body(request, answer.whole(), fault, answer_time_s(p, answer.a.completion_tokens()), headers)


def add_routes(app: web.Application) -> None:
    for prefix in ("", "/{account}"):
        app.router.add_post(prefix + "/v1/responses", responses)
