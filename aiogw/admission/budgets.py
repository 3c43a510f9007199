"""Budgets: what one is (scope, match, limit, window), which ones apply to a request, and
window math. Windows are fixed and UTC: `1d` starts at midnight, `7d` on Monday, `30d` in
30-day blocks counted from the Unix epoch, `month` on the 1st, `total` never resets; the
same instant gives every replica the same window, so counters keyed by a window's start
are shared without coordination."""

from __future__ import annotations

import calendar
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgspec

from aiogw.config import BudgetConfig

DAY = 86400.0
_MONDAY_OFFSET = 4 * DAY  # the epoch was a Thursday; Monday 1970-01-05 starts the 7-day blocks
# Forecasts start once this share of a window has passed (earlier, one request projects
# to anything); so a forecast needs at least this share of the limit spent.
FORECAST_AFTER = 0.05
PERIODS = ("1d", "7d", "30d", "month", "total")
SCOPES = ("key", "team", "user", "model", "provider", "tag", "task", "global")


class Budget(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    scope: str  # one of SCOPES
    match: str | None  # the key id, team, user, public model, provider, "k=v" tag or task; None: global
    limit_usd: float
    period: str = "month"
    alert_at: tuple[float, ...] = (1.0,)
    source: str = "config"  # "config", "admin" (/admin/v1/budgets) or "key" (a key's own)
    nano_limit: int = 0  # limit_usd in nano-dollars, set when made (read on every admission)
    # Spend below this fires no alert (no threshold crossed, no forecast possible): most
    # settlements stop here. Set when made.
    quiet_below: int = 0

    def __post_init__(self) -> None:
        nano = to_nano(self.limit_usd)
        msgspec.structs.force_setattr(self, "nano_limit", nano)
        thresholds = [at * nano for at in self.alert_at if at < 1.0]
        msgspec.structs.force_setattr(self, "quiet_below", int(min([FORECAST_AFTER * nano, *thresholds])))

    def label(self) -> str:
        """How a 402 and an alert name it: scope, match and period, never an amount."""
        what = "global budget" if self.scope == "global" else f"{self.scope} budget '{self.match}'"
        return f"{what} ({self.period})"


NANO = 1_000_000_000


def to_nano(usd: float) -> int:
    """Counters hold nano-dollars as integers: sums stay exact, and Lua's doubles hold them
    exactly up to $9M per window."""
    return round(usd * NANO)


def config_budget_id(b: BudgetConfig) -> str:
    """A config budget's id is derived from what it counts (scope, match, period), so a
    restart or a changed limit keeps its spend and alert history."""
    digest = hashlib.sha256(f"{b.scope}\0{b.match or ''}\0{b.period}".encode()).hexdigest()[:12]
    return f"cfg_{digest}"


def from_config(budgets: Iterable[BudgetConfig]) -> list[Budget]:
    return [
        Budget(
            id=config_budget_id(b),
            scope=b.scope,
            match=b.match,
            limit_usd=b.limit_usd,
            period=b.period,
            alert_at=tuple(sorted(b.alert_at)),
        )
        for b in budgets
    ]


def from_key(budgets: Iterable[BudgetConfig]) -> list[Budget]:
    """A virtual key's own budgets (scope `key`, match its id). The id is the key's id and
    the period (and the position among several of one period), so a rotation or a changed
    limit keeps the window's spend."""
    out: list[Budget] = []
    seen: dict[str, int] = {}
    for b in budgets:
        n = seen[b.period] = seen.get(b.period, 0) + 1
        out.append(
            Budget(
                id=f"{b.match}:{b.period}" + (f":{n}" if n > 1 else ""),
                scope="key",
                match=b.match,
                limit_usd=b.limit_usd,
                period=b.period,
                alert_at=tuple(sorted(b.alert_at)),
                source="key",
            )
        )
    return out


def window(period: str, now: float) -> tuple[float, float | None]:
    """The window holding `now`: (start, end); end None for `total`."""
    if period == "total":
        return 0.0, None
    if period == "month":
        d = datetime.fromtimestamp(now, UTC)
        first = datetime(d.year, d.month, 1, tzinfo=UTC).timestamp()
        return first, first + calendar.monthrange(d.year, d.month)[1] * DAY
    if period == "1d":
        length, offset = DAY, 0.0
    elif period == "7d":
        length, offset = 7 * DAY, _MONDAY_OFFSET
    elif period == "30d":
        length, offset = 30 * DAY, 0.0
    else:
        raise ValueError(f"unknown budget period {period!r}")
    begin = (now - offset) // length * length + offset
    return begin, begin + length


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(slots=True)
class Request:
    """What decides which budgets apply to a request."""

    model: str
    providers: Sequence[str]  # every candidate's provider (see `Index.applying`)
    tags: str  # canonical "k=v,k2=v2"
    task: str
    key_id: str | None = None
    team: str | None = None
    user: str | None = None
    key_budgets: Sequence[Budget] = ()


@dataclass(slots=True)
class Index:
    """Budgets by (scope, match): finding those that apply is a few dict lookups."""

    by_scope: dict[str, dict[str | None, list[Budget]]] = field(default_factory=dict)
    by_id: dict[str, Budget] = field(default_factory=dict)

    @classmethod
    def of(cls, budgets: Iterable[Budget]) -> Index:
        idx = cls()
        for b in budgets:
            idx.by_scope.setdefault(b.scope, {}).setdefault(b.match, []).append(b)
            idx.by_id[b.id] = b
        return idx

    def __bool__(self) -> bool:
        return bool(self.by_id)

    def applying(self, r: Request) -> list[Budget]:
        """Every budget that counts this request. Provider budgets: those of every candidate
        provider (the one that answers is only known per attempt; see README)."""
        s = self.by_scope
        out: list[Budget] = list(r.key_budgets)
        if not s:
            return out

        def add(scope: str, match: str | None) -> None:
            got = s.get(scope)
            if got is not None and (bs := got.get(match)) is not None:
                out.extend(bs)

        add("global", None)
        add("model", r.model)
        add("task", r.task)
        if r.key_id is not None:
            add("key", r.key_id)
        if r.team is not None:
            add("team", r.team)
        if r.user is not None:
            add("user", r.user)
        if "provider" in s:
            for p in dict.fromkeys(r.providers):
                add("provider", p)
        if r.tags and "tag" in s:
            for pair in r.tags.split(","):
                add("tag", pair)
        return out
