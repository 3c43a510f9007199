"""A Responses request -> the canonical chat request (`ParsedChat`): `instructions` as the
system message, input items as chat messages (consecutive `function_call` items as one
assistant turn's `tool_calls`, `function_call_output` as tool messages, a `reasoning`
item's summary carried as the next assistant turn's `reasoning_content` for the adapters
that can use it, never as text), function tools, `text.format` as `response_format`,
`reasoning.effort` as `reasoning_effort`, `max_output_tokens` as `max_completion_tokens`."""

from __future__ import annotations

import re
from typing import Any

import msgspec
import orjson

from aiogw.errors import InvalidRequest
from aiogw.ingress.chat import decoded, parse_chat
from aiogw.ingress.responses.wire import (
    ITEM_TYPES,
    ContentPart,
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionTool,
    InputFile,
    InputImage,
    InputText,
    MessageItem,
    NamedFunction,
    OutputText,
    ReasoningConfig,
    ReasoningItem,
    Refusal,
    ResponsesRequest,
    SummaryText,
)
from aiogw.types import ParsedChat

_decode = msgspec.json.Decoder(ResponsesRequest).decode
_AT = re.compile(r"^(.*?) - at `\$\.?(.*)`$", re.DOTALL)

Message = dict[str, Any]


def decode_request(body: bytes) -> ResponsesRequest:
    req = decoded(_decode, body)
    if req.background:
        raise InvalidRequest(
            "Background responses are not supported by this gateway; send background: false (or leave it out).",
            code="unsupported_parameter",
            param="background",
        )
    return req


def _convert(value: Any, kind: type, where: str) -> Any:
    """`value` as `kind`, a mismatch a 400 naming `where` and the path inside it."""
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError as exc:
        m = _AT.match(str(exc))
        what, path = (m.group(1), m.group(2)) if m else (str(exc), "")
        param = f"{where}.{path}" if path else where
        if what.startswith("Object missing required field"):
            field = what.split("`")[1]
            param = f"{param}.{field}"
            raise InvalidRequest(f"Missing required parameter: '{param}'.", code="missing_required_parameter",
                                 param=param) from None  # fmt: skip
        raise InvalidRequest(f"Invalid value for '{param}': {what}.", param=param) from None


def _unsupported(what: str, param: str) -> InvalidRequest:
    return InvalidRequest(what, code="unsupported_value", param=param)


def _user_part(part: ContentPart, param: str) -> dict[str, Any]:
    if isinstance(part, (InputText, OutputText)):
        return {"type": "text", "text": part.text}
    if isinstance(part, InputImage):
        if not part.image_url:
            raise _unsupported("This gateway keeps no files: send the image as image_url (a URL or a data: URL).",
                               f"{param}.image_url")  # fmt: skip
        image: dict[str, Any] = {"url": part.image_url}
        if isinstance(part.detail, str):
            image["detail"] = part.detail
        return {"type": "image_url", "image_url": image}
    if isinstance(part, InputFile):
        file = {k: v for k in ("file_data", "file_id", "filename") if (v := getattr(part, k)) is not None}
        if part.file_url is not None or not file:
            raise _unsupported("Send the file as file_data (base64); file_url is not supported here.", param)
        return {"type": "file", "file": file}
    raise _unsupported(f"A {part.__struct_config__.tag} part belongs in an assistant message.", f"{param}.type")


def _text_of(content: str | list[ContentPart], param: str) -> tuple[str, str | None]:
    """An assistant's or instruction's content as (text, refusal)."""
    if isinstance(content, str):
        return content, None
    text, refusal = [], []
    for j, part in enumerate(content):
        if isinstance(part, (InputText, OutputText)):
            text.append(part.text)
        elif isinstance(part, Refusal):
            refusal.append(part.refusal)
        else:
            raise _unsupported("Only text parts are allowed in this message.", f"{param}[{j}].type")
    return "".join(text), "".join(refusal) if refusal else None


def input_messages(req: ResponsesRequest) -> list[Message]:
    """The request's `input` as chat messages (no instructions)."""
    if isinstance(req.input, str):
        return [{"role": "user", "content": req.input}]
    if not isinstance(req.input, list):
        return []
    out: list[Message] = []
    reasoning: str | None = None  # a reasoning item's text, for the next assistant turn
    for i, raw in enumerate(req.input):
        where = f"input[{i}]"
        kind = raw.get("type", "message" if "role" in raw else None)
        item_type = ITEM_TYPES.get(kind) if isinstance(kind, str) else None
        if item_type is None:
            raise _unsupported(
                f"Input items of type {kind!r} are not supported here; use message, function_call, "
                "function_call_output or reasoning items.",
                f"{where}.type",
            )
        item = _convert(raw, item_type, where)
        if isinstance(item, MessageItem):
            if item.role == "assistant":
                text, refusal = _text_of(item.content, f"{where}.content")
                msg: Message = {"role": "assistant", "content": text}
                if refusal is not None:
                    msg["refusal"] = refusal
                if reasoning is not None:
                    msg["reasoning_content"], reasoning = reasoning, None
                out.append(msg)
            elif item.role in ("system", "developer"):
                out.append({"role": item.role, "content": _text_of(item.content, f"{where}.content")[0]})
            elif isinstance(item.content, str):
                out.append({"role": "user", "content": item.content})
            else:
                parts = [_user_part(p, f"{where}.content[{j}]") for j, p in enumerate(item.content)]
                out.append({"role": "user", "content": parts})
        elif isinstance(item, FunctionCallItem):
            call = {
                "id": item.call_id,
                "type": "function",
                "function": {"name": item.name, "arguments": item.arguments},
            }
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant" and reasoning is None:
                last.setdefault("tool_calls", []).append(call)  # one turn's calls: one message
            else:
                msg = {"role": "assistant", "content": None, "tool_calls": [call]}
                if reasoning is not None:
                    msg["reasoning_content"], reasoning = reasoning, None
                out.append(msg)
        elif isinstance(item, FunctionCallOutputItem):
            if isinstance(item.output, str):
                content: Any = item.output
            else:
                content = [{"type": "text", "text": _text_of([p], f"{where}.output")[0]} for p in item.output]
            out.append({"role": "tool", "tool_call_id": item.call_id, "content": content})
        elif isinstance(item, ReasoningItem):
            # Only readable reasoning travels (as reasoning_content: adapters decide whether
            # their provider takes it back); encrypted content is OpenAI's alone: dropped.
            said: list[SummaryText] = item.summary or item.content or []
            if said:
                text = "\n\n".join(p.text for p in said)
                reasoning = text if reasoning is None else f"{reasoning}\n\n{text}"
    return out


