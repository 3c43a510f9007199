"""Budgets made through `/admin/v1/budgets`, kept in the store (table `aiogw_budgets`)."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from aiogw.admission.budgets import PERIODS, SCOPES, Budget
from aiogw.errors import InvalidRequest
from aiogw.ids import hex_id
from aiogw.store.base import Row, Store

_FIELDS = "id, scope, match_value, limit_usd, period, alert_at"


def _budget(row: Row) -> Budget:
    bid, scope, match, limit, period, alert_at = row
    return Budget(
        id=bid,
        scope=scope,
        match=match,
        limit_usd=float(limit),
        period=period,
        alert_at=tuple(msgspec.json.decode(alert_at)),
        source="admin",
    )


async def load(store: Store) -> list[Budget]:
    return [_budget(r) for r in await store.fetchall(f"SELECT {_FIELDS} FROM aiogw_budgets ORDER BY created_at")]


async def get(store: Store, bid: str) -> Budget | None:
    row = await store.fetchone(f"SELECT {_FIELDS} FROM aiogw_budgets WHERE id = ?", (bid,))
    return _budget(row) if row is not None else None


def validated(body: Any, base: Budget | None = None) -> Budget:
    """A budget from an admin request's JSON body (a PATCH starts from `base`); a bad field
    is a 400 naming it."""
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.", code="invalid_type")
    allowed = {"scope", "match", "limit_usd", "period", "alert_at"}
    if unknown := sorted(set(body) - allowed):
        raise InvalidRequest(f"Unknown field '{unknown[0]}'.", code="unknown_parameter", param=unknown[0])
    scope = body.get("scope", base.scope if base else None)
    if scope not in SCOPES:
        raise InvalidRequest(f"'scope' must be one of {', '.join(SCOPES)}.", code="invalid_value", param="scope")
    match = body.get("match", base.match if base else None)
    if (scope == "global") != (match is None) or (match is not None and not (isinstance(match, str) and match)):
        raise InvalidRequest(
            "'match' is required (a non-empty string) for every scope but global, and not allowed there.",
            code="invalid_value",
            param="match",
        )
    limit = body.get("limit_usd", base.limit_usd if base else None)
    if isinstance(limit, bool) or not isinstance(limit, int | float) or not limit > 0:
        raise InvalidRequest("'limit_usd' must be a number above 0.", code="invalid_value", param="limit_usd")
    period = body.get("period", base.period if base else "month")
    if period not in PERIODS:
        raise InvalidRequest(f"'period' must be one of {', '.join(PERIODS)}.", code="invalid_value", param="period")
    alert_at = body.get("alert_at", list(base.alert_at) if base else [1.0])
    if (
        not isinstance(alert_at, list)
        or len(alert_at) > 10
        or not all(isinstance(a, int | float) and not isinstance(a, bool) and 0 < a <= 1 for a in alert_at)
    ):
        raise InvalidRequest(
            "'alert_at' must be a list of up to 10 numbers in (0, 1].", code="invalid_value", param="alert_at"
        )
    return Budget(
        id=base.id if base else "bud_" + hex_id(8),
        scope=scope,
        match=match,
        limit_usd=float(limit),
        period=period,
        alert_at=tuple(sorted(float(a) for a in alert_at)),
        source="admin",
    )


async def insert(store: Store, b: Budget) -> None:
    now = time.time()
    await store.execute(
        f"INSERT INTO aiogw_budgets ({_FIELDS}, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (b.id, b.scope, b.match, b.limit_usd, b.period, msgspec.json.encode(list(b.alert_at)).decode(), now, now),
    )


async def update(store: Store, b: Budget) -> bool:
    changed = await store.execute(
        "UPDATE aiogw_budgets SET scope = ?, match_value = ?, limit_usd = ?, period = ?, alert_at = ?, updated_at = ?"
        " WHERE id = ?",
        (b.scope, b.match, b.limit_usd, b.period, msgspec.json.encode(list(b.alert_at)).decode(), time.time(), b.id),
    )
    return changed > 0


async def delete(store: Store, bid: str) -> bool:
    return await store.execute("DELETE FROM aiogw_budgets WHERE id = ?", (bid,)) > 0
