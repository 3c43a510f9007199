"""Every bad input and every upstream failure gets an OpenAI-shaped answer with the right
status, and the gateway keeps serving afterwards."""

from __future__ import annotations

import gzip
import json
import socket
import zlib

import aiohttp
import openai
import pytest
import raw_http
from conftest import SIM_KEY, gateway_config, until
from sse_client import events

MSG = [{"role": "user", "content": "hi"}]


async def post(url, body, headers=None):
    async with aiohttp.ClientSession() as s:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        async with s.post(
            f"{url}/chat/completions", data=data, headers={"content-type": "application/json", **(headers or {})}
        ) as r:
            return r.status, r.headers.copy(), await r.read()


def error_of(body: bytes) -> dict:
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        (b"{not json", None, "invalid_json"),
        (b"[]", None, "invalid_type"),
        ({"messages": MSG}, "model", "missing_required_parameter"),
        ({"model": "fast"}, "messages", "missing_required_parameter"),
        ({"model": "fast", "messages": []}, "messages", "invalid_value"),
        ({"model": "fast", "messages": "hi"}, "messages", "invalid_value"),
        ({"model": "fast", "messages": MSG, "temperature": "hot"}, "temperature", "invalid_value"),
        ({"model": "fast", "messages": MSG, "temperature": 3}, "temperature", "invalid_value"),
        ({"model": "fast", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "invalid_value"),
        (
            {"model": "fast", "messages": [{"role": "tool", "content": "x"}]},
            "messages[0].tool_call_id",
            "missing_required_parameter",
        ),
        ({"model": "fast", "messages": MSG, "n": 0}, "n", "invalid_value"),
        ({"model": 5, "messages": MSG}, "model", "invalid_value"),
    ],
)
async def test_invalid_requests_get_400_naming_the_param(gateway, body, param, code):
    status, headers, raw = await post(gateway, body)
    assert status == 400
    err = error_of(raw)
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param
    assert err["code"] == code
    assert headers["x-request-id"]


async def test_unknown_model_is_404_and_lists_how_to_address(gateway):
    status, _, raw = await post(gateway, {"model": "gpt-nope", "messages": MSG})
    assert status == 404
    err = error_of(raw)
    assert err["code"] == "model_not_found" and err["param"] == "model"
    assert "/v1/models" in err["message"]


async def test_body_over_the_limit_is_413(sim, make_gateway):
    cfg = gateway_config(sim, server={"host": "127.0.0.1", "port": 0, "max_body_bytes": 4096})
    url, _ = await make_gateway(cfg)
    status, _, raw = await post(url, {"model": "fast", "messages": [{"role": "user", "content": "x" * 10_000}]})
    assert status == 413
    assert "4096" in error_of(raw)["message"]
    status, _, _ = await post(url, {"model": "fast", "messages": MSG})
    assert status == 200


GOOD = json.dumps({"model": "fast", "messages": MSG}).encode()
RAW_DEFLATE = zlib.compressobj(wbits=-15)  # "deflate" as some clients send it: no zlib header


@pytest.mark.parametrize(
    ("encoding", "body"),
    [("gzip", gzip.compress(GOOD)), ("deflate", zlib.compress(GOOD)), ("deflate", RAW_DEFLATE.compress(GOOD) + RAW_DEFLATE.flush()),
     ("identity", GOOD), ("GZIP", gzip.compress(GOOD))],
)  # fmt: skip
async def test_a_compressed_body_is_accepted(gateway, encoding, body):
    (r,) = await raw_http.exchange(
        gateway, raw_http.request("/v1/chat/completions", body, {"content-encoding": encoding})
    )
    assert r.status == 200, r.body


@pytest.mark.parametrize(
    ("encoding", "body", "code"),
    [("gzip", GOOD, "invalid_encoding"), ("deflate", GOOD, "invalid_encoding"), ("deflate", zlib.compress(GOOD)[:20], "invalid_encoding"),
     ("gzip", gzip.compress(GOOD)[:-12], "invalid_json")],  # cut short, gzip inflates to a JSON prefix
)  # fmt: skip
async def test_a_body_that_is_not_what_its_content_encoding_says_is_400(gateway, encoding, body, code):
    (r,) = await raw_http.exchange(
        gateway, raw_http.request("/v1/chat/completions", body, {"content-encoding": encoding})
    )
    assert r.status == 400
    err = r.error()
    assert err["code"] == code
    if code == "invalid_encoding":
        assert "not valid" in err["message"] and "Content-Encoding" in err["message"]
    (ok,) = await raw_http.exchange(gateway, raw_http.request("/v1/chat/completions", GOOD))
    assert ok.status == 200


