"""DeepSeek (`https://api.deepseek.com`): OpenAI-compatible, with reasoning models.

Spec: api-docs.deepseek.com (chat completion, thinking mode, reasoning model, multi-round,
context caching, error codes); our summary is docs/providers.md §7. `reasoning_effort` switches
thinking mode (`thinking: {"type": ...}`); in thinking mode the sampling parameters DeepSeek
ignores are dropped with a note and log probabilities are refused. Replayed
`reasoning_content` is stripped except in the live tool loop (§7.2); cache hits
(`prompt_cache_hit_tokens`) become OpenAI's `cached_tokens`; `: keep-alive` comments and
blank lines while queued are tolerated (the SSE parser skips comments; whole unary bodies
are decoded after they arrive, leading whitespace included).
"""

from __future__ import annotations

import msgspec

from aiogw.adapters import _base as base
from aiogw.adapters import openai
from aiogw.errors import InvalidRequest
from aiogw.types import AssistantMessage, Delta, ParsedChat, PromptTokensDetails, UserMessage

NAME = "deepseek"

PARAMS = base.ParamMap(
    reject={
        "n": "one completion per request",
        "logit_bias": "no token biasing",
        "top_k": "no top_k sampling",
    },
    drop={"seed": "no seed; OpenAI defines it as a best-effort hint"},
    translated=frozenset(
        {
            "temperature",
            "top_p",
            "max_tokens",
            "max_completion_tokens",
            "stop",
            "presence_penalty",
            "frequency_penalty",
            "logprobs",
            "top_logprobs",
            "user",
            "tools",
            "tool_choice",
            "parallel_tool_calls",
            "response_format",
            "reasoning_effort",
        }
    ),
)

# Thinking mode "does not support temperature, top_p, presence_penalty, frequency_penalty:
# setting them will not trigger an error but has no effect" (thinking-mode guide), so they
# are dropped with a note; logprobs/top_logprobs "will trigger an error" and are refused here.
IGNORED_WHILE_THINKING = ("temperature", "top_p", "presence_penalty", "frequency_penalty")

# Models without a thinking switch by default: `deepseek-chat` is the non-thinking alias;
# `deepseek-reasoner` always thinks; newer ids think unless told otherwise (the guide:
# "thinking mode is enabled by default").
NON_THINKING_DEFAULT = ("deepseek-chat",)
ALWAYS_THINKING = ("reasoner",)


class _Thinking(msgspec.Struct):
    type: str = ""


def thinking_on(p: ParsedChat, model: str) -> bool:
    """Whether this request runs in thinking mode: an explicit `thinking` extra, then
    `reasoning_effort`, then the model's default."""
    if any(tag in model for tag in ALWAYS_THINKING):
        return True
    raw = p.raw.get("thinking")
    if raw is not None:
        try:
            return msgspec.json.decode(raw, type=_Thinking).type != "disabled"
        except msgspec.MsgspecError:
            return True  # malformed: DeepSeek will say so; assume its default
    effort = p.req.reasoning_effort
    if isinstance(effort, str):
        return effort != "none"
    return model not in NON_THINKING_DEFAULT


def _reasoning(p: ParsedChat, target: base.Target, body: dict[str, object]) -> None:
    """`reasoning_effort: none` -> `thinking: disabled`; other efforts switch thinking on and
    pass as sent (DeepSeek maps minimal…xhigh onto its low/high/max itself)."""
    effort = p.req.reasoning_effort
    if not isinstance(effort, str) or "thinking" in p.raw:
        return  # nothing asked, or the client's own DeepSeek switch wins
    always = any(tag in target.model for tag in ALWAYS_THINKING)
    if effort == "none":
        if always:
            raise InvalidRequest(
                f"'reasoning_effort' 'none' is not supported by {target.model}: it always reasons.",
                code="unsupported_parameter",
                param="reasoning_effort",
            )
        body.pop("reasoning_effort", None)
        body["thinking"] = {"type": "disabled"}
    elif not always:
        body["thinking"] = {"type": "enabled"}


