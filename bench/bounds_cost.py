"""Micro-benchmark: what one attempt's deadlines cost, `_Bounds` against `asyncio.timeout_at`.

    python -m aiogw.bench.bounds_cost [--attempts 20000] [--reps 7]

One attempt's life as the dispatcher lives it: enter the bounds (first-token limit armed),
the first token (the limit moves to the total: `_Bounds.first_token`, or
`Timeout.reschedule` for asyncio's), exit. Both run inside one task on the serving loop
(uvloop when installed); CPU time per attempt, the median of `--reps` runs. `_Bounds` is
kept only while it wins this comparison (it exists to avoid `asyncio.timeout`'s
`get_running_loop()` calls).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from aiogw.adapters._base import Target
from aiogw.attempts.bounds import _Bounds

TARGET = Target(
    id="bench/m", provider="bench", type="openai", model="m", base_url="http://x",
    first_token_timeout_s=30.0, total_timeout_s=600.0, idle_timeout_s=None,
)  # fmt: skip


async def _bounds(n: int) -> float:
    loop = asyncio.get_running_loop()
    started = time.process_time()
    for _ in range(n):
        with _Bounds(loop, TARGET, None) as bounds:
            bounds.first_token()
    return (time.process_time() - started) / n


async def _timeout_at(n: int) -> float:
    loop = asyncio.get_running_loop()
    started = time.process_time()
    for _ in range(n):
        now = loop.time()
        end = now + TARGET.total_timeout_s
        async with asyncio.timeout_at(min(end, now + TARGET.first_token_timeout_s)) as tmo:  # type: ignore[operator]  # noqa: ASYNC100 - the cost of the scope is what is measured
            tmo.reschedule(end)
    return (time.process_time() - started) / n


def measure(attempts: int, reps: int) -> dict[str, dict[str, float]]:
    """µs per attempt, median and spread over `reps`, for each way."""
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - Windows
        runner = asyncio.run
    out: dict[str, list[float]] = {"_Bounds": [], "asyncio.timeout_at": []}
    for _ in range(reps):  # interleaved: machine noise falls on both alike
        out["_Bounds"].append(runner(_bounds(attempts)) * 1e6)
        out["asyncio.timeout_at"].append(runner(_timeout_at(attempts)) * 1e6)
    return {k: {"median_us": statistics.median(v), "min_us": min(v), "max_us": max(v)} for k, v in out.items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--attempts", type=int, default=20_000)
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args(argv)
    result = measure(args.attempts, args.reps)
    base = result["asyncio.timeout_at"]["median_us"]
    print("| deadlines of one attempt (enter, first token, exit) | µs median | min | max | × timeout_at |")
    print("| --- | --- | --- | --- | --- |")
    for name, r in result.items():
        print(
            f"| {name} | {r['median_us']:.3f} | {r['min_us']:.3f} | {r['max_us']:.3f} | {r['median_us'] / base:.2f} |"
        )


if __name__ == "__main__":
    main()
