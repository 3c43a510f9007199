"""Mistral, DeepSeek and Qwen: request rules and recorded streams through the real pipeline."""

from __future__ import annotations

import json

import pytest
from adapter_calls import USER, upstream_call
from replay import FIXTURES, expected, replay

from aiogw.adapters import REGISTRY, deepseek, mistral, qwen
from aiogw.adapters._base import Target
from aiogw.errors import FailureClass, InvalidRequest, UpstreamStatusError
from aiogw.types import EmbeddingRequest


def target(kind: str, model: str) -> Target:
    return Target(id=f"{kind}/{model}", provider=kind, type=kind, model=model, base_url="http://x")


def call(kind: str, model: str = "m", **body):
    body.setdefault("model", "client-name")
    return upstream_call(REGISTRY[kind].build_call, target(kind, model), **body)


def fixture_model(data: bytes) -> str:
    return json.loads(next(line for line in data.split(b"\n") if line.startswith(b"data: {"))[6:])["model"]


@pytest.mark.parametrize(
    ("kind", "name", "include_usage"),
    [("mistral", "stream_text_length", True), ("mistral", "stream_tool_calls", True),
     ("mistral", "stream_magistral_thinking", True),
     ("deepseek", "stream_reasoner", True), ("deepseek", "stream_tool_call_cache_hit", True),
     ("deepseek", "stream_insufficient_resource", True),
     ("qwen", "stream_tool_call", True), ("qwen", "stream_thinking_usage", True), ("qwen", "stream_tool_split", False)],
)  # fmt: skip
@pytest.mark.parametrize("seed", range(5))
def test_recorded_streams_become_exact_openai_chunks(kind, name, include_usage, seed):
    data = (FIXTURES / kind / f"{name}.sse").read_bytes()
    model = fixture_model(data)
    got = replay(
        REGISTRY[kind].stream_decoder(target(kind, model)), data, seed, model=model, include_usage=include_usage
    )
    assert got == expected(FIXTURES / kind / f"{name}.expected.jsonl")


@pytest.mark.parametrize("seed", range(3))
def test_mistral_error_finish_fails_the_stream_instead_of_finishing_it(seed):
    data = (FIXTURES / "mistral" / "stream_error_finish.sse").read_bytes()
    with pytest.raises(UpstreamStatusError) as exc:
        replay(REGISTRY["mistral"].stream_decoder(target("mistral", "mistral-small-latest")), data, seed, model="m")
    assert "finish_reason 'error'" in exc.value.message


def test_usage_is_emulated_for_mistral_without_asking_for_it():
    data = (FIXTURES / "mistral" / "stream_text_length.sse").read_bytes()
    got = replay(REGISTRY["mistral"].stream_decoder(target("mistral", "m")), data, 0, model="m", include_usage=False)
    assert got[-1] == "[DONE]" and all(c["choices"] for c in got[:-1])
    _, body = call("mistral", stream=True, stream_options={"include_usage": True})
    assert "stream_options" not in body


def test_mistral_body_is_whitelisted_and_ids_rewritten():
    c, body = call("mistral", seed=7, user="u", max_completion_tokens=50, stream=True, some_extension=1, messages=[
        {"role": "developer", "content": "sys", "name": "x"},
        {"role": "user", "content": "hi", "name": "alice"},
        {"role": "assistant", "content": None, "reasoning_content": "hmm", "tool_calls": [
            {"id": "call_abc123xyz_long", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_abc123xyz_long", "content": "ok"},
        {"role": "assistant", "content": "Partial answer"},
    ])  # fmt: skip
    assert body["random_seed"] == 7 and body["max_tokens"] == 50
    assert not {"seed", "user", "stream_options", "some_extension", "max_completion_tokens"} & set(body)
    msgs = body["messages"]
    assert msgs[0] == {"role": "system", "content": "sys"} and msgs[1] == {"role": "user", "content": "hi"}
    new_id = msgs[2]["tool_calls"][0]["id"]
    assert len(new_id) == 9 and new_id.isalnum() and msgs[3]["tool_call_id"] == new_id
    assert "reasoning_content" not in msgs[2]
    assert msgs[-1]["prefix"] is True
    assert any("some_extension" in n for n in c.notes) and any("'user'" in n for n in c.notes)
    assert mistral.tool_id("D681PevKs") == "D681PevKs"


def test_mistral_reasoning_content_chunks_are_flattened():
    body = {"id": "x", "object": "chat.completion", "created": 1, "model": "magistral-medium-latest",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": [
                {"type": "thinking", "thinking": [{"type": "text", "text": "Let me think."}]},
                {"type": "text", "text": "The answer is 42."}]}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}}  # fmt: skip
    reply = mistral.decode_response(json.dumps(body).encode(), target("mistral", "magistral-medium-latest"))
    msg = json.loads(reply.body)["choices"][0]["message"]
    assert msg["content"] == "The answer is 42." and msg["reasoning_content"] == "Let me think."


