"""The attempt loop: walk the router's plan until a target answers, within timeouts, limits,
the request deadline and the retry budget; record every attempt in health and the ledger.

Before the first byte reaches the client a failed attempt fails over to the next target;
after it (the commit point) the stream ends with an OpenAI-shaped error event and
`data: [DONE]`. The pieces: `walk` (a request's state and how it ends), `hedge` (racing
targets), `bounds` (an attempt's deadlines and error mapping), `send` (the upstream call,
unary or streamed), `spans` (tracing), `bookkeeping` (what each attempt reserves, records and releases, and
the request's charge to the ledger); this module holds the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import msgspec

from aiogw.adapters._base import Adapter, Target
from aiogw.attempts.bookkeeping import Bookkeeper
from aiogw.attempts.gate import _AttemptFailed, _FailedAfterCommit, _Gate
from aiogw.attempts.hedge import run_hedged
from aiogw.attempts.outcome import NO_CONTROL, AttemptRecord, Control, Native, Outcome, StreamFormat, StreamSink
from aiogw.attempts.send import Sender
from aiogw.attempts.walk import Attempt, Walk, build_call, embedding_tokens_estimate, give_up, new_walk, retry_pause
from aiogw.errors import AllAttemptsFailed, FailureClass, InvalidRequest
from aiogw.routing import health as health_mod
from aiogw.routing.quality import QualityAsk
from aiogw.routing.retry import RetryBudget
from aiogw.routing.router import Router
from aiogw.runtime import ModelRoute, Runtime
from aiogw.types import CompletionUsage, EmbeddingRequest, ParsedChat, Reply
from aiogw.upstream import http

if TYPE_CHECKING:
    from aiogw.quality.book import QualityBook
    from aiogw.routing.slo import SLOMonitor

T = TypeVar("T")


class Dispatcher:
    """The attempt loop over a `Bookkeeper` (each attempt's health, limits, shared state,
    record and the request's charge) and a `Sender` (the upstream call)."""

    def __init__(
        self,
        client: http.Client,
        runtime: Runtime,
        books: Bookkeeper | None = None,
        *,
        slo: SLOMonitor | None = None,
        quality: QualityBook | None = None,
    ) -> None:
        # Built inside the serving loop. Cached: under Python 3.11 every get_running_loop()
        # makes a getpid() syscall (4% of a request's CPU in py-spy).
        self._loop = asyncio.get_running_loop()
        self._runtime = runtime
        self.books = books = books or Bookkeeper(runtime)
        # What the server's pages and the health checker read.
        self.health, self.limiter, self.ledger, self.shared = books.health, books.limiter, books.ledger, books.shared
        self.ratios = books.ratios
        self.router = Router(self.health, slo=slo, ratios=books.ratios, quality=quality)
        self.slo = slo  # None unless some model group has an SLO
        self._sender = Sender(client, self._loop, runtime.egress, self.limiter, runtime.adapter, books.tracing)
        # Per model group; directly addressed models share their account's (clients choose
        # those names, and one outage should not get a fresh budget per name).
        self._budgets: dict[str, RetryBudget] = {}

    # --- the walk -----------------------------------------------------------------------

    async def _walk(self, w: Walk, attempt: Attempt[T]) -> T:
        route, control, outcome = w.route, w.control, w.outcome
        loop = self._loop
        policy = route.retry
        key = route.name if route.name in self._runtime.routes else route.targets[0].provider + "/*"
        budget = self._budgets.get(key)
        if budget is None:
            budget = self._budgets[key] = RetryBudget(policy.budget_ratio, policy.budget_min_per_s, loop.time())
        budget.on_request(loop.time())
        ask = None
        if route.quality is not None:  # strategy quality's inputs: nothing for other groups
            ask = QualityAsk(outcome.task, w.bucket, control.quality_floor, control.latency_budget_ms)
            outcome.bucket = w.bucket
            if control.strategy not in (None, "quality"):
                outcome.route_reason = f"x-aiogw-strategy {control.strategy}"
        rounds = 0
        while True:
            plan = self.router.plan(
                route,
                now=health_mod.now(),
                strategy=control.strategy,
                fallbacks=control.fallbacks,
                prompt_tokens=w.prompt_tokens,
                max_output_tokens=w.max_output,
                quality=ask,
            )
            if rounds == 0:
                for skip in plan.skipped:
                    outcome.attempts.append(AttemptRecord(skip.target, 0.0, "context_window", skip.reason))
                if plan.pick and self.router.quality is not None:
                    outcome.route_reason = plan.reason
                    self.router.quality.record_pick(route.name, outcome.task, plan.pick)
            found, result = await self._run_plan(w, plan.targets, attempt)
            if found:
                return result  # type: ignore[return-value]
            retryable = [f for f in w.failures if f.may_fail_over and f.failure_class is not FailureClass.CREDENTIAL]
            if not retryable or rounds >= policy.max_rounds:
                break
            pause = retry_pause(policy, rounds, retryable)
            if pause > policy.backoff_max_ms / 1000:
                break  # a provider asking for a long pause: tell the client (retry-after) instead
            if control.deadline is not None and loop.time() + pause >= control.deadline:
                break
            if not budget.try_spend(loop.time()):
                outcome.notes.append("retry budget exhausted: no further rounds")
                break
            rounds += 1
            await asyncio.sleep(pause)
        raise give_up(w, self.deadline_passed(w))

    async def _run_plan(self, w: Walk, targets: list[Target], attempt: Attempt[T]) -> tuple[bool, T | None]:
        """Try the plan's targets in order (hedged when configured); (True, result) on success."""
        pending = list(targets)
        hedge = w.route.hedge
        gate = _Gate()
        if hedge is None:
            while pending:
                if self.deadline_passed(w):
                    return False, None
                task_args = await self.books.prepare(w, pending.pop(0), alternatives=bool(pending))
                if task_args is None:
                    continue
                try:
                    return True, await self.books.attempt(w, gate, attempt, *task_args)
                except _AttemptFailed:
                    continue
            return False, None
        return await run_hedged(w, pending, attempt, hedge, gate, self)

    def deadline_passed(self, w: Walk) -> bool:
        d = w.control.deadline
        return d is not None and self._loop.time() >= d

    # --- non-streaming ------------------------------------------------------------------

    async def complete(
        self,
        parsed: ParsedChat,
        route: ModelRoute,
        outcome: Outcome,
        control: Control = NO_CONTROL,
        native: Native | None = None,
    ) -> Reply:
        """`native`: the client's own API, passed through to the targets that speak it."""

        async def attempt(target: Target, adapter: Adapter, gate: _Gate) -> Reply:
            call = native.call(target, adapter) if native is not None else None
            decode: Callable[[bytes, Target], Reply]
            if call is not None:
                assert native is not None

                def decode(body: bytes, t: Target) -> Reply:
                    return native.reply(body, t, adapter)

            else:
                call = build_call(adapter, parsed, target, self.ratios)
                decode = adapter.decode_response
            outcome.notes.extend(call.notes)
            reply = await self._sender.post(call, target, adapter, decode, gate, control.deadline)
            return self._won(outcome, target, reply)

        w = new_walk(route, control, outcome, parsed)
        reply = await self._walk(w, attempt)
        self.books.account(outcome, route, reply.usage, "chat", w.prompt_tokens)
        return reply

    @staticmethod
    def _won(outcome: Outcome, target: Target, reply: Reply) -> Reply:
        outcome.target, outcome.model, outcome.usage = target, reply.model or target.model, reply.usage
        if reply.finish_reasons:
            outcome.finish_reasons = list(reply.finish_reasons)  # type: ignore[arg-type]
        return reply

    async def embed(
        self, req: EmbeddingRequest, route: ModelRoute, outcome: Outcome, control: Control = NO_CONTROL
    ) -> Reply:
        async def attempt(target: Target, adapter: Adapter, gate: _Gate) -> Reply:
            build, decode = adapter.build_embeddings_call, adapter.decode_embeddings
            if build is None or decode is None:
                raise InvalidRequest(
                    f"{target.id} cannot embed: provider type '{adapter.name}' has no embeddings API.",
                    code="unsupported_model",
                    param="model",
                )

            def decode_reply(body: bytes, t: Target) -> Reply:
                out = decode(body, t, req)
                return Reply(body=out, model=t.model, usage=_embedding_usage(out))

            reply = await self._sender.post(build(req, target), target, adapter, decode_reply, gate, control.deadline)
            return self._won(outcome, target, reply)

        tokens = embedding_tokens_estimate(req)
        walk = Walk(
            route, control, outcome, tokens=tokens, prompt_tokens=tokens, max_output=None, operation="embeddings"
        )
        reply = await self._walk(walk, attempt)
        self.books.account(outcome, route, reply.usage, "embeddings")
        return reply

    async def count_tokens(
        self, parsed: ParsedChat, route: ModelRoute, outcome: Outcome, control: Control = NO_CONTROL
    ) -> int | None:
        """The prompt's exact token count from the first target of the plan that counts in
        the client's own API (`Adapter.build_count_tokens`: Anthropic), never billed; None
        when no target can, or those that can failed (the caller estimates instead)."""
        native = parsed.native
        assert native is not None

        async def attempt(target: Target, adapter: Adapter, gate: _Gate) -> int:
            build, decode = adapter.build_count_tokens, adapter.decode_count_tokens
            if build is None or decode is None or adapter.native_api != native.api:
                raise InvalidRequest(f"{target.id} cannot count tokens", code="unsupported_model")

            def read(body: bytes, t: Target) -> Reply:
                return Reply(body=body, model=t.model)

            reply = await self._sender.post(build(native, target), target, adapter, read, gate, control.deadline)
            outcome.target, outcome.model = target, target.model
            return decode(reply.body, target)

        walk = Walk(route, control, outcome, tokens=0, prompt_tokens=0, max_output=None, operation="count_tokens")
        try:
            return await self._walk(walk, attempt)
        except (InvalidRequest, AllAttemptsFailed):
            return None

    async def health_check(self, target: Target, timeout_s: float) -> Reply:
        """One active health check of `target` (see `Sender.health_check`)."""
        return await self._sender.health_check(target, timeout_s)

    # --- streaming ----------------------------------------------------------------------

    async def stream(
        self,
        parsed: ParsedChat,
        route: ModelRoute,
        outcome: Outcome,
        sink: StreamSink,
        control: Control = NO_CONTROL,
        fmt: StreamFormat | None = None,
        native: Native | None = None,
    ) -> None:
        """Stream one completion into `sink` as OpenAI chunks, or as `fmt`'s events when
        the client speaks another API (passed through where `native` says a target speaks
        it too); raises before the commit point only."""

        async def attempt(target: Target, adapter: Adapter, gate: _Gate) -> None:
            call = native.call(target, adapter) if native is not None else None
            relay = native.relay(target, adapter) if call is not None else None  # type: ignore[union-attr]
            if call is None:
                call = build_call(adapter, parsed, target, self.ratios)
            outcome.notes.extend(call.notes)
            await self._sender.stream_once(
                parsed, w.prompt_tokens, account, target, adapter, call, outcome, sink, gate, control.deadline, fmt,
                relay,
            )  # fmt: skip

        def account(usage: CompletionUsage | None) -> None:
            self.books.account(outcome, route, usage, "chat", w.prompt_tokens)

        w = new_walk(route, control, outcome, parsed)
        try:
            await self._walk(w, attempt)
        except _FailedAfterCommit:
            pass  # already ended with an error event; the attempt is recorded


class _EmbeddingsUsage(msgspec.Struct):
    usage: CompletionUsage | None = None


_decode_embeddings_usage = msgspec.json.Decoder(_EmbeddingsUsage).decode


def _embedding_usage(body: bytes) -> CompletionUsage | None:
    """The usage of an (OpenAI-shaped) embeddings answer: what prices it in the ledger."""
    try:
        return _decode_embeddings_usage(body).usage
    except msgspec.MsgspecError:
        return None  # an answer without a usable usage object is unpriced, not an error
