"""The attempt loop: call each target of a plan in turn until one answers, within timeouts.

The only user of the upstream ClientSession, and the one place where aiohttp and asyncio
exceptions become `UpstreamError`s. Before the first byte reaches the client a failed
attempt fails over to the next target; after it (the commit point) the stream ends with an
OpenAI-shaped error event and `data: [DONE]`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp

from aiogw.adapters._base import Adapter, Call, Target, content_text, new_completion_id
from aiogw.errors import (
    AllAttemptsFailed,
    GatewayError,
    InvalidRequest,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from aiogw.runtime import ModelRoute, Runtime
from aiogw.streaming.encode import ChunkEncoder, error_event, estimate_tokens
from aiogw.streaming.relay import PassthroughRelay, Relay, TranslatingRelay
from aiogw.streaming.sse import SSEParser
from aiogw.types import CompletionUsage, EmbeddingRequest, FinishReason, ParsedChat, Reply


Decode = Callable[[bytes, Target], Reply]


def prompt_tokens_estimate(parsed: ParsedChat) -> int:
    """A rough prompt size from the request's text, for when a provider reports no usage."""
    chars = sum(len(content_text(getattr(m, "content", None))) for m in parsed.req.messages)
    return estimate_tokens(chars)


def _give_up(route: ModelRoute, failures: list[UpstreamError], refusals: list[InvalidRequest]) -> GatewayError:
    """The error after a plan ran out: the request's own fault if no target could take it."""
    if refusals and not failures:
        return refusals[0]
    return AllAttemptsFailed(tuple(failures), model=route.name)


class ClientDisconnected(Exception):  # noqa: N818 - an event, not a failure
    """The client went away while we were writing to it."""


@dataclass(slots=True)
class AttemptRecord:
    target: str
    latency_ms: float
    failure: str | None = None  # FailureClass value, None on success
    error: str | None = None


@dataclass(slots=True)
class Outcome:
    """What happened to one request, filled in by dispatch and logged by the server."""

    attempts: list[AttemptRecord] = field(default_factory=list)
    target: Target | None = None
    model: str | None = None  # the upstream model that answered
    usage: CompletionUsage | None = None
    ttft_ms: float | None = None
    finish_reasons: list[FinishReason] = field(default_factory=list)
    stream_error: UpstreamError | None = None  # failure after the commit point
    client_closed: bool = False  # the client left before the end (never the target's fault)
    notes: list[str] = field(default_factory=list)  # from adapters: dropped parameters etc.

    @property
    def attempts_header(self) -> str:
        return str(len(self.attempts))


class StreamSink(Protocol):
    """Where a stream goes: `start` is the commit point (send headers), then `write`s.
    Both raise `ClientDisconnected` when the client has gone."""

    started: bool

    async def start(self, target: Target) -> None: ...

    async def write(self, data: bytes) -> None: ...


@contextmanager
def upstream_errors(target: Target, phase: list[str]) -> Iterator[None]:
    """Map foreign exceptions of one upstream attempt to `UpstreamError`s (one boundary)."""
    try:
        yield
    except (UpstreamError, ClientDisconnected):
        raise
    except TimeoutError as exc:
        # aiohttp's connect timeout is a TimeoutError too; ours carry the phase.
        p = "connect" if isinstance(exc, aiohttp.ConnectionTimeoutError) else phase[0]
        limit = {
            "connect": target.connect_timeout_s,
            "first_token": target.first_token_timeout_s,
            "total": target.total_timeout_s,
        }.get(p)
        what = {"connect": "no connection", "first_token": "no first token", "total": "not finished"}[p]
        raise UpstreamTimeout(
            f"{what} within {limit:g} s" if limit else f"{what} before the request deadline",
            phase=p,
            target=target.id,
        ) from None
    except aiohttp.ClientConnectorError as exc:
        os_error = exc.os_error
        cause = os.strerror(os_error.errno) if os_error.errno else str(os_error) or type(os_error).__name__
        raise UpstreamConnectError(
            f"cannot connect to {exc.host}:{exc.port} ({cause})", target=target.id
        ) from None
    except aiohttp.ServerDisconnectedError:
        raise UpstreamConnectError("the upstream closed the connection", target=target.id) from None
    except aiohttp.ClientPayloadError:
        raise UpstreamProtocolError(
            "the upstream connection dropped mid-response", target=target.id
        ) from None
    except (aiohttp.ClientError, OSError) as exc:
        raise UpstreamConnectError(f"{type(exc).__name__}: {exc}", target=target.id) from None


