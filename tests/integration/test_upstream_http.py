"""The upstream HTTP/1.1 client against real servers on loopback: raw asyncio servers that
write exact bytes (framings, faults, misbehaviour) and a TLS server with a test CA."""

from __future__ import annotations

import asyncio
import gzip
import socket
import ssl
from collections.abc import Awaitable, Callable

import pytest
import trustme
from conftest import until

from aiogw.upstream import http

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "RawServer"], Awaitable[None]]


class RawServer:
    """Accepts connections and hands each to `handler`; records what the client sent."""

    def __init__(self, handler: Handler, ssl_ctx: ssl.SSLContext | None = None) -> None:
        self.handler, self.ssl_ctx = handler, ssl_ctx
        self.connections = 0
        self.open = 0
        self.max_open = 0
        self.requests: list[bytes] = []  # request heads
        self.closed_by_client = asyncio.Event()

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0, ssl=self.ssl_ctx)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    def url(self, path: str = "/v1/chat/completions", scheme: str = "http", host: str = "127.0.0.1") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        try:
            await self.handler(reader, writer, self)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client went away, or the test ended
        finally:
            self.open -= 1
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests.append(head)
        length = next(
            int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
        )
        return await reader.readexactly(length)


def _head(status: int = 200, **headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status} X"] + [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _echo_forever(reader, writer, server) -> None:
    while True:
        body = await server.read_request(reader)
        writer.write(_head(content_length=str(len(body)), content_type="application/json") + body)
        await writer.drain()


@pytest.fixture
async def client():
    c = http.Client(limit_per_host=8, keepalive_s=30)
    yield c
    await c.close()


async def test_keep_alive_carries_many_requests_on_one_connection(client):
    async with RawServer(_echo_forever) as srv:
        for i in range(5):
            async with client.post(
                srv.url(), b'{"n":%d}' % i, {"content-type": "application/json", "authorization": "Bearer k"}, 5
            ) as r:
                assert r.status == 200 and r.headers["content-type"] == "application/json"
                assert await r.read() == b'{"n":%d}' % i
        assert srv.connections == 1
        head = srv.requests[0].decode()
        assert head.startswith("POST /v1/chat/completions HTTP/1.1\r\n")
        assert f"Host: 127.0.0.1:{srv.port}\r\n" in head and "Content-Length: 7\r\n" in head
        assert "authorization: Bearer k\r\n" in head and "Accept-Encoding: identity" in head


