"""Budget counters shared by a fleet in Redis: each step (hold, settle, start a window) is
one Lua script, so the all-or-none hold across a request's budgets is atomic fleet-wide.

When Redis does not answer, the book falls back to this process's own counters (logged
once): requests keep flowing, each replica then bounds spend by itself until Redis is back."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import redis.asyncio as redis
import structlog

from aiogw.admission.reserve import LocalBook
from aiogw.config import StateConfig
from aiogw.state.link import REDIS_DOWN
from aiogw.state.scripts import BUDGET_RESERVE, BUDGET_SEED, BUDGET_SETTLE

log = structlog.get_logger("aiogw.budgets")

# A hold is one short script; a busier bound than rate limits' (a refused budget is a 402,
# so a slow answer must not read as Redis being away).
MIN_TIMEOUT_S = 0.5


class RedisBook:
    def __init__(self, cfg: StateConfig) -> None:
        assert cfg.redis_url is not None
        timeout = max(cfg.timeout_ms / 1000, MIN_TIMEOUT_S)
        self._redis = redis.Redis.from_url(
            cfg.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=0
        )
        # One hash tag for every budget key: a request's windows share a Redis Cluster slot.
        self._prefix = f"{{{cfg.key_prefix}}}:budget:"
        self._reserve = self._redis.register_script(BUDGET_RESERVE)
        self._settle = self._redis.register_script(BUDGET_SETTLE)
        self._seed = self._redis.register_script(BUDGET_SEED)
        self.local = LocalBook()  # while Redis is away
        self.down = False

    def _keys(self, keys: Sequence[str]) -> list[str]:
        return [self._prefix + k for k in keys]

    def _failed(self, exc: BaseException) -> None:
        if not self.down:
            log.error(
                "budget.redis_unavailable",
                error=f"{type(exc).__name__}: {exc}",
                fallback="this replica's own budget counters",
            )
        self.down = True

    def _ok(self) -> None:
        if self.down:
            log.warning("budget.redis_restored")
        self.down = False

    async def reserve(self, keys: Sequence[str], limits: Sequence[int], amount: int, ttls_ms: Sequence[int]) -> int:
        try:
            got = await self._reserve(keys=self._keys(keys), args=[amount, *limits, *ttls_ms])
        except REDIS_DOWN as exc:
            self._failed(exc)
            return self.local.reserve_now(keys, limits, amount)
        self._ok()
        return int(got) - 1

    async def settle(self, keys: Sequence[str], reserved: int, actuals: Sequence[int]) -> list[int]:
        try:
            got = await self._settle(keys=self._keys(keys), args=[reserved, *actuals])
        except REDIS_DOWN as exc:
            self._failed(exc)
            return self.local.settle_now(keys, reserved, actuals)
        self._ok()
        return [int(x) for x in got]

    async def seed(self, key: str, spent: int, ttl_ms: int) -> None:
        await self.local.seed(key, spent, ttl_ms)
        try:
            await self._seed(keys=self._keys([key]), args=[spent, ttl_ms])
        except REDIS_DOWN as exc:
            self._failed(exc)

    async def read(self, keys: Sequence[str]) -> list[tuple[int, int]]:
        try:
            pipe = self._redis.pipeline(transaction=False)
            for k in self._keys(keys):
                pipe.hmget(k, "s", "r")
            got = await pipe.execute()
        except REDIS_DOWN as exc:
            self._failed(exc)
            return await self.local.read(keys)
        return [(int(s or 0), int(r or 0)) for s, r in got]

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self._redis.aclose(), 2.0)
        except REDIS_DOWN:
            pass