class Dispatcher:
    def __init__(self, session: aiohttp.ClientSession, runtime: Runtime) -> None:
        self._session = session
        self._runtime = runtime
        self._timeouts: dict[str, aiohttp.ClientTimeout] = {}

    def _client_timeout(self, target: Target) -> aiohttp.ClientTimeout:
        # Only the TCP connect is bounded here: first-token and total deadlines are
        # asyncio timeouts, because ClientTimeout rounds values >= 5 s up to whole seconds.
        t = self._timeouts.get(target.id)
        if t is None:
            t = self._timeouts[target.id] = aiohttp.ClientTimeout(
                total=None, connect=None, sock_connect=target.connect_timeout_s
            )
        return t

    def plan(self, route: ModelRoute) -> tuple[Target, ...]:
        return route.targets

    # --- non-streaming ------------------------------------------------------------------

    async def complete(self, parsed: ParsedChat, route: ModelRoute, outcome: Outcome) -> Reply:
        def prepare(target: Target, adapter: Adapter) -> tuple[Call, Decode]:
            return adapter.build_call(parsed, target), adapter.decode_response

        return await self._unary(route, outcome, prepare)

    async def embed(self, req: EmbeddingRequest, route: ModelRoute, outcome: Outcome) -> Reply:
        def prepare(target: Target, adapter: Adapter) -> tuple[Call, Decode]:
            build, decode = adapter.build_embeddings_call, adapter.decode_embeddings
            if build is None or decode is None:
                raise InvalidRequest(
                    f"{target.id} cannot embed: provider type '{adapter.name}' has no embeddings API.",
                    code="unsupported_model",
                    param="model",
                )
            return build(req, target), lambda body, t: Reply(body=decode(body, t), model=t.model)

        return await self._unary(route, outcome, prepare)

    async def _unary(
        self, route: ModelRoute, outcome: Outcome, prepare: Callable[[Target, Adapter], tuple[Call, Decode]]
    ) -> Reply:
        failures: list[UpstreamError] = []
        refusals: list[InvalidRequest] = []
        for target in self.plan(route):
            adapter = self._runtime.adapter(target)
            try:
                call, decode = prepare(target, adapter)
            except InvalidRequest as exc:  # this target cannot honour the request as asked
                refusals.append(exc)
                outcome.attempts.append(AttemptRecord(target.id, 0.0, "unsupported", exc.message))
                continue
            outcome.notes.extend(call.notes)
            started = time.perf_counter()
            try:
                reply = await self._post(call, target, adapter, decode)
            except UpstreamError as exc:
                self._record(outcome, target, started, exc)
                if not exc.may_fail_over:
                    raise
                failures.append(exc)
                continue
            self._record(outcome, target, started, None)
            outcome.target, outcome.model, outcome.usage = target, reply.model, reply.usage
            return reply
        raise _give_up(route, failures, refusals)

    async def _post(self, call: Call, target: Target, adapter: Adapter, decode: Decode) -> Reply:
        phase = ["total"]
        with upstream_errors(target, phase):
            async with (
                asyncio.timeout(target.total_timeout_s),
                self._session.post(
                    call.url, data=call.body, headers=call.headers, timeout=self._client_timeout(target)
                ) as resp,
            ):
                body = await resp.read()
                if resp.status >= 300:
                    raise adapter.decode_error(resp.status, resp.headers, body, target)
                return decode(body, target)

    # --- streaming ----------------------------------------------------------------------

    async def stream(self, parsed: ParsedChat, route: ModelRoute, outcome: Outcome, sink: StreamSink) -> None:
        """Stream one completion into `sink`; raises before the commit point only."""
        failures: list[UpstreamError] = []
        refusals: list[InvalidRequest] = []
        for target in self.plan(route):
            adapter = self._runtime.adapter(target)
            try:
                call = adapter.build_call(parsed, target)
            except InvalidRequest as exc:
                refusals.append(exc)
                outcome.attempts.append(AttemptRecord(target.id, 0.0, "unsupported", exc.message))
                continue
            outcome.notes.extend(call.notes)
            started = time.perf_counter()
            try:
                await self._stream_once(parsed, target, adapter, call, outcome, sink, started)
            except ClientDisconnected:
                outcome.client_closed = True
                outcome.attempts.append(
                    AttemptRecord(target.id, (time.perf_counter() - started) * 1000, "client_closed")
                )
                raise
            except UpstreamError as exc:
                self._record(outcome, target, started, exc)
                if sink.started:  # past the commit point: end the stream, never cut it
                    outcome.stream_error = exc
                    await sink.write(error_event(exc))
                    return
                if not exc.may_fail_over:
                    raise
                failures.append(exc)
                continue
            self._record(outcome, target, started, None)
            return
        raise _give_up(route, failures, refusals)

    async def _stream_once(
        self,
        parsed: ParsedChat,
        target: Target,
        adapter: Adapter,
        call: Call,
        outcome: Outcome,
        sink: StreamSink,
        started: float,
    ) -> None:
        relay = self._relay(parsed, target, adapter)
        parser = SSEParser()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + target.total_timeout_s
        first = target.first_token_timeout_s
        phase = ["first_token" if first else "total"]
        with upstream_errors(target, phase):
            async with (
                asyncio.timeout_at(min(deadline, loop.time() + first) if first else deadline) as tmo,
                self._session.post(
                    call.url, data=call.body, headers=call.headers, timeout=self._client_timeout(target)
                ) as resp,
            ):
                if resp.status >= 300:
                    raise adapter.decode_error(resp.status, resp.headers, await resp.read(), target)
                if not resp.headers.get("content-type", "").startswith("text/event-stream"):
                    body = await resp.read()
                    # A JSON error with status 200 is still an error; anything else is unreadable.
                    raise adapter.decode_error(500, resp.headers, body, target)

                async def commit() -> None:
                    outcome.ttft_ms = (time.perf_counter() - started) * 1000
                    outcome.target, outcome.model = target, target.model
                    tmo.reschedule(deadline)
                    phase[0] = "total"
                    await sink.start(target)

                async for chunk in resp.content.iter_any():
                    out = relay.feed(parser.feed(chunk))
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
                out += relay.finish()  # raises if the upstream ended without its end marker
                if not sink.started:
                    await commit()
                await sink.write(out)
        outcome.usage = relay.usage
        outcome.finish_reasons = relay.finish_reasons()

    def _relay(self, parsed: ParsedChat, target: Target, adapter: Adapter) -> Relay:
        decoder = adapter.stream_decoder(target)
        if adapter.passthrough_stream:
            return PassthroughRelay(decoder, include_usage=parsed.req.wants_usage, target=target.id)
        encoder = ChunkEncoder(
            completion_id=new_completion_id(),
            created=int(time.time()),
            model=target.model,
            include_usage=parsed.req.wants_usage,
            prompt_estimate=prompt_tokens_estimate(parsed),
        )
        return TranslatingRelay(decoder, encoder, target=target.id)

    @staticmethod
    def _record(outcome: Outcome, target: Target, started: float, exc: UpstreamError | None) -> None:
        latency_ms = (time.perf_counter() - started) * 1000
        if exc is None:
            outcome.attempts.append(AttemptRecord(target.id, latency_ms))
        else:
            outcome.attempts.append(
                AttemptRecord(target.id, latency_ms, exc.failure_class.value, exc.message)
            )




