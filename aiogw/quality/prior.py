"""`quality.json`, as `aiogw eval run` writes it and `strategy: quality` reads it as its
prior: per model key and task, n / mean / interval / cost / latency. Parsing is strict about
what the router uses (version, mean in [0, 1], n >= 0) and lenient about fields it does not
read, so a newer writer's extra fields do not break an older gateway."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import msgspec
from msgspec import Meta

PRIOR_VERSION = 1


class BucketPrior(msgspec.Struct, frozen=True, kw_only=True):
    """What the eval measured on the items of one prompt-feature bucket of a task."""

    n: Annotated[float, Meta(ge=0)]
    mean: Annotated[float, Meta(ge=0, le=1)]


class TaskPrior(msgspec.Struct, frozen=True, kw_only=True):
    n: Annotated[float, Meta(ge=0)]
    mean: Annotated[float, Meta(ge=0, le=1)]
    lo: Annotated[float, Meta(ge=0, le=1)] | None = None
    hi: Annotated[float, Meta(ge=0, le=1)] | None = None
    cost_per_item_usd: Annotated[float, Meta(ge=0)] | None = None
    latency_p50_ms: Annotated[float, Meta(ge=0)] | None = None
    latency_p95_ms: Annotated[float, Meta(ge=0)] | None = None
    errors: Annotated[int, Meta(ge=0)] = 0
    # Per prompt-feature bucket of the task's items (aiogw/quality/features.py), when the
    # writer knew them: the router's bucket estimates start from these, so that a task's hard
    # tenth (its own bucket) is not routed by the task's mean. Optional: older files lack it.
    buckets: dict[str, BucketPrior] | None = None


class QualityFile(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    metric: str = "correct"
    created: float | None = None
    models: dict[str, dict[str, TaskPrior]]


def target_keys(target_id: str, type_: str, model: str) -> tuple[str, ...]:
    """The model keys of a quality.json that name a target: its id (`<account>/<model>`),
    `<type>/<model>` (as `aiogw eval --models openai/gpt-4o-mini` writes it), or its upstream
    model. (A public model name whose only target it is names it too.)"""
    return (target_id, f"{type_}/{model}", model)


def parse_prior(data: bytes | str) -> QualityFile:
    """The file's content, or ValueError saying what is wrong and where."""
    try:
        q = msgspec.json.decode(data, type=QualityFile)
    except msgspec.ValidationError as exc:
        raise ValueError(f"not a valid quality.json: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a valid quality.json: cannot parse JSON ({exc})") from None
    if q.version != PRIOR_VERSION:
        raise ValueError(f"not a valid quality.json: version {q.version} (this gateway reads version {PRIOR_VERSION})")
    return q


def read_prior(path: str | Path) -> QualityFile:
    """Read and parse a file (blocking: at config load, or in an executor)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_prior(data)
