"""The SSE response writer: headers that keep every proxy from buffering, and the commit
point of a stream (headers go out with the first byte of content, not before)."""

from __future__ import annotations

from aiohttp import web

from aiogw.adapters._base import Target
from aiogw.dispatch import ClientDisconnected, Outcome

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx: do not buffer this response
}


class SSESink:
    """A `StreamSink` writing Server-Sent Events to the client."""

    __slots__ = ("_headers", "_outcome", "_request", "response", "started")

    def __init__(self, request: web.Request, headers: dict[str, str], outcome: Outcome) -> None:
        self._request = request
        self._headers = headers
        self._outcome = outcome
        self.response: web.StreamResponse | None = None
        self.started = False

    async def start(self, target: Target) -> None:
        self.started = True
        headers = {**SSE_HEADERS, **self._headers}
        headers["x-aiogw-provider"] = target.provider
        headers["x-aiogw-model"] = target.model
        # Headers leave with the first byte: the attempts made so far, this one included.
        headers["x-aiogw-attempts"] = str(int(self._outcome.attempts_header) + 1)
        resp = self.response = web.StreamResponse(status=200, headers=headers)
        try:
            await resp.prepare(self._request)
        except ConnectionResetError:
            raise ClientDisconnected from None

    async def write(self, data: bytes) -> None:
        assert self.response is not None
        try:
            await self.response.write(data)
        except ConnectionResetError:  # aiohttp's ClientConnectionResetError included
            raise ClientDisconnected from None

    async def finish(self) -> None:
        if self.response is not None:
            try:
                await self.response.write_eof()
            except ConnectionResetError:
                raise ClientDisconnected from None
