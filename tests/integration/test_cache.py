"""The response cache's exact tier through HTTP (the official `openai` SDK against a real
gateway and the provider simulator): what is cached and what bypasses, the key (tool_choice
in it, teams apart), one entry for streaming and non-streaming clients, the controls,
single flight, accounting (hits free, outside budgets, in the ledger), purge, and Redis
shared by two gateways (failing open when it is gone)."""

from __future__ import annotations

import asyncio

import aiohttp
import openai
import pytest
from conftest import gateway_config, until

from aiogw.server.keys import CACHE

MASTER = "master-key-for-tests-0123456789"
ADMIN = {"authorization": f"Bearer {MASTER}"}
Q = [{"role": "user", "content": "Is this spam? Buy now"}]
PRICED = [{"name": "fast", "targets": [{"provider": "sim", "model": "sim-gpt-fast",
                                         "price": {"input": 1000, "output": 1000}}]}]  # fmt: skip
TOOLS = [{"type": "function", "function": {"name": "label", "parameters": {"type": "object", "properties": {}}}}]


def cache_config(sim, cache=None, **overrides):
    return gateway_config(sim, models=PRICED, cache={"enabled": True, **(cache or {})}, **overrides)


def keys_config(sim, tmp_path, cache=None, **overrides):
    auth = {"master_key": MASTER}
    return cache_config(sim, cache, auth=auth, store={"url": f"sqlite:///{tmp_path}/aiogw.db"}, **overrides)


def sdk(url, key="client-key"):
    return openai.AsyncOpenAI(base_url=url, api_key=key, max_retries=0, timeout=20)


async def ask(c, headers=None, **kw):
    """One chat call: (the answer, its headers)."""
    kw.setdefault("messages", Q)
    kw.setdefault("model", "fast")
    raw = await c.chat.completions.with_raw_response.create(extra_headers=headers or {}, **kw)
    return raw.parse(), raw.headers


async def ask_stream(c, headers=None, **kw):
    """One streamed call: (its chunks, its headers)."""
    kw.setdefault("messages", Q)
    kw.setdefault("model", "fast")
    async with c.chat.completions.with_streaming_response.create(stream=True, extra_headers=headers or {}, **kw) as r:
        return [ch async for ch in await r.parse()], r.headers


def text_of(chunks):
    return "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)


def stored(app, n=1):
    return lambda: app[CACHE].counts.stored >= n


@pytest.fixture
async def cached(sim, make_gateway):
    url, app = await make_gateway(cache_config(sim))
    async with sdk(url) as c:
        yield c, url, app


async def test_a_temperature_zero_answer_is_served_again_free(sim, cached):
    c, url, app = cached
    first, h1 = await ask(c, temperature=0)
    assert h1["x-aiogw-cache-status"] == "miss"
    await until(stored(app))
    again, h2 = await ask(c, temperature=0)
    assert h2["x-aiogw-cache-status"] == "hit"
    assert again.choices[0].message.content == first.choices[0].message.content
    assert again.usage.total_tokens == first.usage.total_tokens  # the client still sees the usage
    assert h2["x-aiogw-cost-usd"] == "0" and int(h2["age"]) >= 0
    assert float(h1["x-aiogw-cost-usd"]) > 0
    assert float(h2["x-aiogw-cost-saved-usd"]) == pytest.approx(float(h1["x-aiogw-cost-usd"]))
    assert sim.stats()["requests"] == 1
    async with aiohttp.ClientSession() as s, s.get(url.removesuffix("/v1") + "/metrics") as r:
        text = await r.text()
    assert "aiogw_cache_hits_total 1" in text and "aiogw_cache_misses_total 1" in text
    assert "aiogw_cache_entries 1" in text


async def test_creative_requests_bypass_and_deterministic_ones_are_cached(sim, cached):
    c, _, app = cached
    for _ in range(2):
        _, h = await ask(c, temperature=0.7)
        assert h["x-aiogw-cache-status"] == "bypass" and h["x-aiogw-cache-reason"] == "creative"
    assert sim.stats()["requests"] == 2
    # A seed, a deterministic task, or an explicit opt-in make the same request cacheable.
    for i, (kw, headers) in enumerate([
        ({"seed": 7}, {}),
        ({}, {"x-aiogw-task": "classification"}),
        ({}, {"x-aiogw-cache": "on"}),
    ]):  # fmt: skip
        kw["messages"] = [{"role": "user", "content": f"question {i}"}]
        _, h = await ask(c, headers, temperature=0.7, **kw)
        assert h["x-aiogw-cache-status"] == "miss", (kw, headers)
        await until(stored(app, i + 1))
        _, h = await ask(c, headers, temperature=0.7, **kw)
        assert h["x-aiogw-cache-status"] == "hit", (kw, headers)
    assert sim.stats()["requests"] == 5


