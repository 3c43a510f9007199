"""`aiogw serve --demo`: the gateway in front of built-in simulated providers, no keys needed
(a master key and one demo virtual key are made at start, to try the admin API with).

Everything the demo answers is visibly simulated: model and provider names say so, and the
simulator's text starts with "Simulated reply".
"""

from __future__ import annotations

import secrets

from aiohttp import web

from aiogw.bench.simulator import Profile, Simulator, start_simulator
from aiogw.config import Config
from aiogw.config_load import from_builtins
from aiogw.server.keys import AUTH

# One simulator process plays three provider accounts with different behaviour.
ACCOUNTS = {
    "default": Profile(ttft_ms=30, tokens_per_s=400, completion_tokens=40),
    "flaky": Profile(
        ttft_ms=30, tokens_per_s=400, completion_tokens=40, fault="status", fault_status=503, fault_rate=0.5
    ),
    "local": Profile(ttft_ms=150, tokens_per_s=40, completion_tokens=60),
    "claude": Profile(ttft_ms=40, tokens_per_s=300, completion_tokens=40),
    "gemini": Profile(ttft_ms=30, tokens_per_s=500, completion_tokens=40),
}


def demo_config(sim_url: str, master_key: str | None = None) -> Config:
    """With `master_key`: the admin API on, keys in an in-memory store (gone at exit), and
    keys still not required, so requests without one keep working."""
    extra = {"auth": {"master_key": master_key}, "store": {"url": "sqlite:///:memory:"}} if master_key else {}
    return from_builtins(
        {
            **extra,
            "server": {"host": "127.0.0.1", "port": 8080},
            "providers": {
                "sim-openai": {"type": "openai", "base_url": f"{sim_url}/v1", "api_key": "sk-demo-simulated"},
                "sim-flaky": {"type": "openai", "base_url": f"{sim_url}/flaky/v1", "api_key": "sk-demo-simulated"},
                "sim-local": {"type": "openai-compatible", "base_url": f"{sim_url}/local/v1"},
                # The same simulator speaking Anthropic's and Gemini's native wire formats.
                "sim-anthropic": {"type": "anthropic", "base_url": f"{sim_url}/claude", "api_key": "sk-demo-simulated"},
                "sim-gemini": {"type": "gemini", "base_url": f"{sim_url}/gemini", "api_key": "sk-demo-simulated"},
            },
            "models": [
                {"name": "demo-fast", "targets": [{"provider": "sim-openai", "model": "sim-gpt-fast"}]},
                {
                    "name": "demo-failover",
                    "targets": [
                        {"provider": "sim-flaky", "model": "sim-gpt-flaky"},
                        {"provider": "sim-openai", "model": "sim-gpt-fast"},
                    ],
                },
                {"name": "demo-slow-stream", "targets": [{"provider": "sim-local", "model": "sim-llama-slow"}]},
                {"name": "demo-claude", "targets": [{"provider": "sim-anthropic", "model": "sim-claude"}]},
                {"name": "demo-gemini", "targets": [{"provider": "sim-gemini", "model": "sim-gemini-flash"}]},
                {
                    "name": "demo-mixed",  # Anthropic first, Gemini when it fails: one stream shape
                    "targets": [
                        {"provider": "sim-anthropic", "model": "sim-claude"},
                        {"provider": "sim-gemini", "model": "sim-gemini-flash"},
                    ],
                },
            ],
        },
        file="<demo>",
        env={},
    )


def new_master_key() -> str:
    return "aiogw-demo-master-" + secrets.token_urlsafe(24)


async def create_demo_key(app: web.Application) -> str:
    """One virtual key for trying keys out: limited to the demo's models, tagged as the demo's."""
    auth = app[AUTH]
    assert auth is not None
    _, secret = await auth.keys.create({"name": "demo", "models": ("demo-*",), "tags": {"source": "demo"}})
    return secret


async def start_demo_simulator() -> Simulator:
    sim = await start_simulator(ACCOUNTS["default"])
    for account, profile in ACCOUNTS.items():
        sim.set_profile(account, profile)
    return sim
