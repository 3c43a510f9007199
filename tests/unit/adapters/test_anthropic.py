"""The Anthropic adapter: request translation, responses, errors and recorded streams."""

from __future__ import annotations

import json

import msgspec
import pytest
from adapter_calls import USER, upstream_call
from replay import FIXTURES, expected, replay

from aiogw.adapters import anthropic
from aiogw.adapters._base import Target
from aiogw.errors import FailureClass, InvalidRequest, UpstreamError
from aiogw.types import Secret

T = Target(
    id="a/claude-sonnet-4-5", provider="a", type="anthropic", model="claude-sonnet-4-5",
    base_url="https://api.anthropic.com", api_key=Secret("sk-ant-test"),
)  # fmt: skip
DIR = FIXTURES / "anthropic"


def call(target=T, **body):
    return upstream_call(anthropic.build_call, target, **body)


def test_url_and_auth_headers():
    c, body = call()
    assert c.url == "https://api.anthropic.com/v1/messages"
    assert c.headers["x-api-key"] == "sk-ant-test" and c.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in c.headers
    assert body["model"] == "claude-sonnet-4-5" and body["max_tokens"] == 64000  # the model's max output


def test_system_roles_merging_images_and_tool_rounds():
    _, body = call(
        messages=[
            {"role": "system", "content": "Be terse."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg", "detail": "high"}},
                ],
            },
            {"role": "user", "content": "And the weather?"},
            {"role": "developer", "content": "Use tools."},
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "call:1|x",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    },
                    {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": ""}},
                ],
            },
            {"role": "tool", "tool_call_id": "call:1|x", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_2", "content": "noon"},
            {"role": "user", "content": "Thanks"},
        ],
        tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
    )
    assert body["system"] == [{"type": "text", "text": "Be terse."}, {"type": "text", "text": "Use tools."}]
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["user", "assistant", "user"]
    first = body["messages"][0]["content"]
    assert first[1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
    }
    assert first[2] == {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}}
    assert first[3] == {"type": "text", "text": "And the weather?"}
    uses = body["messages"][1]["content"]
    assert uses[1] == {"type": "tool_use", "id": "call_1_x", "name": "get_weather", "input": {"city": "Paris"}}
    assert uses[2]["input"] == {}
    results = body["messages"][2]["content"]
    assert [b["type"] for b in results] == ["tool_result", "tool_result", "text"]
    assert results[0]["tool_use_id"] == "call_1_x"


def test_tool_choice_parallel_and_json_mode():
    tools = [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}}]
    _, body = call(tools=tools, tool_choice="required", parallel_tool_calls=False)
    assert body["tools"] == [{"name": "f", "input_schema": {"type": "object"}, "description": "d"}]
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    _, body = call(tools=tools, tool_choice={"type": "function", "function": {"name": "f"}})
    assert body["tool_choice"] == {"type": "tool", "name": "f"}
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    _, body = call(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    assert body["tools"][-1]["input_schema"] == schema
    assert body["tool_choice"] == {"type": "tool", "name": anthropic.JSON_TOOL}


def test_history_with_tools_but_no_tool_definitions_stays_valid():
    _, body = call(
        messages=[
            *USER,
            {
                "role": "assistant",
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "ok"},
        ]
    )
    assert body["tool_choice"] == {"type": "none"} and len(body["tools"]) == 1


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"temperature": 1.5}, "temperature"),
        ({"temperature": 0.5, "top_p": 0.9}, "top_p"),
        ({"n": 2}, "n"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"logprobs": True}, "logprobs"),
        ({"logit_bias": {"1": 2}}, "logit_bias"),
        ({"stop": [" "]}, "stop"),
        ({"reasoning_effort": "high", "max_tokens": 500}, "reasoning_effort"),
        ({"reasoning_effort": "high", "temperature": 0.3}, "reasoning_effort"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}],
                    }
                ]
            },
            "messages[0].content[0].type",
        ),
        (
            {
                "messages": [
                    *USER,
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}
                        ],
                    },
                ]
            },
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AA"}}],
                    }
                ]
            },
            "messages[0].content[0].image_url.url",
        ),
    ],
)
def test_refusals_name_the_parameter(extra, param):
    with pytest.raises(InvalidRequest) as exc:
        call(**extra)
    assert exc.value.param == param


