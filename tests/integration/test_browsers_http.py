"""What browsers (and the proxies in front of them) need: CORS with preflight, and SSE
heartbeats on long first-token waits and long gaps, with failover still invisible."""

from __future__ import annotations

import time

import aiohttp
import pytest
from conftest import SIM_KEY, gateway_config
from openai import AsyncOpenAI
from sse_client import accumulate, chunks

ORIGIN = "https://app.example.com"
CHAT = {"model": "fast", "messages": [{"role": "user", "content": "hi"}]}


async def _gateway(sim, make_gateway, **server):
    cfg = gateway_config(sim, server={"host": "127.0.0.1", "port": 0, "shutdown_grace": 5, **server})
    url, _ = await make_gateway(cfg)
    return url


# --- CORS ---------------------------------------------------------------------------------


async def test_preflight_is_answered_for_an_allowed_origin(sim, make_gateway):
    url = await _gateway(sim, make_gateway, cors={"allow_origins": [ORIGIN]})
    async with aiohttp.ClientSession() as s:
        r = await s.options(
            url + "/chat/completions",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type, authorization, x-stainless-os, x-aiogw-tags",
            },
        )
        assert r.status == 204
        assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert "POST" in r.headers["Access-Control-Allow-Methods"]
        assert r.headers["Access-Control-Allow-Headers"] == "content-type, authorization, x-stainless-os, x-aiogw-tags"
        assert r.headers["Access-Control-Max-Age"] == "600"
        assert "Access-Control-Allow-Credentials" not in r.headers  # off by default
    assert sim.stats()["requests"] == 0


async def test_preflight_refuses_other_origins_and_unknown_headers_with_a_reason(sim, make_gateway):
    url = await _gateway(sim, make_gateway, cors={"allow_origins": [ORIGIN]})
    async with aiohttp.ClientSession() as s:
        r = await s.options(
            url + "/chat/completions",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert r.status == 403
        err = (await r.json())["error"]
        assert err["code"] == "cors_origin_not_allowed" and "server.cors.allow_origins" in err["message"]
        assert "Access-Control-Allow-Origin" not in r.headers
        r = await s.options(
            url + "/chat/completions",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "x-secret-thing",
            },
        )
        assert r.status == 403 and "x-secret-thing" in (await r.json())["error"]["message"]


async def test_responses_and_streams_carry_cors_headers_and_expose_aiogw_headers(sim, make_gateway):
    url = await _gateway(sim, make_gateway, cors={"allow_origins": [ORIGIN], "allow_credentials": True})
    async with aiohttp.ClientSession() as s:
        for body in (CHAT, {**CHAT, "stream": True}):
            r = await s.post(url + "/chat/completions", json=body, headers={"Origin": ORIGIN})
            await r.read()
            assert r.status == 200
            assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
            assert r.headers["Access-Control-Allow-Credentials"] == "true"
            assert "x-aiogw-provider" in r.headers["Access-Control-Expose-Headers"]
        # An error answer is readable by the page too.
        r = await s.post(url + "/chat/completions", json={**CHAT, "model": "nope"}, headers={"Origin": ORIGIN})
        assert r.status == 404 and r.headers["Access-Control-Allow-Origin"] == ORIGIN
        # Other origins get no grant (the browser blocks the page from reading the answer).
        r = await s.post(url + "/chat/completions", json=CHAT, headers={"Origin": "https://evil.example"})
        assert r.status == 200 and "Access-Control-Allow-Origin" not in r.headers


async def test_without_cors_config_no_headers_and_options_is_405(sim, gateway):
    async with aiohttp.ClientSession() as s:
        r = await s.post(gateway + "/chat/completions", json=CHAT, headers={"Origin": ORIGIN})
        assert r.status == 200 and "Access-Control-Allow-Origin" not in r.headers
        r = await s.options(
            gateway + "/chat/completions", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
        )
        assert r.status == 405


def test_wildcard_origin_with_credentials_is_a_config_error():
    from aiogw.config_load import from_builtins
    from aiogw.errors import ConfigError

    with pytest.raises(ConfigError, match="server.cors"):
        from_builtins({"server": {"cors": {"allow_origins": ["*"], "allow_credentials": True}}}, env={})


# --- heartbeats ---------------------------------------------------------------------------


async def _read_timed(resp) -> list[tuple[float, bytes]]:
    """(seconds since start, line) for every line of the body, as it arrives."""
    t0 = time.monotonic()
    out = []
    async for line in resp.content:
        out.append((time.monotonic() - t0, line))
    return out


