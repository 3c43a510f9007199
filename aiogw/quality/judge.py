"""The judge's rubric and its verdict, in one place: spot checks and the eval harness's
`llm_judge` grader send this prompt, and both read the answer with `verdict_of`.

The judge is asked at temperature 0 for a structured answer (`response_format` with a JSON
schema) `{"verdict": "pass"|"fail", "score": 0..1, "reason": "..."}`; the verdict is read
from that field, never guessed from free text (a judge that ignores the schema but still
writes the object, alone or in a ```json fence, is read too; anything else is no verdict)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

REPLY_SHAPE = (
    'Reply with a JSON object only: {"verdict": "pass" or "fail", "score": a number from 0 to 1, '
    '"reason": one short sentence}.'
)
RUBRIC = (
    "You are grading an AI assistant's answer (the candidate). Read the conversation and the "
    "candidate, then decide whether it is correct and fully responsive to the user's last message; "
    "when an expected answer is given, whether it says the same (wording, order and formatting may "
    "differ; facts, numbers and choices may not). " + REPLY_SHAPE
)
MAX_SECTION_CHARS = 16_000  # per conversation / answer / expected: a judge prompt stays bounded

VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "verdict": {"type": "string", "enum": ["pass", "fail"]},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "reason": {"type": "string"},
    },
    "required": ["verdict", "score", "reason"],
    "additionalProperties": False,
}


@dataclass(frozen=True, slots=True)
class Verdict:
    passed: bool
    score: float | None  # in [0, 1] when the judge gave one
    reason: str

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else "fail"


def _clip(text: str) -> str:
    return text if len(text) <= MAX_SECTION_CHARS else text[:MAX_SECTION_CHARS] + " [...]"


def judge_request(
    model: str, conversation: str, answer: str, expected: str | None = None, rubric: str | None = None
) -> dict[str, Any]:
    """The chat body sent to the judge (`model`: its public name or provider/model): the
    rubric (`rubric` replaces the default one; the reply's shape is always asked for), then
    the conversation, the answer between <candidate> tags and, when known, the expected
    answer between <expected> tags."""
    parts = [f"<conversation>\n{_clip(conversation)}\n</conversation>", f"<candidate>\n{_clip(answer)}\n</candidate>"]
    if expected is not None:
        parts.append(f"<expected>\n{_clip(expected)}\n</expected>")
    system = RUBRIC if rubric is None else f"{rubric} {REPLY_SHAPE}"
    return {
        "model": model,
        "temperature": 0,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(parts)}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "verdict", "strict": True, "schema": VERDICT_SCHEMA},
        },
    }


def conversation_text(messages: list[Any]) -> str:
    """A chat request's messages as `role: text` lines (text parts only)."""
    lines = []
    for m in messages:
        if not isinstance(m, dict):
            continue
        content = m.get("content")
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        lines.append(f"{m.get('role', 'user')}: {content if isinstance(content, str) else ''}")
    return "\n".join(lines)


_FENCE = re.compile(r"```(?:json)?\s*(\{.*?\})\s*```", re.DOTALL)


def verdict_of(text: str) -> Verdict | None:
    """The judge's verdict from its answer text; None when there is none to read."""
    obj: Any = None
    for candidate in (text.strip(), *(m.group(1) for m in _FENCE.finditer(text))):
        try:
            obj = orjson.loads(candidate)
        except orjson.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            break
    if not isinstance(obj, dict):
        return None
    verdict = obj.get("verdict")
    if not isinstance(verdict, str) or verdict.strip().lower() not in ("pass", "fail"):
        return None
    score = obj.get("score")
    if not isinstance(score, int | float) or isinstance(score, bool) or not 0 <= score <= 1:
        score = None
    reason = obj.get("reason")
    return Verdict(
        passed=verdict.strip().lower() == "pass",
        score=float(score) if score is not None else None,
        reason=reason[:500] if isinstance(reason, str) else "",
    )
