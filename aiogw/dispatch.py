"""The attempt loop: walk the router's plan until a target answers, within timeouts, limits,
the request deadline and the retry budget; record every attempt in health and the ledger.

The only user of the upstream client (`aiogw.upstream_http`), and the one place where its
and asyncio's exceptions become `UpstreamError`s. Before the first byte reaches the client a failed
attempt fails over to the next target; after it (the commit point) the stream ends with an
OpenAI-shaped error event and `data: [DONE]`. With hedging, a second target starts when the
first is slow to its first token, and the first to produce one wins.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Protocol, TypeVar

import msgspec

from aiogw import health as health_mod
from aiogw import upstream_http as http
from aiogw.adapters._base import Adapter, Call, Target, content_text, new_completion_id
from aiogw.config import HedgeConfig, RetryConfig
from aiogw.cost import Ledger, cost_usd, format_usd, price_of
from aiogw.errors import (
    AllAttemptsFailed,
    FailureClass,
    GatewayError,
    GatewayRateLimited,
    InvalidRequest,
    NestedTooDeep,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from aiogw.health import HealthStore, LocalHealth
from aiogw.limits import LimitExceeded, Limiter, Reservation
from aiogw.retry import RetryBudget, backoff_s
from aiogw.router import Router
from aiogw.runtime import ModelRoute, Runtime
from aiogw.streaming.encode import ChunkEncoder, error_event, estimate_tokens
from aiogw.streaming.relay import PassthroughRelay, Relay, TranslatingRelay
from aiogw.streaming.sse import SSEParser
from aiogw.telemetry.logs import get_logger
from aiogw.types import ChatRequest, CompletionUsage, EmbeddingRequest, FinishReason, ParsedChat, Reply

if TYPE_CHECKING:  # the OpenTelemetry SDK is imported only when tracing is configured
    from opentelemetry.trace import Span

    from aiogw.shared_state import SharedState
    from aiogw.telemetry.tracing import Tracing

log = get_logger("aiogw.dispatch")

T = TypeVar("T")
Decode = Callable[[bytes, Target], Reply]

# Output tokens reserved against `tpm` when the request sets no cap.
DEFAULT_OUTPUT_RESERVATION = 512

# An active health check (aiogw/health_check.py): the cheapest real call a chat target
# answers, one word in and at most one token out; each adapter builds it like any request
# (the model name is the target's).
HEALTH_CHECK_BODY = b'{"model":"health-check","messages":[{"role":"user","content":"ping"}],"max_tokens":1}'


@cache
def _health_check_request() -> ParsedChat:
    return ParsedChat(
        req=msgspec.json.decode(HEALTH_CHECK_BODY, type=ChatRequest),
        raw=msgspec.json.decode(HEALTH_CHECK_BODY, type=dict[str, msgspec.Raw]),
    )


def prompt_tokens_estimate(parsed: ParsedChat) -> int:
    """A rough prompt size from the request's text, for limits, routing and missing usage."""
    chars = sum(len(content_text(getattr(m, "content", None))) for m in parsed.req.messages)
    return estimate_tokens(chars)


def _embedding_tokens_estimate(req: EmbeddingRequest) -> int:
    inp = req.input
    if isinstance(inp, str):
        return estimate_tokens(len(inp))
    return sum(estimate_tokens(len(x)) if isinstance(x, str) else (len(x) if isinstance(x, list) else 1) for x in inp)


def _build_call(adapter: Adapter, parsed: ParsedChat, target: Target) -> Call:
    try:
        return adapter.build_call(parsed, target)
    except RecursionError:  # a body nested just under the decoder's limit, re-encoded deeper
        raise NestedTooDeep() from None


class ClientDisconnected(Exception):  # noqa: N818 - an event, not a failure
    """The client went away while we were writing to it."""


class _LostRace(Exception):  # noqa: N818 - an event, not a failure
    """A hedged attempt produced its first token after another attempt had won."""


class _FailedAfterCommit(Exception):  # noqa: N818 - carries the attempt's error past the loop
    def __init__(self, error: UpstreamError) -> None:
        self.error = error


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
    running: int = 0  # attempts under way (recorded in `attempts` when they end)

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


