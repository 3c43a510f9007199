"""The built-in pages in a real headless Chromium (Debian's, driven by Playwright): the
playground streams a completion from the simulator and the text appears as it arrives;
the dashboard shows a target's breaker turning open when the simulator fails it."""

from __future__ import annotations

import asyncio
import shutil

import aiohttp
import pytest
from conftest import both_spellings, gateway_config, until
from playwright.async_api import async_playwright

from aiogw.server.keys import CACHE

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture
async def browser():
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS, timeout=30_000)
        try:
            yield b
        finally:
            await b.close()


async def _base(make_gateway, cfg) -> str:
    url, _ = await make_gateway(cfg)
    return url.removesuffix("/v1")


@both_spellings
async def test_playground_streams_text_incrementally_with_provider_ttft_and_cost(sim, make_gateway, browser):
    sim.set_profile(tokens_per_s=20, completion_tokens=24)  # about 1.2 s of streaming
    cfg = gateway_config(
        sim,
        models=[
            {
                "name": "fast",
                "targets": [{"provider": "sim", "model": "sim-gpt-fast", "price": {"input": 1.0, "output": 2.0}}],
            },
        ],
    )
    base = await _base(make_gateway, cfg)
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(base + "/playground")
    await page.wait_for_selector("#model option[value=fast]", state="attached", timeout=10_000)
    await page.select_option("#model", "fast")
    await page.fill("#prompt", "Say something")
    await page.click("#send")
    seen: list[str] = []
    for _ in range(200):  # sample the output while it streams (bounded: 10 s)
        text = await page.inner_text("#output")
        if not seen or text != seen[-1]:
            seen.append(text)
        if await page.get_attribute("#output", "data-state") == "done":
            break
        await asyncio.sleep(0.05)
    final = await page.inner_text("#output")
    assert await page.get_attribute("#output", "data-state") == "done"
    grown = [t for t in seen if t and t != final]
    assert len(grown) >= 4, seen  # several partial texts before the end
    assert all(final.startswith(t) for t in grown)  # each a prefix of the next
    assert final.startswith("Simulated reply from sim-gpt-fast:")
    assert len(final.split(":", 1)[1].split()) == 24 - 4  # the simulator's answer, whole
    assert await page.inner_text("#provider") == "sim"
    assert await page.inner_text("#attempts") == "1"
    assert (await page.inner_text("#ttft")).endswith("ms")
    assert (await page.inner_text("#cost")).startswith("$0.0000")
    assert await page.inner_text("#finish") == "stop"
    assert not errors


async def test_playground_shows_an_error_answer(sim, make_gateway, browser):
    sim.set_profile(fault="status", fault_status=401)
    base = await _base(make_gateway, gateway_config(sim))
    page = await browser.new_page()
    await page.goto(base + "/playground")
    await page.wait_for_selector("#model option[value=fast]", state="attached", timeout=10_000)
    await page.fill("#prompt", "hi")
    await page.click("#send")
    await page.wait_for_selector("#error:not([hidden])", timeout=10_000)
    assert "sim/sim-gpt-fast" in await page.inner_text("#error")


async def test_dashboard_shows_a_target_turning_open(sim, make_gateway, browser):
    cfg = gateway_config(
        sim,
        routing={"breaker": {"consecutive_failures": 3, "open_s": 60}},
        models=[
            {
                "name": "fast",
                "targets": [{"provider": "compat", "model": "sim-llama"}, {"provider": "sim", "model": "sim-gpt-fast"}],
            }
        ],
    )
    base = await _base(make_gateway, cfg)
    page = await browser.new_page()
    await page.goto(base + "/dashboard?refresh=200")
    card = page.locator('[data-target="compat/sim-llama"]')
    await card.wait_for(timeout=10_000)
    assert await card.get_attribute("data-state") == "closed"
    assert (await card.locator(".state").inner_text()).lower() == "closed"
    sim.set_profile("compat", fault="status", fault_status=500)
    async with aiohttp.ClientSession() as s:
        for _ in range(3):
            async with s.post(
                base + "/v1/chat/completions", json={"model": "fast", "messages": [{"role": "user", "content": "x"}]}
            ) as r:
                assert r.status == 200  # failed over to sim/
    await page.wait_for_selector('[data-target="compat/sim-llama"][data-state="open"]', timeout=10_000)
    assert (await card.locator(".state").inner_text()).lower() == "open"
    assert "500" in await card.locator(".lasterr").inner_text()
    assert await page.inner_text("#sum-open") == "1"
    # Spend rows arrive too (the fallback answered and was costed at its listed price or 0).
    await page.wait_for_selector("#spend tbody tr", timeout=10_000)


