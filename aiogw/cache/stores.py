"""Where entries live: aiocache's memory backend bounded by bytes (per process), or its
Redis backend (shared by every replica on the same Redis)."""

from __future__ import annotations

import fnmatch
import math
import time
from collections import OrderedDict
from typing import Any

from aiocache import SimpleMemoryCache
from aiocache.serializers import NullSerializer

# Per entry beyond its key and value: the OrderedDict node, the bytes objects' headers and
# the expiry float. An estimate, so that many small entries cannot exceed the bound.
ENTRY_OVERHEAD = 200


class BoundedMemoryCache(SimpleMemoryCache):
    """aiocache's SimpleMemoryCache grows without bound and arms a timer per entry with a
    TTL. This one holds values up to `max_bytes` (keys, values and `ENTRY_OVERHEAD` counted)
    in an OrderedDict kept in use order, dropping the least recently used past the bound,
    and keeps each entry's expiry beside it, checked when read (an expired entry that is
    never read again leaves by the same LRU order): no timer per entry."""

    def __init__(self, max_bytes: int, **kwargs: Any) -> None:
        # timeout=0: no asyncio.wait_for (a task per call) around what never blocks.
        super().__init__(serializer=NullSerializer(), timeout=0, **kwargs)
        self.max_bytes = max_bytes
        self.bytes = 0
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._expires: dict[str, float] = {}

    def _size(self, key: str, value: bytes) -> int:
        return len(key) + len(value) + ENTRY_OVERHEAD

    def _drop(self, key: str) -> int:
        value = self._cache.pop(key, None)
        if value is None:
            return 0
        self._expires.pop(key, None)
        self.bytes -= self._size(key, value)
        return 1

    async def _get(self, key: str, encoding: str | None = "utf-8", _conn: Any = None) -> bytes | None:
        return self.peek(key)

    def peek(self, key: str) -> bytes | None:
        """`get` without aiocache's wrapper (its hooks, timing and coroutine cost a hit
        more than the lookup): the cache stage reads the memory backend through this."""
        value = self._cache.get(key)
        if value is None:
            return None
        exp = self._expires.get(key)
        if exp is not None and exp <= time.monotonic():
            self._drop(key)
            return None
        self._cache.move_to_end(key)
        return value

    async def _set(
        self, key: str, value: bytes, ttl: float | None = None, _cas_token: Any = None, _conn: Any = None
    ) -> bool:
        return self.put(key, value, ttl)

    def put(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        """`set` without aiocache's wrapper, as `peek` is `get` without it (the cache stage
        writes the memory backend through this: its hooks and timeout cost more than the
        insertion)."""
        size = self._size(key, value)
        if size > self.max_bytes:
            return False  # larger than the whole cache: never stored
        self._drop(key)
        self._cache[key] = value
        self.bytes += size
        if ttl:
            self._expires[key] = time.monotonic() + ttl
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._cache)))
        return True

    async def _delete(self, key: str, _conn: Any = None) -> int:
        return self._drop(key)

    async def _exists(self, key: str, _conn: Any = None) -> bool:
        return await self._get(key) is not None

    async def _clear(self, namespace: str | None = None, _conn: Any = None) -> bool:
        self._cache.clear()
        self._expires.clear()
        self.bytes = 0
        return True

    def purge(self, pattern: str) -> int:
        gone = [k for k in self._cache if fnmatch.fnmatchcase(k, pattern)]
        for k in gone:
            self._drop(k)
        return len(gone)

    @property
    def entries(self) -> int:
        return len(self._cache)


class RedisStore:
    """aiocache's RedisCache over the client of `state.redis_url` (aiocache builds its own
    pool from host and port; from_url keeps the URL's password, TLS and database)."""

    def __init__(self, url: str, timeout_s: float) -> None:
        import redis.asyncio as aioredis  # noqa: PLC0415 - the redis client only when configured
        from aiocache import RedisCache  # noqa: PLC0415

        self.cache = RedisCache(serializer=NullSerializer(encoding=None), timeout=timeout_s)
        old = self.cache.client
        self.cache.client = aioredis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self._unused = old  # built by aiocache, never connected: closed with ours

    async def purge(self, pattern: str) -> int:
        """Deletes the matching answers (and their partitions' vector streams); returns how
        many answers went."""
        n = 0
        batch: list[bytes] = []
        async for k in self.cache.client.scan_iter(match=pattern, count=500):
            batch.append(k)
            if len(batch) >= 500:
                n += await self._delete(batch)
                batch = []
        if batch:
            n += await self._delete(batch)
        return n

    async def _delete(self, keys: list[bytes]) -> int:
        await self.cache.client.delete(*keys)
        return sum(1 for k in keys if not k.endswith(b":vec"))

    # The semantic tier's vectors: one Redis stream per partition, so every replica's index
    # reads what any replica stored (entries after the last id it read; capped, expiring).
    async def append(self, stream: str, record: bytes, ttl_s: float, maxlen: int) -> None:
        pipe = self.cache.client.pipeline(transaction=False)
        pipe.xadd(stream, {b"r": record}, maxlen=maxlen, approximate=True)
        pipe.expire(stream, max(1, math.ceil(ttl_s)))
        await pipe.execute()

    async def read_after(self, stream: str, after: str | None, count: int) -> list[tuple[str, bytes]]:
        rows = await self.cache.client.xrange(stream, min=f"({after}" if after else "-", max="+", count=count)
        return [(i.decode(), f[b"r"]) for i, f in rows if b"r" in f]

    async def close(self) -> None:
        await self.cache.client.aclose()
        await self._unused.aclose()
