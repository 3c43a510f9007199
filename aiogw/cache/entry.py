"""A stored answer and its two faces. One entry serves streaming and non-streaming
clients: an answer stored from a JSON reply is replayed as SSE chunks made from it, one
stored from a stream keeps its recorded chunks (their boundaries, reasoning and tool-call
deltas) and is assembled into the JSON reply a non-streaming client expects."""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

DONE = b"data: [DONE]\n\n"


class Entry(msgspec.Struct, array_like=True, omit_defaults=True):
    created: float  # wall clock when stored (the `age` header)
    cost_usd: float  # what the answer cost when it was made (x-aiogw-cost-saved-usd)
    provider: str
    model: str  # the upstream model that answered
    body: bytes | None = None  # the JSON answer (a non-streaming miss)
    chunks: list[bytes] | None = None  # the chunks' JSON, usage chunk apart (a streaming miss)
    usage: bytes | None = None  # the answer's usage object (JSON)


_encode_entry = msgspec.msgpack.Encoder().encode
_decode_entry = msgspec.msgpack.Decoder(Entry).decode


def dump(e: Entry) -> bytes:
    return _encode_entry(e)


def load(raw: bytes) -> Entry | None:
    try:
        return _decode_entry(raw)
    except msgspec.DecodeError:
        return None  # written by another version: a miss, overwritten by the next answer


# --- recording a stream --------------------------------------------------------------


def split_stream(raw: bytes) -> tuple[list[bytes], bytes | None] | None:
    """The SSE bytes a client got as (chunks, usage); None when the stream did not end
    cleanly (no `[DONE]`, an error event; a finish other than those allowed is checked by
    the caller from the outcome).

    Only the last two events are decoded: an error event ends a stream, and the usage
    chunk (`choices` empty) comes last before `[DONE]`, from OpenAI and from the gateway's
    own encoder alike; the content chunks before them are kept as they are (a miss's
    recording must cost little next to the stream itself)."""
    if not raw.endswith(DONE):
        return None
    body = raw[: -len(DONE)]
    if body.startswith(b"data: ") and body.count(b"\n") == 2 * body.count(b"\n\ndata: ") + 2:
        chunks = body[6:-2].split(b"\n\ndata: ")  # every event one `data: ` line: split in C
    else:
        chunks = _data_of_events(body)
    usage = None
    for i in range(len(chunks) - 1, max(-1, len(chunks) - 3), -1):  # the last two, from the end
        if b'"usage"' not in chunks[i] and b'"error"' not in chunks[i]:
            continue  # neither (the names may be escaped in JSON, but never by our encoders or OpenAI)
        obj = orjson.loads(chunks[i])
        if not isinstance(obj, dict) or "error" in obj:
            return None
        if not obj.get("choices") and obj.get("usage"):
            usage = orjson.dumps(_without_cost(obj["usage"]))
            del chunks[i]  # kept apart (from the end: the other index stays right)
    return (chunks, usage) if chunks else None


def _data_of_events(body: bytes) -> list[bytes]:
    """Each event's data, in any SSE spelling: several data lines joined, `data:` without
    its space, heartbeats (comments) skipped."""
    chunks = []
    for event in body.split(b"\n\n"):
        if data := [line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]:
            chunks.append(b"\n".join(data))
    return chunks


def _without_cost(usage: dict[str, Any]) -> dict[str, Any]:
    usage.pop("cost_usd", None)  # the gateway's extension: what this call cost, not a hit
    return usage


# --- the JSON face -------------------------------------------------------------------


def as_json(e: Entry) -> bytes:
    if e.body is not None:
        return e.body
    assert e.chunks is not None
    return assemble(e.chunks, e.usage)


