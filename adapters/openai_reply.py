"""OpenAI Chat Completions: reading what comes back (whole answers, errors, stream chunks,
rate-limit headers) for OpenAI and every provider that speaks its wire format, each
dialect's differences passed in by its adapter. The request side is `openai.py`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
import orjson

from aiogw.adapters import _base as base
from aiogw.errors import UpstreamError, UpstreamStatusError
from aiogw.types import (
    UNSET,
    CompletionUsage,
    Delta,
    FinishReason,
    Reply,
    UnsetType,
)

_encode = msgspec.json.Encoder().encode


class _CallView(msgspec.Struct):
    type: str | UnsetType = UNSET


class _MessageView(msgspec.Struct):
    # Raw: only whether the field is there matters, not its value.
    role: str | UnsetType = UNSET
    content: msgspec.Raw | UnsetType = UNSET
    refusal: msgspec.Raw | UnsetType = UNSET
    tool_calls: list[_CallView] | None = None


class _FinishView(msgspec.Struct):
    finish_reason: str | None = None
    index: int | UnsetType = UNSET
    logprobs: msgspec.Raw | UnsetType = UNSET
    message: _MessageView | None = None


class _ReplyView(msgspec.Struct):
    """What the gateway reads from a `chat.completion`, and whether the fields OpenAI's
    schema requires are all there: the rest is forwarded unread."""

    choices: list[_FinishView]
    model: str = ""
    usage: CompletionUsage | None = None
    id: str | UnsetType = UNSET
    object: str | UnsetType = UNSET
    created: int | UnsetType = UNSET


_decode_reply = msgspec.json.Decoder(_ReplyView).decode


def _has_required_fields(view: _ReplyView) -> bool:
    if view.id is UNSET or view.object != "chat.completion" or view.created is UNSET or not view.model:
        return False
    for c in view.choices:
        m = c.message
        if c.index is UNSET or c.logprobs is UNSET or m is None or m.role is UNSET:
            return False
        if m.content is UNSET or m.refusal is UNSET or any(t.type is UNSET for t in m.tool_calls or ()):
            return False
    return True


def fill_required_fields(data: dict[str, Any], target: base.Target) -> None:
    """Add what OpenAI's schema requires and an OpenAI-like server left out (in place):
    Mistral sends no `logprobs`, DeepSeek and Qwen no `refusal`, some local servers no
    `object`, `created` or tool-call `type`. Clients typed from the official SDKs reject or
    misread answers without them."""
    if not data.get("id"):
        data["id"] = base.new_completion_id()
    data["object"] = "chat.completion"
    if not isinstance(data.get("created"), int):
        data["created"] = int(time.time())
    if not data.get("model"):
        data["model"] = target.model
    for i, choice in enumerate(data["choices"]):
        if not isinstance(choice, dict):
            continue
        choice.setdefault("index", i)
        choice.setdefault("logprobs", None)
        msg = choice.get("message")
        if not isinstance(msg, dict):
            msg = choice["message"] = {}
        msg.setdefault("role", "assistant")
        msg.setdefault("content", None)
        msg.setdefault("refusal", None)
        for tc in msg.get("tool_calls") or ():
            if isinstance(tc, dict):
                tc.setdefault("type", "function")


def decode_response(body: bytes, target: base.Target) -> Reply:
    try:
        view = _decode_reply(body)
    except msgspec.DecodeError:
        raise base.protocol_error(target, "chat.completion body is not valid JSON") from None
    except msgspec.ValidationError as exc:
        err = _error_in_body(body, target)
        if err is not None:
            raise err from None
        raise base.protocol_error(target, f"not a chat.completion: {exc}") from None
    if not _has_required_fields(view):  # OpenAI's own answers never get here
        data = orjson.loads(body)
        fill_required_fields(data, target)
        body = orjson.dumps(data)
    finish = tuple(c.finish_reason for c in view.choices if c.finish_reason)
    return Reply(body=body, usage=view.usage, model=view.model or target.model, finish_reasons=finish)


# A dialect's own change to a parsed `chat.completion` (in place), after the shared ones.
ReplyFix = Callable[[dict[str, object]], None]


def dialect_response(
    fix: ReplyFix | None = None, *, failed_finish: frozenset[str] = frozenset()
) -> Callable[[bytes, base.Target], Reply]:
    """decode_response for an OpenAI-like provider whose replies stray from OpenAI's shape:
    finish reasons outside OpenAI's set are mapped (FINISH; one in `failed_finish` fails the
    attempt, docs/providers.md §1.3), typed content-chunk lists become `content` +
    `reasoning_content`, tool calls lose the stray `index`; `fix` does the rest. The body is
    re-encoded, which also drops blank lines a queued reply starts with (DeepSeek §7.3)."""

    def decode(body: bytes, target: base.Target) -> Reply:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise base.protocol_error(target, "chat.completion body is not valid JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            return decode_response(body, target)  # an error object or junk: reported there
        for choice in data["choices"]:
            reason = choice.get("finish_reason")
            if reason in failed_finish:
                raise base.status_error(
                    target, 500, {}, message=f"the provider ended the answer with finish_reason '{reason}'",
                    upstream_type=None, upstream_code=None,
                )  # fmt: skip
            if isinstance(reason, str) and reason:
                choice["finish_reason"] = FINISH.get(reason, "stop")
            msg = choice.get("message") or {}
            if isinstance(msg.get("content"), list):
                text, thought = chunk_texts(msgspec.convert(msg["content"], list[_ContentChunk]))
                msg["content"] = text or None
                if thought:
                    msg["reasoning_content"] = (msg.get("reasoning_content") or "") + thought
            for tc in msg.get("tool_calls") or ():
                tc.pop("index", None)
        if fix is not None:
            fix(data)
        fill_required_fields(data, target)
        return decode_response(orjson.dumps(data), target)

    return decode


# --- errors -----------------------------------------------------------------------------


class _ErrorDetail(msgspec.Struct):
    message: str = ""
    type: str | None = None
    param: str | None = None
    code: str | int | None = None


class _ErrorBody(msgspec.Struct):
    """OpenAI's `{"error": {...}}`, or vLLM/Mistral's flat `{"object": "error", ...}`."""

    error: _ErrorDetail | str | None = None
    object: str | None = None
    message: str | None = None
    type: str | None = None
    detail: msgspec.Raw | None = None  # FastAPI-style 422 bodies


_decode_error_body = msgspec.json.Decoder(_ErrorBody).decode


def _detail(body: bytes) -> _ErrorDetail:
    try:
        eb = _decode_error_body(body)
    except msgspec.MsgspecError:
        text = body[:300].decode("utf-8", "replace").strip()
        return _ErrorDetail(message=text)
    if isinstance(eb.error, _ErrorDetail):
        return eb.error
    if isinstance(eb.error, str):
        return _ErrorDetail(message=eb.error)
    if eb.message:
        return _ErrorDetail(message=eb.message, type=eb.type)
    if eb.detail is not None:
        return _ErrorDetail(message=bytes(eb.detail)[:300].decode("utf-8", "replace"))
    return _ErrorDetail()


def decode_error(status: int, headers: Mapping[str, str], body: bytes, target: base.Target) -> UpstreamError:
    d = _detail(body)
    code = str(d.code) if d.code is not None and not isinstance(d.code, int) else None
    return base.status_error(
        target, status, headers, message=d.message, upstream_type=d.type, upstream_code=code, param=d.param
    )


def _error_in_body(body: bytes, target: base.Target) -> UpstreamStatusError | None:
    """Some compatible servers answer 200 with an error object instead of a completion."""
    d = _detail(body)
    if not d.message:
        return None
    return base.status_error(target, 500, {}, message=d.message, upstream_type=d.type, upstream_code=None)


# --- streaming --------------------------------------------------------------------------


class _FunctionView(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolCallView(msgspec.Struct):
    index: int | None = None
    id: str | None = None
    function: _FunctionView | None = None


class _TextChunk(msgspec.Struct):
    text: str = ""


class _ContentChunk(msgspec.Struct):
    """Mistral's reasoning models stream content as typed chunks instead of a string."""

    type: str = ""
    text: str | None = None
    thinking: list[_TextChunk] | str | None = None


