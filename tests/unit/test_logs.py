"""The redaction processor: secrets never reach a log line, nested values included."""

from aiogw.telemetry.logs import redact_secrets


def test_keys_and_key_shaped_text_are_masked_at_any_depth():
    event = {
        "event": "request.finished",
        "authorization": "Bearer sk-live-abcdefghijklmnop",
        "error": "upstream said: invalid key sk-proj-ABCDEFGHIJKLMNOP",
        "attempts": [{"target": "a/b", "error": "401 with Bearer abc.def.ghi"}, {"target": "c/d"}],
        "headers": {"x-api-key": "secret", "x-goog-api-key": "AIzaSyA1234567890123456789012"},
        "model": "gpt-4o",
        "status": 200,
    }
    out = redact_secrets(None, "info", event)
    text = repr(out)
    for secret in ("abcdefghijklmnop", "ABCDEFGHIJKLMNOP", "abc.def.ghi", "secret", "AIzaSyA"):
        assert secret not in text
    assert out["model"] == "gpt-4o" and out["status"] == 200
    assert out["attempts"][1] == {"target": "c/d"}


class Recorder:
    def __init__(self):
        self.writes = []

    def write(self, data):
        self.writes.append(data)

    def flush(self):
        pass


async def test_lines_logged_in_one_loop_turn_are_written_together_in_order():
    import asyncio

    from aiogw.telemetry.logs import BatchedBytesLogger

    out = Recorder()
    logger = BatchedBytesLogger(out)
    for i in range(3):
        logger.msg(b'{"n":%d}' % i)
    assert out.writes == []  # nothing yet: the loop turn is not over
    await asyncio.sleep(0)
    assert out.writes == [b'{"n":0}\n{"n":1}\n{"n":2}\n']


def test_outside_a_loop_each_line_is_written_at_once():
    from aiogw.telemetry.logs import BatchedBytesLogger

    out = Recorder()
    BatchedBytesLogger(out).msg(b"x")
    assert out.writes == [b"x\n"]


def test_a_large_batch_goes_out_in_whole_lines_no_larger_than_pipe_buf():
    from aiogw.telemetry.logs import PIPE_BUF, BatchedBytesLogger

    out = Recorder()
    logger = BatchedBytesLogger(out)
    logger._buf = [b"x" * 1000 + b"\n" for _ in range(10)]
    logger.flush()
    assert b"".join(out.writes) == (b"x" * 1000 + b"\n") * 10
    assert all(len(w) <= PIPE_BUF and w.endswith(b"\n") for w in out.writes) and len(out.writes) == 3


def test_the_request_line_fast_path_writes_what_structlog_writes():
    import io
    import json

    from aiogw.telemetry import logs

    class Stream(io.StringIO):
        def __init__(self):
            super().__init__()
            self.buffer = io.BytesIO()

        def isatty(self):
            return False

    def fields():
        return {
            "request_id": "req_1",
            "status": 200,
            "attempts": [{"target": "a/b", "ms": 1.5, "error": "401: Bearer sk-live-abcdefghijklmnop"}],
            "api_key": "sk-live-abcdefghijklmnop",
            "tags": {"team": "x"},
        }

    try:
        stream = Stream()
        logs.configure("info", "json", stream=stream)
        log = logs.get_logger("t")
        log.info("request.finished", **fields())
        logs.info_line(log, "request.finished", fields())
        a, b = (json.loads(line) for line in stream.buffer.getvalue().splitlines())
        assert a.pop("timestamp")[:4] == b.pop("timestamp")[:4]
        assert list(a) == list(b) and a == b  # same keys, same order, same values
        assert "abcdefghijklmnop" not in stream.buffer.getvalue().decode()
        stream = Stream()
        logs.configure("warning", "json", stream=stream)
        logs.info_line(logs.get_logger("t2"), "request.finished", fields())
        assert stream.buffer.getvalue() == b""  # below the level: nothing
    finally:
        import structlog

        structlog.reset_defaults()  # as the other in-process tests expect
        logs._JSON_INFO = None
