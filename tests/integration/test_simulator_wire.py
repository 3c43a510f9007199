"""The simulator speaks OpenAI's wire format: the official SDK, used directly against it,
parses every shape it sends, and its faults surface as the SDK's own exceptions."""

from __future__ import annotations

import json

import aiohttp
import openai
import pytest
from conftest import until
from openai import AsyncOpenAI

MSG = [{"role": "user", "content": "Hello simulator"}]


@pytest.fixture
async def sdk(sim):
    async with AsyncOpenAI(base_url=sim.base_url(), api_key="k", max_retries=0, timeout=5) as c:
        yield c


async def test_stream_and_non_stream_give_the_same_text_and_usage(sdk):
    whole = await sdk.chat.completions.create(model="sim-gpt-fast", messages=MSG, seed=1)
    stream = await sdk.chat.completions.create(
        model="sim-gpt-fast", messages=MSG, seed=1, stream=True, stream_options={"include_usage": True}
    )
    got = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in got if c.choices) == whole.choices[0].message.content
    assert got[-1].choices == [] and got[-1].usage == whole.usage
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens


async def test_max_tokens_cuts_with_finish_length(sdk):
    r = await sdk.chat.completions.create(model="m", messages=MSG, max_tokens=3)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 3


async def test_tool_call_stream_reassembles_in_the_sdk(sdk):
    tools = [
        {
            "type": "function",
            "function": {"name": "a", "parameters": {"type": "object", "properties": {"x": {"type": "number"}}}},
        },
        {"type": "function", "function": {"name": "b", "parameters": {"type": "object", "properties": {}}}},
    ]
    async with sdk.chat.completions.stream(model="m", messages=MSG, tools=tools, tool_choice="required") as s:
        final = await s.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["a", "b"]
    assert json.loads(calls[0].function.arguments) == {"x": 1} and json.loads(calls[1].function.arguments) == {}
    assert final.choices[0].finish_reason == "tool_calls"


async def test_embeddings_float_and_base64(sdk):
    r = await sdk.embeddings.create(model="e", input=["a", "b"], dimensions=4)
    assert [len(d.embedding) for d in r.data] == [4, 4]
    b = await sdk.embeddings.create(model="e", input="a", dimensions=4)  # SDK asks base64 by default
    assert b.data[0].embedding == pytest.approx(r.data[0].embedding, abs=1e-5)


@pytest.mark.parametrize(
    ("status", "exc"),
    [
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
        (404, openai.NotFoundError),
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
    ],
)
async def test_status_faults_are_the_sdks_exceptions(sim, sdk, status, exc):
    sim.set_profile("default", fault="status", fault_status=status)
    with pytest.raises(exc):
        await sdk.chat.completions.create(model="m", messages=MSG)


async def test_fault_count_fails_only_the_next_requests(sim, sdk):
    sim.set_profile("default", fault="status", fault_status=500, fault_count=1)
    with pytest.raises(openai.InternalServerError):
        await sdk.chat.completions.create(model="m", messages=MSG)
    assert (await sdk.chat.completions.create(model="m", messages=MSG)).choices


@pytest.mark.parametrize("fault", ["drop", "error_event", "malformed"])
async def test_stream_faults_make_the_sdk_raise(sim, sdk, fault):
    sim.set_profile("default", fault=fault, fault_after_chunks=2)
    stream = await sdk.chat.completions.create(model="m", messages=MSG, stream=True)
    with pytest.raises(Exception):  # noqa: B017 - APIError, a decode error or a dropped connection
        async for _ in stream:
            pass


async def test_hang_is_a_client_timeout(sim):
    sim.set_profile("default", fault="hang")
    async with AsyncOpenAI(base_url=sim.base_url(), api_key="k", max_retries=0, timeout=0.3) as c:
        with pytest.raises(openai.APITimeoutError):
            await c.chat.completions.create(model="m", messages=MSG)


async def test_accounts_have_their_own_profiles_and_control_plane(sim):
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{sim.url}/_sim/profile?account=slow", json={"fault": "status", "fault_status": 503}) as r:
            assert (await r.json())["fault_status"] == 503
        async with s.post(f"{sim.base_url('slow')}/chat/completions", json={"model": "m", "messages": MSG}) as r:
            assert r.status == 503 and r.headers["retry-after"]
        async with s.post(f"{sim.base_url()}/chat/completions", json={"model": "m", "messages": MSG}) as r:
            assert r.status == 200
        async with s.get(f"{sim.url}/_sim/stats?account=slow") as r:
            assert (await r.json())["requests"] == 1


async def test_cancelled_stream_is_counted(sim):
    sim.set_profile("default", tokens_per_s=20, completion_tokens=100)
    async with aiohttp.ClientSession() as s:
        r = await s.post(f"{sim.base_url()}/chat/completions", json={"model": "m", "messages": MSG, "stream": True})
        await r.content.readany()
        r.close()
    await until(lambda: sim.stats()["streams_cancelled"])
    assert sim.stats()["streams_cancelled"] == 1
