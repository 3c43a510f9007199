"""Per-target health: a sliding 60-second window of outcomes and latencies, and the circuit
breaker that the router reads.

Recording is O(1): the window is a ring of one-second buckets, each holding counters and
two fixed log-scale latency histograms; percentiles are computed only when someone asks
(the router's latency strategy, /v1/gateway/health). Everything here is synchronous and
touches no I/O, so one event loop needs no locks. `HealthStore` is the interface a shared
(Redis) store implements to make several replicas agree.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from aiogw.alerts.sink import AlertSink
from aiogw.config import BreakerConfig
from aiogw.errors import FailureClass
from aiogw.names import PerTarget

BreakerState = Literal["closed", "open", "half_open"]

WINDOW_S = 60
# Latency histogram edges in ms: 1 ms .. ~20 min, 25% apart (percentile error <= 12%).
_EDGES: tuple[float, ...] = tuple(1.25**k for k in range(64))

# A target's breaker opening on several replicas, or again after it closed, within the same
# bucket of wall-clock time is one `breaker.open` alert (flapping pages nobody twice).
ALERT_BUCKET_S = 300

# Failures that say nothing about the target's health: the caller's own fault.
NOT_THE_TARGETS_FAULT = frozenset({FailureClass.CALLER_FAULT, FailureClass.CONTEXT_LENGTH})


class _Bucket:
    __slots__ = ("failures", "latency", "ok", "second", "ttft")

    def __init__(self, second: int = -1) -> None:
        self.second = second
        self.ok = 0
        self.failures: dict[str, int] = {}
        self.latency = [0] * (len(_EDGES) + 1)
        self.ttft = [0] * (len(_EDGES) + 1)

    def reset(self, second: int) -> None:
        self.second = second
        self.ok = 0
        self.failures.clear()
        for i in range(len(self.latency)):
            self.latency[i] = 0
            self.ttft[i] = 0


def _percentile(hist: list[int], q: float) -> float | None:
    total = sum(hist)
    if not total:
        return None
    rank = math.ceil(q * total)
    seen = 0
    for i, n in enumerate(hist):
        seen += n
        if seen >= rank:
            # The bucket's geometric middle: [edge[i-1], edge[i]) -> sqrt(lo * hi).
            lo = _EDGES[i - 1] if i > 0 else 0.5
            hi = _EDGES[i] if i < len(_EDGES) else _EDGES[-1] * 1.25
            return round(math.sqrt(lo * hi), 1)
    return None


@dataclass(frozen=True, slots=True)
class WindowStats:
    requests: int
    failures: int
    failures_by_kind: dict[str, int]
    error_rate: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None


class SlidingWindow:
    """Counts and latency histograms of the last `WINDOW_S` seconds. A bucket (1.2 KB) is
    made the first time its second is used: a target called once costs one, not sixty."""

    __slots__ = ("_buckets",)

    def __init__(self) -> None:
        self._buckets: list[_Bucket | None] = [None] * WINDOW_S

    def _bucket(self, now: float) -> _Bucket:
        second = int(now)
        i = second % WINDOW_S
        b = self._buckets[i]
        if b is None:
            b = self._buckets[i] = _Bucket(second)
        elif b.second != second:
            b.reset(second)
        return b

    def record(self, now: float, failure: str | None, latency_ms: float, ttft_ms: float | None) -> None:
        b = self._bucket(now)
        if failure is None:
            b.ok += 1
        else:
            b.failures[failure] = b.failures.get(failure, 0) + 1
        b.latency[bisect.bisect_left(_EDGES, latency_ms)] += 1
        if ttft_ms is not None:
            b.ttft[bisect.bisect_left(_EDGES, ttft_ms)] += 1

    def _live(self, now: float) -> Iterable[_Bucket]:
        oldest = int(now) - WINDOW_S + 1
        return (b for b in self._buckets if b is not None and b.second >= oldest)

    def counts(self, now: float) -> tuple[int, int]:
        """(requests, failures) in the window: cheap enough for every breaker decision."""
        ok = failed = 0
        for b in self._live(now):
            ok += b.ok
            failed += sum(b.failures.values())
        return ok + failed, failed

    def stats(self, now: float) -> WindowStats:
        ok = 0
        kinds: dict[str, int] = {}
        lat = [0] * (len(_EDGES) + 1)
        ttft = [0] * (len(_EDGES) + 1)
        for b in self._live(now):
            ok += b.ok
            for k, n in b.failures.items():
                kinds[k] = kinds.get(k, 0) + n
            for i, n in enumerate(b.latency):
                lat[i] += n
            for i, n in enumerate(b.ttft):
                ttft[i] += n
        failed = sum(kinds.values())
        total = ok + failed
        return WindowStats(
            requests=total,
            failures=failed,
            failures_by_kind=kinds,
            error_rate=round(failed / total, 4) if total else 0.0,
            latency_p50_ms=_percentile(lat, 0.50),
            latency_p95_ms=_percentile(lat, 0.95),
            ttft_p50_ms=_percentile(ttft, 0.50),
            ttft_p95_ms=_percentile(ttft, 0.95),
        )


@dataclass(slots=True)
class TargetHealth:
    """One target's window, breaker and live counters."""

    policy: BreakerConfig
    window: SlidingWindow = field(default_factory=SlidingWindow)
    state: BreakerState = "closed"
    opened_at: float = 0.0
    consecutive_failures: int = 0
    probes_in_flight: int = 0
    probe_successes: int = 0
    in_flight: int = 0
    last_error: str | None = None
    last_failure_at: float = 0.0
    transitions: list[tuple[float, BreakerState]] = field(default_factory=list)
    # Shared state (Redis): other replicas' window counts, our counts not yet pushed, and
    # who hears about our breaker transitions. All idle when state is in-process.
    target_id: str = ""
    remote_calls: int = 0
    remote_failures: int = 0
    unsynced_calls: int = 0
    unsynced_failures: int = 0
    listener: Callable[[TargetHealth, BreakerState, float], None] | None = None
    # Set while active health checks (aiogw/attempts/health_check.py) watch this target: an open
    # breaker then waits for a passing check instead of its cooldown, and user requests are
    # never sent as half-open probes (recovery spends none of them).
    checked: bool = False
    # Told when the breaker opens from closed (not when a failed probe reopens it): fires
    # `breaker.open`. Not told of transitions adopted from another replica (it told its own).
    alerts: AlertSink | None = None
    _stats: WindowStats | None = None
    _stats_at: float = -1.0

    def stats(self, now: float) -> WindowStats:
        """Window statistics, recomputed at most once a second (the router asks per request)."""
        if self._stats is None or now - self._stats_at >= 1.0:
            self._stats, self._stats_at = self.window.stats(now), now
        return self._stats

    def _move(self, state: BreakerState, now: float) -> None:
        if state == self.state:
            return
        before, self.state = self.state, state
        self.transitions.append((now, state))
        del self.transitions[:-20]  # the recent history is enough for /v1/gateway/health
        if state == "open":
            self.opened_at = now
        self.probes_in_flight = self.probe_successes = 0
        if self.listener is not None:
            self.listener(self, state, now)
        if state == "open" and before == "closed" and self.alerts is not None:
            self._alert_open(self.alerts, now)

    def _alert_open(self, alerts: AlertSink, now: float) -> None:
        total, failed = self.window.counts(now)
        alerts.fire(
            "breaker.open",
            once_per=f"breaker.open:{self.target_id}:{int(time.time()) // ALERT_BUCKET_S}",
            target=self.target_id,
            reason=self.last_error,
            consecutive_failures=self.consecutive_failures,
            window_calls=total,
            window_failures=failed,
            open_s=self.policy.open_s,
        )

    def adopt(self, state: BreakerState, since: float, now: float) -> None:
        """Take another replica's breaker transition (made at `since`, our clock) without
        announcing it again."""
        listener, self.listener = self.listener, None
        alerts, self.alerts = self.alerts, None
        try:
            if state == "closed":
                self.consecutive_failures = 0
            self._move(state, now)
            if state == "open":
                self.opened_at = since
        finally:
            self.listener = listener
            self.alerts = alerts

    def available(self, now: float) -> bool:
        """May the router send a request here now? (Half-open: only while a probe slot is
        free, and never while health checks do the probing.)"""
        if self.state == "open" and not self.checked and now - self.opened_at >= self.policy.open_s:
            self._move("half_open", now)
        if self.state == "closed":
            return True
        if self.state == "half_open":
            return not self.checked and self.probes_in_flight < self.policy.half_open_probes
        return False

    def check_passed(self, now: float) -> None:
        """An active health check succeeded: it counts as a half-open probe success (an
        open breaker turns half-open on the first); `close_after` in a row close it."""
        self.consecutive_failures = 0
        if self.state == "closed":
            return
        if self.state == "open":
            self._move("half_open", now)
        self.probe_successes += 1
        if self.probe_successes >= self.policy.close_after:
            self._move("closed", now)

    def check_failed(self, now: float, error: str) -> None:
        """An active health check failed: a half-open breaker opens again."""
        self.last_error = error
        self.last_failure_at = now
        if self.state == "half_open":
            self._move("open", now)

    def begin(self, now: float) -> bool:
        """An attempt starts; returns True if it is a half-open probe."""
        self.in_flight += 1
        if self.available(now) and self.state == "half_open":
            self.probes_in_flight += 1
            return True
        return False

    def end(
        self,
        now: float,
        *,
        probe: bool,
        failure: FailureClass | None,
        latency_ms: float,
        ttft_ms: float | None = None,
        error: str | None = None,
        counted: bool = True,
    ) -> None:
        """An attempt ended. `counted=False` (client left, caller's fault) leaves no trace
        in the error rate or the breaker."""
        self.in_flight -= 1
        if probe:
            self.probes_in_flight = max(0, self.probes_in_flight - 1)
        if not counted or failure in NOT_THE_TARGETS_FAULT:
            return
        self.window.record(now, failure.value if failure else None, latency_ms, ttft_ms)
        self.unsynced_calls += 1
        if failure is not None:
            self.unsynced_failures += 1
        if failure is None:
            self.consecutive_failures = 0
            if self.state == "half_open" and probe:
                self.probe_successes += 1
                if self.probe_successes >= self.policy.close_after:
                    self._move("closed", now)
            return
        self.last_error = f"{failure.value}: {error}" if error else failure.value
        self.last_failure_at = now
        self.consecutive_failures += 1
        if self.state == "half_open":
            self._move("open", now)  # a failed probe: wait another cooldown
        elif self.state == "closed" and self._should_open(now, failure):
            self._move("open", now)

    def _should_open(self, now: float, failure: FailureClass) -> bool:
        if failure is FailureClass.CREDENTIAL:
            return True  # a rejected key will not fix itself on the next request
        p = self.policy
        if self.consecutive_failures >= p.consecutive_failures:
            return True
        total, failed = self.window.counts(now)
        total, failed = total + self.remote_calls, failed + self.remote_failures  # the fleet's
        return total >= p.min_calls and failed / total > p.error_rate

    def force_open(self, now: float, why: str) -> None:
        self.last_error = why
        self.last_failure_at = now
        self._move("open", now)


