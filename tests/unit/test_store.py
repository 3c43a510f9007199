"""The store's interface on every backend (SQLite, and PostgreSQL on a real server): statements,
transactions that roll back whole, Conflict on constraint violations, migrations applied
once however many stores run them at once, and URLs that never show a password."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import until
from postgres_server import PostgresServer

from aiogw.store import migrations
from aiogw.store.base import Conflict, Unreachable, connect, masked, open_store


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


STEPS = 6  # more steps than the migrator's old fixed retry count: each one can be raced


@pytest.fixture
def counted_component(monkeypatch):
    """A series whose every step leaves a row: a step applied twice would show. The only
    series (the features' own are left out), so each round can drop every table."""
    steps = [("CREATE TABLE test_runs (step BIGINT NOT NULL)", "INSERT INTO test_runs (step) VALUES (1)")]
    steps += [(f"CREATE TABLE test_t{i} (a TEXT)", f"INSERT INTO test_runs (step) VALUES ({i})") for i in range(2, 7)]
    assert len(steps) == STEPS
    monkeypatch.setattr(migrations, "MIGRATIONS", {"test_counted": tuple(steps)})


async def test_two_stores_migrating_at_once_apply_each_step_once(store_url, counted_component):
    for _ in range(3):  # the race has several outcomes; each round starts from an empty store
        stores = await asyncio.gather(connect(store_url), connect(store_url))
        try:
            results = await asyncio.gather(*(migrations.migrate(s) for s in stores))
            mine = [pair for result in results for pair in result if pair[0] == "test_counted"]
            assert sorted(mine) == [("test_counted", v) for v in range(1, STEPS + 1)]  # each by one of them
            assert sorted(await stores[0].fetchall("SELECT step FROM test_runs")) == [(i,) for i in range(1, STEPS + 1)]
            assert await migrations.applied(stores[1]) == {"test_counted": STEPS}
        finally:
            for s in stores:
                for table in ["test_runs", *(f"test_t{i}" for i in range(2, STEPS + 1)), "aiogw_migrations"]:
                    await s.execute(f"DROP TABLE IF EXISTS {table}")
            await asyncio.gather(*(s.close() for s in stores))


async def test_constraint_violations_raise_conflict_and_roll_the_transaction_back_whole(store_url, demo_component):
    store = await open_store(store_url)
    try:
        await store.execute(
            "CREATE TABLE test_child (id TEXT PRIMARY KEY, parent TEXT NOT NULL REFERENCES test_demo (a))"
        )
        assert await store.execute("INSERT INTO test_demo (a, b) VALUES (?, ?)", ("p", 1)) == 1
        with pytest.raises(Conflict):  # unique
            await store.execute("INSERT INTO test_demo (a, b) VALUES (?, ?)", ("p", 2))
        with pytest.raises(Conflict):  # foreign key
            await store.execute("INSERT INTO test_child (id, parent) VALUES (?, ?)", ("c", "nobody"))
        with pytest.raises(Conflict):  # within executemany: none of its rows stay
            await store.executemany("INSERT INTO test_demo (a, b) VALUES (?, ?)", [("q", 1), ("p", 3)])
        with pytest.raises(Conflict):  # the last statement fails: the earlier ones are undone
            await store.transaction(
                [
                    ("INSERT INTO test_demo (a, b) VALUES (?, ?)", ("r", 1)),
                    ("UPDATE test_demo SET b = b + ? WHERE a = ?", (10, "p")),
                    ("INSERT INTO test_child (id, parent) VALUES (?, ?)", ("c", "missing")),
                ]
            )
        assert await store.fetchall("SELECT a, b FROM test_demo ORDER BY a") == [("p", 1)]
        assert await store.fetchall("SELECT id FROM test_child") == []
        # the counts a transaction reports, and what a whole one leaves
        counts = await store.transaction(
            [
                ("INSERT INTO test_demo (a, b) VALUES (?, ?)", ("r", 1)),
                ("UPDATE test_demo SET b = b + ? WHERE a IN (?, ?)", (10, "p", "r")),
                ("DELETE FROM test_demo WHERE a = ?", ("nobody",)),
            ]
        )
        assert counts == [1, 2, 0]
        assert await store.fetchall("SELECT a, b FROM test_demo ORDER BY a") == [("p", 11), ("r", 11)]
    finally:
        await store.close()


async def test_placeholders_and_values_read_back_alike_on_every_backend(store_url, demo_component):
    """`?` inside a quoted literal is text, not a parameter; whole SUMs come back as int and
    averages as float (PostgreSQL's NUMERIC included), times as float."""
    store = await open_store(store_url)
    try:
        await store.executemany("INSERT INTO test_demo (a, b) VALUES (?, ?)", [("what?", 1), ("it's", 2)])
        assert await store.fetchone("SELECT a FROM test_demo WHERE a = 'what?' AND b = ?", (1,)) == ("what?",)
        assert await store.fetchone("SELECT a FROM test_demo WHERE a = 'it''s?' OR b = ?", (2,)) == ("it's",)
        total, mean = await store.fetchone("SELECT SUM(b), AVG(b) FROM test_demo")
        assert (total, type(total), mean, type(mean)) == (3, int, 1.5, float)
        assert await store.fetchone("SELECT a FROM test_demo WHERE a = ?", ("none",)) is None
    finally:
        await store.close()


async def test_a_large_batch_of_inserts_lands_whole_with_its_conflicts_skipped(store_url, demo_component):
    # 137 rows: SQLite writes them 64, 64, 8 and 1 to a statement; every row must land once.
    store = await open_store(store_url)
    try:
        sql = "INSERT INTO test_demo (a, b) VALUES (?, ?) ON CONFLICT (a) DO NOTHING"
        await store.executemany(sql, [("r0", -1)])
        await store.executemany(sql, [(f"r{i}", i) for i in range(137)])
        rows = dict(await store.fetchall("SELECT a, b FROM test_demo"))
        assert len(rows) == 137
        assert rows["r0"] == -1 and rows["r136"] == 136  # the first write of r0 kept
        assert sum(rows.values()) == sum(range(1, 137)) - 1
    finally:
        await store.close()


def test_the_url_in_logs_never_carries_the_password():
    assert masked("postgresql://aiogw:s3cr%40t@db:5432/aiogw?sslmode=require") == (
        "postgresql://aiogw:***@db:5432/aiogw?sslmode=require"
    )
    assert masked("postgresql://db/aiogw?user=aiogw&password=s3cret&sslmode=verify-full") == (
        "postgresql://db/aiogw?user=aiogw&password=***&sslmode=verify-full"
    )
    assert masked("postgresql://aiogw@db/aiogw") == "postgresql://aiogw@db/aiogw"
    assert masked("sqlite:////var/lib/aiogw/aiogw.db") == "sqlite:////var/lib/aiogw/aiogw.db"


async def test_a_store_reports_its_url_masked_and_an_unreachable_one_says_where(store_url):
    store = await open_store(store_url)
    try:
        assert store.url_for_logs == masked(store_url)
        if store.dialect == "postgresql":
            password = urlsplit(store_url).password
            assert password and password not in store.url_for_logs and ":***@" in store.url_for_logs
    finally:
        await store.close()
    parts = urlsplit(store_url)
    if parts.scheme == "sqlite":
        blocker = parts.path.lstrip("/")
        Path(f"/{blocker}").with_suffix(".d").write_text("a file where the folder should be")
        wrong = f"sqlite:////{blocker}".replace("aiogw.db", "aiogw.d/aiogw.db")
    else:
        wrong = store_url.replace(f":{parts.password}@", ":wrong-password@")
    with pytest.raises(Unreachable) as caught:
        await connect(wrong)
    assert masked(wrong) in str(caught.value) and "wrong-password" not in str(caught.value)


async def test_a_postgresql_store_says_when_its_server_is_away_and_carries_on_once_it_is_back():
    """A server restart needs no gateway restart: calls while it is down raise `Unreachable`
    (never a driver error callers cannot know), and the pool reconnects afterwards."""
    server = PostgresServer()  # its own cluster: the session's is shared by every other test
    try:
        await asyncio.to_thread(server.start)
        store = await open_store(server.url())
        try:
            await store.execute("CREATE TABLE test_kept (a TEXT PRIMARY KEY)")
            await store.execute("INSERT INTO test_kept (a) VALUES (?)", ("before",))
            await asyncio.to_thread(server.halt)
            for call in (
                store.fetchone("SELECT a FROM test_kept"),
                store.execute("INSERT INTO test_kept (a) VALUES (?)", ("during",)),
                store.transaction([("INSERT INTO test_kept (a) VALUES (?)", ("during",))]),
            ):
                with pytest.raises(Unreachable) as caught:
                    await call
                assert server.password not in str(caught.value) and ":***@" in str(caught.value)
            await asyncio.to_thread(server.launch)

            async def answers() -> bool:
                try:
                    return await store.fetchall("SELECT a FROM test_kept") == [("before",)]
                except Unreachable:
                    return False

            await until(answers)
            assert await store.execute("INSERT INTO test_kept (a) VALUES (?)", ("after",)) == 1
        finally:
            await store.close()
    finally:
        await asyncio.to_thread(server.stop)
