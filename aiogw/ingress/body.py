"""Reading a request body within the gateway's limits, every refusal OpenAI-shaped.

- Size: `server.max_body_bytes` counts the body after decompression (aiohttp inflates gzip
  and deflate in bounded steps and stops at the limit), so a compression bomb gets the same
  413 as a large body.
- Encoding: what aiohttp can decode; anything else is a 415 rather than bytes that would
  fail later as "invalid JSON". Data that is not what its Content-Encoding says is a 400.
- Time: the whole body must arrive within `server.body_timeout_s` (408, connection closed),
  so a client trickling bytes cannot hold a connection and its handler forever.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError

from aiogw.attempts.outcome import ClientDisconnected
from aiogw.errors import InvalidRequest, PayloadTooLarge, RequestTimeout, UnsupportedEncoding
from aiogw.server.keys import RUNTIME

# aiohttp decodes these (br and zstd only with their optional libraries installed; without
# them it refuses the request before a handler runs, see app.py's protocol errors).
ENCODINGS = frozenset({"", "identity", "gzip", "deflate", "br", "zstd"})


async def read_body(request: web.Request) -> bytes:
    encoding = request.headers.get("Content-Encoding")
    if encoding is not None:
        encoding = encoding.strip().lower()
        if encoding not in ENCODINGS:
            raise UnsupportedEncoding(
                f"Content-Encoding '{encoding}' is not supported; send the body uncompressed, or as gzip or deflate."
            )
    server = None
    try:
        if request.content.is_eof():  # the usual case: the whole body came with the headers
            return await request.read()
        server = request.app[RUNTIME].config.server
        if encoding in (None, "", "identity") and (request.content_length or 0) > server.max_body_bytes:
            raise too_large(server.max_body_bytes)  # refused before reading it
        async with asyncio.timeout(server.body_timeout_s):
            return await request.read()
    except TimeoutError:
        assert server is not None
        _stop_reading(request, linger=False)
        raise RequestTimeout(
            f"The request body did not arrive within {server.body_timeout_s:g} s (server.body_timeout_s)."
        ) from None
    except web.HTTPRequestEntityTooLarge:
        if encoding not in (None, "", "identity"):
            _stop_reading(request, linger=True)  # or aiohttp would inflate the rest of a bomb
        raise too_large(request.app[RUNTIME].config.server.max_body_bytes) from None
    except web.RequestPayloadError as exc:
        _stop_reading(request, linger=False)  # the stream is broken: nothing more to read
        if isinstance(exc.__cause__, ContentEncodingError):
            raise InvalidRequest(
                f"The request body is not valid {encoding} data, as its Content-Encoding says.", code="invalid_encoding"
            ) from None
        raise InvalidRequest(
            "The request body is malformed (its framing does not match its headers).", code="invalid_body"
        ) from None
    except ConnectionError:
        raise ClientDisconnected() from None


def _stop_reading(request: web.Request, *, linger: bool) -> None:
    """Ignore the rest of a refused body and close the connection after the answer.

    After a response aiohttp reads whatever is left of an unread body for up to 10 s
    ("lingering", so that a client still sending gets to read the answer), parsing and
    inflating it. Closing the protocol makes it ignore incoming bytes: with `linger` the
    connection still absorbs them for that time (no CPU spent), without it the connection
    closes as soon as the answer is written (a client that was too slow, or a body stream
    that is already broken)."""
    request.protocol.close()
    if not linger:
        request.content.feed_eof()


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The request body exceeds the gateway's limit of {limit} bytes (server.max_body_bytes; "
        "a compressed body counts at its decompressed size)."
    )
