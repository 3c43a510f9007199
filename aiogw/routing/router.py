"""The router: a model group and a request -> an ordered plan of targets for dispatch.

Order comes from the strategy; then targets that cannot take the request are set aside:
a context window too small for the estimated prompt (in the target's own tokens: see
token_ratio) plus the output cap is skipped with a reason, a target out of its group's SLO goes after those within it (strategy order kept
within each), and a target whose breaker is open goes to the back (when every target is
open, the least recently failed one is tried first rather than failing outright).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, get_args

from aiogw.accounting.cost import estimate_usd
from aiogw.adapters._base import Target
from aiogw.routing.health import HealthStore
from aiogw.routing.quality import QualityAsk, choose
from aiogw.runtime import ModelRoute

if TYPE_CHECKING:
    from aiogw.quality.book import QualityBook
    from aiogw.routing.slo import SLOMonitor
    from aiogw.routing.token_ratio import TokenRatios

StrategyName = Literal["priority", "weighted", "lowest-cost", "lowest-latency", "least-busy", "quality"]
STRATEGIES: tuple[str, ...] = get_args(StrategyName)

# Output length assumed by lowest-cost when the request sets no cap.
DEFAULT_OUTPUT_ESTIMATE = 256


@dataclass(frozen=True, slots=True)
class Skip:
    target: str
    reason: str


@dataclass(slots=True)
class Plan:
    targets: list[Target]
    skipped: list[Skip] = field(default_factory=list)
    reason: str = ""  # strategy quality: why the first target (x-aiogw-route-reason)
    pick: str = ""  # strategy quality: the chosen target's id


class Router:
    def __init__(
        self,
        health: HealthStore,
        rng: random.Random | None = None,
        slo: SLOMonitor | None = None,
        ratios: TokenRatios | None = None,
        quality: QualityBook | None = None,
    ) -> None:
        self._health = health
        self._ratios = ratios  # None: the prompt estimate as it is, for every target
        self._rng = rng or random.Random()
        self._slo = slo  # None unless some group has an SLO
        self.quality = quality  # None unless some group uses strategy quality

    def plan(
        self,
        route: ModelRoute,
        *,
        now: float,
        strategy: str | None = None,
        fallbacks: Sequence[ModelRoute] = (),
        prompt_tokens: int = 0,
        max_output_tokens: int | None = None,
        quality: QualityAsk | None = None,
    ) -> Plan:
        """`quality`: the request's task and bucket, given for groups using strategy quality."""
        reason = pick = ""
        group = None
        if quality is not None and self.quality is not None:
            group = self.quality.group(route.name)
        if quality is not None and group is not None and (strategy or route.strategy) == "quality":
            output = max_output_tokens or DEFAULT_OUTPUT_ESTIMATE
            ordered, i, reason = choose(
                group, quality, route.targets, prompt_tokens, output, self._health, now, self._rng
            )
            pick = route.targets[i].id
        elif len(route.targets) == 1 and not fallbacks and route.targets[0].context_window is None:
            return Plan(list(route.targets))  # nothing to order or skip: the common single-target case
        else:
            ordered = self.order(route.targets, strategy or route.strategy, prompt_tokens, max_output_tokens, now)
        seen = {t.id for t in ordered}
        for fb in fallbacks:  # tried after the group's own targets, each in its own order
            for t in self.order(fb.targets, fb.strategy, prompt_tokens, max_output_tokens, now):
                if t.id not in seen:
                    seen.add(t.id)
                    ordered.append(t)
        plan = Plan([], reason=reason, pick=pick)
        cap = max_output_tokens or 0
        fits: list[Target] = []
        for t in ordered:
            if t.context_window is None:
                fits.append(t)
                continue
            needed = (self._ratios.scale(t, prompt_tokens) if self._ratios else prompt_tokens) + cap
            if needed > t.context_window:
                plan.skipped.append(
                    Skip(t.id, f"context window {t.context_window} < ~{needed} tokens (prompt estimate + max tokens)")
                )
            else:
                fits.append(t)
        available = [t for t in fits if self._health.get(t.id).available(now)]
        resting = [t for t in fits if t not in available]
        if self._slo is not None and route.slo is not None:
            out = self._slo.out.get(route.name)
            if out and any(t.id in out for t in available):
                available = [t for t in available if t.id not in out] + [t for t in available if t.id in out]
        # Open targets last, least recently failed first: the best remaining bet if all are down.
        resting.sort(key=lambda t: self._health.get(t.id).last_failure_at)
        plan.targets = available + resting
        return plan

    def order(
        self, targets: Sequence[Target], strategy: str, prompt_tokens: int, max_output: int | None, now: float
    ) -> list[Target]:
        ts = list(targets)
        if len(ts) < 2 or strategy == "priority":
            return ts
        if strategy == "weighted":
            # Weighted order without replacement (Efraimidis-Spirakis): key = u ** (1 / w).
            keyed = [(self._rng.random() ** (1.0 / t.weight) if t.weight > 0 else 0.0, t) for t in ts]
            return [t for _, t in sorted(keyed, key=lambda kt: kt[0], reverse=True)]
        if strategy in ("lowest-cost", "quality"):  # quality as a fallback group: by cost (no task there)
            out = max_output or DEFAULT_OUTPUT_ESTIMATE

            def cost(t: Target) -> float:
                c = estimate_usd(t, prompt_tokens, out)
                return c if c is not None else float("inf")  # unknown price: last

            return sorted(ts, key=cost)
        if strategy == "lowest-latency":

            def latency(t: Target) -> float:
                s = self._health.get(t.id).stats(now)
                m = s.ttft_p50_ms if s.ttft_p50_ms is not None else s.latency_p50_ms
                return m if m is not None else -1.0  # unmeasured first, so it gets measured

            return sorted(ts, key=latency)
        if strategy == "least-busy":
            return sorted(ts, key=lambda t: self._health.get(t.id).in_flight / (t.weight or 1.0))
        raise ValueError(f"unknown strategy {strategy!r}")
