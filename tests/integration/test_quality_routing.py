"""strategy: quality end to end: a gateway in front of the simulator with a cheap and an
expensive target and a quality.json prior; the official openai SDK as the client, the admin
API over HTTP."""

from __future__ import annotations

import json

import aiohttp
import openai
import pytest
from conftest import gateway_config, until
from openai import AsyncOpenAI
from scrape import scrape, value

from aiogw.server.keys import QUALITY

MASTER = "sk-master-quality-0123456789"
CHEAP, SMART = "cheap/sim-gpt-mini", "smart/sim-llama"
MSG = [{"role": "user", "content": "hello there"}]

# The cheap target is good at task A and mediocre at task B; the expensive one good at all.
PRIOR = {
    "version": 1,
    "metric": "correct",
    "created": 1764770000,
    "models": {
        CHEAP: {"A": {"n": 40, "mean": 0.98, "cost_per_item_usd": 0.0001}, "B": {"n": 40, "mean": 0.6}},
        SMART: {"*": {"n": 40, "mean": 0.97}},
    },
}


def quality_config(sim, tmp_path, prior=PRIOR, extra_models=(), sections=None, **quality):
    """`auto` (cheap and smart targets, the prior in tmp_path/quality.json); `sections`:
    top-level config sections to add (state, feedback, ...)."""
    path = tmp_path / "quality.json"
    path.write_text(json.dumps(prior))
    return gateway_config(
        sim,
        providers={
            "cheap": {"type": "openai", "base_url": sim.base_url(), "api_key": "sk-sim"},
            "smart": {"type": "openai-compatible", "base_url": sim.base_url("compat")},
        },
        models=[
            {
                "name": "auto",
                "strategy": "quality",
                "quality": {"floor": 0.9, "prior": str(path), "explore": 0, **quality},
                "targets": [
                    {"provider": "smart", "model": "sim-llama", "price": {"input": 5.0, "output": 15.0}},
                    {"provider": "cheap", "model": "sim-gpt-mini", "price": {"input": 0.1, "output": 0.4}},
                ],
            },
            *extra_models,
        ],
        auth={"master_key": MASTER},
        store={"url": f"sqlite:///{tmp_path}/aiogw.db"},
        **(sections or {}),
    )


@pytest.fixture
async def quality_gw(sim, tmp_path, make_gateway):
    url, app = await make_gateway(quality_config(sim, tmp_path))
    client = AsyncOpenAI(base_url=url, api_key="client-key", max_retries=0, timeout=20)
    try:
        yield url, app, client
    finally:
        await client.close()


async def ask(client, task, model="auto", **headers):
    r = await client.chat.completions.with_raw_response.create(
        model=model, messages=MSG, extra_headers={"x-aiogw-task": task, **headers}
    )
    r.parse()
    return r.headers


def target(headers):
    return f"{headers['x-aiogw-provider']}/{headers['x-aiogw-model']}"


