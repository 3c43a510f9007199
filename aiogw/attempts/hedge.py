"""Hedging: a second target starts when the first is slow to its first token, and the
first attempt to produce one wins (the others are cancelled through the gate)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, TypeVar

from aiogw.adapters._base import Target
from aiogw.attempts.gate import _AttemptFailed, _Gate, _LostRace
from aiogw.attempts.walk import Attempt, Walk
from aiogw.config import HedgeConfig
from aiogw.routing import health as health_mod
from aiogw.routing.health import HealthStore

if TYPE_CHECKING:
    from aiogw.attempts.dispatcher import Dispatcher

T = TypeVar("T")


async def run_hedged(
    w: Walk, pending: list[Target], attempt: Attempt[T], hedge: HedgeConfig, gate: _Gate, d: Dispatcher
) -> tuple[bool, T | None]:
    """Start the plan's first target, and the next beside it whenever the running ones are
    slow to their first token (up to `max_parallel`); the first to claim the gate wins."""
    running: dict[asyncio.Task[T], Target] = {}

    async def launch() -> bool:
        while pending:
            prepared = await d.books.prepare(w, pending.pop(0), alternatives=bool(pending) or bool(running))
            if prepared is not None:
                task = asyncio.ensure_future(d.books.attempt(w, gate, attempt, *prepared))
                gate.tasks.add(task)
                running[task] = prepared[0]
                return True
        return False

    try:
        while True:
            if not running and (d.deadline_passed(w) or not await launch()):
                return False, None
            delay = None
            if pending and gate.owner is None and len(running) < hedge.max_parallel:
                delay = _hedge_delay(d.health, hedge, next(iter(running.values())))
            done, _ = await asyncio.wait(running, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            if not done:  # no first token in time: start the next target beside it
                if await launch():
                    w.outcome.notes.append(f"hedged: started {list(running.values())[-1].id}")
                continue
            for task in done:
                running.pop(task)
                gate.tasks.discard(task)
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


def _hedge_delay(health: HealthStore, hedge: HedgeConfig, target: Target) -> float:
    if hedge.delay_ms == "p95":
        p95 = health.get(target.id).stats(health_mod.now()).ttft_p95_ms
        return (p95 or 1000.0) / 1000
    return hedge.delay_ms / 1000
