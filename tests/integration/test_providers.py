"""Every provider end to end: the official `openai` SDK through the gateway gets the same
text, tool calls, finish reason and usage as the provider's native answer holds (read by
calling the simulator directly in its native format), streaming and not; native errors
become OpenAI-shaped ones; a mixed model group streams the same shape whichever answers."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import jsonschema
import openai
import pytest
from conftest import SIM_KEY, both_spellings
from openai import AsyncOpenAI
from sse_client import chunks

from aiogw.config_load import from_builtins
from aiogw.server.keys import DISPATCHER, RUNTIME

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]  # fmt: skip
MSG = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the weather in Paris?"}]


@dataclass(frozen=True)
class Native:
    text: str | None
    tools: list[tuple[str, Any]]  # (name, parsed arguments)
    finish: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Provider:
    type: str
    account: str
    model: str
    base_url: Callable[[Any], str]
    native: Callable[[dict[str, Any]], tuple[str, dict[str, Any], dict[str, str]]]  # last body -> (path, body, headers)
    read: Callable[[dict[str, Any]], Native]
    auth_header: str
    status_of_overload: int  # the provider's own "overloaded" status


# --- native answer readers, written from each provider's reference (not from adapters) -----

ANTHROPIC_FINISH = {"end_turn": "stop", "max_tokens": "length", "tool_use": "tool_calls", "stop_sequence": "stop"}


def anthropic_read(msg: dict[str, Any]) -> Native:
    texts = [b["text"] for b in msg["content"] if b["type"] == "text"]
    tools = [(b["name"], b["input"]) for b in msg["content"] if b["type"] == "tool_use"]
    u = msg["usage"]
    prompt = u["input_tokens"] + u.get("cache_read_input_tokens", 0) + u.get("cache_creation_input_tokens", 0)
    return Native("".join(texts) or None, tools, ANTHROPIC_FINISH[msg["stop_reason"]], prompt, u["output_tokens"])


GEMINI_FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter"}


def gemini_read(r: dict[str, Any]) -> Native:
    cand = r["candidates"][0]
    parts = cand["content"]["parts"]
    texts = [p["text"] for p in parts if "text" in p and not p.get("thought")]
    tools = [(p["functionCall"]["name"], p["functionCall"]["args"]) for p in parts if "functionCall" in p]
    finish = GEMINI_FINISH[cand["finishReason"]]
    if tools and finish == "stop":
        finish = "tool_calls"  # Gemini says STOP after a function call (docs/providers.md §5.4)
    u = r["usageMetadata"]
    return Native(
        "".join(texts) or None,
        tools,
        finish,
        u["promptTokenCount"],
        u.get("candidatesTokenCount", 0) + u.get("thoughtsTokenCount", 0),
    )


def openai_read(c: dict[str, Any]) -> Native:
    m = c["choices"][0]["message"]
    tools = [(t["function"]["name"], json.loads(t["function"]["arguments"])) for t in m.get("tool_calls") or []]
    return Native(
        m["content"],
        tools,
        c["choices"][0]["finish_reason"],
        c["usage"]["prompt_tokens"],
        c["usage"]["completion_tokens"],
    )


PROVIDERS = {
    "openai": Provider(
        type="openai", account="oai", model="gpt-sim",
        base_url=lambda sim: sim.base_url("oai"),
        native=lambda b: ("/oai/v1/chat/completions", {**b, "stream": False}, {"authorization": f"Bearer {SIM_KEY}"}),
        read=openai_read, auth_header="authorization", status_of_overload=503,
    ),
    "anthropic": Provider(
        type="anthropic", account="claude", model="claude-sonnet-5-5",
        base_url=lambda sim: sim.root("claude"),
        native=lambda b: ("/claude/v1/messages", {**b, "stream": False},
                          {"x-api-key": SIM_KEY, "anthropic-version": "2023-06-01"}),
        read=anthropic_read, auth_header="x-api-key", status_of_overload=529,
    ),
    "mistral": Provider(
        type="mistral", account="mis", model="mistral-small-latest",
        base_url=lambda sim: sim.root("mis") + "/mistral/v1",
        native=lambda b: ("/mis/mistral/v1/chat/completions", {**b, "stream": False}, {"authorization": f"Bearer {SIM_KEY}"}),
        read=openai_read, auth_header="authorization", status_of_overload=503,
    ),
    "deepseek": Provider(
        type="deepseek", account="ds", model="deepseek-chat",
        base_url=lambda sim: sim.root("ds") + "/deepseek",
        native=lambda b: ("/ds/deepseek/chat/completions", {**b, "stream": False}, {"authorization": f"Bearer {SIM_KEY}"}),
        read=openai_read, auth_header="authorization", status_of_overload=503,
    ),
    "qwen": Provider(
        type="qwen", account="qw", model="qwen-plus",
        base_url=lambda sim: sim.root("qw") + "/qwen/compatible-mode/v1",
        native=lambda b: ("/qw/qwen/compatible-mode/v1/chat/completions", {**b, "stream": False},
                          {"authorization": f"Bearer {SIM_KEY}"}),
        read=openai_read, auth_header="authorization", status_of_overload=503,
    ),
    "gemini": Provider(
        type="gemini", account="goog", model="gemini-2.5-flash",
        base_url=lambda sim: sim.root("goog"),
        native=lambda b: ("/goog/v1beta/models/gemini-2.5-flash:generateContent", b, {"x-goog-api-key": SIM_KEY}),
        read=gemini_read, auth_header="x-goog-api-key", status_of_overload=503,
    ),
    "openai-compatible": Provider(
        type="openai-compatible", account="compat", model="sim-llama",
        base_url=lambda sim: sim.base_url("compat"),
        native=lambda b: ("/compat/v1/chat/completions", {**b, "stream": False}, {"authorization": f"Bearer {SIM_KEY}"}),
        read=openai_read, auth_header="authorization", status_of_overload=503,
    ),
}  # fmt: skip


def config(sim, names, *, group_targets=None):
    providers = {}
    for n in names:
        p = PROVIDERS[n]
        providers[p.account] = {"type": p.type, "base_url": p.base_url(sim), "api_key": SIM_KEY}
        sim.set_profile(p.account, api_key=SIM_KEY, completion_tokens=12)
    models = [{"name": n, "targets": [{"provider": PROVIDERS[n].account, "model": PROVIDERS[n].model}]} for n in names]
    if group_targets:
        models.append({"name": "mixed", "targets": group_targets})
    return from_builtins({"server": {"host": "127.0.0.1", "port": 0}, "providers": providers, "models": models,
                          "routing": {"retry": {"max_rounds": 0}}}, env={})  # fmt: skip


async def native_answer(sim, p: Provider) -> Native:
    path, body, headers = p.native(sim.stats(p.account)["last_request"]["body"])
    async with aiohttp.ClientSession() as s, s.post(sim.url + path, json=body, headers=headers) as r:
        assert r.status == 200, await r.text()
        return p.read(await r.json())


@pytest.fixture
def names():
    return list(PROVIDERS)


@pytest.fixture
async def gw(sim, make_gateway, names):
    url, _ = await make_gateway(config(sim, names))
    client = AsyncOpenAI(base_url=url, api_key="client", max_retries=0, timeout=20)
    yield url, client
    await client.close()


def tool_args(calls) -> list[tuple[str, Any]]:
    return [(c.function.name, json.loads(c.function.arguments)) for c in calls or []]


@both_spellings
@pytest.mark.parametrize("name", list(PROVIDERS))
async def test_text_matches_the_native_answer_streaming_and_not(sim, gw, name):
    _url, client = gw
    p = PROVIDERS[name]
    r = await client.chat.completions.create(model=name, messages=MSG)
    native = await native_answer(sim, p)
    assert r.choices[0].message.content == native.text
    assert r.choices[0].finish_reason == native.finish == "stop"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (native.prompt_tokens, native.completion_tokens)

    async with client.chat.completions.stream(model=name, messages=MSG, stream_options={"include_usage": True}) as s:
        final = await s.get_final_completion()
    native = await native_answer(sim, p)
    assert final.choices[0].message.content == native.text
    assert final.choices[0].finish_reason == "stop"
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (
        native.prompt_tokens,
        native.completion_tokens,
    )
    headers = sim.stats(p.account)["last_request"]["headers"]
    assert SIM_KEY in headers[p.auth_header]


@both_spellings
@pytest.mark.parametrize("name", list(PROVIDERS))
@pytest.mark.parametrize("stream", [False, True])
async def test_tool_calls_match_the_native_answer(sim, gw, name, stream):
    _url, client = gw
    p = PROVIDERS[name]
    kw = {"model": name, "messages": MSG, "tools": TOOLS, "tool_choice": "required"}
    if stream:
        async with client.chat.completions.stream(**kw) as s:
            r = await s.get_final_completion()
    else:
        r = await client.chat.completions.create(**kw)
    native = await native_answer(sim, p)
    assert tool_args(r.choices[0].message.tool_calls) == native.tools != []
    assert r.choices[0].finish_reason == native.finish == "tool_calls"
    assert all(c.id and c.type == "function" for c in r.choices[0].message.tool_calls)


@pytest.mark.parametrize("name", list(PROVIDERS))
@pytest.mark.parametrize(("status", "expect"), [("overload", 503), (429, 429), (500, 502)])
async def test_native_errors_become_openai_errors(sim, gw, name, status, expect):
    _url, client = gw
    p = PROVIDERS[name]
    sim.set_profile(p.account, fault="status", fault_status=p.status_of_overload if status == "overload" else status)
    with pytest.raises(openai.APIStatusError) as exc:
        await client.chat.completions.create(model=name, messages=MSG)
    assert exc.value.status_code == expect
    body = exc.value.body
    assert set(body) >= {"message", "type", "param", "code"}  # the SDK unwraps {"error": ...}


@pytest.mark.parametrize("name", list(PROVIDERS))
async def test_mid_stream_error_ends_with_error_event_then_done(sim, gw, name):
    url, _ = gw
    p = PROVIDERS[name]
    sim.set_profile(p.account, fault="error_event", fault_after_chunks=2, tokens_per_s=500)
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{url}/chat/completions", json={"model": name, "messages": MSG, "stream": True}) as r:
            raw = await r.read()
    cs = chunks(raw)  # asserts the single trailing [DONE]
    assert "error" in cs[-1] and cs[-1]["error"]["message"]
    assert any(c.get("choices") and c["choices"][0]["delta"].get("content") for c in cs[:-1])


@pytest.mark.parametrize(
    ("name", "extra", "param"),
    [
        ("anthropic", {"temperature": 1.5}, "temperature"),
        ("gemini", {"logit_bias": {"50256": -100}}, "logit_bias"),
        ("mistral", {"logprobs": True}, "logprobs"),
        ("deepseek", {"n": 2}, "n"),
        ("qwen", {"temperature": 2.0}, "temperature"),
    ],
)
async def test_a_parameter_the_provider_cannot_honour_is_a_400_naming_it(sim, gw, name, extra, param):
    _, client = gw
    with pytest.raises(openai.BadRequestError) as exc:
        await client.chat.completions.create(model=name, messages=MSG, **extra)
    assert exc.value.body["param"] == param
    assert sim.stats(PROVIDERS[name].account)["requests"] == 0


def shape(raw: bytes) -> list[Any]:
    """A stream's structure without its values: what each chunk carries."""
    out = []
    for c in chunks(raw):
        if not c["choices"]:
            # Token counts are always there; details and extensions (cost) vary by provider.
            out.append(("usage", {"prompt_tokens", "completion_tokens", "total_tokens"} <= set(c["usage"])))
            continue
        ch = c["choices"][0]
        delta = ch["delta"]
        keys = sorted(delta)
        if "tool_calls" in delta:
            keys.append(("tool", sorted(delta["tool_calls"][0]), sorted(delta["tool_calls"][0]["function"])))
        out.append((keys, ch["finish_reason"]))
    # Providers split text and arguments differently: a run of like chunks counts once.
    return [x for i, x in enumerate(out) if i == 0 or x != out[i - 1]]


