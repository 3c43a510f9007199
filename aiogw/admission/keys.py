"""Virtual keys: their records in the store, their secrets, and verification with an
in-process cache.

A secret is `sk-aiogw-<43 url-safe characters>` (256 random bits), shown once at creation or
rotation. The store holds only HMAC-SHA256(pepper, secret): a lookup by that digest is the
comparison, so the store never compares a secret byte by byte and a copy of it is useless
without the pepper.

Verification runs on every request, so verified keys are cached in process (an LRU of
`auth.key_cache_size` entries) keyed by the secret: a cached key costs a dict lookup, no
HMAC. That lookup compares strings only with an entry of the same hash, which is keyed per
process, so a client cannot steer it. An entry lives at most CACHE_TTL_S: a revocation made on
another replica is refused here within that even when no invalidation message arrives
(Redis pub/sub delivers one at once when shared state is configured). Secrets that matched
nothing are remembered for NEGATIVE_TTL_S, and concurrent lookups of one secret share one
store read, so a client hammering with a wrong key costs a dict lookup, not a query."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
import orjson

from aiogw.adapters._base import Target
from aiogw.admission.principal import Principal
from aiogw.config import BudgetConfig
from aiogw.ids import hex_id
from aiogw.store.base import Store

SECRET_PREFIX = "sk-aiogw-"
SHOWN_CHARS = len(SECRET_PREFIX) + 4  # the prefix users see ("sk-aiogw-AbCd"): enough to tell keys apart
CACHE_TTL_S = 0.5  # the backstop: a revocation is refused by every replica within this plus one read
NEGATIVE_TTL_S = 1.0


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


_last_us = 0


def new_key_id() -> str:
    """`key_` + microseconds (hex, strictly increasing in a process) + randomness: ids sort
    by creation, for cursor paging (keys made in the same millisecond included)."""
    global _last_us
    _last_us = max(int(time.time() * 1_000_000), _last_us + 1)
    return f"key_{_last_us:014x}{hex_id(5)}"


def derive_pepper(pepper: str | None, master_key: str | None) -> bytes:
    """The configured pepper, else one derived from the master key (so changing the master
    key invalidates every virtual key: say so in the README)."""
    if pepper:
        return pepper.encode()
    if master_key:
        return hmac.new(master_key.encode(), b"aiogw virtual key pepper v1", hashlib.sha256).digest()
    raise ValueError("virtual keys need auth.pepper or auth.master_key")


class Digester:
    """HMAC-SHA256(pepper, secret) as hex, with the pepper's HMAC state prepared once: a copy
    per secret costs a third less than a new HMAC."""

    __slots__ = ("_keyed",)

    def __init__(self, pepper: bytes) -> None:
        self._keyed = hmac.new(pepper, digestmod=hashlib.sha256)

    def __call__(self, secret: str) -> str:
        h = self._keyed.copy()
        h.update(secret.encode())
        return h.hexdigest()


class KeyRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One key as stored (never its secret)."""

    id: str
    name: str
    team: str | None = None
    user: str | None = None
    models: tuple[str, ...] | None = None  # None: every model
    rpm: int | None = None
    tpm: int | None = None
    budgets: tuple[dict[str, Any], ...] = ()  # as given at creation: {limit_usd, period, alert_at}
    tags: dict[str, str] = {}
    metadata: dict[str, Any] = {}
    expires_at: float | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    revoked_at: float | None = None
    deleted_at: float | None = None
    prefix: str = ""
    secret_hash: str = ""
    prev_hash: str | None = None
    prev_until: float | None = None  # the replaced secret works until then (Unix seconds)

    def status(self, now: float) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"


def budgets_of(key: KeyRecord) -> list[BudgetConfig]:
    """The key's own budgets, as budgets of scope `key` matching its id (so a rotation keeps
    them: the id never changes)."""
    return [
        BudgetConfig(
            scope="key",
            match=key.id,
            limit_usd=b["limit_usd"],
            period=b.get("period", "month"),
            alert_at=list(b.get("alert_at", [1.0])),
        )
        for b in key.budgets
    ]


def canonical_tags(tags: dict[str, str]) -> str:
    """As the ingress spells a request's tags: "k=v,k2=v2", sorted."""
    return ",".join(sorted(f"{k}={v}" for k, v in tags.items()))


