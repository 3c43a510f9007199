"""Active health checks end to end: a real gateway in front of the simulator, whose faults
are switched at run time and whose counters show every call that reached it. An open breaker
must close through health checks alone, with no user request spent on probing."""

from __future__ import annotations

import aiohttp
from conftest import gateway_config, until
from openai import AsyncOpenAI
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

MSG = [{"role": "user", "content": "hello there"}]
BAD = "sim/sim-gpt-fast"  # the simulator's default account, failed and healed by the tests


def checked(sim, *, interval_s=0.1, breaker=None, **overrides):
    """Group `fast`: the default account first (priced, so checks cost), `compat` behind it."""
    group = {
        "name": "fast",
        "targets": [
            {"provider": "sim", "model": "sim-gpt-fast", "price": {"input": 1.0, "output": 2.0}},
            {"provider": "compat", "model": "sim-llama"},
        ],
        # open_s is long: only a health check can bring the target back within a test.
        "breaker": {"consecutive_failures": 2, "open_s": 600, "close_after": 2, **(breaker or {})},
        "health_check": {"interval_s": interval_s, "timeout_s": 2},
    }
    return gateway_config(sim, models=[group], routing={"retry": {"max_rounds": 0}}, **overrides)


async def targets(url):
    async with aiohttp.ClientSession() as s, s.get(f"{url}/gateway/health") as r:
        return {t["id"]: t for t in (await r.json())["targets"]}


async def get_json(url, path):
    async with aiohttp.ClientSession() as s, s.get(f"{url}{path}") as r:
        return await r.json()


async def samples(url, name):
    root = url.removesuffix("/v1")
    async with aiohttp.ClientSession() as s, s.get(f"{root}/metrics") as r:
        text = await r.text()
    return [smp for fam in text_string_to_metric_families(text) for smp in fam.samples if smp.name == name]


async def open_bad_target(url):
    client = AsyncOpenAI(base_url=url, api_key="k", max_retries=0, timeout=20)
    try:
        for _ in range(2):  # two failures open it; the client never notices
            raw = await client.chat.completions.with_raw_response.create(model="fast", messages=MSG)
            assert raw.headers["x-aiogw-provider"] == "compat"
    finally:
        await client.close()


async def state_is(url, target, state):
    return (await targets(url))[target]["state"] == state


async def test_an_open_breaker_closes_through_health_checks_alone(sim, make_gateway):
    sim.set_profile("default", fault="status", fault_status=500)
    with capture_logs() as logs:
        url, _ = await make_gateway(checked(sim))
        await open_bad_target(url)
        assert await state_is(url, BAD, "open")

        # While it is open the checks run and fail with it: it stays open.
        async def failed_checks():
            hc = (await targets(url))[BAD]["health_check"]
            return hc["checks"] >= 2 and hc["last_outcome"] == "transient"

        await until(failed_checks, every=0.05, times=200)
        t = (await targets(url))[BAD]
        hc = t["health_check"]
        assert t["state"] == "open" and hc["active"] and hc["prober"] == "this replica", t
        assert hc["last_outcome"] == "transient" and hc["next_at"] >= hc["last_at"], hc

        sim.set_profile("default", fault="none")  # the provider recovers
        await until(lambda: state_is(url, BAD, "closed"), every=0.05, times=200)
        t = (await targets(url))[BAD]
        hc = t["health_check"]
        assert t["state"] == "closed", t
        assert hc["last_outcome"] == "ok" and not hc["active"] and hc["next_at"] is None, hc

        # Every call the target got beyond the two user requests that opened it was a check.
        stats = sim.stats("default")
        assert stats["requests"] == 2 + hc["checks"], (stats["requests"], hc)
        assert stats["last_request"]["body"]["max_tokens"] == 1
        assert stats["last_request"]["body"]["messages"] == [{"role": "user", "content": "ping"}]
        requests = await samples(url, "aiogw_requests_total")
        assert sum(s.value for s in requests) == 2  # the gateway served no other request
        checks = {
            s.labels["outcome"]: s.value
            for s in await samples(url, "aiogw_health_checks_total")
            if s.labels["target"] == BAD
        }
        assert checks["ok"] == 2 and checks["transient"] == hc["checks"] - 2, checks

        # The checks are costed, under their own tag.
        spend = await get_json(url, "/gateway/spend")
        rows = [r for r in spend["rows"] if r["tags"] == "aiogw=health-check"]
        assert len(rows) == 1 and rows[0]["model"] == BAD and rows[0]["requests"] == 2, spend
        assert rows[0]["completion_tokens"] == 2 and rows[0]["cost_usd"] > 0
        cost = [s for s in await samples(url, "aiogw_cost_usd_total") if s.labels["tags"] == "aiogw=health-check"]
        assert cost and cost[0].value == rows[0]["cost_usd"]

        # Closed: user requests go to the target again.
        client = AsyncOpenAI(base_url=url, api_key="k", max_retries=0, timeout=20)
        raw = await client.chat.completions.with_raw_response.create(model="fast", messages=MSG)
        await client.close()
        assert raw.headers["x-aiogw-provider"] == "sim"

    # One line per change of outcome or breaker state, not one per check.
    lines = [(e["outcome"], e["breaker"]) for e in logs if e["event"] == "health_check.result" and e["target"] == BAD]
    assert lines == [("transient", "open"), ("ok", "half_open"), ("ok", "closed")], lines


