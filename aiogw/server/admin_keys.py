"""The keys admin API (`/admin/v1/keys`, master key only) and `GET /v1/key` (a key looks at
itself). Bodies are validated as strictly as the config: an unknown field or a wrong type is
a 400 naming it in `param`. Times are ISO 8601 in UTC; the secret appears only in the
answers to create and rotate."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web
from msgspec import UNSET, Meta, UnsetType

from aiogw.admission.keys import KeyRecord, Keys
from aiogw.errors import AuthError, InvalidRequest, NestedTooDeep, NotFound
from aiogw.ingress.body import read_body
from aiogw.ingress.chat import invalid_body, valid_tag
from aiogw.server.admin import require_admin
from aiogw.server.keys import AUTH, PRINCIPAL

_UNKNOWN = re.compile(r"^Object contains unknown field `([^`]*)`(?: - at `\$\.?(.*)`)?$")
Name = Annotated[str, Meta(min_length=1, max_length=200)]
MAX_PAGE = 1000
MAX_GRACE_S = 30 * 86400.0


class _Body(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class Limits(_Body):
    rpm: Annotated[int, Meta(ge=1)] | None = None
    tpm: Annotated[int, Meta(ge=1)] | None = None


class Budget(_Body):
    limit_usd: Annotated[float, Meta(gt=0)]
    period: Literal["1d", "7d", "30d", "month", "total"] = "month"
    alert_at: list[Annotated[float, Meta(gt=0, le=1)]] = msgspec.field(default_factory=lambda: [1.0])


class KeyCreate(_Body):
    name: Name
    team: Name | None = None
    user: Name | None = None
    models: Annotated[list[Name], Meta(max_length=1000)] | None = None
    limits: Limits | None = None
    budgets: Annotated[list[Budget], Meta(max_length=20)] = []
    tags: dict[str, str] = {}
    expires_at: str | None = None
    metadata: dict[str, Any] = {}


class KeyUpdate(_Body):
    """Only the fields sent change; null clears an optional one."""

    name: Name | UnsetType = UNSET
    team: Name | UnsetType | None = UNSET
    user: Name | UnsetType | None = UNSET
    models: Annotated[list[Name], Meta(max_length=1000)] | UnsetType | None = UNSET
    limits: Limits | UnsetType | None = UNSET
    budgets: Annotated[list[Budget], Meta(max_length=20)] | UnsetType = UNSET
    tags: dict[str, str] | UnsetType = UNSET
    expires_at: str | UnsetType | None = UNSET
    metadata: dict[str, Any] | UnsetType = UNSET


class Rotate(_Body):
    grace_period_s: Annotated[float, Meta(ge=0, le=MAX_GRACE_S)] = 0.0


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    dt = datetime.fromtimestamp(t, UTC)
    spec = "seconds" if dt.microsecond == 0 else "milliseconds"
    return dt.isoformat(timespec=spec).replace("+00:00", "Z")


def _parse_time(value: str, param: str) -> float:
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(
            f"Invalid value for '{param}': expected an ISO 8601 time such as 2026-12-03T10:00:00Z, got {value!r}.",
            param=param,
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)  # a time without a zone is UTC, as every time here
    return dt.timestamp()


def _decode(body: bytes, typ: type[msgspec.Struct]) -> Any:
    try:
        return msgspec.json.decode(body or b"{}", type=typ)
    except msgspec.ValidationError as exc:
        m = _UNKNOWN.match(str(exc))
        if m is not None:  # name the field itself, as for any other wrong field
            param = f"{m.group(2)}.{m.group(1)}" if m.group(2) else m.group(1)
            known = "" if m.group(2) else f" (expected one of: {', '.join(typ.__struct_fields__)})"
            raise InvalidRequest(f"Unknown field '{param}'{known}.", param=param) from None
        raise invalid_body(exc) from None
    except msgspec.MsgspecError as exc:
        raise invalid_body(exc) from None
    except RecursionError:
        raise NestedTooDeep() from None


def _tags(tags: dict[str, str]) -> dict[str, str]:
    if len(tags) > 16:
        raise InvalidRequest("Invalid value for 'tags': at most 16 tags.", param="tags")
    for k, v in tags.items():
        if not valid_tag(f"{k}={v}"):
            raise InvalidRequest(
                f"Invalid value for 'tags.{k}': names are 1-64 of A-Z a-z 0-9 _ . : / - and values up to "
                "128 of those, '@' and spaces (the x-aiogw-tags rule).",
                param=f"tags.{k}",
            )
    return tags


def _fields(body: KeyCreate | KeyUpdate) -> dict[str, Any]:
    """The record's fields from a validated body (only those sent, for an update)."""
    out: dict[str, Any] = {}
    for name in ("name", "team", "user", "metadata"):
        value = getattr(body, name)
        if value is not UNSET:
            out[name] = value
    if body.models is not UNSET:
        out["models"] = tuple(body.models) if body.models is not None else None
    if body.limits is not UNSET:
        out["rpm"] = body.limits.rpm if body.limits is not None else None
        out["tpm"] = body.limits.tpm if body.limits is not None else None
    if body.budgets is not UNSET:
        out["budgets"] = tuple(msgspec.to_builtins(b) for b in body.budgets)
    if body.tags is not UNSET:
        out["tags"] = _tags(body.tags)
    if body.expires_at is not UNSET:
        out["expires_at"] = _parse_time(body.expires_at, "expires_at") if body.expires_at is not None else None
    return out


