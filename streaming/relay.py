"""Upstream SSE events -> bytes for the client, in one of two ways chosen once per attempt:

- `PassthroughRelay` (the fast path): the upstream already speaks OpenAI chunks, so their
  bytes are forwarded as they are; only events that carry usage, a finish or an error go
  through the adapter's own decoder. The contract, whatever the upstream's JSON spelling:
  the same events reach the client with the same JSON values, and the same usage, finish
  reasons and truncation verdict are recorded. Chunks whose usage the relay changes are
  re-encoded; the others keep their bytes.
- `TranslatingRelay`: native events -> the adapter's decoder -> canonical deltas -> a
  `StreamEncoder` (`ChunkEncoder`, or another API's events when the client speaks one).

An error event (or an unreadable chunk) stops a relay: `feed` returns the output of the
events before it and keeps the error in `failed`, so content already decoded is not lost;
`finish()` raises `UpstreamProtocolError` when the upstream ended without its normal end.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

import msgspec

from aiogw.errors import UpstreamError, UpstreamProtocolError
from aiogw.streaming.encode import DONE, UsageExtra, with_usage_fields
from aiogw.streaming.sse import SSEEvent, SSEParser
from aiogw.types import CompletionUsage, Delta, FinishReason


class Decoder(Protocol):
    """The adapter's stream decoder, seen structurally (streaming never imports adapters)."""

    complete: bool

    def feed(self, event: str, data: bytes) -> list[Delta]: ...


class StreamEncoder(Protocol):
    """Canonical deltas -> the client's stream bytes: `ChunkEncoder` for OpenAI chunks,
    another API's encoder (Messages, Responses events) otherwise."""

    usage: CompletionUsage | None
    finish_reasons: dict[int, FinishReason]

    def feed(self, deltas: list[Delta]) -> bytes: ...
    def close(self) -> bytes: ...


class Relay(Protocol):
    failed: UpstreamError | None

    @property
    def usage(self) -> CompletionUsage | None: ...

    def feed(self, events: list[SSEEvent]) -> bytes: ...
    def finish(self) -> bytes: ...
    def finish_reasons(self) -> list[FinishReason]: ...


def _truncated(target: str) -> UpstreamProtocolError:
    return UpstreamProtocolError("stream ended before its end marker (truncated)", target=target)


# --- the fast path's view of a chunk ------------------------------------------------------
#
# Which chunks matter is read with one msgspec decode into these views, not with byte
# patterns: JSON may be spelled with any whitespace, key order or escapes (`"usage": {`,
# `"\u0075sage"`), and a decode sees through all of them. It builds only what it reads (a
# list and a small struct per choice; `delta`, `logprobs` and the rest are syntax-checked
# and skipped), which costs less than the syntax check and the byte searches it replaces
# (python -m aiogw.bench.chunk_cost).


class _ChoicePeek(msgspec.Struct, gc=False):
    finish_reason: str | None = None


class _ChunkPeek(msgspec.Struct, gc=False):
    choices: list[_ChoicePeek] | None = None
    usage: Any = msgspec.UNSET  # UNSET: no such key; None: `"usage": null`
    error: Any = None
    object: str | None = None


_peek = msgspec.json.Decoder(_ChunkPeek).decode
_decode_any = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode
_JSON_WS = b" \t\r\n"
_COLON = re.compile(rb"[ \t\r\n]*:[ \t\r\n]*")


def _with_usage_fields(data: bytes, obj: Any, fields: bytes) -> bytes:
    """An event's JSON (`data`, decoded: `obj`) re-encoded with the gateway's `fields` first
    in its `usage` object; `data` as it came when there is nothing to add or no such object."""
    usage = obj.get("usage") if isinstance(obj, dict) else None
    if not fields or not isinstance(usage, dict):
        return data
    obj["usage"] = msgspec.Raw(with_usage_fields(_encode(usage), fields))
    return _encode(obj)


