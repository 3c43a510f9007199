"""State shared through a real redis-server: two real `aiogw serve` processes act as one
gateway (breakers, rpm limits, health windows), and Redis going away fails nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json

import aiohttp
import openai
import pytest
import redis as redis_client
from conftest import SIM_KEY
from conftest import until as _until
from openai import AsyncOpenAI
from procs import start_aiogw
from structlog.testing import capture_logs

from aiogw.adapters._base import Target
from aiogw.admission.limits import LimitExceeded
from aiogw.config import StateConfig
from aiogw.errors import FailureClass
from aiogw.routing.health import LocalHealth
from aiogw.routing.health import now as health_now
from aiogw.state.link import redacted
from aiogw.state.shared import SharedState

MSG = [{"role": "user", "content": "hi"}]


def _target(**kw) -> Target:
    return Target(
        id="acct/model-x", provider="acct", type="openai", model="model-x", base_url="http://127.0.0.1:1", **kw
    )


# Redis calls are bounded by `timeout_ms` (50 ms by default): a loaded test machine misses
# that now and then and the replica degrades to local state. Tests that are not about the
# bound give Redis this much instead.
PATIENT_MS = 2000


@contextlib.asynccontextmanager
async def _pair(redis_server, **cfg):
    """Two replicas' health and shared state on one Redis, closed afterwards."""
    a, b = LocalHealth(), LocalHealth()
    state = StateConfig(redis_url=redis_server.url, key_prefix="t", **{"timeout_ms": PATIENT_MS, **cfg})
    sa, sb = SharedState(state, a), SharedState(state, b)
    await sa.start()
    await sb.start()
    try:
        yield (a, sa), (b, sb)
    finally:
        await sa.close()
        await sb.close()


# --- the scripts against the real server --------------------------------------------------


async def test_rpm_bucket_is_one_for_both_replicas(redis_server):
    async with _pair(redis_server) as ((_, sa), (_, sb)):
        t = _target(rpm=5)
        taken = 0
        for i in range(10):
            try:
                taken += await (sa if i % 2 else sb).take(t, 1)
            except LimitExceeded as exc:
                assert exc.reason == "fleet-wide rpm" and 0 < exc.retry_after_s <= 12.1
        assert taken == 5


async def test_tpm_reservation_is_settled_with_real_usage(redis_server):
    async with _pair(redis_server) as ((_, sa), (_, sb)):
        t = _target(tpm=1000)
        assert await sa.take(t, 800)
        with pytest.raises(LimitExceeded, match="tpm"):
            await sb.take(t, 800)
        sa.settle(t, 800, 100)  # only 100 were used: 700 go back (via a's lease when it ends)

        taken = []

        async def b_takes_800():
            with contextlib.suppress(LimitExceeded):
                taken.append(await sb.take(t, 800))  # False: Redis was not reached
            return taken and taken[-1]

        await _until(b_takes_800, every=0.05)  # refill alone would take 36 s
        assert taken and taken[-1] is True, "the settled tokens never came back"


async def test_breaker_transitions_and_window_counts_reach_the_other_replica(redis_server):
    async with _pair(redis_server, sync_interval_ms=50) as ((ha, _sa), (hb, _sb)):
        a, b = ha.get("acct/model-x"), hb.get("acct/model-x")
        now = health_now()
        for _ in range(3):
            a.begin(now)
            a.end(now, probe=False, failure=FailureClass.TRANSIENT, latency_ms=5)
        await _until(lambda: b.remote_calls == 3, times=200)
        assert (b.remote_calls, b.remote_failures) == (3, 3)  # a's window, seen by b
        assert (a.remote_calls, a.remote_failures) == (0, 0)  # its own counts are not doubled
        a.force_open(health_now(), "manual")
        await _until(lambda: b.state == "open")
        assert b.state == "open" and not b.available(health_now())
        a.adopt("half_open", health_now(), health_now())
        a._move("closed", health_now())  # a probe closed it on a
        await _until(lambda: b.state == "closed")
        assert b.state == "closed"


