"""deploy/nginx.conf run for real in front of two `aiogw serve` processes with the compose
config, as in deploy/compose.yaml: streams arrive unbuffered, a client's x-request-id
survives, and while one replica drains on SIGTERM its open stream finishes and new requests
are answered by the other. Only the addresses are rewritten (compose service names become
loopback ports; Debian's nginx may predate the `resolve` parameter). Skipped where nginx is
not installed (Docker is never needed)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import time
from pathlib import Path

import aiohttp
import pytest
from conftest import until
from procs import start_aiogw

DEPLOY = Path(__file__).parents[2] / "deploy"
NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)

pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def render(tmp: Path, ports: dict[str, int], listen: int) -> Path:
    conf = (DEPLOY / "nginx.conf").read_text()
    conf = re.sub(r"^resolver .*;$", "", conf, flags=re.M)
    conf = conf.replace(" resolve ", " ")
    for name, port in ports.items():
        conf = conf.replace(f"{name}:8080", f"127.0.0.1:{port}")
    conf = re.sub(r"listen\s+8080;", f"listen 127.0.0.1:{listen};", conf)
    (tmp / "default.conf").write_text(conf)
    user = "user root root;" if os.geteuid() == 0 else ""
    main = f"""
daemon off;
worker_processes 1;
{user}
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{}}
http {{
    log_format upstreams '$request_uri $status "$upstream_addr" "$upstream_status"';
    access_log {tmp}/access.log upstreams;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {tmp}/default.conf;
}}
"""
    path = tmp / "nginx.conf"
    path.write_text(main)
    return path


async def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


async def _stream(http: aiohttp.ClientSession, url: str, started: asyncio.Event) -> tuple[float, float, str]:
    """(time of the first content chunk, time of the end, the whole body)."""
    t0 = time.monotonic()
    first = None
    body = b""
    async with http.post(
        url, json={"model": "default", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    ) as r:
        assert r.status == 200, await r.text()
        async for chunk in r.content.iter_any():
            body += chunk
            if first is None and b'"content"' in body:
                first = time.monotonic() - t0
                started.set()
    return first, time.monotonic() - t0, body.decode()


async def test_nginx_in_front_of_two_replicas_streams_unbuffered_keeps_ids_and_covers_a_drain(
    sim, redis_server, tmp_path
):
    sim.set_profile("openai", tokens_per_s=30, completion_tokens=45)  # streams of about 1.5 s
    env = {
        "OPENAI_BASE_URL": sim.base_url("openai"),
        "ANTHROPIC_BASE_URL": sim.root("anthropic"),
        "AIOGW_REDIS_URL": redis_server.url,
        "AIOGW_STORE_URL": f"sqlite:///{tmp_path}/aiogw.db",  # shared by both, as compose's volume
        "OTEL_EXPORTER_OTLP_ENDPOINT": "",  # no collector here: tracing off
    }
    replicas = [await start_aiogw("--config", str(DEPLOY / "aiogw.compose.yaml"), env=env) for _ in range(2)]
    ports = {f"aiogw-{i + 1}": int(p.url.rsplit(":", 1)[1]) for i, p in enumerate(replicas)}
    listen = _free_port()
    conf = render(tmp_path, ports, listen)
    lb = await asyncio.create_subprocess_exec(
        NGINX, "-c", str(conf), "-p", str(tmp_path), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    base = f"http://127.0.0.1:{listen}"
    try:
        await _wait_port(listen)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            async with http.get(base + "/readyz") as r:
                assert r.status == 200
            short = {"model": "default", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}
            async with http.post(
                base + "/v1/chat/completions", json=short, headers={"x-request-id": "deploy-lb-1"}
            ) as r:
                assert r.status == 200 and r.headers["x-request-id"] == "deploy-lb-1"
            async with http.post(base + "/v1/chat/completions", json=short) as r:
                assert r.status == 200 and r.headers["x-request-id"]

            # One stream per replica (round robin); the first content arrives long before the end.
            started = [asyncio.Event(), asyncio.Event()]
            streams = [asyncio.create_task(_stream(http, base + "/v1/chat/completions", ev)) for ev in started]
            await asyncio.wait_for(asyncio.gather(*(ev.wait() for ev in started)), 10)
            replicas[0].signal()  # SIGTERM: aiogw-1 drains
            await until(lambda: any(e.get("event") == "server.draining" for e in replicas[0].logs()), every=0.05)
            answers = await asyncio.gather(*(http.post(base + "/v1/chat/completions", json=short) for _ in range(6)))
            assert [r.status for r in answers] == [200] * 6
            for r in answers:
                r.release()
            for first, total, body in await asyncio.gather(*streams):
                assert first < total / 2, (first, total)  # not buffered by the proxy
                assert body.rstrip().endswith("data: [DONE]") and '"error"' not in body
        assert await replicas[0].stop() == 0
    finally:
        for p in replicas:
            if p.proc.returncode is None:
                await p.stop()
        lb.terminate()
        await lb.wait()
    log = (tmp_path / "access.log").read_text()
    # The draining replica refused before doing any work, and nginx answered from the other.
    assert re.search(r' 200 "127\.0\.0\.1:\d+, 127\.0\.0\.1:\d+" "503, 200"', log), log
