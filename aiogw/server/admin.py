"""The admin API's gate: `/admin/v1/*` answers only to the master key (`auth.master_key`),
sent as `Authorization: Bearer <key>`; without a configured master key there is no admin API."""

from __future__ import annotations

import hmac

from aiohttp import web

from aiogw.errors import AuthError, NotFound
from aiogw.server.keys import RUNTIME


def bearer(request: web.Request) -> str | None:
    value = request.headers.get("authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def require_admin(request: web.Request) -> None:
    master = request.app[RUNTIME].config.auth.master_key
    if master is None:
        raise NotFound("The admin API is off: set auth.master_key in the config to turn it on.")
    token = bearer(request)
    # compare_digest on bytes: constant time whatever the lengths' characters.
    if token is None or not hmac.compare_digest(token.encode(), master.reveal().encode()):
        raise AuthError(
            "The admin API needs the master key as 'Authorization: Bearer <key>' (auth.master_key).",
            code="invalid_api_key",
        )
