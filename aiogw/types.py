"""Canonical types: the OpenAI Chat Completions request, response, chunk and usage, and the
provider-neutral stream unit `Delta`. A leaf module: stdlib and msgspec only.

Wire shapes follow the OpenAI API reference and the official SDK's types
(openai/types/chat/*.py). Optional request parameters are `T | None | UnsetType` so an
absent field stays absent and an explicit null stays null when forwarded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Raw, UnsetType

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


class Wire(msgspec.Struct, kw_only=True):
    """OpenAI-shaped payload. Unknown keys are ignored here (captured separately as raw
    extras). Only UNSET fields are omitted on encode, so absent stays absent; a field with a
    real default (`object`, a tool call's `type`, a null `content`) is always written,
    because OpenAI's schema requires it and clients reject answers without it."""


# --- request: content parts -------------------------------------------------------------


class ImageURL(Wire, kw_only=True):
    url: str
    detail: str | UnsetType = UNSET


class TextPart(Wire, kw_only=True, tag="text", tag_field="type"):
    text: str


class ImagePart(Wire, kw_only=True, tag="image_url", tag_field="type"):
    image_url: ImageURL


class InputAudio(Wire, kw_only=True):
    data: str
    format: str


class AudioPart(Wire, kw_only=True, tag="input_audio", tag_field="type"):
    input_audio: InputAudio


class FilePart(Wire, kw_only=True, tag="file", tag_field="type"):
    file: dict[str, Any]


class RefusalPart(Wire, kw_only=True, tag="refusal", tag_field="type"):
    refusal: str


ContentPart = TextPart | ImagePart | AudioPart | FilePart | RefusalPart


# --- request: messages ------------------------------------------------------------------


class FunctionCall(Wire, kw_only=True):
    name: str
    arguments: str


class ToolCall(Wire, kw_only=True):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class SystemMessage(Wire, kw_only=True, tag="system", tag_field="role"):
    content: str | list[ContentPart]
    name: str | UnsetType = UNSET


class DeveloperMessage(Wire, kw_only=True, tag="developer", tag_field="role"):
    content: str | list[ContentPart]
    name: str | UnsetType = UNSET


class UserMessage(Wire, kw_only=True, tag="user", tag_field="role"):
    content: str | list[ContentPart]
    name: str | UnsetType = UNSET


class AssistantMessage(Wire, kw_only=True, tag="assistant", tag_field="role"):
    content: str | list[ContentPart] | None = None
    name: str | UnsetType = UNSET
    refusal: str | UnsetType | None = UNSET
    tool_calls: list[ToolCall] | UnsetType = UNSET
    function_call: FunctionCall | UnsetType | None = UNSET
    # Reasoning text of an earlier turn (DeepSeek/Qwen extension); adapters decide.
    reasoning_content: str | UnsetType | None = UNSET


class ToolMessage(Wire, kw_only=True, tag="tool", tag_field="role"):
    content: str | list[ContentPart]
    tool_call_id: str


class FunctionMessage(Wire, kw_only=True, tag="function", tag_field="role"):
    """Deprecated by OpenAI, still accepted by it."""

    content: str | None
    name: str


Message = SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage | FunctionMessage


# --- request: tools and options ---------------------------------------------------------


class FunctionDef(Wire, kw_only=True):
    name: str
    description: str | UnsetType = UNSET
    parameters: dict[str, Any] | UnsetType = UNSET
    strict: bool | UnsetType | None = UNSET


class Tool(Wire, kw_only=True):
    type: Literal["function"] = "function"
    function: FunctionDef


class NamedFunction(Wire, kw_only=True):
    name: str


class NamedToolChoice(Wire, kw_only=True):
    type: Literal["function"] = "function"
    function: NamedFunction


class StreamOptions(Wire, kw_only=True):
    include_usage: bool | UnsetType | None = UNSET
    include_obfuscation: bool | UnsetType | None = UNSET


class JSONSchemaFormat(Wire, kw_only=True):
    name: str
    schema: dict[str, Any] | UnsetType = UNSET
    description: str | UnsetType = UNSET
    strict: bool | UnsetType | None = UNSET


class ResponseFormat(Wire, kw_only=True):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | UnsetType = UNSET


Temperature = Annotated[float, Meta(ge=0, le=2)]
Probability = Annotated[float, Meta(ge=0, le=1)]
Penalty = Annotated[float, Meta(ge=-2, le=2)]
PositiveInt = Annotated[int, Meta(ge=1)]


class ChatRequest(Wire, kw_only=True):
    """POST /v1/chat/completions. Unknown top-level fields are kept by the server as raw
    extras and forwarded to providers that accept them."""

    model: str
    messages: Annotated[list[Message], Meta(min_length=1)]
    stream: bool | UnsetType | None = UNSET
    stream_options: StreamOptions | UnsetType | None = UNSET
    temperature: Temperature | UnsetType | None = UNSET
    top_p: Probability | UnsetType | None = UNSET
    top_k: PositiveInt | UnsetType | None = UNSET  # extension (Anthropic, Gemini, Qwen)
    n: Annotated[int, Meta(ge=1, le=128)] | UnsetType | None = UNSET
    max_tokens: PositiveInt | UnsetType | None = UNSET
    max_completion_tokens: PositiveInt | UnsetType | None = UNSET
    stop: str | Annotated[list[str], Meta(max_length=4)] | UnsetType | None = UNSET
    seed: int | UnsetType | None = UNSET
    presence_penalty: Penalty | UnsetType | None = UNSET
    frequency_penalty: Penalty | UnsetType | None = UNSET
    logit_bias: dict[str, int] | UnsetType | None = UNSET
    logprobs: bool | UnsetType | None = UNSET
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | UnsetType | None = UNSET
    user: str | UnsetType = UNSET
    tools: list[Tool] | UnsetType = UNSET
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | UnsetType = UNSET
    parallel_tool_calls: bool | UnsetType = UNSET
    response_format: ResponseFormat | UnsetType = UNSET
    reasoning_effort: str | UnsetType | None = UNSET

    @property
    def is_stream(self) -> bool:
        return self.stream is True

    @property
    def output_cap(self) -> int | None:
        """The client's cap on output tokens, whichever field carries it."""
        for v in (self.max_completion_tokens, self.max_tokens):
            if isinstance(v, int):
                return v
        return None

    @property
    def wants_usage(self) -> bool:
        """Did the client ask for the trailing usage chunk of a stream?"""
        so = self.stream_options
        return isinstance(so, StreamOptions) and so.include_usage is True


CHAT_REQUEST_FIELDS = frozenset(ChatRequest.__struct_fields__)


# --- response ---------------------------------------------------------------------------


class PromptTokensDetails(Wire, kw_only=True):
    cached_tokens: int | UnsetType = UNSET
    cache_write_tokens: int | UnsetType = UNSET
    audio_tokens: int | UnsetType = UNSET


class CompletionTokensDetails(Wire, kw_only=True):
    reasoning_tokens: int | UnsetType = UNSET
    audio_tokens: int | UnsetType = UNSET
    accepted_prediction_tokens: int | UnsetType = UNSET
    rejected_prediction_tokens: int | UnsetType = UNSET


class CompletionUsage(Wire, kw_only=True):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails | UnsetType | None = UNSET
    completion_tokens_details: CompletionTokensDetails | UnsetType | None = UNSET
    # Extension: true when the provider reported no usage and the gateway estimated it.
    estimated: bool | UnsetType = UNSET

    @property
    def cached_tokens(self) -> int:
        d = self.prompt_tokens_details
        return d.cached_tokens or 0 if isinstance(d, PromptTokensDetails) else 0

    @property
    def reasoning_tokens(self) -> int:
        d = self.completion_tokens_details
        return d.reasoning_tokens or 0 if isinstance(d, CompletionTokensDetails) else 0


class ResponseMessage(Wire, kw_only=True):
    """`content` and `refusal` are always present (null when empty), as OpenAI sends them."""

    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] | UnsetType = UNSET
    reasoning_content: str | UnsetType = UNSET


