"""OpenAI Chat Completions as an upstream, and the factory for OpenAI-compatible providers.

Spec: https://platform.openai.com/docs/api-reference/chat and the official SDK's types
(openai/types/chat). The request is forwarded as the client sent it (unknown fields
included, as raw JSON), with the upstream model name and `stream_options.include_usage`
set so the gateway can account for every streamed token.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
import orjson

from aiogw.adapters import _base as base
from aiogw.errors import InvalidRequest, UpstreamError, UpstreamStatusError
from aiogw.types import (
    UNSET,
    ChatRequest,
    CompletionUsage,
    Delta,
    EmbeddingRequest,
    FinishReason,
    ParsedChat,
    Reply,
    UnsetType,
)

NAME = "openai"

# Reasoning models (o-series, gpt-5 family) refuse `max_tokens` and want
# `max_completion_tokens` (platform.openai.com/docs/guides/reasoning).
_REASONING_MODEL = re.compile(r"^(o\d|gpt-5)")

_INCLUDE_USAGE = msgspec.Raw(b'{"include_usage":true}')
_encode = msgspec.json.Encoder().encode


def forward_dict(p: ParsedChat, target: base.Target, *, ask_usage: bool = True) -> dict[str, object]:
    """The client's body with the upstream model name and usage on streams; every other
    value stays raw JSON (msgspec.Raw, re-emitted byte for byte), unknown fields included."""
    body: dict[str, object] = dict(p.raw)
    body["model"] = target.model
    if ask_usage and p.req.is_stream and not p.req.wants_usage:
        so = p.req.stream_options
        if so is None or isinstance(so, msgspec.UnsetType):
            body["stream_options"] = _INCLUDE_USAGE
        else:
            merged = msgspec.structs.replace(so, include_usage=True)
            body["stream_options"] = msgspec.Raw(_encode(merged))
    if "max_tokens" in body and _REASONING_MODEL.match(target.model) and "max_completion_tokens" not in body:
        body["max_completion_tokens"] = body.pop("max_tokens")
    return body


def forward_body(p: ParsedChat, target: base.Target) -> bytes:
    return _encode(forward_dict(p, target))


def build_call(p: ParsedChat, target: base.Target) -> base.Call:
    headers = base.bearer_headers(target)
    return base.Call(
        url=f"{target.base_url}/chat/completions",
        headers=headers,
        body=forward_body(p, target),
    )


# A dialect's change to the forwarded body (in place); returns notes for the operator and
# raises InvalidRequest for what the provider cannot honour.
Prepare = Callable[[ParsedChat, base.Target, dict[str, object]], tuple[str, ...]]


def dialect_call(
    params: base.ParamMap, prepare: Prepare, *, ask_usage: bool, path: str = "/chat/completions"
) -> Callable[[ParsedChat, base.Target], base.Call]:
    """build_call for an OpenAI-like provider whose body needs adjusting."""

    def build(p: ParsedChat, target: base.Target) -> base.Call:
        notes = params.check(p.req, target.type)
        body = forward_dict(p, target, ask_usage=ask_usage)
        notes += prepare(p, target, body)
        return base.Call(
            url=f"{target.base_url}{path}", headers=base.bearer_headers(target), body=_encode(body), notes=notes
        )

    return build


# OpenAI-only request extras (platform.openai.com chat reference) that providers with
# lenient schemas ignore or misread: dropped with a note, except the ones that would change
# what comes back (audio output), which are refused (docs/providers.md §1.2, row `metadata…`).
OPENAI_ONLY_DROP = frozenset({
    "metadata", "store", "service_tier", "prompt_cache_key", "safety_identifier", "verbosity",
    "prediction", "web_search_options",
})  # fmt: skip
OPENAI_ONLY_REJECT = {"audio": "no audio output", "modalities": "text output only"}


def drop_openai_only(body: dict[str, object], provider: str, *, keep: frozenset[str] = frozenset()) -> tuple[str, ...]:
    """Remove OpenAI-only extras from a forwarded body (in place); `keep` names the ones this
    provider knows under the same name. Refuses audio output (it would change the answer)."""
    for name, why in OPENAI_ONLY_REJECT.items():
        if name in keep or name not in body:
            continue
        value = body.pop(name)
        if _raw_value(value) not in (None, ["text"]):  # text-only output asks for nothing
            raise InvalidRequest(
                f"'{name}' is not supported by {provider}: {why}.", code="unsupported_parameter", param=name
            )
    gone = sorted(k for k in OPENAI_ONLY_DROP - keep if body.pop(k, None) is not None)
    return (f"dropped {', '.join(repr(k) for k in gone)} for {provider}: OpenAI-only fields",) if gone else ()


def _raw_value(value: object) -> object:
    return msgspec.json.decode(value) if isinstance(value, msgspec.Raw) else value


class _CallView(msgspec.Struct):
    type: str | UnsetType = UNSET


class _MessageView(msgspec.Struct):
    # Raw: only whether the field is there matters, not its value.
    role: str | UnsetType = UNSET
    content: msgspec.Raw | UnsetType = UNSET
    refusal: msgspec.Raw | UnsetType = UNSET
    tool_calls: list[_CallView] | None = None


class _FinishView(msgspec.Struct):
    finish_reason: str | None = None
    index: int | UnsetType = UNSET
    logprobs: msgspec.Raw | UnsetType = UNSET
    message: _MessageView | None = None


class _ReplyView(msgspec.Struct):
    """What the gateway reads from a `chat.completion`, and whether the fields OpenAI's
    schema requires are all there: the rest is forwarded unread."""

    choices: list[_FinishView]
    model: str = ""
    usage: CompletionUsage | None = None
    id: str | UnsetType = UNSET
    object: str | UnsetType = UNSET
    created: int | UnsetType = UNSET


_decode_reply = msgspec.json.Decoder(_ReplyView).decode


def _has_required_fields(view: _ReplyView) -> bool:
    if view.id is UNSET or view.object != "chat.completion" or view.created is UNSET or not view.model:
        return False
    for c in view.choices:
        m = c.message
        if c.index is UNSET or c.logprobs is UNSET or m is None or m.role is UNSET:
            return False
        if m.content is UNSET or m.refusal is UNSET or any(t.type is UNSET for t in m.tool_calls or ()):
            return False
    return True


def fill_required_fields(data: dict[str, Any], target: base.Target) -> None:
    """Add what OpenAI's schema requires and an OpenAI-like server left out (in place):
    Mistral sends no `logprobs`, DeepSeek and Qwen no `refusal`, some local servers no
    `object`, `created` or tool-call `type`. Clients typed from the official SDKs reject or
    misread answers without them."""
    if not data.get("id"):
        data["id"] = base.new_completion_id()
    data["object"] = "chat.completion"
    if not isinstance(data.get("created"), int):
        data["created"] = int(time.time())
    if not data.get("model"):
        data["model"] = target.model
    for i, choice in enumerate(data["choices"]):
        if not isinstance(choice, dict):
            continue
        choice.setdefault("index", i)
        choice.setdefault("logprobs", None)
        msg = choice.get("message")
        if not isinstance(msg, dict):
            msg = choice["message"] = {}
        msg.setdefault("role", "assistant")
        msg.setdefault("content", None)
        msg.setdefault("refusal", None)
        for tc in msg.get("tool_calls") or ():
            if isinstance(tc, dict):
                tc.setdefault("type", "function")


def decode_response(body: bytes, target: base.Target) -> Reply:
    try:
        view = _decode_reply(body)
    except msgspec.DecodeError:
        raise base.protocol_error(target, "chat.completion body is not valid JSON") from None
    except msgspec.ValidationError as exc:
        err = _error_in_body(body, target)
        if err is not None:
            raise err from None
        raise base.protocol_error(target, f"not a chat.completion: {exc}") from None
    if not _has_required_fields(view):  # OpenAI's own answers never get here
        data = orjson.loads(body)
        fill_required_fields(data, target)
        body = orjson.dumps(data)
    finish = tuple(c.finish_reason for c in view.choices if c.finish_reason)
    return Reply(body=body, usage=view.usage, model=view.model or target.model, finish_reasons=finish)


# A dialect's own change to a parsed `chat.completion` (in place), after the shared ones.
ReplyFix = Callable[[dict[str, object]], None]


def dialect_response(
    fix: ReplyFix | None = None, *, failed_finish: frozenset[str] = frozenset()
) -> Callable[[bytes, base.Target], Reply]:
    """decode_response for an OpenAI-like provider whose replies stray from OpenAI's shape:
    finish reasons outside OpenAI's set are mapped (FINISH; one in `failed_finish` fails the
    attempt, docs/providers.md §1.3), typed content-chunk lists become `content` +
    `reasoning_content`, tool calls lose the stray `index`; `fix` does the rest. The body is
    re-encoded, which also drops blank lines a queued reply starts with (DeepSeek §7.3)."""

    def decode(body: bytes, target: base.Target) -> Reply:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise base.protocol_error(target, "chat.completion body is not valid JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            return decode_response(body, target)  # an error object or junk: reported there
        for choice in data["choices"]:
            reason = choice.get("finish_reason")
            if reason in failed_finish:
                raise base.status_error(
                    target, 500, {}, message=f"the provider ended the answer with finish_reason '{reason}'",
                    upstream_type=None, upstream_code=None,
                )  # fmt: skip
            if isinstance(reason, str) and reason:
                choice["finish_reason"] = FINISH.get(reason, "stop")
            msg = choice.get("message") or {}
            if isinstance(msg.get("content"), list):
                text, thought = chunk_texts(msgspec.convert(msg["content"], list[_ContentChunk]))
                msg["content"] = text or None
                if thought:
                    msg["reasoning_content"] = (msg.get("reasoning_content") or "") + thought
            for tc in msg.get("tool_calls") or ():
                tc.pop("index", None)
        if fix is not None:
            fix(data)
        fill_required_fields(data, target)
        return decode_response(orjson.dumps(data), target)

    return decode


# --- errors -----------------------------------------------------------------------------


class _ErrorDetail(msgspec.Struct):
    message: str = ""
    type: str | None = None
    param: str | None = None
    code: str | int | None = None


class _ErrorBody(msgspec.Struct):
    """OpenAI's `{"error": {...}}`, or vLLM/Mistral's flat `{"object": "error", ...}`."""

    error: _ErrorDetail | str | None = None
    object: str | None = None
    message: str | None = None
    type: str | None = None
    detail: msgspec.Raw | None = None  # FastAPI-style 422 bodies


_decode_error_body = msgspec.json.Decoder(_ErrorBody).decode


def _detail(body: bytes) -> _ErrorDetail:
    try:
        eb = _decode_error_body(body)
    except msgspec.MsgspecError:
        text = body[:300].decode("utf-8", "replace").strip()
        return _ErrorDetail(message=text)
    if isinstance(eb.error, _ErrorDetail):
        return eb.error
    if isinstance(eb.error, str):
        return _ErrorDetail(message=eb.error)
    if eb.message:
        return _ErrorDetail(message=eb.message, type=eb.type)
    if eb.detail is not None:
        return _ErrorDetail(message=bytes(eb.detail)[:300].decode("utf-8", "replace"))
    return _ErrorDetail()


def decode_error(status: int, headers: Mapping[str, str], body: bytes, target: base.Target) -> UpstreamError:
    d = _detail(body)
    code = str(d.code) if d.code is not None and not isinstance(d.code, int) else None
    return base.status_error(
        target, status, headers, message=d.message, upstream_type=d.type, upstream_code=code, param=d.param
    )


def _error_in_body(body: bytes, target: base.Target) -> UpstreamStatusError | None:
    """Some compatible servers answer 200 with an error object instead of a completion."""
    d = _detail(body)
    if not d.message:
        return None
    return base.status_error(target, 500, {}, message=d.message, upstream_type=d.type, upstream_code=None)


# --- streaming --------------------------------------------------------------------------


class _FunctionView(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolCallView(msgspec.Struct):
    index: int | None = None
    id: str | None = None
    function: _FunctionView | None = None


class _TextChunk(msgspec.Struct):
    text: str = ""


class _ContentChunk(msgspec.Struct):
    """Mistral's reasoning models stream content as typed chunks instead of a string."""

    type: str = ""
    text: str | None = None
    thinking: list[_TextChunk] | str | None = None


