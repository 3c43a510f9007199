"""Each attempt's bookkeeping, around whatever the attempt sends: before it, the shared probe
lease and the rate limits it reserves (or the record of why the target is skipped); after
it, health, the limits released, shared leases settled, the attempt record and its span;
and once the walk has its answer, the request's charge to the ledger (`account`, the one
place a request is charged)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, TypeVar

from aiogw.accounting.ledger import Ledger, charge
from aiogw.adapters._base import Adapter, Target
from aiogw.admission.limits import Limiter, LimitExceeded, Reservation
from aiogw.attempts.gate import _AttemptFailed, _FailedAfterCommit, _Gate, _LostRace
from aiogw.attempts.outcome import AttemptRecord, ClientDisconnected, Outcome
from aiogw.attempts.spans import end_span, start_span
from aiogw.attempts.walk import Attempt, Walk
from aiogw.errors import FailureClass, InvalidRequest, UpstreamError
from aiogw.routing import health as health_mod
from aiogw.routing.health import HealthStore, LocalHealth
from aiogw.routing.token_ratio import TokenRatios
from aiogw.runtime import ModelRoute, Runtime
from aiogw.telemetry.logs import get_logger
from aiogw.types import CompletionUsage

if TYPE_CHECKING:
    from aiogw.state.shared import SharedState
    from aiogw.telemetry.tracing import Tracing

log = get_logger("aiogw.dispatch")

T = TypeVar("T")


class Bookkeeper:
    """What every attempt reserves, records and releases; one per dispatcher."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        health: HealthStore | None = None,
        limiter: Limiter | None = None,
        ledger: Ledger | None = None,
        tracing: Tracing | None = None,
        shared: SharedState | None = None,
    ) -> None:
        self._runtime = runtime
        self.tracing = tracing  # None unless telemetry.otlp_endpoint is set
        self.shared = shared  # None unless state.redis_url is set
        self.health: HealthStore = health or LocalHealth(
            runtime.breaker_default, runtime.breaker_policies, configured=runtime.configured
        )
        self.limiter = limiter or Limiter(configured=runtime.configured)
        self.ledger = ledger or Ledger()
        # Per target, its provider's prompt tokens per token of the local estimate.
        self.ratios = TokenRatios(lambda t: runtime.adapter(t).token_ratio, configured=runtime.configured)

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
        # The prompt counted in this target's tokens (the output part is a cap: the same).
        tokens = w.tokens - w.prompt_tokens + self.ratios.scale(target, w.prompt_tokens)
        try:
            # With shared state, rpm/tpm come from the fleet's buckets (one Redis round trip,
            # only for targets that have such limits); local buckets when Redis is away.
            shared = (
                self.shared is not None and bool(target.rpm or target.tpm) and await self.shared.take(target, tokens)
            )
            reservation = self.limiter.acquire(target, tokens, health_mod.now(), buckets=not shared)
        except LimitExceeded as exc:
            if shared:  # refused here (concurrency, provider-reported): the fleet's units go back
                self.shared.refund(target, tokens)  # type: ignore[union-attr]
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
        span = start_span(self.tracing, w, target) if self.tracing is not None else None
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
                end_span(self.tracing, span, outcome, target, usage, record, message, mine)  # type: ignore[arg-type]

    def account(
        self, outcome: Outcome, route: ModelRoute, usage: CompletionUsage | None, task: str, prompt_estimate: int = 0
    ) -> None:
        """The request's charge for the answer it got (streams call this when they end);
        a chat's reported prompt tokens against `prompt_estimate` teach the target's ratio."""
        target = outcome.target
        if target is not None:
            if prompt_estimate and usage is not None and usage.estimated is not True:
                self.ratios.get(target).observe(usage.prompt_tokens, prompt_estimate)
            outcome.cost_usd = charge(
                self.ledger, route.name, target, outcome.model, outcome.tags, usage, outcome.task or task
            )
