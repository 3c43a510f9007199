"""Mistral (`https://api.mistral.ai/v1`): OpenAI-shaped, with a strict request schema.

Spec: docs.mistral.ai API reference and the official SDK (mistralai/client-python, models
ChatCompletionRequest, extra fields forbidden); our summary is docs/providers.md §6. Any field
Mistral does not know is a 422, so the body is rebuilt from a whitelist and the messages,
tools and formats from the canonical request; `seed` becomes `random_seed`, tool-call ids
become the 9 alphanumerics Mistral insists on, a trailing assistant message becomes a
`prefix` continuation. Usage always arrives on the final chunk, so `include_usage` is
emulated rather than asked for.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import msgspec

from aiogw.adapters import _base as base
from aiogw.adapters import openai
from aiogw.errors import InvalidRequest, UpstreamError
from aiogw.types import (
    CHAT_REQUEST_FIELDS,
    AssistantMessage,
    AudioPart,
    ContentPart,
    DeveloperMessage,
    EmbeddingRequest,
    FilePart,
    FunctionMessage,
    ImagePart,
    NamedToolChoice,
    ParsedChat,
    RefusalPart,
    SystemMessage,
    TextPart,
    ToolMessage,
    UserMessage,
)

NAME = "mistral"

# Mistral's ChatCompletionRequest fields (SDK, mid-2026; docs/providers.md §6.1); nothing else
# may be sent. `messages`, `tools`, `tool_choice` and `response_format` are rebuilt from the
# canonical request so no unknown nested key slips through either.
REQUEST_FIELDS = frozenset({
    "model", "messages", "temperature", "top_p", "max_tokens", "stream", "stop", "random_seed", "metadata",
    "response_format", "tools", "tool_choice", "presence_penalty", "frequency_penalty", "n", "prediction",
    "parallel_tool_calls", "reasoning_effort", "prompt_mode", "guardrails", "prompt_cache_key", "safe_prompt",
})  # fmt: skip
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

PARAMS = base.ParamMap(
    reject={
        "top_k": "no top_k sampling",
        "logprobs": "no log probabilities",
        "top_logprobs": "no log probabilities",
        "logit_bias": "no token biasing",
    },
    drop={"user": "not in Mistral's schema (extra fields are refused)"},
    translated=frozenset(
        {
            "temperature",
            "top_p",
            "n",
            "max_tokens",
            "max_completion_tokens",
            "stop",
            "seed",
            "presence_penalty",
            "frequency_penalty",
            "tools",
            "tool_choice",
            "parallel_tool_calls",
            "response_format",
            "reasoning_effort",
        }
    ),
)

# Finish reasons beyond OpenAI's: `model_length` is in the shared FINISH table (-> length);
# `error` means generation failed (§6.2) and takes the error path.
FAILED_FINISH = frozenset({"error"})


def tool_id(openai_id: str) -> str:
    """Mistral accepts exactly 9 [a-zA-Z0-9] ("Tool call id was call_abc123 but must be a-z,
    A-Z, 0-9, with a length of 9"); other ids map to 9 base62 digits of their hash, the same
    on the assistant's call and on the tool's answer."""
    if len(openai_id) == 9 and openai_id.isalnum() and openai_id.isascii():
        return openai_id
    n = int.from_bytes(hashlib.sha256(openai_id.encode()).digest()[:8], "big")
    out = []
    for _ in range(9):
        n, r = divmod(n, 62)
        out.append(_BASE62[r])
    return "".join(out)


def _part(part: ContentPart, where: str) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if isinstance(part, ImagePart):  # Mistral's ImageURLChunk takes OpenAI's {url, detail}
        return {"type": "image_url", "image_url": msgspec.to_builtins(part.image_url)}
    if isinstance(part, RefusalPart):  # a replayed refusal is what the assistant said
        return {"type": "text", "text": part.refusal}
    kind = "audio" if isinstance(part, AudioPart) else "file" if isinstance(part, FilePart) else "this"
    raise InvalidRequest(
        f"'{where}': Mistral chat takes text and image parts, not {kind} parts.",
        code="unsupported_parameter",
        param=where,
    )


def _content(content: str | list[ContentPart] | None, where: str) -> str | list[dict[str, Any]] | None:
    if content is None or isinstance(content, str):
        return content
    return [_part(p, where) for p in content]


def _messages(p: ParsedChat) -> list[dict[str, Any]]:
    """§6.1 clean-up: `developer` -> `system`; `name` only on tool messages (filled from the
    call it answers); output-only fields of replayed assistant turns (`reasoning_content`,
    `refusal`, `audio`…) dropped; tool-call ids rewritten to Mistral's form."""
    names: dict[str, str] = {}  # tool-call id -> function name, for the tool messages' `name`
    out: list[dict[str, Any]] = []
    for i, m in enumerate(p.req.messages):
        where = f"messages[{i}]"
        if isinstance(m, SystemMessage | DeveloperMessage):
            out.append({"role": "system", "content": _content(m.content, where)})
        elif isinstance(m, UserMessage):
            out.append({"role": "user", "content": _content(m.content, where)})
        elif isinstance(m, AssistantMessage):
            msg: dict[str, Any] = {"role": "assistant", "content": _content(m.content, where)}
            if m.tool_calls:
                msg["tool_calls"] = []
                for tc in m.tool_calls:
                    names[tc.id] = tc.function.name
                    msg["tool_calls"].append(
                        {"id": tool_id(tc.id), "type": "function",
                         "function": {"name": tc.function.name, "arguments": tc.function.arguments}}
                    )  # fmt: skip
            if msg["content"] is None and not m.tool_calls and isinstance(m.refusal, str):
                msg["content"] = m.refusal
            out.append(msg)
        elif isinstance(m, ToolMessage):
            tool: dict[str, Any] = {
                "role": "tool",
                "content": _content(m.content, where),
                "tool_call_id": tool_id(m.tool_call_id),
            }
            if m.tool_call_id in names:
                tool["name"] = names[m.tool_call_id]
            out.append(tool)
        elif isinstance(m, FunctionMessage):
            raise InvalidRequest(
                f"'{where}': Mistral has no legacy 'function' role; send a 'tool' message answering a tool call.",
                code="unsupported_parameter",
                param=where,
            )
    if out and out[-1]["role"] == "assistant" and "tool_calls" not in out[-1]:
        out[-1]["prefix"] = True  # Mistral continues a trailing assistant message only as a prefix
    return out


def prepare(p: ParsedChat, target: base.Target, body: dict[str, object]) -> tuple[str, ...]:
    req = p.req
    if "seed" in body:
        body["random_seed"] = body.pop("seed")
    if "max_completion_tokens" in body:
        body["max_tokens"] = body.pop("max_completion_tokens")
    body["messages"] = _messages(p)
    # Rebuilt from the canonical structs: no unknown nested key reaches the strict schema.
    if req.tools:
        body["tools"] = [{"type": "function", "function": msgspec.to_builtins(t.function)} for t in req.tools]
    if isinstance(req.tool_choice, NamedToolChoice):
        body["tool_choice"] = {"type": "function", "function": {"name": req.tool_choice.function.name}}
    if req.response_format:
        body["response_format"] = msgspec.to_builtins(req.response_format)
    unknown = sorted(k for k in body if k not in REQUEST_FIELDS)
    for k in unknown:
        del body[k]
    extras = [k for k in unknown if k not in CHAT_REQUEST_FIELDS]
    return (f"dropped {', '.join(repr(k) for k in extras)} for mistral: not in its request schema",) if extras else ()


class StreamDecoder(openai.StreamDecoder):
    """The shared decoder; `finish_reason: "error"` fails the stream."""

    __slots__ = ()
    failed_finish = FAILED_FINISH


def _fix_reply(data: dict[str, object]) -> None:
    """Usage may carry `prompt_audio_seconds` (§6.2): not an OpenAI field."""
    usage = data.get("usage")
    if isinstance(usage, dict):
        usage.pop("prompt_audio_seconds", None)


decode_response = openai.dialect_response(_fix_reply, failed_finish=FAILED_FINISH)


# --- errors -----------------------------------------------------------------------------


class _Loc(msgspec.Struct):
    loc: list[str | int] = []
    msg: str = ""


class _MessageDetail(msgspec.Struct):
    detail: list[_Loc] | str = ""


class _ErrorBody(msgspec.Struct):
    """The shapes §6 lists: `{"object":"error","message":"…"|{"detail":[…]},"type","code"}`,
    `{"object":"Error","detail":[…],"message":[…],"code":3001}`, FastAPI's `{"detail":[…]}`,
    and OpenAI's `{"error":{…}}` (read by the shared decoder)."""

    message: str | _MessageDetail | list[Any] | None = None
    detail: list[_Loc] | str | None = None
    type: str | None = None
    code: str | int | None = None
    param: str | None = None


_decode_error_body = msgspec.json.Decoder(_ErrorBody).decode


def _explain(detail: list[_Loc]) -> str:
    """Pydantic validation entries as one line: `messages.0.user.name: Extra inputs are not permitted`."""
    return "; ".join(f"{'.'.join(str(x) for x in d.loc if x != 'body')}: {d.msg}" for d in detail[:5])


def decode_error(status: int, headers: Mapping[str, str], body: bytes, target: base.Target) -> UpstreamError:
    try:
        eb = _decode_error_body(body)
    except msgspec.MsgspecError:
        return openai.decode_error(status, headers, body, target)
    detail = eb.detail if isinstance(eb.detail, list) else None
    if isinstance(eb.message, _MessageDetail) and isinstance(eb.message.detail, list):
        detail = eb.message.detail
    if detail:
        message = _explain(detail)
    elif isinstance(eb.message, str) and eb.message:
        message = eb.message
    elif isinstance(eb.detail, str) and eb.detail:
        message = eb.detail
    else:
        return openai.decode_error(status, headers, body, target)
    code = eb.code if isinstance(eb.code, str) else None
    return base.status_error(
        target, status, headers, message=message, upstream_type=eb.type, upstream_code=code, param=eb.param
    )


# --- embeddings ----------------------------------------------------------------------------

# Models whose embedding size is fixed (docs.mistral.ai, embeddings): asking them for other
# dimensions is refused here; `codestral-embed` and newer models take `output_dimension`.
FIXED_DIMENSIONS = {"mistral-embed": 1024}


def build_embeddings_call(req: EmbeddingRequest, target: base.Target) -> base.Call:
    """Mistral's EmbeddingRequest (§10.3): `input`, `output_dimension`, `encoding_format`;
    `user` is not in its schema and is dropped (an attribution hint)."""
    if not isinstance(req.input, str) and not all(isinstance(x, str) for x in req.input):
        raise InvalidRequest("Mistral embeds text only, not token arrays.", code="unsupported_parameter", param="input")
    body: dict[str, Any] = {"model": target.model, "input": req.input}
    if isinstance(req.dimensions, int):
        fixed = FIXED_DIMENSIONS.get(target.model.removesuffix("-latest"))
        if fixed is None:
            body["output_dimension"] = req.dimensions
        elif req.dimensions != fixed:
            raise InvalidRequest(
                f"'dimensions' is not supported by {target.model}: its embeddings always have {fixed} dimensions.",
                code="unsupported_parameter",
                param="dimensions",
            )
    if isinstance(req.encoding_format, str):
        body["encoding_format"] = req.encoding_format
    return base.Call(
        url=f"{target.base_url}/embeddings", headers=base.bearer_headers(target), body=msgspec.json.encode(body)
    )


# --- rate limits ---------------------------------------------------------------------------


def rate_limits(headers: Mapping[str, str]) -> base.RateLimitInfo | None:
    """Per-minute windows: `x-ratelimit-{limit,remaining}-{req,tokens}-minute` (§6.3); no
    reset is given, so the window length is the bound."""
    if "x-ratelimit-remaining-req-minute" not in headers and "x-ratelimit-remaining-tokens-minute" not in headers:
        return None
    return base.RateLimitInfo(
        limit_requests=base.header_int(headers.get("x-ratelimit-limit-req-minute")),
        remaining_requests=base.header_int(headers.get("x-ratelimit-remaining-req-minute")),
        reset_requests_s=60.0,
        limit_tokens=base.header_int(headers.get("x-ratelimit-limit-tokens-minute")),
        remaining_tokens=base.header_int(headers.get("x-ratelimit-remaining-tokens-minute")),
        reset_tokens_s=60.0,
    )


ADAPTER = openai.openai_like(
    NAME,
    "https://api.mistral.ai/v1",
    params=PARAMS,
    prepare=prepare,
    ask_usage=False,  # usage always comes on the last chunk, and `stream_options` is a 422
    response=decode_response,
    decoder=StreamDecoder,
    error=decode_error,
    embeddings=build_embeddings_call,
    limits=rate_limits,
)
