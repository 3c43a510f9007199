"""`SSEParser` against docs/providers.md §2 (WHATWG event-stream interpretation).

Every §2.4 test vector split at every byte offset and every pair of offsets, every golden
`.sse` fixture split at every offset, the framing edge cases one by one, the `max_event_bytes`
bound, and hypothesis properties: for any stream and any way of cutting it into chunks, the
parser gives exactly what it gives for the whole stream at once, exactly what it gives fed one
byte at a time (its general path alone), and exactly what `reference()` gives: a
byte-at-a-time transcription of the rules, written here without the parser.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from conftest import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiogw.errors import UpstreamProtocolError
from aiogw.streaming.sse import SSEEvent, SSEParser

BOM = b"\xef\xbb\xbf"
TOO_LARGE = "too large"
FIXTURES = sorted((Path(__file__).parents[2] / "fixtures").rglob("*.sse"))


def ev(data: bytes, event: str = "", id: str | None = None, retry: int | None = None) -> SSEEvent:
    return SSEEvent(event=event, data=data, id=id, retry=retry)


def parse(chunks, **kw) -> tuple[list[SSEEvent], SSEParser]:
    parser = SSEParser(**kw)
    events: list[SSEEvent] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    events += parser.close()
    return events, parser


def outcome(chunks, **kw):
    """Everything observable about a parse: events, retry_ms, last_event_id, truncated."""
    try:
        events, parser = parse(chunks, **kw)
    except UpstreamProtocolError:
        return TOO_LARGE
    return events, parser.retry_ms, parser.last_event_id, parser.truncated


def cut(data: bytes, offsets) -> list[bytes]:
    """`data` cut at `offsets` (repeated offsets give empty chunks, which must be harmless)."""
    bounds = [0, *sorted(offsets), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def every_split(data: bytes):
    yield [data]
    yield [data[i : i + 1] for i in range(len(data))]
    for i in range(len(data) + 1):
        yield cut(data, [i])
    if len(data) <= 64:
        for i, j in itertools.combinations(range(1, len(data)), 2):
            yield cut(data, [i, j])


# --- the reference: the spec, line by line, for clarity rather than speed ------------------


def is_complete_json(data: bytes) -> bool:
    """RFC 8259 syntax of one value (stdlib json; NaN/Infinity are not JSON)."""

    def reject(_: str) -> None:
        raise ValueError("not JSON")

    try:
        # Values are not built (int/float hooks), so only the syntax is judged; invalid
        # UTF-8 inside a string is carried through as surrogate escapes, not judged.
        json.loads(
            data.decode("utf-8", "surrogateescape"),
            parse_constant=reject,
            parse_int=lambda s: 0,
            parse_float=lambda s: 0.0,
        )
    except ValueError:
        return False
    return True


class TooLarge(Exception):
    pass


def reference(stream: bytes, max_event_bytes: int | None = None):
    """WHATWG event-stream interpretation (+ the EOF rule and size bound of docs/providers.md §2)."""
    # Stage 1: bytes -> lines.
    if stream.startswith(BOM):
        stream = stream[3:]
    lines: list[bytes] = []
    line = bytearray()
    i = 0
    while i < len(stream):
        byte = stream[i : i + 1]
        if byte == b"\r":
            lines.append(bytes(line))
            line = bytearray()
            if stream[i + 1 : i + 2] == b"\n":  # CRLF is one line end
                i += 1
        elif byte == b"\n":
            lines.append(bytes(line))
            line = bytearray()
        else:
            line += byte
        i += 1
    if line:  # EOF: an unterminated non-empty line is still a line
        lines.append(bytes(line))

    # Stage 2: lines -> events.
    def check(n: int) -> None:
        if max_event_bytes is not None and n > max_event_bytes:
            raise TooLarge

    events = []
    data_lines: list[bytes] = []
    event_type = ""
    last_id = None
    retry = None
    retry_ms = None
    for line in lines:
        check(len(line))
        if line == b"":
            if data_lines:  # only a block with data dispatches
                data = b"\n".join(data_lines)
                check(len(data))
                events.append(SSEEvent(event_type, data, last_id, retry))
            data_lines, event_type, retry = [], "", None
            continue
        if line.startswith(b":"):
            continue
        if b":" in line:
            name, _, value = line.partition(b":")
            if value.startswith(b" "):
                value = value[1:]
        else:
            name, value = line, b""
        if name == b"data":
            data_lines.append(value)
        elif name == b"event":
            event_type = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\x00" not in value:
                last_id = value.decode("utf-8", "replace")
        elif name == b"retry" and value and all(48 <= c <= 57 for c in value):
            retry = retry_ms = int(value)
    truncated = False
    if data_lines:  # EOF with an unterminated event: keep it only if it is complete
        data = b"\n".join(data_lines)
        check(len(data))
        if data == b"[DONE]" or is_complete_json(data):
            events.append(SSEEvent(event_type, data, last_id, retry))
        else:
            truncated = True
    return events, retry_ms, last_id, truncated


def expected_outcome(stream: bytes, max_event_bytes: int | None = None):
    try:
        return reference(stream, max_event_bytes)
    except TooLarge:
        return TOO_LARGE


JSON_SAMPLES = [
    *(b'{"a":1}', b" [1,\n2] ", b'"\xff"', b"1e400", b"-0", b"true", b"[DONE]", b'{"a":', b"[1,]"),
    *(b"01", b"1.", b"NaN", b"-Infinity", b"", b" ", b"1 2", BOM + b"1", b'"\x01"', b"[DONE] "),
]


@pytest.mark.parametrize("sample", JSON_SAMPLES)
def test_an_unterminated_event_is_kept_exactly_when_the_reference_calls_it_complete(sample):
    raw = b"data: " + sample.replace(b"\n", b"\ndata: ")
    events, parser = parse([raw])
    kept = sample == b"[DONE]" or is_complete_json(sample)
    assert events == ([ev(sample)] if kept else [])
    assert parser.truncated is not kept


# --- docs/providers.md §2.4 test vectors -------------------------------------------------------

VECTORS = [
    pytest.param(b'data: {"a":1}\n\n', [ev(b'{"a":1}')], None, id="lf"),
    pytest.param(b'data: {"a":1}\r\n\r\n', [ev(b'{"a":1}')], None, id="crlf"),
    pytest.param(b'data: {"a":1}\r\r', [ev(b'{"a":1}')], None, id="cr"),
    pytest.param(b": keep-alive\n\ndata: x\n\n", [ev(b"x")], None, id="keep-alive"),
    pytest.param(
        b'event: ping\ndata: {"type": "ping"}\n\n',
        [ev(b'{"type": "ping"}', "ping")],
        None,
        id="event",
    ),
    pytest.param(b"data: line1\ndata: line2\n\n", [ev(b"line1\nline2")], None, id="multi-line"),
    pytest.param(b'data:{"a":1}\n\n', [ev(b'{"a":1}')], None, id="no-space"),
    pytest.param(b"data:  two spaces\n\n", [ev(b" two spaces")], None, id="two-spaces"),
    pytest.param("data: é\n\n".encode(), [ev("é".encode())], None, id="utf8"),
    pytest.param(b'data: {"a":1}', [ev(b'{"a":1}')], None, id="eof-without-newline"),
    pytest.param(b"\n\n\n", [], None, id="blank-lines"),
    pytest.param(b"retry: 5000\n\n", [], 5000, id="retry-only"),
    pytest.param(b"data: [DONE]\n\n", [ev(b"[DONE]")], None, id="done"),
]


@pytest.mark.parametrize(("raw", "events", "retry_ms"), VECTORS)
def test_each_vector_gives_its_events_however_the_bytes_are_split(raw, events, retry_ms):
    for chunks in every_split(raw):
        assert outcome(chunks) == (events, retry_ms, None, False), chunks


@pytest.mark.parametrize(("raw", "events", "retry_ms"), VECTORS)
def test_each_vector_gives_what_the_reference_gives(raw, events, retry_ms):
    assert reference(raw) == (events, retry_ms, None, False)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_each_golden_stream_gives_the_same_events_split_at_every_offset(path):
    raw = path.read_bytes()
    whole = outcome([raw])
    assert whole == expected_outcome(raw)
    assert whole[0] and not whole[3]  # events, and not truncated
    for i in range(len(raw) + 1):
        assert outcome(cut(raw, [i])) == whole, i
    assert outcome([raw[i : i + 1] for i in range(len(raw))]) == whole


# --- line endings -------------------------------------------------------------------------


def test_a_crlf_split_across_two_chunks_gives_one_event_not_two():
    parser = SSEParser()
    assert parser.feed(b'data: {"a":1}\r') == []
    assert parser.feed(b"\n\r\n") == [ev(b'{"a":1}')]
    assert parser.close() == []


def test_the_lf_half_of_a_split_crlf_is_not_an_empty_line():
    events, parser = parse([b"data: a\r", b"\ndata: b\r", b"\n", b"\r\n"])
    assert events == [ev(b"a\nb")]  # a blank line in between would have made two events
    assert not parser.truncated


def test_a_lone_cr_followed_later_by_an_lf_is_two_line_ends():
    assert parse([b"data: a\r", b"data: b\n\n"])[0] == [ev(b"a\nb")]
    assert parse([b"data: a\r", b"", b"\n", b"\n"])[0] == [ev(b"a")]  # empty chunk in between


def test_mixed_line_endings_in_one_stream():
    raw = b"data: 1\r\n\r\ndata: 2\r\rdata: 3\n\ndata: 4\r\n\n"
    for chunks in every_split(raw):
        assert parse(chunks)[0] == [ev(b"1"), ev(b"2"), ev(b"3"), ev(b"4")]


def test_a_partial_line_continues_into_a_chunk_that_looks_like_a_whole_event():
    assert parse([b"x-", b"data: 1\n\n"])[0] == []  # one line: `x-data: 1`, an unknown field
    assert parse([b"x-", b"data: 1\r\n\r\n"])[0] == []
    assert parse([b"x-", b"event: e\ndata: 1\n\n"])[0] == [ev(b"1")]  # `x-event: e` is unknown
    assert parse([b"da", b"ta: 1\n\n"])[0] == [ev(b"1")]


def test_a_crlf_chunk_with_an_inner_lf_is_not_one_gemini_event():
    assert parse([b"data: a\nid: 1\r\n\r\n"])[0] == [ev(b"a", id="1")]
    assert parse([b"data: a\rid: 1\r\n\r\n"])[0] == [ev(b"a", id="1")]


def test_gemini_crlf_events_one_per_chunk():
    chunks = [b'data: {"candidates": [{"index": %d}]}\r\n\r\n' % i for i in range(3)]
    assert parse(chunks)[0] == [ev(b'{"candidates": [{"index": %d}]}' % i) for i in range(3)]


# --- fields -------------------------------------------------------------------------------


def test_keep_alive_comments_before_and_between_data_lines_are_ignored():
    raw = b": keep-alive\n\n" * 5 + b":ping\ndata: a\n: OPENROUTER PROCESSING\ndata: b\n\n"
    for chunks in every_split(raw):
        assert parse(chunks)[0] == [ev(b"a\nb")]


def test_data_without_a_space_after_the_colon_keeps_its_first_byte():
    assert parse([b"data:x\n\n"])[0] == [ev(b"x")]


def test_two_spaces_after_the_colon_keep_one():
    assert parse([b"data:  x\n\nevent:  e\ndata: y\n\n"])[0] == [ev(b" x"), ev(b"y", " e")]


def test_a_line_without_colon_is_a_field_with_an_empty_value():
    assert parse([b"data\n\n"])[0] == [ev(b"")]
    assert parse([b"data\ndata\n\n"])[0] == [ev(b"\n")]
    assert parse([b"event: x\nevent\ndata: y\n\n"])[0] == [ev(b"y")]


def test_an_empty_data_line_dispatches_an_event_with_empty_data():
    assert parse([b"data:\n\n", b"data: \n\n"])[0] == [ev(b""), ev(b"")]


def test_a_multibyte_character_split_between_its_two_bytes():
    parser = SSEParser()
    assert parser.feed(b"data: \xc3") == []
    assert parser.feed(b"\xa9\n\n") == [ev("é".encode())]


def test_event_and_id_are_decoded_with_replacement_data_stays_bytes():
    events = parse([b"event: caf\xc3\xa9 \xff\nid: \xc3\ndata: \xff\xfe\n\n"])[0]
    assert events == [ev(b"\xff\xfe", "café \ufffd", "\ufffd")]


def test_unknown_fields_are_ignored_and_field_names_are_case_sensitive():
    raw = b"Data: no\nfoo: bar\nevent : no\ndata : no\ndata: yes\n\n"
    assert parse([raw])[0] == [ev(b"yes")]


def test_the_event_type_applies_to_its_own_block_only():
    raw = b"event: a\ndata: 1\n\ndata: 2\n\n"
    assert parse([raw])[0] == [ev(b"1", "a"), ev(b"2")]


def test_an_event_field_without_data_dispatches_nothing_and_does_not_leak():
    # WHATWG: an empty data buffer dispatches nothing (and resets the type).
    for chunks in every_split(b"event: ping\n\ndata: x\n\n"):
        assert parse(chunks)[0] == [ev(b"x")]


def test_the_last_event_id_persists_and_an_id_with_nul_is_ignored():
    raw = b"id: 1\ndata: a\n\ndata: b\n\nid: 2\x00x\ndata: c\n\nid\ndata: d\n\n"
    events, parser = parse([raw])
    assert events == [ev(b"a", id="1"), ev(b"b", id="1"), ev(b"c", id="1"), ev(b"d", id="")]
    assert parser.last_event_id == ""


def test_an_id_only_block_dispatches_nothing_but_sets_the_id():
    events, parser = parse([b"id: 7\n\ndata: x\n\n"])
    assert events == [ev(b"x", id="7")]
    assert parser.last_event_id == "7"


def test_retry_takes_ascii_digits_only():
    junk = b"retry: 5s\nretry: -1\nretry:\nretry: \xef\xbc\x95\n\n"  # \xef\xbc\x95: a fullwidth 5
    events, parser = parse([b"retry: 100\ndata: x\n\n" + junk])
    assert events == [ev(b"x", retry=100)]  # the event carries its own block's retry
    assert parser.retry_ms == 100
    assert parse([b"retry: 3000\n\ndata: y\n\n"])[0] == [ev(b"y")]
    assert parse([b"retry: " + b"9" * 5000 + b"\n\n"])[1].retry_ms is None  # beyond int()


def test_one_bom_is_stripped_at_stream_start_even_when_split():
    for chunks in every_split(BOM + b"data: x\n\n"):
        assert parse(chunks)[0] == [ev(b"x")]


def test_only_the_first_bom_is_stripped_and_only_at_the_start():
    assert parse([BOM + BOM + b"data: x\n\n"])[0] == []  # the field is named BOM + "data"
    assert parse([b"data: x\n\n" + BOM + b"data: y\n\n"])[0] == [ev(b"x")]
    assert parse([b"\xef\xbb"])[0] == []  # an unfinished BOM at EOF is a junk line


def test_runs_of_blank_lines_produce_nothing():
    assert parse([b"\n" * 10, b"\r\n" * 10, b"\r" * 10, b"data: x\n\n\n\n\n"])[0] == [ev(b"x")]


# --- end of stream ------------------------------------------------------------------------


def test_a_missing_final_newline_with_complete_json_is_delivered():
    for raw in [b'data: {"a":1}', b'data: {"a":1}\n', b'data: {"a":\ndata: 1}', b"data: [DONE]"]:
        for chunks in every_split(raw):
            events, parser = parse(chunks)
            assert [e.data for e in events] == [raw[6:].replace(b"\ndata: ", b"\n").rstrip(b"\n")]
            assert not parser.truncated


def test_an_unterminated_event_keeps_its_type_and_id():
    events, _ = parse([b'id: 9\nevent: message_stop\ndata: {"type":"message_stop"}'])
    assert events == [ev(b'{"type":"message_stop"}', "message_stop", "9")]


def test_a_missing_final_newline_with_incomplete_json_sets_truncated():
    cut_short = b'data: {"a":1}\n\ndata: {"choices":[{"delta":{"cont'
    for raw in [b'data: {"a":', cut_short, b"data: [DON"]:
        for chunks in every_split(raw):
            events, parser = parse(chunks)
            assert all(e.data == b'{"a":1}' for e in events)
            assert parser.truncated


def test_a_block_without_data_at_eof_is_not_a_truncation():
    events, parser = parse([b"data: x\n\nevent: ping\nid: 3"])
    assert events == [ev(b"x")]
    assert not parser.truncated and parser.last_event_id == "3"


def test_a_cr_at_the_very_end_ends_the_last_line():
    events, parser = parse([b'data: {"a":1}\r'])
    assert events == [ev(b'{"a":1}')] and not parser.truncated


def test_close_is_idempotent():
    parser = SSEParser()
    parser.feed(b'data: {"a"')
    assert parser.close() == []
    assert parser.truncated
    assert parser.close() == []


# --- fast paths: coalesced chunks must parse like anything else ----------------------------


def test_coalesced_openai_events_with_a_partial_trailer():
    raw = b"".join(b'data: {"n":%d}\n\n' % i for i in range(6)) + b"data: [DONE]\n\n"
    expected = [ev(b'{"n":%d}' % i) for i in range(6)] + [ev(b"[DONE]")]
    for chunks in every_split(raw[:80]):  # every split of a prefix...
        assert parse([*chunks, raw[80:]])[0] == expected  # ...then the rest as one chunk
    assert parse([raw[:100], raw[100:]])[0] == expected


def test_coalesced_anthropic_events_one_and_several_per_chunk():
    blocks = [
        b"event: message_start\ndata: {}\n\n",
        b": ping\n\n",
        b"event: ping\ndata: {}\n\n",
        b'event: content_block_delta\ndata: {"t":"x"}\n\n',
        b"event: message_stop\ndata: {}\n\n",
    ]
    expected = [
        ev(b"{}", "message_start"),
        ev(b"{}", "ping"),
        ev(b'{"t":"x"}', "content_block_delta"),
        ev(b"{}", "message_stop"),
    ]
    assert parse(blocks)[0] == expected
    assert parse([b"".join(blocks)])[0] == expected
    assert parse([b"".join(blocks[:3]), b"".join(blocks[3:])])[0] == expected


def test_a_chunk_that_looks_fast_but_is_not():
    # Starts like a whole `data: D\n\n` run but the glue is inside a second field.
    raw = b"data: a\nid: 1\n\ndata: b\n\ndata: c\ndata: d\n\nevent: e\ndata: f\nid: 2\n\n"
    expected = [ev(b"a", id="1"), ev(b"b", id="1"), ev(b"c\nd", id="1"), ev(b"f", "e", "2")]
    assert parse([raw])[0] == expected
    assert reference(raw)[0] == expected


# --- max_event_bytes ----------------------------------------------------------------------


def test_a_huge_line_raises_whether_it_arrives_whole_or_in_pieces():
    line = b"data: " + b"x" * 2000
    for chunks in ([line], [line + b"\n\n"], cut(line, range(0, len(line), 100))):
        with pytest.raises(UpstreamProtocolError, match="SSE event larger than 1024 bytes"):
            parse(chunks, max_event_bytes=1024)


def test_a_huge_comment_line_raises_too():
    with pytest.raises(UpstreamProtocolError):
        parse([b":" + b"x" * 300, b"x" * 300], max_event_bytes=512)


def test_many_data_lines_raise_even_when_no_line_is_long():
    raw = b"data: 0123456789\n" * 200  # 2,199 bytes of data, no blank line
    for chunks in ([raw], cut(raw, range(0, len(raw), 64)), cut(raw, range(0, len(raw), 7))):
        with pytest.raises(UpstreamProtocolError, match="SSE event larger than 1024 bytes"):
            parse(chunks, max_event_bytes=1024)


def test_many_data_lines_raise_while_feeding_not_only_at_dispatch():
    parser = SSEParser(max_event_bytes=1024)
    with pytest.raises(UpstreamProtocolError):
        for _ in range(200):
            parser.feed(b"data: 0123456789\n")


def test_the_pending_size_counts_the_newlines_that_will_join_the_lines():
    parser = SSEParser(max_event_bytes=10)
    parser.feed(b"data: 1234\n")
    parser.feed(b"data: 5\n")
    parser.feed(b"data: \n")  # joined so far: b"1234\n5\n" (7 bytes)
    parser.feed(b"data: 12\n")  # b"1234\n5\n\n12": 10 bytes, still fine
    with pytest.raises(UpstreamProtocolError):
        parser.feed(b"data:\n")  # 11 bytes, though the new value is empty


def test_the_bound_is_inclusive():
    limit = 64
    exact_line = b"data: " + b"x" * (limit - 6)
    exact_data = b"data: " + b"y" * 40 + b"\ndata: " + b"z" * (limit - 41) + b"\n\n"
    for raw, ok in [
        (exact_line + b"\n\n", True),
        (exact_line + b"x\n\n", False),
        (exact_data, True),
        (exact_data.replace(b"z", b"zz", 1), False),
    ]:
        for chunks in every_split(raw):
            assert (outcome(chunks, max_event_bytes=limit) != TOO_LARGE) is ok, chunks


@pytest.mark.timeout(30)  # a quadratic re-scan would take minutes; linear takes milliseconds
def test_a_large_line_in_small_chunks_is_parsed_in_linear_time():
    payload = b'{"b64":"' + b"QUJD" * (1024 * 1024) + b'"}'  # a 4 MiB base64 image part
    raw = b"data: " + payload + b"\r\n\r\n"
    parser = SSEParser()
    events = []
    for i in range(0, len(raw), 1024):
        events += parser.feed(raw[i : i + 1024])
    events += parser.close()
    assert events == [ev(payload)]


# --- properties ---------------------------------------------------------------------------

TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\\"), max_size=12).map(
    lambda s: s.encode()
)
VALUE = st.one_of(
    TEXT,
    st.sampled_from([b'{"a":1}', b"[DONE]", b'{"a":', b'"x"', b"1", b"[]", b" {}", b"", b":"]),
)
LINE = st.one_of(
    st.builds(lambda v: b"data: " + v, VALUE),
    st.builds(lambda v: b"data:" + v, VALUE),
    st.just(b"data"),
    st.builds(lambda v: b"event: " + v, TEXT),
    st.builds(lambda v: b"event:" + v, TEXT),
    st.builds(lambda v: b"id: " + v, st.one_of(TEXT, st.just(b"a\x00b"))),
    st.builds(lambda v: b"retry: " + v, st.sampled_from([b"1000", b"0", b"12a", b"", b" 5", b"-"])),
    st.builds(lambda v: b":" + v, TEXT),  # comment
    st.builds(lambda v: b"x-unknown: " + v, TEXT),
    TEXT.filter(lambda v: b":" not in v),  # a field without colon
)
# The shapes upstreams really send, so that whole-block chunks reach the fast paths.
COMMON_BLOCK = st.one_of(
    st.builds(lambda v: [b"data: " + v], VALUE),
    st.builds(lambda e, v: [b"event: " + e, b"data: " + v], TEXT, VALUE),
)
BLOCK = st.one_of(COMMON_BLOCK, st.lists(LINE, max_size=5))
EOL = st.sampled_from([b"\n", b"\r\n", b"\r"])


@st.composite
def streams(draw) -> tuple[bytes, list[int]]:
    """An event stream and the offsets where its blocks end."""
    out = bytearray(BOM if draw(st.booleans()) else b"")
    ends = []
    eol = draw(EOL)
    mixed = draw(st.booleans())  # one line ending for the whole stream, or any per line
    for block in draw(st.lists(BLOCK, max_size=8)):
        for line in [*block, b""]:  # b"": the blank line ending the block
            out += line + (draw(EOL) if mixed else eol)
        ends.append(len(out))
    if draw(st.booleans()):  # EOF somewhere near the end: an unterminated last block
        del out[len(out) - draw(st.integers(0, min(len(out), 6))) :]
    return bytes(out), ends


SOUP = st.lists(
    st.sampled_from(
        [
            b"data",
            b"data:",
            b"data: ",
            b"event: ",
            b"id: ",
            b"retry: ",
            b"12",
            b":",
            b" ",
            b"x",
            b"\xc3\xa9",
            b"\xc3",
            b"\xff",
            b"\x00",
            b"\n",
            b"\r",
            b"\r\n",
            b"\n\n",
            BOM,
            b"{",
            b"}",
            b'"a"',
            b"[DONE]",
            b"1",
        ]
    ),
    max_size=60,
).map(b"".join)


@st.composite
def chunkings(draw, raw: bytes, ends: list[int] = ()) -> list[bytes]:
    offsets = st.integers(0, len(raw))
    if ends:  # mix block boundaries (whole blocks per chunk) with arbitrary cuts
        offsets = st.one_of(offsets, st.sampled_from(ends))
    return cut(raw, draw(st.lists(offsets, max_size=12)))


# AIOGW_FUZZ_FULL=1 for all 1,000 examples (see conftest.examples).
PROPERTY = settings(
    max_examples=examples(1000), deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY
@given(st.data(), streams())
def test_any_chunking_gives_the_same_events_as_the_whole_stream_and_the_reference(data, stream):
    raw, ends = stream
    chunks = data.draw(chunkings(raw, ends))
    whole = outcome([raw])
    assert whole == expected_outcome(raw)
    assert outcome(chunks) == whole


@PROPERTY
@given(streams())
def test_the_fast_paths_agree_with_the_general_path(stream):
    # One byte per chunk never matches a fast-path shape: that is the general path alone.
    # Whole blocks per chunk take the fast paths wherever the shape allows.
    raw, ends = stream
    general = outcome([raw[i : i + 1] for i in range(len(raw))])
    assert outcome(cut(raw, ends)) == general
    assert outcome([raw]) == general


@PROPERTY
@given(st.data(), SOUP)
def test_any_chunking_of_byte_soup_agrees_with_the_reference(data, raw):
    chunks = data.draw(chunkings(raw))
    whole = outcome([raw])
    assert whole == expected_outcome(raw)
    assert outcome(chunks) == whole
    assert outcome([raw[i : i + 1] for i in range(len(raw))]) == whole


@PROPERTY
@given(st.data(), st.one_of(streams().map(lambda s: s[0]), SOUP), st.integers(1, 24))
def test_the_size_bound_does_not_depend_on_the_chunking(data, raw, limit):
    chunks = data.draw(chunkings(raw))
    whole = outcome([raw], max_event_bytes=limit)
    assert whole == expected_outcome(raw, limit)
    assert outcome(chunks, max_event_bytes=limit) == whole
