"""The request head the upstream client writes: the request line (cached per URL by the
client) and the header block, refused when it would not reach the upstream as written."""

from __future__ import annotations

import re
from collections.abc import Mapping

from aiogw.upstream.errors import UnsafeRequest

# RFC 3986: scheme "://" authority, then path-abempty [ "?" query ] (pchar = unreserved /
# pct-encoded / sub-delims / ":" / "@"), no fragment.
_URL = re.compile(
    r"[A-Za-z][A-Za-z0-9+.-]*://[A-Za-z0-9\-._~!$&'()*+,;=:@%\[\]]*"
    r"(?P<target>[/?](?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*)?"
)
# Field values (RFC 9110 5.5) may hold HTAB, SP, VCHAR and obs-text, but no other control.
_CONTROLS = bytes(c for c in range(32) if c != 9) + b"\x7f"


def check_request_target(url: str) -> None:
    """Refuse a URL that would not reach the upstream as written: urlsplit silently drops
    tabs and line breaks, and raw spaces, quotes, `%` without two hex digits or non-ASCII
    are not a request-target. Names put in paths are percent-encoded by the adapters."""
    if _URL.fullmatch(url) is None:
        # Where it goes wrong, not the URL itself: that may carry credentials.
        m = _URL.match(url)
        if m is None:
            raise UnsafeRequest("refused to send a request: its URL does not start with scheme://")
        raise UnsafeRequest(
            f"refused to send a request: its URL has {url[m.end()]!r} at position {m.end()}, outside RFC 3986"
        )


def request_line(path: str, target_prefix: bytes, host_header: bytes, proxy_authorization: bytes | None) -> bytes:
    """`POST path HTTP/1.1`, Host and, to a proxy in absolute form, Proxy-Authorization: the
    lines every request to one URL starts with."""
    line = b"POST " + target_prefix + path.encode() + b" HTTP/1.1\r\nHost: " + host_header + b"\r\n"
    if proxy_authorization is not None:
        line += b"Proxy-Authorization: " + proxy_authorization + b"\r\n"
    return line


def encode_head(line: bytes, line_count: int, headers: Mapping[str, str], body_length: int) -> bytes:
    """The whole head: `line` (holding `line_count` CRLF-ended lines), the headers, the
    length. A header that would forge or cut lines is refused before any byte is written."""
    head = [line]
    for k, v in headers.items():
        head.append(f"{k}: {v}\r\n".encode("latin-1"))
    head.append(b"Content-Length: %d\r\nAccept-Encoding: identity\r\n\r\n" % body_length)
    raw = b"".join(head)
    lines = len(headers) + 3 + line_count
    # Exactly our own CRLFs and no other control byte: a CR/LF inside a header would forge
    # lines, a NUL cut them (two C passes, about 0.3 us).
    if raw.count(b"\r\n") != lines or len(raw.translate(None, _CONTROLS)) != len(raw) - 2 * lines:
        raise UnsafeRequest("an upstream header name or value contains a line break or a control character")
    return raw
