"""Model names are the client's: checked once at the edge (a 400 naming `model` or the
header), carried upstream as sent when valid, and never grow shared state."""

from __future__ import annotations

import contextlib

import openai
import pytest
import redis as redis_client
from aiohttp import web
from conftest import SIM_KEY, until
from openai import AsyncOpenAI

from aiogw.config import StateConfig
from aiogw.config_load import from_builtins
from aiogw.errors import FailureClass
from aiogw.routing.health import LocalHealth
from aiogw.routing.health import now as health_now
from aiogw.server.keys import DISPATCHER, METRICS
from aiogw.state.shared import SharedState

MSG = [{"role": "user", "content": "hi"}]

HOSTILE = [
    "sim/x\r\nx-injected: 1",  # used to drop the client's connection without an answer
    "sim/x\x00y",
    "sim/x\ty",
    "sim/x?key=stolen",
    "sim/../../x",
    "sim/%2e%2e/x",
    "gem/x?key=stolen",
    "gem/../../v1beta/files",
    "sim/" + "a" * 300,
    "fast\n",
]


@pytest.fixture
async def gateway(sim, make_gateway):
    sim.set_profile("gem", api_key=SIM_KEY)
    cfg = from_builtins(
        {
            "server": {"host": "127.0.0.1", "port": 0},
            "providers": {
                "sim": {"type": "openai", "base_url": sim.base_url(), "api_key": SIM_KEY},
                "gem": {"type": "gemini", "base_url": sim.root("gem"), "api_key": SIM_KEY},
            },
            "models": [{"name": "fast", "targets": [{"provider": "sim", "model": "sim-gpt-fast"}]}],
        },
        env={},
    )
    return await make_gateway(cfg)


@pytest.fixture
async def client(gateway):
    url, _ = gateway
    async with AsyncOpenAI(base_url=url, api_key="k", max_retries=0, timeout=20) as c:
        yield c


@pytest.mark.parametrize("name", HOSTILE, ids=repr)
async def test_a_hostile_model_name_is_a_400_naming_model_and_nothing_goes_upstream(sim, client, name):
    before = sim.stats()["requests"], sim.stats("gem")["requests"]
    for call in (
        lambda: client.chat.completions.create(model=name, messages=MSG),
        lambda: client.chat.completions.create(model=name, messages=MSG, stream=True),
        lambda: client.embeddings.create(model=name, input="hi"),
    ):
        with pytest.raises(openai.BadRequestError) as err:
            await call()
        body = err.value.body
        assert body["param"] == "model" and body["code"] == "invalid_model_name", body
        assert body["type"] == "invalid_request_error" and "model name" in body["message"]
    assert (sim.stats()["requests"], sim.stats("gem")["requests"]) == before


async def test_invalid_names_count_as_unknown_in_metrics(gateway, client):
    _, app = gateway
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model="sim/x\x00y", messages=MSG)
    labels = {k[0] for k in app[METRICS].requests.series}
    assert labels == {"(unknown)"}


async def test_a_hostile_fallback_name_is_a_400_naming_the_header(sim, client):
    before = sim.stats()["requests"]
    for header in ("sim/x?key=k", "sim/a%2e", "fast,sim/ok,sim/x y", "sim/" + "b" * 257):
        with pytest.raises(openai.BadRequestError) as err:
            await client.chat.completions.create(
                model="fast", messages=MSG, extra_headers={"x-aiogw-fallbacks": header}
            )
        assert err.value.body["param"] == "x-aiogw-fallbacks", err.value.body
        assert "model name" in err.value.body["message"]
    assert sim.stats()["requests"] == before


@pytest.mark.parametrize(
    "upstream", ["ft:gpt-4o-mini:my-org:custom:abc123", "meta-llama/Llama-3.1-8B-Instruct", "claude@20240620"]
)
async def test_real_world_model_ids_reach_the_upstream_as_sent(sim, client, upstream):
    raw = await client.chat.completions.with_raw_response.create(model=f"sim/{upstream}", messages=MSG)
    assert raw.headers["x-aiogw-model"] == upstream
    assert sim.stats()["last_request"]["body"]["model"] == upstream


