"""The simulator speaking the Gemini API (generativelanguage v1beta):
`POST /v1beta/models/{model}:generateContent`, `:streamGenerateContent?alt=sse`,
`:embedContent` and `:batchEmbedContents`, for the default account and under
`/{account}`, so a `gemini` provider's `base_url` is `Simulator.root(account)`.

Written from ai.google.dev/api and the official SDK's types (googleapis/python-genai
types.py: GenerateContentResponse, Candidate, Part, FunctionCall, UsageMetadata) — never
from aiogw's adapter. The same profiles, faults and deterministic answers as the other
formats (sim_core), rendered the Gemini way: camelCase keys, CRLF-framed SSE events each
holding only the new parts, a function call arriving whole, `finishReason` and the final
`usageMetadata` on the last event and no end sentinel, Google-style error bodies.
"""

from __future__ import annotations

import re
import secrets
import zlib
from typing import Any

import orjson
from aiohttp import web

from aiogw.bench.sim_core import (
    Answer,
    Profile,
    account_for,
    answer_time_s,
    draw_fault,
    embedding,
    record,
    send_body,
    send_stream,
)

_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
           429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}  # fmt: skip
_MESSAGES = {
    "RESOURCE_EXHAUSTED": "Resource has been exhausted (e.g. check quota). (simulated)",
    "UNAVAILABLE": "The model is overloaded. Please try again later.",
    "INTERNAL": "An internal error has occurred. (simulated)",
    "PERMISSION_DENIED": "Method doesn't allow unregistered callers. (simulated)",
    "NOT_FOUND": "models/x is not found for API version v1beta. (simulated)",
    "DEADLINE_EXCEEDED": "Deadline expired before operation could complete. (simulated)",
}
FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP"}
CRLF = b"\r\n"


def error(status: int, message: str | None = None, reason: str | None = None) -> web.Response:
    st = _STATUS.get(status, "UNKNOWN")
    details: list[dict[str, Any]] = []
    if reason:
        details.append(
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": "googleapis.com"}
        )
    if status == 429:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"})
    body = {
        "error": {
            "code": status,
            "message": message or _MESSAGES.get(st, "Request failed. (simulated)"),
            "status": st,
            "details": details,
        }
    }
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def _text(parts: Any) -> str:
    out = []
    for p in parts or []:
        if isinstance(p, dict):
            if "text" in p:
                out.append(p["text"])
            elif "functionResponse" in p:
                out.append(orjson.dumps(p["functionResponse"].get("response")).decode())
    return " ".join(out)


def _content_view(c: dict[str, Any]) -> dict[str, Any]:
    """A turn of functionResponse parts answers tools (OpenAI's `tool` role); a model turn's
    functionCall parts are its calls."""
    parts = [p for p in c.get("parts") or [] if isinstance(p, dict)]
    view: dict[str, Any] = {"role": c.get("role", "user"), "content": _text(parts)}
    if parts and all("functionResponse" in p for p in parts):
        view["role"] = "tool"
    calls = [
        {"type": "function", "function": {"name": p["functionCall"].get("name")}} for p in parts if "functionCall" in p
    ]
    if calls:
        view["tool_calls"] = calls
    return view


def openai_view(model: str, body: dict[str, Any]) -> dict[str, Any]:
    """The fields sim_core's Answer reads, from a Gemini request."""
    g = body.get("generationConfig") or {}
    messages = []
    if body.get("systemInstruction"):
        messages.append({"role": "system", "content": _text(body["systemInstruction"].get("parts"))})
    messages += [_content_view(c) for c in body.get("contents", [])]
    view: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": g.get("maxOutputTokens"),
                            "n": g.get("candidateCount") or 1, "seed": g.get("seed"),
                            "logprobs": g.get("responseLogprobs"), "top_logprobs": g.get("logprobs")}  # fmt: skip
    if g.get("responseMimeType") == "application/json":
        # JSON Schema (responseJsonSchema) or Gemini's OpenAPI subset (responseSchema).
        schema = g.get("responseJsonSchema") or g.get("responseSchema")
        view["response_format"] = (
            {"type": "json_schema", "json_schema": {"schema": schema}} if schema else {"type": "json_object"}
        )
    decls = [d for t in body.get("tools") or [] for d in t.get("functionDeclarations", [])]
    if decls:
        view["tools"] = [{"type": "function", "function": {"name": d["name"],
                          "parameters": d.get("parametersJsonSchema") or d.get("parameters") or {}}} for d in decls]  # fmt: skip
        cfg = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
        mode = cfg.get("mode", "AUTO")
        allowed = cfg.get("allowedFunctionNames")
        if mode == "NONE":
            view["tool_choice"] = "none"
        elif mode == "ANY" and allowed:
            view["tool_choice"] = {"type": "function", "function": {"name": allowed[0]}}
        elif mode == "ANY":
            view["tool_choice"] = "required"
    return view


