"""The reservation engine: admission holds a request's worst-case cost against every budget
that applies, all or none, and the request's end settles the hold with the real cost.

Counters per budget window are `spent` (settled) and `reserved` (held by requests in
flight), in nano-dollars. A request is refused when a budget's spend has reached its limit
or when spent + reserved + its worst case would pass the limit; so spend can pass a limit
only by what requests used beyond their reservation, and is bounded by the limit plus
what was reserved in flight. The counters live in a `Book`: `LocalBook` in process, or
the Redis book (one Lua script per step, `aiogw.state.budget_book`) shared by a fleet.

A window's counters start from the durable ledger (`seed`: the spend already recorded in
that window), the first time this process touches them, so a restart loses nothing."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import NoReturn, Protocol

import structlog

from aiogw.admission.budgets import FORECAST_AFTER, Budget, Index, Request, iso, to_nano, window
from aiogw.alerts.sink import AlertSink, NoAlerts
from aiogw.errors import BudgetExceeded

log = structlog.get_logger("aiogw.budgets")

MAX_PLANS = 10_000  # kinds of request whose admission plans are kept


class Book(Protocol):
    async def reserve(self, keys: Sequence[str], limits: Sequence[int], amount: int, ttls_ms: Sequence[int]) -> int:
        """Hold `amount` against every key, all or none: -1 when held, else the index of
        the first key without room."""

    async def settle(self, keys: Sequence[str], reserved: int, actuals: Sequence[int]) -> list[int]:
        """Release `reserved` from every key and add its `actuals` entry; their spend after."""

    async def seed(self, key: str, spent: int, ttl_ms: int) -> None:
        """Start a key's spend at `spent` unless it already has one."""

    async def read(self, keys: Sequence[str]) -> list[tuple[int, int]]:
        """(spent, reserved) per key."""


def take(counters: Sequence[list[int]], limits: Sequence[int], amount: int) -> int:
    """Hold `amount` on every [spent, reserved] counter, all or none: -1 when held, else
    the index of the first without room (its spend reached the limit, or the hold would
    pass it)."""
    for i, (c, limit) in enumerate(zip(counters, limits, strict=True)):
        spent = c[0]
        if spent >= limit or spent + c[1] + amount > limit:
            return i
    for c in counters:
        c[1] += amount
    return -1


def give_back(counters: Sequence[list[int]], reserved: int, actuals: Sequence[int]) -> list[int]:
    """Release `reserved` from every counter and add its actual cost; the spends after."""
    out = []
    for c, actual in zip(counters, actuals, strict=True):
        c[1] = max(0, c[1] - reserved)
        c[0] += actual
        out.append(c[0])
    return out


@dataclass(slots=True)
class LocalBook:
    """One process's counters: every step is synchronous, so atomic on the event loop."""

    slots: dict[str, list[int]] = field(default_factory=dict)  # key -> [spent, reserved]

    async def reserve(self, keys: Sequence[str], limits: Sequence[int], amount: int, ttls_ms: Sequence[int]) -> int:
        return self.reserve_now(keys, limits, amount)

    def reserve_now(self, keys: Sequence[str], limits: Sequence[int], amount: int) -> int:
        return take(self.counters(keys), limits, amount)

    async def settle(self, keys: Sequence[str], reserved: int, actuals: Sequence[int]) -> list[int]:
        return self.settle_now(keys, reserved, actuals)

    def settle_now(self, keys: Sequence[str], reserved: int, actuals: Sequence[int]) -> list[int]:
        return give_back(self.counters(keys), reserved, actuals)

    async def seed(self, key: str, spent: int, ttl_ms: int) -> None:
        slot = self.slots.get(key)
        if slot is None:
            self.slots[key] = [spent, 0]
        # else: this process counted the window already; its counters are newer than the ledger

    async def read(self, keys: Sequence[str]) -> list[tuple[int, int]]:
        return [tuple(self.slots.get(k) or (0, 0)) for k in keys]  # type: ignore[misc]

    def counters(self, keys: Sequence[str]) -> list[list[int]]:
        """The [spent, reserved] lists of these keys (made when missing; never replaced)."""
        slots = self.slots
        return [slots.get(k) or slots.setdefault(k, [0, 0]) for k in keys]


