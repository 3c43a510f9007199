"""Chat completions through the gateway to the simulated OpenAI upstream, with the official
SDK as the client: the fast path (`openai` type) and the normalising path
(`openai-compatible`) must give the client the same thing."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import openai
import pytest
from conftest import both_spellings
from openai import AsyncOpenAI, OpenAI
from sse_client import chunks

MSG = [{"role": "user", "content": "Tell me something."}]
MODELS = ["fast", "compat-model"]


async def direct(sim, account="default"):
    return AsyncOpenAI(base_url=sim.base_url(account), api_key="sk-sim-upstream-key-0123456789", max_retries=0)


@pytest.mark.parametrize("model", MODELS)
async def test_non_streaming_completion_is_the_upstream_answer(client, sim, model):
    resp = await client.chat.completions.with_raw_response.create(model=model, messages=MSG, seed=7)
    completion = resp.parse()
    account = "default" if model == "fast" else "compat"
    upstream_model = "sim-gpt-fast" if model == "fast" else "sim-llama"
    expected = await (await direct(sim, account)).chat.completions.create(model=upstream_model, messages=MSG, seed=7)
    assert completion.choices[0].message.content == expected.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens == expected.usage.total_tokens > 0
    assert resp.headers["x-aiogw-model"] == upstream_model
    assert resp.headers["x-aiogw-provider"] == ("sim" if model == "fast" else "compat")
    assert resp.headers["x-aiogw-attempts"] == "1"
    assert resp.headers["x-request-id"].startswith("req_")


@both_spellings
@pytest.mark.parametrize("model", MODELS)
async def test_streamed_text_equals_non_streamed_text(client, model):
    whole = await client.chat.completions.create(model=model, messages=MSG, seed=3)
    stream = await client.chat.completions.create(model=model, messages=MSG, seed=3, stream=True)
    parts, finishes, roles = [], [], []
    async for chunk in stream:
        assert chunk.usage is None
        for ch in chunk.choices:
            roles.append(ch.delta.role)
            parts.append(ch.delta.content or "")
            if ch.finish_reason:
                finishes.append(ch.finish_reason)
    assert "".join(parts) == whole.choices[0].message.content
    assert finishes == ["stop"]
    assert roles[0] == "assistant"


@both_spellings
@pytest.mark.parametrize("model", MODELS)
async def test_include_usage_adds_one_final_usage_chunk(client, model):
    stream = await client.chat.completions.create(
        model=model, messages=MSG, stream=True, stream_options={"include_usage": True}
    )
    got = [c async for c in stream]
    assert got[-1].choices == [] and got[-1].usage.completion_tokens > 0
    assert all(c.usage is None for c in got[:-1])


async def raw_stream(gateway, body) -> tuple[bytes, dict]:
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{gateway}/chat/completions", json={"messages": MSG, "stream": True, **body}) as r:
            assert r.status == 200
            return await r.read(), dict(r.headers)


@both_spellings
@pytest.mark.parametrize("model", MODELS)
async def test_a_client_that_did_not_ask_for_usage_sees_none(gateway, model):
    raw, _ = await raw_stream(gateway, {"model": model})
    cs = chunks(raw)
    assert all(c["choices"] for c in cs), "no usage-only chunk"
    assert all("usage" not in c for c in cs), "no usage field, not even null"
    assert [c["choices"][0]["finish_reason"] for c in cs if c["choices"][0]["finish_reason"]] == ["stop"]


@both_spellings
@pytest.mark.parametrize("model", MODELS)
async def test_a_stream_ending_at_eof_after_its_finish_is_complete(gateway, sim, model):
    """Compatible servers may close the stream after the finishing chunk (and the usage
    chunk) without `data: [DONE]`: a normal end, not a truncation."""
    sim.set_profile("default" if model == "fast" else "compat", send_done=False)
    raw, _ = await raw_stream(gateway, {"model": model, "stream_options": {"include_usage": True}})
    cs = chunks(raw)  # one [DONE], from the gateway
    assert not any("error" in c for c in cs), cs[-1]
    assert cs[-2]["choices"][0]["finish_reason"] == "stop"
    assert cs[-1]["choices"] == [] and cs[-1]["usage"]["completion_tokens"] == 20


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}},
        },
    },
]


@both_spellings
@pytest.mark.parametrize("model", MODELS)
async def test_streamed_tool_calls_reassemble_with_one_id_and_valid_json(client, model):
    async with client.chat.completions.stream(model=model, messages=MSG, tools=TOOLS) as stream:
        final = await stream.get_final_completion()
    (call,) = final.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    assert call.id.startswith("call_") and len(call.id) > 6
    assert set(json.loads(call.function.arguments)) == {"city", "days"}
    assert final.choices[0].finish_reason == "tool_calls"


async def test_unknown_fields_and_options_are_forwarded_untouched(client, sim):
    await client.chat.completions.create(
        model="fast",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
                ],
            }
        ],
        response_format={"type": "json_object"},
        n=2,
        seed=11,
        logprobs=True,
        top_logprobs=2,
        extra_body={"my_vendor_flag": {"nested": [1, 2.50, None]}, "metadata": {"k": "v"}},
    )
    body = sim.stats("default")["last_request"]["body"]
    assert body["model"] == "sim-gpt-fast"
    assert body["my_vendor_flag"] == {"nested": [1, 2.5, None]}
    assert body["metadata"] == {"k": "v"}
    assert body["n"] == 2 and body["seed"] == 11 and body["logprobs"] is True and body["top_logprobs"] == 2
    assert body["response_format"] == {"type": "json_object"}
    assert body["messages"][0]["content"][1]["image_url"]["detail"] == "low"


async def test_streams_ask_upstream_for_usage_even_when_the_client_did_not(client, sim):
    stream = await client.chat.completions.create(model="fast", messages=MSG, stream=True)
    async for _ in stream:
        pass
    assert sim.stats("default")["last_request"]["body"]["stream_options"] == {"include_usage": True}


async def test_upstream_key_is_the_configured_one_never_the_clients(client, sim):
    await client.chat.completions.create(model="fast", messages=MSG)
    headers = sim.stats("default")["last_request"]["headers"]
    assert headers["authorization"] == "Bearer sk-sim-upstream-key-0123456789"


async def test_n_and_logprobs_come_back(client):
    c = await client.chat.completions.create(model="fast", messages=MSG, n=2, logprobs=True, top_logprobs=1)
    assert [ch.index for ch in c.choices] == [0, 1]
    assert c.choices[0].logprobs.content[0].token


async def test_direct_provider_model_addressing(client):
    c = await client.chat.completions.create(model="sim/sim-any-model", messages=MSG)
    assert c.model == "sim-any-model"


async def test_models_list_shows_public_names(client):
    models = await client.models.list()
    assert [m.id for m in models.data] == ["fast", "compat-model"]


async def test_models_list_and_retrieve_have_openais_shape(gateway, client):
    async with aiohttp.ClientSession() as s, s.get(f"{gateway}/models") as r:
        listed = await r.json()
    assert listed["object"] == "list"
    for card in listed["data"]:
        assert set(card) == {"id", "object", "created", "owned_by"}
        assert card["object"] == "model" and card["owned_by"] == "aiogw"
        assert isinstance(card["created"], int) and card["created"] > 1_700_000_000
    one = await client.models.retrieve("fast")
    assert (one.id, one.object, one.owned_by, one.created) == ("fast", "model", "aiogw", listed["data"][0]["created"])
    # `<provider>/<model>` is accepted wherever a model name is: the SDK sends the slash
    # percent-encoded, curl sends it as is; the account owns it.
    direct = await client.models.retrieve("sim/sim-gpt-fast")
    assert (direct.id, direct.owned_by) == ("sim/sim-gpt-fast", "sim")
    async with aiohttp.ClientSession() as s, s.get(f"{gateway}/models/sim/sim-gpt-fast") as r:
        assert r.status == 200 and (await r.json())["id"] == "sim/sim-gpt-fast"
    for unknown in ("nope", "ghost/gpt-4o"):
        with pytest.raises(openai.NotFoundError) as exc:
            await client.models.retrieve(unknown)
        assert exc.value.body["code"] == "model_not_found" and exc.value.body["param"] == "model"
        assert unknown in exc.value.body["message"]


async def test_request_id_is_echoed(gateway):
    async with aiohttp.ClientSession() as s:
        async with s.post(
            f"{gateway}/chat/completions",
            json={"model": "fast", "messages": MSG},
            headers={"x-request-id": "my-trace-42"},
        ) as r:
            assert r.status == 200
            assert r.headers["x-request-id"] == "my-trace-42"


async def test_stream_response_headers_disable_buffering(gateway):
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{gateway}/chat/completions", json={"model": "fast", "messages": MSG, "stream": True}) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            assert r.headers["cache-control"] == "no-cache"
            assert r.headers["x-accel-buffering"] == "no"
            assert r.headers["x-aiogw-provider"] == "sim"
            body = await r.read()
    assert body.endswith(b"data: [DONE]\n\n")


async def test_probes(gateway):
    root = gateway.removesuffix("/v1")
    async with aiohttp.ClientSession() as s:
        for path in ("/healthz", "/readyz"):
            async with s.get(root + path) as r:
                assert r.status == 200


async def test_sync_sdk_client_works_too(gateway):
    def call():
        with OpenAI(base_url=gateway, api_key="x", max_retries=0) as c:
            text = c.chat.completions.create(model="fast", messages=MSG).choices[0].message.content
            streamed = "".join(
                ch.choices[0].delta.content or ""
                for ch in c.chat.completions.create(model="fast", messages=MSG, stream=True)
                if ch.choices
            )
            return text, streamed

    text, streamed = await asyncio.to_thread(call)
    assert text == streamed and text


async def test_embeddings_through_the_gateway(client, sim):
    r = await client.embeddings.create(model="sim/text-embedding-3-small", input=["a", "b"], dimensions=4)
    assert [len(d.embedding) for d in r.data] == [4, 4]
    assert sim.stats("default")["last_request"]["body"]["model"] == "text-embedding-3-small"


async def test_embeddings_on_a_provider_without_them_is_a_clear_400(gateway):
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{gateway}/embeddings", json={"model": "nope/x", "input": "a"}) as r:
            assert r.status == 404
        async with s.post(f"{gateway}/embeddings", json={"model": "fast", "input": 5}) as r:
            assert r.status == 400
            assert (await r.json())["error"]["param"] == "input"
