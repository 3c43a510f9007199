"""The load generator: closed loop (N clients, each sending its next request when the last
one ends) or open loop (Poisson arrivals at a fixed rate, so queueing shows up in the
latency instead of being hidden by coordinated omission), bounded by duration and count.

Latency is measured from when a request was *due* (its scheduled arrival in open loop),
time to first token from the same point, and the gaps between a stream's events as they
arrive. The target process's CPU time and peak RSS come from /proc.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from aiogw.bench.sim_core import DONE
from aiogw.upstream import http

Mode = Literal["closed", "open"]


@dataclass(frozen=True, slots=True)
class LoadSpec:
    url: str  # the full endpoint, e.g. http://127.0.0.1:8080/v1/chat/completions
    body: bytes
    headers: dict[str, str]
    stream: bool
    mode: Mode = "closed"
    concurrency: int = 32  # closed loop: clients; open loop: cap on requests in flight
    rate: float = 100.0  # open loop: arrivals per second
    duration_s: float = 10.0
    max_requests: int = 1_000_000
    timeout_s: float = 60.0
    ramp_up_s: float = 0.0  # closed loop: clients start spread evenly over this long


@dataclass(slots=True)
class Samples:
    latency_ms: list[float] = field(default_factory=list)
    ttft_ms: list[float] = field(default_factory=list)
    gap_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    ok: int = 0
    sent: int = 0
    wall_s: float = 0.0


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q * len(s)) - 1))
    return s[k]


def summary(values: list[float]) -> dict[str, float | None]:
    return {f"p{k}": percentile(values, q) for k, q in (("50", 0.5), ("90", 0.9), ("99", 0.99), ("99.9", 0.999))}


async def _one(client: http.Client, spec: LoadSpec, due: float, out: Samples) -> None:
    first: float | None = None
    last: float | None = None
    try:
        async with asyncio.timeout(spec.timeout_s), client.post(spec.url, spec.body, spec.headers, spec.timeout_s) as r:
            if r.status != 200:
                await r.read()
                out.errors[f"http_{r.status}"] += 1
                return
            if spec.stream:
                tail = b""
                async for chunk in r.iter_any():
                    now = time.perf_counter()
                    if first is None:
                        first = now
                    elif last is not None and b"data:" in chunk:
                        out.gap_ms.append((now - last) * 1000)
                    last = now
                    tail = (tail + chunk)[-64:]
                if not tail.endswith(DONE) or b'"error"' in tail:
                    out.errors["stream_error"] += 1
                    return
            else:
                await r.read()
                first = time.perf_counter()
    except (TimeoutError, OSError) as exc:
        out.errors[type(exc).__name__] += 1
        return
    end = time.perf_counter()
    out.ok += 1
    out.latency_ms.append((end - due) * 1000)
    if first is not None:
        out.ttft_ms.append((first - due) * 1000)


async def run_load(spec: LoadSpec, progress: Callable[[int], None] | None = None) -> Samples:
    out = Samples()
    # aiogw's own upstream client: about a third of aiohttp's CPU per request, so the load
    # generator, sharing a core with the simulator, holds more load before it skews numbers.
    client = http.Client(limit_per_host=spec.concurrency)
    started = time.perf_counter()
    stop_at = started + spec.duration_s
    sent = 0
    try:
        if spec.mode == "closed":

            async def user(i: int) -> None:
                nonlocal sent
                if spec.ramp_up_s:
                    # Clients that all start at once stay in step (1,000 streams' chunks then
                    # fall due together), which measures the load generator, not the target.
                    await asyncio.sleep(spec.ramp_up_s * i / spec.concurrency)
                while time.perf_counter() < stop_at and sent < spec.max_requests:
                    sent += 1
                    await _one(client, spec, time.perf_counter(), out)
                    if progress is not None:
                        progress(1)

            await asyncio.gather(*(user(i) for i in range(spec.concurrency)))
        else:
            rng = random.Random(0)
            in_flight: set[asyncio.Task[None]] = set()
            due = started
            while due < stop_at and sent < spec.max_requests:
                due += rng.expovariate(spec.rate)
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent += 1
                if len(in_flight) >= spec.concurrency:
                    out.errors["dropped_overload"] += 1  # the target cannot keep up with the rate
                    continue
                task = asyncio.ensure_future(_one(client, spec, due, out))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                if progress is not None:
                    task.add_done_callback(lambda _t: progress(1))
            if in_flight:
                await asyncio.gather(*in_flight)
    finally:
        await client.close()
    out.wall_s = time.perf_counter() - started
    out.sent = sent
    return out


# --- the target process, from /proc -------------------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its reaped children, in seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[11..14] are utime, stime, cutime, cstime (stat(5) fields 14-17).
    return sum(int(x) for x in fields[11:15]) / _TICKS


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0
