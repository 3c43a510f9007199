"""Micro-benchmark: the CPU the per-target token ratios add to a request, the claim of the
README's "Token counts per provider".

    python -m aiogw.bench.token_ratio_cost [--targets 3] [--calls 200000] [--reps 7]

A request with ratios does, beyond what it did before: one scaled prompt per target with a
`context_window` in the router's plan, one for the attempt's tpm reservation, and one
observation of the reported usage when it is charged. Timed here with timeit (best of
`--reps`): the router's plan for a group of `--targets` targets, each with a context window,
with ratios and without; the reservation's scaling; the observation. Per call, in ns.
"""

from __future__ import annotations

import argparse
import random
import timeit

from aiogw.adapters._base import Target
from aiogw.routing.health import LocalHealth
from aiogw.routing.router import Router
from aiogw.routing.token_ratio import TokenRatios
from aiogw.runtime import ModelRoute


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", type=int, default=3)
    ap.add_argument("--calls", type=int, default=200_000)
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    targets = [
        Target(id=f"p{i}/m", provider=f"p{i}", type="openai", model="m", base_url="http://x", context_window=128_000)
        for i in range(args.targets)
    ]
    route = ModelRoute(name="g", strategy="priority", targets=tuple(targets))
    ratios = TokenRatios(lambda t: 1.15)
    health = LocalHealth()
    plain = Router(health, rng=random.Random(1))
    scaled = Router(health, rng=random.Random(1), ratios=ratios)
    t = targets[0]

    stmts = {
        "without": lambda: plain.plan(route, now=0.0, prompt_tokens=1234, max_output_tokens=100),
        "with": lambda: scaled.plan(route, now=0.0, prompt_tokens=1234, max_output_tokens=100),
        "reserve": lambda: ratios.scale(t, 1234),
        "observe": lambda: ratios.get(t).observe(1500, 1234),
    }
    # Interleaved repetitions, best of each: a shared machine's noise hits both sides alike.
    ns = dict.fromkeys(stmts, float("inf"))
    for _ in range(args.reps):
        for name, stmt in stmts.items():
            ns[name] = min(ns[name], timeit.timeit(stmt, number=args.calls) / args.calls * 1e9)
    without, with_, reserve, observe = ns.values()
    print(
        f"router plan, {args.targets} targets with context windows: {without:.0f} ns without ratios, {with_:.0f} ns with"
    )
    print(f"tpm reservation scaling: {reserve:.0f} ns; usage observation: {observe:.0f} ns")
    print(f"added per request (one attempt): {with_ - without + reserve + observe:.0f} ns")


if __name__ == "__main__":
    main()
