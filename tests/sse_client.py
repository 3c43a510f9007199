"""Reading the gateway's own SSE output in tests, and accumulating it with the official
SDK's accumulator (openai.lib.streaming.chat), the authority on what clients rebuild."""

from __future__ import annotations

import json

from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk


def events(raw: bytes) -> list[bytes]:
    """data payloads of an LF-framed SSE body (what aiogw writes), [DONE] included."""
    out = []
    for block in raw.split(b"\n\n"):
        if not block.strip():
            continue
        lines = [ln for ln in block.split(b"\n") if not ln.startswith(b":")]
        if not lines:
            continue
        assert all(ln.startswith(b"data: ") for ln in lines), block
        out.append(b"\n".join(ln[6:] for ln in lines))
    return out


def chunks(raw: bytes) -> list[dict]:
    evs = events(raw)
    assert evs[-1] == b"[DONE]", "a stream must end with data: [DONE]"
    assert evs.count(b"[DONE]") == 1
    return [json.loads(e) for e in evs[:-1]]


def accumulate(raw: bytes):
    """The final ChatCompletion the SDK would build from these bytes."""
    state = ChatCompletionStreamState()
    for c in chunks(raw):
        assert "error" not in c, c
        state.handle_chunk(ChatCompletionChunk.model_validate(c))
    return state.get_final_completion()
