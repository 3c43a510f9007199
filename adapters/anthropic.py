"""Anthropic Messages API (`POST {base}/v1/messages`) as an upstream.

Spec: platform.claude.com API reference and the official SDK's types
(anthropics/anthropic-sdk-python, src/anthropic/types); our summary is docs/providers.md §4.
OpenAI's chat turns become Anthropic's alternating user/assistant messages with a top-level
`system`; tool calls become `tool_use` blocks and tool results `tool_result` blocks in a
user turn.

JSON mode (`response_format` json_object / json_schema) uses the forced-tool technique: a
tool named `json_response` whose `input_schema` is the requested schema, forced with
`tool_choice`, and whose input comes back as the message *content* with finish_reason
`stop`. It works on every Claude model and with any schema, whereas native structured
output (`output_config.format`) is documented only for Claude 4.5+ models and demands
`additionalProperties: false` everywhere. The exception is a request that also asks for
thinking: Anthropic refuses forced tool use with thinking, so json_schema then goes native
and json_object (which has no schema to give) is refused.

reasoning_effort: models with adaptive thinking (Claude 4.6 and later) get
`thinking: {"type": "adaptive"}` plus `output_config.effort` (minimal -> low, xhigh ->
xhigh); older thinking models get `thinking: {"type": "enabled", "budget_tokens": B}` from
THINKING_BUDGET (kept below max_tokens, as the API requires); `none` sends no thinking
field (the model's default); models without thinking refuse the parameter.

This module turns a request into Anthropic's; what comes back (the message, errors,
rate-limit headers, stream events) is read in `anthropic_reply`.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from aiogw.adapters import _base as base
from aiogw.adapters.anthropic_native import (
    MESSAGES_API,
    build_count_tokens,
    decode_count_tokens,
    decode_native,
    native_call,
)
from aiogw.adapters.anthropic_reply import JSON_TOOL, StreamDecoder, decode_error, decode_response, rate_limits
from aiogw.types import (
    AssistantMessage,
    ChatRequest,
    DeveloperMessage,
    FilePart,
    FunctionCall,
    FunctionMessage,
    ImagePart,
    NamedToolChoice,
    ParsedChat,
    SystemMessage,
    TextPart,
    ToolMessage,
    UserMessage,
)

NAME = "anthropic"
API_VERSION = "2023-06-01"

# The output cap Anthropic requires, when neither the client nor the config gives one: the
# model's documented maximum output, so "no cap" keeps meaning "as long as the model
# allows" (longest prefix wins; platform.claude.com/docs/en/models/<model>/overview).
MAX_OUTPUT: dict[str, int] = {
    "claude-fable-5": 128_000,
    "claude-opus-5": 128_000,
    "claude-sonnet-5": 128_000,
    "claude-opus-4-8": 128_000,
    "claude-opus-4-7": 128_000,
    "claude-opus-4-6": 128_000,
    "claude-sonnet-4-6": 128_000,
    "claude-opus-4-5": 64_000,
    "claude-opus-4-1": 32_000,
    "claude-opus-4": 32_000,
    "claude-sonnet-4": 64_000,  # 4 and 4.5
    "claude-haiku-4-5": 64_000,
    "claude-3-7-sonnet": 64_000,
    "claude-3-5-sonnet": 8_192,
    "claude-3-5-haiku": 8_192,
    "claude-3-haiku": 4_096,
    "claude-3-opus": 4_096,
}
FALLBACK_MAX_OUTPUT = 4_096  # an unknown model: the smallest cap any Claude model accepts

# Models with adaptive thinking, where `budget_tokens` is deprecated or refused (Opus 4.7,
# Fable and Mythos accept only adaptive): platform.claude.com "Adaptive thinking".
ADAPTIVE_THINKING = ("claude-opus-4-6", "claude-sonnet-4-6", "claude-opus-4-7", "claude-opus-4-8",
                     "claude-opus-5", "claude-sonnet-5", "claude-fable", "claude-mythos")  # fmt: skip
# Models that cannot think at all (extended thinking starts with Claude 3.7 Sonnet).
NO_THINKING = ("claude-3-5", "claude-3-haiku", "claude-3-opus", "claude-3-sonnet", "claude-2", "claude-instant")

# reasoning_effort -> extended-thinking budget (budget_tokens >= 1024 and < max_tokens) ...
THINKING_BUDGET: dict[str, int] = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576, "xhigh": 32768}
# ... or -> `output_config.effort` for adaptive thinking (SDK OutputConfigParam.effort).
EFFORT: dict[str, str] = {"minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "xhigh"}

IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
TOOL_CHOICE = {"auto": "auto", "required": "any", "none": "none"}
# Request fields of Anthropic's own that a client may send as extras (forwarded as given).
NATIVE_EXTRAS = ("thinking", "metadata", "service_tier", "output_config", "context_management")

PARAMS = base.ParamMap(
    reject={
        "n": "one completion per request",
        "presence_penalty": "no penalty parameters",
        "frequency_penalty": "no penalty parameters",
        "logit_bias": "no token biasing",
        "logprobs": "no log probabilities",
        "top_logprobs": "no log probabilities",
    },
    drop={"seed": "no seed; OpenAI defines it as a best-effort hint"},
    translated=frozenset(
        {
            "temperature",  # 0-1 only: above 1 is refused, never clamped
            "top_p",  # with temperature on current models: dropped if 1, else refused
            "top_k",
            "max_tokens",
            "max_completion_tokens",
            "stop",
            "user",
            "tools",
            "tool_choice",
            "parallel_tool_calls",
            "response_format",
            "reasoning_effort",
        }
    ),
)

_encode = msgspec.json.Encoder().encode
_TOOL_ID = re.compile(r"[^a-zA-Z0-9_-]")


def _tool_id(openai_id: str) -> str:
    """Anthropic ids match ^[a-zA-Z0-9_-]+$; ids minted elsewhere are rewritten the same way
    wherever they appear, so a tool_use and its tool_result still pair up."""
    return _TOOL_ID.sub("_", openai_id) or "call"


def max_output(target: base.Target) -> int:
    if target.max_output_tokens:
        return target.max_output_tokens
    model = target.model.lower()
    best = max((p for p in MAX_OUTPUT if model.startswith(p)), key=len, default=None)
    return MAX_OUTPUT[best] if best else FALLBACK_MAX_OUTPUT


# --- request ------------------------------------------------------------------------------


_bad = base.invalid_value


def _image_block(part: ImagePart, where: str) -> dict[str, Any]:
    url = part.image_url.url
    data = base.parse_data_url(url)
    if data is None:
        if not url.startswith(("http://", "https://")):
            raise _bad("An image URL must be http(s) or a base64 data URL.", f"{where}.image_url.url")
        return {"type": "image", "source": {"type": "url", "url": url}}
    mime, b64 = data
    if mime not in IMAGE_TYPES:
        raise _bad(
            f"Anthropic accepts images of type {', '.join(sorted(IMAGE_TYPES))}, not {mime}.",
            f"{where}.image_url.url",
        )
    return {"type": "image", "source": {"type": "base64", "media_type": mime, "data": b64}}


def _blocks(content: str | list[Any] | None, where: str) -> list[dict[str, Any]]:
    """OpenAI content -> Anthropic content blocks (empty text is left out: the API refuses it)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    out: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        if isinstance(part, TextPart):
            if part.text:
                out.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart):
            out.append(_image_block(part, f"{where}[{i}]"))
        elif isinstance(part, FilePart):
            data = part.file.get("file_data")
            parsed = base.parse_data_url(data) if isinstance(data, str) else None
            if parsed is None or parsed[0] != "application/pdf":
                raise _bad("Anthropic accepts files only as PDF data URLs.", f"{where}[{i}].file")
            out.append(
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": parsed[1]}}
            )
        else:
            kind = type(part).__struct_config__.tag
            raise _bad(f"Anthropic cannot take content parts of type '{kind}'.", f"{where}[{i}].type")
    return out


