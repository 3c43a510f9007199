"""Opening a TCP connection for the upstream client (`aiogw.upstream.http`): a host's
addresses raced the happy-eyeballs way, and a tunnel through an HTTP proxy (CONNECT).

Why not `loop.create_connection(host, port, happy_eyeballs_delay=...)`: uvloop, which aiogw
serves on, has no happy eyeballs, and the client keeps its own DNS cache; so the addresses
are raced here at the socket level and the winner handed to `create_connection(sock=...)`.
"""

from __future__ import annotations

import asyncio
import collections
import socket

from aiogw.upstream.egress import Proxy

# RFC 8305's recommended "connection attempt delay": the next address starts this long after
# the previous one if that has not connected (or at once when it failed).
HAPPY_EYEBALLS_DELAY_S = 0.25

Address = tuple[int, tuple]  # (family, sockaddr) as getaddrinfo gives them
MAX_PROXY_ANSWER = 16 * 1024


def interleave(addrs: list[Address]) -> list[Address]:
    """The resolver's order, with address families alternating (RFC 8305 §4): an unreachable
    IPv6 network costs one attempt delay, not one per IPv6 address."""
    by_family: dict[int, collections.deque[Address]] = {}
    for a in addrs:
        by_family.setdefault(a[0], collections.deque()).append(a)
    if len(by_family) < 2:
        return addrs
    out: list[Address] = []
    queues = list(by_family.values())
    while queues:
        for q in queues:
            out.append(q.popleft())
        queues = [q for q in queues if q]
    return out


async def _connect(loop: asyncio.AbstractEventLoop, family: int, sockaddr: tuple) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await loop.sock_connect(sock, sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


def _close_if_connected(task: asyncio.Task[socket.socket]) -> None:
    if not task.cancelled() and task.exception() is None:
        task.result().close()


async def happy_eyeballs(
    loop: asyncio.AbstractEventLoop, addrs: list[Address], delay: float = HAPPY_EYEBALLS_DELAY_S
) -> socket.socket:
    """A connected socket to the first of `addrs` that answers. Each address gets `delay`
    before the next one starts beside it (at once when it fails), so a blackholed address
    costs a fraction of a second instead of the whole connect timeout; the first to
    connect wins and the other attempts are closed. Raises the first address's error when
    none connects."""
    if len(addrs) == 1:
        return await _connect(loop, *addrs[0])
    todo = collections.deque(addrs)
    running: set[asyncio.Task[socket.socket]] = set()
    errors: list[BaseException] = []
    try:
        while todo or running:
            if todo:
                running.add(loop.create_task(_connect(loop, *todo.popleft())))
            done, _ = await asyncio.wait(running, timeout=delay if todo else None, return_when=asyncio.FIRST_COMPLETED)
            won: socket.socket | None = None
            for task in done:
                running.discard(task)
                exc = task.exception()
                if exc is not None:
                    errors.append(exc)
                elif won is None:
                    won = task.result()
                else:
                    task.result().close()
            if won is not None:
                return won
        raise errors[0] if errors else OSError("no address to connect to")
    finally:
        for task in running:  # still connecting: stop them; one that connected meanwhile is closed
            task.cancel()
            task.add_done_callback(_close_if_connected)


async def tunnel(loop: asyncio.AbstractEventLoop, sock: socket.socket, proxy: Proxy, host: str, port: int) -> None:
    """Turn `sock`, connected to `proxy`, into a tunnel to host:port (HTTP CONNECT), on the
    socket itself: TLS then starts over it as over a direct connection. Raises OSError
    saying what the proxy did (the caller names the proxy)."""
    authority = (f"[{host}]" if ":" in host else host).encode("idna") + b":%d" % port
    head = b"CONNECT " + authority + b" HTTP/1.1\r\nHost: " + authority + b"\r\n"
    if proxy.authorization is not None:
        head += b"Proxy-Authorization: " + proxy.authorization + b"\r\n"
    await loop.sock_sendall(sock, head + b"\r\n")
    answer = b""
    while b"\r\n\r\n" not in answer:  # nothing follows the answer until our TLS hello
        data = await loop.sock_recv(sock, 4096)
        if not data:
            raise OSError("closed the connection before answering CONNECT")
        answer += data
        if len(answer) > MAX_PROXY_ANSWER:
            raise OSError(f"answered CONNECT with more than {MAX_PROXY_ANSWER // 1024} KiB of headers")
    status_line = answer.split(b"\r\n", 1)[0].decode("latin-1")
    version, _, rest = status_line.partition(" ")
    status, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or not status.isdigit():
        raise OSError("answered CONNECT with something that is not HTTP/1.x")
    if not answer.endswith(b"\r\n\r\n"):
        raise OSError("sent data through the tunnel before it was used")
    if not 200 <= int(status) < 300:
        raise OSError(f"refused the tunnel: {status} {reason}".rstrip())
