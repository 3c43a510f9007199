"""`aiogw` as a real process: the demo, a config file, SIGTERM drain, --workers, logs."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from conftest import SIM_KEY, until
from openai import AsyncOpenAI
from procs import run_aiogw, start_aiogw, without_packages

MSG = [{"role": "user", "content": "Hello"}]


async def test_demo_serves_completions_and_streams_with_no_keys():
    p = await start_aiogw("--demo", env={"OPENAI_API_KEY": ""})
    try:
        async with AsyncOpenAI(base_url=p.url + "/v1", api_key="anything", max_retries=0) as c:
            models = [m.id async for m in c.models.list()]
            assert "demo-fast" in models
            whole = await c.chat.completions.create(model="demo-fast", messages=MSG)
            assert whole.choices[0].message.content.startswith("Simulated")
            stream = await c.chat.completions.create(model="demo-fast", messages=MSG, stream=True)
            text = "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])
            assert text == whole.choices[0].message.content
            for _ in range(4):  # the flaky account fails half the time; failover hides it
                r = await c.chat.completions.create(model="demo-failover", messages=MSG)
                assert r.choices[0].message.content
            for model in ("demo-claude", "demo-gemini", "demo-mixed"):  # native formats, simulated
                async with c.chat.completions.stream(model=model, messages=MSG) as s:
                    final = await s.get_final_completion()
                assert final.choices[0].message.content.startswith("Simulated")
    finally:
        assert await p.stop() == 0


async def test_the_demo_needs_no_extra(tmp_path):
    """`pip install .` then `aiogw serve --demo`: nothing an extra brings is imported."""
    p = await start_aiogw("--demo", env=without_packages(tmp_path, "redis", "opentelemetry", "tqdm", "matplotlib"))
    try:
        async with AsyncOpenAI(base_url=p.url + "/v1", api_key="anything", max_retries=0) as c:
            whole = await c.chat.completions.create(model="demo-fast", messages=MSG)
            assert whole.choices[0].message.content.startswith("Simulated")
            stream = await c.chat.completions.create(model="demo-claude", messages=MSG, stream=True)
            text = "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])
            assert text.startswith("Simulated")
    finally:
        assert await p.stop() == 0


@pytest.fixture
def config_file(tmp_path, sim):
    def write(**server):
        cfg = {
            "server": {"shutdown_grace": 10, **server},
            "providers": {"sim": {"type": "openai", "base_url": sim.base_url(), "api_key": "${SIM_KEY}"}},
            "models": [{"name": "fast", "targets": [{"provider": "sim", "model": "sim-gpt-fast"}]}],
        }
        p = tmp_path / "aiogw.yaml"
        p.write_text(json.dumps(cfg))  # JSON is valid YAML
        return str(p)

    return write


async def test_sigterm_drains_in_flight_streams_then_exits_0(sim, config_file):
    sim.set_profile("default", tokens_per_s=40, completion_tokens=40)  # ~1 s stream
    p = await start_aiogw("--config", config_file(), env={"SIM_KEY": SIM_KEY})
    async with aiohttp.ClientSession() as s:
        r = await s.post(p.url + "/v1/chat/completions", json={"model": "fast", "messages": MSG, "stream": True})
        first = await r.content.readany()
        assert first.startswith(b"data: ")
        p.signal()

        async def not_ready():
            async with s.get(p.url + "/readyz") as ready:
                return ready.status == 503

        await until(not_ready)
        assert await not_ready()
        async with s.post(p.url + "/v1/chat/completions", json={"model": "fast", "messages": MSG}) as refused:
            assert refused.status == 503
            assert (await refused.json())["error"]["code"] == "draining"
        rest = await r.read()
        assert (first + rest).endswith(b"data: [DONE]\n\n")
        assert b'"error"' not in rest
    assert await p.stop() == 0


async def test_grace_expiry_ends_open_streams_with_an_error_event(sim, config_file):
    sim.set_profile("default", tokens_per_s=10, completion_tokens=200)  # far longer than the grace
    p = await start_aiogw("--config", config_file(shutdown_grace=0.5), env={"SIM_KEY": SIM_KEY})
    async with aiohttp.ClientSession() as s:
        r = await s.post(p.url + "/v1/chat/completions", json={"model": "fast", "messages": MSG, "stream": True})
        await r.content.readany()
        p.signal()
        body = await asyncio.wait_for(r.read(), 15)
    assert body.endswith(b"data: [DONE]\n\n")
    assert b'"error"' in body
    assert await p.stop() == 0


async def test_grace_expiry_ends_a_stream_still_waiting_behind_heartbeats(sim, config_file):
    sim.set_profile("default", ttft_ms=20_000)  # no first token before the grace runs out
    p = await start_aiogw("--config", config_file(shutdown_grace=0.5, sse_heartbeat_s=0.1), env={"SIM_KEY": SIM_KEY})
    async with aiohttp.ClientSession() as s:
        r = await s.post(p.url + "/v1/chat/completions", json={"model": "fast", "messages": MSG, "stream": True})
        first = await r.content.readany()
        assert first.startswith(b": keep-alive")
        p.signal()
        body = first + await asyncio.wait_for(r.read(), 15)
    assert body.endswith(b"data: [DONE]\n\n")
    assert b'"code":"draining"' in body or b"shut down" in body
    assert await p.stop() == 0


async def test_one_json_log_line_per_request_and_no_secrets(sim, config_file):
    sim.set_profile("default", api_key="sk-other")  # the upstream will reject our key
    p = await start_aiogw("--config", config_file(), env={"SIM_KEY": SIM_KEY})
    async with aiohttp.ClientSession() as s:
        async with s.post(
            p.url + "/v1/chat/completions",
            json={"model": "fast", "messages": MSG},
            headers={"authorization": "Bearer sk-client-secret-123456789", "x-request-id": "rid-1"},
        ) as r:
            assert r.status == 502
        sim.set_profile("default", api_key=None)
        async with s.post(
            p.url + "/v1/chat/completions",
            json={"model": "fast", "messages": MSG, "stream": True},
            headers={"x-request-id": "rid-2"},
        ) as r:
            await r.read()
    assert await p.stop() == 0
    everything = b"".join(p.stderr_lines).decode()
    assert SIM_KEY not in everything and SIM_KEY[:10] not in everything
    assert "sk-client-secret" not in everything
    finished = {entry["request_id"]: entry for entry in p.logs() if entry.get("event") == "request.finished"}
    assert set(finished) == {"rid-1", "rid-2"}
    ok = finished["rid-2"]
    assert ok["status"] == 200 and ok["stream"] is True and ok["provider"] == "sim"
    assert ok["upstream_model"] == "sim-gpt-fast" and ok["model"] == "fast"
    assert ok["output_tokens"] > 0 and ok["input_tokens"] > 0
    assert ok["ttft_ms"] is not None and ok["duration_ms"] >= ok["ttft_ms"]
    assert finished["rid-1"]["status"] == 502
    # Lines logged while serving a request carry its id, not only the final one.
    (misconfigured,) = [e for e in p.logs() if e.get("event") == "target.misconfigured"]
    assert misconfigured["request_id"] == "rid-1" and misconfigured["level"] == "error"


async def test_workers_share_one_port(sim, config_file):
    p = await start_aiogw("--config", config_file(), "--workers", "2", env={"SIM_KEY": SIM_KEY})
    try:
        async with AsyncOpenAI(base_url=p.url + "/v1", api_key="x", max_retries=0) as c:
            results = await asyncio.gather(*[c.chat.completions.create(model="fast", messages=MSG) for _ in range(20)])
            assert all(r.choices[0].message.content for r in results)
    finally:
        assert await p.stop() == 0
    pids = {e["pid"] for e in p.logs() if e.get("event") == "server.started"}
    assert len(pids) == 2


@pytest.mark.parametrize("first_workers", ["1", "2"])
async def test_a_second_gateway_on_a_taken_port_exits_3_naming_it(sim, config_file, first_workers):
    first = await start_aiogw("--config", config_file(), "--workers", first_workers, env={"SIM_KEY": SIM_KEY})
    port = first.url.rsplit(":", 1)[1]
    try:
        for workers in ("1", "2"):  # neither a single process nor a pool may share the port
            code, out, err = await run_aiogw(
                "--config", config_file(), "--port", port, "--workers", workers, env={"SIM_KEY": SIM_KEY}
            )
            assert code == 3, (workers, out, err)
            assert f"aiogw: cannot listen on 127.0.0.1:{port}: address already in use" in err
            assert "listening" not in out
        async with AsyncOpenAI(base_url=first.url + "/v1", api_key="x", max_retries=0) as c:
            results = await asyncio.gather(*[c.chat.completions.create(model="fast", messages=MSG) for _ in range(10)])
            assert all(r.choices[0].message.content for r in results)
    finally:
        assert await first.stop() == 0
    served = [e for e in first.logs() if e.get("event") == "request.finished"]
    assert len(served) == 10  # every request reached the first gateway


async def test_a_worker_that_cannot_listen_stops_the_pool(sim, config_file):
    import socket

    with socket.socket() as taken:  # worker 1's metrics port (metrics_port + 1) is in use
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        metrics_port = taken.getsockname()[1] - 1
        code, out, err = await run_aiogw(
            "--config",
            config_file(metrics_port=metrics_port),
            "--port",
            "0",
            "--workers",
            "2",
            env={"SIM_KEY": SIM_KEY},
        )
    assert code == 3, (out, err)
    assert f"cannot listen on 127.0.0.1:{metrics_port + 1}: address already in use" in err
    assert "listening" not in out  # announced only once every worker serves


def _two_free_ports() -> int:
    import socket

    for _ in range(50):
        with socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            try:
                b.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no two adjacent free ports")


async def test_each_worker_serves_its_own_metrics_on_metrics_port_plus_index(sim, config_file):
    from prometheus_client.parser import text_string_to_metric_families

    base = _two_free_ports()
    # "listening" is printed once every worker serves, its metrics listener included.
    p = await start_aiogw("--config", config_file(metrics_port=base), "--workers", "2", env={"SIM_KEY": SIM_KEY})
    try:
        async with AsyncOpenAI(base_url=p.url + "/v1", api_key="x", max_retries=0) as c:
            await asyncio.gather(*[c.chat.completions.create(model="fast", messages=MSG) for _ in range(20)])
        totals = []
        async with aiohttp.ClientSession() as s:
            for port in (base, base + 1):
                async with s.get(f"http://127.0.0.1:{port}/metrics") as r:
                    text = await r.text()
                async with s.get(f"http://127.0.0.1:{port}/v1/models") as r:
                    assert r.status == 404  # the side listener serves metrics only
                samples = [
                    x
                    for f in text_string_to_metric_families(text)
                    for x in f.samples
                    if x.name == "aiogw_requests_total"
                ]
                totals.append(sum(x.value for x in samples))
        assert sum(totals) == 20  # every request counted once, by the worker that served it
    finally:
        assert await p.stop() == 0