def test_mapped_and_dropped_parameters():
    c, body = call(temperature=0.3, top_p=1, top_k=5, stop="END", user="u-1", seed=7, n=1, presence_penalty=0,
                   max_completion_tokens=300)  # fmt: skip
    assert body["temperature"] == 0.3 and "top_p" not in body and body["top_k"] == 5
    assert body["stop_sequences"] == ["END"] and body["metadata"] == {"user_id": "u-1"}
    assert body["max_tokens"] == 300 and "seed" not in body
    assert any("seed" in n for n in c.notes)
    _, body = call(reasoning_effort="low", max_tokens=5000)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    _, body = call(thinking={"type": "enabled", "budget_tokens": 1500}, max_tokens=4000)
    assert body["thinking"]["budget_tokens"] == 1500  # Anthropic's own field passes through


def test_response_translation_with_thinking_and_tools():
    reply = anthropic.decode_response((DIR / "message_tool_use.json").read_bytes(), T)
    body = json.loads(reply.body)
    assert body["id"] == "chatcmpl-msg_014p7gG3wDgGV9EUtLvnow3U"
    assert body["model"] == "claude-sonnet-4-5-20250929"
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    msg = choice["message"]
    assert msg["content"] == "Okay, let's check the weather for San Francisco, CA:"
    assert msg["reasoning_content"] == "The user wants..."
    call0 = msg["tool_calls"][0]
    assert call0["id"] == "toolu_01T1x1fJ34qAmk2tNTrN7Up6" and call0["function"]["name"] == "get_weather"
    assert json.loads(call0["function"]["arguments"]) == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    assert body["usage"] == {
        "prompt_tokens": 1496, "completion_tokens": 89, "total_tokens": 1585,
        "prompt_tokens_details": {"cached_tokens": 1024, "cache_write_tokens": 0},
    }  # fmt: skip


def test_json_mode_tool_input_becomes_content():
    msg = {"id": "m", "model": "c", "stop_reason": "tool_use", "usage": {"input_tokens": 1, "output_tokens": 2},
           "content": [{"type": "tool_use", "id": "t", "name": anthropic.JSON_TOOL, "input": {"a": 1}}]}  # fmt: skip
    choice = json.loads(anthropic.decode_response(json.dumps(msg).encode(), T).body)["choices"][0]
    assert choice["finish_reason"] == "stop" and json.loads(choice["message"]["content"]) == {"a": 1}
    assert "tool_calls" not in choice["message"]


RECORDED = [
    "stream_text_tool",
    "stream_thinking",
    "stream_parallel_no_args",
    "stream_json_mode",
    "sdk_basic_response",
    "sdk_tool_use_response",
    "sdk_refusal_response",
    "sdk_incomplete_partial_json_response",
    "sdk_message_delta_fields_response",
]


@pytest.mark.parametrize("name", RECORDED)
@pytest.mark.parametrize("seed", range(6))
def test_recorded_streams_become_exact_openai_chunks(name, seed):
    got = replay(anthropic.StreamDecoder(T), (DIR / f"{name}.sse").read_bytes(), seed, model="claude-sonnet-4-5")
    assert got == expected(DIR / f"{name}.expected.jsonl")


@pytest.mark.parametrize("seed", range(3))
def test_error_event_mid_stream_is_an_overloaded_failure(seed):
    with pytest.raises(UpstreamError) as exc:
        replay(anthropic.StreamDecoder(T), (DIR / "stream_overloaded.sse").read_bytes(), seed, model="m")
    assert exc.value.failure_class is FailureClass.OVERLOADED and exc.value.may_fail_over
    assert "Overloaded" in exc.value.message


def test_stream_without_message_stop_is_truncated():
    data = (DIR / "stream_text_tool.sse").read_bytes().split(b"event: message_stop")[0]
    with pytest.raises(UpstreamError, match="truncated"):
        replay(anthropic.StreamDecoder(T), data, 0, model="m")