def _without_usage_null(data: bytes, u: int) -> bytes | None:
    """`data` without its `"usage": null` member, cut out by bytes (it is on every chunk of
    a stream that asked for usage, so no re-encoding); None when the key is not spelled
    plainly (escapes), for the caller to re-encode instead. Servers put `usage` at the top
    level only, so the last `"usage"` key (at `u`) is the one the decode saw as null."""
    if u < 0:
        return None
    if data.startswith(b": null", u + 7) and data[u - 2 : u] == b", ":  # json.dumps' spelling
        return data[: u - 2] + data[u + 13 :]
    m = _COLON.match(data, u + 7)
    if m is None or not data.startswith(b"null", m.end()):
        return None  # a string `"usage"` after the key, or the key is escaped
    end = m.end() + 4
    i = u - 1
    while data[i] in _JSON_WS:
        i -= 1
    if data[i] == 44:  # `, "usage": null`: the comma before goes with it
        return data[:i] + data[end:]
    j = end
    while data[j] in _JSON_WS:
        j += 1
    if data[j] == 44:  # the first member: the comma after goes with it
        j += 1
        while data[j] in _JSON_WS:
            j += 1
        return data[:u] + data[j:]
    return data[:u] + data[end:]  # the only member


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
        include_usage = self._include_usage
        for ev in events:
            data = ev.data
            if data == b"[DONE]":
                self._decoder.complete = True
                continue  # written by finish(), after anything we add
            try:
                peek = _peek(data)
            except msgspec.ValidationError:
                # An unexpected shape: the adapter's decoder judges it (and usually refuses it).
                self._decode(ev)
                data = self._rewrite(data)
                if not data:
                    continue
            except msgspec.DecodeError:
                raise UpstreamProtocolError("stream chunk is not valid JSON", target=self._target) from None
            else:
                usage = peek.usage
                has_usage = usage is not None and usage is not msgspec.UNSET
                if usage is None and not include_usage:
                    # `"usage": null` is on every chunk of a stream that asked for usage: we
                    # asked, and a client that did not must not see it.
                    u = data.rfind(b'"usage"')
                    if u > 0 and data[u - 1] == 44 and data.startswith(b":null", u + 7):  # `,"usage":null`
                        data = data[: u - 1] + data[u + 12 :]
                    else:
                        data = _without_usage_null(data, u) or self._rewrite(data)
                decode = has_usage or peek.error is not None or peek.object == "error"
                if not decode:
                    for c in peek.choices or ():
                        if c.finish_reason:  # "" is no finish
                            decode = True
                            break
                if decode:  # usage, a finish or an error: the few chunks worth a full decode
                    self._decode(ev)
                    if has_usage and (not include_usage or self._usage_extra is not None):
                        data = self._rewrite(data)
                        if not data:
                            continue
            if 10 in data:  # JSON spread over several `data:` lines stays so for the client
                data = data.replace(b"\n", b"\ndata: ")
            out += b"data: "
            out += data
            out += b"\n\n"

    def _decode(self, ev: SSEEvent) -> None:
        for d in self._decoder.feed(ev.event, ev.data):
            if d.usage is not None:
                self.usage = d.usage
            elif d.finish_reason is not None:
                self._finish.append(d.finish_reason)

    def _rewrite(self, data: bytes) -> bytes:
        """A chunk whose usage must change, re-encoded from its decoded JSON (rare: the
        usage chunk): without the usage (b"" for the usage-only chunk) when the client did
        not ask for it, else with the gateway's extra usage fields."""
        obj = _decode_any(data)
        if not isinstance(obj, dict) or "usage" not in obj:
            return data
        usage = obj["usage"]
        if not self._include_usage:
            if usage is not None and not obj.get("choices"):
                return b""  # the usage-only chunk (choices `[]`, null or absent)
            del obj["usage"]
            return _encode(obj)
        if self._usage_extra is None or self.usage is None:
            return data
        return _with_usage_fields(data, obj, self._usage_extra(self.usage))

    def finish(self) -> bytes:
        if not self._decoder.complete:
            raise _truncated(self._target)
        return DONE

    def finish_reasons(self) -> list[FinishReason]:
        return self._finish