def key_view(key: KeyRecord, now: float, *, admin: bool = True) -> dict[str, Any]:
    view: dict[str, Any] = {
        "object": "key",
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "status": key.status(now),
        "team": key.team,
        "user": key.user,
        "models": list(key.models) if key.models is not None else None,
        "limits": {"rpm": key.rpm, "tpm": key.tpm},
        "budgets": list(key.budgets),
        "tags": key.tags,
        "expires_at": iso(key.expires_at),
        "created_at": iso(key.created_at),
        "previous_secret_valid_until": iso(key.prev_until) if key.prev_until and key.prev_until > now else None,
    }
    if admin:
        view.update(metadata=key.metadata, updated_at=iso(key.updated_at), revoked_at=iso(key.revoked_at))
    return view


def _keys(request: web.Request) -> Keys:
    require_admin(request)
    auth = request.app[AUTH]
    assert auth is not None  # a master key configures auth
    return auth.keys


def _unknown(key_id: str) -> NotFound:
    return NotFound(f"No key with id '{key_id}'.", code="key_not_found", param="id")


def _now() -> float:
    return datetime.now(UTC).timestamp()


async def create_key(request: web.Request) -> web.Response:
    keys = _keys(request)
    body = _decode(await read_body(request), KeyCreate)
    fields = _fields(body)
    now = _now()
    if fields.get("expires_at") is not None and fields["expires_at"] <= now:
        raise InvalidRequest("Invalid value for 'expires_at': the time has passed.", param="expires_at")
    key, secret = await keys.create(fields)
    return web.json_response({**key_view(key, now), "key": secret}, status=201)


async def list_keys(request: web.Request) -> web.Response:
    keys = _keys(request)
    q = request.query
    try:
        limit = int(q.get("limit", "100"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"Invalid value for 'limit': a number from 1 to {MAX_PAGE}.", param="limit")
    rows = await keys.list(limit=limit + 1, after=q.get("after"), team=q.get("team"))
    page, more = rows[:limit], len(rows) > limit
    now = _now()
    return web.json_response(
        {
            "object": "list",
            "data": [key_view(k, now) for k in page],
            "has_more": more,
            "next_after": page[-1].id if more else None,  # pass as ?after= for the next page
        }
    )


async def get_key(request: web.Request) -> web.Response:
    keys = _keys(request)
    key_id = request.match_info["id"]
    key = await keys.get(key_id)
    if key is None:
        raise _unknown(key_id)
    return web.json_response({**key_view(key, _now()), "spend": await keys.spend_of(key.id)})


async def update_key(request: web.Request) -> web.Response:
    keys = _keys(request)
    key_id = request.match_info["id"]
    fields = _fields(_decode(await read_body(request), KeyUpdate))
    key = await keys.update(key_id, fields)
    if key is None:
        raise _unknown(key_id)
    return web.json_response(key_view(key, _now()))


async def rotate_key(request: web.Request) -> web.Response:
    keys = _keys(request)
    key_id = request.match_info["id"]
    body = _decode(await read_body(request), Rotate)
    if not math.isfinite(body.grace_period_s):
        raise InvalidRequest("Invalid value for 'grace_period_s': a number of seconds.", param="grace_period_s")
    got = await keys.rotate(key_id, body.grace_period_s)
    if got is None:
        raise _unknown(key_id)
    key, secret = got
    return web.json_response({**key_view(key, _now()), "key": secret})


async def revoke_key(request: web.Request) -> web.Response:
    keys = _keys(request)
    key_id = request.match_info["id"]
    key = await keys.revoke(key_id)
    if key is None:
        raise _unknown(key_id)
    return web.json_response(key_view(key, _now()))


async def delete_key(request: web.Request) -> web.Response:
    keys = _keys(request)
    key_id = request.match_info["id"]
    if not await keys.delete(key_id):
        raise _unknown(key_id)
    return web.json_response({"object": "key", "id": key_id, "deleted": True})


async def own_key(request: web.Request) -> web.Response:
    """`GET /v1/key`: the calling key's own settings and spend; never another caller's."""
    p = request[PRINCIPAL]
    if p.admin:
        return web.json_response({"object": "key", "id": None, "name": p.key_name, "admin": True})
    auth = request.app[AUTH]
    if p.key_id is None or auth is None:
        raise AuthError(
            "GET /v1/key describes the key that calls it: send a virtual key as 'Authorization: Bearer sk-aiogw-...'.",
            code="invalid_api_key",
        )
    key = await auth.keys.record(p.key_id)
    if key is None:
        raise AuthError("The API key is not valid: unknown, revoked or deleted.", code="invalid_api_key")
    return web.json_response({**key_view(key, _now(), admin=False), "spend": await auth.keys.spend_of(key.id)})


ROUTES = [
    web.post("/admin/v1/keys", create_key),
    web.get("/admin/v1/keys", list_keys),
    web.get("/admin/v1/keys/{id}", get_key),
    web.patch("/admin/v1/keys/{id}", update_key),
    web.post("/admin/v1/keys/{id}/rotate", rotate_key),
    web.post("/admin/v1/keys/{id}/revoke", revoke_key),
    web.delete("/admin/v1/keys/{id}", delete_key),
    web.get("/v1/key", own_key),
]
