"""The fleet backend: PostgreSQL through asyncpg (the `postgres` extra), a small pool per
process. Callers' portable SQL is translated once per statement text: each `?` outside a
quoted string or identifier becomes `$1`, `$2`, ... (so a statement must not use
PostgreSQL's own `?` operators, dollar-quoted strings, backslash escapes in `E'...'` or a
`?` in a comment: the store's SQL has no use for them). Values must be of the column's
kind, a str for TEXT and a number for BIGINT (a whole one) or DOUBLE PRECISION: unlike
SQLite, PostgreSQL converts nothing else."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import asyncpg

from aiogw.store.base import Conflict, Dialect, Row, Unreachable, masked

# Each worker process holds its own pool: statements are short (a key lookup, a ledger
# batch), so a few connections keep up, and N workers x replicas stay far below
# PostgreSQL's max_connections (100 by default).
POOL_SIZE = 4
CONNECT_TIMEOUT_S = 10.0
# The server is away, or going or coming back (asyncpg's pool replaces broken connections).
GONE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08, and a connection lost mid-call
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
)


@lru_cache(maxsize=1024)
def placeholders(sql: str) -> str:
    """`?` -> `$n` outside '...' literals and "..." identifiers (a doubled quote inside
    either is part of it, so the scan stays in step)."""
    out: list[str] = []
    quote = ""
    n = 0
    for ch in sql:
        if quote:
            if ch == quote:
                quote = ""  # a doubled quote closes and at once reopens: same result
        elif ch in "'\"":
            quote = ch
        elif ch == "?":
            n += 1
            out.append(f"${n}")
            continue
        out.append(ch)
    return "".join(out)


def _number(text: str) -> int | float:
    """NUMERIC (what SUM and AVG of BIGINT give) as SQLite gives it: int if whole, else float."""
    return int(text) if text.lstrip("-").isdigit() else float(text)


async def _init(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("numeric", encoder=str, decoder=_number, schema="pg_catalog", format="text")


def _changed(status: str) -> int:
    """Rows changed, from the command tag ("INSERT 0 3", "UPDATE 2", "CREATE TABLE": 0)."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


@contextmanager
def _errors(url_for_logs: str) -> Iterator[None]:
    """The store's exceptions for asyncpg's: `Conflict` for any integrity constraint (class
    23, as SQLite's IntegrityError) or an object created twice at once, `Unreachable` when the server cannot be talked to."""
    try:
        yield
    except (
        asyncpg.IntegrityConstraintViolationError,
        # Two CREATEs racing (IF NOT EXISTS is no guard in PostgreSQL): the same kind of
        # conflict, for the migrator to resolve by re-reading what was applied.
        asyncpg.exceptions.DuplicateTableError,
        asyncpg.exceptions.DuplicateObjectError,
    ) as exc:
        raise Conflict(str(exc)) from exc
    except GONE as exc:
        raise Unreachable(f"{url_for_logs}: {type(exc).__name__}: {exc}") from exc


class PostgresStore:
    dialect: Dialect = "postgresql"

    def __init__(self, pool: asyncpg.Pool, url: str) -> None:
        self._pool = pool
        self.url_for_logs = masked(url)

    @classmethod
    async def open(cls, url: str) -> PostgresStore:
        # wrong host or port, refused, bad password, no such database: said once, masked
        with _errors(masked(url)):
            try:
                pool = await asyncpg.create_pool(
                    url, min_size=1, max_size=POOL_SIZE, init=_init, timeout=CONNECT_TIMEOUT_S
                )
            except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                raise Unreachable(f"{masked(url)}: {type(exc).__name__}: {exc}") from None
        return cls(pool, url)

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        with _errors(self.url_for_logs):
            return _changed(await self._pool.execute(placeholders(sql), *args))

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with _errors(self.url_for_logs):
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.executemany(placeholders(sql), [tuple(r) for r in rows])

    async def fetchall(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        with _errors(self.url_for_logs):
            return [tuple(r) for r in await self._pool.fetch(placeholders(sql), *args)]

    async def fetchone(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        with _errors(self.url_for_logs):
            row = await self._pool.fetchrow(placeholders(sql), *args)
        return None if row is None else tuple(row)

    async def transaction(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        with _errors(self.url_for_logs):
            async with self._pool.acquire() as conn, conn.transaction():
                return [_changed(await conn.execute(placeholders(sql), *args)) for sql, args in statements]

    async def close(self) -> None:
        await self._pool.close()
