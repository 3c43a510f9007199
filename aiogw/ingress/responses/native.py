"""Responses passed through to targets whose upstream serves the Responses API (an `openai`
account: see adapters/openai.py `build_responses_call`): the client's body goes as it came
(the upstream model name set), the answer comes back as it is, read only for its usage,
status and errors. A stream's event bytes are forwarded as they arrive; only the terminal
and error events are decoded."""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

from aiogw.adapters._base import Adapter, Call, Target
from aiogw.errors import GatewayError, InvalidRequest, UpstreamError, UpstreamProtocolError
from aiogw.ingress.responses.format import ResponsesFormat
from aiogw.streaming.sse import SSEEvent
from aiogw.types import (
    RESPONSES_API,
    CompletionTokensDetails,
    CompletionUsage,
    FinishReason,
    PromptTokensDetails,
    Reply,
)


class _InDetails(msgspec.Struct):
    cached_tokens: int = 0


class _OutDetails(msgspec.Struct):
    reasoning_tokens: int = 0


class _Usage(msgspec.Struct):
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    input_tokens_details: _InDetails | None = None
    output_tokens_details: _OutDetails | None = None


class _Incomplete(msgspec.Struct):
    reason: str | None = None


class _Peek(msgspec.Struct):
    """What the gateway reads of a Response: accounting and status, nothing else."""

    id: str = ""
    model: str = ""
    status: str | None = None
    incomplete_details: _Incomplete | None = None
    usage: _Usage | None = None
    output: list[Any] = []


_peek = msgspec.json.Decoder(_Peek).decode


def _usage(u: _Usage | None) -> CompletionUsage | None:
    if u is None:
        return None
    cached = u.input_tokens_details.cached_tokens if u.input_tokens_details else 0
    reasoning = u.output_tokens_details.reasoning_tokens if u.output_tokens_details else 0
    return CompletionUsage(
        prompt_tokens=u.input_tokens,
        completion_tokens=u.output_tokens,
        total_tokens=u.total_tokens or u.input_tokens + u.output_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=cached),
        completion_tokens_details=CompletionTokensDetails(reasoning_tokens=reasoning),
    )


def _finish(p: _Peek) -> FinishReason:
    if p.status == "incomplete":
        reason = p.incomplete_details.reason if p.incomplete_details else None
        return "content_filter" if reason == "content_filter" else "length"
    if any(isinstance(o, dict) and o.get("type") == "function_call" for o in p.output):
        return "tool_calls"
    return "stop"


class ResponsesNative:
    """The `Native` of one Responses request. `raw`: the client's body as raw JSON; `local`:
    the request continues a response this gateway stored (its id means nothing upstream), so
    it is always translated; `native_only`: why a translated target cannot serve it (a
    built-in tool), raised for those targets."""

    def __init__(
        self, raw: dict[str, msgspec.Raw], fmt: ResponsesFormat, *, local: bool, native_only: InvalidRequest | None
    ) -> None:
        self._raw, self._fmt, self._local, self._native_only = raw, fmt, local, native_only

    def call(self, target: Target, adapter: Adapter) -> Call | None:
        build = adapter.build_responses_call
        call = build(self._raw, target) if build is not None and not self._local else None
        if call is None and self._native_only is not None:
            raise self._native_only
        return call

    def reply(self, body: bytes, target: Target, adapter: Adapter) -> Reply:
        try:
            p = _peek(body)
        except msgspec.DecodeError:
            raise UpstreamProtocolError("the Responses answer is not a valid Response", target=target.id) from None
        return Reply(
            body=body,
            usage=_usage(p.usage),
            model=p.model or target.model,
            finish_reasons=(_finish(p),),
            native=RESPONSES_API,
        )

    def relay(self, target: Target, adapter: Adapter) -> PassthroughEvents:
        relay = PassthroughEvents(target.id)
        self._fmt.register(target, relay)
        return relay


_TERMINAL = frozenset({"response.completed", "response.incomplete"})


class PassthroughEvents:
    """A Responses stream forwarded event by event (a `Relay`), its terminal event decoded
    for usage and the stored response, an `error` or `response.failed` event turned into the
    attempt's failure (the client then gets the gateway's `error` + `response.failed`, with
    the upstream's id and the next sequence numbers)."""

    __slots__ = ("_complete", "_finish", "_id", "_resp", "_seq", "_target", "failed", "final", "terminal_len", "usage")

    def __init__(self, target: str) -> None:
        self._target = target
        self._complete = False
        self._finish: list[FinishReason] = []
        self._seq = 0  # events forwarded: the upstream counts from 0, one per event
        self._id = ""
        self._resp: dict[str, Any] | None = None  # response.created's Response, for a failure
        self.usage: CompletionUsage | None = None
        self.failed: UpstreamError | None = None
        self.final: dict[str, Any] | None = None
        self.terminal_len = 0

    def feed(self, events: list[SSEEvent]) -> bytes:
        out = bytearray()
        for ev in events:
            kind = ev.event
            if not kind:  # the event name only in the data: read it from there
                try:
                    kind = orjson.loads(ev.data).get("type", "")
                except (orjson.JSONDecodeError, AttributeError):
                    self.failed = UpstreamProtocolError("stream event is not valid JSON", target=self._target)
                    break
            if kind == "error" or kind == "response.failed":
                self.failed = self._failure(ev.data)
                break
            before = len(out)
            data = ev.data
            if 10 in data:  # JSON spread over several `data:` lines stays so for the client
                data = data.replace(b"\n", b"\ndata: ")
            out += b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"
            self._seq += 1
            if kind == "response.created":
                self._resp = orjson.loads(ev.data).get("response")
            elif kind in _TERMINAL:
                resp = orjson.loads(ev.data)["response"]
                p = msgspec.convert(resp, _Peek)
                self.usage, self.final = _usage(p.usage), resp
                self._finish = [_finish(p)]
                self.terminal_len = len(out) - before
                self._complete = True
        return bytes(out)

    def _failure(self, data: bytes) -> UpstreamError:
        try:
            obj = orjson.loads(data)
            err = obj.get("response", {}).get("error") or obj
            message = str(err.get("message") or "the upstream failed the response")
            code = err.get("code")
        except (orjson.JSONDecodeError, AttributeError):
            message, code = "the upstream failed the response", None
        return UpstreamError(message, target=self._target, code=code if isinstance(code, str) else None)

    def finish(self) -> bytes:
        if not self._complete:
            raise UpstreamProtocolError("stream ended before its terminal event (truncated)", target=self._target)
        return b""

    def finish_reasons(self) -> list[FinishReason]:
        return self._finish

    def instead_of_terminal(self, err: GatewayError) -> bytes:
        self._seq -= 1
        return self.failed_events(err)

    def failed_events(self, err: GatewayError) -> bytes:
        """The gateway's `error` + `response.failed`, continuing the upstream's stream."""
        e = err.to_dict()["error"]
        assert isinstance(e, dict)
        buf = bytearray()
        for kind, data in (
            ("error", {"code": e["code"], "message": e["message"], "param": e["param"]}),
            ("response.failed", {"response": {**(self._resp or {"id": self._id, "object": "response", "output": []}),
                                              "status": "failed",
                                              "error": {"code": "rate_limit_exceeded" if err.http_status() == 429
                                                        else "server_error", "message": e["message"]}}}),
        ):  # fmt: skip
            buf += (
                b"event: "
                + kind.encode()
                + b"\ndata: "
                + orjson.dumps({"type": kind, **data, "sequence_number": self._seq})
                + b"\n\n"
            )
            self._seq += 1
        return bytes(buf)
