"""The request memory seen from a replica that did not answer: feedback sent the moment an
answer arrived may reach it before the answering replica's mirror write has landed in
Redis; it must still be found (the CI flake that taught us: a 404 for a fresh request)."""

from __future__ import annotations

from aiogw.config import FeedbackConfig
from aiogw.quality.memory import Remembered, RequestMemory
from aiogw.store.base import open_store


class LateMirror:
    """The shared mirror as another replica sees it: the answering replica's write lands
    after this replica's `misses` first lookups (what Redis does when the pipeline of the
    replica that answered runs a moment after the client already has the answer)."""

    def __init__(self, misses: int) -> None:
        self.misses = misses
        self.data: dict[str, bytes] = {}
        self.landing: dict[str, bytes] = {}
        self.lookups = 0

    def put(self, request_id: str, packed: bytes) -> None:
        self.landing[request_id] = packed

    async def get(self, request_id: str) -> bytes | None:
        self.lookups += 1
        if self.lookups > self.misses:
            self.data.update(self.landing)
        return self.data.get(request_id)


async def test_feedback_to_another_replica_finds_a_memory_mirrored_a_moment_late(tmp_path):
    store = await open_store(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        mirror = LateMirror(misses=2)
        answering = RequestMemory(store, FeedbackConfig(flush_ms=60_000), shared=mirror)
        # The looks again without their pauses: the mirror below lands by count, not by time.
        other = RequestMemory(store, FeedbackConfig(flush_ms=60_000), shared=mirror, mirror_lag_s=(0.0,) * 6)
        memory = Remembered("req_1", "anonymous", "auto", "chat", "short", "cheap/m", answering.clock())
        answering.remember(memory)
        assert await other.find("req_1") == memory
        assert mirror.lookups == 3
        # An id nobody answered is still a miss (after the bounded wait).
        assert await other.find("req_never") is None
    finally:
        await store.close()
