"""The Responses API as the client's format for `answer()` (a `ClientFormat`): its answer
body, its stream encoder and its late-error events, for one response id across every
attempt; and the sink in front of the client that knows which attempt's stream it carries
(hedged attempts each have an encoder) and stores a finished response before its terminal
event."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson

from aiogw.adapters._base import Target
from aiogw.attempts.outcome import SinkStage, StreamSink
from aiogw.errors import GatewayError, StoreUnavailable
from aiogw.ingress.responses.answer import from_completion
from aiogw.ingress.responses.stream import ResponsesStream
from aiogw.streaming.sse import data_objects
from aiogw.types import RESPONSES_API, Reply


class AttemptStream(Protocol):
    """An attempt's stream as the client gets it: translated (`ResponsesStream`) or passed
    through (`PassthroughEvents`)."""

    final: dict[str, Any] | None  # the finished Response, once its terminal event is out
    terminal_len: int  # bytes of that terminal event, at the end of the write carrying it

    def failed_events(self, err: GatewayError) -> bytes: ...
    def instead_of_terminal(self, err: GatewayError) -> bytes: ...


class ResponsesFormat:
    def __init__(self, resp: dict[str, Any]) -> None:
        self._resp = resp  # the skeleton: id, created_at, the echoed settings
        self._encoders: dict[str, AttemptStream] = {}  # by target id: one per attempt
        self.committed: AttemptStream | None = None  # the attempt whose stream the client gets
        self.final: dict[str, Any] | None = None  # a non-streamed answer's Response

    def encoder(self, target: Target, prompt_estimate: int) -> ResponsesStream:
        enc = self._encoders[target.id] = ResponsesStream({**self._resp, "model": target.model}, prompt_estimate)
        return enc

    def register(self, target: Target, stream: AttemptStream) -> None:
        """A pass-through attempt's relay (see native.py)."""
        self._encoders[target.id] = stream

    def commit(self, target: Target) -> None:
        self.committed = self._encoders.get(target.id)

    def error_event(self, err: GatewayError) -> bytes:
        if self.committed is None:  # failed before any attempt's first event (after heartbeats)
            self.committed = ResponsesStream(dict(self._resp), 0)
        return self.committed.failed_events(err)

    def reply_body(self, reply: Reply) -> bytes:
        if reply.native == RESPONSES_API:  # passed through: the upstream's as it is
            self.final = orjson.loads(reply.body)
            return reply.body
        self.final = from_completion(dict(self._resp), reply.body)
        return orjson.dumps(self.final)

    def answer_text(self, data: bytes, stream: bool) -> str:
        if stream:
            return "".join(
                str(ev.get("delta") or "")
                for ev in data_objects(data)
                if ev.get("type") == "response.output_text.delta"
            )
        try:
            output = orjson.loads(data).get("output") or []
        except (orjson.JSONDecodeError, AttributeError):
            return ""
        return "".join(
            str(c.get("text") or "")
            for item in output if isinstance(item, dict) and item.get("type") == "message"
            for c in item.get("content") or [] if isinstance(c, dict) and c.get("type") == "output_text"
        )  # fmt: skip


Save = Callable[[dict[str, Any]], Awaitable[None]]


class ResponsesSink(SinkStage):
    """The StreamSink of a Responses stream: tells the format which attempt committed, and
    with `save` holds the write carrying the terminal event until the finished Response is
    stored, so a continuation sent the moment the stream ends finds it. A store that fails
    turns the terminal event into `error` + `response.failed`."""

    __slots__ = ("_fmt", "_on_error", "_save")

    def __init__(
        self, sink: StreamSink, fmt: ResponsesFormat, save: Save | None, on_error: Callable[[Exception], None]
    ) -> None:
        super().__init__(sink)
        self._fmt, self._save, self._on_error = fmt, save, on_error

    async def start(self, target: Target) -> None:
        self._fmt.commit(target)
        await self._sink.start(target)

    async def write(self, data: bytes) -> None:
        enc = self._fmt.committed
        if self._save is not None and enc is not None and (final := enc.final) is not None:
            enc.final = None  # saved once
            try:
                await self._save(final)
            except Exception as exc:
                self._on_error(exc)
                gone = StoreUnavailable("The response could not be stored (responses.store); retry in a moment.")
                data = data[: len(data) - enc.terminal_len] + enc.instead_of_terminal(gone)
        await self._sink.write(data)
