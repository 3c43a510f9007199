"""Budget windows, which budgets apply, the in-process reservation book and the alerts that
spend crossing a budget fires (once per window)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from procs import run_cli

from aiogw.admission.budgets import Budget, Index, Request, config_budget_id, from_config, window
from aiogw.admission.reserve import Budgets
from aiogw.config import BudgetConfig
from aiogw.config_load import from_builtins
from aiogw.errors import BudgetExceeded
from aiogw.runtime import Runtime


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def test_windows_are_fixed_utc_periods():
    now = ts(2026, 12, 3, 10, 30)  # a Thursday
    assert window("1d", now) == (ts(2026, 12, 3), ts(2026, 12, 4))
    assert window("7d", now) == (ts(2026, 11, 30), ts(2026, 12, 7))  # Monday to Monday
    assert window("month", now) == (ts(2026, 12, 1), ts(2027, 1, 1))
    assert window("month", ts(2028, 2, 29, 23)) == (ts(2028, 2, 1), ts(2028, 3, 1))
    start, end = window("30d", now)
    assert end - start == 30 * 86400 and start <= now < end and start % (30 * 86400) == 0
    assert window("total", now) == (0.0, None)


def test_which_budgets_apply():
    def b(scope, match=None, bid=None):
        return Budget(id=bid or f"{scope}:{match}", scope=scope, match=match, limit_usd=1.0)

    idx = Index.of(
        [b("global"), b("model", "fast"), b("tag", "team=search"), b("provider", "acct"), b("provider", "other"),
         b("team", "ml"), b("task", "qa"), b("key", "k1"), b("user", "ann"), b("model", "smart")]
    )  # fmt: skip
    r = Request(model="fast", providers=["acct", "acct"], tags="env=prod,team=search", task="qa", key_id="k1",
                team="ml", user="ann")  # fmt: skip
    got = sorted(x.id for x in idx.applying(r))
    assert got == sorted(
        ["global:None", "model:fast", "tag:team=search", "provider:acct", "team:ml", "task:qa", "key:k1", "user:ann"]
    )
    assert [x.id for x in Index.of([]).applying(r)] == []


def test_config_budget_ids_follow_what_they_count_not_their_limit():
    a = BudgetConfig(scope="model", match="fast", limit_usd=5, period="1d")
    assert config_budget_id(a) == config_budget_id(BudgetConfig(scope="model", match="fast", limit_usd=9, period="1d"))
    assert config_budget_id(a) != config_budget_id(BudgetConfig(scope="model", match="fast", limit_usd=5, period="7d"))
    assert from_config([a])[0].alert_at == (1.0,)


class Sink:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def fire(self, type: str, *, once_per: str, **fields: object) -> None:
        self.events.append((type, once_per))


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


R = Request(model="fast", providers=["acct"], tags="", task="chat")


async def test_holds_are_all_or_none_and_settled_once():
    g = Budget(id="g", scope="global", match=None, limit_usd=1.0)
    m = Budget(id="m", scope="model", match="fast", limit_usd=0.5)
    budgets = Budgets([g, m])
    h1 = await budgets.admit(R, 0.3)
    with pytest.raises(BudgetExceeded, match=r"model budget 'fast' \(month\)") as exc:
        await budgets.admit(R, 0.3)  # 0.3 + 0.3 held would pass m's 0.5
    assert exc.value.http_status() == 402 and exc.value.retry_after_s > 0
    state = await budgets.status([g, m])
    assert [s["reserved_usd"] for s in state] == [0.3, 0.3]  # the refused hold took nothing from g
    budgets.settle(h1, 0.1, "acct")
    budgets.settle(h1, 0.1, "acct")  # a second settle of the same hold changes nothing
    state = await budgets.status([g, m])
    assert [(s["spent_usd"], s["reserved_usd"]) for s in state] == [(0.1, 0), (0.1, 0)]


async def test_a_provider_budget_is_charged_only_when_its_provider_answered():
    a = Budget(id="a", scope="provider", match="acct", limit_usd=1.0)
    o = Budget(id="o", scope="provider", match="other", limit_usd=1.0)
    budgets = Budgets([a, o])
    hold = await budgets.admit(Request(model="fast", providers=["acct", "other"], tags="", task="chat"), 0.2)
    budgets.settle(hold, 0.15, "other")
    assert [s["spent_usd"] for s in await budgets.status([a, o])] == [0, 0.15]


async def test_admission_plans_follow_changed_budgets_and_keys():
    g = Budget(id="g", scope="global", match=None, limit_usd=1.0)
    own: dict[str, list[Budget]] = {"k1": []}
    budgets = Budgets([g], key_budgets=lambda key_id: own[key_id])
    r = Request(model="fast", providers=["acct"], tags="", task="chat", key_id="k1")
    budgets.settle(await budgets.admit(r, 0.1), 0.1, "acct")
    # A budget made after the first request of a kind counts the next one of that kind.
    budgets.replace([g, Budget(id="m", scope="model", match="fast", limit_usd=0.15)])
    with pytest.raises(BudgetExceeded, match="model budget 'fast'"):
        await budgets.admit(r, 0.2)
    # A key given a budget of its own (its record changed: a new list) is held to it at once.
    budgets.replace([g])
    own["k1"] = [Budget(id="k1:1d", scope="key", match="k1", limit_usd=0.05, period="1d", source="key")]
    with pytest.raises(BudgetExceeded, match="key budget 'k1'"):
        await budgets.admit(r, 0.1)
    own["k1"] = []
    budgets.settle(await budgets.admit(r, 0.1), 0.1, "acct")
    assert [s["spent_usd"] for s in await budgets.status([g])] == [0.2]


async def test_a_total_budget_never_resets_and_says_so():
    t = Budget(id="t", scope="global", match=None, limit_usd=0.1, period="total")
    budgets = Budgets([t])
    budgets.settle(await budgets.admit(R, 0.1), 0.1, "acct")
    with pytest.raises(BudgetExceeded, match="never resets") as exc:
        await budgets.admit(R, 0.0)  # even a request of unknown price: the spend reached the limit
    assert exc.value.headers() == {}


async def test_alerts_fire_once_per_window():
    sink = Sink()
    clock = Clock(ts(2026, 12, 3, 12))  # half of the 1d window has passed
    b = Budget(id="b", scope="global", match=None, limit_usd=1.0, period="1d", alert_at=(0.5, 0.8, 1.0))
    budgets = Budgets([b], alerts=sink, clock=clock)
    start = int(ts(2026, 12, 3))
    for _ in range(2):
        budgets.settle(await budgets.admit(R, 0.3), 0.3, "acct")
    # 0.6 spent at mid-window: past 0.5, projected to 1.2 by the window's end.
    assert sink.events == [
        ("budget.threshold", f"budget:b:{start}:0.5"),
        ("budget.forecast", f"budget:b:{start}:forecast"),
    ]
    budgets.settle(await budgets.admit(R, 0.3), 0.3, "acct")
    assert sink.events[-1] == ("budget.threshold", f"budget:b:{start}:0.8")
    for _ in range(3):
        with pytest.raises(BudgetExceeded):
            await budgets.admit(R, 0.3)
    assert [e for e in sink.events if e[0] == "budget.exceeded"] == [("budget.exceeded", f"budget:b:{start}:exceeded")]
    # The next day is a new window: its alerts fire again.
    clock.t = ts(2026, 12, 4, 12)
    budgets.settle(await budgets.admit(R, 0.6), 0.6, "acct")
    assert sink.events[-2:] == [
        ("budget.threshold", f"budget:b:{int(ts(2026, 12, 4))}:0.5"),
        ("budget.forecast", f"budget:b:{int(ts(2026, 12, 4))}:forecast"),
    ]


def test_a_configured_price_carries_its_cache_write_rate():
    cfg = from_builtins(
        {
            "providers": {"a": {"type": "anthropic", "api_key": "k"}},
            "models": [
                {
                    "name": "m",
                    "targets": [
                        {"provider": "a", "model": "claude-x", "price": {"input": 3, "output": 15, "cache_write": 3.75}}
                    ],
                }
            ],
        },
        env={},
    )
    price = Runtime.build(cfg).routes["m"].targets[0].price
    assert price is not None and price.cache_write == 3.75


def test_check_config_lists_the_store_and_budgets(tmp_path):
    p = tmp_path / "b.yaml"
    p.write_text(
        "store: {url: 'postgresql://aiogw:hunter2@db/aiogw'}\n"
        "budgets:\n"
        "  - {scope: tag, match: team=search, limit_usd: 100, period: 1d, alert_at: [0.8, 0.5]}\n"
        "  - {scope: global, limit_usd: 5000}\n"
    )
    out = run_cli("check-config", str(p), env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert "store: postgresql://aiogw:***@db/aiogw" in out.stdout and "hunter2" not in out.stdout
    lines = out.stdout.splitlines()
    tag = next(line for line in lines if "tag 'team=search'" in line)
    assert "$100 per 1d" in tag and "alerts at 0.5, 0.8" in tag
    assert any("global" in line and "$5000 per month" in line for line in lines)