async def test_a_stream_arrives_piece_by_piece_before_it_ends(client):
    release = asyncio.Event()

    async def sse(reader, writer, server):
        await server.read_request(reader)
        writer.write(_head(content_type="text/event-stream", transfer_encoding="chunked"))
        for part in (b"data: 1\n\n", b"data: 2\n\n"):
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
        await writer.drain()
        await release.wait()  # the client must have both events before the stream ends
        writer.write(b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with RawServer(sse) as srv, client.post(srv.url(), b"{}", {}, 5) as r:
        got = b""
        async for piece in r.iter_any():
            got += piece
            if got == b"data: 1\n\ndata: 2\n\n":
                release.set()
        assert got == b"data: 1\n\ndata: 2\n\ndata: [DONE]\n\n"


async def test_a_body_without_length_runs_until_the_connection_closes(client):
    async def close_delimited(reader, writer, server):
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of ")
        await writer.drain()
        writer.write(b"it")
        await writer.drain()
        writer.close()

    async with RawServer(close_delimited) as srv:
        async with client.post(srv.url(), b"{}", {}, 5) as r:
            assert await r.read() == b"all of it"
        async with client.post(srv.url(), b"{}", {}, 5) as r:  # that connection is not reused
            assert await r.read() == b"all of it"
        assert srv.connections == 2


async def test_gzip_is_decoded_when_a_server_ignores_identity(client):
    payload = b'{"choices":[]}' * 50

    async def gz(reader, writer, server):
        await server.read_request(reader)
        body = gzip.compress(payload)
        writer.write(_head(content_encoding="gzip", content_length=str(len(body))) + body)
        await writer.drain()

    async with RawServer(gz) as srv, client.post(srv.url(), b"{}", {}, 5) as r:
        assert await r.read() == payload


async def test_informational_answers_are_skipped(client):
    async def early_hints(reader, writer, server):
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n" + _head(201, content_length="2") + b"ok")
        await writer.drain()

    async with RawServer(early_hints) as srv, client.post(srv.url(), b"{}", {}, 5) as r:
        assert r.status == 201 and "link" not in r.headers and await r.read() == b"ok"


async def test_an_abandoned_stream_closes_its_connection(client):
    async def endless(reader, writer, server):
        await server.read_request(reader)
        writer.write(_head(content_type="text/event-stream", transfer_encoding="chunked"))
        try:
            while True:
                writer.write(b"9\r\ndata: x\n\n\r\n")
                await writer.drain()
                await asyncio.sleep(0.01)
        finally:
            server.closed_by_client.set()

    async with RawServer(endless) as srv:
        async with client.post(srv.url(), b"{}", {}, 5) as r:
            async for _ in r.iter_any():
                break  # the caller stops reading (its client went away)
        await asyncio.wait_for(srv.closed_by_client.wait(), 5)
        assert not client._pools[("http", "127.0.0.1", srv.port)].idle


async def test_a_timeout_before_the_headers_never_returns_the_connection(client):
    async def silent(reader, writer, server):
        await server.read_request(reader)
        await reader.read()  # never answers; returns when the client closes
        server.closed_by_client.set()

    async with RawServer(silent) as srv:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2), client.post(srv.url(), b"{}", {}, 5):
                pass
        await asyncio.wait_for(srv.closed_by_client.wait(), 5)
        assert srv.open == 0


async def test_an_idle_connection_the_server_closed_is_not_used(client):
    async def one_then_close(reader, writer, server):
        await server.read_request(reader)
        writer.write(_head(content_length="2") + b"ok")  # keep-alive by default in HTTP/1.1
        await writer.drain()
        # then the server's idle timeout closes it

    async with RawServer(one_then_close) as srv:
        for _ in range(3):
            async with client.post(srv.url(), b"{}", {}, 5) as r:
                assert await r.read() == b"ok"
            # the server's FIN arrives while the connection is idle
            pool = client._pools[("http", "127.0.0.1", srv.port)]
            await until(lambda pool=pool: all(conn.closed for conn in pool.idle))
            assert all(conn.closed for conn in pool.idle)
        assert srv.connections == 3


async def test_faults_become_the_errors_dispatch_maps(client):
    async def close_at_once(reader, writer, server):
        await server.read_request(reader)

    async def close_mid_body(reader, writer, server):
        await server.read_request(reader)
        writer.write(_head(content_length="100") + b"partial")
        await writer.drain()

    async def garbage(reader, writer, server):
        await server.read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with RawServer(close_at_once) as srv:
        with pytest.raises(http.Disconnected) as exc:
            async with client.post(srv.url(), b"{}", {}, 5):
                pass
        assert exc.value.started is False
    async with RawServer(close_mid_body) as srv:
        with pytest.raises(http.Disconnected) as exc:
            async with client.post(srv.url(), b"{}", {}, 5) as r:
                await r.read()
        assert exc.value.started is True
    async with RawServer(garbage) as srv:
        with pytest.raises(http.ProtocolError, match="not HTTP/1.1"):
            async with client.post(srv.url(), b"{}", {}, 5):
                pass
    async with RawServer(garbage) as srv:
        port = srv.port
    with pytest.raises(http.CannotConnect) as refused:  # nothing listens there now
        async with client.post(f"http://127.0.0.1:{port}/v1", b"{}", {}, 5):
            pass
    assert refused.value.port == port and refused.value.cause.errno is not None