async def test_busy_targets_lease_their_rate_without_exceeding_it(redis_server):
    async with _pair(redis_server) as ((_, sa), (_, sb)):
        t = _target(rpm=60_000)  # leases of 100 requests
        r = redis_client.Redis(port=redis_server.port)
        r.config_resetstat()
        for i in range(1000):
            assert await (sa if i % 2 else sb).take(t, 1)
        calls = int(r.info("commandstats")["cmdstat_evalsha"]["calls"])
        assert calls <= 12, calls  # ~one round trip per 100 requests per replica, not 1,000
        # Whatever is leased is gone from the shared bucket: the fleet's total stays exact.
        level = float(r.hget("t:rl:acct/model-x", "r"))
        held = sa.buckets._leases[t.id].requests + sb.buckets._leases[t.id].requests
        assert 1000 + held + level <= 60_000 + 60_000 * 2 / 60  # plus at most 2 s of refill
        r.close()


async def test_concurrent_takes_share_one_lease_and_lose_no_units(redis_server):
    async with _pair(redis_server) as ((_, sa), (_, _sb)):
        t = _target(rpm=60_000)
        # 50 takes of one replica all go to Redis at once (no lease yet): every unit they
        # bring back must land in the one lease, not in leases that overwrite each other.
        assert all(await asyncio.gather(*(sa.take(t, 1) for _ in range(50))))
        r = redis_client.Redis(port=redis_server.port)
        level = float(r.hget("t:rl:acct/model-x", "r"))
        r.close()
        held = sa.buckets._leases[t.id].requests
        assert 60_000 - 50 - 2 * 1000 <= 50 + held + level <= 60_000  # 2 s of refill at most


async def test_a_refunded_take_is_spent_again_without_a_round_trip(redis_server):
    async with _pair(redis_server) as ((_, sa), (_, sb)):
        t = _target(rpm=2)
        assert await sa.take(t, 1)
        sa.refund(t, 1)  # e.g. refused by the local concurrency limit: nothing was sent
        r = redis_client.Redis(port=redis_server.port)
        r.config_resetstat()
        assert await sa.take(t, 1)  # from the lease
        assert "cmdstat_evalsha" not in r.info("commandstats")
        assert await sb.take(t, 1)  # the second unit of the minute is still in Redis
        with pytest.raises(LimitExceeded):
            await sb.take(t, 1)
        r.close()


async def test_window_sums_drop_seconds_that_leave_the_window(redis_server):
    async with _pair(redis_server, sync_interval_ms=50) as ((ha, _sa), (hb, _sb)):
        r = redis_client.Redis(port=redis_server.port)
        sec = int(r.time()[0])
        # Another replica's counts from 70 s and 30 s ago, as the sync script keeps them.
        r.hset(
            "t:hw:acct/model-x",
            mapping={
                "tail": sec - 80,
                "c": 7,
                "f": 5,
                f"c:{sec - 70}": 4,
                f"f:{sec - 70}": 4,
                f"c:{sec - 30}": 3,
                f"f:{sec - 30}": 1,
            },
        )
        b = hb.get("acct/model-x")
        ha.get("acct/model-x")
        await _until(lambda: b.remote_calls == 3)
        assert (b.remote_calls, b.remote_failures) == (3, 1)  # 70 s ago is out of the window
        assert r.hget("t:hw:acct/model-x", f"c:{sec - 70}") is None
        assert int(r.hget("t:hw:acct/model-x", "tail")) >= sec - 59
        r.close()


async def test_a_breaker_opened_while_redis_was_away_reaches_the_fleet_when_it_is_back(redis_server):
    async with _pair(redis_server, sync_interval_ms=50) as ((ha, sa), (hb, sb)):
        a, b = ha.get("acct/model-x"), hb.get("acct/model-x")
        r = redis_client.Redis(port=redis_server.port)
        await _subscribed(r)  # both replicas are connected before Redis goes away
        r.close()
        redis_server.stop()
        await _until(lambda: not sa.up and not sb.up, every=0.05)
        a.force_open(health_now(), "opened during the outage")
        redis_server.start()
        await _until(lambda: b.state == "open", every=0.05)  # the sync loop retries once a second while down
        assert b.state == "open" and b.last_error == "opened during the outage"


