"""Per-target rate limits: requests per minute, tokens per minute, concurrency, tightened by
what the provider's own rate-limit headers say.

`rpm` and `tpm` are token buckets refilled continuously (capacity = the per-minute limit),
so a burst can use a whole minute's allowance but not more. A request reserves its
estimated tokens (prompt estimate + max output) before the call and is reconciled with
the real usage after it. The provider's `remaining`/`reset` headers, when present, form a
second view that is decremented locally between replies, so aiogw stops sending before
the provider starts refusing.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from dataclasses import dataclass, field

from aiogw.adapters._base import RateLimitInfo, Target
from aiogw.names import PerTarget


@dataclass(slots=True)
class _Bucket:
    capacity: float
    level: float
    per_s: float
    at: float

    @classmethod
    def per_minute(cls, limit: int, now: float) -> _Bucket:
        return cls(capacity=float(limit), level=float(limit), per_s=limit / 60.0, at=now)

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.at) * self.per_s)
        self.at = now

    def wait_s(self, amount: float) -> float:
        """Seconds until `amount` is available (0 = now); amounts over capacity wait for a full bucket."""
        need = min(amount, self.capacity) - self.level
        return max(0.0, need / self.per_s) if self.per_s else float("inf")


@dataclass(slots=True)
class _ProviderView:
    """The provider's own counters from its last reply, counted down locally."""

    remaining_requests: int | None = None
    requests_reset_at: float = 0.0
    remaining_tokens: int | None = None
    tokens_reset_at: float = 0.0

    def expire(self, now: float) -> None:
        """Past its reset time a counter says nothing any more."""
        if self.remaining_requests is not None and now >= self.requests_reset_at:
            self.remaining_requests = None
        if self.remaining_tokens is not None and now >= self.tokens_reset_at:
            self.remaining_tokens = None

    def wait_s(self, tokens: int, now: float) -> float:
        self.expire(now)
        wait = 0.0
        if self.remaining_requests is not None and self.remaining_requests <= 0 and now < self.requests_reset_at:
            wait = self.requests_reset_at - now
        if self.remaining_tokens is not None and self.remaining_tokens < tokens and now < self.tokens_reset_at:
            wait = max(wait, self.tokens_reset_at - now)
        return wait


@dataclass(slots=True)
class TargetLimits:
    rpm: _Bucket | None
    tpm: _Bucket | None
    concurrency: int | None
    in_flight: int = 0
    provider: _ProviderView = field(default_factory=_ProviderView)


@dataclass(slots=True)
class Reservation:
    target_id: str
    tokens: int
    shared: bool = False  # rpm/tpm were taken from the shared (Redis) buckets


class LimitExceeded(Exception):
    def __init__(self, target_id: str, reason: str, retry_after_s: float) -> None:
        super().__init__(f"{target_id} at its {reason} limit")
        self.target_id = target_id
        self.reason = reason
        self.retry_after_s = retry_after_s


class Limiter:
    """In-process limits; the Redis-backed limiter (shared across replicas) has the same methods.
    Kept for the configured targets and the most recently used others (`aiogw.names`):
    targets addressed directly have no local limits, only the provider's reported view."""

    def __init__(
        self,
        *,
        configured: Container[str] | None = None,
        # With shared state: the fleet's rpm/tpm levels while they, not ours, apply.
        fleet_levels: Callable[[Target], tuple[float | None, float | None] | None] | None = None,
    ) -> None:
        self._targets: PerTarget[TargetLimits] = PerTarget(configured)
        self._kept = self._targets.configured()  # the hot path: one dict lookup, as before
        self.fleet_levels = fleet_levels

    def _get(self, target: Target, now: float) -> TargetLimits:
        t = self._kept.get(target.id) or self._targets.get(target.id)
        if t is None:
            t = self._targets.put(
                target.id,
                TargetLimits(
                    rpm=_Bucket.per_minute(target.rpm, now) if target.rpm else None,
                    tpm=_Bucket.per_minute(target.tpm, now) if target.tpm else None,
                    concurrency=target.concurrency,
                ),
            )
        return t

    def acquire(self, target: Target, tokens: int, now: float, *, buckets: bool = True) -> Reservation:
        """Reserve one request and `tokens` tokens, or raise LimitExceeded with a wait hint.
        `buckets=False` when rpm/tpm were already taken from shared state."""
        t = self._get(target, now)
        if t.concurrency is not None and t.in_flight >= t.concurrency:
            raise LimitExceeded(target.id, "concurrency", 1.0)
        for bucket, amount, name in ((t.rpm, 1, "rpm"), (t.tpm, tokens, "tpm")):
            if bucket is not None and buckets:
                bucket.refill(now)
                wait = bucket.wait_s(amount)
                if wait > 0:
                    raise LimitExceeded(target.id, name, wait)
        wait = t.provider.wait_s(tokens, now)
        if wait > 0:
            raise LimitExceeded(target.id, "provider-reported", wait)
        if t.rpm is not None and buckets:
            t.rpm.level -= 1
        if t.tpm is not None and buckets:
            t.tpm.level -= min(tokens, t.tpm.capacity)
        pv = t.provider
        if pv.remaining_requests is not None:
            pv.remaining_requests -= 1
        if pv.remaining_tokens is not None:
            pv.remaining_tokens -= tokens
        t.in_flight += 1
        return Reservation(target.id, tokens, shared=not buckets)

    def release(self, r: Reservation, actual_tokens: int | None, now: float) -> None:
        """The call ended: free the slot and settle the token reservation with the real usage."""
        t = self._targets.get(r.target_id)
        if t is None:
            return
        t.in_flight = max(0, t.in_flight - 1)  # forgotten and made again meanwhile: starts at 0
        if actual_tokens is not None and t.tpm is not None and not r.shared:
            t.tpm.refill(now)
            t.tpm.level = min(t.tpm.capacity, t.tpm.level + (min(r.tokens, t.tpm.capacity) - actual_tokens))

    def observe(self, target: Target, info: RateLimitInfo, now: float) -> None:
        """Adopt the provider's view from its rate-limit headers."""
        pv = self._get(target, now).provider
        if info.remaining_requests is not None:
            pv.remaining_requests = info.remaining_requests
            pv.requests_reset_at = now + (info.reset_requests_s if info.reset_requests_s is not None else 60.0)
        if info.remaining_tokens is not None:
            pv.remaining_tokens = info.remaining_tokens
            pv.tokens_reset_at = now + (info.reset_tokens_s if info.reset_tokens_s is not None else 60.0)

    def headroom(self, target: Target, now: float) -> dict[str, float | None]:
        """Remaining allowance, for /v1/gateway/health and metrics."""
        t = self._get(target, now)
        for b in (t.rpm, t.tpm):
            if b is not None:
                b.refill(now)
        rpm = t.rpm.level if t.rpm else None
        tpm = t.tpm.level if t.tpm else None
        fleet = self.fleet_levels(target) if self.fleet_levels is not None else None
        if fleet is not None:
            rpm, tpm = fleet
        return {
            "rpm_remaining": round(rpm, 1) if rpm is not None else None,
            "tpm_remaining": round(tpm) if tpm is not None else None,
            "concurrency_remaining": (t.concurrency - t.in_flight) if t.concurrency else None,
            "provider_remaining_requests": t.provider.remaining_requests,
            "provider_remaining_tokens": t.provider.remaining_tokens,
        }
