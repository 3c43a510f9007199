"""How many prompt tokens each target's provider reports per token of the gateway's own
estimate (characters / 4): tokenizers differ (a Claude token is shorter than an OpenAI one),
so a prompt that fits one model's window may not fit another's, and limits and budgets that
reserve the estimate reserve too little there.

Per target, an exponentially weighted mean of reported / estimated prompt tokens, learned
only from usage the provider reported (never from the gateway's own estimate of a usage it
did not get). It starts at its provider type's prior (the adapter's `token_ratio`), which
counts as PRIOR_WEIGHT observations; each request's ratio is clamped to RATIO_MIN..RATIO_MAX
so one odd answer cannot swing it far. Kept per replica (nothing shared: each replica learns
the same ratio from its own traffic within a few dozen requests).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Container, Iterable

from aiogw.adapters._base import Target
from aiogw.names import PerTarget

RATIO_MIN, RATIO_MAX = 0.25, 4.0
PRIOR_WEIGHT = 4  # the prior counts as this many observations
# After the first observations (a running mean), about the last 32 requests weigh most.
ALPHA_MIN = 1 / 32
# Prompts smaller than this say little about the tokenizer: the fixed framing of each turn
# (role markers, the start of a reply) dominates their count. Not learned from.
MIN_ESTIMATE = 32


class TokenRatio:
    """One target's ratio: its current value, how many requests taught it, its prior."""

    __slots__ = ("observations", "prior", "value")

    def __init__(self, prior: float) -> None:
        self.prior = prior
        self.value = prior
        self.observations = 0

    def observe(self, reported: int, estimate: int) -> None:
        if estimate < MIN_ESTIMATE or reported <= 0:
            return
        # (Comparisons, not min()/max(): this runs once per answered request.)
        r = reported / estimate
        if r > RATIO_MAX:
            r = RATIO_MAX
        elif r < RATIO_MIN:
            r = RATIO_MIN
        n = self.observations = self.observations + 1
        step = 1.0 / (PRIOR_WEIGHT + n)
        self.value += (r - self.value) * (step if step > ALPHA_MIN else ALPHA_MIN)

    def report(self) -> dict[str, float | int]:
        return {"value": round(self.value, 3), "observations": self.observations, "prior": self.prior}


class TokenRatios:
    """Every target's ratio, by target id, made at its first use: the configured targets'
    kept, those addressed directly (names clients choose) for the most recently used."""

    def __init__(self, prior: Callable[[Target], float], configured: Container[str] | None = None) -> None:
        self._prior = prior  # the provider type's prior for a target
        self._targets: PerTarget[TokenRatio] = PerTarget(configured)
        self._kept = self._targets.configured()  # the hot path: one dict lookup

    def get(self, target: Target) -> TokenRatio:
        r = self._kept.get(target.id) or self._targets.get(target.id)
        if r is None:
            r = self._targets.put(target.id, TokenRatio(self._prior(target)))
        return r

    def scale(self, target: Target, tokens: int) -> int:
        """`tokens` of the local estimate in `target`'s provider's tokens (rounded up)."""
        r = self._kept.get(target.id) or self.get(target)
        return math.ceil(tokens * r.value)

    def most(self, targets: Iterable[Target]) -> float:
        """The largest ratio among `targets`: a worst case for a request not yet routed."""
        return max((self.get(t).value for t in targets), default=1.0)
