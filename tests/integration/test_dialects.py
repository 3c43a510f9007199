"""Mistral, DeepSeek and Qwen end to end: the official `openai` SDK (or raw SSE) through a real
gateway to the dialect simulator, checked against the native answer the simulator holds and
against the native request it received (strict schema, thinking switches, stripped history)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import openai
import pytest
from conftest import SIM_KEY
from openai import AsyncOpenAI
from sse_client import chunks

from aiogw.config_load import from_builtins

SYSTEM = {"role": "system", "content": "You are a terse assistant. Answer in one short sentence, no preamble at all."}
MSG = [SYSTEM, {"role": "user", "content": "Say hello."}]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]  # fmt: skip
# model name -> (account, provider type, upstream model, base URL path after the account root)
MODELS = {
    "mistral": ("default", "mistral", "mistral-small-latest", "/mistral/v1"),  # the unprefixed default account
    "ds-chat": ("ds", "deepseek", "deepseek-chat", "/deepseek"),
    "ds-reasoner": ("ds", "deepseek", "deepseek-reasoner", "/deepseek"),
    "qwen": ("qw", "qwen", "qwen-plus", "/qwen/compatible-mode/v1"),
}
NATIVE_PATH = {"mistral": "/chat/completions", "deepseek": "/chat/completions", "qwen": "/chat/completions"}


@pytest.fixture
async def gw(sim, make_gateway):
    providers, models = {}, []
    for name, (account, kind, model, path) in MODELS.items():
        providers[f"{account}-{kind}"] = {"type": kind, "base_url": sim.root(account) + path, "api_key": SIM_KEY}
        sim.set_profile(account, api_key=SIM_KEY, completion_tokens=12)
        models.append({"name": name, "targets": [{"provider": f"{account}-{kind}", "model": model}]})
    cfg = from_builtins({"server": {"host": "127.0.0.1", "port": 0}, "providers": providers, "models": models,
                         "routing": {"retry": {"max_rounds": 0}}}, env={})  # fmt: skip
    url, _ = await make_gateway(cfg)
    client = AsyncOpenAI(base_url=url, api_key="client", max_retries=0, timeout=20)
    yield url, client
    await client.close()


def last(sim, name: str) -> dict[str, Any]:
    return sim.stats(MODELS[name][0])["last_request"]


async def native(sim, name: str) -> dict[str, Any]:
    """The simulator's own (non-streamed) answer to the native request the gateway last sent."""
    req = last(sim, name)
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            sim.url + req["path"], json={**req["body"], "stream": False}, headers={"authorization": f"Bearer {SIM_KEY}"}
        ) as r,
    ):
        assert r.status == 200, await r.text()
        return json.loads(await r.read())  # DeepSeek's body may start with blank lines


