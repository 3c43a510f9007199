"""The two stream relays over recorded OpenAI streams, split at random byte boundaries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from replay import feed_in_pieces
from sse_client import accumulate, chunks

from aiogw.adapters import openai as openai_adapter
from aiogw.adapters._base import Target
from aiogw.errors import UpstreamError, UpstreamProtocolError
from aiogw.streaming.encode import ChunkEncoder
from aiogw.streaming.relay import PassthroughRelay, TranslatingRelay
from aiogw.streaming.sse import SSEParser

FIXTURES = Path(__file__).parents[2] / "fixtures" / "openai"
TARGET = Target(id="sim/gpt-4o", provider="sim", type="openai", model="gpt-4o", base_url="http://x")


def relay_for(kind, include_usage):
    dec = openai_adapter.StreamDecoder(TARGET)
    if kind == "passthrough":
        return PassthroughRelay(dec, include_usage=include_usage, target=TARGET.id)
    enc = ChunkEncoder(completion_id="chatcmpl-test", created=1, model="gpt-4o", include_usage=include_usage)
    return TranslatingRelay(dec, enc, target=TARGET.id)


def run(relay, data: bytes, seed: int) -> bytes:
    return feed_in_pieces(relay, data, seed, longest=40)


@pytest.mark.parametrize("kind", ["passthrough", "translate"])
@pytest.mark.parametrize("seed", range(5))
def test_tool_call_stream_reassembles_to_the_same_calls(kind, seed):
    raw = (FIXTURES / "stream_tool_calls.sse").read_bytes()
    relay = relay_for(kind, include_usage=True)
    out = run(relay, raw, seed)
    final = accumulate(out)
    calls = final.choices[0].message.tool_calls
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("call_CTf1nWJLqSeRgDqaCG27xZ74", "get_weather", {"city": "Paris"}),
        ("call_Qm2Xv8aLtq1J", "get_time", {"tz": "CET"}),
    ]
    assert final.choices[0].finish_reason == "tool_calls"
    assert relay.usage.prompt_tokens == 48 and relay.usage.completion_tokens == 19
    assert chunks(out)[-1]["usage"]["total_tokens"] == 67


@pytest.mark.parametrize("kind", ["passthrough", "translate"])
def test_usage_chunk_is_hidden_unless_the_client_asked(kind):
    raw = (FIXTURES / "stream_text_usage.sse").read_bytes()
    relay = relay_for(kind, include_usage=False)
    out = run(relay, raw, 1)
    cs = chunks(out)
    assert all(c["choices"] for c in cs), "no choices:[] usage chunk without include_usage"
    assert all("usage" not in c for c in cs), "no usage:null fields the client did not ask for"
    assert accumulate(out).choices[0].message.content == "Hello there!"
    assert relay.usage.total_tokens == 12, "the gateway still reads usage for accounting"


def test_passthrough_forwards_chunks_unchanged_when_usage_was_asked():
    raw = (FIXTURES / "stream_text_usage.sse").read_bytes()
    out = run(relay_for("passthrough", include_usage=True), raw, 3)
    assert out == raw


@pytest.mark.parametrize("kind", ["passthrough", "translate"])
def test_stream_cut_before_its_end_marker_is_an_error(kind):
    raw = (FIXTURES / "stream_text_usage.sse").read_bytes()
    cut = raw[: raw.index(b'"finish_reason":"stop"') - 200]
    with pytest.raises(UpstreamProtocolError):
        run(relay_for(kind, include_usage=False), cut, 0)


@pytest.mark.parametrize("kind", ["passthrough", "translate"])
def test_error_event_mid_stream_raises_the_upstream_error(kind):
    raw = (
        b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}\n\n'
        b'data: {"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}\n\n'
        b"data: [DONE]\n\n"
    )
    with pytest.raises(UpstreamError) as exc:
        run(relay_for(kind, include_usage=False), raw, 0)
    assert "server had an error" in exc.value.message


def test_compatible_server_quirks_are_normalised():
    """Restated ids and names, a missing role chunk, finish "stop" after tool calls,
    usage on a content chunk (docs/providers.md §9)."""

    def chunk(delta, finish=None, usage=None):
        c = {
            "id": "x",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if usage:
            c["usage"] = usage
        return b"data: " + json.dumps(c).encode() + b"\n\n"

    raw = b"".join(
        [
            chunk(
                {
                    "tool_calls": [
                        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}
                    ]
                }
            ),
            chunk({"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": '{"a":'}}]}),
            chunk({"tool_calls": [{"index": 0, "id": "", "function": {"name": "", "arguments": "1}"}}]}),
            chunk({}, finish="stop", usage={"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}),
            b"data: [DONE]\n\n",
        ]
    )
    out = run(relay_for("translate", include_usage=True), raw, 0)
    cs = chunks(out)
    assert cs[0]["choices"][0]["delta"]["role"] == "assistant"
    final = accumulate(out)
    (call,) = final.choices[0].message.tool_calls
    assert (call.id, call.function.name, call.function.arguments) == ("call_1", "f", '{"a":1}')
    assert final.choices[0].finish_reason == "tool_calls"
    assert cs[-1]["choices"] == [] and cs[-1]["usage"]["total_tokens"] == 7


@pytest.mark.parametrize("kind", ["passthrough", "translate"])
def test_content_before_an_error_event_in_the_same_read_is_kept(kind):
    raw = (
        b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}\n\n'
        b'data: {"error":{"message":"boom","type":"server_error","param":null,"code":null}}\n\n'
    )
    relay = relay_for(kind, include_usage=False)
    out = relay.feed(SSEParser().feed(raw))
    assert b'"content":"Hi"' in out
    assert relay.failed is not None and "boom" in relay.failed.message


def test_usage_is_estimated_and_marked_when_the_provider_gives_none():
    raw = (
        b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hello there, world"},"finish_reason":null}]}\n\n'
        b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
        b"data: [DONE]\n\n"
    )
    dec = openai_adapter.StreamDecoder(TARGET)
    enc = ChunkEncoder(completion_id="c", created=1, model="m", include_usage=True, prompt_estimate=7)
    out = run(TranslatingRelay(dec, enc, target=TARGET.id), raw, 0)
    usage = chunks(out)[-1]["usage"]
    assert usage == {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12, "estimated": True}
