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


async def _body_from(drive) -> bytes:
    """What a client receives from a stream that `drive(sink)` writes, served for real."""

    async def handler(request: web.Request) -> web.StreamResponse:
        sink = SSESink(request, {}, Outcome(), heartbeat_s=3600)  # ticks driven by hand
        await sink.start(TARGET)
        await drive(sink)
        await sink.finish()
        assert sink.response is not None
        return sink.response

    app = web.Application()
    app.router.add_post("/s", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as s, s.post(f"http://127.0.0.1:{port}/s") as r:
            return await r.read()
    finally:
        await runner.cleanup()


async def test_a_heartbeat_decided_before_the_last_write_is_not_sent_after_it():
    async def drive(sink: SSESink) -> None:
        sink._tick()  # a quiet interval ended: a heartbeat task is created, not yet run
        await sink.write(b"data: [DONE]\n\n")  # the stream's end goes out before it runs

    body = await _body_from(drive)
    assert body == b"data: [DONE]\n\n", body


async def test_a_quiet_stream_still_gets_its_heartbeat():
    async def drive(sink: SSESink) -> None:
        sink._tick()
        beat = sink._beat
        assert beat is not None
        await beat  # nothing written since the tick: the heartbeat goes out
        await sink.write(b"data: [DONE]\n\n")

    body = await _body_from(drive)
    assert body == HEARTBEAT + b"data: [DONE]\n\n", body
