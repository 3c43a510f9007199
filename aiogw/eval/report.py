"""A run's report per model x task, written as report.json, report.md, quality.json (the
quality router's prior) and pareto.png (cost vs quality per task), from results.jsonl."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

Z95 = 1.959963984540054


def wilson(mean: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion `mean` over `n` observations (a mean
    score in [0, 1] is taken as a proportion); (0, 1) when there are none."""
    if n <= 0:
        return 0.0, 1.0
    denom = 1 + z * z / n
    centre = (mean + z * z / (2 * n)) / denom
    half = z * math.sqrt(mean * (1 - mean) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between the closest ranks (q in [0, 100])."""
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def read_results(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def cell(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The statistics of one model x task: graded observations apart from errors."""
    graded = [r for r in rows if not r["error"]]
    n = len(graded)
    mean = sum(r["score"] for r in graded) / n if n else 0.0
    passes = sum(1 for r in graded if r["passed"])
    lo, hi = wilson(mean, n)
    latencies = [r["latency_ms"] for r in graded]
    p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
    return {
        "n": n,
        "mean": round(mean, 6),
        "lo": round(lo, 6),
        "hi": round(hi, 6),
        "pass_rate": round(passes / n, 6) if n else 0.0,
        "passed": passes,
        "errors": len(rows) - n,
        "items": len({r["id"] for r in rows}),
        "cost_per_item_usd": round(sum(r["cost_usd"] for r in rows) / len(rows), 10) if rows else 0.0,
        "cost_usd": round(sum(r["cost_usd"] for r in rows), 10),
        "judge_cost_usd": round(sum(r["judge_cost_usd"] for r in rows), 10),
        "latency_p50_ms": round(p50, 2) if p50 is not None else None,
        "latency_p95_ms": round(p95, 2) if p95 is not None else None,
        "buckets": _buckets(graded),
    }


def _buckets(graded: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """n and mean score per prompt-feature bucket (rows of runs before buckets were kept have none)."""
    by: dict[str, list[float]] = defaultdict(list)
    for r in graded:
        if r.get("bucket"):
            by[r["bucket"]].append(r["score"])
    return {b: {"n": len(v), "mean": round(sum(v) / len(v), 6)} for b, v in sorted(by.items())}


def summarize(results: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """model -> task -> cell, plus task "*" (all of a model's items), in first-seen order."""
    groups: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        groups[r["model"]][r["task"]].append(r)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for model, tasks in groups.items():
        out[model] = {task: cell(rows) for task, rows in tasks.items()}
        out[model]["*"] = cell([r for rows in tasks.values() for r in rows])
    return out


QUALITY_KEYS = ("n", "mean", "lo", "hi", "cost_per_item_usd", "latency_p50_ms", "latency_p95_ms", "errors")


def quality_json(summary: dict[str, dict[str, dict[str, Any]]], created: int) -> dict[str, Any]:
    """The router's prior: per model x task (no "*": the router estimates per task)."""
    return {
        "version": 1,
        "metric": "correct",
        "created": created,
        "models": {
            model: {
                task: {
                    **{k: (c[k] if c[k] is not None else 0.0) for k in QUALITY_KEYS},
                    **({"buckets": c["buckets"]} if c.get("buckets") else {}),
                }
                for task, c in tasks.items()
                if task != "*"
            }
            for model, tasks in summary.items()
        },
    }


def markdown(summary: dict[str, dict[str, dict[str, Any]]], meta: dict[str, Any]) -> str:
    lines = [
        f"# aiogw eval: {meta.get('dataset', '')}",
        "",
        f"{meta.get('items', 0)} items x {len(summary)} models x {meta.get('repeats', 1)} repeats; "
        f"spent ${meta.get('spent_usd', 0):.6f}" + (" (stopped at the cost cap)" if meta.get("capped") else ""),
        "",
        "| model | task | n | mean | 95% interval | pass rate | errors | cost/item (USD) | p50 ms | p95 ms |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for model, tasks in summary.items():
        for task, c in sorted(tasks.items(), key=lambda kv: (kv[0] == "*", kv[0])):
            lines.append(
                f"| {model} | {'all' if task == '*' else task} | {c['n']} | {c['mean']:.3f} | "
                f"{c['lo']:.3f}–{c['hi']:.3f} | {c['pass_rate']:.3f} | {c['errors']} | "
                f"{c['cost_per_item_usd']:.8f} | {_ms(c['latency_p50_ms'])} | {_ms(c['latency_p95_ms'])} |"
            )
    return "\n".join(lines) + "\n"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def pareto_png(summary: dict[str, dict[str, dict[str, Any]]], path: Path) -> None:
    """Cost per item against mean quality, one panel per task, the cost-quality frontier drawn."""
    import matplotlib  # noqa: PLC0415 - the eval extra, checked before the run starts

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    tasks = [*sorted({t for cells in summary.values() for t in cells if t != "*"}), "*"]
    cols = min(3, len(tasks))
    rows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks, strict=False):
        points = [(c[task]["cost_per_item_usd"], c[task]["mean"], m) for m, c in summary.items() if task in c]
        for cost, mean, model in points:
            ax.scatter(cost, mean, s=36)
            ax.annotate(model, (cost, mean), fontsize=7, xytext=(3, 3), textcoords="offset points")
        frontier, best = [], -1.0
        for cost, mean, _ in sorted(points, key=lambda p: (p[0], -p[1])):
            if mean > best:
                frontier.append((cost, mean))
                best = mean
        if len(frontier) > 1:
            ax.plot(*zip(*frontier, strict=True), linestyle="--", linewidth=1, color="grey")
        ax.set_title("all tasks" if task == "*" else task, fontsize=10)
        ax.set_xlabel("cost per item (USD)", fontsize=8)
        ax.set_ylabel("mean quality", fontsize=8)
        ax.set_ylim(-0.05, 1.05)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(out: Path, results: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """report.json, report.md, quality.json and pareto.png in `out` (results.jsonl is the
    runner's); the report as a dict."""
    summary = summarize(results)
    created = int(meta.get("created") or time.time())
    report = {"version": 1, **meta, "created": created, "models": summary}
    (out / "report.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    (out / "report.md").write_text(markdown(summary, meta))
    (out / "quality.json").write_bytes(orjson.dumps(quality_json(summary, created), option=orjson.OPT_INDENT_2))
    pareto_png(summary, out / "pareto.png")
    return report


def cutoffs(spec: str) -> dict[str, float]:
    """`0.9` (every task) or `math=0.95,classify=0.8,*=0.7` -> task -> floor ("*": the rest)."""
    out: dict[str, float] = {}
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        task, _, value = part.rpartition("=")
        try:
            floor = float(value)
        except ValueError:
            raise ValueError(f"--cutoff: {part!r} is not a number or task=number") from None
        if not 0 <= floor <= 1:
            raise ValueError(f"--cutoff: {floor} is not between 0 and 1")
        out[task or "*"] = floor
    return out


def missed(summary: dict[str, dict[str, dict[str, Any]]], floors: dict[str, float]) -> list[str]:
    """The model x task cells whose mean is below their floor, as lines to print."""
    out = []
    for model, tasks in summary.items():
        for task, c in tasks.items():
            if task == "*":
                continue
            floor = floors.get(task, floors.get("*"))
            if floor is not None and c["mean"] < floor:
                out.append(f"{model} {task}: mean {c['mean']:.3f} < cutoff {floor:g} (n={c['n']})")
    return out
