"""Google Gemini (generativelanguage API, v1beta) as an upstream.

Spec: ai.google.dev/api (generateContent, streamGenerateContent, embedContent,
batchEmbedContents) and the official SDK's types (googleapis/python-genai, types.py); our
summary is docs/providers.md §5 and §10.2. Chat turns become `contents` with roles user/model
and a `systemInstruction`; tool calls are `functionCall` parts (arriving whole, also when
streamed) and tool results `functionResponse` parts. Gemini mints no call ids: aiogw makes
them, and carries a part's `thoughtSignature` inside the id (`…__ts_<signature>`) so the
next turn of a tool loop can hand it back, which Gemini 3 models require (§11, option a).

This module turns a request into Gemini's; what comes back (responses, errors, stream
events) is read in `gemini_reply`.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from aiogw.adapters import _base as base
from aiogw.adapters.gemini_reply import StreamDecoder, decode_error, decode_response, split_call_id
from aiogw.types import (
    AssistantMessage,
    ChatRequest,
    DeveloperMessage,
    EmbeddingRequest,
    FunctionMessage,
    ImagePart,
    NamedToolChoice,
    ParsedChat,
    SystemMessage,
    TextPart,
    ToolMessage,
    UserMessage,
)

NAME = "gemini"
API_VERSION = "v1beta"

# reasoning_effort -> thinkingBudget (2.5 models) / thinkingLevel (3 models).
THINKING_BUDGET = {"none": 0, "minimal": 512, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 32768}
THINKING_LEVEL = {"minimal": "LOW", "low": "LOW", "medium": "HIGH", "high": "HIGH", "xhigh": "HIGH"}
# Google's documented stand-in for a signature we never saw (history from another provider).
SKIP_SIGNATURE = "skip_thought_signature_validator"
NATIVE_EXTRAS = ("safetySettings", "cachedContent", "labels")
_FUNCTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,127}$")

PARAMS = base.ParamMap(
    reject={"logit_bias": "no token biasing"},
    drop={
        "parallel_tool_calls": "Gemini has no switch for parallel calls; it is a hint",
        "user": "no end-user field",
    },
    translated=frozenset(
        {
            "temperature", "top_p", "top_k", "n", "max_tokens", "max_completion_tokens", "stop", "seed",
            "presence_penalty", "frequency_penalty", "logprobs", "top_logprobs", "tools", "tool_choice",
            "response_format", "reasoning_effort",
        }
    ),
)  # fmt: skip

_encode = msgspec.json.Encoder().encode


_bad = base.invalid_value


# --- request ------------------------------------------------------------------------------


def _parts(content: str | list[Any] | None, where: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    out: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        if isinstance(part, TextPart):
            if part.text:
                out.append({"text": part.text})
        elif isinstance(part, ImagePart):
            url = part.image_url.url
            data = base.parse_data_url(url)
            if data is not None:
                out.append({"inlineData": {"mimeType": data[0], "data": data[1]}})
            elif url.startswith("https://generativelanguage.googleapis.com/"):
                out.append({"fileData": {"fileUri": url}})
            else:
                # Gemini reads only inline data and its own Files API URIs; fetching arbitrary
                # URLs on the client's behalf is not something a gateway should do silently.
                raise _bad(
                    "Gemini takes images as base64 data URLs (or Files API URIs); send the image inline.",
                    f"{where}[{i}].image_url.url",
                )
        else:
            kind = type(part).__struct_config__.tag
            raise _bad(f"Gemini targets take text and image parts, not '{kind}'.", f"{where}[{i}].type")
    return out


def _tool_response(content: str | list[Any]) -> dict[str, Any]:
    """`response` must be an object: a JSON object passes as is, anything else is wrapped."""
    text = content if isinstance(content, str) else base.content_text(content)
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return {"result": text}
    return value if isinstance(value, dict) else {"result": value}


def convert_messages(req: ChatRequest, target: base.Target) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system parts, contents)."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool-call id -> function name (functionResponse needs it)
    needs_signature = target.model.startswith("gemini-3")

    def turn(role: str) -> list[dict[str, Any]]:
        if not contents or contents[-1]["role"] != role:
            contents.append({"role": role, "parts": []})
        parts: list[dict[str, Any]] = contents[-1]["parts"]
        return parts

    for k, m in enumerate(req.messages):
        where = f"messages[{k}]"
        if isinstance(m, SystemMessage | DeveloperMessage):
            system.extend(_parts(m.content, f"{where}.content"))
        elif isinstance(m, UserMessage):
            turn("user").extend(_parts(m.content, f"{where}.content"))
        elif isinstance(m, AssistantMessage):
            parts = _parts(m.content, f"{where}.content")
            for i, call in enumerate(m.tool_calls or ()):
                names[call.id] = call.function.name
                _given, signature = split_call_id(call.id)
                args = base.tool_call_arguments(call, f"{where}.tool_calls[{i}]")
                part: dict[str, Any] = {"functionCall": {"name": call.function.name, "args": args}}
                if signature is None and needs_signature and i == 0:
                    signature = SKIP_SIGNATURE
                if signature:
                    part["thoughtSignature"] = signature
                parts.append(part)
            turn("model").extend(parts)
        elif isinstance(m, ToolMessage):
            name = names.get(m.tool_call_id)
            if name is None:
                raise _bad(
                    f"Tool result for '{m.tool_call_id}' answers no earlier tool call; Gemini needs the function name.",
                    f"{where}.tool_call_id",
                )
            turn("user").append({"functionResponse": {"name": name, "response": _tool_response(m.content)}})
        elif isinstance(m, FunctionMessage):
            raise _bad("Legacy function messages are not supported; use tool messages.", f"{where}.role")
    contents = [c for c in contents if c["parts"]]
    if not contents:
        raise _bad("At least one user or assistant message with content is required.", "messages")
    return system, contents


def _generation_config(req: ChatRequest, target: base.Target) -> dict[str, Any]:
    g: dict[str, Any] = {}
    for src, dst in (("temperature", "temperature"), ("top_p", "topP"), ("top_k", "topK"), ("seed", "seed"),
                     ("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty")):  # fmt: skip
        v = getattr(req, src)
        if isinstance(v, int | float) and not isinstance(v, bool):
            g[dst] = v
    if isinstance(req.n, int) and req.n > 1:
        g["candidateCount"] = req.n
    cap = req.output_cap or target.max_output_tokens
    if cap:
        g["maxOutputTokens"] = cap
    if req.stop:
        g["stopSequences"] = [req.stop] if isinstance(req.stop, str) else list(req.stop)
    if req.logprobs is True:
        g["responseLogprobs"] = True
        if isinstance(req.top_logprobs, int) and req.top_logprobs:
            g["logprobs"] = req.top_logprobs
    rf = req.response_format
    if rf and rf.type in ("json_object", "json_schema"):
        g["responseMimeType"] = "application/json"
        if rf.type == "json_schema" and rf.json_schema and rf.json_schema.schema:
            g["responseJsonSchema"] = rf.json_schema.schema
    effort = req.reasoning_effort
    if isinstance(effort, str):
        if effort not in THINKING_BUDGET:
            raise _bad(
                f"Unknown reasoning_effort {effort!r}; use one of {', '.join(THINKING_BUDGET)}.", "reasoning_effort"
            )
        if target.model.startswith("gemini-3"):
            if effort == "none":
                raise _bad(
                    "Gemini 3 models always think; reasoning_effort 'none' cannot be honoured.", "reasoning_effort"
                )
            g["thinkingConfig"] = {"thinkingLevel": THINKING_LEVEL[effort], "includeThoughts": True}
        else:
            g["thinkingConfig"] = {"thinkingBudget": THINKING_BUDGET[effort], "includeThoughts": effort != "none"}
    return g


def _tools(req: ChatRequest, body: dict[str, Any]) -> None:
    decls = []
    for i, t in enumerate(req.tools or ()):
        name = t.function.name
        if not _FUNCTION_NAME.match(name):
            raise _bad(f"Gemini function names start with a letter or '_': {name!r}.", f"tools[{i}].function.name")
        d: dict[str, Any] = {"name": name}
        if t.function.description:
            d["description"] = t.function.description
        if t.function.parameters:
            d["parametersJsonSchema"] = t.function.parameters
        decls.append(d)
    if decls:
        body["tools"] = [{"functionDeclarations": decls}]
    tc = req.tool_choice
    cfg: dict[str, Any] | None = None
    if isinstance(tc, NamedToolChoice):
        cfg = {"mode": "ANY", "allowedFunctionNames": [tc.function.name]}
    elif tc in ("auto", "none", "required"):
        cfg = {"mode": {"auto": "AUTO", "none": "NONE", "required": "ANY"}[tc]}
    if cfg is not None and decls:
        body["toolConfig"] = {"functionCallingConfig": cfg}


def _headers(target: base.Target) -> dict[str, str]:
    headers = {"content-type": "application/json", **target.headers}
    if target.api_key is not None:
        headers["x-goog-api-key"] = target.api_key.reveal()  # never ?key=: URLs end up in logs
    return headers


def _model_path(target: base.Target) -> str:
    # The name is the client's (direct addressing): one encoded segment; the `:method`
    # suffix the callers add is ours.
    return f"{target.base_url}/{API_VERSION}/models/{base.path_segment(target.model.removeprefix('models/'))}"


def build_call(p: ParsedChat, target: base.Target) -> base.Call:
    req = p.req
    notes = PARAMS.check(req, NAME)
    system, contents = convert_messages(req, target)
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    _tools(req, body)
    g = _generation_config(req, target)
    if g:
        body["generationConfig"] = g
    for key in NATIVE_EXTRAS:
        if key in p.raw:
            body[key] = p.raw[key]
    action = "streamGenerateContent?alt=sse" if req.is_stream else "generateContent"
    return base.Call(url=f"{_model_path(target)}:{action}", headers=_headers(target), body=_encode(body), notes=notes)


# --- embeddings ---------------------------------------------------------------------------


def build_embeddings_call(req: EmbeddingRequest, target: base.Target) -> base.Call:
    items = [req.input] if isinstance(req.input, str) else req.input
    if not items or any(not isinstance(x, str) for x in items):
        raise _bad("Gemini embeds text only: send a string or a list of strings, not token ids.", "input")
    model = target.model.removeprefix("models/")
    requests = []
    for text in items:
        r: dict[str, Any] = {"model": f"models/{model}", "content": {"parts": [{"text": text}]}}
        if isinstance(req.dimensions, int):
            r["outputDimensionality"] = req.dimensions
        requests.append(r)
    if isinstance(req.input, str):  # one input: the single-item endpoint
        one = {k: v for k, v in requests[0].items() if k != "model"}
        return base.Call(url=f"{_model_path(target)}:embedContent", headers=_headers(target), body=_encode(one))
    return base.Call(
        url=f"{_model_path(target)}:batchEmbedContents", headers=_headers(target), body=_encode({"requests": requests})
    )


class _Values(msgspec.Struct):
    values: list[float]


class _EmbedResponse(msgspec.Struct):
    embedding: _Values | None = None
    embeddings: list[_Values] | None = None


def decode_embeddings(body: bytes, target: base.Target, req: EmbeddingRequest) -> bytes:
    try:
        r = msgspec.json.decode(body, type=_EmbedResponse)
    except msgspec.MsgspecError as exc:
        raise base.protocol_error(target, f"not an embeddings answer: {exc}") from None
    vectors = r.embeddings if r.embeddings is not None else ([r.embedding] if r.embedding else [])
    # Gemini answers floats only; base64 is made here. The Developer API reports no token
    # counts for embeddings: usage stays 0 (never absent).
    return _encode({
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": base.embedding_vector(v.values, req)}
                 for i, v in enumerate(vectors)],
        "model": target.model,
        "usage": {"prompt_tokens": 0, "total_tokens": 0},
    })  # fmt: skip


ADAPTER = base.Adapter(
    name=NAME,
    default_base_url="https://generativelanguage.googleapis.com",
    build_call=build_call,
    decode_response=decode_response,
    decode_error=decode_error,
    stream_decoder=StreamDecoder,
    build_embeddings_call=build_embeddings_call,
    decode_embeddings=decode_embeddings,
    params=PARAMS,
    # Google's Gemini docs: "a token is equivalent to about 4 characters" - the local estimate's
    # own rule, so no correction is assumed until usage says otherwise.
    token_ratio=1.0,
)
