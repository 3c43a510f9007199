"""The Responses API as the client's format for `answer()` (a `ClientFormat`): its answer
body, its stream encoder and its late-error events, for one response id across every
attempt; and the sink wrapper that stores a streamed response before its terminal event."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from aiogw.adapters._base import Target
from aiogw.attempts.outcome import StreamSink
from aiogw.errors import GatewayError, StoreUnavailable
from aiogw.ingress.responses.answer import from_completion
from aiogw.ingress.responses.stream import ResponsesStream
from aiogw.types import Reply


class ResponsesFormat:
    def __init__(self, resp: dict[str, Any]) -> None:
        self._resp = resp  # the skeleton: id, created_at, the echoed settings
        self._stream: ResponsesStream | None = None
        self.final: dict[str, Any] | None = None  # the finished Response, once there is one

    def _finished(self, resp: dict[str, Any]) -> None:
        self.final = resp

    def encoder(self, target: Target, prompt_estimate: int) -> ResponsesStream:
        resp = {**self._resp, "model": target.model}
        self._stream = ResponsesStream(resp, prompt_estimate, self._finished)
        return self._stream

    def error_event(self, err: GatewayError) -> bytes:
        if self._stream is None:  # failed before any attempt's first event (after heartbeats)
            self._stream = ResponsesStream(dict(self._resp), 0)
        return self._stream.failed(err)

    def reply_body(self, reply: Reply) -> bytes:
        self.final = from_completion(dict(self._resp), reply.body)
        return orjson.dumps(self.final)


Save = Callable[[dict[str, Any]], Awaitable[None]]


class StoreBeforeEnd:
    """A StreamSink that holds the write carrying the terminal event until the finished
    Response is stored, so a continuation sent the moment the stream ends finds it. A store
    that fails turns the terminal event into `error` + `response.failed`."""

    __slots__ = ("_fmt", "_on_error", "_save", "_sink")

    def __init__(
        self, sink: StreamSink, fmt: ResponsesFormat, save: Save, on_error: Callable[[Exception], None]
    ) -> None:
        self._sink, self._fmt, self._save, self._on_error = sink, fmt, save, on_error

    @property
    def started(self) -> bool:
        return self._sink.started

    @started.setter
    def started(self, value: bool) -> None:
        self._sink.started = value

    async def start(self, target: Target) -> None:
        await self._sink.start(target)

    async def write(self, data: bytes) -> None:
        final, stream = self._fmt.final, self._fmt._stream
        if final is not None and stream is not None:
            self._fmt.final = None  # saved once
            try:
                await self._save(final)
            except Exception as exc:
                self._on_error(exc)
                gone = StoreUnavailable("The response could not be stored (responses.store); retry in a moment.")
                data = data[: len(data) - stream.terminal_len] + stream.instead_of_terminal(gone)
        await self._sink.write(data)
