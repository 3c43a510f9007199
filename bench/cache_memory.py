"""The response cache's memory bound, measured: N distinct cacheable requests through a
gateway whose in-process cache holds at most `--cache-mb`, and the gateway's RSS before
and after (and its peak). Every request is a miss that is stored (temperature 0, each a
different question), so the cache fills, then evicts for the rest of the run.

    python -m aiogw.bench.cache_memory --requests 100000 --cache-mb 64

Prints one JSON object: RSS at start (warm, cache empty), at the end and peak (VmHWM), the
cache's own byte count and entries (from /metrics), and `bounded`: whether the growth over
the warm start stays within `--factor` times the cache's bound plus 8 MB. The factor is the
allocator's share: the cache counts keys, values and a per-entry overhead (which holds to
within 5% with the cache alone in a process), but entries freed by LRU among a request's
short-lived buffers leave holes the C allocator keeps (measured: growth 1.5-1.7x the bound,
flat once the cache is full)."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from aiogw.bench.load import peak_rss_mb
from aiogw.bench.run import start_gateway, start_listening


def current_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def _drive(url: str, n: int, concurrency: int, deadline: float) -> tuple[int, int]:
    """Sends requests 0..n-1 (each its own question), `concurrency` at a time; stops at
    `deadline` (monotonic) whatever is left. Returns (ok, failed)."""
    ok = failed = 0
    next_i = 0

    async def worker(s: aiohttp.ClientSession) -> None:
        nonlocal ok, failed, next_i
        while next_i < n and time.monotonic() < deadline:
            i = next_i
            next_i += 1
            body = {"model": "bench", "temperature": 0, "messages": [{"role": "user", "content": f"Question {i}?"}]}
            async with s.post(f"{url}/v1/chat/completions", json=body) as r:
                await r.read()
                if r.status == 200:
                    ok += 1
                else:
                    failed += 1

    async with aiohttp.ClientSession(headers={"authorization": "Bearer bench"}) as s:
        await asyncio.gather(*(worker(s) for _ in range(concurrency)))
    return ok, failed


async def _cache_gauges(url: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as s, s.get(f"{url}/metrics") as r:
        text = await r.text()
    out = {}
    for name in ("aiogw_cache_bytes", "aiogw_cache_entries", "aiogw_cache_writes_total"):
        m = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
        out[name] = float(m.group(1)) if m else -1.0
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--cache-mb", type=int, default=64)
    ap.add_argument("--completion-tokens", type=int, default=100, help="answer length: ~7 bytes per word stored")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--max-seconds", type=float, default=1200.0, help="stop sending after this long")
    ap.add_argument("--factor", type=float, default=2.0, help="allowed RSS growth per MB of cache")
    args = ap.parse_args(argv)
    sim = start_listening(
        [sys.executable, "-P", "-m", "aiogw.bench.simulator", "--port", "0",
         "--completion-tokens", str(args.completion_tokens)],
        "the simulator", None,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        # --cache-mb 0: the same run without a cache, for the process's own growth
        cache = {"enabled": args.cache_mb > 0, "max_bytes": max(args.cache_mb, 1) * 1024 * 1024, "ttl_s": 3600}
        gw = start_gateway(sim.url, "openai", None, Path(tmp), {"cache": cache, "log": {"level": "warning"}})
        try:
            url = gw.url
            pid = gw.popen.pid
            asyncio.run(_drive(url, 200, 8, time.monotonic() + 60))  # warm: imports, pools, first entries
            warm = current_rss_mb(pid)
            started = time.monotonic()
            ok, failed = asyncio.run(_drive(url, args.requests, args.concurrency, started + args.max_seconds))
            wall = time.monotonic() - started
            gauges = asyncio.run(_cache_gauges(url))
            end, peak = current_rss_mb(pid), peak_rss_mb(pid)
        finally:
            gw.stop()
            sim.stop()
    growth = peak - warm
    out = {
        "requests_ok": ok,
        "requests_failed": failed,
        "seconds": round(wall, 1),
        "cache_mb": args.cache_mb,
        "rss_warm_mb": round(warm, 1),
        "rss_end_mb": round(end, 1),
        "rss_peak_mb": round(peak, 1),
        "growth_mb": round(growth, 1),
        "cache_bytes_mb": round(gauges["aiogw_cache_bytes"] / 1024 / 1024, 1),
        "cache_entries": int(gauges["aiogw_cache_entries"]),
        "cache_writes": int(gauges["aiogw_cache_writes_total"]),
        "bounded": growth <= args.factor * args.cache_mb + 8,
    }
    print(json.dumps(out))
    return 0 if out["bounded"] and not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