async def test_pages_can_be_turned_off_and_have_a_strict_csp(sim, make_gateway):
    base = await _base(make_gateway, gateway_config(sim))
    async with aiohttp.ClientSession() as s:
        async with s.get(base + "/playground") as r:
            assert r.status == 200 and r.content_type == "text/html"
            assert "default-src 'self'" in r.headers["Content-Security-Policy"]
            assert r.headers["X-Content-Type-Options"] == "nosniff"
        async with s.get(base + "/pages/dashboard.js") as r:
            assert r.status == 200 and r.content_type == "text/javascript"
        async with s.get(base + "/pages/../config.py") as r:
            assert r.status == 404
    off = await _base(make_gateway, gateway_config(sim, server={"host": "127.0.0.1", "port": 0, "pages": False}))
    async with aiohttp.ClientSession() as s:
        async with s.get(off + "/playground") as r:
            assert r.status == 404


async def test_spend_endpoint_matches_the_cost_headers(sim, make_gateway):
    cfg = gateway_config(
        sim,
        models=[
            {
                "name": "fast",
                "targets": [{"provider": "sim", "model": "sim-gpt-fast", "price": {"input": 1.0, "output": 2.0}}],
            },
        ],
    )
    base = await _base(make_gateway, cfg)
    total = 0.0
    async with aiohttp.ClientSession() as s:
        for tags in ("team=a", "team=a", "team=b"):
            async with s.post(
                base + "/v1/chat/completions",
                headers={"x-aiogw-tags": tags},
                json={"model": "fast", "messages": [{"role": "user", "content": "x"}]},
            ) as r:
                total += float(r.headers["x-aiogw-cost-usd"])
        async with s.get(base + "/v1/gateway/spend") as r:
            spend = await r.json()
    assert spend["total_usd"] == pytest.approx(total, rel=1e-6)
    rows = {row["tags"]: row for row in spend["rows"]}
    assert rows["team=a"]["requests"] == 2 and rows["team=b"]["requests"] == 1
    assert rows["team=a"]["model"] == "fast" and rows["team=a"]["upstream_model"] == "sim-gpt-fast"


async def test_a_page_on_another_origin_streams_through_cors(sim, make_gateway, browser, aiohttp_server):
    """A real cross-origin fetch: Chromium sends the preflight (content-type JSON, a custom
    header), reads the stream and an exposed x-aiogw header; an origin not allowed is blocked."""
    from aiohttp import web

    async def index(_: web.Request) -> web.Response:
        return web.Response(text="<!doctype html><title>app</title>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/", index)
    page_server = await aiohttp_server(app)
    origin = str(page_server.make_url("")).rstrip("/")
    base = await _base(
        make_gateway, gateway_config(sim, server={"host": "127.0.0.1", "port": 0, "cors": {"allow_origins": [origin]}})
    )
    page = await browser.new_page()
    await page.goto(origin + "/")
    script = """async (url) => {
      const r = await fetch(url + "/v1/chat/completions", {method: "POST",
        headers: {"content-type": "application/json", "x-aiogw-tags": "team=web"},
        body: JSON.stringify({model: "fast", stream: true, messages: [{role: "user", content: "hi"}]})});
      const reader = r.body.getReader(); const dec = new TextDecoder(); let text = "", reads = 0;
      for (;;) { const {value, done} = await reader.read(); if (done) break; reads++; text += dec.decode(value); }
      return {status: r.status, provider: r.headers.get("x-aiogw-provider"), done: text.trim().endsWith("data: [DONE]"), reads};
    }"""
    got = await page.evaluate(script, base)
    assert got["status"] == 200 and got["provider"] == "sim" and got["done"], got
    # Served from an origin the gateway does not list: the browser refuses the answer.
    other = await _base(
        make_gateway,
        gateway_config(
            sim, server={"host": "127.0.0.1", "port": 0, "cors": {"allow_origins": ["https://elsewhere.example"]}}
        ),
    )
    blocked = await page.evaluate(
        "async (url) => { try { await fetch(url + '/v1/models'); return 'read'; } catch (e) { return 'blocked'; } }",
        other,
    )
    assert blocked == "blocked"


