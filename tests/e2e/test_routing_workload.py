"""bench/routing_workload.py end to end, tiny and bounded: simulator and gateway processes,
a real `aiogw eval run`, the quality groups driven with feedback, and its report."""

from __future__ import annotations

import json
import subprocess
import sys


def test_the_routing_workload_writes_a_well_formed_report(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-P", "-m", "aiogw.bench.routing_workload", "--out", str(out), "--items", "60",
           "--events", "80", "--seed", "3", "--timeout", "50"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["dev_items"] + report["test_items"] == 60 and report["test_items"] > 0
    assert set(report["prior_loaded"]) == {"frontier", "mid", "small", "tiny"}
    runs = report["runs"]
    assert list(runs)[:3] == ["frontier (always)", "best fixed per task", "quality, eval prior + feedback"]
    frontier = runs["frontier (always)"]
    assert frontier["cheaper_than_frontier"] == 0.0 and frontier["of_frontier_quality"] == 1.0
    assert frontier["share_by_level"]["easy"]["frontier"] == 1.0
    for name, r in runs.items():
        assert r["events"] > 0 and r["cost_usd"] > 0 and 0 <= r["quality"] <= 1, name
        assert r["frontier_cost_usd"] >= r["cost_usd"] or name == "frontier (always)", name
    learn = next(r for name, r in runs.items() if name.startswith("quality, feedback only"))
    assert learn["events"] == 80  # the last 500 of 80: all of them
    assert report["best_fixed"] == {"classify": "tiny", "extract": "tiny", "math": "small", "code": "small",
                                    "summarize": "tiny"}  # fmt: skip
    regret = report["regret"]
    assert len(regret["curve"]) == 80 and len(regret["prior_curve"]) == report["test_items"]
    assert regret["at"]["80"] == regret["curve"][-1]
    table = (out / "report.md").read_text()
    assert table.startswith("| routing | items | cost (USD) |") and "| frontier (always) |" in table
    assert "Regret of feedback-only learning" in table
    for png in ("regret.png", "pareto.png", "eval/pareto.png"):
        assert (out / png).read_bytes().startswith(b"\x89PNG"), png
    quality = json.loads((out / "eval" / "quality.json").read_text())
    assert set(quality["models"]) == {"frontier", "mid", "small", "tiny"}
    assert (out / "dev.jsonl").exists() and (out / "test.jsonl").exists()
