"""Micro-benchmark: CPU per upstream call of aiogw's HTTP client against aiohttp's
`ClientSession`, the claim of the README's performance section.

    python -m aiogw.bench.client_cost [--calls 3000] [--streams 600] [--reps 3] [--concurrency 8]

The upstream is a fixed-answer mock in its own process (pinned to another core than this
one when there are two or more): far cheaper per request than either client, so the client
is what limits the pace and only its CPU is counted, this process's CPU time over a batch
of calls divided by the calls. Each client does what dispatch does with a response: a
non-streaming call reads the whole body; a stream (20 content chunks in OpenAI's format,
written one event-loop turn apart, so that they arrive as separate reads as they do from a
provider) is read piece by piece as it arrives. The clients alternate within each
repetition; medians are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

import aiohttp
import orjson

from aiogw.bench.chunk_cost import _openai
from aiogw.bench.run import _cpu_plan, _pin, request_body, start_listening
from aiogw.upstream import http

HEADERS = {"content-type": "application/json", "authorization": "Bearer sk-bench-client-cost"}

Call = Callable[[bytes], Awaitable[int]]  # one request -> bytes of body read


class _Lean:
    name = "aiogw upstream_http"

    def __init__(self, url: str, concurrency: int) -> None:
        self.url, self.client = url, http.Client(limit_per_host=concurrency)

    async def call(self, body: bytes) -> int:
        async with self.client.post(self.url, body, HEADERS, 5.0) as r:
            n = 0
            async for piece in r.iter_any():
                n += len(piece)
            assert r.status == 200, r.status
            return n

    async def close(self) -> None:
        await self.client.close()


class _Aiohttp:
    name = "aiohttp ClientSession"

    def __init__(self, url: str, concurrency: int) -> None:
        # As the gateway used it: one session, a pool per host, DNS cached, no session timeout.
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=concurrency, ttl_dns_cache=300, keepalive_timeout=60)
        self.url = url
        self.session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None, connect=5))

    async def call(self, body: bytes) -> int:
        async with self.session.post(self.url, data=body, headers=HEADERS) as r:
            n = 0
            async for piece in r.content.iter_any():
                n += len(piece)
            assert r.status == 200, r.status
            return n

    async def close(self) -> None:
        await self.session.close()


class _Mock(asyncio.Protocol):
    """The upstream: a fixed chat completion, or a fixed 20-chunk stream (chunked
    encoding, one chunk per event-loop turn)."""

    _completion = orjson.dumps({
        "id": "chatcmpl-b", "object": "chat.completion", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Simulated reply " * 10},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 20, "total_tokens": 25},
    })  # fmt: skip
    UNARY = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(_completion),
        _completion,
    )
    STREAM_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    CHUNKS = [b"%x\r\n%s\r\n" % (len(e), e) for e in _openai(20)] + [b"0\r\n\r\n"]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buf = b""
        self.loop = asyncio.get_running_loop()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            length = 0
            for line in self.buf[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                return
            body, self.buf = self.buf[end + 4 : end + 4 + length], self.buf[end + 4 + length :]
            if b'"stream":true' in body:
                self.transport.write(self.STREAM_HEAD)
                self._chunk(0)
            else:
                self.transport.write(self.UNARY)

    def _chunk(self, i: int) -> None:
        if not self.transport.is_closing():
            self.transport.write(self.CHUNKS[i])
            if i + 1 < len(self.CHUNKS):
                self.loop.call_soon(self._chunk, i + 1)


async def _serve() -> None:
    server = await asyncio.get_running_loop().create_server(_Mock, "127.0.0.1", 0)
    print(f"listening on http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.Event().wait()  # until terminated


async def _batch(call: Call, body: bytes, n: int, concurrency: int) -> float:
    """CPU µs per call for `n` calls, `concurrency` at a time."""
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await call(body)

    t0 = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.process_time() - t0) / n * 1e6


async def _measure(url: str, calls: int, streams: int, reps: int, concurrency: int) -> dict[str, dict[str, float]]:
    clients = [_Lean(url, concurrency), _Aiohttp(url, concurrency)]
    plain, stream = request_body("sim-bench", False), request_body("sim-bench", True)
    runs: dict[str, dict[str, list[float]]] = {c.name: {"unary": [], "stream": []} for c in clients}
    try:
        for c in clients:  # warm up: connections open, code paths hot
            await _batch(c.call, plain, 4 * concurrency, concurrency)
            await _batch(c.call, stream, 2 * concurrency, concurrency)
        for _ in range(reps):
            for c in clients:
                runs[c.name]["unary"].append(await _batch(c.call, plain, calls, concurrency))
                runs[c.name]["stream"].append(await _batch(c.call, stream, streams, concurrency))
    finally:
        for c in clients:
            await c.close()
    return {name: {k: statistics.median(v) for k, v in r.items()} for name, r in runs.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m aiogw.bench.client_cost", description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=3000, help="non-streaming calls per client and repetition")
    ap.add_argument("--streams", type=int, default=600, help="20-chunk streams per client and repetition")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument(
        "--loop", choices=["uvloop", "asyncio"], default="uvloop", help="the event loop (aiogw serves on uvloop)"
    )
    ap.add_argument("--no-pin", action="store_true", help="do not pin the mock upstream and this process apart")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # run as the mock upstream
    args = ap.parse_args(argv)
    if args.loop == "uvloop":
        import uvloop

        uvloop.install()
    if args.serve:
        asyncio.run(_serve())
        return 0
    mine, theirs = (None, None) if args.no_pin else _cpu_plan()
    mock = start_listening(
        [sys.executable, "-P", "-m", "aiogw.bench.client_cost", "--serve"], "the mock upstream", theirs
    )
    if mine:
        _pin(os.getpid(), mine)
    try:
        result = asyncio.run(
            _measure(f"{mock.url}/v1/chat/completions", args.calls, args.streams, args.reps, args.concurrency)
        )
    finally:
        mock.stop()
    lean, full = result[_Lean.name], result[_Aiohttp.name]
    print(f"CPU µs per call, median of {args.reps} ({args.calls} calls, {args.streams} streams, "
          f"concurrency {args.concurrency}, {args.loop})")  # fmt: skip
    print("| client | non-streaming | 20-chunk stream |")
    print("| --- | --- | --- |")
    for name, r in result.items():
        print(f"| {name} | {r['unary']:.1f} | {r['stream']:.1f} |")
    print(f"| aiohttp / aiogw | {full['unary'] / lean['unary']:.2f}× | {full['stream'] / lean['stream']:.2f}× |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
