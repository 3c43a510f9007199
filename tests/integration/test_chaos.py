"""Chaos, bounded: 200 concurrent streaming clients while the primary provider goes down and
comes back. Every request must succeed (failover happens before the first byte), and the
breaker must open and close again. The counts are printed for the record (`pytest -s`)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
from conftest import gateway_config
from sse_client import events

CLIENTS = 200
DURATION_S = 4.0  # the whole run; every loop below is bounded by it and by MAX_REQUESTS
MAX_REQUESTS = 20_000
DOWN_AT_S, UP_AT_S = 1.0, 2.0


async def test_primary_outage_is_invisible_to_streaming_clients(sim, make_gateway):
    for account in ("default", "compat"):
        sim.set_profile(account, ttft_ms=20, tokens_per_s=400, chunk_tokens=2, completion_tokens=20)
    cfg = gateway_config(
        sim,
        models=[
            {
                "name": "fast",
                "targets": [{"provider": "sim", "model": "sim-gpt-fast"}, {"provider": "compat", "model": "sim-llama"}],
                "breaker": {"open_s": 0.5, "close_after": 3},
            }
        ],
    )
    url, _ = await make_gateway(cfg)
    counts = {"requests": 0, "failovers": 0, "errors": 0, "by_provider": {"sim": 0, "compat": 0}}
    states: list[tuple[float, str]] = []
    start = time.monotonic()
    body = {"model": "fast", "messages": [{"role": "user", "content": "chaos"}], "stream": True}

    async def client(session: aiohttp.ClientSession) -> None:
        while time.monotonic() - start < DURATION_S and counts["requests"] < MAX_REQUESTS:
            counts["requests"] += 1
            async with session.post(f"{url}/chat/completions", json=body) as r:
                raw = await r.read()
                ok = r.status == 200 and raw.endswith(b"data: [DONE]\n\n") and b'"error"' not in raw
                if not ok:
                    counts["errors"] += 1
                    continue
                if r.headers["x-aiogw-attempts"] != "1":
                    counts["failovers"] += 1
                counts["by_provider"][r.headers["x-aiogw-provider"]] += 1
                assert events(raw)[-1] == b"[DONE]"

    async def chaos(session: aiohttp.ClientSession) -> None:
        await asyncio.sleep(DOWN_AT_S)
        sim.set_profile("default", fault="status", fault_status=503)
        await asyncio.sleep(UP_AT_S - DOWN_AT_S)
        sim.set_profile("default", fault="none")

    async def watch(session: aiohttp.ClientSession) -> None:
        while time.monotonic() - start < DURATION_S + 1.0:
            async with session.get(f"{url}/gateway/health") as r:
                t = {x["id"]: x for x in (await r.json())["targets"]}["sim/sim-gpt-fast"]
            if not states or states[-1][1] != t["state"]:
                states.append((round(time.monotonic() - start, 2), t["state"]))
            await asyncio.sleep(0.05)

    connector = aiohttp.TCPConnector(limit=CLIENTS + 10)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(chaos(session), watch(session), *(client(session) for _ in range(CLIENTS)))
        # Traffic after the outage: enough calls for the half-open probes to close the breaker.
        for _ in range(10):
            async with session.post(f"{url}/chat/completions", json=body) as r:
                await r.read()
        async with session.get(f"{url}/gateway/health") as r:
            final = {x["id"]: x for x in (await r.json())["targets"]}["sim/sim-gpt-fast"]["state"]

    print(f"\nchaos: {counts}, breaker states of sim/sim-gpt-fast (s, state): {states}, final: {final}")
    assert counts["errors"] == 0
    assert counts["failovers"] > 0 and counts["by_provider"]["compat"] > 0
    assert "open" in [s for _, s in states]
    assert final == "closed"
