"""What a relay forwards and accounts must not depend on how upstream spells its JSON.

Recorded OpenAI-shaped streams are re-serialised with other whitespace (line breaks too,
so one event spans several `data:` lines), key order and string escapes (keys included:
`"\\u0075sage"`), and must give the same forwarded events (compared as parsed JSON: chunks
the fast path changes are re-encoded, the others forwarded as sent), the same usage,
finish reasons, error and truncation verdict as the recording itself.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sse_client import chunks

from aiogw.adapters import REGISTRY
from aiogw.adapters import openai as openai_adapter
from aiogw.adapters._base import Target
from aiogw.errors import UpstreamError
from aiogw.streaming.encode import ChunkEncoder
from aiogw.streaming.relay import PassthroughRelay, TranslatingRelay
from aiogw.streaming.sse import SSEParser

FIXTURES = Path(__file__).parents[2] / "fixtures"
# provider type -> its recorded OpenAI-shaped streams
RECORDED = {
    kind: sorted((FIXTURES / folder).glob("*.sse"))
    for kind, folder in [("openai", "openai"), ("deepseek", "deepseek"), ("qwen", "qwen"), ("mistral", "mistral")]
}
STREAMS = [(kind, path.read_bytes()) for kind, paths in RECORDED.items() for path in paths]


def cost(usage) -> bytes:
    return b'"cost_usd":' + str(usage.total_tokens * 1e-6).encode()


def relay_for(kind: str, relay: str, include_usage: bool, extra: bool):
    target = Target(id=f"t/{kind}", provider="t", type=kind, model="m", base_url="http://x")
    usage_extra = cost if extra else None
    if relay == "passthrough":  # every OpenAI-shaped stream could come through an `openai` target
        return PassthroughRelay(
            openai_adapter.StreamDecoder(target), include_usage=include_usage, target=target.id, usage_extra=usage_extra
        )
    enc = ChunkEncoder(completion_id="c", created=1, model="m", include_usage=include_usage, usage_extra=usage_extra)
    return TranslatingRelay(REGISTRY[kind].stream_decoder(target), enc, target=target.id)


def upstream_events(raw: bytes) -> list[bytes]:
    parser = SSEParser()
    return [e.data for e in parser.feed(raw) + parser.close()]


def frame(data: str) -> bytes:
    """One SSE event: a JSON text with line breaks goes as several `data:` lines."""
    return "".join(f"data: {line}\n" for line in re.split(r"\r\n|\r|\n", data)).encode() + b"\n"


def run(relay, raw: bytes, rnd: random.Random) -> dict:
    """Feed `raw` in random pieces; what the client got and what the gateway accounted."""
    parser = SSEParser()
    out = bytearray()
    failed = truncated = None
    i = 0
    while i < len(raw) and relay.failed is None:
        n = rnd.randint(1, 80)
        out += relay.feed(parser.feed(raw[i : i + n]))
        i += n
    if relay.failed is None:
        out += relay.feed(parser.close())
    if relay.failed is not None:
        failed = (type(relay.failed).__name__, relay.failed.message)
    else:
        try:
            out += relay.finish()
        except UpstreamError as exc:
            truncated = exc.message
    reader = SSEParser()  # the relay's own output, read as a client would
    sent = [e.data for e in reader.feed(bytes(out)) + reader.close()]
    assert not reader.truncated
    return {
        "events": [e if e == b"[DONE]" else json.loads(e) for e in sent],
        "usage": relay.usage,
        "finish": relay.finish_reasons(),
        "failed": failed,
        "truncated": truncated,
    }


# --- re-spelling ----------------------------------------------------------------------------

WS = ["", "", " ", "  ", "\t", "\n", "\r\n", " \n  "]


def respell(value, rnd: random.Random, style: dict) -> str:
    """`value` as JSON text in a random valid spelling of the given style."""

    def ws() -> str:
        return rnd.choice(WS) if style["ws"] else ""

    if isinstance(value, dict):
        items = list(value.items())
        if style["shuffle"]:
            rnd.shuffle(items)
        inner = ",".join(f"{ws()}{string(k, rnd, style)}{ws()}:{ws()}{respell(v, rnd, style)}{ws()}" for k, v in items)
        return "{" + (inner or ws()) + "}"
    if isinstance(value, list):
        inner = ",".join(f"{ws()}{respell(v, rnd, style)}{ws()}" for v in value)
        return "[" + (inner or ws()) + "]"
    if isinstance(value, str):
        return string(value, rnd, style)
    return json.dumps(value)


def string(s: str, rnd: random.Random, style: dict) -> str:
    out = []
    for ch in s:
        if style["escape"] and rnd.random() < style["escape"]:
            if ord(ch) > 0xFFFF:  # a surrogate pair
                v = ord(ch) - 0x10000
                out.append(f"\\u{0xD800 + (v >> 10):04x}\\u{0xDC00 + (v & 0x3FF):04X}")
            else:
                out.append(f"\\u{ord(ch):04x}" if rnd.random() < 0.5 else f"\\u{ord(ch):04X}")
        elif ch == "/" and style["escape"]:
            out.append("\\/")
        else:
            out.append(json.dumps(ch, ensure_ascii=style["ascii"])[1:-1])
    return '"' + "".join(out) + '"'


def respelled_stream(raw: bytes, rnd: random.Random, style: dict) -> bytes:
    out = bytearray()
    for data in upstream_events(raw):
        if data == b"[DONE]":
            out += b"data: [DONE]\n\n"
        else:
            out += frame(rnd.choice(WS) * style["ws"] + respell(json.loads(data), rnd, style))
    return bytes(out)


def compact_stream(raw: bytes, *, done: bool) -> bytes:
    """The recording as clean `data: D` events (its keep-alive comments dropped)."""
    return b"".join(b"data: " + d + b"\n\n" for d in upstream_events(raw) if done or d != b"[DONE]")


STYLES = st.fixed_dictionaries({
    "ws": st.booleans(),
    "shuffle": st.booleans(),
    "escape": st.sampled_from([0.0, 0.05, 0.5, 1.0]),  # share of characters written as \u escapes
    "ascii": st.booleans(),  # the rest of non-ASCII as escapes (json.dumps' default) or raw UTF-8
})  # fmt: skip

PROPERTY = settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(
    stream=st.sampled_from(STREAMS),
    relay=st.sampled_from(["passthrough", "translate"]),
    include_usage=st.booleans(),
    extra=st.booleans(),
    done=st.booleans(),  # False: the stream ends at EOF without [DONE]
    style=STYLES,
    seed=st.integers(0, 2**32 - 1),
)
def test_any_spelling_of_a_recorded_stream_relays_and_accounts_like_the_recording(
    stream, relay, include_usage, extra, done, style, seed
):
    kind, raw = stream
    rnd = random.Random(seed)
    compact = compact_stream(raw, done=done)
    respelled = respelled_stream(compact, rnd, style)
    expected = run(relay_for(kind, relay, include_usage, extra), compact, random.Random(seed))
    got = run(relay_for(kind, relay, include_usage, extra), respelled, rnd)
    assert got == expected


# --- the cases of the issue, one by one ---------------------------------------------------------

TARGET = Target(id="sim/gpt-4o", provider="sim", type="openai", model="gpt-4o", base_url="http://x")
TEXT = (FIXTURES / "openai" / "stream_text_usage.sse").read_bytes()


def spaced(raw: bytes) -> bytes:
    """json.dumps' default spelling (`", "`, `": "`), as Python-based servers send it."""
    return b"".join(
        b"data: " + (d if d == b"[DONE]" else json.dumps(json.loads(d)).encode()) + b"\n\n"
        for d in upstream_events(raw)
    )


