"""The Anthropic Messages API in front of aiogw (`/v1/messages`, `/v1/messages/count_tokens`):
the official `anthropic` SDK, unchanged, against a real gateway whose models are served by
the simulator's Anthropic, OpenAI and Gemini wire formats. What the client gets is compared
with what the simulator answers (the same deterministic text and tool calls in every wire
format) and with the SDK's own types, never with our code."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import pytest
from conftest import SIM_KEY

from aiogw.config_load import from_builtins

TOOLS = [
    {"name": "get_weather", "description": "Weather by city",
     "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
    {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
]  # fmt: skip
ASK = [{"role": "user", "content": "Weather in Paris?"}]
UPSTREAM = "sim-model"  # one upstream name: the simulator answers the same text in every wire format
MODELS = ["claude", "gpt", "gem"]  # served by the Anthropic, OpenAI and Gemini wire formats


def config(sim, price=None, **overrides):
    for account in ("claude", "oai", "gem"):
        sim.set_profile(account, api_key=SIM_KEY, completion_tokens=12)
    data = {
        "server": {"host": "127.0.0.1", "port": 0},
        "providers": {
            "claude": {"type": "anthropic", "base_url": sim.root("claude"), "api_key": SIM_KEY},
            "oai": {"type": "openai", "base_url": sim.base_url("oai"), "api_key": SIM_KEY},
            "gem": {"type": "gemini", "base_url": sim.root("gem"), "api_key": SIM_KEY},
        },
        "models": [
            {"name": name, "targets": [{"provider": account, "model": UPSTREAM, **({"price": price} if price else {})}]}
            for name, account in (("claude", "claude"), ("gpt", "oai"), ("gem", "gem"))
        ],
        "routing": {"retry": {"max_rounds": 0}},
    }
    data.update(overrides)
    return from_builtins(data, env={})


@pytest.fixture
async def gw(sim, make_gateway):
    url, _ = await make_gateway(config(sim))
    return url.removesuffix("/v1")


@pytest.fixture
async def client(gw):
    c = anthropic.AsyncAnthropic(base_url=gw, api_key="client-key", max_retries=0, timeout=20)
    try:
        yield c
    finally:
        await c.close()


def last(sim, account: str) -> dict[str, Any]:
    return sim.stats(account)["last_request"]


async def post(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, dict, Any]:
    async with aiohttp.ClientSession() as s, s.post(url, json=body, headers=headers or {}) as r:
        return r.status, {k.lower(): v for k, v in r.headers.items()}, await r.json(content_type=None)


def text_of(message) -> str:
    return "".join(b.text for b in message.content if b.type == "text")


def calls_of(message) -> list[tuple[str, dict]]:
    return [(b.name, b.input) for b in message.content if b.type == "tool_use"]


# --- item 1/2: create, non-streaming ---------------------------------------------------------


async def test_create_answers_the_same_text_from_every_wire_format(client):
    texts = set()
    for model in MODELS:
        m = await client.messages.create(model=model, max_tokens=100, messages=ASK, system="Be brief.")
        assert m.id.startswith("msg_") and m.role == "assistant" and m.type == "message"
        assert m.stop_reason == "end_turn" and m.stop_sequence is None
        assert m.usage.input_tokens > 0 and m.usage.output_tokens > 0
        assert [b.type for b in m.content] == ["text"]
        texts.add(text_of(m))
    assert len(texts) == 1 and texts != {""}


async def test_create_with_tools_keeps_names_inputs_and_stop_reason_everywhere(client):
    seen = []
    for model in MODELS:
        m = await client.messages.create(
            model=model, max_tokens=200, messages=ASK, tools=TOOLS, tool_choice={"type": "any"}
        )
        assert m.stop_reason == "tool_use"
        assert all(b.id for b in m.content if b.type == "tool_use")
        seen.append(calls_of(m))
    assert seen[0] and seen[0] == seen[1] == seen[2]


async def test_tool_ids_go_upstream_unchanged_and_thinking_is_not_replayed(sim, client):
    history = [
        *ASK,
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Let me look it up.", "signature": "EqSig123"},
            {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather",
             "input": {"city": "Paris"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01A09q90qw90lq917835lq9", "content": "18C, sunny"}]},
    ]  # fmt: skip
    m = await client.messages.create(model="gpt", max_tokens=100, messages=history, tools=TOOLS)
    assert m.stop_reason in ("end_turn", "tool_use")
    sent = last(sim, "oai")["body"]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == "toolu_01A09q90qw90lq917835lq9"
    assert sent[2] == {"role": "tool", "content": "18C, sunny", "tool_call_id": "toolu_01A09q90qw90lq917835lq9"}
    assert "Let me look it up." not in json.dumps(sent)  # a signed thought is never replayed as text


async def test_answer_headers_name_the_request_target_and_attempts(gw):
    status, headers, body = await post(
        gw + "/v1/messages", {"model": "gpt", "max_tokens": 20, "messages": ASK}, {"x-api-key": "k"}
    )
    assert status == 200, body
    assert headers["x-aiogw-provider"] == "oai" and headers["x-aiogw-attempts"] == "1"
    assert headers["x-request-id"] and "x-aiogw-model" in headers


async def test_also_served_under_the_anthropic_prefix(gw):
    c = anthropic.AsyncAnthropic(base_url=gw + "/anthropic", api_key="k", max_retries=0)
    m = await c.messages.create(model="gem", max_tokens=50, messages=ASK)
    with pytest.raises(anthropic.NotFoundError) as e:  # a path the API does not have there
        await c.models.list()
    await c.close()
    assert text_of(m)
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "not_found_error"
    async with aiohttp.ClientSession() as s, s.get(gw + "/v1/messages") as r:  # a method it does not have
        body = await r.json()
    assert r.status == 405 and body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    async with aiohttp.ClientSession() as s, s.get(gw + "/v1/nothing-here") as r:  # elsewhere: OpenAI's shape
        assert r.status == 404 and "error" in await r.json() and "type" not in await r.json()


# --- item 3: streaming ------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
async def test_stream_helper_accepts_every_targets_events(client, model):
    async with client.messages.stream(model=model, max_tokens=100, messages=ASK) as s:
        final = await s.get_final_message()
    plain = await client.messages.create(model=model, max_tokens=100, messages=ASK)
    assert text_of(final) == text_of(plain) and final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


@pytest.mark.parametrize("model", MODELS)
async def test_a_stream_says_its_cost_in_message_delta_as_the_answer_header_does(sim, make_gateway, model):
    # A stream's cost cannot go in a header (sent before it is known): it rides in
    # message_delta's usage (the SDK keeps the extra field), as in a chat stream's last usage
    # chunk; passed through (Anthropic) or translated, the figure of the same answer unstreamed.
    url, _ = await make_gateway(config(sim, price={"input": 3.0, "output": 15.0}))
    async with anthropic.AsyncAnthropic(base_url=url.removesuffix("/v1"), api_key="k", max_retries=0) as c:
        raw = await c.messages.with_raw_response.create(model=model, max_tokens=100, messages=ASK)
        header_cost = float(raw.headers["x-aiogw-cost-usd"])
        extras = []
        async with c.messages.stream(model=model, max_tokens=100, messages=ASK) as s:
            async for ev in s:
                if ev.type == "message_delta":
                    extras.append(ev.usage.model_extra)
    assert header_cost > 0
    assert len(extras) == 1 and extras[0]["cost_usd"] == pytest.approx(header_cost, rel=1e-6), extras


@pytest.mark.parametrize("model", MODELS)
async def test_stream_with_tools_gives_the_same_calls_as_create(client, model):
    kw: dict[str, Any] = {"model": model, "max_tokens": 200, "messages": ASK, "tools": TOOLS,
                          "tool_choice": {"type": "any"}}  # fmt: skip
    events = []
    async with client.messages.stream(**kw) as s:
        async for ev in s:
            events.append(ev.type)
        final = await s.get_final_message()
    plain = await client.messages.create(**kw)
    assert calls_of(final) == calls_of(plain) and calls_of(final)
    assert final.stop_reason == "tool_use"
    assert events[0] == "message_start" and events[-1] == "message_stop"


async def test_stream_event_order_is_strict_when_the_first_delta_is_a_tool_call(gw):
    body = {"model": "gpt", "max_tokens": 200, "messages": ASK, "tools": TOOLS, "tool_choice": {"type": "any"},
            "stream": True}  # fmt: skip
    async with aiohttp.ClientSession() as s, s.post(gw + "/v1/messages", json=body) as r:
        raw = (await r.read()).decode()
    events = [(e.split("\n")[0][len("event: ") :], json.loads(e.split("\ndata: ", 1)[1]))
              for e in raw.split("\n\n") if e.startswith("event: ")]  # fmt: skip
    names = [n for n, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    open_index = None
    seen = []
    for name, data in events:
        assert data["type"] == name
        if name == "content_block_start":
            assert open_index is None  # one block at a time
            open_index = data["index"]
            seen.append(open_index)
        elif name == "content_block_delta":
            assert data["index"] == open_index
        elif name == "content_block_stop":
            assert data["index"] == open_index
            open_index = None
    assert seen == list(range(len(seen))) and seen


@pytest.mark.parametrize("model,account", [("gpt", "oai"), ("claude", "claude")])
async def test_a_failure_after_the_first_byte_is_an_error_event_the_sdk_raises(sim, client, model, account):
    sim.set_profile(account, api_key=SIM_KEY, completion_tokens=12, fault="drop", fault_after_chunks=3)
    with pytest.raises(anthropic.APIStatusError) as exc:
        async with client.messages.stream(model=model, max_tokens=100, messages=ASK) as s:
            await s.get_final_message()
    assert exc.value.body["type"] == "error" and exc.value.body["error"]["type"] == "api_error"
    assert exc.value.body["error"]["message"].startswith("upstream_protocol_error: ")


# --- errors -----------------------------------------------------------------------------------


async def test_errors_raise_the_sdks_exception_classes(client, gw):
    with pytest.raises(anthropic.NotFoundError) as e404:
        await client.messages.create(model="nope", max_tokens=10, messages=ASK)
    assert e404.value.body["type"] == "error" and e404.value.body["error"]["type"] == "not_found_error"
    assert "model_not_found" in e404.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as e400:
        await client.messages.create(model="gpt", max_tokens=10, messages=ASK, extra_body={"max_tokens": 0})
    assert e400.value.body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in e400.value.body["error"]["message"]  # the field named
    status, headers, body = await post(gw + "/v1/messages", {"model": "gpt", "max_tokens": 5, "messages": "x"})
    assert status == 400 and body["type"] == "error" and body["request_id"] == headers["request-id"]


# --- item 4: passthrough ----------------------------------------------------------------------


async def test_anthropic_targets_get_the_body_untouched_but_for_model(sim, gw):
    body = {"model": "claude", "max_tokens": 2000, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?", "cache_control": {"type": "ephemeral"}}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Look it up.", "signature": "EqSig123"},
            {"type": "tool_use", "id": "toolu_01X", "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01X", "content": "18C"}]}],
        "tools": TOOLS, "thinking": {"type": "enabled", "budget_tokens": 1024}, "some_future_field": {"x": 1}}  # fmt: skip
    status, headers, answer = await post(
        gw + "/v1/messages", body, {"anthropic-beta": "prompt-caching-2024-07-31", "anthropic-version": "2023-06-01"}
    )
    assert status == 200, answer
    req = last(sim, "claude")
    assert req["body"] == {**body, "model": UPSTREAM}
    assert req["headers"]["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert "x-aiogw-dropped-betas" not in headers
    assert answer["content"][0]["type"] == "thinking" and answer["content"][0]["signature"]  # as Anthropic sent it


async def test_betas_are_dropped_and_listed_for_other_targets(sim, gw):
    for stream in (False, True):
        body = {"model": "gpt", "max_tokens": 20, "messages": ASK, "stream": stream}
        async with (
            aiohttp.ClientSession() as s,
            s.post(gw + "/v1/messages", json=body, headers={"anthropic-beta": "a-1, b-2"}) as r,
        ):
            assert r.status == 200
            assert r.headers["x-aiogw-dropped-betas"] == "a-1,b-2"
            await r.read()
        assert "anthropic-beta" not in last(sim, "oai")["headers"]


async def test_passthrough_stream_keeps_signed_thinking(client):
    async with client.messages.stream(
        model="claude", max_tokens=2000, messages=ASK, thinking={"type": "enabled", "budget_tokens": 1024}
    ) as s:
        final = await s.get_final_message()
    thinking = [b for b in final.content if b.type == "thinking"]
    assert thinking and thinking[0].signature and text_of(final)


async def test_thinking_from_a_translated_target_is_never_an_unsigned_block(client):
    for model in ("gpt", "gem"):
        m = await client.messages.create(
            model=model, max_tokens=4000, messages=ASK, thinking={"type": "enabled", "budget_tokens": 2048}
        )
        assert all(b.type != "thinking" for b in m.content)
        async with client.messages.stream(
            model=model, max_tokens=4000, messages=ASK, thinking={"type": "enabled", "budget_tokens": 2048}
        ) as s:
            final = await s.get_final_message()
        assert all(b.type != "thinking" for b in final.content)


async def test_failover_before_the_first_byte_crosses_anthropic_and_openai_targets(sim, make_gateway):
    cfg = config(sim, models=[{"name": "mixed", "strategy": "priority", "targets": [
        {"provider": "claude", "model": UPSTREAM}, {"provider": "oai", "model": UPSTREAM}]}])  # fmt: skip
    url, _ = await make_gateway(cfg)
    sim.set_profile("claude", error_rate=1.0, error_status=529)
    c = anthropic.AsyncAnthropic(base_url=url.removesuffix("/v1"), api_key="k", max_retries=0)
    try:
        m = await c.messages.create(model="mixed", max_tokens=50, messages=ASK)
        assert text_of(m)
        async with c.messages.stream(model="mixed", max_tokens=50, messages=ASK) as s:
            final = await s.get_final_message()
        assert text_of(final) == text_of(m)
    finally:
        await c.close()


# --- item 5: count_tokens ---------------------------------------------------------------------


async def test_count_tokens_exact_from_anthropic_estimated_elsewhere(sim, client, gw):
    n = await client.messages.count_tokens(model="claude", messages=ASK, system="Be brief.", tools=TOOLS)
    assert n.input_tokens > 0
    assert last(sim, "claude")["path"] == "/claude/v1/messages/count_tokens"
    status, headers, body = await post(gw + "/v1/messages/count_tokens", {"model": "claude", "messages": ASK})
    assert status == 200 and headers["x-aiogw-token-count"] == "exact"
    status, headers, body = await post(gw + "/v1/messages/count_tokens", {"model": "gpt", "messages": ASK})
    assert status == 200 and headers["x-aiogw-token-count"] == "estimated" and body["input_tokens"] > 0
    _, _, with_tools = await post(gw + "/v1/messages/count_tokens", {"model": "gpt", "messages": ASK, "tools": TOOLS})
    assert with_tools["input_tokens"] > body["input_tokens"]  # the tools are part of the prompt


# --- keys and budgets -------------------------------------------------------------------------

MASTER = "master-key-for-tests-0123456789"
PRICE = {"input": 1000.0, "output": 1000.0}  # one token costs $0.001


async def test_virtual_key_by_x_api_key_and_anthropic_shaped_auth_and_budget_errors(sim, make_gateway, store_url):
    cfg = config(
        sim,
        models=[
            {"name": "gpt", "targets": [{"provider": "oai", "model": UPSTREAM, "price": PRICE}]},
            {"name": "claude", "targets": [{"provider": "claude", "model": UPSTREAM}]},
        ],
        auth={"master_key": MASTER, "require_keys": True},
        store={"url": store_url, "ledger_flush_ms": 50},
        budgets=[{"scope": "model", "match": "gpt", "limit_usd": 0.02, "period": "1d"}],
    )
    url, _ = await make_gateway(cfg)
    base = url.removesuffix("/v1")
    status, _, made = await post(base + "/admin/v1/keys", {"name": "claude-code", "models": ["gpt"]},
                                 {"authorization": f"Bearer {MASTER}"})  # fmt: skip
    assert status == 201, made
    key = anthropic.AsyncAnthropic(base_url=base, api_key=made["key"], max_retries=0)  # sends x-api-key
    bearer = anthropic.AsyncAnthropic(base_url=base, auth_token=made["key"], max_retries=0)  # Authorization
    nobody = anthropic.AsyncAnthropic(base_url=base, api_key="sk-aiogw-not-a-key", max_retries=0)
    try:
        with pytest.raises(anthropic.AuthenticationError) as e401:
            await nobody.messages.create(model="gpt", max_tokens=5, messages=ASK)
        assert e401.value.body["error"]["type"] == "authentication_error"
        assert "invalid_api_key" in e401.value.body["error"]["message"]
        with pytest.raises(anthropic.PermissionDeniedError) as e403:
            await key.messages.create(model="claude", max_tokens=5, messages=ASK)
        assert e403.value.body["error"]["type"] == "permission_error"
        assert "model_not_allowed" in e403.value.body["error"]["message"]
        refused = None
        for client in (key, bearer, key, bearer, key, bearer):
            try:
                m = await client.messages.create(model="gpt", max_tokens=5, messages=ASK)
                assert text_of(m)
            except anthropic.APIStatusError as exc:
                refused = exc
                break
        assert isinstance(refused, anthropic.PaymentRequiredError) and refused.status_code == 402
        assert refused.body["type"] == "error" and refused.body["error"]["type"] == "billing_error"
        assert refused.body["error"]["message"].startswith("budget_exceeded: ")
    finally:
        for c in (key, bearer, nobody):
            await c.close()


# --- Claude Code's request shapes against non-Anthropic targets --------------------------------
#
# tests/fixtures/anthropic/claude_code_*.json: request bodies in the shape Claude Code sends
# (written from Anthropic's API reference "Create a Message" / "Count tokens in a Message" and
# Claude Code's documented tools and gateway requirements: system prompt as text blocks with
# cache_control, a dozen client tools with JSON schemas, metadata.user_id, thinking with
# a large budget, signed and redacted thinking replayed, parallel tool_use/tool_result, an
# is_error result, system-reminder text after the results). See tests/fixtures/anthropic/README.md.

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "anthropic"
CLAUDE_CODE_BETAS = "claude-code-20250219,interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14"


def claude_code(name: str, model: str) -> dict[str, Any]:
    body = json.loads((FIXTURES / f"claude_code_{name}.json").read_text())
    body["model"] = model
    if "temperature" in body:  # this SDK's stream() takes no temperature: sent as the client's extra
        body["extra_body"] = {"temperature": body.pop("temperature")}
    return body


@pytest.mark.parametrize("model,account", [("gpt", "oai"), ("gem", "gem")])
async def test_claude_code_turns_work_against_a_translated_target(sim, client, model, account):
    for name in ("first_turn", "tool_loop"):
        body = claude_code(name, model)
        del body["stream"]
        async with client.messages.stream(**body, extra_headers={"anthropic-beta": CLAUDE_CODE_BETAS}) as s:
            final = await s.get_final_message()
        assert final.content and final.stop_reason in ("end_turn", "tool_use")
        made = await client.messages.create(**body)
        assert blocks_of(made) == blocks_of(final)
    sent = json.dumps(last(sim, account)["body"])
    for tool_id in (
        "toolu_01D7FLrfh4GYq7yT1ULFeyMV",
        "toolu_01Xk9M2pQ4rS6tU8vW0yZ1aB",
        "toolu_01Bc3De5Fg7Hi9Jk1Lm3No5P",
    ):
        # the call and its result, both unchanged (Gemini's wire format pairs them by name: no ids)
        assert sent.count(tool_id) == (2 if account == "oai" else 0)
    assert "coding agent" in sent and "[tool error]" in sent and "Run the failing test" in sent
    for never in (
        "EqQBCkgIBx",
        "EmwKAhgB",
        "The user wants the failing test fixed",
        "cache_control",
        "claude-code-2025",
    ):
        assert never not in sent  # signatures, thoughts, cache marks and betas stay at Anthropic


async def test_claude_code_tool_loop_goes_to_openai_as_chat_completions(sim, client):
    await client.messages.create(**{k: v for k, v in claude_code("tool_loop", "gpt").items() if k != "stream"})
    req = last(sim, "oai")["body"]
    roles = [m["role"] for m in req["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "tool", "tool", "user"]
    assert len(req["tools"]) == 13 and req["reasoning_effort"] == "high"
    assert req["messages"][4]["content"] is None and len(req["messages"][4]["tool_calls"]) == 2
    assert req["user"].startswith("user_2f9c1e0a7b")


async def test_claude_code_count_tokens_is_estimated_with_tools_and_system(gw):
    body = claude_code("count_tokens", "gpt")
    status, headers, got = await post(gw + "/v1/messages/count_tokens?beta=true", body)
    assert status == 200 and headers["x-aiogw-token-count"] == "estimated"
    tools_only = len(json.dumps(body["tools"])) // 4
    assert got["input_tokens"] > tools_only  # system, messages and the tools' schemas all count


def blocks_of(m) -> list[tuple[Any, ...]]:
    return [(b.type, getattr(b, "text", None), getattr(b, "name", None), getattr(b, "input", None)) for b in m.content]


# --- the response cache -----------------------------------------------------------------------


async def test_cached_messages_answers_never_cross_apis(sim, make_gateway):
    url, _ = await make_gateway(config(sim, cache={"enabled": True}))
    base = url.removesuffix("/v1")
    ask = {"model": "gpt", "max_tokens": 50, "temperature": 0, "messages": ASK}
    chat = {"model": "gpt", "max_tokens": 50, "temperature": 0, "messages": ASK}
    # OpenAI first: its entry is not a Messages answer.
    status, h, _ = await post(url + "/chat/completions", chat)
    assert status == 200 and h["x-aiogw-cache-status"] == "miss"
    status, h, first = await post(base + "/v1/messages", ask)
    assert status == 200 and h["x-aiogw-cache-status"] == "miss" and first["type"] == "message"
    status, h, again = await post(base + "/v1/messages", ask)
    assert h["x-aiogw-cache-status"] == "hit" and again == first  # the Messages answer, as sent
    status, h, openai_again = await post(url + "/chat/completions", chat)
    assert h["x-aiogw-cache-status"] == "hit" and openai_again["object"] == "chat.completion"
    # Streams: their own entries, replayed as Messages events the SDK's helper accepts.
    c = anthropic.AsyncAnthropic(base_url=base, api_key="k", max_retries=0)
    try:
        sdk_ask = {k: v for k, v in ask.items() if k != "temperature"}  # this SDK has no temperature
        for expected in ("miss", "hit"):
            async with c.messages.with_streaming_response.create(
                **sdk_ask, stream=True, extra_body={"temperature": 0}
            ) as r:
                assert r.headers["x-aiogw-cache-status"] == expected
                await r.read()
        async with c.messages.stream(**sdk_ask, extra_body={"temperature": 0}) as s:
            final = await s.get_final_message()
        assert text_of(final) == first["content"][0]["text"]
    finally:
        await c.close()


# --- the JavaScript SDK -----------------------------------------------------------------------
#
# The official `@anthropic-ai/sdk` (tests/node/package.json, installed by tests/system-deps.sh
# with `npm ci --prefix tests/node`) in a Node process: tests/node/messages_sdk.mjs.

NODE_DIR = Path(__file__).resolve().parents[1] / "node"


@pytest.mark.parametrize("model", ["gpt", "claude"])
async def test_the_js_sdk_creates_streams_counts_and_raises(sim, make_gateway, model):
    node = shutil.which("node")
    assert node, "node is missing: install Node 20 (tests/system-deps.sh)"
    assert (NODE_DIR / "node_modules" / "@anthropic-ai" / "sdk").is_dir(), "run: npm ci --prefix tests/node"
    url, _ = await make_gateway(config(sim))
    proc = await asyncio.create_subprocess_exec(
        node, str(NODE_DIR / "messages_sdk.mjs"), url.removesuffix("/v1"), model,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    got = json.loads(out)
    assert got["created"]["id"].startswith("msg_") and got["created"]["text"]
    assert got["created"]["stop"] == "end_turn" and got["created"]["output"] > 0
    streamed = got["streamed"]
    assert streamed["stop"] == "tool_use" and streamed["calls"] and streamed["calls"][0][1] == "get_weather"
    assert (streamed["first"], streamed["last"]) == ("message_start", "message_stop")
    assert got["counted"] > 0
    assert got["error"] == {"notFound": True, "status": 404, "type": "not_found_error"}
