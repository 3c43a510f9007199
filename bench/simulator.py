"""A fast simulated OpenAI provider: the upstream of `aiogw serve --demo`, of the tests and
of the load tests.

Written from the OpenAI API reference and the official SDK's types
(openai/types/chat/chat_completion*.py, completion_usage.py), never from aiogw's adapters:
a simulator built from our own code would only prove the code agrees with itself.

One server plays several provider accounts: `/v1/...` is account `default`,
`/{account}/v1/...` any other, each with its own `Profile` (speed, size, faults) and
stats, switchable at run time through `/_sim/profile` (JSON) or in process.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import random
import secrets
import signal
import ssl
import struct
import sys
import zlib
from typing import Any

import msgspec
import orjson
from aiohttp import web

from aiogw.bench import sim_anthropic, sim_dialects, sim_gemini
from aiogw.bench.sim_core import (
    DONE,
    MAX_BODY,
    RATE_HEADERS,
    SSE_HEADERS,
    STATE,
    Answer,
    Profile,
    SimulatorState,
    Stats,
    account_of,
    check_auth,
    json_error,
    read_json,
    error_body,
)

async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    account = account_of(request)
    p = state.profile(account)
    stats = state.stat(account)
    stats.requests += 1
    body = await read_json(request)
    if isinstance(body, web.Response):
        return body
    stats.last_request = {"path": request.path, "headers": {k.lower(): v for k, v in request.headers.items()}, "body": body}
    if denied := check_auth(request, p):
        return denied
    for required in ("model", "messages"):
        if required not in body:
            return json_error(400, message=f"Missing required parameter: '{required}'.", param=required, code="missing_required_parameter")
    if not isinstance(body["messages"], list) or not body["messages"]:
        return json_error(400, message="'messages' must be a non-empty array.", param="messages")
    fault = p.fault if state.take_fault(p) else "none"
    if fault == "status":
        return json_error(p.fault_status)
    if fault == "hang":
        await asyncio.sleep(3600)  # until the client goes away (handler cancellation)
    answer = Answer(body, p)
    requested = answer.prompt_tokens + int(body.get("max_completion_tokens") or body.get("max_tokens") or 0)
    if p.context_window is not None and requested > p.context_window:
        return json_error(
            400,
            message=f"This model's maximum context length is {p.context_window} tokens. However, you requested "
            f"{requested} tokens. Please reduce the length of the messages or completion.",
            param="messages",
            code="context_length_exceeded",
        )
    if body.get("stream"):
        return await _stream(request, answer, p, fault, stats)
    delay = p.ttft_ms / 1000 + (answer.completion_tokens() / p.tokens_per_s if p.tokens_per_s else 0)
    if delay:
        await asyncio.sleep(delay)
    if fault == "drop":
        assert request.transport is not None
        request.transport.abort()
        return web.Response(status=500)
    if fault == "malformed":
        return web.Response(body=answer.completion()[:-20], content_type="application/json")
    if fault == "stall":
        body = answer.completion()
        resp = web.StreamResponse(headers={"Content-Type": "application/json", "Content-Length": str(len(body))})
        await resp.prepare(request)
        await resp.write(body[: len(body) // 2])
        await asyncio.sleep(3600)
    headers = {"x-request-id": "req_sim_" + secrets.token_hex(6), "openai-processing-ms": str(int(delay * 1000)), **RATE_HEADERS}
    return web.Response(body=answer.completion(), content_type="application/json", headers=headers)


async def _stream(request: web.Request, answer: Answer, p: Profile, fault: str, stats: Stats) -> web.StreamResponse:
    stats.streams_started += 1
    resp = web.StreamResponse(headers={**SSE_HEADERS, "x-request-id": "req_sim_" + secrets.token_hex(6)})
    events = answer.stream_events(max(1, p.chunk_tokens))
    gap = p.chunk_tokens / p.tokens_per_s if p.tokens_per_s else 0.0
    try:
        if p.ttft_ms:
            await asyncio.sleep(p.ttft_ms / 1000)
        await resp.prepare(request)
        if fault == "hang_after_headers":
            await resp.write(events[0][0])
            await asyncio.sleep(3600)
        done = DONE if p.send_done else b""
        if not gap and fault == "none":
            await resp.write(b"".join(e for e, _ in events) + done)  # one write: the fast baseline
        else:
            sent = 0
            for ev, token in events:
                if token:
                    if fault != "none" and sent >= p.fault_after_chunks:
                        await _inject(request, resp, fault)
                        return resp
                    sent += 1
                    if gap:
                        await asyncio.sleep(gap)
                await resp.write(ev)
            await resp.write(done)
        await resp.write_eof()
    except (asyncio.CancelledError, ConnectionResetError):
        stats.streams_cancelled += 1
        raise
    stats.streams_completed += 1
    return resp


async def _inject(request: web.Request, resp: web.StreamResponse, fault: str) -> None:
    if fault == "drop":
        assert request.transport is not None
        request.transport.abort()
    elif fault == "malformed":
        await resp.write(b'data: {"id":"chatcmpl-x","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"cut\n\n')
        await resp.write(DONE)
        await resp.write_eof()
    elif fault == "error_event":
        await resp.write(b"data: " + error_body(500) + b"\n\n" + DONE)
        await resp.write_eof()
    elif fault == "stall":
        await asyncio.sleep(3600)  # the connection stays open, silent, until the client gives up


async def embeddings(request: web.Request) -> web.Response:
    state = request.app[STATE]
    account = account_of(request)
    p = state.profile(account)
    state.stat(account).requests += 1
    body = await read_json(request)
    if isinstance(body, web.Response):
        return body
    state.stat(account).last_request = {"path": request.path, "headers": dict(request.headers), "body": body}
    if denied := check_auth(request, p):
        return denied
    if "input" not in body or "model" not in body:
        missing = "model" if "model" not in body else "input"
        return json_error(400, message=f"Missing required parameter: '{missing}'.", param=missing)
    if state.take_fault(p) and p.fault == "status":
        return json_error(p.fault_status)
    raw = body["input"]
    inputs = [raw] if isinstance(raw, str) or (isinstance(raw, list) and raw and isinstance(raw[0], int)) else raw
    dims = int(body.get("dimensions") or 8)
    data, tokens = [], 0
    for i, item in enumerate(inputs):
        text = item if isinstance(item, str) else " ".join(map(str, item))
        tokens += max(1, len(text) // 4)
        rnd = random.Random(zlib.crc32(text.encode()))
        vec = [round(rnd.uniform(-1, 1), 6) for _ in range(dims)]
        emb: Any = vec
        if body.get("encoding_format") == "base64":
            emb = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode()
        data.append({"object": "embedding", "index": i, "embedding": emb})
    return web.json_response(
        {"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": tokens, "total_tokens": tokens}},
        dumps=lambda o: orjson.dumps(o).decode(),
    )


async def models(request: web.Request) -> web.Response:
    p = request.app[STATE].profile(account_of(request))
    data = [{"id": m, "object": "model", "created": 1700000000, "owned_by": "simulator"} for m in p.models]
    return web.json_response({"object": "list", "data": data})


async def control_profile(request: web.Request) -> web.Response:
    state = request.app[STATE]
    account = request.query.get("account", "default")
    if request.method == "POST":
        try:
            state.set_profile(account, **(await request.json()))
        except (msgspec.ValidationError, ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
    return web.Response(body=msgspec.json.encode(state.profile(account)), content_type="application/json")


async def control_stats(request: web.Request) -> web.Response:
    st = request.app[STATE].stat(request.query.get("account", "default"))
    return web.json_response(st.__dict__, dumps=lambda o: orjson.dumps(o).decode())


async def control_reset(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.profiles.clear()
    state.stats.clear()
    return web.json_response({"ok": True})


def create_simulator_app(profile: Profile | None = None) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app[STATE] = SimulatorState(profile or Profile())
    for prefix in ("", "/{account}"):
        app.router.add_post(prefix + "/v1/chat/completions", chat_completions)
        app.router.add_post(prefix + "/v1/embeddings", embeddings)
        app.router.add_get(prefix + "/v1/models", models)
    sim_anthropic.add_routes(app)
    sim_gemini.add_routes(app)
    sim_dialects.add_routes(app)
    app.router.add_route("*", "/_sim/profile", control_profile)
    app.router.add_get("/_sim/stats", control_stats)
    app.router.add_post("/_sim/reset", control_reset)
    return app


class Simulator:
    """A running simulator (in this process)."""

    def __init__(self, runner: web.AppRunner, app: web.Application, url: str) -> None:
        self._runner, self._app, self.url = runner, app, url

    def root(self, account: str = "default") -> str:
        """An account's root, for providers whose SDK base URL has no version (Anthropic, Gemini)."""
        return self.url if account == "default" else f"{self.url}/{account}"

    def base_url(self, account: str = "default") -> str:
        """The OpenAI base URL of an account (ends in /v1)."""
        return f"{self.url}/v1" if account == "default" else f"{self.url}/{account}/v1"

    def set_profile(self, account: str = "default", profile: Profile | None = None, **changes: Any) -> Profile:
        return self._app[STATE].set_profile(account, profile, **changes)

    def stats(self, account: str = "default") -> dict[str, Any]:
        return dict(self._app[STATE].stat(account).__dict__)

    async def close(self) -> None:
        await self._runner.cleanup()


