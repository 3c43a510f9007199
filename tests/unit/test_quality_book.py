"""The quality learner's parts: posterior math, decay, shrinkage of a bucket to its task,
priors, the bounded exploration share, the prompt-feature bucket and the config's rules."""

from __future__ import annotations

import json
import random

import pytest

from aiogw.adapters._base import Target
from aiogw.config import Price, QualityConfig
from aiogw.config_load import from_builtins
from aiogw.errors import ConfigError
from aiogw.quality.book import MAX_TASK_LABELS, OTHER, QualityBook, beta_estimate
from aiogw.quality.features import bucket_of
from aiogw.quality.prior import parse_prior
from aiogw.routing.health import LocalHealth
from aiogw.routing.quality import QualityAsk, choose
from aiogw.routing.router import Router
from aiogw.runtime import ModelRoute
from aiogw.types import ChatRequest, ParsedChat

CHEAP = Target(
    id="c/mini", provider="c", type="openai", model="mini", base_url="http://x", price=Price(input=0.1, output=0.4)
)
SMART = Target(
    id="s/big", provider="s", type="openai", model="big", base_url="http://x", price=Price(input=5, output=15)
)


def book(**cfg):
    cfg.setdefault("explore", 0.0)
    return QualityBook([("auto", QualityConfig(**cfg), (SMART, CHEAP))])


def prior(models):
    return parse_prior(json.dumps({"version": 1, "metric": "correct", "models": models}))


def test_the_posterior_is_a_beta_over_prior_and_observations():
    b = book()
    g = b.group("auto")
    # Nothing known: Jeffreys' Beta(1/2, 1/2), mean 0.5, no evidence.
    e = g.estimates("A", "")[1]
    assert e.mean == 0.5 and e.n == 0
    for v in (True, True, True, False):
        b.observe("auto", "A", "", CHEAP.id, "correct", v)
    e = g.estimates("A", "")[1]
    decay = 0.5 ** (1 / 200)
    a = decay**3 + decay**2 + decay  # the three successes, each decayed by those after it
    assert e.mean == pytest.approx((a + 0.5) / (a + 1 + 1))
    assert e.n == pytest.approx(a + 1)
    lo, hi = e.interval()
    assert lo < e.mean < hi
    # The floor test's bound is the confidence quantile under the normal approximation.
    ref = beta_estimate(a + 0.5, 1.5, g.z, a + 1)
    assert e.lower == pytest.approx(ref.lower) and e.lower < e.mean


