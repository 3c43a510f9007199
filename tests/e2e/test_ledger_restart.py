"""The durable ledger across a restart of the real `aiogw` process: rows queued when SIGTERM
arrives are written before it exits, and a budget's spend is read back from them."""

from __future__ import annotations

import json

import aiohttp
from conftest import SIM_KEY
from openai import AsyncOpenAI
from procs import start_aiogw

MASTER = "sk-master-restart"
N = 7


async def _admin(session, base, path):
    async with session.get(base + path, headers={"authorization": f"Bearer {MASTER}"}) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def test_sigterm_flushes_the_ledger_and_spend_survives_a_restart(sim, tmp_path):
    cfg = {
        "providers": {"sim": {"type": "openai", "base_url": sim.base_url(), "api_key": "${SIM_KEY}"}},
        "models": [
            {
                "name": "fast",
                "targets": [{"provider": "sim", "model": "sim-gpt-fast", "price": {"input": 1000, "output": 1000}}],
            }
        ],
        "auth": {"master_key": MASTER},
        # A flush interval far beyond the test: only the shutdown's flush can write the rows.
        "store": {"url": f"sqlite:///{tmp_path}/ledger.db", "ledger_flush_ms": 60000, "ledger_batch": 1000},
        "budgets": [{"scope": "global", "limit_usd": 10, "period": "month"}],
    }
    path = tmp_path / "aiogw.json"
    path.write_text(json.dumps(cfg))
    p = await start_aiogw("--config", str(path), env={"SIM_KEY": SIM_KEY})
    seen = []
    try:
        async with AsyncOpenAI(base_url=p.url + "/v1", api_key="c", max_retries=0, timeout=20) as c:
            for i in range(N):
                raw = await c.chat.completions.with_raw_response.create(
                    model="fast", messages=[{"role": "user", "content": f"hello {i}"}], max_tokens=4
                )
                seen.append(float(raw.headers["x-aiogw-cost-usd"]))
    finally:
        assert await p.stop() == 0
    assert any(line.get("event") == "server.stopped" for line in p.logs())

    p = await start_aiogw("--config", str(path), env={"SIM_KEY": SIM_KEY})
    try:
        async with aiohttp.ClientSession() as s:
            spend = await _admin(s, p.url, "/admin/v1/spend?group_by=model")
            (budget,) = (await _admin(s, p.url, "/admin/v1/budgets"))["data"]
    finally:
        await p.stop()
    (row,) = spend["data"]
    assert row["model"] == "fast" and row["requests"] == N
    assert abs(spend["totals"]["cost_usd"] - sum(seen)) < 1e-9
    # The budget's window starts from the ledger after the restart: nothing spent is forgotten.
    assert abs(budget["spent_usd"] - sum(seen)) < 1e-9 and budget["reserved_usd"] == 0
