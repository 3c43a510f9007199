"""OpenAI Chat Completions as an upstream, and the factory for OpenAI-compatible providers.

Spec: https://platform.openai.com/docs/api-reference/chat and the official SDK's types
(openai/types/chat). The request is forwarded as the client sent it (unknown fields
included, as raw JSON), with the upstream model name and `stream_options.include_usage`
set so the gateway can account for every streamed token.

This module builds requests and adapters; what comes back is read in `openai_reply`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping

import msgspec
import orjson

from aiogw.adapters import _base as base
from aiogw.adapters.openai_reply import StreamDecoder, decode_error, decode_response, rate_limits
from aiogw.adapters.openai_reply import dialect_response as dialect_response  # for the dialect adapters
from aiogw.errors import InvalidRequest, UpstreamError
from aiogw.types import (
    ChatRequest,
    EmbeddingRequest,
    ParsedChat,
    Reply,
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


def _raw_value(value: object) -> object:
    return msgspec.json.decode(value) if isinstance(value, msgspec.Raw) else value


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


def build_responses_call(raw: dict[str, msgspec.Raw], target: base.Target) -> base.Call | None:
    """POST /v1/responses passed through: the client's body with the upstream model name,
    every other value as the client sent it. None when the upstream has no Responses API:
    OpenAI's own has it; another base URL (a proxy, a compatible server) only when the
    account says `responses_api: true`."""
    has = target.responses_api
    if has is None:
        has = target.base_url == ADAPTER.default_base_url
    if not has:
        return None
    body = dict(raw)
    body["model"] = msgspec.Raw(_encode(target.model))
    return base.Call(url=f"{target.base_url}/responses", headers=base.bearer_headers(target), body=_encode(body))


ADAPTER = dataclasses.replace(
    openai_like(NAME, "https://api.openai.com/v1", passthrough_stream=True), build_responses_call=build_responses_call
)
