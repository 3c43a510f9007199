"""Background loops that must outlive their own bugs: a loop that raises is logged with its
exception and started again after a pause, instead of dying silently for the rest of the
process (a replica that quietly stops syncing, a prober that quietly stops probing)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

# The pause before a restart doubles from RESTART_MIN_S up to RESTART_MAX_S while the loop
# keeps failing, so a loop that fails at once cannot spin; a loop that then ran for
# HEALTHY_S starts over from the shortest pause.
RESTART_MIN_S = 0.5
RESTART_MAX_S = 30.0
HEALTHY_S = 60.0


async def supervise(name: str, run: Callable[[], Awaitable[None]], log: Any, event: str, **fields: Any) -> None:
    """Run `run()` until it returns or is cancelled; each time it raises, log `event` (an
    error line with the loop's name, the exception and the pause) and run it again."""
    pause = RESTART_MIN_S
    while True:
        started = time.monotonic()
        try:
            await run()
            return
        except Exception as exc:
            if time.monotonic() - started >= HEALTHY_S:
                pause = RESTART_MIN_S
            log.error(
                event, loop=name, error=f"{type(exc).__name__}: {exc}", restart_in_s=pause, exc_info=exc, **fields
            )
        await asyncio.sleep(pause)
        pause = min(pause * 2, RESTART_MAX_S)
