"""What shared state reads back from Redis, decoded without trusting it to be ours: breaker
records (versioned; one that cannot be read is a `BadRecord`, counted and logged once per
kind by `BadRecords`) and bucket levels."""

from __future__ import annotations

import math
from typing import Literal

import msgspec

from aiogw.telemetry.logs import get_logger

log = get_logger("aiogw.state")

# The version of the breaker records this aiogw writes (`v`). A record without one comes
# from an aiogw before versioning and has version 1's shape; a record of a newer version is
# skipped (its meaning may have changed), so a rolling deploy mixes versions safely. Every
# version keeps a numeric `at_ms` at the top level: the PUBLISH script compares it.
RECORD_VERSION = 1
# A record dated further ahead of Redis' clock than this is refused: newest-wins would let
# it shadow every real transition of its target.
MAX_AHEAD_MS = 60_000


class _Version(msgspec.Struct):
    v: int = 1


class BreakerRecord(msgspec.Struct, kw_only=True):
    """A breaker transition as written to the breakers hash and the channel."""

    state: Literal["open", "closed"]
    at_ms: float  # Redis' clock
    replica: str = ""
    error: str | None = None
    v: int = RECORD_VERSION


_decode_version = msgspec.json.Decoder(_Version).decode
_decode_record = msgspec.json.Decoder(BreakerRecord).decode


class BadRecord(Exception):
    """A record read back from Redis that this aiogw cannot use."""

    def __init__(self, kind: Literal["not_json", "invalid", "newer_version"], detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


class BadRecords:
    """The records skipped as unreadable: counted (shared_state.bad_records in
    /v1/gateway/health), and logged the first time each kind is seen."""

    def __init__(self, replica: str) -> None:
        self._replica = replica
        self.count = 0
        self._kinds: set[str] = set()

    def skipped(self, bad: BadRecord, source: str, raw_id: bytes, payload: bytes) -> None:
        self.count += 1
        if bad.kind in self._kinds:
            return  # counted, not logged again
        self._kinds.add(bad.kind)
        log.warning(
            "state.bad_record",
            kind=bad.kind,
            source=source,
            target=raw_id[:200].decode(errors="replace"),
            error=str(bad)[:300],
            record=payload[:200].decode(errors="replace"),
            replica=self._replica,
            action="skipped; later records of this kind are counted in /v1/gateway/health, not logged",
        )


def decode_breaker_record(payload: bytes) -> BreakerRecord:
    """A breaker record, or BadRecord saying why not (never another exception)."""
    try:
        version = _decode_version(payload).v
    except msgspec.ValidationError as exc:
        raise BadRecord("invalid", str(exc)) from None
    except msgspec.DecodeError as exc:
        raise BadRecord("not_json", str(exc)) from None
    if version > RECORD_VERSION:
        raise BadRecord("newer_version", f"version {version}; this aiogw reads up to {RECORD_VERSION}")
    try:
        record = _decode_record(payload)
    except msgspec.ValidationError as exc:
        raise BadRecord("invalid", str(exc)) from None
    if not math.isfinite(record.at_ms):
        raise BadRecord("invalid", "at_ms is not a finite number")
    return record


def _level(raw: bytes | None) -> float | None:
    """A rate-limit bucket field as the scripts write it (None: absent or unreadable)."""
    if raw is None:
        return None
    v = float(raw)  # ValueError for anything else
    if not math.isfinite(v):
        raise ValueError(f"not a finite number: {raw!r}")
    return v
