"""Names clients choose: the model-name rule (at the edge and at config load) and the bounds
on the state such names create (targets by id, per-target state, spend rows)."""

import statistics
import time

import pytest

from aiogw.accounting.ledger import Ledger
from aiogw.attempts.dispatcher import Dispatcher
from aiogw.config_load import from_builtins
from aiogw.errors import ConfigError, InvalidRequest, ModelNotFound
from aiogw.names import MAX_DIRECT_TARGETS, MAX_SPEND_ROWS, PerTarget, Recent, model_name_problem
from aiogw.runtime import Runtime

REAL_IDS = [
    "gpt-4o-mini",
    "ft:gpt-4o-mini-2024-07-18:my-org:custom-suffix:9abc123",
    "models/gemini-2.5-flash",
    "meta-llama/Llama-3.1-8B-Instruct",
    "anthropic.claude-3-5-sonnet-20240620-v1:0",
    "us.anthropic.claude-3-7-sonnet-20250219-v1:0",
    "claude-3-5-sonnet@20240620",
    "llama3.1:8b",
    "/models/Qwen2.5-7B-Instruct",  # vLLM's default served name is the model's path
    "openrouter/anthropic/claude-3.5-sonnet:beta",
    "Qwen2.5-7B-Instruct-Q4_K_M.gguf",
    "model+variant",
    "a" * 256,
]


@pytest.mark.parametrize("name", REAL_IDS)
def test_every_kind_of_real_model_id_passes(name):
    assert model_name_problem(name) is None


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "is empty"),
        ("a" * 257, "257 characters long (at most 256)"),
        ("x\ny", "control character U+000A"),
        ("x\r", "control character U+000D"),
        ("x\x00", "control character U+0000"),
        ("x\x7f", "control character U+007F"),
        ("x y", "contains ' '"),
        ("x?key=k", "contains '?'"),
        ("x#y", "contains '#'"),
        ("%2e%2e/x", "contains '%'"),
        ("a,b", "contains ','"),
        ("ü", "contains 'ü'"),
        ("../../x", "'.' or '..' path segment"),
        ("x/./y", "'.' or '..' path segment"),
        ("..", "'.' or '..' path segment"),
    ],
)
def test_names_outside_the_rule_are_refused_with_the_reason(name, why):
    problem = model_name_problem(name)
    assert problem is not None and why in problem


def _config(groups: int = 20, **extra):
    return from_builtins(
        {
            "providers": {"acct": {"type": "openai", "base_url": "http://127.0.0.1:1/v1", "api_key": "k"}},
            "models": [
                {"name": f"group-{i}", "targets": [{"provider": "acct", "model": f"m-{i}"}]} for i in range(groups)
            ],
            **extra,
        },
        env={},
    )


def test_the_edge_refuses_an_invalid_name_with_a_400_naming_model_and_an_unknown_one_with_404():
    runtime = Runtime.build(_config())
    with pytest.raises(InvalidRequest) as bad:
        runtime.resolve("acct/x\r\ninjected: 1")
    assert bad.value.param == "model" and bad.value.code == "invalid_model_name"
    assert "U+000D" in bad.value.message and "\r" not in bad.value.message  # shown escaped
    with pytest.raises(ModelNotFound):
        runtime.resolve("nobody/x")
    assert runtime.resolve("acct/ft:gpt-4o:org:custom:id").targets[0].model == "ft:gpt-4o:org:custom:id"


@pytest.mark.parametrize(
    ("where", "models"),
    [
        ("models[0].name", [{"name": "my model", "targets": [{"provider": "acct", "model": "m"}]}]),
        ("models[0].targets[0].model", [{"name": "ok", "targets": [{"provider": "acct", "model": "m\n"}]}]),
    ],
)
def test_configured_names_pass_the_same_rule(where, models):
    with pytest.raises(ConfigError) as err:
        _config(0, models=models)
    assert err.value.path == where and "invalid model name" in err.value.expected


def _cost_of_listing(runtime: Runtime, dispatcher: Dispatcher) -> float:
    """CPU seconds (median of 3) of what one /metrics scrape does six times."""
    samples = []
    for _ in range(3):
        started = time.process_time()
        for _ in range(3):
            runtime.targets(dispatcher.health.all())
        samples.append(time.process_time() - started)
    return statistics.median(samples)


async def test_target_lookup_at_10k_names_costs_what_it_costs_at_1k():
    runtime = Runtime.build(_config())
    dispatcher = Dispatcher(None, runtime)  # type: ignore[arg-type] - no upstream calls here

    def use(names: range) -> None:  # what a request does with its name: resolve it, touch its health
        for i in names:
            dispatcher.health.get(runtime.resolve(f"acct/made-up-{i}").targets[0].id)

    use(range(1_000))
    at_1k = _cost_of_listing(runtime, dispatcher)
    use(range(1_000, 10_000))
    at_10k = _cost_of_listing(runtime, dispatcher)
    # Before: each lookup scanned every route ever addressed (quadratic: 27 s a call at 6,000).
    assert at_10k <= 3 * at_1k + 0.02, (at_1k, at_10k)
    listed = runtime.targets(dispatcher.health.all())
    assert len(listed) == len(runtime.configured) + MAX_DIRECT_TARGETS
    assert "acct/made-up-9999" in listed and "acct/made-up-0" not in listed
    assert all(f"acct/m-{i}" in listed for i in range(20))
    # A direct name the memo forgot is rebuilt identically, by id.
    again = runtime.known_target("acct/made-up-0")
    assert again is not None and (again.model, again.base_url) == ("made-up-0", "http://127.0.0.1:1/v1")


def test_per_target_state_keeps_configured_targets_and_the_most_recent_others():
    table: PerTarget[int] = PerTarget({"acct/kept"}, cap=3)
    table.put("acct/kept", 0)
    for i in range(10):
        table.put(f"acct/x{i}", i)
    table.get("acct/x7")  # used: the most recent now
    table.put("acct/x10", 10)
    assert set(table.all()) == {"acct/kept", "acct/x9", "acct/x7", "acct/x10"}
    assert table.get("acct/x8") is None and len(table) == 4
    everything: PerTarget[int] = PerTarget(None, cap=1)  # None: a hand-built store keeps every target
    for i in range(5):
        everything.put(f"t{i}", i)
    assert len(everything) == 5
    recent: Recent[str, int] = Recent(2)
    for i, key in enumerate("abc"):
        recent.put(key, i)
    assert list(recent) == ["b", "c"]


def test_spend_rows_are_capped_and_the_totals_stay_whole():
    ledger = Ledger()
    for i in range(MAX_SPEND_ROWS + 500):
        ledger.add(
            model="fast", provider="acct", upstream_model="m", task="chat", tags=f"run=n{i}", usage=None, cost=0.5
        )
    assert len(ledger.rows) == MAX_SPEND_ROWS + 1
    other = ledger.rows[("other", "acct", "other", "chat", "other")]
    assert (other.requests, other.cost_usd) == (500, 250.0)
    assert sum(r.requests for r in ledger.rows.values()) == MAX_SPEND_ROWS + 500
