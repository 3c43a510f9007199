"""Learning from feedback, wired together: the request memory (written once per answered
request of a group that uses quality, in the middleware's `finally`), `POST /v1/feedback`,
the spot checks, and the quality observations they make, shared with the other replicas
through Redis when state is shared. Built at start only when some group uses `strategy:
quality` or a `quality` section, or `feedback.enabled`; otherwise the app holds None and
a request pays one lookup."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from aiogw.admission.principal import ANONYMOUS
from aiogw.attempts.dispatcher import Dispatcher
from aiogw.attempts.outcome import Control, Outcome
from aiogw.config import Config, SpotCheckConfig
from aiogw.errors import GatewayError, NotFound
from aiogw.ids import hex_id
from aiogw.ingress.body import read_body
from aiogw.ingress.chat import parse_chat
from aiogw.quality import feedback as fb
from aiogw.quality.judge import Verdict
from aiogw.quality.memory import Remembered, RequestMemory, caller_scope
from aiogw.quality.spot_check import TAG, TASK, Capture, SpotChecker
from aiogw.runtime import Runtime
from aiogw.server.keys import DISPATCHER, FEEDBACK, FEEDBACK_PENDING, METRICS, MONEY, PRINCIPAL, QUALITY, RUNTIME
from aiogw.server.money import Money
from aiogw.store.base import Store
from aiogw.supervise import supervise
from aiogw.telemetry.logs import get_logger
from aiogw.telemetry.metrics import GatewayMetrics
from aiogw.types import ParsedChat

log = get_logger("aiogw.feedback")

PURGE_EVERY_S = 3600.0  # memories past the retention are deleted this often
SPOT_CHECK_CONTROL = Control(tags=TAG, task=TASK)


def needed(config: Config) -> bool:
    return config.feedback_groups != frozenset()


@dataclass(slots=True)
class Pending:
    """A request to remember when it has been answered."""

    group: str
    capture: Capture | None  # set when the request was sampled for a spot check


class Feedback:
    def __init__(
        self,
        app: web.Application,
        config: Config,
        store: Store,
        metrics: GatewayMetrics,
        *,
        money: Money | None,
        dispatcher: Dispatcher,
        runtime: Runtime,
    ) -> None:
        self._app = app
        self._metrics = metrics
        self.store = store
        self.groups = config.feedback_groups  # None: every route
        self._metrics_of = {
            g.name: frozenset({fb.ALWAYS_KNOWN, *(g.quality.metrics if g.quality else ())}) for g in config.models
        }
        self._spot: dict[str, SpotCheckConfig] = {
            g.name: g.quality.spot_check for g in config.models if g.quality is not None and g.quality.spot_check
        }
        self.bus = None
        if config.state.redis_url:
            from aiogw.state.feedback_bus import FeedbackBus  # noqa: PLC0415 - the redis client only when configured

            self.bus = FeedbackBus(config.state, config.feedback.shared_ttl_s, self._heard)
        self.memory = RequestMemory(store, config.feedback, shared=self.bus)
        self.checker: SpotChecker | None = None
        if self._spot:
            self.checker = SpotChecker(
                store, self._grader(dispatcher, runtime, money), self._verdict, self._count_spot_check,
                config.feedback.spot_check_queue,
            )  # fmt: skip
        self._purge: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    # --- the request path ---------------------------------------------------------------

    def begin(self, request: web.Request, group: str, parsed: ParsedChat) -> None:
        """A chat request of `group` is about to be answered: remember it at its end, and
        sample it for a spot check (its answer is then captured as it is sent)."""
        if self.groups is not None and group not in self.groups:
            return
        capture = None
        spot = self._spot.get(group)
        if spot is not None and random.random() < spot.rate:
            messages = parsed.raw.get("messages")
            capture = Capture(spot.judge, orjson.loads(bytes(messages)) if messages is not None else [])
        request[FEEDBACK_PENDING] = Pending(group, capture)

    def finish(self, request: web.Request, rid: str, outcome: Outcome, status: int, error: GatewayError | None) -> None:
        """The request ended (the middleware's `finally`): remember what answered it; offer
        a sampled answer to the spot checks. Never waits."""
        pending = request.get(FEEDBACK_PENDING)
        target = outcome.target
        if (
            pending is None
            or target is None
            or error is not None
            or status != 200
            or outcome.stream_error is not None
            or outcome.client_closed
            or outcome.cache_status == "hit"  # a stored answer: no target answered this request
        ):
            return
        p = request.get(PRINCIPAL) or ANONYMOUS
        memory = Remembered(
            rid, caller_scope(p.key_id, p.admin), pending.group, outcome.task or "chat", outcome.bucket, target.id,
            self.memory.clock(),
        )  # fmt: skip
        self.memory.remember(memory)
        if pending.capture is not None and self.checker is not None:
            self.checker.offer(memory, pending.capture)

    # --- observations -------------------------------------------------------------------

    def metrics_of(self, group: str) -> frozenset[str]:
        return self._metrics_of.get(group, frozenset({fb.ALWAYS_KNOWN}))

    def observe(self, m: Remembered, metric: str, value: float, source: str, *, origin: str = "local") -> None:
        """One observation for the quality estimates: to this replica's QualityBook (when the
        quality router runs here) and, when taken here, to every other replica."""
        book = self._app[QUALITY]
        if book is not None:
            try:
                book.observe(m.group, m.task, m.bucket, m.target, metric, value, source=source)
            except ValueError:
                if origin == "local":
                    raise  # checked before it got here: a bug, not a client's mistake
                return  # another replica's (another version's) observation this one cannot use
        self._metrics.quality_observations.inc((source, origin))
        if origin == "local" and self.bus is not None:
            obs = {"group": m.group, "task": m.task, "bucket": m.bucket, "target": m.target,
                   "metric": metric, "value": value, "source": source}  # fmt: skip
            self._spawn(self.bus.publish(obs))

    def _heard(self, obs: dict[str, Any]) -> None:
        """Another replica's observation."""
        try:
            m = Remembered("", "", str(obs["group"]), str(obs["task"]), str(obs["bucket"]), str(obs["target"]), 0.0)
            metric, value, source = str(obs["metric"]), float(obs["value"]), str(obs["source"])
        except (KeyError, TypeError, ValueError):
            return  # another version's message
        self.observe(m, metric, value, source, origin="replica")

    def _verdict(self, m: Remembered, v: Verdict) -> None:
        self.observe(m, fb.ALWAYS_KNOWN, 1.0 if v.passed else 0.0, "spot_check")

    def _count_spot_check(self, outcome: str) -> None:
        self._metrics.spot_checks.inc((outcome,))

    def _grader(self, dispatcher: Dispatcher, runtime: Runtime, money: Money | None) -> Any:
        async def grade(body: dict[str, Any]) -> tuple[str, float]:
            """The judge's call through the gateway's own dispatcher: routed, costed, and
            written to the ledger under the spot-check tag, as a request of its own."""
            judge = str(body["model"])
            parsed = parse_chat(orjson.dumps(body))
            route = runtime.resolve(judge)
            outcome = Outcome(tags=TAG, task=TASK)  # (the walk takes the tags from the control)
            rid = "req_" + hex_id(12)
            started = time.perf_counter()
            status, error = 200, None
            try:
                reply = await dispatcher.complete(parsed, route, outcome, SPOT_CHECK_CONTROL)
                return Capture(judge, body=reply.body).answer_text(), outcome.cost_usd or 0.0
            except GatewayError as exc:
                status, error = exc.http_status(), exc
                raise
            finally:
                if money is not None:
                    money.record(rid, outcome, judge, ANONYMOUS, status, error, False, time.perf_counter() - started)

        return grade

    # --- lifecycle ----------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _purge_loop(self) -> None:
        while True:
            await asyncio.sleep(PURGE_EVERY_S)
            deleted = await self.memory.purge()
            if deleted:
                log.info("feedback.memory_purged", rows=deleted)

    async def start(self) -> None:
        self.memory.start()
        if self.bus is not None:
            await self.bus.start()
        if self.checker is not None:
            self.checker.start()
        self._purge = asyncio.get_running_loop().create_task(
            supervise("feedback-purge", self._purge_loop, log, "feedback.purge_died")
        )

    async def close(self) -> None:
        if self._purge is not None:
            self._purge.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purge
        if self.checker is not None:
            await self.checker.close()
        await self.memory.close()
        if self._background:
            await asyncio.wait(self._background, timeout=2.0)
        if self.bus is not None:
            await self.bus.close()