async def test_a_stalled_redis_costs_one_bounded_call_then_none(redis_server):
    import os
    import signal

    async with _pair(redis_server, timeout_ms=50) as ((_, sa), (_, _sb)):
        t = _target(rpm=600)
        assert await sa.take(t, 1)
        calls = 0
        script = sa.buckets._take

        async def counted(*args, **kw):
            nonlocal calls
            calls += 1
            return await script(*args, **kw)

        sa.buckets._take = counted
        os.kill(redis_server.proc.pid, signal.SIGSTOP)  # accepts connections, answers nothing
        try:
            # pytest-timeout fails this if the call is not bounded by timeout_ms
            assert await sa.take(t, 1) is False  # local buckets from now on
            assert not sa.up and calls == 1
            assert await sa.take(t, 1) is False
            assert calls == 1  # degraded: no Redis call at all on the request path
        finally:
            os.kill(redis_server.proc.pid, signal.SIGCONT)


def test_passwords_never_reach_logs():
    assert redacted("redis://:hunter2@cache:6379/0") == "redis://:***@cache:6379/0"
    assert redacted("redis://user:pw@cache/1") == "redis://user:***@cache/1"
    assert redacted("redis://cache:6379") == "redis://cache:6379"


# --- two real replicas --------------------------------------------------------------------


@pytest.fixture
def replica_config(tmp_path, sim, redis_server):
    def write(breaker_open_s=60, **state):
        cfg = {
            "server": {"shutdown_grace": 2},
            "state": {"redis_url": redis_server.url, "sync_interval_ms": 100, "timeout_ms": PATIENT_MS, **state},
            "providers": {
                "bad": {"type": "openai", "base_url": sim.base_url("bad"), "api_key": "${SIM_KEY}"},
                "sim": {"type": "openai", "base_url": sim.base_url(), "api_key": "${SIM_KEY}"},
                "slow": {"type": "openai", "base_url": sim.base_url("slow"), "api_key": "${SIM_KEY}"},
            },
            "models": [
                {
                    "name": "safe",
                    "targets": [
                        {"provider": "bad", "model": "sim-gpt-fast"},
                        {"provider": "sim", "model": "sim-gpt-fast"},
                    ],
                    "breaker": {"consecutive_failures": 3, "open_s": breaker_open_s},
                    "retry": {"max_rounds": 0},
                },
                {"name": "limited", "targets": [{"provider": "sim", "model": "sim-gpt-mini", "limits": {"rpm": 20}}]},
                {"name": "fast", "targets": [{"provider": "sim", "model": "sim-gpt-fast"}]},
                {
                    "name": "narrow",
                    "targets": [{"provider": "slow", "model": "sim-gpt-fast", "limits": {"rpm": 4, "concurrency": 1}}],
                },
            ],
        }
        p = tmp_path / "aiogw.json"
        p.write_text(json.dumps(cfg))
        return str(p)

    return write


async def _replicas(path):
    a = await start_aiogw("--config", path, env={"SIM_KEY": SIM_KEY})
    b = await start_aiogw("--config", path, env={"SIM_KEY": SIM_KEY})
    return a, b


async def _health(session, proc, target_id):
    async with session.get(proc.url + "/v1/gateway/health") as r:
        body = await r.json()
    return body, next(t for t in body["targets"] if t["id"] == target_id)


async def _health_when(session, proc, target_id, ok, *, every=0.05):
    """`_health` once `ok(target)` holds, or as last seen when the polls run out (the caller
    asserts what it needs)."""
    seen = []

    async def check():
        seen[:] = await _health(session, proc, target_id)
        return ok(seen[1])

    await _until(check, every=every)
    return seen[0], seen[1]


