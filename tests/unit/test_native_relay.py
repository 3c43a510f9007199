"""The native relay (a Messages client, an Anthropic target): a chunk that is one whole
content event goes out as it came, unparsed; every other chunk through the parser. Both
ways the client must get the same events, and the books the same usage and finish."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiogw.adapters import REGISTRY
from aiogw.adapters._base import Target
from aiogw.errors import UpstreamProtocolError
from aiogw.streaming.relay import NativeRelay
from aiogw.streaming.sse import SSEParser

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "anthropic"
STREAMS = [*sorted(p.name for p in FIXTURES.glob("sdk_*.sse")), "stream_text_tool.sse", "stream_thinking.sse"]
TARGET = Target(id="a/claude", provider="a", type="anthropic", model="claude", base_url="http://x")


def relay() -> NativeRelay:
    adapter = REGISTRY["anthropic"]
    return NativeRelay(adapter.stream_decoder(TARGET), target=TARGET.id, content_events=adapter.native_content_events)


def events_of(raw: bytes) -> list[tuple[str, bytes]]:
    p = SSEParser()
    return [(e.event, e.data) for e in p.feed(raw) + p.close()]


def run(chunks: list[bytes], by_chunk: bool) -> tuple[bytes, NativeRelay]:
    r, parser, out = relay(), SSEParser(), b""
    for c in chunks:
        out += r.feed_chunk(parser, c) if by_chunk else r.feed(parser.feed(c))
        assert r.failed is None
    out += r.feed(parser.close())
    out += r.finish()
    return out, r


@pytest.mark.parametrize("name", STREAMS)
def test_forwarding_chunks_as_they_came_gives_the_client_the_same_events(name):
    raw = (FIXTURES / name).read_bytes().replace(b"\r\n", b"\n")
    one_per_chunk = [block + b"\n\n" for block in raw.strip(b"\n").split(b"\n\n")]
    parsed, r1 = run(one_per_chunk, by_chunk=False)
    for chunks in (one_per_chunk, [raw[i : i + 37] for i in range(0, len(raw), 37)], [raw]):
        forwarded, r2 = run(chunks, by_chunk=True)
        assert events_of(forwarded) == events_of(parsed)
        assert (r2.usage, r2.finish_reasons()) == (r1.usage, r1.finish_reasons())
    # A lone content event after the first chunk goes out as the very bytes object the
    # upstream sent (never parsed and rebuilt, which would make a new one).
    r, parser = relay(), SSEParser()
    untouched = [r.feed_chunk(parser, c) is c for c in one_per_chunk]
    deltas = [i for i, c in enumerate(one_per_chunk) if i and c.startswith(b"event: content_block_delta\n")]
    assert all(untouched[i] for i in deltas)  # (a refusal stream has none)
    assert not untouched[0]  # the stream's first chunk settles the parser's start (a BOM): parsed


def test_a_content_event_that_is_not_json_fails_the_stream():
    r, parser = relay(), SSEParser()
    start = (FIXTURES / "sdk_basic_response.sse").read_bytes().split(b"\n\n")[0] + b"\n\n"
    assert r.feed_chunk(parser, start)  # message_start, through the parser
    assert r.feed_chunk(parser, b'event: content_block_delta\ndata: {"type":"content_block_delta",\n\n') == b""
    assert isinstance(r.failed, UpstreamProtocolError)