def assemble(chunks: list[bytes], usage: bytes | None) -> bytes:
    """Stream chunks folded into a chat.completion, as the OpenAI SDK's stream helper does."""
    first = orjson.loads(chunks[0])
    choices: dict[int, dict[str, Any]] = {}
    for raw in chunks:
        obj = orjson.loads(raw)
        for c in obj.get("choices") or ():
            i = c.get("index", 0)
            ch = choices.setdefault(
                i, {"index": i, "message": {"role": "assistant", "content": None}, "finish_reason": None}
            )
            msg = ch["message"]
            delta = c.get("delta") or {}
            for field in ("content", "reasoning_content", "refusal"):
                if delta.get(field):
                    msg[field] = (msg.get(field) or "") + delta[field]
            for tc in delta.get("tool_calls") or ():
                calls = msg.setdefault("tool_calls", [])
                j = tc.get("index", 0)
                while len(calls) <= j:
                    calls.append({"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
                call = calls[j]
                if tc.get("id"):
                    call["id"] = tc["id"]
                fn = tc.get("function") or {}
                if fn.get("name"):
                    call["function"]["name"] += fn["name"]
                if fn.get("arguments"):
                    call["function"]["arguments"] += fn["arguments"]
            if c.get("finish_reason"):
                ch["finish_reason"] = c["finish_reason"]
    out: dict[str, Any] = {
        "id": first.get("id", ""),
        "object": "chat.completion",
        "created": first.get("created", 0),
        "model": first.get("model", ""),
        "choices": [choices[i] for i in sorted(choices)],
    }
    if first.get("system_fingerprint"):
        out["system_fingerprint"] = first["system_fingerprint"]
    if usage is not None:
        out["usage"] = orjson.loads(usage)
    return orjson.dumps(out)


# --- the SSE face --------------------------------------------------------------------


def sse_events(e: Entry, want_usage: bool) -> list[bytes]:
    """The entry as an OpenAI SSE stream, `data: [DONE]` included."""
    if e.chunks is not None:
        chunks, usage, head = e.chunks, e.usage, orjson.loads(e.chunks[0])
    else:
        assert e.body is not None
        head = orjson.loads(e.body)
        chunks = _chunks_of(head)
        u = head.get("usage")
        usage = orjson.dumps(_without_cost(u)) if u else None
    out = [b"data: " + c + b"\n\n" for c in chunks]
    if want_usage and usage is not None:
        tail = {**_base(head), "choices": [], "usage": orjson.loads(usage)}
        out.append(b"data: " + orjson.dumps(tail) + b"\n\n")
    out.append(DONE)
    return out


def _base(head: dict[str, Any]) -> dict[str, Any]:
    base = {"id": head.get("id", ""), "object": "chat.completion.chunk", "created": head.get("created", 0)}
    base["model"] = head.get("model", "")
    if head.get("system_fingerprint"):
        base["system_fingerprint"] = head["system_fingerprint"]
    return base


def _chunks_of(answer: dict[str, Any]) -> list[bytes]:
    """A chat.completion as the chunks a stream of it would have sent: per choice the role,
    the reasoning, the content, each tool call whole, then the finish reason."""
    base = _base(answer)
    out: list[bytes] = []

    def chunk(i: int, delta: dict[str, Any], finish: str | None = None) -> None:
        c = {**base, "choices": [{"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        out.append(orjson.dumps(c))

    for ch in answer.get("choices") or ():
        i = ch.get("index", 0)
        msg = ch.get("message") or {}
        chunk(i, {"role": "assistant", "content": ""})
        if msg.get("reasoning_content"):
            chunk(i, {"reasoning_content": msg["reasoning_content"]})
        if msg.get("content"):
            chunk(i, {"content": msg["content"]})
        if msg.get("refusal"):
            chunk(i, {"refusal": msg["refusal"]})
        for j, tc in enumerate(msg.get("tool_calls") or ()):
            chunk(
                i,
                {"tool_calls": [{"index": j, "id": tc.get("id"), "type": "function", "function": tc.get("function")}]},
            )
        chunk(i, {}, ch.get("finish_reason"))
    return out
