"""Canonical deltas -> OpenAI `chat.completion.chunk` SSE bytes (docs/providers.md §3.2, §2.5).

The encoder guarantees what the official SDK's delta accumulator relies on: the role in
each choice's first chunk, tool-call `id`/`name` exactly once with a dense `index`, one
finishing chunk per choice (`tool_calls` when the choice called tools and upstream said
`stop`), the usage chunk only when the client asked for it, and `data: [DONE]` last.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import orjson

from aiogw.errors import GatewayError
from aiogw.types import (
    ChoiceDelta,
    CompletionUsage,
    Delta,
    FinishReason,
    ToolCallDelta,
    ToolCallDeltaFunction,
)

DONE = b"data: [DONE]\n\n"
CHARS_PER_TOKEN = 4  # the usual rule of thumb for English text; only used for estimates


def estimate_tokens(chars: int) -> int:
    return max(1, -(-chars // CHARS_PER_TOKEN)) if chars else 0


_encode_into = msgspec.json.Encoder().encode_into
_encode = msgspec.json.Encoder().encode


# Extra fields for the usage object of the final chunk (the gateway adds the cost):
# usage -> b'"name":value' (or b"" for nothing).
UsageExtra = Callable[[CompletionUsage], bytes]


def estimated_usage(prompt_estimate: int, out_chars: int) -> CompletionUsage:
    """The usage of a stream whose provider reported none: the prompt's estimate and the
    answer's characters as tokens, marked `estimated` (never used to learn token ratios)."""
    out = estimate_tokens(out_chars)
    return CompletionUsage(
        prompt_tokens=prompt_estimate, completion_tokens=out, total_tokens=prompt_estimate + out, estimated=True
    )


def with_usage_extra(usage_json: bytes, usage: CompletionUsage, extra: UsageExtra | None) -> bytes:
    """`{"prompt_tokens":…}` -> `{"cost_usd":…,"prompt_tokens":…}`."""
    if extra is None:
        return usage_json
    return with_usage_fields(usage_json, extra(usage))


def with_usage_fields(usage_json: bytes, fields: bytes) -> bytes:
    """`{…}` with `fields` (b'"name":value,…') first; `{}` stays valid JSON."""
    if not fields:
        return usage_json
    return b"{" + fields + (b"," + usage_json[1:] if len(usage_json) > 2 else b"}")


def sse_data(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


def error_event(err: GatewayError) -> bytes:
    """The OpenAI-shaped error event that ends a failed stream, then the terminator."""
    return sse_data(err.to_openai()) + DONE


class ChunkEncoder:
    """One per streamed response. `feed` and `close` return ready-to-write SSE bytes."""

    __slots__ = (
        "_finished",
        "_include_usage",
        "_out_chars",
        "_prefix",
        "_prompt_estimate",
        "_started",
        "_tools_used",
        "_usage_extra",
        "finish_reasons",
        "usage",
    )

    def __init__(
        self,
        *,
        completion_id: str,
        created: int,
        model: str,
        include_usage: bool,
        prompt_estimate: int = 0,
        usage_extra: UsageExtra | None = None,
    ) -> None:
        # Everything before the choice index is the same in every chunk of the stream.
        head = orjson.dumps(
            {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model}
        )
        self._prefix = head[:-1] + b',"choices":[{"index":'
        self._include_usage = include_usage
        self._usage_extra = usage_extra
        self._started: set[int] = set()
        self._tools_used: set[int] = set()
        self._finished: set[int] = set()
        self.finish_reasons: dict[int, FinishReason] = {}
        self.usage: CompletionUsage | None = None
        self._prompt_estimate = prompt_estimate
        self._out_chars = 0  # for the estimate when the provider reports no usage

    def _chunk(self, buf: bytearray, choice: int, delta: ChoiceDelta, finish: bytes, logprobs: bytes) -> None:
        if choice not in self._started:
            self._started.add(choice)
            delta.role = "assistant"
            if isinstance(delta.content, msgspec.UnsetType):
                delta.content = None if (delta.tool_calls or delta.refusal) else ""
            if isinstance(delta.refusal, msgspec.UnsetType):
                delta.refusal = None  # OpenAI's first chunk: role, content and refusal
        buf += b"data: "
        buf += self._prefix
        buf += str(choice).encode()
        buf += b',"delta":'
        _encode_into(delta, buf, -1)
        buf += b',"logprobs":'
        buf += logprobs
        buf += b',"finish_reason":'
        buf += finish
        buf += b"}]}\n\n"

    def feed(self, deltas: list[Delta]) -> bytes:
        buf = bytearray()
        for d in deltas:
            if d.usage is not None:
                self.usage = d.usage
                continue
            c = d.choice
            if c in self._finished:
                continue  # anything after a choice's finish would confuse clients
            if d.finish_reason is not None:
                reason = d.finish_reason
                if reason == "stop" and c in self._tools_used:
                    reason = "tool_calls"  # Gemini, Ollama, vLLM say stop after a tool call
                self._finish(buf, c, reason)
                continue
            if d.tool_index is not None:
                self._tools_used.add(c)
                fn = ToolCallDeltaFunction(arguments=d.tool_args or "")
                self._out_chars += len(d.tool_args or "")
                tc = ToolCallDelta(index=d.tool_index, function=fn)
                if d.tool_id is not None:
                    tc.id, tc.type, fn.name = d.tool_id, "function", d.tool_name or ""
                self._chunk(buf, c, ChoiceDelta(tool_calls=[tc]), b"null", b"null")
            elif d.content is not None:
                self._out_chars += len(d.content)
                lp = bytes(d.logprobs) if d.logprobs is not None else b"null"
                self._chunk(buf, c, ChoiceDelta(content=d.content), b"null", lp)
            elif d.reasoning is not None:
                self._out_chars += len(d.reasoning)
                self._chunk(buf, c, ChoiceDelta(reasoning_content=d.reasoning), b"null", b"null")
            elif d.refusal is not None:
                self._chunk(buf, c, ChoiceDelta(refusal=d.refusal), b"null", b"null")
        return bytes(buf)

    def _finish(self, buf: bytearray, choice: int, reason: FinishReason) -> None:
        self._finished.add(choice)
        self.finish_reasons[choice] = reason
        self._chunk(buf, choice, ChoiceDelta(), b'"' + reason.encode() + b'"', b"null")

    def close(self) -> bytes:
        """After a normal end: any missing finishing chunks, the usage chunk, `[DONE]`."""
        buf = bytearray()
        for c in sorted(self._started - self._finished) or ([0] if not self._finished else []):
            self._finish(buf, c, "tool_calls" if c in self._tools_used else "stop")
        if self.usage is None:  # the provider gave none: estimate, and say so
            self.usage = estimated_usage(self._prompt_estimate, self._out_chars)
        if self._include_usage:
            usage = with_usage_extra(_encode(self.usage), self.usage, self._usage_extra)
            buf += b"data: " + self._prefix[: self._prefix.rindex(b'"choices"')]
            buf += b'"choices":[],"usage":' + usage + b"}\n\n"
        buf += DONE
        return bytes(buf)
