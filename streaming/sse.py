"""Incremental server-sent-events parser: upstream bytes -> `SSEEvent`s (providers.md §2).

One parser for every provider, WHATWG "event stream interpretation" rules:

- Lines end with LF, CRLF or a lone CR — also when a CRLF is split across two chunks.
  Splitting happens on bytes, before any decoding; `data` stays bytes.
- One UTF-8 BOM at the very start of the stream is removed (also when split).
- `:comment` lines are ignored; `name:value` loses exactly one leading space of the value;
  a line without a colon is a field with an empty value; unknown fields are ignored.
- `data` lines are joined with LF; `event` sets the type (`""` when absent); `id` sets the
  last event id, which persists across events (values containing NUL are ignored);
  `retry` takes ASCII digits only and is recorded in `parser.retry_ms`.
- A blank line dispatches an event only if the block had at least one `data` line
  (WHATWG: an empty data buffer dispatches nothing). So runs of blank lines, `retry`-only,
  `id`-only and `event`-only blocks produce no event; `id`/`retry` still update state.
"""

from __future__ import annotations

import msgspec

from aiogw.errors import UpstreamProtocolError

__all__ = ["SSEEvent", "SSEParser"]

_BOM = b"\xef\xbb\xbf"


class SSEEvent(msgspec.Struct, frozen=True, gc=False):
    event: str = ""  # the `event:` field, "" when absent
    data: bytes = b""  # data lines joined with b"\n"
    id: str | None = None  # last event id at dispatch time (persists across events)
    retry: int | None = None  # a valid `retry:` value given in this event's block


def _complete_json(data: bytes) -> bool:
    try:
        msgspec.json.decode(data)
    except msgspec.DecodeError:
        return False
    return True