class _DeltaView(msgspec.Struct):
    role: str | None = None
    content: str | list[_ContentChunk] | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None  # newer vLLM / OpenRouter spelling
    refusal: str | None = None
    tool_calls: list[_ToolCallView] | None = None


class _ChoiceView(msgspec.Struct):
    index: int = 0
    delta: _DeltaView | None = None
    finish_reason: str | None = None
    # Not `Raw | None`: msgspec then accepts only null, and a chunk with logprobs fails.
    logprobs: msgspec.Raw = msgspec.Raw(b"null")


class _GroqExtras(msgspec.Struct):
    usage: CompletionUsage | None = None


class _ChunkView(msgspec.Struct):
    choices: list[_ChoiceView] | None = None
    usage: CompletionUsage | None = None
    x_groq: _GroqExtras | None = None  # older Groq streams put usage here
    error: _ErrorDetail | str | None = None
    object: str | None = None
    message: str | None = None


_decode_chunk = msgspec.json.Decoder(_ChunkView).decode


def chunk_texts(chunks: list[_ContentChunk]) -> tuple[str, str]:
    """(text, thinking) of a typed content-chunk list."""
    text, thought = [], []
    for c in chunks:
        if c.type == "text" and c.text:
            text.append(c.text)
        elif c.type == "thinking" and c.thinking:
            thought.append(c.thinking if isinstance(c.thinking, str) else "".join(t.text for t in c.thinking))
    return "".join(text), "".join(thought)


FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "eos": "stop",  # Together
    "length": "length",
    "model_length": "length",  # Mistral
    "tool_calls": "tool_calls",
    "function_call": "function_call",
    "content_filter": "content_filter",
    "insufficient_system_resource": "length",  # DeepSeek: output was cut
}


class StreamDecoder:
    """OpenAI-shaped chunks -> canonical deltas, normalising what compatible servers get
    wrong: restated tool-call ids and names, sparse tool indices, `finish_reason: ""`,
    usage wherever it appears (docs/providers.md §9)."""

    __slots__ = ("_target", "_tools", "complete")

    # Finish reasons that mean the provider failed mid-answer (docs/providers.md §1.3 error
    # path): raised as an upstream error, so the relay fails over or ends with an error event.
    failed_finish: frozenset[str] = frozenset()

    def __init__(self, target: base.Target) -> None:
        self._target = target
        # (choice, upstream tool index) -> our dense index, per choice in order of appearance
        self._tools: dict[tuple[int, int], int] = {}
        self.complete = False

    def feed(self, event: str, data: bytes) -> list[Delta]:
        if data == b"[DONE]":
            self.complete = True
            return []
        try:
            chunk = _decode_chunk(data)
        except msgspec.MsgspecError:
            raise base.protocol_error(self._target, "stream chunk is not valid JSON") from None
        if chunk.error is not None or chunk.object == "error":
            err = (
                chunk.error
                if isinstance(chunk.error, _ErrorDetail)
                else _ErrorDetail(message=chunk.message or str(chunk.error or ""))
            )
            raise base.status_error(
                self._target, 500, {}, message=err.message, upstream_type=err.type, upstream_code=None
            )
        out: list[Delta] = []
        for ch in chunk.choices or ():
            d = ch.delta
            if d is not None:
                if isinstance(d.content, list):
                    text, thought = chunk_texts(d.content)
                    d.content, d.reasoning_content = text or None, (d.reasoning_content or "") + thought or None
                if d.role and not d.content and not d.tool_calls:
                    out.append(Delta(choice=ch.index, content=""))  # the role chunk, kept as its own
                if d.reasoning_content or d.reasoning:
                    out.append(Delta(choice=ch.index, reasoning=d.reasoning_content or d.reasoning))
                if d.content:
                    out.append(Delta(choice=ch.index, content=d.content, logprobs=ch.logprobs))
                if d.refusal:
                    out.append(Delta(choice=ch.index, refusal=d.refusal))
                for tc in d.tool_calls or ():
                    out.extend(self._tool(ch.index, tc))
            if ch.finish_reason:  # "" is treated as null
                if ch.finish_reason in self.failed_finish:
                    raise base.status_error(
                        self._target, 500, {}, upstream_type=None, upstream_code=None,
                        message=f"the provider ended the stream with finish_reason '{ch.finish_reason}'",
                    )  # fmt: skip
                out.append(Delta(choice=ch.index, finish_reason=FINISH.get(ch.finish_reason, "stop")))
                self.complete = True  # EOF after a finish reason is a normal end (§9)
        usage = chunk.usage or (chunk.x_groq.usage if chunk.x_groq else None)
        if usage is not None:
            out.append(Delta(usage=usage))
        return out

    def _tool(self, choice: int, tc: _ToolCallView) -> list[Delta]:
        upstream_index = tc.index if tc.index is not None else 0
        key = (choice, upstream_index)
        fn = tc.function or _FunctionView()
        out: list[Delta] = []
        index = self._tools.get(key)
        if index is None:
            if not (tc.id or fn.name):
                return []  # an argument fragment for a call that never started: nothing to attach
            index = sum(1 for c, _ in self._tools if c == choice)
            self._tools[key] = index
            out.append(Delta.tool_start(index, tc.id or f"call_{choice}_{index}", fn.name or "", choice=choice))
        if fn.arguments:
            out.append(Delta.tool_args_fragment(index, fn.arguments, choice=choice))
        return out


