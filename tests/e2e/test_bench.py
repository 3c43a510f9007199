"""`aiogw bench` end to end, tiny and bounded: it starts the simulator and a gateway
process, runs the same load at both, and writes JSON and Markdown results."""

from __future__ import annotations

import json
import subprocess
import sys


def run_bench(tmp_path, *extra):
    out = tmp_path / "out"
    cmd = [sys.executable, "-P", "-m", "aiogw", "bench", "--duration", "0.5", "--requests", "60",
           "--concurrency", "4", "--no-pin", "--out", str(out), *extra]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, timeout=90, check=False)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    return json.loads((out / "results.json").read_text()), (out / "results.md").read_text()


def test_bench_closed_loop_streams_against_direct_and_gateway(tmp_path):
    result, table = run_bench(tmp_path, "--stream", "--tokens-per-s", "2000")
    runs = {r["target"]: r for r in result["runs"]}
    assert set(runs) == {"direct", "aiogw"}
    for r in runs.values():
        assert r["requests_ok"] > 0 and r["errors"] == {}
        assert r["ttft_ms"]["p50"] is not None and r["gap_ms"]["p50"] is not None
    assert runs["aiogw"]["cpu_ms_per_req"] > 0 and runs["aiogw"]["peak_rss_mb"] > 0
    assert "| aiogw | 4 |" in table and "×direct" in table


def test_bench_open_loop_counts_every_arrival(tmp_path):
    result, _ = run_bench(tmp_path, "--mode", "open", "--rate", "100")
    for r in result["runs"]:
        assert 25 <= r["requests_sent"] <= 75  # Poisson arrivals: ~50 in 0.5 s at 100/s
        assert r["requests_ok"] + sum(r["errors"].values()) == r["requests_sent"]


def test_bench_translated_format_with_errors_counts_failovers_as_successes(tmp_path):
    result, _ = run_bench(tmp_path, "--format", "anthropic", "--stream", "--error-rate", "0.3")
    runs = {r["target"]: r for r in result["runs"]}
    assert set(runs) == {"aiogw"}  # no direct baseline for a non-OpenAI wire format
    r = runs["aiogw"]
    # A 503 from the simulator is retried by aiogw; only a double failure reaches the client.
    assert r["requests_ok"] > 0 and r["requests_ok"] + sum(r["errors"].values()) == r["requests_sent"]


def test_bench_paired_runs_direct_clients_alongside_and_reports_the_added_gap(tmp_path):
    result, table = run_bench(tmp_path, "--stream", "--tokens-per-s", "500", "--paired", "2", "--ramp-up", "0.1")
    runs = {r["target"]: r for r in result["runs"]}
    assert runs["direct"]["clients"] == 2 and runs["aiogw"]["clients"] == 4
    assert runs["direct"]["requests_ok"] > 0 and runs["aiogw"]["requests_ok"] > 0
    (gw,) = [m for m in result["summary"] if m["target"] == "aiogw"]
    assert gw["paired_added_gap_p99_ms"] is not None
    assert "| direct | 2 (paired) |" in table and "added gap p99 ms" in table


def test_client_cost_measures_both_clients_against_the_mock_upstream():
    cmd = [sys.executable, "-P", "-m", "aiogw.bench.client_cost", "--calls", "20", "--streams", "4", "--reps", "1",
           "--concurrency", "2", "--no-pin"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    rows = {line.split("|")[1].strip(): line for line in proc.stdout.decode().splitlines() if line.startswith("| ")}
    assert {"aiogw upstream_http", "aiohttp ClientSession", "aiohttp / aiogw"} <= set(rows)


def test_bounds_cost_compares_the_attempt_deadlines_with_asyncios():
    cmd = [sys.executable, "-P", "-m", "aiogw.bench.bounds_cost", "--attempts", "200", "--reps", "1"]
    proc = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    out = proc.stdout.decode()
    assert "| _Bounds |" in out and "| asyncio.timeout_at |" in out


def test_cache_memory_bench_fills_and_evicts_within_its_bound(tmp_path):
    cmd = [sys.executable, "-P", "-m", "aiogw.bench.cache_memory", "--requests", "1500", "--cache-mb", "1",
           "--concurrency", "8"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    out = json.loads(proc.stdout)
    assert out["requests_ok"] == 1500 and out["cache_writes"] >= 1500  # every distinct question stored
    assert 0 < out["cache_bytes_mb"] <= 1.0 and out["cache_entries"] < 1500  # so the oldest were evicted
    assert out["bounded"] and out["rss_peak_mb"] > 0