@dataclass(slots=True, eq=False)
class Plan:
    """The budgets that count one kind of request (same model, candidates, caller, tags and
    task) and their current windows: made once, kept until the first of those windows ends
    or the budgets change, so admission is a dict lookup and a loop over counters."""

    budgets: list[Budget]
    keys: list[str]  # each window's counters in the book
    starts: list[float]
    ends: list[float | None]
    limits: list[int]
    since: float  # the latest window start (a clock set back makes the plan stale)
    until: float  # the first window end (inf: only `total` budgets)
    caller: object  # what stood for the key's own budgets when it was made (a changed key: a new object)
    # Per budget, the one provider it is charged for (provider budgets), else None; () when
    # no budget is a provider's: every one is charged what the request cost.
    only: tuple[str | None, ...]
    # With the in-process book, its [spent, reserved] per window (the book's own lists).
    counters: list[list[int]] = field(default_factory=list)


@dataclass(slots=True)
class Hold:
    """What one request holds: settled exactly once."""

    plan: Plan
    amount: int
    settled: bool = False


# (budget, window start) -> the spend the durable ledger already holds in that window, USD.
Seeder = Callable[[Budget, float], Awaitable[float]]
# A key's own budgets (the keys' store provides them; empty without).
KeyBudgets = Callable[[str], Sequence[Budget]]


