"""The compose stack's aiogw config, run for real: the gateway process with that file, the
simulator standing in for the `simulator` service and a real redis-server for `redis`
(the hostnames replaced through the variables the file reads)."""

from __future__ import annotations

from pathlib import Path

from openai import AsyncOpenAI
from procs import start_aiogw

CONFIG = Path(__file__).parents[2] / "deploy" / "aiogw.compose.yaml"


async def test_compose_config_serves_through_the_simulator_with_shared_state(sim, redis_server, tmp_path):
    env = {
        "OPENAI_BASE_URL": sim.base_url("openai"),
        "ANTHROPIC_BASE_URL": sim.root("anthropic"),
        "AIOGW_REDIS_URL": redis_server.url,
        "AIOGW_STORE_URL": f"sqlite:///{tmp_path}/aiogw.db",  # not the image's /var/lib/aiogw
        "OTEL_EXPORTER_OTLP_ENDPOINT": "",  # no collector here: tracing off
    }
    p = await start_aiogw("--config", str(CONFIG), env=env)
    try:
        client = AsyncOpenAI(base_url=p.url + "/v1", api_key="unused", max_retries=0)
        raw = await client.chat.completions.with_raw_response.create(
            model="default", messages=[{"role": "user", "content": "hi"}]
        )
        assert raw.headers["x-aiogw-provider"] == "openai" and raw.parse().choices[0].message.content
        sim.set_profile("openai", fault="status", fault_status=503)  # the OpenAI stand-in fails: Anthropic's answers
        text = ""
        async for chunk in await client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "hi"}], stream=True
        ):
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
        assert text
        await client.close()
    finally:
        assert await p.stop() == 0
    assert any(e.get("event") == "state.shared" for e in p.logs())
