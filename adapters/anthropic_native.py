"""Anthropic as the upstream of a client that speaks the Messages API itself: the request
passed through (only `model` changes, so signatures, `cache_control`, betas and fields we do
not model survive), the answer kept as Anthropic sent it and read only for accounting, and
token counting (`POST /v1/messages/count_tokens`, API reference "Count tokens in a Message").
"""

from __future__ import annotations

import msgspec

from aiogw.adapters import _base as base
from aiogw.adapters.anthropic_reply import FINISH, _decode_message, usage_of
from aiogw.types import MESSAGES_API, NativeBody, Reply

API_VERSION = "2023-06-01"
# The client's headers a passthrough forwards (betas only ever reach Anthropic).
FORWARDED = ("anthropic-version", "anthropic-beta")

_decode_fields = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
_encode = msgspec.json.Encoder().encode


def _headers(native: NativeBody, target: base.Target) -> dict[str, str]:
    headers = {"content-type": "application/json", "anthropic-version": API_VERSION}
    headers.update((k, v) for k, v in native.headers.items() if k in FORWARDED)
    headers.update(target.headers)
    if target.api_key is not None:
        headers["x-api-key"] = target.api_key.reveal()
    return headers


def _with_model(body: bytes, model: str) -> bytes:
    """The body with `model` replaced; every other field's bytes as the client sent them."""
    fields = _decode_fields(body)
    fields["model"] = msgspec.Raw(_encode(model))
    return _encode(fields)


def native_call(native: NativeBody, target: base.Target) -> base.Call:
    return base.Call(
        url=f"{target.base_url}/v1/messages",
        headers=_headers(native, target),
        body=_with_model(native.body, target.model),
    )


def decode_native(body: bytes, target: base.Target) -> Reply:
    """The message for the client as it is; usage, model and stop reason for the books."""
    try:
        msg = _decode_message(body)
    except msgspec.MsgspecError as exc:
        raise base.protocol_error(target, f"not a message: {exc}") from None
    usage = usage_of(msg.usage) if msg.usage else None
    finish = FINISH.get(msg.stop_reason or "", "stop")
    return Reply(body=body, usage=usage, model=msg.model or target.model, finish_reasons=(finish,), native=MESSAGES_API)


def build_count_tokens(native: NativeBody, target: base.Target) -> base.Call:
    return base.Call(
        url=f"{target.base_url}/v1/messages/count_tokens",
        headers=_headers(native, target),
        body=_with_model(native.body, target.model),
    )


class _Count(msgspec.Struct):
    input_tokens: int


_decode_count = msgspec.json.Decoder(_Count).decode


def decode_count_tokens(body: bytes, target: base.Target) -> int:
    try:
        return _decode_count(body).input_tokens
    except msgspec.MsgspecError as exc:
        raise base.protocol_error(target, f"not a token count: {exc}") from None
