"""The routing building blocks on an explicit clock: the sliding window, the breaker, the
limiter, the retry budget, prices and the router's strategies."""

from __future__ import annotations

import random

import pytest

from aiogw.accounting.cost import cost_usd, listed_price, resolve_price
from aiogw.adapters._base import RateLimitInfo, Target
from aiogw.admission.limits import Limiter, LimitExceeded
from aiogw.config import BreakerConfig, RetryConfig
from aiogw.errors import FailureClass
from aiogw.routing.health import LocalHealth, SlidingWindow, TargetHealth
from aiogw.routing.retry import RetryBudget, backoff_s
from aiogw.routing.router import Router
from aiogw.runtime import ModelRoute
from aiogw.types import CompletionUsage, Price, PromptTokensDetails

T0 = 1_000.0


def target(name: str = "a", **kw) -> Target:
    return Target(id=f"p/{name}", provider="p", type="openai", model=name, base_url="http://x", **kw)


# --- sliding window ---------------------------------------------------------------------


def test_window_counts_only_the_last_60_seconds():
    w = SlidingWindow()
    for i in range(10):
        w.record(T0 + i, None, 100.0, 20.0)
    w.record(T0 + 10, "timeout", 5000.0, None)
    assert w.counts(T0 + 10) == (11, 1)
    assert w.counts(T0 + 65) == (5, 1)  # seconds 6..10 remain
    assert w.counts(T0 + 200) == (0, 0)
    s = w.stats(T0 + 10)
    assert s.failures_by_kind == {"timeout": 1}
    assert s.error_rate == pytest.approx(1 / 11, abs=1e-4)


def test_window_percentiles_within_a_bucket_width():
    w = SlidingWindow()
    for ms in range(1, 1001):  # 1..1000 ms, uniform
        w.record(T0, None, float(ms), float(ms) / 10)
    s = w.stats(T0)
    assert 500 / 1.25 <= s.latency_p50_ms <= 500 * 1.25
    assert 950 / 1.25 <= s.latency_p95_ms <= 950 * 1.25
    assert 50 / 1.25 <= s.ttft_p50_ms <= 50 * 1.25


# --- breaker ----------------------------------------------------------------------------


def fail(h: TargetHealth, now: float, cls=FailureClass.TRANSIENT):
    probe = h.begin(now)
    h.end(now, probe=probe, failure=cls, latency_ms=10, error="boom")


def ok(h: TargetHealth, now: float):
    probe = h.begin(now)
    h.end(now, probe=probe, failure=None, latency_ms=10)


def test_breaker_opens_on_consecutive_failures_and_recovers_through_half_open():
    h = TargetHealth(BreakerConfig(consecutive_failures=3, open_s=30, close_after=2))
    for i in range(3):
        assert h.available(T0 + i)
        fail(h, T0 + i)
    assert h.state == "open" and not h.available(T0 + 10)
    assert h.available(T0 + 33) and h.state == "half_open"
    probe = h.begin(T0 + 33)
    assert probe and not h.available(T0 + 33)  # one probe at a time
    h.end(T0 + 33, probe=probe, failure=None, latency_ms=5)
    assert h.state == "half_open"
    ok(h, T0 + 34)
    assert h.state == "closed"
    assert [s for _, s in h.transitions] == ["open", "half_open", "closed"]


def test_breaker_opens_on_error_rate_over_min_calls():
    h = TargetHealth(BreakerConfig(error_rate=0.05, min_calls=20, consecutive_failures=100))
    for _ in range(19):
        ok(h, T0)
    fail(h, T0)
    assert h.state == "closed"  # 1 of 20 = 5%: not above the threshold
    fail(h, T0)
    assert h.state == "open"  # 2 of 21 > 5%
    h2 = TargetHealth(BreakerConfig(error_rate=0.05, min_calls=20, consecutive_failures=100))
    fail(h2, T0)
    assert h2.state == "closed"  # 100% of 1 call, but under min_calls


def test_failed_probe_reopens_and_caller_faults_do_not_count():
    h = TargetHealth(BreakerConfig(consecutive_failures=1, open_s=1))
    fail(h, T0, FailureClass.CALLER_FAULT)
    fail(h, T0, FailureClass.CONTEXT_LENGTH)
    assert h.state == "closed" and h.window.counts(T0) == (0, 0)
    fail(h, T0)
    assert h.state == "open"
    assert h.available(T0 + 2)
    fail(h, T0 + 2)
    assert h.state == "open" and h.opened_at == T0 + 2


def test_credential_failure_opens_at_once():
    h = TargetHealth(BreakerConfig(consecutive_failures=50))
    fail(h, T0, FailureClass.CREDENTIAL)
    assert h.state == "open"


def test_uncounted_end_leaves_no_trace():
    h = TargetHealth(BreakerConfig(consecutive_failures=1))
    probe = h.begin(T0)
    assert h.in_flight == 1
    h.end(T0, probe=probe, failure=FailureClass.TRANSIENT, latency_ms=1, counted=False)
    assert h.in_flight == 0 and h.state == "closed" and h.window.counts(T0) == (0, 0)


# --- limiter ----------------------------------------------------------------------------


def test_rpm_bucket_refills_continuously():
    lim, t = Limiter(), target(rpm=60)
    for _ in range(60):
        lim.acquire(t, 0, T0)
    with pytest.raises(LimitExceeded) as exc:
        lim.acquire(t, 0, T0)
    assert exc.value.reason == "rpm" and exc.value.retry_after_s == pytest.approx(1.0)
    lim.acquire(t, 0, T0 + 1.0)  # one request per second comes back


