"""`/admin/v1/budgets`: budgets made at run time (the store's `aiogw_budgets`), listed with
the config's own (read-only here) and each one's current window: spent, reserved,
remaining, reset. Master key only (`require_admin`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from aiogw.admission import budget_store
from aiogw.admission.budgets import Budget
from aiogw.errors import Forbidden, InvalidRequest, NotFound
from aiogw.ingress.body import read_body
from aiogw.server.admin import require_admin
from aiogw.server.keys import MONEY

if TYPE_CHECKING:
    from aiogw.server.money import Money

PATH = "/admin/v1/budgets"


def _money(request: web.Request) -> Money:
    require_admin(request)
    money = request.app[MONEY]
    assert money is not None  # the routes exist only with it
    return money


async def _body(request: web.Request) -> Any:
    try:
        return orjson.loads(await read_body(request))  # within server.max_body_bytes, like every body
    except orjson.JSONDecodeError:
        raise InvalidRequest("The body must be a JSON object.", code="invalid_json") from None


async def _shown(money: Money, budgets: list[Budget]) -> list[dict[str, Any]]:
    status = await money.budgets.status(budgets)
    return [
        {
            "id": b.id,
            "scope": b.scope,
            "match": b.match,
            "limit_usd": b.limit_usd,
            "period": b.period,
            "alert_at": list(b.alert_at),
            "source": b.source,
            **s,
        }
        for b, s in zip(budgets, status, strict=True)
    ]


async def list_budgets(request: web.Request) -> web.Response:
    money = _money(request)
    return web.json_response({"object": "list", "data": await _shown(money, money.all_budgets())})


async def create_budget(request: web.Request) -> web.Response:
    money = _money(request)
    b = budget_store.validated(await _body(request))
    await budget_store.insert(money.store, b)
    await money.reload_budgets()
    return web.json_response((await _shown(money, [b]))[0], status=201)


async def _existing(money: Money, bid: str) -> Budget:
    found = money.budgets.index.by_id.get(bid)
    if found is None or found.source != "admin":
        found = await budget_store.get(money.store, bid)
    if found is None:
        cfg = next((b for b in money.config_budgets if b.id == bid), None)
        if cfg is not None:
            return cfg
        raise NotFound(f"No budget with id '{bid}'.", code="budget_not_found")
    return found


async def get_budget(request: web.Request) -> web.Response:
    money = _money(request)
    b = await _existing(money, request.match_info["id"])
    return web.json_response((await _shown(money, [b]))[0])


async def update_budget(request: web.Request) -> web.Response:
    money = _money(request)
    base = await _existing(money, request.match_info["id"])
    if base.source != "admin":
        raise Forbidden(f"Budget '{base.id}' comes from the config file: change it there.", code="budget_read_only")
    b = budget_store.validated(await _body(request), base)
    await budget_store.update(money.store, b)
    await money.reload_budgets()
    return web.json_response((await _shown(money, [b]))[0])


async def delete_budget(request: web.Request) -> web.Response:
    money = _money(request)
    base = await _existing(money, request.match_info["id"])
    if base.source != "admin":
        raise Forbidden(f"Budget '{base.id}' comes from the config file: change it there.", code="budget_read_only")
    await budget_store.delete(money.store, base.id)
    await money.reload_budgets()
    return web.json_response({"id": base.id, "object": "budget", "deleted": True})


def install(app: web.Application) -> None:
    app.router.add_get(PATH, list_budgets)
    app.router.add_post(PATH, create_budget)
    app.router.add_get(PATH + "/{id}", get_budget)
    app.router.add_patch(PATH + "/{id}", update_budget)
    app.router.add_delete(PATH + "/{id}", delete_budget)