async def admin(url, method, path, body=None, key=MASTER):
    headers = {"authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession() as s:
        async with s.request(method, url.removesuffix("/v1") + path, data=body, headers=headers) as r:
            return r.status, await r.json()


async def test_each_task_goes_to_the_cheapest_target_meeting_the_floor(quality_gw):
    _, _, client = quality_gw
    a = await ask(client, "A")
    assert target(a) == CHEAP
    assert a["x-aiogw-route-reason"].startswith("cheapest meeting floor 0.90 (est 0.9")
    b = await ask(client, "B")
    assert target(b) == SMART
    assert b["x-aiogw-route-reason"].startswith("cheapest meeting floor 0.90")
    # A streamed answer says why too.
    r = await client.chat.completions.with_raw_response.create(
        model="auto", messages=MSG, stream=True, extra_headers={"x-aiogw-task": "A"}
    )
    async for _ in r.parse():
        pass
    assert target(r.headers) == CHEAP and r.headers["x-aiogw-route-reason"].startswith("cheapest meeting floor")


async def test_the_floor_header_overrides_the_groups_floor(quality_gw):
    _, _, client = quality_gw
    b = await ask(client, "B", **{"x-aiogw-quality-floor": "0.5"})
    assert target(b) == CHEAP
    assert b["x-aiogw-route-reason"].startswith("cheapest meeting floor 0.50")
    # Nobody meets 0.99 with confidence: the likeliest to, and the reason says so.
    a = await ask(client, "A", **{"x-aiogw-quality-floor": "0.99"})
    assert a["x-aiogw-route-reason"].startswith("no target meets floor 0.99; likeliest to")
    for bad in ("1.5", "-0.1", "high"):
        with pytest.raises(openai.BadRequestError) as e:
            await ask(client, "A", **{"x-aiogw-quality-floor": bad})
        assert e.value.status_code == 400
        assert e.value.body["code"] == "invalid_header" and e.value.body["param"] == "x-aiogw-quality-floor"


async def test_a_latency_budget_excludes_a_slow_target(sim, quality_gw):
    _, _, client = quality_gw
    sim.set_profile("default", ttft_ms=120)  # the cheap target's account answers slowly
    for _ in range(3):  # measured in the health window (shared by direct addressing)
        await client.chat.completions.create(model=CHEAP, messages=MSG)
    h = await ask(client, "A", **{"x-aiogw-latency-budget-ms": "60"})
    assert target(h) == SMART
    assert h["x-aiogw-route-reason"].endswith(f"latency budget excluded {CHEAP}")
    assert target(await ask(client, "A", **{"x-aiogw-latency-budget-ms": "5000"})) == CHEAP
    with pytest.raises(openai.BadRequestError) as e:
        await ask(client, "A", **{"x-aiogw-latency-budget-ms": "0"})
    assert e.value.body["param"] == "x-aiogw-latency-budget-ms"


async def test_observations_move_the_choice_for_their_task_only(quality_gw):
    _, app, client = quality_gw
    assert target(await ask(client, "A")) == CHEAP
    book = app[QUALITY]
    for _ in range(30):  # feedback: the cheap target got worse at A
        book.observe("auto", "A", "short", CHEAP, "correct", False)
    assert target(await ask(client, "A")) == SMART
    assert target(await ask(client, "B", **{"x-aiogw-quality-floor": "0.5"})) == CHEAP  # B untouched


async def test_admin_routing_shows_estimates_and_loads_and_resets(quality_gw):
    url, app, client = quality_gw
    await ask(client, "A")
    await ask(client, "B")
    assert (await admin(url, "GET", "/admin/v1/routing/auto", key=None))[0] == 401
    assert (await admin(url, "GET", "/admin/v1/routing/auto", key="sk-wrong"))[0] == 401
    assert (await admin(url, "POST", "/admin/v1/routing/auto/reset", key=None))[0] == 401
    assert (await admin(url, "POST", "/admin/v1/routing/auto/quality", b"{}", key="sk-wrong"))[0] == 401
    status, listing = await admin(url, "GET", "/admin/v1/routing")
    assert status == 200 and listing["data"] == [{"model": "auto", "strategy": "quality"}]
    status, body = await admin(url, "GET", "/admin/v1/routing/auto")
    assert status == 200 and body["floor"] == 0.9 and body["metric"] == "correct"
    tasks = {t["task"]: {r["target"]: r for r in t["targets"]} for t in body["tasks"]}
    assert set(tasks) == {"A", "B"}
    cheap_a = tasks["A"][CHEAP]
    assert cheap_a["n"] == 20 and cheap_a["lo"] < cheap_a["mean"] < cheap_a["hi"] and cheap_a["meets_floor"]
    assert cheap_a["picks"] == 1 and cheap_a["share"] == 1.0
    assert cheap_a["cost_per_request_usd"] == 0.0001 and cheap_a["cost_source"] == "eval"
    assert tasks["B"][SMART]["share"] == 1.0 and tasks["B"][SMART]["cost_source"] == "price"
    assert (await admin(url, "GET", "/admin/v1/routing/nope"))[0] == 404

    # A new prior: the cheap target is now bad at A too.
    worse = {**PRIOR, "models": {**PRIOR["models"], CHEAP: {"A": {"n": 40, "mean": 0.3}}}}
    status, loaded = await admin(url, "POST", "/admin/v1/routing/auto/quality", json.dumps(worse).encode())
    assert status == 200 and set(loaded["matched"]) == {CHEAP, SMART}
    assert target(await ask(client, "A")) == SMART

    app[QUALITY].observe("auto", "A", "short", SMART, "correct", False)
    status, body = await admin(url, "POST", "/admin/v1/routing/auto/reset")
    assert status == 200
    body = (await admin(url, "GET", "/admin/v1/routing/auto"))[1]
    rows = {t["task"]: {r["target"]: r for r in t["targets"]} for t in body["tasks"]}
    assert rows["A"][SMART]["observed"] == 0 and rows["A"][SMART]["picks"] == 0  # learning forgotten, prior kept
    assert rows["A"][CHEAP]["mean"] < 0.5


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{not json", "cannot parse JSON"),
        (json.dumps({"version": 2, "models": {}}).encode(), "version 2"),
        (json.dumps({"version": 1, "models": {CHEAP: {"A": {"n": 4, "mean": 1.5}}}}).encode(), "mean"),
        (json.dumps({"version": 1, "models": {"other/model": {"A": {"n": 4, "mean": 0.5}}}}).encode(), "no model"),
    ],
)
async def test_an_invalid_quality_file_is_a_400_saying_why(quality_gw, body, says):
    url, _, _ = quality_gw
    status, err = await admin(url, "POST", "/admin/v1/routing/auto/quality", body)
    assert status == 400
    assert err["error"]["code"] == "invalid_quality_file" and says in err["error"]["message"]


