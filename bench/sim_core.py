"""The simulator's shared core: account profiles, run-time state and stats, the answer a
request gets (words, tool calls, usage), which every wire format renders in its own way, and
how an answer goes out (pace and faults), which is the same in every format: each passes its
own bytes for the faults that have a wire shape.

Written from the providers' API references and official SDK types, never from aiogw's
adapters (see simulator.py)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import random
import re
import secrets
import struct
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
import orjson
from aiohttp import web

from aiogw.bench.sim_schema import instance

Fault = Literal["none", "status", "hang", "hang_after_headers", "drop", "malformed", "error_event", "stall"]


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
    # drop / malformed / error_event / stall (nothing more, connection kept open) after this
    # many content chunks; a non-streaming "stall" sends half of the body, then nothing.
    fault_after_chunks: int = 2
    models: list[str] = msgspec.field(default_factory=lambda: ["sim-gpt-fast", "sim-gpt-mini"])
    context_window: int | None = None  # prompt + max_tokens above this: a context-length error
    # OpenAI-format bodies and chunks in `json.dumps`' default spelling (`", "` and `": "`,
    # non-ASCII as \u escapes), as Python-based compatible servers write them; else compact.
    spaced_json: bool = False
    send_done: bool = True  # False: a stream ends at EOF after its last chunk, without [DONE]
    # The model's tokenizer against the 4-characters rule: prompt tokens counted (for usage
    # and the context window) are the rule's count times this (e.g. 2.0: a denser tokenizer).
    prompt_token_ratio: float = 1.0
    report_usage: bool = True  # False: OpenAI-format answers carry no usage at all
    # The oracle: accuracy per task ("*": any other) and difficulty, e.g.
    # {"math": {"easy": 0.95, "hard": 0.4}}. A prompt whose last user message carries an item
    # marker (see ITEM_MARKER) is answered right or wrong by item, deterministically, so the
    # ground truth of an evaluation or a routing run is known. No marker: the usual answer.
    quality: dict[str, dict[str, float]] | None = None
    # A judge: a prompt with <candidate>...</candidate> and
    # <expected>...</expected> (or an item marker in place of <expected>) is answered
    # {"verdict", "score", "reason"}, correctly.
    judge: bool = False
    # The model declines: OpenAI-format answers carry this text as `message.refusal` (streamed
    # as `delta.refusal` pieces) and no content, as OpenAI's models refuse under structured
    # outputs. Other formats answer as usual.
    refusal: str | None = None


@dataclass
class Stats:
    requests: int = 0
    streams_started: int = 0
    streams_completed: int = 0
    streams_cancelled: int = 0
    last_request: dict[str, Any] = field(default_factory=dict)


WORDS = [
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
    "gateway",
    "stream",
    "token",
    "provider",
    "latency",
    "failover",
    "routing",
]

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

RATE_HEADERS = {
    "x-ratelimit-limit-requests": "10000",
    "x-ratelimit-remaining-requests": "9999",
    "x-ratelimit-reset-requests": "6ms",
    "x-ratelimit-limit-tokens": "2000000",
    "x-ratelimit-remaining-tokens": "1999000",
    "x-ratelimit-reset-tokens": "30ms",
}
SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache", **RATE_HEADERS}
DONE = b"data: [DONE]\n\n"
MAX_BODY = 64 * 1024 * 1024


def error_body(status: int, message: str | None = None, param: str | None = None, code: str | None = None) -> bytes:
    etype, ecode, emsg = _ERRORS.get(status, ("server_error", None, f"Error {status} (simulated)."))
    return orjson.dumps({"error": {"message": message or emsg, "type": etype, "param": param, "code": code or ecode}})


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


# `[[item id=<ID> task=<T> level=<easy|hard> answer=<A>]]`: A runs to the last `]]`, so
# an answer may hold spaces or JSON (the marker ends the message).
ITEM_MARKER = re.compile(r"\[\[item id=(\S+) task=(\S+) level=(easy|hard) answer=(.*)\]\]", re.DOTALL)
_TAGGED = {name: re.compile(rf"<{name}>(.*?)</{name}>", re.DOTALL) for name in ("candidate", "expected")}


def _last_user_text(messages: list[Any]) -> str:
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            return _text_of(m.get("content"))
    return ""


def draw(model: str, item: str) -> float:
    """A number in [0, 1) fixed by (model, item): the same in every process and run (hashlib,
    not hash(), which is salted per process)."""
    digest = hashlib.blake2b(f"{model}|{item}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def wrong_answer(answer: str, item: str) -> str:
    """A deterministic wrong answer: never equal to `answer`, never containing it, and for a
    number, off by more than any sane tolerance (so every grader fails it)."""
    k = int(draw("wrong", item) * 7) + 1
    try:
        number = float(answer)
    except ValueError:
        number = None
    if number is not None and number == number and abs(number) != float("inf"):
        off = number + (abs(number) + 1) * (k + 1)
        return str(int(off)) if off == int(off) else str(off)
    if len(answer) == 1 and answer.isalpha():  # a choice letter: another letter
        letters = "ABCDE" if answer.isupper() else "abcde"
        return next(c for c in letters[k % 5 :] + letters if c != answer)
    low = answer.lower()
    for i in range(len(WORDS)):
        guess = f"{WORDS[(k + i) % len(WORDS)]} {WORDS[(3 * k + i) % len(WORDS)]}"
        if low not in guess.lower() and guess.lower() not in low:
            return guess
    return "~" * (len(answer) + 1)


def oracle_text(profile: Profile, model: str, messages: list[Any]) -> str | None:
    """What the oracle or the judge answers, or None when the profile or prompt is not one."""
    if not (profile.quality or profile.judge):
        return None
    text = _last_user_text(messages)
    if profile.judge:
        # <candidate>: the answer graded, as `aiogw eval`'s llm_judge and spot checks send it.
        candidate = _TAGGED["candidate"].search(text)
        if candidate is not None:
            expected = _TAGGED["expected"].search(text)
            marker = ITEM_MARKER.search(text) if expected is None else None
            want = expected.group(1) if expected is not None else marker.group(4) if marker else None
            if want is not None:
                ok = _norm(candidate.group(1)) == _norm(want)
                reason = "matches the expected answer" if ok else "differs from the expected answer"
                return orjson.dumps({"verdict": "pass" if ok else "fail", "score": 1.0 if ok else 0.0,
                                     "reason": reason}).decode()  # fmt: skip
    if not profile.quality:
        return None
    marker = ITEM_MARKER.search(text)
    if marker is None:
        return None
    item, task, level, answer = marker.groups()
    rates = profile.quality.get(task) or profile.quality.get("*")
    if rates is None:
        return None
    return answer if draw(model, item) < rates.get(level, 0.0) else wrong_answer(answer, item)


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


class Answer:
    """Everything one request's answer consists of, computed once from its body."""

    def __init__(self, body: dict[str, Any], profile: Profile) -> None:
        self.model: str = body["model"]
        messages = body["messages"]
        prompt = " ".join(_text_of(m.get("content")) for m in messages if isinstance(m, dict))
        self.prompt_tokens = max(1, int(len(prompt) // 4 * profile.prompt_token_ratio))
        self.report_usage = profile.report_usage
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        n_words = profile.completion_tokens
        self.finish = "stop"
        if isinstance(limit, int) and limit < n_words:
            n_words, self.finish = max(1, limit), "length"
        seed = zlib.crc32(f"{self.model}|{prompt}|{body.get('seed')}".encode())
        self.n = body.get("n") or 1
        self.words: list[list[str]] = []
        fixed = oracle_text(profile, self.model, messages)
        self.oracle = fixed is not None
        for i in range(self.n if fixed is None else 0):
            rnd = random.Random(seed + i)
            head = ["Simulated", "reply", "from", f"{self.model}:"]
            words = (head + [rnd.choice(WORDS) for _ in range(max(0, n_words - len(head)))])[:n_words]
            self.words.append(words)
        if fixed is not None:
            # The oracle's answer verbatim (split on single spaces, so joined back it is the same).
            words = fixed.split(" ")
            self.finish = "stop"
            if isinstance(limit, int) and limit < len(words):
                words, self.finish = words[: max(1, limit)], "length"
            self.words = [words for _ in range(self.n)]
        rf = body.get("response_format") or {}
        # An oracle's or judge's answer is already what was asked for (the judge's is JSON).
        self.json_mode = not self.oracle and isinstance(rf, dict) and rf.get("type") in ("json_object", "json_schema")
        # Structured output: the answer is an instance of the schema, as a real model's is.
        structured = self.json_mode and rf.get("type") == "json_schema"
        self.schema = (rf.get("json_schema") or {}).get("schema") if structured else None
        self.logprobs = bool(body.get("logprobs"))
        self.top_logprobs = int(body.get("top_logprobs") or 0)
        self.tool_calls = [] if self.oracle else self._tools(body)  # the oracle answers in text
        self.id = "chatcmpl-" + secrets.token_hex(12)
        self.created = int(time.time())
        self.include_usage = self.report_usage and bool((body.get("stream_options") or {}).get("include_usage"))
        self.spaced = profile.spaced_json
        self.refusal = profile.refusal if not (self.tool_calls or self.oracle) else None

    def dumps(self, obj: Any) -> bytes:
        """A body or chunk in the profile's JSON spelling."""
        return json.dumps(obj).encode() if self.spaced else orjson.dumps(obj)

    def _tools(self, body: dict[str, Any]) -> list[tuple[str, str, str]]:
        tools = [t["function"] for t in body.get("tools") or [] if isinstance(t, dict) and "function" in t]
        choice = body.get("tool_choice", "auto")
        if not tools or choice == "none":
            return []
        messages = [m for m in body["messages"] if isinstance(m, dict)]
        after_result = bool(messages) and messages[-1].get("role") == "tool"
        if isinstance(choice, dict):
            tools = [t for t in tools if t.get("name") == choice.get("function", {}).get("name")] or tools[:1]
        elif after_result:
            if choice != "required":
                return []  # the tool answered: a final answer, so an agent loop ends
            # Forced to call again: a tool not called yet in this conversation, as a model
            # moves on (e.g. to the tool that carries the final answer).
            called = {tc.get("function", {}).get("name") for m in messages for tc in m.get("tool_calls") or []}
            tools = [t for t in tools if t.get("name") not in called] or tools
        picked = (
            tools[:2] if (choice == "required" or body.get("parallel_tool_calls")) and len(tools) > 1 else tools[:1]
        )
        self.finish = "tool_calls"
        text = " ".join(self.words[0])
        return [
            ("call_" + secrets.token_hex(12), t["name"],
             orjson.dumps(instance(t.get("parameters") or {"type": "object", "properties": {}}, text)).decode())
            for t in picked
        ]  # fmt: skip

    def text(self, i: int) -> str:
        text = " ".join(self.words[i])
        if not self.json_mode:
            return text
        return orjson.dumps(instance(self.schema if self.schema is not None else {"type": "object"}, text)).decode()

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
            elif self.refusal is not None:
                msg["refusal"] = self.refusal
            else:
                msg["content"] = self.text(i)
            lp = {"content": self.logprob_content(msg["content"] or ""), "refusal": None} if self.logprobs else None
            choices.append({"index": i, "message": msg, "logprobs": lp, "finish_reason": self.finish})
        return self.dumps(
            {
                "id": self.id,
                "object": "chat.completion",
                "created": self.created,
                "model": self.model,
                "system_fingerprint": "fp_simulated",
                "service_tier": "default",
                "choices": choices,
                **({"usage": self.usage()} if self.report_usage else {}),
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
        return b"data: " + self.dumps(c) + b"\n\n"

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
            elif self.refusal is not None:
                out.append((self.chunk(i, {"role": "assistant", "content": None, "refusal": ""}), False))
                words = self.refusal.split(" ")
                for k in range(0, len(words), per_chunk):
                    piece = ("" if k == 0 else " ") + " ".join(words[k : k + per_chunk])
                    out.append((self.chunk(i, {"refusal": piece}), True))
            else:
                out.append((self.chunk(i, {"role": "assistant", "content": "", "refusal": None}), False))
                for piece in self.pieces(i, per_chunk):
                    lp = {"content": self.logprob_content(piece), "refusal": None} if self.logprobs else None
                    out.append((self.chunk(i, {"content": piece}, logprobs=lp), True))
            out.append((self.chunk(i, {}, finish=self.finish), False))
        if self.include_usage:
            last = {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "system_fingerprint": "fp_simulated",
                "choices": [],
                "usage": self.usage(),
            }
            out.append((b"data: " + self.dumps(last) + b"\n\n", False))
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
        if p.fault == "none" or (p.fault_rate < 1.0 and random.random() >= p.fault_rate):
            return False
        if p.fault_count is not None:
            if p.fault_count <= 0:
                return False
            p.fault_count -= 1
        return True


STATE = web.AppKey("sim_state", SimulatorState)


def account_of(request: web.Request) -> str:
    return request.match_info.get("account", "default")


def json_error(status: int, **kw: Any) -> web.Response:
    headers = {"x-request-id": "req_sim_" + secrets.token_hex(6)}
    if status in (429, 503):
        headers["retry-after"] = "1"
        headers.update(RATE_HEADERS)
        headers["x-ratelimit-remaining-requests"] = "0"
    return web.Response(status=status, body=error_body(status, **kw), content_type="application/json", headers=headers)


def check_auth(request: web.Request, p: Profile) -> web.Response | None:
    if p.api_key is None:
        return None
    sent = request.headers.get("authorization", "")
    if sent != f"Bearer {p.api_key}":
        shown = sent.removeprefix("Bearer ")
        masked = (shown[:3] + "*" * 8 + shown[-4:]) if len(shown) > 8 else "***"
        return json_error(
            401,
            message=f"Incorrect API key provided: {masked}. You can find your API key at https://platform.openai.com/account/api-keys.",
        )
    return None


async def read_json(request: web.Request) -> dict[str, Any] | web.Response:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return json_error(400, message="We could not parse the JSON body of your request.")
    if not isinstance(body, dict):
        return json_error(400, message="The body must be a JSON object.")
    return body


def account_for(request: web.Request) -> tuple[SimulatorState, Profile, Stats]:
    """The state, profile and stats of the account a request is for; the request counted."""
    state = request.app[STATE]
    account = account_of(request)
    stats = state.stat(account)
    stats.requests += 1
    return state, state.profile(account), stats


def record(stats: Stats, request: web.Request, body: Any, path: str | None = None) -> None:
    """What tests read back: the last request's path, headers (lower-case names) and body."""
    headers = {k.lower(): v for k, v in request.headers.items()}
    stats.last_request = {"path": path or request.path, "headers": headers, "body": body}


async def draw_fault(state: SimulatorState, p: Profile) -> Fault:
    """The fault this request gets ("none" unless the profile says); a hang starts here, before
    any answer exists, the same for every wire format. The caller answers "status" its way."""
    fault = p.fault if state.take_fault(p) else "none"
    if fault == "hang":
        await asyncio.sleep(3600)  # until the client goes away (handler cancellation)
    return fault


def chunk_gap_s(p: Profile) -> float:
    return p.chunk_tokens / p.tokens_per_s if p.tokens_per_s else 0.0


def answer_time_s(p: Profile, tokens: int) -> float:
    """How long a whole (non-streamed) answer of `tokens` takes to generate."""
    return p.ttft_ms / 1000 + (tokens / p.tokens_per_s if p.tokens_per_s else 0)


def embedding(text: str, dims: int) -> list[float]:
    """A deterministic vector for a text: the same text, the same vector, in every format."""
    rnd = random.Random(zlib.crc32(text.encode()))
    return [round(rnd.uniform(-1, 1), 6) for _ in range(dims)]


def float32_base64(vector: list[float]) -> str:
    """`encoding_format: base64` as OpenAI-style APIs send it: little-endian float32 bytes."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


async def send_body(
    request: web.Request, payload: bytes, fault: str, delay_s: float, headers: dict[str, str] | None = None
) -> web.StreamResponse:
    """A whole (non-streamed) answer once `delay_s` has passed, or the profile's fault in its
    place: the connection dropped, the body cut short, or half of it and then silence."""
    if delay_s:
        await asyncio.sleep(delay_s)
    if fault == "drop":
        assert request.transport is not None
        request.transport.abort()
        return web.Response(status=500)
    if fault == "malformed":
        return web.Response(body=payload[:-20], content_type="application/json", headers=headers)
    if fault == "stall":
        resp = web.StreamResponse(headers={"Content-Type": "application/json", "Content-Length": str(len(payload))})
        await resp.prepare(request)
        await resp.write(payload[: len(payload) // 2])
        await asyncio.sleep(3600)
    return web.Response(body=payload, content_type="application/json", headers=headers)


async def send_stream(
    request: web.Request,
    headers: dict[str, str],
    events: list[tuple[bytes, bool]],
    p: Profile,
    fault: str,
    stats: Stats,
    *,
    malformed: bytes,
    error_event: bytes,
    done: bytes = b"",
) -> web.StreamResponse:
    """A streamed answer, paced the same in every wire format: headers after the profile's
    time to first token, then `events` (bytes, carries a token) one token gap apart and
    `done` (the format's end sentinel, if any). The profile's fault strikes after
    `fault_after_chunks` token events; `malformed` and `error_event` are the format's own
    bytes for those two faults, the last the stream sends."""
    stats.streams_started += 1
    resp = web.StreamResponse(headers=headers)
    gap = chunk_gap_s(p)
    try:
        if p.ttft_ms:
            await asyncio.sleep(p.ttft_ms / 1000)
        await resp.prepare(request)
        if fault == "hang_after_headers":
            await resp.write(events[0][0])
            await asyncio.sleep(3600)
        if not gap and fault == "none":
            await resp.write(b"".join(e for e, _ in events) + done)  # one write: the fast baseline
        else:
            sent = 0
            for ev, token in events:
                if token:
                    if fault != "none" and sent >= p.fault_after_chunks:
                        await _strike(request, resp, fault, malformed, error_event)
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


async def _strike(
    request: web.Request, resp: web.StreamResponse, fault: str, malformed: bytes, error_event: bytes
) -> None:
    if fault == "drop":
        assert request.transport is not None
        request.transport.abort()
    elif fault == "malformed":
        await resp.write(malformed)
        await resp.write_eof()
    elif fault == "error_event":
        await resp.write(error_event)
        await resp.write_eof()
    elif fault == "stall":
        await asyncio.sleep(3600)  # the connection stays open, silent, until the client gives up
