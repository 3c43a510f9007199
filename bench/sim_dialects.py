"""The simulator speaking the OpenAI dialects of Mistral, DeepSeek and Qwen (DashScope
compatible mode), each with the quirks its documentation and recorded traces show:

| provider | route (base_url = everything before /chat/completions)          |
| -------- | --------------------------------------------------------------- |
| mistral  | `[/{account}]/mistral/v1/chat/completions`, `…/mistral/v1/embeddings` |
| deepseek | `[/{account}]/deepseek/chat/completions`                        |
| qwen     | `[/{account}]/qwen/compatible-mode/v1/chat/completions`         |

Without the `/{account}` prefix the default account answers, so a provider's `base_url` is
`Simulator.root(account) + "/mistral/v1"` (or `/deepseek`, `/qwen/compatible-mode/v1`).
Written from docs.mistral.ai and the mistralai SDK models (strict schema: 422
`extra_forbidden`, 9-character tool ids, a trailing assistant message only with `prefix`,
usage on the last content chunk, whole tool calls, typed content chunks for Magistral),
api-docs.deepseek.com (keep-alive comments and blank lines while queued,
`reasoning_content` for reasoner/thinking models, 400 for log probabilities in thinking mode
and for replayed reasoning on the reasoner, cache-hit usage counters — the simulated cache
holds the system prompt) and Alibaba Model Studio's compatible-mode docs (restated empty
tool-call ids, usage-only last chunk, `enable_thinking`, ranges, the word "json" for JSON
mode, `data_inspection_failed` for a user message containing `<<blocked>>`, error bodies) —
never from aiogw's adapters. Answers come from sim_core.
"""

from __future__ import annotations

import random
import re
import secrets
import time
from typing import Any

import orjson
from aiohttp import web

from aiogw.bench.sim_core import (
    DONE,
    Answer,
    Profile,
    account_for,
    answer_time_s,
    draw_fault,
    embedding,
    float32_base64,
    record,
    send_body,
    send_stream,
)

MISTRAL_FIELDS = frozenset({
    "model", "messages", "temperature", "top_p", "max_tokens", "stream", "stop", "random_seed", "metadata",
    "response_format", "tools", "tool_choice", "presence_penalty", "frequency_penalty", "n", "prediction",
    "parallel_tool_calls", "reasoning_effort", "prompt_mode", "guardrails", "prompt_cache_key", "safe_prompt",
})  # fmt: skip
MISTRAL_MESSAGE_FIELDS = {
    "system": {"role", "content"},
    "user": {"role", "content"},
    "assistant": {"role", "content", "tool_calls", "prefix"},
    "tool": {"role", "content", "tool_call_id", "name"},
}
_MISTRAL_ID = re.compile(r"^[a-zA-Z0-9]{9}$")
THOUGHT = "First, consider what is being asked."


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(p.get("text", "") for p in content or [] if isinstance(p, dict))


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)


# --- errors, in each provider's own shape ---------------------------------------------------


def mistral_error(status: int, message: Any = None) -> web.Response:
    msgs = {401: "Unauthorized", 429: "Requests rate limit exceeded", 500: "Internal server error (simulated)",
            503: "Service unavailable (simulated)"}  # fmt: skip
    body = {"object": "error", "message": message or msgs.get(status, "Bad request (simulated)"),
            "type": "invalid_request_error" if status < 500 else "internal_server_error", "param": None, "code": None}  # fmt: skip
    return _json(status, body)


def deepseek_error(status: int, message: str | None = None) -> web.Response:
    msgs = {402: "Insufficient Balance", 429: "Rate limit reached (simulated)", 503: "Server overloaded (simulated)",
            500: "Server error (simulated)", 401: "Authentication Fails, Your api key is invalid"}  # fmt: skip
    etype = {402: "unknown_error", 401: "authentication_error", 429: "rate_limit_error"}.get(
        status, "invalid_request_error"
    )
    return _json(status, {"error": {"message": message or msgs.get(status, "Invalid request (simulated)"), "type": etype,
                                    "param": None, "code": "invalid_request_error"}})  # fmt: skip


