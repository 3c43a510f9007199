"""The Chat Completions ingress through the response cache: a hit answered from the entry
(JSON or SSE, whichever the client asked for), a miss run as usual with its answer handed
to the cache (a stream recorded as it goes), identical concurrent misses waiting on one
upstream call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from aiogw.accounting.cost import format_usd
from aiogw.attempts.outcome import ClientDisconnected, Outcome
from aiogw.cache import Decision, Entry, ResponseCache
from aiogw.cache import entry as entries
from aiogw.errors import CacheMiss, GatewayError
from aiogw.ingress.sse import SSE_HEADERS
from aiogw.server.keys import DISPATCHER, MONEY, OUTCOME, PRINCIPAL, REQUEST_ID, RUNTIME
from aiogw.types import EmbeddingRequest, ParsedChat

EMBED_TASK = "cache_embedding"  # the ledger's task of the semantic tier's embedding calls

Answer = Callable[[dict[str, str], list[bytes] | None], Awaitable[web.StreamResponse]]
PACED_GAP_S = 0.01  # between replayed chunks with x-aiogw-cache-replay: paced


async def through_cache(
    request: web.Request, cache: ResponseCache, d: Decision, parsed: ParsedChat, answer: Answer, client_api: str = ""
) -> web.StreamResponse:
    """`client_api`: the client's API when it is not Chat Completions (as given to
    `ResponseCache.prepare`): entries then hold the answer's bytes as that client got them
    (JSON, or its stream's events), replayed as they are."""
    outcome = request[OUTCOME]
    if d.key is None:  # bypassed: say why, then the usual path
        outcome.cache_status = "bypass"
        if d.controls.only_if_cached:
            raise CacheMiss(f"No cached answer: this request is not cacheable ({d.reason}).", reason=d.reason)
        return await answer({"x-aiogw-cache-status": "bypass", "x-aiogw-cache-reason": d.reason}, None)
    e = await cache.lookup(d)
    if e is None and d.semantic is not None:  # the exact tier missed: a question meaning the same?
        vector = await _embed(request, cache, d.semantic.text)
        if vector is not None and (e := await cache.nearest(d, vector)) is not None:
            return await _hit(request, cache, d, e, parsed, "", "semantic_hit")
    if e is None and d.reads and not d.controls.only_if_cached:
        flight = cache.join(d.key)
        if flight is not None:  # the same request is on its way upstream: wait for its answer
            e = await asyncio.shield(flight.done)
        else:
            return await _lead(request, cache, d, parsed, answer, client_api)
    if e is not None:
        return await _hit(request, cache, d, e, parsed, client_api)
    if d.controls.only_if_cached:
        cache.miss(d.group)
        outcome.cache_status = "miss"
        raise CacheMiss("No cached answer for this request (cache-control: only-if-cached).")
    return (await _run(request, cache, d, parsed, answer, client_api))[0]


async def _lead(
    request: web.Request, cache: ResponseCache, d: Decision, parsed: ParsedChat, answer: Answer, client_api: str
) -> web.StreamResponse:
    assert d.key is not None
    made: Entry | None = None
    try:
        resp, made = await _run(request, cache, d, parsed, answer, client_api)
        return resp
    finally:
        cache.land(d.key, made)  # waiters get the answer, or go upstream themselves


async def _run(
    request: web.Request, cache: ResponseCache, d: Decision, parsed: ParsedChat, answer: Answer, client_api: str
) -> tuple[web.StreamResponse, Entry | None]:
    cache.miss(d.group)
    outcome = request[OUTCOME]
    outcome.cache_status = "miss"
    headers = {"x-aiogw-cache-status": "miss"}
    record: list[bytes] | None = [] if parsed.req.is_stream and d.writes else None
    resp = await answer(headers, record)
    if not d.writes or outcome.target is None:
        return resp, None
    why = cache.storable(d, outcome.finish_reasons)
    target = outcome.target
    cost = outcome.cost_usd or 0.0
    if record is None:
        if why or resp.status != 200 or not isinstance(resp, web.Response) or resp.body is None:
            if why:  # the answer's headers are not sent yet: say why it was not kept
                outcome.cache_status = "uncacheable"
                resp.headers["x-aiogw-cache-status"] = "uncacheable"
                resp.headers["x-aiogw-cache-reason"] = why
            return resp, None
        assert isinstance(resp.body, bytes)
        e = Entry(time.time(), cost, target.provider, outcome.model or target.model, body=resp.body)
    else:
        if why or outcome.stream_error is not None or outcome.client_closed:
            return resp, None  # a cut or failed stream is never stored
        if client_api:  # another API's events: kept as the client got them
            e = Entry(time.time(), cost, target.provider, outcome.model or target.model, body=b"".join(record))
            cache.store(d, e)
            return resp, e
        split = entries.split_stream(b"".join(record))
        if split is None:
            return resp, None
        chunks, usage = split
        if usage is None and outcome.usage is not None:
            usage = _usage_json(outcome.usage)
        e = Entry(time.time(), cost, target.provider, outcome.model or target.model, chunks=chunks, usage=usage)
    cache.store(d, e)
    return resp, e


def _usage_json(usage: object) -> bytes:
    import msgspec  # noqa: PLC0415 - once per stored stream that did not ask for usage

    return msgspec.json.encode(usage)


async def _embed(request: web.Request, cache: ResponseCache, text: str) -> list[float] | None:
    """The text's embedding through the gateway's own embeddings path (routed, retried and
    charged to the ledger like any call, under the request's tags); None when it fails: the
    request goes on as a miss (the cache fails open)."""
    model = cache.config.semantic.embedding_model
    own = Outcome(tags=request[OUTCOME].tags, task=EMBED_TASK)
    started = time.perf_counter()
    failed: GatewayError | None = None
    try:
        route = request.app[RUNTIME].resolve(model)
        reply = await request.app[DISPATCHER].embed(EmbeddingRequest(model=model, input=text), route, own)
        vector = orjson.loads(reply.body)["data"][0]["embedding"]
        if not isinstance(vector, list):
            raise TypeError(f"embedding is {type(vector).__name__}, not a list of floats")
        return vector
    except Exception as exc:  # fail open: any failure is a miss
        failed = exc if isinstance(exc, GatewayError) else GatewayError(f"embedding unusable: {exc}")
        cache.embed_failed(exc)
        return None
    finally:
        if (money := request.app[MONEY]) is not None:  # the durable ledger has it too, under the caller
            rid, took = f"{request[REQUEST_ID]}/embedding", time.perf_counter() - started
            money.record(
                rid, own, model, request[PRINCIPAL], 200 if failed is None else failed.status, failed, False, took
            )


async def _hit(
    request: web.Request,
    cache: ResponseCache,
    d: Decision,
    e: Entry,
    parsed: ParsedChat,
    client_api: str = "",
    status: str = "hit",
) -> web.StreamResponse:
    cache.hit(e, d.group, status == "semantic_hit")
    outcome = request[OUTCOME]
    outcome.cache_status, outcome.saved_usd, outcome.cost_usd = status, e.cost_usd, 0.0
    outcome.finish_reasons = []
    headers = {
        "x-request-id": request[REQUEST_ID],
        "x-aiogw-cache-status": status,
        "age": str(max(0, int(time.time() - e.created))),
        "x-aiogw-provider": e.provider,
        "x-aiogw-model": e.model,
        "x-aiogw-attempts": "0",
        "x-aiogw-cost-usd": "0",
        "x-aiogw-cost-saved-usd": format_usd(e.cost_usd),
    }
    if not parsed.req.is_stream:
        return web.Response(body=entries.as_json(e), content_type="application/json", headers=headers)
    resp = web.StreamResponse(status=200, headers={**SSE_HEADERS, **headers})
    # Another API's stream is replayed as one piece (its entries are partitioned by API and
    # by streaming, so this entry is that API's events).
    events = [e.body or b""] if client_api else entries.sse_events(e, parsed.req.wants_usage)
    try:
        await resp.prepare(request)
        if d.controls.paced:  # parsed with the other controls
            for ev in events:
                await resp.write(ev)
                await asyncio.sleep(PACED_GAP_S)
        else:
            await resp.write(b"".join(events))  # burst: one write
        await resp.write_eof()
    except ConnectionResetError:
        outcome.client_closed = True
        raise ClientDisconnected from None
    return resp