def principal_of(key: KeyRecord, valid_until: float | None) -> Principal:
    return Principal(
        key_id=key.id,
        key_name=key.name,
        team=key.team,
        user=key.user,
        models=frozenset(key.models) if key.models is not None else None,
        tags=canonical_tags(key.tags),
        rpm=key.rpm,
        tpm=key.tpm,
        expires_at=valid_until,
    )


def limit_target(p: Principal) -> Target:
    """A key's rpm/tpm as a rate-limit target, so that the limiter and the shared buckets
    that hold the targets' limits hold the keys' too. The limits are part of its id: a key
    whose limits change starts a new bucket (local and shared) at the new size."""
    return Target(
        id=f"key:{p.key_id}:{p.rpm or 0}:{p.tpm or 0}",
        provider="key",
        type="key",
        model=p.key_name,
        base_url="",
        rpm=p.rpm,
        tpm=p.tpm,
    )


# --- the store ----------------------------------------------------------------------------

_COLUMNS = (
    "id, name, team, user_id, models, rpm, tpm, budgets, tags, metadata, expires_at, created_at, updated_at,"
    " revoked_at, deleted_at, secret_hash, prefix, prev_hash, prev_until"
)


def _record(row: Sequence[Any]) -> KeyRecord:
    (kid, name, team, user, models, rpm, tpm, budgets, tags, metadata, expires_at, created_at, updated_at,
     revoked_at, deleted_at, secret_hash, prefix, prev_hash, prev_until) = row  # fmt: skip
    return KeyRecord(
        id=kid,
        name=name,
        team=team,
        user=user,
        models=tuple(orjson.loads(models)) if models is not None else None,
        rpm=rpm,
        tpm=tpm,
        budgets=tuple(orjson.loads(budgets)),
        tags=orjson.loads(tags),
        metadata=orjson.loads(metadata),
        expires_at=expires_at,
        created_at=created_at,
        updated_at=updated_at,
        revoked_at=revoked_at,
        deleted_at=deleted_at,
        secret_hash=secret_hash,
        prefix=prefix,
        prev_hash=prev_hash,
        prev_until=prev_until,
    )


def _row(k: KeyRecord) -> tuple[Any, ...]:
    return (
        k.id, k.name, k.team, k.user, orjson.dumps(list(k.models)).decode() if k.models is not None else None,
        k.rpm, k.tpm, orjson.dumps(list(k.budgets)).decode(), orjson.dumps(k.tags).decode(),
        orjson.dumps(k.metadata).decode(), k.expires_at, k.created_at, k.updated_at, k.revoked_at, k.deleted_at,
        k.secret_hash, k.prefix, k.prev_hash, k.prev_until,
    )  # fmt: skip


@dataclass(slots=True)
class Verified:
    """A secret that matched a live key, as cached."""

    principal: Principal
    record: KeyRecord
    fresh_until: float  # monotonic: read again from the store after this
    previous: bool  # the secret is the one a rotation replaced (valid until the grace ends)


async def _no_spend(key_id: str) -> list[dict[str, Any]]:
    return []


