"""Routing, failover, breaker, limits, hedging and cost, end to end: a real gateway in front of
the simulator, whose faults are switched at run time and whose stats show what reached it."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from conftest import gateway_config, until
from multidict import CIMultiDict
from openai import AsyncOpenAI
from sse_client import accumulate, chunks, events

MSG = [{"role": "user", "content": "hello there"}]


def two_targets(sim, *, group=None, targets=None, **overrides):
    group = {
        "name": "fast",
        "targets": targets
        or [{"provider": "sim", "model": "sim-gpt-fast"}, {"provider": "compat", "model": "sim-llama"}],
        **(group or {}),
    }
    return gateway_config(sim, models=[group], **overrides)


async def post(url, body, headers=None):
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{url}/chat/completions", json=body, headers=headers or {}) as r:
            return r.status, CIMultiDict(r.headers), await r.read()


async def breaker_state(url, target_id):
    async with aiohttp.ClientSession() as s, s.get(f"{url}/gateway/health") as r:
        return {t["id"]: t for t in (await r.json())["targets"]}[target_id]["state"]


async def wait_half_open(url, target_id):
    """Until the breaker's cooldown is over (asking /gateway/health moves it to half-open)."""

    async def half_open():
        return await breaker_state(url, target_id) == "half_open"

    await until(half_open, every=0.05)
    assert await breaker_state(url, target_id) == "half_open"


async def error_of(raw):
    import json

    return json.loads(raw)["error"]


async def test_429_with_retry_after_is_retried_after_the_pause(sim, make_gateway):
    # One target; its first answer is a 429 asking for a short pause, the retry succeeds.
    sim.set_profile("default", fault="status", fault_status=429, fault_count=1)
    cfg = two_targets(
        sim,
        targets=[{"provider": "sim", "model": "sim-gpt-fast"}],
        routing={"retry": {"max_rounds": 1, "backoff_max_ms": 5000}},
    )
    url, _ = await make_gateway(cfg)
    status, headers, raw = await post(url, {"model": "fast", "messages": MSG})
    assert status == 200, raw
    assert headers["x-aiogw-attempts"] == "2"
    assert sim.stats("default")["requests"] == 2


async def test_429_everywhere_gives_the_client_429_with_retry_after(sim, make_gateway):
    sim.set_profile("default", fault="status", fault_status=429)
    sim.set_profile("compat", fault="status", fault_status=429)
    url, _ = await make_gateway(two_targets(sim, routing={"retry": {"max_rounds": 0}}))
    status, headers, _raw = await post(url, {"model": "fast", "messages": MSG})
    assert status == 429
    assert headers["retry-after"] == "1"
    assert headers["x-should-retry"] == "false"


@pytest.mark.parametrize("stream", [False, True])
async def test_a_hang_times_out_on_first_token_then_fails_over(sim, make_gateway, stream):
    sim.set_profile("default", fault="hang")
    cfg = two_targets(
        sim,
        targets=[
            {"provider": "sim", "model": "sim-gpt-fast", "timeouts": {"first_token": 0.3}},
            {"provider": "compat", "model": "sim-llama"},
        ],
    )
    url, _ = await make_gateway(cfg)
    status, headers, raw = await post(url, {"model": "fast", "messages": MSG, "stream": stream})
    assert status == 200, raw
    assert headers["x-aiogw-provider"] == "compat"
    assert headers["x-aiogw-attempts"] == "2"


async def test_a_stream_that_stalls_after_its_first_tokens_ends_on_the_idle_limit(sim, make_gateway):
    # A total of 60 s: only the idle limit (0.2 s) can end this stream before the test's own timeout.
    sim.set_profile("default", fault="stall", fault_after_chunks=2, tokens_per_s=200)
    cfg = two_targets(
        sim, targets=[{"provider": "sim", "model": "sim-gpt-fast", "timeouts": {"idle": 0.2, "total": 60}}]
    )
    url, _ = await make_gateway(cfg)
    status, _, raw = await post(url, {"model": "fast", "messages": MSG, "stream": True})
    assert status == 200
    evs = events(raw)
    assert evs[-1] == b"[DONE]"
    err = json.loads(evs[-2])["error"]
    assert "idle: no data within 0.2 s" in err["message"] and err["code"] == "upstream_timeout"
    assert any(b'"content"' in e for e in evs[:-2]), "the tokens before the stall reached the client"