class _DeltaView(msgspec.Struct):
    role: str | None = None
    content: str | list[_ContentChunk] | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None  # newer vLLM / OpenRouter spelling
    refusal: str | None = None
    tool_calls: list[_ToolCallView] | None = None


class _ChoiceView(msgspec.Struct):
    index: int = 0
    delta: _DeltaView | None = None
    finish_reason: str | None = None
    # Not `Raw | None`: msgspec then accepts only null, and a chunk with logprobs fails.
    logprobs: msgspec.Raw = msgspec.Raw(b"null")


class _GroqExtras(msgspec.Struct):
    usage: CompletionUsage | None = None


class _ChunkView(msgspec.Struct):
    choices: list[_ChoiceView] | None = None
    usage: CompletionUsage | None = None
    x_groq: _GroqExtras | None = None  # older Groq streams put usage here
    error: _ErrorDetail | str | None = None
    object: str | None = None
    message: str | None = None


_decode_chunk = msgspec.json.Decoder(_ChunkView).decode


def chunk_texts(chunks: list[_ContentChunk]) -> tuple[str, str]:
    """(text, thinking) of a typed content-chunk list."""
    text, thought = [], []
    for c in chunks:
        if c.type == "text" and c.text:
            text.append(c.text)
        elif c.type == "thinking" and c.thinking:
            thought.append(c.thinking if isinstance(c.thinking, str) else "".join(t.text for t in c.thinking))
    return "".join(text), "".join(thought)


FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "eos": "stop",  # Together
    "length": "length",
    "model_length": "length",  # Mistral
    "tool_calls": "tool_calls",
    "function_call": "function_call",
    "content_filter": "content_filter",
    "insufficient_system_resource": "length",  # DeepSeek: output was cut
}


