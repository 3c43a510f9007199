"""The Messages API request (`POST /v1/messages`) as msgspec Structs, written from Anthropic's
API reference ("Create a Message", "Count tokens in a Message") and the official SDK's
request types (anthropic-sdk-python `types/message_create_params.py`, `*_block_param.py`,
`tool_param.py`, `tool_choice_*_param.py`, `thinking_config_*_param.py`).

Fields the gateway does not translate (`cache_control`, `citations`, `service_tier`,
`container`, server tools' own fields...) are not modelled: unknown fields are ignored here
and reach Anthropic targets untouched in the passed-through body.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

# --- content blocks -------------------------------------------------------------------------


class Base64Source(msgspec.Struct, tag="base64", tag_field="type"):
    media_type: str
    data: str


class URLSource(msgspec.Struct, tag="url", tag_field="type"):
    url: str


class TextSource(msgspec.Struct, tag="text", tag_field="type"):
    media_type: str = "text/plain"
    data: str = ""


class FileSource(msgspec.Struct, tag="file", tag_field="type"):
    file_id: str


class ContentSource(msgspec.Struct, tag="content", tag_field="type"):
    content: str | list[dict[str, Any]]


ImageSource = Base64Source | URLSource | FileSource
DocumentSource = Base64Source | URLSource | TextSource | FileSource | ContentSource


class TextBlock(msgspec.Struct, tag="text", tag_field="type"):
    text: str


class ImageBlock(msgspec.Struct, tag="image", tag_field="type"):
    source: ImageSource


class DocumentBlock(msgspec.Struct, tag="document", tag_field="type"):
    source: DocumentSource
    title: str | None = None


class SearchResultBlock(msgspec.Struct, tag="search_result", tag_field="type"):
    source: str
    title: str
    content: list[TextBlock]


class ToolUseBlock(msgspec.Struct, tag="tool_use", tag_field="type"):
    id: str
    name: str
    input: dict[str, Any]


class OtherBlock(msgspec.Struct):
    """A block of a type not translated (server tools' `server_tool_use` and results,
    container uploads, types newer than this module): passed through to Anthropic targets,
    left out of a translation (noted)."""

    type: str


class ToolResultBlock(msgspec.Struct, tag="tool_result", tag_field="type"):
    tool_use_id: str
    content: str | list[msgspec.Raw] = ""  # blocks, decoded one by one (`TOOL_RESULT_BLOCKS`)
    is_error: bool = False


class ThinkingBlock(msgspec.Struct, tag="thinking", tag_field="type"):
    thinking: str
    signature: str


class RedactedThinkingBlock(msgspec.Struct, tag="redacted_thinking", tag_field="type"):
    data: str


# Blocks are decoded one by one by their `type` (decode.py), so that a type not listed
# here is kept for Anthropic targets rather than refused.
BLOCKS: dict[str, type[msgspec.Struct]] = {
    t.__struct_config__.tag: t  # type: ignore[misc]
    for t in (TextBlock, ImageBlock, DocumentBlock, SearchResultBlock, ToolUseBlock, ToolResultBlock,
              ThinkingBlock, RedactedThinkingBlock)
}  # fmt: skip
TOOL_RESULT_BLOCKS = {k: BLOCKS[k] for k in ("text", "image", "document", "search_result")}


class MessageParam(msgspec.Struct):
    role: Literal["user", "assistant"]
    content: str | list[msgspec.Raw]


# --- tools ------------------------------------------------------------------------------------


class ToolParam(msgspec.Struct, kw_only=True):
    """A client tool (`type` absent or "custom"); Anthropic's server tools (`bash_20250124`,
    `web_search_20250305`...) have a versioned `type` and no `input_schema`."""

    name: str
    type: str | None = None
    description: str | UnsetType = UNSET
    input_schema: dict[str, Any] | UnsetType = UNSET

    @property
    def is_custom(self) -> bool:
        return self.type in (None, "custom") and not isinstance(self.input_schema, UnsetType)


class ToolChoice(msgspec.Struct, kw_only=True):
    type: Literal["auto", "any", "tool", "none"]
    name: str | UnsetType = UNSET
    disable_parallel_tool_use: bool | UnsetType = UNSET


class ThinkingConfig(msgspec.Struct, kw_only=True):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: Annotated[int, Meta(ge=1024)] | UnsetType = UNSET


class OutputConfig(msgspec.Struct, kw_only=True):
    effort: Literal["low", "medium", "high", "xhigh", "max"] | UnsetType | None = UNSET


class Metadata(msgspec.Struct, kw_only=True):
    user_id: str | UnsetType | None = UNSET


# --- the request ------------------------------------------------------------------------------


class CountTokensRequest(msgspec.Struct, kw_only=True):
    """`POST /v1/messages/count_tokens`: the prompt side of a Messages request."""

    model: str
    messages: list[MessageParam]
    system: str | list[TextBlock] | UnsetType = UNSET
    tools: list[ToolParam] | UnsetType = UNSET
    tool_choice: ToolChoice | UnsetType = UNSET
    thinking: ThinkingConfig | UnsetType = UNSET


class MessagesRequest(CountTokensRequest, kw_only=True):
    max_tokens: Annotated[int, Meta(ge=1)]
    metadata: Metadata | UnsetType = UNSET
    stop_sequences: list[str] | UnsetType = UNSET
    stream: bool | UnsetType = UNSET
    temperature: Annotated[float, Meta(ge=0, le=1)] | UnsetType = UNSET
    top_p: Annotated[float, Meta(ge=0, le=1)] | UnsetType = UNSET
    top_k: Annotated[int, Meta(ge=0)] | UnsetType = UNSET
    output_config: OutputConfig | UnsetType = UNSET
