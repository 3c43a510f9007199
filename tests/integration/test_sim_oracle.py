"""The simulator oracle answers the same in every wire format: the answer is chosen in the
shared core (bench/sim_core.py), each format only renders it."""

from __future__ import annotations

import aiohttp

from aiogw.bench.routing_data import marker


async def test_every_wire_format_gets_the_oracles_answer(sim):
    right = "Simulated"  # a one-word answer: each format's text is exactly it
    sim.set_profile("good", quality={"*": {"easy": 1.0}})
    sim.set_profile("bad", quality={"*": {"easy": 0.0}})
    prompt = "Say it.\n" + marker("w1", "echo", "easy", right)
    msgs = [{"role": "user", "content": prompt}]
    got = {}
    async with aiohttp.ClientSession() as http:
        for account in ("good", "bad"):
            async with http.post(
                f"{sim.root(account)}/v1/chat/completions", json={"model": "m", "messages": msgs}
            ) as r:
                got["openai", account] = (await r.json())["choices"][0]["message"]["content"]
            async with http.post(f"{sim.root(account)}/v1/messages",
                                 json={"model": "m", "max_tokens": 50, "messages": msgs},
                                 headers={"anthropic-version": "2023-06-01"}) as r:  # fmt: skip
                got["anthropic", account] = (await r.json())["content"][0]["text"]
            body = {"contents": [{"role": "user", "parts": [{"text": prompt}]}]}
            async with http.post(f"{sim.root(account)}/v1beta/models/m:generateContent", json=body) as r:
                got["gemini", account] = (await r.json())["candidates"][0]["content"]["parts"][0]["text"]
            async with http.post(f"{sim.root(account)}/mistral/v1/chat/completions",
                                 json={"model": "m", "messages": msgs}) as r:  # fmt: skip
                got["mistral", account] = (await r.json())["choices"][0]["message"]["content"]
    for wire in ("openai", "anthropic", "gemini", "mistral"):
        assert got[wire, "good"] == right, wire
        assert got[wire, "bad"] != right and got[wire, "bad"] == got["openai", "bad"], wire
