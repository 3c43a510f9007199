"""The state of one request's walk through its plan, what it reserves, and how a walk
that found no answer ends (the error the client gets)."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import msgspec

from aiogw.adapters._base import Adapter, Call, Target, content_text
from aiogw.admission.limits import LimitExceeded
from aiogw.attempts.gate import _Gate
from aiogw.attempts.outcome import Control, Outcome
from aiogw.config import RetryConfig
from aiogw.errors import (
    AllAttemptsFailed,
    FailureClass,
    GatewayError,
    GatewayRateLimited,
    InvalidRequest,
    NestedTooDeep,
    UpstreamError,
    UpstreamTimeout,
)
from aiogw.quality.features import bucket_of
from aiogw.routing.retry import backoff_s
from aiogw.routing.token_ratio import TokenRatios
from aiogw.runtime import ModelRoute
from aiogw.streaming.encode import estimate_tokens
from aiogw.types import EmbeddingRequest, ParsedChat

T = TypeVar("T")

# Output tokens reserved against `tpm` when the request sets no cap.
DEFAULT_OUTPUT_RESERVATION = 512


def prompt_tokens_estimate(parsed: ParsedChat) -> int:
    """A rough prompt size from the request's text, for limits, budgets, routing and missing
    usage; counted once per request (the request is frozen: the memo is its one late field)."""
    n = parsed.prompt_estimate
    if n < 0:
        chars = sum(len(content_text(getattr(m, "content", None))) for m in parsed.req.messages)
        n = estimate_tokens(chars)
        msgspec.structs.force_setattr(parsed, "prompt_estimate", n)
    return n


def chat_tokens_estimate(parsed: ParsedChat, ratio: float = 1.0) -> int:
    """What a chat request reserves against a tpm limit: its prompt (x `ratio`, its
    provider's tokens per estimated token) and its output cap."""
    prompt = prompt_tokens_estimate(parsed)
    if ratio != 1.0:
        prompt = math.ceil(prompt * ratio)
    return prompt + (parsed.req.output_cap or DEFAULT_OUTPUT_RESERVATION)


def embedding_tokens_estimate(req: EmbeddingRequest) -> int:
    inp = req.input
    if isinstance(inp, str):
        return estimate_tokens(len(inp))
    return sum(estimate_tokens(len(x)) if isinstance(x, str) else (len(x) if isinstance(x, list) else 1) for x in inp)


def build_call(adapter: Adapter, parsed: ParsedChat, target: Target, ratios: TokenRatios | None = None) -> Call:
    parsed, note = fit_output(parsed, target, adapter, ratios)
    try:
        call = adapter.build_call(parsed, target)
    except RecursionError:  # a body nested just under the decoder's limit, re-encoded deeper
        raise NestedTooDeep() from None
    return call if note is None else msgspec.structs.replace(call, notes=(*call.notes, note))


def fit_output(
    parsed: ParsedChat, target: Target, adapter: Adapter, ratios: TokenRatios | None
) -> tuple[ParsedChat, str | None]:
    """The request's output cap as this target can take it (and a note saying what changed):
    - a client's cap above the target's output limit (its `max_output_tokens`, else, for a
      provider that requires a cap, the model's documented maximum) is lowered to that limit
      (the answer could not be longer; the upstream would refuse the request);
    - without a client cap, a provider that requires one gets the adapter's default, lowered
      to what the target's context window leaves after the prompt (in the target's tokens)."""
    cap = parsed.req.output_cap
    default = adapter.default_output_cap
    if cap is not None:
        limit = target.max_output_tokens or (default(target) if default is not None else None)
        if limit is None or cap <= limit:
            return parsed, None
        return _with_cap(parsed, limit), f"max_tokens {cap} lowered to {limit} (the target's output limit)"
    if default is None or target.context_window is None or ratios is None:
        return parsed, None
    room = target.context_window - ratios.scale(target, prompt_tokens_estimate(parsed))
    if room >= default(target):
        return parsed, None
    room = max(room, 1)
    return _with_cap(parsed, room), f"max_tokens set to {room} (context window {target.context_window} less the prompt)"


def _with_cap(parsed: ParsedChat, cap: int) -> ParsedChat:
    """`parsed` with its output cap (in the field the client used) set to `cap`, in both the
    canonical request and the raw fields passed through."""
    field = "max_completion_tokens" if isinstance(parsed.req.max_completion_tokens, int) else "max_tokens"
    req = msgspec.structs.replace(parsed.req, **{field: cap})
    return msgspec.structs.replace(parsed, req=req, raw={**parsed.raw, field: msgspec.Raw(str(cap).encode())})


# One attempt at one target: (target, adapter, gate) -> result. Raises InvalidRequest when
# the target cannot honour the request (before anything is sent), UpstreamError on failure.
Attempt = Callable[[Target, Adapter, _Gate], Awaitable[T]]


@dataclass(slots=True)
class Walk:
    """The mutable state of one request's walk through its plan."""

    route: ModelRoute
    control: Control
    outcome: Outcome
    tokens: int  # reserved against tpm
    prompt_tokens: int
    max_output: int | None
    operation: str = "chat"  # the GenAI operation name on attempt spans
    failures: list[UpstreamError] = field(default_factory=list)
    refusals: list[InvalidRequest] = field(default_factory=list)
    limited: list[LimitExceeded] = field(default_factory=list)
    # After a provider's context-length error, only targets with a larger configured window.
    context_floor: int | None = None
    bucket: str = ""  # the prompt-feature bucket, for groups using strategy quality


def new_walk(route: ModelRoute, control: Control, outcome: Outcome, parsed: ParsedChat) -> Walk:
    prompt = prompt_tokens_estimate(parsed)
    cap = parsed.req.output_cap
    outcome.tags = control.tags
    return Walk(
        route,
        control,
        outcome,
        tokens=prompt + (cap or DEFAULT_OUTPUT_RESERVATION),
        prompt_tokens=prompt,
        max_output=cap,
        bucket=bucket_of(parsed, prompt) if route.quality is not None else "",
    )


def retry_pause(policy: RetryConfig, rounds: int, failures: list[UpstreamError]) -> float:
    hinted = [f.retry_after_s for f in failures if f.retry_after_s is not None]
    if hinted:  # the provider said when: wait that long (and no shorter)
        return max(min(hinted), backoff_s(policy, rounds))
    return backoff_s(policy, rounds)


def give_up(w: Walk, deadline_passed: bool) -> GatewayError:
    """The error a walk that found no answer ends with."""
    if deadline_passed and not any(isinstance(f, UpstreamTimeout) and f.phase == "deadline" for f in w.failures):
        w.failures.append(
            UpstreamTimeout("the request deadline (x-aiogw-timeout-ms) passed", phase="deadline", target="")
        )
    if w.refusals and not w.failures and not w.limited:
        return w.refusals[0]  # no target could take the request as asked
    too_small = [a for a in w.outcome.attempts if a.failure == "context_window"]
    if too_small and len(too_small) == len(w.outcome.attempts):
        return InvalidRequest(
            f"The request (~{w.prompt_tokens} estimated prompt tokens, each target's count scaled by its token ratio, + "
            f"{w.max_output or 0} max tokens) exceeds the context window of every target of model "
            f"'{w.route.name}'. Shorten the messages or lower max_tokens.",
            code="context_length_exceeded",
            param="messages",
        )
    if w.failures and all(f.failure_class is FailureClass.CONTEXT_LENGTH for f in w.failures):
        return w.failures[0]  # the caller's prompt is too long for every target: a 400
    if w.limited and not w.failures:
        wait = min(x.retry_after_s for x in w.limited)
        reasons = ", ".join(sorted({f"{x.target_id} ({x.reason})" for x in w.limited}))
        return GatewayRateLimited(
            f"Every target of model '{w.route.name}' is at its rate limit: {reasons}. Retry after {wait:.1f} s.",
            retry_after_s=max(1.0, wait),
        )
    skipped = tuple(f"{x.target_id}: skipped, at its {x.reason} limit" for x in w.limited)
    return AllAttemptsFailed(tuple(w.failures), model=w.route.name, skipped=skipped)
