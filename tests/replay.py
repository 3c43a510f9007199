"""Replay a recorded native stream through the real pipeline (SSEParser -> an adapter's
stream decoder -> ChunkEncoder, or any relay), fed in pieces split at random byte boundaries."""

from __future__ import annotations

import json
import random
from pathlib import Path

from aiogw.streaming.encode import ChunkEncoder
from aiogw.streaming.relay import TranslatingRelay
from aiogw.streaming.sse import SSEParser

FIXTURES = Path(__file__).parent / "fixtures"
ID, CREATED = "chatcmpl-test", 1760000000


def replay(decoder, data: bytes, seed: int, *, model: str, include_usage: bool = True) -> list[object]:
    """The OpenAI events the client would get: parsed JSON chunks, then the string "[DONE]".
    Raises the upstream error if the stream carries one."""
    enc = ChunkEncoder(completion_id=ID, created=CREATED, model=model, include_usage=include_usage)
    relay = TranslatingRelay(decoder, enc, target="t/" + model)
    out = feed_in_pieces(relay, data, seed)
    return [e if e == "[DONE]" else json.loads(e) for e in parse_data_lines(out)]


def feed_in_pieces(relay, data: bytes, seed: int, *, longest: int = 64) -> bytes:
    """What a relay writes for `data` arriving in pieces of 1 to `longest` bytes, cut where
    the seed says (as TCP may cut it), then the end of the stream. Raises the relay's
    failure as soon as it has one."""
    parser = SSEParser()
    rnd = random.Random(seed)
    out = bytearray()
    i = 0
    while i < len(data):
        n = rnd.randint(1, longest)
        out += relay.feed(parser.feed(data[i : i + n]))
        i += n
        if relay.failed:
            raise relay.failed
    out += relay.feed(parser.close())
    if relay.failed:
        raise relay.failed
    out += relay.finish()
    return bytes(out)


def parse_data_lines(raw: bytes) -> list[str]:
    return [block[6:] for block in raw.decode().split("\n\n") if block.startswith("data: ")]


def expected(path: Path) -> list[object]:
    return [line if line == "[DONE]" else json.loads(line) for line in path.read_text().splitlines() if line]
