"""strategy: quality learning through HTTP only: ratings sent to `POST /v1/feedback` move one
task's traffic and not another's; a prior written by a real `aiogw eval run` (a process,
against the simulator's oracle) routes each task where the eval found it good; spot checks
graded by the simulator's judge account are recorded and move the estimate; and two
replicas sharing Redis learn from each other's feedback. Nothing here calls the learner
(`QualityBook.observe`) directly: every observation arrives the way a user's would."""

from __future__ import annotations

import json

import aiohttp
import pytest
from conftest import until
from integration.test_feedback import metric_value, send
from integration.test_quality_routing import CHEAP, SMART, admin, ask, quality_config, target
from openai import AsyncOpenAI
from procs import run_command

from aiogw.bench import routing_data
from aiogw.server.keys import MONEY

ALWAYS = {"easy": 1.0, "hard": 1.0}
NEVER = {"easy": 0.0, "hard": 0.0}
ROUNDS = 30  # bound on the answers rated before the routing must have moved


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


def openai_client(url):
    return AsyncOpenAI(base_url=url, api_key="client-key", max_retries=0, timeout=20)


async def rate_until_moved(client, session, task, rate_url, heard=None):
    """Ask `task` and rate each answer wrong (through `rate_url`'s /feedback) until the
    choice leaves the cheap target; the number of ratings it took."""
    for rated in range(ROUNDS):
        h = await ask(client, task)
        if target(h) == SMART:
            return rated
        status, body = await send(session, rate_url, {"request_id": h["x-request-id"], "value": False})
        assert status == 202, body
        if heard is not None:
            await heard(rated + 1)
    raise AssertionError(f"task {task} still routed to {CHEAP} after {ROUNDS} wrong answers were rated")


async def test_feedback_moves_the_rated_tasks_traffic_and_not_another(sim, tmp_path, make_gateway, session):
    url, _ = await make_gateway(quality_config(sim, tmp_path))
    async with openai_client(url) as client:
        assert target(await ask(client, "A")) == CHEAP
        assert target(await ask(client, "B", **{"x-aiogw-quality-floor": "0.5"})) == CHEAP
        rated = await rate_until_moved(client, session, "A", url)
        assert 1 <= rated <= 10
        assert target(await ask(client, "A")) == SMART
        # Task B's estimate of the cheap target is untouched: still chosen at the same floor.
        assert target(await ask(client, "B", **{"x-aiogw-quality-floor": "0.5"})) == CHEAP
    status, routing = await admin(url, "GET", "/admin/v1/routing/auto")
    assert status == 200
    a = next(t for t in routing["tasks"] if t["task"] == "A")
    cheap = next(t for t in a["targets"] if t["target"] == CHEAP)
    assert cheap["observed"] == rated and not cheap["meets_floor"]


async def test_a_prior_from_a_real_eval_run_routes_each_task_where_the_eval_found_it_good(sim, tmp_path, make_gateway):
    # The oracle: the cheap account right on math and wrong on classify; the expensive one right on both.
    sim.set_profile("default", quality={"math": ALWAYS, "*": NEVER})
    sim.set_profile("compat", quality={"*": ALWAYS})
    data = tmp_path / "dev.jsonl"
    routing_data.write(data, list(routing_data.items(40, seed=5, tasks=("math", "classify"))))
    bare = tmp_path / "bare"  # the gateway the eval runs through (its own prior does not matter)
    bare.mkdir()
    eval_url, _ = await make_gateway(quality_config(sim, bare))
    out = tmp_path / "eval"
    code, _, stderr = await run_command(
        "eval", "run", "--dataset", str(data), "--models", f"{CHEAP},{SMART}", "--url", eval_url,
        "--out", str(out), "--concurrency", "4", timeout=90,
    )  # fmt: skip
    assert code == 0, stderr
    prior = json.loads((out / "quality.json").read_text())
    assert prior["models"][CHEAP]["math"]["mean"] == 1.0 and prior["models"][CHEAP]["classify"]["mean"] == 0.0

    url, _ = await make_gateway(quality_config(sim, tmp_path, prior=prior))
    async with openai_client(url) as client:
        math = await ask(client, "math")
        assert target(math) == CHEAP and math["x-aiogw-route-reason"].startswith("cheapest meeting floor 0.90 (est 0.9")
        classify = await ask(client, "classify")
        assert target(classify) == SMART and classify["x-aiogw-route-reason"].startswith("cheapest meeting floor")
    status, routing = await admin(url, "GET", "/admin/v1/routing/auto")
    assert status == 200 and routing["prior"].endswith("quality.json")
    shown = {(t["task"], r["target"]): r for t in routing["tasks"] for r in t["targets"]}
    assert shown[("math", CHEAP)]["cost_source"] == "eval" and shown[("classify", CHEAP)]["mean"] < 0.1


