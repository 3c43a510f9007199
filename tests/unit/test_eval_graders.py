"""aiogw eval's graders, dataset checks and statistics, one by one."""

from __future__ import annotations

import pytest

from aiogw.eval import compare, report
from aiogw.eval.dataset import DatasetError, load
from aiogw.eval.graders import GraderError, Output, check, grade, read_verdict
from aiogw.quality.judge import judge_request


def _g(grader, expected, text="", options=None, calls=()):
    assert check(grader, expected, options or {}) is None
    return grade(grader, expected, options or {}, Output(text, tuple(calls))).passed


def test_exact():
    assert _g("exact", "Paris", "  Paris\n")
    assert not _g("exact", "Paris", "paris")
    assert _g("exact", "Paris", "paris", {"ignore_case": True})
    assert not _g("exact", "Paris", "Paris, France")


def test_contains():
    assert _g("contains", "paris", "It is PARIS.")
    assert not _g("contains", "paris", "It is PARIS.", {"ignore_case": False})
    assert _g("contains", ["bike", "lane"], "a new bike lane")
    assert not _g("contains", ["bike", "road"], "a new bike lane")


def test_regex():
    assert _g("regex", r"^\d{3}-\d{4}$", "555-1234")
    assert not _g("regex", r"^\d{3}-\d{4}$", "call 555-1234")
    assert _g("regex", "yes", "YES", {"ignore_case": True})


def test_json_schema():
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    assert _g("json_schema", schema, '```json\n{"age": 3}\n```')
    assert not _g("json_schema", schema, '{"age": "3"}')
    assert not _g("json_schema", schema, "no json here")
    assert "not a valid JSON Schema" in check("json_schema", {"type": 12}, {})


def test_json_match():
    want = {"name": "Hana", "age": 60, "tags": [1, 2]}
    assert _g("json_match", want, 'Here: {"tags": [1, 2.0], "age": 60, "name": "Hana"}')
    assert not _g("json_match", want, '{"tags": [2, 1], "age": 60, "name": "Hana"}')
    assert not _g("json_match", want, '{"tags": [1, 2], "age": 60, "name": "Hana", "x": 1}')
    assert _g("json_match", want, '{"tags": [1, 2], "age": 60, "name": "Hana", "x": 1}', {"subset": True})
    assert not _g("json_match", {"ok": True}, '{"ok": 1}')  # true is not 1


def test_numeric():
    assert _g("numeric", 396, "The answer is 396.")
    assert _g("numeric", "1234.5", "Total: 1,234.5")
    assert _g("numeric", 100, "first 3, finally 100")  # the last number counts
    assert not _g("numeric", 396, "395")
    assert _g("numeric", 100, "101", {"rel_tol": 0.02})
    assert not _g("numeric", 5, "no number")
    assert check("numeric", "many", {}) == '"expected" must be a number'


def test_choice():
    opts = {"choices": ["A", "B", "C"]}
    assert _g("choice", "B", "B", opts)
    assert _g("choice", "B", "The answer is (b) negative", opts)
    assert not _g("choice", "B", "A) positive, not B", opts)  # the first named choice counts
    assert not _g("choice", "B", "Because", opts)  # a letter inside a word is no choice
    assert _g("choice", "negative", "Negative.", {"choices": ["positive", "negative"]})
    assert "among the choices" in check("choice", "D", opts)


def test_tool_call():
    call = {"name": "get_weather", "arguments": '{"city": "Oslo", "unit": "c"}'}
    assert _g("tool_call", {"name": "get_weather"}, calls=[call])
    assert _g("tool_call", {"name": "get_weather", "arguments": {"city": "Oslo", "unit": "c"}}, calls=[call])
    assert not _g("tool_call", {"name": "get_weather", "arguments": {"city": "Oslo"}}, calls=[call])
    assert _g("tool_call", {"name": "get_weather", "arguments": {"city": "Oslo"}}, "", {"subset": True}, [call])
    assert not _g("tool_call", {"name": "get_time"}, calls=[call])
    assert not _g("tool_call", {"name": "get_weather"}, "I would call get_weather")


