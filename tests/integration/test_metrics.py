"""GET /metrics: Prometheus text that Prometheus' own parser reads, with numbers that match
what the gateway answered (status, tokens, cost headers, failovers, breaker state)."""

from __future__ import annotations

import aiohttp
import pytest
from conftest import SIM_KEY, both_spellings, gateway_config
from openai import AsyncOpenAI, NotFoundError
from prometheus_client.parser import text_string_to_metric_families
from scrape import scrape, value


def two_target_config(sim, **extra):
    return gateway_config(
        sim,
        providers={
            "bad": {"type": "openai", "base_url": sim.base_url("bad"), "api_key": SIM_KEY},
            "sim": {"type": "openai", "base_url": sim.base_url(), "api_key": SIM_KEY},
        },
        models=[
            {
                "name": "fast",
                "targets": [{"provider": "sim", "model": "sim-gpt-fast", "price": {"input": 1.0, "output": 2.0}}],
            },
            {
                "name": "safe",
                "targets": [{"provider": "bad", "model": "sim-gpt-fast"}, {"provider": "sim", "model": "sim-gpt-fast"}],
                "breaker": {"min_calls": 3, "consecutive_failures": 3, "open_s": 30},
            },
        ],
        **extra,
    )


@both_spellings
async def test_requests_tokens_cost_and_latency_match_what_clients_saw(sim, make_gateway):
    url, _ = await make_gateway(two_target_config(sim))
    client = AsyncOpenAI(base_url=url, api_key="k", max_retries=0)
    costs, tokens_in, tokens_out = 0.0, 0, 0
    try:
        for _ in range(3):
            raw = await client.chat.completions.with_raw_response.create(
                model="fast",
                messages=[{"role": "user", "content": "hi"}],
                extra_headers={"x-aiogw-tags": "team=search"},
            )
            c = raw.parse()
            costs += float(raw.headers["x-aiogw-cost-usd"])
            tokens_in += c.usage.prompt_tokens
            tokens_out += c.usage.completion_tokens
        stream = await client.chat.completions.create(
            model="fast",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in stream:
            if chunk.usage:
                tokens_in += chunk.usage.prompt_tokens
                tokens_out += chunk.usage.completion_tokens
                costs += chunk.usage.model_extra["cost_usd"]
        with pytest.raises(NotFoundError):
            await client.chat.completions.create(model="no-such-model-x1", messages=[{"role": "user", "content": "hi"}])
    finally:
        await client.close()
    m = await scrape(url)
    assert value(m, "aiogw_requests_total", model="fast", provider="sim", status="200", stream="false") == 3
    assert value(m, "aiogw_requests_total", model="fast", stream="true") == 1
    assert value(m, "aiogw_tokens_total", model="fast", kind="input") == tokens_in
    assert value(m, "aiogw_tokens_total", model="fast", kind="output") == tokens_out
    assert value(m, "aiogw_tokens_total", tags="team=search", kind="output") == 3 * 20
    assert value(m, "aiogw_cost_usd_total", model="fast") == pytest.approx(costs, rel=1e-6)
    assert value(m, "aiogw_request_duration_seconds_count", model="fast") == 4
    assert value(m, "aiogw_request_duration_seconds_bucket", model="fast", stream="false", le="+Inf") == 3
    assert value(m, "aiogw_time_to_first_token_seconds_count", model="fast") == 1
    # The unknown model is counted, but its name (client free text) is not a label value.
    assert value(m, "aiogw_errors_total", kind="model_not_found", model="(unknown)") == 1
    assert not any("no-such-model-x1" in str(k) for series in m.values() for k in series)
    assert value(m, "aiogw_upstream_attempts_total", target="sim/sim-gpt-fast", result="ok") == 4
    assert value(m, "aiogw_in_flight_requests") == 0
    assert value(m, "process_resident_memory_bytes") > 10_000_000


@both_spellings
async def test_a_stream_is_accounted_when_the_client_did_not_ask_for_usage(sim, make_gateway):
    url, _ = await make_gateway(two_target_config(sim))
    client = AsyncOpenAI(base_url=url, api_key="k", max_retries=0)
    msg = [{"role": "user", "content": "hi"}]
    try:
        raw = await client.chat.completions.with_raw_response.create(model="fast", messages=msg)
        usage, cost = raw.parse().usage, float(raw.headers["x-aiogw-cost-usd"])
        stream = await client.chat.completions.create(model="fast", messages=msg, stream=True)
        assert all(chunk.usage is None for chunk in [c async for c in stream])
    finally:
        await client.close()
    m = await scrape(url)  # the same request twice: the stream counts as much as the answer
    assert value(m, "aiogw_tokens_total", model="fast", kind="input") == 2 * usage.prompt_tokens
    assert value(m, "aiogw_tokens_total", model="fast", kind="output") == 2 * usage.completion_tokens
    assert value(m, "aiogw_cost_usd_total", model="fast") == pytest.approx(2 * cost, rel=1e-6)
    assert value(m, "aiogw_upstream_attempts_total", target="sim/sim-gpt-fast", result="ok") == 2


async def test_failovers_and_breaker_state_and_headroom(sim, make_gateway):
    cfg = two_target_config(sim)
    url, _ = await make_gateway(cfg)
    sim.set_profile("bad", fault="status", fault_status=500)
    client = AsyncOpenAI(base_url=url, api_key="k", max_retries=0)
    try:
        for _ in range(4):
            await client.chat.completions.create(model="safe", messages=[{"role": "user", "content": "hi"}])
    finally:
        await client.close()
    m = await scrape(url)
    assert value(m, "aiogw_failovers_total", model="safe") == 3  # the 4th skips the open breaker
    assert value(m, "aiogw_upstream_attempts_total", target="bad/sim-gpt-fast", result="transient") == 3
    assert value(m, "aiogw_breaker_state", target="bad/sim-gpt-fast", state="open") == 1
    assert value(m, "aiogw_breaker_state", target="bad/sim-gpt-fast", state="closed") == 0
    assert value(m, "aiogw_breaker_state", target="sim/sim-gpt-fast", state="closed") == 1
    assert value(m, "aiogw_target_error_rate", target="bad/sim-gpt-fast") == 1.0


async def test_rate_limit_headroom_is_exported(sim, make_gateway):
    cfg = gateway_config(
        sim, models=[{"name": "fast", "targets": [{"provider": "sim", "model": "sim-gpt-fast", "limits": {"rpm": 10}}]}]
    )
    url, _ = await make_gateway(cfg)
    async with aiohttp.ClientSession() as s:
        for _ in range(3):
            r = await s.post(
                url + "/chat/completions", json={"model": "fast", "messages": [{"role": "user", "content": "x"}]}
            )
            assert r.status == 200
    m = await scrape(url)
    assert 6.9 <= value(m, "aiogw_ratelimit_remaining", target="sim/sim-gpt-fast", kind="rpm") <= 7.5


def test_label_sets_are_bounded_and_escaped():
    from aiogw.telemetry import metrics

    c = metrics.Counter("x_total", "help", ("tag",))
    for i in range(metrics.MAX_SERIES + 50):
        c.inc((f"v{i}",))
    assert len(c.series) == metrics.MAX_SERIES + 1 and c.series[("other",)] == 50
    c2 = metrics.Counter("y_total", "help", ("tag",))
    c2.inc(('a"b\\c\nd',))
    text = "\n".join(c2.render())
    (family,) = text_string_to_metric_families(text + "\n")
    assert family.samples[0].labels["tag"] == 'a"b\\c\nd'


async def test_every_total_is_typed_a_counter(sim, make_gateway):
    """Prometheus' naming rule: a `_total` series only grows and is declared a counter
    (`rate()` over a gauge is wrong); process_cpu_seconds_total was typed a gauge."""
    url, _ = await make_gateway(two_target_config(sim))
    async with aiohttp.ClientSession() as s:
        text = await (await s.get(url.removesuffix("/v1") + "/metrics")).text()
    types = dict(line.split()[2:4] for line in text.splitlines() if line.startswith("# TYPE "))
    assert "process_cpu_seconds_total" in types
    wrong = {name: kind for name, kind in types.items() if name.endswith("_total") and kind != "counter"}
    assert not wrong, wrong
