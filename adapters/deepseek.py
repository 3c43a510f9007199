"""DeepSeek (`https://api.deepseek.com`): OpenAI-compatible, with reasoning models.

Spec: api-docs.deepseek.com (chat completion, reasoning model, multi-round, context
caching, error codes); our summary is providers.md §7. Replayed `reasoning_content` is
stripped except in the live tool loop (§7.2); cache hits are reported in OpenAI's
`cached_tokens`; `: keep-alive` comments and blank lines while queued are tolerated by the
SSE parser and the JSON decoder.
"""

from __future__ import annotations

import msgspec

from aiogw.adapters import _base as base
from aiogw.adapters import openai
from aiogw.errors import InvalidRequest
from aiogw.types import AssistantMessage, ParsedChat, PromptTokensDetails, Reply, UserMessage

NAME = "deepseek"

PARAMS = base.ParamMap(
    reject={"n": "one completion per request", "logit_bias": "no token biasing"},
    drop={"seed": "no seed; OpenAI defines it as a best-effort hint", "top_k": "no top_k sampling"},
    translated=frozenset({
        "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "presence_penalty", "frequency_penalty",
        "logprobs", "top_logprobs", "user", "tools", "tool_choice", "parallel_tool_calls", "response_format",
        "reasoning_effort",
    }),  # fmt: skip
)


def _thinking(p: ParsedChat, target: base.Target) -> bool:
    thinking = p.raw.get("thinking")
    return "reasoner" in target.model or (thinking is not None and b'"enabled"' in bytes(thinking))


def prepare(p: ParsedChat, target: base.Target, body: dict[str, object]) -> tuple[str, ...]:
    req = p.req
    for name in ("seed", "top_k"):
        body.pop(name, None)
    rf = req.response_format
    if rf and rf.type == "json_schema":
        raise InvalidRequest(
            "DeepSeek supports response_format json_object, not json_schema.", code="unsupported_parameter", param="response_format"
        )
    if _thinking(p, target) and req.logprobs is True:
        raise InvalidRequest(
            "DeepSeek's thinking mode returns no log probabilities.", code="unsupported_parameter", param="logprobs"
        )
    if "max_completion_tokens" in body and "max_tokens" not in body:
        body["max_tokens"] = body.pop("max_completion_tokens")
    # Replayed reasoning: kept only on assistant tool calls after the last user message (the
    # live tool loop, where DeepSeek needs it); anywhere else older models answer 400.
    msgs = req.messages
    last_user = max((i for i, m in enumerate(msgs) if isinstance(m, UserMessage)), default=-1)
    if any(isinstance(m, AssistantMessage) and m.reasoning_content for m in msgs):
        out = msgspec.to_builtins(msgs)
        for i, m in enumerate(msgs):
            if isinstance(m, AssistantMessage) and not (i > last_user and m.tool_calls):
                out[i].pop("reasoning_content", None)
        body["messages"] = out
    return ()


class _CacheView(msgspec.Struct):
    prompt_cache_hit_tokens: int | None = None


class _ReplyUsage(msgspec.Struct):
    usage: _CacheView | None = None


_decode_cache = msgspec.json.Decoder(_ReplyUsage).decode


def decode_response(body: bytes, target: base.Target) -> Reply:
    """Older replies give cache hits only as `prompt_cache_hit_tokens`: count them as cached."""
    reply = openai.decode_response(body, target)
    u = reply.usage
    if u is not None and not u.cached_tokens:
        hit = _decode_cache(body).usage
        if hit is not None and hit.prompt_cache_hit_tokens:
            u.prompt_tokens_details = PromptTokensDetails(cached_tokens=hit.prompt_cache_hit_tokens)
    return reply


ADAPTER = openai.openai_like(
    NAME,
    "https://api.deepseek.com",
    params=PARAMS,
    call=openai.dialect_call(PARAMS, prepare, ask_usage=True),
    response=decode_response,
    embeddings=None,
)
