"""Qwen through DashScope's OpenAI-compatible mode
(`https://dashscope-intl.aliyuncs.com/compatible-mode/v1`; keys are bound to their region).

Spec: Alibaba Cloud Model Studio docs (OpenAI compatibility, deep thinking, function
calling, error codes); our summary is docs/providers.md §8. Thinking is switched explicitly
with `enable_thinking` (+ `thinking_budget`) from `reasoning_effort`; the ranges Qwen
enforces are checked here so the client gets a 400 naming the field. Stream quirks (§8.2:
tool-call deltas restating `"id": ""` or the same id, name-only then arguments-only
fragments, `reasoning_content`, a usage-only last chunk with `choices: []`) are what the
shared OpenAI stream decoder normalises.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from aiogw.adapters import _base as base
from aiogw.adapters import openai
from aiogw.errors import FailureClass, UpstreamError
from aiogw.types import NamedToolChoice, ParsedChat

NAME = "qwen"
# reasoning_effort -> thinking_budget (tokens of reasoning). Qwen has no effort levels, only
# a budget; these follow the ratios other providers use for the same words.
THINKING_BUDGET = {"minimal": 512, "low": 2048, "medium": 8192, "high": 24576, "xhigh": 38912}
# Models that always think (QwQ, `*-thinking`): enable_thinking cannot be switched off there.
ALWAYS_THINKING = ("qwq", "-thinking")
# OpenAI-only fields Qwen knows under the same name: Qwen-Omni answers with audio.
QWEN_KNOWS = frozenset({"modalities", "audio"})

PARAMS = base.ParamMap(
    reject={"logit_bias": "no token biasing"},
    translated=frozenset(
        {
            "temperature",
            "top_p",
            "top_k",
            "n",
            "max_tokens",
            "max_completion_tokens",
            "stop",
            "seed",
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


_bad = base.invalid_value


def _thinking(p: ParsedChat, target: base.Target, body: dict[str, object]) -> None:
    """`reasoning_effort` -> `enable_thinking` (+ `thinking_budget`). Without one, thinking is
    switched off explicitly on hybrid models: family defaults differ (§8.1) and OpenAI's
    meaning of "no reasoning_effort" is a plain answer."""
    effort = p.req.reasoning_effort
    always = any(tag in target.model for tag in ALWAYS_THINKING)
    if isinstance(effort, str):
        body.pop("reasoning_effort", None)  # Qwen refuses it beside thinking_budget (§8.1)
        if effort == "none":
            if always:
                raise _bad(
                    f"{target.model} always thinks; reasoning_effort 'none' cannot be honoured.", "reasoning_effort"
                )
            body["enable_thinking"] = False
        elif effort in THINKING_BUDGET:
            body["enable_thinking"] = True
            body["thinking_budget"] = THINKING_BUDGET[effort]
        else:
            raise _bad(
                f"Unknown reasoning_effort {effort!r}; use none or {', '.join(THINKING_BUDGET)}.", "reasoning_effort"
            )
    elif "enable_thinking" not in body and not always:
        body["enable_thinking"] = False


def prepare(p: ParsedChat, target: base.Target, body: dict[str, object]) -> tuple[str, ...]:
    req = p.req
    # Ranges DashScope enforces (§8.1): temperature [0, 2), top_p (0, 1]. The canonical
    # request already bounds both to OpenAI's closed ranges.
    if isinstance(req.temperature, float | int) and req.temperature >= 2:
        raise _bad("Qwen takes temperature in [0, 2); send a value below 2.", "temperature")
    if isinstance(req.top_p, float | int) and req.top_p <= 0:
        raise _bad("Qwen takes top_p in (0, 1]; send a value above 0.", "top_p")
    if "max_completion_tokens" in body and "max_tokens" not in body:
        body["max_tokens"] = body.pop("max_completion_tokens")
    notes = openai.drop_openai_only(body, NAME, keep=QWEN_KNOWS)
    _thinking(p, target, body)
    forced = req.tool_choice == "required" or isinstance(req.tool_choice, NamedToolChoice)
    if forced and (body.get("enable_thinking") is True or any(tag in target.model for tag in ALWAYS_THINKING)):
        raise _bad(
            "Qwen refuses forced tool use while thinking; use tool_choice 'auto' or no reasoning_effort.", "tool_choice"
        )
    return notes


# --- errors -------------------------------------------------------------------------------

# DashScope error codes (Model Studio "Error codes" page) whose class the status alone gets
# wrong: overdue accounts answer 400/403 `Arrearage`, an exhausted free quota is a 429.
CODE_CLASS: dict[str, FailureClass] = {
    "Arrearage": FailureClass.QUOTA,
    "Throttling.AllocationQuota": FailureClass.QUOTA,
    "insufficient_quota": FailureClass.QUOTA,
    "Throttling.RateQuota": FailureClass.RATE_LIMIT,
    "Throttling": FailureClass.RATE_LIMIT,
    "InvalidApiKey": FailureClass.CREDENTIAL,
    "invalid_api_key": FailureClass.CREDENTIAL,
    "ModelNotFound": FailureClass.MODEL_GONE,
    "model_not_found": FailureClass.MODEL_GONE,
    # Content moderation of the caller's input: never retried, answered as content_filter.
    "data_inspection_failed": FailureClass.CALLER_FAULT,
    "DataInspectionFailed": FailureClass.CALLER_FAULT,
}
MODERATION = frozenset({"data_inspection_failed", "DataInspectionFailed"})


class _Detail(msgspec.Struct):
    message: str = ""
    type: str | None = None
    code: str | int | None = None
    param: str | None = None


class _ErrorBody(msgspec.Struct):
    """Compatible mode `{"error": {...}, "id", "request_id"}` or the native flat
    `{"code": "InvalidParameter", "message": "...", "request_id": "..."}` (§8.3)."""

    error: _Detail | None = None
    code: str | None = None
    message: str | None = None


_decode_error_body = msgspec.json.Decoder(_ErrorBody).decode


def decode_error(status: int, headers: Mapping[str, str], body: bytes, target: base.Target) -> UpstreamError:
    try:
        eb = _decode_error_body(body)
    except msgspec.MsgspecError:
        return openai.decode_error(status, headers, body, target)
    d = eb.error or _Detail(message=eb.message or "", code=eb.code)
    code = d.code if isinstance(d.code, str) else None
    if code is None and any(m in d.message for m in MODERATION):
        code = "data_inspection_failed"
    # "Range of input length should be [1, N]": the prompt is longer than the model takes.
    upstream_code = "context_length_exceeded" if "Range of input length" in d.message else code
    err = base.status_error(
        target, status, headers, message=d.message, upstream_type=d.type, upstream_code=upstream_code, param=d.param
    )
    cls = CODE_CLASS.get(code or "")
    if cls is not None and err.failure_class is not FailureClass.CONTEXT_LENGTH:
        err.failure_class = cls
    if code in MODERATION:
        err.code = "content_filter"
    return err


ADAPTER = openai.openai_like(
    NAME,
    "https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
    params=PARAMS,
    prepare=prepare,
    error=decode_error,
    embeddings=None,
)
