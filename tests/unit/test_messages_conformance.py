"""Conformance of the Messages encoder with the official `anthropic` SDK: recorded Anthropic
streams (the SDK's own fixtures and the documented examples under tests/fixtures/anthropic)
go Messages -> canonical deltas (the Anthropic adapter's decoder) -> Messages events (our
encoder), and the SDK's stream helper, unchanged, must build the same message from the
re-encoded stream as from the recording: same text and tool blocks (ids, names, inputs),
same stop reason. Thinking blocks are the one difference, by design: a translation never
emits a thinking block (it would carry no Anthropic signature). The SDK reads the bytes
through an in-memory transport: no server, nothing of ours on the reading side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest

from aiogw.adapters._base import Target
from aiogw.adapters.anthropic_reply import StreamDecoder
from aiogw.ingress.messages import errors
from aiogw.ingress.messages.reply import message_body
from aiogw.ingress.messages.stream import MessagesEncoder
from aiogw.streaming.sse import SSEParser
from aiogw.types import CompletionUsage, Delta, PromptTokensDetails

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "anthropic"
TARGET = Target(id="a/m", provider="a", type="anthropic", model="m", base_url="http://x")
STREAMS = [
    "sdk_basic_response",
    "sdk_tool_use_response",
    "sdk_refusal_response",
    "sdk_incomplete_partial_json_response",
    "sdk_message_delta_fields_response",
    "stream_text_tool",
    "stream_thinking",
    "stream_parallel_no_args",
]


def sdk_final(sse: bytes) -> anthropic.types.Message:
    """What the SDK's `messages.stream(...).get_final_message()` makes of these bytes."""

    def reply(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=sse, headers={"content-type": "text/event-stream"})

    client = anthropic.Anthropic(
        api_key="k", base_url="http://test", http_client=httpx2.Client(transport=httpx2.MockTransport(reply))
    )
    with client.messages.stream(model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}]) as s:
        return s.get_final_message()


def sdk_events(sse: bytes) -> list[Any]:
    def reply(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=sse, headers={"content-type": "text/event-stream"})

    client = anthropic.Anthropic(
        api_key="k", base_url="http://test", http_client=httpx2.Client(transport=httpx2.MockTransport(reply))
    )
    with client.messages.stream(model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}]) as s:
        return list(s)


def round_trip(sse: bytes, *, split: int = 7) -> bytes:
    """The recording through the adapter's decoder and our encoder, fed in small pieces."""
    decoder = StreamDecoder(TARGET)
    encoder = MessagesEncoder(model="m", prompt_estimate=3)
    parser = SSEParser()
    out = bytearray()
    for i in range(0, len(sse), split):
        deltas: list[Delta] = []
        for ev in parser.feed(sse[i : i + split]):
            deltas += decoder.feed(ev.event, ev.data)
        if deltas:
            out += encoder.feed(deltas)
    for ev in parser.close():
        out += encoder.feed(decoder.feed(ev.event, ev.data))
    out += encoder.close()
    return bytes(out)


def blocks(m: anthropic.types.Message) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for b in m.content:
        if b.type == "text":
            if not b.text:
                continue  # an empty text block (a refusal's) carries nothing; canonical has no such delta
            if out and out[-1][0] == "text":  # adjacent text blocks read as one text
                out[-1] = ("text", out[-1][1] + b.text)
            else:
                out.append(("text", b.text))
        elif b.type == "tool_use":
            out.append(("tool_use", b.id, b.name, b.input))
    return out


@pytest.mark.parametrize("name", STREAMS)
def test_recorded_stream_round_trips_through_canonical(name):
    recorded = (FIXTURES / f"{name}.sse").read_bytes()
    original = sdk_final(recorded)
    again = sdk_final(round_trip(recorded))
    assert blocks(again) == blocks(original)
    assert again.stop_reason == original.stop_reason
    assert again.usage.output_tokens == original.usage.output_tokens
    read = original.usage.cache_read_input_tokens or 0
    written = original.usage.cache_creation_input_tokens or 0
    assert (again.usage.input_tokens, again.usage.cache_read_input_tokens) == (original.usage.input_tokens, read)
    assert again.usage.cache_creation_input_tokens == written
    assert all(b.type != "thinking" for b in again.content)  # never an unsigned thinking block


