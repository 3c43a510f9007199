"""Feedback through HTTP: `POST /v1/feedback`'s every status (single and batch, all or
nothing), corrections kept in the store, the request memory surviving a restart and found by
another replica through Redis (whose observation reaches the first), and spot checks graded
by a judge model off the request path, costed in the ledger under their tag. The official
`openai` SDK makes the chat calls; feedback is plain HTTP (it is not part of OpenAI's API)."""

from __future__ import annotations

import time

import aiohttp
import anthropic
import pytest
from conftest import SIM_KEY, GatewayTestServer, gateway_config, until
from openai import AsyncOpenAI

from aiogw.server.app import create_app
from aiogw.server.keys import FEEDBACK, MONEY

MASTER = "master-key-for-tests-0123456789"
MSG = [{"role": "user", "content": "What is the capital of France?"}]
DAY = 86400.0


def feedback_config(sim, store_url, **overrides):
    """`auto` uses quality (remembered, one extra metric, optionally spot-checked by `judge`);
    `fast` does not (never remembered)."""
    spot = overrides.pop("spot_check", None)
    quality = {"metrics": ["helpful"], **({"spot_check": spot} if spot else {})}
    return gateway_config(
        sim,
        providers={
            "sim": {"type": "openai", "base_url": sim.base_url(), "api_key": SIM_KEY},
            "judge": {"type": "openai", "base_url": sim.base_url("judge"), "api_key": SIM_KEY},
        },
        models=[
            {
                "name": "auto",
                "quality": quality,
                "targets": [{"provider": "sim", "model": "sim-gpt-fast", "price": {"input": 1, "output": 2}}],
            },
            {"name": "fast", "targets": [{"provider": "sim", "model": "sim-gpt-fast"}]},
            {
                "name": "judge",
                "targets": [{"provider": "judge", "model": "sim-gpt-mini", "price": {"input": 3, "output": 6}}],
            },
        ],
        store={"url": store_url},
        **overrides,
    )


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


async def ask(url, model="auto", key="any", request_id=None, stream=False):
    """A chat answer's x-request-id (the client's own when it sent one)."""
    headers = {"x-request-id": request_id} if request_id else {}
    async with AsyncOpenAI(base_url=url, api_key=key, max_retries=0, timeout=20) as c:
        raw = await c.chat.completions.with_raw_response.create(
            model=model, messages=MSG, stream=stream, extra_headers=headers
        )
        if stream:
            async for _ in raw.parse():
                pass
        return raw.headers["x-request-id"]


async def send(session, url, body, key=None):
    headers = {"authorization": f"Bearer {key}"} if key else {}
    async with session.post(url + "/feedback", json=body, headers=headers) as r:
        return r.status, await r.json()


async def metric_value(session, url, line_prefix):
    async with session.get(url.removesuffix("/v1") + "/metrics") as r:
        text = await r.text()
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith(line_prefix))


def error_of(status, body, expected):
    assert status == expected, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


async def test_every_status_of_a_single_feedback(sim, make_gateway, store_url, session):
    url, app = await make_gateway(feedback_config(sim, store_url))
    rid = await ask(url, request_id="client-req-1")
    assert rid == "client-req-1"  # the client's own id is the one to give feedback on

    status, got = await send(session, url, {"request_id": rid, "metric": "correct", "value": False,
                                            "correction": "Paris"})  # fmt: skip
    assert status == 202 and got["id"].startswith("fb_"), got
    err = error_of(*await send(session, url, {"request_id": rid, "metric": "correct", "value": True}), 409)
    assert err["code"] == "duplicate"
    # another metric of the same request: declared under quality.metrics
    status, _ = await send(session, url, {"request_id": rid, "metric": "helpful", "value": 0.25})
    assert status == 202
    err = error_of(*await send(session, url, {"request_id": rid, "metric": "style", "value": 1}), 422)
    assert err["param"] == "metric" and err["code"] == "unknown_metric" and "helpful" in err["message"]
    for bad in ("yes", 1.5, -0.1, None):
        err = error_of(*await send(session, url, {"request_id": rid, "metric": "correct", "value": bad}), 422)
        assert err["param"] == "value", bad
    err = error_of(*await send(session, url, {"request_id": "never-answered", "value": True}), 404)
    assert err["param"] == "request_id" and err["code"] == "request_not_found"
    # a group that uses no quality is not remembered: nothing to rate
    other = await ask(url, model="fast")
    error_of(*await send(session, url, {"request_id": other, "value": True}), 404)

    # kept 7 days: past that, the same request is unknown
    generated = await ask(url)
    assert generated.startswith("req_")
    app[FEEDBACK].memory.clock = lambda: time.time() + 7 * DAY + 60
    error_of(*await send(session, url, {"request_id": generated, "value": True}), 404)
    app[FEEDBACK].memory.clock = time.time
    status, _ = await send(session, url, {"request_id": generated, "value": True})
    assert status == 202

    rows = await app[MONEY].store.fetchall(
        "SELECT metric, value, correction, caller, grp, task, target FROM aiogw_feedback"
        " WHERE request_id = ? ORDER BY metric",
        (rid,),
    )
    assert rows == [
        ("correct", 0.0, "Paris", "anonymous", "auto", "chat", "sim/sim-gpt-fast"),
        ("helpful", 0.25, None, "anonymous", "auto", "chat", "sim/sim-gpt-fast"),
    ]
    assert await metric_value(session, url, 'aiogw_quality_observations_total{source="feedback",origin="local"}') == 3

    # bounded: what is past the retention leaves the store (the hourly purge)
    memory = app[FEEDBACK].memory
    await memory.writer.flush()
    memory.clock = lambda: time.time() + 7 * DAY + 60
    assert await memory.purge() == 2  # the two requests of `auto` (`fast` was never remembered)
    assert (await app[MONEY].store.fetchone("SELECT COUNT(*) FROM aiogw_request_memory"))[0] == 0


