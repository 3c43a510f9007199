"""Draining: what the process is doing about shutdown, and the requests still in flight."""

from __future__ import annotations

import asyncio


class Lifecycle:
    """Readiness and in-flight bookkeeping for graceful shutdown.

    On SIGTERM `draining` turns true: /readyz answers 503 and new API requests are refused,
    while requests already in flight run to completion within the grace period."""

    __slots__ = ("_deadline", "_idle", "draining", "in_flight", "streams")

    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0
        self.streams: set[asyncio.Task[object]] = set()  # handlers of open streams
        self._idle = asyncio.Event()
        self._idle.set()
        self._deadline: float | None = None  # loop time the drain's grace ends

    def enter(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def drain(self, grace_s: float) -> bool:
        """Stop taking requests and wait for those in flight; False if the grace ran out."""
        self.draining = True
        self._deadline = asyncio.get_running_loop().time() + grace_s
        try:
            await asyncio.wait_for(self._idle.wait(), grace_s)
        except TimeoutError:
            return False
        return True

    def grace_left(self, grace_s: float) -> float:
        """Seconds left of the drain's grace for work finishing after the requests (queued
        alerts); the whole `grace_s` when the app stops without a drain (tests)."""
        if self._deadline is None:
            return grace_s
        return max(0.0, self._deadline - asyncio.get_running_loop().time())
