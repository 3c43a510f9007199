"""The adapter contract: a small record of pure functions plus data, and helpers that more
than one adapter needs. Adapters never touch sockets, sessions, timeouts, the router, health
or logging: dispatch owns all I/O."""

from __future__ import annotations

import base64
import re
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

import msgspec

from aiogw.errors import (
    FailureClass,
    InvalidRequest,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
)
from aiogw.ids import alnum_id
from aiogw.types import (
    UNSET,
    ChatCompletion,
    ChatRequest,
    Choice,
    CompletionUsage,
    ContentPart,
    Delta,
    EmbeddingRequest,
    FinishReason,
    NativeBody,
    ParsedChat,
    Price,
    Reply,
    ResponseMessage,
    Secret,
    TextPart,
    ToolCall,
)


class Target(msgspec.Struct, frozen=True, kw_only=True):
    """One upstream (provider account, model) with everything needed to call it.

    Immutable and shared by every request routed to it. Timeouts are in seconds; `None`
    means no limit of that kind beyond the total."""

    id: str  # "<account>/<model>", as in x-aiogw-* headers, logs and /v1/gateway/health
    provider: str  # the account name from the config
    type: str  # adapter name (the config `type`)
    model: str  # the upstream model name
    base_url: str
    api_key: Secret | None = None
    headers: Mapping[str, str] = {}  # extra upstream headers from the config
    connect_timeout_s: float = 5.0
    first_token_timeout_s: float | None = None
    idle_timeout_s: float | None = None  # between body pieces once the answer has started
    total_timeout_s: float = 600.0
    weight: float = 1.0
    context_window: int | None = None
    max_output_tokens: int | None = None  # configured default output cap, if any
    price: Price | None = None  # set when the runtime is built: the configured price, else the table's
    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None
    # The upstream also serves OpenAI's Responses API (None: the adapter's default).
    responses_api: bool | None = None


class Call(msgspec.Struct, frozen=True, kw_only=True):
    """One upstream HTTP request, fully built."""

    url: str
    headers: dict[str, str]
    body: bytes
    notes: tuple[str, ...] = ()  # things an operator should hear about (dropped params)


class StreamDecoder(Protocol):
    """Native stream events -> canonical deltas. One instance per attempt, never shared."""

    complete: bool  # a normal end of stream was seen (end marker or finish reason)

    def feed(self, event: str, data: bytes) -> list[Delta]: ...


@dataclass(frozen=True, slots=True)
class Adapter:
    name: str  # the config `type`
    default_base_url: str
    build_call: Callable[[ParsedChat, Target], Call]
    decode_response: Callable[[bytes, Target], Reply]
    decode_error: Callable[[int, Mapping[str, str], bytes, Target], UpstreamError]
    stream_decoder: Callable[[Target], StreamDecoder]
    # The upstream already streams OpenAI chunks that need no change: dispatch forwards
    # its bytes, reading only usage and errors (the fast path).
    passthrough_stream: bool = False
    # A base URL is required in the config (no public endpoint).
    requires_base_url: bool = False
    requires_api_key: bool = True
    # POST /v1/embeddings, for providers that have them.
    build_embeddings_call: Callable[[EmbeddingRequest, Target], Call] | None = None
    # -> OpenAI list body, vectors in the request's `encoding_format`
    decode_embeddings: Callable[[bytes, Target, EmbeddingRequest], bytes] | None = None
    params: ParamMap | None = None  # how canonical fields fare here (docs + coverage test)
    rate_limits: Callable[[Mapping[str, str]], RateLimitInfo | None] | None = None
    # The prior for how many prompt tokens this provider reports per token of the gateway's
    # chars/4 estimate (each target then learns its own ratio from reported usage). 1.0:
    # OpenAI's tokenizers, and most others', come to about 4 characters per English token.
    token_ratio: float = 1.0
    # A provider that requires an output cap: the one the adapter sends when the client set
    # none. The gateway lowers it to the target's context window less the prompt (in the
    # target's learned tokens) where that is smaller, instead of a refusal from upstream.
    default_output_cap: Callable[[Target], int] | None = None
    # The client API this provider speaks natively (`NativeBody.api`): a request that came
    # in that API is passed through (the ingress's `Native` asks `build_native_call`), its
    # answer read by `decode_native` (body kept as it is) and its stream forwarded as it comes.
    native_api: str | None = None
    build_native_call: Callable[[NativeBody, Target], Call] | None = None
    decode_native: Callable[[bytes, Target], Reply] | None = None
    # Events of its native stream that carry content only (no usage, finish or error): the
    # native relay checks their JSON and forwards them without the decoder (most events).
    native_content_events: frozenset[str] = frozenset()
    # Token counting in the native API (Anthropic's count_tokens): the call, and its count.
    build_count_tokens: Callable[[NativeBody, Target], Call] | None = None
    decode_count_tokens: Callable[[bytes, Target], int] | None = None

    # POST /v1/responses passed through (the client's body as raw JSON): None when the
    # target's upstream has no Responses API (the request is then translated).
    build_responses_call: Callable[[dict[str, msgspec.Raw], Target], Call | None] | None = None


class RateLimitInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A provider's rate-limit headers in one shape, for the limiter. None = not reported."""

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests_s: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens_s: float | None = None


# --- error classification shared by every provider ---------------------------------------

_STATUS_CLASS: dict[int, FailureClass] = {
    400: FailureClass.CALLER_FAULT,
    401: FailureClass.CREDENTIAL,
    402: FailureClass.QUOTA,
    403: FailureClass.CREDENTIAL,
    404: FailureClass.MODEL_GONE,
    408: FailureClass.TIMEOUT,
    409: FailureClass.TRANSIENT,  # OpenAI: conflicting concurrent request; its SDK retries
    413: FailureClass.CALLER_FAULT,
    422: FailureClass.CALLER_FAULT,
    429: FailureClass.RATE_LIMIT,
    500: FailureClass.TRANSIENT,
    502: FailureClass.TRANSIENT,
    503: FailureClass.OVERLOADED,
    504: FailureClass.TIMEOUT,
    529: FailureClass.OVERLOADED,  # Anthropic's "overloaded_error"
}

_CONTEXT_HINTS = re.compile(
    r"context[_ ]length|context window|maximum context|too many tokens|prompt is too long",
    re.IGNORECASE,
)


def classify_status(status: int, code: str | None = None, message: str = "") -> FailureClass:
    """Failure class from the status, refined by the provider's own error code or wording."""
    if code == "insufficient_quota":
        return FailureClass.QUOTA
    if status in (400, 413) and (code == "context_length_exceeded" or _CONTEXT_HINTS.search(message)):
        return FailureClass.CONTEXT_LENGTH
    cls = _STATUS_CLASS.get(status)
    if cls is not None:
        return cls
    if 400 <= status < 500:
        return FailureClass.CALLER_FAULT
    return FailureClass.TRANSIENT


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """`retry-after-ms` (OpenAI) or `retry-after` in seconds; HTTP dates are ignored."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    s = headers.get("retry-after")
    if s:
        try:
            return max(0.0, float(s))
        except ValueError:
            return None
    return None


# Messages from a provider for these classes are about our account, not the caller's
# request; they are summarised rather than echoed (an echoed 401 may contain a key prefix).
_SUMMARY = {
    FailureClass.CREDENTIAL: "the provider rejected the gateway's credentials for this target",
    FailureClass.QUOTA: "the provider account's quota or balance is exhausted",
    FailureClass.MODEL_GONE: "the provider does not know this model",
}


def status_error(
    target: Target,
    status: int,
    headers: Mapping[str, str],
    *,
    message: str,
    upstream_type: str | None,
    upstream_code: str | None,
    param: str | None = None,
) -> UpstreamStatusError:
    """Build the error for a non-2xx upstream reply once its body has been read."""
    cls = classify_status(status, upstream_code, message)
    label = " ".join(str(x) for x in (status, upstream_code or upstream_type) if x)
    if cls in (FailureClass.CALLER_FAULT, FailureClass.CONTEXT_LENGTH):
        text = message or f"upstream answered {label}"
    else:
        text = f"{label}: {_SUMMARY.get(cls, message or 'no message')}"
    retry = retry_after_s(headers)
    if retry is not None and cls in (FailureClass.RATE_LIMIT, FailureClass.OVERLOADED):
        text += f" (retry after {retry:g} s)"
    return UpstreamStatusError(
        text,
        target=target.id,
        failure_class=cls,
        retry_after_s=retry,
        upstream_status=status,
        upstream_type=upstream_type,
        upstream_code=upstream_code if cls is not FailureClass.CONTEXT_LENGTH else "context_length_exceeded",
        param=param,
    )


def header_int(value: str | None) -> int | None:
    """A count from a response header (rate limits); None when absent or not a whole number."""
    try:
        return int(value) if value else None
    except ValueError:
        return None


def protocol_error(target: Target, what: str) -> UpstreamProtocolError:
    return UpstreamProtocolError(f"unreadable reply ({what})", target=target.id)


def path_segment(name: str) -> str:
    """A name put in an upstream URL path as exactly one segment: every byte outside RFC
    3986's unreserved set percent-encoded (`/`, `?`, `#`, `%`, `:` included), so no model
    name can reach another path or add a query string."""
    return quote(name, safe="")


def bearer_headers(target: Target) -> dict[str, str]:
    headers = {"content-type": "application/json", **target.headers}
    if target.api_key is not None:
        headers["authorization"] = f"Bearer {target.api_key.reveal()}"
    return headers


# --- parameter policy ----------------------------------------------------------------------

# OpenAI's defaults: a field sent with its default asks for nothing, so a provider that
# lacks the feature may drop it instead of refusing the request (docs/providers.md, rule above §0).
OPENAI_DEFAULTS: dict[str, object] = {
    "n": 1,
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "logprobs": False,
    "top_logprobs": 0,
    "logit_bias": {},
    "parallel_tool_calls": True,
    "top_p": 1,
}


@dataclass(frozen=True, slots=True)
class ParamMap:
    """How each canonical request field fares at one provider.

    Fields named in `reject` are refused with a 400 naming them (unless sent with OpenAI's
    default value or null, which asks for nothing); fields in `drop` are omitted with a
    note for the operator; everything else is translated by the adapter. Never clamp."""

    reject: Mapping[str, str] = field(default_factory=dict)  # field -> why it is refused
    drop: Mapping[str, str] = field(default_factory=dict)  # field -> why dropping is harmless
    translated: frozenset[str] = frozenset()  # fields the adapter maps itself
    translated_as: str = "mapped"  # how the docs describe a translated field here

    def check(self, req: ChatRequest, provider: str) -> tuple[str, ...]:
        """Raise InvalidRequest for a refused field; return notes for dropped ones."""
        notes = []
        for name, why in self.reject.items():
            value = getattr(req, name, UNSET)
            if value is UNSET or value is None or OPENAI_DEFAULTS.get(name, UNSET) == value:
                continue
            raise InvalidRequest(
                f"'{name}' is not supported by {provider}: {why}. Remove it, or route this "
                f"request to a provider that supports it.",
                code="unsupported_parameter",
                param=name,
            )
        for name, why in self.drop.items():
            value = getattr(req, name, UNSET)
            if value is not UNSET and value is not None:
                notes.append(f"dropped '{name}' for {provider}: {why}")
        return tuple(notes)

    def classified(self) -> frozenset[str]:
        return frozenset(self.reject) | frozenset(self.drop) | self.translated


# --- shared translation helpers --------------------------------------------------------------

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?:;[\w-]+=[^;,]*)*;base64,(?P<data>.*)$", re.DOTALL)


def parse_data_url(url: str) -> tuple[str, str] | None:
    """`data:image/png;base64,XXXX` -> ("image/png", "XXXX"); None for http(s) URLs."""
    m = _DATA_URL.match(url)
    if m is None:
        return None
    return m.group("mime") or "application/octet-stream", m.group("data")


def invalid_value(message: str, param: str) -> InvalidRequest:
    """A 400 for a value this provider cannot take, naming the request field."""
    return InvalidRequest(message, code="invalid_value", param=param)


def tool_call_arguments(call: ToolCall, where: str) -> dict[str, Any]:
    """An assistant tool call's `arguments` string as the JSON object that providers with
    native tool calls take (Anthropic's `input`, Gemini's `args`). OpenAI's own is a string
    the model wrote: empty means no arguments; anything but an object is refused, naming
    `{where}.function.arguments`, since forwarding it would fail upstream less clearly."""
    text = call.function.arguments
    if not text.strip():
        return {}
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError:
        raise invalid_value("Tool-call arguments must be valid JSON.", f"{where}.function.arguments") from None
    if not isinstance(value, dict):
        raise invalid_value("Tool-call arguments must be a JSON object.", f"{where}.function.arguments")
    return value


def content_text(content: str | list[ContentPart] | None) -> str:
    """The text of a message's content (string or parts); non-text parts are skipped."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.text for p in content if isinstance(p, TextPart))


