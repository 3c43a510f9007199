"""An attempt's span (only with tracing configured): started before it is sent, ended with
what it came to."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiogw.adapters._base import Target
from aiogw.attempts.outcome import _NOT_SENT, Outcome
from aiogw.attempts.walk import Walk
from aiogw.types import CompletionUsage

if TYPE_CHECKING:  # the OpenTelemetry SDK is imported only when tracing is configured
    from opentelemetry.trace import Span

    from aiogw.telemetry.tracing import Tracing


def start_span(tracing: Tracing, w: Walk, target: Target) -> tuple[Span, object]:
    """An attempt's span: the GenAI client conventions, and why the walk came here."""
    sent = [a for a in w.outcome.attempts if a.failure not in _NOT_SENT]
    return tracing.start_attempt(
        provider_type=target.type,
        provider=target.provider,
        model=target.model,
        url=target.base_url,
        operation=w.operation,
        attempt=len(sent) + 1,
        failover_reason=sent[-1].failure if sent else None,
    )


def end_span(
    tracing: Tracing,
    span: tuple[Span, object],
    outcome: Outcome,
    target: Target,
    usage: CompletionUsage | None,
    record: str | None,
    message: str | None,
    mine: bool,
) -> None:
    attrs = tracing.usage_attributes(usage, outcome.finish_reasons if mine else None, outcome.model if mine else None)
    attrs["aiogw.target"] = target.id
    if mine and outcome.cost_usd is not None:
        attrs["aiogw.cost_usd"] = outcome.cost_usd
    if mine and outcome.ttft_ms is not None:
        attrs["aiogw.ttft_ms"] = round(outcome.ttft_ms, 2)
    tracing.end_attempt(*span, record, message, attrs)
