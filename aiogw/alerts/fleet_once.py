"""Which replica sends an alert: the first to `SET <prefix>:alert:<once_per> NX EX ttl` in
the shared Redis (`state.redis_url`). Off the request path (the alert task asks), so a
slow Redis delays an alert, never a request.

Redis unreachable: the alert is sent anyway (logged once per outage). A duplicate is
harmless, receivers de-duplicate on the event id, which is the same on every replica; a
lost alert is not."""

from __future__ import annotations

import redis.asyncio as redis
from redis.exceptions import RedisError

from aiogw.config import StateConfig
from aiogw.telemetry.logs import get_logger

log = get_logger("aiogw.alerts")

# Per call: longer than the hot path's state.timeout_ms, since nobody waits on this but the alert.
TIMEOUT_S = 2.0


class RedisOnce:
    def __init__(self, cfg: StateConfig) -> None:
        assert cfg.redis_url is not None
        self._prefix = cfg.key_prefix
        self._redis = redis.Redis.from_url(
            cfg.redis_url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S, health_check_interval=0
        )
        self._down = False

    def key(self, once_per: str) -> str:
        return f"{self._prefix}:alert:{once_per}"

    async def first(self, once_per: str, ttl_s: int) -> bool:
        try:
            claimed = await self._redis.set(self.key(once_per), b"1", nx=True, ex=ttl_s)
        except (TimeoutError, RedisError, OSError) as exc:
            if not self._down:
                self._down = True
                log.warning("alerts.dedupe_unavailable", error=f"{type(exc).__name__}: {exc}", sending="anyway")
            return True
        if self._down:
            self._down = False
            log.info("alerts.dedupe_back")
        return bool(claimed)

    async def close(self) -> None:
        await self._redis.aclose()