def convert_messages(req: ChatRequest) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system blocks, messages): roles alternate, tool results lead their user turn."""
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []

    def turn(role: str) -> list[dict[str, Any]]:
        if not messages or messages[-1]["role"] != role:
            messages.append({"role": role, "content": []})
        content: list[dict[str, Any]] = messages[-1]["content"]
        return content

    for k, m in enumerate(req.messages):
        where = f"messages[{k}]"
        if isinstance(m, SystemMessage | DeveloperMessage):
            system.extend(_blocks(m.content, f"{where}.content"))
        elif isinstance(m, UserMessage):
            turn("user").extend(_blocks(m.content, f"{where}.content"))
        elif isinstance(m, AssistantMessage):
            blocks = _blocks(m.content, f"{where}.content")
            for i, call in enumerate(m.tool_calls or ()):
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": _tool_id(call.id),
                        "name": call.function.name,
                        "input": base.tool_call_arguments(call, f"{where}.tool_calls[{i}]"),
                    }
                )
            if isinstance(m.function_call, FunctionCall):
                raise _bad("Legacy function_call messages are not supported; use tool_calls.", f"{where}.function_call")
            turn("assistant").extend(blocks)
        elif isinstance(m, ToolMessage):
            content = turn("user")
            result = {"type": "tool_result", "tool_use_id": _tool_id(m.tool_call_id),
                      "content": _blocks(m.content, f"{where}.content") or ""}  # fmt: skip
            # Results of one parallel call go first in their user turn, together.
            n_results = sum(1 for b in content if b.get("type") == "tool_result")
            content.insert(n_results, result)
        elif isinstance(m, FunctionMessage):
            raise _bad("Legacy function messages are not supported; use tool messages.", f"{where}.role")
    for msg in messages:
        if not msg["content"]:
            msg["content"] = [{"type": "text", "text": "."}] if msg["role"] == "user" else []
    messages = [m for m in messages if m["content"]]
    if not messages:
        raise _bad("At least one user or assistant message with content is required.", "messages")
    return system, messages


def _model_has(target: base.Target, prefixes: tuple[str, ...]) -> bool:
    return target.model.lower().startswith(prefixes)


def _tool_choice(req: ChatRequest) -> dict[str, Any] | None:
    tc = req.tool_choice
    if isinstance(tc, NamedToolChoice):
        return {"type": "tool", "name": tc.function.name}
    return {"type": TOOL_CHOICE[tc]} if isinstance(tc, str) else None


def _tools(req: ChatRequest, body: dict[str, Any], thinking: bool) -> None:
    """tools, tool_choice, parallel_tool_calls and JSON mode (see the module docstring)."""
    tools = [
        {"name": t.function.name, "input_schema": t.function.parameters or {"type": "object", "properties": {}}}
        | ({"description": t.function.description} if t.function.description else {})
        for t in (req.tools or ())
    ]
    choice = _tool_choice(req)
    rf = req.response_format
    if rf and rf.type in ("json_object", "json_schema"):
        schema: dict[str, Any] = {"type": "object"}
        if rf.type == "json_schema" and rf.json_schema and rf.json_schema.schema:
            schema = rf.json_schema.schema
        if thinking:
            if rf.type == "json_object":
                raise _bad(
                    "With reasoning_effort, Anthropic needs a schema for JSON output; send "
                    "response_format json_schema, or drop reasoning_effort.",
                    "response_format",
                )
            body["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
        elif choice is None or choice["type"] in ("auto", "none"):
            # A required or named tool choice already fixes the answer's form; otherwise the
            # answer is the JSON tool's input, or (tools offered and allowed) a tool call.
            if schema.get("type", "object") != "object":
                raise _bad("Anthropic needs a JSON schema whose top level is an object.", "response_format")
            offer_tools = bool(tools) and (choice is None or choice["type"] == "auto")
            choice = {"type": "any"} if offer_tools else {"type": "tool", "name": JSON_TOOL}
            tools.append(
                {
                    "name": JSON_TOOL,
                    "description": "Respond with the answer as this tool's input.",
                    "input_schema": schema,
                }
            )
    if req.parallel_tool_calls is False and tools and (choice or {}).get("type") != "none":
        # `none` takes no options; a choice left unset means auto (docs/providers.md §1.2).
        choice = (choice or {"type": "auto"}) | {"disable_parallel_tool_use": True}
    if not tools and _has_tool_blocks(body["messages"]):
        # Anthropic wants `tools` whenever the history holds tool blocks; OpenAI does not.
        # A tool that may not be called keeps the history valid and the answer unchanged.
        tools = [{"name": "no_tools_available", "input_schema": {"type": "object", "properties": {}}}]
        choice = {"type": "none"}
    if tools:
        body["tools"] = tools
        if choice is not None:
            body["tool_choice"] = choice


def _has_tool_blocks(messages: list[dict[str, Any]]) -> bool:
    return any(b.get("type") in ("tool_use", "tool_result") for m in messages for b in m["content"])


def _sampling(req: ChatRequest, body: dict[str, Any]) -> None:
    t, p = req.temperature, req.top_p
    if isinstance(t, float | int):
        if t > 1:
            raise _bad(f"temperature {t:g} is outside Anthropic's range 0-1; send a value from 0 to 1.", "temperature")
        body["temperature"] = t
    if isinstance(p, float | int):
        if isinstance(t, float | int):
            if p != 1:  # current Claude models refuse the pair; top_p 1 asks for nothing
                raise _bad("Anthropic models take temperature or top_p, not both; send only one.", "top_p")
        else:
            body["top_p"] = p
    if isinstance(req.top_k, int):
        body["top_k"] = req.top_k
    stop = req.stop
    if stop:
        seqs = [stop] if isinstance(stop, str) else list(stop)
        if any(not s.strip() for s in seqs):
            raise _bad("Anthropic refuses stop sequences that are only whitespace.", "stop")
        body["stop_sequences"] = seqs


def _thinking(req: ChatRequest, target: base.Target, max_tokens: int) -> dict[str, Any] | None:
    """reasoning_effort -> Anthropic's thinking settings (`thinking`, maybe `output_config`)."""
    effort = req.reasoning_effort
    if not isinstance(effort, str) or effort == "none":
        return None
    if effort not in THINKING_BUDGET:
        raise _bad(
            f"Unknown reasoning_effort {effort!r}; use one of none, {', '.join(THINKING_BUDGET)}.", "reasoning_effort"
        )
    if _model_has(target, NO_THINKING):
        raise _bad(f"{target.model} cannot reason (no extended thinking); remove reasoning_effort.", "reasoning_effort")
    if _model_has(target, ADAPTIVE_THINKING):
        return {"thinking": {"type": "adaptive"}, "output_config": {"effort": EFFORT[effort]}}
    budget = min(THINKING_BUDGET[effort], max_tokens - 1)
    if budget < 1024:
        raise _bad("Extended thinking needs max_tokens above 1024.", "reasoning_effort")
    return {"thinking": {"type": "enabled", "budget_tokens": budget}}