@pytest.mark.parametrize(
    ("status", "etype", "message", "cls"),
    [
        (529, "overloaded_error", "Overloaded", FailureClass.OVERLOADED),
        (429, "rate_limit_error", "slow down", FailureClass.RATE_LIMIT),
        (400, "invalid_request_error", "max_tokens: Field required", FailureClass.CALLER_FAULT),
        (
            400,
            "invalid_request_error",
            "prompt is too long: 210000 tokens > 200000 maximum",
            FailureClass.CONTEXT_LENGTH,
        ),
        (401, "authentication_error", "invalid x-api-key", FailureClass.CREDENTIAL),
        (402, "billing_error", "credit balance too low", FailureClass.QUOTA),
        (500, "api_error", "Internal server error", FailureClass.TRANSIENT),
    ],
)
def test_errors_are_classified(status, etype, message, cls):
    body = json.dumps({"type": "error", "error": {"type": etype, "message": message}, "request_id": "req_1"}).encode()
    err = anthropic.decode_error(status, {"retry-after": "2"}, body, T)
    assert err.failure_class is cls
    assert err.upstream_type == etype
    if cls is FailureClass.CALLER_FAULT:
        assert err.http_status() == 400 and message in err.message


def test_rate_limit_headers():
    info = anthropic.rate_limits({
        "anthropic-ratelimit-requests-limit": "50", "anthropic-ratelimit-requests-remaining": "49",
        "anthropic-ratelimit-requests-reset": "2999-01-01T00:00:00Z",
        "anthropic-ratelimit-tokens-limit": "30000", "anthropic-ratelimit-tokens-remaining": "29000",
        "anthropic-ratelimit-tokens-reset": "2000-01-01T00:00:00Z",
    })  # fmt: skip
    assert info.remaining_requests == 49 and info.reset_requests_s > 1e9
    assert info.remaining_tokens == 29000 and info.reset_tokens_s == 0
    assert anthropic.rate_limits({}) is None


def test_decoder_ignores_unknown_events():
    dec = anthropic.StreamDecoder(T)
    assert dec.feed("future_event", msgspec.json.encode({"type": "future_event", "x": 1})) == []


TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}


def with_model(model: str) -> Target:
    return msgspec.structs.replace(T, model=model)


def test_reasoning_effort_is_adaptive_thinking_on_current_models():
    _, body = call(with_model("claude-opus-4-7"), reasoning_effort="minimal")
    assert body["thinking"] == {"type": "adaptive"} and body["output_config"] == {"effort": "low"}
    assert body["max_tokens"] == 128000


def test_reasoning_effort_is_refused_for_models_that_cannot_think():
    with pytest.raises(InvalidRequest) as exc:
        call(with_model("claude-3-5-haiku-20241022"), reasoning_effort="low")
    assert exc.value.param == "reasoning_effort"


def test_reasoning_effort_none_sends_no_thinking():
    _, body = call(reasoning_effort="none")
    assert "thinking" not in body and "output_config" not in body


def test_json_mode_with_tools_lets_the_model_call_a_tool_or_answer_json():
    _, body = call(tools=TOOLS, response_format={"type": "json_object"})
    assert [t["name"] for t in body["tools"]] == ["f", anthropic.JSON_TOOL]
    assert body["tool_choice"] == {"type": "any"}
    _, body = call(tools=TOOLS, tool_choice="none", response_format={"type": "json_object"})
    assert body["tool_choice"] == {"type": "tool", "name": anthropic.JSON_TOOL}
    _, body = call(tools=TOOLS, tool_choice="required", response_format={"type": "json_object"})
    assert body["tool_choice"] == {"type": "any"} and [t["name"] for t in body["tools"]] == ["f"]


def test_json_schema_with_thinking_uses_native_structured_output():
    _, body = call(response_format=JSON_SCHEMA, reasoning_effort="low", max_tokens=5000)
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": {"type": "object"}}}
    assert "tools" not in body and body["thinking"]["type"] == "enabled"
    with pytest.raises(InvalidRequest) as exc:
        call(response_format={"type": "json_object"}, reasoning_effort="low", max_tokens=5000)
    assert exc.value.param == "response_format"