async def test_delivery_fields_are_not_in_the_key_and_output_fields_are(sim, cached):
    c, _, app = cached
    await ask(c, temperature=0, user="alice", max_tokens=50)
    await until(stored(app))
    _, h = await ask(c, temperature=0, user="bob", max_tokens=50)  # `user` changes no answer
    assert h["x-aiogw-cache-status"] == "hit"
    _, h = await ask(c, temperature=0, max_tokens=51)
    assert h["x-aiogw-cache-status"] == "miss"
    _, h = await ask(c, temperature=0, max_tokens=50, messages=[{"role": "user", "content": "Is this spam? No"}])
    assert h["x-aiogw-cache-status"] == "miss"


async def test_tool_choice_is_part_of_the_key(sim, make_gateway):
    url, app = await make_gateway(cache_config(sim, {"cache_tool_calls": True}))
    async with sdk(url) as c:
        auto, h = await ask(c, temperature=0, tools=TOOLS, tool_choice="auto")
        assert h["x-aiogw-cache-status"] == "miss" and auto.choices[0].finish_reason == "tool_calls"
        await until(stored(app))
        # Same tools, another tool_choice: the same upstream answer here, yet another request.
        _, h = await ask(c, temperature=0, tools=TOOLS, tool_choice="required")
        assert h["x-aiogw-cache-status"] == "miss"
        none, h = await ask(c, temperature=0, tools=TOOLS, tool_choice="none")
        assert h["x-aiogw-cache-status"] == "miss" and none.choices[0].finish_reason == "stop"
        await until(stored(app, 3))
        again, h = await ask(c, temperature=0, tools=TOOLS, tool_choice="auto")
        assert h["x-aiogw-cache-status"] == "hit"
        assert again.choices[0].message.tool_calls[0].function.name == "label"
        # ... and its stream face carries the tool call as deltas.
        chunks, h = await ask_stream(c, temperature=0, tools=TOOLS, tool_choice="auto")
        assert h["x-aiogw-cache-status"] == "hit"
        calls = [tc for ch in chunks if ch.choices for tc in ch.choices[0].delta.tool_calls or ()]
        assert calls[0].function.name == "label" and calls[0].id == again.choices[0].message.tool_calls[0].id
        assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert sim.stats()["requests"] == 3


async def test_tool_calls_are_not_stored_unless_allowed(sim, cached):
    c, _, _ = cached
    for _ in range(2):
        _, h = await ask(c, temperature=0, tools=TOOLS)
        assert h["x-aiogw-cache-status"] == "uncacheable" and h["x-aiogw-cache-reason"] == "tool_calls"
    assert sim.stats()["requests"] == 2


async def test_an_answer_cut_by_length_is_not_stored(sim, cached):
    c, _, _ = cached
    for _ in range(2):
        a, h = await ask(c, temperature=0, max_tokens=3)
        assert a.choices[0].finish_reason == "length"
        assert h["x-aiogw-cache-status"] == "uncacheable" and h["x-aiogw-cache-reason"] == "finish_length"
    assert sim.stats()["requests"] == 2


async def test_a_json_answer_is_replayed_as_a_stream(sim, cached):
    c, _, app = cached
    first, _ = await ask(c, temperature=0)
    await until(stored(app))
    chunks, h = await ask_stream(c, temperature=0, stream_options={"include_usage": True})
    assert h["x-aiogw-cache-status"] == "hit" and h["content-type"].startswith("text/event-stream")
    assert chunks[0].choices[0].delta.role == "assistant"
    assert text_of(chunks) == first.choices[0].message.content
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == first.usage.total_tokens
    plain, _ = await ask_stream(c, temperature=0)  # no usage chunk unless asked
    assert all(ch.usage is None for ch in plain) and text_of(plain) == text_of(chunks)
    paced, h = await ask_stream(c, {"x-aiogw-cache-replay": "paced"}, temperature=0)
    assert h["x-aiogw-cache-status"] == "hit" and text_of(paced) == text_of(chunks)
    assert sim.stats()["requests"] == 1


