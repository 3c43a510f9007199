"""The per-target token ratio: the prior as a few observations, the clamp, prompts too small to
learn from, the slow tail after the running mean, and the priors the adapters give."""

from __future__ import annotations

import pytest

from aiogw.adapters import REGISTRY
from aiogw.adapters._base import Target
from aiogw.names import MAX_DIRECT_TARGETS
from aiogw.routing.token_ratio import ALPHA_MIN, MIN_ESTIMATE, PRIOR_WEIGHT, RATIO_MAX, TokenRatio, TokenRatios


def target(tid: str = "a/m", type_: str = "openai") -> Target:
    provider, model = tid.split("/")
    return Target(id=tid, provider=provider, type=type_, model=model, base_url="http://127.0.0.1:9")


def test_the_prior_counts_as_a_few_observations():
    r = TokenRatio(1.0)
    r.observe(200, 100)  # ratio 2: one observation against PRIOR_WEIGHT of the prior
    assert r.value == pytest.approx((PRIOR_WEIGHT * 1.0 + 2.0) / (PRIOR_WEIGHT + 1))
    for _ in range(PRIOR_WEIGHT - 1):
        r.observe(200, 100)
    assert r.value == pytest.approx(1.5)  # as many observations as the prior's weight: halfway
    assert r.observations == PRIOR_WEIGHT and r.prior == 1.0


def test_it_approaches_a_steady_ratio_and_then_moves_slowly():
    r = TokenRatio(1.0)
    for _ in range(60):
        r.observe(300, 100)
    assert 2.9 < r.value <= 3.0
    before = r.value
    r.observe(100, 100)  # one odd answer after many: a step of ALPHA_MIN of the gap, no more
    assert before - r.value == pytest.approx((before - 1.0) * ALPHA_MIN)


def test_each_observation_is_clamped_and_small_or_empty_counts_are_ignored():
    r = TokenRatio(1.0)
    r.observe(100_000, 100)  # 1000x: counted as RATIO_MAX
    assert r.value == pytest.approx((PRIOR_WEIGHT + RATIO_MAX) / (PRIOR_WEIGHT + 1))
    r = TokenRatio(1.0)
    r.observe(5 * MIN_ESTIMATE, MIN_ESTIMATE - 1)  # framing dominates a tiny prompt's count
    r.observe(0, 500)  # a provider that reports 0 prompt tokens reports nothing
    assert r.value == 1.0 and r.observations == 0


def test_ratios_by_target_scale_up_and_take_the_worst_case():
    priors = {"openai": 1.0, "anthropic": 1.15}
    ratios = TokenRatios(lambda t: priors[t.type])
    a, c = target("a/m"), target("c/claude", "anthropic")
    assert ratios.scale(a, 1000) == 1000 and ratios.scale(c, 1000) == 1150
    assert ratios.scale(c, 1) == 2  # rounded up: never under the provider's count
    assert ratios.most([a, c]) == 1.15 and ratios.most([]) == 1.0
    for _ in range(40):
        ratios.get(a).observe(400, 100)
    assert ratios.most([a, c]) > 3.5 and ratios.scale(a, 100) > 350
    assert ratios.get(c).observations == 0  # targets learn apart


def test_every_adapter_has_a_modest_prior():
    for name, adapter in REGISTRY.items():
        assert 0.8 <= adapter.token_ratio <= 1.5, name
    assert REGISTRY["anthropic"].token_ratio > REGISTRY["openai"].token_ratio


def test_targets_addressed_directly_are_kept_for_the_most_recently_used_only():
    ratios = TokenRatios(lambda t: 1.0, configured={"a/m"})
    kept = ratios.get(target("a/m"))
    kept.observe(200, 100)
    for i in range(MAX_DIRECT_TARGETS + 10):  # names a client chose, each used once
        ratios.scale(target(f"d/m{i}"), 100)
    assert len(ratios._targets) == 1 + MAX_DIRECT_TARGETS
    assert ratios.get(target("a/m")) is kept and kept.observations == 1
