"""The ledger writer against a real store: batches, a failed write kept for the next flush,
a full queue that drops (and counts) instead of growing, and spend sums per budget scope."""

from __future__ import annotations

import asyncio

import pytest

from aiogw.accounting import ledger_store
from aiogw.accounting.ledger_store import COLUMNS, LedgerWriter, spend_report, spent_since
from aiogw.store.base import open_store


def row(i: int, *, cost: float = 0.5, tags: str = "team=a_b", kind: str = "request", at: float = 1000.0):
    values = dict.fromkeys(COLUMNS, 0)
    values.update(
        id=f"r{i}", at=at, kind=kind, request_id=f"req{i}", key_id="k1", key_name="one", team=None, user_name=None,
        tags=tags, task="chat", model="fast", provider="sim", upstream_model="m", cost_usd=cost, saved_usd=0.0,
        cache_status="", price_version="config", status="ok",
    )  # fmt: skip
    return tuple(values[c] for c in COLUMNS)


class Flaky:
    """A store whose first write fails (a network blip, a locked file)."""

    def __init__(self, store):
        self.store, self.fail = store, True

    async def executemany(self, sql, rows):
        if self.fail:
            self.fail = False
            raise OSError("store away")
        await self.store.executemany(sql, rows)


async def test_failed_write_is_retried_and_a_full_queue_drops(store_url, monkeypatch):
    store = await open_store(store_url)
    try:
        monkeypatch.setattr(ledger_store, "MAX_QUEUED_BATCHES", 2)
        w = LedgerWriter(Flaky(store), flush_s=60, batch=3)  # type: ignore[arg-type]
        for i in range(8):
            w.add(row(i))
        assert w.queued == 6 and w.dropped == 2  # 2 batches of 3 at most
        with pytest.raises(OSError):
            await w.flush()
        assert w.queued == 6  # nothing lost
        await w.close()
        assert w.queued == 0
        assert await store.fetchone("SELECT COUNT(*) FROM aiogw_ledger") == (6,)
    finally:
        await store.close()


class Committed:
    """A store that tells a writer "written" only once `told` is set: a caller cancelled
    in between has had its batch committed without hearing it."""

    def __init__(self, store):
        self.store, self.committed, self.told = store, asyncio.Event(), asyncio.Event()

    async def executemany(self, sql, rows):
        await self.store.executemany(sql, rows)
        self.committed.set()
        await self.told.wait()


async def test_a_flush_cancelled_after_its_commit_writes_each_row_once(store_url):
    store = await open_store(store_url)
    try:
        slow = Committed(store)
        w = LedgerWriter(slow, flush_s=60, batch=10)  # type: ignore[arg-type]
        for i in range(3):
            w.add(row(i))
        caller = asyncio.create_task(w.flush())  # e.g. a request seeding a budget window
        await slow.committed.wait()
        caller.cancel()  # the client left
        with pytest.raises(asyncio.CancelledError):
            await caller
        slow.told.set()
        await w.close()  # the shutdown flush: nothing left to write again
        assert w.queued == 0
        assert await store.fetchone("SELECT COUNT(*) FROM aiogw_ledger") == (3,)
        w.add(row(0))  # written again by hand: the same row stays one row
        await w.flush()
        assert await store.fetchone("SELECT COUNT(*) FROM aiogw_ledger") == (3,)
    finally:
        await store.close()


async def test_spend_by_scope_and_report_by_tag(store_url):
    store = await open_store(store_url)
    try:
        w = LedgerWriter(store, flush_s=60, batch=100)
        w.add(row(1, tags="team=a_b"))
        w.add(row(2, tags="env=x,team=aXb"))  # "_" is no wildcard for the tag match
        w.add(row(3, tags="team=a_b", at=10.0))  # before the window
        w.add(row(4, tags="team=a_b", kind="attempt"))  # attempts are never summed with requests
        await w.flush()
        assert await spent_since(store, "tag", "team=a_b", 500.0) == 0.5
        assert await spent_since(store, "global", None, 0.0) == 1.5
        assert await spent_since(store, "key", "k1", 500.0) == 1.0
        rows, totals = await spend_report(store, ["key", "tag:team"], None, None)
        got = {(r["key"]["id"], r["key"]["name"], r["tags"]["team"]): r["requests"] for r in rows}
        assert got == {("k1", "one", "a_b"): 2, ("k1", "one", "aXb"): 1}
        assert totals["requests"] == 3 and totals["cost_usd"] == 1.5
    finally:
        await store.close()