def response_message(texts: list[str], calls: list[ToolCall], thoughts: list[str]) -> ResponseMessage:
    """The assistant message of a translated answer from its pieces: content is null when
    there is no text (a tool-call answer), tool_calls and reasoning_content only when any."""
    message = ResponseMessage(content="".join(texts) if texts else None)
    if calls:
        message.tool_calls = calls
    if thoughts:
        message.reasoning_content = "".join(thoughts)
    return message


def new_completion_id() -> str:
    return "chatcmpl-" + alnum_id(24)


_encode = msgspec.json.Encoder().encode


def completion_body(
    *,
    model: str,
    message: ResponseMessage,
    finish_reason: FinishReason,
    usage: CompletionUsage | None,
    completion_id: str | None = None,
    created: int | None = None,
    extra_choices: list[Choice] | None = None,
    logprobs: msgspec.Raw | None = None,
) -> bytes:
    """An OpenAI `chat.completion` body from translated parts."""
    choices = [Choice(index=0, message=message, logprobs=logprobs, finish_reason=finish_reason), *(extra_choices or [])]
    return _encode(
        ChatCompletion(
            id=completion_id or new_completion_id(),
            created=created or int(time.time()),
            model=model,
            choices=choices,
            usage=usage if usage is not None else UNSET,
        )
    )


def embedding_vector(values: list[float], req: EmbeddingRequest) -> list[float] | str:
    """A vector in the form the client asked for: OpenAI's base64 is the little-endian
    float32 bytes (what the official SDKs decode, and ask for by default)."""
    if req.encoding_format != "base64":
        return values
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
