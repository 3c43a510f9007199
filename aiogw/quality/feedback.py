"""`POST /v1/feedback`: the body read and checked, each item matched to its request's memory
and caller, and the rows stored with their corrections.

A batch is all or nothing: every item is checked (types, then the request's memory, then
the caller, then the metric, then duplicates) before anything is stored, and the first bad
item's error is the answer (its `param` names it, e.g. `items[3].value`); the rows are then
written in one transaction, whose unique (request, metric) constraint settles a race
between two replicas (409)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from aiogw.errors import Duplicate, Forbidden, InvalidRequest, NotFound, PayloadTooLarge, Unprocessable
from aiogw.ids import hex_id
from aiogw.quality.memory import Remembered, RequestMemory
from aiogw.store.base import Conflict, Store

MAX_ITEMS = 1000
ALWAYS_KNOWN = "correct"
MAX_REQUEST_ID = 200  # as the x-request-id the gateway accepts
_FIELDS = frozenset({"request_id", "metric", "value", "correction"})
_COLUMNS = ("id", "request_id", "metric", "value", "correction", "caller", "grp", "task", "bucket", "target", "at")
_INSERT = f"INSERT INTO aiogw_feedback ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"


@dataclass(frozen=True, slots=True)
class Item:
    request_id: str
    metric: str
    value: float  # in [0, 1]; true/false are 1.0/0.0
    correction: str | None


@dataclass(frozen=True, slots=True)
class Accepted:
    id: str
    item: Item
    memory: Remembered


def parse(body: bytes) -> tuple[list[Item], bool]:
    """The items and whether the body was a batch (`{"items": [...]}`)."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidRequest("The body is not valid JSON; send a JSON object.", code="invalid_json") from None
    if not isinstance(obj, dict):
        raise Unprocessable('Expected a JSON object: {"request_id", "metric", "value"} or {"items": [...]}.')
    if "items" not in obj:
        return [_item(obj, "")], False
    items = obj["items"]
    if not isinstance(items, list) or len(obj) != 1:
        raise Unprocessable('A batch is {"items": [...]} and nothing else.', param="items")
    if len(items) > MAX_ITEMS:
        raise PayloadTooLarge(
            f"A batch holds at most {MAX_ITEMS} items; this one has {len(items)}. Nothing was stored: "
            "send it in smaller batches.",
            param="items",
        )
    if not items:
        raise Unprocessable("The batch has no items.", param="items")
    return [_item(it, f"items[{i}].") for i, it in enumerate(items)], True


def _item(obj: Any, at: str) -> Item:
    if not isinstance(obj, dict):
        raise Unprocessable("Each feedback item is a JSON object.", param=at.rstrip(".") or None)
    unknown = sorted(set(obj) - _FIELDS)
    if unknown:
        raise Unprocessable(
            f"Unknown field '{unknown[0]}'; a feedback item has request_id, metric, value and correction.",
            param=at + unknown[0],
        )
    rid = obj.get("request_id")
    if not isinstance(rid, str) or not 0 < len(rid) <= MAX_REQUEST_ID:
        raise Unprocessable("request_id must be the x-request-id of the answer (a string).", param=at + "request_id")
    metric = obj.get("metric", ALWAYS_KNOWN)
    if not isinstance(metric, str) or not metric:
        raise Unprocessable("metric must be a metric name such as 'correct'.", param=at + "metric")
    value = obj.get("value")
    if isinstance(value, bool):
        number = 1.0 if value else 0.0
    elif isinstance(value, int | float) and math.isfinite(value) and 0 <= value <= 1:
        number = float(value)
    else:
        raise Unprocessable("value must be true, false or a number from 0 to 1.", param=at + "value")
    correction = obj.get("correction")
    if correction is not None and not isinstance(correction, str):
        raise Unprocessable(
            "correction must be a string (the answer that would have been right).", param=at + "correction"
        )
    return Item(rid, metric, number, correction)


async def accept(
    store: Store,
    memory: RequestMemory,
    items: Sequence[Item],
    batch: bool,
    *,
    caller: str,
    sees_all: bool,
    metrics_of: Callable[[str], frozenset[str]],
) -> list[Accepted]:
    """Check every item and store them all, or raise the first item's error and store none.
    `sees_all`: the master key, or no keys configured (anyone may rate any request)."""
    accepted: list[Accepted] = []
    seen: set[tuple[str, str]] = set()
    for i, it in enumerate(items):
        at = f"items[{i}]." if batch else ""
        mem = await memory.find(it.request_id)
        if mem is None:
            raise NotFound(
                f"No answered request '{it.request_id}' is known here (unknown, or older than the "
                f"{memory.retention_s / 86400:g} days feedback is kept). Send the x-request-id of the answer.",
                code="request_not_found",
                param=at + "request_id",
            )
        if not sees_all and mem.caller != caller:
            raise Forbidden(
                f"The request '{it.request_id}' was made by another caller; feedback comes from the key that "
                "made it (or the master key).",
                param=at + "request_id",
            )
        known = metrics_of(mem.group)
        if it.metric not in known:
            raise Unprocessable(
                f"Unknown metric '{it.metric}' for the model '{mem.group}'; known: {', '.join(sorted(known))} "
                "(more are declared under quality.metrics).",
                code="unknown_metric",
                param=at + "metric",
            )
        if (it.request_id, it.metric) in seen:
            raise Duplicate(f"The batch rates request '{it.request_id}' on '{it.metric}' twice.", param=at + "metric")
        seen.add((it.request_id, it.metric))
        accepted.append(Accepted("fb_" + hex_id(12), it, mem))
    await _refuse_duplicates(store, accepted, batch)
    now = memory.clock()
    rows = [
        (a.id, a.item.request_id, a.item.metric, a.item.value, a.item.correction, caller,
         a.memory.group, a.memory.task, a.memory.bucket, a.memory.target, now)
        for a in accepted
    ]  # fmt: skip
    try:
        await store.transaction([(_INSERT, row) for row in rows])
    except Conflict:  # another replica stored the same (request, metric) since the check above
        raise Duplicate("Feedback for this request and metric exists already; nothing was stored.") from None
    return accepted


async def _refuse_duplicates(store: Store, accepted: list[Accepted], batch: bool) -> None:
    ids = sorted({a.item.request_id for a in accepted})
    stored: set[tuple[str, str]] = set()
    for start in range(0, len(ids), 200):  # bounded IN lists
        part = ids[start : start + 200]
        rows = await store.fetchall(
            f"SELECT request_id, metric FROM aiogw_feedback WHERE request_id IN ({', '.join('?' * len(part))})", part
        )
        stored.update((str(r), str(m)) for r, m in rows)
    for i, a in enumerate(accepted):
        if (a.item.request_id, a.item.metric) in stored:
            raise Duplicate(
                f"Feedback on '{a.item.metric}' for request '{a.item.request_id}' exists already; nothing was stored.",
                param=(f"items[{i}]." if batch else "") + "metric",
            )


async def corrections(store: Store, request_id: str) -> list[dict[str, Any]]:
    """The feedback stored for one request (the eval harness and tests read it back)."""
    rows = await store.fetchall(
        "SELECT id, metric, value, correction, caller, at FROM aiogw_feedback WHERE request_id = ? ORDER BY at, id",
        (request_id,),
    )
    return [dict(zip(("id", "metric", "value", "correction", "caller", "at"), r, strict=True)) for r in rows]
