"""Retry pacing: exponential backoff with full jitter, and a retry budget that caps the
extra load retries may add, so an outage of every provider does not become a retry storm.
"""

from __future__ import annotations

import random

from aiogw.config import RetryConfig


def backoff_s(policy: RetryConfig, round_no: int, rng: random.Random | None = None) -> float:
    """Full jitter (AWS architecture blog): uniform(0, min(cap, base * 2**round))."""
    ceiling = min(policy.backoff_max_ms, policy.backoff_base_ms * (2**round_no))
    return (rng or random).uniform(0, ceiling) / 1000


class RetryBudget:
    """A token bucket fed by requests: each request deposits `ratio` of a retry, each
    retry round withdraws one; a floor of `min_per_s` keeps low-traffic retries possible.
    Balance is capped at ten seconds' worth so a quiet period cannot bank a storm."""

    __slots__ = ("_at", "_balance", "_cap", "_min_per_s", "_ratio")

    def __init__(self, ratio: float, min_per_s: float, now: float) -> None:
        self._ratio = ratio
        self._min_per_s = min_per_s
        self._cap = max(10.0, 10 * min_per_s)
        self._balance = self._cap
        self._at = now

    def _refill(self, now: float) -> None:
        self._balance = min(self._cap, self._balance + (now - self._at) * self._min_per_s)
        self._at = now

    def on_request(self, now: float) -> None:
        self._refill(now)
        self._balance = min(self._cap, self._balance + self._ratio)

    def try_spend(self, now: float) -> bool:
        self._refill(now)
        if self._balance >= 1.0:
            self._balance -= 1.0
            return True
        return False
