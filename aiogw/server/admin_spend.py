"""`GET /admin/v1/spend?group_by=key,model,...,tag:<name>&from=&to=`: the durable ledger's
requests grouped by any of its dimensions or a tag, with counts, tokens, cost and saved
cost per group, and the totals. Master key only."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from aiogw.accounting.ledger_store import DIMENSIONS, spend_report
from aiogw.errors import InvalidRequest
from aiogw.server.admin import require_admin
from aiogw.server.keys import MONEY

GROUPS = tuple(d for d in DIMENSIONS if d != "tags_raw")
_TAG_NAME_MAX = 64


def parse_time(value: str | None, param: str) -> float | None:
    """ISO 8601 (`2026-12-03T10:00:00Z`, or a date), as Unix seconds; UTC unless it says."""
    if value is None or value == "":
        return None
    try:
        d = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidRequest(
            f"'{param}' must be an ISO 8601 time such as 2026-12-03T10:00:00Z.", code="invalid_value", param=param
        ) from None
    return (d if d.tzinfo is not None else d.replace(tzinfo=UTC)).timestamp()


def parse_group_by(value: str | None) -> list[str]:
    out: list[str] = []
    for d in (x.strip() for x in (value or "").split(",") if x.strip()):
        tag = d.removeprefix("tag:")
        ok = d in GROUPS or (d.startswith("tag:") and 0 < len(tag) <= _TAG_NAME_MAX and "," not in tag)
        if not ok:
            raise InvalidRequest(
                f"Unknown group_by dimension {d[:80]!r}: use {', '.join(GROUPS)} or tag:<name>, comma-separated.",
                code="invalid_value",
                param="group_by",
            )
        if d not in out:
            out.append(d)
    return out


async def spend(request: web.Request) -> web.Response:
    require_admin(request)
    money = request.app[MONEY]
    assert money is not None
    q = request.query
    group_by = parse_group_by(q.get("group_by"))
    start, end = parse_time(q.get("from"), "from"), parse_time(q.get("to"), "to")
    await money.writer.flush()  # what is queued is part of the answer
    rows, totals = await spend_report(money.store, group_by, start, end)
    return web.json_response({"object": "spend", "group_by": group_by, "from": q.get("from"), "to": q.get("to"),
                              "data": rows, "totals": totals})  # fmt: skip


def install(app: web.Application) -> None:
    app.router.add_get("/admin/v1/spend", spend)