async def test_a_breaker_opened_through_one_replica_is_honoured_by_the_other(sim, replica_config):
    a, b = await _replicas(replica_config())
    try:
        sim.set_profile("bad", fault="status", fault_status=500)
        ca = AsyncOpenAI(base_url=a.url + "/v1", api_key="k", max_retries=0)
        cb = AsyncOpenAI(base_url=b.url + "/v1", api_key="k", max_retries=0)
        for _ in range(3):  # failovers through A open bad/ on A
            await ca.chat.completions.create(model="safe", messages=MSG)
        async with aiohttp.ClientSession() as s:
            body, bad = await _health_when(s, b, "bad/sim-gpt-fast", lambda t: t["state"] == "open")
            assert bad["state"] == "open", bad
            assert body["shared_state"]["backend"] == "redis" and body["shared_state"]["connected"] is True
        before = sim.stats("bad")["requests"]
        for _ in range(5):
            raw = await cb.chat.completions.with_raw_response.create(model="safe", messages=MSG)
            assert raw.headers["x-aiogw-provider"] == "sim"
        assert sim.stats("bad")["requests"] == before  # B never called the open target
        await ca.close()
        await cb.close()
    finally:
        await a.stop()
        await b.stop()


async def test_after_the_cooldown_one_replica_probes_for_both(sim, replica_config):
    a, b = await _replicas(replica_config(breaker_open_s=1.0))
    try:
        sim.set_profile("bad", fault="status", fault_status=500)
        async with aiohttp.ClientSession() as s:

            async def ask(proc):
                async with s.post(proc.url + "/v1/chat/completions", json={"model": "safe", "messages": MSG}) as r:
                    assert r.status == 200  # answered by sim/ whatever happens to bad/

            for _ in range(3):
                await ask(a)  # opens bad/ on a, adopted by b
            await _health_when(s, b, "bad/sim-gpt-fast", lambda t: t["state"] == "open")
            before = sim.stats("bad")["requests"]
            for p in (a, b):  # both cooldowns are over: half-open on both replicas
                _, bad = await _health_when(s, p, "bad/sim-gpt-fast", lambda t: t["state"] == "half_open")
                assert bad["state"] == "half_open", bad
            await asyncio.gather(*(ask(p) for p in (a, b, a, b, a, b)))
        # Each replica alone would send its own probe (2); the fleet sends one.
        assert sim.stats("bad")["requests"] - before == 1
    finally:
        await a.stop()
        await b.stop()


def _client(proc) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=proc.url + "/v1", api_key="k", max_retries=0, timeout=20)


async def test_an_rpm_limit_holds_across_both_replicas(sim, replica_config):
    a, b = await _replicas(replica_config())
    ca, cb = _client(a), _client(b)
    try:
        outcomes = []

        async def one(client):
            try:
                await client.chat.completions.create(model="limited", messages=MSG)
                outcomes.append(200)
            except openai.RateLimitError as exc:
                assert int(exc.response.headers["retry-after"]) >= 1
                assert "fleet-wide rpm" in exc.message
                outcomes.append(429)

        await asyncio.gather(*(one(ca if i % 2 else cb) for i in range(40)))
        ok = outcomes.count(200)
        # 20 per minute for the pair (each replica alone would allow 20): a refill of 1 in 3 s
        # is the only slack.
        assert 20 <= ok <= 21, outcomes
        assert outcomes.count(429) == 40 - ok
        async with aiohttp.ClientSession() as s:  # both report the fleet's headroom, not their own
            for proc in (a, b):
                _, t = await _health_when(s, proc, "sim/sim-gpt-mini", lambda t: t["limits"]["rpm_remaining"] < 2)
                assert t["limits"]["rpm_remaining"] < 2, t["limits"]
    finally:
        await ca.close()
        await cb.close()
        await a.stop()
        await b.stop()