async def test_a_batch_is_stored_whole_or_not_at_all(sim, make_gateway, store_url, session):
    url, app = await make_gateway(feedback_config(sim, store_url))
    a, b = await ask(url), await ask(url)
    store = app[MONEY].store

    async def stored():
        return (await store.fetchone("SELECT COUNT(*) FROM aiogw_feedback"))[0]

    err = error_of(*await send(session, url, {"items": [{"request_id": a, "value": 1},
                                                        {"request_id": b, "value": "good"}]}), 422)  # fmt: skip
    assert err["param"] == "items[1].value"
    err = error_of(*await send(session, url, {"items": [{"request_id": a, "value": 1},
                                                        {"request_id": "gone", "value": 1}]}), 404)  # fmt: skip
    assert err["param"] == "items[1].request_id"
    err = error_of(*await send(session, url, {"items": [{"request_id": a, "value": 1},
                                                        {"request_id": a, "value": 0}]}), 409)  # fmt: skip
    assert err["param"] == "items[1].metric"
    too_many = {"items": [{"request_id": a, "metric": "correct", "value": 1}] * 1001}
    err = error_of(*await send(session, url, too_many), 413)
    assert err["param"] == "items" and "1000" in err["message"]
    assert await stored() == 0

    status, got = await send(session, url, {"items": [{"request_id": a, "value": True},
                                                      {"request_id": b, "metric": "helpful", "value": 0.5,
                                                       "correction": "Paris, France"}]})  # fmt: skip
    assert status == 202 and [set(i) for i in got["items"]] == [{"id"}, {"id"}], got
    assert await stored() == 2
    # one item already stored: the batch is refused whole
    err = error_of(*await send(session, url, {"items": [{"request_id": b, "value": 1},
                                                        {"request_id": a, "value": 1}]}), 409)  # fmt: skip
    assert err["param"] == "items[1].metric"
    assert await stored() == 2
    row = await store.fetchone("SELECT correction FROM aiogw_feedback WHERE request_id = ?", (b,))
    assert row == ("Paris, France",)


async def test_feedback_on_another_callers_request_is_403(sim, make_gateway, store_url, session):
    url, _ = await make_gateway(feedback_config(sim, store_url, auth={"master_key": MASTER}))
    admin = {"authorization": f"Bearer {MASTER}"}
    keys = []
    for name in ("alice", "bob"):
        async with session.post(url.removesuffix("/v1") + "/admin/v1/keys", json={"name": name}, headers=admin) as r:
            assert r.status == 201
            keys.append((await r.json())["key"])
    alice, bob = keys
    rid = await ask(url, key=alice)
    err = error_of(*await send(session, url, {"request_id": rid, "value": 1}, key=bob), 403)
    assert err["param"] == "request_id" and err["type"] == "invalid_request_error"
    error_of(*await send(session, url, {"request_id": rid, "value": 1}), 403)  # anonymous
    assert (await send(session, url, {"request_id": rid, "value": 1}, key=alice))[0] == 202
    assert (await send(session, url, {"request_id": rid, "metric": "helpful", "value": 1}, key=MASTER))[0] == 202
    anonymous = await ask(url, key="not-an-aiogw-key")  # keys not required: an anonymous request
    error_of(*await send(session, url, {"request_id": anonymous, "value": 1}, key=bob), 403)
    assert (await send(session, url, {"request_id": anonymous, "value": 1}))[0] == 202


async def test_a_config_without_quality_remembers_nothing_and_says_so(sim, make_gateway, session):
    url, app = await make_gateway(gateway_config(sim))
    assert app[FEEDBACK] is None and app[MONEY] is None  # no store opened, nothing per request
    rid = await ask(url, model="fast")
    err = error_of(*await send(session, url, {"request_id": rid, "value": 1}), 404)
    assert "feedback.enabled" in err["message"]


async def test_the_memory_survives_a_restart(sim, tmp_path, session):
    cfg = feedback_config(sim, f"sqlite:///{tmp_path}/aiogw.db")
    first = GatewayTestServer(create_app(cfg))
    await first.start_server()
    rid = await ask(str(first.make_url("/v1")))
    await first.close()  # SIGTERM's path: queued memories are written before the store closes

    second = GatewayTestServer(create_app(cfg))
    await second.start_server()
    try:
        status, got = await send(session, str(second.make_url("/v1")), {"request_id": rid, "value": True})
        assert status == 202, got
    finally:
        await second.close()


