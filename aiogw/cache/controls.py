"""The client's cache controls, from `cache-control` and `x-aiogw-cache*` headers; a bad
value is a 400 naming the header (the cache never guesses what a client meant)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

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

    @property
    def reads(self) -> bool:
        return self.mode not in ("off", "write") and not self.no_cache

    @property
    def writes(self) -> bool:
        return self.mode not in ("off", "read") and not self.no_store


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


def parse_controls(h: Mapping[str, str]) -> CacheControls:
    mode = ns = None
    no_cache = no_store = only = paced = False
    max_age = ttl = None
    if (v := h.get("cache-control")) is not None:
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
    if (v := h.get("x-aiogw-cache")) is not None:
        mode = v.strip().lower()
        if mode not in MODES:
            raise _bad("x-aiogw-cache", f"expected one of {', '.join(MODES)}")
    if (v := h.get("x-aiogw-cache-ttl")) is not None:
        ttl = _seconds("x-aiogw-cache-ttl", v)
        if ttl == 0:
            raise _bad("x-aiogw-cache-ttl", "expected a number of seconds above 0")
    if (v := h.get("x-aiogw-cache-namespace")) is not None:
        ns = v.strip()
        if not _NAMESPACE.match(ns):
            raise _bad("x-aiogw-cache-namespace", "expected 1 to 64 characters from A-Z a-z 0-9 _ . : / -")
    if (v := h.get("x-aiogw-cache-replay")) is not None:
        r = v.strip().lower()
        if r not in ("burst", "paced"):
            raise _bad("x-aiogw-cache-replay", "expected burst or paced")
        paced = r == "paced"
    return CacheControls(mode, no_cache, no_store, only, max_age, ttl, ns or "", paced)
