"""The money side of a request, wired together: the store, the durable ledger's writer and
the budgets, built at start only when configured (`store`, `budgets`, or the admin API's
master key); admission's hold on the request's worst-case cost, and the request's end
(settle the hold, queue its ledger rows). Unconfigured, the app holds None and the
request path does one lookup."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from aiohttp import web

from aiogw.accounting.cost import price_version
from aiogw.accounting.ledger_store import LedgerWriter, spend_report, spent_since
from aiogw.adapters._base import Target
from aiogw.admission import budget_store
from aiogw.admission.budgets import Budget, Request, from_config, from_key
from aiogw.admission.keys import KeyRecord, Keys, budgets_of
from aiogw.admission.principal import Principal
from aiogw.admission.reserve import Book, Budgets, Hold, KeyBudgets
from aiogw.alerts.sink import AlertSink
from aiogw.attempts.outcome import Control, Outcome
from aiogw.attempts.walk import embedding_tokens_estimate, prompt_tokens_estimate
from aiogw.config import Config, StoreConfig
from aiogw.errors import GatewayError
from aiogw.ids import time_ordered_id
from aiogw.routing.token_ratio import TokenRatios
from aiogw.runtime import ModelRoute
from aiogw.server.keys import DISPATCHER, HOLD, PRINCIPAL, PUBLIC_MODEL
from aiogw.store.base import Store, open_store
from aiogw.supervise import supervise
from aiogw.telemetry.logs import get_logger
from aiogw.types import EmbeddingRequest, ParsedChat

log = get_logger("aiogw.money")

# Without max_tokens, the output a hold assumes (a target's configured cap wins): the bound
# on overspend is only as good as this guess, so clients that set max_tokens get an exact one.
UNCAPPED_OUTPUT_TOKENS = 4096
BUDGETS_REFRESH_S = 2.0  # budgets another replica's admin API made are seen within this
MAX_KEY_BUDGET_LISTS = 10_000  # keys whose budget lists are kept made (like the key cache)
PER_MILLION = 1_000_000


def needed(config: Config) -> bool:
    """The store (and with it the ledger) is opened only for these (feedback keeps its
    request memory there, and spot checks are costed in the ledger)."""
    return (
        config.store is not None
        or bool(config.budgets)
        or config.auth.master_key is not None
        or config.feedback_groups != frozenset()
    )


def worst_case_usd(
    targets: Sequence[Target], prompt_tokens: int, output_cap: int | None, ratios: TokenRatios | None = None
) -> float:
    """The most any candidate target could charge: prompt estimate (in that target's tokens)
    x input price + max output x output price (unpriced targets cost nothing here, as in
    the ledger)."""
    worst = 0.0
    for t in targets:
        p = t.price
        if p is None:
            continue
        out = output_cap or t.max_output_tokens or UNCAPPED_OUTPUT_TOKENS
        prompt = ratios.scale(t, prompt_tokens) if ratios is not None else prompt_tokens
        worst = max(worst, (prompt * p.input + out * p.output) / PER_MILLION)
    return worst


class Money:
    def __init__(
        self,
        store: Store,
        writer: LedgerWriter,
        config_budgets: list[Budget],
        book: Book | None = None,
        *,
        alerts: AlertSink | None = None,
        key_budgets: KeyBudgets | None = None,
    ) -> None:
        self.store = store
        self.writer = writer
        self.config_budgets = config_budgets
        self.budgets = Budgets(config_budgets, book, seed=self.seed, alerts=alerts, key_budgets=key_budgets)
        self._refresh: asyncio.Task[None] | None = None
        self._versions: dict[str, str] = {}  # target id -> its price version (prices are fixed per runtime)

    def attach_keys(self, keys: Keys) -> None:
        """Virtual keys' own budgets join those that apply to their requests, and a key's
        admin view shows its spend and what remains per window."""
        # A key's Budget list is made once per cached record (a changed key is a new record).
        made: dict[str, tuple[KeyRecord, list[Budget]]] = {}

        def key_budgets(key_id: str) -> Sequence[Budget]:
            record = keys.verified_record(key_id)
            if record is None:
                return ()  # the same empty list each time: admission keeps its plan
            hit = made.get(key_id)
            if hit is not None and hit[0] is record:
                return hit[1]
            if len(made) >= MAX_KEY_BUDGET_LISTS:
                made.clear()
            budgets = from_key(budgets_of(record))
            made[key_id] = (record, budgets)
            return budgets

        self.budgets.key_budgets = key_budgets

        async def spend_of(key_id: str) -> list[dict[str, Any]]:
            record = await keys.get(key_id)
            budgets = from_key(budgets_of(record)) if record is not None else []
            status = await self.budgets.status(budgets)
            return [
                {"period": b.period, "limit_usd": b.limit_usd, "alert_at": list(b.alert_at), **st}
                for b, st in zip(budgets, status, strict=True)
            ]

        keys.spend_of = spend_of

    # --- admission ----------------------------------------------------------------------

    async def admit(
        self,
        request: web.Request,
        route: ModelRoute,
        control: Control,
        outcome: Outcome,
        *,
        parsed: ParsedChat | None = None,
        embedding: EmbeddingRequest | None = None,
    ) -> None:
        """Hold the request's worst case against its budgets (BudgetExceeded: a 402)."""
        budgets = self.budgets
        if not budgets.index and budgets.key_budgets is None:
            return  # no budget is configured, nor any key with its own
        principal = request[PRINCIPAL]
        fallbacks = control.fallbacks
        tags = outcome.tags or control.tags
        # What decides the budgets that apply; the plan is made once per such kind of request.
        shape = (route.name, tuple(f.name for f in fallbacks) if fallbacks else (), tags, outcome.task,
                 principal.key_id, principal.team, principal.user)  # fmt: skip

        def made() -> Request:
            return Request(
                model=route.name,
                providers=[t.provider for t in _candidates(route, fallbacks)],
                tags=tags,
                task=outcome.task,
                key_id=principal.key_id,
                team=principal.team,
                user=principal.user,
            )

        # A key re-read from the store (every 0.5 s, or changed) comes with a new principal:
        # its own budgets are read again then, not on every request.
        plan = budgets.kept_plan(shape, principal) or await budgets.plan(shape, principal.key_id, made, principal)
        if not plan.budgets:
            return  # no budget counts this request: its worst case is never needed
        targets = _candidates(route, fallbacks)
        if parsed is not None:
            ratios = request.app[DISPATCHER].ratios
            amount = worst_case_usd(targets, prompt_tokens_estimate(parsed), parsed.req.output_cap, ratios)
        else:
            assert embedding is not None
            amount = _embed_cost(targets, embedding_tokens_estimate(embedding))
        request[HOLD] = budgets.hold_now(plan, amount) or await budgets.hold(plan, amount)

    # --- the request's end --------------------------------------------------------------

    def finish(
        self,
        request: web.Request,
        p: Principal,
        rid: str,
        outcome: Outcome,
        status: int,
        error: GatewayError | None,
        client_closed: bool,
        duration_s: float,
    ) -> None:
        """Settle the hold and queue the ledger rows. Runs in the middleware's `finally`,
        whatever ended the request (an answer, an error, a cancellation, a disconnect)."""
        target = outcome.target
        hold: Hold | None = request.get(HOLD)
        if hold is not None:
            self.budgets.settle(hold, outcome.cost_usd, target.provider if target is not None else None)
        model = request.get(PUBLIC_MODEL)
        if model is None:
            return  # refused before a model was named: nothing to account
        self.record(rid, outcome, model, p, status, error, client_closed, duration_s)

    def record(
        self,
        rid: str,
        outcome: Outcome,
        model: str,
        p: Principal,
        status: int,
        error: GatewayError | None,
        client_closed: bool,
        duration_s: float,
    ) -> None:
        """Queue the ledger rows of a request: a client's, or a call the gateway made itself
        (a spot check's judge, the semantic cache's embedding under `<request id>/embedding`)."""
        target = outcome.target
        if error is not None and error.code in _NAMELESS:
            model = "(unknown)"  # the client's free text, not one of our names
        if error is not None:
            state = error.code or error.type
        elif outcome.stream_error is not None:
            state = "stream_error"
        elif client_closed or outcome.client_closed:
            state = "client_closed"
        else:
            state = "ok"
        who = (p.key_id, p.key_name or None, p.team, p.user, outcome.tags, outcome.task, model)
        now = time.time()
        tokens = _tokens(outcome.usage) if outcome.usage is not None else _NO_TOKENS
        cost = outcome.cost_usd or 0.0
        version = ""
        if target is not None:
            version = self._versions.get(target.id) or self._versions.setdefault(target.id, price_version(target))
        provider, upstream = (target.provider, outcome.model or target.model) if target is not None else ("", "")
        add = self.writer.add
        row_id = time_ordered_id("l_", now)
        add((row_id, now, "request", rid, *who, provider, upstream, *tokens, cost, outcome.saved_usd,
             outcome.cache_status, version,
             state, status, round(duration_s * 1000, 2)))  # fmt: skip
        attempts = outcome.attempts
        if len(attempts) < 2:
            # One attempt (or none: a cache hit, a refusal): the request row is its record,
            # with the same target, tokens, cost and status; a row of its own would double
            # the ledger's writes for nothing a report reads (see README, "The ledger").
            return
        # The answering attempt is the last one at the answering target; it carries the
        # usage and cost (the request row has them too: sum one kind, never both).
        won = -1
        if target is not None:
            for i in range(len(attempts) - 1, -1, -1):
                if attempts[i].target == target.id:
                    won = i
                    break
        for i, a in enumerate(attempts):
            a_id = f"{row_id}.{i}"  # after the request's row in the id order
            if i == won:
                add((a_id, now, "attempt", rid, *who, provider, upstream, *tokens, cost, 0.0, "",
                     version, a.failure or state, status, round(a.latency_ms, 2)))  # fmt: skip
            else:
                a_provider, _, a_model = a.target.partition("/")
                add((a_id, now, "attempt", rid, *who, a_provider, a_model, *_NO_TOKENS, 0.0, 0.0, "",
                     "", a.failure or "ok", 0, round(a.latency_ms, 2)))  # fmt: skip

    # --- reading ------------------------------------------------------------------------

    def all_budgets(self) -> list[Budget]:
        return self.budgets.all()

    async def reload_budgets(self) -> None:
        admin = await budget_store.load(self.store)
        self.budgets.replace([*self.config_budgets, *admin])

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(BUDGETS_REFRESH_S)
            await self.reload_budgets()

    async def gateway_spend(self) -> dict[str, Any]:
        """/v1/gateway/spend's shape, from the durable ledger (since the first row)."""
        dims = ["model", "provider", "upstream_model", "task"]
        await self.writer.flush()  # what is queued is part of the answer
        rows, _ = await spend_report(self.store, [*dims, "tags_raw"], None, None)  # tags_raw: the whole tag set
        first = await self.store.fetchone("SELECT MIN(at) FROM aiogw_ledger WHERE kind = 'request'")
        out = [
            {
                "model": r["model"],
                "provider": r["provider"],
                "upstream_model": r["upstream_model"],
                "task": r["task"],
                "tags": r["tags_raw"],
                "requests": r["requests"],
                "prompt_tokens": r["input_tokens"],
                "completion_tokens": r["output_tokens"],
                "cost_usd": r["cost_usd"],
            }
            for r in rows
        ]
        total = round(sum(r["cost_usd"] for r in out), 9)
        return {"since": first[0] if first and first[0] is not None else time.time(), "total_usd": total, "rows": out}

    # --- lifecycle ----------------------------------------------------------------------

    async def seed(self, b: Budget, start: float) -> float:
        """The window's spend the ledger holds; queued rows are written first, so none is missed."""
        await self.writer.flush()
        return await spent_since(self.store, b.scope, b.match, start)

    def start(self) -> None:
        self.writer.start()
        self._refresh = asyncio.get_running_loop().create_task(
            supervise("budgets-refresh", self._refresh_loop, log, "budgets.refresh_died")
        )

    async def close(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh
        await self.budgets.close()
        await self.writer.close()
        book = self.budgets.book
        if hasattr(book, "close"):
            await book.close()
        await self.store.close()


def _candidates(route: ModelRoute, fallbacks: tuple[ModelRoute, ...]) -> Sequence[Target]:
    if not fallbacks:
        return route.targets
    return [*route.targets, *(t for fb in fallbacks for t in fb.targets)]


def _embed_cost(targets: Sequence[Target], tokens: int) -> float:
    prices = [t.price.input for t in targets if t.price is not None]
    return max(prices, default=0.0) * tokens / PER_MILLION


_NO_TOKENS = (0, 0, 0, 0, 0)
_NAMELESS = frozenset({"model_not_found", "invalid_model_name"})


def _tokens(u: Any) -> tuple[int, int, int, int, int]:
    details = u.prompt_tokens_details
    written = getattr(details, "cache_write_tokens", 0) if details else 0
    written = written if isinstance(written, int) else 0
    return (u.prompt_tokens, u.cached_tokens, written, u.completion_tokens, u.reasoning_tokens)


async def build(config: Config, *, alerts: AlertSink | None = None, key_budgets: KeyBudgets | None = None) -> Money:
    """Open the store (migrating it), start the ledger writer and load the budgets."""
    url = config.store_url
    store = await open_store(url)
    sc = config.store or StoreConfig()
    writer = LedgerWriter(store, sc.ledger_flush_ms / 1000, sc.ledger_batch)
    book: Book | None = None
    if config.state.redis_url:
        from aiogw.state.budget_book import RedisBook  # noqa: PLC0415 - the redis client only when configured

        book = RedisBook(config.state)
    money = Money(store, writer, from_config(config.budgets), book, alerts=alerts, key_budgets=key_budgets)
    await money.reload_budgets()
    money.start()
    log.info("money.started", store=store.url_for_logs, budgets=len(money.all_budgets()))
    if config.server.workers > 1 and not config.state.redis_url and money.all_budgets():
        log.warning(
            "budgets.per_worker",
            workers=config.server.workers,
            why="without state.redis_url each worker process holds its own budget counters: "
            "together they may spend up to workers x each limit; set state.redis_url",
        )
    return money


@contextlib.asynccontextmanager
async def running(config: Config, *, alerts: AlertSink | None = None) -> AsyncIterator[Money]:
    money = await build(config, alerts=alerts)
    try:
        yield money
    finally:
        await money.close()
