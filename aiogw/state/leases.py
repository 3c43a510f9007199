"""A replica's lease on a target's fleet-wide rpm/tpm: spent locally, refilled by one
Redis call that concurrent takes queue behind."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiogw.adapters._base import Target
from aiogw.admission.limits import LimitExceeded

# A lease holds up to this much of a target's per-minute rate: rpm 60,000 leases 100
# requests per round trip; rpm 20 leases 1 (every request asks Redis).
LEASE_S = 0.1


@dataclass(slots=True)
class _Lease:
    """This replica's share of a target's fleet-wide rpm/tpm, and its one call to Redis for
    more: concurrent takes queue behind that call instead of each opening a connection."""

    target: Target
    requests: float = 0
    tokens: float = 0
    expires: float = 0.0  # monotonic
    flight: asyncio.Event | None = None  # set when the call in flight has returned
    waiting: int = 0  # takes queued behind it: the next call asks for them too
    # The fleet said no: say no locally until `refused_until` (at most LEASE_S, so units
    # given back meanwhile are not ignored for long).
    refused_until: float = 0.0
    refused_kind: str = ""
    refused_need: int = 0
    retry_at: float = 0.0

    def spend(self, rpm: int | None, need: int, now: float) -> bool:
        if now < self.expires and (self.requests >= 1 or not rpm) and self.tokens >= need:
            self.requests -= 1 if rpm else 0
            self.tokens -= need
            return True
        return False

    def refused(self, need: int, now: float) -> LimitExceeded | None:
        if now < self.refused_until and (self.refused_kind == "rpm" or need >= self.refused_need):
            return LimitExceeded(self.target.id, f"fleet-wide {self.refused_kind}", max(0.001, self.retry_at - now))
        return None