def test_values_must_be_in_range_and_metrics_declared():
    b = book(metrics=["helpful"])
    with pytest.raises(ValueError, match="between 0 and 1"):
        b.observe("auto", "A", "", CHEAP.id, "correct", 1.5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        b.observe("auto", "A", "", CHEAP.id, "correct", float("nan"))
    with pytest.raises(ValueError, match="unknown metric"):
        b.observe("auto", "A", "", CHEAP.id, "tone", 1.0)
    with pytest.raises(ValueError, match="unknown source"):
        b.observe("auto", "A", "", CHEAP.id, "correct", 1.0, source="gossip")
    b.observe("auto", "A", "", CHEAP.id, "helpful", 0.7, source="spot_check")  # declared: fine
    b.observe("nope", "A", "", CHEAP.id, "correct", 1.0)  # not a quality group: ignored


def test_a_prior_counts_as_at_most_prior_weight_observations_and_feedback_overturns_it():
    b = book(prior_weight=20)
    g = b.group("auto")
    g.load_prior(prior({"openai/mini": {"A": {"n": 400, "mean": 0.95}}}), "test", {})
    e = g.estimates("A", "")[1]
    assert e.n == pytest.approx(20) and e.mean > 0.9
    for _ in range(40):
        b.observe("auto", "A", "", CHEAP.id, "correct", False)
    assert g.estimates("A", "")[1].mean < 0.4


def test_decay_notices_a_target_that_got_worse():
    fast, slow = book(half_life=20), book(half_life=10_000)
    for b in (fast, slow):
        for _ in range(200):
            b.observe("auto", "A", "", CHEAP.id, "correct", True)
        for _ in range(30):
            b.observe("auto", "A", "", CHEAP.id, "correct", False)
    # With a short half-life the recent failures dominate; with a long one the old record does.
    assert fast.group("auto").estimates("A", "")[1].mean < 0.5 < slow.group("auto").estimates("A", "")[1].mean


def test_a_bucket_backs_off_to_its_task_then_learns_its_own():
    b = book()
    g = b.group("auto")
    for _ in range(100):
        b.observe("auto", "A", "short", CHEAP.id, "correct", True)
    task = g.estimates("A", "")[1]
    # A bucket never observed reads as its task, with at most prior_weight observations' confidence.
    unseen = g.estimates("A", "long+code")[1]
    assert unseen.mean == pytest.approx((20 + 0.5) / 21) and unseen.n == pytest.approx(20)
    for _ in range(3):
        b.observe("auto", "A", "long+code", CHEAP.id, "correct", False)
    few = g.estimates("A", "long+code")[1]
    assert 0.5 < few.mean < unseen.mean < task.mean  # three failures shrink toward the task's record, do not replace it
    for _ in range(40):
        b.observe("auto", "A", "long+code", CHEAP.id, "correct", False)
    assert g.estimates("A", "long+code")[1].mean < 0.3  # its own evidence wins
    assert g.estimates("A", "short")[1].mean > 0.6  # the easy bulk is still trusted


def test_a_hard_bucket_leaves_the_cheap_target_within_a_few_failures_however_long_its_task_record():
    # The workload's shape: a cheap target right on its task's easy bulk for a long time, wrong
    # on the task's hard tenth (its own bucket). A handful of failures must move the hard
    # bucket to the expensive target; a record of hundreds of easy answers must not drown them.
    b = book(floor=0.85)
    g = b.group("auto")
    g.load_prior(prior({"s/big": {"A": {"n": 20, "mean": 0.99}}}), "t", {})
    for i in range(400):
        b.observe("auto", "A", "short", CHEAP.id, "correct", i % 33 != 0)
    ask = QualityAsk("A", "short+code")
    assert choose(g, ask, (SMART, CHEAP), 100, 256, LocalHealth(), 0.0, random.Random(1))[0][0] is CHEAP
    for _ in range(3):
        b.observe("auto", "A", "short+code", CHEAP.id, "correct", False)
    assert choose(g, ask, (SMART, CHEAP), 100, 256, LocalHealth(), 0.0, random.Random(1))[0][0] is SMART
    assert (
        choose(g, QualityAsk("A", "short"), (SMART, CHEAP), 100, 256, LocalHealth(), 0.0, random.Random(1))[0][0]
        is CHEAP
    )


def test_a_bucket_that_proved_hard_on_one_target_reads_harder_on_the_others():
    mid = Target(
        id="m/mid", provider="m", type="openai", model="mid", base_url="http://x", price=Price(input=1, output=2)
    )
    b = QualityBook([("auto", QualityConfig(explore=0.0), (SMART, mid, CHEAP))])
    g = b.group("auto")
    g.load_prior(prior({"c/mini": {"A": {"n": 20, "mean": 0.95}}, "m/mid": {"A": {"n": 20, "mean": 0.96}},
                        "s/big": {"A": {"n": 20, "mean": 0.98}}}), "t", {})  # fmt: skip
    before = g.estimates("A", "short+code")
    for v in (False, False, True, False, False, False):
        b.observe("auto", "A", "short+code", CHEAP.id, "correct", v)
    after = g.estimates("A", "short+code")
    # mid has no evidence in the bucket, yet reads lower there than on its task; the ranks stay.
    assert after[1].mean < before[1].mean - 0.03 and after[0].mean < before[0].mean
    assert after[0].mean > after[1].mean > after[2].mean
    assert g.estimates("A", "")[1] == before[1]  # the task-wide estimate is untouched


def test_when_none_meets_the_floor_the_one_likeliest_to_is_chosen():
    # A target known to fall short (0.7, well measured) and one nobody has graded: the unknown
    # one may meet the floor, the known one almost surely does not. Trying the known mediocre
    # target for ever (the best mean) would stall learning.
    b = book(floor=0.9)
    g = b.group("auto")
    for i in range(50):
        b.observe("auto", "A", "", CHEAP.id, "correct", i % 10 < 7)
    ordered, _, reason = choose(g, QualityAsk("A", ""), (SMART, CHEAP), 100, 256, LocalHealth(), 0.0, random.Random(1))
    assert ordered[0] is SMART and reason.startswith("no target meets floor 0.90; likeliest to (est 0.50, n=0)")


def test_a_prior_per_bucket_routes_a_tasks_hard_bucket_from_the_first_request():
    # The eval measured the cheap target at 0.93 on task A, but 0.97 on its plain prompts and
    # 0.3 on those quoting code: the code bucket goes to the expensive target at once.
    b = book(floor=0.85)
    g = b.group("auto")
    buckets = {"short": {"n": 54, "mean": 0.97}, "short+code": {"n": 6, "mean": 0.3}}
    g.load_prior(prior({"c/mini": {"A": {"n": 60, "mean": 0.93, "buckets": buckets}},
                        "s/big": {"A": {"n": 60, "mean": 0.98}}}), "t", {})  # fmt: skip

    def first(bucket):
        return choose(g, QualityAsk("A", bucket), (SMART, CHEAP), 100, 256, LocalHealth(), 0.0, random.Random(1))[0][0]

    assert first("short") is CHEAP and first("short+code") is SMART
    assert first("mid") is CHEAP  # a bucket the eval did not see reads as the task
    assert g.estimates("A", "short+code")[1].mean < 0.75  # six items at 0.3, shrunk toward the task
    # Reloading a prior without buckets forgets them.
    g.load_prior(prior({"c/mini": {"A": {"n": 60, "mean": 0.93}}}), "t", {})
    assert first("short+code") is CHEAP


def test_a_bodys_bucket_is_the_one_the_gateway_computes():
    from aiogw.attempts.walk import prompt_tokens_estimate
    from aiogw.bench import routing_data
    from aiogw.ingress.chat import parse_chat
    from aiogw.quality.features import bucket_of_body

    seen = set()
    for row in routing_data.items(40, seed=3, hard_share=0.5):
        body = {"model": "m", "messages": row["messages"]}
        parsed = parse_chat(json.dumps(body).encode())
        assert bucket_of_body(body) == bucket_of(parsed, prompt_tokens_estimate(parsed))
        seen.add((row["level"], bucket_of_body(body)))
    assert seen == {("easy", "short"), ("hard", "short+code")}  # the workload's hard items are told apart
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    assert bucket_of_body({"messages": [{"role": "user", "content": "x" * 2400}], "tools": tools}) == "mid+tools"
    assert bucket_of_body({"messages": "not a list"}) == ""


def test_prior_keys_map_to_targets_and_the_star_task_is_the_default():
    g = book().group("auto")
    matched = g.load_prior(
        prior({"s/big": {"*": {"n": 10, "mean": 0.9}}, "mini": {"A": {"n": 10, "mean": 0.8}}, "x/y": {}}), "t", {}
    )
    assert sorted(matched) == ["mini", "s/big"]
    big, mini = g.estimates("Z", "")
    assert big.n == 10 and mini.n == 0
    # A public single-target group's name names its target.
    assert book().group("auto").load_prior(prior({"cheap": {"A": {"n": 5, "mean": 0.5}}}), "t", {"cheap": CHEAP})
    with pytest.raises(ValueError, match="no model in the file"):
        book().group("auto").load_prior(prior({"x/y": {"A": {"n": 5, "mean": 0.5}}}), "t", {})
    with pytest.raises(ValueError, match="version 2"):
        parse_prior(json.dumps({"version": 2, "models": {}}))


def test_exploration_stays_within_its_share():
    # The cheap target is below the floor's confidence (but might be above it); the expensive
    # one clearly meets it.
    b = book(explore=0.1, floor=0.9)
    g = b.group("auto")
    g.load_prior(prior({"c/mini": {"A": {"n": 20, "mean": 0.8}}, "s/big": {"A": {"n": 20, "mean": 0.99}}}), "t", {})
    health, rng = LocalHealth(), random.Random(1234)
    n, below, explored = 4000, 0, 0
    for _ in range(n):
        ordered, _, reason = choose(g, QualityAsk("A", ""), (SMART, CHEAP), 100, 100, health, 0.0, rng)
        below += ordered[0] is CHEAP
        explored += reason == "explore"
    assert below <= explored  # only exploration ever picks the target below the floor
    assert below > 0 and explored <= n * 0.1 + 3 * (n * 0.1 * 0.9) ** 0.5


def test_no_exploration_when_the_share_is_zero():
    b = book(explore=0.0)
    g = b.group("auto")
    g.load_prior(prior({"c/mini": {"A": {"n": 20, "mean": 0.5}}, "s/big": {"A": {"n": 20, "mean": 0.99}}}), "t", {})
    rng = random.Random(1)
    picks = {
        choose(g, QualityAsk("A", ""), (SMART, CHEAP), 100, 100, LocalHealth(), 0.0, rng)[0][0].id for _ in range(500)
    }
    assert picks == {SMART.id}


def test_the_router_orders_by_quality_and_records_reason():
    b = book()
    b.group("auto").load_prior(
        prior({"c/mini": {"A": {"n": 20, "mean": 0.99}}, "s/big": {"*": {"n": 20, "mean": 0.99}}}), "t", {}
    )
    route = ModelRoute("auto", "quality", (SMART, CHEAP), quality=QualityConfig())
    r = Router(LocalHealth(), random.Random(3), quality=b)
    plan = r.plan(route, now=0.0, quality=QualityAsk("A", "short"))
    assert [t.id for t in plan.targets] == [CHEAP.id, SMART.id] and plan.pick == CHEAP.id
    assert plan.reason.startswith("cheapest meeting floor 0.90")
    # Without the ask (a request of another group) the group's own order stands: no cost, no reason.
    plain = r.plan(ModelRoute("p", "priority", (SMART, CHEAP)), now=0.0)
    assert plain.reason == "" and [t.id for t in plain.targets] == [SMART.id, CHEAP.id]


def test_traffic_shares_and_metric_labels_are_bounded():
    b = book()
    g = b.group("auto")
    for i in range(MAX_TASK_LABELS + 10):
        b.record_pick("auto", f"t{i}", CHEAP.id)
    labels = {t for t, _ in g.picks_total}
    assert OTHER in labels and len(labels) == MAX_TASK_LABELS + 1
    for _ in range(600):
        b.record_pick("auto", "A", SMART.id)
    assert g.shares[("A", SMART.id)] == 500  # the recent window


def chat(text, tools=False):
    body = {"model": "m", "messages": [{"role": "user", "content": text}]}
    if tools:
        body["tools"] = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    import msgspec

    raw = json.dumps(body).encode()
    return ParsedChat(
        req=msgspec.json.decode(raw, type=ChatRequest), raw=msgspec.json.decode(raw, type=dict[str, msgspec.Raw])
    )


def test_the_bucket_names_length_tools_code_and_script():
    assert bucket_of(chat("what is the capital of france?"), 10) == "short"
    assert bucket_of(chat("fix this:\n```py\nx = 1\n```"), 10) == "short+code"
    assert bucket_of(chat("def f(x):\n    return x"), 600) == "mid+code"
    assert bucket_of(chat("hello", tools=True), 5000) == "long+tools"
    assert bucket_of(chat("日本の首都はどこですか？東京ですか？"), 10) == "short+intl"
    assert bucket_of(chat("café au lait, s'il vous plaît"), 10) == "short"  # accents are not another script


def cfg(quality, strategy="quality", extra=None):
    return {
        "providers": {"a": {"type": "openai", "api_key": "x"}},
        "models": [
            {"name": "auto", "strategy": strategy, **({"quality": quality} if quality is not None else {}),
             "targets": [{"provider": "a", "model": "m1"}, {"provider": "a", "model": "m2"}]},
            *(extra or []),
        ],
    }  # fmt: skip


def test_config_rules(tmp_path):
    with pytest.raises(ConfigError, match="strategy quality needs a quality block"):
        from_builtins(cfg(None), env={})
    with pytest.raises(ConfigError, match="unknown judge model 'smart'"):
        from_builtins(cfg({"spot_check": {"judge": "smart"}}), env={})
    ok = from_builtins(cfg({"spot_check": {"judge": "smart", "rate": 0.1}}, extra=[
        {"name": "smart", "targets": [{"provider": "a", "model": "m3"}]}]), env={})  # fmt: skip
    assert ok.models[0].quality.spot_check.judge == "smart"
    assert from_builtins(cfg({"spot_check": {"judge": "a/gpt-4o"}}), env={})  # <provider>/<model>
    with pytest.raises(ConfigError, match="metric 'helpful' is not declared"):
        from_builtins(cfg({"metric": "helpful"}), env={})
    with pytest.raises(ConfigError, match="explore"):
        from_builtins(cfg({"explore": 0.9}), env={})
    bad = tmp_path / "q.json"
    bad.write_text('{"version": 1, "models": {"a/m1": {"A": {"n": 3, "mean": 2}}}}')
    with pytest.raises(ConfigError, match=r"models\[0\]\.quality\.prior.*mean"):
        from_builtins(cfg({"prior": str(bad)}), env={})
    other = tmp_path / "other.json"
    other.write_text('{"version": 1, "models": {"x/y": {"A": {"n": 3, "mean": 0.5}}}}')
    with pytest.raises(
        ConfigError, match=r"no model in other.json names a target of this group \(the file's models: x/y"
    ):
        from_builtins(cfg({"prior": str(other)}), env={})
    for key in ("a/m1", "openai/m1", "m1", "one"):  # id, <type>/<model>, upstream model, a one-target group
        good = tmp_path / "good.json"
        good.write_text(json.dumps({"version": 1, "models": {key: {"A": {"n": 3, "mean": 0.5}}}}))
        from_builtins(
            cfg({"prior": str(good)}, extra=[{"name": "one", "targets": [{"provider": "a", "model": "m1"}]}]), env={}
        )
    with pytest.raises(ConfigError, match="cannot read"):
        from_builtins(cfg({"prior": str(tmp_path / "missing.json")}), env={})


def test_a_relative_prior_is_read_next_to_the_config_file(tmp_path):
    from aiogw.config_load import load

    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "quality.json").write_text('{"version": 1, "models": {"a/m1": {"A": {"n": 3, "mean": 0.5}}}}')
    (tmp_path / "aiogw.yaml").write_text(json.dumps(cfg({"prior": "eval/quality.json"})))
    c = load(tmp_path / "aiogw.yaml", env={})
    assert c.models[0].quality.prior == str(tmp_path / "eval" / "quality.json")
