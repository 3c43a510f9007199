"""An attempt's time limits (`attempts.bounds._Bounds`): its own expiry becomes an UpstreamTimeout
naming the phase, an outer cancellation stays a cancellation, and moving to the total limit
after the first token really moves the expiry. Loop-timed with tiny limits; nothing asserts
how long anything took."""

from __future__ import annotations

import asyncio

import pytest

from aiogw.adapters._base import Target
from aiogw.attempts.bounds import _Bounds
from aiogw.errors import UpstreamTimeout


def _target(first: float | None, total: float, idle: float | None = None) -> Target:
    return Target(
        id="a/m", provider="a", type="openai", model="m", base_url="http://127.0.0.1:1",
        first_token_timeout_s=first, total_timeout_s=total, idle_timeout_s=idle,
    )  # fmt: skip


class _Body:
    """What `_Bounds` reads of a response under the idle limit."""

    arrived = False
    waiting_since: float | None = None


async def test_no_first_token_in_time_is_a_first_token_timeout():
    loop = asyncio.get_running_loop()
    with pytest.raises(UpstreamTimeout, match="no first token within 0.05 s") as exc:
        with _Bounds(loop, _target(0.05, 10), None):
            await asyncio.sleep(5)
    assert exc.value.phase == "first_token"


async def test_after_the_first_token_the_total_limit_applies_and_not_before():
    loop = asyncio.get_running_loop()
    with pytest.raises(UpstreamTimeout, match="not finished within 0.3 s") as exc:
        with _Bounds(loop, _target(0.05, 0.3), None) as bounds:
            bounds.first_token()  # the first-token timer must not fire at 0.05 s now
            await asyncio.sleep(0.1)  # past the first-token limit: still running
            reached = True
            await asyncio.sleep(5)
    assert reached and exc.value.phase == "total"


async def test_the_request_deadline_is_named_when_it_is_what_ran_out():
    loop = asyncio.get_running_loop()
    with pytest.raises(UpstreamTimeout, match="x-aiogw-timeout-ms") as exc:
        with _Bounds(loop, _target(None, 10), loop.time() + 0.05):
            await asyncio.sleep(5)
    assert exc.value.phase == "deadline"


async def test_an_outer_cancellation_is_not_turned_into_a_timeout():
    loop = asyncio.get_running_loop()

    async def attempt() -> None:
        with _Bounds(loop, _target(5, 10), None):
            await asyncio.sleep(5)

    task = asyncio.ensure_future(attempt())
    await asyncio.sleep(0.02)
    task.cancel()  # e.g. the client went away, or a hedged attempt lost
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_block_that_ends_in_time_leaves_no_timer_behind():
    loop = asyncio.get_running_loop()
    with _Bounds(loop, _target(0.05, 0.1), None) as bounds:
        bounds.first_token()
    await asyncio.sleep(0.15)  # a leftover timer would cancel this task here
    assert asyncio.current_task().cancelling() == 0


async def test_a_body_that_stops_arriving_is_an_idle_timeout_well_before_the_total():
    loop = asyncio.get_running_loop()
    body = _Body()
    with pytest.raises(UpstreamTimeout, match="idle: no data within 0.05 s") as exc:
        with _Bounds(loop, _target(30, 60, idle=0.05), None) as bounds:
            bounds.first_token(body)  # the first-token timer (30 s) is brought forward
            body.waiting_since = loop.time()
            await asyncio.sleep(30)
    assert exc.value.phase == "idle"


async def test_time_the_reader_spends_busy_is_not_idle_time():
    loop = asyncio.get_running_loop()
    body = _Body()
    with pytest.raises(UpstreamTimeout) as exc:
        with _Bounds(loop, _target(None, 60, idle=0.05), None) as bounds:
            bounds.first_token(body)
            await asyncio.sleep(0.2)  # busy (e.g. writing to a slow client): 4 idle limits pass
            busy_survived = True
            body.waiting_since = loop.time()  # waiting for the upstream from now on
            await asyncio.sleep(30)
    assert busy_survived and exc.value.phase == "idle"


async def test_a_body_already_here_sets_no_idle_timer():
    loop = asyncio.get_running_loop()
    body = _Body()
    body.arrived = True  # a unary answer read with its headers: the common case
    with _Bounds(loop, _target(None, 60, idle=0.01), None) as bounds:
        armed = bounds._handle
        bounds.first_token(body)
        assert bounds._handle is armed
