"""Sending one attempt: the upstream request within its bounds, the answer read (unary) or
relayed chunk by chunk into the sink (streaming), the provider's rate-limit headers noted.
The only user of the upstream client (`aiogw.upstream.http`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from functools import cache
from typing import TYPE_CHECKING

import msgspec

from aiogw.accounting.cost import cost_field
from aiogw.adapters._base import Adapter, Call, Target, new_completion_id
from aiogw.admission.limits import Limiter
from aiogw.attempts.bounds import _Bounds
from aiogw.attempts.gate import _FailedAfterCommit, _Gate
from aiogw.attempts.outcome import Outcome, StreamFormat, StreamSink
from aiogw.errors import UpstreamError, UpstreamTimeout
from aiogw.routing import health as health_mod
from aiogw.streaming.encode import ChunkEncoder, error_event
from aiogw.streaming.relay import PassthroughRelay, Relay, TranslatingRelay
from aiogw.streaming.sse import SSEParser
from aiogw.types import ChatRequest, CompletionUsage, ParsedChat, Reply
from aiogw.upstream import http
from aiogw.upstream.egress import Egress

if TYPE_CHECKING:
    from aiogw.telemetry.tracing import Tracing

Decode = Callable[[bytes, Target], Reply]

# An active health check (aiogw/attempts/health_check.py): the cheapest real call a chat target
# answers, one word in and at most one token out; each adapter builds it like any request
# (the model name is the target's).
HEALTH_CHECK_BODY = b'{"model":"health-check","messages":[{"role":"user","content":"ping"}],"max_tokens":1}'


@cache
def _health_check_request() -> ParsedChat:
    return ParsedChat(
        req=msgspec.json.decode(HEALTH_CHECK_BODY, type=ChatRequest),
        raw=msgspec.json.decode(HEALTH_CHECK_BODY, type=dict[str, msgspec.Raw]),
    )


class Sender:
    """The upstream side of an attempt; one per dispatcher."""

    def __init__(
        self,
        client: http.Client,
        loop: asyncio.AbstractEventLoop,
        egress: dict[str, Egress],
        limiter: Limiter,
        adapter: Callable[[Target], Adapter],
        tracing: Tracing | None,
    ) -> None:
        self._client, self._loop, self._egress, self._limiter = client, loop, egress, limiter
        self._adapter, self._tracing = adapter, tracing

    def observe_limits(self, target: Target, adapter: Adapter, headers: Mapping[str, str]) -> None:
        if adapter.rate_limits is not None:
            info = adapter.rate_limits(headers)
            if info is not None:
                self._limiter.observe(target, info, health_mod.now())

    def headers(self, call: Call) -> dict[str, str]:
        # With tracing on, the attempt's span goes upstream as W3C traceparent.
        return call.headers if self._tracing is None else self._tracing.inject(call.headers)

    async def post(
        self, call: Call, target: Target, adapter: Adapter, decode: Decode, gate: _Gate, deadline: float | None
    ) -> Reply:
        # For a unary call the first-token limit runs until the response starts.
        with _Bounds(self._loop, target, deadline) as bounds:
            async with self._client.post(
                call.url, call.body, self.headers(call), target.connect_timeout_s, self._egress.get(target.provider)
            ) as resp:
                bounds.first_token(resp)
                body = await resp.read()
                self.observe_limits(target, adapter, resp.headers)
                if resp.status >= 300:
                    raise adapter.decode_error(resp.status, resp.headers, body, target)
                reply = decode(body, target)
        gate.claim()
        return reply

    async def health_check(self, target: Target, timeout_s: float) -> Reply:
        """One active health check of `target`: the cheapest chat call, built by its adapter
        and sent like any attempt, answered within `timeout_s`. Raises UpstreamError (or
        InvalidRequest when the adapter cannot build it). Touches no health, limits or
        ledger: the prober decides what the result means."""
        adapter = self._adapter(target)
        call = adapter.build_call(_health_check_request(), target)
        deadline = self._loop.time() + timeout_s
        try:
            return await self.post(call, target, adapter, adapter.decode_response, _Gate(), deadline)
        except UpstreamTimeout as exc:
            if exc.phase != "deadline":
                raise
            raise UpstreamTimeout(
                f"no answer within the health check's {timeout_s:g} s", phase="total", target=target.id
            ) from None

    async def stream_once(
        self,
        parsed: ParsedChat,
        prompt_tokens: int,
        account: Callable[[CompletionUsage | None], None],
        target: Target,
        adapter: Adapter,
        call: Call,
        outcome: Outcome,
        sink: StreamSink,
        gate: _Gate,
        deadline: float | None,
        fmt: StreamFormat | None = None,
        relay: Relay | None = None,
    ) -> None:
        """`relay`: given for a pass-through of the client's own API (see `Native`)."""
        started = time.perf_counter()
        if relay is None:
            relay = self._relay(parsed, prompt_tokens, target, adapter, fmt)
        parser = SSEParser()
        try:
            with _Bounds(self._loop, target, deadline) as bounds:
                async with self._client.post(
                    call.url, call.body, self.headers(call), target.connect_timeout_s, self._egress.get(target.provider)
                ) as resp:
                    self.observe_limits(target, adapter, resp.headers)
                    if resp.status >= 300:
                        raise adapter.decode_error(resp.status, resp.headers, await resp.read(), target)
                    if not resp.headers.get("content-type", "").startswith("text/event-stream"):
                        body = await resp.read()
                        # A JSON error with status 200 is still an error; anything else is unreadable.
                        raise adapter.decode_error(500, resp.headers, body, target)

                    async def commit() -> None:
                        gate.claim()
                        outcome.ttft_ms = (time.perf_counter() - started) * 1000
                        outcome.target, outcome.model = target, target.model
                        bounds.first_token(resp)
                        await sink.start(target)

                    # A relay that forwards some chunks as they came reads the chunk itself.
                    feed_chunk = getattr(relay, "feed_chunk", None)
                    async for chunk in resp.iter_any():
                        out = relay.feed(parser.feed(chunk)) if feed_chunk is None else feed_chunk(parser, chunk)
                        if relay.failed is not None:
                            if sink.started and out:  # keep what came before the error
                                await sink.write(out)
                            raise relay.failed
                        if out:
                            if not sink.started:
                                await commit()
                            await sink.write(out)
                    out = relay.feed(parser.close())
                    if relay.failed is not None:
                        raise relay.failed
                    outcome.usage = relay.usage
                    account(relay.usage)
                    out += relay.finish()  # raises if the upstream ended without its end marker
                    if not sink.started:
                        await commit()
                    await sink.write(out)
        except UpstreamError as exc:
            if sink.started and gate.mine():
                # Past the commit point: end the stream, never cut it.
                await sink.write(error_event(exc) if fmt is None else fmt.error_event(exc))
                raise _FailedAfterCommit(exc) from None
            raise
        outcome.finish_reasons = relay.finish_reasons()

    def _relay(
        self, parsed: ParsedChat, prompt_tokens: int, target: Target, adapter: Adapter, fmt: StreamFormat | None
    ) -> Relay:
        decoder = adapter.stream_decoder(target)
        if fmt is not None:  # the client speaks another API: translated from canonical deltas
            return TranslatingRelay(decoder, fmt.encoder(target, prompt_tokens), target=target.id)
        cost = cost_field(target.price)  # the cost rides in the usage chunk
        if adapter.passthrough_stream:
            return PassthroughRelay(decoder, include_usage=parsed.req.wants_usage, target=target.id, usage_extra=cost)
        encoder = ChunkEncoder(
            completion_id=new_completion_id(),
            created=int(time.time()),
            model=target.model,
            include_usage=parsed.req.wants_usage,
            prompt_estimate=prompt_tokens,  # the walk's estimate: the messages are read once
            usage_extra=cost,
        )
        return TranslatingRelay(decoder, encoder, target=target.id)
