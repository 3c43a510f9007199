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
import struct
import sys
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
import orjson
from aiohttp import web

Fault = Literal["none", "status", "hang", "hang_after_headers", "drop", "malformed", "error_event"]


class Profile(msgspec.Struct, kw_only=True):
    """How an account behaves. Times in milliseconds; tokens are words."""

    ttft_ms: float = 0.0  # before the first token (stream) or the whole answer (non-stream)
    tokens_per_s: float = 0.0  # 0 = as fast as possible
    chunk_tokens: int = 1  # words per streamed content chunk
    completion_tokens: int = 20  # answer length, unless max_tokens is smaller
    api_key: str | None = None  # when set, any other bearer key gets 401
    fault: Fault = "none"
    fault_status: int = 500  # for fault="status"
    fault_rate: float = 1.0  # probability that a request gets the fault
    fault_count: int | None = None  # only the next N requests get the fault
    fault_after_chunks: int = 2  # drop / malformed / error_event after this many content chunks
    models: list[str] = msgspec.field(default_factory=lambda: ["sim-gpt-fast", "sim-gpt-mini"])


@dataclass
class Stats:
    requests: int = 0
    streams_started: int = 0
    streams_completed: int = 0
    streams_cancelled: int = 0
    last_request: dict[str, Any] = field(default_factory=dict)


WORDS = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut "
    "labore et dolore magna aliqua gateway stream token provider latency failover routing"
).split()

