"""An evaluation dataset: JSONL, one item a line, checked whole before anything is sent so
that a mistake on line 900 costs nothing (each problem names its line)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from aiogw.eval.graders import check

GRADERS = ("exact", "contains", "regex", "json_schema", "json_match", "numeric", "choice", "tool_call", "llm_judge")
# What `x-aiogw-task` accepts (the gateway answers 400 to anything else).
_TASK = re.compile(r"^[A-Za-z0-9_.:/-]{1,64}$")
_KEYS = {"id", "task", "messages", "prompt", "expected", "grader", "params", "level"}


class DatasetError(Exception):
    """The dataset cannot be used; `problems` are `FILE:LINE: what` lines, every one found."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Item:
    id: str
    task: str
    messages: list[dict[str, Any]]
    expected: Any
    grader: str = "exact"
    options: dict[str, Any] = field(default_factory=dict)  # the grader's own settings
    params: dict[str, Any] = field(default_factory=dict)  # extra request fields (tools, max_tokens, ...)
    line: int = 0

    @property
    def question(self) -> str:
        """The last user message's text (what a judge is shown)."""
        for m in reversed(self.messages):
            if m.get("role") == "user":
                c = m.get("content")
                return c if isinstance(c, str) else " ".join(p.get("text", "") for p in c or [] if isinstance(p, dict))
        return ""


def load(path: str | Path) -> list[Item]:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise DatasetError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    items: list[Item] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            items.append(_item(orjson.loads(line), n, seen))
        except orjson.JSONDecodeError as exc:
            problems.append(f"{path}:{n}: not JSON ({exc})")
        except ValueError as exc:
            problems.append(f"{path}:{n}: {exc}")
    if not items and not problems:
        problems.append(f"{path}: no items (one JSON object a line)")
    if problems:
        raise DatasetError(problems)
    return items


def _item(row: Any, line: int, seen: dict[str, int]) -> Item:
    if not isinstance(row, dict):
        raise ValueError("expected a JSON object")
    unknown = sorted(set(row) - _KEYS)
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_KEYS))}")
    item_id = row.get("id")
    if not isinstance(item_id, str | int) or isinstance(item_id, bool) or str(item_id) == "":
        raise ValueError('"id" must be a non-empty string or an integer')
    item_id = str(item_id)
    if item_id in seen:
        raise ValueError(f'duplicate id "{item_id}" (first on line {seen[item_id]})')
    seen[item_id] = line
    task = row.get("task")
    if not isinstance(task, str) or not _TASK.match(task):
        raise ValueError('"task" must be 1 to 64 characters from A-Z a-z 0-9 _ . : / -')
    messages = _messages(row)
    if "expected" not in row:
        raise ValueError('"expected" is missing')
    grader, options = _grader(row.get("grader", "exact"), row["expected"])
    params = row.get("params", {})
    if not isinstance(params, dict) or {"model", "messages", "stream"} & set(params):
        raise ValueError('"params" must be an object of request fields other than model, messages, stream')
    return Item(item_id, task, messages, row["expected"], grader, options, params, line)


def _messages(row: dict[str, Any]) -> list[dict[str, Any]]:
    if ("messages" in row) == ("prompt" in row):
        raise ValueError('exactly one of "messages" and "prompt" is needed')
    if "prompt" in row:
        if not isinstance(row["prompt"], str) or not row["prompt"]:
            raise ValueError('"prompt" must be a non-empty string')
        return [{"role": "user", "content": row["prompt"]}]
    messages = row["messages"]
    if not isinstance(messages, list) or not messages:
        raise ValueError('"messages" must be a non-empty array')
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ValueError(f'"messages"[{i}] must be an object with a "role"')
    return messages


def _grader(spec: Any, expected: Any) -> tuple[str, dict[str, Any]]:
    """The grader's name and options: `"numeric"` or `{"type": "numeric", "rel_tol": 0.01}`."""
    options: dict[str, Any] = {}
    if isinstance(spec, dict):
        options = {k: v for k, v in spec.items() if k != "type"}
        spec = spec.get("type")
    if spec not in GRADERS:
        raise ValueError(f'"grader" must be one of {", ".join(GRADERS)} (or {{"type": ..., options}}), got {spec!r}')
    problem = check(spec, expected, options)
    if problem:
        raise ValueError(f"grader {spec}: {problem}")
    return spec, options
