"""One keep-alive connection to an upstream (an asyncio protocol) and the response it
carries, parsed by httptools (llhttp): each body piece the parser hands over is passed on
as is, and the socket stops being read while a slow reader holds too much."""

from __future__ import annotations

import asyncio
import collections
import zlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import httptools

from aiogw.upstream.errors import Disconnected, ProtocolError

if TYPE_CHECKING:
    from aiogw.upstream.pool import Pool

# Body pieces held for a slow reader before the socket stops being read (back pressure).
HIGH_WATER = 256 * 1024
# What a misbehaving upstream may make us hold: response headers, and a whole body read at
# once (a streamed body is passed on as it arrives and is not bounded here).
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024


class Response:
    """One upstream response: status and headers once they have arrived, then the body,
    read whole (`read`) or piece by piece as it arrives (`iter_any`)."""

    __slots__ = (
        "_buffered",
        "_conn",
        "_done",
        "_error",
        "_inflate",
        "_pieces",
        "_since",
        "_waiter",
        "headers",
        "status",
    )

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.status = 0
        self.headers: dict[str, str] = {}  # lower-case names; a repeated header keeps its last value
        self._pieces: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._done = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._since = 0.0  # loop time the reader began waiting for the next piece
        self._inflate: zlib._Decompress | None = None

    @property
    def arrived(self) -> bool:
        """The whole body is here (or failed): reading it waits for nothing."""
        return self._done or self._error is not None

    @property
    def waiting_since(self) -> float | None:
        """Since when (loop time) the reader has been waiting for the upstream's next piece;
        None while it is busy with the last one (e.g. writing it to a slow client)."""
        w = self._waiter
        return self._since if w is not None and not w.done() else None

    async def read(self, limit: int = MAX_BODY_BYTES) -> bytes:
        parts = []
        size = 0
        async for piece in self.iter_any():
            size += len(piece)
            if size > limit:
                self._conn.close()  # the rest is not worth reading
                raise ProtocolError(f"the upstream's answer is larger than {limit // 1024 // 1024} MiB")
            parts.append(piece)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def iter_any(self) -> AsyncIterator[bytes]:
        while True:
            if self._pieces:
                # Everything that arrived since the last look, as one piece: one relay pass
                # and one client write per wake-up, not per upstream chunk.
                pieces = self._pieces
                piece = pieces.popleft() if len(pieces) == 1 else b"".join(pieces)
                pieces.clear()
                self._buffered = 0
                self._conn.resume()
                yield piece if self._inflate is None else self._inflated(piece)
            elif self._error is not None:
                raise self._error
            elif self._done:
                if self._inflate is not None and not self._inflate.eof:
                    self._conn.close()
                    raise ProtocolError(
                        f"the upstream's {self.headers['content-encoding']} body ends early (truncated)"
                    )
                return
            else:
                self._waiter = self._conn.loop.create_future()
                self._since = self._conn.loop.time()
                try:
                    await self._waiter
                finally:
                    self._waiter = None

    def _inflated(self, piece: bytes) -> bytes:
        assert self._inflate is not None
        try:
            return self._inflate.decompress(piece)
        except zlib.error as exc:
            self._conn.close()
            raise ProtocolError(
                f"the upstream's {self.headers['content-encoding']} body cannot be decoded ({exc})"
            ) from None

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    # --- fed by the connection ----------------------------------------------------------

    def _body(self, piece: bytes) -> None:
        self._pieces.append(piece)
        self._buffered += len(piece)
        if self._buffered > HIGH_WATER:
            self._conn.pause()
        self._wake()

    def _end(self, error: BaseException | None = None) -> None:
        if self._done or self._error is not None:
            return
        if error is None:
            self._done = True
        else:
            self._error = error
        self._wake()


class Connection(asyncio.Protocol):
    """One keep-alive connection; carries one request at a time."""

    def __init__(self, pool: Pool, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.response: Response | None = None
        self._headers_done: asyncio.Future[None] | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self._complete = True  # no exchange under way
        self._informational = False  # a 1xx answer is being skipped
        self._paused = False
        self._started = False
        self._header_bytes = 0
        self.used = False  # has carried a request (a kept-alive connection when taken again)

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.pool.connected += 1

    def data_received(self, data: bytes) -> None:
        self._started = True
        if self._parser is None:  # bytes nobody asked for: the connection is unusable
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ProtocolError("the upstream switched protocols"))
        except httptools.HttpParserError as exc:
            # One of our callbacks refusing what it saw surfaces as the parser's context.
            mine = exc.__context__
            self._fail(
                mine
                if isinstance(mine, ProtocolError)
                else ProtocolError(f"the upstream's answer is not HTTP/1.1 ({exc})")
            )

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.connected -= 1
        self.pool.wake()
        if self._complete:
            return
        r = self.response
        if (
            r is not None
            and r.status
            and "content-length" not in r.headers
            and "chunked" not in r.headers.get("transfer-encoding", "")
        ):
            self._complete = True  # a body without a length runs until the connection closes
            r._end()
        else:
            self._fail(Disconnected(self._started))

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self._complete:  # bytes after the answer: not a server we can keep talking to
            raise ProtocolError("the upstream sent more than one answer")

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.response is not None
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > MAX_HEADER_BYTES:
            raise ProtocolError(f"the upstream's response headers exceed {MAX_HEADER_BYTES // 1024} KiB")
        self.response.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        assert self.response is not None and self._parser is not None
        status = self._parser.get_status_code()
        if status < 200:  # 100 Continue, 103 Early Hints: the answer follows
            self._informational = True
            self.response.headers.clear()
            return
        self.response.status = status
        enc = self.response.headers.get("content-encoding")
        if enc in ("gzip", "deflate"):  # we ask for identity; honour a server that ignores it
            self.response._inflate = zlib.decompressobj(47 if enc == "gzip" else 15)
        w = self._headers_done
        if w is not None and not w.done():
            w.set_result(None)

    def on_body(self, body: bytes) -> None:
        assert self.response is not None
        self.response._body(body)

    def on_message_complete(self) -> None:
        assert self._parser is not None and self.response is not None
        if self._informational:
            self._informational = False
            return
        self._complete = True
        keep = self._parser.should_keep_alive()
        self.response._end()
        if not keep:
            self.close()

    # used by Pool / Response

    def send(self, head: bytes, body: bytes) -> asyncio.Future[None]:
        assert self.transport is not None
        self.response = Response(self)
        self._parser = httptools.HttpResponseParser(self)
        self._complete = self._started = False
        self.used = True
        self._header_bytes = 0
        self._headers_done = self.loop.create_future()
        if len(body) < 65536:  # one write, one segment
            self.transport.write(head + body)
        else:
            self.transport.writelines((head, body))
        return self._headers_done

    def reusable(self) -> bool:
        return self._complete and not self.closed and not self._paused

    def pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    def _fail(self, exc: BaseException) -> None:
        w = self._headers_done
        if w is not None and not w.done():
            w.set_exception(exc)
        if self.response is not None:
            self.response._end(exc)
        self.close()

    def close(self) -> None:
        self.closed = True
        self._parser = None
        if self.transport is not None:
            self.transport.close()
