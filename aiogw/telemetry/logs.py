"""structlog, configured once: JSON lines in production, readable in a terminal, request id
bound to every line of a request, and a last-line-of-defence redaction of secrets."""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import logging
import re
import sys
import time
from collections.abc import MutableMapping
from typing import Any

import orjson
import structlog

_SECRET_KEYS = frozenset(
    {"authorization", "api_key", "apikey", "x-api-key", "x-goog-api-key", "proxy-authorization", "password", "token"}
)
# Bearer tokens and common key shapes that might hide inside free text (error messages).
_SECRET_TEXT = re.compile(r"(Bearer\s+)\S+|\b(sk-[A-Za-z0-9_\-]{3})[A-Za-z0-9_\-]{8,}|\bAIza[0-9A-Za-z_\-]{20,}")


def _mask_text(s: str) -> str:
    # Callers test `"sk-" in s or "Bearer" in s or "AIza" in s` first, inline: every match
    # contains one of them, and the plain tests skip the regex (and a call) for the ordinary
    # values of a log line.
    return _SECRET_TEXT.sub(lambda m: (m.group(1) or m.group(2) or "") + "***", s)


_SAFE_KEYS: set[str] = set()  # keys already seen not to be secret (log lines reuse a few dozen)


def _secret_key(key: Any) -> bool:
    if key in _SAFE_KEYS:
        return False
    secret = str(key).lower() in _SECRET_KEYS
    if not secret and len(_SAFE_KEYS) < 1000:
        _SAFE_KEYS.add(key)
    return secret


def _redact(value: Any) -> Any:
    """The value with secrets masked (the same object when there is nothing to mask)."""
    t = type(value)
    if t is str:
        if "sk-" in value or "Bearer" in value or "AIza" in value:
            return _mask_text(value)
        return value
    if t is dict:
        out = None
        for k, v in value.items():
            if k in _SAFE_KEYS or not _secret_key(k):
                tv = type(v)
                if tv is not str and tv is not dict and tv is not list and tv is not tuple:
                    continue  # numbers, None, booleans: nothing to mask
                new = _redact(v)
            else:
                new = "***"
            if new is not v:
                out = out if out is not None else dict(value)
                out[k] = new
        return value if out is None else out
    if t is list or t is tuple:
        changed = None
        for i, v in enumerate(value):
            new = _redact(v)
            if new is not v:
                changed = changed if changed is not None else list(value)
                changed[i] = new
        return value if changed is None else changed
    return value


def redact_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Mask values under secret-looking keys and key-shaped substrings in strings, nested
    values (a request's attempts and their errors) included. It runs on every log line:
    a key seen before to be safe and a value that is not text cost a set lookup and a
    type check."""
    safe = _SAFE_KEYS
    for key, value in event.items():
        if key not in safe and _secret_key(key):
            event[key] = "***"
            continue
        t = type(value)
        if t is str:
            if "sk-" in value or "Bearer" in value or "AIza" in value:
                event[key] = _mask_text(value)
        elif t is dict or t is list or t is tuple:
            new = _redact(value)
            if new is not value:
                event[key] = new
    return event


# The id of the request being served, set once per request by the server: every line
# logged while serving it carries it. One ContextVar read per line, where structlog's
# merge_contextvars copies and walks the whole context.
CURRENT_REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("aiogw_request_id", default=None)


def add_request_id(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    rid = CURRENT_REQUEST_ID.get()
    if rid is not None and "request_id" not in event:
        event["request_id"] = rid
    return event


PIPE_BUF = 4096  # POSIX guarantees at least 512; Linux gives 4096


class BatchedBytesLogger:
    """JSON lines to a binary stream, written once per event-loop turn.

    A gateway logs a line per request; a write() and flush() each would be two syscalls per
    request. Inside a running loop, lines are buffered and written together when the loop
    finishes its current batch of callbacks (call_soon), so nothing waits on a timer; outside
    a loop (start-up, shutdown) each line is written at once. `flush()` drains explicitly."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._buf: list[bytes] = []
        self._scheduled = False
        atexit.register(self.flush)  # lines logged as the loop closes still get out

    def msg(self, message: bytes) -> None:
        self._buf.append(message + b"\n")
        if self._scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._scheduled = True
        loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if not self._buf:
            return
        lines, self._buf = self._buf, []
        try:
            # Writes up to PIPE_BUF are atomic on a pipe: several worker processes share
            # stderr, so a batch goes out in pieces of whole lines that never interleave.
            batch: list[bytes] = []
            size = 0
            for line in lines:
                if batch and size + len(line) > PIPE_BUF:
                    self._stream.write(b"".join(batch))
                    self._stream.flush()  # one syscall per piece, not coalesced by a buffer
                    batch, size = [], 0
                batch.append(line)
                size += len(line)
            self._stream.write(b"".join(batch))
            self._stream.flush()
        except (OSError, ValueError):  # the stream is gone (closed pipe, closed file)
            pass

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


class _BatchedFactory:
    def __init__(self, stream: Any) -> None:
        self._logger = BatchedBytesLogger(stream)

    def __call__(self, *args: Any) -> BatchedBytesLogger:
        return self._logger  # one buffer per stream keeps lines in order


class _Stamper:
    """ISO-8601 UTC timestamps, the date-time part formatted once per second (structlog's
    TimeStamper builds a datetime per line)."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, _: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second, self._prefix = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        event["timestamp"] = f"{self._prefix}.{int((now - second) * 1e6):06d}Z"
        return event


_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


# Set by `configure` when lines are JSON and info is enabled: the configured processor
# chain (ending in the JSON renderer) and the logger its bytes go to.
_JSON_INFO: tuple[tuple[Any, ...], BatchedBytesLogger] | None = None


def info_line(logger: Any, event: str, fields: dict[str, Any]) -> None:
    """`logger.info(event, **fields)` for the line every request writes. With JSON output
    it runs the configured processors on `fields` itself: structlog's wrapper, context
    copy and keyword dict were a third of the line's cost. Console output goes through
    structlog as usual."""
    fast = _JSON_INFO
    if fast is None:
        logger.info(event, **fields)
        return
    processors, out = fast
    fields["event"] = event
    line: Any = fields
    for proc in processors:
        line = proc(None, "info", line)
    out.msg(line)


def configure(level: str = "info", fmt: str = "auto", *, stream: Any = None) -> None:
    global _JSON_INFO
    out = stream or sys.stderr
    console = fmt == "console" or (fmt == "auto" and out.isatty())
    shared = [
        add_request_id,
        structlog.processors.add_log_level,
        _Stamper(),
        redact_secrets,
        structlog.processors.format_exc_info,
    ]
    if console:
        renderer: Any = structlog.dev.ConsoleRenderer(colors=out.isatty())
        factory: Any = structlog.PrintLoggerFactory(out)
    else:
        renderer = structlog.processors.JSONRenderer(serializer=orjson.dumps)
        factory = _BatchedFactory(out.buffer if hasattr(out, "buffer") else out)
    processors = [*shared, renderer]
    _JSON_INFO = (tuple(processors), factory._logger) if not console and _LEVELS[level] <= logging.INFO else None
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    # Third-party stdlib logging (aiohttp, asyncio) goes to the same stream.
    logging.basicConfig(stream=out, level=max(_LEVELS[level], logging.WARNING), force=True)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
