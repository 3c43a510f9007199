"""The SSE writer's heartbeats never follow the stream's last bytes: a heartbeat decided on a
timer tick that finds content written before it runs is dropped (it once arrived after
`data: [DONE]`, which a strict client reads as a protocol error)."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from aiogw.adapters._base import Target
from aiogw.attempts.outcome import Outcome
from aiogw.ingress.sse import HEARTBEAT, SSESink

TARGET = Target(id="p/m", provider="p", type="openai", model="m", base_url="http://127.0.0.1:1", api_key=None)


async def _serve(handler: web.RequestHandler) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/s", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/s"


async def test_a_heartbeat_decided_before_the_last_write_is_not_sent_after_it():
    async def handler(request: web.Request) -> web.StreamResponse:
        sink = SSESink(request, {}, Outcome(), heartbeat_s=3600)  # ticks driven by hand below
        await sink.start(TARGET)
        sink._tick()  # a quiet interval ended: a heartbeat task is created, not yet run
        await sink.write(b"data: [DONE]\n\n")  # the stream's end goes out before it runs
        await sink.finish()
        assert sink.response is not None
        return sink.response

    runner, url = await _serve(handler)
    try:
        async with aiohttp.ClientSession() as s, s.post(url) as r:
            body = await r.read()
    finally:
        await runner.cleanup()
    assert body == b"data: [DONE]\n\n", body


async def test_a_quiet_stream_still_gets_its_heartbeat():
    async def handler(request: web.Request) -> web.StreamResponse:
        sink = SSESink(request, {}, Outcome(), heartbeat_s=3600)
        await sink.start(TARGET)
        sink._tick()
        beat = sink._beat
        assert beat is not None
        await beat  # nothing written since the tick: the heartbeat goes out
        await sink.write(b"data: [DONE]\n\n")
        await sink.finish()
        assert sink.response is not None
        return sink.response

    runner, url = await _serve(handler)
    try:
        async with aiohttp.ClientSession() as s, s.post(url) as r:
            body = await r.read()
    finally:
        await runner.cleanup()
    assert body == HEARTBEAT + b"data: [DONE]\n\n", body
