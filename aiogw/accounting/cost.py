"""What a request costs: prices (built-in table or the config) applied to actual usage.

The table is data (`aiogw/data/prices.toml`); a target's configured `price` wins over it.
OpenAI-shaped usage counts cached tokens inside `prompt_tokens` and reasoning tokens
inside `completion_tokens`, so both are priced exactly once.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from importlib import resources

from aiogw.adapters._base import Target
from aiogw.types import UNSET, CompletionUsage, Price

PER_MILLION = 1_000_000


def _load() -> tuple[dict[str, dict[str, Price]], dict[str, str]]:
    """The table, and per provider type the month its section was checked (the ledger's
    price version)."""
    data = tomllib.loads(resources.files("aiogw").joinpath("data/prices.toml").read_text(encoding="utf-8"))
    table = {
        provider_type: {model: Price(**row) for model, row in section.get("models", {}).items()}
        for provider_type, section in data.items()
    }
    return table, {provider_type: str(section.get("as_of", "")) for provider_type, section in data.items()}


# Read at import, before any event loop runs (a direct `provider/model` target is priced
# when a request first names it, on the loop).
_TABLE, _AS_OF = _load()


def listed_price(provider_type: str, model: str) -> Price | None:
    """The built-in price of `model` at a provider type, by the longest listed prefix."""
    rows = _TABLE.get(provider_type)
    if not rows:
        return None
    name = model.rsplit("/", 1)[-1].lower()  # "models/gemini-2.5-flash" -> "gemini-2.5-flash"
    best = max((m for m in rows if name.startswith(m)), key=len, default=None)
    return rows[best] if best is not None else None


def resolve_price(
    provider_type: str,
    model: str,
    price_input: float | None,
    price_output: float | None,
    price_cached_input: float | None,
    *,
    cache_write: float | None = None,
) -> Price | None:
    """A target's price: its configured one, else the built-in table's. Called when the
    runtime builds the target (`Target.price`), never per request."""
    if price_input is not None or price_output is not None:
        return Price(
            input=price_input or 0.0,
            output=price_output or 0.0,
            cached_input=price_cached_input,
            cache_write=cache_write,
        )
    return listed_price(provider_type, model)


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
    p = target.price
    if p is None:
        return None
    return (prompt_tokens * p.input + output_tokens * p.output) / PER_MILLION


def price_version(target: Target) -> str:
    """Which prices costed a target's requests: "table:<type>@<as_of>" for the built-in
    table's row, "config" for a price set in the config, "" for none."""
    if target.price is None:
        return ""
    if target.price == listed_price(target.type, target.model):
        return f"table:{target.type}@{_AS_OF.get(target.type, '')}"
    return "config"


def format_usd(amount: float) -> str:
    return f"{amount:.8f}".rstrip("0").rstrip(".") if amount else "0"


def cost_field(price: Price | None) -> Callable[[CompletionUsage], bytes] | None:
    """A stream's cost as an extra field of its last usage object (b'"cost_usd":…'): OpenAI's
    and Anthropic's SDKs keep fields they do not know. None for an unpriced target."""
    if price is None:
        return None

    def field(usage: CompletionUsage) -> bytes:
        return b'"cost_usd":' + format_usd(cost_usd(usage, price)).encode()

    return field
