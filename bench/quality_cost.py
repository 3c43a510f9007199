"""Micro-benchmark: the CPU strategy quality adds to a request, at 6 targets x 20 tasks.

    python -m aiogw.bench.quality_cost [--plans 20000] [--reps 7]

A quality group of 6 priced targets with a prior for 20 tasks (and a few learnt buckets);
each plan is one request's: its bucket (`bucket_of` on a short chat request, the prompt
estimate memoised as in the walk), then `Router.plan` with the request's task, bucket and
an explore share of 5%, over the tasks in turn. Between plans, an observation every 10th
plan (feedback on a tenth of the requests) invalidates the estimates of its task, so the
remaking of estimates is in the price. Against it, the same 6 targets under lowest-cost (what
a group that does not use the strategy pays: the plan as before). CPU time per plan, the
median of `--reps` runs.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

import msgspec

from aiogw.adapters._base import Target
from aiogw.config import Price, QualityConfig
from aiogw.quality.book import QualityBook
from aiogw.quality.features import bucket_of
from aiogw.quality.prior import parse_prior
from aiogw.routing.health import LocalHealth
from aiogw.routing.quality import QualityAsk
from aiogw.routing.router import Router
from aiogw.runtime import ModelRoute
from aiogw.types import ChatRequest, ParsedChat

N_TARGETS, N_TASKS = 6, 20
TARGETS = tuple(
    Target(
        id=f"p{i}/m{i}",
        provider=f"p{i}",
        type="openai",
        model=f"m{i}",
        base_url="http://x",
        price=Price(input=0.1 * (i + 1) ** 2, output=0.4 * (i + 1) ** 2),
    )
    for i in range(N_TARGETS)
)
TASKS = [f"task{j}" for j in range(N_TASKS)]
_BODY = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "Classify: the parcel came late."}]})


def _setup() -> tuple[Router, ModelRoute, QualityBook, ParsedChat]:
    cfg = QualityConfig(floor=0.85, explore=0.05)
    book = QualityBook([("auto", cfg, TARGETS)])
    rng = random.Random(7)
    models = {t.id: {task: {"n": 40, "mean": rng.uniform(0.6, 0.99)} for task in TASKS} for t in TARGETS}
    book.groups["auto"].load_prior(parse_prior(json.dumps({"version": 1, "models": models})), "bench", {})
    for task in TASKS:  # some learnt buckets
        for b in ("short", "long+code"):
            book.observe("auto", task, b, TARGETS[0].id, "correct", rng.random() < 0.8)
    route = ModelRoute("auto", "quality", TARGETS, quality=cfg)
    raw = _BODY.encode()
    parsed = ParsedChat(
        req=msgspec.json.decode(raw, type=ChatRequest), raw=msgspec.json.decode(raw, type=dict[str, msgspec.Raw])
    )
    return Router(LocalHealth(), random.Random(11), quality=book), route, book, parsed


def _quality(n: int) -> float:
    router, route, book, parsed = _setup()
    started = time.process_time()
    for i in range(n):
        task = TASKS[i % N_TASKS]
        ask = QualityAsk(task, bucket_of(parsed, 12))
        plan = router.plan(route, now=1000.0, prompt_tokens=12, quality=ask)
        book.record_pick("auto", task, plan.pick)
        if i % 10 == 0:
            book.observe("auto", task, ask.bucket, plan.pick, "correct", True)
    return (time.process_time() - started) / n


def _lowest_cost(n: int) -> float:
    router, _route, _, _ = _setup()
    plain = ModelRoute("auto", "lowest-cost", TARGETS)
    started = time.process_time()
    for _ in range(n):
        router.plan(plain, now=1000.0, prompt_tokens=12)
    return (time.process_time() - started) / n


def measure(plans: int, reps: int) -> dict[str, dict[str, float]]:
    out: dict[str, list[float]] = {"quality": [], "lowest-cost": []}
    for _ in range(reps):  # interleaved: machine noise falls on both alike
        out["quality"].append(_quality(plans) * 1e6)
        out["lowest-cost"].append(_lowest_cost(plans) * 1e6)
    return {k: {"median_us": statistics.median(v), "min_us": min(v), "max_us": max(v)} for k, v in out.items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--plans", type=int, default=20_000)
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args(argv)
    r = measure(args.plans, args.reps)
    print(f"| plan of one request, {N_TARGETS} targets x {N_TASKS} tasks | µs median | min | max |")
    print("| --- | --- | --- | --- |")
    for name, v in r.items():
        print(f"| {name} | {v['median_us']:.2f} | {v['min_us']:.2f} | {v['max_us']:.2f} |")
    print(f"\nstrategy quality adds {r['quality']['median_us'] - r['lowest-cost']['median_us']:.2f} µs per request")


if __name__ == "__main__":
    main()
