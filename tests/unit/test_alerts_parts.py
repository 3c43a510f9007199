"""The parts of alerts and SLOs that need no server: which breaker transitions alert, SLO
evaluation, key expiry, retry-after parsing, config errors and check-config's report."""

from __future__ import annotations

import pytest
from procs import run_cli

from aiogw.alerts.expiring import check_expiring
from aiogw.alerts.webhooks import event_id, retry_after_s, sign, webhook_egress
from aiogw.config import BreakerConfig, SLOConfig
from aiogw.config_load import from_builtins
from aiogw.errors import ConfigError, FailureClass
from aiogw.routing.health import TargetHealth, WindowStats
from aiogw.routing.slo import evaluate


class Recorded:
    def __init__(self) -> None:
        self.fired: list[tuple[str, str, dict]] = []

    def fire(self, type: str, *, once_per: str, **fields) -> None:
        self.fired.append((type, once_per, fields))


def fail(h: TargetHealth, now: float):
    probe = h.begin(now)
    h.end(now, probe=probe, failure=FailureClass.TRANSIENT, latency_ms=10, error="boom")


def test_breaker_open_alerts_on_opening_not_on_a_failed_probe_or_an_adopted_transition():
    sink = Recorded()
    h = TargetHealth(BreakerConfig(consecutive_failures=2, open_s=1), target_id="p/m", alerts=sink)
    fail(h, 0.0)
    fail(h, 0.1)
    assert h.state == "open"
    assert [(t, f["target"], f["reason"]) for t, _, f in sink.fired] == [("breaker.open", "p/m", "transient: boom")]
    assert h.available(2.0) and h.state == "half_open"
    fail(h, 2.0)  # a failed probe: open again, the same outage
    assert h.state == "open" and len(sink.fired) == 1
    other = TargetHealth(BreakerConfig(), target_id="p/m", alerts=sink)
    other.adopt("open", 5.0, 5.0)  # another replica opened it and alerted
    assert other.state == "open" and len(sink.fired) == 1 and other.alerts is sink


def stats(requests, *, ttft=None, latency=None, error_rate=0.0):
    return WindowStats(requests, 0, {}, error_rate, None, latency, None, ttft)


def test_slo_evaluation_names_each_breached_objective_and_is_unknown_below_min_calls():
    slo = SLOConfig(ttft_p95_ms=100, latency_p95_ms=1000, error_rate=0.02, min_calls=5)
    assert evaluate(slo, stats(4, ttft=900, error_rate=1.0)).status == "unknown"
    assert evaluate(slo, stats(5, ttft=90, latency=900, error_rate=0.01)).status == "ok"
    got = evaluate(slo, stats(5, ttft=150, latency=900, error_rate=0.5))
    assert got.status == "breach" and got.breached == ("ttft_p95_ms", "error_rate")
    # Non-streaming calls have no time to first token: that objective is not judged.
    assert evaluate(SLOConfig(ttft_p95_ms=100, min_calls=1), stats(9)).status == "ok"


class Key:
    def __init__(self, id, expires_at, name="k"):
        self.id, self.expires_at, self.name = id, expires_at, name


def test_keys_expiring_within_the_notice_fire_once_per_expiry_date():
    sink = Recorded()
    now = 1_800_000_000.0
    keys = [Key("a", now + 3600), Key("b", now + 30 * 86400), Key("c", None), Key("d", now - 1)]
    assert check_expiring(keys, now, 7 * 86400, sink) == 1
    ((type_, once_per, fields),) = sink.fired
    assert type_ == "key.expiring" and fields["key_id"] == "a" and fields["expires_in_s"] == 3600
    assert fields["expires_at"] == "2027-01-15T09:00:00Z"
    check_expiring([Key("a", now + 7200)], now, 7 * 86400, sink)  # expiry moved: a new occurrence
    assert sink.fired[1][1] != once_per


def test_event_ids_signatures_and_retry_after():
    assert event_id("x") == event_id("x") != event_id("y")
    # RFC 4231, test case 2
    assert sign("Jefe", b"what do ya want for nothing?") == (
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )
    assert retry_after_s("7", 0) == 7.0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:10 GMT", 1445412480.0) == 10.0
    assert retry_after_s("soon", 0) is None and retry_after_s(None, 0) is None


@pytest.mark.parametrize(
    ("alerts", "path", "expected"),
    [
        ({"webhooks": [{"url": "hooks.example.com/x"}]}, "alerts.webhooks[0]", "url: expected an http"),
        ({"webhooks": [{"url": "https://h/x", "events": ["budget.exceed"]}]}, "alerts.webhooks[0]", "budget.exceed"),
        ({"webhooks": [{"url": "https://h/x", "max_attempts": 0}]}, "alerts.webhooks[0].max_attempts", ">= 1"),
    ],
)
def test_bad_alert_settings_are_config_errors_naming_the_key(alerts, path, expected):
    with pytest.raises(ConfigError) as e:
        from_builtins({"alerts": alerts}, env={})
    assert e.value.path == path and expected in str(e.value)


def test_an_empty_slo_is_a_config_error():
    group = {"name": "m", "slo": {}, "targets": [{"provider": "p", "model": "x"}]}
    with pytest.raises(ConfigError) as e:
        from_builtins({"providers": {"p": {"type": "openai-compatible", "base_url": "http://h"}}, "models": [group]})
    assert e.value.path == "models[0].slo" and "at least one of" in str(e.value)


def test_check_config_shows_alerts_and_slos_never_the_webhook_secret_or_path(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(
        """
providers:
  p: {type: openai-compatible, base_url: "http://127.0.0.1:9/v1"}
models:
  - name: smart
    slo: {ttft_p95_ms: 1500, error_rate: 0.02}
    targets: [{provider: p, model: m}]
alerts:
  webhooks: [{url: "https://hooks.example.com/services/s3cr3tpath", secret: "hook-secret-xyz", events: [slo.breach]}]
"""
    )
    out = run_cli("check-config", str(p), env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert "slo: ttft_p95_ms <= 1500, error_rate <= 0.02" in out.stdout
    assert "webhooks[0] https://hooks.example.com  events=slo.breach signed" in out.stdout
    assert "hook-secret-xyz" not in out.stdout and "s3cr3tpath" not in out.stdout


def test_webhooks_take_the_environments_proxy_as_providers_do():
    env = {"HTTPS_PROXY": "http://user:pw@proxy.corp:3128", "NO_PROXY": "internal.corp"}
    via = webhook_egress("https://hooks.example.com/x", env)
    assert via is not None and via.proxy is not None and "proxy.corp" in str(via.proxy)
    assert webhook_egress("https://hooks.internal.corp/x", env) is None
    assert webhook_egress("http://127.0.0.1:9/x", {"HTTP_PROXY": "http://proxy.corp:3128"}) is None
    assert webhook_egress("https://hooks.example.com/x", {}) is None
