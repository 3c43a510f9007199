"""`key.expiring`: keys whose `expires_at` falls within `alerts.key_expiring_s` of now.

The keys stage calls `check_expiring` (or runs `watch_expiring`) with what it holds; this
module knows only the three attributes it reads. One event per key and expiry date: a key
whose expiry is moved later fires again for the new date, as it should."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from aiogw.alerts.sink import AlertSink

CHECK_EVERY_S = 3600.0  # expiry warnings are days ahead: hourly is soon enough


class ExpiringKey(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str | None: ...

    @property
    def expires_at(self) -> float | None: ...  # Unix seconds


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def check_expiring(keys: Iterable[ExpiringKey], now: float, within_s: float, alerts: AlertSink) -> int:
    """Fire `key.expiring` for every key expiring in (now, now + within_s]; how many fired
    (the sink drops repeats, so calling this often is harmless)."""
    fired = 0
    for key in keys:
        at = key.expires_at
        if at is None or not now < at <= now + within_s:
            continue
        alerts.fire(
            "key.expiring",
            once_per=f"key.expiring:{key.id}:{int(at)}",
            key_id=key.id,
            key_name=key.name,
            expires_at=_iso(at),
            expires_in_s=round(at - now),
        )
        fired += 1
    return fired


async def watch_expiring(
    list_keys: Callable[[], Awaitable[Iterable[ExpiringKey]]],
    alerts: AlertSink,
    within_s: float,
    clock: Callable[[], float],
    every_s: float = CHECK_EVERY_S,
) -> None:
    """Check every `every_s` seconds until cancelled (run it under aiogw.supervise)."""
    while True:
        check_expiring(await list_keys(), clock(), within_s, alerts)
        await asyncio.sleep(every_s)