async def test_a_header_with_a_line_break_is_refused_before_anything_is_sent(client):
    async with RawServer(_echo_forever) as srv:
        with pytest.raises(ValueError, match="line break"):
            async with client.post(srv.url(), b"{}", {"x-note": "a\r\nx-injected: 1"}, 5):
                pass
        assert srv.connections == 0


@pytest.mark.parametrize(
    "path",
    [
        "/v1/x y",
        "/v1/x\r\nHost: evil",
        "/v1/x\ny",
        "/v1/x\ty",
        "/v1/x\x00y",
        "/v1/x%zz",
        "/v1/x#frag",
        "/v1/ü",
        '/v1/"x"',
    ],
    ids=repr,
)
async def test_a_request_target_outside_rfc_3986_is_refused_before_anything_is_sent(client, path):
    async with RawServer(_echo_forever) as srv:
        with pytest.raises(http.UnsafeRequest, match="outside RFC 3986"):
            async with client.post(srv.url(path), b"{}", {}, 5):
                pass
        assert srv.connections == 0  # (urlsplit alone drops tabs and line breaks and sends the rest)


@pytest.mark.parametrize("value", ["a\x00b", "a\nb", "a\rb", "a\x1bb"], ids=repr)
async def test_a_header_with_a_control_character_is_refused_before_anything_is_sent(client, value):
    async with RawServer(_echo_forever) as srv:
        with pytest.raises(http.UnsafeRequest, match="control character"):
            async with client.post(srv.url(), b"{}", {"x-note": value}, 5):
                pass
        assert srv.connections == 0


async def test_connections_per_host_are_capped_and_callers_wait_their_turn():
    async def slow(reader, writer, server):
        while True:
            await server.read_request(reader)
            await asyncio.sleep(0.05)
            writer.write(_head(content_length="2") + b"ok")
            await writer.drain()

    c = http.Client(limit_per_host=2)
    try:
        async with RawServer(slow) as srv:

            async def one() -> bytes:
                async with c.post(srv.url(), b"{}", {}, 5) as r:
                    return await r.read()

            assert await asyncio.gather(*(one() for _ in range(7))) == [b"ok"] * 7
            assert srv.max_open == 2 and srv.connections == 2
    finally:
        await c.close()


async def test_a_slow_reader_pauses_the_socket():
    async def firehose(reader, writer, server):
        await server.read_request(reader)
        writer.write(_head(content_type="text/event-stream", transfer_encoding="chunked"))
        part = b"data: " + b"x" * 16_000 + b"\n\n"
        for _ in range(400):  # 6.4 MB
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    c = http.Client()
    try:
        async with RawServer(firehose) as srv, c.post(srv.url(), b"{}", {}, 5) as r:
            pieces = r.iter_any()
            total = len(await anext(pieces))
            await until(lambda: r._conn._paused, every=0.01)
            assert r._conn._paused  # nobody reads: the transport stopped reading
            assert r._buffered < 3 * http.HIGH_WATER  # the last read before the pause at most
            async for piece in pieces:
                total += len(piece)
            assert total == 400 * 16_008
    finally:
        await c.close()


async def test_https_with_sni_and_the_host_name_checked():
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    c = http.Client(ssl_context=client_ctx)
    try:
        async with RawServer(_echo_forever, ssl_ctx=server_ctx) as srv:
            async with c.post(srv.url(scheme="https", host="localhost"), b"{}", {}, 5) as r:
                assert await r.read() == b"{}"
            assert f"Host: localhost:{srv.port}" in srv.requests[0].decode()
            # The certificate names localhost, not 127.0.0.1: verification must refuse it.
            with pytest.raises(http.CannotConnect):
                async with c.post(srv.url(scheme="https"), b"{}", {}, 5):
                    pass
    finally:
        await c.close()


