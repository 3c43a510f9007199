"""Per-model-group SLOs: each target of a group with an `slo` is measured against it over
its health window, on a timer (SLO_EVAL_S), never per request or per chunk.

The router reads the result (`out`: per group, the targets out of its SLO) with one dict
lookup per plan, and only for groups that have an SLO. A target with fewer than `min_calls`
calls in its window is "unknown" and ranked as within. Entering a breach fires `slo.breach`
once per breach episode (and, across replicas and flapping, once per target and group per
ALERT_BUCKET_S of wall-clock time)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from aiogw.alerts.sink import AlertSink
from aiogw.config import SLOConfig
from aiogw.routing.health import ALERT_BUCKET_S, HealthStore, WindowStats
from aiogw.routing.health import now as health_now
from aiogw.runtime import ModelRoute
from aiogw.supervise import supervise
from aiogw.telemetry.logs import get_logger

log = get_logger("aiogw.slo")

SLO_EVAL_S = 1.0  # the windows' statistics are recomputed at most once a second anyway
OBJECTIVES = ("ttft_p95_ms", "latency_p95_ms", "error_rate")
Status = Literal["ok", "breach", "unknown"]


@dataclass(frozen=True, slots=True)
class SLOStatus:
    status: Status
    breached: tuple[str, ...] = ()
    calls: int = 0


def evaluate(slo: SLOConfig, stats: WindowStats) -> SLOStatus:
    if stats.requests < slo.min_calls:
        return SLOStatus("unknown", calls=stats.requests)
    breached = tuple(
        name
        for name in OBJECTIVES
        if (limit := getattr(slo, name)) is not None and (value := getattr(stats, name)) is not None and value > limit
    )
    return SLOStatus("breach" if breached else "ok", breached, stats.requests)


def objectives(slo: SLOConfig) -> dict[str, float]:
    return {name: v for name in OBJECTIVES if (v := getattr(slo, name)) is not None}


class SLOMonitor:
    """Built only when some group has an SLO."""

    def __init__(self, routes: Iterable[ModelRoute], health: HealthStore, alerts: AlertSink) -> None:
        self._groups = [(r.name, r.slo, tuple(t.id for t in r.targets)) for r in routes if r.slo is not None]
        self._health = health
        self._alerts = alerts
        self.status: dict[tuple[str, str], SLOStatus] = {}  # (group, target id) -> as last evaluated
        self.out: dict[str, frozenset[str]] = {}  # group -> its targets out of its SLO
        # A target in several groups is reported under the first with an SLO (as breakers
        # take the first group's policy).
        self._first: dict[str, tuple[str, SLOConfig]] = {}
        for group, slo, tids in self._groups:
            for tid in tids:
                self._first.setdefault(tid, (group, slo))
        self._task: asyncio.Task[None] | None = None

    def evaluate(self, now: float) -> None:
        for group, slo, tids in self._groups:
            out = set()
            for tid in tids:
                stats = self._health.get(tid).stats(now)
                got = evaluate(slo, stats)
                before = self.status.get((group, tid))
                self.status[(group, tid)] = got
                if got.status != "breach":
                    continue
                out.add(tid)
                if before is None or before.status != "breach":
                    self._alerts.fire(
                        "slo.breach",
                        once_per=f"slo.breach:{group}:{tid}:{int(time.time()) // ALERT_BUCKET_S}",
                        model=group,
                        target=tid,
                        breached=list(got.breached),
                        objectives=objectives(slo),
                        observed={name: getattr(stats, name) for name in OBJECTIVES if getattr(slo, name) is not None},
                        window_calls=stats.requests,
                    )
            self.out[group] = frozenset(out)

    def report(self, target_id: str) -> dict[str, Any] | None:
        """The target's SLO status for /v1/gateway/health; None when no group of it has one."""
        first = self._first.get(target_id)
        if first is None:
            return None
        group, slo = first
        got = self.status.get((group, target_id), SLOStatus("unknown"))
        return {
            "model": group,
            "status": got.status,
            "breached": list(got.breached),
            "objectives": objectives(slo),
            "min_calls": slo.min_calls,
        }

    def statuses(self) -> Iterable[tuple[str, str, Status]]:
        """(group, target id, status) of every evaluated pair, for the metrics gauge."""
        return ((g, t, s.status) for (g, t), s in self.status.items())

    def start(self) -> None:
        self._task = asyncio.create_task(supervise("slo", self._run, log, "slo.loop_died"))

    async def _run(self) -> None:
        while True:
            self.evaluate(health_now())
            await asyncio.sleep(SLO_EVAL_S)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
