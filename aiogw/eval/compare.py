"""Two runs compared item by item: for each model x task, the items both pass, only one
passes, the mean difference with a paired 95% interval, and McNemar's exact test on the
discordant pairs (the items that changed), which is what a paired pass/fail comparison needs."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from aiogw.eval.report import Z95, read_results


def results_of(path: str | Path) -> list[dict[str, Any]]:
    """A run's results: its folder (results.jsonl in it) or the file itself."""
    p = Path(path)
    if p.is_dir():
        p = p / "results.jsonl"
    return read_results(p)


def _per_item(results: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, tuple[float, str]]]:
    """(model, task) -> id -> (mean score over graded repeats, task); errors left out."""
    scores: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for r in results:
        if not r["error"]:
            scores[r["model"], r["task"], r["id"]].append(r["score"])
    out: dict[tuple[str, str], dict[str, tuple[float, str]]] = defaultdict(dict)
    for (model, task, item), s in scores.items():
        out[model, task][item] = (sum(s) / len(s), task)
    return out


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: the discordant pairs as a fair coin's flips."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def compare(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per model x task present in both runs, over the items graded in both."""
    pa, pb = _per_item(a), _per_item(b)
    rows = []
    for key in [k for k in pa if k in pb]:
        model, task = key
        ids = sorted(set(pa[key]) & set(pb[key]))
        diffs, both, only_a, only_b, neither, changed = [], 0, 0, 0, 0, []
        for i in ids:
            sa, sb = pa[key][i][0], pb[key][i][0]
            diffs.append(sb - sa)
            ok_a, ok_b = sa >= 0.5, sb >= 0.5  # an item passes when most of its repeats do
            both += ok_a and ok_b
            neither += not ok_a and not ok_b
            if ok_a != ok_b:
                only_a += ok_a
                only_b += ok_b
                changed.append({"id": i, "a": round(sa, 4), "b": round(sb, 4)})
        n = len(diffs)
        mean = sum(diffs) / n if n else 0.0
        sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1)) if n > 1 else 0.0
        half = Z95 * sd / math.sqrt(n) if n else 0.0
        rows.append({
            "model": model, "task": task, "n": n, "both_pass": both, "only_a": only_a, "only_b": only_b,
            "neither": neither, "mean_a": round(sum(pa[key][i][0] for i in ids) / n, 6) if n else 0.0,
            "mean_b": round(sum(pb[key][i][0] for i in ids) / n, 6) if n else 0.0,
            "mean_diff": round(mean, 6), "diff_lo": round(mean - half, 6), "diff_hi": round(mean + half, 6),
            "mcnemar_p": round(mcnemar_p(only_a, only_b), 6), "changed": changed,
        })  # fmt: skip
    return rows


def markdown(rows: list[dict[str, Any]], a: str, b: str, show: int = 20) -> str:
    lines = [
        f"# aiogw eval compare: A={a} B={b}",
        "",
        "| model | task | paired n | both pass | only A | only B | mean A | mean B | B-A (95% interval) | McNemar p |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['task']} | {r['n']} | {r['both_pass']} | {r['only_a']} | {r['only_b']} | "
            f"{r['mean_a']:.3f} | {r['mean_b']:.3f} | {r['mean_diff']:+.3f} ({r['diff_lo']:+.3f}..{r['diff_hi']:+.3f}) "
            f"| {r['mcnemar_p']:.3g} |"
        )
    changed = [(r["model"], r["task"], c) for r in rows for c in r["changed"]]
    if changed:
        lines += ["", f"Items that changed ({len(changed)}; pass = score >= 0.5):", ""]
        for model, task, c in changed[:show]:
            lines.append(f"- {model} {task} {c['id']}: A {c['a']:g} -> B {c['b']:g}")
        if len(changed) > show:
            lines.append(f"- ... {len(changed) - show} more in the JSON (--json)")
    return "\n".join(lines) + "\n"
