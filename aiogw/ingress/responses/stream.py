"""Canonical deltas -> the Responses stream (API reference "Streaming events"): one
`response.created` and `response.in_progress`, then per output item `output_item.added`,
its part/delta/done events and `output_item.done`, then exactly one terminal event
(`response.completed` | `response.incomplete`, or `error` + `response.failed` for a late
failure) carrying the whole Response. One response id throughout; `sequence_number`
counts every event from 0. Text deltas, the hot path, are written from prebuilt bytes."""

from __future__ import annotations

from typing import Any

import orjson

from aiogw.errors import GatewayError
from aiogw.ingress.responses.answer import Item, call_item, finish, message_item, new_id, reasoning_item
from aiogw.streaming.encode import estimated_usage
from aiogw.types import CompletionUsage, Delta, FinishReason

_dumps = orjson.dumps


class _Open:
    """An output item being streamed: its index, id, and what it has gathered. A message's
    content parts (its text, a refusal) are opened as their first delta comes, in that
    order: `order` holds their kinds, their index is their place in it."""

    __slots__ = ("args", "delta_head", "index", "item", "kind", "order", "parts", "refusal", "refusal_head")

    def __init__(self, kind: str, index: int, item: Item) -> None:
        self.kind, self.index, self.item = kind, index, item
        self.parts: list[str] = []
        self.args: list[str] = []
        self.refusal: list[str] = []
        self.order: list[str] = []  # a message's parts: "output_text" and "refusal"
        self.delta_head = b""
        self.refusal_head = b""


def _delta_head(kind: str, o: _Open, fields: bytes) -> bytes:
    """A delta event of item `o` up to its text: written once per item, then per delta
    only the text and the sequence number follow (`ResponsesStream._delta`)."""
    ids = b'"item_id":' + _dumps(o.item["id"]) + b',"output_index":' + str(o.index).encode()
    return b"event: " + kind.encode() + b'\ndata: {"type":"' + kind.encode() + b'",' + ids + fields + b',"delta":'


def _part_of(kind: str, text: str) -> Item:
    if kind == "output_text":
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"type": "refusal", "refusal": text}


