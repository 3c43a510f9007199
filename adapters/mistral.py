"""Mistral (`https://api.mistral.ai/v1`): OpenAI-shaped, with a strict request schema.

Spec: docs.mistral.ai API reference and the official SDK (mistralai/client-python, models
ChatCompletionRequest, extra fields forbidden); our summary is providers.md §6. Any field
Mistral does not know is a 422, so the body is rebuilt from a whitelist; `seed` becomes
`random_seed`, tool-call ids become the 9 alphanumerics Mistral insists on, a trailing
assistant message becomes a `prefix` continuation. Usage always arrives on the final chunk.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import msgspec
import orjson

from aiogw.adapters import _base as base
from aiogw.adapters import openai
from aiogw.types import CHAT_REQUEST_FIELDS, EmbeddingRequest, ParsedChat, Reply

NAME = "mistral"

# Mistral's ChatCompletionRequest fields (SDK, mid-2026); nothing else may be sent.
REQUEST_FIELDS = frozenset({
    "model", "messages", "temperature", "top_p", "max_tokens", "stream", "stop", "random_seed", "metadata",
    "response_format", "tools", "tool_choice", "presence_penalty", "frequency_penalty", "n", "prediction",
    "parallel_tool_calls", "reasoning_effort", "prompt_mode", "guardrails", "prompt_cache_key", "safe_prompt",
})  # fmt: skip
MESSAGE_FIELDS = {
    "system": {"role", "content"},
    "user": {"role", "content"},
    "assistant": {"role", "content", "tool_calls", "prefix"},
    "tool": {"role", "content", "tool_call_id", "name"},
}
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

PARAMS = base.ParamMap(
    reject={
        "top_k": "no top_k sampling",
        "logprobs": "no log probabilities",
        "top_logprobs": "no log probabilities",
        "logit_bias": "no token biasing",
    },
    drop={"user": "not in Mistral's schema (extra fields are refused)"},
    translated=frozenset({
        "temperature", "top_p", "n", "max_tokens", "max_completion_tokens", "stop", "seed", "presence_penalty",
        "frequency_penalty", "tools", "tool_choice", "parallel_tool_calls", "response_format", "reasoning_effort",
    }),  # fmt: skip
)


def tool_id(openai_id: str) -> str:
    """Mistral accepts exactly 9 [a-zA-Z0-9]; other ids map to 9 base62 digits of their hash,
    the same on the assistant's call and on the tool's answer."""
    if len(openai_id) == 9 and openai_id.isalnum() and openai_id.isascii():
        return openai_id
    n = int.from_bytes(hashlib.sha256(openai_id.encode()).digest()[:8], "big")
    out = []
    for _ in range(9):
        n, r = divmod(n, 62)
        out.append(_BASE62[r])
    return "".join(out)


def _messages(p: ParsedChat) -> list[dict[str, Any]]:
    out = []
    for m in msgspec.to_builtins(p.req.messages):
        role = "system" if m["role"] == "developer" else m["role"]
        m["role"] = role
        clean = {k: v for k, v in m.items() if k in MESSAGE_FIELDS.get(role, {"role", "content"})}
        for tc in clean.get("tool_calls") or []:
            tc["id"] = tool_id(tc["id"])
        if role == "tool":
            clean["tool_call_id"] = tool_id(clean["tool_call_id"])
        out.append(clean)
    if out and out[-1]["role"] == "assistant":
        out[-1]["prefix"] = True  # Mistral continues a trailing assistant message only as a prefix
    return out


def prepare(p: ParsedChat, target: base.Target, body: dict[str, object]) -> tuple[str, ...]:
    req = p.req
    if "seed" in body:
        body["random_seed"] = body.pop("seed")
    if "max_completion_tokens" in body:
        body["max_tokens"] = body.pop("max_completion_tokens")
    body["messages"] = _messages(p)
    unknown = sorted(k for k in body if k not in REQUEST_FIELDS)
    for k in unknown:
        del body[k]
    extras = [k for k in unknown if k not in CHAT_REQUEST_FIELDS]
    return (f"dropped {', '.join(repr(k) for k in extras)} for mistral: not in its request schema",) if extras else ()


def decode_response(body: bytes, target: base.Target) -> Reply:
    """Reasoning models answer with content as a list of typed chunks: flatten it."""
    if b'"content":[' not in body.replace(b" ", b""):
        return openai.decode_response(body, target)
    data = orjson.loads(body)
    for choice in data.get("choices", []):
        msg = choice.get("message") or {}
        if isinstance(msg.get("content"), list):
            chunks = msgspec.convert(msg["content"], list[openai._ContentChunk])  # noqa: SLF001 - same package
            text, thought = openai.chunk_texts(chunks)
            msg["content"] = text or None
            if thought:
                msg["reasoning_content"] = thought
    return openai.decode_response(orjson.dumps(data), target)


def build_embeddings_call(req: EmbeddingRequest, target: base.Target) -> base.Call:
    body: dict[str, Any] = {"model": target.model, "input": req.input}
    if isinstance(req.dimensions, int):
        body["output_dimension"] = req.dimensions
    if isinstance(req.encoding_format, str) and req.encoding_format != "float":
        body["encoding_format"] = req.encoding_format
    return base.Call(url=f"{target.base_url}/embeddings", headers=base.bearer_headers(target), body=orjson.dumps(body))


def rate_limits(headers: Mapping[str, str]) -> base.RateLimitInfo | None:
    """Per-minute windows: `x-ratelimit-{limit,remaining}-{req,tokens}-minute` (no reset given)."""
    if "x-ratelimit-remaining-req-minute" not in headers and "x-ratelimit-remaining-tokens-minute" not in headers:
        return None

    def num(key: str) -> int | None:
        try:
            return int(headers[key]) if key in headers else None
        except ValueError:
            return None

    return base.RateLimitInfo(
        limit_requests=num("x-ratelimit-limit-req-minute"),
        remaining_requests=num("x-ratelimit-remaining-req-minute"),
        reset_requests_s=60.0,
        limit_tokens=num("x-ratelimit-limit-tokens-minute"),
        remaining_tokens=num("x-ratelimit-remaining-tokens-minute"),
        reset_tokens_s=60.0,
    )


ADAPTER = openai.openai_like(
    NAME,
    "https://api.mistral.ai/v1",
    params=PARAMS,
    call=openai.dialect_call(PARAMS, prepare, ask_usage=False),  # usage always comes; the field is refused
    response=decode_response,
    embeddings=build_embeddings_call,
    limits=rate_limits,
)
