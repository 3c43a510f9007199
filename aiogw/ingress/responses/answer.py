"""Response objects (openai-python `types/responses/response.py`): the skeleton every
answer and stream event carries (the request's settings echoed, as the API does), the
output items of a finished chat answer, usage in the Responses spelling, and the chat
messages an answer adds to a stored conversation."""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

from aiogw.ids import hex_id
from aiogw.ingress.responses.wire import ReasoningConfig, ResponsesRequest
from aiogw.types import CompletionUsage, FinishReason, PromptTokensDetails

Item = dict[str, Any]


def new_id(prefix: str) -> str:
    return f"{prefix}_{hex_id(24)}"


def _set(v: Any, default: Any = None) -> Any:
    return default if v is None or isinstance(v, msgspec.UnsetType) else v


def echo(req: ResponsesRequest) -> dict[str, Any]:
    """The request's settings as a Response repeats them (the SDK's `Response` requires
    `tools`, `tool_choice` and `parallel_tool_calls`; the API sends the others as null)."""
    reasoning = req.reasoning
    text = req.text
    return {
        "instructions": req.instructions,
        "max_output_tokens": _set(req.max_output_tokens),
        "metadata": _set(req.metadata, {}),
        "parallel_tool_calls": _set(req.parallel_tool_calls, True),
        "previous_response_id": _set(req.previous_response_id),
        "reasoning": {
            "effort": reasoning.effort if isinstance(reasoning, ReasoningConfig) else None,
            "summary": reasoning.summary if isinstance(reasoning, ReasoningConfig) else None,
        },
        "store": _set(req.store, True),
        "temperature": _set(req.temperature, 1.0),
        "text": msgspec.to_builtins(text)
        if isinstance(text, msgspec.Struct) and text.format
        else {"format": {"type": "text"}},
        "tool_choice": msgspec.to_builtins(_set(req.tool_choice, "auto")),
        "tools": _set(req.tools, []),
        "top_p": _set(req.top_p, 1.0),
        "truncation": "disabled",
        "user": _set(req.user),
    }


def skeleton(response_id: str, created_at: int, model: str, settings: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "model": model,
        "output": [],
        "usage": None,
        **settings,
    }


def finish(resp: dict[str, Any], reason: FinishReason | None, usage: CompletionUsage | None) -> None:
    """Status and usage of a finished answer (`length` and `content_filter` are incomplete)."""
    if reason == "length":
        resp["status"], resp["incomplete_details"] = "incomplete", {"reason": "max_output_tokens"}
    elif reason == "content_filter":
        resp["status"], resp["incomplete_details"] = "incomplete", {"reason": "content_filter"}
    else:
        resp["status"] = "completed"
    resp["usage"] = usage_of(usage) if usage is not None else None


def usage_of(u: CompletionUsage) -> dict[str, Any]:
    details = u.prompt_tokens_details
    write = details.cache_write_tokens if isinstance(details, PromptTokensDetails) else 0
    return {
        "input_tokens": u.prompt_tokens,  # as OpenAI counts it: cached tokens included
        "input_tokens_details": {"cached_tokens": u.cached_tokens, "cache_write_tokens": _set(write, 0)},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.total_tokens or u.prompt_tokens + u.completion_tokens,
    }


def reasoning_item(text: str) -> Item:
    return {"id": new_id("rs"), "type": "reasoning", "summary": [{"type": "summary_text", "text": text}]}


def message_item(text: str | None, refusal: str | None, status: str) -> Item:
    content: list[Item] = []
    if text:
        content.append({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
    if refusal:
        content.append({"type": "refusal", "refusal": refusal})
    return {"id": new_id("msg"), "type": "message", "status": status, "role": "assistant", "content": content}


def call_item(call_id: str, name: str, arguments: str, status: str = "completed") -> Item:
    return {"id": new_id("fc"), "type": "function_call", "status": status, "call_id": call_id, "name": name,
            "arguments": arguments}  # fmt: skip


class _Fn(msgspec.Struct):
    name: str = ""
    arguments: str = ""


class _Call(msgspec.Struct):
    id: str = ""
    function: _Fn = msgspec.field(default_factory=_Fn)


class _Msg(msgspec.Struct):
    content: str | None = None
    refusal: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[_Call] | None = None


class _Choice(msgspec.Struct):
    message: _Msg
    finish_reason: str | None = None


class _Completion(msgspec.Struct):
    model: str = ""
    choices: list[_Choice] = []
    usage: CompletionUsage | None = None


_completion = msgspec.json.Decoder(_Completion).decode


def from_completion(resp: dict[str, Any], body: bytes) -> dict[str, Any]:
    """The Response for a finished `chat.completion` body (the gateway's own: well formed)."""
    c = _completion(body)
    resp["model"] = c.model or resp["model"]
    reason = c.choices[0].finish_reason if c.choices else None
    status = "incomplete" if reason in ("length", "content_filter") else "completed"
    output: list[Item] = []
    if c.choices:
        m = c.choices[0].message
        if m.reasoning_content:
            output.append(reasoning_item(m.reasoning_content))
        if m.content or m.refusal:
            output.append(message_item(m.content, m.refusal, status))
        for tc in m.tool_calls or ():
            output.append(call_item(tc.id, tc.function.name, tc.function.arguments))
    resp["output"] = output
    finish(resp, reason, c.usage)  # type: ignore[arg-type]
    return resp


def assistant_turn(output: list[Item]) -> list[dict[str, Any]]:
    """The chat messages an answer's output adds to a stored conversation."""
    msg: dict[str, Any] = {"role": "assistant", "content": None}
    text: list[str] = []
    for item in output:
        kind = item["type"]
        if kind == "message":
            text += [p["text"] for p in item["content"] if p["type"] == "output_text"]
            refusal = [p["refusal"] for p in item["content"] if p["type"] == "refusal"]
            if refusal:
                msg["refusal"] = "".join(refusal)
        elif kind == "function_call":
            call = {"name": item["name"], "arguments": item["arguments"]}
            msg.setdefault("tool_calls", []).append({"id": item["call_id"], "type": "function", "function": call})
        elif kind == "reasoning":
            msg["reasoning_content"] = "\n\n".join(s["text"] for s in item["summary"])
    if text:
        msg["content"] = "".join(text)
    return [msg] if text or "tool_calls" in msg or "refusal" in msg else []


dumps = orjson.dumps
