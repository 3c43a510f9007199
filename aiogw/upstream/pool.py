"""The connections to one upstream origin: idle ones kept alive, a bound on how many are
open, addresses dialled (the host's or the proxy's) and cached."""

from __future__ import annotations

import asyncio
import collections
import socket
import ssl
from typing import TYPE_CHECKING

from aiogw.upstream import dial
from aiogw.upstream.connection import Connection
from aiogw.upstream.egress import Egress
from aiogw.upstream.errors import CannotConnect, ConnectTimeout, tls_reason

if TYPE_CHECKING:
    from aiogw.upstream.http import Client


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
        self.idle: list[Connection] = []
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

    async def connect(self, timeout: float | None, *, fresh: bool = False) -> Connection:
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

    def _idle_one(self) -> Connection | None:
        """The most recently used idle connection still fit to use; stale ones are closed."""
        now = self.client.loop.time()
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed and now - conn.idle_since < self.client.keepalive_s:
                return conn
            conn.close()
        return None

    async def _dial(self, loop: asyncio.AbstractEventLoop) -> Connection:
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
                lambda: Connection(self, loop),
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

    def release(self, conn: Connection) -> None:
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
