"""The client's cache controls, from `cache-control` and `x-aiogw-cache*` headers; a bad
value is a 400 naming the header (the cache never guesses what a client meant)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from aiogw.errors import InvalidRequest

_NAMESPACE = re.compile(r"^[A-Za-z0-9_.:/-]{1,64}$")
MODES = ("on", "off", "read", "write")


@dataclass(frozen=True, slots=True)
class CacheControls:
    mode: str | None = None  # x-aiogw-cache: on | off | read | write (None: not sent)
    no_cache: bool = False  # refresh: skip the lookup, store the new answer
    no_store: bool = False
    only_if_cached: bool = False
    max_age_s: float | None = None  # an entry older than this is a miss
    ttl_s: float | None = None  # x-aiogw-cache-ttl (capped by max_ttl_s)
    namespace: str = ""
    paced: bool = False  # x-aiogw-cache-replay: paced (burst otherwise)
    # Whether the request may read, and write, the cache (set by `parse_controls`).
    reads: bool = True
    writes: bool = True


NO_CONTROLS = CacheControls()


def _bad(name: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid header '{name}': {why}.", code="invalid_header", param=name)


def _seconds(name: str, v: str) -> float:
    try:
        s = float(v)
    except ValueError:
        raise _bad(name, f"expected seconds as a number, got {v!r}") from None
    if not 0 <= s < float("inf"):
        raise _bad(name, "expected a number of seconds, 0 or more")
    return s


_HEADERS = ("cache-control", "x-aiogw-cache", "x-aiogw-cache-ttl", "x-aiogw-cache-namespace", "x-aiogw-cache-replay")


def parse_controls(h: Mapping[str, str]) -> CacheControls:
    """The request's controls (NO_CONTROLS when it sends none of these headers)."""
    values = tuple(map(h.get, _HEADERS))
    if values == _NONE_SENT:
        return NO_CONTROLS
    if sum(map(len, filter(None, values))) > MAX_KEPT_CHARS:
        return _parsed.__wrapped__(*values)  # not kept: a client's long values must not fill memory
    return _parsed(*values)


_NONE_SENT = (None,) * len(_HEADERS)
MAX_KEPT_CHARS = 256


# Clients send the same few values on every request: each set is parsed once (bad ones raise
# every time: errors are not kept).
@lru_cache(maxsize=1024)
def _parsed(
    cache_control: str | None, cache: str | None, cache_ttl: str | None, namespace: str | None, replay: str | None
) -> CacheControls:
    mode = ns = None
    no_cache = no_store = only = paced = False
    max_age = ttl = None
    if (v := cache_control) is not None:
        for part in v.split(","):
            d, _, arg = part.strip().lower().partition("=")
            if d == "no-cache":
                no_cache = True
            elif d == "no-store":
                no_store = True
            elif d == "only-if-cached":
                only = True
            elif d == "max-age":
                max_age = _seconds("cache-control", arg.strip('"'))
            # other directives (public, private, ...) mean nothing to a gateway cache
    if (v := cache) is not None:
        mode = v.strip().lower()
        if mode not in MODES:
            raise _bad("x-aiogw-cache", f"expected one of {', '.join(MODES)}")
    if (v := cache_ttl) is not None:
        ttl = _seconds("x-aiogw-cache-ttl", v)
        if ttl == 0:
            raise _bad("x-aiogw-cache-ttl", "expected a number of seconds above 0")
    if (v := namespace) is not None:
        ns = v.strip()
        if not _NAMESPACE.match(ns):
            raise _bad("x-aiogw-cache-namespace", "expected 1 to 64 characters from A-Z a-z 0-9 _ . : / -")
    if (v := replay) is not None:
        r = v.strip().lower()
        if r not in ("burst", "paced"):
            raise _bad("x-aiogw-cache-replay", "expected burst or paced")
        paced = r == "paced"
    reads = mode not in ("off", "write") and not no_cache
    writes = mode not in ("off", "read") and not no_store
    return CacheControls(mode, no_cache, no_store, only, max_age, ttl, ns or "", paced, reads, writes)
