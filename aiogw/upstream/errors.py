"""What the upstream client raises: each failure named for the attempt loop, which maps it
to a failure class and an OpenAI-shaped error (`aiogw.attempts.bounds`)."""

from __future__ import annotations

import ssl


class CannotConnect(OSError):
    """No TCP/TLS connection to the upstream (refused, unreachable, DNS, TLS)."""

    def __init__(self, host: str, port: int, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.host, self.port, self.cause = host, port, cause


class ConnectTimeout(TimeoutError):
    """The TCP/TLS connect took longer than the target's connect timeout."""


class Disconnected(ConnectionError):
    """The upstream closed the connection before the response ended. `started` tells
    whether any of the response had arrived."""

    def __init__(self, started: bool) -> None:
        super().__init__(
            "the upstream connection dropped mid-response" if started else "the upstream closed the connection"
        )
        self.started = started


def tls_reason(exc: ssl.SSLError) -> str:
    """A TLS failure in words (its errno is OpenSSL's, not the system's)."""
    verify = getattr(exc, "verify_message", None)
    return f"TLS: {verify or (exc.reason or str(exc)).replace('_', ' ').lower()}"


class ProtocolError(ConnectionError):
    """The upstream's bytes are not HTTP/1.1."""


class UnsafeRequest(ValueError):
    """A request this client refuses to write: its target has bytes outside RFC 3986, or a
    header carries a control character (CR and LF would forge lines, NUL truncate them)."""