def qwen_error(status: int, message: str | None = None, code: str | None = None) -> web.Response:
    defaults = {429: ("Throttling.RateQuota", "Requests rate limit exceeded, please try again later."),
                401: ("invalid_api_key", "Incorrect API key provided."),
                500: ("InternalError", "An internal error has occured, please try again later."),
                503: ("ServiceUnavailable", "The service is unavailable now (simulated).")}  # fmt: skip
    dcode, dmsg = defaults.get(status, ("invalid_parameter_error", "Invalid parameter (simulated)."))
    rid = secrets.token_hex(8)
    body = {"error": {"code": code or dcode, "param": None, "message": f"<{status}> InternalError.Algo: {message or dmsg}",
                      "type": "invalid_request_error" if status < 500 else "server_error"},
            "id": "chatcmpl-" + rid, "request_id": rid}  # fmt: skip
    return _json(status, body)


ERRORS = {"mistral": mistral_error, "deepseek": deepseek_error, "qwen": qwen_error}


# --- request checks -------------------------------------------------------------------------


def _mistral_check(body: dict[str, Any]) -> web.Response | None:
    """Mistral's schema forbids extra fields (422) and insists on 9-character tool ids."""
    detail = [{"type": "extra_forbidden", "loc": ["body", k], "msg": "Extra inputs are not permitted", "input": body[k]}
              for k in body if k not in MISTRAL_FIELDS]  # fmt: skip
    for i, m in enumerate(body.get("messages") or []):
        allowed = MISTRAL_MESSAGE_FIELDS.get(m.get("role"), set())
        detail += [{"type": "extra_forbidden", "loc": ["body", "messages", i, m.get("role"), k],
                    "msg": "Extra inputs are not permitted", "input": m[k]} for k in m if k not in allowed]  # fmt: skip
    if detail:
        return mistral_error(422, {"detail": detail})
    for m in body["messages"]:
        ids = [tc.get("id", "") for tc in m.get("tool_calls") or []] + (
            [m["tool_call_id"]] if "tool_call_id" in m else []
        )
        for tid in ids:
            if not _MISTRAL_ID.match(tid):
                return mistral_error(400, f"Tool call id was {tid} but must be a-z, A-Z, 0-9, with a length of 9.")
    last = body["messages"][-1] if body["messages"] else {}
    if last.get("role") == "assistant" and not last.get("prefix"):
        return mistral_error(
            400, "Expected last role User or Tool (or Assistant with prefix True) for serving but got assistant"
        )
    return None


def deepseek_thinking(body: dict[str, Any]) -> bool:
    """Thinking mode: the reasoner always; otherwise `thinking.type`, enabled by default on
    models newer than the non-thinking alias `deepseek-chat` (thinking-mode guide)."""
    if "reasoner" in body["model"]:
        return True
    switch = (body.get("thinking") or {}).get("type")
    return switch == "enabled" if switch else body["model"] != "deepseek-chat"


def _deepseek_check(body: dict[str, Any]) -> web.Response | None:
    if deepseek_thinking(body) and (body.get("logprobs") or body.get("top_logprobs")):
        return deepseek_error(400, "logprobs and top_logprobs are not supported in thinking mode")
    if (body.get("response_format") or {}).get("type") == "json_schema":
        return deepseek_error(400, "This response_format type is unavailable now")
    if "reasoner" in body["model"]:  # the reasoning-model guide: replayed reasoning is a 400
        msgs = body["messages"]
        last_user = max((i for i, m in enumerate(msgs) if m.get("role") == "user"), default=-1)
        for i, m in enumerate(msgs):
            if m.get("reasoning_content") and not (i > last_user and m.get("tool_calls")):
                return deepseek_error(400, "The reasoning_content is an intermediate result for display purposes only "
                                           "and will not be included in the context for inference. Please remove the "
                                           "reasoning_content from your message to reduce network traffic.")  # fmt: skip
    return None


