"""Virtual keys through HTTP: the admin API, authentication on /v1 (the official `openai`
SDK as the client), allow-lists, per-key limits shared by two gateways over a real Redis,
rotation with a grace period, revocation seen by another replica, and secrets that never
reach a log line or the store file."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import aiohttp
import openai
import pytest
from conftest import gateway_config, until
from openai import AsyncOpenAI
from procs import run_cli, start_aiogw

from aiogw.admission import keys as keys_mod
from aiogw.server.keys import AUTH, MONEY, STORE

MASTER = "master-key-for-tests-0123456789"
ADMIN = {"authorization": f"Bearer {MASTER}"}
HELLO = [{"role": "user", "content": "Hello"}]


def keys_config(sim, store_url, **auth):
    return gateway_config(sim, auth={"master_key": MASTER, **auth}, store={"url": store_url})


def sdk(url, key):
    return AsyncOpenAI(base_url=url, api_key=key, max_retries=0, timeout=20)


class Admin:
    """The admin API of one gateway (plain HTTP: it is not part of OpenAI's API)."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.base = url.removesuffix("/v1")
        self.session = session

    async def call(self, method, path, body=None, headers=ADMIN):
        async with self.session.request(method, self.base + path, json=body, headers=headers) as r:
            return r.status, await r.json()

    async def create(self, **body):
        status, got = await self.call("POST", "/admin/v1/keys", {"name": "test", **body})
        assert status == 201, got
        return got


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


async def chat(url, key, model="fast", **kw):
    async with sdk(url, key) as c:
        return await c.chat.completions.create(model=model, messages=HELLO, **kw)


async def test_every_admin_call(sim, make_gateway, store_url, session):
    url, _ = await make_gateway(keys_config(sim, store_url))
    admin = Admin(url, session)
    expires = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    made = await admin.create(
        name="ci",
        team="search",
        user="ana",
        models=["fast"],
        limits={"rpm": 600, "tpm": 100000},
        budgets=[{"limit_usd": 5, "period": "1d", "alert_at": [0.5, 1.0]}],
        tags={"team": "search"},
        expires_at=expires.isoformat().replace("+00:00", "Z"),
        metadata={"owner": "ana@example.com"},
    )
    secret, key_id = made["key"], made["id"]
    assert secret.startswith("sk-aiogw-") and key_id.startswith("key_")
    assert made["prefix"] == secret[:13] and made["status"] == "active"
    assert made["expires_at"] == expires.isoformat().replace("+00:00", "Z")
    assert made["budgets"] == [{"limit_usd": 5.0, "period": "1d", "alert_at": [0.5, 1.0]}]

    status, shown = await admin.call("GET", f"/admin/v1/keys/{key_id}")
    assert status == 200 and "key" not in shown and secret not in str(shown)
    assert shown["limits"] == {"rpm": 600, "tpm": 100000}
    [window] = shown["spend"]  # the key's own budget, its current window
    assert window["period"] == "1d" and window["limit_usd"] == 5.0 and window["alert_at"] == [0.5, 1.0]
    assert window["spent_usd"] == 0 and window["remaining_usd"] == 5.0 and window["resets_at"].endswith("T00:00:00Z")
    assert shown["metadata"] == {"owner": "ana@example.com"}

    others = [(await admin.create(name=f"k{i}"))["id"] for i in range(2)]
    status, page = await admin.call("GET", "/admin/v1/keys?limit=2")
    assert status == 200 and [k["id"] for k in page["data"]] == [key_id, others[0]]
    assert page["has_more"] and secret not in str(page)
    status, rest = await admin.call("GET", f"/admin/v1/keys?limit=2&after={page['next_after']}")
    assert [k["id"] for k in rest["data"]] == [others[1]] and not rest["has_more"]
    status, team = await admin.call("GET", "/admin/v1/keys?team=search")
    assert [k["id"] for k in team["data"]] == [key_id]

    status, patched = await admin.call("PATCH", f"/admin/v1/keys/{key_id}", {"name": "ci-2", "limits": None})
    assert status == 200 and patched["name"] == "ci-2" and patched["limits"] == {"rpm": None, "tpm": None}
    assert patched["team"] == "search"  # not sent: unchanged

    status, rotated = await admin.call("POST", f"/admin/v1/keys/{key_id}/rotate", {"grace_period_s": 60})
    assert status == 200 and rotated["id"] == key_id and rotated["key"] != secret
    assert rotated["previous_secret_valid_until"] is not None

    status, revoked = await admin.call("POST", f"/admin/v1/keys/{key_id}/revoke")
    assert status == 200 and revoked["status"] == "revoked" and revoked["revoked_at"] is not None

    status, deleted = await admin.call("DELETE", f"/admin/v1/keys/{key_id}")
    assert status == 200 and deleted == {"object": "key", "id": key_id, "deleted": True}
    for method, path in [
        ("GET", ""),
        ("PATCH", ""),
        ("POST", "/rotate"),
        ("POST", "/revoke"),
        ("DELETE", ""),
    ]:
        status, err = await admin.call(method, f"/admin/v1/keys/{key_id}{path}", {} if method != "GET" else None)
        assert status == 404 and err["error"]["code"] == "key_not_found", (method, path, err)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"name": "x", "limits": {"rpm": "many"}}, "limits.rpm"),
        ({"name": "x", "limits": {"rpm": 0}}, "limits.rpm"),
        ({"name": "x", "budgets": [{"limit_usd": 5, "period": "2w"}]}, "budgets[0].period"),
        ({"name": "x", "tags": {"team": "a,b"}}, "tags.team"),
        ({"name": "x", "expires_at": "next tuesday"}, "expires_at"),
        ({"name": "x", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"name": "x", "colour": "blue"}, "colour"),
        ({"name": "x", "limits": {"rpn": 5}}, "limits.rpn"),
        ({}, "name"),
    ],
)
async def test_a_bad_key_body_is_a_400_naming_the_field(sim, make_gateway, store_url, session, body, param):
    url, _ = await make_gateway(keys_config(sim, store_url))
    status, err = await Admin(url, session).call("POST", "/admin/v1/keys", body)
    assert status == 400
    assert err["error"]["type"] == "invalid_request_error" and err["error"]["param"] == param, err