async def test_attempts_refused_by_a_local_limit_leave_the_fleets_rate_alone(sim, replica_config, redis_server):
    a, b = await _replicas(replica_config())
    ca, cb = _client(a), _client(b)
    r = redis_client.Redis(port=redis_server.port)
    try:
        sim.set_profile("slow", ttft_ms=1500)
        slow = asyncio.create_task(ca.chat.completions.create(model="narrow", messages=MSG))
        async with aiohttp.ClientSession() as s:
            # the slow call holds a's only concurrency slot
            await _health_when(s, a, "slow/sim-gpt-fast", lambda t: t["in_flight"] == 1, every=0.02)
            for _ in range(6):  # refused by a's concurrency limit, not by the fleet's rpm
                with pytest.raises(openai.RateLimitError, match="concurrency"):
                    await ca.chat.completions.create(model="narrow", messages=MSG)
            await slow
        sim.set_profile("slow", ttft_ms=0)  # the slow call is over: the rest need not wait
        # a's lease ends and what it held goes back to Redis (b's health would read a bucket
        # it never synced as full: only Redis itself says the unit is back)
        level = lambda: float(r.hget("aiogw:rl:slow/sim-gpt-fast", "r") or 0)  # noqa: E731
        await _until(lambda: level() >= 2.9, every=0.05)
        assert level() >= 2.9
        for _ in range(3):  # rpm 4: one went to the slow call, three are left for the fleet
            await cb.chat.completions.create(model="narrow", messages=MSG)
        with pytest.raises(openai.RateLimitError, match="fleet-wide rpm"):
            await cb.chat.completions.create(model="narrow", messages=MSG)
    finally:
        r.close()
        await ca.close()
        await cb.close()
        await a.stop()
        await b.stop()


async def test_redis_going_away_fails_no_request_and_is_logged_once(sim, replica_config, redis_server):
    a, b = await _replicas(replica_config())
    ca, cb = _client(a), _client(b)
    try:

        async def ask(client, model="fast"):
            raw = await client.chat.completions.with_raw_response.create(model=model, messages=MSG)
            return raw.http_response.status_code

        assert {await ask(ca), await ask(cb, "limited")} == {200}
        redis_server.stop()
        for i in range(20):
            assert await ask(ca if i % 2 else cb, "limited" if i % 3 == 0 else "fast") == 200
        for p in (a, b):
            await _until(lambda p=p: any(e.get("event") == "state.redis_unavailable" for e in p.logs()), every=0.05)
        async with aiohttp.ClientSession() as s:
            body, _ = await _health(s, a, "sim/sim-gpt-fast")
            assert body["shared_state"]["connected"] is False
        redis_server.start()
        await _until(lambda: all(any(e.get("event") == "state.redis_restored" for e in p.logs()) for p in (a, b)),
                     every=0.05, times=200)  # fmt: skip
        assert await ask(ca) == 200 and await ask(cb, "limited") == 200
    finally:
        await ca.close()
        await cb.close()
        await a.stop()
        await b.stop()
    for p in (a, b):
        down = [e for e in p.logs() if e.get("event") == "state.redis_unavailable"]
        assert len(down) == 1 and down[0]["level"] == "error", down
        assert any(e.get("event") == "state.redis_restored" for e in p.logs())


async def test_one_replica_probes_a_half_open_target_for_the_fleet(redis_server):
    async with _pair(redis_server) as ((_, sa), (_, sb)):
        # A lease long enough that b asks while a holds it, however loaded the machine.
        assert await sa.claim_probe("acct/model-x", 1.0)
        assert not await sb.claim_probe("acct/model-x", 1.0)  # a is probing
        assert await sa.claim_probe("acct/model-x", 1.0)  # the holder renews for its next probe
        # a stops asking: once its lease runs out (and b's remembered refusal with it), b may.
        await _until(lambda: sb.claim_probe("acct/model-x", 1.0), every=0.05)
        r = redis_client.Redis(port=redis_server.port)
        assert r.get("t:probe:acct/model-x") == sb.replica.encode()  # b's by the lease, not by an outage
        r.close()
        assert sa.up and sb.up


# --- bad records and loops that die -------------------------------------------------------


def _events(logs, event):
    return [e for e in logs if e.get("event") == event]


async def _subscribed(r, n=2):
    """Until `n` replicas listen on the breaker channel (a message published before is not theirs)."""
    await _until(lambda: r.pubsub_numsub("t:breaker")[0][1] == n, times=200)


