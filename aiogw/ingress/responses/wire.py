"""The Responses API's request shapes (the API reference and openai-python's
`types/responses/`: `response_create_params`, `response_input_item_param`, `tool_param`,
`response_text_config_param`), as far as the gateway reads them. Fields the gateway does
not act on (`include`, `truncation`, `service_tier`, ...) are not modelled: msgspec skips
unknown keys, so they are accepted and ignored, as a stateless gateway must."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from aiogw.types import Probability, Temperature


class _In(msgspec.Struct, kw_only=True):
    pass


# --- input content parts (response_input_content_param, response_output_text_param) ----


class InputText(_In, tag="input_text", tag_field="type"):
    text: str


class InputImage(_In, tag="input_image", tag_field="type"):
    image_url: str | None = None
    file_id: str | None = None
    detail: str | UnsetType = UNSET


class InputFile(_In, tag="input_file", tag_field="type"):
    file_data: str | None = None
    file_id: str | None = None
    file_url: str | None = None
    filename: str | None = None


class OutputText(_In, tag="output_text", tag_field="type"):
    """An earlier answer's text, sent back as part of an assistant message."""

    text: str


class Refusal(_In, tag="refusal", tag_field="type"):
    refusal: str


ContentPart = InputText | InputImage | InputFile | OutputText | Refusal


# --- input items (response_input_item_param) -------------------------------------------


class MessageItem(_In):
    """`EasyInputMessage` (no `type`, string content allowed) or `Message`."""

    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]
    type: Literal["message"] = "message"


class FunctionCallItem(_In):
    call_id: str
    name: str
    arguments: str
    type: Literal["function_call"] = "function_call"


class FunctionCallOutputItem(_In):
    call_id: str
    output: str | list[ContentPart]
    type: Literal["function_call_output"] = "function_call_output"


class SummaryText(_In):
    text: str
    type: str = "summary_text"


class ReasoningItem(_In):
    summary: list[SummaryText] = []
    content: list[SummaryText] | None = None  # reasoning_text parts: same shape
    encrypted_content: str | None = None
    type: Literal["reasoning"] = "reasoning"


ITEM_TYPES: dict[str, type[_In]] = {
    "message": MessageItem,
    "function_call": FunctionCallItem,
    "function_call_output": FunctionCallOutputItem,
    "reasoning": ReasoningItem,
}


# --- the rest of the request (response_create_params) ----------------------------------


class FunctionTool(_In):
    name: str
    parameters: dict[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None


class NamedFunction(_In):
    type: str
    name: str | UnsetType = UNSET


class TextFormat(_In):
    type: Literal["text", "json_object", "json_schema"]
    name: str | UnsetType = UNSET
    schema: dict[str, Any] | UnsetType = UNSET
    description: str | UnsetType = UNSET
    strict: bool | UnsetType | None = UNSET


class TextConfig(_In):
    format: TextFormat | UnsetType = UNSET
    verbosity: str | UnsetType | None = UNSET


class ReasoningConfig(_In):
    effort: str | None = None
    summary: str | None = None
    generate_summary: str | None = None


class ResponsesRequest(_In):
    model: str
    # A string, or items: each item is checked by its `type` (decode.py), so that a message
    # without `type` (EasyInputMessage) is accepted and an error names `input[i]`.
    input: str | list[dict[str, Any]] | UnsetType = UNSET
    instructions: str | None = None
    tools: list[dict[str, Any]] | UnsetType = UNSET
    tool_choice: Literal["none", "auto", "required"] | NamedFunction | UnsetType = UNSET
    parallel_tool_calls: bool | UnsetType | None = UNSET
    text: TextConfig | UnsetType | None = UNSET
    reasoning: ReasoningConfig | UnsetType | None = UNSET
    max_output_tokens: Annotated[int, Meta(ge=16)] | UnsetType | None = UNSET
    temperature: Temperature | UnsetType | None = UNSET
    top_p: Probability | UnsetType | None = UNSET
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | UnsetType | None = UNSET
    metadata: Annotated[dict[str, str], Meta(max_length=16)] | UnsetType | None = UNSET
    user: str | UnsetType | None = UNSET
    store: bool | UnsetType | None = UNSET
    stream: bool | UnsetType | None = UNSET
    previous_response_id: str | UnsetType | None = UNSET
    background: bool | UnsetType | None = UNSET
