"""The embedded backend: one SQLite file in WAL mode, reached through one connection owned
by one thread (sqlite3 objects must stay on the thread that made them), so statements run
in order, off the event loop. Several worker processes may share the file: WAL lets
readers run beside the one writer, and `busy_timeout` makes a writer wait its turn."""

from __future__ import annotations

import asyncio
import functools
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import unquote, urlsplit

from aiogw.store.base import Conflict, Dialect, Row, Unreachable

T = TypeVar("T")
# SQLite's words for a file it cannot use now (another writer past the busy timeout, a
# full or failing disk, a file gone), as opposed to a statement's own fault.
_AWAY = ("locked", "disk I/O", "unable to open", "database or disk is full", "readonly")
# sqlite3 binds None through its adaptation protocol (an attribute lookup that builds and
# drops an AttributeError) unless an adapter is registered for it: 26k of the ledger
# writer's 97k instructions per request went there (callgrind). `{}.get` is a C callable
# that answers None: bound as NULL.
sqlite3.register_adapter(type(None), cast("Callable[[None], None]", {}.get))
WAL_SWITCH_TRIES = 250  # x 20 ms: as long as a busy writer is waited for
BUSY_TIMEOUT_MS = 10_000  # another worker's write transaction is milliseconds; this is a stuck one


def path_of(url: str) -> str:
    """`sqlite:///relative.db`, `sqlite:////abs/path.db` or `sqlite:///:memory:`."""
    parts = urlsplit(url)
    path = unquote(parts.path)
    if path.startswith("//"):
        return path[1:]  # four slashes: an absolute path
    return path.removeprefix("/")


def _wal(conn: sqlite3.Connection) -> None:
    """WAL mode, once per file. Switching needs the file to itself and SQLite answers a
    concurrent switch with "locked" at once (no busy wait): two processes opening a new
    file together retry for a while, off the event loop."""
    for attempt in range(WAL_SWITCH_TRIES):
        try:
            if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == WAL_SWITCH_TRIES - 1:
                raise
            time.sleep(0.02)


MULTI_ROW_SIZES = (64, 8, 1)  # rows per INSERT statement, largest first (few distinct statements)
_VALUES = re.compile(r"^(INSERT INTO .+? VALUES )(\([?, ]+\))(.*)$", re.DOTALL)


@functools.lru_cache(maxsize=32)
def _multi_row(sql: str) -> tuple[tuple[int, str], ...] | None:
    """A one-row `INSERT ... VALUES (?, ...) [tail]` as statements of k rows each, or None
    for any other statement (run once per row)."""
    m = _VALUES.match(sql)
    if m is None:
        return None
    head, one, tail = m.groups()
    per_row = one.count("?")
    return tuple(
        (k, head + ", ".join([one] * k) + tail)
        for k in MULTI_ROW_SIZES
        if k * per_row <= 32_766  # SQLite's most variables per statement
    )


class SQLiteStore:
    dialect: Dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection, executor: ThreadPoolExecutor, url: str) -> None:
        self._conn = conn
        self._executor = executor
        self.url_for_logs = url

    @classmethod
    async def open(cls, url: str) -> SQLiteStore:
        path = path_of(url)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aiogw-sqlite")

        def connect() -> sqlite3.Connection:
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            # Autocommit (isolation_level=None): transactions are explicit BEGIN/COMMIT below.
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            _wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across a process crash
            conn.execute("PRAGMA foreign_keys = ON")
            return conn

        try:
            conn = await asyncio.get_running_loop().run_in_executor(executor, connect)
        except (OSError, sqlite3.Error) as exc:  # a folder it cannot create, a file it cannot open
            executor.shutdown(wait=False)
            raise Unreachable(f"{url}: {exc}") from None
        return cls(conn, executor, url)

    async def _run(self, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        except sqlite3.IntegrityError as exc:
            raise Conflict(str(exc)) from exc
        except sqlite3.OperationalError as exc:
            if any(m in str(exc) for m in _AWAY):
                raise Unreachable(f"{self.url_for_logs}: {exc}") from exc
            raise  # a statement's own fault (no such table, a syntax error): a bug, said as it is

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        return await self._run(lambda: self._conn.execute(sql, tuple(args)).rowcount)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        batch = rows if isinstance(rows, list) else list(rows)
        chunks = _multi_row(sql)

        def run() -> None:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                if chunks is None:
                    conn.executemany(sql, batch)
                else:
                    # Many rows per statement: sqlite3 lets go of the GIL around every step,
                    # and a step per row made this thread and the event loop trade it
                    # hundreds of times per batch.
                    i, n = 0, len(batch)
                    for k, many in chunks:
                        while n - i >= k:
                            conn.execute(many, list(chain.from_iterable(batch[i : i + k])))
                            i += k
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

        await self._run(run)

    async def fetchall(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return await self._run(lambda: self._conn.execute(sql, tuple(args)).fetchall())

    async def fetchone(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        row: Row | None = await self._run(lambda: self._conn.execute(sql, tuple(args)).fetchone())
        return row

    async def transaction(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        def run() -> list[int]:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")  # take the write lock now: no upgrade deadlock between workers
            try:
                counts = [conn.execute(sql, tuple(args)).rowcount for sql, args in statements]
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return counts

        return await self._run(run)

    async def close(self) -> None:
        await self._run(self._conn.close)
        self._executor.shutdown(wait=False)  # its queue is empty: the close above ran last