async def test_with_health_checks_user_requests_are_never_half_open_probes(sim, make_gateway):
    sim.set_profile("default", fault="status", fault_status=500)
    # A short cooldown that would turn the breaker half-open, and no check within the test.
    url, _ = await make_gateway(checked(sim, interval_s=3600, breaker={"open_s": 0.1}))
    await open_bad_target(url)
    before = sim.stats("default")["requests"]
    await until(lambda: targets(url), every=0.05)
    await until(lambda: _since_failure(url, 0.3), every=0.05)
    client = AsyncOpenAI(base_url=url, api_key="k", max_retries=0, timeout=20)
    try:
        for _ in range(4):
            raw = await client.chat.completions.with_raw_response.create(model="fast", messages=MSG)
            assert raw.headers["x-aiogw-provider"] == "compat" and raw.headers["x-aiogw-attempts"] == "1"
    finally:
        await client.close()
    assert sim.stats("default")["requests"] == before  # no user request was used as a probe
    t = (await targets(url))[BAD]
    assert t["state"] == "open" and t["health_check"]["active"] and t["health_check"]["checks"] == 0, t


async def _since_failure(url, seconds):
    since = (await targets(url))[BAD]["seconds_since_failure"]
    return since is not None and since >= seconds


async def test_a_check_the_target_refuses_stops_the_checks_and_user_probes_take_over(sim, make_gateway):
    sim.set_profile("default", fault="status", fault_status=500)
    with capture_logs() as logs:
        url, _ = await make_gateway(checked(sim, breaker={"open_s": 0.2}))
        await open_bad_target(url)
        sim.set_profile("default", fault="status", fault_status=400, fault_count=1)  # the next check is refused

        async def refused():
            return not (await targets(url))[BAD]["health_check"]["enabled"]

        await until(refused, every=0.05, times=200)
        hc = (await targets(url))[BAD]["health_check"]
        assert hc["enabled"] is False and hc["last_outcome"] == "refused" and not hc["active"], hc
        checks = hc["checks"]
        # Without checks the cooldown applies again, and user requests probe the target.
        await until(lambda: state_is(url, BAD, "half_open"), every=0.05)
        client = AsyncOpenAI(base_url=url, api_key="k", max_retries=0, timeout=20)
        providers = []
        for _ in range(2):
            raw = await client.chat.completions.with_raw_response.create(model="fast", messages=MSG)
            providers.append(raw.headers["x-aiogw-provider"])
        await client.close()
        assert providers == ["sim", "sim"] and await state_is(url, BAD, "closed")
        assert (await targets(url))[BAD]["health_check"]["checks"] == checks  # none since
    refusals = [e for e in logs if e["event"] == "health_check.refused"]
    assert len(refusals) == 1 and refusals[0]["log_level"] == "error" and refusals[0]["target"] == BAD, refusals


async def test_one_replica_checks_for_the_fleet(redis_server, sim, make_gateway):  # Redis outlives both
    sim.set_profile("default", fault="status", fault_status=500)
    cfg = checked(
        sim, interval_s=0.25, state={"redis_url": redis_server.url, "key_prefix": "hc", "sync_interval_ms": 50}
    )
    url_a, _ = await make_gateway(cfg)
    url_b, _ = await make_gateway(cfg)
    await open_bad_target(url_a)
    await until(lambda: state_is(url_b, BAD, "open"), every=0.05)  # adopted through Redis

    async def counts():
        return [(await targets(u))[BAD]["health_check"]["checks"] for u in (url_a, url_b)]

    async def enough():
        return sum(await counts()) >= 4

    await until(enough, every=0.05, times=200)
    a, b = [(await targets(u))[BAD]["health_check"] for u in (url_a, url_b)]
    assert sorted([a["checks"], b["checks"]])[0] == 0 and a["checks"] + b["checks"] >= 4, (a, b)
    assert {a["prober"], b["prober"]} == {"this replica", "another replica"}, (a, b)

    sim.set_profile("default", fault="none")
    await until(lambda: state_is(url_a, BAD, "closed"), every=0.05, times=200)
    await until(lambda: state_is(url_b, BAD, "closed"), every=0.05)
    assert await state_is(url_a, BAD, "closed") and await state_is(url_b, BAD, "closed")
    after = await counts()
    assert sorted(after)[0] == 0  # the closing came from the prober, and the other adopted it
    assert sim.stats("default")["requests"] == 2 + sum(after)
