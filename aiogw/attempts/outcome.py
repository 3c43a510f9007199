"""What one request's attempts leave behind (`Outcome`, logged by the server and read by
the ingress for its answer headers), the per-request routing control from `x-aiogw-*`
headers, and the sink a stream is written to: the attempt stage's interface upward."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from aiogw.adapters._base import Adapter, Call, Target
from aiogw.errors import GatewayError
from aiogw.runtime import ModelRoute
from aiogw.streaming.relay import Relay, StreamEncoder
from aiogw.types import CompletionUsage, FinishReason, Reply


class ClientDisconnected(Exception):
    """The client went away while we were writing to it."""


@dataclass(slots=True)
class AttemptRecord:
    target: str
    latency_ms: float
    failure: str | None = None  # FailureClass value (or a skip reason), None on success
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
    stream_error: GatewayError | None = None  # failure after the response started
    client_closed: bool = False  # the client left before the end (never the target's fault)
    notes: list[str] = field(default_factory=list)  # from adapters: dropped parameters etc.
    cost_usd: float | None = None
    tags: str = ""
    task: str = ""  # x-aiogw-task, else the operation ("chat", "embeddings"): the ledger's task
    running: int = 0  # attempts under way (recorded in `attempts` when they end)
    cache_status: str = ""  # the response cache's verdict (hit, miss, bypass...); "" without a cache
    saved_usd: float = 0.0  # a cache hit: what the stored answer cost when it was made
    bucket: str = ""  # the prompt-feature bucket strategy quality used; "" in other groups
    route_reason: str = ""  # why strategy quality chose its target: sent as x-aiogw-route-reason

    @property
    def attempts_header(self) -> str:
        """Attempts started so far: the ended ones that were sent and those under way (a
        stream commits while a hedged attempt it beat is still running)."""
        return str(sum(1 for a in self.attempts if a.failure not in _NOT_SENT) + self.running)


# Attempt records of targets that were never called (skipped before any request left).
_NOT_SENT = frozenset({"unsupported", "rate_limited", "context_window", "probing_elsewhere"})


@dataclass(frozen=True, slots=True)
class Control:
    """Per-request routing control from `x-aiogw-*` headers."""

    deadline: float | None = None  # event-loop time by which the whole request must end
    strategy: str | None = None
    fallbacks: tuple[ModelRoute, ...] = ()
    tags: str = ""
    task: str = ""  # x-aiogw-task: what the request is for (cost allocation, budgets)
    quality_floor: float | None = None  # x-aiogw-quality-floor: strategy quality's floor for this request
    latency_budget_ms: float | None = None  # x-aiogw-latency-budget-ms: strategy quality skips slower targets


NO_CONTROL = Control()


class StreamFormat(Protocol):
    """The client's stream format when it is not OpenAI chunks (another API in: Messages,
    Responses). Every target's stream is then translated, the fast path never applies."""

    def encoder(self, target: Target, prompt_estimate: int) -> StreamEncoder: ...

    def error_event(self, err: GatewayError) -> bytes:
        """The event that ends a stream failing after its first byte."""
        ...


class Native(Protocol):
    """The client's own API, spoken by some targets' upstreams (Messages to Anthropic,
    Responses to OpenAI): those attempts pass the request through and read the answer only
    for usage and errors. The one way a request is passed through: dispatch asks it per
    attempt and translates where `call` says no."""

    def call(self, target: Target, adapter: Adapter) -> Call | None:
        """The pass-through call, or None to translate for this target. Raises
        InvalidRequest when the target can serve the request only natively."""
        ...

    def reply(self, body: bytes, target: Target, adapter: Adapter) -> Reply:
        """A non-streamed upstream answer as it goes to the client (`Reply.native` set to
        the API), with its usage."""
        ...

    def relay(self, target: Target, adapter: Adapter) -> Relay:
        """The stream relay of a pass-through attempt (bytes forwarded, usage read)."""
        ...


class StreamSink(Protocol):
    """Where a stream goes: `start` is the commit point (send headers), then `write`s.
    Both raise `ClientDisconnected` when the client has gone."""

    started: bool

    async def start(self, target: Target) -> None: ...

    async def write(self, data: bytes) -> None: ...


class SinkStage:
    """A stage between a stream and its sink (a `StreamSink` itself): passes everything on;
    a subclass overrides `start` or `write` for what it does on the way (record, store)."""

    __slots__ = ("_sink",)

    def __init__(self, sink: StreamSink) -> None:
        self._sink = sink

    @property
    def started(self) -> bool:
        return self._sink.started

    @started.setter
    def started(self, value: bool) -> None:
        self._sink.started = value

    async def start(self, target: Target) -> None:
        await self._sink.start(target)

    async def write(self, data: bytes) -> None:
        await self._sink.write(data)
