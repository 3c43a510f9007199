"""The two loops that keep a replica in step with the fleet: every `sync_interval_ms` one
script pushes this replica's health-window counts and reads back the others' (the breaker's
error-rate test uses the sum), the bucket levels and the breakers hash; between syncs,
pub/sub brings breaker transitions as they happen. Both loops are supervised: a bug that
raises is logged (`state.loop_died`) and the loop restarts after a pause."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass, field

from aiogw.routing.health import LocalHealth
from aiogw.state.breakers import FleetBreakers
from aiogw.state.buckets import FleetBuckets
from aiogw.state.link import REDIS_DOWN, RedisLink
from aiogw.state.records import BadRecord, BadRecords, _level
from aiogw.state.scripts import SYNC


@dataclass(slots=True)
class _Pushed:
    """Our own calls/failures in the fleet's sums, by Redis second: taken back out, so the
    breaker adds the others' counts to its own window without counting ours twice."""

    seconds: deque[tuple[int, int, int]] = field(default_factory=deque)
    calls: int = 0
    failures: int = 0

    def add(self, sec: int, calls: int, failures: int) -> None:
        if calls:
            self.seconds.append((sec, calls, failures))
            self.calls += calls
            self.failures += failures
        while self.seconds and self.seconds[0][0] < sec - 59:
            _, c, f = self.seconds.popleft()
            self.calls -= c
            self.failures -= f


def _end_if_cancelled() -> None:
    """redis-py can lose a cancellation that lands while its read times out (the call just
    returns or raises a connection error): a loop that went on would outlive `close` and
    hang the process at exit. The task still counts the request; honour it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class FleetSync:
    def __init__(
        self, link: RedisLink, health: LocalHealth, buckets: FleetBuckets, breakers: FleetBreakers, bad: BadRecords
    ) -> None:
        self._link = link
        self._health = health
        self._buckets = buckets
        self._breakers = breakers
        self._bad = bad
        self._sync = link.script(SYNC)
        self._pushed: dict[str, _Pushed] = {}
        self._hash_seen: dict[
            bytes, bytes
        ] = {}  # the breakers hash as last read: unchanged records are not decoded again

    async def sync_once(self) -> None:
        link = self._link
        # Configured targets only: names clients make up (`provider/<anything>`) keep their
        # breakers and windows per replica, so they cannot grow Redis or this sync.
        targets = list(self._health.configured().values())
        args: list[str | int | float] = [link.prefix, len(targets)]
        for h in targets:
            args += [h.target_id, h.unsynced_calls, h.unsynced_failures]
        pushed = [(h.unsynced_calls, h.unsynced_failures) for h in targets]
        try:
            out = await self._sync(args=args)
        except REDIS_DOWN as exc:
            link.down(exc)
            return
        sec = int(out[0])
        link.redis_clock_is(float(out[1]))
        levels = self._buckets.levels
        for i, (h, (c, f)) in enumerate(zip(targets, pushed, strict=True)):
            h.unsynced_calls -= c  # counted since the push began stay for the next one
            h.unsynced_failures -= f
            mine = self._pushed.get(h.target_id)
            if mine is None:
                mine = self._pushed[h.target_id] = _Pushed()
            mine.add(sec, c, f)
            calls, failures, r, t, ts = out[2 + 5 * i : 7 + 5 * i]
            # Never below zero: a restarted Redis forgets what we had pushed before.
            h.remote_calls = max(0, int(calls) - mine.calls)
            h.remote_failures = max(0, int(failures) - mine.failures)
            try:
                levels[h.target_id] = (_level(r), _level(t), _level(ts))
            except ValueError as exc:  # not written by TAKE: read as full, as TAKE does
                levels[h.target_id] = (None, None, None)
                self._bad.skipped(
                    BadRecord("invalid", str(exc)), "rate-limit bucket", h.target_id.encode(), repr((r, t, ts)).encode()
                )
        link.restored()
        self._breakers.publish_unpublished()
        flat = out[-1]
        seen = {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}
        for raw_id, payload in seen.items():
            if self._hash_seen.get(raw_id) != payload:
                self._breakers.receive(raw_id, payload, "hash")
        self._hash_seen = seen

    async def sync_loop(self) -> None:
        interval = self._link.cfg.sync_interval_ms / 1000
        while True:
            await asyncio.sleep(interval if self._link.up else max(interval, 1.0))
            self._buckets.return_expired_leases()
            await self.sync_once()
            _end_if_cancelled()

    async def listen(self) -> None:
        """Breaker transitions as they happen (the sync loop catches up on anything missed)."""
        while True:
            pubsub = self._link.redis.pubsub()
            try:
                await pubsub.subscribe(f"{self._link.prefix}:breaker")
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    _end_if_cancelled()
                    if msg is not None and msg.get("type") == "message":
                        raw_id, _, payload = msg["data"].partition(b" ")
                        self._breakers.receive(raw_id, payload, "channel")
            except REDIS_DOWN:
                _end_if_cancelled()
                await asyncio.sleep(1.0)  # the sync loop logs and reconnects
            finally:
                with contextlib.suppress(*REDIS_DOWN):
                    await asyncio.wait_for(pubsub.aclose(), 0.5)
