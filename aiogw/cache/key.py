"""The canonical key of a request: every field that can change the answer, nothing else.

The body's top-level fields are each re-encoded with sorted keys (so spacing and key order
do not split entries) apart from those that only change the delivery or the bookkeeping
(`stream`, `stream_options`, `user`, `metadata`); `model` is replaced by the public group
the request resolved to. The partitions come first in the key, each hashed so that a
client's namespace or a model name can never form a pattern: the caller's scope (from the
authenticated key, never a header), the namespace, the group."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from functools import lru_cache

import msgspec
import orjson

DELIVERY_ONLY = frozenset({"model", "stream", "stream_options", "user", "metadata"})


@lru_cache(maxsize=4096)  # the same scopes, namespaces and groups on every request
def short(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def scope_of(scope: str, key_id: str | None, team: str | None) -> str:
    """Whose entries a request may read and fill: one key's, one team's, or everybody's.
    A key without a team, under `team`, is its own partition (never everybody's)."""
    if scope == "global":
        return "*"
    if scope == "team" and team:
        return f"team:{team}"
    return f"key:{key_id}" if key_id else "anonymous"


def request_hash(group: str, raw: Mapping[str, msgspec.Raw]) -> str:
    canon = {k: orjson.loads(memoryview(v)) for k, v in raw.items() if k not in DELIVERY_ONLY}
    h = hashlib.sha256(group.encode())
    h.update(b"\0")
    h.update(orjson.dumps(canon, option=orjson.OPT_SORT_KEYS))
    return h.hexdigest()


_decode_fields = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode


def native_fields(body: bytes) -> dict[str, msgspec.Raw]:
    """The top-level fields of a body in another API (its request as the client sent it)."""
    return _decode_fields(body)


def entry_key(prefix: str, scope: str, namespace: str, group: str, digest: str) -> str:
    return f"{prefix}:{short(scope)}:{short(namespace)}:{short(group)}:{digest}"


def purge_pattern(prefix: str, namespace: str | None, group: str | None) -> str:
    """A glob over entry keys (the parts are hex: nothing in them is a glob character)."""
    ns = short(namespace) if namespace is not None else "*"
    g = short(group) if group is not None else "*"
    return f"{prefix}:*:{ns}:{g}:*"