async def test_dashboard_shows_budgets_keys_and_slo_behind_the_master_key(sim, make_gateway, browser, tmp_path):
    master = "sk-master-dashboard"
    cfg = gateway_config(
        sim,
        auth={"master_key": master},
        store={"url": f"sqlite:///{tmp_path}/aiogw.db"},
        budgets=[{"scope": "model", "match": "fast", "limit_usd": 1.0, "period": "month", "alert_at": [0.5, 0.8, 1.0]}],
        models=[
            {
                "name": "fast",
                "slo": {"ttft_p95_ms": 60_000, "min_calls": 1},
                "targets": [{"provider": "sim", "model": "sim-gpt-fast", "price": {"input": 1000.0, "output": 1000.0}}],
            },
        ],
    )
    base = await _base(make_gateway, cfg)
    admin = {"authorization": f"Bearer {master}"}
    async with aiohttp.ClientSession() as s:
        async with s.post(base + "/admin/v1/keys", headers=admin, json={"name": "team-a", "team": "a"}) as r:
            made = await r.json()
        async with s.post(
            base + "/v1/chat/completions",
            headers={"authorization": f"Bearer {made['key']}"},
            json={"model": "fast", "messages": [{"role": "user", "content": "x"}], "max_tokens": 5},
        ) as r:
            assert r.status == 200, await r.text()
    page = await browser.new_page()
    await page.goto(base + "/dashboard?refresh=200")
    await page.locator('[data-target="sim/sim-gpt-fast"] .badge.slo').wait_for(timeout=10_000)
    # Without the master key: no money panel, and the spend total says why.
    assert await page.locator("#money").is_hidden()
    await page.locator("#sum-spend", has_text="master key needed").wait_for(timeout=10_000)
    await page.fill("#admin-key", master)
    await page.click("#admin-show")
    budget = page.locator("[data-budget]")
    await budget.first.wait_for(timeout=10_000)
    assert await budget.locator(".threshold").count() == 3  # alert_at ticks
    assert float(await budget.locator(".spent").get_attribute("width")) > 0
    assert "of $1.00" in await budget.locator(".nums").inner_text()
    await page.locator(f'#keys tr[data-key="{made["id"]}"]').wait_for(timeout=10_000)
    assert "team-a" in await page.inner_text("#keys")
    await page.locator("#sum-spend", has_text="$").wait_for(timeout=10_000)


async def test_dashboard_shows_the_cache_hit_rate_and_saved_spend_per_model(sim, make_gateway, browser, tmp_path):
    master = "sk-master-dashboard"
    cfg = gateway_config(
        sim,
        auth={"master_key": master},
        store={"url": f"sqlite:///{tmp_path}/aiogw.db"},
        cache={"enabled": True},
        models=[
            {
                "name": "fast",
                "targets": [{"provider": "sim", "model": "sim-gpt-fast", "price": {"input": 1000.0, "output": 1000.0}}],
            }
        ],
    )
    url, app = await make_gateway(cfg)
    base = url.removesuffix("/v1")
    admin = {"authorization": f"Bearer {master}"}
    body = {"model": "fast", "messages": [{"role": "user", "content": "x"}], "temperature": 0}
    async with aiohttp.ClientSession() as s:
        for want in ("miss", "hit"):
            if want == "hit":  # the miss's entry is written off the request path
                await until(lambda: app[CACHE].counts.stored >= 1)
            async with s.post(base + "/v1/chat/completions", headers=admin, json=body) as r:
                assert r.status == 200, await r.text()
                assert r.headers["x-aiogw-cache-status"] == want
    page = await browser.new_page()
    await page.goto(base + "/dashboard?refresh=200")
    await page.locator("#status", has_text="live").wait_for(timeout=10_000)
    assert await page.locator("#cache").is_hidden()  # saved spend is spend: the master key first
    await page.fill("#admin-key", master)
    await page.click("#admin-show")
    row = page.locator("#cache-models tbody tr", has_text="fast")
    await row.wait_for(timeout=10_000)
    cells = await row.locator("td").all_inner_texts()
    assert cells[:4] == ["fast", "1", "1", "50.0%"]
    assert float(cells[4]) > 0  # what the hit would have cost
    await page.locator("#cache-summary", has_text="hit rate 50.0%").wait_for(timeout=10_000)


