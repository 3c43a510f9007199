"""A canonical answer (an OpenAI `chat.completion`) as a Messages API `Message` (API
reference "Messages": the Message object; SDK `types/message.py`, `usage.py`)."""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

from aiogw.ids import alnum_id
from aiogw.types import ChatCompletion, CompletionUsage

# Canonical finish reason -> stop_reason. `stop` may also have been a stop sequence: Chat
# Completions does not say which, so it is end_turn (stop_sequence null) after translation.
STOP_REASON = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

_decode_completion = msgspec.json.Decoder(ChatCompletion).decode


def message_id() -> str:
    return "msg_" + alnum_id(24)


def usage_json(u: CompletionUsage | None) -> dict[str, int]:
    """Anthropic's input_tokens excludes cache reads and writes; OpenAI's prompt_tokens has them."""
    if u is None:
        return {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    d = u.prompt_tokens_details
    read = d.cached_tokens or 0 if d else 0
    written = d.cache_write_tokens or 0 if d else 0
    return {
        "input_tokens": max(0, u.prompt_tokens - read - written),
        "output_tokens": u.completion_tokens,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": read,
    }


def _tool_input(arguments: str) -> Any:
    try:
        value = orjson.loads(arguments) if arguments.strip() else {}
    except orjson.JSONDecodeError:
        return {"_raw_arguments": arguments}  # the model wrote no JSON: kept, visibly
    return value if isinstance(value, dict) else {"_value": value}


def message_body(completion: bytes) -> bytes:
    c = _decode_completion(completion)
    choice = c.choices[0]
    m = choice.message
    content: list[dict[str, Any]] = []
    # reasoning_content is unsigned: never a thinking block (clients replay those to Anthropic)
    text = m.content or m.refusal
    if text:
        content.append({"type": "text", "text": text})
    for call in m.tool_calls or ():
        content.append(
            {
                "type": "tool_use",
                "id": call.id,
                "name": call.function.name,
                "input": _tool_input(call.function.arguments),
            }
        )
    finish = choice.finish_reason or "stop"
    if finish == "stop" and m.tool_calls:
        finish = "tool_calls"
    usage = c.usage if isinstance(c.usage, CompletionUsage) else None
    return orjson.dumps(
        {
            "id": message_id(),
            "type": "message",
            "role": "assistant",
            "model": c.model,
            "content": content,
            "stop_reason": STOP_REASON.get(finish, "end_turn"),
            "stop_sequence": None,
            "usage": usage_json(usage),
        }
    )
