"""The durable spend ledger: one row per request, and one per attempt of a request that took
several (`kind`), written to the store in batches by a background task (aiogw.store.batch),
so a request never waits on the disk. Rows dropped when the store has been away too long are still in the budgets'
counters; only the history misses them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiogw.store.base import Store
from aiogw.store.batch import BatchWriter

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


class LedgerWriter(BatchWriter):
    def __init__(self, store: Store, flush_s: float, batch: int) -> None:
        super().__init__(store, _INSERT, flush_s, batch, name="ledger", max_batches=MAX_QUEUED_BATCHES)


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
