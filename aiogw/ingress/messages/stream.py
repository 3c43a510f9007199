"""Canonical deltas -> the Messages API's stream events (API reference "Streaming Messages";
SDK `types/raw_message_stream_event.py`), in the order the SDKs' accumulators rely on:

    message_start
    (content_block_start, content_block_delta*, content_block_stop)*   one block at a time
    message_delta (stop_reason, usage)
    message_stop

`message_start` goes out with the first delta whatever it is (a tool call included); a block
is closed before the next opens, and the delta that caused the change is the new block's
first; each tool call is its own `tool_use` block; indexes count up from 0. Reasoning from a
translated target carries no Anthropic signature, so it is never sent as a thinking block
(clients replay thinking blocks to Anthropic, which refuses unsigned ones); it still counts
towards the estimated output when the target reports no usage.
"""

from __future__ import annotations

import msgspec
import orjson

from aiogw.ingress.messages.reply import STOP_REASON, message_id, usage_json
from aiogw.streaming.encode import UsageExtra, estimated_usage, with_usage_extra
from aiogw.types import CompletionUsage, Delta, FinishReason

_encode = msgspec.json.Encoder().encode

_BLOCK_STOP = b'event: content_block_stop\ndata: {"type":"content_block_stop","index":%d}\n\n'
_TEXT_START = (
    b"event: content_block_start\n"
    b'data: {"type":"content_block_start","index":%d,"content_block":{"type":"text","text":""}}\n\n'
)
_TEXT_DELTA = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,"delta":{"type":"text_delta","text":'
)
_JSON_DELTA = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
    b'"delta":{"type":"input_json_delta","partial_json":'
)
_MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
_TEXT = -1  # `_open` when a text block is open (else the open tool call's index, or None)


class MessagesEncoder:
    """One per streamed answer (a `StreamEncoder`). `feed` and `close` return SSE bytes."""

    __slots__ = (
        "_blocks",
        "_finish",
        "_model",
        "_open",
        "_out_chars",
        "_prompt_estimate",
        "_started",
        "_tool_blocks",
        "_usage_extra",
        "finish_reasons",
        "usage",
    )

    def __init__(self, *, model: str, prompt_estimate: int = 0, usage_extra: UsageExtra | None = None) -> None:
        self._model = model
        self._usage_extra = usage_extra  # the gateway's fields in message_delta's usage (the cost)
        self._prompt_estimate = prompt_estimate
        self._started = False
        self._blocks = 0  # blocks opened so far (the next block's index)
        self._open: int | None = None  # _TEXT, a tool index, or None
        self._tool_blocks: dict[int, int] = {}  # canonical tool index -> its block index
        self._finish: FinishReason | None = None
        self._out_chars = 0
        self.usage: CompletionUsage | None = None
        self.finish_reasons: dict[int, FinishReason] = {}

    def _start(self, buf: bytearray) -> None:
        self._started = True
        message: dict[str, object] = {
            "id": message_id(),
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # The real counts come with message_delta (the upstream's usage arrives last).
            "usage": {"input_tokens": self._prompt_estimate, "output_tokens": 0},
        }
        buf += b"event: message_start\ndata: "
        buf += orjson.dumps({"type": "message_start", "message": message})
        buf += b"\n\n"

    def _close_block(self, buf: bytearray) -> None:
        if self._open is not None:
            buf += _BLOCK_STOP % (self._blocks - 1)
            self._open = None

    def feed(self, deltas: list[Delta]) -> bytes:
        buf = bytearray()
        if not self._started:
            self._start(buf)
        for d in deltas:
            if d.choice:
                continue  # Messages has one answer per request (no `n`)
            if d.usage is not None:
                self.usage = d.usage
            elif d.finish_reason is not None:
                self._finish = self._finish or d.finish_reason
            elif d.tool_index is not None:
                self._tool(buf, d)
            elif d.content or d.refusal:
                text = d.content or d.refusal or ""
                self._out_chars += len(text)
                if self._open != _TEXT:
                    self._close_block(buf)
                    buf += _TEXT_START % self._blocks
                    self._blocks += 1
                    self._open = _TEXT
                buf += _TEXT_DELTA % (self._blocks - 1)
                buf += _encode(text)
                buf += b"}}\n\n"
            elif d.reasoning:
                self._out_chars += len(d.reasoning)
        return bytes(buf)

    def _tool(self, buf: bytearray, d: Delta) -> None:
        i = d.tool_index
        assert i is not None
        if d.tool_id is not None and i not in self._tool_blocks:
            self._close_block(buf)
            self._tool_blocks[i] = self._blocks
            block = {"type": "tool_use", "id": d.tool_id, "name": d.tool_name or "", "input": {}}
            buf += b"event: content_block_start\ndata: "
            buf += orjson.dumps({"type": "content_block_start", "index": self._blocks, "content_block": block})
            buf += b"\n\n"
            self._blocks += 1
            self._open = i
        args = d.tool_args
        if not args:
            return
        self._out_chars += len(args)
        index = self._tool_blocks.get(i)
        if index is None or self._open != i:
            # Arguments of a call whose block is closed (or never opened): a block cannot
            # reopen, so they would be lost; upstreams stream one call at a time.
            return
        buf += _JSON_DELTA % index
        buf += _encode(args)
        buf += b"}}\n\n"

    def close(self) -> bytes:
        """After a normal end: the open block's stop, message_delta and message_stop."""
        buf = bytearray()
        if not self._started:
            self._start(buf)
        self._close_block(buf)
        finish = self._finish or "stop"
        if finish == "stop" and self._tool_blocks:
            finish = "tool_calls"  # Gemini and others say stop after a tool call
        self.finish_reasons[0] = finish
        if self.usage is None:  # the target gave none: estimate, as for Chat Completions
            self.usage = estimated_usage(self._prompt_estimate, self._out_chars)
        usage = with_usage_extra(orjson.dumps(usage_json(self.usage)), self.usage, self._usage_extra)
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": STOP_REASON.get(finish, "end_turn"), "stop_sequence": None},
            "usage": orjson.Fragment(usage),
        }
        buf += b"event: message_delta\ndata: "
        buf += orjson.dumps(delta)
        buf += b"\n\n"
        buf += _MESSAGE_STOP
        return bytes(buf)
