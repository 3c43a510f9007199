"""The routing workload: what `strategy: quality` saves against always asking the frontier
model, and how fast it learns from feedback alone, measured like a user would.

    python -m aiogw.bench.routing_workload --out DIR [--seed 7] [--items 1000]

It starts the provider simulator and a gateway (processes, free loopback ports), gives the
simulator four model accounts with list-like prices and known accuracy per task and level
(`MODELS`) plus a judge, writes a labelled dataset (bench/routing_data.py: five tasks, a
tenth of the items hard, hard items quoting their material in a fenced block), then:

(a) `aiogw eval run` on the dev split over the four models -> quality.json (and pareto.png);
(b) the test split through `auto` (`strategy: quality`, that quality.json as its prior,
    loaded through `POST /admin/v1/routing/auto/quality`), each answer rated through
    `POST /v1/feedback` by the item's label;
(c) the same through `learn` (no prior, feedback only), the test split repeated until at
    least `--events` ratings were given;
(d) baselines, measured through the gateway on the same items: always the frontier model,
    and the best fixed routing per task: for each task the cheapest model whose expected
    accuracy on it (the oracle's, the hard share included) meets the floor, else the most
    accurate (the same objective the strategy pursues, with the answers known in advance).

Reported in DIR (report.json, report.md, regret.png, pareto.png): cost and measured quality
of (b), of (c)'s last 500 events, of the frontier and of the fixed routing, each against the
frontier on the same items, and the regret curve of (c) against the fixed routing:
cumulative expected utility of the fixed routing minus the learner's, where an answer's
utility is the oracle's accuracy of the model on that item's task and level minus `--lam`
times its cost over what the frontier model cost on the same item (lam 0.2: paying the
frontier's price for an item is worth 0.2 of a right answer). Below zero: the learner has
gained more than the best fixed per-task routing would have.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from aiogw.bench import routing_data
from aiogw.bench.run import SIM_KEY, Proc, start_gateway, start_listening

MASTER = "sk-routing-workload-master-0123456789"
FLOOR = 0.85
LAMBDA = 0.2
LAST = 500  # (c) is summarised over its last this many events


@dataclass(frozen=True, slots=True)
class SimModel:
    """A simulated model: its account and upstream name, a price (USD per million tokens,
    input/output, like the model it stands for) and accuracy per task (easy, hard)."""

    name: str
    like: str
    price_in: float
    price_out: float
    accuracy: dict[str, tuple[float, float]]

    @property
    def model(self) -> str:
        return f"sim-{self.name}"

    @property
    def target_id(self) -> str:
        return f"{self.name}/{self.model}"

    def acc(self, task: str, level: str) -> float:
        easy, hard = self.accuracy[task]
        return hard if level == "hard" else easy

    def expected(self, task: str, hard_share: float = routing_data.HARD_SHARE) -> float:
        easy, hard = self.accuracy[task]
        return (1 - hard_share) * easy + hard_share * hard


# Prices: list prices of the models they stand for (USD per million tokens, late 2026 lists).
# Accuracy: easy items (a plain review, a one-person note, a two-number sum, a builtin, a
# one-paragraph summary) are what small models get right almost always; hard ones (sarcasm in
# a thread, two people in an export, a delivery note to multiply out, a stdlib corner, a long
# article) separate them. Tasks in routing_data.TASKS order: classify, extract, math, code, summarize.
MODELS = (
    SimModel("frontier", "GPT-4o class", 2.50, 10.00,
             {"classify": (0.99, 0.93), "extract": (0.99, 0.94), "math": (0.99, 0.92), "code": (0.99, 0.90),
              "summarize": (0.99, 0.93)}),
    SimModel("mid", "GPT-4.1-mini class", 0.40, 1.60,
             {"classify": (0.98, 0.75), "extract": (0.98, 0.72), "math": (0.98, 0.65), "code": (0.97, 0.65),
              "summarize": (0.98, 0.78)}),
    SimModel("small", "Mistral Small class", 0.10, 0.30,
             {"classify": (0.98, 0.45), "extract": (0.97, 0.40), "math": (0.96, 0.30), "code": (0.95, 0.35),
              "summarize": (0.97, 0.50)}),
    SimModel("tiny", "Qwen2.5-7B class", 0.04, 0.10,
             {"classify": (0.97, 0.35), "extract": (0.95, 0.30), "math": (0.90, 0.15), "code": (0.88, 0.20),
              "summarize": (0.96, 0.40)}),
)  # fmt: skip
BY_NAME = {m.name: m for m in MODELS}
BY_TARGET = {m.target_id: m for m in MODELS}
FRONTIER = MODELS[0]
JUDGE = SimModel("judge", "GPT-4o class", 2.50, 10.00, {})


def best_fixed(floor: float) -> dict[str, str]:
    """Per task, the cheapest model whose expected accuracy meets the floor, else the most accurate."""
    out = {}
    for task in routing_data.TASKS:
        ok = [m for m in MODELS if m.expected(task) >= floor]
        pick = min(ok, key=lambda m: m.price_in + m.price_out) if ok else max(MODELS, key=lambda m: m.expected(task))
        out[task] = pick.name
    return out


def gateway_sections(sim_url: str, floor: float, store: Path) -> dict[str, Any]:
    def target(m: SimModel) -> dict[str, Any]:
        return {"provider": m.name, "model": m.model, "price": {"input": m.price_in, "output": m.price_out}}

    def quality_group(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "strategy": "quality",
            "quality": {"floor": floor},
            "targets": [target(m) for m in MODELS],
        }

    return {
        "log": {"level": "warning", "format": "json"},
        "providers": {
            m.name: {"type": "openai", "base_url": f"{sim_url}/{m.name}/v1", "api_key": SIM_KEY}
            for m in (*MODELS, JUDGE)
        },
        "models": [
            quality_group("auto"),
            quality_group("learn"),
            *({"name": m.name, "targets": [target(m)]} for m in (*MODELS, JUDGE)),
        ],
        "auth": {"master_key": MASTER},
        "store": {"url": f"sqlite:///{store}"},
    }


def set_profiles(sim_url: str) -> None:
    for m in MODELS:
        body = {"quality": {t: {"easy": e, "hard": h} for t, (e, h) in m.accuracy.items()}, "models": [m.model]}
        _post_json(f"{sim_url}/_sim/profile?account={m.name}", body)
    _post_json(f"{sim_url}/_sim/profile?account={JUDGE.name}", {"judge": True, "models": [JUDGE.model]})


def _post_json(url: str, body: Any, headers: dict[str, str] | None = None) -> Any:
    req = urllib.request.Request(url, data=orjson.dumps(body), method="POST",
                                 headers={"content-type": "application/json", **(headers or {})})  # fmt: skip
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")


def answer_of(row: dict[str, Any]) -> str:
    """The item's right answer as the oracle says it (its marker's `answer=`)."""
    e = row["expected"]
    return e if isinstance(e, str) else orjson.dumps(e).decode()


@dataclass(slots=True)
class Event:
    item: str
    task: str
    level: str
    target: str
    cost: float
    correct: bool
    reason: str = ""


class Driver:
    """Sends items one at a time (learning is sequential) and rates each answer."""

    def __init__(self, url: str, session: aiohttp.ClientSession, deadline: float) -> None:
        self.url, self.session, self.deadline = url, session, deadline

    async def ask(self, model: str, row: dict[str, Any]) -> tuple[Event, str]:
        if time.monotonic() > self.deadline:
            raise SystemExit("the workload ran out of time (--timeout)")
        body = {"model": model, "messages": row["messages"], "temperature": 0}
        headers = {"x-aiogw-task": row["task"], "cache-control": "no-cache, no-store"}
        async with self.session.post(f"{self.url}/v1/chat/completions", json=body, headers=headers) as r:
            data = await r.json()
            if r.status != 200:
                raise SystemExit(f"{model}: {r.status} {data}")
            h = r.headers
        text = (data["choices"][0]["message"]["content"] or "").strip()
        ev = Event(row["id"], row["task"], row["level"], f"{h['x-aiogw-provider']}/{h['x-aiogw-model']}",
                   float(h.get("x-aiogw-cost-usd", 0.0)), text == answer_of(row), h.get("x-aiogw-route-reason", ""))  # fmt: skip
        return ev, h["x-request-id"]

    async def rate(self, request_id: str, correct: bool) -> None:
        body = {"request_id": request_id, "metric": "correct", "value": correct}
        for _ in range(50):  # the memory is written as the request ends, just after its body is sent
            async with self.session.post(f"{self.url}/v1/feedback", json=body) as r:
                if r.status == 202:
                    return
                if r.status != 404:
                    raise SystemExit(f"feedback: {r.status} {await r.text()}")
            await asyncio.sleep(0.01)
        raise SystemExit(f"feedback: request {request_id} still unknown")

    async def run(self, model: str, rows: list[dict[str, Any]], feedback: bool) -> list[Event]:
        out = []
        for row in rows:
            ev, rid = await self.ask(model, row)
            if feedback:
                await self.rate(rid, ev.correct)
            out.append(ev)
        return out


def run_eval(url: str, dev: Path, out: Path, deadline: float) -> None:
    cmd = [sys.executable, "-P", "-m", "aiogw", "eval", "run", "--dataset", str(dev), "--url", url,
           "--models", ",".join(m.name for m in MODELS), "--judge", JUDGE.name, "--concurrency", "8", "--out", str(out)]  # fmt: skip
    p = subprocess.run(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=max(1.0, deadline - time.monotonic())
    )
    if p.returncode != 0:
        raise SystemExit(f"aiogw eval run exited {p.returncode}: {p.stdout.decode()[-2000:]}")


def summary(events: list[Event], frontier: dict[str, Event]) -> dict[str, Any]:
    """Cost and measured quality of `events`, against the frontier model on the same items."""
    n = len(events)
    cost = sum(e.cost for e in events)
    quality = sum(e.correct for e in events) / n
    f_cost = sum(frontier[e.item].cost for e in events)
    f_quality = sum(frontier[e.item].correct for e in events) / n
    expected = sum(BY_TARGET[e.target].acc(e.task, e.level) for e in events) / n
    f_expected = sum(FRONTIER.acc(e.task, e.level) for e in events) / n
    by_task: dict[str, dict[str, dict[str, int]]] = {}
    for e in events:
        cell = by_task.setdefault(e.task, {}).setdefault(e.level, {})
        cell[e.target.partition("/")[0]] = cell.get(e.target.partition("/")[0], 0) + 1
    shares: dict[str, dict[str, float]] = {}
    for level in ("easy", "hard"):
        sel = [e for e in events if e.level == level]
        shares[level] = (
            {m.name: round(sum(e.target == m.target_id for e in sel) / len(sel), 3) for m in MODELS} if sel else {}
        )
    return {
        "events": n, "cost_usd": round(cost, 6), "cost_per_item_usd": cost / n, "quality": round(quality, 4),
        "expected_quality": round(expected, 4), "frontier_cost_usd": round(f_cost, 6), "frontier_quality": round(f_quality, 4),
        "cheaper_than_frontier": round(1 - cost / f_cost, 4) if f_cost else None,
        "of_frontier_quality": round(quality / f_quality, 4) if f_quality else None,
        "of_frontier_expected_quality": round(expected / f_expected, 4), "share_by_level": shares,
        "picks_by_task": by_task,
    }  # fmt: skip


def regret_curve(events: list[Event], fixed: dict[str, Event], frontier: dict[str, Event], lam: float) -> list[float]:
    """Cumulative expected utility of the fixed routing minus the learner's, per event."""

    def utility(target: str, e: Event, cost: float) -> float:
        base = frontier[e.item].cost
        return BY_TARGET[target].acc(e.task, e.level) - lam * (cost / base if base else 0.0)

    out, total = [], 0.0
    for e in events:
        f = fixed[e.item]
        total += utility(f.target, f, f.cost) - utility(e.target, e, e.cost)
        out.append(round(total, 4))
    return out