def passthrough(include_usage: bool, extra=None) -> PassthroughRelay:
    return PassthroughRelay(
        openai_adapter.StreamDecoder(TARGET), include_usage=include_usage, target=TARGET.id, usage_extra=extra
    )


def feed_all(relay, raw: bytes) -> bytes:
    parser = SSEParser()
    out = relay.feed(parser.feed(raw)) + relay.feed(parser.close())
    assert relay.failed is None, relay.failed
    return out + relay.finish()


SPELLINGS = pytest.mark.parametrize("spell", [lambda r: r, spaced], ids=["compact", "spaced"])


@SPELLINGS
def test_usage_is_read_and_hidden_from_a_client_that_did_not_ask(spell):
    relay = passthrough(include_usage=False)
    cs = chunks(feed_all(relay, spell(TEXT)))
    assert all(c["choices"] for c in cs), "the usage-only chunk is dropped"
    assert all("usage" not in c for c in cs), "usage: null is stripped"
    assert relay.usage.total_tokens == 12 and relay.finish_reasons() == ["stop"]


@SPELLINGS
def test_the_usage_chunk_gets_the_cost(spell):
    relay = passthrough(include_usage=True, extra=cost)
    cs = chunks(feed_all(relay, spell(TEXT)))
    assert cs[-1]["usage"]["cost_usd"] == 12e-6 and cs[-1]["usage"]["total_tokens"] == 12
    assert relay.finish_reasons() == ["stop"]


@SPELLINGS
def test_an_empty_usage_object_with_the_cost_is_valid_json(spell):
    raw = TEXT.replace(TEXT[TEXT.rindex(b'"usage":{') + 8 : TEXT.rindex(b"}}") + 1], b"{}")
    relay = passthrough(include_usage=True, extra=cost)
    cs = chunks(feed_all(relay, spell(raw)))
    assert cs[-1]["usage"] == {"cost_usd": 0.0}
    assert relay.usage.total_tokens == 0


@SPELLINGS
def test_eof_after_the_finish_and_usage_is_a_normal_end(spell):
    raw = spell(TEXT).replace(b"data: [DONE]\n\n", b"")
    relay = passthrough(include_usage=False)
    out = feed_all(relay, raw)  # raises UpstreamProtocolError when taken for a truncation
    assert out.endswith(b"data: [DONE]\n\n") and relay.usage.total_tokens == 12


@SPELLINGS
def test_an_error_object_anywhere_in_the_chunk_is_an_error(spell):
    err = {
        "id": "chatcmpl-" + "x" * 40,
        "choices": [],
        "error": {"message": "boom", "type": "server_error", "param": None, "code": None},
    }
    raw = spell(b"data: " + json.dumps(err, separators=(",", ":")).encode() + b"\n\ndata: [DONE]\n\n")
    relay = passthrough(include_usage=False)
    relay.feed(SSEParser().feed(raw))
    assert relay.failed is not None and "boom" in relay.failed.message


def test_json_over_several_data_lines_reaches_the_client_framed():
    pretty = [json.dumps(json.loads(d), indent=2) for d in upstream_events(TEXT) if d != b"[DONE]"]
    raw = b"".join(frame(p) for p in pretty) + b"data: [DONE]\n\n"
    relay = passthrough(include_usage=True)
    out = feed_all(relay, raw)
    assert [json.loads(e) for e in upstream_events(out)[:-1]] == [json.loads(p) for p in pretty]
    assert relay.usage.total_tokens == 12