async def test_a_stream_is_recorded_and_serves_both_kinds_of_client(sim, cached):
    c, _, app = cached
    sim.set_profile(chunk_tokens=3)
    live, h = await ask_stream(c, temperature=0)
    assert h["x-aiogw-cache-status"] == "miss"
    await until(stored(app))
    again, h = await ask_stream(c, temperature=0, stream_options={"include_usage": True})
    assert h["x-aiogw-cache-status"] == "hit"
    # The recorded chunk boundaries, and the usage chunk although the first client did not ask.
    assert [ch.choices[0].delta.content for ch in again if ch.choices] == [
        ch.choices[0].delta.content for ch in live if ch.choices
    ]
    assert again[-1].usage is not None and again[-1].usage.completion_tokens > 0
    whole, h = await ask(c, temperature=0)
    assert h["x-aiogw-cache-status"] == "hit"
    assert whole.choices[0].message.content == text_of(live) and whole.choices[0].finish_reason == "stop"
    assert whole.usage.total_tokens == again[-1].usage.total_tokens
    assert sim.stats()["requests"] == 1


async def test_a_failed_stream_is_not_stored(sim, cached):
    c, _, app = cached
    # Spaced chunks: the failure comes after content reached the client (no failover then).
    sim.set_profile(fault="drop", fault_after_chunks=3, tokens_per_s=200, fault_count=1)
    with pytest.raises(openai.APIError):
        await ask_stream(c, temperature=0)
    assert app[CACHE].counts.stored == 0
    _, h = await ask(c, temperature=0)
    assert h["x-aiogw-cache-status"] == "miss"


async def test_the_controls(sim, cached):
    c, _, app = cached
    _, h = await ask(c, {"cache-control": "no-store"}, temperature=0)
    assert h["x-aiogw-cache-status"] == "miss"
    with pytest.raises(openai.APIStatusError) as e:  # nothing was stored
        await ask(c, {"cache-control": "only-if-cached"}, temperature=0)
    assert e.value.status_code == 504 and e.value.body["code"] == "cache_miss"
    await ask(c, temperature=0)
    await until(stored(app))
    _, h = await ask(c, {"cache-control": "only-if-cached"}, temperature=0)
    assert h["x-aiogw-cache-status"] == "hit"
    _, h = await ask(c, {"cache-control": "no-cache"}, temperature=0)  # refresh: upstream again
    assert h["x-aiogw-cache-status"] == "miss"
    _, h = await ask(c, {"x-aiogw-cache": "off"}, temperature=0)
    assert h["x-aiogw-cache-status"] == "bypass" and h["x-aiogw-cache-reason"] == "off"
    _, h = await ask(c, {"x-aiogw-cache": "write"}, temperature=0)
    assert h["x-aiogw-cache-status"] == "miss"
    _, h = await ask(c, {"x-aiogw-cache": "read"}, temperature=0)
    assert h["x-aiogw-cache-status"] == "hit"
    _, h = await ask(c, {"cache-control": "max-age=3600"}, temperature=0)
    assert h["x-aiogw-cache-status"] == "hit"
    _, h = await ask(c, {"x-aiogw-cache-namespace": "other"}, temperature=0)  # its own partition
    assert h["x-aiogw-cache-status"] == "miss"
    with pytest.raises(openai.BadRequestError) as bad:
        await ask(c, {"x-aiogw-cache-ttl": "soon"}, temperature=0)
    assert bad.value.body["param"] == "x-aiogw-cache-ttl"
    with pytest.raises(openai.APIStatusError) as e:  # not cacheable at all: no entry to hope for
        await ask(c, {"cache-control": "only-if-cached"}, temperature=1)
    assert e.value.status_code == 504 and e.value.response.headers["x-aiogw-cache-reason"] == "creative"


async def test_identical_concurrent_misses_make_one_upstream_call(sim, cached):
    c, _, _ = cached
    sim.set_profile(ttft_ms=300)  # the first call is still upstream when the others arrive
    answers = await asyncio.gather(*(ask(c, temperature=0) for _ in range(20)))
    assert sim.stats()["requests"] == 1
    texts = {a.choices[0].message.content for a, _ in answers}
    assert len(texts) == 1
    statuses = sorted(h["x-aiogw-cache-status"] for _, h in answers)
    assert statuses == ["hit"] * 19 + ["miss"]


