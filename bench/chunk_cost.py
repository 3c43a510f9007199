"""Micro-benchmark: CPU per streamed chunk, OpenAI fast path against translated streams.

    python -m aiogw.bench.chunk_cost [--chunks 20] [--repeat 2000]

Each stream is fed as one network read per event (the common case on a live connection)
through the same code the gateway runs: SSE parser -> relay (pass-through or adapter
decoder + chunk encoder). The native streams are written here from the providers' wire
formats (no adapter output), with the same text for every provider.

Rows "messages client, ...": the same upstream streams for a client of the Anthropic
Messages API (`/v1/messages`): translated targets through the Messages encoder, an
Anthropic target forwarded as it comes (the native relay); the "same target" column compares each
with the Chat Completions row of the same upstream.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from aiogw.adapters import REGISTRY
from aiogw.adapters._base import Target
from aiogw.ingress.messages.stream import MessagesEncoder
from aiogw.ingress.responses.native import PassthroughEvents
from aiogw.ingress.responses.stream import ResponsesStream
from aiogw.streaming.encode import ChunkEncoder
from aiogw.streaming.relay import NativeRelay, PassthroughRelay, Relay, TranslatingRelay
from aiogw.streaming.sse import SSEParser
from aiogw.types import MESSAGES_API

WORDS = ["Simulated", " reply", " from", " the", " bench", " with", " some", " words"]


def _openai(n: int, *, asked: bool = False, spaced: bool = False) -> list[bytes]:
    """`asked`: the stream the gateway gets when it asked for usage, the client did not
    (`"usage":null` on every chunk, to strip). `spaced`: `json.dumps`' default spelling."""
    head = {"id": "chatcmpl-b", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}
    tail = {"usage": None} if asked else {}
    out = [
        {
            **head,
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
            ],
            **tail,
        }
    ]
    out += [
        {
            **head,
            "choices": [{"index": 0, "delta": {"content": WORDS[i % 8]}, "logprobs": None, "finish_reason": None}],
            **tail,
        }
        for i in range(n)
    ]
    out.append({**head, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}], **tail})
    out.append({**head, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": n, "total_tokens": 5 + n}})
    seps = (", ", ": ") if spaced else (",", ":")
    return [b"data: " + json.dumps(c, separators=seps).encode() + b"\n\n" for c in out] + [b"data: [DONE]\n\n"]


def _anthropic(n: int) -> list[bytes]:
    def ev(name: str, obj: dict) -> bytes:
        return f"event: {name}\ndata: ".encode() + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"

    msg = {
        "id": "msg_b",
        "type": "message",
        "role": "assistant",
        "model": "claude",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 1},
    }
    out = [
        ev("message_start", {"type": "message_start", "message": msg}),
        ev(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
    ]
    out += [
        ev(
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": WORDS[i % 8]}},
        )
        for i in range(n)
    ]
    out += [
        ev("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ev(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": n},
            },
        ),
        ev("message_stop", {"type": "message_stop"}),
    ]
    return out


def _gemini(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        c: dict = {
            "candidates": [{"content": {"role": "model", "parts": [{"text": WORDS[i % 8]}]}, "index": 0}],
            "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": i + 1, "totalTokenCount": 6 + i},
            "modelVersion": "gemini-2.5-flash",
        }
        if i == n - 1:
            c["candidates"][0]["finishReason"] = "STOP"
        out.append(b"data: " + json.dumps(c).encode() + b"\r\n\r\n")
    return out


def _responses(n: int) -> list[bytes]:
    """OpenAI's Responses stream of the same text (API reference, "Streaming events")."""
    seq = iter(range(10_000))

    def ev(kind: str, obj: dict) -> bytes:
        obj = {"type": kind, **obj, "sequence_number": next(seq)}
        return f"event: {kind}\ndata: ".encode() + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"

    resp = {"id": "resp_b", "object": "response", "created_at": 1, "status": "in_progress", "model": "gpt-4o",
            "output": [], "usage": None}  # fmt: skip
    ids = {"item_id": "msg_b", "output_index": 0}
    text = "".join(WORDS[i % 8] for i in range(n))
    item = {"id": "msg_b", "type": "message", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}  # fmt: skip
    out = [ev("response.created", {"response": resp}), ev("response.in_progress", {"response": resp}),
           ev("response.output_item.added", {"output_index": 0, "item": {**item, "content": []}}),
           ev("response.content_part.added", {**ids, "content_index": 0, "part": {"type": "output_text", "text": ""}})]  # fmt: skip
    out += [ev("response.output_text.delta", {**ids, "content_index": 0, "delta": WORDS[i % 8]}) for i in range(n)]
    usage = {"input_tokens": 5, "output_tokens": n, "total_tokens": 5 + n}
    out += [ev("response.output_text.done", {**ids, "content_index": 0, "text": text}),
            ev("response.content_part.done", {**ids, "content_index": 0, "part": item["content"][0]}),
            ev("response.output_item.done", {"output_index": 0, "item": item}),
            ev("response.completed", {"response": {**resp, "status": "completed", "output": [item], "usage": usage}})]  # fmt: skip
    return out