async def test_the_admin_api_needs_the_master_key(sim, make_gateway, store_url, session):
    url, _ = await make_gateway(keys_config(sim, store_url))
    admin = Admin(url, session)
    made = await admin.create()
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": f"Bearer {made['key']}"}):
        status, err = await admin.call("GET", "/admin/v1/keys", headers=headers)
        assert status == 401 and err["error"]["code"] == "invalid_api_key"


async def test_keys_optional_anonymous_and_placeholder_pass_but_a_bad_key_is_refused(
    sim, make_gateway, store_url, session
):
    url, _ = await make_gateway(keys_config(sim, store_url))
    assert (await chat(url, "placeholder")).choices  # not one of ours: no key at all
    async with session.post(url + "/chat/completions", json={"model": "fast", "messages": HELLO}) as r:
        assert r.status == 200  # none sent
    assert (await chat(url, MASTER)).choices  # the master key works on /v1 too
    with pytest.raises(openai.AuthenticationError) as exc:
        await chat(url, "sk-aiogw-" + "x" * 43)
    assert exc.value.body["type"] == "invalid_request_error" and exc.value.body["code"] == "invalid_api_key"


async def test_keys_required(sim, make_gateway, store_url, session):
    url, _ = await make_gateway(keys_config(sim, store_url, require_keys=True))
    secret = (await Admin(url, session).create())["key"]
    async with session.post(url + "/chat/completions", json={"model": "fast", "messages": HELLO}) as r:
        assert r.status == 401 and (await r.json())["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        await chat(url, "placeholder")
    assert (await chat(url, secret)).choices
    async with session.get(url + "/models", headers={"x-api-key": secret}) as r:
        assert r.status == 200
    async with sdk(url, secret) as c:
        assert (await c.embeddings.create(model="fast", input="hi")).data


async def test_revoked_deleted_and_expired_keys_are_refused(sim, make_gateway, store_url, session):
    url, _ = await make_gateway(keys_config(sim, store_url))
    admin = Admin(url, session)
    keys = [await admin.create() for _ in range(3)]
    for k in keys:
        assert (await chat(url, k["key"])).choices  # verified and cached
    await admin.call("POST", f"/admin/v1/keys/{keys[0]['id']}/revoke")
    await admin.call("DELETE", f"/admin/v1/keys/{keys[1]['id']}")
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    status, _ = await admin.call("PATCH", f"/admin/v1/keys/{keys[2]['id']}", {"expires_at": past})
    assert status == 200
    for k in keys:
        with pytest.raises(openai.AuthenticationError) as exc:
            await chat(url, k["key"])
        assert exc.value.body["code"] == "invalid_api_key"
    assert "expired" in exc.value.body["message"]


async def test_rotation_keeps_the_old_secret_until_the_grace_ends(sim, make_gateway, store_url, session):
    url, _ = await make_gateway(keys_config(sim, store_url))
    admin = Admin(url, session)
    made = await admin.create()
    old = made["key"]
    assert (await chat(url, old)).choices
    status, rotated = await admin.call("POST", f"/admin/v1/keys/{made['id']}/rotate", {"grace_period_s": 1.5})
    assert status == 200, rotated
    new = rotated["key"]
    assert (await chat(url, old)).choices  # within the grace
    assert (await chat(url, new)).choices

    async def old_refused():
        try:
            await chat(url, old)
        except openai.AuthenticationError as exc:
            return exc
        return None

    await until(old_refused, every=0.1, times=100)
    refused = await old_refused()
    assert refused is not None and "rotated" in refused.body["message"]
    assert (await chat(url, new)).choices

    _, again = await admin.call("POST", f"/admin/v1/keys/{made['id']}/rotate", {})  # no grace
    with pytest.raises(openai.AuthenticationError):
        await chat(url, new)
    assert (await chat(url, again["key"])).choices


async def test_a_key_calls_only_its_models(sim, make_gateway, store_url, session):
    url, _ = await make_gateway(keys_config(sim, store_url))
    secret = (await Admin(url, session).create(models=["fast"]))["key"]
    assert (await chat(url, secret)).choices
    with pytest.raises(openai.PermissionDeniedError) as exc:
        await chat(url, secret, model="compat-model")
    assert exc.value.body["type"] == "permission_error" and exc.value.body["code"] == "model_not_allowed"
    with pytest.raises(openai.PermissionDeniedError):
        await chat(url, secret, extra_headers={"x-aiogw-fallbacks": "compat-model"})
    async with sdk(url, secret) as c:
        assert [m.id async for m in c.models.list()] == ["fast"]
        with pytest.raises(openai.PermissionDeniedError):
            await c.models.retrieve("compat-model")


async def test_a_keys_tags_join_the_request_and_win_on_conflict(sim, make_gateway, store_url, session):
    url, _ = await make_gateway(keys_config(sim, store_url))
    secret = (await Admin(url, session).create(tags={"team": "search"}))["key"]
    await chat(url, secret, extra_headers={"x-aiogw-tags": "team=ads,feature=qa"})
    async with session.get(url + "/gateway/spend", headers={"authorization": f"Bearer {MASTER}"}) as r:
        rows = (await r.json())["rows"]
    assert [row["tags"] for row in rows] == ["feature=qa,team=search"]
    # Everyone's dollar figures are the admin's: a key, or nobody, is refused.
    for headers in ({"authorization": f"Bearer {secret}"}, {}):
        async with session.get(url + "/gateway/spend", headers=headers) as r:
            assert r.status == 401 and (await r.json())["error"]["code"] == "invalid_api_key"


async def test_v1_key_shows_the_key_itself(sim, make_gateway, store_url, session):
    url, _ = await make_gateway(keys_config(sim, store_url))
    made = await Admin(url, session).create(name="self", metadata={"internal": "note"}, limits={"rpm": 5})
    async with session.get(url + "/key", headers={"authorization": f"Bearer {made['key']}"}) as r:
        me = await r.json()
    assert r.status == 200 and me["id"] == made["id"] and me["limits"]["rpm"] == 5
    assert "key" not in me and "metadata" not in me and made["key"] not in str(me)
    async with session.get(url + "/key") as r:
        assert r.status == 401


async def test_key_rpm_is_shared_by_two_gateways(sim, make_gateway, redis_server, store_url, session):
    cfg = gateway_config(
        sim, auth={"master_key": MASTER}, store={"url": store_url}, state={"redis_url": redis_server.url}
    )
    a, _ = await make_gateway(cfg)
    b, _ = await make_gateway(cfg)
    secret = (await Admin(a, session).create(limits={"rpm": 3}))["key"]
    for url in (a, b, a):
        assert (await chat(url, secret)).choices
    for url in (b, a):
        with pytest.raises(openai.RateLimitError) as exc:
            await chat(url, secret)
        assert exc.value.body["code"] == "rate_limit_exceeded"
        assert int(exc.value.response.headers["retry-after"]) >= 1


async def test_a_revocation_reaches_another_replica_within_a_second(
    sim, make_gateway, redis_server, store_url, session, monkeypatch
):
    # Cache entries that would live a minute: only the Redis message can make B refuse in time.
    monkeypatch.setattr(keys_mod, "CACHE_TTL_S", 60.0)
    cfg = gateway_config(
        sim,
        auth={"master_key": MASTER},
        store={"url": store_url},
        state={"redis_url": redis_server.url},
    )
    a, _ = await make_gateway(cfg)
    b, _ = await make_gateway(cfg)
    made = await Admin(a, session).create()
    assert (await chat(b, made["key"])).choices  # cached on B
    await Admin(a, session).call("POST", f"/admin/v1/keys/{made['id']}/revoke")

    async def refused():
        async with session.get(b + "/models", headers={"x-api-key": made["key"]}) as r:
            return r.status == 401

    await until(refused, every=0.02, times=50)  # the contract's bound: about a second of polls
    assert await refused()


async def test_secrets_reach_neither_the_logs_nor_the_store(tmp_path):
    from aiogw.bench.sim_core import Profile
    from aiogw.bench.simulator import start_simulator

    sim = await start_simulator(Profile())
    db = tmp_path / "keys.db"
    config = tmp_path / "aiogw.yaml"
    config.write_text(
        f"""
log: {{level: debug}}
auth: {{master_key: "{MASTER}"}}
store: {{url: "sqlite:///{db}"}}
providers:
  sim: {{type: openai, base_url: "{sim.base_url()}", api_key: sk-sim-upstream-key-0123456789}}
models:
  - {{name: fast, targets: [{{provider: sim, model: sim-gpt-fast}}]}}
"""
    )
    proc = await start_aiogw("--config", str(config))
    try:
        async with aiohttp.ClientSession() as s:
            admin = Admin(proc.url + "/v1", s)
            made = await admin.create()
            _, rotated = await admin.call("POST", f"/admin/v1/keys/{made['id']}/rotate", {"grace_period_s": 60})
            secrets = [made["key"], rotated["key"]]
            for secret in secrets:
                assert (await chat(proc.url + "/v1", secret)).choices
                async with sdk(proc.url + "/v1", secret) as c:  # a streamed one and a failing one too
                    async for _ in await c.chat.completions.create(model="fast", messages=HELLO, stream=True):
                        pass
                    with pytest.raises(openai.NotFoundError):
                        await c.chat.completions.create(model="nope", messages=HELLO)
            with pytest.raises(openai.AuthenticationError):
                await chat(proc.url + "/v1", secrets[0][:-1] + "x")
    finally:
        assert await proc.stop() == 0
        await sim.close()
    logged = b"".join(proc.stderr_lines)
    assert b"request.finished" in logged  # the log was written (and is what is searched)
    lines = [line for line in proc.logs() if line.get("event") == "request.finished" and line["status"] != 401]
    assert {line.get("key_id") for line in lines} == {made["id"]}  # who called, by id
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("keys.db"))
    assert b"aiogw_keys" in stored
    for secret in secrets:
        random_part = secret.removeprefix("sk-aiogw-").encode()
        assert random_part not in logged
        assert random_part not in stored
        assert random_part[:16] not in stored  # not even a part of it (the prefix shows 4 characters)
    assert MASTER.encode() not in logged and MASTER.encode() not in stored


