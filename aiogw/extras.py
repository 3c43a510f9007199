"""Optional parts of the gateway: the config key that switches each on, and the pip extra
(pyproject's [project.optional-dependencies]) that installs its packages.

The config loader checks them (aiogw/config.py), so a config asking for a part whose
packages are absent is a config error naming the extra (exit status 2 from `aiogw
check-config` and `aiogw serve`), never an ImportError at the first request. A new optional
part: its extra in pyproject.toml, a row in OPTIONAL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from importlib.util import find_spec

# Config key (attribute path in Config) -> (extra, modules the part imports once switched on).
OPTIONAL: dict[str, tuple[str, tuple[str, ...]]] = {
    "telemetry.otlp_endpoint": ("otlp", ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http")),
    "state.redis_url": ("redis", ("redis",)),
    "store.url": ("postgres", ("asyncpg",)),
    "cache.semantic.enabled": ("semantic", ("numpy",)),
}
# Keys whose value switches the part on only in some forms (any other non-empty value: all).
SWITCHED_ON_BY: dict[str, Callable[[object], bool]] = {
    "store.url": lambda url: str(url).startswith(("postgresql:", "postgres:")),  # SQLite is built in
}


def installed(module: str) -> bool:
    """Whether `module` can be imported, found without importing it (its parents are imported)."""
    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package is missing, or has no spec
        return False


def needed(config: object) -> dict[str, str]:
    """Config key -> extra, for each optional part `config` switches on (a non-empty value)."""
    out = {}
    for key, (extra, _) in OPTIONAL.items():
        value = config
        for part in key.split("."):
            value = getattr(value, part) if value is not None else None  # a section left out: None
        if value and SWITCHED_ON_BY.get(key, bool)(value):
            out[key] = extra
    return out


def missing_extras(config: object) -> Iterator[tuple[str, str]]:
    """(config key, what to do) for each part `config` switches on whose packages are absent."""
    for key, extra in needed(config).items():
        if not all(installed(module) for module in OPTIONAL[key][1]):
            yield key, f"needs the '{extra}' extra: pip install 'aiogw[{extra}]'"
