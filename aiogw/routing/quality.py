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
when none meets the floor (the one likeliest to meet it, said so in the reason).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from aiogw.adapters._base import Target
from aiogw.quality.book import GroupBook, View
from aiogw.routing.health import HealthStore


@dataclass(slots=True)
class QualityAsk:
    """What one request brings to the quality strategy."""

    task: str
    bucket: str
    floor: float | None = None  # x-aiogw-quality-floor; None: the group's floor
    latency_budget_ms: float | None = None  # x-aiogw-latency-budget-ms


def _reason(view: View, kind: str, pick: int, floor: float) -> str:
    """The reason for choosing `pick`, formatted once per (estimates, kind, pick, floor)."""
    key = (kind, pick, floor)
    r = view.reasons.get(key)
    if r is None:
        e = view.ests[pick]
        est = f"est {e.mean:.2f}, n={e.n:.0f}"
        if kind == "meets":
            r = f"cheapest meeting floor {floor:.2f} ({est})"
        else:
            r = f"no target meets floor {floor:.2f}; likeliest to ({est})"
        if len(view.reasons) < 64:  # floors are client-chosen: keep the memo small
            view.reasons[key] = r
    return r


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
    choice in `targets`, and the reason. Written for the hot path: one sort (by cost),
    estimates and reason strings remade only after observations, health read only for the
    candidates looked at (and every target's p95 only when a latency budget is asked)."""
    view = g.view(ask.task, ask.bucket)
    ests = view.ests
    floor = g.cfg.floor if ask.floor is None else ask.floor
    costs = [pi * prompt_tokens + po * output_tokens for pi, po in g.prices]
    by_cost = sorted(range(len(costs)), key=costs.__getitem__)
    by_mean = view.by_mean
    note = ""
    if ask.latency_budget_ms is not None:
        budget = ask.latency_budget_ms
        slow = set()
        for i, t in enumerate(targets):
            p95 = health.get(t.id).stats(now).latency_p95_ms  # the health window's; unmeasured fits
            if p95 is not None and p95 > budget:
                slow.add(i)
        if slow:
            names = ",".join(targets[i].id for i in sorted(slow))
            if len(slow) == len(targets):  # nothing fits: the budget is a preference, not a refusal
                note = f"; latency budget fits no target ({names})"
            else:
                note = f"; latency budget excluded {names}"
                by_cost = [i for i in by_cost if i not in slow]
                by_mean = [i for i in by_mean if i not in slow]
    meeting = [i for i in by_cost if ests[i].lower >= floor]
    explore = g.cfg.explore
    if explore > 0.0 and rng.random() < explore:
        usable = [i for i in by_cost if health.get(targets[i].id).available(now)] or by_cost
        gauss = rng.gauss
        draws = {i: gauss(ests[i].mean, ests[i].sd) for i in usable}
        ok = [i for i in usable if draws[i] >= floor]  # in cost order
        pick = ok[0] if ok else max(usable, key=draws.__getitem__)
        reason = "explore"
    else:
        pick = -1
        for i in meeting:
            if health.get(targets[i].id).available(now):
                pick = i
                reason = _reason(view, "meets", i, floor)
                break
        if pick < 0:
            # The target likeliest to meet the floor, P(quality >= floor) by the same normal
            # approximation: not simply the best mean, so that a target nobody has graded
            # yet (0.5, wide) is tried before one known to fall short (0.7, narrow), and
            # learning does not stall on the first mediocre target. A tie goes to the cheaper.
            best, pick = -math.inf, -1
            for i in by_cost:
                e = ests[i]
                chance = (e.mean - floor) / e.sd if e.sd > 0.0 else math.copysign(math.inf, e.mean - floor)
                if chance > best and health.get(targets[i].id).available(now):
                    best, pick = chance, i
            if pick < 0:
                pick = meeting[0] if meeting else by_mean[0]  # all resting: the plan orders by recovery
            reason = _reason(view, "meets" if pick in meeting else "best", pick, floor)
    # Failover order after the choice: those meeting the floor by cost, then the rest by
    # estimate (resting targets go last in the plan anyway).
    rest = [targets[i] for i in meeting if i != pick]
    rest += [targets[i] for i in by_mean if i != pick and ests[i].lower < floor]
    return [targets[pick], *rest], pick, reason + note if note else reason
