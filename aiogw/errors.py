"""Every error the gateway can answer with, and how each failure drives retries.

```
GatewayError                    .status .type .code .param .message; to_openai() -> bytes
├─ ClientError                  the caller's fault: never retried, never failed over
│  ├─ InvalidRequest (400, param) └─ NestedTooDeep   ├─ PayloadTooLarge (413)
│  ├─ AuthError (401), Forbidden (403) └─ ModelNotAllowed ├─ NotFound (404) └─ ModelNotFound
│  ├─ MethodNotAllowed (405)        ├─ RequestTimeout (408) ├─ UnsupportedEncoding (415)
│  ├─ BudgetExceeded (402, retry_after: the window's reset)
│  └─ GatewayRateLimited (429, retry_after)
├─ ServiceUnavailable (503)     the gateway itself cannot take the request (draining)
├─ UpstreamError                .provider .model .failure_class .retry_after
│  ├─ UpstreamTimeout           .phase: connect | first_token | idle | total | deadline
│  ├─ UpstreamConnectError
│  ├─ UpstreamStatusError       .upstream_status .upstream_type .upstream_code
│  └─ UpstreamProtocolError     undecodable body or stream, truncated stream
├─ AllAttemptsFailed            .attempts: tuple[UpstreamError, ...] -> 502/503/504
└─ ConfigError                  .file .path .expected -> exit status 2
```

Errors are values: constructing one never logs. Messages never carry keys or prompt text.
This module is a leaf: stdlib and orjson only.
"""

from __future__ import annotations

import enum
import math
from typing import ClassVar, Literal

import orjson


class FailureClass(enum.StrEnum):
    """Why an upstream attempt failed; the router and breaker decide policy from this."""

    CALLER_FAULT = "caller_fault"  # the request itself is wrong: return it, never fail over
    CREDENTIAL = "credential"  # our key is wrong for this target: skip it, loud log
    RATE_LIMIT = "rate_limit"
    QUOTA = "quota"  # billing exhausted: not transient
    OVERLOADED = "overloaded"
    TIMEOUT = "timeout"
    TRANSIENT = "transient"  # 5xx, dropped connection
    MODEL_GONE = "model_gone"  # 404 upstream: our routing table is wrong
    PROTOCOL = "protocol"  # the upstream answered something we cannot read
    CONTEXT_LENGTH = "context_length"  # caller fault, but a larger window may serve it


# Failure classes after which the next target may still succeed.
FAILOVER_CLASSES = frozenset(
    {
        FailureClass.CREDENTIAL,
        FailureClass.RATE_LIMIT,
        FailureClass.QUOTA,
        FailureClass.OVERLOADED,
        FailureClass.TIMEOUT,
        FailureClass.TRANSIENT,
        FailureClass.MODEL_GONE,
        FailureClass.PROTOCOL,
    }
)


