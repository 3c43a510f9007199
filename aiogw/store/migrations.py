"""The schema, as versioned migrations that aiogw applies itself (at start and by
`aiogw store migrate`). Each component owns its own numbered series, so that features
evolve their tables independently; a series only ever grows (never edit a shipped step).
SQL is portable between SQLite and PostgreSQL: TEXT, BIGINT, DOUBLE PRECISION, ids made in
Python, times as Unix seconds (DOUBLE PRECISION)."""

from __future__ import annotations

import time

from aiogw.store.base import Conflict, Store

# component -> its steps, in order; step i (1-based) is version i.
MIGRATIONS: dict[str, tuple[tuple[str, ...], ...]] = {
    # The spend ledger (aiogw.accounting.ledger_store): one row per request, and per attempt when several.
    "ledger": (
        (
            "CREATE TABLE aiogw_ledger ("
            " id TEXT PRIMARY KEY, at DOUBLE PRECISION NOT NULL, kind TEXT NOT NULL, request_id TEXT NOT NULL,"
            " key_id TEXT, key_name TEXT, team TEXT, user_name TEXT, tags TEXT NOT NULL, task TEXT NOT NULL,"
            " model TEXT NOT NULL, provider TEXT NOT NULL, upstream_model TEXT NOT NULL,"
            " input_tokens BIGINT NOT NULL, cached_tokens BIGINT NOT NULL, cache_write_tokens BIGINT NOT NULL,"
            " output_tokens BIGINT NOT NULL, reasoning_tokens BIGINT NOT NULL,"
            " cost_usd DOUBLE PRECISION NOT NULL, saved_usd DOUBLE PRECISION NOT NULL, cache_status TEXT NOT NULL,"
            " price_version TEXT NOT NULL, status TEXT NOT NULL, http_status BIGINT NOT NULL,"
            " latency_ms DOUBLE PRECISION NOT NULL)",
            "CREATE INDEX aiogw_ledger_kind_at ON aiogw_ledger (kind, at)",
        ),
    ),
    # Budgets made through /admin/v1/budgets (config budgets live in the config only).
    "budgets": (
        (
            "CREATE TABLE aiogw_budgets ("
            " id TEXT PRIMARY KEY, scope TEXT NOT NULL, match_value TEXT, limit_usd DOUBLE PRECISION NOT NULL,"
            " period TEXT NOT NULL, alert_at TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL,"
            " updated_at DOUBLE PRECISION NOT NULL)",
        ),
    ),
}

# Virtual keys (aiogw.admission.keys). The secret is never stored: `secret_hash` is its
# HMAC-SHA256 under the pepper, `prev_hash` the one a rotation replaced, valid until
# `prev_until`. JSON columns hold what the admin API was given. A deleted key keeps its row
# (`deleted_at`) so that spend reports can still name it.
MIGRATIONS["keys"] = (
    (
        "CREATE TABLE aiogw_keys ("
        " id TEXT PRIMARY KEY, name TEXT NOT NULL, team TEXT, user_id TEXT, models TEXT,"
        " rpm BIGINT, tpm BIGINT, budgets TEXT NOT NULL, tags TEXT NOT NULL, metadata TEXT NOT NULL,"
        " expires_at DOUBLE PRECISION, created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL,"
        " revoked_at DOUBLE PRECISION, deleted_at DOUBLE PRECISION,"
        " secret_hash TEXT NOT NULL UNIQUE, prefix TEXT NOT NULL,"
        " prev_hash TEXT UNIQUE, prev_until DOUBLE PRECISION)",
        "CREATE INDEX aiogw_keys_team ON aiogw_keys (team)",
    ),
)

# Feedback (aiogw.quality): the request memory (what answered a request, kept
# `feedback.retention_s`, then purged), the feedback rows with their corrections (kept), and
# the spot checks' verdicts. "grp" is the request's model group ("group" is reserved in SQL).
MIGRATIONS["feedback"] = (
    (
        "CREATE TABLE aiogw_request_memory ("
        " request_id TEXT PRIMARY KEY, caller TEXT NOT NULL, grp TEXT NOT NULL, task TEXT NOT NULL,"
        " bucket TEXT NOT NULL, target TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL)",
        "CREATE INDEX aiogw_request_memory_created ON aiogw_request_memory (created_at)",
        "CREATE TABLE aiogw_feedback ("
        " id TEXT PRIMARY KEY, request_id TEXT NOT NULL, metric TEXT NOT NULL, value DOUBLE PRECISION NOT NULL,"
        " correction TEXT, caller TEXT NOT NULL, grp TEXT NOT NULL, task TEXT NOT NULL, bucket TEXT NOT NULL,"
        " target TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, UNIQUE (request_id, metric))",
        "CREATE TABLE aiogw_spot_checks ("
        " id TEXT PRIMARY KEY, request_id TEXT NOT NULL, grp TEXT NOT NULL, task TEXT NOT NULL, bucket TEXT NOT NULL,"
        " target TEXT NOT NULL, judge TEXT NOT NULL, verdict TEXT NOT NULL, score DOUBLE PRECISION,"
        " reason TEXT NOT NULL, cost_usd DOUBLE PRECISION NOT NULL, at DOUBLE PRECISION NOT NULL)",
        "CREATE INDEX aiogw_spot_checks_request ON aiogw_spot_checks (request_id)",
    ),
)

# Stored Responses (aiogw.ingress.responses.state, `responses.store: true`): the Response
# and its conversation as JSON text, scoped to the caller, gone after `expires_at`.
MIGRATIONS["responses"] = (
    (
        "CREATE TABLE aiogw_responses ("
        " id TEXT PRIMARY KEY, owner TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL,"
        " expires_at DOUBLE PRECISION NOT NULL, response TEXT NOT NULL, history TEXT NOT NULL)",
        "CREATE INDEX aiogw_responses_expires ON aiogw_responses (expires_at)",
    ),
)


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
