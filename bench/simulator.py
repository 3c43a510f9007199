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
import secrets
import signal
import ssl
import sys
from typing import Any

import msgspec
import orjson
from aiohttp import web

from aiogw.bench import sim_anthropic, sim_dialects, sim_gemini, sim_responses
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
    account_for,
    account_of,
    answer_time_s,
    check_auth,
    draw_fault,
    embedding,
    error_body,
    float32_base64,
    json_error,
    read_json,
    record,
    send_body,
    send_stream,
)


async def _accepted(request: web.Request) -> tuple[SimulatorState, Profile, Stats, dict[str, Any]] | web.Response:
    """The account's state, profile and stats and the request's JSON body, once the body parses
    (it is recorded then) and the key is right; else the error to answer with."""
    state, p, stats = account_for(request)
    body = await read_json(request)
    if isinstance(body, web.Response):
        return body
    record(stats, request, body)
    return check_auth(request, p) or (state, p, stats, body)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    got = await _accepted(request)
    if isinstance(got, web.Response):
        return got
    state, p, stats, body = got
    for required in ("model", "messages"):
        if required not in body:
            return json_error(
                400,
                message=f"Missing required parameter: '{required}'.",
                param=required,
                code="missing_required_parameter",
            )
    if not isinstance(body["messages"], list) or not body["messages"]:
        return json_error(400, message="'messages' must be a non-empty array.", param="messages")
    fault = await draw_fault(state, p)
    if fault == "status":
        return json_error(p.fault_status)
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
        return await send_stream(
            request, {**SSE_HEADERS, "x-request-id": "req_sim_" + secrets.token_hex(6)},
            answer.stream_events(max(1, p.chunk_tokens)), p, fault, stats,
            malformed=b'data: {"id":"chatcmpl-x","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"cut\n\n' + DONE,
            error_event=b"data: " + error_body(500) + b"\n\n" + DONE,
            done=DONE if p.send_done else b"",
        )  # fmt: skip
    delay = answer_time_s(p, answer.completion_tokens())
    headers = {
        "x-request-id": "req_sim_" + secrets.token_hex(6),
        "openai-processing-ms": str(int(delay * 1000)),
        **RATE_HEADERS,
    }
    return await send_body(request, answer.completion(), fault, delay, headers)


async def embeddings(request: web.Request) -> web.Response:
    got = await _accepted(request)
    if isinstance(got, web.Response):
        return got
    state, p, _stats, body = got
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
        vec = embedding(text, dims)
        emb: Any = float32_base64(vec) if body.get("encoding_format") == "base64" else vec
        data.append({"object": "embedding", "index": i, "embedding": emb})
    return web.json_response(
        {
            "object": "list",
            "data": data,
            "model": body["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        },
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
    sim_responses.add_routes(app)
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
        ttft_ms=args.ttft_ms,
        tokens_per_s=args.tokens_per_s,
        chunk_tokens=args.chunk_tokens,
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
    ap.add_argument(
        "--spaced-json", action="store_true", help='OpenAI-format JSON spelled as json.dumps does (", " and ": ")'
    )
    args = ap.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
