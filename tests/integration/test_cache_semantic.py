"""The response cache's semantic tier through HTTP (the official `openai` SDK against a real
gateway and the provider simulator): a reworded question gets the stored answer, opposite
questions never do, everything but the last user message must match, never with tools, the
threshold may only be raised, and the embedding call is costed and fails open.

The simulator's vectors are hash-like (similar texts are not close), so the embedding model
here is a small local server answering bag-of-words vectors: texts with the same words in
any order are the same vector, and one word changed moves the cosine a known amount."""

from __future__ import annotations

import zlib

import openai
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from conftest import SIM_KEY, gateway_config, until
from integration.test_cache import MASTER, PRICED, admin, ask, ask_stream, cache_config, sdk, stored, text_of

from aiogw.cache.semantic import words
from aiogw.server.keys import CACHE, DISPATCHER

DIMS = 256
LIGHTS_ON = "please turn on the lights"


def bag_of_words(text: str) -> list[float]:
    v = [0.0] * DIMS
    for w in words(text):
        v[zlib.crc32(w.encode()) % DIMS] += 1.0
    return v


class Embedder:
    """An OpenAI-compatible embeddings endpoint answering bag-of-words vectors."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.fail = False
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        text = body["input"] if isinstance(body["input"], str) else body["input"][0]
        self.texts.append(text)
        if self.fail:
            return web.json_response({"error": {"message": "down", "type": "server_error"}}, status=500)
        n = len(words(text))
        return web.json_response(
            {
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": bag_of_words(text)}],
                "model": body["model"],
                "usage": {"prompt_tokens": n, "total_tokens": n},
            }
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/embeddings", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/v1"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def embedder():
    e = Embedder()
    await e.start()
    try:
        yield e
    finally:
        await e.close()


def semantic_config(sim, embedder, semantic=None, cache=None, **overrides):
    providers = {
        "sim": {"type": "openai", "base_url": sim.base_url(), "api_key": SIM_KEY},
        "bow": {"type": "openai-compatible", "base_url": embedder.url},
    }
    emb = {"name": "emb", "targets": [{"provider": "bow", "model": "bow-1", "price": {"input": 1000, "output": 0}}]}
    sem = {"enabled": True, "embedding_model": "emb", **(semantic or {})}
    cache = {"enabled": True, "semantic": sem, **(cache or {})}
    return gateway_config(sim, providers=providers, models=[*PRICED, emb], cache=cache, **overrides)


def user(text):
    return [{"role": "user", "content": text}]


@pytest.fixture
async def semantic(sim, embedder, make_gateway):
    url, app = await make_gateway(semantic_config(sim, embedder, {"threshold": 0.5}))
    async with sdk(url) as c:
        yield c, app


async def test_a_reworded_question_gets_the_stored_answer(semantic):
    c, app = semantic
    first, h1 = await ask(c, messages=user(LIGHTS_ON), temperature=0)
    assert h1["x-aiogw-cache-status"] == "miss"
    await until(stored(app))
    again, h2 = await ask(c, messages=user("turn on the lights, please"), temperature=0)
    assert h2["x-aiogw-cache-status"] == "semantic_hit"
    assert again.choices[0].message.content == first.choices[0].message.content
    assert h2["x-aiogw-cost-usd"] == "0" and h2["x-aiogw-attempts"] == "0"
    assert float(h2["x-aiogw-cost-saved-usd"]) == pytest.approx(float(h1["x-aiogw-cost-usd"]))
    chunks, h3 = await ask_stream(c, messages=user("Lights: please turn on the"), temperature=0)
    assert h3["x-aiogw-cache-status"] == "semantic_hit"  # a streaming client gets it as SSE
    assert text_of(chunks) == first.choices[0].message.content
    assert app[CACHE].counts.semantic_hits == 2


async def test_turn_on_and_turn_off_the_lights_never_share_an_answer(semantic):
    # Bag of words puts "on" and "off" at cosine 0.75, above this test's 0.5 threshold:
    # only the guard keeps them apart.
    c, app = semantic
    _, h = await ask(c, messages=user("turn on the lights"), temperature=0)
    assert h["x-aiogw-cache-status"] == "miss"
    await until(stored(app))
    for opposite in ("turn off the lights", "do not turn on the lights", "don't turn on the lights"):
        _, h = await ask(c, {"x-aiogw-cache": "read"}, messages=user(opposite), temperature=0)  # not stored
        assert h["x-aiogw-cache-status"] == "miss", opposite
    _, h = await ask(c, messages=user("turn on the lights please"), temperature=0)
    assert h["x-aiogw-cache-status"] == "semantic_hit"


async def test_everything_but_the_last_user_message_must_match(semantic):
    c, app = semantic
    system = {"role": "system", "content": "Answer briefly."}
    await ask(c, messages=[system, *user(LIGHTS_ON)], temperature=0)
    await until(stored(app))
    reworded = user("turn on the lights please")
    for messages, kw, headers in (
        ([{"role": "system", "content": "Answer at length."}, *reworded], {}, {}),  # another system prompt
        (reworded, {}, {}),  # no system prompt
        ([system, *reworded], {"top_p": 0.5}, {}),  # another parameter
        ([system, *reworded], {}, {"x-aiogw-cache-namespace": "other"}),  # another partition
    ):
        _, h = await ask(c, headers, messages=messages, temperature=0, **kw)
        assert h["x-aiogw-cache-status"] == "miss", (messages, kw, headers)
    _, h = await ask(c, messages=[system, *reworded], temperature=0)
    assert h["x-aiogw-cache-status"] == "semantic_hit"


async def test_only_the_last_max_messages_count(sim, embedder, make_gateway):
    url, app = await make_gateway(semantic_config(sim, embedder, {"max_messages": 1}))
    async with sdk(url) as c:
        older = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
        await ask(c, messages=[*older, *user(LIGHTS_ON)], temperature=0)
        await until(stored(app))
        other = [{"role": "user", "content": "hey"}, {"role": "assistant", "content": "yo"}]
        _, h = await ask(c, messages=[*other, *user("turn on the lights please")], temperature=0)
        assert h["x-aiogw-cache-status"] == "semantic_hit"


async def test_a_request_with_tools_never_takes_a_neighbours_answer(sim, embedder, make_gateway):
    url, app = await make_gateway(semantic_config(sim, embedder, {"threshold": 0.5}, {"cache_tool_calls": True}))
    c = sdk(url)
    tools = [{"type": "function", "function": {"name": "lights", "parameters": {"type": "object", "properties": {}}}}]
    await ask(c, messages=user(LIGHTS_ON), temperature=0, tools=tools)
    await until(stored(app))
    _, h = await ask(c, messages=user("turn on the lights please"), temperature=0, tools=tools)
    assert h["x-aiogw-cache-status"] == "miss"
    assert embedder.texts == []  # not even embedded
    await c.close()


async def test_the_threshold_header_may_only_raise_the_threshold(semantic):
    c, app = semantic
    await ask(c, messages=user("turn on the lights"), temperature=0)
    await until(stored(app))
    close = user("turn on the kitchen lights")  # cosine 0.89 to the stored question
    read = {"x-aiogw-cache": "read"}  # these misses are not stored
    _, h = await ask(c, {**read, "x-aiogw-cache-threshold": "0.95"}, messages=close, temperature=0)
    assert h["x-aiogw-cache-status"] == "miss"
    far = user("the weather")  # cosine 0.35: under the configured 0.5, whatever the header says
    _, h = await ask(c, {**read, "x-aiogw-cache-threshold": "0.1"}, messages=far, temperature=0)
    assert h["x-aiogw-cache-status"] == "miss"
    _, h = await ask(c, {"x-aiogw-cache-threshold": "0.6"}, messages=close, temperature=0)
    assert h["x-aiogw-cache-status"] == "semantic_hit"
    with pytest.raises(openai.BadRequestError) as e:
        await ask(c, {"x-aiogw-cache-threshold": "high"}, messages=close, temperature=0)
    assert e.value.body["param"] == "x-aiogw-cache-threshold"


async def test_the_default_threshold_keeps_a_changed_question_apart(sim, embedder, make_gateway):
    url, app = await make_gateway(semantic_config(sim, embedder))
    async with sdk(url) as c:
        await ask(c, messages=user("turn on the lights"), temperature=0)
        await until(stored(app))
        _, h = await ask(c, messages=user("turn on the kitchen lights"), temperature=0)
        assert h["x-aiogw-cache-status"] == "miss"  # 0.89 < 0.95


async def test_the_embedding_call_is_costed_in_the_ledger(semantic, embedder):
    c, app = semantic
    await ask(c, {"x-aiogw-tags": "team=home"}, messages=user(LIGHTS_ON), temperature=0)
    assert embedder.texts == [LIGHTS_ON]  # the last user message, embedded once
    rows = app[DISPATCHER].books.ledger.rows
    emb = [(k, r) for k, r in rows.items() if k[0] == "emb"]
    assert len(emb) == 1
    (_, provider, upstream, task, tags), row = emb[0]
    assert (provider, upstream, task, tags) == ("bow", "bow-1", "cache_embedding", "team=home")
    assert row.requests == 1 and row.cost_usd > 0


async def test_a_failed_embedding_call_is_a_plain_miss(semantic, embedder):
    c, app = semantic
    embedder.fail = True
    answer, h = await ask(c, messages=user(LIGHTS_ON), temperature=0)
    assert h["x-aiogw-cache-status"] == "miss" and answer.choices[0].message.content
    assert app[CACHE].counts.embed_errors == 1
    await until(stored(app))
    _, h = await ask(c, messages=user(LIGHTS_ON), temperature=0)
    assert h["x-aiogw-cache-status"] == "hit"  # the exact tier still works


def test_the_semantic_tier_needs_an_embedding_model(sim):
    from aiogw.errors import ConfigError

    with pytest.raises(ConfigError, match="embedding_model"):
        cache_config(sim, {"semantic": {"enabled": True}})


async def test_two_gateways_on_one_redis_share_the_semantic_tier(sim, embedder, make_gateway, redis_server):
    cfg = semantic_config(
        sim, embedder, {"threshold": 0.5}, {"backend": "redis"}, state={"redis_url": redis_server.url}
    )
    url_a, app_a = await make_gateway(cfg)
    url_b, app_b = await make_gateway(cfg)
    async with sdk(url_a) as a, sdk(url_b) as b:
        first, h = await ask(a, messages=user(LIGHTS_ON), temperature=0)
        assert h["x-aiogw-cache-status"] == "miss"
        await until(stored(app_a))
        # B never saw the question: its index learns the vector from the shared stream.
        again, h = await ask(b, messages=user("turn on the lights, please"), temperature=0)
        assert h["x-aiogw-cache-status"] == "semantic_hit"
        assert again.choices[0].message.content == first.choices[0].message.content
        _, h = await ask(b, messages=user("please turn off the lights"), temperature=0)
        assert h["x-aiogw-cache-status"] == "miss"  # the guard holds across replicas too
        await until(stored(app_b))
        _, h = await ask(a, messages=user("the lights: please turn off"), temperature=0)
        assert h["x-aiogw-cache-status"] == "semantic_hit"  # and A learns B's
    assert app_b[CACHE].counts.semantic_hits == 1 and app_a[CACHE].counts.semantic_hits == 1
    assert sim.stats()["requests"] == 2


async def test_redis_entries_expire_with_their_ttl_and_a_purge_takes_their_vectors(
    sim, embedder, make_gateway, redis_server, tmp_path
):
    cfg = semantic_config(
        sim,
        embedder,
        {"threshold": 0.5},
        {"backend": "redis", "ttl_s": 120},
        state={"redis_url": redis_server.url},
        auth={"master_key": MASTER},
        store={"url": f"sqlite:///{tmp_path}/aiogw.db"},
    )
    url_a, app_a = await make_gateway(cfg)
    url_b, _ = await make_gateway(cfg)
    async with sdk(url_a) as a, sdk(url_b) as b:
        await ask(a, messages=user(LIGHTS_ON), temperature=0)
        await until(stored(app_a))
        r = aioredis.Redis.from_url(redis_server.url)
        try:
            keys = [k async for k in r.scan_iter(match="*cache:*")]
            assert len(keys) == 2 and sum(k.endswith(b":vec") for k in keys) == 1  # the answer, its vector
            for k in keys:  # both expire with the group's TTL: Redis drops them, not us
                assert 0 < await r.ttl(k) <= 120
            status, got = await admin(url_a, "POST", "/admin/v1/cache/purge", {"model": "fast"})
            assert status == 200 and got["purged"] == 1  # answers are counted, vector streams go too
            assert [k async for k in r.scan_iter(match="*cache:*")] == []
        finally:
            await r.aclose()
        _, h = await ask(b, messages=user("turn on the lights, please"), temperature=0)
        assert h["x-aiogw-cache-status"] == "miss"


async def test_the_embedding_call_is_in_the_durable_ledger_under_the_callers_tags(
    sim, embedder, make_gateway, tmp_path
):
    cfg = semantic_config(
        sim,
        embedder,
        {"threshold": 0.5},
        auth={"master_key": MASTER},
        store={"url": f"sqlite:///{tmp_path}/aiogw.db", "ledger_flush_ms": 50},
    )
    url, _ = await make_gateway(cfg)
    async with sdk(url) as c:
        _, h = await ask(c, {"x-aiogw-tags": "team=home"}, messages=user(LIGHTS_ON), temperature=0)
    paid = float(h["x-aiogw-cost-usd"])

    async def by_task():
        status, spend = await admin(url, "GET", "/admin/v1/spend?group_by=task,tag:team")
        assert status == 200, spend
        return {(r["task"], r["tags"]["team"]): (r["requests"], r["cost_usd"]) for r in spend["data"]}

    async def both_rows():  # the ledger writer flushes every 50 ms
        return len(await by_task()) == 2

    await until(both_rows)
    rows = await by_task()
    assert rows[("chat", "home")] == (1, pytest.approx(paid))
    n, cost = rows[("cache_embedding", "home")]
    assert n == 1 and cost == pytest.approx(len(words(LIGHTS_ON)) * 1000 / 1e6)
