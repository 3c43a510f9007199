"""Thousands of malformed requests, none answered with a 5xx, none dropped, every refusal
OpenAI-shaped, and the gateway serving afterwards.

Hypothesis builds each request from a body (random JSON, chat requests with wrong types,
deep nesting, invalid UTF-8, truncations, huge numbers), a Content-Encoding and what the
body really is (compressed or not, cut short, a compression bomb), a Content-Type, the
`x-aiogw-*` headers, and the framing (a Content-Length that is right, short or long, none,
two of them, chunked or broken chunking). Requests go over a bare socket: no client library
sends most of these. The gateway and the provider simulator run on their own event loop in
a thread, so that Hypothesis can drive a plain synchronous test.

Examples are derandomized (the same cases every run, so the suite is not flaky); set
AIOGW_FUZZ_RANDOM=1 to explore new ones, and AIOGW_FUZZ_FULL=1 for the full 2,000 rather
than the everyday 400.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import threading
import zlib

import pytest
import raw_http
from aiohttp import web
from conftest import examples, gateway_config
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from aiogw.bench.simulator import start_simulator
from aiogw.server.app import GatewayRunner, create_app

MAX_BODY = 64 * 1024
BOMB = gzip.compress(b'{"model": "fast", "messages": [{"role": "user", "content": "' + b"a" * (4 * MAX_BODY) + b'"}]}')


@pytest.fixture(scope="module")
def port():
    ready = threading.Event()
    box: dict = {}

    async def serve() -> None:
        sim = await start_simulator()
        cfg = gateway_config(
            sim, server={"host": "127.0.0.1", "port": 0, "max_body_bytes": MAX_BODY, "body_timeout_s": 0.2}
        )
        runner = GatewayRunner(create_app(cfg), handler_cancellation=True, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        box["port"], box["stop"], box["loop"] = runner.addresses[0][1], asyncio.Event(), asyncio.get_running_loop()
        ready.set()
        await box["stop"].wait()
        await runner.cleanup()
        await sim.close()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(30), "the gateway did not start"
    yield box["port"]
    box["loop"].call_soon_threadsafe(box["stop"].set)
    thread.join(30)


# --- bodies -------------------------------------------------------------------------------

SCALARS = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
ROLES = st.sampled_from(["user", "system", "developer", "assistant", "tool", "function", "robot", ""])
MESSAGE = st.fixed_dictionaries(
    {},
    optional={"role": ROLES | JSON, "content": st.text(max_size=30) | JSON, "tool_call_id": st.text(max_size=8) | JSON,
              "tool_calls": JSON, "name": JSON},
)  # fmt: skip
CHAT = st.fixed_dictionaries(
    {"model": st.sampled_from(["fast", "compat-model", "nope", "sim/sim-x", "ghost/x"]) | JSON},
    optional={
        "messages": st.lists(MESSAGE, max_size=3) | JSON, "stream": st.booleans() | JSON, "stream_options": JSON,
        "temperature": st.floats(-3, 3) | JSON, "top_p": JSON, "max_tokens": st.integers(-5, 2**65) | JSON,
        "n": st.integers(-1, 200) | JSON, "stop": JSON, "tools": JSON, "tool_choice": JSON, "response_format": JSON,
        "logit_bias": JSON, "seed": JSON, "metadata": JSON, "user": JSON, "input": JSON,
    },
)  # fmt: skip


@st.composite
def deep(draw: st.DrawFn) -> bytes:
    n = draw(st.integers(1, 3000))
    opener, leaf, closer = draw(st.sampled_from([("[", "", "]"), ('{"a":', "1", "}")]))
    nested = opener * n + leaf + closer * draw(st.sampled_from([n, n, max(0, n - 1)]))  # sometimes unbalanced
    where = draw(st.sampled_from(["body", "metadata", "parameters", "content", "message"]))
    msg = '[{"role": "user", "content": "hi"}]'
    if where == "body":
        return nested.encode()
    if where == "parameters":
        tools = f'[{{"type": "function", "function": {{"name": "f", "parameters": {{"x": {nested}}}}}}}]'
        return (f'{{"model": "fast", "messages": {msg}, "tools": {tools}}}').encode()
    if where == "content":
        return (f'{{"model": "fast", "messages": [{{"role": "user", "content": {nested}}}]}}').encode()
    if where == "message":
        return (f'{{"model": "fast", "messages": [{{"role": "user", "content": "hi", "x": {nested}}}]}}').encode()
    return (f'{{"model": "compat-model", "messages": {msg}, "metadata": {nested}}}').encode()


@st.composite
def body(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["chat", "chat", "chat", "json", "deep", "bytes"]))
    if kind == "chat":
        data = json.dumps(draw(CHAT)).encode()  # NaN and Infinity come out as invalid JSON
    elif kind == "json":
        data = json.dumps(draw(JSON)).encode()
    elif kind == "deep":
        data = draw(deep())
    else:
        data = draw(st.binary(max_size=300))
    how = draw(st.sampled_from(["as is"] * 6 + ["truncate", "invalid utf-8", "nul", "bom", "flip"]))
    if how == "truncate" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif how == "invalid utf-8":
        at = draw(st.integers(0, len(data)))
        data = (
            data[:at] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"])) + data[at:]
        )
    elif how == "nul":
        data = data.replace(b'"hi"', b'"h\x00i"') + b"\x00"
    elif how == "bom":
        data = b"\xef\xbb\xbf" + data
    elif how == "flip" and data:
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([data[at] ^ (1 << draw(st.integers(0, 7)))]) + data[at + 1 :]
    return data


def compress(data: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(data)
    if how == "zlib":
        return zlib.compress(data)
    raw = zlib.compressobj(wbits=-15)
    return raw.compress(data) + raw.flush()


ENCODINGS = [None, "gzip", "deflate", "identity", "br", "zstd", "foo", "gzip, deflate", "GZIP", " gzip ", "", "x-gzip"]


@st.composite
def http_request(draw: st.DrawFn) -> bytes:
    data = draw(body())
    encoding = draw(st.sampled_from(ENCODINGS))
    really = draw(
        st.sampled_from(["as declared", "as declared", "plain", "gzip", "zlib", "raw deflate", "cut short", "bomb"])
    )
    if really == "as declared":
        really = {"gzip": "gzip", "deflate": "zlib", "GZIP": "gzip", " gzip ": "gzip"}.get(encoding or "", "plain")
    if really == "bomb":
        data = BOMB
    elif really == "cut short":
        packed = gzip.compress(data)
        data = packed[: draw(st.integers(0, len(packed) - 1))]
    elif really != "plain":
        data = compress(data, {"raw deflate": "raw"}.get(really, really))
    headers = {}
    if encoding is not None:
        headers["content-encoding"] = encoding
    content_type = draw(
        st.sampled_from(
            [
                None,
                "application/json",
                "text/plain",
                "application/x-www-form-urlencoded",
                "multipart/form-data; boundary=x",
                "application/json; charset=latin-1",
                "\x7f",
            ]
        )
    )
    if content_type is not None:
        headers["content-type"] = content_type
    for name, values in (
        ("x-aiogw-timeout-ms", ["0", "-5", "abc", "1e400", "100"]),
        ("x-aiogw-strategy", ["fastest", "lowest-cost", ""]),
        ("x-aiogw-fallbacks", ["", ",", "nope", "compat-model", "a," * 20]),
        ("x-aiogw-tags", ["team=x", "bad tag", "=", "k=" + "v" * 300]),
    ):
        if draw(st.integers(0, 9)) == 0:
            headers[name] = draw(st.sampled_from(values))
    framing = draw(
        st.sampled_from(
            ["exact"] * 6 + ["short", "long", "none", "chunked", "broken chunks", "two lengths", "negative"]
        )
    )
    if framing == "exact":
        pass
    elif framing == "short":
        headers["content-length"] = str(draw(st.integers(0, max(0, len(data) - 1))))
    elif framing == "long":  # the rest never comes: the body timeout answers
        headers["content-length"] = str(len(data) + draw(st.integers(1, 100)))
    elif framing == "none":
        headers["content-length"] = "0"
    elif framing == "two lengths":
        headers["content-length"] = f"{len(data)}\r\ncontent-length: {len(data) + 1}"
    elif framing == "negative":
        headers["content-length"] = "-1"
    else:
        headers["transfer-encoding"] = "chunked"
        cut = draw(st.integers(0, len(data)))
        pieces = [p for p in (data[:cut], data[cut:]) if p]
        data = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
        if framing == "broken chunks":
            data = draw(st.sampled_from([b"zz\r\n", b"ffffffffffffffffff\r\n", b"-1\r\n", b"5\r\nab"])) + data
    path = draw(st.sampled_from(["/v1/chat/completions"] * 5 + ["/v1/embeddings", "/v1/models/fast", "/nope"]))
    close = draw(st.booleans())
    req = raw_http.request(path, data, headers, close=close)
    if not close:  # keep-alive: a well-formed request follows on the same connection
        req += raw_http.request("/healthz", b"", method="GET")
    return req


SETTINGS = settings(
    max_examples=examples(2000),
    deadline=None,
    database=None,
    derandomize=not os.environ.get("AIOGW_FUZZ_RANDOM"),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


def test_malformed_requests_get_openai_shaped_4xx_and_the_gateway_keeps_serving(port):
    @SETTINGS
    @given(http_request())
    def check(data: bytes) -> None:
        # An answered connection the server keeps open (draining a refused body) is let go
        # after 0.15 s of silence: any further bytes it had ready have arrived by then.
        responses = raw_http.exchange_sync("127.0.0.1", port, data, settle_s=0.15)
        assert responses, "the connection was dropped without an answer"
        for r in responses:
            event(f"status {r.status}")  # pytest --hypothesis-show-statistics shows the spread
            assert r.status < 500, (r.status, r.body[:300])
            if r.status >= 400:
                r.error()

    check()
    (health,) = raw_http.exchange_sync("127.0.0.1", port, raw_http.request("/healthz", b"", method="GET"))
    assert health.status == 200
    ok = raw_http.request(
        "/v1/chat/completions", json.dumps({"model": "fast", "messages": [{"role": "user", "content": "hi"}]}).encode()
    )
    (answer,) = raw_http.exchange_sync("127.0.0.1", port, ok)
    assert answer.status == 200
