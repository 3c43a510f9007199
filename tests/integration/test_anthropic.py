"""Anthropic end to end: a real gateway with an `anthropic` provider pointed at the
simulator's native Messages API, and the official `openai` SDK as the client. What the
client gets is compared with the native answer the simulator gives for the same native
request (read back from its stats and replayed with aiohttp), never with our own code."""

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

ACCOUNT, MODEL = "claude", "claude-haiku-4-5"
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
         {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}]  # fmt: skip
MSG = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"}]
FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls"}  # §4.4


def config(sim, account: str = ACCOUNT):
    base = sim.root(account)
    sim.set_profile(account, api_key=SIM_KEY, completion_tokens=12)
    return from_builtins({
        "server": {"host": "127.0.0.1", "port": 0},
        "providers": {"claude": {"type": "anthropic", "base_url": base, "api_key": SIM_KEY}},
        "models": [{"name": "claude", "targets": [{"provider": "claude", "model": MODEL}]}],
        "routing": {"retry": {"max_rounds": 0}},
    }, env={})  # fmt: skip


@pytest.fixture
async def gw(sim, make_gateway):
    url, _ = await make_gateway(config(sim))
    client = AsyncOpenAI(base_url=url, api_key="client", max_retries=0, timeout=20)
    yield url, client
    await client.close()


def last(sim, account: str = ACCOUNT) -> dict[str, Any]:
    return sim.stats(account)["last_request"]


async def native(sim, account: str = ACCOUNT) -> dict[str, Any]:
    """The simulator's native answer to the last native request, asked for non-streaming."""
    req = last(sim, account)
    body = {**req["body"], "stream": False}
    headers = {"x-api-key": SIM_KEY, "anthropic-version": "2023-06-01"}
    async with aiohttp.ClientSession() as s, s.post(sim.url + req["path"], json=body, headers=headers) as r:
        assert r.status == 200, await r.text()
        return await r.json()


def native_text(msg: dict[str, Any]) -> str | None:
    return "".join(b["text"] for b in msg["content"] if b["type"] == "text") or None


def native_usage(msg: dict[str, Any]) -> tuple[int, int]:
    u = msg["usage"]
    return u["input_tokens"] + u["cache_read_input_tokens"] + u["cache_creation_input_tokens"], u["output_tokens"]


async def test_text_streaming_and_not_equals_the_native_answer(sim, gw):
    _, client = gw
    r = await client.chat.completions.create(model="claude", messages=MSG)
    msg = await native(sim)
    assert r.choices[0].message.content == native_text(msg)
    assert r.choices[0].finish_reason == FINISH[msg["stop_reason"]] == "stop"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == native_usage(msg)
    assert r.usage.prompt_tokens_details.cached_tokens == msg["usage"]["cache_read_input_tokens"]

    async with client.chat.completions.stream(
        model="claude", messages=MSG, stream_options={"include_usage": True}
    ) as s:
        final = await s.get_final_completion()
    msg = await native(sim)
    assert final.choices[0].message.content == native_text(msg)
    assert final.choices[0].finish_reason == "stop"
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == native_usage(msg)


async def test_native_request_has_top_level_system_auth_and_version(sim, gw):
    _, client = gw
    await client.chat.completions.create(model="claude", messages=MSG, max_tokens=50, stop=["END"], user="u-1")
    req = last(sim)
    assert req["path"] == "/claude/v1/messages"
    assert req["headers"]["x-api-key"] == SIM_KEY and req["headers"]["anthropic-version"] == "2023-06-01"
    assert "authorization" not in req["headers"]
    body = req["body"]
    assert body["system"] == [{"type": "text", "text": "Be brief."}]
    assert [m["role"] for m in body["messages"]] == ["user"]
    assert (body["max_tokens"], body["stop_sequences"], body["metadata"]) == (50, ["END"], {"user_id": "u-1"})


async def test_default_max_tokens_comes_from_the_models_output_cap(sim, gw):
    _, client = gw
    await client.chat.completions.create(model="claude", messages=MSG)
    assert last(sim)["body"]["max_tokens"] == 64000  # Claude Haiku 4.5's documented maximum