async def raw_stream(url: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as s, s.post(f"{url}/chat/completions", json={**body, "stream": True}) as r:
        assert r.status == 200, await r.text()
        return chunks(await r.read())


def text_of(cs: list[dict[str, Any]], key: str = "content") -> str:
    return "".join(c["choices"][0]["delta"].get(key) or "" for c in cs if c["choices"])


# --- Mistral -------------------------------------------------------------------------------


async def test_mistral_gets_only_schema_fields_and_usage_is_emulated(sim, gw):
    url, client = gw
    r = await client.chat.completions.create(
        model="mistral", messages=MSG, seed=7, user="u-1", max_completion_tokens=50, extra_body={"store": True}
    )
    req = last(sim, "mistral")
    assert req["path"] == "/mistral/v1/chat/completions" and req["headers"]["authorization"] == f"Bearer {SIM_KEY}"
    assert req["body"]["random_seed"] == 7 and req["body"]["max_tokens"] == 50
    assert not {"seed", "user", "store", "max_completion_tokens", "stream_options"} & set(req["body"])
    nat = await native(sim, "mistral")
    assert r.choices[0].message.content == nat["choices"][0]["message"]["content"]

    cs = await raw_stream(url, {"model": "mistral", "messages": MSG})
    assert "stream_options" not in last(sim, "mistral")["body"]
    assert all(c["choices"] for c in cs), "no usage chunk unless the client asks"
    cs = await raw_stream(url, {"model": "mistral", "messages": MSG, "stream_options": {"include_usage": True}})
    assert "stream_options" not in last(sim, "mistral")["body"]
    nat = await native(sim, "mistral")
    assert cs[-1]["choices"] == [] and cs[-1]["usage"]["prompt_tokens"] == nat["usage"]["prompt_tokens"]
    assert cs[-1]["usage"]["completion_tokens"] == nat["usage"]["completion_tokens"]
    assert text_of(cs) == nat["choices"][0]["message"]["content"]


async def test_mistral_length_finish_matches_the_native_answer(sim, gw):
    _, client = gw
    r = await client.chat.completions.create(model="mistral", messages=MSG, max_tokens=3)
    nat = await native(sim, "mistral")
    assert r.choices[0].finish_reason == nat["choices"][0]["finish_reason"] == "length"


async def test_mistral_accepts_a_foreign_tool_loop_and_a_trailing_assistant_prefix(sim, gw):
    _, client = gw
    history = [*MSG,
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": "call_abc123xyz_long", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
               {"role": "tool", "tool_call_id": "call_abc123xyz_long", "content": "sunny"},
               {"role": "assistant", "content": "It is"}]  # fmt: skip
    r = await client.chat.completions.create(model="mistral", messages=history, tools=TOOLS, tool_choice="none")
    assert r.choices[0].message.content
    sent = last(sim, "mistral")["body"]["messages"]
    assert len(sent[2]["tool_calls"][0]["id"]) == 9 and sent[3]["tool_call_id"] == sent[2]["tool_calls"][0]["id"]
    assert sent[3]["name"] == "get_weather" and sent[-1]["prefix"] is True


# --- DeepSeek ------------------------------------------------------------------------------


async def test_deepseek_reasoner_reasoning_and_usage_match_the_native_answer(sim, gw):
    url, client = gw
    r = await client.chat.completions.create(model="ds-reasoner", messages=MSG)
    nat = await native(sim, "ds-reasoner")
    msg, nu = nat["choices"][0]["message"], nat["usage"]
    assert r.choices[0].message.content == msg["content"]
    assert r.choices[0].message.reasoning_content == msg["reasoning_content"]  # type: ignore[attr-defined]
    assert r.usage.prompt_tokens_details.cached_tokens == nu["prompt_cache_hit_tokens"] > 0
    assert r.usage.completion_tokens_details.reasoning_tokens == nu["completion_tokens_details"]["reasoning_tokens"]

    cs = await raw_stream(url, {"model": "ds-reasoner", "messages": MSG, "stream_options": {"include_usage": True}})
    assert text_of(cs, "reasoning_content") == msg["reasoning_content"] and text_of(cs) == msg["content"]
    usage = cs[-1]["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (nu["prompt_tokens"], nu["completion_tokens"])
    assert usage["prompt_tokens_details"]["cached_tokens"] == nu["prompt_cache_hit_tokens"]
    assert "prompt_cache_hit_tokens" not in usage


async def test_deepseek_thinking_mode_drops_ignored_params_and_refuses_logprobs(sim, gw):
    _, client = gw
    await client.chat.completions.create(model="ds-reasoner", messages=MSG, temperature=0.1, top_p=0.5)
    assert not {"temperature", "top_p"} & set(last(sim, "ds-reasoner")["body"])
    await client.chat.completions.create(model="ds-chat", messages=MSG, temperature=0.1, reasoning_effort="none")
    body = last(sim, "ds-chat")["body"]
    assert body["temperature"] == 0.1 and body["thinking"] == {"type": "disabled"}
    before = sim.stats("ds")["requests"]
    with pytest.raises(openai.BadRequestError) as exc:
        await client.chat.completions.create(model="ds-reasoner", messages=MSG, logprobs=True)
    assert exc.value.body["param"] == "logprobs" and sim.stats("ds")["requests"] == before


async def test_deepseek_replayed_reasoning_is_stripped_outside_the_tool_loop(sim, gw):
    _, client = gw
    history = [*MSG, {"role": "assistant", "content": "Hello.", "reasoning_content": "They want a greeting."},
               {"role": "user", "content": "Again."}]  # fmt: skip
    r = await client.chat.completions.create(model="ds-reasoner", messages=history)  # the simulator 400s on leftovers
    assert r.choices[0].message.content
    assert all("reasoning_content" not in m for m in last(sim, "ds-reasoner")["body"]["messages"])


async def test_deepseek_tool_calls_stream_with_ids_and_names_first(sim, gw):
    url, _ = gw
    cs = await raw_stream(url, {"model": "ds-chat", "messages": MSG, "tools": TOOLS, "tool_choice": "required"})
    nat = await native(sim, "ds-chat")
    calls = [d for c in cs if c["choices"] for d in c["choices"][0]["delta"].get("tool_calls") or []]
    assert calls[0]["id"] and calls[0]["function"]["name"] == "get_weather"
    args = "".join(d["function"].get("arguments") or "" for d in calls)
    assert json.loads(args) == json.loads(nat["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"])
    assert [c["choices"][0]["finish_reason"] for c in cs if c["choices"] and c["choices"][0]["finish_reason"]] == [
        "tool_calls"
    ]


@pytest.mark.parametrize(("status", "expect"), [(402, 502), (503, 503), (429, 429)])
async def test_deepseek_native_errors_become_openai_errors(sim, gw, status, expect):
    _, client = gw
    sim.set_profile("ds", fault="status", fault_status=status)
    with pytest.raises(openai.APIStatusError) as exc:
        await client.chat.completions.create(model="ds-chat", messages=MSG)
    assert exc.value.status_code == expect and set(exc.value.body) >= {"message", "type", "param", "code"}
    if status == 402:
        assert "quota or balance" in exc.value.body["message"]


async def test_deepseek_mid_stream_error_ends_with_error_event_then_done(sim, gw):
    url, _ = gw
    sim.set_profile("ds", fault="error_event", fault_after_chunks=2, tokens_per_s=500)
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{url}/chat/completions", json={"model": "ds-chat", "messages": MSG, "stream": True}) as r,
    ):
        cs = chunks(await r.read())
    assert "error" in cs[-1] and text_of(cs[:-1])


# --- Qwen ----------------------------------------------------------------------------------


async def test_qwen_reasoning_effort_switches_thinking_and_streams_reasoning(sim, gw):
    url, client = gw
    await client.chat.completions.create(model="qwen", messages=MSG)
    assert last(sim, "qwen")["body"]["enable_thinking"] is False
    cs = await raw_stream(url, {"model": "qwen", "messages": MSG, "reasoning_effort": "low",
                                "stream_options": {"include_usage": True}})  # fmt: skip
    body = last(sim, "qwen")["body"]
    assert (body["enable_thinking"], body["thinking_budget"]) == (True, 2048) and "reasoning_effort" not in body
    nat = await native(sim, "qwen")
    assert text_of(cs, "reasoning_content") == nat["choices"][0]["message"]["reasoning_content"]
    assert text_of(cs) == nat["choices"][0]["message"]["content"]
    assert cs[-1]["choices"] == [] and cs[-1]["usage"]["completion_tokens"] == nat["usage"]["completion_tokens"]
    assert [c["choices"][0]["finish_reason"] for c in cs if c["choices"] and c["choices"][0]["finish_reason"]] == [
        "stop"
    ]


async def test_qwen_tool_call_stream_never_shows_restated_empty_ids(sim, gw):
    url, _ = gw
    cs = await raw_stream(url, {"model": "qwen", "messages": MSG, "tools": TOOLS, "tool_choice": "required"})
    calls = [d for c in cs if c["choices"] for d in c["choices"][0]["delta"].get("tool_calls") or []]
    assert calls[0]["id"].startswith("call_") and all("id" not in d for d in calls[1:])
    assert all("name" not in d["function"] for d in calls[1:])


async def test_qwen_moderation_is_a_400_content_filter(sim, gw):
    _, client = gw
    with pytest.raises(openai.BadRequestError) as exc:
        await client.chat.completions.create(model="qwen", messages=[{"role": "user", "content": "say <<blocked>>"}])
    assert exc.value.body["code"] == "content_filter"


async def test_qwen_ranges_are_refused_before_the_upstream_call(sim, gw):
    _, client = gw
    for kw, param in [({"temperature": 2.0}, "temperature"), ({"top_p": 0.0}, "top_p")]:
        with pytest.raises(openai.BadRequestError) as exc:
            await client.chat.completions.create(model="qwen", messages=MSG, **kw)
        assert exc.value.body["param"] == param
    assert sim.stats("qw")["requests"] == 0
