"""Messages requests -> the canonical request: every field of the API reference's "Create a
Message" that a translation carries, and the 400s for bodies that are not Messages requests."""

from __future__ import annotations

import json

import pytest

from aiogw.errors import InvalidRequest
from aiogw.ingress.messages.decode import parse_count, parse_messages
from aiogw.ingress.messages.errors import error_body, error_event
from aiogw.types import (
    AssistantMessage,
    FilePart,
    ImagePart,
    NamedToolChoice,
    SystemMessage,
    TextPart,
    ToolMessage,
    UserMessage,
)

ASK = [{"role": "user", "content": "hi"}]


def parse(**body):
    raw = json.dumps({"model": "m", "max_tokens": 100, "messages": ASK, **body}).encode()
    parsed, notes = parse_messages(raw, {"anthropic-beta": "x-1", "anthropic-version": "2023-06-01", "other": "no"})
    return parsed, notes


def test_sampling_stop_user_and_stream():
    p, _ = parse(temperature=0.5, top_k=5, stop_sequences=["END", "STOP"], metadata={"user_id": "u1"}, stream=True)
    r = p.req
    assert (r.temperature, r.top_k, r.stop, r.user, r.max_tokens, r.is_stream) == (
        0.5,
        5,
        ["END", "STOP"],
        "u1",
        100,
        True,
    )
    assert p.native is not None and p.native.api == "anthropic.messages"
    assert p.native.headers == {"anthropic-beta": "x-1", "anthropic-version": "2023-06-01"}
    assert json.loads(p.native.body)["stop_sequences"] == ["END", "STOP"]  # the body as sent
    assert set(p.raw) >= {"model", "messages", "max_tokens", "stop", "user"}  # canonical fields only
    assert "stop_sequences" not in p.raw and "metadata" not in p.raw


def test_system_as_string_or_blocks():
    p, _ = parse(system="Be brief.")
    assert p.req.messages[0] == SystemMessage(content="Be brief.")
    p, _ = parse(
        system=[{"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "B"}]
    )
    assert p.req.messages[0] == SystemMessage(content=[TextPart(text="A"), TextPart(text="B")])


@pytest.mark.parametrize(
    "choice,expected,parallel",
    [
        ({"type": "auto"}, "auto", None),
        ({"type": "any"}, "required", None),
        ({"type": "none"}, "none", None),
        ({"type": "auto", "disable_parallel_tool_use": True}, "auto", False),
        ({"type": "tool", "name": "f", "disable_parallel_tool_use": True}, "named", False),
    ],
)
def test_tool_choice(choice, expected, parallel):
    tools = [{"name": "f", "description": "d", "input_schema": {"type": "object"}},
             {"type": "web_search_20250305", "name": "web_search", "max_uses": 2}]  # fmt: skip
    p, notes = parse(tools=tools, tool_choice=choice)
    assert [t.function.name for t in p.req.tools] == ["f"] and p.req.tools[0].function.description == "d"
    assert notes == ["server tool 'web_search' (web_search_20250305) exists only at Anthropic"]
    tc = p.req.tool_choice
    assert (isinstance(tc, NamedToolChoice) and tc.function.name == "f") if expected == "named" else tc == expected
    assert (p.req.parallel_tool_calls if parallel is not None else None) == parallel


@pytest.mark.parametrize(
    "thinking,output_config,effort",
    [
        ({"type": "enabled", "budget_tokens": 1024}, None, "low"),
        ({"type": "enabled", "budget_tokens": 8192}, None, "medium"),
        ({"type": "enabled", "budget_tokens": 31999}, None, "high"),
        ({"type": "adaptive"}, {"effort": "max"}, "xhigh"),
        ({"type": "adaptive"}, None, "medium"),
        ({"type": "disabled"}, None, None),
    ],
)
def test_thinking_becomes_reasoning_effort(thinking, output_config, effort):
    extra = {"output_config": output_config} if output_config else {}
    p, _ = parse(max_tokens=40000, thinking=thinking, **extra)
    assert (p.req.reasoning_effort if isinstance(p.req.reasoning_effort, str) else None) == effort


def test_tool_loop_keeps_ids_drops_thinking_and_orders_results_first():
    msgs = [
        {"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA"}},
                                     {"type": "document", "title": "a.pdf",
                                      "source": {"type": "base64", "media_type": "application/pdf", "data": "BBB"}},
                                     {"type": "text", "text": "look"}]},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "secret", "signature": "s"},
                                          {"type": "redacted_thinking", "data": "r"},
                                          {"type": "text", "text": "Calling."},
                                          {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}]},
        {"role": "user", "content": [{"type": "text", "text": "and?"},
                                     {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": True,
                                      "content": [{"type": "text", "text": "boom"}]}]},
    ]  # fmt: skip
    p, _ = parse(messages=msgs)
    m = p.req.messages
    assert isinstance(m[0], UserMessage) and isinstance(m[0].content[0], ImagePart)
    assert m[0].content[0].image_url.url == "data:image/png;base64,AAA"
    assert isinstance(m[0].content[1], FilePart) and m[0].content[1].file["file_data"].endswith("base64,BBB")
    assert isinstance(m[1], AssistantMessage) and m[1].content == "Calling."
    assert m[1].tool_calls[0].id == "toolu_1" and json.loads(m[1].tool_calls[0].function.arguments) == {"a": 1}
    assert isinstance(m[2], ToolMessage) and m[2].tool_call_id == "toolu_1"  # before the turn's text
    assert m[2].content == [TextPart(text="[tool error]"), TextPart(text="boom")]
    assert m[3] == UserMessage(content=[TextPart(text="and?")])
    assert "secret" not in json.dumps([str(x) for x in m])