@pytest.mark.parametrize("names", [["anthropic", "gemini"], ["gemini", "anthropic"], ["anthropic", "openai"]])
@pytest.mark.parametrize("tools", [False, True])
async def test_mixed_group_streams_the_same_shape_whichever_answers(sim, make_gateway, names, tools):
    first, second = (PROVIDERS[n] for n in names)
    targets = [{"provider": first.account, "model": first.model}, {"provider": second.account, "model": second.model}]
    url, _ = await make_gateway(config(sim, names, group_targets=targets))
    body: dict[str, Any] = {
        "model": "mixed",
        "messages": MSG,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if tools:
        body |= {"tools": TOOLS, "tool_choice": "required"}

    async def run() -> tuple[bytes, str]:
        async with aiohttp.ClientSession() as s, s.post(f"{url}/chat/completions", json=body) as r:
            return await r.read(), r.headers["x-aiogw-provider"]

    raw_first, who = await run()
    assert who == first.account
    sim.set_profile(first.account, fault="status", fault_status=first.status_of_overload)
    raw_second, who = await run()
    assert who == second.account
    assert shape(raw_first) == shape(raw_second)


@pytest.mark.parametrize("inputs", ["one text", ["first", "second", "third"]])
async def test_gemini_embeddings_through_the_gateway(sim, gw, inputs):
    _, client = gw
    r = await client.embeddings.create(model="goog/gemini-embedding-001", input=inputs, dimensions=4)
    n = 1 if isinstance(inputs, str) else len(inputs)
    assert [d.index for d in r.data] == list(range(n)) and all(len(d.embedding) == 4 for d in r.data)
    path = sim.stats("goog")["last_request"]["path"]
    assert path.endswith(":embedContent" if n == 1 else ":batchEmbedContents")


async def test_mistral_embeddings_through_the_gateway(sim, gw):
    _, client = gw
    r = await client.embeddings.create(model="mis/codestral-embed", input=["a", "b"], dimensions=4)
    assert [len(d.embedding) for d in r.data] == [4, 4] and r.usage.prompt_tokens > 0
    body = sim.stats("mis")["last_request"]["body"]
    # The SDK asks for base64 (it decodes the vectors itself); Mistral takes encoding_format too.
    assert body == {"model": "codestral-embed", "input": ["a", "b"], "output_dimension": 4, "encoding_format": "base64"}
    # mistral-embed has a fixed size: other dimensions are refused before any upstream call.
    with pytest.raises(openai.BadRequestError) as exc:
        await client.embeddings.create(model="mis/mistral-embed", input=["a"], dimensions=4)
    assert exc.value.body["param"] == "dimensions" and sim.stats("mis")["requests"] == 1


@pytest.mark.parametrize("name", list(PROVIDERS))
async def test_a_health_check_is_a_one_token_call_in_each_providers_format(sim, make_gateway, name):
    # The active health check (aiogw/attempts/health_check.py) is built by the target's adapter: the
    # one-token cap must reach every provider in its own field.
    _, app = await make_gateway(config(sim, [name]))
    target = app[RUNTIME].routes[name].targets[0]
    reply = await app[DISPATCHER].health_check(target, 5.0)
    assert reply.usage is not None and reply.usage.completion_tokens == 1, reply
    assert sim.stats(PROVIDERS[name].account)["requests"] == 1


# --- every answer has every field OpenAI's schema requires ----------------------------------
# Written from the official SDKs' types (openai-python types/chat/chat_completion*.py,
# completion_usage.py, create_embedding_response.py, embedding.py; openai-node, whose types
# keep OpenAPI's "required but nullable" fields such as `logprobs` and `message.content`).

NULLABLE_STRING = {"type": ["string", "null"]}
FINISH_REASONS = ["stop", "length", "tool_calls", "content_filter", "function_call"]
USAGE_SCHEMA = {
    "type": "object",
    "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
    "properties": {k: {"type": "integer"} for k in ("prompt_tokens", "completion_tokens", "total_tokens")},
}
TOOL_CALL_SCHEMA = {
    "type": "object",
    "required": ["id", "type", "function"],
    "properties": {
        "id": {"type": "string", "minLength": 1},
        "type": {"const": "function"},
        "function": {"type": "object", "required": ["name", "arguments"],
                     "properties": {"name": {"type": "string"}, "arguments": {"type": "string"}}},
    },
}  # fmt: skip
CHAT_COMPLETION_SCHEMA = {
    "type": "object",
    "required": ["id", "object", "created", "model", "choices"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "chat.completion"},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "choices": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "required": ["index", "message", "finish_reason", "logprobs"],
            "properties": {
                "index": {"type": "integer"},
                "finish_reason": {"enum": FINISH_REASONS},
                "logprobs": {"type": ["object", "null"]},
                "message": {"type": "object", "required": ["role", "content", "refusal"], "properties": {
                    "role": {"const": "assistant"},
                    "content": NULLABLE_STRING,
                    "refusal": NULLABLE_STRING,
                    "tool_calls": {"type": "array", "items": TOOL_CALL_SCHEMA},
                }},
            },
        }},
        "usage": USAGE_SCHEMA,
    },
}  # fmt: skip
CHUNK_SCHEMA = {
    "type": "object",
    "required": ["id", "object", "created", "model", "choices"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "chat.completion.chunk"},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "choices": {"type": "array", "items": {
            "type": "object",
            "required": ["index", "delta", "finish_reason"],
            "properties": {
                "index": {"type": "integer"},
                "finish_reason": {"enum": [*FINISH_REASONS, None]},
                "logprobs": {"type": ["object", "null"]},
                "delta": {"type": "object", "properties": {
                    "role": {"const": "assistant"},
                    "content": NULLABLE_STRING,
                    "refusal": NULLABLE_STRING,
                    "tool_calls": {"type": "array", "items": {
                        "type": "object", "required": ["index"],
                        "properties": {"index": {"type": "integer"}, "id": {"type": "string"}, "type": {"const": "function"},
                                       "function": {"type": "object", "properties": {"name": {"type": "string"},
                                                                                     "arguments": {"type": "string"}}}},
                    }},
                }},
            },
        }},
        "usage": {"anyOf": [USAGE_SCHEMA, {"type": "null"}]},
    },
}  # fmt: skip
EMBEDDINGS_SCHEMA = {
    "type": "object",
    "required": ["object", "data", "model", "usage"],
    "properties": {
        "object": {"const": "list"},
        "model": {"type": "string"},
        "data": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "required": ["object", "index", "embedding"],
            "properties": {
                "object": {"const": "embedding"},
                "index": {"type": "integer"},
                "embedding": {"anyOf": [{"type": "array", "items": {"type": "number"}}, {"type": "string"}]},
            },
        }},
        "usage": {"type": "object", "required": ["prompt_tokens", "total_tokens"],
                  "properties": {"prompt_tokens": {"type": "integer"}, "total_tokens": {"type": "integer"}}},
    },
}  # fmt: skip
for _schema in (CHAT_COMPLETION_SCHEMA, CHUNK_SCHEMA, EMBEDDINGS_SCHEMA):
    jsonschema.Draft202012Validator.check_schema(_schema)