class SSEParser:
    __slots__ = (
        "_at_start",
        "_buf",
        "_data",
        "_event",
        "_retry",
        "_size",
        "_idle",
        "_skip_lf",
        "_slow",
        "last_event_id",
        "max_event_bytes",
        "retry_ms",
        "truncated",
    )

    def __init__(self, max_event_bytes: int = 16 * 1024 * 1024) -> None:
        self.max_event_bytes = max_event_bytes
        self.truncated = False
        self.retry_ms: int | None = None
        self.last_event_id: str | None = None
        self._buf = bytearray()  # the unterminated last line; never holds CR or LF
        self._skip_lf = False  # the previous chunk ended with CR: drop a leading LF
        self._at_start = True  # no byte seen yet that rules out a BOM
        self._data: list[bytes] = []  # data values of the pending block
        self._size = 0  # joined length of self._data as of the end of the last feed
        self._event = ""
        self._retry: int | None = None
        self._slow = True  # _prologue has work: BOM not yet ruled out, or _skip_lf
        self._idle = True  # no partial line and no pending block: the fast path may run

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Parse one network chunk (split anywhere); returns the events it completed."""
        if self._slow:  # stream start (BOM) or a CR ended the previous chunk
            chunk = self._prologue(chunk)
        if not chunk:
            return []
        if b"\r" in chunk:
            # Normalise to LF. A CR at the very end already ends its line; an LF
            # starting the next chunk is the second half of that CRLF and is dropped.
            if chunk[-1] == 13:
                self._skip_lf = self._slow = True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if self._idle and chunk.startswith(b"data: ") and len(chunk) <= self.max_event_bytes:
            # Fast path, the shape of nearly every OpenAI-style event: a run of blocks
            # that are exactly `data: X\n\n`. Such a run has exactly 2 LFs per block and
            # its blocks are glued by `\n\ndata: `; counting both proves the shape (the
            # glue cannot overlap and X contains no LF), so one C-level split yields the
            # data values. The run is at most the chunk, so no size check is needed.
            end = chunk.rfind(b"\n\n") + 2
            run = chunk if end == len(chunk) else chunk[:end]
            if end > 1 and run.count(b"\n") == 2 * run.count(b"\n\ndata: ") + 2:
                last_id = self.last_event_id
                events = [SSEEvent("", d, last_id, None) for d in run[6:-2].split(b"\n\ndata: ")]
                if end == len(chunk):
                    return events
                return self._lines(chunk[end:], events)
        return self._lines(chunk, [])

    def _prologue(self, chunk: bytes) -> bytes:
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk[0] == 10:
                chunk = chunk[1:]
        if self._at_start and chunk:
            if self._buf:  # a BOM prefix held back by the previous call
                chunk = bytes(self._buf) + chunk
                self._buf.clear()
            if len(chunk) < 3 and _BOM.startswith(chunk):
                self._buf += chunk  # may still become a BOM: decide on the next chunk
                return b""
            self._at_start = False
            if chunk.startswith(_BOM):
                chunk = chunk[3:]
        self._slow = self._at_start or self._skip_lf
        return chunk

    def _lines(self, chunk: bytes, events: list[SSEEvent]) -> list[SSEEvent]:
        buf = self._buf
        limit = self.max_event_bytes
        last = chunk.rfind(b"\n")
        if last < 0:
            buf += chunk
            self._idle = False
            if len(buf) > limit:
                raise _too_large(limit)
            return events
        held = len(buf)
        if held:
            first = chunk.find(b"\n")
            buf += chunk[:first]
            lines = [bytes(buf)]
            buf.clear()
            if last > first:
                lines += chunk[first + 1 : last].split(b"\n")
        else:
            lines = chunk[:last].split(b"\n")
        if last + 1 < len(chunk):
            buf += chunk[last + 1 :]
            if len(buf) > limit:
                raise _too_large(limit)
        if held + len(chunk) > limit and max(map(len, lines)) > limit:
            raise _too_large(limit)
        self._process(lines, events)
        return events

    def _process(self, lines: list[bytes], events: list[SSEEvent]) -> None:
        limit = self.max_event_bytes
        data = data0 = self._data
        n0 = len(data)
        event = self._event
        retry = self._retry
        last_id = self.last_event_id
        append = events.append
        for line in lines:
            if not line:  # blank line: dispatch
                if data:
                    d = data[0] if len(data) == 1 else b"\n".join(data)
                    if len(d) > limit:
                        raise _too_large(limit)
                    append(SSEEvent(event, d, last_id, retry))
                    data = []
                event = ""
                retry = None
                continue
            if line.startswith(b"data:"):
                data.append(line[6:] if line[5:6] == b" " else line[5:])
                continue
            colon = line.find(b":")
            if colon == 0:  # comment
                continue
            if colon > 0:
                name = line[:colon]
                value = line[colon + 2 :] if line[colon + 1 : colon + 2] == b" " else line[colon + 1 :]
            else:
                name = line
                value = b""
            if name == b"data":  # a bare `data` line
                data.append(value)
            elif name == b"event":
                event = value.decode("utf-8", "replace")
            elif name == b"id":
                if b"\0" not in value:
                    last_id = value.decode("utf-8", "replace")
            elif name == b"retry" and value.isdigit():
                try:
                    retry = self.retry_ms = int(value)
                except ValueError:  # more digits than int() accepts: not a real delay
                    pass
        if data:
            if data is data0 and n0:  # still the same block: measure only the new values
                size = self._size + sum(map(len, data[n0:])) + len(data) - n0
            else:
                size = sum(map(len, data)) + len(data) - 1
            if size > limit:
                raise _too_large(limit)
            self._size = size
        self._data = data
        self._event = event
        self._retry = retry
        self.last_event_id = last_id
        self._idle = not (data or event or retry is not None or self._buf)

    def close(self) -> list[SSEEvent]:
        """End of stream: flush the last line; keep an unterminated event only if complete."""
        events: list[SSEEvent] = []
        if self._buf:
            line = bytes(self._buf)
            self._buf.clear()
            self._process([line], events)
        self._at_start = False
        self._skip_lf = False
        data = self._data
        if data:
            d = data[0] if len(data) == 1 else b"\n".join(data)
            if d == b"[DONE]" or _complete_json(d):
                events.append(SSEEvent(self._event, d, self.last_event_id, self._retry))
            else:
                self.truncated = True
            self._data = []
            self._size = 0
        self._event = ""
        self._retry = None
        return events


def _too_large(limit: int) -> UpstreamProtocolError:
    return UpstreamProtocolError(f"SSE event larger than {limit} bytes")