def _history(p: ParsedChat, body: dict[str, object]) -> None:
    """Replayed reasoning is kept only on assistant tool calls after the last user message
    (the live tool loop, where current models need it back); anywhere else older models
    answer 400 and newer ones ignore it (§7.2)."""
    msgs = p.req.messages
    if not any(isinstance(m, AssistantMessage) and m.reasoning_content for m in msgs):
        return
    last_user = max((i for i, m in enumerate(msgs) if isinstance(m, UserMessage)), default=-1)
    out = msgspec.to_builtins(msgs)
    for i, m in enumerate(msgs):
        if isinstance(m, AssistantMessage) and not (i > last_user and m.tool_calls):
            out[i].pop("reasoning_content", None)
    body["messages"] = out


def prepare(p: ParsedChat, target: base.Target, body: dict[str, object]) -> tuple[str, ...]:
    req = p.req
    body.pop("seed", None)
    rf = req.response_format
    if rf and rf.type == "json_schema":
        raise InvalidRequest(
            "'response_format' json_schema is not supported by deepseek: it takes json_object only.",
            code="unsupported_parameter",
            param="response_format",
        )
    if "max_completion_tokens" in body and "max_tokens" not in body:
        body["max_tokens"] = body.pop("max_completion_tokens")
    notes = openai.drop_openai_only(body, NAME)
    _reasoning(p, target, body)
    if thinking_on(p, target.model):
        for name in ("logprobs", "top_logprobs"):
            if getattr(req, name) not in (msgspec.UNSET, None, False, 0):
                raise InvalidRequest(
                    f"'{name}' is not supported by {target.model} in thinking mode: it returns no log probabilities.",
                    code="unsupported_parameter",
                    param=name,
                )
        ignored = [n for n in IGNORED_WHILE_THINKING if body.pop(n, None) is not None]
        if ignored:
            notes += (f"dropped {', '.join(repr(n) for n in ignored)} for deepseek: ignored in thinking mode",)
    _history(p, body)
    return notes


# --- responses ----------------------------------------------------------------------------


class _CacheView(msgspec.Struct):
    prompt_cache_hit_tokens: int | None = None


class _UsageCarrier(msgspec.Struct):
    usage: _CacheView | None = None


_decode_cache = msgspec.json.Decoder(_UsageCarrier).decode


def _fix_reply(data: dict[str, object]) -> None:
    """Cache hits as OpenAI's `cached_tokens` (older replies give only the DeepSeek counters,
    §7.3); the DeepSeek-only counters are not part of OpenAI's usage."""
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return
    hit = usage.pop("prompt_cache_hit_tokens", None)
    usage.pop("prompt_cache_miss_tokens", None)
    details = usage.get("prompt_tokens_details") or {}
    if isinstance(hit, int) and not details.get("cached_tokens"):
        usage["prompt_tokens_details"] = {**details, "cached_tokens": hit}


# `insufficient_system_resource` (generation cut for capacity) is `length` in the shared
# FINISH table: the answer was truncated, not malformed (§1.3).
decode_response = openai.dialect_response(_fix_reply)


class StreamDecoder(openai.StreamDecoder):
    """The shared decoder, reading cache hits from DeepSeek's own usage counters."""

    __slots__ = ()

    def feed(self, event: str, data: bytes) -> list[Delta]:
        out = super().feed(event, data)
        # Decoded again, not looked for by bytes: the key may be spelled with escapes. Once
        # per stream (the usage chunk).
        if out and out[-1].usage is not None:
            usage = out[-1].usage
            if not usage.cached_tokens:
                view = _decode_cache(data).usage
                if view is not None and view.prompt_cache_hit_tokens:
                    usage.prompt_tokens_details = PromptTokensDetails(cached_tokens=view.prompt_cache_hit_tokens)
        return out


ADAPTER = openai.openai_like(
    NAME,
    "https://api.deepseek.com",
    params=PARAMS,
    prepare=prepare,
    response=decode_response,
    decoder=StreamDecoder,
    embeddings=None,  # no embeddings API (docs/providers.md §10.4)
)