NO_CONTROL = Control()


class StreamSink(Protocol):
    """Where a stream goes: `start` is the commit point (send headers), then `write`s.
    Both raise `ClientDisconnected` when the client has gone."""

    started: bool

    async def start(self, target: Target) -> None: ...

    async def write(self, data: bytes) -> None: ...


class _Gate:
    """Who may commit a response: the first attempt to get there; the others are cancelled."""

    __slots__ = ("owner", "tasks")

    def __init__(self) -> None:
        self.owner: object | None = None
        self.tasks: set[asyncio.Task[object]] = set()

    def claim(self) -> None:
        if not self.tasks:  # no hedge running: nobody to race (and no task lookup to pay for)
            self.owner = self
            return
        me = asyncio.current_task()
        if self.owner is not None and self.owner is not me:
            raise _LostRace
        self.owner = me
        for t in self.tasks:
            if t is not me:
                t.cancel()

    def mine(self) -> bool:
        """Did the running attempt claim the response?"""
        return self.owner is self or (self.owner is not None and self.owner is asyncio.current_task())


class _Bounds:
    """One upstream attempt's boundary: its time limits (first token, then total, capped by
    the request deadline) and the mapping of foreign exceptions to `UpstreamError`s.

    The timer works like `asyncio.timeout_at`, cancelling the task when it expires, but is
    given the loop and task: under Python 3.11 `asyncio.timeout` asks `get_running_loop()`
    (a getpid() syscall each time) on entry and on every reschedule. Moving to the total
    limit after the first token only moves a number; the timer re-arms itself when it
    fires before it. The idle limit works the same way: the response notes when its reader
    began waiting, and the timer, when it fires, re-arms for that time plus the limit (no
    timer per piece)."""

    __slots__ = (
        "_loop", "_target", "_deadline", "_end", "_when", "_phase", "_task", "_cancelling", "_handle", "_fired",
        "_armed", "_watched",
    )  # fmt: skip

    def __init__(self, loop: asyncio.AbstractEventLoop, target: Target, deadline: float | None) -> None:
        self._loop, self._target, self._deadline = loop, target, deadline
        now = loop.time()
        end = now + target.total_timeout_s
        self._end = end if deadline is None else min(end, deadline)
        first = target.first_token_timeout_s
        self._phase = "first_token" if first else "total"
        self._when = min(self._end, now + first) if first else self._end
        self._fired = False
        self._watched: http.Response | None = None  # the body under the idle limit

    def __enter__(self) -> _Bounds:
        task = asyncio.current_task(self._loop)
        assert task is not None
        self._task, self._cancelling = task, task.cancelling()
        self._armed = self._when
        self._handle: asyncio.TimerHandle | None = self._loop.call_at(self._when, self._expire)
        return self

    def first_token(self, body: http.Response | None = None) -> None:
        """The first token arrived (a unary call: the response started): from now on the
        total limit applies, and the idle limit while the rest of `body` arrives."""
        self._phase, self._when = "total", self._end
        idle = self._target.idle_timeout_s
        if idle and body is not None and not body.arrived:
            self._watched = body
            when = self._loop.time() + idle
            if when < self._armed and self._handle is not None:  # set for later: bring it forward
                self._handle.cancel()
                self._armed = when
                self._handle = self._loop.call_at(when, self._expire)

    def _expire(self) -> None:
        now, when, body = self._loop.time(), self._when, self._watched
        if body is not None:
            # Idle time is time spent waiting for the upstream; time spent writing to a slow
            # client is not the upstream's.
            since = body.waiting_since
            when = min(when, (now if since is None else since) + self._target.idle_timeout_s)  # type: ignore[operator]
        if now < when:  # moved later since the timer was set
            self._armed = when
            self._handle = self._loop.call_at(when, self._expire)
            return
        if when < self._when:
            self._phase = "idle"
        self._handle = None
        self._fired = True
        self._task.cancel()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if self._handle is not None:
            self._handle.cancel()
        if self._fired and self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
            exc = TimeoutError()  # ours, not an outer cancellation
        if exc is None or isinstance(exc, UpstreamError | ClientDisconnected | _LostRace):
            return
        target = self._target
        if isinstance(exc, TimeoutError):
            if self._deadline is not None and self._loop.time() >= self._deadline - 0.001:
                raise UpstreamTimeout(
                    "the request deadline (x-aiogw-timeout-ms) passed", phase="deadline", target=target.id
                ) from None
            # The client's connect timeout is a TimeoutError too; ours carry the phase.
            p = "connect" if isinstance(exc, http.ConnectTimeout) else self._phase
            limit = {
                "connect": target.connect_timeout_s,
                "first_token": target.first_token_timeout_s,
                "idle": target.idle_timeout_s,
                "total": target.total_timeout_s,
            }.get(p)
            what = {
                "connect": "no connection", "first_token": "no first token", "idle": "idle: no data", "total": "not finished",
            }[p]  # fmt: skip
            raise UpstreamTimeout(
                f"{what} within {limit:g} s" if limit else f"{what} before the request deadline",
                phase=p,
                target=target.id,
            ) from None
        if isinstance(exc, http.CannotConnect):
            cause = os.strerror(exc.cause.errno) if exc.cause.errno else str(exc.cause) or type(exc.cause).__name__
            raise UpstreamConnectError(f"cannot connect to {exc.host}:{exc.port} ({cause})", target=target.id) from None
        if isinstance(exc, http.Disconnected):
            if exc.started:
                raise UpstreamProtocolError(str(exc), target=target.id) from None
            raise UpstreamConnectError(str(exc), target=target.id) from None
        if isinstance(exc, http.ProtocolError):
            raise UpstreamProtocolError(str(exc), target=target.id) from None
        if isinstance(exc, http.UnsafeRequest):  # nothing was sent: a config (base_url, headers) to fix
            raise UpstreamProtocolError(f"not sent: {exc}", target=target.id) from None
        if isinstance(exc, OSError):
            raise UpstreamConnectError(f"{type(exc).__name__}: {exc}", target=target.id) from None