@pytest.mark.parametrize(
    "body,param",
    [
        ({"model": "m", "messages": ASK}, "max_tokens"),
        ({"model": "m", "max_tokens": 0, "messages": ASK}, "max_tokens"),
        ({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
        ({"model": "m", "max_tokens": 5, "messages": ASK, "temperature": 1.5}, "temperature"),
        ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "data": "AAA"}}]}]}, "messages[0].content[0].source"),
        ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [3]}]}, "messages[0].content[0]"),
        ({"model": "m", "max_tokens": 5, "messages": ASK, "tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
        ({"model": "m", "max_tokens": 2000, "messages": ASK, "thinking": {"type": "enabled", "budget_tokens": 4000}},
         "thinking.budget_tokens"),
    ],
)  # fmt: skip
def test_invalid_requests_are_400s_naming_the_field(body, param):
    with pytest.raises(InvalidRequest) as exc:
        parse_messages(json.dumps(body).encode(), {})
    assert exc.value.param is not None and exc.value.param.startswith(param)
    rendered = json.loads(error_body(exc.value, "req_1"))
    assert rendered["type"] == "error" and rendered["error"]["type"] == "invalid_request_error"
    assert rendered["request_id"] == "req_1" and param.split("[")[0] in rendered["error"]["message"]


def test_count_tokens_body_needs_no_max_tokens():
    p = parse_count(json.dumps({"model": "m", "messages": ASK, "system": "s"}).encode(), {})
    assert [type(m).__name__ for m in p.req.messages] == ["SystemMessage", "UserMessage"]


def test_error_event_after_the_first_byte():
    ev = error_event(InvalidRequest("bad", code="invalid_value"))
    assert ev.startswith(b"event: error\ndata: ") and ev.endswith(b"\n\n")
    assert json.loads(ev.split(b"data: ", 1)[1]) == {"type": "error", "error": {"type": "invalid_request_error",
                                                                               "message": "invalid_value: bad"}}  # fmt: skip


def test_blocks_only_anthropic_can_fetch_are_left_out_of_a_translation_and_noted():
    msgs = [{"role": "user", "content": [
        {"type": "image", "source": {"type": "file", "file_id": "file_1"}},
        {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}},
        {"type": "text", "text": "summarise"}]}]  # fmt: skip
    p, notes = parse(messages=msgs)
    assert p.req.messages == [UserMessage(content=[TextPart(text="summarise")])]
    assert notes == ["messages[0].content[0]: an image by file_id exists only at Anthropic",
                     "messages[0].content[1]: a document by URL or file_id exists only at Anthropic"]  # fmt: skip
    assert "file_1" in p.native.body.decode()  # an Anthropic target still gets them


def test_block_types_not_translated_are_kept_for_anthropic_and_noted():
    msgs = [
        {"role": "user", "content": "Search the web"},
        {"role": "assistant", "content": [
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "x"}},
            {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
            {"type": "text", "text": "Found it."}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [
            {"type": "tool_reference", "tool_name": "x"}, {"type": "text", "text": "ok"}]}]},
    ]  # fmt: skip
    p, notes = parse(messages=msgs)
    assert p.req.messages[1] == AssistantMessage(content="Found it.")
    assert p.req.messages[2] == ToolMessage(content=[TextPart(text="ok")], tool_call_id="t")
    assert notes == [
        "messages[1].content[0]: a 'server_tool_use' block is not translated",
        "messages[1].content[1]: a 'web_search_tool_result' block is not translated",
        "messages[2].content[0].content[0]: a 'tool_reference' block is not translated",
    ]
    assert b"web_search_tool_result" in p.native.body