async def admin(url, method, path, body=None, headers=ADMIN):
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, url.removesuffix("/v1") + path, json=body, headers=headers) as r,
    ):
        return r.status, await r.json()


async def new_key(url, **body):
    status, made = await admin(url, "POST", "/admin/v1/keys", {"name": "test", **body})
    assert status == 201, made
    return made["key"]


async def test_teams_never_share_an_entry(sim, make_gateway, tmp_path):
    url, app = await make_gateway(keys_config(sim, tmp_path))
    search, search2, ads = [await new_key(url, team=t) for t in ("search", "search", "ads")]
    async with sdk(url, search) as a, sdk(url, search2) as a2, sdk(url, ads) as b:
        _, h = await ask(a, temperature=0)
        assert h["x-aiogw-cache-status"] == "miss"
        await until(stored(app))
        _, h = await ask(b, temperature=0)  # another team: never the first team's answer
        assert h["x-aiogw-cache-status"] == "miss"
        _, h = await ask(a2, temperature=0)  # the same team, another key: shared
        assert h["x-aiogw-cache-status"] == "hit"
    assert sim.stats()["requests"] == 2


async def test_scope_key_keeps_each_key_apart(sim, make_gateway, tmp_path):
    url, app = await make_gateway(keys_config(sim, tmp_path, {"scope": "key"}))
    one, two = [await new_key(url, team="search") for _ in range(2)]
    async with sdk(url, one) as a, sdk(url, two) as b:
        await ask(a, temperature=0)
        await until(stored(app))
        _, h = await ask(b, temperature=0)
        assert h["x-aiogw-cache-status"] == "miss"
        _, h = await ask(a, temperature=0)
        assert h["x-aiogw-cache-status"] == "hit"


async def test_purge(sim, make_gateway, tmp_path):
    url, app = await make_gateway(keys_config(sim, tmp_path))
    key = await new_key(url)
    async with sdk(url, key) as c:
        await ask(c, temperature=0)
        await ask(c, {"x-aiogw-cache-namespace": "docs"}, temperature=0)
        await until(stored(app, 2))
        status, err = await admin(url, "POST", "/admin/v1/cache/purge", {}, headers={"authorization": f"Bearer {key}"})
        assert status == 401 and err["error"]["code"] == "invalid_api_key"
        status, got = await admin(url, "POST", "/admin/v1/cache/purge", {"namespace": "docs"})
        assert status == 200 and got["purged"] == 1
        _, h = await ask(c, {"x-aiogw-cache-namespace": "docs"}, temperature=0)
        assert h["x-aiogw-cache-status"] == "miss"
        _, h = await ask(c, temperature=0)  # another namespace: kept
        assert h["x-aiogw-cache-status"] == "hit"
        status, got = await admin(url, "POST", "/admin/v1/cache/purge", {"model": "fast"})
        assert status == 200 and got["purged"] == 2
        _, h = await ask(c, temperature=0)
        assert h["x-aiogw-cache-status"] == "miss"
        status, err = await admin(url, "POST", "/admin/v1/cache/purge", {"everything": True})
        assert status == 400 and err["error"]["type"] == "invalid_request_error"


async def test_stats_count_hits_and_saved_spend_per_model_behind_the_master_key(sim, make_gateway, tmp_path):
    url, app = await make_gateway(keys_config(sim, tmp_path))
    key = await new_key(url)
    async with sdk(url, key) as c:
        _, h1 = await ask(c, temperature=0)
        await until(stored(app))
        for _ in range(2):
            _, h = await ask(c, temperature=0)
            assert h["x-aiogw-cache-status"] == "hit"
        await ask(c, temperature=1)  # creative: a bypass, neither a hit nor a miss
    status, err = await admin(url, "GET", "/admin/v1/cache/stats", headers={"authorization": f"Bearer {key}"})
    assert status == 401 and err["error"]["code"] == "invalid_api_key"
    status, got = await admin(url, "GET", "/admin/v1/cache/stats")
    assert status == 200, got
    assert (got["hits"], got["misses"], got["bypass"], got["stored"]) == (2, 1, {"creative": 1}, 1)
    assert got["hit_rate"] == pytest.approx(2 / 3) and got["backend"] == "memory" and got["entries"] == 1
    [fast] = got["models"]
    saved = 2 * float(h1["x-aiogw-cost-usd"])
    assert (fast["model"], fast["hits"], fast["misses"]) == ("fast", 2, 1)
    assert fast["saved_usd"] == pytest.approx(saved, rel=1e-3) and got["saved_usd"] == pytest.approx(saved, rel=1e-3)


