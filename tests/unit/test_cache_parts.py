"""The response cache's parts without a server: the byte-bounded LRU memory store, the
canonical key, an entry's JSON and SSE faces, and the config's rules."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from aiogw.cache import entry as entries
from aiogw.cache.key import entry_key, purge_pattern, request_hash, scope_of
from aiogw.cache.stores import ENTRY_OVERHEAD, BoundedMemoryCache
from aiogw.config_load import from_builtins
from aiogw.errors import ConfigError
from aiogw.ingress.chat import parse_chat


def raw(body: dict) -> dict:
    return parse_chat(orjson.dumps(body)).raw


BODY = {"model": "fast", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}


async def test_the_memory_store_stays_under_its_bytes_and_drops_the_least_recently_used():
    size = 10 + 1000 + ENTRY_OVERHEAD  # a 10-character key, a 1000-byte value
    m = BoundedMemoryCache(3 * size)
    for k in ("key-000001", "key-000002", "key-000003"):
        await m.set(k, b"x" * 1000)
    assert await m.get("key-000001") is not None  # now the most recently used
    await m.set("key-000004", b"x" * 1000)
    assert m.bytes == 3 * size and m.entries == 3
    assert await m.get("key-000002") is None  # the least recently used went
    assert await m.get("key-000001") is not None and await m.get("key-000004") is not None
    await m.set("key-000005", b"x" * (4 * size))  # larger than the whole cache: not stored
    assert await m.get("key-000005") is None and m.bytes == 3 * size
    await m.set("key-000001", b"y")  # replacing an entry counts its new size only
    assert m.bytes == 2 * size + 10 + 1 + ENTRY_OVERHEAD


async def test_the_memory_store_expires_entries_when_read():
    m = BoundedMemoryCache(1 << 20)
    await m.set("k", b"v", ttl=0.001)
    await m.set("forever", b"v")
    for _ in range(200):
        if await m.get("k") is None:
            break
        await asyncio.sleep(0.005)
    assert await m.get("k") is None and m.entries == 1 and await m.get("forever") == b"v"
    assert m.peek("k") is None and m.peek("forever") == b"v"  # the cache stage's read


def test_the_key_ignores_spelling_and_delivery_and_keeps_every_output_field():
    base = request_hash("fast", raw(BODY))
    spaced = parse_chat(b'{"temperature": 0, "messages": [{"content": "hi", "role": "user"}], "model": "fast"}').raw
    assert request_hash("fast", spaced) == base
    escaped = parse_chat(b'{"model":"fast","temperature":0,"messages":[{"role":"user","content":"h\\u0069"}]}').raw
    assert request_hash("fast", escaped) == base  # a string's escapes are spelling too
    delivery = {**BODY, "stream": True, "stream_options": {"include_usage": True}, "user": "u", "metadata": {"a": "b"}}
    assert request_hash("fast", raw(delivery)) == base
    assert request_hash("other-group", raw(BODY)) != base
    for change in ({"tool_choice": "none"}, {"max_tokens": 5}, {"stop": ["x"]}, {"n": 2}, {"seed": 1},
                   {"response_format": {"type": "json_object"}}, {"reasoning_effort": "low"}, {"top_p": 0.5}):  # fmt: skip
        assert request_hash("fast", raw({**BODY, **change})) != base, change


def test_scopes_and_partitions():
    assert scope_of("team", "key_1", "search") == "team:search"
    assert scope_of("team", "key_1", None) == "key:key_1"  # never everybody's
    assert scope_of("key", "key_1", "search") == "key:key_1"
    assert scope_of("global", "key_1", "search") == "*"
    assert scope_of("team", None, None) == "anonymous"
    import fnmatch

    k = entry_key("p", "team:a", "ns*", "fast", "abc")
    assert fnmatch.fnmatchcase(k, purge_pattern("p", "ns*", None))
    assert fnmatch.fnmatchcase(k, purge_pattern("p", None, "fast"))
    assert not fnmatch.fnmatchcase(k, purge_pattern("p", "ns", None))  # a namespace is not a glob


def test_an_entry_from_a_stream_and_from_json_give_the_same_answer():
    answer = {"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "a b",
                           "tool_calls": [{"id": "t1", "type": "function",
                                           "function": {"name": "f", "arguments": "{\"x\":1}"}}]},
                           "finish_reason": "tool_calls"}],
              "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3, "cost_usd": 0.5}}  # fmt: skip
    e = entries.Entry(0.0, 0.5, "p", "m", body=orjson.dumps(answer))
    events = entries.sse_events(e, want_usage=True)
    assert events[-1] == entries.DONE
    split = entries.split_stream(b"".join(events))
    assert split is not None
    chunks, usage = split
    assert orjson.loads(usage) == {
        "prompt_tokens": 1,
        "completion_tokens": 2,
        "total_tokens": 3,
    }  # no cost: a hit is free
    rebuilt = orjson.loads(entries.assemble(chunks, usage))
    assert rebuilt["choices"][0]["message"]["content"] == "a b"
    assert rebuilt["choices"][0]["message"]["tool_calls"] == answer["choices"][0]["message"]["tool_calls"]
    assert rebuilt["choices"][0]["finish_reason"] == "tool_calls"
    assert entries.load(entries.dump(e)) == e
    assert entries.load(b"\xc1garbage") is None


def test_a_stream_without_its_end_or_with_an_error_is_not_an_entry():
    chunk = b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'
    assert entries.split_stream(chunk) is None
    assert entries.split_stream(chunk + b'data: {"error":{"message":"x"}}\n\n' + entries.DONE) is None
    assert entries.split_stream(b": keep-alive\n\n" + chunk + entries.DONE) is not None


@pytest.mark.parametrize(
    ("cache", "where"),
    [
        ({"ttl_s": 100, "max_ttl_s": 10}, "ttl_s"),
        ({"policy": "sometimes"}, "cache.policy"),
        ({"scope": "user"}, "cache.scope"),
        ({"max_bytes": 10}, "cache.max_bytes"),
        ({"enabled": True, "backend": "redis"}, "state.redis_url"),
    ],
)
def test_bad_cache_config_is_a_clear_error(cache, where):
    with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
        from_builtins({"cache": cache}, env={})


def test_per_model_counts_are_bounded():
    from aiogw.cache.service import MAX_MODEL_COUNTS, OTHER_MODELS, ResponseCache

    cache = ResponseCache(from_builtins({"cache": {"enabled": True}}, env={}))
    e = entries.Entry(0.0, 0.5, "p", "m", body=b"{}")
    for i in range(MAX_MODEL_COUNTS + 10):  # direct `<provider>/<model>` names: the client's text
        cache.hit(e, f"sim/model-{i}")
        cache.miss(f"sim/model-{i}")
    by = cache.counts.by_model
    assert len(by) == MAX_MODEL_COUNTS + 1
    assert (by[OTHER_MODELS].hits, by[OTHER_MODELS].misses, by[OTHER_MODELS].saved_usd) == (10, 10, 5.0)
    assert cache.counts.hits == MAX_MODEL_COUNTS + 10


def test_a_recorded_stream_keeps_every_spelling_of_its_data_lines():
    one = b'{"id":"c","choices":[{"index":0,"delta":{"content":"a"}}]}'
    spread = b'data: {"id":"c",\ndata: "choices":[{"index":0,"delta":{"content":"b"}}]}\n\n'  # two data lines
    bare = b'data:{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'  # no space
    usage = b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"cost_usd":0.1}}\n\n'
    split = entries.split_stream(b"data: " + one + b"\n\n: keep-alive\n\n" + spread + bare + usage + entries.DONE)
    assert split is not None
    chunks, got_usage = split
    assert chunks[0] == one and orjson.loads(chunks[1])["choices"][0]["delta"]["content"] == "b"
    assert orjson.loads(chunks[2])["choices"][0]["finish_reason"] == "stop" and len(chunks) == 3
    assert orjson.loads(got_usage) == {"prompt_tokens": 1, "completion_tokens": 2}


def test_cache_controls_are_parsed_once_per_set_of_values_and_errors_every_time():
    from aiogw.cache.controls import NO_CONTROLS, _parsed, parse_controls
    from aiogw.errors import InvalidRequest

    assert parse_controls({}) is NO_CONTROLS
    sent = {"cache-control": "no-cache", "x-aiogw-cache": "on"}
    first = parse_controls(sent)
    assert (first.reads, first.writes, first.mode) == (False, True, "on")
    assert parse_controls(dict(sent)) is first  # the same values: the same controls, parsed once
    read_only = parse_controls({"x-aiogw-cache": "READ"})
    assert (read_only.reads, read_only.writes) == (True, False)
    for _ in range(2):  # a bad value is refused each time (errors are not kept)
        with pytest.raises(InvalidRequest, match="x-aiogw-cache-ttl"):
            parse_controls({"x-aiogw-cache-ttl": "soon"})
    kept = _parsed.cache_info().currsize
    long = parse_controls({"x-aiogw-cache-namespace": "n" * 64, "cache-control": "max-age=5, " + "x" * 300})
    assert long.namespace == "n" * 64 and long.max_age_s == 5 and _parsed.cache_info().currsize == kept  # not kept
