"""Errors in Anthropic's shape: `{"type": "error", "error": {"type", "message"},
"request_id"}` with the statuses of Anthropic's "Errors" page, so its SDKs raise the
matching exception class. The gateway's own code (`budget_exceeded`, `model_not_allowed`...)
leads the message, since Anthropic's error object has no field for it."""

from __future__ import annotations

import orjson

from aiogw.errors import GatewayError

# HTTP status -> Anthropic's error type (docs "Errors": HTTP errors).
TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_type(status: int) -> str:
    return TYPES.get(status) or ("invalid_request_error" if status < 500 else "api_error")


def _message(err: GatewayError) -> str:
    code = err.code or err.type
    text = f"{code}: {err.message}" if code else err.message
    return f"{text} (param: {err.param})" if err.param else text


def error_body(err: GatewayError, request_id: str) -> bytes:
    """The JSON body of an error answered before the stream (the middleware's renderer)."""
    detail = {"type": error_type(err.http_status()), "message": _message(err)}
    return orjson.dumps({"type": "error", "error": detail, "request_id": request_id})


def error_event(err: GatewayError) -> bytes:
    """The `error` event that ends a stream failing after its first byte."""
    status = err.http_status()
    # After a 200, Anthropic reports overload and everything else as api_error (docs
    # "Streaming Messages": error events).
    kind = "overloaded_error" if status in (503, 529) else error_type(status)
    data = orjson.dumps({"type": "error", "error": {"type": kind, "message": _message(err)}})
    return b"event: error\ndata: " + data + b"\n\n"
