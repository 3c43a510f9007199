"""Who is calling: the verified virtual key (and what it carries), the master key, or
nobody (keys not required and none sent). Admission decides it once per request; limits,
budgets, tags, the ledger and (later) the cache's scope read it from here, never from a
header."""

from __future__ import annotations

import msgspec


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    key_id: str | None = None  # None: anonymous or the master key
    key_name: str = ""
    team: str | None = None
    user: str | None = None
    models: frozenset[str] | None = None  # None: every model
    tags: str = ""  # canonical "k=v,k2=v2" (sorted), merged into every request's tags
    rpm: int | None = None
    tpm: int | None = None
    expires_at: float | None = None  # Unix seconds
    admin: bool = False  # the master key: dollar figures and other callers' data are visible


ANONYMOUS = Principal()
MASTER = Principal(admin=True, key_name="master")
