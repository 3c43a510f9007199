"""Breakers across the fleet: a replica's transition is written to a hash and published at
once, the others adopt `open` and `closed` (newest wins, by Redis' clock); when a cooldown
ends, one replica holds the target's probe lease and probes for all."""

from __future__ import annotations

import asyncio
import time

import orjson

from aiogw.routing.health import BreakerState, LocalHealth, TargetHealth
from aiogw.routing.health import now as health_now
from aiogw.state.link import REDIS_DOWN, RedisLink
from aiogw.state.records import (
    MAX_AHEAD_MS,
    RECORD_VERSION,
    BadRecord,
    BadRecords,
    BreakerRecord,
    decode_breaker_record,
)
from aiogw.state.scripts import PROBE, PUBLISH


class FleetBreakers:
    """This replica's breakers kept in step with the fleet's; subscribed to its health."""

    def __init__(self, link: RedisLink, health: LocalHealth, bad: BadRecords) -> None:
        self._link = link
        self._health = health
        self._bad = bad
        self._probe = link.script(PROBE)
        self._publish_script = link.script(PUBLISH)
        self._applied: dict[str, float] = {}  # target id -> server ms of the newest transition known
        self._unpublished: set[str] = set()  # targets whose breaker moved while Redis was away
        self._probes: dict[str, float] = {}  # target id -> monotonic time our answer holds until (+ ours, - theirs)
        health.subscribe(self._on_transition)

    async def claim_probe(self, target_id: str, lease_s: float) -> bool:
        """May this replica send a half-open probe? Only the holder of the target's probe
        lease may (for one cooldown); without Redis every replica probes for itself. The
        answer is remembered (ours: for half the lease, theirs: until it runs out), so a
        half-open target costs a round trip per lease, not per request."""
        link = self._link
        if not link.up or not self._health.is_configured(target_id):
            return True
        until = self._probes.get(target_id, 0.0)
        now = time.monotonic()
        if now < abs(until):
            return until > 0
        try:
            async with asyncio.timeout(link.timeout_s):
                got = int(
                    await self._probe(
                        keys=[f"{link.prefix}:probe:{target_id}"], args=[link.replica, int(lease_s * 1000)]
                    )
                )
        except REDIS_DOWN as exc:
            link.down(exc)
            return True
        now = time.monotonic()
        self._probes[target_id] = now + lease_s / 2 if got > 0 else -(now - got / 1000)
        return got > 0

    def publish_unpublished(self) -> None:
        """What our breakers did while Redis was away reaches the fleet now (newest wins)."""
        for target_id in self._unpublished:
            h = self._health.get(target_id)
            if h.state != "half_open":
                self._link.spawn(self._publish(h, h.state, self._applied[target_id]))
        self._unpublished.clear()

    def _on_transition(self, h: TargetHealth, state: BreakerState, now: float) -> None:
        if state == "half_open" or not self._health.is_configured(h.target_id):
            return  # each replica's own timer (only the probe lease is shared); see FleetSync
        at_ms = self._link.redis_ms()
        self._applied[h.target_id] = at_ms
        if self._link.up:
            self._link.spawn(self._publish(h, state, at_ms))
        else:
            self._unpublished.add(h.target_id)

    async def _publish(self, h: TargetHealth, state: BreakerState, at_ms: float) -> None:
        link = self._link
        payload = orjson.dumps(
            {"v": RECORD_VERSION, "state": state, "at_ms": at_ms, "replica": link.replica, "error": h.last_error}
        )
        await self._publish_script(
            keys=[f"{link.prefix}:breakers"], args=[f"{link.prefix}:breaker", h.target_id, payload, at_ms]
        )

    def receive(self, raw_id: bytes, payload: bytes, source: str) -> None:
        """One breaker record from the channel or the hash: applied, or skipped on its own
        (logged once per kind) when it cannot be read."""
        try:
            try:
                target_id = raw_id.decode()
            except UnicodeDecodeError:
                raise BadRecord("invalid", "the target id is not UTF-8") from None
            if not target_id:
                raise BadRecord("invalid", "no target id")
            if not self._health.is_configured(target_id):
                return  # written by a replica with another config, or a direct target: not shared
            record = decode_breaker_record(payload)
            if record.at_ms > self._link.redis_ms() + MAX_AHEAD_MS:
                raise BadRecord("invalid", "at_ms lies more than a minute ahead of Redis' clock")
        except BadRecord as bad:
            self._bad.skipped(bad, source, raw_id, payload)
            return
        self._apply(target_id, record)

    def _apply(self, target_id: str, d: BreakerRecord) -> None:
        if d.replica == self._link.replica or d.at_ms <= self._applied.get(target_id, 0.0):
            return
        self._applied[target_id] = d.at_ms
        self._unpublished.discard(target_id)  # the fleet has news newer than ours
        h = self._health.get(target_id)
        now = health_now()
        age_s = max(0.0, (self._link.redis_ms() - d.at_ms) / 1000)
        if d.state == "open" and h.state != "open":
            h.last_error = d.error or "opened by another replica"
            h.adopt("open", now - age_s, now)
        elif d.state == "closed" and h.state != "closed":
            h.adopt("closed", now, now)