@pytest.mark.parametrize("name", list(PROVIDERS))
@pytest.mark.parametrize("tools", [False, True])
async def test_every_answer_has_every_field_openais_schema_requires(sim, gw, name, tools):
    url, _ = gw
    body: dict[str, Any] = {"model": name, "messages": MSG}
    if tools:
        body |= {"tools": TOOLS, "tool_choice": "required"}
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{url}/chat/completions", json=body) as r:
            assert r.status == 200, await r.text()
            answer = await r.json()
        stream = {**body, "stream": True, "stream_options": {"include_usage": True}}
        async with s.post(f"{url}/chat/completions", json=stream) as r:
            assert r.status == 200, await r.text()
            raw = await r.read()
    jsonschema.validate(answer, CHAT_COMPLETION_SCHEMA)
    assert bool(answer["choices"][0]["message"].get("tool_calls")) is tools
    cs = chunks(raw)
    for c in cs:
        jsonschema.validate(c, CHUNK_SCHEMA)
    assert cs[-1]["choices"] == [] and cs[-1]["usage"]["total_tokens"] > 0


EMBEDDERS = {  # every adapter with an embeddings API, and a model of it on the simulator
    "openai": "oai/text-embedding-3-small",
    "openai-compatible": "compat/nomic-embed-text",
    "gemini": "goog/gemini-embedding-001",
    "mistral": "mis/codestral-embed",
}