_ERRORS: dict[int, tuple[str, str | None, str]] = {  # status -> (type, code, message)
    400: ("invalid_request_error", None, "Invalid request (simulated)."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided (simulated)."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Country not supported (simulated)."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist (simulated)."),
    408: ("timeout", None, "Request timed out (simulated)."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests (simulated)."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    502: ("server_error", None, "Bad gateway (simulated)."),
    503: ("service_unavailable_error", "server_is_overloaded", "The server is overloaded (simulated)."),
    504: ("timeout", None, "Gateway timeout (simulated)."),
}

_RATE_HEADERS = {
    "x-ratelimit-limit-requests": "10000",
    "x-ratelimit-remaining-requests": "9999",
    "x-ratelimit-reset-requests": "6ms",
    "x-ratelimit-limit-tokens": "2000000",
    "x-ratelimit-remaining-tokens": "1999000",
    "x-ratelimit-reset-tokens": "30ms",
}
_SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache", **_RATE_HEADERS}
_DONE = b"data: [DONE]\n\n"
_MAX_BODY = 64 * 1024 * 1024


def error_body(status: int, message: str | None = None, param: str | None = None, code: str | None = None) -> bytes:
    etype, ecode, emsg = _ERRORS.get(status, ("server_error", None, f"Error {status} (simulated)."))
    return orjson.dumps({"error": {"message": message or emsg, "type": etype, "param": param, "code": code or ecode}})


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _schema_value(schema: Any) -> Any:
    t = schema.get("type") if isinstance(schema, dict) else None
    if t == "string":
        return schema.get("enum", ["example"])[0]
    if t in ("integer", "number"):
        return 1
    if t == "boolean":
        return True
    if t == "array":
        return [_schema_value(schema.get("items", {}))]
    if t == "object":
        return {k: _schema_value(v) for k, v in schema.get("properties", {}).items()}
    return None


class Answer:
    """Everything one request's answer consists of, computed once from its body."""

    def __init__(self, body: dict[str, Any], profile: Profile) -> None:
        self.model: str = body["model"]
        messages = body["messages"]
        prompt = " ".join(_text_of(m.get("content")) for m in messages if isinstance(m, dict))
        self.prompt_tokens = max(1, len(prompt) // 4)
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        n_words = profile.completion_tokens
        self.finish = "stop"
        if isinstance(limit, int) and limit < n_words:
            n_words, self.finish = max(1, limit), "length"
        seed = zlib.crc32(f"{self.model}|{prompt}|{body.get('seed')}".encode())
        self.n = body.get("n") or 1
        self.words: list[list[str]] = []
        for i in range(self.n):
            rnd = random.Random(seed + i)
            head = ["Simulated", "reply", "from", f"{self.model}:"]
            words = (head + [rnd.choice(WORDS) for _ in range(max(0, n_words - len(head)))])[:n_words]
            self.words.append(words)
        rf = body.get("response_format") or {}
        self.json_mode = isinstance(rf, dict) and rf.get("type") in ("json_object", "json_schema")
        self.logprobs = bool(body.get("logprobs"))
        self.top_logprobs = int(body.get("top_logprobs") or 0)
        self.tool_calls = self._tools(body)
        self.id = "chatcmpl-" + secrets.token_hex(12)
        self.created = int(time.time())
        self.include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    def _tools(self, body: dict[str, Any]) -> list[tuple[str, str, str]]:
        tools = [t["function"] for t in body.get("tools") or [] if isinstance(t, dict) and "function" in t]
        choice = body.get("tool_choice", "auto")
        if not tools or choice == "none":
            return []
        if isinstance(choice, dict):
            tools = [t for t in tools if t.get("name") == choice.get("function", {}).get("name")] or tools[:1]
        picked = tools[:2] if (choice == "required" or body.get("parallel_tool_calls")) and len(tools) > 1 else tools[:1]
        self.finish = "tool_calls"
        return [
            ("call_" + secrets.token_hex(12), t["name"], orjson.dumps(_schema_value({"type": "object", **t.get("parameters", {})})).decode())
            for t in picked
        ]

    def text(self, i: int) -> str:
        text = " ".join(self.words[i])
        return orjson.dumps({"answer": text}).decode() if self.json_mode else text

    def pieces(self, i: int, per_chunk: int) -> list[str]:
        """The content deltas of choice i: chunks of words that concatenate to text(i)."""
        if self.json_mode:
            t = self.text(i)
            step = max(1, len(t) // max(1, len(self.words[i]) // per_chunk))
            return [t[k : k + step] for k in range(0, len(t), step)]
        w = self.words[i]
        return [("" if k == 0 else " ") + " ".join(w[k : k + per_chunk]) for k in range(0, len(w), per_chunk)]

    def completion_tokens(self) -> int:
        if self.tool_calls:
            return sum(len(a) // 4 + 5 for _, _, a in self.tool_calls) * self.n
        return sum(len(w) for w in self.words)

    def usage(self) -> dict[str, Any]:
        c = self.completion_tokens()
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": c,
            "total_tokens": self.prompt_tokens + c,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def logprob_content(self, text: str) -> list[dict[str, Any]]:
        out = []
        for tok in text.split(" "):
            if not tok:
                continue
            entry = {"token": tok, "logprob": -0.01, "bytes": list(tok.encode())}
            entry["top_logprobs"] = [dict(entry) for _ in range(self.top_logprobs)]
            out.append(entry)
        return out

    def completion(self) -> bytes:
        choices = []
        for i in range(self.n):
            msg: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None, "annotations": []}
            if self.tool_calls:
                msg["tool_calls"] = [
                    {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}
                    for cid, name, args in self.tool_calls
                ]
            else:
                msg["content"] = self.text(i)
            lp = {"content": self.logprob_content(msg["content"] or ""), "refusal": None} if self.logprobs else None
            choices.append({"index": i, "message": msg, "logprobs": lp, "finish_reason": self.finish})
        return orjson.dumps(
            {
                "id": self.id,
                "object": "chat.completion",
                "created": self.created,
                "model": self.model,
                "system_fingerprint": "fp_simulated",
                "service_tier": "default",
                "choices": choices,
                "usage": self.usage(),
            }
        )

    def chunk(self, i: int, delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> bytes:
        c: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_simulated",
            "choices": [{"index": i, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
        }
        if self.include_usage:
            c["usage"] = None  # documented: null on every chunk but the last
        return b"data: " + orjson.dumps(c) + b"\n\n"

    def stream_events(self, per_chunk: int) -> list[tuple[bytes, bool]]:
        """(event bytes, carries a token) in order, [DONE] excluded."""
        out: list[tuple[bytes, bool]] = []
        for i in range(self.n):
            if self.tool_calls:
                out.append((self.chunk(i, {"role": "assistant", "content": None, "refusal": None}), False))
                for k, (cid, name, args) in enumerate(self.tool_calls):
                    start = {"index": k, "id": cid, "type": "function", "function": {"name": name, "arguments": ""}}
                    out.append((self.chunk(i, {"tool_calls": [start]}), True))
                    for j in range(0, len(args), 7):  # fragments split anywhere, even mid-string
                        frag = {"index": k, "function": {"arguments": args[j : j + 7]}}
                        out.append((self.chunk(i, {"tool_calls": [frag]}), True))
            else:
                out.append((self.chunk(i, {"role": "assistant", "content": "", "refusal": None}), False))
                for piece in self.pieces(i, per_chunk):
                    lp = {"content": self.logprob_content(piece), "refusal": None} if self.logprobs else None
                    out.append((self.chunk(i, {"content": piece}, logprobs=lp), True))
            out.append((self.chunk(i, {}, finish=self.finish), False))
        if self.include_usage:
            last = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                    "system_fingerprint": "fp_simulated", "choices": [], "usage": self.usage()}
            out.append((b"data: " + orjson.dumps(last) + b"\n\n", False))
        return out


class SimulatorState:
    def __init__(self, profile: Profile) -> None:
        self.initial = profile
        self.profiles: dict[str, Profile] = {}
        self.stats: dict[str, Stats] = {}

    def profile(self, account: str) -> Profile:
        p = self.profiles.get(account)
        if p is None:
            p = self.profiles[account] = msgspec.structs.replace(self.initial)
        return p

    def stat(self, account: str) -> Stats:
        return self.stats.setdefault(account, Stats())

    def set_profile(self, account: str, profile: Profile | None = None, **changes: Any) -> Profile:
        base = profile or self.profile(account)
        new = msgspec.convert({**msgspec.structs.asdict(base), **changes}, Profile)
        self.profiles[account] = new
        return new

    def take_fault(self, p: Profile) -> bool:
        """Does this request get the profile's fault? Counts down `fault_count`."""
        if p.fault == "none" or (p.fault_rate < 1.0 and random.random() >= p.fault_rate):  # noqa: S311
            return False
        if p.fault_count is not None:
            if p.fault_count <= 0:
                return False
            p.fault_count -= 1
        return True


STATE = web.AppKey("sim_state", SimulatorState)


def _account(request: web.Request) -> str:
    return request.match_info.get("account", "default")


def _json_error(status: int, **kw: Any) -> web.Response:
    headers = {"x-request-id": "req_sim_" + secrets.token_hex(6)}
    if status in (429, 503):
        headers["retry-after"] = "1"
        headers.update(_RATE_HEADERS)
        headers["x-ratelimit-remaining-requests"] = "0"
    return web.Response(status=status, body=error_body(status, **kw), content_type="application/json", headers=headers)


def _check_auth(request: web.Request, p: Profile) -> web.Response | None:
    if p.api_key is None:
        return None
    sent = request.headers.get("authorization", "")
    if sent != f"Bearer {p.api_key}":
        shown = sent.removeprefix("Bearer ")
        masked = (shown[:3] + "*" * 8 + shown[-4:]) if len(shown) > 8 else "***"
        return _json_error(401, message=f"Incorrect API key provided: {masked}. You can find your API key at https://platform.openai.com/account/api-keys.")
    return None


async def _read_json(request: web.Request) -> dict[str, Any] | web.Response:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _json_error(400, message="We could not parse the JSON body of your request.")
    if not isinstance(body, dict):
        return _json_error(400, message="The body must be a JSON object.")
    return body


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    account = _account(request)
    p = state.profile(account)
    stats = state.stat(account)
    stats.requests += 1
    body = await _read_json(request)
    if isinstance(body, web.Response):
        return body
    stats.last_request = {"path": request.path, "headers": {k.lower(): v for k, v in request.headers.items()}, "body": body}
    if denied := _check_auth(request, p):
        return denied
    for required in ("model", "messages"):
        if required not in body:
            return _json_error(400, message=f"Missing required parameter: '{required}'.", param=required, code="missing_required_parameter")
    if not isinstance(body["messages"], list) or not body["messages"]:
        return _json_error(400, message="'messages' must be a non-empty array.", param="messages")
    fault = p.fault if state.take_fault(p) else "none"
    if fault == "status":
        return _json_error(p.fault_status)
    if fault == "hang":
        await asyncio.sleep(3600)  # until the client goes away (handler cancellation)
    answer = Answer(body, p)
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
    headers = {"x-request-id": "req_sim_" + secrets.token_hex(6), "openai-processing-ms": str(int(delay * 1000)), **_RATE_HEADERS}
    return web.Response(body=answer.completion(), content_type="application/json", headers=headers)


async def _stream(request: web.Request, answer: Answer, p: Profile, fault: str, stats: Stats) -> web.StreamResponse:
    stats.streams_started += 1
    resp = web.StreamResponse(headers={**_SSE_HEADERS, "x-request-id": "req_sim_" + secrets.token_hex(6)})
    events = answer.stream_events(max(1, p.chunk_tokens))
    gap = p.chunk_tokens / p.tokens_per_s if p.tokens_per_s else 0.0
    try:
        if p.ttft_ms:
            await asyncio.sleep(p.ttft_ms / 1000)
        await resp.prepare(request)
        if fault == "hang_after_headers":
            await resp.write(events[0][0])
            await asyncio.sleep(3600)
        if not gap and fault == "none":
            await resp.write(b"".join(e for e, _ in events) + _DONE)  # one write: the fast baseline
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
            await resp.write(_DONE)
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
        await resp.write(_DONE)
        await resp.write_eof()
    elif fault == "error_event":
        await resp.write(b"data: " + error_body(500) + b"\n\n" + _DONE)
        await resp.write_eof()


async def embeddings(request: web.Request) -> web.Response:
    state = request.app[STATE]
    account = _account(request)
    p = state.profile(account)
    state.stat(account).requests += 1
    body = await _read_json(request)
    if isinstance(body, web.Response):
        return body
    state.stat(account).last_request = {"path": request.path, "headers": dict(request.headers), "body": body}
    if denied := _check_auth(request, p):
        return denied
    if "input" not in body or "model" not in body:
        missing = "model" if "model" not in body else "input"
        return _json_error(400, message=f"Missing required parameter: '{missing}'.", param=missing)
    if state.take_fault(p) and p.fault == "status":
        return _json_error(p.fault_status)
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
    p = request.app[STATE].profile(_account(request))
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
    app = web.Application(client_max_size=_MAX_BODY)
    app[STATE] = SimulatorState(profile or Profile())
    for prefix in ("", "/{account}"):
        app.router.add_post(prefix + "/v1/chat/completions", chat_completions)
        app.router.add_post(prefix + "/v1/embeddings", embeddings)
        app.router.add_get(prefix + "/v1/models", models)
    app.router.add_route("*", "/_sim/profile", control_profile)
    app.router.add_get("/_sim/stats", control_stats)
    app.router.add_post("/_sim/reset", control_reset)
    return app


class Simulator:
    """A running simulator (in this process)."""

    def __init__(self, runner: web.AppRunner, app: web.Application, url: str) -> None:
        self._runner, self._app, self.url = runner, app, url

    def base_url(self, account: str = "default") -> str:
        """The OpenAI base URL of an account (ends in /v1)."""
        return f"{self.url}/v1" if account == "default" else f"{self.url}/{account}/v1"

    def set_profile(self, account: str = "default", profile: Profile | None = None, **changes: Any) -> Profile:
        return self._app[STATE].set_profile(account, profile, **changes)

    def stats(self, account: str = "default") -> dict[str, Any]:
        return dict(self._app[STATE].stat(account).__dict__)

    async def close(self) -> None:
        await self._runner.cleanup()


async def start_simulator(profile: Profile | None = None, host: str = "127.0.0.1", port: int = 0) -> Simulator:
    app = create_simulator_app(profile)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096)
    await site.start()
    bound = next(a for a in runner.addresses if isinstance(a, tuple))
    return Simulator(runner, app, f"http://{host}:{bound[1]}")


async def _main(args: argparse.Namespace) -> None:
    profile = Profile(
        ttft_ms=args.ttft_ms, tokens_per_s=args.tokens_per_s, chunk_tokens=args.chunk_tokens,
        completion_tokens=args.completion_tokens,
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