@pytest.mark.parametrize("stream", [False, True])
async def test_tool_calls_equal_the_native_tool_use_blocks(sim, gw, stream):
    _, client = gw
    kw: dict[str, Any] = {"model": "claude", "messages": MSG, "tools": TOOLS, "tool_choice": "required"}
    if stream:
        async with client.chat.completions.stream(**kw, stream_options={"include_usage": True}) as s:
            r = await s.get_final_completion()
    else:
        r = await client.chat.completions.create(**kw)
    msg = await native(sim)
    uses = [(b["name"], b["input"]) for b in msg["content"] if b["type"] == "tool_use"]
    calls = r.choices[0].message.tool_calls
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == uses
    assert len(uses) == 2  # required + two tools: the simulator calls both, in parallel
    assert all(c.id.startswith("toolu_") for c in calls)
    assert r.choices[0].finish_reason == FINISH[msg["stop_reason"]] == "tool_calls"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == native_usage(msg)
    assert last(sim)["body"]["tool_choice"] == {"type": "any"}


async def test_a_whole_tool_loop_is_valid_native_history(sim, gw):
    """Assistant tool calls (one id minted elsewhere) and merged tool results are accepted
    by the simulator's validation of Anthropic's rules."""
    _, client = gw
    history = [
        *MSG,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call:gemini|1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "call:gemini|1", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_2", "content": "noon"},
    ]  # fmt: skip
    r = await client.chat.completions.create(model="claude", messages=history)
    assert r.choices[0].finish_reason == "stop" and r.choices[0].message.content
    msgs = last(sim)["body"]["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    results = msgs[2]["content"]
    assert [b["tool_use_id"] for b in results] == ["call_gemini_1", "call_2"]
    assert [b["id"] for b in msgs[1]["content"]] == ["call_gemini_1", "call_2"]


@pytest.mark.parametrize("stream", [False, True])
async def test_json_mode_answers_with_content_and_finish_stop(sim, gw, stream):
    _, client = gw
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "temp": {"type": "integer"}}}
    rf = {"type": "json_schema", "json_schema": {"name": "weather", "schema": schema}}
    kw: dict[str, Any] = {"model": "claude", "messages": MSG, "response_format": rf}
    if stream:
        async with client.chat.completions.stream(**kw) as s:
            r = await s.get_final_completion()
    else:
        r = await client.chat.completions.create(**kw)
    msg = await native(sim)
    forced = [b["input"] for b in msg["content"] if b["type"] == "tool_use"]
    assert json.loads(r.choices[0].message.content) == forced[0]
    assert r.choices[0].finish_reason == "stop" and not r.choices[0].message.tool_calls
    assert last(sim)["body"]["tool_choice"] == {"type": "tool", "name": "json_response"}


async def test_max_tokens_stop_is_length(sim, gw):
    _, client = gw
    r = await client.chat.completions.create(model="claude", messages=MSG, max_completion_tokens=3)
    msg = await native(sim)
    assert msg["stop_reason"] == "max_tokens" and r.choices[0].finish_reason == "length"
    assert r.choices[0].message.content == native_text(msg)


async def test_thinking_streams_as_reasoning_content(sim, gw):
    url, _ = gw
    body = {"model": "claude", "messages": MSG, "stream": True, "reasoning_effort": "low", "max_tokens": 4000}
    async with aiohttp.ClientSession() as s, s.post(f"{url}/chat/completions", json=body) as r:
        cs = chunks(await r.read())
    reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content", "") for c in cs if c["choices"])
    msg = await native(sim)
    assert reasoning == "".join(b["thinking"] for b in msg["content"] if b["type"] == "thinking") != ""
    assert last(sim)["body"]["thinking"] == {"type": "enabled", "budget_tokens": 2048}


@pytest.mark.parametrize(("status", "expect", "retryable"), [(529, 503, True), (429, 429, True), (500, 502, True),
                                                              (400, 400, False)])  # fmt: skip
async def test_native_errors_become_openai_errors(sim, gw, status, expect, retryable):
    _, client = gw
    sim.set_profile(ACCOUNT, fault="status", fault_status=status)
    with pytest.raises(openai.APIStatusError) as exc:
        await client.chat.completions.create(model="claude", messages=MSG)
    assert exc.value.status_code == expect
    assert set(exc.value.body) >= {"message", "type", "param", "code"}
    if not retryable:
        assert exc.value.body["type"] == "invalid_request_error"


