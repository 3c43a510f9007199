"""Shared fixtures: the provider simulator and the gateway, both real servers on 127.0.0.1."""

from __future__ import annotations

import pytest
from openai import AsyncOpenAI

from aiogw.bench.simulator import start_simulator
from aiogw.config import from_builtins
from aiogw.server.app import create_app

SIM_KEY = "sk-sim-upstream-key-0123456789"


@pytest.fixture
async def sim():
    s = await start_simulator()
    try:
        yield s
    finally:
        await s.close()


def gateway_config(sim, **overrides):
    """A config with one `openai` account and one `openai-compatible` account on the simulator."""
    data = {
        "server": {"host": "127.0.0.1", "port": 0, "shutdown_grace": 5},
        "providers": {
            "sim": {"type": "openai", "base_url": sim.base_url(), "api_key": SIM_KEY},
            "compat": {"type": "openai-compatible", "base_url": sim.base_url("compat")},
        },
        "models": [
            {"name": "fast", "targets": [{"provider": "sim", "model": "sim-gpt-fast"}]},
            {"name": "compat-model", "targets": [{"provider": "compat", "model": "sim-llama"}]},
        ],
    }
    data.update(overrides)
    return from_builtins(data, env={})


@pytest.fixture
def make_gateway(aiohttp_server):
    """Start a gateway for a config; returns its base URL (ending in /v1)."""

    async def start(cfg):
        app = create_app(cfg)
        server = await aiohttp_server(app)  # TestServer runs with handler_cancellation=True
        return str(server.make_url("/v1")), app

    return start


@pytest.fixture
async def gateway(sim, make_gateway):
    url, _ = await make_gateway(gateway_config(sim))
    return url


@pytest.fixture
async def client(gateway):
    c = AsyncOpenAI(base_url=gateway, api_key="client-key", max_retries=0, timeout=20)
    try:
        yield c
    finally:
        await c.close()
