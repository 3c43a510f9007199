"""Feedback across replicas, over Redis: the request memory mirrored (`<prefix>:fbmem:<id>`,
for `feedback.shared_ttl_s`) so that another replica finds a request this one answered
before its batch reaches the store, and every quality observation published on
`<prefix>:quality` so that each replica's estimates learn from feedback any replica took.

Writes are batched off the request path (one pipeline per wake-up); Redis away never fails
a request or a feedback call: the memory is still in the store (after its batch), and an
observation missed while the subscription was down is lost to that replica only."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import redis.asyncio as redis

from aiogw.config import StateConfig
from aiogw.state.link import REDIS_DOWN
from aiogw.state.subscription import listen
from aiogw.supervise import supervise
from aiogw.telemetry.logs import get_logger

log = get_logger("aiogw.state")

CALL_TIMEOUT_S = 1.0  # not the chat path: a feedback call may wait this long for a lookup
SUBSCRIBE_WAIT_S = 2.0
MAX_PENDING = 10_000  # memories waiting for the next pipeline; past it dropped (the store still has them)


class FeedbackBus:
    def __init__(self, cfg: StateConfig, ttl_s: float, on_observation: Callable[[dict[str, Any]], None]) -> None:
        assert cfg.redis_url is not None
        self._prefix = cfg.key_prefix
        self._channel = f"{cfg.key_prefix}:quality"
        self._ttl_ms = int(ttl_s * 1000)
        self._on_observation = on_observation
        self.replica = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._redis = redis.Redis.from_url(
            cfg.redis_url, socket_timeout=CALL_TIMEOUT_S, socket_connect_timeout=CALL_TIMEOUT_S, health_check_interval=0
        )
        self._pending: list[tuple[str, bytes]] = []
        self._wake = asyncio.Event()
        self._subscribed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._failing = False

    def _key(self, request_id: str) -> str:
        return f"{self._prefix}:fbmem:{request_id}"

    # --- the memory's mirror ----------------------------------------------------------

    def put(self, request_id: str, packed: bytes) -> None:
        if len(self._pending) < MAX_PENDING:
            self._pending.append((request_id, packed))
            self._wake.set()

    async def get(self, request_id: str) -> bytes | None:
        try:
            async with asyncio.timeout(CALL_TIMEOUT_S):
                value = await self._redis.get(self._key(request_id))
        except REDIS_DOWN as exc:
            self._down("feedback.redis_get_failed", exc)
            return None
        return value if isinstance(value, bytes) else None

    async def _writer(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            if not batch:
                continue
            try:
                async with asyncio.timeout(CALL_TIMEOUT_S):
                    pipe = self._redis.pipeline(transaction=False)
                    for rid, packed in batch:
                        pipe.set(self._key(rid), packed, px=self._ttl_ms, nx=True)
                    await pipe.execute()
                self._failing = False
            except REDIS_DOWN as exc:
                self._down("feedback.redis_put_failed", exc)

    # --- observations -----------------------------------------------------------------

    async def publish(self, observation: dict[str, Any]) -> None:
        try:
            async with asyncio.timeout(CALL_TIMEOUT_S):
                await self._redis.publish(self._channel, orjson.dumps({**observation, "origin": self.replica}))
        except REDIS_DOWN as exc:
            self._down("feedback.publish_failed", exc)

    async def _listen(self) -> None:
        def heard(data: bytes) -> None:
            try:
                obs = orjson.loads(data)
            except orjson.JSONDecodeError:
                return
            if isinstance(obs, dict) and obs.get("origin") != self.replica:
                self._on_observation(obs)

        await listen(self._redis, self._channel, heard, self._subscribed)

    def _down(self, event: str, exc: BaseException) -> None:
        if not self._failing:  # once per outage, not per call
            log.warning(event, error=f"{type(exc).__name__}: {exc}", effect="feedback falls back to the store")
        self._failing = True

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(supervise("feedback-listen", self._listen, log, "state.loop_died")),
            asyncio.create_task(supervise("feedback-mirror", self._writer, log, "state.loop_died")),
        ]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), SUBSCRIBE_WAIT_S)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)
        with contextlib.suppress(*REDIS_DOWN):
            await asyncio.wait_for(self._redis.aclose(), 2.0)
