"""`aiogw eval` as users run it (a real process) against a gateway on the simulator whose
accounts answer with known accuracy (the oracle): scores, quality.json, the cost cap, cutoffs,
dataset errors, the judge and the comparison of two runs."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest
import yaml
from procs import run_command, without_packages

from aiogw.bench import routing_data
from aiogw.config_load import from_builtins

TASKS = ("classify", "extract", "math", "summarize")
ALWAYS = {"easy": 1.0, "hard": 1.0}
NEVER = {"easy": 0.0, "hard": 0.0}


def _config(sim, cache: bool = False) -> dict:
    accounts = {"good": 10.0, "bad": 0.1, "mixed": 1.0, "judge": 1.0}  # USD per million tokens
    return {
        "server": {"host": "127.0.0.1", "port": 0},
        "providers": {a: {"type": "openai", "base_url": sim.base_url(a), "api_key": "sk-sim"} for a in accounts},
        "models": [
            {"name": a, "targets": [{"provider": a, "model": f"sim-{a}", "price": {"input": p, "output": p}}]}
            for a, p in accounts.items()
        ],
        **({"cache": {"enabled": True, "policy": "always"}} if cache else {}),
    }


@pytest.fixture
async def oracle(sim):
    sim.set_profile("good", quality={"*": ALWAYS})
    sim.set_profile("bad", quality={"*": NEVER})
    sim.set_profile("mixed", quality={"math": ALWAYS, "*": NEVER})
    sim.set_profile("judge", judge=True)
    return sim


@pytest.fixture
def dataset(tmp_path):
    path = tmp_path / "data.jsonl"
    routing_data.write(path, list(routing_data.items(24, seed=11, tasks=TASKS, hard_share=0.25)))
    return path


async def _eval(*args):
    return await run_command("eval", *args, timeout=90)


def _results(out) -> list[dict]:
    return [orjson.loads(line) for line in (out / "results.jsonl").read_bytes().splitlines()]


async def test_scores_match_the_oracle_and_quality_json_has_the_routers_format(oracle, make_gateway, dataset, tmp_path):
    url, _ = await make_gateway(from_builtins(_config(oracle, cache=True), env={}))
    out = tmp_path / "run"
    code, stdout, stderr = await _eval(
        "run", "--dataset", str(dataset), "--models", "good,bad,mixed", "--url", url,
        "--judge", "judge", "--out", str(out), "--concurrency", "4",
    )  # fmt: skip
    assert code == 0, stderr
    assert "| good | math |" in stdout and "eval" in stderr  # the report, and tqdm's bar on stderr
    quality = orjson.loads((out / "quality.json").read_bytes())
    assert set(quality) == {"version", "metric", "created", "models"}
    assert quality["version"] == 1 and quality["metric"] == "correct" and isinstance(quality["created"], int)
    assert set(quality["models"]) == {"good", "bad", "mixed"}
    keys = {"n", "mean", "lo", "hi", "cost_per_item_usd", "latency_p50_ms", "latency_p95_ms", "errors"}
    for model, tasks in quality["models"].items():
        assert set(tasks) == set(TASKS)
        for task, c in tasks.items():
            assert set(c) == keys | {"buckets"} and c["n"] == 6 and c["errors"] == 0
            want = 1.0 if model == "good" or (model == "mixed" and task == "math") else 0.0
            assert c["mean"] == want, (model, task)
            # Per prompt bucket as the router sees it: the hard items quote their material in a fence.
            assert set(c["buckets"]) <= {"short", "short+code"} and sum(b["n"] for b in c["buckets"].values()) == 6
            assert all(b["mean"] == want for b in c["buckets"].values())
            assert c["lo"] <= c["mean"] <= c["hi"] and c["cost_per_item_usd"] > 0
    cost = {m: quality["models"][m]["math"]["cost_per_item_usd"] for m in ("good", "bad")}
    assert cost["good"] > 50 * cost["bad"]  # priced by the gateway: 10 against 0.1 per million
    results = _results(out)
    assert len(results) == 72
    assert {r["bucket"] for r in results} == {"short", "short+code"}  # the dataset has easy and hard items
    judged = [r for r in results if r["task"] == "summarize"]
    assert judged and all(r["grader"] == "llm_judge" and r["judge_cost_usd"] > 0 for r in judged)
    assert {r["passed"] for r in judged if r["model"] == "good"} == {True}
    assert {r["passed"] for r in judged if r["model"] == "bad"} == {False}
    sent = oracle.stats("good")["last_request"]
    assert sent["body"]["model"] == "sim-good"
    assert (out / "pareto.png").read_bytes().startswith(b"\x89PNG")
    report = orjson.loads((out / "report.json").read_bytes())
    assert report["models"]["mixed"]["*"]["n"] == 24 and "| mixed | all |" in (out / "report.md").read_text()

    # Each call carried its item's task (the judge's its own): the gateway's spend says so.
    async with aiohttp.ClientSession() as http, http.get(f"{url}/gateway/spend") as r:
        spend = await r.json()
    assert {row["task"] for row in spend["rows"]} == {*TASKS, "eval-judge"}

    # `report` rewrites the reports from results.jsonl (and applies a cutoff).
    (out / "report.md").unlink()
    code, stdout, stderr = await _eval("report", str(out), "--cutoff", "math=0.5")
    assert code == 1 and "bad math: mean 0.000" in stderr and "good math" not in stderr
    assert (out / "report.md").read_text() == stdout

    # The cache (on for every request here) is bypassed: a second run calls upstream again.
    before = oracle.stats("good")["requests"]
    code, _, stderr = await _eval(
        "run", "--dataset", str(dataset), "--models", "good", "--url", url, "--judge", "judge", "--out", str(out)
    )
    assert code == 0, stderr
    assert oracle.stats("good")["requests"] == before + 24


async def test_the_cost_cap_stops_sending_and_exits_3(oracle, dataset, tmp_path):
    """With --config: the gateway is started in process, for the run."""
    config = tmp_path / "aiogw.yaml"
    config.write_text(yaml.safe_dump(_config(oracle)))
    out = tmp_path / "run"
    code, _, stderr = await _eval(
        "run", "--dataset", str(dataset), "--models", "good", "--config", str(config),
        "--judge", "judge", "--max-cost-usd", "0.001", "--concurrency", "1", "--out", str(out),
    )  # fmt: skip
    assert code == 3, stderr
    assert "cost cap reached" in stderr
    report = orjson.loads((out / "report.json").read_bytes())
    assert report["capped"] is True and report["spent_usd"] >= 0.001
    sent = oracle.stats("good")["requests"]
    assert 0 < sent < 24 and len(_results(out)) == sent


async def test_a_missed_cutoff_exits_1_naming_the_model_and_task(oracle, make_gateway, dataset, tmp_path):
    url, _ = await make_gateway(from_builtins(_config(oracle), env={}))
    args = ("run", "--dataset", str(dataset), "--url", url, "--judge", "judge", "--out", str(tmp_path / "r"))
    code, _, stderr = await _eval(*args, "--models", "mixed", "--cutoff", "math=0.9")
    assert code == 0, stderr
    code, _, stderr = await _eval(*args, "--models", "mixed", "--cutoff", "0.9")
    assert code == 1
    assert "below cutoff: mixed classify: mean 0.000 < cutoff 0.9" in stderr
    assert "mixed math" not in stderr


async def test_a_malformed_dataset_exits_2_with_its_line_and_sends_nothing(oracle, make_gateway, tmp_path):
    url, _ = await make_gateway(from_builtins(_config(oracle), env={}))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"id": "1", "task": "math", "prompt": "1+1?", "expected": 2, "grader": "numeric"}\n'
        '{"id": "2", "task": "math", "prompt": "2+2?", "expected": 4, "grader": "numeric", "tolerance": 1}\n'
    )
    code, _, stderr = await _eval("run", "--dataset", str(bad), "--models", "good", "--url", url)
    assert code == 2
    assert f"{bad}:2: unknown key(s) tolerance" in stderr
    judged = tmp_path / "judged.jsonl"
    judged.write_text('{"id": "1", "task": "s", "prompt": "?", "expected": "x", "grader": "llm_judge"}\n')
    code, _, stderr = await _eval("run", "--dataset", str(judged), "--models", "good", "--url", url)
    assert code == 2 and "pass --judge MODEL" in stderr
    assert oracle.stats("good")["requests"] == 0


async def test_an_unreachable_gateway_is_a_harness_error(dataset, tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, stderr = await _eval(
        "run", "--dataset", str(dataset), "--models", "good", "--url", f"http://127.0.0.1:{port}",
        "--judge", "judge", "--out", str(tmp_path / "r"),
    )  # fmt: skip
    assert code == 2 and "cannot reach the gateway" in stderr


async def test_compare_reports_the_items_that_changed(oracle, make_gateway, dataset, tmp_path):
    url, _ = await make_gateway(from_builtins(_config(oracle), env={}))
    common = ("--dataset", str(dataset), "--models", "mixed", "--url", url, "--judge", "judge")
    oracle.set_profile("mixed", quality={"*": ALWAYS})
    assert (await _eval("run", *common, "--out", str(tmp_path / "a")))[0] == 0
    oracle.set_profile("mixed", quality={"math": NEVER, "*": ALWAYS})  # the model got worse at math
    assert (await _eval("run", *common, "--out", str(tmp_path / "b"), "--repeats", "2"))[0] == 0
    assert len(_results(tmp_path / "b")) == 48  # each item twice; compared by its mean over repeats
    code, stdout, stderr = await _eval("compare", str(tmp_path / "a"), str(tmp_path / "b"), "--json")
    assert code == 0, stderr
    rows = {r["task"]: r for r in orjson.loads(stdout)}
    assert rows["math"]["only_a"] == 6 and rows["math"]["only_b"] == 0 and rows["math"]["both_pass"] == 0
    assert rows["math"]["mean_diff"] == -1.0 and rows["math"]["mcnemar_p"] < 0.05
    assert sorted(c["id"] for c in rows["math"]["changed"]) == sorted(
        r["id"] for r in _results(tmp_path / "a") if r["task"] == "math"
    )
    assert all(rows[t]["only_a"] == rows[t]["only_b"] == 0 and rows[t]["both_pass"] == 6 for t in TASKS if t != "math")
    code, stdout, stderr = await _eval("compare", str(tmp_path / "a"), str(tmp_path / "b"), "--cutoff", "0.9")
    assert code == 1 and "| mixed | math | 6 | 0 | 6 | 0 |" in stdout and "mixed math" in stderr
    code, _, stderr = await _eval("compare", str(tmp_path / "a"), str(tmp_path / "nothing"))
    assert code == 2 and "cannot read a run" in stderr


async def test_failed_calls_are_errors_apart_from_wrong_answers(oracle, make_gateway, dataset, tmp_path):
    url, _ = await make_gateway(from_builtins(_config(oracle), env={}))
    oracle.set_profile("good", fault="status", fault_status=400, fault_count=3)  # the caller's fault: no retry
    out = tmp_path / "r"
    code, _, stderr = await _eval(
        "run", "--dataset", str(dataset), "--models", "good", "--url", url, "--judge", "judge",
        "--out", str(out), "--concurrency", "1",
    )  # fmt: skip
    assert code == 0, stderr
    cells = orjson.loads((out / "quality.json").read_bytes())["models"]["good"].values()
    assert sum(c["errors"] for c in cells) == 3 and sum(c["n"] for c in cells) == 21
    assert all(c["mean"] == 1.0 for c in cells)  # the failed calls are not wrong answers
    errors = [r for r in _results(out) if r["error"]]
    assert len(errors) == 3 and all(r["error"].startswith("400 ") and r["status"] == 400 for r in errors)


async def test_without_the_eval_extra_the_command_says_which_to_install(dataset, tmp_path):
    env = without_packages(tmp_path, "tqdm")
    code, _, stderr = await run_command(
        "eval", "run", "--dataset", str(dataset), "--models", "m", "--url", "http://127.0.0.1:9", env=env
    )
    assert code == 2 and "pip install 'aiogw[eval]'" in stderr and "tqdm" in stderr


async def test_a_gateway_that_requires_keys_takes_aiogw_api_key(oracle, make_gateway, dataset, tmp_path):
    master = "sk-master-0123456789abcdef0123456789"
    cfg = {
        **_config(oracle),
        "auth": {"master_key": master, "require_keys": True},
        "store": {"url": f"sqlite:///{tmp_path}/s.db"},
    }
    url, _ = await make_gateway(from_builtins(cfg, env={}))
    args = (
        "run",
        "--dataset",
        str(dataset),
        "--models",
        "good",
        "--url",
        url,
        "--judge",
        "judge",
        "--out",
        str(tmp_path / "r"),
    )
    code, _, stderr = await run_command("eval", *args, env={"AIOGW_API_KEY": ""})
    assert code == 2 and "refused the key (401): set AIOGW_API_KEY" in stderr
    assert oracle.stats("good")["requests"] == 0
    code, _, stderr = await run_command("eval", *args, env={"AIOGW_API_KEY": master})
    assert code == 0, stderr
    assert oracle.stats("good")["requests"] == 24


async def test_calls_in_flight_are_bounded_by_concurrency(tmp_path):
    """Against a bare upstream that holds each call until three are in flight (or all the
    rest are): the runner keeps exactly --concurrency calls going, never more."""
    from aiohttp import web

    from aiogw.eval.dataset import Item
    from aiogw.eval.runner import Runner

    total, state, gate = 10, {"in": 0, "max": 0, "done": 0}, asyncio.Event()

    async def chat(request):
        state["in"] += 1
        state["max"] = max(state["max"], state["in"])
        if state["in"] >= 3 or state["in"] + state["done"] >= total:
            gate.set()
        await asyncio.wait_for(gate.wait(), 5)
        state["in"] -= 1
        state["done"] += 1
        body = {"choices": [{"message": {"role": "assistant", "content": "4"}}]}
        return web.json_response(body, headers={"x-aiogw-cost-usd": "0.25"})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = next(a for a in runner.addresses if isinstance(a, tuple))[1]
    try:
        items = [Item(str(i), "math", [{"role": "user", "content": "2+2?"}], 4, "numeric") for i in range(total)]
        run = await Runner(f"http://127.0.0.1:{port}/v1", concurrency=3).run(items, ["m"])
    finally:
        await runner.cleanup()
    assert state["max"] == 3 and state["done"] == total
    assert [r.passed for r in run.results] == [True] * total and run.spent_usd == 2.5 and not run.capped