async def test_a_group_without_the_strategy_gets_no_reason(sim, tmp_path, make_gateway):
    plain = {"name": "plain", "targets": [{"provider": "cheap", "model": "sim-gpt-mini"}]}
    url, _ = await make_gateway(quality_config(sim, tmp_path, extra_models=[plain]))
    async with AsyncOpenAI(base_url=url, api_key="k", max_retries=0) as client:
        h = await ask(client, "A", model="plain")
        assert "x-aiogw-route-reason" not in h
        assert "x-aiogw-route-reason" in await ask(client, "A")


async def test_picks_and_tasks_are_metrics_with_a_bounded_task_label(quality_gw):
    url, _, client = quality_gw
    await ask(client, "A")
    await ask(client, "A")
    await ask(client, "B")
    m = await scrape(url)
    assert value(m, "aiogw_quality_picks_total", model="auto", task="A", target=CHEAP) == 2
    assert value(m, "aiogw_quality_picks_total", model="auto", task="B", target=SMART) == 1
    assert value(m, "aiogw_task_requests_total", model="auto", task="A") == 2
    for i in range(40):  # client-chosen tasks: beyond the first 32, "other"
        await ask(client, f"t{i}")
    m = await scrape(url)
    tasks = {dict(k)["task"] for k in m["aiogw_task_requests_total"]}
    assert "other" in tasks and len(tasks) == 33
    picked = {dict(k)["task"] for k in m["aiogw_quality_picks_total"]}
    assert "other" in picked and len(picked) == 33


async def test_an_error_answer_says_why_its_target_was_chosen(sim, quality_gw):
    url, _, _ = quality_gw
    sim.set_profile("default", fault="status", fault_status=400)  # the cheap target refuses the request
    async with aiohttp.ClientSession() as s:
        async with s.post(
            f"{url}/chat/completions", json={"model": "auto", "messages": MSG}, headers={"x-aiogw-task": "A"}
        ) as r:
            assert r.status == 400
            assert r.headers["x-aiogw-route-reason"].startswith("cheapest meeting floor 0.90")


async def test_the_request_log_line_has_the_reason_and_bucket(quality_gw):
    from structlog.testing import capture_logs

    _, _, client = quality_gw
    with capture_logs() as logs:
        await ask(client, "A")
        await until(lambda: any(e["event"] == "request.finished" for e in logs))
    (line,) = [e for e in logs if e["event"] == "request.finished"]
    assert line["route_reason"].startswith("cheapest meeting floor") and line["bucket"] == "short"