async def test_an_answer_that_stalls_before_the_commit_point_fails_over_on_the_idle_limit(sim, make_gateway):
    # Non-streaming: the headers and half of the body, then silence; the client has seen nothing.
    sim.set_profile("default", fault="stall")
    cfg = two_targets(
        sim,
        targets=[
            {"provider": "sim", "model": "sim-gpt-fast", "timeouts": {"idle": 0.2, "total": 60}},
            {"provider": "compat", "model": "sim-llama"},
        ],
    )
    url, _ = await make_gateway(cfg)
    status, headers, raw = await post(url, {"model": "fast", "messages": MSG})
    assert status == 200, raw
    assert headers["x-aiogw-provider"] == "compat" and headers["x-aiogw-attempts"] == "2"
    async with aiohttp.ClientSession() as s, s.get(f"{url}/gateway/health") as r:
        health = {t["id"]: t for t in (await r.json())["targets"]}
    assert "idle: no data within 0.2 s" in health["sim/sim-gpt-fast"]["last_error"]


async def test_breaker_opens_then_half_opens_and_closes_when_the_fault_clears(sim, make_gateway):
    sim.set_profile("default", fault="status", fault_status=500)
    # A cooldown long enough for the open phase's requests on a loaded machine; waited out below.
    breaker = {"consecutive_failures": 3, "min_calls": 100, "open_s": 1.5, "close_after": 2}
    cfg = two_targets(sim, group={"breaker": breaker}, routing={"retry": {"max_rounds": 0}})
    url, _ = await make_gateway(cfg)
    for _ in range(3):
        status, headers, _ = await post(url, {"model": "fast", "messages": MSG})
        assert status == 200 and headers["x-aiogw-attempts"] == "2"
    async with aiohttp.ClientSession() as s, s.get(f"{url}/gateway/health") as r:
        health = {t["id"]: t for t in (await r.json())["targets"]}
    assert health["sim/sim-gpt-fast"]["state"] == "open"
    assert health["sim/sim-gpt-fast"]["last_error"].startswith("transient")
    assert health["compat/sim-llama"]["state"] == "closed"

    # Open: the bad target is not called at all.
    before = sim.stats("default")["requests"]
    for _ in range(5):
        status, headers, _ = await post(url, {"model": "fast", "messages": MSG})
        assert status == 200 and headers["x-aiogw-provider"] == "compat"
        assert headers["x-aiogw-attempts"] == "1"
    assert sim.stats("default")["requests"] == before

    # After the cooldown the breaker lets probes through; healthy probes close it.
    sim.set_profile("default", fault="none")
    await wait_half_open(url, "sim/sim-gpt-fast")
    providers = []
    for _ in range(3):
        status, headers, _ = await post(url, {"model": "fast", "messages": MSG})
        providers.append(headers["x-aiogw-provider"])
    assert providers == ["sim", "sim", "sim"]
    async with aiohttp.ClientSession() as s, s.get(f"{url}/gateway/health") as r:
        health = {t["id"]: t for t in (await r.json())["targets"]}
    assert health["sim/sim-gpt-fast"]["state"] == "closed"


async def test_a_failed_probe_reopens_the_breaker(sim, make_gateway):
    # A 500 (a 503 would carry a Retry-After, and the target would rest on that instead).
    sim.set_profile("default", fault="status", fault_status=500)
    # The cooldown outlasts the two requests after the probe, however loaded the machine.
    cfg = two_targets(
        sim, group={"breaker": {"consecutive_failures": 2, "open_s": 1.5}}, routing={"retry": {"max_rounds": 0}}
    )
    url, _ = await make_gateway(cfg)
    for _ in range(2):
        await post(url, {"model": "fast", "messages": MSG})
    assert await breaker_state(url, "sim/sim-gpt-fast") == "open"
    await wait_half_open(url, "sim/sim-gpt-fast")
    before = sim.stats("default")["requests"]
    status, headers, _ = await post(url, {"model": "fast", "messages": MSG})  # the probe, which fails
    assert status == 200 and headers["x-aiogw-attempts"] == "2"
    assert await breaker_state(url, "sim/sim-gpt-fast") == "open"
    await post(url, {"model": "fast", "messages": MSG})  # open again: not sent
    assert sim.stats("default")["requests"] == before + 1


