"""Upstream SSE events -> bytes for the client, in one of two ways chosen once per attempt:

- `PassthroughRelay` (the fast path): the upstream already speaks OpenAI chunks, so their
  bytes are forwarded as they are; only events that may carry usage, an end marker or an
  error are looked at, by the adapter's own decoder.
- `TranslatingRelay`: native events -> the adapter's decoder -> canonical deltas ->
  `ChunkEncoder`.

An error event (or an unreadable chunk) stops a relay: `feed` returns the output of the
events before it and keeps the error in `failed`, so content already decoded is not lost;
`finish()` raises `UpstreamProtocolError` when the upstream ended without its normal end.
"""

from __future__ import annotations

from typing import Protocol

import msgspec

from aiogw.errors import UpstreamError, UpstreamProtocolError
from aiogw.streaming.encode import DONE, ChunkEncoder, UsageExtra, with_usage_extra
from aiogw.streaming.sse import SSEEvent
from aiogw.types import CompletionUsage, Delta, FinishReason


class Decoder(Protocol):
    """The adapter's stream decoder, seen structurally (streaming never imports adapters)."""

    complete: bool

    def feed(self, event: str, data: bytes) -> list[Delta]: ...


class Relay(Protocol):
    usage: CompletionUsage | None
    failed: UpstreamError | None

    def feed(self, events: list[SSEEvent]) -> bytes: ...
    def finish(self) -> bytes: ...
    def finish_reasons(self) -> list[FinishReason]: ...


# Syntax-only JSON check (builds no objects, ~0.2 us per chunk): a malformed upstream chunk
# becomes an error event instead of reaching the client's JSON parser.
_check_json = msgspec.json.Decoder(msgspec.Raw).decode


def _truncated(target: str) -> UpstreamProtocolError:
    return UpstreamProtocolError("stream ended before its end marker (truncated)", target=target)


class PassthroughRelay:
    __slots__ = ("_decoder", "_finish", "_include_usage", "_target", "_usage_extra", "failed", "usage")

    def __init__(
        self, decoder: Decoder, *, include_usage: bool, target: str, usage_extra: UsageExtra | None = None
    ) -> None:
        self._decoder = decoder
        self._usage_extra = usage_extra
        self._include_usage = include_usage
        self._target = target
        self._finish: list[FinishReason] = []
        self.usage: CompletionUsage | None = None
        self.failed: UpstreamError | None = None

    def feed(self, events: list[SSEEvent]) -> bytes:
        out = bytearray()
        try:
            self._feed(events, out)
        except UpstreamError as exc:
            self.failed = exc
        return bytes(out)

    def _feed(self, events: list[SSEEvent], out: bytearray) -> None:
        for ev in events:
            data = ev.data
            if data == b"[DONE]":
                self._decoder.complete = True
                continue  # written by finish(), after anything we add
            # Cheap byte tests pick the few events worth decoding: usage, errors, finishes.
            # `finish_reason` and `usage` close an OpenAI chunk, so a reverse search finds them
            # at once; an error object names itself in its first bytes (`{"error":` or vLLM's
            # `{"object":"error"`). Scanning every chunk forwards three times cost 0.7 µs.
            u = data.rfind(b'"usage":')
            has_usage = u >= 0 and data[u + 8 : u + 9] == b"{"
            f = data.rfind(b'"finish_reason":')
            finishing = f >= 0 and data[f + 16 : f + 17] == b'"'
            if has_usage or finishing or b"error" in data[:40]:
                for d in self._decoder.feed(ev.event, data):
                    if d.usage is not None:
                        self.usage = d.usage
                    elif d.finish_reason is not None:
                        self._finish.append(d.finish_reason)
            else:
                try:
                    _check_json(data)
                except msgspec.DecodeError:
                    raise UpstreamProtocolError("stream chunk is not valid JSON", target=self._target) from None
            if not self._include_usage:
                # We asked upstream for usage; a client that did not must not see it.
                if has_usage and b'"choices":[]' in data:
                    continue
                if u > 0 and data[u - 1 : u] == b"," and data[u + 8 : u + 12] == b"null":
                    data = data[: u - 1] + data[u + 12 :]
            elif has_usage and self.usage is not None and self._usage_extra is not None:
                fields = self._usage_extra(self.usage)
                if fields:
                    data = data.replace(b'"usage":{', b'"usage":{' + fields + b",", 1)
            out += b"data: "
            out += data
            out += b"\n\n"

    def finish(self) -> bytes:
        if not self._decoder.complete:
            raise _truncated(self._target)
        return DONE

    def finish_reasons(self) -> list[FinishReason]:
        return self._finish


class TranslatingRelay:
    __slots__ = ("_decoder", "_encoder", "_target", "failed")

    def __init__(self, decoder: Decoder, encoder: ChunkEncoder, *, target: str) -> None:
        self._decoder = decoder
        self._encoder = encoder
        self._target = target
        self.failed: UpstreamError | None = None

    @property
    def usage(self) -> CompletionUsage | None:
        return self._encoder.usage

    def feed(self, events: list[SSEEvent]) -> bytes:
        deltas: list[Delta] = []
        try:
            for ev in events:
                deltas += self._decoder.feed(ev.event, ev.data)
        except UpstreamError as exc:
            self.failed = exc
        return self._encoder.feed(deltas) if deltas else b""

    def finish(self) -> bytes:
        if not self._decoder.complete:
            raise _truncated(self._target)
        return self._encoder.close()

    def finish_reasons(self) -> list[FinishReason]:
        return list(self._encoder.finish_reasons.values())