class VerifiedKeys:
    """The cache of verified secrets (one per process): the request path's side of keys,
    reading the store only on a miss."""

    def __init__(self, store: Store, digest: Digester, cache_size: int) -> None:
        self._store = store
        self._digest = digest
        self._cap = cache_size
        # Keyed by the secret itself: a request with a key verified moments ago costs a dict
        # lookup, not an HMAC (15k instructions, a sixth of the money side's cost per
        # request). The process already holds every provider's key in plain text; the
        # store still holds only digests.
        self._verified: OrderedDict[str, Verified] = OrderedDict()  # secret -> entry
        self._by_id: dict[str, dict[str, Verified]] = {}  # key id -> its cached entries by secret
        self._unknown: OrderedDict[str, float] = OrderedDict()  # secret -> monotonic until
        self._flights: dict[str, asyncio.Task[Verified | None]] = {}  # by secret

    def cached(self, secret: str) -> Verified | Literal[False] | None:
        """The cache's answer without a store read: an entry, None (known unknown), or
        False (ask the store)."""
        now = time.monotonic()
        v = self._verified.get(secret)
        if v is not None and now < v.fresh_until:
            self._verified.move_to_end(secret)
            return v
        until = self._unknown.get(secret)
        if until is not None and now < until:
            return None
        return False

    async def verify(self, secret: str) -> Verified | None:
        """The live key this secret opens (its current or its previous secret), or None.
        Revoked and deleted keys are None; expiry and the end of a rotation's grace are the
        caller's check (the entry's principal carries the time it stops being valid)."""
        got = self.cached(secret)
        if got is not False:
            return got
        flight = self._flights.get(secret)
        if flight is None:
            # A task of its own: a leader whose client left must not cancel the others' read.
            flight = self._flights[secret] = asyncio.get_running_loop().create_task(self._load(secret))
            flight.add_done_callback(lambda _: self._flights.pop(secret, None))
        return await asyncio.shield(flight)

    async def _load(self, secret: str) -> Verified | None:
        # A replaced secret past its grace is still found: its entry is expired at the grace's
        # end, so the client hears "rotated" rather than "unknown".
        d = self._digest(secret)
        row = await self._store.fetchone(
            f"SELECT {_COLUMNS} FROM aiogw_keys WHERE (secret_hash = ? OR prev_hash = ?)"
            " AND revoked_at IS NULL AND deleted_at IS NULL",
            (d, d),
        )
        if row is None:
            self._remember_unknown(secret)
            return None
        key = _record(row)
        previous = not hmac.compare_digest(key.secret_hash, d)
        valid_until = key.expires_at
        if previous:
            assert key.prev_until is not None
            valid_until = key.prev_until if valid_until is None else min(valid_until, key.prev_until)
        v = Verified(principal_of(key, valid_until), key, time.monotonic() + CACHE_TTL_S, previous)
        self._verified[secret] = v
        self._verified.move_to_end(secret)
        self._by_id.setdefault(key.id, {})[secret] = v
        self._unknown.pop(secret, None)
        while len(self._verified) > self._cap:
            old_secret, old = self._verified.popitem(last=False)
            self._drop(old.record.id, old_secret)
        return v

    def _drop(self, key_id: str, secret: str) -> None:
        entries = self._by_id.get(key_id)
        if entries is not None:
            entries.pop(secret, None)
            if not entries:
                del self._by_id[key_id]

    def _remember_unknown(self, secret: str) -> None:
        if (v := self._verified.pop(secret, None)) is not None:
            self._drop(v.record.id, secret)
        self._unknown[secret] = time.monotonic() + NEGATIVE_TTL_S
        self._unknown.move_to_end(secret)
        while len(self._unknown) > self._cap:
            self._unknown.popitem(last=False)

    def forget(self, key_id: str) -> None:
        """Drop the cached entries of a key (changed here or on another replica)."""
        for secret in self._by_id.pop(key_id, {}):
            self._verified.pop(secret, None)

    def forget_all(self) -> None:
        """Invalidations may have been missed (the channel reconnected): start over."""
        self._verified.clear()
        self._by_id.clear()

    def cached_record(self, key_id: str) -> KeyRecord | None:
        """A key's record as verified for a request moments ago (no store read), or None."""
        now = time.monotonic()
        for v in self._by_id.get(key_id, {}).values():
            if now < v.fresh_until:
                return v.record
        return None

    def verified_record(self, key_id: str) -> KeyRecord | None:
        """The record of a key whose secret a request just verified (no store read; the
        entry that let the request in, fresh or not). None for a key not in the cache."""
        for v in self._by_id.get(key_id, {}).values():
            return v.record
        return None