def test_json_schema_whose_top_level_is_not_an_object_is_refused():
    rf = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "array"}}}
    with pytest.raises(InvalidRequest) as exc:
        call(response_format=rf)
    assert exc.value.param == "response_format"


def test_parallel_tool_calls_false_never_decorates_tool_choice_none():
    _, body = call(tools=TOOLS, tool_choice="none", parallel_tool_calls=False)
    assert body["tool_choice"] == {"type": "none"}
    _, body = call(tools=TOOLS, parallel_tool_calls=False)
    assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


def test_forced_tool_choice_with_thinking_is_refused():
    with pytest.raises(InvalidRequest) as exc:
        call(tools=TOOLS, tool_choice="required", reasoning_effort="low", max_tokens=5000)
    assert exc.value.param == "reasoning_effort"


def test_native_extras_merge_over_translated_fields():
    _, body = call(reasoning_effort="high", output_config={"effort": "max"})
    assert body["output_config"] == {"effort": "max"}  # T is Sonnet 4.5: budget thinking
    assert body["thinking"]["type"] == "enabled"


def test_anthropic_beta_header_from_the_target_is_sent():
    t = msgspec.structs.replace(T, headers={"anthropic-beta": "context-1m-2025-08-07"})
    c, _ = call(t)
    assert c.headers["anthropic-beta"] == "context-1m-2025-08-07"


@pytest.mark.parametrize(
    ("model", "cap"),
    [
        ("claude-sonnet-4-6", 128000),
        ("claude-opus-4-1-20250805", 32000),
        ("claude-3-5-haiku-latest", 8192),
        ("mystery", 4096),
    ],
)
def test_default_max_tokens_is_the_models_documented_output_cap(model, cap):
    assert anthropic.max_output(with_model(model)) == cap
    assert anthropic.max_output(msgspec.structs.replace(with_model(model), max_output_tokens=77)) == 77


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("pause_turn", "stop"), ("max_tokens", "length"),
     ("model_context_window_exceeded", "length"), ("refusal", "content_filter"), ("brand_new", "stop")],
)  # fmt: skip
def test_stop_reasons_map_to_finish_reasons(stop_reason, finish):
    msg = {"id": "m", "model": "c", "stop_reason": stop_reason, "content": [{"type": "text", "text": "x"}],
           "usage": {"input_tokens": 1, "output_tokens": 1}}  # fmt: skip
    assert (
        json.loads(anthropic.decode_response(json.dumps(msg).encode(), T).body)["choices"][0]["finish_reason"] == finish
    )


def test_thinking_tokens_become_reasoning_tokens():
    msg = {"id": "m", "model": "c", "stop_reason": "end_turn", "content": [],
           "usage": {"input_tokens": 3, "output_tokens": 10, "output_tokens_details": {"thinking_tokens": 4}}}  # fmt: skip
    body = json.loads(anthropic.decode_response(json.dumps(msg).encode(), T).body)
    assert body["usage"]["completion_tokens_details"] == {"reasoning_tokens": 4}
    assert body["choices"][0]["message"]["content"] is None


@pytest.mark.parametrize(("etype", "cls"), [("overloaded_error", FailureClass.OVERLOADED), ("api_error", FailureClass.TRANSIENT),
                                            ("rate_limit_error", FailureClass.RATE_LIMIT)])  # fmt: skip
def test_error_event_types_decide_the_failure_class(etype, cls):
    dec = anthropic.StreamDecoder(T)
    with pytest.raises(UpstreamError) as exc:
        dec.feed("error", json.dumps({"type": "error", "error": {"type": etype, "message": "x"}}).encode())
    assert exc.value.failure_class is cls and not dec.complete


def test_thinking_is_not_requested_in_a_tool_loop_without_its_signed_block():
    loop = [*USER, {"role": "assistant", "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "t1", "content": "ok"}]  # fmt: skip
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    c, body = call(messages=loop, tools=tools, reasoning_effort="low", max_tokens=5000)
    assert "thinking" not in body and any("tool loop" in n for n in c.notes)
    _, body = call(messages=[*loop, {"role": "assistant", "content": "done"}, {"role": "user", "content": "next"}],
                   tools=tools, reasoning_effort="low", max_tokens=5000)  # fmt: skip
    assert "thinking" in body