def _continues_tool_loop(req: ChatRequest) -> bool:
    last = next((m for m in reversed(req.messages) if not isinstance(m, ToolMessage)), None)
    return isinstance(last, AssistantMessage) and bool(last.tool_calls)


def build_call(p: ParsedChat, target: base.Target) -> base.Call:
    req = p.req
    notes = PARAMS.check(req, NAME)
    system, messages = convert_messages(req)
    max_tokens = req.output_cap or max_output(target)
    body: dict[str, Any] = {"model": target.model, "max_tokens": max_tokens, "messages": messages}
    if system:
        body["system"] = system
    thinking = _thinking(req, target, max_tokens)
    if thinking is not None and _continues_tool_loop(req):
        # Anthropic wants the loop's signed thinking block first in the last assistant turn;
        # OpenAI clients cannot send it back, so this turn of the loop is answered without.
        thinking = None
        notes += ("reasoning_effort not applied: a tool loop continues without its signed thinking block",)
    _tools(req, body, thinking is not None)
    _sampling(req, body)
    if thinking is not None:
        # Anthropic refuses thinking with sampling changes and with forced tool use.
        if "temperature" in body or "top_k" in body:
            raise _bad(
                "Anthropic does not allow temperature or top_k with thinking (reasoning_effort).", "reasoning_effort"
            )
        if body.get("tool_choice", {}).get("type") in ("any", "tool"):
            raise _bad(
                "Anthropic does not allow a required or named tool_choice with thinking (reasoning_effort).",
                "reasoning_effort",
            )
        body["thinking"] = thinking["thinking"]
        if "output_config" in thinking:
            body["output_config"] = body.get("output_config", {}) | thinking["output_config"]
    if isinstance(req.user, str) and req.user:
        body["metadata"] = {"user_id": req.user}
    for key in NATIVE_EXTRAS:
        if key in p.raw:  # the caller's own Anthropic fields win over translated ones
            native = msgspec.json.decode(p.raw[key])
            merge = isinstance(native, dict) and isinstance(body.get(key), dict)
            body[key] = body[key] | native if merge else native
    if req.is_stream:
        body["stream"] = True
    headers = {"content-type": "application/json", "anthropic-version": API_VERSION, **target.headers}
    if target.api_key is not None:
        headers["x-api-key"] = target.api_key.reveal()
    return base.Call(url=f"{target.base_url}/v1/messages", headers=headers, body=_encode(body), notes=notes)


ADAPTER = base.Adapter(
    name=NAME,
    default_base_url="https://api.anthropic.com",
    build_call=build_call,
    default_output_cap=max_output,
    decode_response=decode_response,
    decode_error=decode_error,
    stream_decoder=StreamDecoder,
    params=PARAMS,
    rate_limits=rate_limits,
    # Anthropic's docs put a Claude token at about 3.5 English characters (4 / 3.5 = 1.14),
    # and its count includes the Messages API's framing of each turn: kept modest, learned after.
    token_ratio=1.15,
    native_api=MESSAGES_API,
    build_native_call=native_call,
    decode_native=decode_native,
    native_content_events=frozenset({"content_block_delta", "ping"}),
    build_count_tokens=build_count_tokens,
    decode_count_tokens=decode_count_tokens,
)
