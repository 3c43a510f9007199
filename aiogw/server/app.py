"""The application factory and the serve loop (graceful drain on SIGTERM).

Tests, `aiogw serve`, the demo and bench all call `create_app`; nothing else builds an app.
`GatewayRunner` runs it, so that what aiohttp refuses before any handler runs is answered
in OpenAI's error shape too.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError, HttpProcessingError
from aiohttp.web_protocol import RequestHandler

import aiogw.version  # noqa: F401 - read before any loop runs; tracing, loaded lazily, uses it
from aiogw.admission.limits import Limiter
from aiogw.alerts.expiring import watch_expiring
from aiogw.alerts.webhooks import Alerts
from aiogw.attempts.bookkeeping import Bookkeeper
from aiogw.attempts.dispatcher import Dispatcher
from aiogw.config import Config
from aiogw.errors import GatewayError, InvalidRequest, UnsupportedEncoding
from aiogw.ids import hex_id
from aiogw.ingress.responses.state import RESPONSES, ResponseStore
from aiogw.routing.health import LocalHealth
from aiogw.runtime import Runtime
from aiogw.server import (
    admin_budgets,
    admin_cache,
    admin_keys,
    admin_routing,
    admin_spend,
    cors,
    feedback,
    metrics,
    money,
    pages,
)
from aiogw.server.handlers import ROUTES
from aiogw.server.keys import (
    ALERTS,
    AUTH,
    CACHE,
    CORS,
    DISPATCHER,
    FEEDBACK,
    HEALTH_CHECKER,
    HTTP,
    LIFECYCLE,
    METRICS,
    MONEY,
    QUALITY,
    RUNTIME,
    STORE,
    TRACING,
)
from aiogw.server.lifecycle import Lifecycle
from aiogw.server.middleware import gateway_middleware
from aiogw.supervise import supervise
from aiogw.telemetry.logs import get_logger
from aiogw.telemetry.metrics import GatewayMetrics
from aiogw.upstream import http

if TYPE_CHECKING:  # the OpenTelemetry SDK is imported only when tracing is configured
    from aiogw.telemetry.tracing import Tracing

log = get_logger("aiogw.server")

# Upstream connection pools. Providers are few hosts with many concurrent streams, so the
# per-host limit is what matters; keep-alive avoids a TLS handshake per request.
POOL_LIMIT_PER_HOST = 1024
KEEPALIVE_S = 60.0  # below the usual 75-120 s idle timeout of provider load balancers
DNS_TTL_S = 300
LISTEN_BACKLOG = 4096  # connections the kernel queues for a busy worker


async def _http_client_ctx(app: web.Application) -> AsyncIterator[None]:
    # No timeouts here: streams are long; dispatch bounds each call itself.
    client = http.Client(limit_per_host=POOL_LIMIT_PER_HOST, keepalive_s=KEEPALIVE_S, dns_ttl_s=DNS_TTL_S)
    app[HTTP] = client
    runtime = app[RUNTIME]
    state = runtime.config.state
    # The stages in build order: alerts (any stage may fire), health (routing), shared state
    # over it when configured, limits reading the fleet's levels from it, SLOs over health
    # when some group has one, each attempt's bookkeeping over those, and the dispatcher.
    alerts = _alerts(runtime, client, app[METRICS])
    app[ALERTS] = alerts
    health = LocalHealth(
        runtime.breaker_default, runtime.breaker_policies, configured=runtime.configured, alerts=alerts
    )
    shared = None
    if state.redis_url:
        from aiogw.state.shared import SharedState  # noqa: PLC0415 - the redis client only when configured

        shared = SharedState(state, health)
    limiter = Limiter(configured=runtime.configured, fleet_levels=shared.fleet_levels if shared is not None else None)
    slo = None
    if any(r.slo is not None for r in runtime.routes.values()):
        from aiogw.routing.slo import SLOMonitor  # noqa: PLC0415 - only when some group has an SLO

        slo = SLOMonitor(runtime.routes.values(), health, alerts)
    books = Bookkeeper(runtime, health=health, limiter=limiter, tracing=app[TRACING], shared=shared)
    dispatcher = app[DISPATCHER] = Dispatcher(client, runtime, books, slo=slo, quality=app[QUALITY])
    checker = None
    try:
        alerts.start()
        if slo is not None:
            slo.start()
        if shared is not None:
            await shared.start()
        if runtime.health_checks:
            from aiogw.attempts.health_check import HealthChecker  # noqa: PLC0415 - only when some target has checks

            checker = app[HEALTH_CHECKER] = HealthChecker(dispatcher, runtime, app[METRICS])
            checker.start()
        yield
    finally:
        if checker is not None:
            await checker.close()
        if shared is not None:
            await shared.close()
        if slo is not None:
            await slo.close()
        # Alerts last among the stages (others may fire while closing), within the drain's grace.
        await alerts.close(app[LIFECYCLE].grace_left(runtime.config.server.shutdown_grace))
        await client.close()


def _alerts(runtime: Runtime, client: http.Client, metrics: GatewayMetrics) -> Alerts:
    """The alert sink: logs and metrics always; webhooks when configured, claimed fleet-wide
    through Redis when state is shared."""
    cfg = runtime.config
    fleet = None
    if cfg.alerts.webhooks and cfg.state.redis_url:
        from aiogw.alerts.fleet_once import RedisOnce  # noqa: PLC0415 - the redis client only when configured

        fleet = RedisOnce(cfg.state)
    return Alerts(cfg.alerts, client, metrics, fleet=fleet)


async def _auth_ctx(app: web.Application) -> AsyncIterator[None]:
    """Virtual keys, when `auth` is configured: the store opened, the keys' cache and the
    authenticator built, and (with shared state) key changes heard from other replicas."""
    cfg = app[RUNTIME].config
    from aiogw.admission.auth import Authenticator  # noqa: PLC0415 - only when auth is configured
    from aiogw.admission.keys import Keys, derive_pepper  # noqa: PLC0415
    from aiogw.store.base import open_store  # noqa: PLC0415

    auth = cfg.auth
    master = auth.master_key.reveal() if auth.master_key is not None else None
    pepper = derive_pepper(auth.pepper.reveal() if auth.pepper else None, master)
    money_ = app[MONEY]  # budgets and the ledger have the store open already: share it
    own_store = money_ is None
    store = money_.store if money_ is not None else await open_store(cfg.store_url)
    app[STORE] = store
    keys = Keys(store, pepper, auth.key_cache_size)
    if money_ is not None:
        money_.attach_keys(keys)
    events = None
    expiring = None
    try:
        if cfg.state.redis_url:
            from aiogw.state.key_events import KeyEvents  # noqa: PLC0415 - the redis client only when configured

            events = KeyEvents(cfg.state, forget=keys.forget, forget_all=keys.forget_all)
            keys.on_change = events.publish
            await events.start()
        app[AUTH] = Authenticator(
            keys, master_key=master, require_keys=auth.require_keys, shared=app[DISPATCHER].shared
        )
        if cfg.alerts.webhooks:  # key.expiring: a daily-enough look at keys that expire
            alerts = app[ALERTS]

            async def watch() -> None:
                await watch_expiring(keys.with_expiry, alerts, cfg.alerts.key_expiring_s, time.time)

            expiring = asyncio.create_task(
                supervise("key-expiring", watch, log, "keys.expiring_loop_died"), name="aiogw-key-expiring"
            )
        yield
    finally:
        if expiring is not None:
            expiring.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await expiring
        if events is not None:
            await events.close()
        if own_store:
            await store.close()


async def _tracing_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    tracing = app[TRACING]
    if tracing is not None:  # export what is still queued (a thread, off the loop)
        await asyncio.get_running_loop().run_in_executor(None, tracing.shutdown)


async def _responses_ctx(app: web.Application) -> AsyncIterator[None]:
    """Stored responses (`responses.store`): in the store keys or budgets opened, else its own."""
    from aiogw.store.base import open_store  # noqa: PLC0415 - only when responses are stored

    cfg = app[RUNTIME].config
    money_ = app[MONEY]
    shared = app[STORE] or (money_.store if money_ is not None else None)
    store = shared or await open_store(cfg.store_url)
    app[RESPONSES] = ResponseStore(store, cfg.responses.ttl_s)
    try:
        yield
    finally:
        if shared is None:
            await store.close()


async def _money_ctx(app: web.Application) -> AsyncIterator[None]:
    async with money.running(app[RUNTIME].config, alerts=app[ALERTS]) as m:
        app[MONEY] = m
        yield


def create_app(config: Config, *, runtime: Runtime | None = None) -> web.Application:
    app = web.Application(client_max_size=config.server.max_body_bytes, middlewares=[gateway_middleware])
    app[RUNTIME] = runtime or Runtime.build(config)
    app[LIFECYCLE] = Lifecycle()
    policy = app[CORS] = cors.CorsPolicy(config.server.cors) if config.server.cors is not None else None
    if policy is not None:
        cors.install(app, policy)
    app[TRACING] = _tracing(config)
    app.cleanup_ctx.append(_tracing_ctx)
    app.cleanup_ctx.append(_http_client_ctx)
    app[MONEY] = None
    if money.needed(config):  # the store is opened only then
        app.cleanup_ctx.append(_money_ctx)
        admin_budgets.install(app)
        admin_spend.install(app)
    app[AUTH] = app[STORE] = None
    if config.auth.configured:
        # After the dispatcher (key limits use its shared state) and the money side (its store).
        app.cleanup_ctx.append(_auth_ctx)
    app[FEEDBACK] = None
    if feedback.needed(config):  # after the money side (its store) and the dispatcher
        app.cleanup_ctx.append(feedback.feedback_ctx)
    app[RESPONSES] = None
    if config.responses.store:  # after the stages that may have opened the store already
        app.cleanup_ctx.append(_responses_ctx)
    app[CACHE] = None
    if config.cache_enabled:
        admin_cache.install(app)
    app.router.add_routes(ROUTES)
    app.router.add_routes(admin_keys.ROUTES)
    app.router.add_routes(feedback.ROUTES)
    metrics.install(app)
    app[QUALITY] = None
    if (book := admin_routing.build_book(app[RUNTIME])) is not None:  # some group uses strategy quality
        admin_routing.install(app, book)
    if config.server.pages:
        pages.install(app)
    return app


class _Protocol(RequestHandler):
    """aiohttp's connection handler; its answer to a request it cannot parse (malformed
    HTTP, a body framing that does not match its headers, a Content-Encoding it cannot
    decode) is an OpenAI-shaped error instead of text/plain."""

    __slots__ = ()

    def handle_error(
        self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # as aiohttp does: too late for another response
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        err = _protocol_error(status, exc)
        if err.http_status() >= 500:
            log.error("request.crashed", error=repr(exc), exc_info=exc)
        else:
            log.info("request.malformed", status=err.http_status(), error=err.message)
        headers = {"x-request-id": "req_" + hex_id(12), **err.headers()}
        resp = web.Response(
            status=err.http_status(), body=err.to_openai(), content_type="application/json", headers=headers
        )
        resp.force_close()
        return resp


def _protocol_error(status: int, exc: BaseException | None) -> GatewayError:
    if isinstance(exc, ContentEncodingError):
        if "install" in exc.message:  # aiohttp's "Please install `Brotli`": br or zstd without a decoder
            return UnsupportedEncoding(
                "The request's Content-Encoding cannot be decoded here; send the body uncompressed, or as gzip or deflate."
            )
        # Found at the end of the body (a deflate stream cut short), after its handler began.
        return InvalidRequest("The request body is not valid data for its Content-Encoding.", code="invalid_encoding")
    if status >= 500:
        return GatewayError("The gateway hit an internal error.")
    # Only the first line: aiohttp appends the offending bytes, which may be prompt text.
    reason = (
        (exc.message if isinstance(exc, HttpProcessingError) else str(exc or "")).split("\n", 1)[0].strip().rstrip(":")
    )
    return InvalidRequest(f"Malformed HTTP request: {reason or 'cannot be parsed'}.", code="invalid_http")


class _Server(web.Server):
    __slots__ = ()  # same layout as web.Server, so that GatewayRunner can retype one

    def __call__(self) -> RequestHandler:
        return _Protocol(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """An AppRunner whose connections are `_Protocol`s."""

    __slots__ = ()

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _Server  # the same server; only the protocol it makes differs
        return server


class ListenError(Exception):
    """A listening socket could not be opened (most often: the port is taken)."""

    def __init__(self, host: str, port: int, exc: OSError) -> None:
        taken = exc.errno == errno.EADDRINUSE
        why = (
            "address already in use (another aiogw, or another program, listens there)"
            if taken
            else exc.strerror or str(exc)
        )
        super().__init__(f"cannot listen on {host}:{port}: {why}")


def _tracing(config: Config) -> Tracing | None:
    if not config.telemetry.otlp_endpoint:  # unset or "" (`${OTEL_EXPORTER_OTLP_ENDPOINT:-}`)
        return None  # the OpenTelemetry SDK is not even imported
    from aiogw.telemetry.tracing import Tracing  # noqa: PLC0415 - the OpenTelemetry SDK only when configured

    return Tracing(config.telemetry)


async def serve(
    app: web.Application,
    *,
    host: str,
    port: int,
    sock: socket.socket | None = None,
    on_ready: Callable[[str, int], Awaitable[None] | None] | None = None,
    worker_index: int = 0,
) -> None:
    """Serve until SIGTERM/SIGINT, then drain: readiness 503 at once, new requests refused,
    in-flight ones finish within `server.shutdown_grace` seconds.

    Without `sock` (a worker of `--workers N` gets its listening socket from its parent)
    the port is bound without SO_REUSEPORT, so a port already taken is a ListenError
    rather than silently shared with whoever holds it."""
    # Handlers have already drained (or been cancelled) when cleanup runs; a short timeout
    # only bounds the close of idle keep-alive connections.
    runner = GatewayRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    if sock is not None:
        site: web.BaseSite = web.SockSite(runner, sock)
    else:
        site = web.TCPSite(runner, host, port, backlog=LISTEN_BACKLOG)
    try:
        await site.start()
        side_runner = await _metrics_listener(app, host, worker_index)
    except ListenError:
        await runner.cleanup()
        raise
    except OSError as exc:
        await runner.cleanup()
        raise ListenError(host, port, exc) from None
    bound_port = _bound_port(runner) or port
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("server.started", host=host, port=bound_port, pid=os.getpid())
    if on_ready is not None:
        result = on_ready(host, bound_port)
        if result is not None:
            await result
    await stop.wait()
    await shutdown(app, runner)
    if side_runner is not None:
        await side_runner.cleanup()


async def _metrics_listener(app: web.Application, host: str, worker_index: int) -> web.AppRunner | None:
    port = app[RUNTIME].config.server.metrics_port
    if port is None:
        return None
    runner = web.AppRunner(metrics.listener_app(app), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port + worker_index).start()
    except OSError as exc:
        await runner.cleanup()
        raise ListenError(host, port + worker_index, exc) from None
    log.info("metrics.listening", host=host, port=port + worker_index)
    return runner


async def shutdown(app: web.Application, runner: web.AppRunner) -> None:
    lifecycle = app[LIFECYCLE]
    grace = app[RUNTIME].config.server.shutdown_grace
    log.info("server.draining", in_flight=lifecycle.in_flight, grace_s=grace)
    if not await lifecycle.drain(grace):
        # Grace is over: open streams end with an error event and [DONE] (their handlers
        # do that when cancelled while draining), anything else is cut.
        log.warning("server.grace_expired", in_flight=lifecycle.in_flight)
        for task in list(lifecycle.streams):
            task.cancel()
        await asyncio.sleep(0)
    await runner.cleanup()
    log.info("server.stopped")


def _bound_port(runner: web.AppRunner) -> int | None:
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            return int(addr[1])
    return None