def _qwen_text(body: dict[str, Any]) -> str:
    parts = []
    for m in body["messages"]:
        c = m.get("content")
        parts += [c] if isinstance(c, str) else [x.get("text", "") for x in c or [] if isinstance(x, dict)]
    return " ".join(parts)


def _qwen_check(body: dict[str, Any]) -> web.Response | None:
    text = _qwen_text(body)
    if "<<blocked>>" in text:
        return qwen_error(400, "DataInspectionFailed: Input text data may contain inappropriate content.",
                          code="data_inspection_failed")  # fmt: skip
    if (body.get("response_format") or {}).get("type") == "json_object" and "json" not in text.lower():
        return qwen_error(400, "'messages' must contain the word 'json' in some form, to use 'response_format' of type "
                               "'json_object'.")  # fmt: skip
    if body.get("enable_thinking") and not body.get("stream") and re.match(r"qwen3-\d", body["model"]):
        return qwen_error(400, "parameter.enable_thinking must be set to false for non-streaming calls")
    t, p = body.get("temperature"), body.get("top_p")
    if isinstance(t, int | float) and not 0 <= t < 2:
        return qwen_error(400, "Range of temperature should be [0.0, 2.0)")
    if isinstance(p, int | float) and not 0 < p <= 1:
        return qwen_error(400, "Range of top_p should be (0.0, 1.0]")
    forced = body.get("tool_choice") not in (None, "auto", "none")
    if forced and body.get("enable_thinking"):
        return qwen_error(400, "tool_choice is not supported when enable_thinking is true")
    return None


# --- rendering --------------------------------------------------------------------------------