async def test_the_dashboard_has_no_cache_panel_when_the_cache_is_off(sim, make_gateway, browser, tmp_path):
    master = "sk-master-dashboard"
    cfg = gateway_config(sim, auth={"master_key": master}, store={"url": f"sqlite:///{tmp_path}/aiogw.db"})
    base = await _base(make_gateway, cfg)
    page = await browser.new_page()
    await page.goto(base + "/dashboard?refresh=200")
    await page.fill("#admin-key", master)
    await page.click("#admin-show")
    await page.locator("#status", has_text="live").wait_for(timeout=10_000)
    await page.locator("#money").wait_for(timeout=10_000)  # the key was taken; still no cache panel
    assert await page.locator("#cache").is_hidden()


async def test_dashboard_shows_quality_estimates_and_traffic_shares_moving(sim, make_gateway, browser, tmp_path):
    master = "sk-master-dashboard"
    prior = tmp_path / "quality.json"
    prior.write_text(
        '{"version": 1, "models": {"sim/sim-gpt-mini": {"A": {"n": 40, "mean": 0.98}, "B": {"n": 40, "mean": 0.3}},'
        ' "compat/sim-llama": {"*": {"n": 40, "mean": 0.97}}}}'
    )
    cfg = gateway_config(
        sim,
        auth={"master_key": master},
        store={"url": f"sqlite:///{tmp_path}/aiogw.db"},
        models=[
            {
                "name": "auto",
                "strategy": "quality",
                "quality": {"floor": 0.9, "prior": str(prior), "explore": 0},
                "targets": [
                    {"provider": "compat", "model": "sim-llama", "price": {"input": 5.0, "output": 15.0}},
                    {"provider": "sim", "model": "sim-gpt-mini", "price": {"input": 0.1, "output": 0.4}},
                ],
            }
        ],
    )
    base = await _base(make_gateway, cfg)

    async def send(task):
        body = {"model": "auto", "messages": [{"role": "user", "content": "x"}]}
        async with aiohttp.ClientSession() as s:
            async with s.post(base + "/v1/chat/completions", headers={"x-aiogw-task": task}, json=body) as r:
                assert r.status == 200, await r.text()

    await send("A")
    await send("B")
    page = await browser.new_page()
    await page.goto(base + "/dashboard?refresh=200")
    await page.locator("#status", has_text="live").wait_for(timeout=10_000)
    assert await page.locator("#quality").is_hidden()  # estimates are the admin's: the master key first
    await page.fill("#admin-key", master)
    await page.click("#admin-show")
    cheap_a = page.locator('#quality-models tr[data-task="A"][data-target="sim/sim-gpt-mini"]')
    await cheap_a.wait_for(timeout=10_000)
    cells = await cheap_a.locator("td").all_inner_texts()
    assert cells[:3] == ["A", "sim/sim-gpt-mini", "20"] and cells[5] == "✓" and cells[7] == "1"
    smart_b = page.locator('#quality-models tr[data-task="B"][data-target="compat/sim-llama"]')
    assert (await smart_b.locator("td").all_inner_texts())[7] == "1"
    await send("A")  # the traffic moves on the page

    async def picks_of_cheap_a():
        return (await cheap_a.locator("td").all_inner_texts())[7]

    await until(_equals(picks_of_cheap_a, "2"), every=0.05, times=200)
    assert await picks_of_cheap_a() == "2"


def _equals(read, want):
    async def check():
        return await read() == want

    return check
