"""The response cache from the outside: `POST /admin/v1/cache/purge {namespace?, model?}`
and `GET /admin/v1/cache/stats` (master key only: saved spend is spend) and its metrics (hits, misses, bypasses by reason, stored bytes and
entries, saved USD, store failures). Installed only when the cache is configured."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
from aiohttp import web

from aiogw.cache import ResponseCache
from aiogw.errors import InvalidRequest
from aiogw.ingress.body import read_body
from aiogw.server.admin import require_admin
from aiogw.server.keys import CACHE, METRICS, RUNTIME
from aiogw.telemetry.metrics import GatewayMetrics, Gauge


class PurgeBody(msgspec.Struct, forbid_unknown_fields=True):
    namespace: str | None = None  # "" is the entries stored without a namespace
    model: str | None = None  # a public model group


async def purge(request: web.Request) -> web.Response:
    require_admin(request)
    cache = request.app[CACHE]
    assert cache is not None
    raw = await read_body(request)
    try:
        body = msgspec.json.decode(raw or b"{}", type=PurgeBody)
    except msgspec.MsgspecError as exc:
        raise InvalidRequest(f'Invalid purge body: {exc}. Expected {{"namespace"?: str, "model"?: str}}.') from None
    n = await cache.purge(body.namespace, body.model)
    return web.json_response({"object": "cache.purge", "purged": n, "namespace": body.namespace, "model": body.model})


async def stats(request: web.Request) -> web.Response:
    """The counts since start (this process), overall and per public model group: what the
    dashboard's cache panel shows."""
    require_admin(request)
    cache = request.app[CACHE]
    assert cache is not None
    c = cache.counts

    def rate(hits: int, misses: int) -> float | None:
        return hits / (hits + misses) if hits + misses else None

    models = [
        {
            "model": name,
            "hits": m.hits,
            "misses": m.misses,
            "hit_rate": rate(m.hits, m.misses),
            "saved_usd": m.saved_usd,
        }
        for name, m in sorted(c.by_model.items())
    ]
    mem = cache.memory
    return web.json_response(
        {
            "object": "cache.stats",
            "backend": cache.config.backend,
            "healthy": cache.healthy,
            "hits": c.hits,
            "misses": c.misses,
            "hit_rate": rate(c.hits, c.misses),
            "bypass": dict(c.bypass),
            "stored": c.stored,
            "errors": c.errors,
            "saved_usd": c.saved_usd,
            "entries": mem.entries if mem is not None else None,
            "bytes": mem.bytes if mem is not None else None,
            "models": models,
        }
    )


def _metrics(m: GatewayMetrics, cache: ResponseCache) -> None:
    c = cache.counts

    def total(name: str, help_: str, read: object) -> Gauge:
        return Gauge(name, help_, (), lambda: [((), read())], kind="counter")  # type: ignore[operator]

    r = m.registry
    r.add(total("aiogw_cache_hits_total", "Requests answered from the response cache.", lambda: c.hits))
    r.add(total("aiogw_cache_misses_total", "Cacheable requests not found in the cache.", lambda: c.misses))
    r.add(Gauge("aiogw_cache_bypass_total", "Requests the cache let through, by reason.", ("reason",),
                lambda: [((k,), v) for k, v in c.bypass.items()], kind="counter"))  # fmt: skip
    r.add(
        total(
            "aiogw_cache_saved_usd_total", "What the answers served from the cache cost when made.", lambda: c.saved_usd
        )
    )
    r.add(
        total(
            "aiogw_cache_store_errors_total",
            "Cache store calls that failed (each request went on as a miss).",
            lambda: c.errors,
        )
    )
    r.add(total("aiogw_cache_writes_total", "Answers written to the cache.", lambda: c.stored))
    r.add(Gauge("aiogw_cache_up", "1 while the cache's store answers, 0 after a failure until it answers again.", (),
                lambda: [((), 1 if cache.healthy else 0)]))  # fmt: skip
    mem = cache.memory
    if mem is not None:
        r.add(Gauge("aiogw_cache_bytes", "Bytes held by the in-process cache.", (), lambda: [((), mem.bytes)]))
        r.add(Gauge("aiogw_cache_entries", "Entries held by the in-process cache.", (), lambda: [((), mem.entries)]))


async def cache_ctx(app: web.Application) -> AsyncIterator[None]:
    cache = app[CACHE] = ResponseCache(app[RUNTIME].config)
    _metrics(app[METRICS], cache)
    try:
        yield
    finally:
        await cache.close()


def install(app: web.Application) -> None:
    app.cleanup_ctx.append(cache_ctx)
    app.router.add_post("/admin/v1/cache/purge", purge)
    app.router.add_get("/admin/v1/cache/stats", stats)
