"""The alert sink the gateway runs: every event is a log line and a metric, and, for each
webhook subscribed to its type, a signed POST delivered off the request path.

`fire` never waits: it dedupes the occurrence (`once_per`) in process, logs, counts and
appends to a bounded queue (full: the oldest event is dropped, logged and counted, so a dead
receiver cannot grow memory). One background task takes events from the queue; with
`state.redis_url` it first claims the occurrence fleet-wide (`SET NX EX` on
`<prefix>:alert:<once_per>`, see fleet_once.py) so one replica sends it, then starts one
delivery per webhook (at most MAX_DELIVERIES at once). A delivery retries connection
errors, timeouts, 5xx and 429 with exponential backoff and jitter (a `retry-after` is
honoured up to `backoff_max_s`), and gives up after `max_attempts` (logged and counted).

The body is the same bytes on every attempt and every replica's id for an occurrence is the
same (a hash of `once_per`), so receivers de-duplicate on `id` whatever happens here.
Deliveries go through the gateway's own upstream client (a POST with a small JSON body is
the one shape it serves); webhook URLs are never logged whole (a Slack-style URL is itself
a secret): logs and metrics name a webhook by its index and host.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import email.utils
import hashlib
import hmac
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson

from aiogw.config import AlertsConfig, WebhookConfig
from aiogw.supervise import supervise
from aiogw.telemetry.logs import get_logger
from aiogw.telemetry.metrics import GatewayMetrics
from aiogw.upstream import http
from aiogw.upstream.egress import Egress, env_proxy, parse_proxy
from aiogw.version import __version__

log = get_logger("aiogw.alerts")

SIGNATURE_HEADER = "x-aiogw-signature"
SEEN_MAX = 10_000  # occurrences remembered in process (the oldest forgotten first)
MAX_DELIVERIES = 8  # webhook POSTs in flight at once, retries included
RESPONSE_LIMIT = 64 * 1024  # a receiver's answer is read (to reuse the connection) up to this
# How long the fleet remembers an occurrence: longer than the longest budget window (a
# calendar month), so a threshold fires once per window; breaker and SLO occurrences carry
# their own time bucket in `once_per` and need not be kept that long.
DEDUPE_TTL_S = 40 * 86400
DEDUPE_TTL_BY_TYPE = {"breaker.open": 3600, "slo.breach": 3600}
RETRYABLE_STATUS = frozenset({408, 425, 429})  # and every 5xx
_OWN_KEYS = frozenset({"id", "type", "at", "event"})  # the body's and the log line's own; a field cannot replace them


class FleetOnce(Protocol):
    """Claims an occurrence for this replica across the fleet."""

    async def first(self, once_per: str, ttl_s: int) -> bool: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    type: str
    once_per: str
    body: bytes  # the exact bytes signed and sent on every attempt
    hooks: tuple[int, ...]  # indexes of the webhooks subscribed to its type


def event_id(once_per: str) -> str:
    """The same for every replica and every retry of one occurrence: receivers dedupe on it."""
    return "evt_" + hashlib.sha256(once_per.encode()).hexdigest()[:32]


def sign(secret: str, body: bytes) -> str:
    """The `x-aiogw-signature` value: HMAC-SHA256 of the exact body bytes, hex."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def retry_after_s(value: str | None, wall: float) -> float | None:
    """A `retry-after` header in seconds (delta-seconds or an HTTP date), None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - wall)


def webhook_name(index: int, hook: WebhookConfig) -> str:
    """How logs name a webhook: its index and host, never its path or query (may be secret)."""
    parts = urlsplit(hook.url)
    return f"webhooks[{index}] {parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def webhook_egress(url: str, env: Mapping[str, str]) -> Egress | None:
    """The environment's proxy for a webhook (HTTPS_PROXY / HTTP_PROXY / NO_PROXY, as for
    providers without a `proxy` of their own); None: direct."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    found = env_proxy(parts.scheme, parts.hostname or "", port, env)
    if found is None:
        return None
    var, proxy = found
    try:
        return Egress(None, parse_proxy(proxy))
    except ValueError as exc:  # the message never repeats the URL (it may hold a password)
        log.error("alerts.bad_proxy", variable=var, error=str(exc), sending="direct")
        return None