async def test_long_first_token_wait_sends_comment_heartbeats_and_the_sdk_ignores_them(sim, make_gateway):
    url = await _gateway(sim, make_gateway, sse_heartbeat_s=0.1)
    sim.set_profile(ttft_ms=700)
    async with aiohttp.ClientSession() as s:
        r = await s.post(url + "/chat/completions", json={**CHAT, "stream": True})
        assert r.status == 200 and r.headers["X-Accel-Buffering"] == "no"
        lines = await _read_timed(r)
    beats = [t for t, ln in lines if ln == b": keep-alive\n"]
    first_data = next(t for t, ln in lines if ln.startswith(b"data: "))
    assert len(beats) >= 3, lines[:8]
    assert all(t < first_data for t in beats[:3])  # they came while waiting, not at the end
    raw = b"".join(ln for _, ln in lines)
    assert accumulate(raw).choices[0].message.content  # the SDK's accumulator reads it whole
    # The official SDK, streaming through the same gateway, sees only chunks.
    client = AsyncOpenAI(base_url=url, api_key="k", max_retries=0, timeout=20)
    try:
        text = ""
        async for c in await client.chat.completions.create(model="fast", messages=CHAT["messages"], stream=True):
            if c.choices:
                text += c.choices[0].delta.content or ""
        assert len(text.split()) == 20
    finally:
        await client.close()


async def test_heartbeats_fill_long_gaps_between_chunks(sim, make_gateway):
    url = await _gateway(sim, make_gateway, sse_heartbeat_s=0.1)
    sim.set_profile(tokens_per_s=3, completion_tokens=3)  # a chunk every ~330 ms
    async with aiohttp.ClientSession() as s:
        r = await s.post(url + "/chat/completions", json={**CHAT, "stream": True})
        lines = await _read_timed(r)
    data_at = [t for t, ln in lines if ln.startswith(b"data: {")]
    beats_between = [t for t, ln in lines if ln == b": keep-alive\n" and data_at[0] < t < data_at[-1]]
    assert beats_between, lines


async def test_no_heartbeat_when_the_first_token_is_quick(sim, make_gateway):
    url = await _gateway(sim, make_gateway, sse_heartbeat_s=0.5)
    async with aiohttp.ClientSession() as s:
        r = await s.post(url + "/chat/completions", json={**CHAT, "stream": True})
        raw = await r.read()
    assert b": keep-alive" not in raw
    assert r.headers["x-aiogw-provider"] == "sim"  # headers name the target when they can


async def test_failover_behind_heartbeats_stays_invisible(sim, make_gateway):
    cfg = gateway_config(
        sim,
        server={"host": "127.0.0.1", "port": 0, "sse_heartbeat_s": 0.1},
        providers={
            "slow": {"type": "openai", "base_url": sim.base_url("slow"), "api_key": SIM_KEY},
            "sim": {"type": "openai", "base_url": sim.base_url(), "api_key": SIM_KEY},
        },
        models=[
            {
                "name": "fast",
                "targets": [
                    {"provider": "slow", "model": "sim-gpt-fast", "timeouts": {"first_token": 0.6}},
                    {"provider": "sim", "model": "sim-gpt-fast"},
                ],
            }
        ],
    )
    url, _ = await make_gateway(cfg)
    sim.set_profile("slow", ttft_ms=5000)
    async with aiohttp.ClientSession() as s:
        r = await s.post(url + "/chat/completions", json={**CHAT, "stream": True})
        raw = await r.read()
    assert raw.startswith(b": keep-alive\n\n")
    assert len(accumulate(raw).choices[0].message.content.split()) == 20
    assert "x-aiogw-provider" not in r.headers  # sent before any target answered
    assert sim.stats("slow")["requests"] == 1 and sim.stats()["requests"] == 1


async def test_every_target_failing_after_heartbeats_ends_with_an_error_event(sim, make_gateway):
    url = await _gateway(sim, make_gateway, sse_heartbeat_s=0.1)
    sim.set_profile(ttft_ms=400, fault="status", fault_status=503)
    async with aiohttp.ClientSession() as s:
        r = await s.post(url + "/chat/completions", json={**CHAT, "stream": True})
        raw = await r.read()
    assert r.status == 200 and raw.startswith(b": keep-alive")
    (err,) = chunks(raw)
    assert err["error"]["code"] == "all_attempts_failed", err
    assert "sim/sim-gpt-fast" in err["error"]["message"]