class Keys:
    """The keys in the store (the admin API's side) over the cache of verified secrets,
    whose request-path methods it hands out as its own."""

    def __init__(self, store: Store, pepper: bytes, cache_size: int) -> None:
        self._store = store
        self._digest = Digester(pepper)
        self.verified = v = VerifiedKeys(store, self._digest, cache_size)
        self.cached, self.verify, self.forget, self.forget_all = v.cached, v.verify, v.forget, v.forget_all
        self.cached_record, self.verified_record = v.cached_record, v.verified_record
        # Told of every change made here (replicas' caches): set by the server when shared.
        self.on_change: Callable[[str], Awaitable[None]] | None = None
        # Spend and remaining per budget window of a key, for GET /admin/v1/keys/{id} and
        # GET /v1/key: filled in by the budget engine; none without it.
        self.spend_of: Callable[[str], Awaitable[list[dict[str, Any]]]] = _no_spend

    # --- administration ---------------------------------------------------------------------

    async def _changed(self, key_id: str) -> None:
        self.forget(key_id)
        if self.on_change is not None:
            await self.on_change(key_id)

    async def create(self, fields: dict[str, Any]) -> tuple[KeyRecord, str]:
        """A new key from validated fields; (its record, its secret)."""
        secret = new_secret()
        now = time.time()
        key = KeyRecord(
            id=new_key_id(),
            created_at=now,
            updated_at=now,
            prefix=secret[:SHOWN_CHARS],
            secret_hash=self._digest(secret),
            **fields,
        )
        await self._store.execute(f"INSERT INTO aiogw_keys ({_COLUMNS}) VALUES ({', '.join('?' * 19)})", _row(key))
        return key, secret

    async def get(self, key_id: str) -> KeyRecord | None:
        row = await self._store.fetchone(
            f"SELECT {_COLUMNS} FROM aiogw_keys WHERE id = ? AND deleted_at IS NULL", (key_id,)
        )
        return _record(row) if row is not None else None

    async def with_expiry(self) -> list[KeyRecord]:
        """Live keys that have an `expires_at` (for `key.expiring` alerts)."""
        rows = await self._store.fetchall(
            f"SELECT {_COLUMNS} FROM aiogw_keys WHERE expires_at IS NOT NULL"
            " AND revoked_at IS NULL AND deleted_at IS NULL ORDER BY id"
        )
        return [_record(r) for r in rows]

    async def record(self, key_id: str) -> KeyRecord | None:
        """A key's record: from the cache when a secret of it was just verified (the budget
        engine asks on the request path), else from the store."""
        return self.cached_record(key_id) or await self.get(key_id)

    async def list(self, *, limit: int, after: str | None, team: str | None) -> list[KeyRecord]:
        sql = f"SELECT {_COLUMNS} FROM aiogw_keys WHERE deleted_at IS NULL"
        args: list[Any] = []
        if after is not None:
            sql += " AND id > ?"
            args.append(after)
        if team is not None:
            sql += " AND team = ?"
            args.append(team)
        sql += " ORDER BY id LIMIT ?"
        args.append(limit)
        return [_record(r) for r in await self._store.fetchall(sql, args)]

    async def update(self, key_id: str, fields: dict[str, Any]) -> KeyRecord | None:
        key = await self.get(key_id)
        if key is None:
            return None
        key = msgspec.structs.replace(key, updated_at=time.time(), **fields)
        await self._store.execute(
            "UPDATE aiogw_keys SET name = ?, team = ?, user_id = ?, models = ?, rpm = ?, tpm = ?, budgets = ?,"
            " tags = ?, metadata = ?, expires_at = ?, updated_at = ? WHERE id = ? AND deleted_at IS NULL",
            (*_row(key)[1:11], key.updated_at, key_id),
        )
        await self._changed(key_id)
        return key

    async def rotate(self, key_id: str, grace_s: float) -> tuple[KeyRecord, str] | None:
        """A new secret for the same id (spend and budgets stay attached); the current one
        keeps working for `grace_s` seconds (0: refused at once)."""
        key = await self.get(key_id)
        if key is None:
            return None
        secret = new_secret()
        now = time.time()
        prev_hash, prev_until = (key.secret_hash, now + grace_s) if grace_s > 0 else (None, None)
        key = msgspec.structs.replace(
            key,
            secret_hash=self._digest(secret),
            prefix=secret[:SHOWN_CHARS],
            prev_hash=prev_hash,
            prev_until=prev_until,
            updated_at=now,
        )
        await self._store.execute(
            "UPDATE aiogw_keys SET secret_hash = ?, prefix = ?, prev_hash = ?, prev_until = ?, updated_at = ?"
            " WHERE id = ? AND deleted_at IS NULL",
            (key.secret_hash, key.prefix, prev_hash, prev_until, now, key_id),
        )
        await self._changed(key_id)
        return key, secret

    async def revoke(self, key_id: str) -> KeyRecord | None:
        key = await self.get(key_id)
        if key is None:
            return None
        if key.revoked_at is None:
            now = time.time()
            await self._store.execute(
                "UPDATE aiogw_keys SET revoked_at = ?, updated_at = ? WHERE id = ? AND revoked_at IS NULL",
                (now, now, key_id),
            )
            key = msgspec.structs.replace(key, revoked_at=now, updated_at=now)
        await self._changed(key_id)
        return key

    async def delete(self, key_id: str) -> bool:
        now = time.time()
        n = await self._store.execute(
            "UPDATE aiogw_keys SET deleted_at = ?, updated_at = ?, revoked_at = COALESCE(revoked_at, ?)"
            " WHERE id = ? AND deleted_at IS NULL",
            (now, now, now, key_id),
        )
        if n:
            await self._changed(key_id)
        return bool(n)
