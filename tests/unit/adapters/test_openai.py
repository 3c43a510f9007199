"""OpenAI adapter: the request it forwards and how it reads upstream errors."""

import base64
import json
import struct

import msgspec
import pytest

from aiogw.adapters import openai, openai_reply
from aiogw.adapters._base import Target
from aiogw.errors import FailureClass, UpstreamProtocolError
from aiogw.types import ChatRequest, EmbeddingRequest, ParsedChat, Secret

TARGET = Target(
    id="oa/gpt-4o",
    provider="oa",
    type="openai",
    model="gpt-4o",
    base_url="https://api.openai.com/v1",
    api_key=Secret("sk-test"),
)


def parsed(body: dict) -> ParsedChat:
    raw = json.dumps(body).encode()
    return ParsedChat(
        req=msgspec.json.decode(raw, type=ChatRequest), raw=msgspec.json.decode(raw, type=dict[str, msgspec.Raw])
    )


def test_body_is_forwarded_byte_for_byte_except_model_and_stream_usage():
    p = parsed(
        {
            "model": "smart",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
            "stream_options": {"include_obfuscation": False},
            "x_vendor": {"a": [1, 2.50]},
        }
    )
    call = openai.build_call(p, TARGET)
    body = json.loads(call.body)
    assert body["model"] == "gpt-4o"
    assert body["stream_options"] == {"include_obfuscation": False, "include_usage": True}
    assert body["x_vendor"] == {"a": [1, 2.5]}
    assert call.url == "https://api.openai.com/v1/chat/completions"
    assert call.headers["authorization"] == "Bearer sk-test"


def test_reasoning_models_get_max_completion_tokens():
    p = parsed({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50})
    body = json.loads(openai.build_call(p, msgspec.structs.replace(TARGET, model="gpt-5-mini")).body)
    assert "max_tokens" not in body and body["max_completion_tokens"] == 50
    assert json.loads(openai.build_call(p, TARGET).body)["max_tokens"] == 50


