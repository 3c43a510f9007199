"""What a request cost: prices (built-in table or the config) applied to actual usage, and
the running totals per model, provider and tag that /metrics and the dashboard read.

The table is data (`aiogw/data/prices.toml`); a target's configured `price` wins over it.
OpenAI-shaped usage counts cached tokens inside `prompt_tokens` and reasoning tokens
inside `completion_tokens`, so both are priced exactly once.
"""

from __future__ import annotations

import time
import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

from aiogw.adapters._base import Target
from aiogw.names import MAX_DIRECT_TARGETS, MAX_SPEND_ROWS, OTHER
from aiogw.types import UNSET, CompletionUsage

PER_MILLION = 1_000_000


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float
    cached_input: float | None = None  # None: cache reads cost full input
    cache_write: float | None = None  # None: cache writes cost full input


@cache
def _table() -> dict[str, dict[str, Price]]:
    data = tomllib.loads(resources.files("aiogw").joinpath("data/prices.toml").read_text(encoding="utf-8"))
    return {
        provider_type: {model: Price(**row) for model, row in section.get("models", {}).items()}
        for provider_type, section in data.items()
    }


def listed_price(provider_type: str, model: str) -> Price | None:
    """The built-in price of `model` at a provider type, by the longest listed prefix."""
    rows = _table().get(provider_type)
    if not rows:
        return None
    name = model.rsplit("/", 1)[-1].lower()  # "models/gemini-2.5-flash" -> "gemini-2.5-flash"
    best = max((m for m in rows if name.startswith(m)), key=len, default=None)
    return rows[best] if best is not None else None


# One lookup per distinct target, not per request. Direct `provider/model` addressing lets
# clients name models, so a full memo starts over (a miss is a short table scan).
_PRICES: dict[tuple[object, ...], Price | None] = {}


def price_of(target: Target) -> Price | None:
    key = (target.type, target.model, target.price_input, target.price_output, target.price_cached_input)
    if key in _PRICES:
        return _PRICES[key]
    price: Price | None
    if target.price_input is not None or target.price_output is not None:
        price = Price(input=target.price_input or 0.0, output=target.price_output or 0.0, cached_input=target.price_cached_input)
    else:
        price = listed_price(target.type, target.model)
    if len(_PRICES) >= 2 * MAX_DIRECT_TARGETS:
        _PRICES.clear()
    _PRICES[key] = price
    return price


def cost_usd(usage: CompletionUsage, price: Price) -> float:
    details = usage.prompt_tokens_details
    cached = written = 0
    if details is not None and details is not UNSET:
        cached = details.cached_tokens if details.cached_tokens is not UNSET else 0
        written = details.cache_write_tokens if details.cache_write_tokens is not UNSET else 0
    fresh = max(0, usage.prompt_tokens - cached - written)
    total = (
        fresh * price.input
        + cached * (price.cached_input if price.cached_input is not None else price.input)
        + written * (price.cache_write if price.cache_write is not None else price.input)
        + usage.completion_tokens * price.output
    )
    return round(total / PER_MILLION, 10)


def estimate_usd(target: Target, prompt_tokens: int, output_tokens: int) -> float | None:
    """A request's cost before it is sent (the lowest-cost strategy's yardstick)."""
    p = price_of(target)
    if p is None:
        return None
    return (prompt_tokens * p.input + output_tokens * p.output) / PER_MILLION


def format_usd(amount: float) -> str:
    return f"{amount:.8f}".rstrip("0").rstrip(".") if amount else "0"


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
