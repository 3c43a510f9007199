"""Budgets through HTTP with the openai SDK: the 402, the bound under 50 concurrent requests
(one gateway, and two sharing Redis), holds released on every kind of end, the admin
budgets API, the spend API's totals against what clients saw, and the x-aiogw-task header."""

from __future__ import annotations

import asyncio

import aiohttp
import openai
import pytest
from conftest import gateway_config, until
from openai import AsyncOpenAI

from aiogw.config_load import from_builtins
from aiogw.server.keys import MONEY

MASTER = "sk-master-test"
ADMIN = {"authorization": f"Bearer {MASTER}"}
MSG = [{"role": "user", "content": "hi"}]
# $1000 per million tokens both ways: one token costs $0.001, so costs are easy to read.
PRICE = {"input": 1000.0, "output": 1000.0}


def money_config(sim, store_url, *, budgets=(), redis_url=None, **overrides):
    data = {
        "server": {"host": "127.0.0.1", "port": 0, "shutdown_grace": 5},
        "providers": {
            "sim": {"type": "openai", "base_url": sim.base_url(), "api_key": "sk-sim"},
            "dead": {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-sim"},
        },
        "models": [
            {"name": "fast", "targets": [{"provider": "sim", "model": "sim-gpt-fast", "price": PRICE}]},
            {"name": "broken", "targets": [{"provider": "dead", "model": "sim-gpt-fast", "price": PRICE}]},
            {
                "name": "failover",
                "targets": [
                    {"provider": "dead", "model": "sim-gpt-fast", "price": PRICE},
                    {"provider": "sim", "model": "sim-gpt-fast", "price": PRICE},
                ],
            },
        ],
        "auth": {"master_key": MASTER},
        "store": {"url": store_url, "ledger_flush_ms": 50},
        "budgets": list(budgets),
        **overrides,
    }
    if redis_url:
        data["state"] = {"redis_url": redis_url, "key_prefix": "bt", "timeout_ms": 2000}
    return from_builtins(data, env={})


async def admin(url, method, path, **kw):
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, url.removesuffix("/v1") + path, headers=ADMIN, **kw) as r,
    ):
        return r.status, await r.json()


def sdk(url):
    return AsyncOpenAI(base_url=url, api_key="client", max_retries=0, timeout=20)


async def ask(client, model="fast", **kw):
    """One completion; its cost as the client saw it (x-aiogw-cost-usd), or the 402 error."""
    try:
        raw = await client.chat.completions.with_raw_response.create(model=model, messages=MSG, **kw)
    except openai.APIStatusError as exc:
        return exc
    return float(raw.headers["x-aiogw-cost-usd"])


async def budget_state(url, bid):
    status, body = await admin(url, "GET", f"/admin/v1/budgets/{bid}")
    assert status == 200, body
    return body


async def test_exhausted_budget_is_a_402_naming_the_budget_and_its_reset(sim, make_gateway, store_url):
    url, _ = await make_gateway(
        money_config(sim, store_url, budgets=[{"scope": "model", "match": "fast", "limit_usd": 0.02, "period": "1d"}])
    )
    async with sdk(url) as c:
        spent = await ask(c, max_tokens=5)  # 1 prompt + 5 output tokens: $0.006
        assert spent == pytest.approx(0.006)
        results = [await ask(c, max_tokens=5) for _ in range(4)]
    refused = [r for r in results if isinstance(r, openai.APIStatusError)]
    assert len(refused) == 2 and results[:2] == [pytest.approx(0.006)] * 2
    err = refused[0]
    assert err.status_code == 402
    body = err.response.json()["error"]
    assert body["type"] == "insufficient_quota" and body["code"] == "budget_exceeded"
    assert "model budget 'fast' (1d)" in body["message"] and "resets at" in body["message"]
    assert "$" not in body["message"] and "0.02" not in body["message"]  # no dollar figures
    retry_after = int(err.response.headers["retry-after"])
    assert 1 <= retry_after <= 86400


async def test_the_bound_holds_under_50_concurrent_requests(sim, make_gateway, store_url):
    limit = 0.1
    url, _ = await make_gateway(
        money_config(sim, store_url, budgets=[{"scope": "global", "limit_usd": limit, "period": "month"}])
    )
    async with sdk(url) as c:
        results = await asyncio.gather(*(ask(c, max_tokens=5) for _ in range(50)))
    await _check_bound(url, results, limit)


async def test_two_gateways_sharing_redis_hold_one_bound(sim, make_gateway, store_url, redis_server):
    limit = 0.1
    budgets = [{"scope": "global", "limit_usd": limit, "period": "month"}]
    url_a, _ = await make_gateway(money_config(sim, store_url, budgets=budgets, redis_url=redis_server.url))
    url_b, _ = await make_gateway(money_config(sim, store_url, budgets=budgets, redis_url=redis_server.url))
    async with sdk(url_a) as a, sdk(url_b) as b:
        results = await asyncio.gather(*(ask(a if i % 2 else b, max_tokens=5) for i in range(50)))
    await _check_bound(url_a, results, limit)
    # Both replicas read the same fleet-wide counters.
    (bid,) = [x["id"] for x in (await admin(url_a, "GET", "/admin/v1/budgets"))[1]["data"]]
    assert (await budget_state(url_b, bid))["spent_usd"] == (await budget_state(url_a, bid))["spent_usd"]