async def test_overloaded_first_target_fails_over_to_the_second(sim, make_gateway):
    cfg = config(sim)
    sim.set_profile("claude2", api_key=SIM_KEY, completion_tokens=12)
    data = {"server": {"host": "127.0.0.1", "port": 0},
            "providers": {"claude": {"type": "anthropic", "base_url": sim.root(ACCOUNT), "api_key": SIM_KEY},
                          "claude2": {"type": "anthropic", "base_url": sim.root("claude2"), "api_key": SIM_KEY}},
            "models": [{"name": "claude", "targets": [{"provider": "claude", "model": MODEL},
                                                      {"provider": "claude2", "model": MODEL}]}],
            "routing": {"retry": {"max_rounds": 0}}}  # fmt: skip
    assert cfg  # the first account's profile is set up by config()
    url, _ = await make_gateway(from_builtins(data, env={}))
    sim.set_profile(ACCOUNT, fault="status", fault_status=529)
    async with AsyncOpenAI(base_url=url, api_key="c", max_retries=0) as client:
        r = await client.chat.completions.with_raw_response.create(model="claude", messages=MSG)
    assert r.headers["x-aiogw-provider"] == "claude2"
    assert r.parse().choices[0].message.content


async def test_prompt_too_long_is_a_context_length_400(sim, gw):
    _, client = gw
    sim.set_profile(ACCOUNT, context_window=2)
    with pytest.raises(openai.BadRequestError) as exc:
        await client.chat.completions.create(model="claude", messages=MSG)
    assert exc.value.body["code"] == "context_length_exceeded"
    assert "prompt is too long" in exc.value.body["message"]


async def test_mid_stream_overloaded_error_ends_with_error_event_then_done(sim, gw):
    url, _ = gw
    sim.set_profile(ACCOUNT, fault="error_event", fault_after_chunks=2, tokens_per_s=500)
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{url}/chat/completions", json={"model": "claude", "messages": MSG, "stream": True}) as r:
            assert r.status == 200
            raw = await r.read()
    cs = chunks(raw)  # asserts the single trailing [DONE]
    assert "Overloaded" in cs[-1]["error"]["message"]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in cs[:-1] if c.get("choices"))
    assert all(c["choices"][0]["finish_reason"] is None for c in cs[:-1] if c.get("choices"))


async def test_wrong_key_is_not_the_callers_fault(sim, make_gateway):
    cfg = config(sim)
    sim.set_profile(ACCOUNT, api_key="another-key")
    url, _ = await make_gateway(cfg)
    async with AsyncOpenAI(base_url=url, api_key="c", max_retries=0) as client:
        with pytest.raises(openai.APIStatusError) as exc:
            await client.chat.completions.create(model="claude", messages=MSG)
    assert exc.value.status_code == 502  # upstream 401: our configuration, never the client's


@pytest.mark.parametrize(
    ("extra", "param"),
    [({"temperature": 1.5}, "temperature"), ({"n": 2}, "n"), ({"logprobs": True}, "logprobs"),
     ({"presence_penalty": 0.5}, "presence_penalty"), ({"stop": ["  "]}, "stop"),
     ({"temperature": 0.5, "top_p": 0.5}, "top_p")],
)  # fmt: skip
async def test_refused_parameters_are_a_400_naming_them(sim, gw, extra, param):
    _, client = gw
    with pytest.raises(openai.BadRequestError) as exc:
        await client.chat.completions.create(model="claude", messages=MSG, **extra)
    assert exc.value.body["param"] == param
    assert sim.stats(ACCOUNT)["requests"] == 0


async def test_the_default_account_is_served_without_a_prefix(sim, make_gateway):
    url, _ = await make_gateway(config(sim, "default"))
    async with AsyncOpenAI(base_url=url, api_key="c", max_retries=0) as client:
        r = await client.chat.completions.create(model="claude", messages=MSG)
    assert r.choices[0].message.content
    assert last(sim, "default")["path"] == "/v1/messages"
