"""Rows written to the store in batches by a background task, so a request never waits on
the disk (the spend ledger, the feedback's request memory).

Rows wait in a bounded in-memory queue (`max_batches` batches). A failed write keeps them
queued and is retried at the next flush; when the queue is full (the store has been away
that long) new rows are dropped, counted, and logged once per flush. Shutdown (SIGTERM)
flushes what is queued before the store closes. The insert should be idempotent (`ON
CONFLICT DO NOTHING`): a batch whose commit the writer never heard of is written again."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from aiogw.store.base import Store


class BatchWriter:
    def __init__(self, store: Store, insert: str, flush_s: float, batch: int, *, name: str, max_batches: int) -> None:
        self.store, self.flush_s, self.batch = store, flush_s, batch
        self._insert, self._name = insert, name
        self._log = structlog.get_logger(f"aiogw.{name}")
        self.dropped = 0  # rows refused because the queue was full
        self._rows: list[tuple[Any, ...]] = []
        self._max = self.batch * max_batches
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._flushing: asyncio.Task[None] | None = None
        self._logged_drops = 0

    def add(self, row: tuple[Any, ...]) -> None:
        """Queue one row (in the insert's column order); never waits."""
        if len(self._rows) >= self._max:
            self.dropped += 1
            return
        self._rows.append(row)
        if len(self._rows) >= self.batch:
            self._wake.set()

    @property
    def queued(self) -> int:
        return len(self._rows)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.flush_s)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.flush()
            except Exception as exc:  # the store is away: the rows stay queued for the next try
                self._log.error(
                    f"{self._name}.write_failed", error=f"{type(exc).__name__}: {exc}", queued=len(self._rows)
                )

    async def flush(self) -> None:
        """Write everything queued now, in batches of `batch` rows (one transaction each).
        The writing runs in its own task: a caller cancelled meanwhile (a client gone, the
        loop stopped at shutdown) leaves it to finish, so a batch that committed is never
        left queued to be written twice."""
        for _ in range(2):  # a write already under way may have started before the last rows came
            task = self._flushing
            if task is None or task.done():
                task = self._flushing = asyncio.get_running_loop().create_task(self._flush())
            await asyncio.shield(task)
            if not self._rows:
                return

    async def _flush(self) -> None:
        async with self._lock:
            if self.dropped != self._logged_drops:
                self._log.error(
                    f"{self._name}.queue_full", dropped=self.dropped - self._logged_drops, max_queued=self._max
                )
                self._logged_drops = self.dropped
            while self._rows:
                chunk = self._rows[: self.batch]
                await self.store.executemany(self._insert, chunk)
                del self._rows[: len(chunk)]

    async def close(self) -> None:
        """Stop the loop and write what is left (shutdown)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        try:
            await self.flush()
        except Exception as exc:  # the store is away at shutdown: say what is lost, exit cleanly
            self._log.error(
                f"{self._name}.unwritten_at_shutdown", rows=len(self._rows), error=f"{type(exc).__name__}: {exc}"
            )
