"""The Responses ingress's parts without a server: request decoding into the canonical chat
request, and the stream encoder's events validated one by one against the official SDK's
types (pydantic, strict about required fields) and accumulated by its stream state."""

from __future__ import annotations

import json

import msgspec
import orjson
import pytest
from openai import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from aiogw.errors import GatewayError, InvalidRequest, UpstreamProtocolError
from aiogw.ingress.responses.answer import echo, from_completion, skeleton
from aiogw.ingress.responses.decode import decode_request, input_messages, to_chat
from aiogw.ingress.responses.stream import ResponsesStream
from aiogw.types import AssistantMessage, CompletionUsage, Delta, SystemMessage, ToolMessage, UserMessage

EVENT = TypeAdapter(ResponseStreamEvent)


def chat_of(body: dict, history: list | None = None):
    req = decode_request(orjson.dumps({"model": "m", **body}))
    return to_chat(req, history or [], input_messages(req))[0]


def test_items_become_chat_messages():
    parsed = chat_of({
        "instructions": "Be brief.",
        "input": [
            {"role": "user", "content": "Weather?"},  # EasyInputMessage: no type
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Think."}]},
            {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "t", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "Sunny"},
            {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "Noon"}]},
            {"type": "reasoning", "id": "rs_2", "summary": [], "encrypted_content": "opaque"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Sunny at noon.",
                                                                   "annotations": []}]},
            {"role": "user", "content": [{"type": "input_text", "text": "Look:"},
                                         {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"}]},
        ],
        "tools": [{"type": "function", "name": "w", "parameters": {"type": "object"}, "strict": True}],
        "tool_choice": {"type": "function", "name": "w"},
        "text": {"format": {"type": "json_schema", "name": "s", "schema": {"type": "object"}, "strict": True}},
        "reasoning": {"effort": "low"}, "max_output_tokens": 100, "temperature": 0.5, "parallel_tool_calls": False,
        "metadata": {"a": "b"}, "store": True,
    })  # fmt: skip
    req = parsed.req
    m = req.messages
    assert isinstance(m[0], SystemMessage) and m[0].content == "Be brief."
    assert isinstance(m[1], UserMessage) and m[1].content == "Weather?"
    # Both calls in one assistant turn, carrying the reasoning (never as text).
    assert isinstance(m[2], AssistantMessage) and [c.id for c in m[2].tool_calls] == ["c1", "c2"]
    assert m[2].reasoning_content == "Think." and m[2].content is None
    assert isinstance(m[3], ToolMessage) and (m[3].tool_call_id, m[3].content) == ("c1", "Sunny")
    assert m[4].content[0].text == "Noon"
    # Encrypted reasoning is OpenAI's alone: dropped, the next turn carries none.
    assert isinstance(m[5], AssistantMessage) and m[5].content == "Sunny at noon."
    assert m[5].reasoning_content is msgspec.UNSET
    assert b"opaque" not in bytes(parsed.raw["messages"])
    assert m[6].content[1].image_url.url == "https://x/y.png" and m[6].content[1].image_url.detail == "low"
    assert req.tools[0].function.name == "w" and req.tools[0].function.strict is True
    assert req.tool_choice.function.name == "w"
    assert req.response_format.json_schema.name == "s"
    assert (req.reasoning_effort, req.max_completion_tokens, req.temperature) == ("low", 100, 0.5)
    assert req.parallel_tool_calls is False
    assert "metadata" not in parsed.raw and "store" not in parsed.raw  # Responses' own: not sent upstream


def test_encrypted_reasoning_is_dropped():
    parsed = chat_of({"input": [
        {"role": "user", "content": "Hi"},
        {"type": "reasoning", "id": "rs_2", "summary": [], "encrypted_content": "opaque"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Again"},
    ]})  # fmt: skip
    assert parsed.req.messages[1].reasoning_content is msgspec.UNSET


def test_a_continuation_is_instructions_history_then_input():
    history = [{"role": "user", "content": "First"}, {"role": "assistant", "content": "One."}]
    parsed = chat_of({"instructions": "Now.", "input": "Second"}, history)
    got = [(type(m).__name__, m.content) for m in parsed.req.messages]
    assert got == [("SystemMessage", "Now."), ("UserMessage", "First"), ("AssistantMessage", "One."),
                   ("UserMessage", "Second")]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]}, "input[0].content[0].image_url"),
        ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
        ({"input": "x", "background": True}, "background"),
        ({"input": "x", "max_output_tokens": 1}, "max_output_tokens"),
    ],
)  # fmt: skip
def test_bad_requests_name_the_param(body, param):
    with pytest.raises(InvalidRequest) as err:
        chat_of(body)
    assert err.value.param == param, err.value.message


def settings(**body):
    return echo(decode_request(orjson.dumps({"model": "m", "input": "x", **body})))


def run(deltas: list[Delta], fail: GatewayError | None = None, tools=()):
    """The encoder's bytes, each event validated by the SDK's types and accumulated by its state."""
    resp = skeleton("resp_1", 1, "m", settings(tools=list(tools)))
    enc = ResponsesStream(resp, prompt_estimate=7)
    raw = enc.feed(deltas[:2]) + enc.feed(deltas[2:])
    raw += enc.failed_events(fail) if fail is not None else enc.close()
    state = ResponseStreamState(input_tools=list(tools), text_format=omit)
    events = []
    for block in raw.decode().split("\n\n")[:-1]:
        name, data = block.split("\n")
        assert name.startswith("event: ") and data.startswith("data: ")
        payload = json.loads(data[6:])
        assert payload["type"] == name[7:]
        ev = EVENT.validate_python(payload)
        state.handle_event(ev)
        events.append(ev)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    return events, state, enc


