"""One upstream attempt's deadlines (first token, idle, total, the request deadline) and
the mapping of the HTTP client's and asyncio's exceptions to `UpstreamError`s."""

from __future__ import annotations

import asyncio
import os

from aiogw.adapters._base import Target
from aiogw.attempts.gate import _LostRace
from aiogw.attempts.outcome import ClientDisconnected
from aiogw.errors import TimeoutPhase, UpstreamConnectError, UpstreamError, UpstreamProtocolError, UpstreamTimeout
from aiogw.upstream import http


class _Bounds:
    """One upstream attempt's boundary: its time limits (first token, then total, capped by
    the request deadline) and the mapping of foreign exceptions to `UpstreamError`s.

    The timer works like `asyncio.timeout_at`, cancelling the task when it expires, but is
    given the loop and task: under Python 3.11 `asyncio.timeout` asks `get_running_loop()`
    (a getpid() syscall each time) on entry and on every reschedule. Moving to the total
    limit after the first token only moves a number; the timer re-arms itself when it
    fires before it. The idle limit works the same way: the response notes when its reader
    began waiting, and the timer, when it fires, re-arms for that time plus the limit (no
    timer per piece)."""

    __slots__ = (
        "_armed",
        "_cancelling",
        "_deadline",
        "_end",
        "_fired",
        "_handle",
        "_loop",
        "_phase",
        "_target",
        "_task",
        "_watched",
        "_when",
    )  # fmt: skip

    def __init__(self, loop: asyncio.AbstractEventLoop, target: Target, deadline: float | None) -> None:
        self._loop, self._target, self._deadline = loop, target, deadline
        now = loop.time()
        end = now + target.total_timeout_s
        self._end = end if deadline is None else min(end, deadline)
        first = target.first_token_timeout_s
        self._phase: TimeoutPhase = "first_token" if first else "total"
        self._when = min(self._end, now + first) if first else self._end
        self._fired = False
        self._watched: http.Response | None = None  # the body under the idle limit

    def __enter__(self) -> _Bounds:
        task = asyncio.current_task(self._loop)
        assert task is not None
        self._task, self._cancelling = task, task.cancelling()
        self._armed = self._when
        self._handle: asyncio.TimerHandle | None = self._loop.call_at(self._when, self._expire)
        return self

    def first_token(self, body: http.Response | None = None) -> None:
        """The first token arrived (a unary call: the response started): from now on the
        total limit applies, and the idle limit while the rest of `body` arrives."""
        self._phase, self._when = "total", self._end
        idle = self._target.idle_timeout_s
        if idle and body is not None and not body.arrived:
            self._watched = body
            when = self._loop.time() + idle
            if when < self._armed and self._handle is not None:  # set for later: bring it forward
                self._handle.cancel()
                self._armed = when
                self._handle = self._loop.call_at(when, self._expire)

    def _expire(self) -> None:
        now, when, body = self._loop.time(), self._when, self._watched
        if body is not None:
            # Idle time is time spent waiting for the upstream; time spent writing to a slow
            # client is not the upstream's.
            since = body.waiting_since
            when = min(when, (now if since is None else since) + self._target.idle_timeout_s)  # type: ignore[operator]
        if now < when:  # moved later since the timer was set
            self._armed = when
            self._handle = self._loop.call_at(when, self._expire)
            return
        if when < self._when:
            self._phase = "idle"
        self._handle = None
        self._fired = True
        self._task.cancel()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if self._handle is not None:
            self._handle.cancel()
        if self._fired and self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
            exc = TimeoutError()  # ours, not an outer cancellation
        if exc is None or isinstance(exc, UpstreamError | ClientDisconnected | _LostRace):
            return
        target = self._target
        if isinstance(exc, TimeoutError):
            if self._deadline is not None and self._loop.time() >= self._deadline - 0.001:
                raise UpstreamTimeout(
                    "the request deadline (x-aiogw-timeout-ms) passed", phase="deadline", target=target.id
                ) from None
            # The client's connect timeout is a TimeoutError too; ours carry the phase.
            p: TimeoutPhase = "connect" if isinstance(exc, http.ConnectTimeout) else self._phase
            limit = {
                "connect": target.connect_timeout_s,
                "first_token": target.first_token_timeout_s,
                "idle": target.idle_timeout_s,
                "total": target.total_timeout_s,
            }.get(p)
            what = {
                "connect": "no connection", "first_token": "no first token", "idle": "idle: no data", "total": "not finished",
            }[p]  # fmt: skip
            raise UpstreamTimeout(
                f"{what} within {limit:g} s" if limit else f"{what} before the request deadline",
                phase=p,
                target=target.id,
            ) from None
        if isinstance(exc, http.CannotConnect):
            cause = os.strerror(exc.cause.errno) if exc.cause.errno else str(exc.cause) or type(exc.cause).__name__
            raise UpstreamConnectError(f"cannot connect to {exc.host}:{exc.port} ({cause})", target=target.id) from None
        if isinstance(exc, http.Disconnected):
            if exc.started:
                raise UpstreamProtocolError(str(exc), target=target.id) from None
            raise UpstreamConnectError(str(exc), target=target.id) from None
        if isinstance(exc, http.ProtocolError):
            raise UpstreamProtocolError(str(exc), target=target.id) from None
        if isinstance(exc, http.UnsafeRequest):  # nothing was sent: a config (base_url, headers) to fix
            raise UpstreamProtocolError(f"not sent: {exc}", target=target.id) from None
        if isinstance(exc, OSError):
            raise UpstreamConnectError(f"{type(exc).__name__}: {exc}", target=target.id) from None