class TranslatingRelay:
    __slots__ = ("_decoder", "_encoder", "_target", "failed")

    def __init__(self, decoder: Decoder, encoder: StreamEncoder, *, target: str) -> None:
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


class _Syntax(msgspec.Struct, gc=False):
    """No fields: decoding into it checks the JSON's syntax and builds nothing."""


_check_syntax = msgspec.json.Decoder(_Syntax).decode
_EVENT_LINES: dict[str, bytes] = {}  # event name -> its `event:` line


class NativeRelay:
    """The client speaks the upstream's own API (a Messages client, an Anthropic target):
    every event goes out as it came (`event:` and `data:` lines re-joined). Events that
    carry content only (`content_events`, named by the adapter) are checked to be JSON
    objects and forwarded; the others go through the adapter's decoder for usage, the
    finish and errors (its deltas are not encoded into anything)."""

    __slots__ = ("_content_events", "_decoder", "_finish", "_heads", "_target", "_usage_extra", "failed", "usage")

    def __init__(
        self,
        decoder: Decoder,
        *,
        target: str,
        content_events: frozenset[str] = frozenset(),
        usage_extra: UsageExtra | None = None,
    ) -> None:
        self._decoder = decoder
        # The gateway's fields (the cost) added to the usage object of the event that
        # carries the final usage: that one event is re-encoded, the others go as they came.
        self._usage_extra = usage_extra
        self._content_events = content_events
        # A chunk that is exactly one content event (`event: E\ndata: D\n\n`, most of a
        # stream) is recognised by its first line and forwarded as it came, unparsed.
        self._heads = tuple(b"event: " + e.encode() + b"\ndata: " for e in content_events)
        self._target = target
        self._finish: list[FinishReason] = []
        self.usage: CompletionUsage | None = None
        self.failed: UpstreamError | None = None

    def feed_chunk(self, parser: SSEParser, chunk: bytes) -> bytes:
        """One upstream chunk: a lone content event between event boundaries goes out as it
        came, after its JSON is checked; anything else through the parser and `feed`."""
        if chunk.startswith(self._heads) and chunk.endswith(b"\n\n") and chunk.count(10) == 3 and parser.at_boundary:
            try:
                _check_syntax(chunk[chunk.index(10) + 7 : -2])
            except msgspec.MsgspecError:
                self.failed = UpstreamProtocolError("stream event is not a JSON object", target=self._target)
                return b""
            return chunk
        return self.feed(parser.feed(chunk))

    def feed(self, events: list[SSEEvent]) -> bytes:
        out = bytearray()
        decoder = self._decoder
        for ev in events:
            try:
                if ev.event in self._content_events:
                    try:
                        _check_syntax(ev.data)
                    except msgspec.MsgspecError:
                        raise UpstreamProtocolError("stream event is not a JSON object", target=self._target) from None
                else:
                    usage = None
                    for d in decoder.feed(ev.event, ev.data):
                        if d.usage is not None:
                            self.usage = usage = d.usage
                        elif d.finish_reason is not None:
                            self._finish.append(d.finish_reason)
                    if usage is not None and self._usage_extra is not None:
                        # the decoder read this event: its JSON is valid
                        extra = self._usage_extra(usage)
                        ev = SSEEvent(ev.event, _with_usage_fields(ev.data, _decode_any(ev.data), extra))
            except UpstreamError as exc:
                self.failed = exc  # an `error` event: the dispatcher ends the stream its way
                break
            if ev.event:
                line = _EVENT_LINES.get(ev.event)
                if line is None:
                    line = b"event: " + ev.event.encode() + b"\n"
                    if len(_EVENT_LINES) < 64:  # the API's few names; anything else is built each time
                        _EVENT_LINES[ev.event] = line
                out += line
            data = ev.data
            if 10 in data:
                data = data.replace(b"\n", b"\ndata: ")
            out += b"data: "
            out += data
            out += b"\n\n"
        return bytes(out)

    def finish(self) -> bytes:
        if not self._decoder.complete:
            raise _truncated(self._target)
        return b""

    def finish_reasons(self) -> list[FinishReason]:
        return self._finish