class ResponsesStream:
    """One per attempt's stream (a StreamEncoder). `final`: the finished Response, set by
    `close()` with the terminal event it returns (the sink stores it from there)."""

    __slots__ = ("_calls", "_current", "_done", "_items", "_out_chars", "_prompt_estimate", "_resp",
                 "_seq", "_started", "final", "finish_reasons", "terminal_len", "usage")  # fmt: skip

    def __init__(self, resp: dict[str, Any], prompt_estimate: int) -> None:
        self._resp = resp
        self._prompt_estimate = prompt_estimate
        self.final: dict[str, Any] | None = None
        self._seq = 0
        self._started = False
        self._items: list[_Open] = []
        self._current: _Open | None = None  # the text or reasoning item being written
        self._calls: dict[int, _Open] = {}  # function calls by the canonical tool index
        self._out_chars = 0
        self._done = False
        self.usage: CompletionUsage | None = None
        self.finish_reasons: dict[int, FinishReason] = {}
        self.terminal_len = 0  # bytes of the terminal event at the end of close()'s output

    # --- events ---------------------------------------------------------------------------

    def _event(self, buf: bytearray, kind: str, fields: dict[str, Any]) -> None:
        fields["type"] = kind
        fields["sequence_number"] = self._seq
        self._seq += 1
        buf += b"event: " + kind.encode() + b"\ndata: " + _dumps(fields) + b"\n\n"

    def _delta(self, buf: bytearray, head: bytes, text: str) -> None:
        # {"type":…,"item_id":…,"output_index":…,[content_index],"delta":"…","sequence_number":N}
        buf += head
        buf += _dumps(text)
        buf += b',"sequence_number":'
        buf += str(self._seq).encode()
        buf += b"}\n\n"
        self._seq += 1

    def _start(self, buf: bytearray) -> None:
        self._started = True
        self._event(buf, "response.created", {"response": self._resp})
        self._event(buf, "response.in_progress", {"response": self._resp})

    def _add(self, buf: bytearray, kind: str, item: Item) -> _Open:
        o = _Open(kind, len(self._items), item)
        self._items.append(o)
        self._event(buf, "response.output_item.added", {"output_index": o.index, "item": item})
        if kind == "reasoning":
            part = {"type": "summary_text", "text": ""}
            self._event(buf, "response.reasoning_summary_part.added",
                        {"item_id": item["id"], "output_index": o.index, "summary_index": 0, "part": part})  # fmt: skip
            o.delta_head = _delta_head("response.reasoning_summary_text.delta", o, b',"summary_index":0')
        elif kind == "function_call":
            o.delta_head = _delta_head("response.function_call_arguments.delta", o, b"")
        # a message's parts open with their first delta (`_part`)
        return o

    def _part(self, buf: bytearray, o: _Open, kind: str) -> None:
        """Open a message's text or refusal part, at the next content index."""
        index = len(o.order)
        o.order.append(kind)
        part = _part_of(kind, "")
        self._event(buf, "response.content_part.added",
                    {"item_id": o.item["id"], "output_index": o.index, "content_index": index, "part": part})  # fmt: skip
        at = b',"content_index":' + str(index).encode()
        if kind == "output_text":
            o.delta_head = _delta_head("response.output_text.delta", o, at + b',"logprobs":[]')
        else:
            o.refusal_head = _delta_head("response.refusal.delta", o, at)

    def _close_item(self, buf: bytearray, o: _Open, status: str) -> None:
        ids = {"item_id": o.item["id"], "output_index": o.index}
        if o.kind == "message":
            content = []
            for index, kind in enumerate(o.order):
                if kind == "output_text":
                    text = "".join(o.parts)
                    self._event(buf, "response.output_text.done",
                                {**ids, "content_index": index, "text": text, "logprobs": []})  # fmt: skip
                else:
                    text = "".join(o.refusal)
                    self._event(buf, "response.refusal.done", {**ids, "content_index": index, "refusal": text})
                part = _part_of(kind, text)
                self._event(buf, "response.content_part.done", {**ids, "content_index": index, "part": part})
                content.append(part)
            item = message_item(None, None, status)
            item["content"] = content
        elif o.kind == "reasoning":
            text = "".join(o.parts)
            self._event(buf, "response.reasoning_summary_text.done", {**ids, "summary_index": 0, "text": text})
            part = {"type": "summary_text", "text": text}
            self._event(buf, "response.reasoning_summary_part.done", {**ids, "summary_index": 0, "part": part})
            item = reasoning_item(text)
        else:
            args = "".join(o.args)
            self._event(buf, "response.function_call_arguments.done",
                        {**ids, "name": o.item["name"], "arguments": args})  # fmt: skip
            item = call_item(o.item["call_id"], o.item["name"], args)
        item["id"] = o.item["id"]
        o.item = item
        self._event(buf, "response.output_item.done", {"output_index": o.index, "item": item})

    def _switch(self, buf: bytearray, kind: str) -> _Open:
        cur = self._current
        if cur is not None and cur.kind == kind:
            return cur
        if cur is not None:
            self._close_item(buf, cur, "completed")
        if kind == "message":
            item = {"id": new_id("msg"), "type": "message", "status": "in_progress", "role": "assistant", "content": []}
        else:
            item = {"id": new_id("rs"), "type": "reasoning", "summary": []}
        self._current = self._add(buf, kind, item)
        return self._current

    # --- StreamEncoder ----------------------------------------------------------------------

    def feed(self, deltas: list[Delta]) -> bytes:
        buf = bytearray()
        if not self._started:
            self._start(buf)
        for d in deltas:
            if d.choice != 0:
                continue  # Responses has no `n`: one answer
            if d.usage is not None:
                self.usage = d.usage
            elif d.finish_reason is not None:
                self.finish_reasons[0] = d.finish_reason
            elif d.content is not None:
                if d.content:
                    o = self._switch(buf, "message")
                    if not o.delta_head:
                        self._part(buf, o, "output_text")
                    o.parts.append(d.content)
                    self._out_chars += len(d.content)
                    self._delta(buf, o.delta_head, d.content)
            elif d.tool_index is not None:
                call = self._calls.get(d.tool_index)
                if call is None:
                    if self._current is not None:
                        self._close_item(buf, self._current, "completed")
                        self._current = None
                    item = call_item(d.tool_id or f"call_{new_id('aiogw')}", d.tool_name or "", "", "in_progress")
                    call = self._calls[d.tool_index] = self._add(buf, "function_call", item)
                if d.tool_args:
                    call.args.append(d.tool_args)
                    self._out_chars += len(d.tool_args)
                    self._delta(buf, call.delta_head, d.tool_args)
            elif d.reasoning is not None:
                if d.reasoning:
                    o = self._switch(buf, "reasoning")
                    o.parts.append(d.reasoning)
                    self._out_chars += len(d.reasoning)
                    self._delta(buf, o.delta_head, d.reasoning)
            elif d.refusal:
                o = self._switch(buf, "message")
                if not o.refusal_head:
                    self._part(buf, o, "refusal")
                o.refusal.append(d.refusal)
                self._out_chars += len(d.refusal)
                self._delta(buf, o.refusal_head, d.refusal)
        return bytes(buf)

    def close(self) -> bytes:
        """After a normal end: open items done, then response.completed | incomplete."""
        buf = bytearray()
        if not self._started:
            self._start(buf)
        reason = self.finish_reasons.get(0)
        if reason is None:
            reason = self.finish_reasons[0] = "tool_calls" if self._calls else "stop"
        elif reason == "stop" and self._calls:
            self.finish_reasons[0] = "tool_calls"
        status = "incomplete" if reason in ("length", "content_filter") else "completed"
        if self._current is not None:
            self._close_item(buf, self._current, status)
        for o in self._calls.values():
            self._close_item(buf, o, "completed")
        if self.usage is None:  # the provider gave none: estimate, and say so
            self.usage = estimated_usage(self._prompt_estimate, self._out_chars)
        resp = self.final = self._final(reason)
        before = len(buf)
        self._event(buf, "response.completed" if resp["status"] == "completed" else "response.incomplete",
                    {"response": resp})  # fmt: skip
        self.terminal_len = len(buf) - before
        self._done = True
        return bytes(buf)

    def _final(self, reason: FinishReason | None) -> dict[str, Any]:
        resp = dict(self._resp)
        resp["output"] = [o.item for o in sorted(self._items, key=lambda o: o.index)]
        finish(resp, reason, self.usage)
        return resp

    def instead_of_terminal(self, err: GatewayError) -> bytes:
        """`failed` in place of the terminal event `close()` returned last (not sent)."""
        self._seq -= 1
        return self.failed_events(err)

    def failed_events(self, err: GatewayError) -> bytes:
        """A late failure: the `error` event, then `response.failed` with what came so far."""
        buf = bytearray()
        if not self._started:
            self._start(buf)
        e = err.to_dict()["error"]
        assert isinstance(e, dict)
        self._event(buf, "error", {"code": e["code"], "message": e["message"], "param": e["param"]})
        resp = dict(self._resp)
        resp["status"] = "failed"
        resp["output"] = [o.item for o in self._items]
        # The Response's error code is one of OpenAI's few (the SDK types enumerate them);
        # the gateway's own code travels in the `error` event above.
        code = "rate_limit_exceeded" if err.http_status() == 429 else "server_error"
        resp["error"] = {"code": code, "message": e["message"]}
        self._event(buf, "response.failed", {"response": resp})
        self._done = True
        return bytes(buf)