def test_tpm_reservation_is_settled_with_actual_usage():
    lim, t = Limiter(), target(tpm=1000)
    r = lim.acquire(t, 900, T0)
    with pytest.raises(LimitExceeded):
        lim.acquire(t, 200, T0)
    lim.release(r, 100, T0)  # used 100 of the 900 reserved
    lim.acquire(t, 800, T0)


def test_concurrency_and_provider_view():
    lim, t = Limiter(), target(concurrency=1)
    r = lim.acquire(t, 10, T0)
    with pytest.raises(LimitExceeded) as exc:
        lim.acquire(t, 10, T0)
    assert exc.value.reason == "concurrency"
    lim.release(r, None, T0)
    lim.observe(t, RateLimitInfo(remaining_requests=1, reset_requests_s=5), T0)
    lim.release(lim.acquire(t, 10, T0), None, T0)  # the provider's last one
    with pytest.raises(LimitExceeded) as exc:
        lim.acquire(t, 10, T0 + 1)
    assert exc.value.reason == "provider-reported" and exc.value.retry_after_s == pytest.approx(4)
    lim.acquire(t, 10, T0 + 5)  # after the reset the counter says nothing any more


# --- retry pacing -----------------------------------------------------------------------


def test_backoff_is_full_jitter_under_a_cap():
    rng = random.Random(1)
    policy = RetryConfig(backoff_base_ms=100, backoff_max_ms=1000)
    waits = [backoff_s(policy, r, rng) for r in range(10) for _ in range(50)]
    assert all(0 <= w <= 1.0 for w in waits)
    assert max(backoff_s(policy, 0, rng) for _ in range(100)) <= 0.1


def test_retry_budget_caps_retries_to_a_share_of_requests():
    b = RetryBudget(ratio=0.2, min_per_s=0, now=T0)
    spent = 0
    for _ in range(20):  # drain the initial allowance
        spent += b.try_spend(T0)
    granted = 0
    for _ in range(1000):
        b.on_request(T0)
        granted += b.try_spend(T0)
    assert granted == pytest.approx(200, abs=2)


# --- cost -------------------------------------------------------------------------------


def test_cost_prices_cached_and_written_tokens_once():
    usage = CompletionUsage(
        prompt_tokens=1000,
        completion_tokens=500,
        total_tokens=1500,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=600, cache_write_tokens=100),
    )
    price = Price(input=2.0, output=10.0, cached_input=0.2, cache_write=2.5)
    assert cost_usd(usage, price) == pytest.approx((300 * 2 + 600 * 0.2 + 100 * 2.5 + 500 * 10) / 1e6)


def test_price_table_matches_dated_snapshots_and_config_wins():
    assert listed_price("anthropic", "claude-sonnet-5-5-20260615") == listed_price("anthropic", "claude-sonnet-5-5")
    assert listed_price("openai", "gpt-5.4-mini-2026-03-01").input == 0.75  # not gpt-5.4's row
    assert listed_price("gemini", "models/gemini-2.5-flash").output == 2.50
    assert listed_price("openai-compatible", "llama") is None
    assert resolve_price("openai", "gpt-5.4", 1.0, 2.0, None).input == 1.0


# --- router -----------------------------------------------------------------------------


def route(*targets: Target, strategy="priority") -> ModelRoute:
    return ModelRoute("m", strategy, targets)


def test_weighted_order_follows_weights():
    a, b = target("a", weight=3), target("b", weight=1)
    r = Router(LocalHealth(), random.Random(7))
    firsts = [r.plan(route(a, b, strategy="weighted"), now=T0).targets[0].id for _ in range(2000)]
    assert firsts.count("p/a") / 2000 == pytest.approx(0.75, abs=0.04)


def test_lowest_cost_latency_and_least_busy():
    health = LocalHealth()
    cheap = target("cheap", price=Price(input=0.1, output=0.1))
    dear = target("dear", price=Price(input=5, output=5))
    unknown = target("llama-local")
    r = Router(health)
    plan = r.plan(route(dear, unknown, cheap, strategy="lowest-cost"), now=T0, prompt_tokens=100)
    assert [t.model for t in plan.targets] == ["cheap", "dear", "llama-local"]

    fast, slow = target("fast"), target("slow")
    for _ in range(10):
        health.get(fast.id).window.record(T0, None, 100, 10)
        health.get(slow.id).window.record(T0, None, 900, 300)
    assert r.plan(route(slow, fast, strategy="lowest-latency"), now=T0).targets[0] is fast

    busy, idle = target("busy"), target("idle")
    health.get(busy.id).begin(T0)
    assert r.plan(route(busy, idle, strategy="least-busy"), now=T0).targets[0] is idle


def test_open_targets_go_last_and_small_windows_are_skipped():
    health = LocalHealth(BreakerConfig(consecutive_failures=1))
    a, b, small = target("a"), target("b"), target("small", context_window=100)
    fail(health.get(a.id), T0)
    plan = Router(health).plan(route(a, small, b), now=T0 + 1, prompt_tokens=90, max_output_tokens=50)
    assert [t.model for t in plan.targets] == ["b", "a"]
    assert plan.skipped[0].target == small.id and "context window" in plan.skipped[0].reason