class Choice(Wire, kw_only=True):
    index: int = 0
    message: ResponseMessage
    logprobs: Raw | None = None
    finish_reason: FinishReason | None = "stop"


class ChatCompletion(Wire, kw_only=True):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage | UnsetType = UNSET
    system_fingerprint: str | UnsetType | None = UNSET
    service_tier: str | UnsetType | None = UNSET


# --- streaming --------------------------------------------------------------------------


class ToolCallDeltaFunction(Wire, kw_only=True):
    name: str | UnsetType = UNSET
    arguments: str | UnsetType = UNSET


class ToolCallDelta(Wire, kw_only=True):
    index: int
    id: str | UnsetType = UNSET
    type: Literal["function"] | UnsetType = UNSET
    function: ToolCallDeltaFunction | UnsetType = UNSET


class ChoiceDelta(Wire, kw_only=True):
    role: Literal["assistant"] | UnsetType = UNSET
    content: str | UnsetType | None = UNSET
    reasoning_content: str | UnsetType = UNSET
    refusal: str | UnsetType | None = UNSET
    tool_calls: list[ToolCallDelta] | UnsetType = UNSET


class ChunkChoice(msgspec.Struct, kw_only=True):
    """Not `Wire`: OpenAI sends `logprobs` and `finish_reason` as explicit nulls."""

    index: int = 0
    delta: ChoiceDelta
    logprobs: Raw | None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(Wire, kw_only=True):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: CompletionUsage | UnsetType | None = UNSET
    system_fingerprint: str | UnsetType | None = UNSET