def test_llm_judge_request_and_verdict():
    body = judge_request("smart", "Summarize X", "X took place.", "X happened.")
    assert body["model"] == "smart" and body["temperature"] == 0
    assert body["response_format"]["type"] == "json_schema"
    user = body["messages"][-1]["content"]
    assert "<candidate>\nX took place.\n</candidate>" in user and "<expected>\nX happened.\n</expected>" in user
    strict = judge_request("smart", "q", "a", "e", "Be strict.")["messages"][0]["content"]
    assert strict.startswith("Be strict.") and '"verdict"' in strict  # the reply's shape is always asked
    g = read_verdict('{"verdict": "pass", "score": 0.8, "reason": "same meaning"}')
    assert g.passed and g.score == 0.8 and g.detail == "same meaning"
    assert read_verdict('{"verdict": "fail", "score": "high", "reason": ""}').score == 0.0
    for bad in ("PASS", '{"verdict": "maybe"}', "[]"):
        with pytest.raises(GraderError):
            read_verdict(bad)


def test_unknown_grader_options_are_named():
    assert check("exact", "x", {"tolerance": 1}) == "unknown option(s) tolerance; known: ignore_case"


def test_a_dataset_problem_names_its_file_and_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(
        '{"id": 1, "task": "math", "prompt": "1+1?", "expected": 2, "grader": "numeric"}\n'
        "\n"
        '{"id": 2, "task": "math", "prompt": "2+2?"}\n'
        "{not json\n"
        '{"id": 1, "task": "math", "prompt": "3+3?", "expected": 6}\n'
        '{"id": 4, "task": "bad task", "prompt": "?", "expected": 6}\n'
        '{"id": 5, "task": "m", "prompt": "?", "expected": 6, "grader": "fuzzy"}\n'
        '{"id": 6, "task": "m", "messages": [], "expected": 6}\n'
    )
    with pytest.raises(DatasetError) as info:
        load(path)
    lines = [p.split(": ", 1)[0] for p in info.value.problems]
    assert lines == [f"{path}:{n}" for n in (3, 4, 5, 6, 7, 8)]
    text = "\n".join(info.value.problems)
    assert '"expected" is missing' in text and "not JSON" in text and "duplicate id" in text
    assert "first on line 1" in text and '"task" must be' in text and "fuzzy" in text


def test_a_good_dataset_loads_with_prompt_or_messages_and_grader_options(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(
        '{"id": "a", "task": "math", "prompt": "1+1?", "expected": 2, "grader": {"type": "numeric", "rel_tol": 0.1}}\n'
        '{"id": "b", "task": "chat", "messages": [{"role": "user", "content": "hi"}], "expected": "hi"}\n'
    )
    a, b = load(path)
    assert a.messages == [{"role": "user", "content": "1+1?"}] and a.options == {"rel_tol": 0.1}
    assert b.grader == "exact" and b.line == 2


def test_wilson_interval():
    lo, hi = report.wilson(1.0, 12)
    assert round(lo, 3) == 0.758 and hi == 1.0
    lo, hi = report.wilson(0.5, 100)
    assert round(lo, 3) == 0.404 and round(hi, 3) == 0.596
    assert report.wilson(0.0, 0) == (0.0, 1.0)


def test_cutoffs_parse_and_apply():
    assert report.cutoffs("0.9") == {"*": 0.9}
    assert report.cutoffs("math=0.95, *=0.5") == {"math": 0.95, "*": 0.5}
    with pytest.raises(ValueError, match="between 0 and 1"):
        report.cutoffs("95")
    summary = {"m": {"math": {"mean": 0.9, "n": 10}, "chat": {"mean": 0.6, "n": 10}, "*": {"mean": 0.75, "n": 20}}}
    assert report.missed(summary, {"math": 0.95, "*": 0.5}) == ["m math: mean 0.900 < cutoff 0.95 (n=10)"]


def test_mcnemar():
    assert compare.mcnemar_p(0, 0) == 1.0
    assert compare.mcnemar_p(5, 5) == 1.0
    assert round(compare.mcnemar_p(0, 6), 4) == 0.0312