def plot_regret(curve: list[float], prior_curve: list[float], path: Path, lam: float) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    ax.plot(range(1, len(curve) + 1), curve, label="feedback only (learn)")
    ax.plot(range(1, len(prior_curve) + 1), prior_curve, label="eval prior + feedback (auto)", alpha=0.8)
    ax.axhline(0, color="grey", lw=0.8, ls="--")
    ax.set(title=f"regret against the best fixed per-task routing (utility: accuracy - {lam:g} x cost/frontier cost)",
           xlabel="feedback events", ylabel="cumulative utility: fixed - learner")  # fmt: skip
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def markdown(report: dict[str, Any]) -> str:
    rows = report["runs"]
    out = ["| routing | items | cost (USD) | cost per item (USD) | quality (measured) | cheaper than frontier | of frontier quality |",
           "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for name, r in rows.items():
        out.append(f"| {name} | {r['events']} | {r['cost_usd']:.4f} | {r['cost_per_item_usd']:.6f} | {r['quality']:.3f} "
                   f"| {r['cheaper_than_frontier']:.1%} | {r['of_frontier_quality']:.1%} |")  # fmt: skip
    reg = report["regret"]
    out += ["", f"Regret of feedback-only learning against the best fixed per-task routing "
            f"({', '.join(f'{t}: {m}' for t, m in report['best_fixed'].items())}), cumulative expected utility: "
            + ", ".join(f"{k} events: {v:+.2f}" for k, v in reg["at"].items())
            + (f"; below zero from event {reg['below_zero_from']} on." if reg["below_zero_from"] else "; never below zero.")]  # fmt: skip
    return "\n".join(out) + "\n"


async def _drive(url: str, test: list[dict[str, Any]], events: int, deadline: float) -> dict[str, list[Event]]:
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        d = Driver(url, s, deadline)
        runs = {"frontier": await d.run(FRONTIER.name, test, feedback=False)}
        fixed = best_fixed(FLOOR)
        runs["fixed"] = [(await d.ask(fixed[row["task"]], row))[0] for row in test]
        runs["auto"] = await d.run("auto", test, feedback=True)
        repeated = [test[i % len(test)] for i in range(max(events, len(test)))]
        runs["learn"] = await d.run("learn", repeated, feedback=True)
        return runs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m aiogw.bench.routing_workload", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="folder for the report, the plots and the eval run")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--items", type=int, default=1000, help="dataset items in all (dev + test)")
    ap.add_argument("--dev-share", type=float, default=0.3, help="share of the items in the dev split (the eval)")
    ap.add_argument("--events", type=int, default=1400, help="feedback events of the feedback-only run, at least")
    ap.add_argument("--lam", type=float, default=LAMBDA, help="utility: accuracy - lam x cost / frontier cost")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds for the whole run")
    args = ap.parse_args(argv)
    if not 10 <= args.items <= 100_000 or not 1 <= args.events <= 100_000 or not 0 < args.dev_share < 1:
        ap.error("--items 10..100000, --events 1..100000, --dev-share in (0, 1)")
    deadline = time.monotonic() + args.timeout
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = list(routing_data.items(args.items, args.seed))
    dev, test = routing_data.split(rows, args.dev_share, args.seed)
    routing_data.write(out / "dev.jsonl", dev)
    routing_data.write(out / "test.jsonl", test)
    procs: list[Proc] = []
    try:
        sim = start_listening(
            [sys.executable, "-P", "-m", "aiogw.bench.simulator", "--port", "0"], "the simulator", None
        )
        procs.append(sim)
        set_profiles(sim.url)
        with tempfile.TemporaryDirectory() as tmp:
            gw = start_gateway(
                sim.url, "openai", None, Path(tmp), gateway_sections(sim.url, FLOOR, Path(tmp) / "aiogw.db")
            )
            procs.append(gw)
            t0 = time.monotonic()
            run_eval(gw.url, out / "dev.jsonl", out / "eval", deadline)
            eval_s = time.monotonic() - t0
            loaded = _post_json(f"{gw.url}/admin/v1/routing/auto/quality", json.loads((out / "eval" / "quality.json").read_text()),
                                {"authorization": f"Bearer {MASTER}"})  # fmt: skip
            runs = asyncio.run(_drive(gw.url, test, args.events, deadline))
    finally:
        for p in reversed(procs):
            p.stop()
    frontier = {e.item: e for e in runs["frontier"]}
    fixed = {e.item: e for e in runs["fixed"]}
    learn = runs["learn"]
    curve = regret_curve(learn, fixed, frontier, args.lam)
    prior_curve = regret_curve(runs["auto"], fixed, frontier, args.lam)
    below = next((i + 1 for i in range(len(curve)) if all(c < 0 for c in curve[i:])), None)
    report = {
        "args": vars(args), "floor": FLOOR, "lambda": args.lam, "dev_items": len(dev), "test_items": len(test),
        "eval_seconds": round(eval_s, 1), "prior_loaded": loaded.get("matched"),
        "models": [{"name": m.name, "like": m.like, "target": m.target_id, "price_in": m.price_in,
                    "price_out": m.price_out, "accuracy": m.accuracy} for m in MODELS],
        "best_fixed": best_fixed(FLOOR),
        "runs": {
            "frontier (always)": summary(runs["frontier"], frontier),
            "best fixed per task": summary(runs["fixed"], frontier),
            "quality, eval prior + feedback": summary(runs["auto"], frontier),
            f"quality, feedback only (last {min(LAST, len(learn))} of {len(learn)})": summary(learn[-LAST:], frontier),
        },
        "regret": {"at": {str(k): curve[k - 1] for k in (100, 250, 500, 1000, len(curve)) if k <= len(curve)},
                   "below_zero_from": below, "curve": curve, "prior_curve": prior_curve},
    }  # fmt: skip
    (out / "report.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    table = markdown(report)
    (out / "report.md").write_text(table)
    plot_regret(curve, prior_curve, out / "regret.png", args.lam)
    if (out / "eval" / "pareto.png").exists():
        (out / "pareto.png").write_bytes((out / "eval" / "pareto.png").read_bytes())
    print(table)
    print(f"report: {out / 'report.json'}, {out / 'report.md'}, {out / 'regret.png'}, {out / 'pareto.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