async def test_every_target_open_still_tries_the_least_recently_failed(sim, make_gateway):
    sim.set_profile("default", fault="status", fault_status=500)
    sim.set_profile("compat", fault="status", fault_status=500)
    cfg = two_targets(
        sim, group={"breaker": {"consecutive_failures": 1, "open_s": 60}}, routing={"retry": {"max_rounds": 0}}
    )
    url, _ = await make_gateway(cfg)
    await post(url, {"model": "fast", "messages": MSG})  # opens both
    sim.set_profile("default", fault="none")
    sim.set_profile("compat", fault="none")
    status, headers, raw = await post(url, {"model": "fast", "messages": MSG})
    assert status == 200, raw
    assert headers["x-aiogw-provider"] == "sim"  # failed first, so least recently


async def test_caller_errors_never_open_the_breaker(sim, make_gateway):
    cfg = two_targets(sim, group={"breaker": {"consecutive_failures": 1}})
    url, _ = await make_gateway(cfg)
    sim.set_profile("default", fault="status", fault_status=400)
    for _ in range(3):
        status, headers, _ = await post(url, {"model": "fast", "messages": MSG})
        assert status == 400 and headers["x-aiogw-attempts"] == "1"
    async with aiohttp.ClientSession() as s, s.get(f"{url}/gateway/health") as r:
        health = {t["id"]: t for t in (await r.json())["targets"]}
    assert health["sim/sim-gpt-fast"]["state"] == "closed"
    assert health["sim/sim-gpt-fast"]["requests"] == 0


async def test_rpm_limit_skips_a_saturated_target_then_429(sim, make_gateway):
    cfg = two_targets(
        sim,
        targets=[
            {"provider": "sim", "model": "sim-gpt-fast", "limits": {"rpm": 2}},
            {"provider": "compat", "model": "sim-llama", "limits": {"rpm": 1}},
        ],
    )
    url, _ = await make_gateway(cfg)
    providers = []
    for _ in range(3):
        status, headers, _ = await post(url, {"model": "fast", "messages": MSG})
        assert status == 200
        providers.append(headers["x-aiogw-provider"])
    assert providers == ["sim", "sim", "compat"]
    assert sim.stats("default")["requests"] == 2
    status, headers, raw = await post(url, {"model": "fast", "messages": MSG})
    assert status == 429
    assert int(headers["retry-after"]) >= 1
    assert "rate limit" in (await error_of(raw))["message"]


async def test_concurrency_limit_and_tpm_reservation(sim, make_gateway):
    sim.set_profile("default", ttft_ms=300)
    cfg = two_targets(
        sim,
        targets=[
            {"provider": "sim", "model": "sim-gpt-fast", "limits": {"concurrency": 1}},
            {"provider": "compat", "model": "sim-llama", "limits": {"tpm": 100}},
        ],
    )
    url, _ = await make_gateway(cfg)
    results = await asyncio.gather(
        post(url, {"model": "fast", "messages": MSG}),
        post(url, {"model": "fast", "messages": MSG, "max_tokens": 20}),
    )
    assert sorted(h["x-aiogw-provider"] for _, h, _ in results) == ["compat", "sim"]
    # A request whose reservation exceeds the whole tpm bucket cannot go to compat.
    status, headers, raw = await post(url, {"model": "fast", "messages": MSG, "max_tokens": 500})
    assert status == 200 and headers["x-aiogw-provider"] == "sim", raw


async def test_provider_rate_limit_headers_tighten_the_local_view(sim, make_gateway):
    # The simulator reports 0 requests remaining on its 429 (reset 6 ms in RATE_HEADERS);
    # a 429 answer teaches the limiter to hold off until the reset.
    sim.set_profile("default", fault="status", fault_status=429, fault_count=1)
    url, _app = await make_gateway(two_targets(sim, routing={"retry": {"max_rounds": 0}}))
    status, headers, _ = await post(url, {"model": "fast", "messages": MSG})
    assert status == 200 and headers["x-aiogw-provider"] == "compat"
    async with aiohttp.ClientSession() as s, s.get(f"{url}/gateway/health") as r:
        health = {t["id"]: t for t in (await r.json())["targets"]}
    assert health["sim/sim-gpt-fast"]["limits"]["provider_remaining_requests"] is not None


