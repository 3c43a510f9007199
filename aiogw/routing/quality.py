"""`strategy: quality`: the cheapest healthy target whose estimated quality for the request's
task and bucket meets the floor with confidence, a bounded share of exploration, and the
reason for the choice (`x-aiogw-route-reason`).

"Meets the floor with confidence" is P(quality >= floor) >= `quality.confidence` (0.8 by
default) under the target's posterior, i.e. its lower `1 - confidence` quantile is at least
the floor. Why 0.8 and not 0.95: a prior from `aiogw eval` counts as at most `prior_weight`
(20) observations, and at 0.95 a target measured at 0.95 would need about a hundred
observations before it could clear a 0.9 floor, so the eval would buy nothing; at 0.8 a
20-observation estimate clearly above the floor qualifies, while a thin one that straddles
it (a handful of observations, or a mean near the floor) does not.

Exploration: with probability `explore` (and never otherwise) the request is routed by
Thompson sampling: one draw from each usable target's posterior, the cheapest whose draw
meets the floor, else the highest draw. So at most `explore` of the traffic goes to a target
below the floor's confidence on purpose; outside that share a target below it is chosen only
when none meets the floor (the best estimate, said so in the reason).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from aiogw.accounting.cost import estimate_usd
from aiogw.adapters._base import Target
from aiogw.quality.book import Estimate, GroupBook
from aiogw.routing.health import HealthStore

INF = float("inf")


@dataclass(frozen=True, slots=True)
class QualityAsk:
    """What one request brings to the quality strategy."""

    task: str
    bucket: str
    floor: float | None = None  # x-aiogw-quality-floor; None: the group's floor
    latency_budget_ms: float | None = None  # x-aiogw-latency-budget-ms


def _est(e: Estimate) -> str:
    return f"est {e.mean:.2f}, n={e.n:.0f}"


def choose(
    g: GroupBook,
    ask: QualityAsk,
    targets: Sequence[Target],
    prompt_tokens: int,
    output_tokens: int,
    health: HealthStore,
    now: float,
    rng: random.Random,
) -> tuple[list[Target], int, str]:
    """The group's targets in the strategy's order (the choice first), the index of the
    choice in `targets`, and the reason."""
    ests = g.estimates(ask.task, ask.bucket)
    floor = g.cfg.floor if ask.floor is None else ask.floor
    costs = []
    for t in targets:
        c = estimate_usd(t, prompt_tokens, output_tokens)
        costs.append(INF if c is None else c)
    budget = ask.latency_budget_ms
    excluded: list[int] = []
    fitting: list[int] = []
    usable: list[int] = []
    for i, t in enumerate(targets):
        h = health.get(t.id)
        if budget is not None:
            p95 = h.stats(now).latency_p95_ms  # the health window's: unmeasured fits
            if p95 is not None and p95 > budget:
                excluded.append(i)
                continue
        fitting.append(i)
        if h.available(now):
            usable.append(i)
    note = ""
    if excluded:
        names = ",".join(targets[i].id for i in excluded)
        if not fitting:  # nothing fits: the budget is a preference, not a refusal
            fitting = usable = [i for i, t in enumerate(targets) if health.get(t.id).available(now)] or excluded
            excluded = []
            note = f"; latency budget fits no target ({names})"
        else:
            note = f"; latency budget excluded {names}"
    if not usable:  # every fitting target is resting: choose among them anyway (the plan orders by recovery)
        usable = fitting
    meeting = [i for i in usable if ests[i].lower >= floor]
    explore = g.cfg.explore
    if explore > 0.0 and rng.random() < explore:
        draws = {i: rng.gauss(ests[i].mean, ests[i].sd) for i in usable}
        ok = [i for i in usable if draws[i] >= floor]
        pick = min(ok, key=costs.__getitem__) if ok else max(usable, key=draws.__getitem__)
        reason = "explore"
    elif meeting:
        pick = min(meeting, key=costs.__getitem__)
        reason = f"cheapest meeting floor {floor:.2f} ({_est(ests[pick])})"
    else:
        pick = max(usable, key=lambda i: (ests[i].mean, -costs[i]))
        reason = f"no target meets floor {floor:.2f}; best estimate ({_est(ests[pick])})"
    # Failover order after the choice: those meeting the floor by cost, then the rest by
    # estimate; resting targets last (the plan moves them there anyway).
    met = set(meeting)
    rest = sorted(
        (i for i in fitting if i != pick),
        key=lambda i: (0, costs[i]) if i in met else (1, -ests[i].mean),
    )
    return [targets[pick], *(targets[i] for i in rest)], pick, reason + note
