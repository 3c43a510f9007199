"""Gemini: reading what it sends back (docs/providers.md §5): the GenerateContentResponse,
its errors (also an error object inside a 200 stream), the streamed responses, as canonical
replies and deltas. The request side (and embeddings) is `gemini.py`.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Mapping
from typing import Any

import msgspec

from aiogw.adapters import _base as base
from aiogw.errors import FailureClass, UpstreamError
from aiogw.types import (
    Choice,
    CompletionTokensDetails,
    CompletionUsage,
    Delta,
    FinishReason,
    FunctionCall,
    PromptTokensDetails,
    Reply,
    ResponseMessage,
    ToolCall,
)

_encode = msgspec.json.Encoder().encode

FINISH: dict[str, FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "FINISH_REASON_UNSPECIFIED": "stop",
    "OTHER": "stop",
    "IMAGE_OTHER": "stop",
    "NO_IMAGE": "stop",
    **dict.fromkeys(
        ("SAFETY", "RECITATION", "LANGUAGE", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII",
         "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION"),
        "content_filter",
    ),
}  # fmt: skip
# Finish reasons that mean the answer is unusable: an error, never a clean `stop` (§1.3).
FAILED_FINISH = frozenset({"MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS"})

STATUS_CLASS: dict[str, FailureClass] = {
    "INVALID_ARGUMENT": FailureClass.CALLER_FAULT,
    "FAILED_PRECONDITION": FailureClass.CREDENTIAL,  # region or billing: this account cannot serve
    "PERMISSION_DENIED": FailureClass.CREDENTIAL,
    "UNAUTHENTICATED": FailureClass.CREDENTIAL,
    "NOT_FOUND": FailureClass.MODEL_GONE,
    "RESOURCE_EXHAUSTED": FailureClass.RATE_LIMIT,
    "UNAVAILABLE": FailureClass.OVERLOADED,
    "DEADLINE_EXCEEDED": FailureClass.TIMEOUT,
    "INTERNAL": FailureClass.TRANSIENT,
}


# --- tool-call ids carry thought signatures ---------------------------------------------------
# Minted here, when a call arrives; split again by the request side when the call comes back.

SIGNATURE_SEP = "__ts_"


def make_call_id(signature: str | None, given: str | None = None) -> str:
    base_id = given or "call_" + secrets.token_urlsafe(18).replace("-", "x").replace("_", "y")
    if not signature:
        return base_id
    return base_id + SIGNATURE_SEP + base64.urlsafe_b64encode(signature.encode()).decode().rstrip("=")


def split_call_id(call_id: str) -> tuple[str, str | None]:
    head, sep, enc = call_id.partition(SIGNATURE_SEP)
    if not sep:
        return call_id, None
    try:
        return head, base64.urlsafe_b64decode(enc + "=" * (-len(enc) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return call_id, None


# --- response -----------------------------------------------------------------------------


class _FunctionCall(msgspec.Struct):
    name: str = ""
    args: msgspec.Raw = msgspec.Raw(b"{}")
    id: str | None = None


class _Part(msgspec.Struct, rename="camel"):
    text: str | None = None
    thought: bool = False
    function_call: _FunctionCall | None = None
    thought_signature: str | None = None


class _Content(msgspec.Struct):
    parts: list[_Part] = []


class _TokenLogprob(msgspec.Struct, rename="camel"):
    token: str = ""
    log_probability: float = 0.0


class _TopCandidates(msgspec.Struct):
    candidates: list[_TokenLogprob] = []


class _LogprobsResult(msgspec.Struct, rename="camel"):
    chosen_candidates: list[_TokenLogprob] = []
    top_candidates: list[_TopCandidates] = []  # one per step, with `logprobs: k`


class _Candidate(msgspec.Struct, rename="camel"):
    content: _Content | None = None
    finish_reason: str | None = None
    index: int = 0
    logprobs_result: _LogprobsResult | None = None


class _UsageMetadata(msgspec.Struct, rename="camel"):
    prompt_token_count: int = 0
    candidates_token_count: int = 0
    thoughts_token_count: int = 0
    cached_content_token_count: int = 0
    tool_use_prompt_token_count: int = 0
    total_token_count: int = 0


class _PromptFeedback(msgspec.Struct, rename="camel"):
    block_reason: str | None = None


class _ErrorDetail(msgspec.Struct):
    code: int = 0
    message: str = ""
    status: str = ""
    details: list[dict[str, Any]] = []


class _Response(msgspec.Struct, rename="camel"):
    candidates: list[_Candidate] = []
    usage_metadata: _UsageMetadata | None = None
    prompt_feedback: _PromptFeedback | None = None
    model_version: str | None = None
    response_id: str | None = None
    error: _ErrorDetail | None = None


_decode_response = msgspec.json.Decoder(_Response).decode


def usage_of(u: _UsageMetadata) -> CompletionUsage:
    """Thoughts are not inside candidatesTokenCount; OpenAI counts them as completion tokens."""
    prompt = u.prompt_token_count + u.tool_use_prompt_token_count
    completion = u.candidates_token_count + u.thoughts_token_count
    return CompletionUsage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=u.total_token_count or prompt + completion,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=u.cached_content_token_count),
        completion_tokens_details=CompletionTokensDetails(reasoning_tokens=u.thoughts_token_count),
    )


def _token(t: _TokenLogprob) -> dict[str, Any]:
    return {"token": t.token, "logprob": t.log_probability, "bytes": list(t.token.encode())}


def logprobs_of(r: _LogprobsResult | None) -> msgspec.Raw | None:
    """Gemini's chosen token per step (and its top candidates) -> OpenAI's `logprobs`."""
    if r is None or not r.chosen_candidates:
        return None
    tops = r.top_candidates
    content = [
        _token(c) | {"top_logprobs": [_token(t) for t in tops[i].candidates] if i < len(tops) else []}
        for i, c in enumerate(r.chosen_candidates)
    ]
    return msgspec.Raw(_encode({"content": content, "refusal": None}))


def _finish(reason: str | None, called: bool, target: base.Target) -> FinishReason:
    if reason in FAILED_FINISH:
        raise base.status_error(
            target, 502, {}, message=f"the model ended with {reason}", upstream_type=reason, upstream_code=None
        )
    finish = FINISH.get(reason or "STOP", "stop")
    return "tool_calls" if called and finish == "stop" else finish


def decode_response(body: bytes, target: base.Target) -> Reply:
    try:
        r = _decode_response(body)
    except msgspec.MsgspecError as exc:
        raise base.protocol_error(target, f"not a GenerateContentResponse: {exc}") from None
    if r.error is not None:
        raise _error(r.error.code or 500, {}, r.error, target)
    usage = usage_of(r.usage_metadata) if r.usage_metadata else None
    model = r.model_version or target.model
    choices: list[Choice] = []
    for cand in sorted(r.candidates, key=lambda c: c.index):
        texts: list[str] = []
        thoughts: list[str] = []
        calls: list[ToolCall] = []
        for part in cand.content.parts if cand.content else ():
            if part.function_call is not None:
                fc = part.function_call
                call_id = make_call_id(part.thought_signature, fc.id)
                calls.append(
                    ToolCall(id=call_id, function=FunctionCall(name=fc.name, arguments=bytes(fc.args).decode()))
                )
            elif part.text:
                (thoughts if part.thought else texts).append(part.text)
        message = base.response_message(texts, calls, thoughts)
        finish = _finish(cand.finish_reason, bool(calls), target)
        choices.append(
            Choice(index=cand.index, message=message, logprobs=logprobs_of(cand.logprobs_result), finish_reason=finish)
        )
    if not choices:  # the prompt itself was blocked: an empty, filtered answer
        blocked = r.prompt_feedback is not None and r.prompt_feedback.block_reason
        choices.append(
            Choice(index=0, message=ResponseMessage(), finish_reason="content_filter" if blocked else "stop")
        )
    out = base.completion_body(
        model=model, message=choices[0].message, finish_reason=choices[0].finish_reason or "stop", usage=usage,
        completion_id=f"chatcmpl-{r.response_id}" if r.response_id else None, extra_choices=choices[1:],
        logprobs=choices[0].logprobs,
    )  # fmt: skip
    finishes = tuple(c.finish_reason or "stop" for c in choices)
    return Reply(body=out, usage=usage, model=model, finish_reasons=finishes)


# --- errors -------------------------------------------------------------------------------


class _ErrorBody(msgspec.Struct):
    error: _ErrorDetail | None = None


_RETRY_DELAY = re.compile(r"^(\d+(?:\.\d+)?)s$")


def _error(status: int, headers: Mapping[str, str], d: _ErrorDetail, target: base.Target) -> UpstreamError:
    reasons = {str(x.get("reason")) for x in d.details if isinstance(x, dict)}
    retry: dict[str, str] = dict(headers)
    for x in d.details:  # RetryInfo {"retryDelay": "38s"} is Gemini's retry-after
        m = _RETRY_DELAY.match(str(x.get("retryDelay", "")))
        if m and "retry-after" not in retry:
            retry["retry-after"] = m.group(1)
    err = base.status_error(
        target, status, retry, message=d.message, upstream_type=d.status or None, upstream_code=None
    )
    cls = STATUS_CLASS.get(d.status)
    if "API_KEY_INVALID" in reasons:
        cls = FailureClass.CREDENTIAL
    if cls is not None and err.failure_class is not FailureClass.CONTEXT_LENGTH:
        err.failure_class = cls
    return err


def decode_error(status: int, headers: Mapping[str, str], body: bytes, target: base.Target) -> UpstreamError:
    text = body.strip()
    if text.startswith(b"[") and text.endswith(b"]"):
        text = text[1:-1]  # the streamed-JSON endpoint wraps the error in a one-element array
    try:
        detail = _decode_error(text).error or _ErrorDetail()
    except msgspec.MsgspecError:
        detail = _ErrorDetail(message=body[:300].decode("utf-8", "replace").strip())
    return _error(status, headers, detail, target)


_decode_error = msgspec.json.Decoder(_ErrorBody).decode


# --- streaming ----------------------------------------------------------------------------


class StreamDecoder:
    """Each SSE event is a GenerateContentResponse holding only new parts; no end marker:
    a finishReason on every candidate is the normal end (docs/providers.md §5.3)."""

    __slots__ = ("_called", "_finish", "_open", "_target", "_tools", "_usage", "complete")

    def __init__(self, target: base.Target) -> None:
        self._target = target
        self._tools: dict[int, int] = {}  # candidate -> next tool index
        self._called: set[int] = set()
        self._open: set[int] = set()  # candidates seen
        self._finish: dict[int, FinishReason] = {}
        self._usage: _UsageMetadata | None = None
        self.complete = False

    def feed(self, event: str, data: bytes) -> list[Delta]:
        try:
            r = _decode_response(data)
        except msgspec.MsgspecError:
            raise base.protocol_error(self._target, "stream event is not a GenerateContentResponse") from None
        if r.error is not None:
            raise _error(r.error.code or 500, {}, r.error, self._target)
        out: list[Delta] = []
        if r.usage_metadata is not None:
            self._usage = r.usage_metadata  # provisional until the last event
        if not r.candidates and r.prompt_feedback is not None and r.prompt_feedback.block_reason:
            self._finish[0] = "content_filter"
            self._open.add(0)
            out.append(Delta(content=""))
        for cand in r.candidates:
            c = cand.index
            if c not in self._open:
                self._open.add(c)
                out.append(Delta(choice=c, content=""))  # the role chunk, as OpenAI starts
            for part in cand.content.parts if cand.content else ():
                if part.function_call is not None:
                    fc = part.function_call
                    k = self._tools.get(c, 0)
                    self._tools[c] = k + 1
                    self._called.add(c)
                    # A call arrives whole; it is re-emitted the way OpenAI streams calls (id and
                    # name with empty arguments, then the arguments), so a client sees one shape
                    # whichever provider answers.
                    out.append(Delta.tool_start(k, make_call_id(part.thought_signature, fc.id), fc.name, choice=c))
                    out.append(Delta.tool_args_fragment(k, bytes(fc.args).decode(), choice=c))
                elif part.text and part.thought:
                    out.append(Delta(choice=c, reasoning=part.text))
                elif part.text:
                    # The event's logprobs cover its new tokens: they ride on its first text.
                    lp, cand.logprobs_result = logprobs_of(cand.logprobs_result), None
                    out.append(Delta(choice=c, content=part.text, logprobs=lp))
            if cand.finish_reason:
                self._finish[c] = _finish(cand.finish_reason, c in self._called, self._target)
        if self._open and self._open <= set(self._finish) and not self.complete:
            self.complete = True
            out += [Delta(choice=c, finish_reason=f) for c, f in sorted(self._finish.items())]
            if self._usage is not None:
                out.append(Delta(usage=usage_of(self._usage)))
        return out