@pytest.mark.parametrize("name", list(EMBEDDERS))
@pytest.mark.parametrize("encoding_format", [None, "float", "base64"])
async def test_every_embeddings_answer_has_every_required_field(sim, gw, name, encoding_format):
    url, _ = gw
    body: dict[str, Any] = {"model": EMBEDDERS[name], "input": ["first", "second"], "dimensions": 4}
    if encoding_format:
        body["encoding_format"] = encoding_format
    async with aiohttp.ClientSession() as s, s.post(f"{url}/embeddings", json=body) as r:
        assert r.status == 200, await r.text()
        answer = await r.json()
    jsonschema.validate(answer, EMBEDDINGS_SCHEMA)
    assert [d["index"] for d in answer["data"]] == [0, 1]


@pytest.mark.parametrize("name", list(EMBEDDERS))
async def test_embeddings_honour_encoding_format_base64(sim, gw, name):
    """base64 is little-endian float32, as OpenAI sends it; the openai SDKs ask for it by
    default (the Node SDK decodes whatever string comes back, so floats would be misread)."""
    _, client = gw
    kw = {"model": EMBEDDERS[name], "input": ["first", "second"], "dimensions": 4}
    floats = await client.embeddings.create(**kw, encoding_format="float")
    packed = await client.embeddings.create(**kw, encoding_format="base64")
    as_float32 = [list(struct.unpack("<4f", struct.pack("<4f", *d.embedding))) for d in floats.data]
    assert all(isinstance(d.embedding, str) for d in packed.data)
    assert [list(struct.unpack("<4f", base64.b64decode(d.embedding))) for d in packed.data] == as_float32
    by_default = await client.embeddings.create(**kw)  # the SDK asks for base64 and decodes it
    assert [d.embedding for d in by_default.data] == as_float32


