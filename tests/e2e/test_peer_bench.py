"""bench/peers, the harness behind the README's peer table, run from the checkout as users
run it: tiny and bounded. That it measures every target and prints the table with numbers
is asserted; the numbers themselves are not (never wall-clock in tests)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from openai import AsyncOpenAI

PEERS = Path(__file__).resolve().parents[2] / "bench" / "peers"
NEEDS_WRK = pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not installed (tests/system-deps.sh installs it)"
)


def run_peers(*args: str, timeout: float = 100) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(PEERS / "run.py"), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@NEEDS_WRK
def test_the_peer_bench_measures_each_target_and_prints_the_table(tmp_path):
    out = tmp_path / "out"
    # No --targets: every installed one. An empty peers folder leaves Portkey and LiteLLM out.
    proc = run_peers(
        "--peers-dir",
        str(tmp_path / "no-peers"),
        "--conns",
        "4",
        "--reps",
        "1",
        "--duration",
        "1",
        "--warmup",
        "0",
        "--idle-max-s",
        "2",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "not installed, left out: portkey, litellm" in proc.stderr
    table = proc.stdout
    assert "| requests/s (gateway CPU ms per request) | conc | direct | bare aiohttp proxy | **aiogw** |" in table
    num, cell = r"[\d,]+", r"[\d,]+ \([\d.]+\)"
    for scenario in ("non-streaming", "streaming, 20 chunks"):
        row = rf"\| {scenario} \| 4 \| {num} \| {cell} \| \*\*{cell}\*\* \|"
        assert re.search(row, table), table
        for target in ("direct", "bare", "aiogw"):
            assert re.search(rf"\| {scenario} \| 4 \| {target} \| {num} \| [\d.]+× \| [\d.]+× \|", table), table
    assert (out / "results.md").read_text().strip() == table.strip()
    rows = [json.loads(line) for line in (out / "raw.jsonl").read_text().splitlines()]
    assert {(r["scenario"], r["target"]) for r in rows} == {
        (s, t) for s in ("nonstream", "stream") for t in ("direct", "bare", "aiogw")
    }
    for r in rows:
        assert r["errors"] == 0 and r["requests"] > 0, r
        assert (r["cpu_ms_per_req"] is None) == (r["target"] == "direct"), r
        assert r["target"] == "direct" or r["cpu_ms_per_req"] > 0, r
    for name in ("upstream", "bare", "aiogw"):
        assert (out / "logs" / f"{name}.log").exists()


def test_a_peer_that_is_not_installed_is_named_with_how_to_install_it(tmp_path):
    proc = run_peers("--targets", "direct,litellm", "--peers-dir", str(tmp_path), timeout=30)
    assert proc.returncode == 2
    assert f"litellm is not installed in {tmp_path}: run `bash bench/peers/install.sh litellm`" in proc.stderr


def _content() -> str:
    spec = importlib.util.spec_from_file_location("fixed_upstream", PEERS / "fixed_upstream.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CONTENT


async def test_the_fixed_upstream_answers_the_official_sdk_whole_and_streamed():
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(PEERS / "fixed_upstream.py"), "--port", "0", "--chunks", "7", stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert "listening on http://127.0.0.1:" in line, line
        client = AsyncOpenAI(base_url=line.rsplit(" ", 1)[1].strip() + "/v1", api_key="any", max_retries=0)
        messages = [{"role": "user", "content": "hi"}]
        reply = await client.chat.completions.create(model="any-model", messages=messages)
        assert reply.model == "any-model" and reply.choices[0].message.content == _content()
        assert reply.usage is not None and reply.usage.total_tokens == 140
        stream = await client.chat.completions.create(
            model="m", messages=messages, stream=True, stream_options={"include_usage": True}
        )
        chunks = [c async for c in stream]
        deltas = [c.choices[0].delta.content for c in chunks if c.choices]
        assert len(deltas) == 7 and "".join(deltas) == _content()
        assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 140
        await client.close()
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)


def test_the_redis_cache_target_starts_its_own_redis_and_answers_from_it(tmp_path):
    out = tmp_path / "out"
    proc = run_peers(
        *("--targets", "aiogw-cache-hit-redis", "--scenarios", "nonstream", "--conns", "4", "--reps", "1"),
        *("--duration", "1", "--warmup", "0", "--idle-max-s", "2", "--out", str(out)),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    [row] = [json.loads(line) for line in (out / "raw.jsonl").read_text().splitlines()]
    assert row["target"] == "aiogw-cache-hit-redis" and row["errors"] == 0 and row["requests"] > 0, row
    log = (out / "logs" / "aiogw-cache-hit-redis.log").read_text()
    assert log.count('"cache":"hit"') >= row["requests"] - 1  # all but the first answered from Redis
