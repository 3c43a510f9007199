"""The running totals per model, provider and tag that /metrics and the dashboard read,
and the one step that charges an answered request to them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from aiogw.accounting.cost import cost_usd
from aiogw.adapters._base import Target
from aiogw.names import MAX_SPEND_ROWS, OTHER
from aiogw.types import CompletionUsage


@dataclass(slots=True)
class SpendRow:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


@dataclass(slots=True)
class Ledger:
    """Running totals since start, keyed by (public model, provider, upstream model, task,
    tags). Clients choose model names and tags, so past `MAX_SPEND_ROWS` rows new keys are
    added up as (`other`, provider, `other`, task, `other`): the totals stay whole."""

    rows: dict[tuple[str, str, str, str, str], SpendRow] = field(default_factory=dict)
    since: float = field(default_factory=time.time)  # wall clock of the first row's start

    def add(
        self,
        *,
        model: str,
        provider: str,
        upstream_model: str,
        task: str,
        tags: str,
        usage: CompletionUsage | None,
        cost: float | None,
    ) -> None:
        key = (model, provider, upstream_model, task, tags)
        row = self.rows.get(key)
        if row is None:
            if len(self.rows) >= MAX_SPEND_ROWS:
                key = (OTHER, provider, OTHER, task, OTHER)
                row = self.rows.get(key)
            if row is None:
                row = self.rows[key] = SpendRow()
        row.requests += 1
        if usage is not None:
            row.prompt_tokens += usage.prompt_tokens
            row.completion_tokens += usage.completion_tokens
        if cost:
            row.cost_usd += cost


def charge(
    ledger: Ledger,
    model: str,
    target: Target,
    upstream_model: str | None,
    tags: str,
    usage: CompletionUsage | None,
    task: str,
) -> float | None:
    """Add an answered request to the ledger; its cost (None: no usage or no price)."""
    price = target.price
    cost = cost_usd(usage, price) if usage is not None and price is not None else None
    ledger.add(
        model=model,
        provider=target.provider,
        upstream_model=upstream_model or target.model,
        task=task,
        tags=tags,
        usage=usage,
        cost=cost,
    )
    return cost