class GatewayError(Exception):
    """Base of every error answered to a client; renders as OpenAI's error object."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    code: str | None = None
    param: str | None = None

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if param is not None:
            self.param = param

    def http_status(self) -> int:
        return self.status

    def describe(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def to_openai(self) -> bytes:
        return orjson.dumps(self.to_dict())

    def headers(self) -> dict[str, str]:
        """Extra response headers this error calls for (retry-after, x-should-retry)."""
        return {}


class ClientError(GatewayError):
    status = 400
    type = "invalid_request_error"


class InvalidRequest(ClientError):
    status = 400
    code = "invalid_value"


class NestedTooDeep(InvalidRequest):
    """JSON nested past the interpreter's recursion limit, where msgspec (decoding the
    body, or an adapter re-encoding parts of it) raises RecursionError."""

    code = "invalid_json"

    def __init__(self) -> None:
        super().__init__(
            "The request nests JSON arrays or objects too deeply to be processed; keep nesting well under 1,000 levels."
        )


class AuthError(ClientError):
    """Missing, unknown, revoked or expired key: OpenAI's own 401 shape (its type is
    invalid_request_error, which the SDKs map to AuthenticationError by status)."""

    status = 401
    code = "invalid_api_key"


class Forbidden(ClientError):
    status = 403
    code = "forbidden"


class ModelNotAllowed(Forbidden):
    """A virtual key asked for a model outside its `models` list."""

    type = "permission_error"
    code = "model_not_allowed"
    param = "model"


class NotFound(ClientError):
    """An unknown path (no parameter is at fault)."""

    status = 404
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"
    param = "model"


class Duplicate(ClientError):
    """What the request would make exists already (feedback for the same request and metric)."""

    status = 409
    code = "duplicate"


class Unprocessable(ClientError):
    """A well-formed body whose values cannot be used (a wrong type, an unknown metric)."""

    status = 422
    code = "invalid_value"


class MethodNotAllowed(ClientError):
    status = 405
    code = "method_not_allowed"


class RequestTimeout(ClientError):
    """The client did not send its whole body in time; the connection is closed after it."""

    status = 408
    code = "request_timeout"

    def headers(self) -> dict[str, str]:
        return {"connection": "close"}


class PayloadTooLarge(ClientError):
    status = 413
    code = "request_too_large"


class UnsupportedEncoding(ClientError):
    status = 415
    code = "unsupported_content_encoding"


class GatewayRateLimited(ClientError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_s: float = 1.0, **kw: str | None) -> None:
        super().__init__(message, **kw)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"retry-after": str(max(1, round(self.retry_after_s)))}


class BudgetExceeded(ClientError):
    """A budget that applies to the request has no room for its worst-case cost. The
    message names the budget (scope, match, window) and its reset, never anyone's spend."""

    status = 402
    type = "insufficient_quota"
    code = "budget_exceeded"

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s  # None: a `total` budget never resets

    def headers(self) -> dict[str, str]:
        return {} if self.retry_after_s is None else {"retry-after": str(max(1, math.ceil(self.retry_after_s)))}


class ServiceUnavailable(GatewayError):
    status = 503
    type = "service_unavailable_error"
    code = "draining"

    def headers(self) -> dict[str, str]:
        return {"retry-after": "1", "connection": "close"}


class StoreUnavailable(ServiceUnavailable):
    """The durable store (keys, budgets, the spend ledger) did not answer: a request that
    needs it is refused rather than let through unchecked."""

    code = "store_unavailable"

    def headers(self) -> dict[str, str]:
        return {"retry-after": "1"}


class CacheMiss(GatewayError):
    """`cache-control: only-if-cached` and no stored answer (RFC 9111's 504)."""

    status = 504
    type = "cache_miss_error"
    code = "cache_miss"

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason

    def headers(self) -> dict[str, str]:
        h = {"x-aiogw-cache-status": "miss" if not self.reason else "bypass"}
        if self.reason:
            h["x-aiogw-cache-reason"] = self.reason
        return h


class UpstreamError(GatewayError):
    """One attempt at one target failed."""

    status = 502
    type = "upstream_error"
    failure_class: FailureClass = FailureClass.TRANSIENT

    def __init__(
        self,
        message: str,
        *,
        target: str = "",
        failure_class: FailureClass | None = None,
        retry_after_s: float | None = None,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message, code=code, param=param)
        self.target = target  # "provider/model"
        if failure_class is not None:
            self.failure_class = failure_class
        self.retry_after_s = retry_after_s

    @property
    def may_fail_over(self) -> bool:
        return self.failure_class in FAILOVER_CLASSES

    def describe(self) -> str:
        """One attempt as it appears in the final message: `target: cause`."""
        return f"{self.target}: {self.message}" if self.target else self.message


# Which limit expired: an attempt's connect / first_token / idle / total, or the whole
# request's deadline (x-aiogw-timeout-ms).
TimeoutPhase = Literal["connect", "first_token", "idle", "total", "deadline"]


