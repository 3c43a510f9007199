"""Key changes (revoke, rotate, update, delete) told to every replica over Redis pub/sub
(channel `<prefix>:keys`, the key id as the message), so that each drops its cached entry
at once instead of when the entry's short TTL ends.

A message missed while the subscription was down cannot be replayed: every (re)subscription
clears the whole cache instead. Redis being away never fails an admin call: the change is
in the store, and the TTL still bounds how long a replica can miss it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import redis.asyncio as redis

from aiogw.config import StateConfig
from aiogw.state.link import REDIS_DOWN
from aiogw.state.subscription import listen
from aiogw.supervise import supervise
from aiogw.telemetry.logs import get_logger

log = get_logger("aiogw.state")

PUBLISH_TIMEOUT_S = 1.0  # an admin call, not the request path
SUBSCRIBE_WAIT_S = 2.0  # at start: serve without the channel rather than not at all


class KeyEvents:
    def __init__(self, cfg: StateConfig, *, forget: Callable[[str], None], forget_all: Callable[[], None]) -> None:
        assert cfg.redis_url is not None
        self._channel = f"{cfg.key_prefix}:keys"
        self._forget, self._forget_all = forget, forget_all
        self._redis = redis.Redis.from_url(
            cfg.redis_url, socket_connect_timeout=PUBLISH_TIMEOUT_S, health_check_interval=0
        )
        self._subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(supervise("key-events", self._listen, log, "state.loop_died"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), SUBSCRIBE_WAIT_S)

    async def publish(self, key_id: str) -> None:
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                await self._redis.publish(self._channel, key_id)
        except REDIS_DOWN as exc:
            log.warning(
                "keys.publish_failed",
                key_id=key_id,
                error=f"{type(exc).__name__}: {exc}",
                effect="other replicas refuse the old state when their cache entry expires (under 1 s)",
            )

    async def _listen(self) -> None:
        def forget(data: bytes) -> None:
            self._forget(data.decode(errors="replace"))

        # Whatever was said while we were not listening: forget everything on (re)subscribing.
        await listen(self._redis, self._channel, forget, self._subscribed, self._forget_all)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=2.0)
        with contextlib.suppress(*REDIS_DOWN):
            await asyncio.wait_for(self._redis.aclose(), 2.0)
