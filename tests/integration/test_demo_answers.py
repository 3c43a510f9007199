"""The demo answers as the real providers would: structured output is an instance of the
requested schema, an agent loop ends once the tool has answered, and Gemini gives log
probabilities when asked — with the official `openai` SDK against the demo's own models
(the gateway with `aiogw serve --demo`'s config in front of its simulator)."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any, Literal

import pydantic
import pytest
from openai import AsyncOpenAI

from aiogw.demo import demo_config, start_demo_simulator

MODELS = ["demo-fast", "demo-gemini", "demo-claude"]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]  # fmt: skip


class Unit(StrEnum):
    celsius = "celsius"
    fahrenheit = "fahrenheit"


class Reading(pydantic.BaseModel):
    hour: int
    temperature: float


class Forecast(pydantic.BaseModel):
    city: str
    unit: Unit
    sky: Literal["clear", "cloudy", "rain"]
    windy: bool
    readings: list[Reading]
    note: str | None


@pytest.fixture
async def demo(make_gateway):
    sim = await start_demo_simulator()
    try:
        url, _ = await make_gateway(demo_config(sim.url))
        client = AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, timeout=20)
        yield client
        await client.close()
    finally:
        await sim.close()


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("stream", [False, True])
async def test_structured_output_parses_into_the_pydantic_model(demo, model, stream):
    messages = [{"role": "user", "content": "Forecast for Paris"}]
    if stream:
        async with demo.chat.completions.stream(model=model, messages=messages, response_format=Forecast) as s:
            r = await s.get_final_completion()
    else:
        r = await demo.chat.completions.parse(model=model, messages=messages, response_format=Forecast)
    parsed = r.choices[0].message.parsed
    assert isinstance(parsed, Forecast) and parsed.readings, r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("model", MODELS)
async def test_json_object_mode_answers_a_non_empty_object(demo, model):
    r = await demo.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Answer in JSON"}], response_format={"type": "json_object"}
    )
    value = json.loads(r.choices[0].message.content)
    assert isinstance(value, dict) and value  # never a bare {}


async def agent_loop(client: AsyncOpenAI, model: str, **kw: Any) -> tuple[int, Any]:
    """Call tools until the model answers; (turns taken, final message). At most 4 turns."""
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    for turn in range(1, 5):
        r = await client.chat.completions.create(model=model, messages=messages, tools=TOOLS, **kw)
        msg = r.choices[0].message
        if not msg.tool_calls:
            return turn, r.choices[0]
        messages.append(msg.model_dump(exclude_none=True))
        for call in msg.tool_calls:
            assert call.function.name == "get_weather" and "city" in json.loads(call.function.arguments)
            messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 18}'})
    raise AssertionError(f"{model}: still calling tools after 4 turns")


@pytest.mark.parametrize("model", MODELS)
async def test_an_agent_loop_ends_after_the_tool_answers(demo, model):
    turns, final = await agent_loop(demo, model)
    assert turns == 2
    assert final.finish_reason == "stop" and final.message.content.startswith("Simulated reply")


@pytest.mark.parametrize("model", MODELS)
async def test_a_structured_agent_loop_ends_with_a_schema_valid_answer(demo, model):
    schema = {"type": "json_schema", "json_schema": {"name": "Forecast", "schema": Forecast.model_json_schema()}}
    turns, final = await agent_loop(demo, model, response_format=schema)
    assert turns == 2
    Forecast.model_validate_json(final.message.content)


async def test_gemini_gives_log_probabilities_streaming_and_not(demo):
    kw = {"model": "demo-gemini", "messages": [{"role": "user", "content": "Hi"}], "logprobs": True, "top_logprobs": 2}
    r = await demo.chat.completions.create(**kw)
    content = r.choices[0].logprobs.content
    assert "".join(t.token for t in content) == r.choices[0].message.content
    assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 and t.bytes == list(t.token.encode()) for t in content)

    tokens, text = [], ""
    async for chunk in await demo.chat.completions.create(**kw, stream=True):
        for ch in chunk.choices:
            text += ch.delta.content or ""
            tokens += [t.token for t in (ch.logprobs.content if ch.logprobs else None) or []]
    assert tokens and "".join(tokens) == text
