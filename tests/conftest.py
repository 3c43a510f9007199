"""Shared fixtures: the provider simulator and the gateway, both real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os

import pytest
from aiohttp.test_utils import TestServer
from blockbuster import blockbuster_ctx
from openai import AsyncOpenAI

from aiogw.bench.sim_core import Profile
from aiogw.bench.simulator import start_simulator
from aiogw.config_load import from_builtins
from aiogw.server.app import GatewayRunner, create_app

SIM_KEY = "sk-sim-upstream-key-0123456789"

# The simulator's JSON spellings: a test marked `both_spellings` runs against each, and
# what the client gets and the gateway accounts must not depend on it.
both_spellings = pytest.mark.parametrize("json_spelling", ["compact", "spaced"])


def examples(full: int) -> int:
    """Hypothesis examples for a property test: a fifth of `full` in the everyday suite (which
    must stay quick on two cores), `full` with AIOGW_FUZZ_FULL=1 (CI's nightly, or after a
    change to what the test covers)."""
    return full if os.environ.get("AIOGW_FUZZ_FULL") else max(1, full // 5)


async def until(check, *, every: float = 0.02, times: int = 100) -> None:
    """Poll `check` (a function, maybe async) until it is true or `times` polls have passed;
    the caller asserts what it needs afterwards."""
    for _ in range(times):
        got = check()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return
        await asyncio.sleep(every)


@pytest.fixture(autouse=True)
def no_blocking_calls_on_the_event_loop():
    """A blocking call (file or socket I/O, sleep, a lock) made by aiogw's own code on a
    running event loop raises `BlockingError` and fails the test (blockbuster patches the
    standard library; calls from the tests' own code and from other libraries are allowed)."""
    # Named one by one: from a checkout, adapters/ and streaming/ are not below aiogw/; the
    # simulators and load tools of aiogw.bench are the tests' side, not the gateway's.
    with blockbuster_ctx(["aiogw", "aiogw.adapters", "aiogw.streaming"], excluded_modules=["aiogw.bench"]) as bb:
        for function in bb.functions.values():
            for where, name in ALLOWED_BLOCKING:
                function.can_block_in(where, name)
        yield


# Blocking calls that libraries make on the loop, allowed where they are made, each a bounded
# one-off (not per request or per chunk):
ALLOWED_BLOCKING = [
    # redis-py reads its own version from package metadata when it opens a connection
    ("redis/utils.py", "get_lib_version"),
    # resident memory for /metrics from /proc/self/statm: the kernel answers from memory
    ("aiogw/telemetry/metrics.py", "_rss_bytes"),
    # the OpenTelemetry SDK runs its resource detectors in a thread pool and joins it, once,
    # when tracing is configured (at start-up, before the gateway serves)
    ("opentelemetry/sdk/resources/__init__.py", "get_aggregated_resources"),
    # asyncpg looks for ~/.pgpass and ~/.postgresql/ client certificates as it opens a
    # connection: a few stat calls per pooled connection (PostgresStore.POOL_SIZE at most)
    ("asyncpg/connect_utils.py", "_parse_connect_dsn_and_args"),
    # a quality group's prior file is read and checked as the config loads: before any loop
    # in `aiogw serve`, on the tests' loop only because they build configs there
    ("aiogw/config_load.py", "_quality_priors"),
]


@pytest.fixture
def json_spelling():
    return "compact"


@pytest.fixture
async def sim(json_spelling):
    s = await start_simulator(Profile(spaced_json=json_spelling == "spaced"))
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


class GatewayTestServer(TestServer):
    """aiohttp's TestServer with the gateway's own runner (OpenAI-shaped protocol errors)."""

    async def _make_runner(self, **kwargs):
        return GatewayRunner(self.app, **kwargs)


@pytest.fixture
async def make_gateway():
    """Start a gateway for a config; returns its base URL (ending in /v1)."""
    servers = []

    async def start(cfg):
        app = create_app(cfg)
        server = GatewayTestServer(app)
        servers.append(server)
        await server.start_server()  # with handler_cancellation=True, as `aiogw serve`
        return str(server.make_url("/v1")), app

    yield start
    for server in servers:
        await server.close()


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


class RedisServer:
    """A real redis-server on a free loopback port (installed by tests/system-deps.sh)."""

    def __init__(self) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = None

    def start(self) -> None:
        import shutil
        import subprocess
        import time

        exe = shutil.which("redis-server")
        assert exe, "redis-server is missing: run tests/system-deps.sh"
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis(port=self.port, socket_timeout=0.5)
        for _ in range(200):
            try:
                if client.ping():
                    break
            except redis.exceptions.ConnectionError:
                time.sleep(0.02)
        else:
            raise RuntimeError("redis-server did not start")
        client.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def redis_server():
    r = RedisServer()
    r.start()
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture(scope="session")
def postgres_server():
    """One throwaway PostgreSQL cluster for the whole session (started on first use); each
    test gets its own database in it (`store_url`)."""
    from postgres_server import PostgresServer

    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
async def store_url(request, tmp_path):
    """The durable store's URL, once per backend: every test that uses it runs on each,
    with a store of its own (a fresh SQLite file, a fresh PostgreSQL database)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/aiogw.db"
        return
    import uuid

    import asyncpg

    server = request.getfixturevalue("postgres_server")
    name = f"test_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(server.url())
    try:
        # Earlier tests' databases go now, not at their own teardown: a gateway fixture set
        # up before `store_url` is torn down after it, and may still flush its ledger there.
        while server.finished:
            await admin.execute(f"DROP DATABASE IF EXISTS {server.finished.pop()} WITH (FORCE)")
        # FILE_COPY: copying the template's files (in memory, fsync off) takes a third of
        # the time of writing them through the WAL, the default since PostgreSQL 15
        strategy = " STRATEGY FILE_COPY" if admin.get_server_version().major >= 15 else ""
        await admin.execute(f"CREATE DATABASE {name}{strategy}")
    finally:
        await admin.close()
    yield server.url(name)
    server.finished.append(name)
