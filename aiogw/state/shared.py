"""State shared by every replica through Redis (`state.redis_url`): rate-limit buckets,
breaker transitions and the health windows' counts, so that N replicas act as one gateway.

- Rate limits: rpm/tpm token buckets live in Redis and are taken by one atomic script per
  attempt (the only Redis round trip on the request path, and only for targets that have
  such limits); Redis' own clock refills them, so replica clocks do not matter. The tpm
  reservation is settled with the real usage off the request path. Concurrency and the
  provider-reported remainders stay per replica.
- Breakers: a replica's transition is written to a hash and published at once; the others
  adopt `open` and `closed`. When the cooldown ends, one replica takes the target's probe
  lease and probes; the others skip the target until the breaker closes or reopens.
- Health windows: each replica pushes its per-target call/failure counts every
  `sync_interval_ms` and gets back the other replicas' counts over the last 60 s in the
  same script; the breaker's error-rate test uses the sum.

Redis going away never fails a request: every call is bounded by `timeout_ms`, the first
failure switches the replica to its local state with one loud log line, and the sync loop
reconnects in the background (another line when it is back).

Nothing read back from Redis is trusted to be ours: during a rolling deploy older and newer
aiogw versions share the keys and the channel, and anything else may write there. Breaker
records carry a version (`v`); each record is decoded on its own and one that cannot be
read is skipped (`state.bad_record`, once per kind), and the scripts treat fields and keys
of the wrong shape as absent. The sync and listen loops are supervised: a bug that raises
is logged (`state.loop_died`) and the loop restarts after a pause."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import orjson
import redis.asyncio as redis
from redis.exceptions import RedisError

from aiogw.adapters._base import Target
from aiogw.config import StateConfig
from aiogw.routing.health import BreakerState, LocalHealth, TargetHealth
from aiogw.routing.health import now as health_now
from aiogw.state.leases import LEASE_S, _Lease
from aiogw.state.records import (
    MAX_AHEAD_MS,
    RECORD_VERSION,
    BadRecord,
    BreakerRecord,
    _level,
    decode_breaker_record,
)
from aiogw.state.scripts import PROBE, PUBLISH, SETTLE, SYNC, TAKE
from aiogw.supervise import supervise
from aiogw.telemetry.logs import get_logger

log = get_logger("aiogw.state")


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


def redacted(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


_REDIS_DOWN = (RedisError, OSError, asyncio.TimeoutError)


class SharedState:
    """One per process; `start` connects (or starts degraded), `close` stops the sync."""

    def __init__(self, cfg: StateConfig, health: LocalHealth) -> None:
        assert cfg.redis_url is not None
        self._cfg = cfg
        self._prefix = cfg.key_prefix
        self._health = health
        self.replica = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._timeout_s = cfg.timeout_ms / 1000
        self._redis = redis.Redis.from_url(
            # A connect is bounded like any call: a black-holed Redis must not stall requests.
            cfg.redis_url,
            socket_timeout=self._timeout_s,
            socket_connect_timeout=self._timeout_s,
            health_check_interval=0,
        )
        self._take = self._redis.register_script(TAKE)
        self._settle = self._redis.register_script(SETTLE)
        self._probe = self._redis.register_script(PROBE)
        self._sync = self._redis.register_script(SYNC)
        self._publish_script = self._redis.register_script(PUBLISH)
        self.up = False
        self._announced_down = False
        self._task: asyncio.Task[None] | None = None
        self._pubsub_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[object]] = set()
        self._applied: dict[str, float] = {}  # target id -> server ms of the newest transition known
        self._unpublished: set[str] = set()  # targets whose breaker moved while Redis was away
        self._leases: dict[str, _Lease] = {}
        self._probes: dict[str, float] = {}  # target id -> monotonic time our answer holds until (+ ours, - theirs)
        self._pushed: dict[str, _Pushed] = {}
        self._levels: dict[str, tuple[float | None, float | None, float | None]] = {}  # rl buckets at the last sync
        self._clock_offset_ms = 0.0  # Redis server time minus our wall clock
        self._hash_seen: dict[
            bytes, bytes
        ] = {}  # the breakers hash as last read: unchanged records are not decoded again
        self.bad_records = 0  # records skipped as unreadable (logged once per kind)
        self._bad_kinds: set[str] = set()
        health.subscribe(self._on_transition)

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        await self._sync_once()  # connected, or degraded with the loud line already logged
        self._task = self._supervised("sync", self._sync_loop)
        self._pubsub_task = self._supervised("listen", self._listen)

    def _supervised(self, name: str, loop: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        return asyncio.create_task(supervise(name, loop, log, "state.loop_died", replica=self.replica))

    async def close(self) -> None:
        # Bounded: a connection stuck mid-command must not hold up the shutdown.
        tasks = [t for t in (self._task, self._pubsub_task, *self._background) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        self._health.shared = False
        with contextlib.suppress(*_REDIS_DOWN):
            await asyncio.wait_for(self._redis.aclose(), 2.0)

    def _down(self, exc: BaseException) -> None:
        if self.up or not self._announced_down:
            log.error(
                "state.redis_unavailable",
                url=redacted(self._cfg.redis_url or ""),
                error=f"{type(exc).__name__}: {str(exc) or f'no answer within {self._cfg.timeout_ms} ms'}",
                fallback="local state (limits, breakers and windows of this replica only)",
            )
            self._announced_down = True
        self.up = False
        self._health.shared = False
        for h in self._health.all().values():
            h.remote_calls = h.remote_failures = 0

    def _restored(self) -> None:
        if not self.up:
            if self._announced_down:
                log.warning("state.redis_restored", url=redacted(self._cfg.redis_url or ""))
            else:
                log.info("state.shared", url=redacted(self._cfg.redis_url or ""), replica=self.replica)
        self.up = True
        self._announced_down = False
        self._health.shared = True
        # What our breakers did while Redis was away reaches the fleet now (newest wins).
        for target_id in self._unpublished:
            h = self._health.get(target_id)
            if h.state != "half_open":
                self._spawn(self._publish(h, h.state, self._applied[target_id]))
        self._unpublished.clear()

    # --- rate limits (the request path) -------------------------------------------------

    async def take(self, target: Target, tokens: int) -> bool:
        """Take one request and `tokens` from the target's shared rpm/tpm buckets. True when
        taken, False when Redis is unavailable (the caller uses local buckets); raises
        LimitExceeded when the fleet is at the limit.

        Busy targets take a lease: up to LEASE_S worth of their rate in one round trip, then
        spend it locally. Leased units are gone from the shared bucket, so the fleet never
        exceeds the limit; what a replica leaves unused goes back when the lease ends."""
        if not self.up:
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
            if not self.up:
                return False
        more = 1 + lease.waiting
        want_r = max(more, int((target.rpm or 0) * LEASE_S / 60))
        want_t = max(need * more, int((target.tpm or 0) * LEASE_S / 60))
        flight = lease.flight = asyncio.Event()
        try:
            # The socket timeouts bound each read and connect; this bounds the whole call.
            async with asyncio.timeout(self._timeout_s):
                ok, a, b = await self._take(
                    keys=[self._bucket(target)], args=[target.rpm or 0, target.tpm or 0, need, want_r, want_t]
                )
        except _REDIS_DOWN as exc:
            self._down(exc)
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

    async def claim_probe(self, target_id: str, lease_s: float) -> bool:
        """May this replica send a half-open probe? Only the holder of the target's probe
        lease may (for one cooldown); without Redis every replica probes for itself. The
        answer is remembered (ours: for half the lease, theirs: until it runs out), so a
        half-open target costs a round trip per lease, not per request."""
        if not self.up or not self._health.is_configured(target_id):
            return True
        until = self._probes.get(target_id, 0.0)
        now = time.monotonic()
        if now < abs(until):
            return until > 0
        try:
            async with asyncio.timeout(self._timeout_s):
                got = int(
                    await self._probe(
                        keys=[f"{self._prefix}:probe:{target_id}"], args=[self.replica, int(lease_s * 1000)]
                    )
                )
        except _REDIS_DOWN as exc:
            self._down(exc)
            return True
        now = time.monotonic()
        self._probes[target_id] = now + lease_s / 2 if got > 0 else -(now - got / 1000)
        return got > 0

    def settle(self, target: Target, reserved: int, used: int | None) -> None:
        """The tpm reserved beyond what was used goes back: into the live lease, else to
        Redis off the request path."""
        if not target.tpm or used is None or not self.up:
            return
        delta = min(reserved, target.tpm) - used
        lease = self._leases.get(target.id)
        if lease is not None and delta > 0 and time.monotonic() < lease.expires:
            lease.tokens += delta
        elif delta:
            self._spawn(self._settle(keys=[self._bucket(target)], args=[0, target.tpm, 0, delta]))

    def fleet_levels(self, target: Target) -> tuple[float | None, float | None] | None:
        """The shared rpm/tpm buckets' levels (as of the last sync, refilled since), for
        headroom in /v1/gateway/health and /metrics; None while the local buckets apply."""
        if not self.up:
            return None
        r, t, ts = self._levels.get(target.id, (None, None, None))
        if ts is None:  # never taken, or idle past its expiry: full
            return (float(target.rpm) if target.rpm else None, float(target.tpm) if target.tpm else None)
        elapsed_min = max(0.0, time.time() * 1000 + self._clock_offset_ms - ts) / 60_000
        rpm = min(target.rpm, (r or 0.0) + elapsed_min * target.rpm) if target.rpm else None
        tpm = min(target.tpm, (t or 0.0) + elapsed_min * target.tpm) if target.tpm else None
        return rpm, tpm

    def _bucket(self, target: Target) -> str:
        return f"{self._prefix}:rl:{target.id}"

    def _give_back(self, target: Target, lease: _Lease) -> None:
        if lease.requests >= 1 or lease.tokens > 0:
            args = [target.rpm or 0, target.tpm or 0, int(lease.requests), int(lease.tokens)]
            lease.requests = lease.tokens = 0
            self._spawn(self._settle(keys=[self._bucket(target)], args=args))

    def _return_expired_leases(self) -> None:
        now = time.monotonic()
        for lease in self._leases.values():
            if now >= lease.expires:
                self._give_back(lease.target, lease)

    # --- breakers and windows -----------------------------------------------------------

    def _on_transition(self, h: TargetHealth, state: BreakerState, now: float) -> None:
        if state == "half_open" or not self._health.is_configured(h.target_id):
            return  # each replica's own timer (only the probe lease is shared); see _sync_once
        at_ms = time.time() * 1000 + self._clock_offset_ms
        self._applied[h.target_id] = at_ms
        if self.up:
            self._spawn(self._publish(h, state, at_ms))
        else:
            self._unpublished.add(h.target_id)

    async def _publish(self, h: TargetHealth, state: BreakerState, at_ms: float) -> None:
        payload = orjson.dumps(
            {"v": RECORD_VERSION, "state": state, "at_ms": at_ms, "replica": self.replica, "error": h.last_error}
        )
        await self._publish_script(
            keys=[f"{self._prefix}:breakers"], args=[f"{self._prefix}:breaker", h.target_id, payload, at_ms]
        )

    def _receive(self, raw_id: bytes, payload: bytes, source: str) -> None:
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
            if record.at_ms > time.time() * 1000 + self._clock_offset_ms + MAX_AHEAD_MS:
                raise BadRecord("invalid", "at_ms lies more than a minute ahead of Redis' clock")
        except BadRecord as bad:
            self._bad_record(bad, source, raw_id, payload)
            return
        self._apply(target_id, record)

    def _bad_record(self, bad: BadRecord, source: str, raw_id: bytes, payload: bytes) -> None:
        self.bad_records += 1
        if bad.kind in self._bad_kinds:
            return  # counted (shared_state.bad_records in /v1/gateway/health), not logged again
        self._bad_kinds.add(bad.kind)
        log.warning(
            "state.bad_record",
            kind=bad.kind,
            source=source,
            target=raw_id[:200].decode(errors="replace"),
            error=str(bad)[:300],
            record=payload[:200].decode(errors="replace"),
            replica=self.replica,
            action="skipped; later records of this kind are counted in /v1/gateway/health, not logged",
        )

    def _apply(self, target_id: str, d: BreakerRecord) -> None:
        if d.replica == self.replica or d.at_ms <= self._applied.get(target_id, 0.0):
            return
        self._applied[target_id] = d.at_ms
        self._unpublished.discard(target_id)  # the fleet has news newer than ours
        h = self._health.get(target_id)
        now = health_now()
        age_s = max(0.0, (time.time() * 1000 + self._clock_offset_ms - d.at_ms) / 1000)
        if d.state == "open" and h.state != "open":
            h.last_error = d.error or "opened by another replica"
            h.adopt("open", now - age_s, now)
        elif d.state == "closed" and h.state != "closed":
            h.adopt("closed", now, now)

    async def _sync_once(self) -> None:
        # Configured targets only: names clients make up (`provider/<anything>`) keep their
        # breakers and windows per replica, so they cannot grow Redis or this sync.
        targets = list(self._health.configured().values())
        args: list[str | int | float] = [self._prefix, len(targets)]
        for h in targets:
            args += [h.target_id, h.unsynced_calls, h.unsynced_failures]
        pushed = [(h.unsynced_calls, h.unsynced_failures) for h in targets]
        try:
            out = await self._sync(args=args)
        except _REDIS_DOWN as exc:
            self._down(exc)
            return
        sec = int(out[0])
        self._clock_offset_ms = float(out[1]) - time.time() * 1000
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
                self._levels[h.target_id] = (_level(r), _level(t), _level(ts))
            except ValueError as exc:  # not written by TAKE: read as full, as TAKE does
                self._levels[h.target_id] = (None, None, None)
                self._bad_record(
                    BadRecord("invalid", str(exc)), "rate-limit bucket", h.target_id.encode(), repr((r, t, ts)).encode()
                )
        self._restored()
        flat = out[-1]
        seen = {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}
        for raw_id, payload in seen.items():
            if self._hash_seen.get(raw_id) != payload:
                self._receive(raw_id, payload, "hash")
        self._hash_seen = seen

    async def _sync_loop(self) -> None:
        interval = self._cfg.sync_interval_ms / 1000
        while True:
            await asyncio.sleep(interval if self.up else max(interval, 1.0))
            self._return_expired_leases()
            await self._sync_once()

    async def _listen(self) -> None:
        """Breaker transitions as they happen (the sync loop catches up on anything missed)."""
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(f"{self._prefix}:breaker")
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is not None and msg.get("type") == "message":
                        raw_id, _, payload = msg["data"].partition(b" ")
                        self._receive(raw_id, payload, "channel")
            except _REDIS_DOWN:
                await asyncio.sleep(1.0)  # the sync loop logs and reconnects
            finally:
                with contextlib.suppress(*_REDIS_DOWN):
                    await asyncio.wait_for(pubsub.aclose(), 0.5)

    def _spawn(self, coro: object) -> None:
        async def run() -> None:
            try:
                await coro  # type: ignore[misc]
            except _REDIS_DOWN as exc:
                self._down(exc)
            except Exception as exc:
                log.error("state.call_failed", error=f"{type(exc).__name__}: {exc}", replica=self.replica, exc_info=exc)

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
