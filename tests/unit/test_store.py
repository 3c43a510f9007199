"""The store's interface on every backend: statements, transactions that roll back whole,
and migrations applied once however many times the store is opened."""

from __future__ import annotations

import pytest

from aiogw.store import migrations
from aiogw.store.base import Conflict, open_store


@pytest.fixture
def demo_component(monkeypatch):
    monkeypatch.setitem(
        migrations.MIGRATIONS, "test_demo", (("CREATE TABLE test_demo (a TEXT PRIMARY KEY, b BIGINT NOT NULL)",),)
    )


async def test_statements_transactions_and_migrations(store_url, demo_component):
    store = await open_store(store_url)
    try:
        await store.executemany(
            "INSERT INTO test_demo (a, b) VALUES (?, ?) ON CONFLICT (a) DO UPDATE SET b = excluded.b",
            [("x", 1), ("y", 2), ("x", 3)],
        )
        assert sorted(await store.fetchall("SELECT a, b FROM test_demo")) == [("x", 3), ("y", 2)]
        with pytest.raises(Conflict):
            await store.transaction(
                [
                    ("UPDATE test_demo SET b = 9 WHERE a = ?", ("x",)),
                    ("INSERT INTO test_demo (a, b) VALUES (?, ?)", ("y", 1)),
                ]
            )
        assert await store.fetchone("SELECT b FROM test_demo WHERE a = ?", ("x",)) == (3,)
    finally:
        await store.close()
    again = await open_store(store_url)
    try:
        assert await migrations.migrate(again) == []
        assert ("test_demo", 1) in {
            (c, v) for c, v in await again.fetchall("SELECT component, version FROM aiogw_migrations")
        }
    finally:
        await again.close()