class Delta(msgspec.Struct, kw_only=True, gc=False):
    """One provider-neutral piece of a streamed answer; adapters' stream decoders yield these.

    Exactly one of the payload groups is set: text (`content`, `reasoning`, `refusal`), a
    tool-call fragment (`tool_index` with `tool_id`/`tool_name` on the first fragment and
    `tool_args` after), `finish_reason`, or `usage`. `choice` is the choice index (`n`)."""

    choice: int = 0
    content: str | None = None
    reasoning: str | None = None
    refusal: str | None = None
    tool_index: int | None = None
    tool_id: str | None = None
    tool_name: str | None = None
    tool_args: str | None = None
    finish_reason: FinishReason | None = None
    usage: CompletionUsage | None = None
    logprobs: Raw | None = None

    @classmethod
    def tool_start(cls, index: int, tool_id: str, name: str, *, choice: int = 0) -> Delta:
        return cls(choice=choice, tool_index=index, tool_id=tool_id, tool_name=name)

    @classmethod
    def tool_args_fragment(cls, index: int, args: str, *, choice: int = 0) -> Delta:
        return cls(choice=choice, tool_index=index, tool_args=args)


# --- embeddings -------------------------------------------------------------------------


class EmbeddingRequest(Wire, kw_only=True):
    model: str
    # A string, strings, a token array or token arrays (msgspec allows one list type per union).
    input: str | list[str | int | list[int]]
    encoding_format: Literal["float", "base64"] | UnsetType = UNSET
    dimensions: PositiveInt | UnsetType = UNSET
    user: str | UnsetType = UNSET


# --- models list ------------------------------------------------------------------------


# Not `Wire`: OpenAI's SDKs read `object`, `created` and `owned_by`, so defaults are sent too.
class ModelCard(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["model"] = "model"
    created: int  # unix seconds
    owned_by: str


class ModelList(msgspec.Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# --- what the server hands to dispatch, and what dispatch hands back -------------------


MESSAGES_API = "anthropic.messages"  # NativeBody.api of Anthropic Messages requests
RESPONSES_API = "openai.responses"  # Reply.native of a Responses answer passed through


class NativeBody(msgspec.Struct, frozen=True, kw_only=True):
    """The request as the client sent it in another API (`api`, e.g. "anthropic.messages"),
    for targets that speak that API natively: passed through with only `model` changed.
    `headers`: the client's headers of that API worth forwarding (versions, betas)."""

    api: str
    body: bytes
    headers: dict[str, str] = {}


class ParsedChat(msgspec.Struct, frozen=True, kw_only=True):
    """A validated chat request plus its top-level fields as raw JSON, so fields we do not
    model are forwarded byte for byte to providers that accept them."""

    req: ChatRequest
    raw: dict[str, Raw]
    native: NativeBody | None = None  # another API's request, decoded into `req`
    # The prompt's size estimate, made once on first use (key tpm, budgets and the walk all
    # read it): see aiogw.attempts.walk.prompt_tokens_estimate. -1: not made yet.
    prompt_estimate: int = -1

    def extras(self) -> dict[str, Raw]:
        return {k: v for k, v in self.raw.items() if k not in CHAT_REQUEST_FIELDS}


class Reply(msgspec.Struct, frozen=True, kw_only=True):
    """A complete non-streaming answer: the OpenAI `chat.completion` body to send, and what
    the gateway reads from it for accounting."""

    body: bytes
    usage: CompletionUsage | None = None
    model: str | None = None
    finish_reasons: tuple[str, ...] = ()  # per choice, for logs and traces
    native: str = ""  # `body` is in this API (a passthrough of ParsedChat.native), not OpenAI's


class Secret:
    """An API key. Its repr and str are masked so it cannot leak through logs, reprs or
    error messages; `reveal()` is the one way to read it (when building upstream headers)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float
    cached_input: float | None = None  # None: cache reads cost full input
    cache_write: float | None = None  # None: cache writes cost full input
