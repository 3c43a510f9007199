"""Who commits a response when hedged attempts race, and the control-flow events of the
walk (an attempt that lost the race, failed with the walk going on, or failed past the
commit point)."""

from __future__ import annotations

import asyncio

from aiogw.errors import UpstreamError


class _LostRace(Exception):
    """A hedged attempt produced its first token after another attempt had won."""


class _FailedAfterCommit(Exception):
    def __init__(self, error: UpstreamError) -> None:
        self.error = error


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


class _AttemptFailed(Exception):
    """An attempt failed in a way that lets the walk go on (recorded already)."""
