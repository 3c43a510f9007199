"""The fleet's rpm/tpm buckets in Redis, as the request path takes from them: one atomic
script per attempt at most (only for targets that have such limits), less for busy targets
that lease a slice of their rate; Redis' own clock refills them. The tpm reserved beyond
what an answer used goes back off the request path."""

from __future__ import annotations

import asyncio
import time

from aiogw.adapters._base import Target
from aiogw.state.leases import LEASE_S, _Lease
from aiogw.state.link import REDIS_DOWN, RedisLink
from aiogw.state.scripts import SETTLE, TAKE


class FleetBuckets:
    """This replica's side of the shared buckets: its leases, and their levels at the last sync."""

    def __init__(self, link: RedisLink) -> None:
        self._link = link
        self._take = link.script(TAKE)
        self._settle = link.script(SETTLE)
        self._leases: dict[str, _Lease] = {}
        self.levels: dict[str, tuple[float | None, float | None, float | None]] = {}  # written by each sync

    async def take(self, target: Target, tokens: int) -> bool:
        """Take one request and `tokens` from the target's shared rpm/tpm buckets. True when
        taken, False when Redis is unavailable (the caller uses local buckets); raises
        LimitExceeded when the fleet is at the limit.

        Busy targets take a lease: up to LEASE_S worth of their rate in one round trip, then
        spend it locally. Leased units are gone from the shared bucket, so the fleet never
        exceeds the limit; what a replica leaves unused goes back when the lease ends."""
        link = self._link
        if not link.up:
            return False
        need = min(tokens, target.tpm) if target.tpm else 0
        lease = self._leases.get(target.id)
        if lease is None:
            lease = self._leases[target.id] = _Lease(target)
        while True:
            now = time.monotonic()
            if lease.spend(target.rpm, need, now):
                return True
            refusal = lease.refused(need, now)
            if refusal is not None:
                raise refusal
            if lease.flight is None:
                break
            lease.waiting += 1
            try:
                await lease.flight.wait()  # bounded: the call in flight is
            finally:
                lease.waiting -= 1
            if not link.up:
                return False
        more = 1 + lease.waiting
        want_r = max(more, int((target.rpm or 0) * LEASE_S / 60))
        want_t = max(need * more, int((target.tpm or 0) * LEASE_S / 60))
        flight = lease.flight = asyncio.Event()
        try:
            # The socket timeouts bound each read and connect; this bounds the whole call.
            async with asyncio.timeout(link.timeout_s):
                ok, a, b = await self._take(
                    keys=[self._bucket(target)], args=[target.rpm or 0, target.tpm or 0, need, want_r, want_t]
                )
        except REDIS_DOWN as exc:
            link.down(exc)
            return False
        finally:
            lease.flight = None
            flight.set()  # the waiters run after this returns, and find the lease updated
        now = time.monotonic()
        if not ok:
            lease.refused_kind = b.decode() if isinstance(b, bytes) else str(b)
            lease.refused_need, lease.retry_at = need, now + a / 1000
            lease.refused_until = min(lease.retry_at, now + LEASE_S)
            refusal = lease.refused(need, now)
            assert refusal is not None
            raise refusal
        if now >= lease.expires:
            self._give_back(target, lease)  # what an ended lease left goes back first
        lease.requests += max(0, int(a) - 1)
        lease.tokens += max(0, int(b) - need)
        lease.expires = now + LEASE_S
        lease.refused_until = 0.0
        return True

    def refund(self, target: Target, tokens: int) -> None:
        """A take that sent nothing (a local limit refused the attempt) goes back into the
        lease, and from there to Redis when the lease ends: rejected attempts must not use
        up the fleet's rate."""
        lease = self._leases.get(target.id)
        if lease is None:
            lease = self._leases[target.id] = _Lease(target, expires=time.monotonic() + LEASE_S)
        lease.requests += 1 if target.rpm else 0
        lease.tokens += min(tokens, target.tpm) if target.tpm else 0

    def settle(self, target: Target, reserved: int, used: int | None) -> None:
        """The tpm reserved beyond what was used goes back: into the live lease, else to
        Redis off the request path."""
        if not target.tpm or used is None or not self._link.up:
            return
        delta = min(reserved, target.tpm) - used
        lease = self._leases.get(target.id)
        if lease is not None and delta > 0 and time.monotonic() < lease.expires:
            lease.tokens += delta
        elif delta:
            self._link.spawn(self._settle(keys=[self._bucket(target)], args=[0, target.tpm, 0, delta]))

    def fleet_levels(self, target: Target) -> tuple[float | None, float | None] | None:
        """The shared rpm/tpm buckets' levels (as of the last sync, refilled since), for
        headroom in /v1/gateway/health and /metrics; None while the local buckets apply."""
        if not self._link.up:
            return None
        r, t, ts = self.levels.get(target.id, (None, None, None))
        if ts is None:  # never taken, or idle past its expiry: full
            return (float(target.rpm) if target.rpm else None, float(target.tpm) if target.tpm else None)
        elapsed_min = max(0.0, self._link.redis_ms() - ts) / 60_000
        rpm = min(target.rpm, (r or 0.0) + elapsed_min * target.rpm) if target.rpm else None
        tpm = min(target.tpm, (t or 0.0) + elapsed_min * target.tpm) if target.tpm else None
        return rpm, tpm

    def return_expired_leases(self) -> None:
        now = time.monotonic()
        for lease in self._leases.values():
            if now >= lease.expires:
                self._give_back(lease.target, lease)

    def _bucket(self, target: Target) -> str:
        return f"{self._link.prefix}:rl:{target.id}"

    def _give_back(self, target: Target, lease: _Lease) -> None:
        if lease.requests >= 1 or lease.tokens > 0:
            args = [target.rpm or 0, target.tpm or 0, int(lease.requests), int(lease.tokens)]
            lease.requests = lease.tokens = 0
            self._link.spawn(self._settle(keys=[self._bucket(target)], args=args))