class StreamDecoder:
    """OpenAI-shaped chunks -> canonical deltas, normalising what compatible servers get
    wrong: restated tool-call ids and names, sparse tool indices, `finish_reason: ""`,
    usage wherever it appears (docs/providers.md §9)."""

    __slots__ = ("_target", "_tools", "complete")

    # Finish reasons that mean the provider failed mid-answer (docs/providers.md §1.3 error
    # path): raised as an upstream error, so the relay fails over or ends with an error event.
    failed_finish: frozenset[str] = frozenset()

    def __init__(self, target: base.Target) -> None:
        self._target = target
        # (choice, upstream tool index) -> our dense index, per choice in order of appearance
        self._tools: dict[tuple[int, int], int] = {}
        self.complete = False

    def feed(self, event: str, data: bytes) -> list[Delta]:
        if data == b"[DONE]":
            self.complete = True
            return []
        try:
            chunk = _decode_chunk(data)
        except msgspec.MsgspecError:
            raise base.protocol_error(self._target, "stream chunk is not valid JSON") from None
        if chunk.error is not None or chunk.object == "error":
            err = (
                chunk.error
                if isinstance(chunk.error, _ErrorDetail)
                else _ErrorDetail(message=chunk.message or str(chunk.error or ""))
            )
            raise base.status_error(
                self._target, 500, {}, message=err.message, upstream_type=err.type, upstream_code=None
            )
        out: list[Delta] = []
        for ch in chunk.choices or ():
            d = ch.delta
            if d is not None:
                if isinstance(d.content, list):
                    text, thought = chunk_texts(d.content)
                    d.content, d.reasoning_content = text or None, (d.reasoning_content or "") + thought or None
                if d.role and not d.content and not d.tool_calls:
                    out.append(Delta(choice=ch.index, content=""))  # the role chunk, kept as its own
                if d.reasoning_content or d.reasoning:
                    out.append(Delta(choice=ch.index, reasoning=d.reasoning_content or d.reasoning))
                if d.content:
                    out.append(Delta(choice=ch.index, content=d.content, logprobs=ch.logprobs))
                if d.refusal:
                    out.append(Delta(choice=ch.index, refusal=d.refusal))
                for tc in d.tool_calls or ():
                    out.extend(self._tool(ch.index, tc))
            if ch.finish_reason:  # "" is treated as null
                if ch.finish_reason in self.failed_finish:
                    raise base.status_error(
                        self._target, 500, {}, upstream_type=None, upstream_code=None,
                        message=f"the provider ended the stream with finish_reason '{ch.finish_reason}'",
                    )  # fmt: skip
                out.append(Delta(choice=ch.index, finish_reason=FINISH.get(ch.finish_reason, "stop")))
                self.complete = True  # EOF after a finish reason is a normal end (§9)
        usage = chunk.usage or (chunk.x_groq.usage if chunk.x_groq else None)
        if usage is not None:
            out.append(Delta(usage=usage))
        return out

    def _tool(self, choice: int, tc: _ToolCallView) -> list[Delta]:
        upstream_index = tc.index if tc.index is not None else 0
        key = (choice, upstream_index)
        fn = tc.function or _FunctionView()
        out: list[Delta] = []
        index = self._tools.get(key)
        if index is None:
            if not (tc.id or fn.name):
                return []  # an argument fragment for a call that never started: nothing to attach
            index = sum(1 for c, _ in self._tools if c == choice)
            self._tools[key] = index
            out.append(Delta.tool_start(index, tc.id or f"call_{choice}_{index}", fn.name or "", choice=choice))
        if fn.arguments:
            out.append(Delta.tool_args_fragment(index, fn.arguments, choice=choice))
        return out


# --- rate limits --------------------------------------------------------------------------

_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def duration_s(text: str | None) -> float | None:
    """OpenAI's reset headers are Go durations ("6m0s", "1.5s", "20ms"); bare numbers are seconds."""
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    parts = _GO_DURATION.findall(text)
    if not parts:
        return None
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def rate_limits(headers: Mapping[str, str]) -> base.RateLimitInfo | None:
    """`x-ratelimit-{limit,remaining,reset}-{requests,tokens}` (OpenAI, DeepSeek, Groq…)."""
    if "x-ratelimit-remaining-requests" not in headers and "x-ratelimit-remaining-tokens" not in headers:
        return None
    return base.RateLimitInfo(
        limit_requests=base.header_int(headers.get("x-ratelimit-limit-requests")),
        remaining_requests=base.header_int(headers.get("x-ratelimit-remaining-requests")),
        reset_requests_s=duration_s(headers.get("x-ratelimit-reset-requests")),
        limit_tokens=base.header_int(headers.get("x-ratelimit-limit-tokens")),
        remaining_tokens=base.header_int(headers.get("x-ratelimit-remaining-tokens")),
        reset_tokens_s=duration_s(headers.get("x-ratelimit-reset-tokens")),
    )