# label -> (provider type, stream, the client asked for usage, client API, same-target row)
STREAMS: dict[str, tuple[str, Callable[[int], list[bytes]], bool, str, str]] = {
    "openai (fast path)": ("openai", _openai, True, "chat", ""),
    "openai (fast path, usage hidden from the client)": ("openai", lambda n: _openai(n, asked=True), False, "chat", ""),
    "openai (fast path, spaced JSON, usage hidden)": (
        "openai", lambda n: _openai(n, asked=True, spaced=True), False, "chat", ""),
    "openai-compatible (normalised)": ("openai-compatible", _openai, True, "chat", ""),
    "anthropic": ("anthropic", _anthropic, True, "chat", ""),
    "gemini": ("gemini", _gemini, True, "chat", ""),
    "messages client, openai target (translated)": ("openai", _openai, True, "messages", "openai (fast path)"),
    "messages client, openai-compatible target (translated)": (
        "openai-compatible", _openai, True, "messages", "openai-compatible (normalised)"),
    "messages client, gemini target (translated)": ("gemini", _gemini, True, "messages", "gemini"),
    "messages client, anthropic target (passthrough)": ("anthropic", _anthropic, True, "messages", "anthropic"),
    "responses client, anthropic target (translated)": ("anthropic", _anthropic, True, "responses", "anthropic"),
    "responses client, gemini target (translated)": ("gemini", _gemini, True, "responses", "gemini"),
    "responses client, openai target (translated)": (
        "openai", _openai, True, "responses", "openai-compatible (normalised)"),
    "responses client, openai Responses API (passed through)": (
        "responses", _responses, True, "responses", "openai (fast path)"),
}  # fmt: skip


# A Response skeleton as the ingress makes it (the echoed settings of a plain request).
_SKELETON = {"id": "resp_b", "object": "response", "created_at": 1, "status": "in_progress", "background": False,
             "error": None, "incomplete_details": None, "model": "m", "output": [], "usage": None,
             "instructions": None, "max_output_tokens": None, "metadata": {}, "parallel_tool_calls": True,
             "previous_response_id": None, "reasoning": {"effort": None, "summary": None}, "store": False,
             "temperature": 1.0, "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [],
             "top_p": 1.0, "truncation": "disabled", "user": None}  # fmt: skip


def _relay(kind: str, include_usage: bool = True, client: str = "chat") -> Relay:
    if kind == "responses":  # an upstream with the Responses API: its events passed through
        return PassthroughEvents("b/responses")
    adapter = REGISTRY[kind]
    target = Target(id=f"b/{kind}", provider="b", type=kind, model="m", base_url="http://x")
    decoder = adapter.stream_decoder(target)
    if client == "messages":  # as Sender._relay picks for a Messages client
        if adapter.native_api == MESSAGES_API:
            return NativeRelay(decoder, target=target.id, content_events=adapter.native_content_events)
        return TranslatingRelay(decoder, MessagesEncoder(model="m", prompt_estimate=5), target=target.id)
    if client == "responses":
        return TranslatingRelay(decoder, ResponsesStream(dict(_SKELETON), 5), target=target.id)
    if adapter.passthrough_stream:
        return PassthroughRelay(decoder, include_usage=include_usage, target=target.id)
    enc = ChunkEncoder(completion_id="chatcmpl-b", created=1, model="m", include_usage=True)
    return TranslatingRelay(decoder, enc, target=target.id)


def _once(kind: str, events: list[bytes], repeat: int, include_usage: bool, client: str) -> float:
    """CPU microseconds per whole stream, averaged over `repeat` streams."""
    t0 = time.process_time()
    for _ in range(repeat):
        parser, relay = SSEParser(), _relay(kind, include_usage, client)
        feed_chunk = getattr(relay, "feed_chunk", None)  # as Sender.stream_once reads a chunk
        for e in events:
            if feed_chunk is None:
                relay.feed(parser.feed(e))
            else:
                feed_chunk(parser, e)
        relay.feed(parser.close())
        relay.finish()
    return (time.process_time() - t0) / repeat * 1e6


def measure(kind: str, events: list[bytes], repeat: int, include_usage: bool = True, client: str = "chat") -> float:
    """Best-of-5 CPU microseconds for one whole stream."""
    return min(_once(kind, events, repeat, include_usage, client) for _ in range(5))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m aiogw.bench.chunk_cost")
    ap.add_argument("--chunks", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5, help="rounds over every row; each row's best is kept")
    args = ap.parse_args(argv)
    rows = {label: row for label, row in STREAMS.items() if row[0] in REGISTRY or row[0] == "responses"}
    events = {label: row[1](args.chunks) for label, row in rows.items()}
    per = dict.fromkeys(rows, float("inf"))
    # Rows interleaved round by round, so that a busy spell of a shared machine weighs on
    # every row alike rather than on whichever row it fell on.
    for _ in range(args.rounds):
        for label, (kind, _, include_usage, client, _) in rows.items():
            per[label] = min(per[label], _once(kind, events[label], args.repeat, include_usage, client))
    base = next(iter(per.values()))
    print(f"| stream ({args.chunks} content chunks) | CPU µs per stream | µs per chunk | × fast path | × same target |")
    print("| --- | --- | --- | --- | --- |")
    for label, s in per.items():
        same = rows[label][4]
        vs_same = f"{s / per[same]:.2f}" if same in per else ""
        print(f"| {label} | {s:.1f} | {s / args.chunks:.2f} | {s / base:.2f} | {vs_same} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
