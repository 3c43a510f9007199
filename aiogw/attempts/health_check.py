"""Active health checks: while a target's breaker is open or half-open, the cheapest real
call every `interval_s` (a one-word chat with `max_tokens: 1`, built by the target's
adapter). Passing checks close the breaker, and with checks on user requests are never sent
as half-open probes (`TargetHealth.checked`), so recovery spends no user request.

Opt-in per model group or as the routing default (`health_check`); without it nothing here
runs, nor is it imported. One loop per checked target, idle while its breaker is closed.
With shared state one replica checks for the fleet: it holds the target's probe lease (the
lease user probes take without checks) and renews it while it checks; the other replicas
skip, and adopt the closing it publishes.

A check the target refuses as a bad request (400, context length) says nothing about its
health, and would otherwise keep its breaker open for good: checks stop for that target
with a loud line and user probes take over again. Each check is costed in the ledger and
the metrics under the tag `aiogw=health-check` (with the target's id as the model)."""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from aiogw.accounting.cost import cost_usd
from aiogw.adapters._base import Target
from aiogw.config import HealthCheckConfig
from aiogw.errors import InvalidRequest, UpstreamError
from aiogw.routing.health import NOT_THE_TARGETS_FAULT, BreakerState
from aiogw.routing.health import now as health_now
from aiogw.runtime import Runtime
from aiogw.supervise import supervise
from aiogw.telemetry.logs import get_logger
from aiogw.types import Reply

if TYPE_CHECKING:
    from aiogw.attempts.dispatcher import Dispatcher
    from aiogw.telemetry.metrics import GatewayMetrics

log = get_logger("aiogw.attempts.health_check")

TAGS = "aiogw=health-check"
# The prober's lease on a target spans this many intervals. The holder renews it at most
# every other interval (claims are remembered for half a lease), so a slow loop turn does
# not hand the target to another replica; a holder that is gone is replaced within a lease.
LEASE_INTERVALS = 4


@dataclass(slots=True)
class CheckState:
    """One target's checks as /v1/gateway/health shows them. Times are wall clock."""

    config: HealthCheckConfig
    enabled: bool = True  # False once the target refused a check (user probes again)
    checks: int = 0
    last_at: float | None = None
    last_outcome: str | None = None  # "ok", a failure class, or "refused"
    last_error: str | None = None
    last_latency_ms: float | None = None
    next_look: float | None = None  # when the loop next looks at the breaker
    prober: Literal["this replica", "another replica"] | None = None


class HealthChecker:
    """The active health checks of one process: `start` once the dispatcher (and shared
    state) are up, `close` before they go."""

    def __init__(self, dispatcher: Dispatcher, runtime: Runtime, metrics: GatewayMetrics | None = None) -> None:
        self._dispatcher = dispatcher
        self._runtime = runtime
        self._metrics = metrics
        self.states: dict[str, CheckState] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for tid, (target, cfg) in self._runtime.health_checks.items():
            st = self.states[tid] = CheckState(cfg)
            self._dispatcher.health.get(tid).checked = True
            watch = functools.partial(self._watch, target, st)
            self._tasks.append(asyncio.create_task(supervise(tid, watch, log, "health_check.loop_died", target=tid)))
        log.info("health_check.started", targets=sorted(self.states))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)  # bounded: a check in flight is cancelled
        for tid in self.states:
            self._dispatcher.health.get(tid).checked = False

    def report(self, target_id: str, breaker: BreakerState) -> dict[str, Any] | None:
        """The target's checks for /v1/gateway/health (None: not configured for it)."""
        st = self.states.get(target_id)
        if st is None:
            return None
        active = st.enabled and breaker != "closed"
        return {
            "enabled": st.enabled,
            "interval_s": st.config.interval_s,
            "timeout_s": st.config.timeout_s,
            "active": active,  # checking now (the breaker is open or half-open)
            "prober": st.prober if active else None,
            "checks": st.checks,
            "last_at": round(st.last_at, 3) if st.last_at is not None else None,
            "last_outcome": st.last_outcome,
            "last_error": st.last_error,
            "last_latency_ms": st.last_latency_ms,
            "next_at": round(st.next_look, 3) if active and st.next_look is not None else None,
        }

    async def _watch(self, target: Target, st: CheckState) -> None:
        interval = st.config.interval_s
        health = self._dispatcher.health
        while st.enabled:
            st.next_look = time.time() + interval
            await asyncio.sleep(interval)
            h = health.get(target.id)
            h.checked = True  # again, in case the store made a new entry for the target
            if h.state == "closed":
                continue
            shared = self._dispatcher.shared
            if shared is not None and not await shared.claim_probe(target.id, LEASE_INTERVALS * interval):
                st.prober = "another replica"
                continue
            st.prober = "this replica"
            await self.check(target, st)

    async def check(self, target: Target, st: CheckState) -> str:
        """One check; its result drives the breaker. Returns the outcome."""
        started = time.perf_counter()
        reply: Reply | None = None
        error: str | None = None
        try:
            reply = await self._dispatcher.health_check(target, st.config.timeout_s)
            outcome = "ok"
        except InvalidRequest as exc:  # the adapter would not build it
            outcome, error = "refused", exc.message
        except UpstreamError as exc:
            refused = exc.failure_class in NOT_THE_TARGETS_FAULT
            outcome, error = ("refused" if refused else exc.failure_class.value), exc.message
        latency_ms = round((time.perf_counter() - started) * 1000, 2)
        h = self._dispatcher.health.get(target.id)
        before = h.state
        now = health_now()
        if outcome == "ok":
            h.check_passed(now)
        elif outcome != "refused":
            h.check_failed(now, f"{outcome}: {error}")
        cost = self._account(target, reply, outcome)
        previous = st.last_outcome
        st.checks += 1
        st.last_at, st.last_outcome, st.last_error, st.last_latency_ms = time.time(), outcome, error, latency_ms
        if outcome == "refused":
            st.enabled = False
            h.checked = False  # user requests probe it again after the breaker's cooldown
            log.error(
                "health_check.refused",
                target=target.id,
                error=error,
                action="health checks stopped for this target; user requests probe it again (half-open)",
            )
        elif outcome != previous or h.state != before:  # one line per change, not per check
            (log.info if outcome == "ok" else log.warning)(
                "health_check.result",
                target=target.id,
                outcome=outcome,
                previous=previous,
                breaker=h.state,
                breaker_before=before,
                latency_ms=latency_ms,
                cost_usd=cost,
                error=error,
            )
        return outcome

    def _account(self, target: Target, reply: Reply | None, outcome: str) -> float | None:
        usage = reply.usage if reply is not None else None
        price = target.price if usage is not None else None
        cost = cost_usd(usage, price) if usage is not None and price is not None else None
        if reply is not None:
            self._dispatcher.ledger.add(
                model=target.id,
                provider=target.provider,
                upstream_model=reply.model or target.model,
                task="chat",
                tags=TAGS,
                usage=usage,
                cost=cost,
            )
        if self._metrics is not None:
            tokens = (usage.prompt_tokens, usage.completion_tokens) if usage is not None else None
            self._metrics.record_health_check(
                target=target.id, provider=target.provider, outcome=outcome, usage=tokens, cost_usd=cost, tags=TAGS
            )
        return cost
