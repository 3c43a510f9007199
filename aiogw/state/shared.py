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
is logged (`state.loop_died`) and the loop restarts after a pause.

The parts, each built here and handed what it uses: `link` (the connection, up or down, and
Redis' clock), `buckets` (rate limits and leases), `breakers` (transitions and the probe
lease), `sync` (the sync and listen loops), `records` (what is read back, and the unreadable)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiogw.config import StateConfig
from aiogw.routing.health import LocalHealth
from aiogw.state.breakers import FleetBreakers
from aiogw.state.buckets import FleetBuckets
from aiogw.state.link import RedisLink, log
from aiogw.state.records import BadRecords
from aiogw.state.sync import FleetSync
from aiogw.supervise import supervise


class SharedState:
    """One per process; `start` connects (or starts degraded), `close` stops the sync.

    The request path calls the parts' own methods (bound here, no extra call in between):
    `take`, `refund`, `settle` (buckets) and `claim_probe` (breakers)."""

    def __init__(self, cfg: StateConfig, health: LocalHealth) -> None:
        self.link = link = RedisLink(cfg, health)
        self._bad = BadRecords(link.replica)
        self.buckets = FleetBuckets(link)
        self.breakers = FleetBreakers(link, health, self._bad)
        self.sync = FleetSync(link, health, self.buckets, self.breakers, self._bad)
        self.take = self.buckets.take
        self.refund = self.buckets.refund
        self.settle = self.buckets.settle
        self.fleet_levels = self.buckets.fleet_levels
        self.claim_probe = self.breakers.claim_probe
        self._loops: list[asyncio.Task[None]] = []

    @property
    def up(self) -> bool:
        return self.link.up

    @property
    def replica(self) -> str:
        return self.link.replica

    @property
    def bad_records(self) -> int:
        """Records skipped as unreadable (logged once per kind)."""
        return self._bad.count

    async def start(self) -> None:
        await self.sync.sync_once()  # connected, or degraded with the loud line already logged
        self._loops = [self._supervised("sync", self.sync.sync_loop), self._supervised("listen", self.sync.listen)]

    def _supervised(self, name: str, loop: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        return asyncio.create_task(supervise(name, loop, log, "state.loop_died", replica=self.replica))

    async def close(self) -> None:
        await self.link.close(self._loops)