async def test_garbage_in_redis_is_skipped_logged_once_per_kind_and_sync_goes_on(redis_server):
    # What an older or newer aiogw (a rolling deploy) or anything else may leave on the
    # channel and in the keys: each record is skipped on its own, never the loop.
    with capture_logs() as logs:
        async with _pair(redis_server, sync_interval_ms=50) as ((ha, sa), (hb, sb)):
            a, b = ha.get("acct/model-x"), hb.get("acct/model-x")
            r = redis_client.Redis(port=redis_server.port)
            now_ms = int(r.time()[0]) * 1000
            await _subscribed(r)
            garbage = [
                b"not json",
                b"[1, 2]",
                b'{"state": "open"}',  # no at_ms
                b'{"v": 1, "state": "open", "at_ms": "soon"}',  # wrong type
                b'{"v": 1, "state": "sideways", "at_ms": %d}' % now_ms,
                b'{"v": 1, "state": "open", "at_ms": %d}' % (now_ms + 3_600_000),  # an hour ahead: would pin the target
                b'{"v": 99, "state": "open", "at_ms": %d}' % now_ms,  # a newer aiogw's record
            ]
            for g in garbage:
                r.publish("t:breaker", b"acct/model-x " + g)
            r.publish("t:breaker", b"\xff\xfe " + garbage[-1])
            r.publish("t:breaker", b"no-separator")
            r.hset(
                "t:breakers",
                mapping={"acct/model-x": b"not json", "acct/model-y": garbage[2], "acct/model-z": garbage[-1]},
            )
            r.hset("t:hw:acct/model-x", mapping={"tail": "x", "c": "many", "f": "1.5"})
            r.hset("t:rl:acct/model-x", mapping={"r": "lots", "t": "1", "ts": "then"})
            ha.get("acct/model-w"), hb.get("acct/model-w")
            r.set("t:hw:acct/model-w", "not a hash")  # keys of the wrong type
            r.set("t:rl:acct/model-w", "not a hash")
            kinds = {"not_json", "invalid", "newer_version"}
            await _until(
                lambda: {e["kind"] for e in _events(logs, "state.bad_record") if e["replica"] == sb.replica} >= kinds
            )
            assert b.state == "closed"  # nothing of the garbage was applied
            assert sb.fleet_levels(_target(rpm=5)) == (5.0, None)  # an unreadable bucket reads full

            # A real change still goes both ways: window counts and breaker transitions.
            now = health_now()
            a.begin(now)
            a.end(now, probe=False, failure=FailureClass.TRANSIENT, latency_ms=5)
            await _until(lambda: b.remote_calls == 1)
            assert (b.remote_calls, b.remote_failures) == (1, 1)
            a.force_open(health_now(), "real")
            await _until(lambda: b.state == "open")
            assert b.state == "open" and b.last_error == "real"
            a.adopt("half_open", health_now(), health_now())
            a._move("closed", health_now())
            await _until(lambda: b.state == "closed")
            assert b.state == "closed"
            assert sa.up and sb.up  # garbage is not an outage
            assert sb.bad_records >= len(garbage) + 2
            r.close()
    assert not _events(logs, "state.loop_died") and not _events(logs, "state.redis_unavailable")
    for s in (sa, sb):
        bad = [e["kind"] for e in _events(logs, "state.bad_record") if e["replica"] == s.replica]
        assert sorted(bad) == sorted(set(bad)), bad  # once per kind, however often it comes


async def test_a_record_of_an_older_aiogw_without_a_version_is_still_applied(redis_server):
    async with _pair(redis_server, sync_interval_ms=50) as ((_, _sa), (hb, _sb)):
        b = hb.get("acct/model-x")
        r = redis_client.Redis(port=redis_server.port)
        at = int(r.time()[0]) * 1000
        await _subscribed(r)
        r.publish("t:breaker", b'acct/model-x {"state":"open","at_ms":%d,"replica":"old","error":"from v0"}' % at)
        await _until(lambda: b.state == "open")
        assert b.state == "open" and b.last_error == "from v0"
        r.close()


