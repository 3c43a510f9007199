"""Spot checks: a sampled share of answered requests graded by a judge model, off the
request path. The request's end offers a sample (never waiting: a full queue drops it,
counted); a few workers send each to the judge through the gateway's own dispatcher (routed,
costed, in the ledger under `aiogw=spot-check`), read the verdict (aiogw.quality.judge),
store it, and feed it to the quality estimates (`source="spot_check"`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from aiogw.ids import hex_id
from aiogw.quality.judge import Verdict, conversation_text, judge_request, verdict_of
from aiogw.quality.memory import Remembered
from aiogw.store.base import Store
from aiogw.streaming.sse import data_objects
from aiogw.telemetry.logs import get_logger

log = get_logger("aiogw.spot_check")

WORKERS = 4  # judge calls at once: spot checks must never compete with clients for long
TAG = "aiogw=spot-check"
TASK = "spot-check"

_COLUMNS = (
    "id",
    "request_id",
    "grp",
    "task",
    "bucket",
    "target",
    "judge",
    "verdict",
    "score",
    "reason",
    "cost_usd",
    "at",
)
_INSERT = f"INSERT INTO aiogw_spot_checks ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"


@dataclass(slots=True)
class Capture:
    """What a sampled request's answer was, collected as it is sent (set by the ingress)."""

    judge: str
    messages: Any = None  # the request's messages (decoded JSON)
    body: bytes | None = None  # a complete answer's body, as the client got it
    chunks: list[bytes] = field(default_factory=list)  # a stream's SSE bytes, as the client got them
    # The answer's text from those bytes in the client's API (Messages, Responses); None: Chat Completions.
    read: Callable[[bytes, bool], str] | None = None

    def answer_text(self) -> str:
        if self.read is not None:
            return self.read(self.body, False) if self.body is not None else self.read(b"".join(self.chunks), True)
        if self.body is not None:
            try:
                choices = orjson.loads(self.body).get("choices") or [{}]
                return str((choices[0].get("message") or {}).get("content") or "")
            except (orjson.JSONDecodeError, AttributeError, IndexError):
                return ""
        return _streamed_text(b"".join(self.chunks))


def _streamed_text(sse: bytes) -> str:
    """The first choice's content from OpenAI chunk events."""
    out: list[str] = []
    for chunk in data_objects(sse):
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                content = (choice.get("delta") or {}).get("content")
                if isinstance(content, str):
                    out.append(content)
    return "".join(out)


# (the judge's chat body) -> (its answer's content, what the call cost in USD)
Grade = Callable[[dict[str, Any]], Awaitable[tuple[str, float]]]
# (memory, verdict) -> feeds the estimates
OnVerdict = Callable[[Remembered, Verdict], None]
# outcome name -> counted
Count = Callable[[str], None]


class SpotChecker:
    def __init__(self, store: Store, grade: Grade, on_verdict: OnVerdict, count: Count, queue_size: int) -> None:
        self._store, self._grade, self._on_verdict, self._count = store, grade, on_verdict, count
        self._queue: asyncio.Queue[tuple[Remembered, Capture]] = asyncio.Queue(maxsize=queue_size)
        self._workers: list[asyncio.Task[None]] = []

    def offer(self, memory: Remembered, capture: Capture) -> None:
        """Queue a sample; never waits (full: dropped and counted)."""
        try:
            self._queue.put_nowait((memory, capture))
        except asyncio.QueueFull:
            self._count("dropped")

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._workers = [loop.create_task(self._work(), name=f"aiogw-spot-check-{i}") for i in range(WORKERS)]

    async def _work(self) -> None:
        while True:
            memory, capture = await self._queue.get()
            try:
                await self.check(memory, capture)
            except Exception as exc:  # a judge down or a store away: this sample is lost, the next is tried
                self._count("failed")
                log.warning("spot_check.failed", request_id=memory.request_id, error=f"{type(exc).__name__}: {exc}")

    async def check(self, memory: Remembered, capture: Capture) -> Verdict | None:
        body = judge_request(capture.judge, conversation_text(capture.messages or []), capture.answer_text())
        text, cost = await self._grade(body)
        verdict = verdict_of(text)
        if verdict is None:
            self._count("no_verdict")
            log.warning("spot_check.no_verdict", request_id=memory.request_id, judge=capture.judge)
            return None
        self._count(verdict.verdict)
        await self._store.execute(
            _INSERT,
            ("sc_" + hex_id(12), memory.request_id, memory.group, memory.task, memory.bucket, memory.target,
             capture.judge, verdict.verdict, verdict.score, verdict.reason, cost, time.time()),
        )  # fmt: skip
        self._on_verdict(memory, verdict)
        return verdict

    async def close(self) -> None:
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
