"""The attempt loop: walk the router's plan until a target answers, within timeouts, limits,
the request deadline and the retry budget; record every attempt in health and the ledger.

Before the first byte reaches the client a failed attempt fails over to the next target;
after it (the commit point) the stream ends with an OpenAI-shaped error event and
`data: [DONE]`. The pieces: `walk` (a request's state and how it ends), `hedge` (racing
targets), `bounds` (an attempt's deadlines and error mapping), `send` (the upstream call,
unary or streamed), `spans` (tracing); this module holds the loop and each attempt's
bookkeeping (health, limits, shared leases, the attempt record).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, TypeVar

from aiogw.accounting.ledger import Ledger, charge
from aiogw.adapters._base import Adapter, Target
from aiogw.admission.limits import Limiter, LimitExceeded, Reservation
from aiogw.attempts.gate import _AttemptFailed, _FailedAfterCommit, _Gate, _LostRace
from aiogw.attempts.hedge import run_hedged
from aiogw.attempts.outcome import NO_CONTROL, AttemptRecord, ClientDisconnected, Control, Outcome, StreamSink
from aiogw.attempts.send import Sender
from aiogw.attempts.spans import end_span, start_span
from aiogw.attempts.walk import Attempt, Walk, build_call, embedding_tokens_estimate, give_up, new_walk, retry_pause
from aiogw.errors import FailureClass, InvalidRequest, UpstreamError
from aiogw.routing import health as health_mod
from aiogw.routing.health import HealthStore, LocalHealth
from aiogw.routing.retry import RetryBudget
from aiogw.routing.router import Router
from aiogw.runtime import ModelRoute, Runtime
from aiogw.telemetry.logs import get_logger
from aiogw.types import CompletionUsage, EmbeddingRequest, ParsedChat, Reply
from aiogw.upstream import http

if TYPE_CHECKING:
    from aiogw.routing.slo import SLOMonitor
    from aiogw.state.shared import SharedState
    from aiogw.telemetry.tracing import Tracing

log = get_logger("aiogw.dispatch")

T = TypeVar("T")


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
        slo: SLOMonitor | None = None,
    ) -> None:
        # Built inside the serving loop. Cached: under Python 3.11 every get_running_loop()
        # makes a getpid() syscall (4% of a request's CPU in py-spy).
        self._loop = asyncio.get_running_loop()
        self._tracing = tracing  # None unless telemetry.otlp_endpoint is set
        self.shared = shared  # None unless state.redis_url is set
        self._runtime = runtime
        self.health: HealthStore = health or LocalHealth(
            runtime.breaker_default, runtime.breaker_policies, configured=runtime.configured
        )
        self.limiter = limiter or Limiter(configured=runtime.configured)
        self.ledger = ledger or Ledger()
        self.router = Router(self.health, slo=slo)
        self.slo = slo  # None unless some model group has an SLO
        self._sender = Sender(client, self._loop, runtime.egress, self.limiter, runtime.adapter, tracing)
        # Per model group; directly addressed models share their account's (clients choose
        # those names, and one outage should not get a fresh budget per name).
        self._budgets: dict[str, RetryBudget] = {}

    # --- the walk -----------------------------------------------------------------------

    async def _walk(self, w: Walk, attempt: Attempt[T]) -> T:
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
            pause = retry_pause(policy, rounds, retryable)
            if pause > policy.backoff_max_ms / 1000:
                break  # a provider asking for a long pause: tell the client (retry-after) instead
            if control.deadline is not None and loop.time() + pause >= control.deadline:
                break
            if not budget.try_spend(loop.time()):
                outcome.notes.append("retry budget exhausted: no further rounds")
                break
            rounds += 1
            await asyncio.sleep(pause)
        raise give_up(w, self.deadline_passed(w))

    async def _run_plan(self, w: Walk, targets: list[Target], attempt: Attempt[T]) -> tuple[bool, T | None]:
        """Try the plan's targets in order (hedged when configured); (True, result) on success."""
        pending = list(targets)
        hedge = w.route.hedge
        gate = _Gate()
        if hedge is None:
            while pending:
                if self.deadline_passed(w):
                    return False, None
                task_args = await self.prepare(w, pending.pop(0), alternatives=bool(pending))
                if task_args is None:
                    continue
                try:
                    return True, await self.attempt(w, gate, attempt, *task_args)
                except _AttemptFailed:
                    continue
            return False, None
        return await run_hedged(w, pending, attempt, hedge, gate, self)

    def deadline_passed(self, w: Walk) -> bool:
        d = w.control.deadline
        return d is not None and self._loop.time() >= d

    async def prepare(
        self, w: Walk, target: Target, *, alternatives: bool = True
    ) -> tuple[Target, Adapter, Reservation] | None:
        """Reserve rate-limit capacity for an attempt, or record why the target is skipped."""
        if w.context_floor is not None and (target.context_window or 0) <= w.context_floor:
            w.outcome.attempts.append(
                AttemptRecord(
                    target.id, 0.0, "context_window", "no larger context window than a target that refused the prompt"
                )
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
            shared = (
                self.shared is not None and bool(target.rpm or target.tpm) and await self.shared.take(target, w.tokens)
            )
            reservation = self.limiter.acquire(target, w.tokens, health_mod.now(), buckets=not shared)
        except LimitExceeded as exc:
            if shared:  # refused here (concurrency, provider-reported): the fleet's units go back
                self.shared.refund(target, w.tokens)  # type: ignore[union-attr]
            w.limited.append(exc)
            w.outcome.attempts.append(AttemptRecord(target.id, 0.0, "rate_limited", f"at its {exc.reason} limit"))
            return None
        return target, self._runtime.adapter(target), reservation

    async def attempt(
        self, w: Walk, gate: _Gate, attempt: Attempt[T], target: Target, adapter: Adapter, reservation: Reservation
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
        span = start_span(self._tracing, w, target) if self._tracing is not None else None
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
            h.end(
                now, probe=probe, failure=failure, latency_ms=latency_ms, ttft_ms=ttft, error=message, counted=counted
            )
            usage = outcome.usage if mine and outcome.target is target else None
            self.limiter.release(reservation, usage.total_tokens if usage else None, now)
            if reservation.shared and self.shared is not None:
                self.shared.settle(target, reservation.tokens, usage.total_tokens if usage else None)
            if record is None and failure is not None:
                record = failure.value
            outcome.attempts.append(AttemptRecord(target.id, latency_ms, record, message))
            if span is not None:
                end_span(self._tracing, span, outcome, target, usage, record, message, mine)  # type: ignore[arg-type]

    # --- non-streaming ------------------------------------------------------------------

    async def complete(
        self, parsed: ParsedChat, route: ModelRoute, outcome: Outcome, control: Control = NO_CONTROL
    ) -> Reply:
        async def attempt(target: Target, adapter: Adapter, gate: _Gate) -> Reply:
            call = build_call(adapter, parsed, target)
            outcome.notes.extend(call.notes)
            reply = await self._sender.post(call, target, adapter, adapter.decode_response, gate, control.deadline)
            return self._won(outcome, target, reply)

        reply = await self._walk(new_walk(route, control, outcome, parsed), attempt)
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

            reply = await self._sender.post(build(req, target), target, adapter, decode_reply, gate, control.deadline)
            return self._won(outcome, target, reply)

        tokens = embedding_tokens_estimate(req)
        walk = Walk(
            route, control, outcome, tokens=tokens, prompt_tokens=tokens, max_output=None, operation="embeddings"
        )
        reply = await self._walk(walk, attempt)
        self._account(outcome, route, reply.usage, "embeddings")
        return reply

    def _account(self, outcome: Outcome, route: ModelRoute, usage: CompletionUsage | None, task: str) -> None:
        target = outcome.target
        if target is not None:
            outcome.cost_usd = charge(
                self.ledger, route.name, target, outcome.model, outcome.tags, usage, outcome.task or task
            )

    async def health_check(self, target: Target, timeout_s: float) -> Reply:
        """One active health check of `target` (see `Sender.health_check`)."""
        return await self._sender.health_check(target, timeout_s)

    # --- streaming ----------------------------------------------------------------------

    async def stream(
        self, parsed: ParsedChat, route: ModelRoute, outcome: Outcome, sink: StreamSink, control: Control = NO_CONTROL
    ) -> None:
        """Stream one completion into `sink`; raises before the commit point only."""

        async def attempt(target: Target, adapter: Adapter, gate: _Gate) -> None:
            call = build_call(adapter, parsed, target)
            outcome.notes.extend(call.notes)
            await self._sender.stream_once(
                parsed, w.prompt_tokens, account, target, adapter, call, outcome, sink, gate, control.deadline
            )

        def account(usage: CompletionUsage | None) -> None:
            self._account(outcome, route, usage, "chat")

        w = new_walk(route, control, outcome, parsed)
        try:
            await self._walk(w, attempt)
        except _FailedAfterCommit:
            pass  # already ended with an error event; the attempt is recorded