class HealthStore(Protocol):
    """What dispatch and the router need from health state; in-process by default, shared
    through Redis when configured."""

    def get(self, target_id: str) -> TargetHealth: ...

    def all(self) -> dict[str, TargetHealth]: ...


class LocalHealth:
    """In-process health for the configured targets and the most recently used others
    (`aiogw.names.PerTarget`: a forgotten target starts again closed, with an empty window)."""

    def __init__(
        self,
        policy: BreakerConfig | None = None,
        policies: dict[str, BreakerConfig] | None = None,
        *,
        configured: Container[str] | None = None,  # target ids; None: keep every target
        alerts: AlertSink | None = None,  # hears breakers opening (breaker.open)
    ) -> None:
        self._default = policy or BreakerConfig()
        self._policies = policies or {}  # per target id, from model-group settings
        self._targets: PerTarget[TargetHealth] = PerTarget(configured)
        self._kept = self._targets.configured()  # the hot path: one dict lookup, as before
        self.listener: Callable[[TargetHealth, BreakerState, float], None] | None = None  # see subscribe
        self.shared = False  # True while a shared store keeps the fleet in step
        self._alerts = alerts

    def get(self, target_id: str) -> TargetHealth:
        h = self._kept.get(target_id) or self._targets.get(target_id)
        if h is None:
            h = self._targets.put(
                target_id, TargetHealth(self._policies.get(target_id, self._default), target_id=target_id)
            )
            h.listener = self.listener
            h.alerts = self._alerts
        return h

    def all(self) -> dict[str, TargetHealth]:
        return self._targets.all()

    def subscribe(self, listener: Callable[[TargetHealth, BreakerState, float], None]) -> None:
        """Hear every breaker transition, of the targets known now and of those added later
        (shared state publishes them to the fleet)."""
        self.listener = listener
        for h in self.all().values():
            h.listener = listener

    def is_configured(self, target_id: str) -> bool:
        return self._targets.is_configured(target_id)

    def configured(self) -> dict[str, TargetHealth]:
        """The configured targets' health (the state replicas share)."""
        return self._targets.configured()


def now() -> float:
    """The health clock: monotonic seconds (wall-clock jumps must not reopen breakers)."""
    return time.monotonic()
