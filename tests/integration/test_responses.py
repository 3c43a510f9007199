"""POST /v1/responses end to end: a real gateway in front of the simulator's OpenAI,
Anthropic and Gemini targets, the official `openai` SDK (`responses.create`,
`responses.stream` and its accumulator, `responses.parse`) as the client. A Responses answer
must carry what the same request through /v1/chat/completions carries (the chat path is
checked against each provider's native answer in test_providers.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import openai
import pytest
from conftest import SIM_KEY, until
from openai import AsyncOpenAI
from pydantic import BaseModel

from aiogw.config_load import from_builtins

TARGETS = {  # model name -> (provider type, account, upstream model)
    "openai": ("openai", "oai", "gpt-sim"),
    "anthropic": ("anthropic", "claude", "claude-haiku-4-5"),
    "gemini": ("gemini", "goog", "gemini-2.5-flash"),
}
MASTER = "master-key-for-tests-0123456789"
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather by city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}  # fmt: skip
CHAT_WEATHER = {"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}


def config(sim, **extra):
    providers, models = {}, []
    for name, (kind, account, model) in TARGETS.items():
        base = sim.base_url(account) if kind == "openai" else sim.root(account)
        providers[account] = {"type": kind, "base_url": base, "api_key": SIM_KEY}
        sim.set_profile(account, api_key=SIM_KEY, completion_tokens=12)
        models.append({"name": name, "targets": [{"provider": account, "model": model}]})
    return from_builtins({"server": {"host": "127.0.0.1", "port": 0}, "providers": providers, "models": models,
                          "routing": {"retry": {"max_rounds": 0}}, **extra}, env={})  # fmt: skip


def sdk(url: str, key: str = "client") -> AsyncOpenAI:
    return AsyncOpenAI(base_url=url, api_key=key, max_retries=0, timeout=20)


@pytest.fixture
async def gw(sim, make_gateway):
    url, _ = await make_gateway(config(sim))
    async with sdk(url) as client:
        yield url, client


def last_body(sim, name: str) -> dict:
    return sim.stats(TARGETS[name][1])["last_request"]["body"]


async def raw_stream(url: str, body: dict, key: str = "client") -> tuple[int, dict, list[tuple[str, dict]]]:
    """(status, headers, [(event name, data)]) of a streamed request, read as plain SSE."""
    headers = {"authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession() as s, s.post(url + "/responses", json=body, headers=headers) as r:
        raw = await r.read()
        out = []
        for block in raw.decode().split("\n\n"):
            lines = [ln for ln in block.split("\n") if ln and not ln.startswith(":")]
            if not lines:
                continue
            event = next(ln[7:] for ln in lines if ln.startswith("event: "))
            data = json.loads("".join(ln[6:] for ln in lines if ln.startswith("data: ")))
            out.append((event, data))
        return r.status, {k.lower(): v for k, v in r.headers.items()}, out


def check_sequence(events: list[tuple[str, dict]]) -> None:
    """The stream's invariants: created first, one terminal event last, one response id,
    sequence_number 0, 1, 2..., every event named as its `type`, item indexes consistent."""
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    assert all(name == d["type"] for name, d in events)
    assert events[0][0] == "response.created" and events[1][0] == "response.in_progress"
    terminal = [n for n, _ in events if n in ("response.completed", "response.incomplete", "response.failed")]
    assert terminal == [events[-1][0]]
    assert len({d["response"]["id"] for _, d in events if "response" in d}) == 1
    added = {d["output_index"]: d["item"]["id"] for n, d in events if n == "response.output_item.added"}
    assert sorted(added) == list(range(len(added)))
    for n, d in events:
        if "item_id" in d:
            assert added[d["output_index"]] == d["item_id"], (n, d)


@pytest.mark.parametrize("name", list(TARGETS))
async def test_create_answers_as_chat_does(sim, gw, name):
    _url, client = gw
    r = await client.responses.with_raw_response.create(model=name, instructions="Be brief.", input="Weather in Paris?")
    resp = r.parse()
    chat = await client.chat.completions.create(
        model=name,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"}],
    )
    assert resp.id.startswith("resp_") and resp.object == "response" and resp.status == "completed"
    assert resp.output_text == chat.choices[0].message.content
    [msg] = resp.output
    assert msg.type == "message" and msg.id.startswith("msg_") and msg.content[0].annotations == []
    assert (resp.usage.input_tokens, resp.usage.output_tokens) == (
        chat.usage.prompt_tokens,
        chat.usage.completion_tokens,
    )
    assert resp.usage.total_tokens == resp.usage.input_tokens + resp.usage.output_tokens
    assert resp.usage.input_tokens_details.cached_tokens == 0
    assert resp.usage.output_tokens_details.reasoning_tokens == 0
    assert resp.instructions == "Be brief." and resp.tools == [] and resp.tool_choice == "auto"
    assert resp.parallel_tool_calls is True and resp.store is False
    assert r.headers["x-aiogw-provider"] == TARGETS[name][1] and r.headers["x-aiogw-attempts"] == "1"
    body = json.loads(r.content)
    assert "output_text" not in body  # an SDK convenience: the API does not send it
    assert last_body(sim, name) is not None


async def test_a_targets_refusal_names_the_responses_field_not_the_chat_one(gw):
    # Anthropic refuses sampling changes with thinking: its adapter names the canonical
    # `reasoning_effort`; the Responses client sent `reasoning.effort` and is told so.
    _url, client = gw
    with pytest.raises(openai.BadRequestError) as err:
        await client.responses.create(
            model="anthropic", input="Hi", reasoning={"effort": "high"}, temperature=0.5, max_output_tokens=4000
        )
    assert err.value.body["param"] == "reasoning.effort", err.value.body


@pytest.mark.parametrize("name", list(TARGETS))
async def test_stream_through_the_sdk_helper(sim, gw, name):
    url, client = gw
    async with client.responses.stream(model=name, input="Weather in Paris?") as s:
        events = [e async for e in s]
        final = await s.get_final_response()
    plain = await client.responses.create(model=name, input="Weather in Paris?")
    assert final.output_text == plain.output_text
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == plain.output_text
    assert [e.type for e in events][:4] == ["response.created", "response.in_progress",
                                            "response.output_item.added", "response.content_part.added"]  # fmt: skip
    assert events[-1].type == "response.completed" and final.status == "completed"
    assert final.usage.output_tokens == plain.usage.output_tokens
    status, headers, raw = await raw_stream(url, {"model": name, "input": "Weather in Paris?", "stream": True})
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    check_sequence(raw)
    assert all(b"[DONE]" not in json.dumps(d).encode() for _, d in raw)


async def test_a_refusal_streams_as_refusal_events_of_its_own_content_part(sim, gw):
    # OpenAI's model declines (chat `delta.refusal` pieces, no content): the Responses
    # stream carries it as a refusal part (content_part.added, refusal.delta..., refusal.done,
    # content_part.done), the final response as that part, as OpenAI's Responses API does.
    url, client = gw
    said = "I'm sorry, I cannot help with that request."
    sim.set_profile("oai", api_key=SIM_KEY, refusal=said)
    async with client.responses.stream(model="openai", input="Something it declines") as s:
        events = [e async for e in s]
        final = await s.get_final_response()
    plain = await client.responses.create(model="openai", input="Something it declines")
    deltas = [e for e in events if e.type == "response.refusal.delta"]
    assert len(deltas) > 1 and "".join(e.delta for e in deltas) == said
    assert all(e.content_index == 0 and e.output_index == 0 for e in deltas)
    [done] = [e for e in events if e.type == "response.refusal.done"]
    assert done.refusal == said and done.item_id == deltas[0].item_id
    parts = [e.part for e in events if e.type in ("response.content_part.added", "response.content_part.done")]
    assert [(p.type, p.refusal) for p in parts] == [("refusal", ""), ("refusal", said)]
    assert not any(e.type.startswith("response.output_text") for e in events)
    for resp in (final, plain):
        [msg] = resp.output
        assert [(c.type, c.refusal) for c in msg.content] == [("refusal", said)]
        assert resp.output_text == ""
    _status, _headers, raw = await raw_stream(
        url, {"model": "openai", "input": "Something it declines", "stream": True}
    )
    check_sequence(raw)


@pytest.mark.parametrize("name", list(TARGETS))
@pytest.mark.parametrize("stream", [False, True])
async def test_function_tools_across_two_turns(sim, gw, name, stream):
    _url, client = gw
    question = [{"role": "user", "content": "Weather in Paris?"}]
    if stream:
        async with client.responses.stream(model=name, input=question, tools=[WEATHER]) as s:
            events = [e async for e in s]
            first = await s.get_final_response()
        args_events = [e for e in events if e.type == "response.function_call_arguments.done"]
        assert [e.arguments for e in args_events] == [first.output[-1].arguments]
    else:
        first = await client.responses.create(model=name, input=question, tools=[WEATHER])
    chat = await client.chat.completions.create(model=name, messages=question, tools=[CHAT_WEATHER])
    [call] = [o for o in first.output if o.type == "function_call"]
    [want] = chat.choices[0].message.tool_calls
    assert call.id.startswith("fc_") and call.call_id
    assert (call.name, json.loads(call.arguments)) == (want.function.name, json.loads(want.function.arguments))
    # The second turn: the call and its output sent back as items.
    second_input = [*question, call.model_dump(exclude_none=True),
                    {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"}]  # fmt: skip
    second = await client.responses.create(model=name, input=second_input, tools=[WEATHER])
    assert second.status == "completed" and second.output_text and second.output[-1].type == "message"
    sent = json.dumps(last_body(sim, name))
    assert "Sunny, 21 C" in sent
    if name != "gemini":  # Gemini's wire has no call ids
        assert call.call_id in sent


class Weather(BaseModel):
    city: str
    temperature_c: int


@pytest.mark.parametrize("name", list(TARGETS))
async def test_structured_output(gw, name):
    _url, client = gw
    r = await client.responses.parse(model=name, input="Weather in Paris as JSON", text_format=Weather)
    assert isinstance(r.output_parsed, Weather)
    assert r.text.format.type == "json_schema"


async def test_stateless_by_default(gw):
    _url, client = gw
    with pytest.raises(openai.BadRequestError) as err:
        await client.responses.create(model="openai", input="Hi", previous_response_id="resp_123")
    assert err.value.body["code"] == "previous_response_not_supported"
    assert err.value.body["param"] == "previous_response_id"
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve("resp_123")
    with pytest.raises(openai.NotFoundError):
        await client.responses.delete("resp_123")


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"input": "Hi", "tools": [{"type": "web_search"}]}, "tools[0].type", "unsupported_tool"),
        ({"input": [{"role": "user", "content": [{"type": "input_text"}]}]}, "input[0].content[0].text",
         "missing_required_parameter"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type", "unsupported_value"),
        ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id",
         "missing_required_parameter"),
        ({"input": "Hi", "temperature": 3}, "temperature", "invalid_value"),
        ({"input": "Hi", "text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format.name",
         "missing_required_parameter"),
        ({"input": "Hi", "tool_choice": {"type": "file_search"}}, "tool_choice", "unsupported_tool"),
        ({}, "input", "missing_required_parameter"),
    ],
)  # fmt: skip
async def test_invalid_requests_name_the_param(gw, body, param, code):
    _url, client = gw
    with pytest.raises(openai.BadRequestError) as err:
        await client.responses.create(model="openai", **body)
    assert (err.value.body["param"], err.value.body["code"]) == (param, code), err.value.body
    assert err.value.body["type"] == "invalid_request_error" and err.value.body["message"]


@pytest.mark.parametrize("name", list(TARGETS))
async def test_incomplete_at_max_output_tokens(sim, gw, name):
    url, client = gw
    sim.set_profile(TARGETS[name][1], api_key=SIM_KEY, completion_tokens=40)
    r = await client.responses.create(model=name, input="Weather in Paris?", max_output_tokens=16)
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.output[0].status == "incomplete" and r.usage.output_tokens == 16
    _status, _h, events = await raw_stream(url, {"model": name, "input": "Hi", "stream": True, "max_output_tokens": 16})
    check_sequence(events)
    assert events[-1][0] == "response.incomplete"
    assert events[-1][1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


async def test_late_failure_ends_with_error_then_failed(sim, gw):
    url, client = gw
    sim.set_profile("claude", api_key=SIM_KEY, fault="drop", fault_after_chunks=3, tokens_per_s=50)  # started first
    status, _h, events = await raw_stream(url, {"model": "anthropic", "input": "Hi", "stream": True})
    assert status == 200
    check_sequence(events)
    assert [n for n, _ in events[-2:]] == ["error", "response.failed"]
    failed = events[-1][1]["response"]
    assert failed["status"] == "failed" and failed["error"]["message"]
    async with client.responses.stream(model="anthropic", input="Hi") as s:
        seen = [e.type async for e in s]
        assert seen[-2:] == ["error", "response.failed"]
        with pytest.raises(RuntimeError):  # the SDK's word for a stream without response.completed
            await s.get_final_response()


async def test_the_cache_keeps_responses_apart_and_never_replays_across_apis(sim, make_gateway):
    url, _ = await make_gateway(config(sim, cache={"enabled": True, "backend": "memory"}))
    async with sdk(url) as client:
        msgs = [{"role": "user", "content": "Weather in Paris?"}]
        chat = await client.chat.completions.with_raw_response.create(model="openai", messages=msgs, temperature=0)
        assert chat.headers["x-aiogw-cache-status"] == "miss"
        before = sim.stats("oai")["requests"]
        first = await client.responses.with_raw_response.create(model="openai", input=msgs, temperature=0)
        assert first.headers["x-aiogw-cache-status"] == "miss"  # the chat entry is not a Responses answer
        assert sim.stats("oai")["requests"] == before + 1
        for _ in range(50):  # the write is off the request path: bounded polling for the hit
            again = await client.responses.with_raw_response.create(model="openai", input=msgs, temperature=0)
            if again.headers["x-aiogw-cache-status"] == "hit":
                break
        assert again.headers["x-aiogw-cache-status"] == "hit"
        assert again.parse().object == "response" and again.parse().output_text == first.parse().output_text
        # A streaming Responses client has entries of its own too (the events as they were sent).
        async with client.responses.stream(model="openai", input=msgs, temperature=0) as s:
            text = (await s.get_final_response()).output_text
        assert text == first.parse().output_text
        chat_again = await client.chat.completions.with_raw_response.create(
            model="openai", messages=msgs, temperature=0
        )
        assert chat_again.headers["x-aiogw-cache-status"] == "hit" and chat_again.parse().object == "chat.completion"


async def test_a_stored_response_is_never_answered_from_the_cache(sim, make_gateway, store_url):
    cfg = stored_config(sim, store_url, cache={"enabled": True, "backend": "memory"})
    url, _ = await make_gateway(cfg)
    async with sdk(url) as client:
        ids = set()
        for _ in range(2):
            r = await client.responses.with_raw_response.create(model="openai", input="Hi", temperature=0)
            assert (r.headers["x-aiogw-cache-status"], r.headers["x-aiogw-cache-reason"]) == ("bypass", "stored")
            ids.add(r.parse().id)
        assert len(ids) == 2  # each stored under its own id


# --- stored responses --------------------------------------------------------------------


def stored_config(sim, store_url, ttl_s=3600.0, **extra):
    return config(sim, responses={"store": True, "ttl_s": ttl_s}, store={"url": store_url}, **extra)


@pytest.mark.parametrize("stream", [False, True])
async def test_stored_conversation_continues_on_another_target(sim, make_gateway, store_url, stream):
    url, _ = await make_gateway(stored_config(sim, store_url))
    async with sdk(url) as client:
        if stream:
            async with client.responses.stream(
                model="openai", instructions="Be brief.", input="Weather in Paris?"
            ) as s:
                first = await s.get_final_response()
        else:
            first = await client.responses.create(model="openai", instructions="Be brief.", input="Weather in Paris?")
        assert first.store is True
        got = await client.responses.retrieve(first.id)  # at once: written before the answer
        assert (got.id, got.output_text, got.usage, got.status) == (
            first.id,
            first.output_text,
            first.usage,
            "completed",
        )
        second = await client.responses.create(model="anthropic", input="And in Rome?", previous_response_id=first.id)
        assert second.previous_response_id == first.id and second.output_text
        sent = last_body(sim, "anthropic")
        texts = json.dumps(sent)
        assert "Weather in Paris?" in texts and first.output_text in texts and "And in Rome?" in texts
        assert "Be brief." not in texts  # instructions are not carried over (as OpenAI does)
        third = await client.responses.create(model="gemini", input="And Oslo?", previous_response_id=second.id)
        texts = json.dumps(last_body(sim, "gemini"))
        assert all(t in texts for t in ("Weather in Paris?", "And in Rome?", second.output_text, "And Oslo?"))
        await client.responses.delete(third.id)
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(third.id)
        with pytest.raises(openai.BadRequestError) as err:
            await client.responses.create(model="openai", input="x", previous_response_id=third.id)
        assert err.value.body["code"] == "previous_response_not_found"


async def test_delete_answers_the_deleted_object(sim, make_gateway, store_url):
    url, _ = await make_gateway(stored_config(sim, store_url))
    async with sdk(url) as client:
        first = await client.responses.create(model="openai", input="Hi")
        r = await client.responses.with_raw_response.delete(first.id)
        assert r.status_code == 200 and json.loads(r.content) == {"id": first.id, "object": "response", "deleted": True}
        not_kept = await client.responses.create(model="openai", input="Hi", store=False)
        assert not_kept.store is False
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(not_kept.id)


async def test_stored_responses_are_the_callers_own(sim, make_gateway, store_url):
    url, _ = await make_gateway(stored_config(sim, store_url, auth={"master_key": MASTER}))
    keys = []
    async with aiohttp.ClientSession() as s:
        for name in ("a", "b"):
            async with s.post(url.removesuffix("/v1") + "/admin/v1/keys", json={"name": name},
                              headers={"authorization": f"Bearer {MASTER}"}) as r:  # fmt: skip
                assert r.status == 201
                keys.append((await r.json())["key"])
    async with sdk(url, keys[0]) as a, sdk(url, keys[1]) as b:
        mine = await a.responses.create(model="openai", input="Hi")
        assert (await a.responses.retrieve(mine.id)).id == mine.id
        with pytest.raises(openai.NotFoundError):
            await b.responses.retrieve(mine.id)
        with pytest.raises(openai.NotFoundError):
            await b.responses.delete(mine.id)
        with pytest.raises(openai.BadRequestError):
            await b.responses.create(model="openai", input="x", previous_response_id=mine.id)
        assert (await a.responses.retrieve(mine.id)).id == mine.id


async def test_expired_responses_are_gone(sim, make_gateway, store_url):
    url, _ = await make_gateway(stored_config(sim, store_url, ttl_s=0.001))
    async with sdk(url) as client:
        first = await client.responses.create(model="openai", input="Hi")

        async def gone() -> bool:
            try:
                await client.responses.retrieve(first.id)
            except openai.NotFoundError:
                return True
            return False

        await until(gone)


@pytest.mark.parametrize("stream", [False, True])
async def test_reasoning_comes_back_as_a_reasoning_item(gw, stream):
    """Anthropic thinking (reasoning.effort) -> a reasoning item with its summary, first."""
    _url, client = gw
    kw = {"model": "anthropic", "input": "Weather in Paris?", "reasoning": {"effort": "low"}, "max_output_tokens": 4096}
    if stream:
        async with client.responses.stream(**kw) as s:
            events = [e async for e in s]
            r = await s.get_final_response()
        deltas = "".join(e.delta for e in events if e.type == "response.reasoning_summary_text.delta")
        assert deltas == r.output[0].summary[0].text
    else:
        r = await client.responses.create(**kw)
    assert [o.type for o in r.output] == ["reasoning", "message"]
    assert r.output[0].id.startswith("rs_") and r.output[0].summary[0].text
    assert r.reasoning.effort == "low" and r.output_text


@pytest.mark.parametrize("stream", [False, True])
async def test_a_response_that_cannot_be_stored_is_not_answered_as_done(sim, make_gateway, store_url, stream):
    """The store write comes before the answer (before the terminal event of a stream): when
    it fails, the client hears so instead of getting an id no continuation will find."""
    from aiogw.store.base import connect

    url, _ = await make_gateway(stored_config(sim, store_url))
    async with sdk(url) as client:
        await client.responses.create(model="openai", input="Hi")  # the store is open and migrated
    store = await connect(store_url)
    try:
        await store.execute("DROP TABLE aiogw_responses")
    finally:
        await store.close()
    if stream:
        status, _h, events = await raw_stream(url, {"model": "openai", "input": "Hi", "stream": True})
        assert status == 200
        check_sequence(events)
        assert [n for n, _ in events[-2:]] == ["error", "response.failed"]
        assert events[-2][1]["code"] == "store_unavailable"
        assert "response.completed" not in [n for n, _ in events]
    else:
        async with sdk(url) as client:
            with pytest.raises(openai.InternalServerError) as err:
                await client.responses.create(model="openai", input="Hi")
        assert err.value.status_code == 503 and err.value.body["code"] == "store_unavailable"


NODE_DIR = Path(__file__).resolve().parents[1] / "node"


async def test_node_sdk(gw):
    """The official `openai` npm package (tests/node, installed by tests/system-deps.sh)."""
    url, client = gw
    proc = await asyncio.create_subprocess_exec(
        "node", str(NODE_DIR / "responses.mjs"), url, "anthropic",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    got = json.loads(out.decode().strip().splitlines()[-1])
    want = await client.responses.create(model="anthropic", instructions="Be brief.", input="Weather in Paris?")
    assert got["text"] == want.output_text and got["call"]["name"] == "get_weather"


async def test_a_hedged_stream_is_stored_from_the_attempt_that_won(sim, make_gateway, store_url):
    """Two attempts, two encoders: the one whose stream the client got is the one stored
    (the hedge starts after the first attempt, and loses to it)."""
    for account, ttft in (("fast1", 300), ("slow2", 5000)):
        sim.set_profile(account, api_key=SIM_KEY, completion_tokens=12, ttft_ms=ttft)
    cfg = from_builtins({
        "server": {"host": "127.0.0.1", "port": 0},
        "providers": {a: {"type": "openai", "base_url": sim.base_url(a), "api_key": SIM_KEY} for a in ("fast1", "slow2")},
        "models": [{"name": "hedged", "hedge": {"delay_ms": 50},
                    "targets": [{"provider": "fast1", "model": "gpt-sim"}, {"provider": "slow2", "model": "gpt-sim"}]}],
        "responses": {"store": True}, "store": {"url": store_url},
    }, env={})  # fmt: skip
    url, _ = await make_gateway(cfg)
    async with sdk(url) as client:
        async with client.responses.stream(model="hedged", input="Hi") as s:
            final = await s.get_final_response()
        assert sim.stats("slow2")["requests"] == 1  # the hedge was sent
        got = await client.responses.retrieve(final.id)
        assert got.output_text == final.output_text


# --- pass-through: an openai account whose upstream has the Responses API ----------------


def native_config(sim, **extra):
    """`native`: an openai account with responses_api (the simulator's /v1/responses);
    `translated`: the same simulator account without it."""
    sim.set_profile("oair", api_key=SIM_KEY, completion_tokens=12)
    acct = {"type": "openai", "base_url": sim.base_url("oair"), "api_key": SIM_KEY}
    return from_builtins({
        "server": {"host": "127.0.0.1", "port": 0},
        "providers": {"oair": {**acct, "responses_api": True}, "oaic": {**acct, "base_url": sim.base_url("oair")}},
        "models": [{"name": "native", "targets": [{"provider": "oair", "model": "gpt-sim"}]},
                   {"name": "translated", "targets": [{"provider": "oaic", "model": "gpt-sim"}]}],
        "routing": {"retry": {"max_rounds": 0}}, **extra,
    }, env={})  # fmt: skip


@pytest.fixture
async def ngw(sim, make_gateway):
    url, _ = await make_gateway(native_config(sim))
    async with sdk(url) as client:
        yield url, client


async def test_passed_through_unchanged(sim, ngw):
    url, client = ngw
    body = {"instructions": "Be brief.", "input": "Weather in Paris?", "metadata": {"k": "v"},
            "include": ["message.output_text.logprobs"], "truncation": "auto", "store": False}  # fmt: skip
    r = await client.responses.with_raw_response.create(model="native", **body)
    resp = r.parse()
    req = sim.stats("oair")["last_request"]
    assert req["path"].endswith("/v1/responses")
    assert req["body"] == {**body, "model": "gpt-sim"}  # as sent, the upstream's model name
    translated = await client.responses.create(model="translated", instructions="Be brief.", input="Weather in Paris?")
    assert sim.stats("oair")["last_request"]["path"].endswith("/v1/chat/completions")
    assert resp.output_text == translated.output_text and resp.status == "completed"
    assert (resp.usage.input_tokens, resp.usage.output_tokens) == (
        translated.usage.input_tokens, translated.usage.output_tokens)  # fmt: skip
    assert r.headers["x-aiogw-provider"] == "oair"
    async with aiohttp.ClientSession() as s, s.get(url + "/gateway/spend") as sp:
        rows = [row for row in (await sp.json())["rows"] if row["model"] == "native"]
    assert rows and rows[0]["completion_tokens"] == resp.usage.output_tokens  # accounted from its usage


async def test_passed_through_stream(sim, ngw):
    url, client = ngw
    async with client.responses.stream(model="native", input="Weather in Paris?", tools=[WEATHER]) as s:
        final = await s.get_final_response()
    assert sim.stats("oair")["last_request"]["body"]["stream"] is True
    [call] = [o for o in final.output if o.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments)["city"]
    status, _h, events = await raw_stream(url, {"model": "native", "input": "Hi", "stream": True})
    assert status == 200
    check_sequence(events)
    assert events[-1][0] == "response.completed"


async def test_built_in_tools_only_where_passed_through(sim, ngw):
    _url, client = ngw
    tools = [{"type": "web_search"}, WEATHER]
    r = await client.responses.create(model="native", input="Weather in Paris?", tools=tools)
    assert r.status == "completed" and sim.stats("oair")["last_request"]["body"]["tools"] == tools
    with pytest.raises(openai.BadRequestError) as err:
        await client.responses.create(model="translated", input="Weather in Paris?", tools=tools)
    assert (err.value.body["code"], err.value.body["param"]) == ("unsupported_tool", "tools[0].type")


async def test_passed_through_late_failure_continues_the_upstream_stream(sim, ngw):
    url, _client = ngw
    # Paced (a token every 20 ms), so the stream has started before the fault strikes.
    sim.set_profile("oair", api_key=SIM_KEY, completion_tokens=12, fault="error_event", fault_after_chunks=3,
                    tokens_per_s=50)  # fmt: skip
    status, _h, events = await raw_stream(url, {"model": "native", "input": "Hi", "stream": True})
    assert status == 200
    check_sequence(events)  # one id (the upstream's), sequence numbers unbroken
    assert [n for n, _ in events[-2:]] == ["error", "response.failed"]
    assert events[-1][1]["response"]["id"] == events[0][1]["response"]["id"]


async def test_a_stored_passed_through_response_continues_translated(sim, make_gateway, store_url):
    url, _ = await make_gateway(native_config(sim, responses={"store": True}, store={"url": store_url}))
    async with sdk(url) as client:
        first = await client.responses.create(model="native", input="Weather in Paris?")
        assert (await client.responses.retrieve(first.id)).output_text == first.output_text
        second = await client.responses.create(model="native", input="And Rome?", previous_response_id=first.id)
        req = sim.stats("oair")["last_request"]
        assert req["path"].endswith("/v1/chat/completions")  # our id means nothing upstream: translated
        texts = json.dumps(req["body"])
        assert all(t in texts for t in ("Weather in Paris?", first.output_text, "And Rome?"))
        assert second.previous_response_id == first.id


async def test_the_simulators_responses_api_is_the_sdks(sim):
    """The simulator's /v1/responses, read by the official SDK directly (no gateway)."""
    sim.set_profile("oair", api_key=SIM_KEY, completion_tokens=12)
    async with AsyncOpenAI(base_url=sim.base_url("oair"), api_key=SIM_KEY, max_retries=0, timeout=20) as direct:
        r = await direct.responses.create(model="gpt-sim", input="Hi", tools=[WEATHER])
        assert r.output[0].type == "function_call" and r.usage.output_tokens > 0
        async with direct.responses.stream(model="gpt-sim", input="Hi", max_output_tokens=16) as s:
            events = [e.type async for e in s]
        assert events[0] == "response.created" and events[-1] == "response.completed"


async def test_a_failed_pass_through_fails_over_to_a_translated_target(sim, make_gateway):
    sim.set_profile("oair", api_key=SIM_KEY, fault="status", fault_status=503)
    sim.set_profile("claude", api_key=SIM_KEY, completion_tokens=12)
    data = {
        "server": {"host": "127.0.0.1", "port": 0},
        "providers": {"oair": {"type": "openai", "base_url": sim.base_url("oair"), "api_key": SIM_KEY,
                               "responses_api": True},
                      "claude": {"type": "anthropic", "base_url": sim.root("claude"), "api_key": SIM_KEY}},
        "models": [{"name": "mixed", "targets": [{"provider": "oair", "model": "gpt-sim"},
                                                 {"provider": "claude", "model": "claude-haiku-4-5"}]}],
        "routing": {"retry": {"max_rounds": 0}},
    }  # fmt: skip
    url, _ = await make_gateway(from_builtins(data, env={}))
    async with sdk(url) as client:
        for stream in (False, True):
            if stream:
                async with client.responses.stream(model="mixed", input="Hi") as s:
                    r = await s.get_final_response()
            else:
                r = await client.responses.create(model="mixed", input="Hi")
            assert r.status == "completed" and "claude-haiku-4-5" in r.output_text
    assert sim.stats("oair")["last_request"]["path"].endswith("/v1/responses")  # tried first, natively