@pytest.mark.parametrize(
    ("status", "body", "cls"),
    [
        (
            400,
            {"error": {"message": "bad", "type": "invalid_request_error", "param": "x", "code": None}},
            FailureClass.CALLER_FAULT,
        ),
        (
            400,
            {
                "error": {
                    "message": "too long",
                    "type": "invalid_request_error",
                    "param": "messages",
                    "code": "context_length_exceeded",
                }
            },
            FailureClass.CONTEXT_LENGTH,
        ),
        (
            401,
            {
                "error": {
                    "message": "Incorrect API key provided: sk-abc***xyz",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            },
            FailureClass.CREDENTIAL,
        ),
        (
            404,
            {"error": {"message": "no model", "type": "invalid_request_error", "code": "model_not_found"}},
            FailureClass.MODEL_GONE,
        ),
        (
            429,
            {"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}},
            FailureClass.RATE_LIMIT,
        ),
        (
            429,
            {"error": {"message": "pay up", "type": "insufficient_quota", "code": "insufficient_quota"}},
            FailureClass.QUOTA,
        ),
        (500, {"error": {"message": "oops", "type": "server_error"}}, FailureClass.TRANSIENT),
        (
            503,
            {"error": {"message": "busy", "type": "service_unavailable_error", "code": "server_is_overloaded"}},
            FailureClass.OVERLOADED,
        ),
        (
            400,
            {"object": "error", "message": "extra fields not permitted", "type": "BadRequestError", "code": 400},
            FailureClass.CALLER_FAULT,
        ),
        (502, "<html>Bad Gateway</html>", FailureClass.TRANSIENT),
    ],
)
def test_errors_are_classified_from_status_and_code(status, body, cls):
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    err = openai.decode_error(status, {"retry-after": "3"}, raw, TARGET)
    assert err.failure_class is cls
    assert err.target == "oa/gpt-4o"


def test_credential_errors_do_not_echo_the_upstream_message():
    raw = b'{"error":{"message":"Incorrect API key provided: sk-abc***xyz","code":"invalid_api_key"}}'
    err = openai.decode_error(401, {}, raw, TARGET)
    assert "sk-abc" not in err.to_openai().decode()


def test_retry_after_is_read_for_rate_limits():
    err = openai.decode_error(429, {"retry-after-ms": "1500"}, b'{"error":{"message":"x"}}', TARGET)
    assert err.retry_after_s == 1.5 and "retry after 1.5 s" in err.message


def test_non_json_200_body_is_a_protocol_error():
    with pytest.raises(UpstreamProtocolError):
        openai.decode_response(b"<html>", TARGET)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("6m0s", 360.0), ("1s", 1.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("2", 2.0), ("soon", None), ("", None)],
)
def test_reset_headers_are_go_durations(text, seconds):
    assert openai_reply.duration_s(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_rate_limit_headers_in_one_shape():
    info = openai.rate_limits(
        {
            "x-ratelimit-limit-requests": "60",
            "x-ratelimit-remaining-requests": "59",
            "x-ratelimit-reset-requests": "1s",
            "x-ratelimit-limit-tokens": "150000",
            "x-ratelimit-remaining-tokens": "149984",
            "x-ratelimit-reset-tokens": "6m0s",
        }
    )
    assert info == openai.base.RateLimitInfo(
        limit_requests=60,
        remaining_requests=59,
        reset_requests_s=1.0,
        limit_tokens=150000,
        remaining_tokens=149984,
        reset_tokens_s=360.0,
    )
    assert openai.rate_limits({"content-type": "application/json"}) is None


def test_a_sparse_compatible_answer_gets_every_field_openais_schema_requires():
    # What a local OpenAI-compatible server may send: no object, created, logprobs, refusal
    # or tool-call type. Clients typed from the SDKs need every one of them.
    sparse = {
        "id": "x1",
        "model": "llama",
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{}"}}],
                },
                "finish_reason": "tool_calls",
            }
        ],
    }
    body = json.loads(openai.decode_response(json.dumps(sparse).encode(), TARGET).body)
    assert body["object"] == "chat.completion" and isinstance(body["created"], int) and body["id"] == "x1"
    choice = body["choices"][0]
    assert (choice["index"], choice["logprobs"], choice["message"]["refusal"]) == (0, None, None)
    assert choice["message"]["tool_calls"][0]["type"] == "function"


def test_a_complete_answer_is_forwarded_byte_for_byte():
    full = (
        b'{"id":"c","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,'
        b'"message":{"role":"assistant","content":"hi","refusal":null},"logprobs":null,"finish_reason":"stop"}]}'
    )
    assert openai.decode_response(full, TARGET).body is full


def test_embeddings_a_server_that_ignores_base64_gets_its_floats_encoded():
    floats = (
        b'{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.5,-2.0]}],'
        b'"model":"m","usage":{"prompt_tokens":1,"total_tokens":1}}'
    )
    b64 = openai.decode_embeddings(floats, TARGET, EmbeddingRequest(model="m", input="x", encoding_format="base64"))
    assert json.loads(b64)["data"][0]["embedding"] == base64.b64encode(struct.pack("<2f", 0.5, -2.0)).decode()
    assert openai.decode_embeddings(floats, TARGET, EmbeddingRequest(model="m", input="x")) is floats
    assert (
        openai.decode_embeddings(b64, TARGET, EmbeddingRequest(model="m", input="x", encoding_format="base64")) is b64
    )


def test_a_compatible_stream_chunk_with_logprobs_is_decoded_and_kept():
    lp = b'{"content":[{"token":"a","logprob":-0.01,"bytes":[97],"top_logprobs":[]}],"refusal":null}'
    chunk = (
        b'{"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,'
        b'"delta":{"content":"a"},"logprobs":' + lp + b',"finish_reason":null}]}'
    )
    (delta,) = openai.StreamDecoder(TARGET).feed("", chunk)
    assert delta.content == "a" and bytes(delta.logprobs) == lp
