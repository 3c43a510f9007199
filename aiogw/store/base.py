"""One interface over the durable store's backends: SQLite (embedded, the default) and
PostgreSQL (a fleet). Callers write portable SQL with `?` placeholders and the types
`TEXT`, `BIGINT`, `DOUBLE PRECISION`; a backend translates what its dialect spells
differently. Every call runs off the event loop (SQLite in its own thread, PostgreSQL on
its async driver), so a slow disk never stalls a request."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from aiogw.errors import ConfigError

Row = tuple[Any, ...]
Dialect = Literal["sqlite", "postgresql"]


class Conflict(Exception):
    """A uniqueness or reference constraint refused the write (every backend raises this one)."""


class Unreachable(Exception):
    """The store could not be opened (refused, bad credentials, no such database or file),
    or a server store's connection failed during a call (the server restarting: later
    calls reconnect by themselves). The message names it with any password masked. A write
    whose connection failed during its commit may or may not have been applied."""


class Store(Protocol):
    dialect: Dialect
    url_for_logs: str  # the URL with any password masked

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Run one statement; the number of rows it changed."""

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement once per row, in one transaction."""

    async def fetchall(self, sql: str, args: Sequence[Any] = ()) -> list[Row]: ...

    async def fetchone(self, sql: str, args: Sequence[Any] = ()) -> Row | None: ...

    async def transaction(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        """Run the statements atomically (all or none); each one's changed-row count.
        A constraint violation raises `Conflict` (any backend)."""

    async def close(self) -> None: ...


def masked(url: str) -> str:
    """`url` fit for logs: the password (in the authority or a `password=` query
    parameter, both of which libpq and asyncpg read) replaced by `***`."""
    parts = urlsplit(url)
    if parts.password is None and "password=" not in parts.query:
        return url  # as written (rebuilding would turn sqlite://// into sqlite://)
    if parts.password is not None:
        parts = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1))
    query = "&".join("password=***" if item.startswith("password=") else item for item in parts.query.split("&"))
    return parts._replace(query=query).geturl()


async def open_store(url: str) -> Store:
    """Connect to the store at `url` and bring its schema to the current version."""
    from aiogw.store.migrations import migrate  # noqa: PLC0415 (migrations import the backends' types)

    store = await connect(url)
    try:
        await migrate(store)
    except BaseException:
        await store.close()
        raise
    return store


async def connect(url: str) -> Store:
    """Connect to the store at `url` without touching its schema (`aiogw store migrate`
    migrates itself, to report what it applied). `Unreachable` when it cannot be opened."""
    scheme = urlsplit(url).scheme
    store: Store
    if scheme == "sqlite":
        from aiogw.store.sqlite import SQLiteStore  # noqa: PLC0415 (a backend is loaded when named)

        store = await SQLiteStore.open(url)
    elif scheme in ("postgresql", "postgres"):
        from aiogw.store.postgres import PostgresStore  # noqa: PLC0415 (asyncpg only when named)

        store = await PostgresStore.open(url)
    else:
        raise ConfigError("<config>", "store.url", f"sqlite:///PATH or postgresql://..., got scheme {scheme!r}")
    return store
