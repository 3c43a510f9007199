"""Thousands of distinct `provider/<name>` models through a real `aiogw serve` process: its
memory, and the cost of `/metrics` and `/v1/gateway/health`, stay flat between 1,000 names
and MANY (state for names clients make up is bounded; targets are looked up by id)."""

from __future__ import annotations

import asyncio
import json
import statistics

import aiohttp
import pytest
from conftest import SIM_KEY
from procs import start_aiogw

from aiogw.bench.load import cpu_seconds
from aiogw.names import MAX_DIRECT_TARGETS, MAX_SERIES, MAX_SPEND_ROWS

MSG = [{"role": "user", "content": "hi"}]
CONCURRENCY = 32
# Twice the largest bound on what names leave behind (targets kept, metric series, spend
# rows): every bound is reached and then held for as many names again.
MANY = 2 * max(MAX_DIRECT_TARGETS, MAX_SERIES, MAX_SPEND_ROWS)
# GETs per CPU sample: a /metrics scrape costs tens of ms here, far above the 10 ms tick.
CALLS = 5


@pytest.fixture
def config_file(tmp_path, sim):
    cfg = {
        "server": {"shutdown_grace": 5},
        "log": {"level": "warning"},  # 10,000 request lines would only cost the test time
        "providers": {"sim": {"type": "openai", "base_url": sim.base_url(), "api_key": "${SIM_KEY}"}},
        "models": [{"name": "fast", "targets": [{"provider": "sim", "model": "sim-gpt-fast"}]}],
    }
    p = tmp_path / "aiogw.json"
    p.write_text(json.dumps(cfg))
    return str(p)


async def _ask(session: aiohttp.ClientSession, url: str, names: range, tags: bool = True) -> None:
    """One request per name, CONCURRENCY at a time; every one must be answered."""
    todo = iter(names)
    failed: list[str] = []

    async def worker() -> None:
        for i in todo:
            headers = {"x-aiogw-tags": f"run=n{i}"} if tags else {}
            body = {"model": f"sim/made-up-{i}", "messages": MSG, "max_tokens": 4}
            async with session.post(url + "/v1/chat/completions", json=body, headers=headers) as r:
                await r.read()
                if r.status != 200:
                    failed.append(f"{i}: {r.status}")

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    assert failed == []


async def _cost(session: aiohttp.ClientSession, pid: int, url: str, calls: int = CALLS) -> float:
    """The gateway's CPU seconds for `calls` GETs of `url` (CPU, not wall clock: a loaded
    machine delays the answer, not the work)."""
    before = cpu_seconds(pid)
    for _ in range(calls):
        async with session.get(url) as r:
            assert r.status == 200
            await r.read()
    return cpu_seconds(pid) - before


async def _costs(session, pid, url) -> float:
    return statistics.median([await _cost(session, pid, url) for _ in range(3)])


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


async def _after(names: int, config_file: str, rss_at_most: float | None = None) -> dict:
    """A fresh gateway after `names` distinct names: its resident memory (taken before any
    scrape, whose multi-MB answers the allocator may keep for a while), the CPU cost of
    /metrics and /v1/gateway/health, and what those show."""
    p = await start_aiogw("--config", config_file, env={"SIM_KEY": SIM_KEY})
    pid = p.proc.pid
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as s:
            await _ask(s, p.url, range(-200, 0), tags=False)  # warm-up: pools, imports, caches
            await _ask(s, p.url, range(names))
            out = {"rss": _rss_mb(pid)}
            # Before: every name kept a 78 KB health window (about 230 MB more at 4,000).
            assert rss_at_most is None or out["rss"] <= rss_at_most, (out, rss_at_most)
            out["metrics"] = await _costs(s, pid, p.url + "/metrics")
            out["health"] = await _costs(s, pid, p.url + "/v1/gateway/health")
            async with s.get(p.url + "/v1/gateway/health") as r:
                out["ids"] = [t["id"] for t in (await r.json())["targets"]]
            async with s.get(p.url + "/v1/gateway/spend") as r:
                out["rows"] = (await r.json())["rows"]
        return out
    finally:
        assert await p.stop() == 0


@pytest.mark.timeout(600)
async def test_many_names_leave_memory_metrics_and_health_flat(config_file):
    k1 = await _after(1_000, config_file)
    k10 = await _after(MANY, config_file, rss_at_most=k1["rss"] + 20)
    numbers = (
        f"RSS {k1['rss']:.1f} -> {k10['rss']:.1f} MB; CPU per {CALLS} calls of /metrics {k1['metrics']:.3f} -> "
        f"{k10['metrics']:.3f} s, of /v1/gateway/health {k1['health']:.3f} -> {k10['health']:.3f} s"
    )
    print(numbers)
    # Before, each scrape also compared every name with every other (minutes at 10,000).
    # The counters' label sets grow to their cap (2,000) past 1,000 names, so a scrape may
    # cost up to about twice as much; health holds the same 1,000 targets either way.
    assert k10["metrics"] <= 3 * k1["metrics"] + 0.03 * CALLS, numbers
    assert k10["health"] <= 2 * k1["health"] + 0.01 * CALLS, numbers
    ids = k10["ids"]
    assert len(ids) == 1 + MAX_DIRECT_TARGETS and f"sim/made-up-{MANY - 1}" in ids and "sim/made-up-0" not in ids
    assert "sim/sim-gpt-fast" in ids  # configured targets are always there
    rows = k10["rows"]
    assert sum(r["requests"] for r in rows) == MANY + 200  # capped rows, whole totals
    assert any(r["model"] == "other" for r in rows) and len(rows) <= MAX_SPEND_ROWS + 1
