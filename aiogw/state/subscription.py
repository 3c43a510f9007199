"""One Redis pub/sub channel listened to for as long as the gateway runs: resubscribed
after Redis comes back, each message's data handed to the caller. What was published while
nobody listened is lost: `on_subscribed` runs on every (re)subscription so that a caller
can make up for it (drop a cache, say)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import redis.asyncio as redis

from aiogw.state.link import REDIS_DOWN

RETRY_S = 1.0  # between attempts to subscribe while Redis is away


async def listen(
    client: redis.Redis,
    channel: str,
    on_data: Callable[[bytes], None],
    subscribed: asyncio.Event,
    on_subscribed: Callable[[], None] | None = None,
) -> None:
    """Forever (cancel to stop): `subscribed` is set while the subscription stands."""
    while True:
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(channel)
            if on_subscribed is not None:
                on_subscribed()
            subscribed.set()
            while True:
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if msg is not None and msg.get("type") == "message":
                    data = msg["data"]
                    on_data(data if isinstance(data, bytes) else str(data).encode())
        except REDIS_DOWN:
            subscribed.clear()
            await asyncio.sleep(RETRY_S)
        finally:
            with contextlib.suppress(*REDIS_DOWN):
                await asyncio.wait_for(pubsub.aclose(), 0.5)
