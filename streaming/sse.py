r"""Incremental server-sent-events parser: upstream bytes -> `SSEEvent`s (docs/providers.md §2).

One parser for every provider's stream, following the WHATWG "event stream interpretation":

- Lines end with LF, CRLF or a lone CR, also when a CRLF is split across two chunks (a chunk
  ending in CR ends its line at once and the next chunk's leading LF is dropped). Lines are
  split on bytes, before any decoding, so a chunk boundary inside a UTF-8 character is
  harmless. `event` and `id` are decoded as UTF-8 with errors="replace"; `data` stays bytes
  (adapters decode JSON from bytes).
- One UTF-8 BOM at the very start of the stream is removed (also when split across chunks).
- `:comment` lines are ignored. `name:value` loses exactly one leading space of the value; a
  line without a colon is a field with an empty value (a bare `data` appends b"").
- `data` appends (lines joined with LF at dispatch); `event` sets the type, `""` when absent;
  `id` sets the last event id, which persists across events and is carried by each event
  (values containing NUL are ignored); `retry` is ASCII digits only and is recorded in
  `parser.retry_ms` (and in the `retry` of the event its block dispatches, if any); any
  other field is ignored.
- A blank line dispatches only if the block since the previous blank line had at least one
  `data` line; it always resets `event`. Decision: WHATWG dispatches nothing when the data
  buffer is empty, so `event:`-only, `id`-only and `retry`-only blocks produce no event (no
  provider sends such a block for a reason we must see; `id`/`retry` still update state),
  and runs of blank lines produce nothing. A `data:` line with an empty value does count:
  `data:\n\n` dispatches an event with data b"".
- EOF (`close()`): a non-empty unterminated line is still a line. The spec drops an event
  that no blank line terminated; we keep it if its data is `[DONE]` or complete JSON
  (docs/providers.md §2.2: a missing final newline is common), otherwise drop it and set
  `truncated`. A block without data at EOF is not a truncation (it would never dispatch).
- `max_event_bytes` bounds memory, whatever the chunking: a line (field name included) or an
  event's joined data longer than it raises `UpstreamProtocolError`, as soon as the partial
  line or the pending event has grown past it. After raising, the parser is unusable.

Speed: the partial line is kept in a bytearray; every `feed` consumes all complete lines, so
buffered bytes are never scanned again and only the new chunk is searched for line ends (a
5 MB line in 1 KB chunks is linear). The blocks nearly every upstream sends arrive whole, one
or more per chunk, as `data: D\n\n` (OpenAI and compatibles), `data: D\r\n\r\n` (Gemini) or
`event: E\ndata: D\n\n` (Anthropic); from a clean state those are recognised with a few
memchr-based C calls and no per-line Python loop (`SSEParser.feed`). Anything else takes
the general path (`_LineParser`, which holds the state and which `SSEParser` extends).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec
import orjson

from aiogw.errors import UpstreamProtocolError

__all__ = ["SSEEvent", "SSEParser", "data_objects"]

_BOM = b"\xef\xbb\xbf"
_Raw = msgspec.Raw


class SSEEvent(msgspec.Struct, frozen=True, gc=False):
    """One dispatched event.

    A msgspec Struct rather than a `__slots__` class: its constructor is C code (45 ns against
    106 ns for a slotted class with a Python `__init__`, measured with positional arguments),
    and `gc=False` keeps these short-lived, cycle-free objects out of the cyclic GC. Frozen
    for free equality and hashing in tests.
    """

    event: str = ""  # the `event:` field, "" when absent
    data: bytes = b""  # data lines joined with b"\n"
    id: str | None = None  # last event id at dispatch (persists across events), None if never set
    retry: int | None = None  # a valid `retry:` value given in this event's own block


def _complete_json(data: bytes) -> bool:
    """Whether `data` is one complete JSON value: full syntax check, no objects built."""
    try:
        msgspec.json.decode(data, type=_Raw)
    except msgspec.DecodeError:
        return False
    return True


class _LineParser:
    """The parser's state and its general path: any chunk, line by line, as WHATWG reads an
    event stream. Correct for every input; `SSEParser` puts the fast paths for the shapes
    providers send in front of it, and falls back here for anything else."""

    __slots__ = (
        "_at_start",
        "_buf",
        "_data",
        "_event",
        "_idle",
        "_retry",
        "_size",
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

    @property
    def at_boundary(self) -> bool:
        """Nothing held: no partial line, no pending event, no CR or BOM left to settle (the
        bytes fed so far end where an event ends)."""
        return self._idle and not self._slow

    def _prologue(self, chunk: bytes) -> bytes:
        """Rare work at chunk start: the LF of a split CRLF, a (possibly split) BOM."""
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
        """General path: LF-only `chunk` -> complete lines (+ the partial line into `_buf`)."""
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
        """Stage 2: complete lines -> fields -> events, with the state kept in locals."""
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
                colon += 2 if line[colon + 1 : colon + 2] == b" " else 1
                value = line[colon:]
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
            if len(line) > self.max_event_bytes:  # only a held BOM prefix was not checked
                raise _too_large(self.max_event_bytes)
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
        self._idle = True
        self._slow = False
        return events


class SSEParser(_LineParser):
    """Bytes in (split anywhere), events out. Synchronous and pure; one per upstream stream.

    `feed(chunk)` returns the events the chunk completed; `close()` at EOF returns what the
    EOF rule keeps. After `close()`: `truncated` tells whether an unterminated, incomplete
    event was dropped; `retry_ms` and `last_event_id` hold the stream's last valid values.
    """

    __slots__ = ()

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Parse the next `bytes` chunk (split anywhere); return the events it completed."""
        if self._slow:  # stream start (BOM) or a CR ended the previous chunk
            chunk = self._prologue(chunk)
        if not chunk:
            return []
        if 13 in chunk:  # (an int needle is a plain memchr; b"\r" in chunk is 7x slower)
            if chunk[-1] == 13:  # this CR ends its line; a LF opening the next chunk is its pair
                self._skip_lf = self._slow = True
            elif (  # exactly one `data: D\r\n\r\n` (Gemini), checked with memchr only
                self._idle
                and chunk.find(13) == len(chunk) - 4
                and chunk.find(10) == len(chunk) - 3
                and chunk.endswith(b"\r\n")
                and chunk.startswith(b"data: ")
                and len(chunk) <= self.max_event_bytes
            ):
                return [SSEEvent("", chunk[6:-4], self.last_event_id, None)]
            # Normalise to LF (split/join is ~2x faster than replace for a 2-byte needle).
            chunk = b"\n".join(chunk.split(b"\r\n"))
            if 13 in chunk:
                chunk = chunk.replace(b"\r", b"\n")
        if not self._idle or len(chunk) > self.max_event_bytes:
            return self._lines(chunk, [])
        # Fast paths, taken from a clean state (no partial line, nothing pending) for the
        # shapes nearly every upstream sends. They use only C-level calls (memchr-based
        # finds, one split); anything unexpected falls through to the general line parser,
        # which re-reads the chunk from the start, so a failed attempt costs little and
        # changes nothing. Data lies inside the chunk, which is within max_event_bytes.
        if chunk.startswith(b"data: "):
            n = len(chunk)
            first = chunk.find(10)
            if first == n - 2 and chunk[-1] == 10:  # exactly one `data: D\n\n` (OpenAI)
                return [SSEEvent("", chunk[6:first], self.last_event_id, None)]
            # Coalesced events: the run up to the last blank line is `data: D\n\n`
            # blocks iff it starts with `data: `, ends with LF LF, and the pieces between
            # the `\n\ndata: ` glue hold no LF (so the glue was not inside a field).
            end = chunk.rfind(b"\n\n") + 2
            if end > 1:
                run = chunk if end == n else chunk[:end]
                pieces = run[6:-2].split(b"\n\ndata: ")
                if 10 not in b"".join(pieces):
                    last_id = self.last_event_id
                    events = [SSEEvent("", d, last_id, None) for d in pieces]
                    return events if end == n else self._lines(chunk[end:], events)
        elif chunk.startswith(b"event: "):
            eol = chunk.find(10)
            if (  # exactly one `event: E\ndata: D\n\n` (Anthropic)
                chunk.startswith(b"data: ", eol + 1) and chunk.find(10, eol + 1) == len(chunk) - 2 and chunk[-1] == 10
            ):
                name = chunk[7:eol].decode("utf-8", "replace")
                return [SSEEvent(name, chunk[eol + 7 : -2], self.last_event_id, None)]
            return self._named(chunk)
        return self._lines(chunk, [])

    def _named(self, chunk: bytes) -> list[SSEEvent]:
        r"""Coalesced `event: E\ndata: D\n\n` blocks; from the first other shape on, `_lines`."""
        end = chunk.rfind(b"\n\n")
        if end < 0:
            return self._lines(chunk, [])
        events: list[SSEEvent] = []
        last_id = self.last_event_id
        blocks = chunk[:end].split(b"\n\n")
        for i, block in enumerate(blocks):
            head, glue, data = block.partition(b"\ndata: ")
            if not glue or 10 in head or 10 in data or not head.startswith(b"event: "):
                pos = sum(map(len, blocks[:i])) + 2 * i
                return self._lines(chunk[pos:], events)
            events.append(SSEEvent(head[7:].decode("utf-8", "replace"), data, last_id, None))
        return events if end + 2 == len(chunk) else self._lines(chunk[end + 2 :], events)


def _too_large(limit: int) -> UpstreamProtocolError:
    return UpstreamProtocolError(f"SSE event larger than {limit} bytes")


def data_objects(sse: bytes) -> Iterator[dict[str, Any]]:
    """The JSON objects of a stream's `data:` lines (one line each, as the gateway writes them)."""
    for line in sse.split(b"\n"):
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        try:
            obj = orjson.loads(line[6:])
        except orjson.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            yield obj