@pytest.mark.parametrize("encoding", ["foo", "gzip, gzip", "x-gzip", "compress"])
async def test_an_unknown_content_encoding_is_415(gateway, encoding):
    (r,) = await raw_http.exchange(
        gateway, raw_http.request("/v1/chat/completions", GOOD, {"content-encoding": encoding})
    )
    assert r.status == 415
    err = r.error()
    assert err["code"] == "unsupported_content_encoding" and "gzip or deflate" in err["message"]


async def test_a_content_encoding_aiohttp_cannot_decode_is_415_before_any_handler(gateway):
    from aiohttp.compression_utils import HAS_BROTLI

    if HAS_BROTLI:
        pytest.skip("Brotli is installed: br bodies are decoded")
    (r,) = await raw_http.exchange(gateway, raw_http.request("/v1/chat/completions", GOOD, {"content-encoding": "br"}))
    assert r.status == 415 and r.error()["code"] == "unsupported_content_encoding"


async def test_a_compression_bomb_is_refused_at_the_body_limit(sim, make_gateway):
    url, _ = await make_gateway(gateway_config(sim, server={"host": "127.0.0.1", "port": 0, "max_body_bytes": 4096}))
    bomb = gzip.compress(b'{"model": "fast", "messages": [{"role": "user", "content": "' + b"a" * (64 << 20) + b'"}]}')
    assert len(bomb) < 100_000  # 64 MiB inflated
    # The answer comes at once; the connection then absorbs the rest (unread) for a while.
    (r,) = await raw_http.exchange(
        url, raw_http.request("/v1/chat/completions", bomb, {"content-encoding": "gzip"}), count=1
    )
    assert r.status == 413
    assert "4096" in r.error()["message"] and "decompressed" in r.error()["message"]
    small = gzip.compress(GOOD)  # under the limit once inflated: served
    (ok,) = await raw_http.exchange(url, raw_http.request("/v1/chat/completions", small, {"content-encoding": "gzip"}))
    assert ok.status == 200


async def test_a_content_length_over_the_limit_is_413_before_the_body_arrives(sim, make_gateway):
    url, _ = await make_gateway(gateway_config(sim, server={"host": "127.0.0.1", "port": 0, "max_body_bytes": 4096}))
    announced = raw_http.request("/v1/chat/completions", GOOD[:10], {"content-length": str(10 << 20)}, close=False)
    (r,) = await raw_http.exchange(url, announced, count=1)  # answered without waiting for 10 MiB
    assert r.status == 413 and "4096" in r.error()["message"]


async def test_a_body_that_does_not_arrive_in_time_is_408_and_the_connection_closed(sim, make_gateway):
    url, _ = await make_gateway(gateway_config(sim, server={"host": "127.0.0.1", "port": 0, "body_timeout_s": 0.2}))
    # A Content-Length promising more than is sent (a stalled or slow-loris client): the
    # answer comes when the timeout passes, then the server closes (exchange reads to EOF).
    partial = raw_http.request("/v1/chat/completions", GOOD[:10], {"content-length": str(len(GOOD))}, close=False)
    (r,) = await raw_http.exchange(url, partial)
    assert r.status == 408 and r.headers["connection"] == "close"
    err = r.error()
    assert err["code"] == "request_timeout" and "0.2 s" in err["message"] and "server.body_timeout_s" in err["message"]
    (ok,) = await raw_http.exchange(url, raw_http.request("/v1/chat/completions", GOOD))
    assert ok.status == 200


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "fast", "messages": [{"role": "user", "content": "hi", "extra": ' + b"[" * 5_000 + b"]" * 5_000 + b"}]}",
        b'{"model": "fast", "messages": ' + json.dumps(MSG).encode() + b', "metadata": ' + b'{"a":' * 5_000 + b"1" + b"}" * 5_000 + b"}",
        b'{"model": "fast", "messages": ' + json.dumps(MSG).encode() + b', "tools": [{"type": "function", "function": {"name": "f", "parameters": {"x": '
        + b"[" * 5_000 + b"]" * 5_000 + b"}}}]}",
    ],
)  # fmt: skip
async def test_json_nested_past_the_recursion_limit_is_400(gateway, body):
    status, _, raw = await post(gateway, body)
    assert status == 400
    err = error_of(raw)
    assert err["code"] == "invalid_json" and "too deeply" in err["message"]