async def test_a_hit_holds_no_budget_and_is_in_the_ledger(sim, make_gateway, tmp_path):
    # Room for one answer: after it, a miss's worst case no longer fits (402); a hit still does.
    budget = [{"scope": "global", "limit_usd": 0.04}]
    url, _ = await make_gateway(keys_config(sim, tmp_path, budgets=budget))
    async with sdk(url) as c:
        _, h1 = await ask(c, temperature=0, max_tokens=30)
        assert h1["x-aiogw-cache-status"] == "miss"
        with pytest.raises(openai.APIStatusError) as e:
            await ask(c, {"x-aiogw-cache": "off"}, temperature=0, max_tokens=30)
        assert e.value.status_code == 402
        for _ in range(50):  # the write is off the request path
            _, h = await ask(c, temperature=0, max_tokens=30)
            if h["x-aiogw-cache-status"] == "hit":
                break
            assert h["x-aiogw-cache-status"] == "miss"
        assert h["x-aiogw-cache-status"] == "hit"
    status, report = await admin(url, "GET", "/admin/v1/spend?group_by=model")
    assert status == 200
    totals = report["totals"]
    assert totals["saved_usd"] == pytest.approx(float(h1["x-aiogw-cost-usd"]))
    assert totals["cost_usd"] == pytest.approx(float(h1["x-aiogw-cost-usd"]))


async def test_redis_is_shared_by_two_gateways(sim, make_gateway, redis_server):
    cfg = cache_config(sim, {"backend": "redis"}, state={"redis_url": redis_server.url})
    url_a, app_a = await make_gateway(cfg)
    url_b, _ = await make_gateway(cfg)
    async with sdk(url_a) as a, sdk(url_b) as b:
        chunks, h = await ask_stream(a, temperature=0)
        assert h["x-aiogw-cache-status"] == "miss"
        await until(stored(app_a))
        got, h = await ask(b, temperature=0)
        assert h["x-aiogw-cache-status"] == "hit" and got.choices[0].message.content == text_of(chunks)
        status, _ = await admin(url_b, "POST", "/admin/v1/cache/purge", {}, headers={})
        assert status == 404  # no master key: no admin API
    assert sim.stats()["requests"] == 1


async def test_a_dead_redis_fails_open(sim, make_gateway, redis_server, capsys):
    cfg = cache_config(sim, {"backend": "redis"}, state={"redis_url": redis_server.url})
    url, app = await make_gateway(cfg)
    redis_server.stop()
    async with sdk(url) as c:
        for _ in range(3):
            a, h = await ask(c, temperature=0)
            assert h["x-aiogw-cache-status"] == "miss" and a.choices[0].message.content
    await until(lambda: app[CACHE].counts.errors >= 3)
    assert capsys.readouterr().out.count("cache.store_down") == 1  # one line per transition
    async with aiohttp.ClientSession() as s, s.get(url.removesuffix("/v1") + "/metrics") as r:
        text = await r.text()
    assert "aiogw_cache_up 0" in text and "aiogw_cache_store_errors_total" in text


async def test_a_group_override_turns_the_cache_on_for_that_group_only(sim, make_gateway):
    models = [
        {**PRICED[0], "cache": {"enabled": True, "policy": "always"}},
        {"name": "compat-model", "targets": [{"provider": "compat", "model": "sim-llama"}]},
    ]
    url, _ = await make_gateway(gateway_config(sim, models=models))
    async with sdk(url) as c:
        _, h = await ask(c, temperature=1)
        assert h["x-aiogw-cache-status"] == "miss"
        _, h = await ask(c, model="compat-model", temperature=0)
        assert "x-aiogw-cache-status" not in h


def test_a_redis_cache_needs_the_shared_redis(sim):
    from aiogw.errors import ConfigError

    with pytest.raises(ConfigError, match="state.redis_url"):
        cache_config(sim, {"backend": "redis"})