@pytest.mark.parametrize("stream", [False, True])
async def test_hedging_wins_with_the_faster_target(sim, make_gateway, stream):
    sim.set_profile("default", ttft_ms=3000)
    cfg = two_targets(sim, group={"hedge": {"delay_ms": 100}})
    url, _ = await make_gateway(cfg)
    status, headers, raw = await post(url, {"model": "fast", "messages": MSG, "stream": stream})
    assert status == 200, raw
    assert headers["x-aiogw-provider"] == "compat"
    assert headers["x-aiogw-attempts"] == "2"  # the slow one counts: it was sent
    await until(lambda: sim.stats("default")["requests"] >= 1)
    assert sim.stats("default")["requests"] == 1  # the slow one was started, then cancelled
    if stream:
        assert sim.stats("default")["streams_completed"] == 0


async def test_request_deadline_header_bounds_every_attempt(sim, make_gateway):
    sim.set_profile("default", fault="hang")
    sim.set_profile("compat", fault="hang")
    url, _ = await make_gateway(two_targets(sim))
    status, _headers, raw = await post(url, {"model": "fast", "messages": MSG}, {"x-aiogw-timeout-ms": "300"})
    assert status == 504
    assert "deadline" in (await error_of(raw))["message"]
    assert sim.stats("compat")["requests"] == 0  # no time left for a second attempt


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("x-aiogw-timeout-ms", "soon"),
        ("x-aiogw-timeout-ms", "-5"),
        ("x-aiogw-strategy", "cheapest-please"),
        ("x-aiogw-fallbacks", "no-such-model"),
        ("x-aiogw-tags", "no pairs here"),
    ],
)
async def test_invalid_control_headers_are_400_naming_the_header(gateway, header, value):
    status, _, raw = await post(gateway, {"model": "fast", "messages": MSG}, {header: value})
    assert status == 400
    err = await error_of(raw)
    assert err["param"] == header and header in err["message"]


async def test_fallbacks_header_adds_targets_after_the_group(sim, make_gateway):
    sim.set_profile("default", fault="status", fault_status=500)
    cfg = gateway_config(sim, routing={"retry": {"max_rounds": 0}})
    url, _ = await make_gateway(cfg)
    status, headers, _ = await post(url, {"model": "fast", "messages": MSG}, {"x-aiogw-fallbacks": "compat-model"})
    assert status == 200 and headers["x-aiogw-provider"] == "compat"
    status, _, _ = await post(url, {"model": "fast", "messages": MSG})
    assert status == 502


async def test_context_window_skips_small_targets_and_context_errors_move_to_larger(sim, make_gateway):
    long_prompt = [{"role": "user", "content": "word " * 400}]  # ~500 tokens by the 4-chars rule
    cfg = two_targets(
        sim,
        targets=[
            {"provider": "sim", "model": "sim-gpt-fast", "context_window": 100},
            {"provider": "compat", "model": "sim-llama", "context_window": 100000},
        ],
    )
    url, _ = await make_gateway(cfg)
    status, headers, _ = await post(url, {"model": "fast", "messages": long_prompt})
    assert status == 200 and headers["x-aiogw-provider"] == "compat"
    assert headers["x-aiogw-attempts"] == "1"  # skipped, never sent
    assert sim.stats("default")["requests"] == 0

    # The configured window is unknown or wrong: the provider's own error moves us on.
    sim.set_profile("default", context_window=50)
    cfg = two_targets(
        sim,
        targets=[
            {"provider": "sim", "model": "sim-gpt-fast"},
            {"provider": "compat", "model": "sim-llama", "context_window": 100000},
        ],
    )
    url, _ = await make_gateway(cfg)
    status, headers, _ = await post(url, {"model": "fast", "messages": long_prompt})
    assert status == 200 and headers["x-aiogw-provider"] == "compat"
    assert headers["x-aiogw-attempts"] == "2"

    # No larger window anywhere: the provider's 400 reaches the client as it is.
    sim.set_profile("compat", context_window=50)
    status, _, raw = await post(url, {"model": "fast", "messages": long_prompt})
    assert status == 400
    assert (await error_of(raw))["code"] == "context_length_exceeded"


