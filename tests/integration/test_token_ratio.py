"""Per-target token ratios end to end: a simulated account whose tokenizer counts twice the
gateway's chars/4 estimate teaches its target a ratio near 2 (shown in /v1/gateway/health),
and the context-window check then skips it for a prompt that fits only unscaled; a target
whose usage the gateway had to estimate keeps its prior; a provider type's prior (Anthropic's)
already scales the target's and the virtual key's tpm reservations and the budget hold
before any usage is seen."""

from __future__ import annotations

import asyncio

import aiohttp
import openai
import pytest
from conftest import SIM_KEY, gateway_config, until
from multidict import CIMultiDict
from openai import AsyncOpenAI

from aiogw.config_load import from_builtins


def words(tokens: int) -> list[dict[str, str]]:
    """A user message of `tokens` tokens by the 4-characters rule."""
    return [{"role": "user", "content": "word " * (tokens * 4 // 5)}]


async def health(url: str) -> dict[str, dict]:
    async with aiohttp.ClientSession() as s, s.get(f"{url}/gateway/health") as r:
        assert r.status == 200
        return {t["id"]: t for t in (await r.json())["targets"]}


async def post(url, body):
    async with aiohttp.ClientSession() as s, s.post(f"{url}/chat/completions", json=body) as r:
        return r.status, CIMultiDict(r.headers), await r.read()


async def test_a_target_learns_its_ratio_and_its_context_window_check_uses_it(sim, make_gateway):
    # The `sim` account's model counts every prompt at twice the estimate, and refuses (as a
    # real provider would) a prompt over its 1,000-token window.
    sim.set_profile("default", prompt_token_ratio=2.0, context_window=1000)
    cfg = gateway_config(
        sim,
        models=[
            {
                "name": "fast",
                "targets": [
                    {"provider": "sim", "model": "sim-gpt-fast", "context_window": 1000},
                    {"provider": "compat", "model": "sim-llama", "context_window": 100000},
                ],
            }
        ],
    )
    url, _ = await make_gateway(cfg)
    before = (await health(url))["sim/sim-gpt-fast"]["token_ratio"]
    assert before == {"value": 1.0, "observations": 0, "prior": 1.0}

    client = AsyncOpenAI(base_url=url, api_key="k", max_retries=0, timeout=20)
    n = 40
    for i in range(n):  # ~200 estimated tokens, 400 reported: both fit the window
        if i % 2:
            await client.chat.completions.create(model="fast", messages=words(200), max_tokens=10)
        else:  # streams teach it as well (the usage chunk the gateway asks for)
            stream = await client.chat.completions.create(model="fast", messages=words(200), stream=True)
            async for _ in stream:
                pass
    await client.close()
    assert sim.stats("default")["requests"] == n
    learned = (await health(url))["sim/sim-gpt-fast"]["token_ratio"]
    assert learned["observations"] == n and learned["prior"] == 1.0
    assert 1.8 < learned["value"] <= 2.0

    # ~700 estimated tokens: fits the 1,000-token window as estimated, not as this provider
    # counts it (~1,400): skipped before sending, the first answer comes from `compat`.
    status, headers, body = await post(url, {"model": "fast", "messages": words(700), "max_tokens": 10})
    assert status == 200, body
    assert headers["x-aiogw-provider"] == "compat" and headers["x-aiogw-attempts"] == "1"
    assert sim.stats("default")["requests"] == n  # never sent there


async def test_estimated_usage_teaches_nothing(sim, make_gateway):
    # This account reports no usage: the gateway estimates it for the client (and says so),
    # and the target's ratio stays at its prior.
    sim.set_profile("compat", prompt_token_ratio=2.0, report_usage=False)
    url, _ = await make_gateway(gateway_config(sim))
    client = AsyncOpenAI(base_url=url, api_key="k", max_retries=0, timeout=20)
    for _ in range(5):
        stream = await client.chat.completions.create(
            model="compat-model", messages=words(200), stream=True, stream_options={"include_usage": True}
        )
        last = None
        async for chunk in stream:
            last = chunk
        assert last is not None and last.usage is not None
        assert (last.usage.model_extra or {}).get("estimated") is True
        reply = await client.chat.completions.create(model="compat-model", messages=words(200))
        assert reply.usage is None
    await client.close()
    assert sim.stats("compat")["requests"] == 10
    ratio = (await health(url))["compat/sim-llama"]["token_ratio"]
    assert ratio == {"value": 1.0, "observations": 0, "prior": 1.0}


def claude_first(sim, claude: dict, **extra):
    """A group whose first target is an Anthropic account (prior 1.15), then `compat`."""
    sim.set_profile("claude", api_key=SIM_KEY)
    return from_builtins(
        {
            "server": {"host": "127.0.0.1", "port": 0},
            "providers": {
                "claude": {"type": "anthropic", "base_url": sim.root("claude"), "api_key": SIM_KEY},
                "compat": {"type": "openai-compatible", "base_url": sim.base_url("compat")},
            },
            "models": [
                {
                    "name": "m",
                    "targets": [
                        {"provider": "claude", "model": "claude-haiku-4-5", **claude},
                        {"provider": "compat", "model": "sim-llama"},
                    ],
                }
            ],
            "routing": {"retry": {"max_rounds": 0}},
            **extra,
        },
        env={},
    )


async def test_the_tpm_reservation_counts_the_prompt_in_the_targets_tokens(sim, make_gateway):
    url, _ = await make_gateway(claude_first(sim, {"limits": {"tpm": 2000}}))
    assert (await health(url))["claude/claude-haiku-4-5"]["token_ratio"]["prior"] == 1.15
    sim.set_profile("claude", ttft_ms=1500)  # the first request holds its reservation meanwhile
    # ~800 estimated prompt tokens + 100: 1,020 reserved in Claude's tokens (900 as estimated).
    first = asyncio.ensure_future(post(url, {"model": "m", "messages": words(800), "max_tokens": 100}))
    await until(lambda: sim.stats("claude")["requests"] == 1)
    assert sim.stats("claude")["requests"] == 1
    # 1 + 1,050 tokens fit the 1,100 left as estimated, not the 980 left in Claude's tokens.
    small = [{"role": "user", "content": "hi"}]
    status, headers, body = await post(url, {"model": "m", "messages": small, "max_tokens": 1050})
    assert status == 200, body
    assert headers["x-aiogw-provider"] == "compat"  # claude: skipped at its tpm limit
    status, headers, _ = await first
    assert status == 200 and headers["x-aiogw-provider"] == "claude"
    assert sim.stats("claude")["requests"] == 1


async def test_the_budget_hold_counts_the_prompt_in_the_targets_tokens(sim, make_gateway, tmp_path):
    price = {"input": 1000.0, "output": 1000.0}  # a token costs $0.001
    cfg = claude_first(
        sim,
        {"price": price},
        auth={"master_key": "sk-master-test"},
        store={"url": f"sqlite:///{tmp_path}/aiogw.db", "ledger_flush_ms": 50},
        budgets=[{"scope": "global", "limit_usd": 1.10, "period": "1d"}],
    )
    url, _ = await make_gateway(cfg)
    client = AsyncOpenAI(base_url=url, api_key="sk-master-test", max_retries=0, timeout=20)
    # Only the Anthropic target is priced, so its worst case is the request's. As estimated: (1,000 + 10) x $0.001 = $1.01, within $1.10; in Claude's
    # tokens (x 1.15): $1.16, over it: refused before anything is sent.
    with pytest.raises(openai.APIStatusError) as err:
        await client.chat.completions.create(model="m", messages=words(1000), max_tokens=10)
    await client.close()
    assert err.value.status_code == 402
    assert err.value.response.json()["error"]["code"] == "budget_exceeded"
    assert sim.stats("claude")["requests"] == 0 and sim.stats("compat")["requests"] == 0


async def test_a_keys_tpm_counts_the_prompt_in_the_hungriest_candidates_tokens(sim, make_gateway, tmp_path):
    master = "master-key-for-tests-0123456789"
    cfg = claude_first(sim, {}, auth={"master_key": master}, store={"url": f"sqlite:///{tmp_path}/aiogw.db"})
    url, _ = await make_gateway(cfg)
    async with aiohttp.ClientSession() as s:
        body = {"name": "t", "limits": {"tpm": 2000}}
        headers = {"authorization": f"Bearer {master}"}
        async with s.post(url.removesuffix("/v1") + "/admin/v1/keys", json=body, headers=headers) as r:
            assert r.status == 201
            secret = (await r.json())["key"]
    sim.set_profile("claude", ttft_ms=1500)  # the first request holds its reservation meanwhile
    client = AsyncOpenAI(base_url=url, api_key=secret, max_retries=0, timeout=20)
    # Not routed yet: the key reserves in the hungriest candidate's tokens (Claude's, x 1.15),
    # ~800 + 100 -> 1,020 of its 2,000.
    first = asyncio.ensure_future(client.chat.completions.create(model="m", messages=words(800), max_tokens=100))
    await until(lambda: sim.stats("claude")["requests"] == 1)
    assert sim.stats("claude")["requests"] == 1
    # 1 + 1,050 fit the 1,100 left as estimated, not the 980 left in Claude's tokens.
    with pytest.raises(openai.RateLimitError) as err:
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=1050)
    assert "tpm" in err.value.body["message"]
    assert (await first).choices
    await client.close()


async def test_a_default_output_cap_is_lowered_to_what_the_window_leaves(sim, make_gateway):
    # Anthropic requires max_tokens: without a client cap the adapter sends the model's
    # maximum output, which the gateway lowers to the window less the prompt counted in the
    # target's tokens (Claude's prior: 1.15 per estimated token). A client's cap is kept.
    sim.set_profile("claude-acct", api_key=SIM_KEY)
    cfg = from_builtins({
        "server": {"host": "127.0.0.1", "port": 0},
        "providers": {"claude": {"type": "anthropic", "base_url": sim.root("claude-acct"), "api_key": SIM_KEY}},
        "models": [{"name": "claude", "targets": [
            {"provider": "claude", "model": "claude-sonnet-4-5", "context_window": 2000}]}],
    }, env={})  # fmt: skip
    url, _ = await make_gateway(cfg)
    client = AsyncOpenAI(base_url=url, api_key="k", max_retries=0, timeout=20)
    try:
        await client.chat.completions.create(model="claude", messages=words(1000))
        assert sim.stats("claude-acct")["last_request"]["body"]["max_tokens"] == 2000 - 1150
        await client.chat.completions.create(model="claude", messages=words(1000), max_tokens=50)
        assert sim.stats("claude-acct")["last_request"]["body"]["max_tokens"] == 50
    finally:
        await client.close()


async def test_a_clients_cap_above_the_targets_output_limit_is_lowered_to_it(sim, make_gateway):
    # Claude Code asks for 32,000 output tokens; a target configured to give at most 16,384
    # (an OpenAI model's limit) gets 16,384 instead of refusing the request. A smaller cap,
    # or a target without a limit, is left as the client sent it.
    cfg = gateway_config(
        sim,
        models=[
            {"name": "gpt", "targets": [{"provider": "sim", "model": "sim-gpt-fast", "max_output_tokens": 16384}]},
            {"name": "open", "targets": [{"provider": "sim", "model": "sim-gpt-fast"}]},
        ],
    )
    url, _ = await make_gateway(cfg)
    client = AsyncOpenAI(base_url=url, api_key="k", max_retries=0, timeout=20)
    try:
        sent = lambda: sim.stats("default")["last_request"]["body"]  # noqa: E731
        await client.chat.completions.create(model="gpt", messages=words(10), max_tokens=32000)
        assert sent()["max_tokens"] == 16384
        await client.chat.completions.create(model="gpt", messages=words(10), max_completion_tokens=20000)
        assert sent()["max_completion_tokens"] == 16384 and "max_tokens" not in sent()
        await client.chat.completions.create(model="gpt", messages=words(10), max_tokens=50)
        assert sent()["max_tokens"] == 50
        await client.chat.completions.create(model="open", messages=words(10), max_tokens=32000)
        assert sent()["max_tokens"] == 32000
    finally:
        await client.close()
    # A Messages client (Claude Code's request shape) through the same translated target.
    body = {"model": "gpt", "max_tokens": 32000, "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as s, s.post(url.removesuffix("/v1") + "/v1/messages", json=body) as r:
        assert r.status == 200, await r.text()
    assert sim.stats("default")["last_request"]["body"]["max_tokens"] == 16384