def test_check_config_shows_auth_but_no_secret(tmp_path):
    config = tmp_path / "aiogw.yaml"
    config.write_text(
        f"""
auth: {{master_key: "{MASTER}", require_keys: true, pepper: "pepper-secret-value"}}
store: {{url: "sqlite:///{tmp_path}/x.db"}}
providers:
  sim: {{type: openai-compatible, base_url: "http://127.0.0.1:9/v1"}}
models:
  - {{name: fast, targets: [{{provider: sim, model: m}}]}}
"""
    )
    out = run_cli("check-config", str(config))
    assert out.returncode == 0, out.stderr
    assert "auth: keys required on /v1; admin API on (master key set); pepper set" in out.stdout
    assert MASTER not in out.stdout and "pepper-secret-value" not in out.stdout


def test_required_keys_without_a_way_to_verify_them_is_a_config_error(tmp_path):
    config = tmp_path / "aiogw.yaml"
    config.write_text("auth: {require_keys: true}\n")
    out = run_cli("check-config", str(config))
    assert out.returncode == 2
    assert "auth" in out.stderr and "require_keys needs master_key" in out.stderr


async def test_the_demo_prints_a_master_key_and_a_working_demo_key():
    proc = await start_aiogw("--demo")
    try:
        lines = []
        while not any("demo key:" in line for line in lines) and len(lines) < 20:
            lines.append((await asyncio.wait_for(proc.proc.stdout.readline(), 20)).decode())
        text = "".join(lines)
        master = text.split("master key: ")[1].split()[0]
        demo_key = text.split("demo key:")[1].split()[0]
        assert (await chat(proc.url + "/v1", demo_key, model="demo-fast")).choices
        assert (await chat(proc.url + "/v1", "no-key-needed", model="demo-fast")).choices
        async with aiohttp.ClientSession() as s:
            async with s.get(proc.url + "/admin/v1/keys", headers={"authorization": f"Bearer {master}"}) as r:
                assert r.status == 200 and [k["name"] for k in (await r.json())["data"]] == ["demo"]
    finally:
        assert await proc.stop() == 0