class Dialect:
    def __init__(self, name: str, body: dict[str, Any], p: Profile) -> None:
        self.name = name
        view = dict(body)
        if name == "mistral" and "random_seed" in body:
            view["seed"] = body["random_seed"]
        self.a = Answer(view, p)
        self.model = body["model"]
        self.id = secrets.token_hex(16) if name == "mistral" else ("chatcmpl-" + secrets.token_hex(12))
        self.created = int(time.time())
        self.thinking = (
            (name == "deepseek" and deepseek_thinking(body))
            or (name == "qwen" and body.get("enable_thinking") is True)
            or (name == "mistral" and "magistral" in self.model)
        )
        prefix = {"mistral": "", "deepseek": "call_", "qwen": "call_"}[name]
        size = 9 if name == "mistral" else 22
        alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
        self.tools = [
            (prefix + "".join(random.choice(alphabet) for _ in range(size)), n, a) for _, n, a in self.a.tool_calls
        ]
        self.include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        system = " ".join(_text(m.get("content")) for m in body["messages"] if m.get("role") == "system")
        self.cached = min(self.a.prompt_tokens, len(system) // 4) if name == "deepseek" else 0

    def usage(self) -> dict[str, Any]:
        c = self.a.completion_tokens() + (len(THOUGHT.split()) if self.thinking else 0)
        u: dict[str, Any] = {
            "prompt_tokens": self.a.prompt_tokens,
            "completion_tokens": c,
            "total_tokens": self.a.prompt_tokens + c,
        }
        if self.name == "deepseek":
            u |= {"prompt_tokens_details": {"cached_tokens": self.cached}, "prompt_cache_hit_tokens": self.cached,
                  "prompt_cache_miss_tokens": self.a.prompt_tokens - self.cached}  # fmt: skip
            if self.thinking:
                u["completion_tokens_details"] = {"reasoning_tokens": len(THOUGHT.split())}
        return u

    def _calls(self, with_index: bool) -> list[dict[str, Any]]:
        return [{"id": i, "type": "function", "function": {"name": n, "arguments": a}} | ({"index": k} if with_index else {})
                for k, (i, n, a) in enumerate(self.tools)]  # fmt: skip

    def message(self) -> bytes:
        msg: dict[str, Any] = {"role": "assistant", "content": None if self.tools else self.a.text(0)}
        if self.tools:
            msg["tool_calls"] = self._calls(self.name == "mistral")
        if self.thinking:
            if self.name == "mistral":  # Magistral: typed content chunks
                msg["content"] = [{"type": "thinking", "thinking": [{"type": "text", "text": THOUGHT}]},
                                  {"type": "text", "text": self.a.text(0)}]  # fmt: skip
            else:
                msg["reasoning_content"] = THOUGHT
        body = {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "message": msg, "finish_reason": self.a.finish}], "usage": self.usage()}  # fmt: skip
        if self.name != "mistral":  # Mistral has no log probabilities
            body["choices"][0]["logprobs"] = self._logprobs(msg["content"])
        return self.a.dumps(body)

    def _logprobs(self, text: Any) -> dict[str, Any] | None:
        """OpenAI's shape, for DeepSeek (non-thinking) and Qwen when asked."""
        if not self.a.logprobs or not isinstance(text, str) or not text:
            return None
        return {"content": self.a.logprob_content(text), "refusal": None}

    def _chunk(self, delta: dict[str, Any], finish: str | None = None, usage: dict[str, Any] | None = None,
               choices: bool = True) -> bytes:  # fmt: skip
        c: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
        }
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
        if self.name != "mistral":
            choice["logprobs"] = self._logprobs(delta.get("content"))
        c["choices"] = [choice] if choices else []
        if usage is not None:
            c["usage"] = usage
        return b"data: " + self.a.dumps(c) + b"\n\n"

    def events(self, per_chunk: int) -> list[tuple[bytes, bool]]:
        out: list[tuple[bytes, bool]] = []
        if self.name == "deepseek":
            out += [(b": keep-alive\n\n", False)] * 2  # queued before the first token
        first: dict[str, Any] = {"role": "assistant", "content": ""}
        if self.name == "deepseek" and self.thinking:
            first = {"role": "assistant", "content": None, "reasoning_content": ""}
        out.append((self._chunk(first), False))
        if self.thinking:
            if self.name == "mistral":
                out.append(
                    (
                        self._chunk(
                            {"content": [{"type": "thinking", "thinking": [{"type": "text", "text": THOUGHT}]}]}
                        ),
                        True,
                    )
                )
            else:
                out.append((self._chunk({"content": None, "reasoning_content": THOUGHT}), True))
        usage_inline = self.name == "mistral" or (self.name == "deepseek" and self.include_usage)
        final_usage = self.usage() if usage_inline else None
        if self.tools:
            if self.name == "mistral":  # every call whole, in one delta, with the finish and usage
                out.append(
                    (self._chunk({"content": "", "tool_calls": self._calls(True)}, self.a.finish, final_usage), True)
                )
            else:
                for k, (tid, name, args) in enumerate(self.tools):
                    start = {"index": k, "id": tid, "type": "function", "function": {"name": name, "arguments": ""}}
                    out.append((self._chunk({"content": None, "tool_calls": [start]}), True))
                    for j in range(0, len(args), 8):
                        # Qwen restates an empty id (and the type) on every later fragment.
                        frag: dict[str, Any] = {"index": k, "function": {"arguments": args[j : j + 8]}}
                        if self.name == "qwen":
                            frag |= {"id": "", "type": "function"}
                        out.append((self._chunk({"tool_calls": [frag]}), True))
                out.append((self._chunk({}, self.a.finish, final_usage), False))
        else:
            pieces = self.a.pieces(0, per_chunk)
            for k, piece in enumerate(pieces):
                last = k == len(pieces) - 1
                delta: dict[str, Any] = {"content": piece}
                if self.name == "deepseek" and self.thinking:
                    delta["reasoning_content"] = None
                if last and self.name == "mistral":  # the last token, the finish and usage share a chunk
                    out.append((self._chunk(delta, self.a.finish, final_usage), True))
                else:
                    out.append((self._chunk(delta), True))
            if self.name != "mistral":
                out.append((self._chunk({"content": ""}, self.a.finish, final_usage), False))
        if self.name == "qwen" and self.include_usage:
            out.append((self._chunk({}, usage=self.usage(), choices=False), False))
        return out


