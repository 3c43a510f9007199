"""Send every (model, item, repeat) through a running gateway, with bounded concurrency and a
cost cap, and grade each answer. The gateway's own headers say what each call cost
(`x-aiogw-cost-usd`), and its cache is bypassed, so that a score is the model's, today."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
import orjson

from aiogw.eval.dataset import Item
from aiogw.eval.graders import GraderError, Output, grade, read_verdict
from aiogw.quality.features import bucket_of_body
from aiogw.quality.judge import judge_request

# Each answer is the model's own: no lookup, nothing stored (a later run must not be served
# this run's answers either).
NO_CACHE = {"cache-control": "no-cache, no-store"}
JUDGE_TASK = "eval-judge"  # x-aiogw-task of the judge's calls: its cost apart in the ledger


@dataclass
class Result:
    """One graded call: what results.jsonl holds a line of."""

    model: str
    id: str
    task: str
    repeat: int
    grader: str
    score: float = 0.0
    passed: bool = False
    error: str = ""  # set: the call or its grading failed (counted apart from wrong answers)
    output: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    detail: str = ""
    cost_usd: float = 0.0
    judge_cost_usd: float = 0.0
    latency_ms: float = 0.0
    status: int = 0
    request_id: str = ""
    answered_by: str = ""  # x-aiogw-provider/x-aiogw-model: the target that answered
    bucket: str = ""  # the request's prompt-feature bucket, as the quality router sees it

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))


class Unreachable(Exception):
    """The gateway cannot be reached, or refuses the key: a harness error, not a model's
    (every call would fail the same way)."""


@dataclass
class Run:
    results: list[Result]
    spent_usd: float
    capped: bool  # the cost cap was reached and sending stopped


@dataclass
class _Call:
    status: int
    body: dict[str, Any]
    cost: float
    latency_ms: float
    headers: dict[str, str]


def base_url(url: str) -> str:
    """A gateway URL as given (`http://host:port` or `.../v1`) without `/v1` or a trailing `/`."""
    url = url.rstrip("/")
    return url[:-3] if url.endswith("/v1") else url


class Runner:
    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        concurrency: int = 8,
        max_cost_usd: float | None = None,
        judge: str | None = None,
        timeout_s: float = 300.0,
        on_result: Callable[[Result, float], None] | None = None,
    ) -> None:
        self.url = base_url(url) + "/v1/chat/completions"
        self.headers = {"content-type": "application/json", **NO_CACHE}
        if api_key:
            self.headers["authorization"] = f"Bearer {api_key}"
        self.concurrency = max(1, concurrency)
        self.max_cost = max_cost_usd
        self.judge = judge
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.on_result = on_result
        self.spent = 0.0
        self.capped = False

    def _over_cap(self) -> bool:
        if self.max_cost is not None and self.spent >= self.max_cost:
            self.capped = True
        return self.capped

    async def run(self, items: list[Item], models: list[str], repeats: int = 1) -> Run:
        # Item by item, every model in turn: a run stopped by the cap leaves the models
        # compared on the same items.
        work = [(m, it, r) for r in range(repeats) for it in items for m in models]
        results: list[Result] = []
        queue: asyncio.Queue[tuple[str, Item, int]] = asyncio.Queue()
        for w in work:
            queue.put_nowait(w)
        async with aiohttp.ClientSession(timeout=self.timeout) as http:

            async def worker() -> None:
                while not queue.empty() and not self._over_cap():
                    model, item, repeat = queue.get_nowait()
                    result = await self._one(http, model, item, repeat)
                    results.append(result)
                    if self.on_result is not None:
                        self.on_result(result, self.spent)

            tasks = [asyncio.create_task(worker()) for _ in range(min(self.concurrency, len(work)))]
            try:
                await asyncio.gather(*tasks)
            finally:
                for t in tasks:
                    t.cancel()
        order = {(m, it.id, r): i for i, (m, it, r) in enumerate(work)}
        results.sort(key=lambda res: order[res.model, res.id, res.repeat])
        return Run(results, self.spent, self.capped)

    async def _post(self, http: aiohttp.ClientSession, body: dict[str, Any], task: str) -> _Call:
        started = time.perf_counter()
        try:
            async with http.post(
                self.url, data=orjson.dumps(body), headers={**self.headers, "x-aiogw-task": task}
            ) as r:
                raw = await r.read()
                headers = {k.lower(): v for k, v in r.headers.items()}
                status = r.status
        except aiohttp.ClientConnectorError as exc:
            raise Unreachable(f"cannot reach the gateway at {self.url}: {exc.os_error or exc}") from None
        if status == 401:
            raise Unreachable(f"the gateway at {self.url} refused the key (401): set AIOGW_API_KEY to a key it accepts")
        latency = (time.perf_counter() - started) * 1000
        try:
            cost = float(headers.get("x-aiogw-cost-usd") or 0.0)
        except ValueError:
            cost = 0.0
        self.spent += cost
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = {"error": {"message": f"not JSON: {raw[:200]!r}"}}
        return _Call(status, parsed if isinstance(parsed, dict) else {}, cost, latency, headers)

    async def _one(self, http: aiohttp.ClientSession, model: str, item: Item, repeat: int) -> Result:
        res = Result(model=model, id=item.id, task=item.task, repeat=repeat, grader=item.grader)
        body = {**item.params, "model": model, "messages": item.messages}
        res.bucket = bucket_of_body(body)
        try:
            call = await self._post(http, body, item.task)
        except (aiohttp.ClientError, TimeoutError) as exc:
            res.error = f"request failed: {type(exc).__name__}: {exc}"
            return res
        res.status, res.cost_usd, res.latency_ms = call.status, call.cost, round(call.latency_ms, 2)
        res.request_id = call.headers.get("x-request-id", "")
        if call.status != 200:
            err = _error_of(call.body)
            res.error = f"{call.status} {err.get('code') or err.get('type') or ''}: {err.get('message', '')}".strip()
            return res
        provider, upstream = call.headers.get("x-aiogw-provider", ""), call.headers.get("x-aiogw-model", "")
        res.answered_by = f"{provider}/{upstream}" if provider else ""
        out = _output(call.body)
        res.output, res.tool_calls = out.text, list(out.tool_calls)
        if item.grader != "llm_judge":
            g = grade(item.grader, item.expected, item.options, out)
        else:
            try:
                g = await self._judge(http, item, out.text, res)
            except GraderError as exc:
                res.error = f"judge: {exc}"
                return res
        res.score, res.passed, res.detail = g.score, g.passed, g.detail
        return res

    async def _judge(self, http: aiohttp.ClientSession, item: Item, answer: str, res: Result) -> Any:
        assert self.judge is not None  # the CLI refuses llm_judge items without --judge
        if self._over_cap():
            raise GraderError("not graded: the cost cap was reached")
        expected = item.expected if isinstance(item.expected, str) else orjson.dumps(item.expected).decode()
        body = judge_request(self.judge, item.question, answer, expected, item.options.get("rubric"))
        try:
            call = await self._post(http, body, JUDGE_TASK)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise GraderError(f"request failed: {type(exc).__name__}: {exc}") from None
        res.judge_cost_usd = call.cost
        if call.status != 200:
            err = _error_of(call.body)
            raise GraderError(f"{call.status}: {err.get('message', '')}")
        return read_verdict(_output(call.body).text)


def _error_of(body: dict[str, Any]) -> dict[str, Any]:
    err = body.get("error")
    return err if isinstance(err, dict) else {}


def _output(body: dict[str, Any]) -> Output:
    choices = body.get("choices") or [{}]
    msg = choices[0].get("message") or {}
    calls = tuple(
        {"name": (tc.get("function") or {}).get("name"), "arguments": (tc.get("function") or {}).get("arguments")}
        for tc in msg.get("tool_calls") or []
    )
    content = msg.get("content")
    return Output(content if isinstance(content, str) else "", calls)
