"""What a part of the gateway that notices an event calls. Firing never waits on the
network: the event is queued and delivered off the request path."""

from __future__ import annotations

from typing import Any, Protocol

EVENT_TYPES = (
    "budget.threshold",
    "budget.exceeded",
    "budget.forecast",
    "slo.breach",
    "breaker.open",
    "key.expiring",
)


class AlertSink(Protocol):
    def fire(self, type: str, *, once_per: str, **fields: Any) -> None:
        """Queue an event of `type` (one of EVENT_TYPES). `once_per` names the occurrence
        (e.g. "budget:<id>:<window start>:0.8"): an occurrence fires once fleet-wide however
        many replicas and requests notice it. `fields` join the event's JSON body."""


class NoAlerts:
    """No webhooks configured: events are dropped here (their log lines and metrics are the
    noticing part's own)."""

    def fire(self, type: str, *, once_per: str, **fields: Any) -> None:
        return None