def test_stream_of_reasoning_text_and_two_tools():
    tools = [{"type": "function", "name": n, "parameters": {"type": "object"}} for n in ("w", "t")]
    events, state, enc = run([
        Delta(reasoning="Thinking "), Delta(reasoning="hard."),
        Delta(content="Let me "), Delta(content="check."),
        Delta.tool_start(0, "c1", "w"), Delta.tool_args_fragment(0, '{"city":'), Delta.tool_args_fragment(0, '"Paris"}'),
        Delta.tool_start(1, "c2", "t"), Delta.tool_args_fragment(1, "{}"),
        Delta(finish_reason="stop"),
        Delta(usage=CompletionUsage(prompt_tokens=5, completion_tokens=9, total_tokens=14)),
    ], tools=tools)  # fmt: skip
    final = state._completed_response
    assert final is not None and final.status == "completed"
    assert [o.type for o in final.output] == ["reasoning", "message", "function_call", "function_call"]
    assert final.output[0].summary[0].text == "Thinking hard."
    assert final.output_text == "Let me check."
    assert [(o.call_id, o.name, o.arguments) for o in final.output[2:]] == [
        ("c1", "w", '{"city":"Paris"}'),
        ("c2", "t", "{}"),
    ]
    assert final.usage.input_tokens == 5 and final.usage.output_tokens == 9
    assert enc.finish_reasons == {0: "tool_calls"}
    Response.model_validate(events[-1].response.model_dump())
    assert events[-1].type == "response.completed"


def test_stream_without_usage_estimates_it():
    _events, state, enc = run([Delta(content="Hi there"), Delta(finish_reason="length")])
    final = state._completed_response
    assert final is None  # incomplete: the SDK finishes only on response.completed
    assert enc.usage.estimated is True and enc.usage.prompt_tokens == 7


def test_late_failure_is_error_then_failed():
    events, _state, _enc = run([Delta(content="Hi "), Delta(content="there")],
                               fail=UpstreamProtocolError("stream cut", target="t"))  # fmt: skip
    assert [e.type for e in events[-2:]] == ["error", "response.failed"]
    assert events[-1].response.status == "failed" and events[-1].response.error.message
    assert events[-1].response.id == events[0].response.id == "resp_1"


def test_response_object_is_a_valid_sdk_response():
    body = orjson.dumps({"id": "x", "object": "chat.completion", "created": 1, "model": "up", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hi", "reasoning_content": "R",
                                 "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
         "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7,
                  "prompt_tokens_details": {"cached_tokens": 2}, "completion_tokens_details": {"reasoning_tokens": 1}}})  # fmt: skip
    resp = from_completion(skeleton("resp_1", 1, "m", settings()), body)
    r = Response.model_validate(resp)
    assert [o.type for o in r.output] == ["reasoning", "message", "function_call"]
    assert r.model == "up" and r.output[2].call_id == "c" and r.output[2].id.startswith("fc_")
    assert (r.usage.input_tokens_details.cached_tokens, r.usage.output_tokens_details.reasoning_tokens) == (2, 1)


@pytest.mark.parametrize(("value", "fragment"), [({"ttl_s": 0}, "responses.ttl_s"), ({"store": "yes"}, "responses.store"),
                                                 ({"stor": True}, "responses")])  # fmt: skip
def test_a_bad_responses_config_is_a_config_error(value, fragment):
    from aiogw.config_load import from_builtins
    from aiogw.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        from_builtins({"responses": value}, env={})
    assert fragment in str(err.value)


def test_responses_config_defaults():
    from aiogw.config import Config

    assert (Config().responses.store, Config().responses.ttl_s) == (False, 86400.0)


def test_passed_through_events_keep_their_framing():
    """An upstream event whose JSON spans several `data:` lines reaches the client framed."""
    from aiogw.ingress.responses.native import PassthroughEvents
    from aiogw.streaming.sse import SSEParser

    resp = {"id": "resp_u", "object": "response", "status": "completed", "output": [],
            "usage": {"input_tokens": 2, "output_tokens": 3, "total_tokens": 5}}  # fmt: skip
    upstream = (
        b'event: response.created\ndata: {"type":"response.created",\ndata: "sequence_number":0,"response":{}}\n\n'
        b"event: response.completed\ndata: " + orjson.dumps({"type": "response.completed", "sequence_number": 1,
                                                              "response": resp}) + b"\n\n"
    )  # fmt: skip
    relay, parser = PassthroughEvents("t"), SSEParser()
    out = relay.feed(parser.feed(upstream)) + relay.finish()
    again = SSEParser().feed(out)
    assert [json.loads(e.data)["sequence_number"] for e in again] == [0, 1]
    assert relay.usage.completion_tokens == 3 and relay.finish_reasons() == ["stop"] and relay.final["id"] == "resp_u"


def test_error_params_are_renamed_to_the_clients_fields():
    from aiogw.ingress.params import renamed

    responses = {"messages": "input", "max_tokens": "max_output_tokens", "reasoning_effort": "reasoning.effort"}
    assert renamed("messages[2].content", responses, {}) == "input[2].content"
    assert renamed("reasoning_effort", responses, {}) == "reasoning.effort"
    assert renamed("tools[1].function.parameters", responses, {}) == "tools[1].parameters"
    assert renamed("tools[1].function", responses, {}) == "tools[1]"
    assert renamed("temperature", responses, {}) == "temperature"  # the same name in both
    assert renamed("input[0].content[0].text", responses, {}) == "input[0].content[0].text"  # already its own
    assert renamed(None, responses, {}) is None
    messages = {"stop": "stop_sequences", "reasoning_effort": "thinking"}
    assert renamed("tools[0].function.parameters", messages, {"parameters": "input_schema"}) == "tools[0].input_schema"
    assert renamed("stop", messages, {}) == "stop_sequences"
