"""The request memory: request id -> who asked (the caller's scope), the model group, the
task, the prompt bucket and the target that answered, so that feedback arriving later (up
to `feedback.retention_s`) can be credited to the right target.

Written once per answered request, never waiting: the row joins a batch for the store
(aiogw.store.batch) and a bounded in-process table of recent requests (feedback often comes
right after the answer, before the batch is written). With shared state, the same row is
also put in Redis for `feedback.shared_ttl_s` (the `shared` mirror) so that another replica
finds it before this one's batch reaches the store."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import orjson

from aiogw.config import FeedbackConfig
from aiogw.store.base import Store
from aiogw.store.batch import BatchWriter

RECENT_MAX = 10_000  # memories held in process besides the store (the newest)
# The replica that answered mirrors the memory to Redis a moment after the answer went out:
# feedback sent at once to another replica looks again for up to this long before a 404.
MIRROR_LAG_S = (0.02, 0.05, 0.1, 0.2, 0.4, 0.8)
MAX_QUEUED_BATCHES = 100
ANONYMOUS_CALLER = "anonymous"
MASTER_CALLER = "master"

_COLUMNS = ("request_id", "caller", "grp", "task", "bucket", "target", "created_at")
# The first memory of an id wins: a client reusing another caller's x-request-id cannot take over its memory.
_INSERT = (
    f"INSERT INTO aiogw_request_memory ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
    " ON CONFLICT (request_id) DO NOTHING"
)


def caller_scope(key_id: str | None, admin: bool) -> str:
    """Whose request it is: `key:<id>`, `master`, or `anonymous`."""
    if key_id is not None:
        return f"key:{key_id}"
    return MASTER_CALLER if admin else ANONYMOUS_CALLER


@dataclass(frozen=True, slots=True)
class Remembered:
    request_id: str
    caller: str
    group: str
    task: str
    bucket: str
    target: str
    created_at: float

    def row(self) -> tuple[str | float, ...]:
        return (self.request_id, self.caller, self.group, self.task, self.bucket, self.target, self.created_at)

    def packed(self) -> bytes:
        return orjson.dumps(self.row())

    @classmethod
    def unpacked(cls, data: bytes) -> Remembered | None:
        try:
            r = orjson.loads(data)
            return cls(str(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), str(r[5]), float(r[6]))
        except (orjson.JSONDecodeError, IndexError, TypeError, ValueError):
            return None  # another version's record: the store still has the row


class SharedMemory(Protocol):
    """The Redis mirror (aiogw.state.feedback_bus)."""

    def put(self, request_id: str, packed: bytes) -> None: ...

    async def get(self, request_id: str) -> bytes | None: ...


class RequestMemory:
    def __init__(
        self,
        store: Store,
        cfg: FeedbackConfig,
        *,
        shared: SharedMemory | None = None,
        clock: Callable[[], float] = time.time,
        mirror_lag_s: tuple[float, ...] = MIRROR_LAG_S,
    ) -> None:
        self.store = store
        self.retention_s = cfg.retention_s
        self.shared = shared
        self.clock = clock  # tests move "now" past the retention instead of waiting
        self.mirror_lag_s = mirror_lag_s
        self.writer = BatchWriter(
            store, _INSERT, cfg.flush_ms / 1000, cfg.batch, name="feedback.memory", max_batches=MAX_QUEUED_BATCHES
        )
        self._recent: OrderedDict[str, Remembered] = OrderedDict()

    def remember(self, r: Remembered) -> None:
        """Keep one answered request; never waits."""
        if r.request_id in self._recent:
            return  # the first answer under this id keeps it (see _INSERT)
        self._recent[r.request_id] = r
        if len(self._recent) > RECENT_MAX:
            self._recent.popitem(last=False)
        self.writer.add(r.row())
        if self.shared is not None:
            self.shared.put(r.request_id, r.packed())

    async def find(self, request_id: str) -> Remembered | None:
        """The request's memory; None when unknown or older than the retention."""
        r = self._recent.get(request_id)
        if r is None:
            r = await self._mirrored(request_id) or await self._stored(request_id)
        if r is None and self.shared is not None:
            for lag in self.mirror_lag_s:
                await asyncio.sleep(lag)
                if (r := await self._mirrored(request_id)) is not None:
                    break
        if r is None or self.clock() - r.created_at > self.retention_s:
            return None
        return r

    async def _mirrored(self, request_id: str) -> Remembered | None:
        if self.shared is None:
            return None
        data = await self.shared.get(request_id)
        return Remembered.unpacked(data) if data is not None else None

    async def _stored(self, request_id: str) -> Remembered | None:
        row = await self.store.fetchone(
            f"SELECT {', '.join(_COLUMNS)} FROM aiogw_request_memory WHERE request_id = ?", (request_id,)
        )
        if row is None:
            return None
        rid, caller, group, task, bucket, target, created_at = row
        return Remembered(str(rid), str(caller), str(group), str(task), str(bucket), str(target), float(created_at))

    async def purge(self) -> int:
        """Forget what is past the retention; the rows deleted."""
        cutoff = self.clock() - self.retention_s
        while self._recent and next(iter(self._recent.values())).created_at < cutoff:
            self._recent.popitem(last=False)
        return await self.store.execute("DELETE FROM aiogw_request_memory WHERE created_at < ?", (cutoff,))

    def start(self) -> None:
        self.writer.start()

    async def close(self) -> None:
        await self.writer.close()