async def test_key_tpm_reserves_the_request_and_settles_with_its_usage(sim, make_gateway, store_url, session):
    url, _ = await make_gateway(keys_config(sim, store_url))
    secret = (await Admin(url, session).create(limits={"tpm": 100}))["key"]
    # Reserves min(prompt + max_tokens, 100): the whole bucket; the ~21 tokens used are kept.
    first = await chat(url, secret, max_tokens=200)
    assert first.usage.total_tokens < 100
    with pytest.raises(openai.RateLimitError) as exc:
        await chat(url, secret, max_tokens=200)  # needs the whole bucket again
    assert "tpm" in exc.value.body["message"]
    assert (await chat(url, secret, max_tokens=10)).choices  # what was not used came back


async def test_the_store_is_read_once_per_key_not_per_request(sim, make_gateway, store_url, session, monkeypatch):
    monkeypatch.setattr(keys_mod, "CACHE_TTL_S", 60.0)  # so that the counts below depend on nothing else
    monkeypatch.setattr(keys_mod, "NEGATIVE_TTL_S", 60.0)
    url, app = await make_gateway(keys_config(sim, store_url, key_cache_size=2))
    store = app[STORE]
    reads = 0
    fetchone = store.fetchone

    async def counted(sql, args=()):
        nonlocal reads
        reads += "secret_hash" in sql and "WHERE" in sql and "prev_hash = ?" in sql
        return await fetchone(sql, args)

    monkeypatch.setattr(store, "fetchone", counted)
    admin = Admin(url, session)
    made = [await admin.create(name=f"k{i}") for i in range(3)]

    async def models(key):
        async with session.get(url + "/models", headers={"x-api-key": key}) as r:
            return r.status

    wrong = "sk-aiogw-" + "w" * 43
    assert await asyncio.gather(*(models(wrong) for _ in range(20))) == [401] * 20  # at once: one read
    assert [await models(wrong) for _ in range(10)] == [401] * 10  # then: remembered
    assert reads == 1
    assert await asyncio.gather(*(models(made[0]["key"]) for _ in range(20))) == [200] * 20
    assert reads == 2
    for k in made:  # three keys through a cache of two: bounded
        assert await models(k["key"]) == 200
    assert len(app[AUTH].keys.verified._verified) == 2


