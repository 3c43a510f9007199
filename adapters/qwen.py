"""Qwen through DashScope's OpenAI-compatible mode
(`https://dashscope-intl.aliyuncs.com/compatible-mode/v1`; keys are bound to their region).

Spec: Alibaba Cloud Model Studio docs (OpenAI compatibility, deep thinking, function
calling, error codes); our summary is providers.md §8. Thinking is switched explicitly
with `enable_thinking` (+ `thinking_budget`) from `reasoning_effort`; the ranges Qwen
enforces are checked here so the client gets a 400 naming the field; tool-call deltas that
restate empty ids are normalised by the shared OpenAI stream decoder.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiogw.adapters import _base as base
from aiogw.adapters import openai
from aiogw.errors import FailureClass, InvalidRequest, UpstreamError
from aiogw.types import NamedToolChoice, ParsedChat

NAME = "qwen"
THINKING_BUDGET = {"minimal": 512, "low": 2048, "medium": 8192, "high": 24576, "xhigh": 38912}
# Models that always think: enable_thinking cannot be switched off there.
ALWAYS_THINKING = ("qwq", "-thinking")

PARAMS = base.ParamMap(
    reject={"logit_bias": "no token biasing"},
    translated=frozenset({
        "temperature", "top_p", "top_k", "n", "max_tokens", "max_completion_tokens", "stop", "seed",
        "presence_penalty", "frequency_penalty", "logprobs", "top_logprobs", "user", "tools", "tool_choice",
        "parallel_tool_calls", "response_format", "reasoning_effort",
    }),  # fmt: skip
)


def _bad(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, code="invalid_value", param=param)


def prepare(p: ParsedChat, target: base.Target, body: dict[str, object]) -> tuple[str, ...]:
    req = p.req
    if isinstance(req.temperature, float | int) and req.temperature >= 2:
        raise _bad("Qwen takes temperature in [0, 2); send a value below 2.", "temperature")
    if isinstance(req.top_p, float | int) and req.top_p <= 0:
        raise _bad("Qwen takes top_p in (0, 1]; send a value above 0.", "top_p")
    if "max_completion_tokens" in body and "max_tokens" not in body:
        body["max_tokens"] = body.pop("max_completion_tokens")
    effort = req.reasoning_effort
    always = any(tag in target.model for tag in ALWAYS_THINKING)
    if isinstance(effort, str):
        body.pop("reasoning_effort", None)
        if effort == "none":
            if always:
                raise _bad(f"{target.model} always thinks; reasoning_effort 'none' cannot be honoured.", "reasoning_effort")
            body["enable_thinking"] = False
        elif effort in THINKING_BUDGET:
            body["enable_thinking"] = True
            body["thinking_budget"] = THINKING_BUDGET[effort]
        else:
            raise _bad(f"Unknown reasoning_effort {effort!r}; use none or {', '.join(THINKING_BUDGET)}.", "reasoning_effort")
    elif "enable_thinking" not in body and not always:
        body["enable_thinking"] = False  # defaults differ by family: say it, as OpenAI means no reasoning
    forced = req.tool_choice == "required" or isinstance(req.tool_choice, NamedToolChoice)
    if forced and body.get("enable_thinking") is True:
        raise _bad("Qwen refuses forced tool use while thinking; use tool_choice 'auto' or no reasoning_effort.", "tool_choice")
    return ()


def decode_error(status: int, headers: Mapping[str, str], body: bytes, target: base.Target) -> UpstreamError:
    err = openai.decode_error(status, headers, body, target)
    if b"data_inspection_failed" in body or b"DataInspectionFailed" in body:
        err.failure_class = FailureClass.CALLER_FAULT  # content moderation: the caller's input
        err.code = "content_filter"
    return err


ADAPTER = openai.openai_like(
    NAME,
    "https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
    params=PARAMS,
    call=openai.dialect_call(PARAMS, prepare, ask_usage=True),
    error=decode_error,
    embeddings=None,
)
