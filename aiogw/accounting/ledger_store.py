"""The durable spend ledger: one row per request and one per attempt (`kind`), written to
the store in batches by a background task, so a request never waits on the disk.

Rows wait in a bounded in-memory queue (`MAX_QUEUED_BATCHES` batches). A failed write keeps
them queued and is retried at the next flush; when the queue is full (the store has been
away that long) new rows are dropped, counted, and logged once per flush: the budgets'
counters still include them, only the history misses them. Shutdown (SIGTERM) flushes what
is queued before the store closes."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import structlog

from aiogw.store.base import Store

log = structlog.get_logger("aiogw.ledger")

MAX_QUEUED_BATCHES = 100

COLUMNS = (  # the table is migrations.MIGRATIONS["ledger"]
    "id",
    "at",  # Unix seconds, when the request ended
    "kind",  # "request" | "attempt"
    "request_id",
    "key_id",
    "key_name",
    "team",
    "user_name",  # ("user" is a reserved word in PostgreSQL)
    "tags",  # canonical "k=v,k2=v2"
    "task",
    "model",  # the public model name asked for
    "provider",
    "upstream_model",
    "input_tokens",  # all prompt tokens, cached and cache-written included
    "cached_tokens",
    "cache_write_tokens",
    "output_tokens",  # reasoning included
    "reasoning_tokens",
    "cost_usd",
    "saved_usd",  # what a cache hit saved
    "cache_status",  # "" (no cache), "hit", "miss", ...
    "price_version",
    "status",  # "ok", the error code, "stream_error", "client_closed"; an attempt's failure class
    "http_status",
    "latency_ms",
)

# A batch written again (its first write committed, but the writer never heard so) is harmless.
_INSERT = (
    f"INSERT INTO aiogw_ledger ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    " ON CONFLICT (id) DO NOTHING"
)


class LedgerWriter:
    def __init__(self, store: Store, flush_s: float, batch: int) -> None:
        self.store, self.flush_s, self.batch = store, flush_s, batch
        self.dropped = 0  # rows refused because the queue was full
        self._rows: list[tuple[Any, ...]] = []
        self._max = self.batch * MAX_QUEUED_BATCHES
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._flushing: asyncio.Task[None] | None = None
        self._logged_drops = 0

    def add(self, row: tuple[Any, ...]) -> None:
        """Queue one row (COLUMNS' order); never waits."""
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
                log.error("ledger.write_failed", error=f"{type(exc).__name__}: {exc}", queued=len(self._rows))

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
                log.error("ledger.queue_full", dropped=self.dropped - self._logged_drops, max_queued=self._max)
                self._logged_drops = self.dropped
            while self._rows:
                chunk = self._rows[: self.batch]
                await self.store.executemany(_INSERT, chunk)
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
            log.error("ledger.unwritten_at_shutdown", rows=len(self._rows), error=f"{type(exc).__name__}: {exc}")


# --- reading ------------------------------------------------------------------------------

_SCOPE_COLUMN = {
    "key": "key_id",
    "team": "team",
    "user": "user_name",
    "model": "model",
    "provider": "provider",
    "task": "task",
}


def like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def spent_since(store: Store, scope: str, match: str | None, start: float) -> float:
    """What requests matching a budget's scope cost since `start` (its window's start)."""
    sql = "SELECT COALESCE(SUM(cost_usd), 0) FROM aiogw_ledger WHERE kind = 'request' AND at >= ?"
    args: list[Any] = [start]
    if scope == "tag":
        sql += " AND (',' || tags || ',') LIKE ? ESCAPE '\\'"
        args.append(f"%,{like_escape(match or '')},%")
    elif scope != "global":
        sql += f" AND {_SCOPE_COLUMN[scope]} = ?"
        args.append(match)
    row = await store.fetchone(sql, args)
    return float(row[0]) if row else 0.0


# group_by dimension -> the columns it groups on
DIMENSIONS: dict[str, tuple[str, ...]] = {
    "key": ("key_id", "key_name"),
    "team": ("team",),
    "user": ("user_name",),
    "model": ("model",),
    "provider": ("provider",),
    "upstream_model": ("upstream_model",),
    "task": ("task",),
    "status": ("status",),
    "tags_raw": ("tags",),  # the whole canonical tag set (/v1/gateway/spend's rows)
}

_SUMS = (
    "COUNT(*), SUM(input_tokens), SUM(cached_tokens), SUM(cache_write_tokens), SUM(output_tokens),"
    " SUM(reasoning_tokens), SUM(cost_usd), SUM(saved_usd)"
)
_SUM_NAMES = (
    "requests",
    "input_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_usd",
    "saved_usd",
)


def tag_value(tags: str, name: str) -> str | None:
    for pair in tags.split(",") if tags else ():
        k, _, v = pair.partition("=")
        if k == name:
            return v
    return None


async def spend_report(
    store: Store, group_by: Sequence[str], start: float | None, end: float | None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Request rows grouped by `group_by` (DIMENSIONS names or `tag:<name>`): each row's
    groups and sums, and the totals."""
    cols: list[str] = []
    for d in group_by:
        if not d.startswith("tag:"):
            cols.extend(c for c in DIMENSIONS[d] if c not in cols)
    tags_wanted = [d.removeprefix("tag:") for d in group_by if d.startswith("tag:")]
    if tags_wanted:
        cols.append("tags")
    where = "WHERE kind = 'request'"
    args: list[Any] = []
    if start is not None:
        where += " AND at >= ?"
        args.append(start)
    if end is not None:
        where += " AND at < ?"
        args.append(end)
    select = ", ".join([*cols, _SUMS])
    sql = f"SELECT {select} FROM aiogw_ledger {where}"
    if cols:
        sql += f" GROUP BY {', '.join(cols)}"
    merged: dict[tuple[Any, ...], list[Any]] = {}
    for row in await store.fetchall(sql, args):
        values = dict(zip(cols, row[: len(cols)], strict=True))
        group: list[Any] = []
        for d in group_by:
            if d.startswith("tag:"):
                group.append(tag_value(values["tags"] or "", d[4:]))
            else:
                group.extend(values[c] for c in DIMENSIONS[d])
        sums = merged.setdefault(tuple(group), [0] * len(_SUM_NAMES))
        for i, v in enumerate(row[len(cols) :]):
            sums[i] += v or 0
    rows = []
    for key, sums in merged.items():
        out: dict[str, Any] = {}
        it = iter(key)
        for d in group_by:
            if d == "key":
                key_id, key_name = next(it), next(it)
                out["key"] = {"id": key_id, "name": key_name} if key_id is not None else None
            elif d.startswith("tag:"):
                out.setdefault("tags", {})[d[4:]] = next(it)
            else:
                out[d] = next(it)
        out.update(_sums(sums))
        rows.append(out)
    rows.sort(key=lambda r: -r["cost_usd"])
    return rows, _sums([sum(r[n] for r in rows) for n in _SUM_NAMES])


def _sums(values: Sequence[Any]) -> dict[str, Any]:
    out = dict(zip(_SUM_NAMES, values, strict=True))
    for n in ("cost_usd", "saved_usd"):
        out[n] = round(float(out[n]), 9)
    for n in _SUM_NAMES:
        if n not in ("cost_usd", "saved_usd"):
            out[n] = int(out[n])
    return out