async def _check_bound(url, results, limit):
    paid = [r for r in results if isinstance(r, float)]
    refused = [r for r in results if not isinstance(r, float)]
    assert refused and all(r.status_code == 402 for r in refused)
    assert paid
    # Each request held its worst case (1 prompt token + 5 output tokens = its real cost),
    # so spend cannot pass the limit: overspend <= what was reserved in flight (here 0).
    assert sum(paid) <= limit + 1e-9
    (b,) = (await admin(url, "GET", "/admin/v1/budgets"))[1]["data"]
    await until(lambda: _settled(url, b["id"]), times=200)
    state = await budget_state(url, b["id"])
    assert state["reserved_usd"] == 0  # no hold left behind
    assert state["spent_usd"] == pytest.approx(sum(paid))
    # The ledger's totals are what the clients were told, request by request (another
    # replica's rows reach the store at its next flush).
    await until(lambda: _ledger_holds(url, len(results)), times=200)
    status, spend = await admin(url, "GET", "/admin/v1/spend")
    assert status == 200
    assert spend["totals"]["cost_usd"] == pytest.approx(sum(paid), abs=1e-9)


async def _ledger_holds(url, n):
    return (await admin(url, "GET", "/admin/v1/spend"))[1]["totals"]["requests"] == n


async def _settled(url, bid):
    return (await budget_state(url, bid))["reserved_usd"] == 0


async def test_failed_and_abandoned_requests_release_their_hold(sim, make_gateway, store_url):
    budgets = [{"scope": "global", "limit_usd": 0.05, "period": "1d"}]
    url, app = await make_gateway(money_config(sim, store_url, budgets=budgets))
    async with sdk(url) as c:
        # An upstream failure: nothing billed, the hold released.
        failed = await ask(c, model="broken", max_tokens=5)
        assert isinstance(failed, openai.APIStatusError) and failed.status_code in (502, 503)
        # A client that leaves mid-stream: the hold is released when the handler ends.
        sim.set_profile("default", tokens_per_s=20.0, completion_tokens=40)
        stream = await c.chat.completions.create(model="fast", messages=MSG, max_tokens=40, stream=True)
        async for _ in stream:
            break
        await stream.close()
        # A client that gives up before the answer: the server cancels the handler.
        sim.set_profile("default", ttft_ms=10_000.0, tokens_per_s=0.0)
        with pytest.raises(openai.APITimeoutError):
            await c.with_options(timeout=0.3).chat.completions.create(model="fast", messages=MSG, max_tokens=5)
    (b,) = (await admin(url, "GET", "/admin/v1/budgets"))[1]["data"]
    await until(lambda: _ledger_holds(url, 3), times=250)
    state = await budget_state(url, b["id"])
    assert state["reserved_usd"] == 0
    # Every request is in the ledger with its status.
    _status, spend = await admin(url, "GET", "/admin/v1/spend?group_by=model,status")
    got = {(r["model"], r["status"]): r["requests"] for r in spend["data"]}
    assert got == {("broken", "all_attempts_failed"): 1, ("fast", "client_closed"): 2}, got
    assert app[MONEY] is not None


async def test_the_ledger_records_every_attempt_of_a_request_that_failed_over(sim, make_gateway, store_url):
    url, app = await make_gateway(money_config(sim, store_url))
    async with sdk(url) as c:
        once = await c.chat.completions.with_raw_response.create(model="fast", messages=MSG, max_tokens=5)
        twice = await c.chat.completions.with_raw_response.create(model="failover", messages=MSG, max_tokens=5)
    assert once.headers["x-aiogw-attempts"] == "1" and twice.headers["x-aiogw-attempts"] == "2"
    money = app[MONEY]
    assert money is not None
    await money.writer.flush()
    sql = "SELECT kind, provider, status, cost_usd FROM aiogw_ledger WHERE request_id = ? ORDER BY id"
    # One attempt: the request row is its record (same target, cost and status).
    rows = [tuple(r) for r in await money.store.fetchall(sql, [once.headers["x-request-id"]])]
    assert rows == [("request", "sim", "ok", float(once.headers["x-aiogw-cost-usd"]))], rows
    # A failover: the request row, then each attempt in order; the answering one carries the cost.
    rows = [tuple(r) for r in await money.store.fetchall(sql, [twice.headers["x-request-id"]])]
    cost = float(twice.headers["x-aiogw-cost-usd"])
    assert [r[:2] for r in rows] == [("request", "sim"), ("attempt", "dead"), ("attempt", "sim")], rows
    assert rows[1][2] != "ok" and rows[1][3] == 0 and rows[2][2:] == ("ok", cost) and rows[0][3] == cost, rows