def test_deepseek_reasoning_history_and_refusals():
    history = [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1", "reasoning_content": "old thoughts"},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": None, "reasoning_content": "live thoughts", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "r"},
    ]  # fmt: skip
    _, body = call("deepseek", "deepseek-chat", messages=history, seed=3)
    assert "reasoning_content" not in body["messages"][1]
    assert body["messages"][3]["reasoning_content"] == "live thoughts"  # the live tool loop keeps it
    assert "seed" not in body
    for extra, param, model in [({"n": 2}, "n", "deepseek-chat"), ({"logprobs": True}, "logprobs", "deepseek-reasoner"),
                                ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
                                 "response_format", "deepseek-chat")]:  # fmt: skip
        with pytest.raises(InvalidRequest) as exc:
            call("deepseek", model, **extra)
        assert exc.value.param == param


def test_deepseek_blank_lines_and_cache_hits_in_a_unary_reply():
    raw = b"\n\n\n" + json.dumps({
        "id": "x", "object": "chat.completion", "created": 1, "model": "deepseek-chat",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12, "prompt_cache_hit_tokens": 8,
                  "prompt_cache_miss_tokens": 2}}).encode()  # fmt: skip
    reply = deepseek.decode_response(raw, target("deepseek", "deepseek-chat"))
    assert reply.usage.cached_tokens == 8


def test_qwen_thinking_switch_ranges_and_moderation():
    _, body = call("qwen", "qwen-plus")
    assert body["enable_thinking"] is False
    _, body = call("qwen", "qwen-plus", reasoning_effort="low")
    assert body["enable_thinking"] is True and body["thinking_budget"] == 2048 and "reasoning_effort" not in body
    _, body = call("qwen", "qwq-plus")
    assert "enable_thinking" not in body
    for extra, param in [({"temperature": 2}, "temperature"), ({"top_p": 0}, "top_p"),
                         ({"reasoning_effort": "high", "tool_choice": "required",
                           "tools": [{"type": "function", "function": {"name": "f"}}]}, "tool_choice")]:  # fmt: skip
        with pytest.raises(InvalidRequest) as exc:
            call("qwen", "qwen-plus", **extra)
        assert exc.value.param == param
    body = json.dumps(
        {
            "error": {
                "code": "data_inspection_failed",
                "message": "<400> DataInspectionFailed: Input text data may contain inappropriate content.",
                "type": "invalid_request_error",
            }
        }
    ).encode()
    err = qwen.decode_error(400, {}, body, target("qwen", "qwen-plus"))
    assert err.failure_class is FailureClass.CALLER_FAULT and err.http_status() == 400


def test_mistral_rate_limit_headers():
    info = mistral.rate_limits({"x-ratelimit-remaining-req-minute": "5", "x-ratelimit-limit-req-minute": "60",
                                "x-ratelimit-remaining-tokens-minute": "1000"})  # fmt: skip
    assert info.remaining_requests == 5 and info.remaining_tokens == 1000 and info.reset_requests_s == 60


# --- Mistral ------------------------------------------------------------------------------

TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}, "x_vendor": 1}}


