"""Anthropic Messages API: reading what it sends back (docs/providers.md §4): the message,
its errors (also an `error` event inside a 200 stream), the rate-limit headers and the
stream events, as canonical replies and deltas. The request side is `anthropic.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec

from aiogw.adapters import _base as base
from aiogw.errors import FailureClass, UpstreamError
from aiogw.types import (
    CompletionTokensDetails,
    CompletionUsage,
    Delta,
    FinishReason,
    FunctionCall,
    PromptTokensDetails,
    Reply,
    ToolCall,
)

JSON_TOOL = "json_response"  # the forced tool that carries JSON-mode answers (see anthropic.py)

FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Error types -> failure class where the HTTP status alone would mislead (an `error` event
# inside a 200 stream has no status of its own).
ERROR_CLASS: dict[str, FailureClass] = {
    "overloaded_error": FailureClass.OVERLOADED,
    "rate_limit_error": FailureClass.RATE_LIMIT,
    "api_error": FailureClass.TRANSIENT,
    "timeout_error": FailureClass.TIMEOUT,
    "authentication_error": FailureClass.CREDENTIAL,
    "permission_error": FailureClass.CREDENTIAL,
    "billing_error": FailureClass.QUOTA,
    "not_found_error": FailureClass.MODEL_GONE,
    "invalid_request_error": FailureClass.CALLER_FAULT,
    "request_too_large": FailureClass.CALLER_FAULT,
}
_STATUS_OF_TYPE = {"overloaded_error": 529, "rate_limit_error": 429, "api_error": 500, "timeout_error": 504}


class _OutputDetails(msgspec.Struct):
    thinking_tokens: int | None = None


class _Usage(msgspec.Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    output_tokens_details: _OutputDetails | None = None  # newer responses only


class _Block(msgspec.Struct):
    type: str
    text: str | None = None
    thinking: str | None = None
    id: str | None = None
    name: str | None = None
    input: msgspec.Raw = msgspec.Raw(b"{}")


class _Message(msgspec.Struct):
    id: str = ""
    model: str = ""
    content: list[_Block] = []
    stop_reason: str | None = None
    usage: _Usage | None = None


def usage_of(u: _Usage) -> CompletionUsage:
    """Anthropic's input_tokens excludes cache reads and writes; OpenAI's prompt_tokens has them."""
    read = u.cache_read_input_tokens or 0
    written = u.cache_creation_input_tokens or 0
    prompt = (u.input_tokens or 0) + read + written
    out = u.output_tokens or 0
    usage = CompletionUsage(
        prompt_tokens=prompt,
        completion_tokens=out,
        total_tokens=prompt + out,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=read, cache_write_tokens=written),
    )
    # output_tokens includes thinking, as OpenAI's completion_tokens includes reasoning.
    thought = u.output_tokens_details.thinking_tokens if u.output_tokens_details else None
    if thought is not None:
        usage.completion_tokens_details = CompletionTokensDetails(reasoning_tokens=thought)
    return usage


_decode_message = msgspec.json.Decoder(_Message).decode


def decode_response(body: bytes, target: base.Target) -> Reply:
    try:
        msg = _decode_message(body)
    except msgspec.MsgspecError as exc:
        raise base.protocol_error(target, f"not a message: {exc}") from None
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[ToolCall] = []
    for b in msg.content:
        if b.type == "text" and b.text:
            texts.append(b.text)
        elif b.type == "thinking" and b.thinking:
            thinking.append(b.thinking)
        elif b.type == "tool_use" and b.id and b.name:
            args = bytes(b.input).decode()
            if b.name == JSON_TOOL:
                texts.append(args)  # JSON mode: the forced tool's input is the answer
            else:
                calls.append(ToolCall(id=b.id, function=FunctionCall(name=b.name, arguments=args)))
    finish = FINISH.get(msg.stop_reason or "", "stop")
    if finish == "tool_calls" and not calls:
        finish = "stop"  # JSON mode's forced tool is content to the client
    elif finish == "stop" and calls:
        finish = "tool_calls"  # docs/providers.md §1.3: a normal end after tool calls
    message = base.response_message(texts, calls, thinking)
    usage = usage_of(msg.usage) if msg.usage else None
    model = msg.model or target.model
    body_out = base.completion_body(
        model=model, message=message, finish_reason=finish, usage=usage,
        completion_id=f"chatcmpl-{msg.id}" if msg.id else None,
    )  # fmt: skip
    return Reply(body=body_out, usage=usage, model=model, finish_reasons=(finish,))


# --- errors -------------------------------------------------------------------------------


class _ErrorDetail(msgspec.Struct):
    type: str = ""
    message: str = ""


class _ErrorBody(msgspec.Struct):
    error: _ErrorDetail | None = None
    request_id: str | None = None


_decode_error = msgspec.json.Decoder(_ErrorBody).decode


def decode_error(status: int, headers: Mapping[str, str], body: bytes, target: base.Target) -> UpstreamError:
    try:
        detail = _decode_error(body).error or _ErrorDetail()
    except msgspec.MsgspecError:
        detail = _ErrorDetail(message=body[:300].decode("utf-8", "replace").strip())
    err = base.status_error(
        target,
        status,
        headers,
        message=detail.message,
        upstream_type=detail.type or None,
        upstream_code=detail.type or None,
    )
    cls = ERROR_CLASS.get(detail.type)
    if status == 200 and cls is not None:  # an error object in a 200 body
        err.failure_class = cls
    return err


def stream_error(detail: _ErrorDetail, target: base.Target) -> UpstreamError:
    """An `error` event inside a 200 stream: its type decides the class (529-like overload etc.)."""
    status = _STATUS_OF_TYPE.get(detail.type, 500)
    err = base.status_error(
        target, status, {}, message=detail.message, upstream_type=detail.type, upstream_code=detail.type
    )
    if detail.type in ERROR_CLASS:
        err.failure_class = ERROR_CLASS[detail.type]
    return err


def _ratelimit_reset_s(value: str | None) -> float | None:
    if not value:
        return None
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, (at - datetime.now(UTC)).total_seconds())


def rate_limits(headers: Mapping[str, str]) -> base.RateLimitInfo | None:
    """`anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}` (reset: RFC 3339)."""
    if (
        "anthropic-ratelimit-requests-remaining" not in headers
        and "anthropic-ratelimit-tokens-remaining" not in headers
    ):
        return None
    return base.RateLimitInfo(
        limit_requests=base.header_int(headers.get("anthropic-ratelimit-requests-limit")),
        remaining_requests=base.header_int(headers.get("anthropic-ratelimit-requests-remaining")),
        reset_requests_s=_ratelimit_reset_s(headers.get("anthropic-ratelimit-requests-reset")),
        limit_tokens=base.header_int(headers.get("anthropic-ratelimit-tokens-limit")),
        remaining_tokens=base.header_int(headers.get("anthropic-ratelimit-tokens-remaining")),
        reset_tokens_s=_ratelimit_reset_s(headers.get("anthropic-ratelimit-tokens-reset")),
    )


# --- streaming ----------------------------------------------------------------------------


class _DeltaBody(msgspec.Struct):
    type: str = ""
    text: str | None = None
    partial_json: str | None = None
    thinking: str | None = None
    stop_reason: str | None = None


class _Event(msgspec.Struct):
    type: str
    index: int = 0
    message: _Message | None = None
    content_block: _Block | None = None
    delta: _DeltaBody | None = None
    usage: _Usage | None = None
    error: _ErrorDetail | None = None


_decode_event = msgspec.json.Decoder(_Event).decode


class StreamDecoder:
    """Anthropic events -> canonical deltas (docs/providers.md §4.3.1).

    Tool indices are dense per tool_use block (a text or thinking block before a tool call
    takes a content-block index but no tool index); JSON mode's forced tool streams as
    content. Usage is cumulative, so the last values seen are the answer's."""

    __slots__ = ("_blocks", "_finish", "_target", "_tools", "_usage", "_usage_said", "complete")

    def __init__(self, target: base.Target) -> None:
        self._target = target
        # content-block index -> [kind, tool index, has a non-empty fragment been sent]
        self._blocks: dict[int, list[Any]] = {}
        self._tools = 0
        self._usage = _Usage()
        self._usage_said = False  # a message_delta gave the final usage
        self._finish: FinishReason | None = None
        self.complete = False

    def feed(self, event: str, data: bytes) -> list[Delta]:
        try:
            ev = _decode_event(data)
        except msgspec.MsgspecError:
            raise base.protocol_error(self._target, "stream event is not valid JSON") from None
        t = ev.type
        if t == "content_block_delta" and ev.delta is not None:
            d = ev.delta
            block = self._blocks.get(ev.index) or ["text", -1, False]
            if d.type == "text_delta" and d.text:
                return [Delta(content=d.text)]
            if d.type == "input_json_delta" and d.partial_json:
                block[2] = True
                if block[0] == "json":
                    return [Delta(content=d.partial_json)]
                return [Delta.tool_args_fragment(block[1], d.partial_json)]
            if d.type == "thinking_delta" and d.thinking:
                return [Delta(reasoning=d.thinking)]
            return []  # signature_delta, citations_delta, empty fragments
        if t == "content_block_start" and ev.content_block is not None:
            b = ev.content_block
            if b.type == "tool_use" and b.name == JSON_TOOL:
                self._blocks[ev.index] = ["json", -1, False]
                return []
            if b.type == "tool_use":
                index = self._tools
                self._tools += 1
                self._blocks[ev.index] = ["tool", index, False]
                return [Delta.tool_start(index, b.id or f"call_{index}", b.name or "")]
            self._blocks[ev.index] = [b.type, -1, False]
            if b.type == "text" and b.text:
                return [Delta(content=b.text)]
            return []
        if t == "content_block_stop":
            ended = self._blocks.get(ev.index)
            if ended is None or ended[2] or ended[0] not in ("tool", "json"):
                return []
            # A call without arguments streams no fragment; OpenAI clients expect "{}".
            ended[2] = True
            return [Delta(content="{}")] if ended[0] == "json" else [Delta.tool_args_fragment(ended[1], "{}")]
        if t == "message_start" and ev.message is not None:
            self._merge_usage(ev.message.usage)
            return [Delta(content="")]  # OpenAI's first chunk: the role, empty content
        if t == "message_delta":
            self._merge_usage(ev.usage)
            if ev.delta is not None and ev.delta.stop_reason:
                self._finish = FINISH.get(ev.delta.stop_reason, "stop")
            # The final usage is known here (message_delta's counts are cumulative): said at
            # this event, a pass-through adds the cost to the usage object the client reads.
            self._usage_said = True
            return [Delta(usage=usage_of(self._usage))]
        if t == "message_stop":
            self.complete = True
            finish = self._finish or "stop"
            if finish == "tool_calls" and self._tools == 0:
                finish = "stop"  # JSON mode's forced tool is content to the client
            if self._usage_said:
                return [Delta(finish_reason=finish)]
            return [Delta(finish_reason=finish), Delta(usage=usage_of(self._usage))]
        if t == "error":
            raise stream_error(ev.error or _ErrorDetail(type="api_error", message="stream error"), self._target)
        return []  # ping, unknown future events

    def _merge_usage(self, u: _Usage | None) -> None:
        """Usage in message_delta is cumulative; later values replace earlier ones."""
        if u is None:
            return
        for f in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens",
                  "output_tokens_details"):  # fmt: skip
            v = getattr(u, f)
            if v is not None:
                setattr(self._usage, f, v)
