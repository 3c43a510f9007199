"""The judge's verdict is read from its structured field only, and spot checks wait in a
bounded queue that drops (and counts) what does not fit rather than hold the request."""

from __future__ import annotations

import pytest

from aiogw.quality.judge import VERDICT_SCHEMA, judge_request, verdict_of
from aiogw.quality.memory import Remembered
from aiogw.quality.spot_check import Capture, SpotChecker


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"verdict": "pass", "score": 0.9, "reason": "right"}', ("pass", 0.9, "right")),
        ('{"verdict": "FAIL", "score": 0, "reason": "wrong city"}', ("fail", 0.0, "wrong city")),
        ('Here you go:\n```json\n{"verdict": "fail", "score": 0.2, "reason": "r"}\n```', ("fail", 0.2, "r")),
        ('{"verdict": "pass", "score": 7, "reason": 3}', ("pass", None, "")),  # out of range: no score
        ('{"verdict": "pass", "score": true}', ("pass", None, "")),
    ],
)
def test_a_verdict_is_read_from_its_field(text, expected):
    v = verdict_of(text)
    assert v is not None and (v.verdict, v.score, v.reason) == expected


@pytest.mark.parametrize(
    "text", ["The answer is correct.", "pass", '{"verdict": "maybe"}', '{"score": 1}', "[1, 2]", ""]
)
def test_no_verdict_is_guessed_from_free_text(text):
    assert verdict_of(text) is None


def test_the_judge_is_asked_for_the_schema_at_temperature_zero():
    body = judge_request("smart", "user: 2+2?", "4", expected="4")
    assert body["temperature"] == 0
    assert body["response_format"]["json_schema"]["schema"] is VERDICT_SCHEMA
    assert "<expected>\n4\n</expected>" in body["messages"][1]["content"]


async def test_a_full_spot_check_queue_drops_and_counts():
    counted: list[str] = []

    async def grade(body):
        raise AssertionError("not started: nothing is graded")

    checker = SpotChecker(None, grade, lambda m, v: None, counted.append, queue_size=1)  # type: ignore[arg-type]
    memory = Remembered("r", "anonymous", "auto", "chat", "", "sim/m", 0.0)
    checker.offer(memory, Capture("judge"))
    checker.offer(memory, Capture("judge"))
    assert counted == ["dropped"]


def test_a_streamed_answer_is_read_from_its_chunks():
    c = Capture("judge", chunks=[b'data: {"choices":[{"index":0,"delta":{"content":"Par"}}]}\n\n',
                                 b'data: {"choices":[{"index":0,"delta":{"content":"is"}}]}\n\ndata: [DONE]\n\n'])  # fmt: skip
    assert c.answer_text() == "Paris"
