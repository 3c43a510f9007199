"""The schema, as versioned migrations that aiogw applies itself (at start and by
`aiogw store migrate`). Each component owns its own numbered series, so that features
evolve their tables independently; a series only ever grows (never edit a shipped step).
SQL is portable between SQLite and PostgreSQL: TEXT, BIGINT, DOUBLE PRECISION, ids made in
Python, times as Unix seconds (DOUBLE PRECISION)."""

from __future__ import annotations

import time

from aiogw.store.base import Conflict, Store

# component -> its steps, in order; step i (1-based) is version i.
MIGRATIONS: dict[str, tuple[tuple[str, ...], ...]] = {}


async def applied(store: Store) -> dict[str, int]:
    rows = await store.fetchall("SELECT component, MAX(version) FROM aiogw_migrations GROUP BY component")
    return {component: int(version) for component, version in rows}


async def migrate(store: Store) -> list[tuple[str, int]]:
    """Apply every step not yet applied; the (component, version) pairs applied now.

    Two processes migrating at once: each step and its bookkeeping row are one transaction,
    and the primary key on (component, version) makes the loser's transaction fail whole;
    it then re-reads and finds the step done."""
    try:
        await store.execute(
            "CREATE TABLE IF NOT EXISTS aiogw_migrations ("
            " component TEXT NOT NULL, version BIGINT NOT NULL, applied_at DOUBLE PRECISION NOT NULL,"
            " PRIMARY KEY (component, version))"
        )
    except Conflict:
        # PostgreSQL's IF NOT EXISTS is no guard against a CREATE running at the same time:
        # the second one fails on the catalog's unique index. The table exists either way.
        pass
    done: list[tuple[str, int]] = []
    # Each lost race means another migrator applied at least one step, so a migrator loses
    # at most once per step (in lockstep with a faster one, it can lose every one).
    for _ in range(sum(map(len, MIGRATIONS.values())) + 1):
        have = await applied(store)
        try:
            for component, steps in MIGRATIONS.items():
                for version, step in enumerate(steps, start=1):
                    if version <= have.get(component, 0):
                        continue
                    await store.transaction(
                        [
                            *((sql, ()) for sql in step),
                            (
                                "INSERT INTO aiogw_migrations (component, version, applied_at) VALUES (?, ?, ?)",
                                (component, version, time.time()),
                            ),
                        ]
                    )
                    done.append((component, version))
            return done
        except Exception:
            if await applied(store) == have:
                raise  # not a race: the step itself is wrong
    raise RuntimeError("the store's schema kept changing under aiogw's migration; is another version migrating?")
