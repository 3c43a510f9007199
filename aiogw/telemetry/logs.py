"""structlog, configured once: JSON lines in production, readable in a terminal, request id
bound to every line of a request, and a last-line-of-defence redaction of secrets."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import orjson
import structlog

_SECRET_KEYS = frozenset(
    {"authorization", "api_key", "apikey", "x-api-key", "x-goog-api-key", "proxy-authorization", "password", "token"}
)
# Bearer tokens and common key shapes that might hide inside free text (error messages).
_SECRET_TEXT = re.compile(r"(Bearer\s+)\S+|\b(sk-[A-Za-z0-9_\-]{3})[A-Za-z0-9_\-]{8,}|\bAIza[0-9A-Za-z_\-]{20,}")


# Substrings every match of _SECRET_TEXT contains: plain `in` tests skip the regex for
# the ordinary values of a log line (a third of the logging cost before).
_HINTS = ("Bearer", "sk-", "AIza")


def _mask_text(s: str) -> str:
    if not any(h in s for h in _HINTS):
        return s
    return _SECRET_TEXT.sub(lambda m: (m.group(1) or m.group(2) or "") + "***", s)


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return _mask_text(value)
    if isinstance(value, dict):
        return {k: "***" if str(k).lower() in _SECRET_KEYS else _redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    return value


def redact_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Mask values under secret-looking keys and key-shaped substrings in strings, nested
    values (a request's attempts and their errors) included."""
    for key, value in event.items():
        if key.lower() in _SECRET_KEYS:
            event[key] = "***"
        elif isinstance(value, str | dict | list | tuple):
            event[key] = _redact(value)
    return event


_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure(level: str = "info", fmt: str = "auto", *, stream: Any = None) -> None:
    out = stream or sys.stderr
    console = fmt == "console" or (fmt == "auto" and out.isatty())
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
        structlog.processors.format_exc_info,
    ]
    if console:
        renderer: Any = structlog.dev.ConsoleRenderer(colors=out.isatty())
        factory: Any = structlog.PrintLoggerFactory(out)
    else:
        renderer = structlog.processors.JSONRenderer(serializer=orjson.dumps)
        factory = structlog.BytesLoggerFactory(out.buffer if hasattr(out, "buffer") else out)
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    # Third-party stdlib logging (aiohttp, asyncio) goes to the same stream.
    logging.basicConfig(stream=out, level=max(_LEVELS[level], logging.WARNING), force=True)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