@pytest.mark.parametrize("name", STREAMS)
def test_event_order_is_strict(name):
    events = sdk_events(round_trip((FIXTURES / f"{name}.sse").read_bytes(), split=3))
    raw = [
        e for e in events if e.type in ("message_start", "message_delta", "message_stop") or "content_block" in e.type
    ]
    kinds = [e.type for e in raw]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    open_index, started = None, []
    for e in raw:
        if e.type == "content_block_start":
            assert open_index is None
            open_index = e.index
            started.append(e.index)
        elif e.type in ("content_block_delta", "content_block_stop"):
            assert e.index == open_index
            if e.type == "content_block_stop":
                open_index = None
    assert open_index is None and started == list(range(len(started)))


def test_message_start_comes_first_when_the_first_delta_is_a_tool_call():
    enc = MessagesEncoder(model="m")
    out = enc.feed([Delta.tool_start(0, "call_1", "f"), Delta.tool_args_fragment(0, '{"a":')])
    out += enc.feed([Delta.tool_args_fragment(0, "1}"), Delta(finish_reason="stop")]) + enc.close()
    names = [line[len("event: ") :] for line in out.decode().splitlines() if line.startswith("event: ")]
    assert names == ["message_start", "content_block_start", "content_block_delta", "content_block_delta",
                     "content_block_stop", "message_delta", "message_stop"]  # fmt: skip
    final = sdk_final(out)
    assert blocks(final) == [("tool_use", "call_1", "f", {"a": 1})] and final.stop_reason == "tool_use"


def test_transitions_open_a_new_block_with_the_delta_that_caused_them():
    enc = MessagesEncoder(model="m")
    out = enc.feed([Delta(content="Let me check. "), Delta(reasoning="hidden"), Delta.tool_start(0, "c1", "f")])
    out += enc.feed([Delta.tool_args_fragment(0, "{}"), Delta.tool_start(1, "c2", "g")])
    out += enc.feed([Delta.tool_args_fragment(1, '{"x":2}'), Delta(content="Done.")]) + enc.close()
    final = sdk_final(out)
    assert blocks(final) == [("text", "Let me check. "), ("tool_use", "c1", "f", {}), ("tool_use", "c2", "g", {"x": 2}),
                             ("text", "Done.")]  # fmt: skip
    assert "hidden" not in out.decode()


def test_usage_maps_cache_reads_and_writes_out_of_input_tokens():
    enc = MessagesEncoder(model="m")
    usage = CompletionUsage(
        prompt_tokens=100,
        completion_tokens=7,
        total_tokens=107,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=60, cache_write_tokens=30),
    )
    out = enc.feed([Delta(content="hi"), Delta(finish_reason="length"), Delta(usage=usage)]) + enc.close()
    final = sdk_final(out)
    u = final.usage
    assert (u.input_tokens, u.cache_read_input_tokens, u.cache_creation_input_tokens, u.output_tokens) == (
        10,
        60,
        30,
        7,
    )
    assert final.stop_reason == "max_tokens"


def test_late_error_event_is_anthropics_and_the_sdk_raises_it():
    from aiogw.errors import UpstreamTimeout

    enc = MessagesEncoder(model="m")
    out = enc.feed([Delta(content="partial")]) + errors.error_event(UpstreamTimeout("idle", phase="idle", target="t"))
    with pytest.raises(anthropic.APIStatusError) as exc:
        sdk_final(out)
    assert exc.value.body["error"]["type"] == "timeout_error"


def test_non_streaming_reply_never_has_thinking_and_maps_finish():
    completion = (
        b'{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,'
        b'"message":{"role":"assistant","content":"Hi","reasoning_content":"thought","tool_calls":[{"id":"t1",'
        b'"type":"function","function":{"name":"f","arguments":"{\\"a\\":1}"}}]},"finish_reason":"stop"}],'
        b'"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}'
    )
    msg = anthropic.types.Message.model_validate_json(message_body(completion))
    assert blocks(msg) == [("text", "Hi"), ("tool_use", "t1", "f", {"a": 1})]
    assert msg.stop_reason == "tool_use" and (msg.usage.input_tokens, msg.usage.output_tokens) == (5, 2)