async def test_a_handshake_that_never_finishes_is_a_connect_timeout():
    async def tcp_only(reader, writer, server):
        await reader.read()  # accepts TCP, never speaks TLS

    c = http.Client()
    try:
        async with RawServer(tcp_only) as srv:
            with pytest.raises(http.ConnectTimeout, match="within 0.2 s"):
                async with c.post(srv.url(scheme="https"), b"{}", {}, 0.2):
                    pass
    finally:
        await c.close()


async def test_chunks_that_arrive_together_come_out_as_one_piece(client):
    # One relay pass and one client write per wake-up, not per upstream chunk.
    async def three_in_one_write(reader, writer, server):
        await server.read_request(reader)
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (b"data: 1\n\n", b"data: 2\n\n", b"data: 3\n\n"))
        writer.write(_head(content_type="text/event-stream", transfer_encoding="chunked") + chunks + b"0\r\n\r\n")
        await writer.drain()

    async with RawServer(three_in_one_write) as srv, client.post(srv.url(), b"{}", {}, 5) as r:
        assert [p async for p in r.iter_any()] == [b"data: 1\n\ndata: 2\n\ndata: 3\n\n"]


async def test_connections_left_idle_past_the_keepalive_are_closed_while_the_pool_is_busy():
    c = http.Client(keepalive_s=0.2)
    try:
        async with RawServer(_echo_forever) as srv:

            async def one() -> None:
                async with c.post(srv.url(), b"{}", {}, 5) as r:
                    await r.read()

            await asyncio.gather(one(), one(), one())
            assert srv.open == 3
            for _ in range(8):  # one caller at a time keeps reusing the newest connection
                await one()
                await asyncio.sleep(0.05)  # time passing: the other two go past the keep-alive
            await until(lambda: srv.open == 1)
            assert srv.open == 1  # the two left behind were closed, not kept forever
    finally:
        await c.close()


async def test_oversized_headers_and_bodies_are_refused_not_held(client):
    async def huge_headers(reader, writer, server):
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n" + b"x-junk: " + b"j" * 1000 + b"\r\n")
        try:
            for _ in range(200):  # 200 KB of headers, never ending them
                writer.write(b"x-junk: " + b"j" * 1000 + b"\r\n")
                await writer.drain()
        except ConnectionError:
            pass

    async def big_body(reader, writer, server):
        await server.read_request(reader)
        writer.write(_head(content_length=str(3 * 1024 * 1024)))
        try:
            for _ in range(3 * 16):
                writer.write(b"b" * 65536)
                await writer.drain()
        except ConnectionError:
            pass

    async with RawServer(huge_headers) as srv:
        with pytest.raises(http.ProtocolError, match="headers exceed 64 KiB"):
            async with client.post(srv.url(), b"{}", {}, 5):
                pass
    async with RawServer(big_body) as srv:
        async with client.post(srv.url(), b"{}", {}, 5) as r:
            with pytest.raises(http.ProtocolError, match="larger than 2 MiB"):
                await r.read(limit=2 * 1024 * 1024)
        assert not client._pools[("http", "127.0.0.1", srv.port)].idle  # closed, not pooled


