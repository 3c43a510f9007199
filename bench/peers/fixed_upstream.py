"""A fixed-answer OpenAI upstream for bench/peers/run.py: every target (and `direct`) gets
the same 400-character answer, whole or as a stream of N content chunks, each chunk its
own socket write as a provider sends them.

Why not the simulator (bench/simulator.py): it builds every answer per request (seeded
words, ids, usage; one JSON encode per chunk) on aiohttp's server, for tests that need a
provider's behaviour. Here the upstream shares a core with the load generator, so what it
costs per request caps the `direct` row and can throttle a fast gateway. This one answers
from bytes encoded once, on a bare asyncio protocol with httptools: measured with wrk on
one core, about a tenth of the simulator's CPU per non-streaming answer (11 against
102 µs) and half per 20-chunk stream (108 against 191 µs, nearly all of it the 22 socket
writes). It checks nothing but the JSON body: any key, any model name (echoed back).

    python bench/peers/fixed_upstream.py --port 9100 [--chunks 20]
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import httptools
import orjson

CONTENT = ("aiogw relays this fixed answer from a mock upstream so every gateway is measured "
           "on the same bytes. ") * 4  # fmt: skip
CONTENT = CONTENT[:400]
USAGE = {"prompt_tokens": 40, "completion_tokens": 100, "total_tokens": 140}


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _head(status: bytes, ctype: bytes, length: int | None = None) -> bytes:
    framing = b"Transfer-Encoding: chunked" if length is None else b"Content-Length: %d" % length
    return b"HTTP/1.1 " + status + b"\r\nContent-Type: " + ctype + b"\r\n" + framing + b"\r\n\r\n"


def _error(status: bytes, message: str) -> bytes:
    body = orjson.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}})
    return _head(status, b"application/json", len(body)) + body


class Answers:
    """The encoded answers, per (model, stream, include_usage), made on first use."""

    MAX_CACHED = 64  # model names are the caller's: keep the cache bounded

    def __init__(self, chunks: int) -> None:
        n = min(chunks, len(CONTENT))
        self.pieces = [CONTENT[len(CONTENT) * i // n : len(CONTENT) * (i + 1) // n] for i in range(n)]
        self._cache: dict[tuple[str, bool, bool], list[bytes]] = {}

    def get(self, model: str, stream: bool, include_usage: bool) -> list[bytes]:
        key = (model, stream, include_usage)
        writes = self._cache.get(key)
        if writes is None:
            writes = self._stream(model, include_usage) if stream else self._whole(model)
            if len(self._cache) < self.MAX_CACHED:
                self._cache[key] = writes
        return writes

    def _whole(self, model: str) -> list[bytes]:
        body = orjson.dumps({
            "id": "chatcmpl-fixed", "object": "chat.completion", "created": 1700000000, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": CONTENT, "refusal": None},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": USAGE,
        })  # fmt: skip
        return [_head(b"200 OK", b"application/json", len(body)) + body]

    def _stream(self, model: str, include_usage: bool) -> list[bytes]:
        base = {"id": "chatcmpl-fixed", "object": "chat.completion.chunk", "created": 1700000000, "model": model}
        last = len(self.pieces) - 1
        events = []
        for i, piece in enumerate(self.pieces):
            delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": "stop" if i == last else None}
            events.append({**base, "choices": [choice], **({"usage": None} if include_usage else {})})
        if include_usage:
            events.append({**base, "choices": [], "usage": USAGE})
        writes = [_chunked(b"data: " + orjson.dumps(e) + b"\n\n") for e in events]
        writes[0] = _head(b"200 OK", b"text/event-stream") + writes[0]
        writes.append(_chunked(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        return writes


class Connection(asyncio.Protocol):
    """One client connection: HTTP/1.1 keep-alive, requests answered in order as they end."""

    def __init__(self, answers: Answers) -> None:
        self.answers = answers
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.write(_error(b"400 Bad Request", "not HTTP/1.1"))
            self.transport.close()

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        transport = self.transport
        assert transport is not None
        url, self.url = self.url, b""
        raw, self.body = b"".join(self.body), []
        for data in self.answer(self.parser.get_method(), url.split(b"?", 1)[0], raw):
            transport.write(data)  # one write per event: a stream arrives as a provider's would
        if not self.parser.should_keep_alive():
            transport.close()

    def answer(self, method: bytes, path: bytes, raw: bytes) -> list[bytes]:
        if path in (b"/v1/chat/completions", b"/chat/completions") and method == b"POST":
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                body = None
            if not isinstance(body, dict):
                return [_error(b"400 Bad Request", "the body is not a JSON object")]
            model = body.get("model")
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            return self.answers.get(model if isinstance(model, str) else "", body.get("stream") is True, include_usage)
        if path == b"/health" and method == b"GET":
            return [_head(b"200 OK", b"text/plain", 2) + b"ok"]
        return [_error(b"404 Not Found", f"no route {method.decode()} {path.decode('latin-1')}")]


async def serve(host: str, port: int, chunks: int) -> None:
    answers = Answers(chunks)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(answers), host, port, backlog=4096)
    print(f"fixed upstream listening on http://{host}:{server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--chunks", type=int, default=20, help="content chunks per streamed answer")
    args = ap.parse_args()
    if args.chunks < 1:
        ap.error("--chunks must be at least 1")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args.host, args.port, args.chunks))


if __name__ == "__main__":
    main()
