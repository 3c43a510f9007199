"""The SSE response writer: headers that keep every proxy from buffering, the commit point
of a stream, and heartbeats while a stream is quiet.

Headers normally go out with the first byte of content, so that failover before it stays
invisible and the headers can name the target that answered. A stream whose first token
takes longer than `server.sse_heartbeat_s` opens early instead (without the x-aiogw-provider,
-model and -attempts headers, which are not known yet) and sends SSE comment lines, which
every client ignores, so that proxies with idle timeouts keep the connection; failover goes
on behind them, and a failure is then an error event rather than an error status."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web

from aiogw.adapters._base import Target
from aiogw.attempts.outcome import ClientDisconnected, Outcome

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx: do not buffer this response
}
HEARTBEAT = b": keep-alive\n\n"


class SSESink:
    """A `StreamSink` writing Server-Sent Events to the client."""

    __slots__ = (
        "_beat",
        "_headers",
        "_interval",
        "_outcome",
        "_request",
        "_seen",
        "_timer",
        "_writes",
        "_writing",
        "headers_for",
        "response",
        "started",
    )

    def __init__(
        self, request: web.Request, headers: dict[str, str], outcome: Outcome, heartbeat_s: float = 0.0
    ) -> None:
        self._request = request
        self._headers = headers
        self._outcome = outcome
        self.response: web.StreamResponse | None = None
        self.started = False  # content committed: a target answered
        self._interval = heartbeat_s
        self._timer: asyncio.TimerHandle | None = None
        self._beat: asyncio.Task[None] | None = None
        self._writes = 0  # writes so far; a tick that sees no new one sends a heartbeat
        self._seen = 0
        self._writing = False
        # The client API's headers that depend on the answering target (ClientFormat).
        self.headers_for: Callable[[Target], dict[str, str]] | None = None
        if heartbeat_s > 0:
            self._timer = asyncio.get_running_loop().call_later(heartbeat_s, self._tick)

    # --- heartbeats ---------------------------------------------------------------------

    def _tick(self) -> None:
        # A timer rather than a task per stream: a stream that answers in time costs one
        # call_later and one cancel.
        self._timer = asyncio.get_running_loop().call_later(self._interval, self._tick)
        if self._writes == self._seen and not self._writing and self._beat is None:
            self._beat = asyncio.get_running_loop().create_task(self._heartbeat(self._writes))
        self._seen = self._writes

    async def _heartbeat(self, writes: int) -> None:
        try:
            if self._writes != writes or self._writing:
                return  # content went out after the tick (maybe the stream's last bytes)
            if self.response is None:
                if self.started:
                    return  # the commit is opening it with the target's headers
                await self._open(self._headers)
            elif not self.response.prepared or self._writes != writes:
                return
            assert self.response is not None  # opened above
            await self.response.write(HEARTBEAT)
        except (ConnectionResetError, ClientDisconnected):
            self.stop_heartbeats()  # the handler finds out on its next write
        finally:
            self._beat = None

    def stop_heartbeats(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @property
    def opened(self) -> bool:
        """Headers are out (a heartbeat may have sent them before any content)."""
        return self.response is not None and self.response.prepared

    async def _open(self, headers: dict[str, str]) -> None:
        resp = self.response = web.StreamResponse(status=200, headers={**SSE_HEADERS, **headers})
        try:
            await resp.prepare(self._request)
        except ConnectionResetError:
            raise ClientDisconnected from None

    # --- StreamSink ---------------------------------------------------------------------

    async def start(self, target: Target) -> None:
        self.started = True
        beat = self._beat
        if beat is not None:  # headers may be on their way out from a heartbeat
            await asyncio.shield(beat)
        if self.response is not None:
            return  # opened early by a heartbeat: the answering target is in the log only
        headers = dict(self._headers)
        headers["x-aiogw-provider"] = target.provider
        headers["x-aiogw-model"] = target.model
        # Headers leave with the first byte: the attempts started so far, this one included.
        headers["x-aiogw-attempts"] = self._outcome.attempts_header
        if self._outcome.route_reason:
            headers["x-aiogw-route-reason"] = self._outcome.route_reason
        if self.headers_for is not None:
            headers.update(self.headers_for(target))
        await self._open(headers)

    async def write(self, data: bytes) -> None:
        assert self.response is not None
        self._writes += 1
        self._writing = True
        try:
            await self.response.write(data)
        except ConnectionResetError:  # aiohttp's ClientConnectionResetError included
            raise ClientDisconnected from None
        finally:
            self._writing = False

    async def finish(self) -> None:
        self.stop_heartbeats()
        beat = self._beat
        if beat is not None:
            await asyncio.shield(beat)
        if self.response is not None:
            try:
                await self.response.write_eof()
            except ConnectionResetError:
                raise ClientDisconnected from None


class RecordingSSESink(SSESink):
    """An SSESink that keeps a copy of every write (a cache miss's recording, a spot
    check's). Its own `write` rather than a stage in front of the sink: a stage cost a
    coroutine per chunk, and a check in SSESink.write would cost every stream that records
    nothing."""

    __slots__ = ("record",)

    def __init__(
        self, request: web.Request, headers: dict[str, str], outcome: Outcome, heartbeat_s: float, record: list[bytes]
    ) -> None:
        super().__init__(request, headers, outcome, heartbeat_s)
        self.record = record

    async def write(self, data: bytes) -> None:  # SSESink.write's steps, the copy first
        assert self.response is not None
        self.record.append(data)
        self._writes += 1
        self._writing = True
        try:
            await self.response.write(data)
        except ConnectionResetError:
            raise ClientDisconnected from None
        finally:
            self._writing = False