class NativeAnswer:
    """An Answer rendered as Gemini candidates."""

    def __init__(self, model: str, body: dict[str, Any], profile: Profile) -> None:
        self.a = Answer(openai_view(model, body), profile)
        self.model = model
        self.response_id = secrets.token_urlsafe(16)
        thinking = (body.get("generationConfig") or {}).get("thinkingConfig") or {}
        self.thoughts = "**Planning** the reply." if thinking.get("includeThoughts") else None
        self.thought_tokens = 6 if self.thoughts else 0

    def usage(self, final: bool) -> dict[str, Any]:
        u: dict[str, Any] = {"promptTokenCount": self.a.prompt_tokens,
                             "promptTokensDetails": [{"modality": "TEXT", "tokenCount": self.a.prompt_tokens}]}  # fmt: skip
        out = self.a.completion_tokens()
        if final:
            u["candidatesTokenCount"] = out
            if self.thought_tokens:
                u["thoughtsTokenCount"] = self.thought_tokens
            u["totalTokenCount"] = self.a.prompt_tokens + out + self.thought_tokens
        else:
            u["totalTokenCount"] = self.a.prompt_tokens
        return u

    def _call_parts(self) -> list[dict[str, Any]]:
        parts = []
        for k, (_, name, args) in enumerate(self.a.tool_calls):
            part: dict[str, Any] = {"functionCall": {"name": name, "args": orjson.loads(args)}}
            if k == 0:
                part["thoughtSignature"] = "CiSim" + secrets.token_hex(12)
            parts.append(part)
        return parts

    def _with_logprobs(self, cand: dict[str, Any], text: str) -> dict[str, Any]:
        """`responseLogprobs`: the chosen token at each step (and with `logprobs: k`, the
        top k), in the candidate that carries the text (ai.google.dev: LogprobsResult)."""
        if not self.a.logprobs or not text:
            return cand
        tokens = re.findall(r"\s*\S+|\s+", text)  # spaces kept: the tokens join to the text
        chosen = [{"token": t, "tokenId": zlib.crc32(t.encode()) % 256000, "logProbability": -0.01} for t in tokens]
        result: dict[str, Any] = {"chosenCandidates": chosen, "logProbabilitySum": round(-0.01 * len(chosen), 6)}
        k = self.a.top_logprobs
        if k:
            result["topCandidates"] = [
                {"candidates": [c] + [{"token": f"{c['token']}{j}", "tokenId": c["tokenId"] + j, "logProbability": -5.0 - j}
                                      for j in range(1, k)]}
                for c in chosen
            ]  # fmt: skip
        return cand | {"logprobsResult": result, "avgLogprobs": -0.01}

    def response(self) -> bytes:
        candidates = []
        for i in range(self.a.n):
            parts: list[dict[str, Any]] = [{"text": self.thoughts, "thought": True}] if self.thoughts else []
            parts += self._call_parts() if self.a.tool_calls else [{"text": self.a.text(i)}]
            cand = {"content": {"role": "model", "parts": parts}, "finishReason": FINISH[self.a.finish], "index": i}
            candidates.append(self._with_logprobs(cand, "" if self.a.tool_calls else self.a.text(i)))
        return orjson.dumps({"candidates": candidates, "usageMetadata": self.usage(True),
                             "modelVersion": self.model, "responseId": self.response_id})  # fmt: skip

    def events(self, per_chunk: int) -> list[tuple[bytes, bool]]:
        def ev(candidates: list[dict[str, Any]], final: bool) -> bytes:
            # Gemini's SSE: one full GenerateContentResponse per event, CRLF line ends.
            body = {"candidates": candidates, "usageMetadata": self.usage(final),
                    "modelVersion": self.model, "responseId": self.response_id}  # fmt: skip
            return b"data: " + orjson.dumps(body) + CRLF + CRLF

        out: list[tuple[bytes, bool]] = []
        for i in range(self.a.n):
            if self.thoughts:
                out.append(
                    (
                        ev(
                            [
                                {
                                    "content": {"role": "model", "parts": [{"text": self.thoughts, "thought": True}]},
                                    "index": i,
                                }
                            ],
                            False,
                        ),
                        True,
                    )
                )
            if self.a.tool_calls:
                cand = {"content": {"role": "model", "parts": self._call_parts()}, "index": i}
                out.append((ev([cand], False), True))
            else:
                for piece in self.a.pieces(i, per_chunk):
                    cand = self._with_logprobs(
                        {"content": {"role": "model", "parts": [{"text": piece}]}, "index": i}, piece
                    )
                    out.append((ev([cand], False), True))
        # The last event: finishReason for every candidate and the final usage.
        last = [{"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": FINISH[self.a.finish], "index": i}
                for i in range(self.a.n)]  # fmt: skip
        out.append((ev(last, True), False))
        return out