async def test_a_gzip_body_cut_short_is_a_protocol_error_not_a_partial_answer(client):
    body = gzip.compress(b'{"choices":[]}' * 200)
    cut = body[: len(body) // 2]

    async def truncated(reader, writer, server):
        await server.read_request(reader)
        # The framing is complete (the length matches what is sent); the gzip stream is not.
        writer.write(_head(content_encoding="gzip", content_length=str(len(cut))) + cut)
        await writer.drain()

    async def corrupt(reader, writer, server):
        await server.read_request(reader)
        junk = body[:10] + b"\x00" * 40
        writer.write(_head(content_encoding="gzip", content_length=str(len(junk))) + junk)
        await writer.drain()

    async with RawServer(truncated) as srv, client.post(srv.url(), b"{}", {}, 5) as r:
        with pytest.raises(http.ProtocolError, match="gzip body ends early"):
            await r.read()
    async with RawServer(corrupt) as srv, client.post(srv.url(), b"{}", {}, 5) as r:
        with pytest.raises(http.ProtocolError, match="cannot be decoded"):
            await r.read()


async def test_a_reused_connection_closed_before_any_byte_is_retried_once_on_a_fresh_one(client):
    # The server's idle timeout closes a kept-alive connection just as the next request is
    # written on it: nothing of that request was answered, so it is sent again elsewhere.
    async def closes_after_one(reader, writer, server):
        await server.read_request(reader)
        writer.write(_head(content_length="2") + b"ok")
        await writer.drain()
        if server.connections == 1:
            await server.read_request(reader)  # the second request arrives, then the close
            return
        await _echo_forever(reader, writer, server)

    async with RawServer(closes_after_one) as srv:
        for _ in range(2):
            async with client.post(srv.url(), b"{}", {}, 5) as r:
                assert await r.read() == b"ok"
        assert srv.connections == 2 and len(srv.requests) == 3


async def test_no_retry_when_the_connection_was_fresh_or_the_answer_had_started(client):
    async def answers_part_of_the_second(reader, writer, server):
        await server.read_request(reader)
        writer.write(_head(content_length="2") + b"ok")
        await writer.drain()
        await server.read_request(reader)
        writer.write(_head(content_length="100") + b"partial")  # bytes arrived: no retry
        await writer.drain()

    async def close_at_once(reader, writer, server):
        await server.read_request(reader)

    async with RawServer(answers_part_of_the_second) as srv:
        async with client.post(srv.url(), b"{}", {}, 5) as r:
            await r.read()
        with pytest.raises(http.Disconnected) as exc:
            async with client.post(srv.url(), b"{}", {}, 5) as r:
                await r.read()
        assert exc.value.started and srv.connections == 1
    async with RawServer(close_at_once) as srv:
        with pytest.raises(http.Disconnected):
            async with client.post(srv.url(), b"{}", {}, 5):
                pass
        assert srv.connections == 1  # a fresh connection is never retried


async def test_a_blackholed_first_address_costs_an_attempt_delay_not_the_connect_timeout(client):
    # A name with two addresses, the first of which never answers a SYN: a listener on
    # 127.0.0.2 whose accept queue is full (backlog 0, one connection queued, never
    # accepted). Only starting the second address beside it gets through within the
    # connect timeout; trying the addresses one after the other never reaches it.
    async with RawServer(_echo_forever) as srv:
        with socket.socket() as hole, socket.socket() as queued:
            hole.bind(("127.0.0.2", srv.port))
            hole.listen(0)
            queued.connect(("127.0.0.2", srv.port))
            url = srv.url(host="two-addresses.test")
            pool, _ = client._route(url)
            pool._addrs = [(socket.AF_INET, ("127.0.0.2", srv.port)), (socket.AF_INET, ("127.0.0.1", srv.port))]
            pool._addrs_until = float("inf")  # as if just resolved
            async with client.post(url, b"{}", {}, 3) as r:
                assert await r.read() == b"{}"
            assert srv.connections == 1


async def test_when_every_address_refuses_the_error_is_a_cannot_connect(client):
    async with RawServer(_echo_forever) as srv:
        port = srv.port
    url = f"http://two-addresses.test:{port}/v1"
    pool, _ = client._route(url)
    pool._addrs = [(socket.AF_INET, ("127.0.0.2", port)), (socket.AF_INET, ("127.0.0.1", port))]
    pool._addrs_until = float("inf")
    with pytest.raises(http.CannotConnect) as exc:
        async with client.post(url, b"{}", {}, 3):
            pass
    assert exc.value.host == "two-addresses.test" and exc.value.cause.errno is not None
    assert pool._addrs_until == 0.0  # resolved again next time