async def post_feedback(request: web.Request) -> web.Response:
    """POST /v1/feedback: 202 with the id of each item stored (all or nothing)."""
    feedback = request.app[FEEDBACK]
    if feedback is None:
        raise NotFound(
            "Feedback is not enabled on this gateway: its operator sets feedback.enabled, or a quality section "
            "on a model group."
        )
    items, batch = fb.parse(await read_body(request))
    p = request[PRINCIPAL]
    accepted = await fb.accept(
        feedback.store,
        feedback.memory,
        items,
        batch,
        caller=caller_scope(p.key_id, p.admin),
        # keys configured: the key that made the request, or the master key; otherwise anyone
        sees_all=p.admin or not request.app[RUNTIME].config.auth.configured,
        metrics_of=feedback.metrics_of,
    )
    for a in accepted:
        feedback.observe(a.memory, a.item.metric, a.item.value, "feedback")
    body = {"items": [{"id": a.id} for a in accepted]} if batch else {"id": accepted[0].id}
    return web.json_response(body, status=202)


async def feedback_ctx(app: web.Application) -> AsyncIterator[None]:
    """After the money side (its store is shared) and the dispatcher (spot checks call it)."""
    config = app[RUNTIME].config
    money = app[MONEY]
    assert money is not None  # money.needed() holds whenever feedback is needed
    feedback = Feedback(
        app, config, money.store, app[METRICS], money=money, dispatcher=app[DISPATCHER], runtime=app[RUNTIME]
    )
    await feedback.start()
    app[FEEDBACK] = feedback
    try:
        yield
    finally:
        await feedback.close()


ROUTES = [web.post("/v1/feedback", post_feedback)]