async def start_simulator(
    profile: Profile | None = None, host: str = "127.0.0.1", port: int = 0, *, ssl_context: ssl.SSLContext | None = None
) -> Simulator:
    """With `ssl_context` the simulator speaks HTTPS (its URL then names `host`, which the
    certificate must match)."""
    app = create_simulator_app(profile)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096, ssl_context=ssl_context)
    await site.start()
    bound = next(a for a in runner.addresses if isinstance(a, tuple))
    return Simulator(runner, app, f"{'https' if ssl_context else 'http'}://{host}:{bound[1]}")


async def _main(args: argparse.Namespace) -> None:
    profile = Profile(
        ttft_ms=args.ttft_ms, tokens_per_s=args.tokens_per_s, chunk_tokens=args.chunk_tokens,
        completion_tokens=args.completion_tokens,
        fault="status" if args.error_rate > 0 else "none",
        fault_status=args.error_status,
        fault_rate=args.error_rate,
        spaced_json=args.spaced_json,
    )
    sim = await start_simulator(profile, args.host, args.port)
    print(f"aiogw-simulator listening on {sim.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await sim.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m aiogw.bench.simulator", description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--ttft-ms", type=float, default=0.0)
    ap.add_argument("--tokens-per-s", type=float, default=0.0)
    ap.add_argument("--chunk-tokens", type=int, default=1)
    ap.add_argument("--completion-tokens", type=int, default=20)
    ap.add_argument("--error-rate", type=float, default=0.0, help="share of requests answered with --error-status")
    ap.add_argument("--error-status", type=int, default=503)
    ap.add_argument("--spaced-json", action="store_true", help='OpenAI-format JSON spelled as json.dumps does (", " and ": ")')
    args = ap.parse_args(argv)
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
