"""Google Gemini (generativelanguage API, v1beta) as an upstream.

Spec: ai.google.dev/api (generateContent, streamGenerateContent, embedContent,
batchEmbedContents) and the official SDK's types (googleapis/python-genai, types.py); our
summary is docs/providers.md §5 and §10.2. Chat turns become `contents` with roles user/model
and a `systemInstruction`; tool calls are `functionCall` parts (arriving whole, also when
streamed) and tool results `functionResponse` parts. Gemini mints no call ids: aiogw makes
them, and carries a part's `thoughtSignature` inside the id (`…__ts_<signature>`) so the
next turn of a tool loop can hand it back, which Gemini 3 models require (§11, option a).
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Mapping
from typing import Any

import msgspec

from aiogw.adapters import _base as base
from aiogw.errors import FailureClass, UpstreamError
from aiogw.types import (
    AssistantMessage,
    ChatRequest,
    Choice,
    CompletionTokensDetails,
    CompletionUsage,
    Delta,
    DeveloperMessage,
    EmbeddingRequest,
    FinishReason,
    FunctionCall,
    FunctionMessage,
    ImagePart,
    NamedToolChoice,
    ParsedChat,
    PromptTokensDetails,
    Reply,
    ResponseMessage,
    SystemMessage,
    TextPart,
    ToolCall,
    ToolMessage,
    UserMessage,
)

NAME = "gemini"
API_VERSION = "v1beta"

FINISH: dict[str, FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "FINISH_REASON_UNSPECIFIED": "stop",
    "OTHER": "stop",
    "IMAGE_OTHER": "stop",
    "NO_IMAGE": "stop",
    **dict.fromkeys(
        ("SAFETY", "RECITATION", "LANGUAGE", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII",
         "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION"),
        "content_filter",
    ),
}  # fmt: skip
# Finish reasons that mean the answer is unusable: an error, never a clean `stop` (§1.3).
FAILED_FINISH = frozenset({"MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS"})

STATUS_CLASS: dict[str, FailureClass] = {
    "INVALID_ARGUMENT": FailureClass.CALLER_FAULT,
    "FAILED_PRECONDITION": FailureClass.CREDENTIAL,  # region or billing: this account cannot serve
    "PERMISSION_DENIED": FailureClass.CREDENTIAL,
    "UNAUTHENTICATED": FailureClass.CREDENTIAL,
    "NOT_FOUND": FailureClass.MODEL_GONE,
    "RESOURCE_EXHAUSTED": FailureClass.RATE_LIMIT,
    "UNAVAILABLE": FailureClass.OVERLOADED,
    "DEADLINE_EXCEEDED": FailureClass.TIMEOUT,
    "INTERNAL": FailureClass.TRANSIENT,
}

# reasoning_effort -> thinkingBudget (2.5 models) / thinkingLevel (3 models).
THINKING_BUDGET = {"none": 0, "minimal": 512, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 32768}
THINKING_LEVEL = {"minimal": "LOW", "low": "LOW", "medium": "HIGH", "high": "HIGH", "xhigh": "HIGH"}
# Google's documented stand-in for a signature we never saw (history from another provider).
SKIP_SIGNATURE = "skip_thought_signature_validator"
SIGNATURE_SEP = "__ts_"
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


# --- tool-call ids carry thought signatures ---------------------------------------------------


def make_call_id(signature: str | None, given: str | None = None) -> str:
    base_id = given or "call_" + secrets.token_urlsafe(18).replace("-", "x").replace("_", "y")
    if not signature:
        return base_id
    return base_id + SIGNATURE_SEP + base64.urlsafe_b64encode(signature.encode()).decode().rstrip("=")


def split_call_id(call_id: str) -> tuple[str, str | None]:
    head, sep, enc = call_id.partition(SIGNATURE_SEP)
    if not sep:
        return call_id, None
    try:
        return head, base64.urlsafe_b64decode(enc + "=" * (-len(enc) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return call_id, None


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


# --- response -----------------------------------------------------------------------------


class _FunctionCall(msgspec.Struct):
    name: str = ""
    args: msgspec.Raw = msgspec.Raw(b"{}")
    id: str | None = None


class _Part(msgspec.Struct, rename="camel"):
    text: str | None = None
    thought: bool = False
    function_call: _FunctionCall | None = None
    thought_signature: str | None = None


class _Content(msgspec.Struct):
    parts: list[_Part] = []


class _TokenLogprob(msgspec.Struct, rename="camel"):
    token: str = ""
    log_probability: float = 0.0


class _TopCandidates(msgspec.Struct):
    candidates: list[_TokenLogprob] = []


class _LogprobsResult(msgspec.Struct, rename="camel"):
    chosen_candidates: list[_TokenLogprob] = []
    top_candidates: list[_TopCandidates] = []  # one per step, with `logprobs: k`


class _Candidate(msgspec.Struct, rename="camel"):
    content: _Content | None = None
    finish_reason: str | None = None
    index: int = 0
    logprobs_result: _LogprobsResult | None = None


class _UsageMetadata(msgspec.Struct, rename="camel"):
    prompt_token_count: int = 0
    candidates_token_count: int = 0
    thoughts_token_count: int = 0
    cached_content_token_count: int = 0
    tool_use_prompt_token_count: int = 0
    total_token_count: int = 0


class _PromptFeedback(msgspec.Struct, rename="camel"):
    block_reason: str | None = None


class _ErrorDetail(msgspec.Struct):
    code: int = 0
    message: str = ""
    status: str = ""
    details: list[dict[str, Any]] = []


class _Response(msgspec.Struct, rename="camel"):
    candidates: list[_Candidate] = []
    usage_metadata: _UsageMetadata | None = None
    prompt_feedback: _PromptFeedback | None = None
    model_version: str | None = None
    response_id: str | None = None
    error: _ErrorDetail | None = None


_decode_response = msgspec.json.Decoder(_Response).decode


def usage_of(u: _UsageMetadata) -> CompletionUsage:
    """Thoughts are not inside candidatesTokenCount; OpenAI counts them as completion tokens."""
    prompt = u.prompt_token_count + u.tool_use_prompt_token_count
    completion = u.candidates_token_count + u.thoughts_token_count
    return CompletionUsage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=u.total_token_count or prompt + completion,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=u.cached_content_token_count),
        completion_tokens_details=CompletionTokensDetails(reasoning_tokens=u.thoughts_token_count),
    )


def _token(t: _TokenLogprob) -> dict[str, Any]:
    return {"token": t.token, "logprob": t.log_probability, "bytes": list(t.token.encode())}


def logprobs_of(r: _LogprobsResult | None) -> msgspec.Raw | None:
    """Gemini's chosen token per step (and its top candidates) -> OpenAI's `logprobs`."""
    if r is None or not r.chosen_candidates:
        return None
    tops = r.top_candidates
    content = [
        _token(c) | {"top_logprobs": [_token(t) for t in tops[i].candidates] if i < len(tops) else []}
        for i, c in enumerate(r.chosen_candidates)
    ]
    return msgspec.Raw(_encode({"content": content, "refusal": None}))


def _finish(reason: str | None, called: bool, target: base.Target) -> FinishReason:
    if reason in FAILED_FINISH:
        raise base.status_error(
            target, 502, {}, message=f"the model ended with {reason}", upstream_type=reason, upstream_code=None
        )
    finish = FINISH.get(reason or "STOP", "stop")
    return "tool_calls" if called and finish == "stop" else finish


def decode_response(body: bytes, target: base.Target) -> Reply:
    try:
        r = _decode_response(body)
    except msgspec.MsgspecError as exc:
        raise base.protocol_error(target, f"not a GenerateContentResponse: {exc}") from None
    if r.error is not None:
        raise _error(r.error.code or 500, {}, r.error, target)
    usage = usage_of(r.usage_metadata) if r.usage_metadata else None
    model = r.model_version or target.model
    choices: list[Choice] = []
    for cand in sorted(r.candidates, key=lambda c: c.index):
        texts: list[str] = []
        thoughts: list[str] = []
        calls: list[ToolCall] = []
        for part in cand.content.parts if cand.content else ():
            if part.function_call is not None:
                fc = part.function_call
                call_id = make_call_id(part.thought_signature, fc.id)
                calls.append(
                    ToolCall(id=call_id, function=FunctionCall(name=fc.name, arguments=bytes(fc.args).decode()))
                )
            elif part.text:
                (thoughts if part.thought else texts).append(part.text)
        message = base.response_message(texts, calls, thoughts)
        finish = _finish(cand.finish_reason, bool(calls), target)
        choices.append(
            Choice(index=cand.index, message=message, logprobs=logprobs_of(cand.logprobs_result), finish_reason=finish)
        )
    if not choices:  # the prompt itself was blocked: an empty, filtered answer
        blocked = r.prompt_feedback is not None and r.prompt_feedback.block_reason
        choices.append(
            Choice(index=0, message=ResponseMessage(), finish_reason="content_filter" if blocked else "stop")
        )
    out = base.completion_body(
        model=model, message=choices[0].message, finish_reason=choices[0].finish_reason or "stop", usage=usage,
        completion_id=f"chatcmpl-{r.response_id}" if r.response_id else None, extra_choices=choices[1:],
        logprobs=choices[0].logprobs,
    )  # fmt: skip
    finishes = tuple(c.finish_reason or "stop" for c in choices)
    return Reply(body=out, usage=usage, model=model, finish_reasons=finishes)


# --- errors -------------------------------------------------------------------------------


class _ErrorBody(msgspec.Struct):
    error: _ErrorDetail | None = None


_RETRY_DELAY = re.compile(r"^(\d+(?:\.\d+)?)s$")


def _error(status: int, headers: Mapping[str, str], d: _ErrorDetail, target: base.Target) -> UpstreamError:
    reasons = {str(x.get("reason")) for x in d.details if isinstance(x, dict)}
    retry: dict[str, str] = dict(headers)
    for x in d.details:  # RetryInfo {"retryDelay": "38s"} is Gemini's retry-after
        m = _RETRY_DELAY.match(str(x.get("retryDelay", "")))
        if m and "retry-after" not in retry:
            retry["retry-after"] = m.group(1)
    err = base.status_error(
        target, status, retry, message=d.message, upstream_type=d.status or None, upstream_code=None
    )
    cls = STATUS_CLASS.get(d.status)
    if "API_KEY_INVALID" in reasons:
        cls = FailureClass.CREDENTIAL
    if cls is not None and err.failure_class is not FailureClass.CONTEXT_LENGTH:
        err.failure_class = cls
    return err


def decode_error(status: int, headers: Mapping[str, str], body: bytes, target: base.Target) -> UpstreamError:
    text = body.strip()
    if text.startswith(b"[") and text.endswith(b"]"):
        text = text[1:-1]  # the streamed-JSON endpoint wraps the error in a one-element array
    try:
        detail = _decode_error(text).error or _ErrorDetail()
    except msgspec.MsgspecError:
        detail = _ErrorDetail(message=body[:300].decode("utf-8", "replace").strip())
    return _error(status, headers, detail, target)


_decode_error = msgspec.json.Decoder(_ErrorBody).decode


# --- streaming ----------------------------------------------------------------------------


class StreamDecoder:
    """Each SSE event is a GenerateContentResponse holding only new parts; no end marker:
    a finishReason on every candidate is the normal end (docs/providers.md §5.3)."""

    __slots__ = ("_called", "_finish", "_open", "_target", "_tools", "_usage", "complete")

    def __init__(self, target: base.Target) -> None:
        self._target = target
        self._tools: dict[int, int] = {}  # candidate -> next tool index
        self._called: set[int] = set()
        self._open: set[int] = set()  # candidates seen
        self._finish: dict[int, FinishReason] = {}
        self._usage: _UsageMetadata | None = None
        self.complete = False

    def feed(self, event: str, data: bytes) -> list[Delta]:
        try:
            r = _decode_response(data)
        except msgspec.MsgspecError:
            raise base.protocol_error(self._target, "stream event is not a GenerateContentResponse") from None
        if r.error is not None:
            raise _error(r.error.code or 500, {}, r.error, self._target)
        out: list[Delta] = []
        if r.usage_metadata is not None:
            self._usage = r.usage_metadata  # provisional until the last event
        if not r.candidates and r.prompt_feedback is not None and r.prompt_feedback.block_reason:
            self._finish[0] = "content_filter"
            self._open.add(0)
            out.append(Delta(content=""))
        for cand in r.candidates:
            c = cand.index
            if c not in self._open:
                self._open.add(c)
                out.append(Delta(choice=c, content=""))  # the role chunk, as OpenAI starts
            for part in cand.content.parts if cand.content else ():
                if part.function_call is not None:
                    fc = part.function_call
                    k = self._tools.get(c, 0)
                    self._tools[c] = k + 1
                    self._called.add(c)
                    # A call arrives whole; it is re-emitted the way OpenAI streams calls (id and
                    # name with empty arguments, then the arguments), so a client sees one shape
                    # whichever provider answers.
                    out.append(Delta.tool_start(k, make_call_id(part.thought_signature, fc.id), fc.name, choice=c))
                    out.append(Delta.tool_args_fragment(k, bytes(fc.args).decode(), choice=c))
                elif part.text and part.thought:
                    out.append(Delta(choice=c, reasoning=part.text))
                elif part.text:
                    # The event's logprobs cover its new tokens: they ride on its first text.
                    lp, cand.logprobs_result = logprobs_of(cand.logprobs_result), None
                    out.append(Delta(choice=c, content=part.text, logprobs=lp))
            if cand.finish_reason:
                self._finish[c] = _finish(cand.finish_reason, c in self._called, self._target)
        if self._open and self._open <= set(self._finish) and not self.complete:
            self.complete = True
            out += [Delta(choice=c, finish_reason=f) for c, f in sorted(self._finish.items())]
            if self._usage is not None:
                out.append(Delta(usage=usage_of(self._usage)))
        return out


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
)