def _rate_headers(name: str) -> dict[str, str]:
    if name == "mistral":
        return {"x-ratelimit-limit-req-minute": "600", "x-ratelimit-remaining-req-minute": "599",
                "x-ratelimit-limit-tokens-minute": "500000", "x-ratelimit-remaining-tokens-minute": "499000"}  # fmt: skip
    return {}


def handler(name: str) -> Any:
    error = ERRORS[name]

    async def chat(request: web.Request) -> web.StreamResponse:
        state, p, stats = account_for(request)
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return error(400, "Invalid JSON body")
        record(stats, request, body)
        if p.api_key is not None and request.headers.get("authorization") != f"Bearer {p.api_key}":
            return error(401)
        if not isinstance(body.get("messages"), list) or "model" not in body:
            return error(422 if name == "mistral" else 400, "model and messages are required")
        check = {"mistral": _mistral_check, "deepseek": _deepseek_check, "qwen": _qwen_check}.get(name)
        if check is not None and (bad := check(body)) is not None:
            return bad
        fault = await draw_fault(state, p)
        if fault == "status":
            return error(p.fault_status)
        d = Dialect(name, body, p)
        if body.get("stream"):
            err = {"object": "error", "message": "Internal server error (simulated)", "type": "internal_server_error"}
            return await send_stream(
                request, {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **_rate_headers(name)},
                d.events(max(1, p.chunk_tokens)), p, fault, stats,
                malformed=b'data: {"id":"x","object":"chat.completion.chunk","choices":[{"delta":{"content":"cu\n\n',
                error_event=b"data: " + orjson.dumps(err if name == "mistral" else {"error": err}) + b"\n\n",
                done=DONE if p.send_done else b"",
            )  # fmt: skip
        payload = d.message()
        if name == "deepseek":
            payload = b"\n\n" + payload  # blank lines while the request waited in DeepSeek's queue
        return await send_body(request, payload, fault, answer_time_s(p, d.a.completion_tokens()), _rate_headers(name))

    return chat


async def mistral_embeddings(request: web.Request) -> web.Response:
    state, p, stats = account_for(request)
    body = orjson.loads(await request.read())
    record(stats, request, body)
    extra = [
        k
        for k in body
        if k not in ("model", "input", "output_dimension", "output_dtype", "encoding_format", "metadata")
    ]
    if extra:
        return mistral_error(422, {"detail": [{"type": "extra_forbidden", "loc": ["body", k]} for k in extra]})
    if state.take_fault(p) and p.fault == "status":
        return mistral_error(p.fault_status)
    inputs = [body["input"]] if isinstance(body["input"], str) else body["input"]
    dims = int(body.get("output_dimension") or 8)
    data = []
    for i, text in enumerate(inputs):
        vec = embedding(str(text), dims)
        emb: Any = float32_base64(vec) if body.get("encoding_format") == "base64" else vec
        data.append({"object": "embedding", "embedding": emb, "index": i})
    tokens = sum(max(1, len(str(t)) // 4) for t in inputs)
    return _json(200, {"id": secrets.token_hex(16), "object": "list", "data": data, "model": body["model"],
                       "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0}})  # fmt: skip


def add_routes(app: web.Application) -> None:
    for prefix in ("", "/{account}"):
        app.router.add_post(prefix + "/mistral/v1/chat/completions", handler("mistral"))
        app.router.add_post(prefix + "/mistral/v1/embeddings", mistral_embeddings)
        app.router.add_post(prefix + "/deepseek/chat/completions", handler("deepseek"))
        app.router.add_post(prefix + "/qwen/compatible-mode/v1/chat/completions", handler("qwen"))