def _tools(req: ResponsesRequest) -> tuple[list[dict[str, Any]], InvalidRequest | None]:
    """The function tools as chat tools; the first built-in tool (web_search, file_search...)
    as the refusal of every target that does not speak the Responses API itself."""
    tools = []
    native_only = None
    for i, raw in enumerate(req.tools or ()):
        kind = raw.get("type")
        if kind != "function":
            native_only = native_only or InvalidRequest(
                f"The tool type {kind!r} (tools[{i}]) is served only by targets that speak the Responses API "
                "(openai accounts); this model's targets are translated, where only function tools exist "
                "(define it as a function your code runs).",
                code="unsupported_tool",
                param=f"tools[{i}].type",
            )
            continue
        t = _convert(raw, FunctionTool, f"tools[{i}]")
        fn: dict[str, Any] = {"name": t.name}
        if t.description is not None:
            fn["description"] = t.description
        if t.parameters is not None:
            fn["parameters"] = t.parameters
        if t.strict is not None:
            fn["strict"] = t.strict
        tools.append({"type": "function", "function": fn})
    return tools, native_only


def _tool_choice(req: ResponsesRequest) -> tuple[Any, InvalidRequest | None]:
    tc = req.tool_choice
    if isinstance(tc, str):
        return tc, None
    assert isinstance(tc, NamedFunction)  # (only called when set)
    if tc.type == "function" and isinstance(tc.name, str):
        return {"type": "function", "function": {"name": tc.name}}, None
    return "auto", InvalidRequest(
        f"tool_choice of type {tc.type!r} is served only by targets that speak the Responses API; on "
        'translated targets use none, auto, required or {"type": "function", "name": ...}.',
        code="unsupported_tool",
        param="tool_choice",
    )


def _response_format(req: ResponsesRequest) -> dict[str, Any] | None:
    text = req.text
    if text is None or isinstance(text, msgspec.UnsetType) or isinstance(text.format, msgspec.UnsetType):
        return None
    f = text.format
    if f.type != "json_schema":
        return {"type": f.type}
    if not isinstance(f.name, str):
        raise InvalidRequest("Missing required parameter: 'text.format.name'.", code="missing_required_parameter",
                             param="text.format.name")  # fmt: skip
    if not isinstance(f.schema, dict):
        raise InvalidRequest("Missing required parameter: 'text.format.schema'.", code="missing_required_parameter",
                             param="text.format.schema")  # fmt: skip
    schema: dict[str, Any] = {"name": f.name, "schema": f.schema}
    if isinstance(f.description, str):
        schema["description"] = f.description
    if isinstance(f.strict, bool):
        schema["strict"] = f.strict
    return {"type": "json_schema", "json_schema": schema}


def to_chat(
    req: ResponsesRequest, history: list[Message], new: list[Message]
) -> tuple[ParsedChat, InvalidRequest | None]:
    """The canonical chat request: instructions, then the stored history (a continuation),
    then this request's input; and why a translated target cannot serve it (None: any can)."""
    messages: list[Message] = []
    if req.instructions:
        messages.append({"role": "system", "content": req.instructions})
    messages += history
    messages += new
    if not new:
        raise InvalidRequest("Missing required parameter: 'input'.", code="missing_required_parameter", param="input")
    body: dict[str, Any] = {"model": req.model, "messages": messages}
    tools, native_only = _tools(req)
    if tools:
        body["tools"] = tools
        if isinstance(req.parallel_tool_calls, bool):
            body["parallel_tool_calls"] = req.parallel_tool_calls
    if not isinstance(req.tool_choice, msgspec.UnsetType):
        body["tool_choice"], choice_refused = _tool_choice(req)
        native_only = native_only or choice_refused
    if (rf := _response_format(req)) is not None:
        body["response_format"] = rf
    if isinstance(req.reasoning, ReasoningConfig) and req.reasoning.effort is not None:
        body["reasoning_effort"] = req.reasoning.effort
    if isinstance(req.max_output_tokens, int):
        body["max_completion_tokens"] = req.max_output_tokens
    for name in ("temperature", "top_p", "user"):
        v = getattr(req, name)
        if v is not None and not isinstance(v, msgspec.UnsetType):
            body[name] = v
    if req.stream is True:
        body["stream"] = True
    return parse_chat(orjson.dumps(body)), native_only
