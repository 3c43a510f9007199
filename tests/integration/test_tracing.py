"""OpenTelemetry traces, received by a real OTLP/HTTP endpoint (protobuf decoded with the
OpenTelemetry proto package): the server span, one client span per attempt with the GenAI
attributes, failover reasons, cost, and W3C traceparent both ways."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web
from conftest import SIM_KEY, gateway_config, until
from openai import AsyncOpenAI
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


class Collector:
    """An OTLP/HTTP trace receiver on loopback."""

    def __init__(self) -> None:
        self.spans: list = []
        self.headers: list[dict] = []

    async def receive(self, request: web.Request) -> web.Response:
        req = ExportTraceServiceRequest.FromString(await request.read())
        self.headers.append(dict(request.headers))
        for rs in req.resource_spans:
            service = {a.key: a.value.string_value for a in rs.resource.attributes}["service.name"]
            for ss in rs.scope_spans:
                for span in ss.spans:
                    self.spans.append((service, span))
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(), content_type="application/x-protobuf"
        )

    async def wait_for(self, n: int, timeout: float = 15.0) -> list:
        await until(lambda: len(self.spans) >= n, every=0.05, times=int(timeout / 0.05))
        if len(self.spans) >= n:
            return self.spans
        raise AssertionError(f"{len(self.spans)} spans arrived, expected {n}")


def attrs(span) -> dict:
    out = {}
    for a in span.attributes:
        v = a.value
        kind = v.WhichOneof("value")
        out[a.key] = [x.string_value for x in v.array_value.values] if kind == "array_value" else getattr(v, kind)
    return out


@pytest.fixture
async def collector(aiohttp_server):
    c = Collector()
    app = web.Application()
    app.router.add_post("/v1/traces", c.receive)
    server = await aiohttp_server(app)
    c.url = str(server.make_url(""))
    return c


async def test_server_and_attempt_spans_with_genai_attributes_and_traceparent(sim, make_gateway, collector):
    cfg = gateway_config(
        sim,
        telemetry={
            "otlp_endpoint": collector.url,
            "service_name": "aiogw-test",
            "export_delay_ms": 50,
            "otlp_headers": {"x-collector-token": "t0k"},
        },
        providers={
            "bad": {"type": "openai", "base_url": sim.base_url("bad"), "api_key": SIM_KEY},
            "sim": {"type": "openai", "base_url": sim.base_url(), "api_key": SIM_KEY},
        },
        models=[
            {
                "name": "safe",
                "targets": [
                    {"provider": "bad", "model": "sim-gpt-fast"},
                    {"provider": "sim", "model": "sim-gpt-fast", "price": {"input": 1.0, "output": 2.0}},
                ],
            }
        ],
    )
    url, _ = await make_gateway(cfg)
    sim.set_profile("bad", fault="status", fault_status=500)
    client = AsyncOpenAI(base_url=url, api_key="k", max_retries=0)
    try:
        raw = await client.chat.completions.with_raw_response.create(
            model="safe",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01", "x-request-id": "rid-trace"},
        )
        reply = raw.parse()
    finally:
        await client.close()
    spans = await collector.wait_for(3)
    assert {service for service, _ in spans} == {"aiogw-test"}
    assert collector.headers[0]["x-collector-token"] == "t0k"
    by_kind = {}
    for _, s in spans:
        by_kind.setdefault(s.kind, []).append(s)
    (server,) = by_kind[2]  # SPAN_KIND_SERVER
    clients = sorted(by_kind[3], key=lambda s: s.start_time_unix_nano)  # SPAN_KIND_CLIENT
    # The caller's trace continues through the gateway.
    assert server.trace_id.hex() == CALLER_TRACE and server.parent_span_id.hex() == CALLER_SPAN
    sa = attrs(server)
    assert server.name == "POST /v1/chat/completions"
    assert sa["http.response.status_code"] == 200 and sa["aiogw.request_id"] == "rid-trace"
    assert sa["gen_ai.request.model"] == "safe" and sa["gen_ai.response.model"] == "sim-gpt-fast"
    assert sa["gen_ai.usage.input_tokens"] == reply.usage.prompt_tokens
    assert sa["gen_ai.usage.output_tokens"] == reply.usage.completion_tokens
    assert sa["gen_ai.response.finish_reasons"] == ["stop"]
    assert sa["aiogw.attempts"] == 2
    assert sa["aiogw.cost_usd"] == pytest.approx(float(raw.headers["x-aiogw-cost-usd"]), rel=1e-3)
    # One client span per attempt, children of the server span.
    assert [c.name for c in clients] == ["chat sim-gpt-fast", "chat sim-gpt-fast"]
    assert all(c.trace_id == server.trace_id and c.parent_span_id == server.span_id for c in clients)
    first, second = attrs(clients[0]), attrs(clients[1])
    assert first["gen_ai.system"] == "openai" and first["aiogw.provider"] == "bad" and first["aiogw.attempt"] == 1
    assert first["error.type"] == "transient" and clients[0].status.code == 2  # STATUS_CODE_ERROR
    assert second["aiogw.attempt"] == 2 and second["aiogw.failover_reason"] == "transient"
    assert second["gen_ai.usage.output_tokens"] == reply.usage.completion_tokens
    assert second["server.address"] == "127.0.0.1"
    # Each upstream call carried its own attempt span as traceparent.
    sent = sim.stats()["last_request"]["headers"]["traceparent"]
    assert sent == f"00-{CALLER_TRACE}-{clients[1].span_id.hex()}-01"
    assert sim.stats("bad")["last_request"]["headers"]["traceparent"].split("-")[2] == clients[0].span_id.hex()


async def test_streams_are_traced_with_ttft_and_a_fresh_trace_without_a_caller(sim, make_gateway, collector):
    cfg = gateway_config(sim, telemetry={"otlp_endpoint": collector.url, "export_delay_ms": 50})
    url, _ = await make_gateway(cfg)
    async with aiohttp.ClientSession() as s:
        r = await s.post(
            url + "/chat/completions",
            json={"model": "fast", "stream": True, "messages": [{"role": "user", "content": "x"}]},
        )
        await r.read()
    spans = await collector.wait_for(2)
    server = next(s for _, s in spans if s.kind == 2)
    client = next(s for _, s in spans if s.kind == 3)
    assert server.parent_span_id == b"" and client.parent_span_id == server.span_id
    assert attrs(server)["aiogw.stream"] is True
    assert attrs(client)["aiogw.ttft_ms"] > 0
    assert attrs(client)["gen_ai.response.finish_reasons"] == ["stop"]


async def test_no_tracing_configured_sends_no_traceparent(sim, gateway):
    async with aiohttp.ClientSession() as s:
        r = await s.post(
            gateway + "/chat/completions",
            json={"model": "fast", "messages": [{"role": "user", "content": "x"}]},
            headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"},
        )
        assert r.status == 200
    assert "traceparent" not in sim.stats()["last_request"]["headers"]


def test_tracing_off_does_not_even_import_the_sdk():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from aiogw.config_load import from_builtins\n"
        "from aiogw.server.app import create_app\n"
        "create_app(from_builtins({}, env={}))\n"
        "bad = [m for m in sys.modules if m.startswith(('opentelemetry.sdk', 'opentelemetry.exporter', 'aiogw.telemetry.tracing', 'redis'))]\n"
        "assert not bad, bad\n"
    )
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