@pytest.mark.parametrize("name", ["openai", "openai-compatible", "gemini", "deepseek", "qwen"])
async def test_log_probabilities_from_every_provider_that_has_them(sim, gw, name):
    _, client = gw
    kw: dict[str, Any] = {"model": name, "messages": MSG, "logprobs": True, "top_logprobs": 2}
    r = await client.chat.completions.create(**kw)
    assert r.choices[0].logprobs.content and all(t.token and t.logprob <= 0 for t in r.choices[0].logprobs.content)
    logged = []
    async for chunk in await client.chat.completions.create(**kw, stream=True):
        logged += [t.token for ch in chunk.choices if ch.logprobs for t in ch.logprobs.content or []]
    assert logged


@pytest.mark.parametrize("name", list(PROVIDERS))
@pytest.mark.parametrize("stream", [False, True])
async def test_a_stall_in_any_wire_format_ends_on_the_idle_limit(sim, make_gateway, name, stream):
    # Every simulated format stalls alike (the stream after two tokens, a whole answer after
    # half of its body); a total of 60 s leaves only the idle limit to end it.
    p = PROVIDERS[name]
    target = {"provider": p.account, "model": p.model, "timeouts": {"idle": 0.2, "total": 60}}
    url, _ = await make_gateway(config(sim, [name], group_targets=[target]))
    sim.set_profile(p.account, fault="stall", fault_after_chunks=2, tokens_per_s=200)
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{url}/chat/completions", json={"model": "mixed", "messages": MSG, "stream": stream}) as r:
            status, raw = r.status, await r.read()
    if stream:
        assert status == 200
        cs = chunks(raw)  # asserts the single trailing [DONE]
        assert any(c.get("choices") and c["choices"][0]["delta"].get("content") for c in cs[:-1])
        error = cs[-1]["error"]
    else:
        error = json.loads(raw)["error"]
        assert status == 504, raw
    assert "idle: no data within 0.2 s" in error["message"] and error["code"] == "upstream_timeout"
