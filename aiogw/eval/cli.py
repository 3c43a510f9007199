"""`aiogw eval run | report | compare`. Exit status: 0 ok, 1 a --cutoff missed, 2 a harness
error (dataset, flags, config, gateway unreachable, a missing extra), 3 the cost cap reached."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_CUTOFF, EXIT_HARNESS, EXIT_COST_CAP = 0, 1, 2, 3
NEEDS = ("tqdm", "matplotlib")  # the progress bar and pareto.png: the 'eval' extra


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="eval_command", required=True)
    r = sub.add_parser("run", help="score models on a JSONL dataset through the gateway")
    r.add_argument("--dataset", required=True, help="JSONL: {id, task, messages|prompt, expected, grader?} a line")
    r.add_argument("--models", required=True, help="comma-separated model names, as clients send them")
    src = r.add_mutually_exclusive_group(required=True)
    src.add_argument("--url", help="a running gateway (key from $AIOGW_API_KEY when it needs one)")
    src.add_argument("--config", help="start a gateway from this config, in process, on a free 127.0.0.1 port")
    r.add_argument("--concurrency", type=_positive, default=8, help="calls in flight at once (default 8)")
    r.add_argument("--repeats", type=_positive, default=1, help="times each item is sent to each model (default 1)")
    r.add_argument("--max-cost-usd", type=float, help="stop sending once the gateway reports this much spent (exit 3)")
    r.add_argument("--judge", help="the model that grades llm_judge items")
    r.add_argument("--out", help="output folder (default eval-YYYYmmdd-HHMMSS)")
    r.add_argument("--cutoff", help="0.9, or task=0.9,...,*=0.8: exit 1 when a model x task mean is below")
    rep = sub.add_parser("report", help="rewrite a run's reports from its results.jsonl")
    rep.add_argument("run", help="a run's folder")
    rep.add_argument("--cutoff", help="as for run")
    c = sub.add_parser("compare", help="compare two runs item by item")
    c.add_argument("a", help="the baseline run (folder or results.jsonl)")
    c.add_argument("b", help="the new run")
    c.add_argument("--cutoff", help="exit 1 when a model x task mean of B is below (as for run)")
    c.add_argument("--json", action="store_true", help="print the comparison as JSON")


def _positive(v: str) -> int:
    n = int(v)
    if n < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return n


def _fail(message: str) -> int:
    print(f"aiogw eval: {message}", file=sys.stderr)
    return EXIT_HARNESS


def run(args: argparse.Namespace) -> int:
    try:
        if args.eval_command == "compare":
            return _compare(args)
        missing = _missing_extra()
        if missing:
            return _fail(missing)
        if args.eval_command == "report":
            return _report(args)
        return _run(args)
    except ValueError as exc:  # a bad flag value found past argparse (e.g. --cutoff)
        return _fail(str(exc))


def _missing_extra() -> str | None:
    from aiogw.extras import installed  # noqa: PLC0415

    absent = [m for m in NEEDS if not installed(m)]
    if absent:
        return f"needs {', '.join(absent)}: the 'eval' extra: pip install 'aiogw[eval]'"
    return None


def _run(args: argparse.Namespace) -> int:
    from aiogw.eval import report  # noqa: PLC0415
    from aiogw.eval.dataset import DatasetError, load  # noqa: PLC0415

    floors = report.cutoffs(args.cutoff) if args.cutoff else {}
    if args.max_cost_usd is not None and not args.max_cost_usd > 0:
        return _fail("--max-cost-usd must be above 0")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models:
        return _fail("--models names no model")
    try:
        items = load(args.dataset)
    except DatasetError as exc:
        for problem in exc.problems:
            print(f"aiogw eval: {problem}", file=sys.stderr)
        return EXIT_HARNESS
    judged = [it for it in items if it.grader == "llm_judge"]
    if judged and not args.judge:
        return _fail(f"{len(judged)} items use llm_judge (first on line {judged[0].line}): pass --judge MODEL")
    out = Path(args.out or time.strftime("eval-%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    try:
        outcome = asyncio.run(_send(args, items, models))
    except _Harness as exc:
        return _fail(str(exc))
    with (out / "results.jsonl").open("wb") as f:
        for res in outcome.results:
            f.write(res.to_json() + b"\n")
    meta = {
        "dataset": str(args.dataset),
        "items": len(items),
        "repeats": args.repeats,
        "judge": args.judge,
        "max_cost_usd": args.max_cost_usd,
        "spent_usd": round(outcome.spent_usd, 10),
        "capped": outcome.capped,
        "created": int(time.time()),
    }
    written = report.write(out, [asdict(r) for r in outcome.results], meta)
    print(report.markdown(written["models"], meta), end="")
    print(f"aiogw eval: results, reports, quality.json and pareto.png in {out}/", file=sys.stderr)
    if outcome.capped:
        print(
            f"aiogw eval: cost cap reached (${outcome.spent_usd:.6f} >= ${args.max_cost_usd}); stopped", file=sys.stderr
        )
        return EXIT_COST_CAP
    return _cutoff_status(report.missed(written["models"], floors))


def _cutoff_status(missed: list[str]) -> int:
    for line in missed:
        print(f"aiogw eval: below cutoff: {line}", file=sys.stderr)
    return EXIT_CUTOFF if missed else EXIT_OK


class _Harness(Exception):
    """The run could not be made (config, gateway): exit 2."""


async def _send(args: argparse.Namespace, items: list[Any], models: list[str]) -> Any:
    from tqdm import tqdm  # noqa: PLC0415

    from aiogw.eval.runner import Runner, Unreachable  # noqa: PLC0415

    bar = tqdm(total=len(items) * len(models) * args.repeats, unit="call", desc="eval", file=sys.stderr)

    def progress(_result: Any, spent: float) -> None:
        bar.update(1)
        bar.set_postfix_str(f"${spent:.4f}", refresh=False)

    try:
        async with _gateway(args) as url:
            runner = Runner(
                url, api_key=os.environ.get("AIOGW_API_KEY"), concurrency=args.concurrency,
                max_cost_usd=args.max_cost_usd, judge=args.judge, on_result=progress,
            )  # fmt: skip
            return await runner.run(items, models, args.repeats)
    except Unreachable as exc:
        raise _Harness(str(exc)) from None
    finally:
        bar.close()


@asynccontextmanager
async def _gateway(args: argparse.Namespace) -> AsyncIterator[str]:
    """The gateway's URL: --url as given, or one started from --config for the run."""
    if args.url:
        yield args.url
        return
    from aiohttp import web  # noqa: PLC0415

    from aiogw.config_load import load as load_config  # noqa: PLC0415
    from aiogw.errors import ConfigError  # noqa: PLC0415
    from aiogw.server.app import GatewayRunner, create_app  # noqa: PLC0415
    from aiogw.telemetry.logs import configure  # noqa: PLC0415

    try:
        cfg = load_config(args.config)
        configure("warning", cfg.log.format)  # the gateway's warnings only: the report is the output
        app = create_app(cfg)
    except ConfigError as exc:
        raise _Harness("invalid config: " + "; ".join(map(str, exc.errors))) from None
    runner = GatewayRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = next(a for a in runner.addresses if isinstance(a, tuple))[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _report(args: argparse.Namespace) -> int:
    import orjson  # noqa: PLC0415

    from aiogw.eval import report  # noqa: PLC0415

    folder = Path(args.run)
    floors = report.cutoffs(args.cutoff) if args.cutoff else {}
    try:
        results = report.read_results(folder / "results.jsonl")
    except (OSError, orjson.JSONDecodeError) as exc:
        return _fail(f"cannot read {folder / 'results.jsonl'}: {exc}")
    meta: dict[str, Any] = {}
    if (folder / "report.json").exists():
        old = orjson.loads((folder / "report.json").read_bytes())
        meta = {k: v for k, v in old.items() if k not in ("version", "models")}
    written = report.write(folder, results, meta)
    print(report.markdown(written["models"], meta), end="")
    return _cutoff_status(report.missed(written["models"], floors))


def _compare(args: argparse.Namespace) -> int:
    import orjson  # noqa: PLC0415

    from aiogw.eval import compare, report  # noqa: PLC0415

    floors = report.cutoffs(args.cutoff) if args.cutoff else {}
    try:
        a, b = compare.results_of(args.a), compare.results_of(args.b)
    except (OSError, orjson.JSONDecodeError, KeyError) as exc:
        return _fail(f"cannot read a run: {exc}")
    rows = compare.compare(a, b)
    if args.json:
        print(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
    else:
        print(compare.markdown(rows, args.a, args.b), end="")
    return _cutoff_status(report.missed(report.summarize(b), floors))