# --- embeddings -------------------------------------------------------------------------


def build_embeddings_call(req: EmbeddingRequest, target: base.Target) -> base.Call:
    body = msgspec.structs.replace(req, model=target.model)
    return base.Call(url=f"{target.base_url}/embeddings", headers=base.bearer_headers(target), body=_encode(body))


def decode_embeddings(body: bytes, target: base.Target, req: EmbeddingRequest) -> bytes:
    """The upstream's list body is already OpenAI's: checked for shape, forwarded as is,
    unless base64 was asked for and the server answered floats (some compatible servers
    ignore `encoding_format`): those vectors are encoded here."""
    try:
        if req.encoding_format != "base64":
            _check_embeddings(body)
            return body
        view = _check_base64_embeddings(body)
    except msgspec.MsgspecError as exc:
        raise base.protocol_error(target, f"not an embeddings list: {exc}") from None
    if all(isinstance(d.embedding, str) for d in view.data):
        return body
    data = orjson.loads(body)
    for item in data["data"]:
        if isinstance(item["embedding"], list):
            item["embedding"] = base.embedding_vector(item["embedding"], req)
    return orjson.dumps(data)


class _EmbeddingsView(msgspec.Struct):
    data: list[msgspec.Raw]


class _EmbeddingView(msgspec.Struct):
    embedding: str | list[float]