async def test_spot_checks_by_the_judge_account_are_recorded_and_move_the_estimate(
    sim, tmp_path, make_gateway, session
):
    # The cheap account answers every item wrong; the judge (the expensive account, which
    # also grades) sees the item's marker in the conversation and fails those answers.
    sim.set_profile("default", quality={"*": NEVER})
    sim.set_profile("compat", quality={"*": ALWAYS}, judge=True)
    judge_group = {
        "name": "judge",
        "targets": [{"provider": "smart", "model": "sim-judge", "price": {"input": 5, "output": 15}}],
    }
    url, app = await make_gateway(
        quality_config(sim, tmp_path, extra_models=[judge_group], spot_check={"judge": "judge", "rate": 1.0})
    )
    async with openai_client(url) as client:
        for i in range(ROUNDS):
            question = "What is 6 x 7?\n" + routing_data.marker(f"q{i}", "A", "easy", "42")
            r = await client.chat.completions.with_raw_response.create(
                model="auto", messages=[{"role": "user", "content": question}], extra_headers={"x-aiogw-task": "A"}
            )
            answer = r.parse().choices[0].message.content
            if target(r.headers) == SMART:
                assert answer == "42"
                break
            assert answer != "42"

            async def graded(n=i + 1):
                return await metric_value(session, url, 'aiogw_spot_checks_total{outcome="fail"}') >= n

            await until(graded)  # off the request path: the next request must see the estimate it moved
        else:
            raise AssertionError("spot checks never moved task A off the cheap target")
    fails = await metric_value(session, url, 'aiogw_spot_checks_total{outcome="fail"}')
    assert 1 <= fails <= 10
    assert await metric_value(session, url, 'aiogw_quality_observations_total{source="spot_check"') >= fails
    judged = sim.stats("compat")["last_request"]["body"]
    assert judged["model"] == "sim-judge" and "<candidate>" in judged["messages"][1]["content"]
    rows = await app[MONEY].store.fetchall("SELECT verdict, target, task FROM aiogw_spot_checks")
    assert [tuple(r) for r in rows].count(("fail", CHEAP, "A")) == fails
    assert {tuple(r) for r in rows} <= {("fail", CHEAP, "A"), ("pass", SMART, "A")}  # the last answer's may be in
    status, routing = await admin(url, "GET", "/admin/v1/routing/auto")
    assert status == 200
    cheap = next(r for t in routing["tasks"] if t["task"] == "A" for r in t["targets"] if r["target"] == CHEAP)
    assert cheap["observed"] == fails and not cheap["meets_floor"]


async def test_feedback_sent_to_one_replica_moves_the_routing_of_the_replica_that_answered(
    sim, tmp_path, make_gateway, redis_server, session
):
    # The memory's store batch is not written before the feedback comes (flush: a minute):
    # replica B finds A's requests through Redis only, and A learns only through Redis.
    cfg = quality_config(
        sim,
        tmp_path,
        sections={"state": {"redis_url": redis_server.url, "key_prefix": "ql"}, "feedback": {"flush_ms": 60_000}},
    )
    url_a, _ = await make_gateway(cfg)
    url_b, _ = await make_gateway(cfg)
    heard_metric = 'aiogw_quality_observations_total{source="feedback",origin="replica"}'

    async def a_heard(n):
        async def check():
            return await metric_value(session, url_a, heard_metric) >= n

        await until(check)

    async with openai_client(url_a) as client_a, openai_client(url_b) as client_b:
        rated = await rate_until_moved(client_a, session, "A", url_b, heard=a_heard)
        assert 1 <= rated <= 10
        assert (
            await metric_value(session, url_a, 'aiogw_quality_observations_total{source="feedback",origin="local"}')
            == 0
        )
        assert target(await ask(client_a, "A")) == SMART
        # B got the same ratings (its own): it routes A away too, and B's task B is untouched.
        assert target(await ask(client_b, "A")) == SMART
        assert target(await ask(client_a, "B", **{"x-aiogw-quality-floor": "0.5"})) == CHEAP