def _subscribed(hook: WebhookConfig, type_: str) -> bool:
    return "*" in hook.events or type_ in hook.events


class Alerts:
    """The gateway's AlertSink (aiogw.alerts.sink). Without webhooks it only logs and counts:
    no queue, no task, no Redis."""

    def __init__(
        self,
        cfg: AlertsConfig,
        client: http.Client | None,
        metrics: GatewayMetrics,
        *,
        fleet: FleetOnce | None = None,
        wall: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        env: Mapping[str, str] | None = None,  # where proxies are read (the process environment)
    ) -> None:
        self._hooks = cfg.webhooks
        env = os.environ if env is None else env
        self._egress = [webhook_egress(h.url, env) for h in self._hooks]
        assert client is not None or not self._hooks, "webhooks need an HTTP client"
        self._client = client
        self._metrics = metrics
        self._fleet = fleet if self._hooks else None
        self._wall = wall
        self._rng = rng or random.Random()
        self._queue_size = cfg.queue_size
        self._queue: collections.deque[Event] = collections.deque()
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._busy = 0  # events taken from the queue and not yet fully delivered, plus deliveries
        self._slots = asyncio.Semaphore(MAX_DELIVERIES)
        self._deliveries: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None

    # --- firing (synchronous, from anywhere on the loop) ------------------------------------

    def fire(self, type: str, *, once_per: str, **fields: Any) -> None:
        seen = self._seen
        if once_per in seen:
            self._metrics.alerts.inc((type, "duplicate"))
            return
        seen[once_per] = None
        if len(seen) > SEEN_MAX:
            seen.popitem(last=False)
        hooks = tuple(i for i, h in enumerate(self._hooks) if _subscribed(h, type))
        eid = event_id(once_per)
        if not hooks:  # nothing to deliver: the event is this line and this count
            self._announce(type, eid, fields)
            return
        at = datetime.datetime.fromtimestamp(self._wall(), datetime.UTC).isoformat(timespec="milliseconds")
        body = orjson.dumps({**fields, "id": eid, "type": type, "at": at.replace("+00:00", "Z")})
        if len(self._queue) >= self._queue_size:
            dropped = self._queue.popleft()
            self._metrics.alerts.inc((dropped.type, "dropped"))
            log.warning("alert.dropped", type=dropped.type, id=dropped.id, queue_size=self._queue_size)
            self._busy -= 1
        self._queue.append(Event(eid, type, once_per, body, hooks))
        self._busy += 1
        self._idle.clear()
        self._wake.set()
        if self._fleet is None:  # no fleet to ask: this replica sends it, announce it now
            self._announce(type, eid, fields)

    def _announce(self, type_: str, eid: str, fields: dict[str, Any]) -> None:
        self._metrics.alerts.inc((type_, "fired"))
        log.warning("alert", type=type_, id=eid, **{k: v for k, v in fields.items() if k not in _OWN_KEYS})

    # --- delivery -------------------------------------------------------------------------

    def start(self) -> None:
        if self._hooks and self._task is None:
            self._task = asyncio.create_task(supervise("alerts", self._run, log, "alerts.loop_died"))

    async def _run(self) -> None:
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            event = self._queue.popleft()
            try:
                if self._fleet is not None:
                    ttl = DEDUPE_TTL_BY_TYPE.get(event.type, DEDUPE_TTL_S)
                    if not await self._fleet.first(event.once_per, ttl):
                        self._metrics.alerts.inc((event.type, "duplicate"))
                        log.debug("alert.sent_by_another_replica", type=event.type, id=event.id)
                        continue
                    fields = orjson.loads(event.body)
                    for k in ("id", "type", "at"):
                        fields.pop(k, None)
                    self._announce(event.type, event.id, fields)
                for index in event.hooks:
                    await self._slots.acquire()
                    self._started()
                    task = asyncio.create_task(self._deliver(index, event))
                    self._deliveries.add(task)
                    task.add_done_callback(self._delivery_done)
            finally:
                self._finished()

    def _started(self) -> None:
        self._busy += 1

    def _finished(self) -> None:
        self._busy -= 1
        if self._busy <= 0:
            self._busy = 0
            self._idle.set()

    def _delivery_done(self, task: asyncio.Task[None]) -> None:
        self._deliveries.discard(task)
        self._slots.release()
        self._finished()

    async def _deliver(self, index: int, event: Event) -> None:
        hook = self._hooks[index]
        name = webhook_name(index, hook)
        label = str(index)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"aiogw/{__version__}",
            "x-aiogw-event-id": event.id,
            "x-aiogw-event-type": event.type,
        }
        if hook.secret is not None:
            headers[SIGNATURE_HEADER] = sign(hook.secret.reveal(), event.body)
        assert self._client is not None
        why = ""
        for attempt in range(1, hook.max_attempts + 1):
            wait = None
            try:
                async with asyncio.timeout(hook.timeout_s):
                    async with self._client.post(
                        hook.url, event.body, headers, hook.timeout_s, self._egress[index]
                    ) as resp:
                        status = resp.status
                        wait = retry_after_s(resp.headers.get("retry-after"), self._wall())
                        try:
                            await resp.read(RESPONSE_LIMIT)
                        except (OSError, http.ProtocolError):
                            pass  # the status is the answer; the connection is closed on exit
            except (OSError, TimeoutError, http.UnsafeRequest) as exc:
                if isinstance(exc, http.UnsafeRequest):
                    why = str(exc)
                    break  # the URL will not become valid on the next attempt
                why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if 200 <= status < 300:
                    self._metrics.alert_deliveries.inc((label, "delivered"))
                    log.info("alert.delivered", type=event.type, id=event.id, webhook=name, attempts=attempt)
                    return
                why = f"HTTP {status}"
                if status < 500 and status not in RETRYABLE_STATUS:
                    break  # the receiver refused this event (4xx): sending it again changes nothing
            if attempt == hook.max_attempts:
                break
            backoff = min(hook.backoff_max_s, hook.backoff_base_s * 2 ** (attempt - 1))
            pause = backoff * (0.5 + self._rng.random() / 2)  # jitter: receivers coming back are not stampeded
            if wait is not None:
                pause = min(wait, hook.backoff_max_s)
            self._metrics.alert_deliveries.inc((label, "retried"))
            log.info(
                "alert.retry",
                type=event.type,
                id=event.id,
                webhook=name,
                attempt=attempt,
                error=why,
                in_s=round(pause, 3),
            )
            await asyncio.sleep(pause)
        self._metrics.alert_deliveries.inc((label, "failed"))
        log.error("alert.undelivered", type=event.type, id=event.id, webhook=name, attempts=attempt, error=why)

    async def close(self, timeout_s: float) -> None:
        """Deliver what is queued and in flight within `timeout_s`; what is left then is
        abandoned (logged and counted)."""
        if self._task is not None:
            try:
                await asyncio.wait_for(self._idle.wait(), timeout_s)
            except TimeoutError:
                pass
            self._task.cancel()
            left = list(self._deliveries)
            for task in left:
                task.cancel()
            await asyncio.gather(self._task, *left, return_exceptions=True)
            abandoned = len(left) + sum(len(e.hooks) for e in self._queue)
            if abandoned:
                self._metrics.alert_deliveries.inc(("all", "abandoned"), abandoned)
                log.error("alerts.abandoned", deliveries=abandoned, timeout_s=timeout_s)
            self._task = None
        if self._fleet is not None:
            await self._fleet.close()