def test_mistral_tool_messages_carry_the_function_name_and_nested_extras_are_dropped():
    _, body = call("mistral", tools=[TOOL], tool_choice={"type": "function", "function": {"name": "get_weather"}},
                   response_format={"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}},
                   messages=[
        {"role": "user", "content": [{"type": "text", "text": "hi"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "toolu_01", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "toolu_01", "content": "sunny"},
    ])  # fmt: skip
    assert body["tools"] == [
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["response_format"]["json_schema"] == {"name": "w", "schema": {"type": "object"}}
    assert body["messages"][0]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,AAAA"},
    }
    tool = body["messages"][2]
    assert tool["name"] == "get_weather" and tool["tool_call_id"] == body["messages"][1]["tool_calls"][0]["id"]
    assert "prefix" not in body["messages"][-1]


@pytest.mark.parametrize(
    ("message", "param"),
    [({"role": "function", "name": "f", "content": "x"}, "messages[1]"),
     ({"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}]}, "messages[1]")],
)  # fmt: skip
def test_mistral_refuses_what_its_schema_cannot_carry(message, param):
    with pytest.raises(InvalidRequest) as exc:
        call("mistral", messages=[USER[0], message])
    assert exc.value.param == param


@pytest.mark.parametrize(("extra", "param"), [({"logprobs": True}, "logprobs"), ({"logit_bias": {"1": 2}}, "logit_bias"),
                                              ({"top_k": 5}, "top_k"), ({"top_logprobs": 2}, "top_logprobs")])  # fmt: skip
def test_mistral_refusals_name_the_parameter(extra, param):
    with pytest.raises(InvalidRequest) as exc:
        call("mistral", **extra)
    assert exc.value.param == param and exc.value.status == 400


def test_mistral_passes_n_json_schema_and_required_tool_choice():
    _, body = call("mistral", n=2, tools=[TOOL], tool_choice="required", temperature=0.3, top_p=0.9, stop=["x"])
    assert (body["n"], body["tool_choice"], body["temperature"], body["top_p"], body["stop"]) == (
        2,
        "required",
        0.3,
        0.9,
        ["x"],
    )


def test_mistral_unary_reply_is_normalised():
    raw = json.dumps({"id": "f798", "object": "chat.completion", "created": 1, "model": "mistral-large-latest",
                      "choices": [{"index": 0, "finish_reason": "model_length", "message": {"role": "assistant", "content": None,
                                   "tool_calls": [{"id": "D681PevKs", "type": "function", "index": 0,
                                                   "function": {"name": "f", "arguments": "{}"}}]}}],
                      "usage": {"prompt_tokens": 93, "completion_tokens": 22, "total_tokens": 115, "prompt_audio_seconds": None}}).encode()  # fmt: skip
    reply = mistral.decode_response(raw, target("mistral", "mistral-large-latest"))
    body = json.loads(reply.body)
    assert body["choices"][0]["finish_reason"] == "length"
    assert "index" not in body["choices"][0]["message"]["tool_calls"][0] and "prompt_audio_seconds" not in body["usage"]
    assert reply.usage.prompt_tokens == 93
    failed = raw.replace(b'"model_length"', b'"error"')
    with pytest.raises(UpstreamStatusError) as exc:
        mistral.decode_response(failed, target("mistral", "m"))
    assert exc.value.failure_class is FailureClass.TRANSIENT


@pytest.mark.parametrize(
    ("status", "body", "text", "cls"),
    [(422, {"object": "error", "message": {"detail": [{"type": "extra_forbidden", "loc": ["body", "messages", 0, "user", "name"],
                                                       "msg": "Extra inputs are not permitted", "input": "alice"}]},
            "type": "invalid_request_error", "param": None, "code": None},
      "messages.0.user.name: Extra inputs are not permitted", FailureClass.CALLER_FAULT),
     (422, {"detail": [{"loc": ["body", "top_p"], "msg": "Input should be less than or equal to 1", "type": "less_than_equal"}]},
      "top_p: Input should be less than or equal to 1", FailureClass.CALLER_FAULT),
     (400, {"object": "Error", "detail": [{"loc": ["body", "n"], "msg": "bad n"}], "message": [], "type": "invalid_request_error",
            "code": 3001}, "n: bad n", FailureClass.CALLER_FAULT),
     (400, {"object": "error", "message": "Prompt contains 40000 tokens, too large for model with 32768 maximum context length",
            "type": "invalid_request_error", "param": None, "code": None}, "too large", FailureClass.CONTEXT_LENGTH),
     (429, {"object": "error", "message": "Requests rate limit exceeded", "type": "rate_limited", "param": None, "code": "1300"},
      "429", FailureClass.RATE_LIMIT),
     (503, {"object": "error", "message": "Service unavailable", "type": "internal_server_error"}, "503", FailureClass.OVERLOADED)],
)  # fmt: skip
def test_mistral_error_bodies(status, body, text, cls):
    err = mistral.decode_error(status, {}, json.dumps(body).encode(), target("mistral", "m"))
    assert text in err.message and err.failure_class is cls
    if cls is FailureClass.CALLER_FAULT:
        assert err.http_status() in (400, 422)


def embed(model: str, **kw):
    c = mistral.build_embeddings_call(EmbeddingRequest(model="x", input=["a"], **kw), target("mistral", model))
    return json.loads(c.body)


def test_mistral_embeddings_dimensions_only_where_the_model_takes_them():
    assert embed("codestral-embed", dimensions=256) == {
        "model": "codestral-embed",
        "input": ["a"],
        "output_dimension": 256,
    }
    assert embed("mistral-embed", dimensions=1024) == {"model": "mistral-embed", "input": ["a"]}
    with pytest.raises(InvalidRequest) as exc:
        embed("mistral-embed", dimensions=256)
    assert exc.value.param == "dimensions"
    with pytest.raises(InvalidRequest) as exc:
        mistral.build_embeddings_call(EmbeddingRequest(model="x", input=[1, 2]), target("mistral", "mistral-embed"))
    assert exc.value.param == "input"
    assert embed("mistral-embed", encoding_format="base64", user="u") == {
        "model": "mistral-embed",
        "input": ["a"],
        "encoding_format": "base64",
    }


# --- DeepSeek ----------------------------------------------------------------------------


def test_deepseek_reasoning_effort_switches_thinking_mode():
    _, body = call("deepseek", "deepseek-chat", reasoning_effort="none")
    assert body["thinking"] == {"type": "disabled"} and "reasoning_effort" not in body
    _, body = call("deepseek", "deepseek-chat", reasoning_effort="high")
    assert body["thinking"] == {"type": "enabled"} and body["reasoning_effort"] == "high"
    _, body = call("deepseek", "deepseek-chat", reasoning_effort="low", thinking={"type": "disabled"})
    assert body["thinking"] == {"type": "disabled"}  # the client's own switch wins
    with pytest.raises(InvalidRequest) as exc:
        call("deepseek", "deepseek-reasoner", reasoning_effort="none")
    assert exc.value.param == "reasoning_effort"


def test_deepseek_thinking_mode_drops_ignored_sampling_params_with_a_note():
    c, body = call(
        "deepseek", "deepseek-reasoner", temperature=0.2, top_p=0.5, presence_penalty=1, frequency_penalty=1, stop=["x"]
    )
    assert not {"temperature", "top_p", "presence_penalty", "frequency_penalty"} & set(body) and body["stop"] == ["x"]
    assert any("ignored in thinking mode" in n for n in c.notes)
    _, body = call("deepseek", "deepseek-chat", temperature=0.2, logprobs=True, top_logprobs=2)
    assert (body["temperature"], body["logprobs"], body["top_logprobs"]) == (0.2, True, 2)  # not thinking: all honoured
    with pytest.raises(InvalidRequest) as exc:
        call("deepseek", "deepseek-v4-flash", top_logprobs=3)  # newer models think by default
    assert exc.value.param == "top_logprobs"


def test_deepseek_refuses_top_k_and_drops_openai_only_fields():
    with pytest.raises(InvalidRequest) as exc:
        call("deepseek", "deepseek-chat", top_k=3)
    assert exc.value.param == "top_k"
    c, body = call("deepseek", "deepseek-chat", store=True, metadata={"a": "b"}, service_tier="auto", user="u1",
                   max_completion_tokens=9)  # fmt: skip
    assert not {"store", "metadata", "service_tier", "max_completion_tokens"} & set(body)
    assert body["user"] == "u1" and body["max_tokens"] == 9 and any("'metadata'" in n for n in c.notes)
    with pytest.raises(InvalidRequest) as exc:
        call("deepseek", "deepseek-chat", modalities=["text", "audio"], audio={"voice": "alloy", "format": "wav"})
    assert exc.value.param in ("audio", "modalities")


def test_deepseek_unary_reply_maps_cut_generation_and_cache_hits():
    raw = b"\n\n" + json.dumps({"id": "x", "object": "chat.completion", "created": 1, "model": "deepseek-chat",
                                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Once"},
                                             "finish_reason": "insufficient_system_resource", "logprobs": None}],
                                "usage": {"prompt_tokens": 200, "completion_tokens": 1, "total_tokens": 201,
                                          "prompt_cache_hit_tokens": 192, "prompt_cache_miss_tokens": 8}}).encode()  # fmt: skip
    reply = deepseek.decode_response(raw, target("deepseek", "deepseek-chat"))
    body = json.loads(reply.body)
    assert reply.body.startswith(b"{") and body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": 200, "completion_tokens": 1, "total_tokens": 201,
                             "prompt_tokens_details": {"cached_tokens": 192}}  # fmt: skip
    assert reply.usage.cached_tokens == 192


@pytest.mark.parametrize(
    ("status", "message", "cls", "client_status"),
    [(402, "Insufficient Balance", FailureClass.QUOTA, 502), (422, "Invalid Parameters", FailureClass.CALLER_FAULT, 422),
     (503, "Server overloaded", FailureClass.OVERLOADED, 503), (429, "Rate limit reached", FailureClass.RATE_LIMIT, 429),
     (401, "Authentication Fails", FailureClass.CREDENTIAL, 502)],
)  # fmt: skip
def test_deepseek_error_statuses(status, message, cls, client_status):
    body = json.dumps(
        {"error": {"message": message, "type": "x", "param": None, "code": "invalid_request_error"}}
    ).encode()
    err = REGISTRY["deepseek"].decode_error(status, {}, body, target("deepseek", "deepseek-chat"))
    assert err.failure_class is cls and err.http_status() == client_status


# --- Qwen --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "cls", "code"),
    [(400, {"error": {"code": "Arrearage", "param": None, "type": "Arrearage",
                      "message": "Access denied, please make sure your account is in good standing."}}, FailureClass.QUOTA, None),
     (429, {"error": {"code": "Throttling.AllocationQuota", "message": "Free allocated quota exceeded.", "type": "x"}},
      FailureClass.QUOTA, None),
     (429, {"error": {"code": "Throttling.RateQuota", "message": "Requests rate limit exceeded", "type": "x"}},
      FailureClass.RATE_LIMIT, None),
     (400, {"code": "DataInspectionFailed", "message": "Input data may contain inappropriate content.", "request_id": "r"},
      FailureClass.CALLER_FAULT, "content_filter"),
     (400, {"error": {"code": "invalid_parameter_error", "message": "<400> InternalError.Algo.InvalidParameter: Range of "
                      "input length should be [1, 129024]", "type": "invalid_request_error"}}, FailureClass.CONTEXT_LENGTH,
      "context_length_exceeded"),
     (400, {"code": "InvalidParameter", "message": "temperature out of range", "request_id": "r"}, FailureClass.CALLER_FAULT,
      None),
     (401, {"error": {"code": "invalid_api_key", "message": "Incorrect API key provided.", "type": "x"}},
      FailureClass.CREDENTIAL, None)],
)  # fmt: skip
def test_qwen_error_codes_decide_the_failure_class(status, body, cls, code):
    err = qwen.decode_error(status, {}, json.dumps(body).encode(), target("qwen", "qwen-plus"))
    assert err.failure_class is cls
    if code:
        assert err.to_dict()["error"]["code"] == code
    if cls is FailureClass.CALLER_FAULT:
        assert body.get("message", body.get("error", {}).get("message")) in err.message


def test_qwen_keeps_its_own_fields_and_drops_openai_only_ones():
    c, body = call(
        "qwen", "qwen-plus", top_k=20, seed=3, n=2, store=True, enable_search=True, modalities=["text", "audio"]
    )
    assert (body["top_k"], body["seed"], body["n"], body["enable_search"]) == (20, 3, 2, True)
    assert body["modalities"] == ["text", "audio"] and "store" not in body and c.notes
    _, body = call("qwen", "qwq-plus", reasoning_effort="medium")
    assert body["enable_thinking"] is True and body["thinking_budget"] == 8192
    with pytest.raises(InvalidRequest) as exc:
        call("qwen", "qwq-plus", reasoning_effort="none")
    assert exc.value.param == "reasoning_effort"
    with pytest.raises(InvalidRequest) as exc:
        call("qwen", "qwq-plus", tools=[TOOL], tool_choice="required")
    assert exc.value.param == "tool_choice"