async def test_json_nested_just_under_the_decoders_limit_is_never_a_500(sim, make_gateway):
    # Depths that decode but overflow the stack when an adapter re-encodes them for a
    # translated provider (Anthropic, Gemini): a 400 too, never a crash.
    providers = {"claude": {"type": "anthropic", "base_url": sim.root("claude"), "api_key": SIM_KEY},
                 "goog": {"type": "gemini", "base_url": sim.root("goog"), "api_key": SIM_KEY}}  # fmt: skip
    models = [
        {"name": n, "targets": [{"provider": n, "model": m}]}
        for n, m in (("claude", "claude-sonnet-4-5"), ("goog", "gemini-2.5-flash"))
    ]
    url, _ = await make_gateway(gateway_config(sim, providers=providers, models=models))
    for name in ("claude", "goog"):
        sim.set_profile(name, api_key=SIM_KEY)
    seen = set()
    for depth in range(900, 1000, 4):
        for model in ("claude", "goog"):
            params = b'{"x": ' + b"[" * depth + b"]" * depth + b"}"
            body = (b'{"model": "%s", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", '
                    b'"function": {"name": "f", "parameters": %s}}]}') % (model.encode(), params)  # fmt: skip
            status, _, raw = await post(url, body)
            assert status < 500, (model, depth, raw)
            seen.add(status)
    assert 400 in seen  # the range reaches past what can be processed


async def test_malformed_http_is_answered_openai_shaped(gateway):
    # A Content-Length shorter than the body: the rest is parsed as a next request.
    for data in (
        raw_http.request("/v1/chat/completions", GOOD, {"content-length": "5"}),
        raw_http.request("/v1/chat/completions", GOOD, {"content-length": "5"}, close=False) + b"NOT HTTP\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-long: " + b"a" * 20_000 + b"\r\n\r\n",
    ):
        responses = await raw_http.exchange(gateway, data)
        assert responses
        for r in responses:
            assert 400 <= r.status < 500, r
            r.error()
    (ok,) = await raw_http.exchange(gateway, raw_http.request("/v1/chat/completions", GOOD))
    assert ok.status == 200


async def test_unknown_path_and_wrong_method_are_openai_shaped(gateway):
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{gateway}/chat/completions") as r:
            assert r.status == 405
            error_of(await r.read())
        async with s.get(f"{gateway}/nothing-here") as r:
            assert r.status == 404
            err = error_of(await r.read())
            # No parameter is at fault: an unknown path is not an unknown model.
            assert err["param"] is None and err["code"] == "not_found"
            assert "/v1/nothing-here" in err["message"]


async def test_sdk_sees_typed_errors(client):
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="nope", messages=MSG)
    with pytest.raises(openai.BadRequestError) as exc:
        await client.chat.completions.create(model="fast", messages=MSG, temperature=5)
    assert exc.value.body["param"] == "temperature"


async def test_upstream_auth_failure_is_502_naming_target_without_the_key(sim, gateway):
    sim.set_profile("default", api_key="sk-a-different-key")
    status, headers, raw = await post(gateway, {"model": "fast", "messages": MSG})
    assert status == 502
    err = error_of(raw)
    assert "sim/sim-gpt-fast" in err["message"] and "401" in err["message"]
    assert "credentials" in err["message"]
    assert SIM_KEY not in raw.decode() and SIM_KEY[:12] not in raw.decode()
    assert headers["x-should-retry"] == "false"


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def test_unreachable_upstream_is_502_naming_target_and_cause(sim, make_gateway):
    port = closed_port()
    cfg = gateway_config(
        sim,
        providers={"down": {"type": "openai", "api_key": "k", "base_url": f"http://127.0.0.1:{port}/v1"}},
        models=[{"name": "m", "targets": [{"provider": "down", "model": "gpt-x"}]}],
    )
    url, _ = await make_gateway(cfg)
    for stream in (False, True):
        status, _, raw = await post(url, {"model": "m", "messages": MSG, "stream": stream})
        assert status == 502
        msg = error_of(raw)["message"]
        assert "down/gpt-x" in msg and f"127.0.0.1:{port}" in msg and "refused" in msg.lower()


async def test_upstream_hang_hits_first_token_timeout_with_504(sim, make_gateway):
    sim.set_profile("default", fault="hang")
    cfg = gateway_config(
        sim,
        models=[
            {
                "name": "fast",
                "targets": [
                    {"provider": "sim", "model": "sim-gpt-fast", "timeouts": {"first_token": 0.3, "total": 0.5}}
                ],
            }
        ],
    )
    url, _ = await make_gateway(cfg)
    status, _, raw = await post(url, {"model": "fast", "messages": MSG, "stream": True})
    assert status == 504
    assert "no first token within 0.3 s" in error_of(raw)["message"]
    status, _, raw = await post(url, {"model": "fast", "messages": MSG})
    assert status == 504  # unary: no response started within first_token
    assert "no first token within 0.3 s" in error_of(raw)["message"]
    cfg = gateway_config(
        sim,
        models=[
            {"name": "fast", "targets": [{"provider": "sim", "model": "sim-gpt-fast", "timeouts": {"total": 0.5}}]}
        ],
    )
    url, _ = await make_gateway(cfg)
    status, _, raw = await post(url, {"model": "fast", "messages": MSG})
    assert status == 504
    assert "not finished within 0.5 s" in error_of(raw)["message"]
    sim.set_profile("default", fault="none")
    status, _, _ = await post(url, {"model": "fast", "messages": MSG})
    assert status == 200