async def test_feedback_sent_to_another_replica_finds_the_memory_and_teaches_both(
    sim, make_gateway, tmp_path, redis_server, session
):
    # The memory's batch is not written before the feedback comes (flush_ms: a minute): the
    # other replica can only find it through Redis.
    cfg = feedback_config(
        sim,
        f"sqlite:///{tmp_path}/aiogw.db",
        state={"redis_url": redis_server.url, "key_prefix": "fb"},
        feedback={"flush_ms": 60_000},
    )
    url_a, app_a = await make_gateway(cfg)
    url_b, _ = await make_gateway(cfg)
    rid = await ask(url_a)
    assert (await app_a[MONEY].store.fetchone("SELECT COUNT(*) FROM aiogw_request_memory"))[0] == 0

    async def b_knows_it():  # A's mirror to Redis is written off its request path
        status, _ = await send(session, url_b, {"request_id": rid, "value": False, "correction": "Paris"})
        return status == 202

    await until(b_knows_it)
    assert await metric_value(session, url_b, 'aiogw_quality_observations_total{source="feedback",origin="local"}') == 1
    heard = 'aiogw_quality_observations_total{source="feedback",origin="replica"}'

    async def a_heard():
        return await metric_value(session, url_a, heard) == 1

    await until(a_heard)
    assert await metric_value(session, url_a, heard) == 1
    # the duplicate is refused by either replica
    error_of(*await send(session, url_a, {"request_id": rid, "value": True}), 409)


async def test_spot_checks_grade_messages_and_responses_answers_too(sim, make_gateway, store_url):
    # The judge reads each answer in the client's own API: a Messages answer's text blocks,
    # a Responses stream's output_text deltas (the bytes the client got).
    url, app = await make_gateway(feedback_config(sim, store_url, spot_check={"judge": "judge", "rate": 1.0}))
    async with anthropic.AsyncAnthropic(base_url=url.removesuffix("/v1"), api_key="k", max_retries=0) as c:
        raw = await c.messages.with_raw_response.create(model="auto", max_tokens=100, messages=MSG)
        said = "".join(b.text for b in (await raw.parse()).content if b.type == "text")
        by_messages = raw.headers["x-request-id"]
    store = app[MONEY].store

    async def graded(rid):
        return await store.fetchone("SELECT verdict FROM aiogw_spot_checks WHERE request_id = ?", (rid,))

    await until(lambda: graded(by_messages))
    assert said and said in sim.stats("judge")["last_request"]["body"]["messages"][1]["content"]
    async with AsyncOpenAI(base_url=url, api_key="k", max_retries=0) as c:
        raw = await c.responses.with_raw_response.create(model="auto", input=MSG[0]["content"], stream=True)
        texts = [e.delta async for e in raw.parse() if e.type == "response.output_text.delta"]
        by_responses = raw.headers["x-request-id"]
    await until(lambda: graded(by_responses))
    assert texts and "".join(texts) in sim.stats("judge")["last_request"]["body"]["messages"][1]["content"]
    assert await graded(by_messages) == ("pass",) and await graded(by_responses) == ("pass",)


async def test_spot_checks_are_graded_off_the_request_path_and_costed(sim, make_gateway, store_url, session):
    url, app = await make_gateway(feedback_config(sim, store_url, spot_check={"judge": "judge", "rate": 1.0}))
    # The judge's first call never answers: the client's answer must not wait for it.
    sim.set_profile("judge", fault="hang", fault_count=1)
    first = await ask(url)
    await until(lambda: sim.stats("judge")["requests"] == 1)
    assert sim.stats("judge")["requests"] == 1  # the judge was asked after the answer was out, and is still silent

    second = await ask(url, stream=True)  # graded by the next worker; a stream's text is captured as sent
    store = app[MONEY].store

    async def graded():
        return await store.fetchone("SELECT verdict, judge, target, grp FROM aiogw_spot_checks WHERE request_id = ?",
                                    (second,))  # fmt: skip

    await until(graded)
    assert await graded() == ("pass", "judge", "sim/sim-gpt-fast", "auto")
    judged = sim.stats("judge")["last_request"]["body"]
    assert judged["temperature"] == 0 and judged["response_format"]["type"] == "json_schema"
    assert "Simulated reply from sim-gpt-fast" in judged["messages"][1]["content"]  # the streamed answer
    assert "capital of France" in judged["messages"][1]["content"]

    async with session.get(url + "/gateway/spend") as r:
        spend = await r.json()
    [judge_row] = [row for row in spend["rows"] if row["tags"] == "aiogw=spot-check"]
    assert judge_row["model"] == "judge" and judge_row["task"] == "spot-check" and judge_row["cost_usd"] > 0
    assert await metric_value(session, url, 'aiogw_spot_checks_total{outcome="pass"}') == 1
    assert await metric_value(session, url, 'aiogw_quality_observations_total{source="spot_check"') == 1
    assert first != second