async def test_admin_budgets_crud_and_spend_grouping(sim, make_gateway, store_url):
    url, _ = await make_gateway(money_config(sim, store_url))
    status, b = await admin(
        url,
        "POST",
        "/admin/v1/budgets",
        json={"scope": "tag", "match": "team=search", "limit_usd": 0.01, "period": "7d"},
    )
    assert status == 201 and b["id"].startswith("bud_") and b["spent_usd"] == 0 and b["remaining_usd"] == 0.01
    status, bad = await admin(url, "POST", "/admin/v1/budgets", json={"scope": "tag", "limit_usd": 1})
    assert status == 400 and bad["error"]["param"] == "match"
    async with sdk(url) as c:
        tagged = {"x-aiogw-tags": "team=search", "x-aiogw-task": "summarize"}
        first = await ask(c, max_tokens=5, extra_headers=tagged)
        assert first == pytest.approx(0.006)
        refused = await ask(c, max_tokens=5, extra_headers=tagged)
        assert refused.status_code == 402 and "tag budget 'team=search' (7d)" in refused.message
        other = await ask(c, max_tokens=5, extra_headers={"x-aiogw-tags": "team=ads"})  # not this budget's
        assert other == pytest.approx(0.006)
        with pytest.raises(openai.BadRequestError, match="x-aiogw-task"):
            await c.chat.completions.create(model="fast", messages=MSG, extra_headers={"x-aiogw-task": "a b"})
    status, raised = await admin(url, "PATCH", f"/admin/v1/budgets/{b['id']}", json={"limit_usd": 1.0})
    assert status == 200 and raised["limit_usd"] == 1.0 and raised["spent_usd"] == pytest.approx(0.006)
    status, spend = await admin(url, "GET", "/admin/v1/spend?group_by=task,tag:team")
    rows = {(r["task"], r["tags"]["team"]): (r["requests"], r["cost_usd"]) for r in spend["data"]}
    assert rows[("summarize", "search")] == (2, pytest.approx(0.006))
    assert rows[("chat", "ads")] == (1, pytest.approx(0.006))
    status, _ = await admin(url, "DELETE", f"/admin/v1/budgets/{b['id']}")
    assert status == 200
    status, gone = await admin(url, "GET", f"/admin/v1/budgets/{b['id']}")
    assert status == 404 and gone["error"]["code"] == "budget_not_found"
    # The admin API needs the master key.
    async with aiohttp.ClientSession() as s, s.get(url.removesuffix("/v1") + "/admin/v1/spend") as r:
        assert r.status == 401


async def test_gateway_spend_reads_the_durable_ledger(sim, make_gateway, store_url):
    url, _ = await make_gateway(money_config(sim, store_url))
    async with sdk(url) as c:
        seen = [await ask(c, max_tokens=3, extra_headers={"x-aiogw-task": "qa"}) for _ in range(2)]
        stream = await c.chat.completions.create(
            model="fast", messages=MSG, max_tokens=3, stream=True, stream_options={"include_usage": True},
            extra_headers={"x-aiogw-task": "qa"},
        )  # fmt: skip
        seen += [chunk.usage.model_extra["cost_usd"] async for chunk in stream if chunk.usage is not None]
        assert len(seen) == 3
    # A stream's row is queued once the gateway's handler returns, just after the client saw its end.
    await until(lambda: _recorded(url), times=200)
    async with aiohttp.ClientSession() as s, s.get(url + "/gateway/spend", headers=ADMIN) as r:
        body = await r.json()
    (row,) = body["rows"]
    assert row["task"] == "qa" and row["requests"] == 3 and row["cost_usd"] == pytest.approx(sum(seen))


async def _recorded(url):
    async with aiohttp.ClientSession() as s, s.get(url + "/gateway/spend", headers=ADMIN) as r:
        return sum(x["requests"] for x in (await r.json())["rows"]) == 3


async def test_unconfigured_gateway_opens_no_store(sim, make_gateway, tmp_path, monkeypatch):
    monkeypatch.setenv("AIOGW_DATA_DIR", str(tmp_path))
    url, app = await make_gateway(gateway_config(sim))
    async with sdk(url) as c:
        await c.chat.completions.create(model="fast", messages=MSG, max_tokens=2, extra_headers={"x-aiogw-task": "qa"})
        await c.embeddings.create(model="fast", input="hi")
    assert app[MONEY] is None and list(tmp_path.iterdir()) == []
    # The in-memory totals name the task (the operation when the header is absent).
    async with aiohttp.ClientSession() as s, s.get(url + "/gateway/spend") as r:
        assert sorted(row["task"] for row in (await r.json())["rows"]) == ["embeddings", "qa"]
    async with aiohttp.ClientSession() as s, s.get(url.removesuffix("/v1") + "/admin/v1/spend", headers=ADMIN) as r:
        assert r.status == 404
