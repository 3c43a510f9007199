"""Graders: how an answer is scored against an item's `expected`. Each gives a score in
[0, 1] and passed (score 1 for the pass/fail ones); `llm_judge` asks a judge model, through
the gateway, for a verdict in a structured field (runner.py sends it; this module builds the
request and reads the verdict)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from aiogw.quality.judge import verdict_of

DEFAULT_REL_TOL = 1e-6
DEFAULT_ABS_TOL = 1e-9


@dataclass(frozen=True)
class Grade:
    score: float
    passed: bool
    detail: str = ""


@dataclass(frozen=True)
class Output:
    """What a model answered: its text and its tool calls ({"name", "arguments" (a JSON string)})."""

    text: str
    tool_calls: tuple[dict[str, Any], ...] = ()


class GraderError(Exception):
    """The grade cannot be given (a judge that does not answer in the shape asked): the item
    counts as an error, not as a failure."""


def check(grader: str, expected: Any, options: dict[str, Any]) -> str | None:
    """What is wrong with an item's `expected` and options for `grader`, or None."""
    known = _OPTIONS[grader]
    unknown = sorted(set(options) - known)
    if unknown:
        return f"unknown option(s) {', '.join(unknown)}" + (f"; known: {', '.join(sorted(known))}" if known else "")
    for key in ("rel_tol", "abs_tol"):
        if key in options and not (isinstance(options[key], int | float) and options[key] >= 0):
            return f"{key} must be a number, 0 or more"
    for key in ("ignore_case", "subset"):
        if key in options and not isinstance(options[key], bool):
            return f"{key} must be true or false"
    if grader in ("exact", "regex") and not isinstance(expected, str):
        return '"expected" must be a string'
    if grader == "contains" and not (
        isinstance(expected, str)
        or (isinstance(expected, list) and expected and all(isinstance(e, str) for e in expected))
    ):
        return '"expected" must be a string or a non-empty array of strings (all must appear)'
    if grader == "regex":
        try:
            re.compile(expected)
        except re.error as exc:
            return f'"expected" is not a valid regular expression: {exc}'
    if grader == "numeric" and _number(expected) is None:
        return '"expected" must be a number'
    if grader == "choice":
        choices = options.get("choices")
        if choices is not None and not (isinstance(choices, list) and all(isinstance(c, str) and c for c in choices)):
            return '"choices" must be an array of strings'
        if not isinstance(expected, str) or (choices is not None and expected not in choices):
            return '"expected" must be a string' + (" among the choices" if choices is not None else "")
    if grader == "tool_call" and not (
        isinstance(expected, dict)
        and isinstance(expected.get("name"), str)
        and isinstance(expected.get("arguments", {}), dict)
        and set(expected) <= {"name", "arguments"}
    ):
        return '"expected" must be {"name": ..., "arguments"?: {...}}'
    if grader == "json_schema":
        if not isinstance(expected, dict):
            return '"expected" must be a JSON Schema (an object)'
        try:
            import jsonschema  # noqa: PLC0415 - the eval extra
        except ImportError:
            return "needs the 'eval' extra: pip install 'aiogw[eval]'"
        try:
            jsonschema.validators.validator_for(expected).check_schema(expected)
        except jsonschema.SchemaError as exc:
            return f'"expected" is not a valid JSON Schema: {exc.message}'
    if grader == "llm_judge" and not isinstance(options.get("rubric", ""), str):
        return '"rubric" must be a string'
    return None


_OPTIONS: dict[str, set[str]] = {
    "exact": {"ignore_case"},
    "contains": {"ignore_case"},
    "regex": {"ignore_case"},
    "json_schema": set(),
    "json_match": {"subset"},
    "numeric": {"rel_tol", "abs_tol"},
    "choice": {"choices"},
    "tool_call": {"subset"},
    "llm_judge": {"rubric"},
}


def grade(grader: str, expected: Any, options: dict[str, Any], out: Output) -> Grade:
    """Every grader but llm_judge (see judge_request / read_verdict)."""
    ok, detail = _GRADE[grader](expected, options, out)
    return Grade(1.0 if ok else 0.0, ok, detail)


def _exact(expected: str, options: dict[str, Any], out: Output) -> tuple[bool, str]:
    got, want = out.text.strip(), expected.strip()
    if options.get("ignore_case"):
        got, want = got.casefold(), want.casefold()
    return got == want, ""


def _contains(expected: str | list[str], options: dict[str, Any], out: Output) -> tuple[bool, str]:
    wanted = [expected] if isinstance(expected, str) else expected
    fold = options.get("ignore_case", True)
    text = out.text.casefold() if fold else out.text
    missing = [w for w in wanted if (w.casefold() if fold else w) not in text]
    return not missing, f"missing {missing!r}" if missing else ""


