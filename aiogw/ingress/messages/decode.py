"""A Messages request -> the gateway's canonical request (`ParsedChat`), keeping the body as
the client sent it (`ParsedChat.native`) for targets that speak Messages themselves.

What a translation keeps and drops, and why:
- tool ids go through unchanged (`tool_use.id` -> the tool call's id, `tool_use_id` -> the
  tool message's `tool_call_id`), so a tool loop pairs up across turns;
- `thinking` and `redacted_thinking` blocks of earlier turns are dropped: they are signed
  for Anthropic, meaningless elsewhere, and never turned into visible text;
- a `tool_result` block becomes a tool message before the rest of its user turn (the order
  Chat Completions requires); `is_error` has no field there and is marked in the text;
- server tools (a versioned `type`, no `input_schema`), images by `file_id` and documents by
  URL or `file_id` exist only at Anthropic: left out of a translation (noted), passed
  through to Anthropic targets;
- `thinking` -> `reasoning_effort` (enabled: by budget; adaptive: `output_config.effort`).
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET

from aiogw.errors import InvalidRequest
from aiogw.ingress.chat import decoded, invalid_body
from aiogw.ingress.messages import wire
from aiogw.types import (
    MESSAGES_API,
    AssistantMessage,
    ChatRequest,
    ContentPart,
    FilePart,
    FunctionCall,
    FunctionDef,
    ImagePart,
    ImageURL,
    Message,
    NamedFunction,
    NamedToolChoice,
    NativeBody,
    ParsedChat,
    SystemMessage,
    TextPart,
    Tool,
    ToolCall,
    ToolMessage,
    UserMessage,
)

FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta")

_decode_request = msgspec.json.Decoder(wire.MessagesRequest).decode
_decode_count = msgspec.json.Decoder(wire.CountTokensRequest).decode
_decode_raw = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
_encode = msgspec.json.Encoder().encode

# thinking.budget_tokens -> reasoning_effort: the largest effort whose budget it reaches
# (the Anthropic adapter's own table runs the other way: low 2048, medium 8192, high 24576).
_EFFORT_BY_BUDGET = ((24576, "high"), (8192, "medium"), (0, "low"))
_EFFORT = {"low": "low", "medium": "medium", "high": "high", "xhigh": "xhigh", "max": "xhigh"}


def _bad(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, code="invalid_value", param=param)


class _Kind(msgspec.Struct):
    type: str


_decode_kind = msgspec.json.Decoder(_Kind).decode
_DECODERS = {kind: msgspec.json.Decoder(t).decode for kind, t in wire.BLOCKS.items()}


def _invalid_at(exc: msgspec.MsgspecError, where: str) -> InvalidRequest:
    """A block's decoding error as a 400 naming the field from the body's top."""
    err = invalid_body(exc)
    param = f"{where}.{err.param}" if err.param else where
    message = err.message.replace(f"'{err.param}'", f"'{param}'") if err.param else f"{err.message} (at {where})"
    return InvalidRequest(message, code=err.code, param=param)


def _blocks(raws: list[msgspec.Raw], where: str, known: dict[str, Any] | None = None) -> list[Any]:
    """Content blocks decoded by their `type`; a type not translated is an `OtherBlock`."""
    out: list[Any] = []
    for j, raw in enumerate(raws):
        at = f"{where}[{j}]"
        try:
            kind = _decode_kind(raw).type
            if known is not None and kind not in known:
                out.append(wire.OtherBlock(type=kind))
                continue
            decode = _DECODERS.get(kind)
            out.append(decode(raw) if decode is not None else wire.OtherBlock(type=kind))
        except msgspec.MsgspecError as exc:
            raise _invalid_at(exc, at) from None
    return out


def _image(block: wire.ImageBlock, where: str, notes: list[str]) -> ImagePart | None:
    src = block.source
    if isinstance(src, wire.Base64Source):
        return ImagePart(image_url=ImageURL(url=f"data:{src.media_type};base64,{src.data}"))
    if isinstance(src, wire.URLSource):
        return ImagePart(image_url=ImageURL(url=src.url))
    notes.append(f"{where}: an image by file_id exists only at Anthropic")
    return None


def _document(block: wire.DocumentBlock, where: str, notes: list[str]) -> ContentPart | None:
    src = block.source
    if isinstance(src, wire.TextSource):
        return TextPart(text=src.data)
    if isinstance(src, wire.ContentSource):
        if isinstance(src.content, str):
            return TextPart(text=src.content)
        return TextPart(text="".join(str(b.get("text", "")) for b in src.content if isinstance(b, dict)))
    if isinstance(src, wire.Base64Source):
        name = block.title or "document.pdf"
        return FilePart(file={"filename": name, "file_data": f"data:{src.media_type};base64,{src.data}"})
    notes.append(f"{where}: a document by URL or file_id exists only at Anthropic")
    return None


def _part(block: Any, where: str, notes: list[str]) -> ContentPart | None:
    """A block as a content part for a translation (None: it has none; notes say why)."""
    if isinstance(block, wire.TextBlock):
        return TextPart(text=block.text)
    if isinstance(block, wire.ImageBlock):
        return _image(block, where, notes)
    if isinstance(block, wire.DocumentBlock):
        return _document(block, where, notes)
    if isinstance(block, wire.SearchResultBlock):
        body = "\n".join(t.text for t in block.content)
        return TextPart(text=f"{block.title} ({block.source})\n{body}")
    if isinstance(block, wire.OtherBlock):
        notes.append(f"{where}: a '{block.type}' block is not translated")
    return None


def _tool_result(block: wire.ToolResultBlock, where: str, notes: list[str]) -> ToolMessage:
    content = block.content
    if isinstance(content, str):
        parts: str | list[ContentPart] = content
    else:
        blocks = _blocks(content, f"{where}.content", wire.TOOL_RESULT_BLOCKS)
        parts = [p for i, b in enumerate(blocks) if (p := _part(b, f"{where}.content[{i}]", notes)) is not None]
    if block.is_error:  # Chat Completions has no error flag on a tool result: say it in the text
        parts = "[tool error] " + parts if isinstance(parts, str) else [TextPart(text="[tool error]"), *parts]
    return ToolMessage(content=parts, tool_call_id=block.tool_use_id)


def _user_turn(m: wire.MessageParam, where: str, notes: list[str]) -> list[Message]:
    if isinstance(m.content, str):
        return [UserMessage(content=m.content)]
    tools: list[Message] = []
    parts: list[ContentPart] = []
    for i, b in enumerate(_blocks(m.content, f"{where}.content")):
        at = f"{where}.content[{i}]"
        if isinstance(b, wire.ToolResultBlock):
            tools.append(_tool_result(b, at, notes))
        elif isinstance(b, wire.ToolUseBlock | wire.ThinkingBlock | wire.RedactedThinkingBlock):
            raise _bad(f"A user message cannot hold a '{type(b).__struct_config__.tag}' block.", f"{at}.type")
        elif (p := _part(b, at, notes)) is not None:
            parts.append(p)
    return tools + ([UserMessage(content=parts)] if parts else [])


def _assistant_turn(m: wire.MessageParam, where: str, notes: list[str]) -> AssistantMessage:
    if isinstance(m.content, str):
        return AssistantMessage(content=m.content)
    texts: list[str] = []
    calls: list[ToolCall] = []
    for i, b in enumerate(_blocks(m.content, f"{where}.content")):
        if isinstance(b, wire.TextBlock):
            texts.append(b.text)
        elif isinstance(b, wire.ToolUseBlock):
            calls.append(ToolCall(id=b.id, function=FunctionCall(name=b.name, arguments=_encode(b.input).decode())))
        elif isinstance(b, wire.ThinkingBlock | wire.RedactedThinkingBlock):
            continue  # signed for Anthropic only: never replayed as text
        elif isinstance(b, wire.ToolResultBlock):
            raise _bad("An assistant message cannot hold a 'tool_result' block.", f"{where}.content[{i}].type")
        else:  # images and documents from the assistant: only their text survives
            p = _part(b, f"{where}.content[{i}]", notes)
            if isinstance(p, TextPart):
                texts.append(p.text)
    msg = AssistantMessage(content="".join(texts) if texts else None)
    if calls:
        msg.tool_calls = calls
    return msg


def _system(system: str | list[wire.TextBlock]) -> SystemMessage | None:
    if isinstance(system, str):
        return SystemMessage(content=system) if system else None
    parts: list[ContentPart] = [TextPart(text=b.text) for b in system if b.text]
    return SystemMessage(content=parts) if parts else None


def canonical_messages(req: wire.CountTokensRequest, notes: list[str]) -> list[Message]:
    out: list[Message] = []
    if not isinstance(req.system, msgspec.UnsetType) and (s := _system(req.system)) is not None:
        out.append(s)
    for k, m in enumerate(req.messages):
        where = f"messages[{k}]"
        if m.role == "user":
            out.extend(_user_turn(m, where, notes))
        else:
            out.append(_assistant_turn(m, where, notes))
    return out


def _tools(req: wire.CountTokensRequest, chat: ChatRequest, notes: list[str]) -> None:
    if isinstance(req.tools, msgspec.UnsetType):
        return
    tools = []
    for t in req.tools:
        if not t.is_custom:
            notes.append(f"server tool '{t.name}' ({t.type}) exists only at Anthropic")
            continue
        fn = FunctionDef(name=t.name, parameters=t.input_schema)
        if isinstance(t.description, str):
            fn.description = t.description
        tools.append(Tool(function=fn))
    if tools:
        chat.tools = tools
    tc = req.tool_choice
    if isinstance(tc, wire.ToolChoice) and tools:
        if tc.type == "tool":
            if not isinstance(tc.name, str):
                raise _bad("tool_choice of type 'tool' needs the tool's name.", "tool_choice.name")
            chat.tool_choice = NamedToolChoice(function=NamedFunction(name=tc.name))
        else:
            chat.tool_choice = {"auto": "auto", "any": "required", "none": "none"}[tc.type]  # type: ignore[assignment]
        if tc.disable_parallel_tool_use is True:
            chat.parallel_tool_calls = False


def _reasoning(req: wire.MessagesRequest) -> str | None:
    th = req.thinking
    if not isinstance(th, wire.ThinkingConfig) or th.type == "disabled":
        return None
    if th.type == "adaptive":
        oc = req.output_config
        effort = oc.effort if isinstance(oc, wire.OutputConfig) else None
        return _EFFORT.get(effort or "", "medium")
    budget = th.budget_tokens if isinstance(th.budget_tokens, int) else 0
    if budget >= req.max_tokens:
        raise _bad("max_tokens must be greater than thinking.budget_tokens.", "thinking.budget_tokens")
    return next(effort for floor, effort in _EFFORT_BY_BUDGET if budget >= floor)


def to_chat(req: wire.MessagesRequest, notes: list[str]) -> ChatRequest:
    chat = ChatRequest(model=req.model, messages=canonical_messages(req, notes), max_tokens=req.max_tokens)
    if not chat.messages:
        raise _bad("At least one message is required.", "messages")
    if req.stream is True:
        chat.stream = True
    for name in ("temperature", "top_p", "top_k"):
        value = getattr(req, name)
        if value is not UNSET:
            setattr(chat, name, value)
    if isinstance(req.stop_sequences, list) and req.stop_sequences:
        chat.stop = req.stop_sequences
    if isinstance(req.metadata, wire.Metadata) and isinstance(req.metadata.user_id, str):
        chat.user = req.metadata.user_id
    _tools(req, chat, notes)
    if (effort := _reasoning(req)) is not None:
        chat.reasoning_effort = effort
    return chat


def native_headers(headers: Any) -> dict[str, str]:
    return {k: v for k in FORWARDED_HEADERS if (v := headers.get(k)) is not None}


def parse_messages(body: bytes, headers: Any) -> tuple[ParsedChat, list[str]]:
    """The body as a canonical request (400 naming the field when it is not a valid
    Messages request), and notes on what a translation drops."""
    req = decoded(_decode_request, body)
    notes: list[str] = []
    chat = to_chat(req, notes)
    raw = _decode_raw(_encode(chat))
    native = NativeBody(api=MESSAGES_API, body=body, headers=native_headers(headers))
    return ParsedChat(req=chat, raw=raw, native=native), notes


def parse_count(body: bytes, headers: Any) -> ParsedChat:
    req = decoded(_decode_count, body)
    notes: list[str] = []
    chat = ChatRequest(model=req.model, messages=canonical_messages(req, notes))
    _tools(req, chat, notes)
    native = NativeBody(api=MESSAGES_API, body=body, headers=native_headers(headers))
    return ParsedChat(req=chat, raw={}, native=native)
