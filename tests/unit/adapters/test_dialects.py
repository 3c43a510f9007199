"""Mistral, DeepSeek and Qwen: request rules and recorded streams through the real pipeline."""

from __future__ import annotations

import json

import pytest
from replay import FIXTURES, expected, replay

from aiogw.adapters import REGISTRY, deepseek, mistral, qwen
from aiogw.adapters._base import Target
from aiogw.errors import FailureClass, InvalidRequest
from aiogw.server.handlers import parse_chat


def target(kind: str, model: str) -> Target:
    return Target(id=f"{kind}/{model}", provider=kind, type=kind, model=model, base_url="http://x")


USER = [{"role": "user", "content": "hi"}]


def call(kind: str, model: str = "m", **body):
    body.setdefault("model", "client-name")
    body.setdefault("messages", USER)
    c = REGISTRY[kind].build_call(parse_chat(json.dumps(body).encode()), target(kind, model))
    return c, json.loads(c.body)


@pytest.mark.parametrize(
    ("kind", "name"),
    [("mistral", "stream_text_length"), ("mistral", "stream_tool_calls"),
     ("deepseek", "stream_reasoner"), ("qwen", "stream_tool_call")],
)  # fmt: skip
@pytest.mark.parametrize("seed", range(5))
def test_recorded_streams_become_exact_openai_chunks(kind, name, seed):
    data = (FIXTURES / kind / f"{name}.sse").read_bytes()
    model = json.loads(next(line for line in data.split(b"\n") if line.startswith(b"data: {"))[6:])["model"]
    got = replay(REGISTRY[kind].stream_decoder(target(kind, model)), data, seed, model=model)
    assert got == expected(FIXTURES / kind / f"{name}.expected.jsonl")


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
    body = json.dumps({"error": {"code": "data_inspection_failed", "message": "<400> DataInspectionFailed: Input text data may contain inappropriate content.", "type": "invalid_request_error"}}).encode()
    err = qwen.decode_error(400, {}, body, target("qwen", "qwen-plus"))
    assert err.failure_class is FailureClass.CALLER_FAULT and err.http_status() == 400


def test_mistral_rate_limit_headers():
    info = mistral.rate_limits({"x-ratelimit-remaining-req-minute": "5", "x-ratelimit-limit-req-minute": "60",
                                "x-ratelimit-remaining-tokens-minute": "1000"})  # fmt: skip
    assert info.remaining_requests == 5 and info.remaining_tokens == 1000 and info.reset_requests_s == 60