def _check_auth(request: web.Request, p: Profile) -> web.Response | None:
    if p.api_key is not None and request.headers.get("x-goog-api-key") != p.api_key:
        return error(400, "API key not valid. Please pass a valid API key.", reason="API_KEY_INVALID")
    return None


async def model_action(request: web.Request) -> web.StreamResponse:
    model, _, action = request.match_info["model_action"].partition(":")
    if action in ("embedContent", "batchEmbedContents"):
        return await _embed(request, model, action)
    if action not in ("generateContent", "streamGenerateContent"):
        return error(404, f"Method {action!r} not found. (simulated)")
    state, p, stats = account_for(request)
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return error(400, "Invalid JSON payload received.")
    record(stats, request, body, path=request.path_qs)
    if denied := _check_auth(request, p):
        return denied
    if not body.get("contents"):
        return error(400, "* GenerateContentRequest.contents: contents is not specified")
    fault = await draw_fault(state, p)
    if fault == "status":
        return error(p.fault_status)
    answer = NativeAnswer(model, body, p)
    if action == "streamGenerateContent":
        if request.query.get("alt") != "sse":
            return error(400, "This simulator streams only with alt=sse.")
        unavailable = {"error": {"code": 503, "message": _MESSAGES["UNAVAILABLE"], "status": "UNAVAILABLE"}}
        return await send_stream(
            request, {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
            answer.events(max(1, p.chunk_tokens)), p, fault, stats,
            malformed=b'data: {"candidates": [{"content": {"parts": [{"text": "cut' + CRLF + CRLF,
            error_event=b"data: " + orjson.dumps(unavailable) + CRLF + CRLF,
        )  # fmt: skip
    return await send_body(request, answer.response(), fault, answer_time_s(p, answer.a.completion_tokens()))


async def _embed(request: web.Request, model: str, action: str) -> web.Response:
    state, p, stats = account_for(request)
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return error(400, "Invalid JSON payload received.")
    record(stats, request, body)
    if denied := _check_auth(request, p):
        return denied
    if state.take_fault(p) and p.fault == "status":
        return error(p.fault_status)

    def vector(req: dict[str, Any]) -> dict[str, Any]:
        text = _text((req.get("content") or {}).get("parts"))
        return {"values": embedding(text, int(req.get("outputDimensionality") or 8))}

    if action == "embedContent":
        return web.json_response({"embedding": vector(body)})
    requests = body.get("requests") or []
    for r in requests:
        if r.get("model") != f"models/{model}":
            return error(400, f"* BatchEmbedContentsRequest.requests: model must be models/{model}")
    return web.json_response({"embeddings": [vector(r) for r in requests]})


def add_routes(app: web.Application) -> None:
    for prefix in ("", "/{account}"):
        app.router.add_post(prefix + "/v1beta/models/{model_action}", model_action)