async def test_the_budget_and_alert_stages_read_a_keys_budgets_and_expiry(sim, make_gateway, store_url, session):
    url, app = await make_gateway(keys_config(sim, store_url))
    admin = Admin(url, session)
    later = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    made = await admin.create(budgets=[{"limit_usd": 2.5, "period": "7d"}], expires_at=later)
    await admin.create(name="no-expiry")
    keys = app[AUTH].keys
    key_budgets = app[MONEY].budgets.key_budgets  # what the budget stage asks on the request path
    assert not key_budgets(made["id"])  # not verified by any request yet
    assert (await chat(url, made["key"])).choices
    [budget] = key_budgets(made["id"])
    assert (budget.scope, budget.match, budget.limit_usd, budget.period) == ("key", made["id"], 2.5, "7d")
    assert [k.id for k in await keys.with_expiry()] == [made["id"]]


async def test_a_store_that_does_not_answer_is_a_503_not_a_crash(sim, make_gateway, session):
    """Keys cannot be checked: the request is refused with a 503 saying so (never a 500,
    never let through unchecked), and served again once the store is back."""
    from postgres_server import PostgresServer

    server = PostgresServer()  # its own cluster, to stop: the session's is shared
    try:
        await asyncio.to_thread(server.start)
        url, _ = await make_gateway(keys_config(sim, server.url(), require_keys=True))
        secret = (await Admin(url, session).create(name="s"))["key"]
        await asyncio.to_thread(server.halt)
        # A key never seen by this gateway needs the store to be checked.
        with pytest.raises(openai.InternalServerError) as caught:
            await (
                sdk(url, "sk-aiogw-" + "x" * 43)
                .with_options(max_retries=0)
                .chat.completions.create(model="fast", messages=[{"role": "user", "content": "hi"}])
            )
        assert caught.value.status_code == 503
        assert caught.value.body["code"] == "store_unavailable"
        assert caught.value.response.headers["retry-after"] == "1"
        await asyncio.to_thread(server.launch)

        async def served() -> bool:
            try:
                await chat(url, secret)
                return True
            except openai.APIStatusError:
                return False

        await until(served, times=300)
    finally:
        await asyncio.to_thread(server.stop)
