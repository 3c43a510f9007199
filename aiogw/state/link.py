"""The one connection to Redis that every part of shared state calls through: each call
bounded by `timeout_ms`, the first failure switching the replica to its local state with one
loud log line (another when Redis is back), calls made off the request path, and Redis'
clock as seen from this replica."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from aiogw.config import StateConfig
from aiogw.routing.health import LocalHealth
from aiogw.telemetry.logs import get_logger

log = get_logger("aiogw.state")

# What an unreachable, stalled or restarting Redis raises: never a request's failure.
REDIS_DOWN = (RedisError, OSError, asyncio.TimeoutError)


def redacted(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class RedisLink:
    """Whether Redis is up for this replica, and the calls made through it."""

    def __init__(self, cfg: StateConfig, health: LocalHealth) -> None:
        assert cfg.redis_url is not None
        self.cfg = cfg
        self.prefix = cfg.key_prefix
        self._health = health
        self.replica = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.timeout_s = cfg.timeout_ms / 1000
        self.redis = redis.Redis.from_url(
            # A connect is bounded like any call: a black-holed Redis must not stall requests.
            cfg.redis_url,
            socket_timeout=self.timeout_s,
            socket_connect_timeout=self.timeout_s,
            health_check_interval=0,
        )
        self.up = False
        self._announced_down = False
        self._background: set[asyncio.Task[None]] = set()
        self._clock_offset_ms = 0.0  # Redis server time minus our wall clock (set by each sync)

    def script(self, source: str) -> AsyncScript:
        return self.redis.register_script(source)

    def redis_ms(self) -> float:
        """Now by Redis' clock, in ms: what breaker records and buckets are dated by."""
        return time.time() * 1000 + self._clock_offset_ms

    def redis_clock_is(self, server_ms: float) -> None:
        self._clock_offset_ms = server_ms - time.time() * 1000

    def down(self, exc: BaseException) -> None:
        if self.up or not self._announced_down:
            log.error(
                "state.redis_unavailable",
                url=redacted(self.cfg.redis_url or ""),
                error=f"{type(exc).__name__}: {str(exc) or f'no answer within {self.cfg.timeout_ms} ms'}",
                fallback="local state (limits, breakers and windows of this replica only)",
            )
            self._announced_down = True
        self.up = False
        self._health.shared = False
        for h in self._health.all().values():
            h.remote_calls = h.remote_failures = 0

    def restored(self) -> None:
        if not self.up:
            if self._announced_down:
                log.warning("state.redis_restored", url=redacted(self.cfg.redis_url or ""))
            else:
                log.info("state.shared", url=redacted(self.cfg.redis_url or ""), replica=self.replica)
        self.up = True
        self._announced_down = False
        self._health.shared = True

    def spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        """Run a call off the request path; Redis going away there marks it down."""

        async def run() -> None:
            try:
                await coro
            except REDIS_DOWN as exc:
                self.down(exc)
            except Exception as exc:
                log.error("state.call_failed", error=f"{type(exc).__name__}: {exc}", replica=self.replica, exc_info=exc)

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self, loops: list[asyncio.Task[None]]) -> None:
        # Bounded: a connection stuck mid-command must not hold up the shutdown.
        tasks = [*loops, *self._background]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        self._health.shared = False
        with contextlib.suppress(*REDIS_DOWN):
            await asyncio.wait_for(self.redis.aclose(), 2.0)