class _Base64EmbeddingsView(msgspec.Struct):
    data: list[_EmbeddingView]


_check_embeddings = msgspec.json.Decoder(_EmbeddingsView).decode
_check_base64_embeddings = msgspec.json.Decoder(_Base64EmbeddingsView).decode


# --- rate limits --------------------------------------------------------------------------

_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def duration_s(text: str | None) -> float | None:
    """OpenAI's reset headers are Go durations ("6m0s", "1.5s", "20ms"); bare numbers are seconds."""
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    parts = _GO_DURATION.findall(text)
    if not parts:
        return None
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def rate_limits(headers: Mapping[str, str]) -> base.RateLimitInfo | None:
    """`x-ratelimit-{limit,remaining,reset}-{requests,tokens}` (OpenAI, DeepSeek, Groq…)."""
    if "x-ratelimit-remaining-requests" not in headers and "x-ratelimit-remaining-tokens" not in headers:
        return None
    return base.RateLimitInfo(
        limit_requests=base.header_int(headers.get("x-ratelimit-limit-requests")),
        remaining_requests=base.header_int(headers.get("x-ratelimit-remaining-requests")),
        reset_requests_s=duration_s(headers.get("x-ratelimit-reset-requests")),
        limit_tokens=base.header_int(headers.get("x-ratelimit-limit-tokens")),
        remaining_tokens=base.header_int(headers.get("x-ratelimit-remaining-tokens")),
        reset_tokens_s=duration_s(headers.get("x-ratelimit-reset-tokens")),
    )


# Every field is forwarded as sent (OpenAI is the canonical API; compatible servers get the
# same body and answer for themselves).
PARAMS = base.ParamMap(translated=frozenset(ChatRequest.__struct_fields__), translated_as="forwarded as sent")


def openai_like(
    name: str,
    default_base_url: str,
    *,
    passthrough_stream: bool = False,
    requires_base_url: bool = False,
    requires_api_key: bool = True,
    params: base.ParamMap = PARAMS,
    prepare: Prepare | None = None,
    ask_usage: bool = True,
    call: Callable[[ParsedChat, base.Target], base.Call] = build_call,
    response: Callable[[bytes, base.Target], Reply] | None = None,
    decoder: Callable[[base.Target], base.StreamDecoder] | None = None,
    error: Callable[[int, Mapping[str, str], bytes, base.Target], UpstreamError] = decode_error,
    embeddings: Callable[[EmbeddingRequest, base.Target], base.Call] | None = build_embeddings_call,
    limits: Callable[[Mapping[str, str]], base.RateLimitInfo | None] = rate_limits,
) -> base.Adapter:
    """An adapter for a provider that speaks OpenAI's wire format (possibly imperfectly);
    the keyword arguments are where a dialect differs. With `prepare`, requests are checked
    against `params` and the forwarded body goes through it (see dialect_call); `ask_usage`
    says whether streams ask for usage with `stream_options`."""
    if prepare is not None:
        call = dialect_call(params, prepare, ask_usage=ask_usage)
    return base.Adapter(
        name=name,
        default_base_url=default_base_url,
        build_call=call,
        decode_response=response or decode_response,
        decode_error=error,
        stream_decoder=decoder or StreamDecoder,
        passthrough_stream=passthrough_stream,
        requires_base_url=requires_base_url,
        requires_api_key=requires_api_key,
        build_embeddings_call=embeddings,
        decode_embeddings=decode_embeddings if embeddings is not None else None,
        params=params,
        rate_limits=limits,
    )


ADAPTER = openai_like(NAME, "https://api.openai.com/v1", passthrough_stream=True)