class UpstreamTimeout(UpstreamError):
    status = 504
    type = "timeout_error"
    code = "upstream_timeout"
    failure_class = FailureClass.TIMEOUT

    def __init__(self, message: str, *, phase: TimeoutPhase, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.phase = phase


class UpstreamConnectError(UpstreamError):
    status = 502
    code = "upstream_unreachable"
    failure_class = FailureClass.TRANSIENT


class UpstreamStatusError(UpstreamError):
    """The upstream answered with an error status; adapters build these from its body."""

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int,
        upstream_type: str | None = None,
        upstream_code: str | None = None,
        **kw: object,
    ) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.upstream_status = upstream_status
        self.upstream_type = upstream_type
        self.upstream_code = upstream_code

    def http_status(self) -> int:
        # The caller's own mistakes keep the upstream's status and wording; everything
        # else is our (or the provider's) problem and is reported as a gateway failure.
        if self.failure_class in (FailureClass.CALLER_FAULT, FailureClass.CONTEXT_LENGTH):
            return self.upstream_status if self.upstream_status in (400, 404, 413, 422) else 400
        return _STATUS_BY_CLASS.get(self.failure_class, 502)

    def to_dict(self) -> dict[str, object]:
        caller = self.failure_class in (FailureClass.CALLER_FAULT, FailureClass.CONTEXT_LENGTH)
        return {
            "error": {
                "message": self.message if caller else self.describe(),
                "type": (self.upstream_type or "invalid_request_error") if caller else self.type,
                "param": self.param,
                "code": self.code or self.upstream_code,
            }
        }


class UpstreamProtocolError(UpstreamError):
    status = 502
    code = "upstream_protocol_error"
    failure_class = FailureClass.PROTOCOL


_STATUS_BY_CLASS = {
    FailureClass.TIMEOUT: 504,
    FailureClass.OVERLOADED: 503,
    FailureClass.RATE_LIMIT: 429,
}


class AllAttemptsFailed(GatewayError):
    """Every target in the plan failed; the message lists each attempt and why."""

    type = "upstream_error"
    code = "all_attempts_failed"

    def __init__(self, attempts: tuple[UpstreamError, ...], *, model: str, skipped: tuple[str, ...] = ()) -> None:
        causes = "; ".join([*(a.describe() for a in attempts), *skipped]) or "no target was available"
        super().__init__(f"model '{model}' failed on every target: {causes}")
        self.attempts = attempts

    def http_status(self) -> int:
        if not self.attempts:
            return 503
        if len(self.attempts) == 1:
            return self.attempts[0].http_status()
        classes = {a.failure_class for a in self.attempts}
        if classes == {FailureClass.TIMEOUT}:
            return 504
        if classes == {FailureClass.RATE_LIMIT}:
            return 429
        if classes <= {FailureClass.OVERLOADED, FailureClass.RATE_LIMIT}:
            return 503
        return 502

    def to_dict(self) -> dict[str, object]:
        if len(self.attempts) == 1:  # one attempt: its own type and code, our wording
            inner = self.attempts[0].to_dict()["error"]
            assert isinstance(inner, dict)
            return {"error": {**inner, "message": self.message}}
        return super().to_dict()

    def headers(self) -> dict[str, str]:
        # The OpenAI SDK retries 5xx by itself; we already retried and failed over.
        retry = [a.retry_after_s for a in self.attempts if a.retry_after_s is not None]
        headers = {"x-should-retry": "false"}
        if retry:
            headers["retry-after"] = str(max(1, round(min(retry))))
        return headers


class ConfigError(Exception):
    """The config file is invalid: names the file, the key path and what was expected.

    Loading reports every problem it finds: the first is raised, carrying all of them
    (itself included) in `errors`."""

    def __init__(self, file: str, path: str, expected: str) -> None:
        self.file, self.path, self.expected = file, path, expected
        self.errors: tuple[ConfigError, ...] = (self,)
        where = f"{file}: {path}" if path else file
        super().__init__(f"{where}: {expected}")

    @staticmethod
    def of(errors: list[ConfigError]) -> ConfigError:
        first = errors[0]
        first.errors = tuple(errors)
        return first
