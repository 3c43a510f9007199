"""The upstream HTTP/1.1 client: keep-alive connection pools on asyncio protocols, responses
parsed by httptools (llhttp).

Why not aiohttp's client: a provider call is always the same shape (one POST with a small
JSON body, a JSON or SSE answer), and aiohttp's general client (request/response objects,
cookie jar, redirects, trace signals, payload and stream layers) spent more CPU per call
than all of aiogw's own routing, limits, cost and logging together (see the README's
performance section). Here a request is one `transport.write`, and each body piece the
parser hands over is passed on as is.

Here: the client (pools by origin, the request line cached per URL) and one exchange. Its
parts: `request_head` (what is written), `connection` (one connection and the response it
parses), `pool` (connections to one origin), `errors` (what it raises), `dial` and `egress`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from urllib.parse import urlsplit

from aiogw.upstream.connection import HIGH_WATER, MAX_BODY_BYTES, MAX_HEADER_BYTES, Connection, Response
from aiogw.upstream.egress import Egress
from aiogw.upstream.errors import CannotConnect, ConnectTimeout, Disconnected, ProtocolError, UnsafeRequest, tls_reason
from aiogw.upstream.pool import Pool
from aiogw.upstream.request_head import check_request_target, encode_head, request_line

# The client's API, as callers use it (`from aiogw.upstream import http; http.Client`); the
# parts live in the modules named above.
__all__ = [
    "HIGH_WATER",
    "MAX_BODY_BYTES",
    "MAX_HEADER_BYTES",
    "CannotConnect",
    "Client",
    "ConnectTimeout",
    "Disconnected",
    "ProtocolError",
    "Response",
    "UnsafeRequest",
    "check_request_target",
    "tls_reason",
]


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
            auth = pool.proxy.authorization if pool.head_lines == 3 and pool.proxy is not None else None
            line = request_line(path, pool.target_prefix, pool.host_header, auth)
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
        self._conn: Connection | None = None

    async def __aenter__(self) -> Response:
        pool, line = self._client._route(self._url, self._egress)
        self._pool = pool
        raw = encode_head(line, pool.head_lines, self._headers, len(self._body))
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
