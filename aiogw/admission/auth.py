"""Who is calling, decided once per /v1 request, and what that caller may do: the model
allow-list and the key's own rpm/tpm.

The key is read from `Authorization: Bearer <key>` or `x-api-key: <key>`. The master key is
MASTER. A token that is not one of ours (`sk-aiogw-...`) is no key at all when keys are not
required: clients that must send something (the SDKs) keep working with a placeholder.
Built only when `auth` is configured: without it the server sets ANONYMOUS and nothing here
runs."""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from aiogw.adapters._base import Target
from aiogw.admission.keys import SECRET_PREFIX, Keys, Verified, limit_target
from aiogw.admission.limits import Limiter, LimitExceeded, Reservation
from aiogw.admission.principal import ANONYMOUS, MASTER, Principal
from aiogw.errors import AuthError, GatewayRateLimited, ModelNotAllowed


class SharedBuckets(Protocol):
    """The fleet's rate-limit buckets (aiogw.state.shared.SharedState), when configured."""

    async def take(self, target: Target, tokens: int) -> bool: ...

    def settle(self, target: Target, reserved: int, used: int | None) -> None: ...


@dataclass(slots=True)
class Ticket:
    """What a request took from its key's rpm/tpm; settled with the real usage at its end."""

    target: Target
    reservation: Reservation


def token_of(headers: Mapping[str, str]) -> str | None:
    value = headers.get("authorization")
    if value is not None:
        scheme, _, token = value.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    value = headers.get("x-api-key")
    return value.strip() or None if value is not None else None


def _invalid(message: str) -> AuthError:
    return AuthError(message, code="invalid_api_key")


def allowed(models: frozenset[str], name: str) -> bool:
    """Exact names, and `prefix*` for every name that starts with the prefix."""
    if name in models:
        return True
    return any(m.endswith("*") and name.startswith(m[:-1]) for m in models)


class Authenticator:
    def __init__(
        self, keys: Keys, *, master_key: str | None, require_keys: bool, shared: SharedBuckets | None = None
    ) -> None:
        self.keys = keys
        self._master = master_key.encode() if master_key else None
        self._require = require_keys
        self._shared = shared
        self._limiter = Limiter()  # the keys' own buckets (targets `key:<id>:...`), beside the targets'
        self._targets: dict[str, Target] = {}  # key id -> its limits as a target

    async def principal(self, headers: Mapping[str, str]) -> Principal:
        token = token_of(headers)
        if token is None:
            if self._require:
                raise _invalid(
                    "This gateway requires an API key: send 'Authorization: Bearer sk-aiogw-...' "
                    "(or 'x-api-key'). Ask its operator for one."
                )
            return ANONYMOUS
        v: Verified | Literal[False] | None = False
        if token.startswith(SECRET_PREFIX):
            v = self.keys.cached(token)
            if v is not False and v is not None:  # most requests: a key verified moments ago
                return self._live(v)
        # compare_digest on bytes: constant time whatever the token holds.
        if self._master is not None and hmac.compare_digest(token.encode(), self._master):
            return MASTER
        if not token.startswith(SECRET_PREFIX):
            if self._require:
                raise _invalid("The API key is not valid here: aiogw keys start with 'sk-aiogw-'.")
            return ANONYMOUS
        if v is False:  # not cached (or stale): one store read, shared by concurrent requests
            v = await self.keys.verify(token)
        if v is None:
            raise _invalid("The API key is not valid: unknown, revoked or deleted. Ask the gateway's operator for one.")
        return self._live(v)

    def _live(self, v: Verified) -> Principal:
        p = v.principal
        if p.expires_at is not None and time.time() >= p.expires_at:
            raise _invalid(self._ended(v))
        return p

    @staticmethod
    def _ended(v: Verified) -> str:
        key = v.record
        if v.previous and (key.expires_at is None or (key.prev_until or 0) < key.expires_at):
            return f"The API key '{key.prefix}...' was rotated and its grace period has ended; use its new secret."
        return f"The API key '{key.prefix}...' has expired."

    async def admit(self, p: Principal, names: Iterable[str], tokens: int) -> Ticket | None:
        """A key's request may go on: every model it names is allowed, and its rpm/tpm have
        room (taken now, given back by `settle`). Only for keys (`p.key_id` set)."""
        if p.models is not None:
            for name in names:
                if not allowed(p.models, name):
                    raise ModelNotAllowed(
                        f"The API key '{p.key_name}' may not call the model '{name}'. "
                        "Ask the gateway's operator to add it to the key's models."
                    )
        if not p.rpm and not p.tpm:
            return None
        target = self._limit_target(p)
        shared = False
        try:
            # With shared state the fleet's bucket (one Redis script, leases when busy), as
            # for targets; the local one when Redis is away.
            shared = self._shared is not None and await self._shared.take(target, tokens)
            reservation = self._limiter.acquire(target, tokens, time.monotonic(), buckets=not shared)
        except LimitExceeded as exc:
            what = "requests" if "rpm" in exc.reason else "tokens"
            raise GatewayRateLimited(
                f"The API key '{p.key_name}' is at its {exc.reason} limit ({what} per minute); "
                f"retry after {exc.retry_after_s:.1f} s.",
                retry_after_s=max(1.0, exc.retry_after_s),
            ) from None
        return Ticket(target, reservation)

    def _limit_target(self, p: Principal) -> Target:
        t = self._targets.get(p.key_id)  # type: ignore[arg-type]
        if t is None or t.rpm != p.rpm or t.tpm != p.tpm:  # new, or its limits were changed
            t = self._targets[p.key_id] = limit_target(p)  # type: ignore[index]
        return t

    def settle(self, ticket: Ticket, used_tokens: int | None) -> None:
        """The request ended: give back what it reserved beyond what it used."""
        r = ticket.reservation
        self._limiter.release(r, used_tokens, time.monotonic())
        if r.shared and self._shared is not None:
            self._shared.settle(ticket.target, r.tokens, used_tokens)