class Budgets:
    """Budgets that apply, their windows, the holds, and the alerts spend crossing them fires."""

    def __init__(
        self,
        budgets: Sequence[Budget],
        book: Book | None = None,
        *,
        seed: Seeder | None = None,
        alerts: AlertSink | None = None,
        key_budgets: KeyBudgets | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.index = Index.of(budgets)
        self.book: Book = book or LocalBook()
        self._local = self.book if isinstance(self.book, LocalBook) else None  # the synchronous fast path
        self._seed = seed
        self.alerts: AlertSink = alerts or NoAlerts()
        self.key_budgets = key_budgets
        self.clock = clock
        self._seeded: set[str] = set()
        self._seeding: dict[str, asyncio.Future[None]] = {}
        # budget id -> (start, end, counter key) of the window requests last fell in
        self._slots: dict[str, tuple[float, float | None, str]] = {}
        self._fired: set[str] = set()  # this process's memory of once-per-window alerts
        self._settling: set[asyncio.Task[None]] = set()
        self._plans: dict[Hashable, Plan] = {}  # a kind of request -> its plan (see `plan`)
        self._generation = 0  # budgets replaced: plans made before are not kept

    def replace(self, budgets: Sequence[Budget]) -> None:
        """New budget definitions (an admin change); counters are kept by id and window."""
        self.index = Index.of(budgets)
        self._plans.clear()
        self._generation += 1

    def all(self) -> list[Budget]:
        return list(self.index.by_id.values())

    def slot(self, b: Budget, now: float) -> tuple[float, float | None, str]:
        """The window holding `now` (start, end) and its counters' key, made once per window."""
        s = self._slots.get(b.id)
        if s is None or (s[1] is not None and now >= s[1]) or now < s[0]:
            start, end = window(b.period, now)
            s = self._slots[b.id] = (start, end, f"{b.id}:{int(start)}")
        return s

    def window_of(self, b: Budget, now: float) -> tuple[float, float | None]:
        start, end, _ = self.slot(b, now)
        return start, end

    async def admit(self, r: Request, amount_usd: float) -> Hold | None:
        """Hold `amount_usd` against every budget that applies to `r`, or raise
        BudgetExceeded naming the first budget without room. None: no budget applies."""
        shape = (r.model, tuple(r.providers), r.tags, r.task, r.key_id, r.team, r.user)
        kb = self._key_budgets(r.key_id)  # a key's changed budgets are a new list
        plan = self.kept_plan(shape, kb) or await self.plan(shape, r.key_id, lambda: r, kb)
        if not plan.budgets:
            return None
        return self.hold_now(plan, amount_usd) or await self.hold(plan, amount_usd)

    def _key_budgets(self, key_id: str | None) -> Sequence[Budget]:
        if self.key_budgets is not None and key_id is not None:
            return self.key_budgets(key_id)
        return ()

    def kept_plan(self, shape: Hashable, caller: object) -> Plan | None:
        """The plan of requests of this `shape` (everything their Request is made of, the key
        id among it) when one is kept and current, else None (make it with `plan`). `caller`:
        an object that is new whenever the key's own budgets may have changed (the verified
        key's principal; the key's budget list). A plan without budgets: none counts them."""
        p = self._plans.get(shape)
        if p is None or p.caller is not caller or not p.since <= self.clock() < p.until:
            return None
        return p

    async def plan(self, shape: Hashable, key_id: str | None, request: Callable[[], Request], caller: object) -> Plan:
        """Make (and keep) the plan of requests of this `shape`: the budgets that count
        `request()`, their windows seeded from the ledger the first time."""
        kb = self._key_budgets(key_id)
        r = request()
        r.key_budgets = kb
        generation = self._generation
        p = await self._make_plan(self.index.applying(r), caller, self.clock())
        if generation == self._generation:  # else the budgets changed while it seeded
            if len(self._plans) >= MAX_PLANS:
                self._plans.clear()  # clients choose tags and tasks: the kinds are unbounded
            self._plans[shape] = p
        return p

    async def _make_plan(self, applying: list[Budget], caller: object, now: float) -> Plan:
        keys: list[str] = []
        starts: list[float] = []
        ends: list[float | None] = []
        since, until = 0.0, math.inf
        for b in applying:
            start, end, k = self.slot(b, now)
            if k not in self._seeded:
                await self._seed_once(b, start, end, k)
            keys.append(k)
            starts.append(start)
            ends.append(end)
            since = max(since, start)
            if end is not None:
                until = min(until, end)
        only = tuple(b.match if b.scope == "provider" else None for b in applying)
        return Plan(
            applying, keys, starts, ends, [b.nano_limit for b in applying], since, until, caller,
            only if any(only) else (),
            self._local.counters(keys) if self._local is not None else [],
        )  # fmt: skip

    def hold_now(self, plan: Plan, amount_usd: float) -> Hold | None:
        """With the in-process book, hold `amount_usd` against each of the plan's budgets,
        all or none (BudgetExceeded); None with a shared book (use `hold`)."""
        if self._local is None:
            return None
        amount = to_nano(amount_usd)
        refused = take(plan.counters, plan.limits, amount)
        if refused >= 0:
            self._refuse(plan, refused)
        return Hold(plan, amount)

    async def hold(self, plan: Plan, amount_usd: float) -> Hold:
        """Hold `amount_usd` against each of the plan's budgets, all or none."""
        if (held := self.hold_now(plan, amount_usd)) is not None:
            return held
        amount = to_nano(amount_usd)
        now = self.clock()
        ttls = [0 if end is None else int((end - now + 86400) * 1000) for end in plan.ends]  # a day past its end
        refused = await self.book.reserve(plan.keys, plan.limits, amount, ttls)
        if refused >= 0:
            self._refuse(plan, refused)
        return Hold(plan, amount)

    def _refuse(self, plan: Plan, i: int) -> NoReturn:
        now = self.clock()
        b = plan.budgets[i]
        self._exceeded(b, plan.starts[i], now)
        raise self._refusal(b, now)

    async def _seed_once(self, b: Budget, start: float, end: float | None, k: str) -> None:
        """The window's spend so far from the ledger, once per process; concurrent
        requests wait for the one read."""
        fut = self._seeding.get(k)
        if fut is not None:
            await asyncio.shield(fut)
            return
        fut = self._seeding[k] = asyncio.get_running_loop().create_future()
        try:
            spent = await self._seed(b, start) if self._seed is not None else 0.0
            ttl = 0 if end is None else int((end - self.clock() + 86400) * 1000)
            await self.book.seed(k, to_nano(spent), ttl)
            self._seeded.add(k)
            fut.set_result(None)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: waiters re-raise it, nobody else must log it
            raise
        finally:
            del self._seeding[k]

    def _refusal(self, b: Budget, now: float) -> BudgetExceeded:
        start, end = self.window_of(b, now)
        if end is None:
            return BudgetExceeded(
                f"The {b.label()} is exhausted; a total budget never resets: ask an admin to raise its limit."
            )
        return BudgetExceeded(
            f"The {b.label()} is exhausted for the window from {iso(start)}; it resets at {iso(end)} "
            f"(in {max(1, int(end - now))} s).",
            retry_after_s=end - now,
        )

    def settle(self, hold: Hold | None, actual_usd: float | None, provider: str | None) -> None:
        """The request ended: release its hold and charge what it really cost (None or 0:
        nothing was billed) to its budgets; a provider budget is charged only when its
        provider answered. Never raises, never waits: a shared book settles in a task."""
        if hold is None or hold.settled:
            return
        hold.settled = True
        plan = hold.plan
        actual = to_nano(actual_usd) if actual_usd else 0
        if self._local is not None and not plan.only:
            # The common case in one pass (give_back's steps without its lists, and the alert
            # checks only when a budget is past its quiet point): 4.4 against 6.7 µs per
            # admission and settlement of three budgets, measured.
            amount, loud = hold.amount, False
            for b, c in zip(plan.budgets, plan.counters, strict=True):
                left = c[1] - amount
                c[1] = left if left > 0 else 0
                c[0] += actual
                loud = loud or c[0] >= b.quiet_below
            if loud:
                self._after_settle(plan, [c[0] for c in plan.counters], actual)
            return
        if plan.only:
            actuals = [actual if p is None or p == provider else 0 for p in plan.only]
        else:
            actuals = [actual] * len(plan.budgets)
        if self._local is not None:
            self._after_settle(plan, give_back(plan.counters, hold.amount, actuals), actual)
            return
        task = asyncio.get_running_loop().create_task(self._settle_shared(hold, actuals, actual))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle_shared(self, hold: Hold, actuals: list[int], actual: int) -> None:
        try:
            spent = await self.book.settle(hold.plan.keys, hold.amount, actuals)
        except Exception as exc:  # the book logs its own outage; the hold expires with its window
            log.error("budget.settle_failed", error=f"{type(exc).__name__}: {exc}", keys=hold.plan.keys)
            return
        self._after_settle(hold.plan, spent, actual)

    async def close(self) -> None:
        """Wait for settlements under way (shutdown)."""
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)

    # --- alerts -------------------------------------------------------------------------

    def _after_settle(self, plan: Plan, spent: list[int], actual: int) -> None:
        if actual <= 0:
            return
        now = 0.0
        for b, start, end, s in zip(plan.budgets, plan.starts, plan.ends, spent, strict=True):
            if s < b.quiet_below:
                continue
            now = now or self.clock()
            limit = b.nano_limit
            if s >= limit:
                self._exceeded(b, start, now)
                continue
            for at in b.alert_at:
                if at < 1.0 and s >= at * limit:
                    self._fire("budget.threshold", b, start, f"{at:g}", threshold=at, spent_usd=s / 1e9)
            if end is not None and now > start:
                length, elapsed = end - start, now - start
                if elapsed >= FORECAST_AFTER * length and s * length / elapsed > limit:
                    self._fire(
                        "budget.forecast",
                        b,
                        start,
                        "forecast",
                        spent_usd=s / 1e9,
                        projected_usd=round(s * length / elapsed / 1e9, 6),
                    )

    def _exceeded(self, b: Budget, start: float, now: float) -> None:
        self._fire("budget.exceeded", b, start, "exceeded")

    def _fire(self, type: str, b: Budget, start: float, what: str, **fields: object) -> None:
        once = f"budget:{b.id}:{int(start)}:{what}"
        if once in self._fired:
            return
        self._fired.add(once)
        _, end = window(b.period, start) if b.period != "total" else (0.0, None)
        body = {
            "budget": {"id": b.id, "scope": b.scope, "match": b.match, "period": b.period, "limit_usd": b.limit_usd},
            "window_start": iso(start),
            "window_end": iso(end) if end is not None else None,
            **fields,
        }
        log.warning(type, once_per=once, **body)
        self.alerts.fire(type, once_per=once, **body)

    # --- reading ------------------------------------------------------------------------

    async def status(self, budgets: Sequence[Budget]) -> list[dict[str, object]]:
        """Each budget's current window: spent, reserved, remaining, reset (admin views)."""
        now = self.clock()
        out: list[dict[str, object]] = []
        pending = []
        for b in budgets:
            start, end, k = self.slot(b, now)
            if k not in self._seeded:
                await self._seed_once(b, start, end, k)
            pending.append((b, start, end, k))
        counters = await self.book.read([k for *_, k in pending])
        for (b, start, end, _), (s, r) in zip(pending, counters, strict=True):
            out.append(
                {
                    "window_start": iso(start) if end is not None else None,
                    "resets_at": iso(end) if end is not None else None,
                    "spent_usd": round(s / 1e9, 9),
                    "reserved_usd": round(r / 1e9, 9),
                    "remaining_usd": round(max(0, b.nano_limit - s) / 1e9, 9),
                }
            )
        return out
