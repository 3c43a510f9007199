"""Providers whose tool calls carry an object (Anthropic `input`, Gemini `args`) read an
assistant's OpenAI `arguments` string the same way: one parser, one refusal."""

from __future__ import annotations

import pytest
from adapter_calls import USER, upstream_call

from aiogw.adapters import anthropic, gemini
from aiogw.adapters._base import Target
from aiogw.errors import InvalidRequest

ADAPTERS = {
    "anthropic": (anthropic, lambda body: body["messages"][1]["content"][0]["input"]),
    "gemini": (gemini, lambda body: body["contents"][1]["parts"][0]["functionCall"]["args"]),
}


def with_call(arguments: str) -> list[dict]:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": arguments}}
    return [
        *USER,
        {"role": "assistant", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
    ]


def build(kind: str, arguments: str):
    module, _ = ADAPTERS[kind]
    target = Target(id=f"{kind}/m", provider=kind, type=kind, model="m", base_url="http://x")
    return upstream_call(module.build_call, target, messages=with_call(arguments))


@pytest.mark.parametrize("kind", sorted(ADAPTERS))
@pytest.mark.parametrize(("arguments", "sent"), [('{"city": "Paris"}', {"city": "Paris"}), ("", {}), ("  ", {})])
def test_arguments_become_the_providers_object(kind, arguments, sent):
    _, body = build(kind, arguments)
    assert ADAPTERS[kind][1](body) == sent


@pytest.mark.parametrize("kind", sorted(ADAPTERS))
@pytest.mark.parametrize(
    ("arguments", "why"), [("{oops", "valid JSON"), ("[1, 2]", "a JSON object"), ('"x"', "a JSON object")]
)
def test_arguments_that_are_no_object_are_refused_naming_the_field(kind, arguments, why):
    with pytest.raises(InvalidRequest) as exc:
        build(kind, arguments)
    assert exc.value.param == "messages[1].tool_calls[0].function.arguments"
    assert exc.value.code == "invalid_value" and why in str(exc.value)