async def test_a_prompt_too_long_for_every_configured_window_is_a_400(sim, make_gateway):
    cfg = two_targets(
        sim,
        targets=[
            {"provider": "sim", "model": "sim-gpt-fast", "context_window": 50},
            {"provider": "compat", "model": "sim-llama", "context_window": 60},
        ],
    )
    url, _ = await make_gateway(cfg)
    status, _, raw = await post(url, {"model": "fast", "messages": [{"role": "user", "content": "word " * 400}]})
    assert status == 400
    err = await error_of(raw)
    assert err["code"] == "context_length_exceeded" and err["param"] == "messages"
    assert sim.stats("default")["requests"] == 0 and sim.stats("compat")["requests"] == 0


async def test_cost_header_log_and_usage_chunk(sim, make_gateway, capsys):
    cfg = two_targets(
        sim,
        targets=[
            {"provider": "sim", "model": "sim-gpt-fast", "price": {"input": 1.0, "output": 2.0, "cached_input": 0.5}},
        ],
    )
    url, _ = await make_gateway(cfg)
    client = AsyncOpenAI(base_url=url, api_key="k", max_retries=0)
    raw = await client.chat.completions.with_raw_response.create(
        model="fast", messages=MSG, extra_headers={"x-aiogw-tags": "team=search,feature=qa"}
    )
    completion = raw.parse()
    u = completion.usage
    expected = (u.prompt_tokens * 1.0 + u.completion_tokens * 2.0) / 1e6
    assert float(raw.headers["x-aiogw-cost-usd"]) == pytest.approx(expected, rel=1e-6)

    stream = await client.chat.completions.create(
        model="fast", messages=MSG, stream=True, stream_options={"include_usage": True}
    )
    last = None
    async for chunk in stream:
        last = chunk
    assert last is not None and last.usage is not None
    extra = last.usage.model_extra or {}
    assert extra["cost_usd"] == pytest.approx(
        (last.usage.prompt_tokens * 1.0 + last.usage.completion_tokens * 2.0) / 1e6, rel=1e-6
    )
    await client.close()
    out = capsys.readouterr().out
    assert "cost_usd" in out and "feature=qa,team=search" in out


async def test_translated_stream_carries_cost_too(sim, make_gateway):
    cfg = two_targets(
        sim,
        targets=[
            {"provider": "compat", "model": "sim-llama", "price": {"input": 3.0, "output": 4.0}},
        ],
    )
    url, _ = await make_gateway(cfg)
    _status, _, raw = await post(
        url, {"model": "fast", "messages": MSG, "stream": True, "stream_options": {"include_usage": True}}
    )
    usage = [c for c in chunks(raw) if c.get("usage")][-1]["usage"]
    assert usage["cost_usd"] == pytest.approx((usage["prompt_tokens"] * 3 + usage["completion_tokens"] * 4) / 1e6)
    assert accumulate(raw).choices[0].finish_reason == "stop"


async def test_lowest_cost_strategy_header_picks_the_cheaper_target(sim, make_gateway):
    cfg = two_targets(
        sim,
        targets=[
            {"provider": "sim", "model": "sim-gpt-fast", "price": {"input": 10, "output": 10}},
            {"provider": "compat", "model": "sim-llama", "price": {"input": 1, "output": 1}},
        ],
    )
    url, _ = await make_gateway(cfg)
    _, headers, _ = await post(url, {"model": "fast", "messages": MSG})
    assert headers["x-aiogw-provider"] == "sim"
    _, headers, _ = await post(url, {"model": "fast", "messages": MSG}, {"x-aiogw-strategy": "lowest-cost"})
    assert headers["x-aiogw-provider"] == "compat"


async def test_gateway_health_reports_every_target(sim, make_gateway):
    url, _ = await make_gateway(two_targets(sim))
    for _ in range(4):
        await post(url, {"model": "fast", "messages": MSG, "stream": True})
    async with aiohttp.ClientSession() as s, s.get(f"{url}/gateway/health") as r:
        body = await r.json()
    t = {x["id"]: x for x in body["targets"]}["sim/sim-gpt-fast"]
    assert t["provider"] == "sim" and t["model"] == "sim-gpt-fast" and t["state"] == "closed"
    assert t["requests"] == 4 and t["error_rate"] == 0.0 and t["in_flight"] == 0
    assert t["latency_p50_ms"] is not None and t["ttft_p50_ms"] is not None
