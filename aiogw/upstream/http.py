"""The upstream HTTP/1.1 client: keep-alive connection pools on asyncio protocols, responses
parsed by httptools (llhttp).

Why not aiohttp's client: a provider call is always the same shape (one POST with a small
JSON body, a JSON or SSE answer), and aiohttp's general client (request/response objects,
cookie jar, redirects, trace signals, payload and stream layers) spent more CPU per call
than all of aiogw's own routing, limits, cost and logging together (see the README's
performance section). Here a request is one `transport.write`, and each body piece the
parser hands over is passed on as is.
"""

from __future__ import annotations

import asyncio
import collections
import re
import socket
import ssl
import zlib
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlsplit

import httptools

from aiogw.upstream import dial
from aiogw.upstream.egress import Egress

# Body pieces held for a slow reader before the socket stops being read (back pressure).
HIGH_WATER = 256 * 1024
# What a misbehaving upstream may make us hold: response headers, and a whole body read at
# once (a streamed body is passed on as it arrives and is not bounded here).
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024


class CannotConnect(OSError):
    """No TCP/TLS connection to the upstream (refused, unreachable, DNS, TLS)."""

    def __init__(self, host: str, port: int, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.host, self.port, self.cause = host, port, cause


class ConnectTimeout(TimeoutError):
    """The TCP/TLS connect took longer than the target's connect timeout."""


class Disconnected(ConnectionError):
    """The upstream closed the connection before the response ended. `started` tells
    whether any of the response had arrived."""

    def __init__(self, started: bool) -> None:
        super().__init__(
            "the upstream connection dropped mid-response" if started else "the upstream closed the connection"
        )
        self.started = started


def tls_reason(exc: ssl.SSLError) -> str:
    """A TLS failure in words (its errno is OpenSSL's, not the system's)."""
    verify = getattr(exc, "verify_message", None)
    return f"TLS: {verify or (exc.reason or str(exc)).replace('_', ' ').lower()}"


class ProtocolError(ConnectionError):
    """The upstream's bytes are not HTTP/1.1."""


class UnsafeRequest(ValueError):
    """A request this client refuses to write: its target has bytes outside RFC 3986, or a
    header carries a control character (CR and LF would forge lines, NUL truncate them)."""


# RFC 3986: scheme "://" authority, then path-abempty [ "?" query ] (pchar = unreserved /
# pct-encoded / sub-delims / ":" / "@"), no fragment.
_URL = re.compile(
    r"[A-Za-z][A-Za-z0-9+.-]*://[A-Za-z0-9\-._~!$&'()*+,;=:@%\[\]]*"
    r"(?P<target>[/?](?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*)?"
)
# Field values (RFC 9110 5.5) may hold HTAB, SP, VCHAR and obs-text, but no other control.
_CONTROLS = bytes(c for c in range(32) if c != 9) + b"\x7f"


def check_request_target(url: str) -> None:
    """Refuse a URL that would not reach the upstream as written: urlsplit silently drops
    tabs and line breaks, and raw spaces, quotes, `%` without two hex digits or non-ASCII
    are not a request-target. Names put in paths are percent-encoded by the adapters."""
    if _URL.fullmatch(url) is None:
        # Where it goes wrong, not the URL itself: that may carry credentials.
        m = _URL.match(url)
        if m is None:
            raise UnsafeRequest("refused to send a request: its URL does not start with scheme://")
        raise UnsafeRequest(
            f"refused to send a request: its URL has {url[m.end()]!r} at position {m.end()}, outside RFC 3986"
        )


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

    def __init__(self, conn: _Connection) -> None:
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


class _Connection(asyncio.Protocol):
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


class Pool:
    """Connections to one scheme://host:port (for one `Egress`: its TLS context and proxy):
    the idle ones kept alive, at most `limit` open at once (more callers wait for one), the
    addresses dialled (the host's, or the proxy's) cached for `dns_ttl_s`."""

    def __init__(self, client: Client, scheme: str, host: str, port: int, egress: Egress | None = None) -> None:
        self.client = client
        self.host, self.port = host, port
        tls = egress.ssl_context if egress is not None else None
        self.ssl = (tls or client.ssl_context) if scheme == "https" else None
        self.proxy = egress.proxy if egress is not None else None
        # Through a proxy: https is tunnelled (CONNECT), http is sent to the proxy in absolute form.
        self.tunnel = self.proxy is not None and self.ssl is not None
        self._dial_host, self._dial_port = (self.proxy.host, self.proxy.port) if self.proxy else (host, port)
        self.idle: list[_Connection] = []
        self.connected = 0
        self._dialing = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._addrs: list[dial.Address] = []
        self._addrs_until = 0.0
        default = 443 if scheme == "https" else 80
        name = f"[{host}]" if ":" in host else host  # an IPv6 literal
        self.host_header = (name if port == default else f"{name}:{port}").encode("idna")
        self.head_lines = 2  # request line and Host, plus Proxy-Authorization to a proxy in absolute form
        self.target_prefix = b""  # before the path in the request line: absolute form to a proxy
        if self.proxy is not None and not self.tunnel:
            self.target_prefix = b"http://" + self.host_header
            if self.proxy.authorization is not None:
                self.head_lines = 3

    async def connect(self, timeout: float | None, *, fresh: bool = False) -> _Connection:
        conn = None if fresh else self._idle_one()
        if conn is not None:  # the common case, without a timer
            return conn
        loop = self.client.loop
        try:
            async with asyncio.timeout(timeout):  # waiting for a free slot included
                while self.connected + self._dialing >= self.client.limit_per_host:
                    waiter = loop.create_future()
                    self._waiters.append(waiter)
                    try:
                        await waiter
                    finally:
                        if waiter in self._waiters:
                            self._waiters.remove(waiter)
                    conn = self._idle_one()  # a connection came back: use it
                    if conn is not None:
                        return conn
                self._dialing += 1
                try:
                    return await self._dial(loop)
                finally:
                    self._dialing -= 1
                    self.wake()
        except TimeoutError:
            raise ConnectTimeout(f"no connection to {self.host}:{self.port} within {timeout:g} s") from None

    def _idle_one(self) -> _Connection | None:
        """The most recently used idle connection still fit to use; stale ones are closed."""
        now = self.client.loop.time()
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed and now - conn.idle_since < self.client.keepalive_s:
                return conn
            conn.close()
        return None

    async def _dial(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        if loop.time() >= self._addrs_until:
            try:
                infos = await loop.getaddrinfo(self._dial_host, self._dial_port, type=socket.SOCK_STREAM)
            except OSError as exc:
                raise self._cannot(exc) from None
            self._addrs = dial.interleave([(info[0], info[4]) for info in infos])
            self._addrs_until = loop.time() + self.client.dns_ttl_s
        try:
            sock = await dial.happy_eyeballs(loop, self._addrs)
        except OSError as exc:
            self._addrs_until = 0.0  # resolve again next time
            raise self._cannot(exc) from None
        try:
            if self.tunnel:
                assert self.proxy is not None
                try:
                    await dial.tunnel(loop, sock, self.proxy, self.host, self.port)
                except OSError as exc:
                    raise self._cannot(exc) from None
            _, conn = await loop.create_connection(
                lambda: _Connection(self, loop),
                sock=sock,
                ssl=self.ssl,
                server_hostname=self.host if self.ssl else None,
            )
        except CannotConnect:
            sock.close()
            raise
        except OSError as exc:  # the TLS handshake
            sock.close()
            if isinstance(exc, ssl.SSLError):
                exc = OSError(tls_reason(exc))
            raise CannotConnect(self.host, self.port, exc) from None
        except BaseException:
            sock.close()
            raise
        return conn

    def _cannot(self, exc: OSError) -> CannotConnect:
        if self.proxy is not None:  # say which hop failed (never the proxy's credentials)
            exc = OSError(f"proxy {self.proxy}: {exc.strerror or exc}")
        return CannotConnect(self.host, self.port, exc)

    def release(self, conn: _Connection) -> None:
        if conn.reusable() and not self.client.closed:
            conn.response = None
            now = conn.idle_since = self.client.loop.time()
            idle = self.idle
            # Taken from the end, so the front holds the longest idle: drop the stale ones.
            while idle and now - idle[0].idle_since >= self.client.keepalive_s:
                idle.pop(0).close()
            idle.append(conn)
            self.wake()
        else:
            conn.close()

    def wake(self) -> None:
        """A connection came back or went away: one waiter may go on."""
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_result(None)
                return


class Client:
    """`async with client.post(url, body, headers, connect_timeout) as response:` — the
    connection goes back to its pool when the body was read to the end, and is closed
    otherwise (an abandoned stream, an error, a cancelled call)."""

    def __init__(
        self,
        *,
        limit_per_host: int = 1024,
        keepalive_s: float = 60.0,
        dns_ttl_s: float = 300.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.limit_per_host = limit_per_host
        self.keepalive_s = keepalive_s
        self.dns_ttl_s = dns_ttl_s
        self.ssl_context = ssl_context or ssl.create_default_context()
        self.closed = False
        self._pools: dict[tuple[str, str, int] | tuple[str, str, int, Egress], Pool] = {}
        # url (or (egress, url)) -> pool and request line
        self._targets: dict[str | tuple[Egress, str], tuple[Pool, bytes]] = {}

    def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        connect_timeout: float | None = None,
        egress: Egress | None = None,
    ) -> _Exchange:
        """`egress`: the account's own TLS context and proxy, if it has any."""
        return _Exchange(self, url, body, headers, connect_timeout, egress)

    def _route(self, url: str, egress: Egress | None = None) -> tuple[Pool, bytes]:
        cache_key = url if egress is None else (egress, url)
        got = self._targets.get(cache_key)
        if got is None:
            check_request_target(url)
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"not an http(s) URL: {url!r}")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            key: tuple[str, str, int] | tuple[str, str, int, Egress] = (parts.scheme, parts.hostname, port)
            if egress is not None:
                key = (parts.scheme, parts.hostname, port, egress)
            pool = self._pools.get(key)
            if pool is None:
                pool = self._pools[key] = Pool(self, parts.scheme, parts.hostname, port, egress)
            path = (parts.path or "/") + ("?" + parts.query if parts.query else "")
            line = b"POST " + pool.target_prefix + path.encode() + b" HTTP/1.1\r\nHost: " + pool.host_header + b"\r\n"
            if pool.head_lines == 3:
                assert pool.proxy is not None and pool.proxy.authorization is not None
                line += b"Proxy-Authorization: " + pool.proxy.authorization + b"\r\n"
            got = (pool, line)
            if len(self._targets) < 10_000:  # bounded: URLs can carry model names clients choose
                self._targets[cache_key] = got
        return got

    async def close(self) -> None:
        self.closed = True
        for pool in self._pools.values():
            for conn in pool.idle:
                conn.close()
            pool.idle.clear()
        await asyncio.sleep(0)  # let the transports' close callbacks run


class _Exchange:
    __slots__ = ("_body", "_client", "_conn", "_egress", "_headers", "_pool", "_timeout", "_url")

    def __init__(
        self,
        client: Client,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        timeout: float | None,
        egress: Egress | None,
    ) -> None:
        self._client, self._url, self._body, self._headers, self._timeout = client, url, body, headers, timeout
        self._egress = egress
        self._conn: _Connection | None = None

    async def __aenter__(self) -> Response:
        pool, line = self._client._route(self._url, self._egress)
        self._pool = pool
        head = [line]
        for k, v in self._headers.items():
            head.append(f"{k}: {v}\r\n".encode("latin-1"))
        head.append(b"Content-Length: %d\r\nAccept-Encoding: identity\r\n\r\n" % len(self._body))
        raw = b"".join(head)
        lines = len(self._headers) + 3 + pool.head_lines
        # Exactly our own CRLFs and no other control byte: a CR/LF inside a header would forge
        # lines, a NUL cut them (two C passes, about 0.3 us).
        if raw.count(b"\r\n") != lines or len(raw.translate(None, _CONTROLS)) != len(raw) - 2 * lines:
            raise UnsafeRequest("an upstream header name or value contains a line break or a control character")
        conn = self._conn = await pool.connect(self._timeout)
        reused = conn.used
        try:
            await conn.send(raw, self._body)
        except BaseException as exc:  # cancelled, timed out or dropped before the headers: never reused
            conn.close()
            if not isinstance(exc, Disconnected) or exc.started or not reused:
                raise
            # A kept-alive connection closed by the upstream (its idle timeout) as the request
            # went out, before any byte of an answer: the request was not served. Sent once
            # more on a new connection, as aiohttp does; the target did nothing wrong.
            conn = self._conn = await pool.connect(self._timeout, fresh=True)
            try:
                await conn.send(raw, self._body)
            except BaseException:
                conn.close()
                raise
        assert conn.response is not None
        return conn.response

    async def __aexit__(self, *exc: object) -> None:
        conn = self._conn
        if conn is not None:
            self._pool.release(conn)
