"""Routing by quality from the outside (master key only): `GET /admin/v1/routing` (the
quality groups), `GET /admin/v1/routing/{model}` (per task x target, and per bucket: n,
mean, 95% interval, whether it meets the floor, cost per request, traffic share),
`POST /admin/v1/routing/{model}/quality` (load a quality.json as the prior) and
`POST /admin/v1/routing/{model}/reset` (forget what was learned; the prior stays). Also the
picks metric and the start-up load of each group's configured prior. Installed only when
some group uses strategy quality."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

from aiohttp import web

from aiogw.accounting.cost import estimate_usd
from aiogw.adapters._base import Target
from aiogw.errors import InvalidRequest, ModelNotFound
from aiogw.ingress.body import read_body
from aiogw.quality.book import Estimate, GroupBook, QualityBook
from aiogw.quality.prior import parse_prior, read_prior
from aiogw.routing.router import DEFAULT_OUTPUT_ESTIMATE
from aiogw.runtime import Runtime
from aiogw.server.admin import require_admin
from aiogw.server.keys import METRICS, QUALITY, RUNTIME
from aiogw.telemetry.logs import get_logger
from aiogw.telemetry.metrics import Gauge, Labels

log = get_logger("aiogw.quality")

# The request a price-based cost per request assumes when no eval measured one.
COST_PROMPT_TOKENS = 1000


def build_book(runtime: Runtime) -> QualityBook | None:
    groups = [(r.name, r.quality, r.targets) for r in runtime.routes.values() if r.quality is not None]
    return QualityBook(groups) if groups else None


def _public(runtime: Runtime) -> dict[str, Target]:
    """Public names of single-target groups: a quality.json from `aiogw eval --models cheap,smart`."""
    return {name: r.targets[0] for name, r in runtime.routes.items() if len(r.targets) == 1}


def _group(request: web.Request) -> GroupBook:
    require_admin(request)
    name = request.match_info["model"]
    book = request.app[QUALITY]
    g = book.group(name) if book is not None else None
    if g is None:
        if name in request.app[RUNTIME].routes:
            raise ModelNotFound(
                f"The model '{name}' does not route by quality: give it strategy: quality and a quality block."
            )
        raise ModelNotFound(f"The model '{name}' is not a model group of this gateway.")
    return g


def _interval(e: Estimate) -> dict[str, float]:
    lo, hi = e.interval()
    return {"n": round(e.n, 3), "mean": round(e.mean, 4), "lo": round(lo, 4), "hi": round(hi, 4)}


def _cost(g: GroupBook, task: str, t: Target) -> tuple[float | None, str]:
    p = g.priors.get((g.cfg.metric, task, t.id)) or g.priors.get((g.cfg.metric, "*", t.id))
    if p is not None and p.cost_per_item_usd is not None:
        return p.cost_per_item_usd, "eval"
    return estimate_usd(t, COST_PROMPT_TOKENS, DEFAULT_OUTPUT_ESTIMATE), "price"


def report(g: GroupBook) -> dict[str, object]:
    metric = g.cfg.metric
    tasks = {t for m, t in g.tasks if m == metric} | {t for m, t, _ in g.priors if m == metric and t != "*"}
    tasks |= set(g.recent)
    out = []
    for task in sorted(tasks):
        ests = g.estimates(task, "")
        tb = g.task_book(metric, task)
        picks = len(g.recent.get(task, ()))
        rows = []
        for t, e in zip(g.targets, ests, strict=True):
            cost, source = _cost(g, task, t)
            n_picks = g.shares.get((task, t.id), 0)
            buckets = sorted({b for b, tid in tb.buckets if tid == t.id})
            rows.append({
                "target": t.id,
                **_interval(e),
                "observed": tb.cells[t.id].observed,
                "meets_floor": e.lower >= g.cfg.floor,
                "cost_per_request_usd": cost,
                "cost_source": source,
                "picks": n_picks,
                "share": n_picks / picks if picks else None,
                "buckets": [{"bucket": b, **_interval(g.estimates(task, b)[g.ids.index(t.id)])} for b in buckets],
            })  # fmt: skip
        out.append({"task": task, "picks": picks, "targets": rows})
    c = g.cfg
    return {
        "object": "routing.quality",
        "model": g.name,
        "strategy": "quality",
        "metric": metric,
        "floor": c.floor,
        "confidence": c.confidence,
        "explore": c.explore,
        "prior": g.prior_source or None,
        "targets": [t.id for t in g.targets],
        "tasks": out,
    }


async def list_groups(request: web.Request) -> web.Response:
    require_admin(request)
    book = request.app[QUALITY]
    names = sorted(book.groups) if book is not None else []
    return web.json_response({"object": "list", "data": [{"model": n, "strategy": "quality"} for n in names]})


async def show(request: web.Request) -> web.Response:
    return web.json_response(report(_group(request)))


async def load_quality(request: web.Request) -> web.Response:
    g = _group(request)
    raw = await read_body(request)
    try:
        matched = g.load_prior(parse_prior(raw), "admin", _public(request.app[RUNTIME]))
    except ValueError as exc:
        raise InvalidRequest(f"Cannot load this quality.json: {exc}.", code="invalid_quality_file") from None
    log.info("quality.prior_loaded", model=g.name, source="admin", models=matched)
    return web.json_response({"object": "routing.quality.loaded", "model": g.name, "matched": matched})


async def reset(request: web.Request) -> web.Response:
    g = _group(request)
    g.reset()
    log.info("quality.reset", model=g.name)
    return web.json_response({"object": "routing.reset", "model": g.name})


async def quality_ctx(app: web.Application) -> AsyncIterator[None]:
    """Each group's configured prior, read off the loop (the config load checked it)."""
    book, runtime = app[QUALITY], app[RUNTIME]
    assert book is not None
    loop = asyncio.get_running_loop()
    public = _public(runtime)
    for g in runtime.config.models:
        q = g.quality
        if g.strategy != "quality" or q is None or not q.prior:
            continue
        prior = await loop.run_in_executor(None, read_prior, q.prior)
        book.groups[g.name].load_prior(prior, q.prior, public)
    yield


def _metrics(app: web.Application, book: QualityBook) -> None:
    def picks() -> Iterator[tuple[Labels, float]]:
        for name, g in book.groups.items():
            for (task, tid), n in g.picks_total.items():
                yield (name, task, tid), n

    app[METRICS].registry.add(
        Gauge(
            "aiogw_quality_picks_total",
            "Requests strategy quality routed, by model group, task (the first 32 seen; then 'other') and target.",
            ("model", "task", "target"),
            picks,
            kind="counter",
        )
    )


def install(app: web.Application, book: QualityBook) -> None:
    app[QUALITY] = book
    app.cleanup_ctx.append(quality_ctx)
    _metrics(app, book)
    app.router.add_get("/admin/v1/routing", list_groups)
    app.router.add_get("/admin/v1/routing/{model:.+}", show)
    app.router.add_post("/admin/v1/routing/{model:.+}/quality", load_quality)
    app.router.add_post("/admin/v1/routing/{model:.+}/reset", reset)