def _regex(expected: str, options: dict[str, Any], out: Output) -> tuple[bool, str]:
    flags = re.DOTALL | (re.IGNORECASE if options.get("ignore_case") else 0)
    return re.search(expected, out.text, flags) is not None, ""


def _json_schema(expected: dict[str, Any], _options: dict[str, Any], out: Output) -> tuple[bool, str]:
    import jsonschema  # noqa: PLC0415 - the eval extra (checked when the dataset loads)

    value, problem = parse_json(out.text)
    if problem:
        return False, problem
    error = jsonschema.validators.validator_for(expected)(expected).iter_errors(value)
    first = next(iter(error), None)
    return first is None, first.message if first is not None else ""


def _json_match(expected: Any, options: dict[str, Any], out: Output) -> tuple[bool, str]:
    value, problem = parse_json(out.text)
    if problem:
        return False, problem
    return same_json(expected, value, subset=bool(options.get("subset"))), ""


def _numeric(expected: Any, options: dict[str, Any], out: Output) -> tuple[bool, str]:
    numbers = _NUMBER.findall(out.text)
    if not numbers:
        return False, "no number in the answer"
    got, want = float(numbers[-1].replace(",", "")), _number(expected)
    assert want is not None  # checked when the dataset loaded
    rel, abs_ = options.get("rel_tol", DEFAULT_REL_TOL), options.get("abs_tol", DEFAULT_ABS_TOL)
    return math.isclose(got, want, rel_tol=rel, abs_tol=abs_), f"read {got:g}"


def _choice(expected: str, options: dict[str, Any], out: Output) -> tuple[bool, str]:
    picked = chosen(out.text, options.get("choices") or [expected])
    return picked is not None and picked.casefold() == expected.casefold(), f"chose {picked!r}"


def _tool_call(expected: dict[str, Any], options: dict[str, Any], out: Output) -> tuple[bool, str]:
    if not out.tool_calls:
        return False, "no tool call"
    call = out.tool_calls[0]
    if call.get("name") != expected["name"]:
        return False, f"called {call.get('name')!r}"
    if "arguments" not in expected:
        return True, ""
    args, problem = parse_json(call.get("arguments") or "{}")
    if problem:
        return False, f"arguments: {problem}"
    return same_json(expected["arguments"], args, subset=bool(options.get("subset"))), ""


_GRADE: dict[str, Callable[[Any, dict[str, Any], Output], tuple[bool, str]]] = {
    "exact": _exact,
    "contains": _contains,
    "regex": _regex,
    "json_schema": _json_schema,
    "json_match": _json_match,
    "numeric": _numeric,
    "choice": _choice,
    "tool_call": _tool_call,
}

_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")
_FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*\n(.*?)\n?```\s*$", re.DOTALL)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.replace(",", ""))
        except ValueError:
            return None
    return None


def parse_json(text: str) -> tuple[Any, str]:
    """The JSON value an answer holds (a ```json fence or text around one object allowed)."""
    text = text.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        return orjson.loads(text), ""
    except orjson.JSONDecodeError:
        pass
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        try:
            return orjson.loads(text[start : end + 1]), ""
        except orjson.JSONDecodeError:
            pass
    return None, "the answer is not JSON"


def same_json(expected: Any, got: Any, *, subset: bool = False) -> bool:
    """Equal as JSON values (1 == 1.0, key order aside); with `subset`, objects in `got` may
    have more keys than expected."""
    if isinstance(expected, dict):
        if not isinstance(got, dict) or (not subset and set(got) != set(expected)):
            return False
        return all(k in got and same_json(v, got[k], subset=subset) for k, v in expected.items())
    if isinstance(expected, list):
        return (
            isinstance(got, list)
            and len(got) == len(expected)
            and all(same_json(e, g, subset=subset) for e, g in zip(expected, got, strict=True))
        )
    if isinstance(expected, bool) or isinstance(got, bool):
        return expected is got
    if isinstance(expected, int | float) and isinstance(got, int | float):
        return float(expected) == float(got)
    return bool(expected == got)


def chosen(text: str, choices: list[str]) -> str | None:
    """The choice an answer names first (a whole word, case aside), or None."""
    best: tuple[int, str] | None = None
    for c in choices:
        m = re.search(rf"(?<![A-Za-z0-9]){re.escape(c)}(?![A-Za-z0-9])", text, re.IGNORECASE)
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), c)
    return best[1] if best else None


def read_verdict(text: str) -> Grade:
    """The judge's verdict from its reply (`quality.judge.verdict_of`: the structured field
    only); GraderError when there is none. Without a usable score, pass is 1 and fail 0."""
    v = verdict_of(text)
    if v is None:
        raise GraderError(f"the judge did not answer with a verdict: {text[:200]!r}")
    score = v.score if v.score is not None else (1.0 if v.passed else 0.0)
    return Grade(score, v.passed, v.reason)
