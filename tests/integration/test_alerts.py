"""Alerts and SLOs end to end: a real gateway in front of the simulator, a real webhook
receiver (an aiohttp server on loopback) scripted to fail, and a real Redis for two
gateways deduping one occurrence."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time

import aiohttp
import pytest
from aiohttp import web
from conftest import SIM_KEY, gateway_config, until
from openai import AsyncOpenAI
from procs import start_aiogw

from aiogw.alerts.webhooks import Alerts
from aiogw.config import AlertsConfig, WebhookConfig
from aiogw.server.keys import ALERTS, DISPATCHER, METRICS
from aiogw.telemetry.metrics import GatewayMetrics
from aiogw.types import Secret
from aiogw.upstream import http

MSG = [{"role": "user", "content": "hello there"}]
SECRET = "whsec-test-0123456789"


class Receiver:
    """A webhook endpoint: records every POST (raw body, headers, arrival time) and answers
    from a script of (status, headers), then 200 once the script is used up."""

    def __init__(self) -> None:
        self.got: list[tuple[bytes, dict[str, str], float]] = []
        self.script: list[tuple[int, dict[str, str]]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.got.append((await request.read(), dict(request.headers), time.monotonic()))
        status, headers = self.script.pop(0) if self.script else (200, {})
        return web.Response(status=status, headers=headers, text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook/{token}", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook/t0k3n"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def bodies(self) -> list[dict]:
        return [json.loads(b) for b, _, _ in self.got]


@pytest.fixture
async def receiver():
    r = Receiver()
    await r.start()
    try:
        yield r
    finally:
        await r.close()


def hook(receiver, **overrides):
    return {"url": receiver.url, "secret": SECRET, "backoff_base_s": 0.01, "backoff_max_s": 5, **overrides}


def breaker_config(sim, receiver, *, webhook=None, **overrides):
    """Two targets; the first opens its breaker after two failures in a row."""
    group = {
        "name": "fast",
        "breaker": {"consecutive_failures": 2, "min_calls": 100, "open_s": 60},
        "targets": [{"provider": "sim", "model": "sim-gpt-fast"}, {"provider": "compat", "model": "sim-llama"}],
    }
    return gateway_config(
        sim,
        models=[group],
        routing={"retry": {"max_rounds": 0}},
        alerts={"webhooks": [webhook or hook(receiver)]},
        **overrides,
    )


async def open_the_breaker(sim, url):
    sim.set_profile("default", fault="status", fault_status=500)
    client = AsyncOpenAI(base_url=url, api_key="k", max_retries=0)
    for _ in range(2):  # each fails over to compat; the second failure opens sim's breaker
        await client.chat.completions.create(model="fast", messages=MSG)
    await client.close()


def counts(app, counter="alerts"):
    return dict(getattr(app[METRICS], counter).series)


async def test_a_breaker_opening_is_delivered_once_signed_with_the_body_bytes(sim, make_gateway, receiver):
    url, app = await make_gateway(breaker_config(sim, receiver))
    await open_the_breaker(sim, url)
    await until(lambda: receiver.got)
    assert len(receiver.got) == 1
    raw, headers, _ = receiver.got[0]
    # What a receiver does (the README's example): HMAC the raw bytes, compare in constant time.
    expected = "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-aiogw-signature"], expected)
    event = json.loads(raw)
    assert event["type"] == "breaker.open" and event["target"] == "sim/sim-gpt-fast"
    assert event["id"].startswith("evt_") and headers["x-aiogw-event-id"] == event["id"]
    assert event["at"].endswith("Z") and event["reason"].startswith("transient")
    assert event["consecutive_failures"] == 2
    await until(lambda: counts(app, "alert_deliveries").get(("0", "delivered")))
    assert counts(app) == {("breaker.open", "fired"): 1}
    assert counts(app, "alert_deliveries") == {("0", "delivered"): 1}
    async with aiohttp.ClientSession() as s, s.get(url.removesuffix("/v1") + "/metrics") as r:
        text = await r.text()
    assert 'aiogw_alerts_total{type="breaker.open",outcome="fired"} 1' in text
    # More failures while open (and probes failing later) are not a new opening.
    client = AsyncOpenAI(base_url=url, api_key="k", max_retries=0)
    await client.chat.completions.create(model="fast", messages=MSG)
    await client.close()
    assert counts(app) == {("breaker.open", "fired"): 1}


async def test_a_receiver_failing_twice_gets_the_same_event_three_times(sim, make_gateway, receiver):
    receiver.script = [(500, {}), (503, {}), (200, {})]
    url, app = await make_gateway(breaker_config(sim, receiver))
    await open_the_breaker(sim, url)
    await until(lambda: counts(app, "alert_deliveries").get(("0", "delivered")), times=200)
    assert len(receiver.got) == 3
    assert len({body for body, _, _ in receiver.got}) == 1, "the same bytes every time"
    assert len({h["x-aiogw-event-id"] for _, h, _ in receiver.got}) == 1
    assert counts(app, "alert_deliveries") == {("0", "retried"): 2, ("0", "delivered"): 1}


async def test_a_429_retry_after_is_waited_out(sim, make_gateway, receiver):
    # Backoff alone would wait 5-10 ms; the receiver asks for a second.
    receiver.script = [(429, {"retry-after": "1"})]
    url, app = await make_gateway(breaker_config(sim, receiver))
    await open_the_breaker(sim, url)
    await until(lambda: counts(app, "alert_deliveries").get(("0", "delivered")), times=200)
    assert len(receiver.got) == 2
    first, second = receiver.got[0][2], receiver.got[1][2]
    assert second - first >= 0.9  # a lower bound only: at least what was asked (minus timer slack)


async def test_a_receiver_that_keeps_failing_is_given_up_after_max_attempts(sim, make_gateway, receiver, capsys):
    receiver.script = [(500, {})] * 10
    url, app = await make_gateway(breaker_config(sim, receiver, webhook=hook(receiver, max_attempts=3)))
    await open_the_breaker(sim, url)
    await until(lambda: counts(app, "alert_deliveries").get(("0", "failed")), times=200)
    assert len(receiver.got) == 3
    assert counts(app, "alert_deliveries") == {("0", "retried"): 2, ("0", "failed"): 1}
    logs = capsys.readouterr().out
    assert "alert.undelivered" in logs and "HTTP 500" in logs
    assert "t0k3n" not in logs, "a webhook URL's path may be a secret: never logged"


async def test_a_4xx_is_not_retried(sim, make_gateway, receiver):
    receiver.script = [(400, {})]
    url, app = await make_gateway(breaker_config(sim, receiver))
    await open_the_breaker(sim, url)
    await until(lambda: counts(app, "alert_deliveries").get(("0", "failed")))
    assert len(receiver.got) == 1


async def test_events_not_subscribed_are_not_sent(sim, make_gateway, receiver):
    url, app = await make_gateway(breaker_config(sim, receiver, webhook=hook(receiver, events=["slo.breach"])))
    await open_the_breaker(sim, url)
    await until(lambda: counts(app))
    assert counts(app) == {("breaker.open", "fired"): 1}  # logged and counted all the same
    assert receiver.got == []


async def test_two_gateways_sharing_redis_send_one_occurrence_once(sim, make_gateway, receiver, redis_server):
    cfg = breaker_config(sim, receiver, state={"redis_url": redis_server.url, "key_prefix": "alerts-test"})
    _, a = await make_gateway(cfg)
    _, b = await make_gateway(cfg)
    for app in (a, b):
        app[ALERTS].fire("budget.threshold", once_per="budget:b1:2026-12:0.8", budget="b1", threshold=0.8)

    def settled():
        seen = [counts(a), counts(b)]
        return sum(c.get(("budget.threshold", k), 0) for c in seen for k in ("fired", "duplicate")) == 2

    await until(settled)
    outcomes = sorted(k[1] for app in (a, b) for k in counts(app))
    assert outcomes == ["duplicate", "fired"]
    await until(lambda: receiver.got)
    await asyncio.sleep(0)
    assert len(receiver.got) == 1
    # The same occurrence fired again on either replica is not sent again.
    a[ALERTS].fire("budget.threshold", once_per="budget:b1:2026-12:0.8", budget="b1", threshold=0.8)
    assert counts(a)[("budget.threshold", "duplicate")] >= 1
    assert len(receiver.got) == 1


async def test_a_full_queue_drops_the_oldest_and_close_delivers_the_rest(receiver):
    metrics = GatewayMetrics()
    client = http.Client()
    cfg = AlertsConfig(
        webhooks=[WebhookConfig(url=receiver.url, secret=Secret(SECRET), backoff_base_s=0.01)], queue_size=2
    )
    alerts = Alerts(cfg, client, metrics)
    for i in range(3):  # not started yet: all three wait in the queue of two
        alerts.fire("key.expiring", once_per=f"k{i}", key_id=f"k{i}")
    assert metrics.alerts.series[("key.expiring", "dropped")] == 1
    alerts.start()
    await alerts.close(10.0)  # shutdown: what is queued is delivered within the grace
    await client.close()
    assert sorted(b["key_id"] for b in receiver.bodies()) == ["k1", "k2"]
    assert metrics.alert_deliveries.series == {("0", "delivered"): 2}


# --- SLOs ------------------------------------------------------------------------------------


def slo_config(sim, receiver, **slo):
    """Priority order: `slow` (an account answering its first token after 250 ms) first."""
    providers = {
        "slow": {"type": "openai-compatible", "base_url": sim.base_url("slow")},
        "compat": {"type": "openai-compatible", "base_url": sim.base_url("compat")},
    }
    group = {
        "name": "smart",
        "slo": {"ttft_p95_ms": 100, "min_calls": 3, **slo},
        "targets": [{"provider": "slow", "model": "sim-gpt-fast"}, {"provider": "compat", "model": "sim-llama"}],
    }
    return gateway_config(
        sim, providers=providers, models=[group], alerts={"webhooks": [hook(receiver, events=["slo.breach"])]}
    )


async def health_of(url):
    async with aiohttp.ClientSession() as s, s.get(url + "/gateway/health") as r:
        return {t["id"]: t for t in (await r.json())["targets"]}


async def test_a_target_out_of_its_slo_is_ranked_after_one_within(sim, make_gateway, receiver):
    sim.set_profile("slow", ttft_ms=250)
    url, app = await make_gateway(slo_config(sim, receiver))
    client = AsyncOpenAI(base_url=url, api_key="k", max_retries=0)

    async def provider():
        raw = await client.chat.completions.with_raw_response.create(model="smart", messages=MSG, stream=True)
        async for _ in raw.parse():
            pass
        return raw.headers["x-aiogw-provider"]

    assert [await provider() for _ in range(3)] == ["slow"] * 3  # priority: slow first, while unmeasured
    seen = {}

    async def breached():
        seen.update(await health_of(url))
        return seen["slow/sim-gpt-fast"]["slo"]["status"] == "breach"

    await until(breached, every=0.05)
    slow, fast = seen["slow/sim-gpt-fast"]["slo"], seen["compat/sim-llama"]["slo"]
    assert slow == {
        "model": "smart",
        "status": "breach",
        "breached": ["ttft_p95_ms"],
        "objectives": {"ttft_p95_ms": 100},
        "min_calls": 3,
    }
    assert fast["status"] == "unknown"  # no calls yet: ranked as within
    assert await provider() == "compat"
    assert await provider() == "compat"
    await client.close()

    await until(lambda: receiver.got)
    (event,) = receiver.bodies()
    assert event["type"] == "slo.breach" and event["model"] == "smart" and event["target"] == "slow/sim-gpt-fast"
    assert event["breached"] == ["ttft_p95_ms"] and event["observed"]["ttft_p95_ms"] > 100
    assert counts(app) == {("slo.breach", "fired"): 1}  # once per episode, not once per evaluation
    async with aiohttp.ClientSession() as s, s.get(url.removesuffix("/v1") + "/metrics") as r:
        text = await r.text()
    assert 'aiogw_slo_status{model="smart",target="slow/sim-gpt-fast",status="breach"} 1' in text


async def test_without_slos_there_is_no_slo_field_metric_or_work(sim, make_gateway):
    url, app = await make_gateway(gateway_config(sim))
    client = AsyncOpenAI(base_url=url, api_key="k", max_retries=0)
    await client.chat.completions.create(model="fast", messages=MSG)
    await client.close()
    assert app[DISPATCHER].slo is None and app[DISPATCHER].router._slo is None
    assert all("slo" not in t for t in (await health_of(url)).values())
    async with aiohttp.ClientSession() as s, s.get(url.removesuffix("/v1") + "/metrics") as r:
        assert "aiogw_slo_status" not in await r.text()


async def test_sigterm_waits_for_a_delivery_being_retried(sim, receiver, tmp_path):
    # The receiver asks for a second's pause; SIGTERM arrives during it; the process stays
    # (within its grace) to deliver, then exits 0.
    receiver.script = [(503, {"retry-after": "1"})]
    cfg = {
        "server": {"shutdown_grace": 10},
        "providers": {
            "sim": {"type": "openai", "base_url": sim.base_url(), "api_key": "${SIM_KEY}"},
            "compat": {"type": "openai-compatible", "base_url": sim.base_url("compat")},
        },
        "models": [
            {
                "name": "fast",
                "breaker": {"consecutive_failures": 2, "min_calls": 100, "open_s": 60},
                "retry": {"max_rounds": 0},
                "targets": [{"provider": "sim", "model": "sim-gpt-fast"}, {"provider": "compat", "model": "sim-llama"}],
            }
        ],
        "alerts": {"webhooks": [hook(receiver)]},
    }
    path = tmp_path / "aiogw.json"
    path.write_text(json.dumps(cfg))
    proc = await start_aiogw("--config", str(path), env={"SIM_KEY": SIM_KEY})
    try:
        await open_the_breaker(sim, proc.url + "/v1")
        await until(lambda: receiver.got, times=200)
        proc.signal()
        assert await proc.stop() == 0
    finally:
        if proc.proc.returncode is None:
            proc.proc.kill()
    assert len(receiver.got) == 2 and receiver.bodies()[0] == receiver.bodies()[1]
    assert any(line.get("event") == "alert.delivered" for line in proc.logs())