# One attempt at one target: (target, adapter, gate) -> result. Raises InvalidRequest when
# the target cannot honour the request (before anything is sent), UpstreamError on failure.
Attempt = Callable[[Target, Adapter, _Gate], Awaitable[T]]


@dataclass(slots=True)
class _Walk:
    """The mutable state of one request's walk through its plan."""

    route: ModelRoute
    control: Control
    outcome: Outcome
    tokens: int  # reserved against tpm
    prompt_tokens: int
    max_output: int | None
    operation: str = "chat"  # the GenAI operation name on attempt spans
    failures: list[UpstreamError] = field(default_factory=list)
    refusals: list[InvalidRequest] = field(default_factory=list)
    limited: list[LimitExceeded] = field(default_factory=list)
    # After a provider's context-length error, only targets with a larger configured window.
    context_floor: int | None = None


class Dispatcher:
    def __init__(
        self,
        client: http.Client,
        runtime: Runtime,
        *,
        health: HealthStore | None = None,
        limiter: Limiter | None = None,
        ledger: Ledger | None = None,
        tracing: Tracing | None = None,
        shared: SharedState | None = None,
    ) -> None:
        self._client = client
        # Built inside the serving loop. Cached: under Python 3.11 every get_running_loop()
        # makes a getpid() syscall (4% of a request's CPU in py-spy).
        self._loop = asyncio.get_running_loop()
        self._tracing = tracing  # None unless telemetry.otlp_endpoint is set
        self.shared = shared  # None unless state.redis_url is set
        self._runtime = runtime
        self._egress = runtime.egress  # accounts with their own TLS settings or a proxy
        self.health: HealthStore = health or LocalHealth(
            runtime.breaker_default, runtime.breaker_policies, configured=runtime.configured
        )
        self.limiter = limiter or Limiter(configured=runtime.configured)
        self.ledger = ledger or Ledger()
        self.router = Router(self.health)
        # Per model group; directly addressed models share their account's (clients choose
        # those names, and one outage should not get a fresh budget per name).
        self._budgets: dict[str, RetryBudget] = {}

    # --- the walk -----------------------------------------------------------------------

    async def _walk(self, w: _Walk, attempt: Attempt[T]) -> T:
        route, control, outcome = w.route, w.control, w.outcome
        loop = self._loop
        policy = route.retry
        key = route.name if route.name in self._runtime.routes else route.targets[0].provider + "/*"
        budget = self._budgets.get(key)
        if budget is None:
            budget = self._budgets[key] = RetryBudget(policy.budget_ratio, policy.budget_min_per_s, loop.time())
        budget.on_request(loop.time())
        rounds = 0
        while True:
            plan = self.router.plan(
                route,
                now=health_mod.now(),
                strategy=control.strategy,
                fallbacks=control.fallbacks,
                prompt_tokens=w.prompt_tokens,
                max_output_tokens=w.max_output,
            )
            if rounds == 0:
                for skip in plan.skipped:
                    outcome.attempts.append(AttemptRecord(skip.target, 0.0, "context_window", skip.reason))
            found, result = await self._run_plan(w, plan.targets, attempt)
            if found:
                return result  # type: ignore[return-value]
            retryable = [f for f in w.failures if f.may_fail_over and f.failure_class is not FailureClass.CREDENTIAL]
            if not retryable or rounds >= policy.max_rounds:
                break
            pause = self._retry_pause(policy, rounds, retryable)
            if pause > policy.backoff_max_ms / 1000:
                break  # a provider asking for a long pause: tell the client (retry-after) instead
            if control.deadline is not None and loop.time() + pause >= control.deadline:
                break
            if not budget.try_spend(loop.time()):
                outcome.notes.append("retry budget exhausted: no further rounds")
                break
            rounds += 1
            await asyncio.sleep(pause)
        raise self._give_up(w)

    @staticmethod
    def _retry_pause(policy: RetryConfig, rounds: int, failures: list[UpstreamError]) -> float:
        hinted = [f.retry_after_s for f in failures if f.retry_after_s is not None]
        if hinted:  # the provider said when: wait that long (and no shorter)
            return max(min(hinted), backoff_s(policy, rounds))
        return backoff_s(policy, rounds)

    def _give_up(self, w: _Walk) -> GatewayError:
        if self._deadline_passed(w) and not any(
            isinstance(f, UpstreamTimeout) and f.phase == "deadline" for f in w.failures
        ):
            w.failures.append(
                UpstreamTimeout("the request deadline (x-aiogw-timeout-ms) passed", phase="deadline", target="")
            )
        if w.refusals and not w.failures and not w.limited:
            return w.refusals[0]  # no target could take the request as asked
        too_small = [a for a in w.outcome.attempts if a.failure == "context_window"]
        if too_small and len(too_small) == len(w.outcome.attempts):
            return InvalidRequest(
                f"The request (~{w.prompt_tokens} prompt tokens + {w.max_output or 0} max tokens) exceeds the "
                f"context window of every target of model '{w.route.name}'. Shorten the messages or lower max_tokens.",
                code="context_length_exceeded",
                param="messages",
            )
        if w.failures and all(f.failure_class is FailureClass.CONTEXT_LENGTH for f in w.failures):
            return w.failures[0]  # the caller's prompt is too long for every target: a 400
        if w.limited and not w.failures:
            wait = min(x.retry_after_s for x in w.limited)
            reasons = ", ".join(sorted({f"{x.target_id} ({x.reason})" for x in w.limited}))
            return GatewayRateLimited(
                f"Every target of model '{w.route.name}' is at its rate limit: {reasons}. Retry after {wait:.1f} s.",
                retry_after_s=max(1.0, wait),
            )
        skipped = tuple(f"{x.target_id}: skipped, at its {x.reason} limit" for x in w.limited)
        return AllAttemptsFailed(tuple(w.failures), model=w.route.name, skipped=skipped)

    async def _run_plan(self, w: _Walk, targets: list[Target], attempt: Attempt[T]) -> tuple[bool, T | None]:
        """Try the plan's targets in order (hedged when configured); (True, result) on success."""
        pending = list(targets)
        hedge = w.route.hedge
        gate = _Gate()
        if hedge is None:
            while pending:
                if self._deadline_passed(w):
                    return False, None
                task_args = await self._prepare(w, pending.pop(0), alternatives=bool(pending))
                if task_args is None:
                    continue
                try:
                    return True, await self._attempt(w, gate, attempt, *task_args)
                except _AttemptFailed:
                    continue
            return False, None
        return await self._run_hedged(w, pending, attempt, hedge, gate)

    async def _run_hedged(
        self, w: _Walk, pending: list[Target], attempt: Attempt[T], hedge: HedgeConfig, gate: _Gate
    ) -> tuple[bool, T | None]:
        running: dict[asyncio.Task[T], Target] = {}

        async def launch() -> bool:
            while pending:
                prepared = await self._prepare(w, pending.pop(0), alternatives=bool(pending) or bool(running))
                if prepared is not None:
                    task = asyncio.ensure_future(self._attempt(w, gate, attempt, *prepared))
                    gate.tasks.add(task)  # type: ignore[arg-type]
                    running[task] = prepared[0]
                    return True
            return False

        try:
            while True:
                if not running and (self._deadline_passed(w) or not await launch()):
                    return False, None
                delay = None
                if pending and gate.owner is None and len(running) < hedge.max_parallel:
                    delay = self._hedge_delay(hedge, next(iter(running.values())))
                done, _ = await asyncio.wait(running, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
                if not done:  # no first token in time: start the next target beside it
                    if await launch():
                        w.outcome.notes.append(f"hedged: started {list(running.values())[-1].id}")
                    continue
                for task in done:
                    running.pop(task)
                    gate.tasks.discard(task)  # type: ignore[arg-type]
                    if task.cancelled():
                        continue
                    exc = task.exception()
                    if exc is None:
                        return True, task.result()
                    if isinstance(exc, _AttemptFailed | _LostRace):
                        continue
                    raise exc
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    def _hedge_delay(self, hedge: HedgeConfig, target: Target) -> float:
        if hedge.delay_ms == "p95":
            p95 = self.health.get(target.id).stats(health_mod.now()).ttft_p95_ms
            return (p95 or 1000.0) / 1000
        return hedge.delay_ms / 1000

    def _deadline_passed(self, w: _Walk) -> bool:
        d = w.control.deadline
        return d is not None and self._loop.time() >= d

    async def _prepare(
        self, w: _Walk, target: Target, *, alternatives: bool = True
    ) -> tuple[Target, Adapter, Reservation] | None:
        """Reserve rate-limit capacity for an attempt, or record why the target is skipped."""
        if w.context_floor is not None and (target.context_window or 0) <= w.context_floor:
            w.outcome.attempts.append(
                AttemptRecord(target.id, 0.0, "context_window", "no larger context window than a target that refused the prompt")
            )
            return None
        h = self.health.get(target.id) if self.shared is not None else None
        # (A target watched by health checks sends no user probes: the lease is the prober's.)
        if h is not None and h.state == "half_open" and not h.checked and alternatives:
            # One probe for the fleet: while another replica holds the probe lease, go to the
            # next target (a last resort is still tried, as without shared state).
            claimed = await self.shared.claim_probe(target.id, h.policy.open_s)  # type: ignore[union-attr]
            # Re-checked after the round trip: a request of ours may have taken the probe slot.
            if not claimed or not h.available(health_mod.now()):
                why = "another replica is sending the probe" if not claimed else "its probe is in flight"
                w.outcome.attempts.append(AttemptRecord(target.id, 0.0, "probing_elsewhere", f"half-open; {why}"))
                return None
        shared = False
        try:
            # With shared state, rpm/tpm come from the fleet's buckets (one Redis round trip,
            # only for targets that have such limits); local buckets when Redis is away.
            shared = self.shared is not None and bool(target.rpm or target.tpm) and await self.shared.take(target, w.tokens)
            reservation = self.limiter.acquire(target, w.tokens, health_mod.now(), buckets=not shared)
        except LimitExceeded as exc:
            if shared:  # refused here (concurrency, provider-reported): the fleet's units go back
                self.shared.refund(target, w.tokens)  # type: ignore[union-attr]
            w.limited.append(exc)
            w.outcome.attempts.append(
                AttemptRecord(target.id, 0.0, "rate_limited", f"at its {exc.reason} limit")
            )
            return None
        return target, self._runtime.adapter(target), reservation

    async def _attempt(
        self, w: _Walk, gate: _Gate, attempt: Attempt[T], target: Target, adapter: Adapter, reservation: Reservation
    ) -> T:
        """One attempt with its bookkeeping: health, limits, the attempt record."""
        outcome = w.outcome
        h = self.health.get(target.id)
        probe = h.begin(health_mod.now())
        started = time.perf_counter()
        failure: FailureClass | None = None
        message: str | None = None
        counted = True
        record: str | None = None
        span = self._start_span(w, target) if self._tracing is not None else None
        outcome.running += 1
        try:
            return await attempt(target, adapter, gate)
        except InvalidRequest as exc:  # this target cannot honour the request as asked
            counted, record, message = False, "unsupported", exc.message
            w.refusals.append(exc)
            raise _AttemptFailed from None
        except _FailedAfterCommit as exc:
            failure, message = exc.error.failure_class, exc.error.message
            outcome.stream_error = exc.error
            raise
        except UpstreamError as exc:
            failure, message = exc.failure_class, exc.message
            if exc.failure_class is FailureClass.CREDENTIAL:
                log.error("target.misconfigured", target=target.id, error=exc.message)
            if exc.failure_class is FailureClass.CONTEXT_LENGTH and gate.owner is None:
                # The prompt is too long here; a target with a larger window may still take it.
                w.context_floor = max(w.context_floor or 0, target.context_window or 0)
                w.failures.append(exc)
                raise _AttemptFailed from None
            if gate.owner is not None and not gate.mine():
                raise _LostRace from None  # another hedged attempt already answered
            if not exc.may_fail_over:
                raise  # the caller's own fault, returned as it is
            w.failures.append(exc)
            raise _AttemptFailed from None
        except _LostRace:
            counted, record = False, "hedge_lost"
            raise
        except (asyncio.CancelledError, ClientDisconnected):
            counted = False
            record = "hedge_lost" if gate.owner is not None and not gate.mine() else "client_closed"
            raise
        finally:
            outcome.running -= 1
            latency_ms = (time.perf_counter() - started) * 1000
            now = health_mod.now()
            mine = failure is None and counted and record is None
            ttft = outcome.ttft_ms if mine else None
            h.end(now, probe=probe, failure=failure, latency_ms=latency_ms, ttft_ms=ttft, error=message, counted=counted)
            usage = outcome.usage if mine and outcome.target is target else None
            self.limiter.release(reservation, usage.total_tokens if usage else None, now)
            if reservation.shared and self.shared is not None:
                self.shared.settle(target, reservation.tokens, usage.total_tokens if usage else None)
            if record is None and failure is not None:
                record = failure.value
            outcome.attempts.append(AttemptRecord(target.id, latency_ms, record, message))
            if span is not None:
                self._end_span(span, outcome, target, usage, record, message, mine)

    def _start_span(self, w: _Walk, target: Target) -> tuple[Span, object]:
        assert self._tracing is not None
        sent = [a for a in w.outcome.attempts if a.failure not in _NOT_SENT]
        return self._tracing.start_attempt(
            provider_type=target.type,
            provider=target.provider,
            model=target.model,
            url=target.base_url,
            operation=w.operation,
            attempt=len(sent) + 1,
            failover_reason=sent[-1].failure if sent else None,
        )

    def _end_span(
        self, span: tuple[Span, object], outcome: Outcome, target: Target, usage: CompletionUsage | None,
        record: str | None, message: str | None, mine: bool,
    ) -> None:
        assert self._tracing is not None
        attrs = self._tracing.usage_attributes(usage, outcome.finish_reasons if mine else None, outcome.model if mine else None)
        attrs["aiogw.target"] = target.id
        if mine and outcome.cost_usd is not None:
            attrs["aiogw.cost_usd"] = outcome.cost_usd
        if mine and outcome.ttft_ms is not None:
            attrs["aiogw.ttft_ms"] = round(outcome.ttft_ms, 2)
        self._tracing.end_attempt(*span, record, message, attrs)

    # --- non-streaming ------------------------------------------------------------------

    async def complete(
        self, parsed: ParsedChat, route: ModelRoute, outcome: Outcome, control: Control = NO_CONTROL
    ) -> Reply:
        async def attempt(target: Target, adapter: Adapter, gate: _Gate) -> Reply:
            call = _build_call(adapter, parsed, target)
            outcome.notes.extend(call.notes)
            reply = await self._post(call, target, adapter, adapter.decode_response, gate, control.deadline)
            return self._won(outcome, target, reply)

        reply = await self._walk(self._new_walk(route, control, outcome, parsed), attempt)
        self._account(outcome, route, reply.usage, "chat")
        return reply

    @staticmethod
    def _won(outcome: Outcome, target: Target, reply: Reply) -> Reply:
        outcome.target, outcome.model, outcome.usage = target, reply.model or target.model, reply.usage
        if reply.finish_reasons:
            outcome.finish_reasons = list(reply.finish_reasons)  # type: ignore[arg-type]
        return reply

    async def embed(
        self, req: EmbeddingRequest, route: ModelRoute, outcome: Outcome, control: Control = NO_CONTROL
    ) -> Reply:
        async def attempt(target: Target, adapter: Adapter, gate: _Gate) -> Reply:
            build, decode = adapter.build_embeddings_call, adapter.decode_embeddings
            if build is None or decode is None:
                raise InvalidRequest(
                    f"{target.id} cannot embed: provider type '{adapter.name}' has no embeddings API.",
                    code="unsupported_model",
                    param="model",
                )

            def decode_reply(body: bytes, t: Target) -> Reply:
                return Reply(body=decode(body, t, req), model=t.model)

            reply = await self._post(build(req, target), target, adapter, decode_reply, gate, control.deadline)
            return self._won(outcome, target, reply)

        tokens = _embedding_tokens_estimate(req)
        walk = _Walk(route, control, outcome, tokens=tokens, prompt_tokens=tokens, max_output=None, operation="embeddings")
        reply = await self._walk(walk, attempt)
        self._account(outcome, route, reply.usage, "embeddings")
        return reply

    def _new_walk(self, route: ModelRoute, control: Control, outcome: Outcome, parsed: ParsedChat) -> _Walk:
        prompt = prompt_tokens_estimate(parsed)
        cap = parsed.req.output_cap
        outcome.tags = control.tags
        return _Walk(
            route, control, outcome, tokens=prompt + (cap or DEFAULT_OUTPUT_RESERVATION), prompt_tokens=prompt, max_output=cap
        )

    def _account(self, outcome: Outcome, route: ModelRoute, usage: CompletionUsage | None, task: str) -> None:
        target = outcome.target
        if target is None:
            return
        if usage is not None:
            price = price_of(target)
            if price is not None:
                outcome.cost_usd = cost_usd(usage, price)
        self.ledger.add(
            model=route.name,
            provider=target.provider,
            upstream_model=outcome.model or target.model,
            task=task,
            tags=outcome.tags,
            usage=usage,
            cost=outcome.cost_usd,
        )

    def _observe_limits(self, target: Target, adapter: Adapter, headers: Mapping[str, str]) -> None:
        if adapter.rate_limits is not None:
            info = adapter.rate_limits(headers)  # type: ignore[arg-type]
            if info is not None:
                self.limiter.observe(target, info, health_mod.now())

    def _headers(self, call: Call) -> dict[str, str]:
        # With tracing on, the attempt's span goes upstream as W3C traceparent.
        return call.headers if self._tracing is None else self._tracing.inject(call.headers)

    async def _post(
        self, call: Call, target: Target, adapter: Adapter, decode: Decode, gate: _Gate, deadline: float | None
    ) -> Reply:
        # For a unary call the first-token limit runs until the response starts.
        with _Bounds(self._loop, target, deadline) as bounds:
            async with self._client.post(
                call.url, call.body, self._headers(call), target.connect_timeout_s, self._egress.get(target.provider)
            ) as resp:
                bounds.first_token(resp)
                body = await resp.read()
                self._observe_limits(target, adapter, resp.headers)
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
        adapter = self._runtime.adapter(target)
        call = adapter.build_call(_health_check_request(), target)
        deadline = self._loop.time() + timeout_s
        try:
            return await self._post(call, target, adapter, adapter.decode_response, _Gate(), deadline)
        except UpstreamTimeout as exc:
            if exc.phase != "deadline":
                raise
            raise UpstreamTimeout(f"no answer within the health check's {timeout_s:g} s", phase="total", target=target.id) from None

    # --- streaming ----------------------------------------------------------------------

    async def stream(
        self, parsed: ParsedChat, route: ModelRoute, outcome: Outcome, sink: StreamSink, control: Control = NO_CONTROL
    ) -> None:
        """Stream one completion into `sink`; raises before the commit point only."""

        async def attempt(target: Target, adapter: Adapter, gate: _Gate) -> None:
            call = _build_call(adapter, parsed, target)
            outcome.notes.extend(call.notes)
            await self._stream_once(parsed, route, target, adapter, call, outcome, sink, gate, control.deadline)

        try:
            await self._walk(self._new_walk(route, control, outcome, parsed), attempt)
        except _FailedAfterCommit:
            pass  # already ended with an error event; the attempt is recorded

    async def _stream_once(
        self,
        parsed: ParsedChat,
        route: ModelRoute,
        target: Target,
        adapter: Adapter,
        call: Call,
        outcome: Outcome,
        sink: StreamSink,
        gate: _Gate,
        deadline: float | None,
    ) -> None:
        started = time.perf_counter()
        relay = self._relay(parsed, target, adapter, route)
        parser = SSEParser()
        try:
            with _Bounds(self._loop, target, deadline) as bounds:
                async with self._client.post(
                    call.url, call.body, self._headers(call), target.connect_timeout_s, self._egress.get(target.provider)
                ) as resp:
                    self._observe_limits(target, adapter, resp.headers)
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

                    async for chunk in resp.iter_any():
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
                    outcome.usage = relay.usage
                    self._account(outcome, route, relay.usage, "chat")
                    out += relay.finish()  # raises if the upstream ended without its end marker
                    if not sink.started:
                        await commit()
                    await sink.write(out)
        except UpstreamError as exc:
            if sink.started and gate.mine():
                # Past the commit point: end the stream, never cut it.
                await sink.write(error_event(exc))
                raise _FailedAfterCommit(exc) from None
            raise
        outcome.finish_reasons = relay.finish_reasons()

    def _relay(self, parsed: ParsedChat, target: Target, adapter: Adapter, route: ModelRoute) -> Relay:
        decoder = adapter.stream_decoder(target)
        price = price_of(target)

        def cost_field(usage: CompletionUsage) -> bytes:
            # The cost rides in the usage chunk as an extension (OpenAI's SDK keeps extra fields).
            return b'"cost_usd":' + format_usd(cost_usd(usage, price)).encode() if price is not None else b""

        if adapter.passthrough_stream:
            return PassthroughRelay(decoder, include_usage=parsed.req.wants_usage, target=target.id, usage_extra=cost_field)
        encoder = ChunkEncoder(
            completion_id=new_completion_id(),
            created=int(time.time()),
            model=target.model,
            include_usage=parsed.req.wants_usage,
            prompt_estimate=prompt_tokens_estimate(parsed),
            usage_extra=cost_field,
        )
        return TranslatingRelay(decoder, encoder, target=target.id)


class _AttemptFailed(Exception):  # noqa: N818 - control flow inside the walk
    """An attempt failed in a way that lets the walk go on (recorded already)."""
