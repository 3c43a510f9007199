"""HTTP/1.1 over a bare socket, for requests no client library will send: bodies that do
not match their Content-Length, broken chunking, compressed bytes that are not what their
Content-Encoding says. Send bytes, read until the server closes, split the responses."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from dataclasses import dataclass


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def error(self) -> dict:
        """The OpenAI error object of an error answer (asserting its shape)."""
        assert self.headers.get("content-type", "").startswith("application/json"), self
        err = json.loads(self.body)["error"]
        assert set(err) == {"message", "type", "param", "code"}, err
        assert isinstance(err["message"], str) and err["message"], err
        return err


def request(
    path: str, body: bytes, headers: dict[str, str] | None = None, *, method: str = "POST", close: bool = True
) -> bytes:
    """A request with an exact Content-Length unless `headers` sets its own framing."""
    h = {"host": "gateway", **(headers or {})}
    if "content-length" not in h and "transfer-encoding" not in h:
        h["content-length"] = str(len(body))
    if close:
        h["connection"] = "close"
    head = "".join(f"{k}: {v}\r\n" for k, v in h.items())
    return f"{method} {path} HTTP/1.1\r\n{head}\r\n".encode() + body


async def exchange(url: str, data: bytes, *, count: int | None = None, timeout: float = 10.0) -> list[Response]:
    """Send `data` to the host:port of `url`; read responses until the server closes the
    connection, or until `count` responses came (a server may keep a connection open after
    answering, e.g. while it drains a refused body)."""
    host, port = _address(url)
    reader, writer = await asyncio.open_connection(host, port)
    raw = b""
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                raw += chunk
                if count is not None and len(_split(raw)[0]) >= count:
                    break
    finally:
        writer.close()
    return parse(raw)


def exchange_sync(host: str, port: int, data: bytes, *, timeout: float = 10.0, settle_s: float = 0.5) -> list[Response]:
    """Send `data`; read until the server closes the connection, or until its answers are
    complete and it has sent nothing more for `settle_s` (a server may hold a connection
    open after answering, e.g. while it drains a refused body)."""
    deadline = time.monotonic() + timeout
    raw = b""
    with socket.create_connection((host, port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before taking everything: read the answer
        while time.monotonic() < deadline:
            done, rest = _split(raw)
            s.settimeout(settle_s if done and not rest else max(0.01, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                if done and not rest:
                    break
                continue
            except ConnectionResetError:
                break
            if not chunk:
                break
            raw += chunk
    return parse(raw)


def parse(raw: bytes) -> list[Response]:
    """Every response in `raw`; a truncated one is an AssertionError."""
    out, rest = _split(raw)
    assert not rest, f"truncated response: {rest[:200]!r}"
    return out


def _split(raw: bytes) -> tuple[list[Response], bytes]:
    """The complete responses at the start of `raw`, and what follows them."""
    out = []
    while raw:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        if not sep:
            break
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding") == "chunked":
            taken = _dechunk(rest)
            if taken is None:
                break
            body, after = taken
        else:
            n = int(headers.get("content-length", "0"))
            if len(rest) < n:
                break
            body, after = rest[:n], rest[n:]
        out.append(Response(int(status_line.split(" ", 2)[1]), headers, body))
        raw = after
    return out, raw


def _dechunk(raw: bytes) -> tuple[bytes, bytes] | None:
    body = []
    while True:
        size_line, sep, raw = raw.partition(b"\r\n")
        if not sep:
            return None
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return (b"".join(body), raw[2:]) if raw.startswith(b"\r\n") else None
        if len(raw) < size + 2:
            return None
        body.append(raw[:size])
        raw = raw[size + 2 :]


def _address(url: str) -> tuple[str, int]:
    hostport = url.split("://", 1)[1].split("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    return host, int(port)