async def test_upstream_400_is_the_callers_error_and_not_failed_over(sim, make_gateway):
    sim.set_profile("default", fault="status", fault_status=400)
    cfg = gateway_config(
        sim,
        models=[
            {
                "name": "fast",
                "targets": [{"provider": "sim", "model": "sim-gpt-fast"}, {"provider": "compat", "model": "sim-llama"}],
            }
        ],
    )
    url, _ = await make_gateway(cfg)
    status, headers, raw = await post(url, {"model": "fast", "messages": MSG})
    assert status == 400
    assert error_of(raw)["type"] == "invalid_request_error"
    assert headers["x-aiogw-attempts"] == "1"


@pytest.mark.parametrize("stream", [False, True])
async def test_failover_to_the_next_target_before_the_first_byte(sim, make_gateway, stream):
    sim.set_profile("default", fault="status", fault_status=503)
    cfg = gateway_config(
        sim,
        models=[
            {
                "name": "fast",
                "targets": [{"provider": "sim", "model": "sim-gpt-fast"}, {"provider": "compat", "model": "sim-llama"}],
            }
        ],
    )
    url, _ = await make_gateway(cfg)
    status, headers, raw = await post(url, {"model": "fast", "messages": MSG, "stream": stream})
    assert status == 200, raw
    assert headers["x-aiogw-attempts"] == "2"
    assert headers["x-aiogw-provider"] == "compat"


@pytest.mark.parametrize("rounds", [0, 1])
async def test_every_target_failing_lists_each_attempt(sim, make_gateway, rounds):
    sim.set_profile("default", fault="status", fault_status=500)
    sim.set_profile("compat", fault="status", fault_status=429)
    cfg = gateway_config(
        sim,
        models=[
            {
                "name": "fast",
                "targets": [{"provider": "sim", "model": "sim-gpt-fast"}, {"provider": "compat", "model": "sim-llama"}],
            }
        ],
        routing={"retry": {"max_rounds": rounds, "backoff_base_ms": 1}},
    )
    url, _ = await make_gateway(cfg)
    status, headers, raw = await post(url, {"model": "fast", "messages": MSG})
    assert status == 502
    msg = error_of(raw)["message"]
    assert "sim/sim-gpt-fast: 500" in msg and "compat/sim-llama: 429" in msg
    assert headers["x-aiogw-attempts"] == str(2 * (rounds + 1))
    assert sim.stats("default")["requests"] == rounds + 1


@pytest.mark.parametrize("model", ["fast", "compat-model"])
@pytest.mark.parametrize("fault", ["drop", "error_event", "malformed"])
async def test_stream_failing_after_first_byte_ends_with_error_event_then_done(sim, gateway, fault, model):
    # Spaced chunks, so the failure comes after content has reached the client.
    sim.set_profile("default" if model == "fast" else "compat", fault=fault, fault_after_chunks=3, tokens_per_s=200)
    status, _, raw = await post(gateway, {"model": model, "messages": MSG, "stream": True})
    assert status == 200
    evs = events(raw)
    assert evs[-1] == b"[DONE]"
    err = json.loads(evs[-2])["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert any(b'"content"' in e for e in evs[:-2]), "content sent before the failure is kept"


async def test_sdk_raises_on_mid_stream_error(sim, client):
    sim.set_profile("default", fault="drop", fault_after_chunks=2)
    stream = await client.chat.completions.create(model="fast", messages=MSG, stream=True)
    with pytest.raises(openai.APIError):
        async for _ in stream:
            pass


async def test_client_disconnect_cancels_the_upstream_stream(sim, gateway):
    sim.set_profile("default", tokens_per_s=20, completion_tokens=200)
    async with aiohttp.ClientSession() as s:
        r = await s.post(f"{gateway}/chat/completions", json={"model": "fast", "messages": MSG, "stream": True})
        await r.content.readany()
        r.close()  # the client goes away mid-stream
    await until(lambda: sim.stats("default")["streams_cancelled"] >= 1, every=0.05)
    stats = sim.stats("default")
    assert stats["streams_cancelled"] == 1
    assert stats["streams_completed"] == 0