async def test_a_sync_loop_that_dies_is_logged_and_restarted(redis_server):
    with capture_logs() as logs:
        async with _pair(redis_server, sync_interval_ms=50) as ((ha, _sa), (hb, sb)):
            a, b = ha.get("acct/model-x"), hb.get("acct/model-x")
            real = sb.buckets.return_expired_leases
            calls = 0

            def fails_once():
                nonlocal calls
                calls += 1
                if calls == 1:
                    raise RuntimeError("a bug")
                real()

            sb.buckets.return_expired_leases = fails_once
            await _until(lambda: _events(logs, "state.loop_died"))
            now = health_now()
            a.begin(now)
            a.end(now, probe=False, failure=None, latency_ms=5)
            await _until(lambda: b.remote_calls == 1, times=200)
            assert b.remote_calls == 1, (logs, calls)  # b syncs again
    died = _events(logs, "state.loop_died")
    assert len(died) == 1 and died[0]["loop"] == "sync" and "RuntimeError: a bug" in died[0]["error"], died
    assert died[0]["log_level"] == "error" and died[0]["restart_in_s"] > 0


async def test_a_listener_that_dies_is_logged_and_restarted(redis_server):
    with capture_logs() as logs:
        # The sync loop comes by every 10 s: within the test only pub/sub can bring b the news.
        async with _pair(redis_server, sync_interval_ms=10_000) as ((ha, _sa), (hb, sb)):
            a, b = ha.get("acct/model-x"), hb.get("acct/model-x")
            real = sb.breakers._apply
            calls = 0

            def fails_once(*args):
                nonlocal calls
                calls += 1
                if calls == 1:
                    raise RuntimeError("a bug")
                return real(*args)

            sb.breakers._apply = fails_once
            r = redis_client.Redis(port=redis_server.port)
            await _subscribed(r)
            a.force_open(health_now(), "first")  # b's listener dies on this one
            await _until(lambda: _events(logs, "state.loop_died"))
            await _subscribed(r)  # b listens again
            r.close()
            a.adopt("half_open", health_now(), health_now())
            a._move("closed", health_now())
            a.force_open(health_now(), "second")
            await _until(lambda: b.state == "open")
            assert b.state == "open" and b.last_error == "second"
    died = _events(logs, "state.loop_died")
    assert len(died) == 1 and died[0]["loop"] == "listen", died


class _LosesCancels:
    """A pubsub whose read loses the first cancellation that lands in it, as redis-py's can
    when the cancel meets its read timeout: the read just returns, as if nothing had arrived."""

    def __init__(self, real):
        self._real = real
        self.lost = 0

    async def subscribe(self, *channels):
        await self._real.subscribe(*channels)

    async def get_message(self, **kw):
        try:
            return await self._real.get_message(**kw)
        except asyncio.CancelledError:
            if self.lost:
                raise
            self.lost += 1
            return None

    async def aclose(self):
        await self._real.aclose()


async def test_close_ends_the_loops_even_when_the_redis_client_loses_the_cancel(redis_server):
    # Before: the listener read on, close() gave up after its 2 s, and asyncio.run hung at
    # exit on the task that never ended (`aiogw serve` not exiting on SIGTERM).
    s = SharedState(StateConfig(redis_url=redis_server.url, key_prefix="t"), LocalHealth())
    made = []
    pubsub = s.link.redis.pubsub
    s.link.redis.pubsub = lambda: made.append(_LosesCancels(pubsub())) or made[-1]
    await s.start()
    r = redis_client.Redis(port=redis_server.port)
    try:
        await _subscribed(r, n=1)  # the listener is in its read
    finally:
        r.close()
    await s.close()
    loops = s._loops
    try:
        assert made[0].lost == 1 and all(t.done() for t in loops), loops
    finally:
        for t in loops:  # a second cancel ends a loop that outlived close (the bug's case)
            t.cancel()
        await asyncio.wait(loops, timeout=5)