async def test_a_gemini_name_is_one_encoded_path_segment(sim, client):
    reply = await client.chat.completions.create(model="gem/models/gemini-2.5-flash@001", messages=MSG)
    assert reply.choices[0].message.content
    # `models/` is the SDK's prefix; the rest is the client's, encoded whole (the simulator
    # decodes it, as Google does); `:generateContent` is ours.
    assert sim.stats("gem")["last_request"]["path"] == "/gem/v1beta/models/gemini-2.5-flash%40001:generateContent"


async def test_direct_names_share_their_accounts_retry_budget(gateway, client):
    _, app = gateway
    for i in range(20):
        await client.chat.completions.create(model=f"sim/made-up-{i}", messages=MSG)
    await client.chat.completions.create(model="fast", messages=MSG)
    assert set(app[DISPATCHER]._budgets) == {"sim/*", "fast"}


async def test_targets_addressed_directly_stay_out_of_shared_state(redis_server):
    """Configured targets' breakers and windows go through Redis; a name a client made up
    does not (any `provider/<anything>` would otherwise grow Redis and every sync)."""
    state = StateConfig(redis_url=redis_server.url, key_prefix="n", sync_interval_ms=50)
    replicas = []
    for _ in range(2):
        health = LocalHealth(configured={"acct/configured"})
        replicas.append((health, SharedState(state, health)))
    async with contextlib.AsyncExitStack() as stack:
        for _, shared in replicas:
            await shared.start()
            stack.push_async_callback(shared.close)
        (a, sa), (b, _) = replicas
        for tid in ("acct/configured", "acct/made-up"):
            h = a.get(tid)
            now = health_now()
            h.begin(now)
            h.end(now, probe=False, failure=FailureClass.TRANSIENT, latency_ms=5)
            h.force_open(health_now(), "manual")
        b.get("acct/made-up")
        await until(lambda: b.get("acct/configured").state == "open")  # b adopts the configured target's breaker
        assert b.get("acct/configured").state == "open"
        await sa.sync.sync_once()
        assert b.get("acct/made-up").state == "closed"  # per replica
        assert await sa.claim_probe("acct/made-up", 30) and await replicas[1][1].claim_probe("acct/made-up", 30)
        r = redis_client.Redis(port=redis_server.port)
        try:
            assert r.hkeys("n:breakers") == [b"acct/configured"]
            assert sorted(r.scan_iter("n:*")) == [b"n:breakers", b"n:hw:acct/configured"]
        finally:
            r.close()


async def test_a_base_url_outside_rfc_3986_fails_the_attempt_clearly_and_sends_nothing(sim, make_gateway):
    cfg = from_builtins(
        {
            "server": {"host": "127.0.0.1", "port": 0},
            "providers": {
                "odd": {"type": "openai", "base_url": sim.base_url("odd") + "/my models", "api_key": SIM_KEY}
            },
            "models": [{"name": "odd", "targets": [{"provider": "odd", "model": "sim-gpt-fast"}]}],
            "routing": {"retry": {"max_rounds": 0}},
        },
        env={},
    )
    url, _ = await make_gateway(cfg)
    async with AsyncOpenAI(base_url=url, api_key="k", max_retries=0) as c:
        with pytest.raises(openai.APIStatusError) as err:
            await c.chat.completions.create(model="odd", messages=MSG)
    assert err.value.status_code == 502
    assert "odd/sim-gpt-fast: not sent" in err.value.message and "' ' at position" in err.value.message
    assert sim.stats("odd")["requests"] == 0


async def test_a_model_name_an_upstream_reports_with_a_line_break_stays_out_of_headers(aiohttp_server, make_gateway):
    async def completion(request: web.Request) -> web.Response:
        return web.json_response({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "odd\r\nx-injected: 1",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        })  # fmt: skip

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completion)
    upstream = await aiohttp_server(app)
    cfg = from_builtins(
        {
            "server": {"host": "127.0.0.1", "port": 0},
            "providers": {"odd": {"type": "openai-compatible", "base_url": str(upstream.make_url("/v1"))}},
        },
        env={},
    )
    url, _ = await make_gateway(cfg)
    async with AsyncOpenAI(base_url=url, api_key="k", max_retries=0) as c:
        raw = await c.chat.completions.with_raw_response.create(model="odd/some-model", messages=MSG)
    assert raw.headers["x-aiogw-model"] == "some-model" and "x-injected" not in raw.headers
    assert raw.parse().model == "odd\r\nx-injected: 1"  # the body carries it, JSON-escaped
