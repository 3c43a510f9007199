"""`aiogw store migrate` and `aiogw check-config` as users run them, against a real store of
each backend: what is applied is said once, a second run finds it up to date, a store that
cannot be reached is exit status 2 naming it, and its password is never printed."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

from procs import run_cli

from aiogw.store import migrations

# A series the subprocess's store gains, put in before `aiogw` runs (sitecustomize).
EXTRA_SERIES = (
    "from aiogw.store import migrations\n"
    "migrations.MIGRATIONS['test_cli'] = (('CREATE TABLE test_cli_a (a TEXT)',), ('CREATE TABLE test_cli_b (b TEXT)',))\n"
)


def with_series(tmp_path) -> dict[str, str]:
    folder = tmp_path / "with-series"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(EXTRA_SERIES)
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH")) if p)}


def test_store_migrate_applies_the_missing_steps_once_and_says_which(store_url, tmp_path):
    path = tmp_path / "aiogw.yaml"
    path.write_text(f"store: {{url: '{store_url}'}}\n")
    env = with_series(tmp_path)
    first = run_cli("store", "migrate", "--config", str(path), env=env)
    assert first.returncode == 0, first.stderr
    expected = [(c, v) for c, steps in migrations.MIGRATIONS.items() for v in range(1, len(steps) + 1)]
    expected += [("test_cli", 1), ("test_cli", 2)]
    lines = first.stdout.splitlines()
    assert [tuple(line.split()[1:]) for line in lines[:-1]] == [(c, str(v)) for c, v in expected]
    assert lines[-1].endswith(f"{len(expected)} step(s) applied")
    again = run_cli("store", "migrate", "--config", str(path), env=env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [lines[-1].replace(f"{len(expected)} step(s) applied", "up to date")]
    password = urlsplit(store_url).password
    for out in (first, again):
        assert not password or password not in out.stdout + out.stderr


def test_store_migrate_exits_2_naming_a_store_it_cannot_reach(tmp_path):
    with socket.socket() as bound:  # bound, never listening: connections to it are refused
        bound.bind(("127.0.0.1", 0))
        url = f"postgresql://aiogw:hunter2@127.0.0.1:{bound.getsockname()[1]}/aiogw"
        path = tmp_path / "aiogw.yaml"
        path.write_text(f"store: {{url: '{url}'}}\n")
        out = run_cli("store", "migrate", "--config", str(path))
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.startswith(f"aiogw: cannot reach the store at {url.replace('hunter2', '***')}: "), out.stderr
    assert len(out.stderr.splitlines()) == 1 and "hunter2" not in out.stdout + out.stderr  # no traceback


def test_check_config_names_the_store_with_its_password_masked(tmp_path):
    path = tmp_path / "aiogw.yaml"
    path.write_text("store: {url: 'postgresql://aiogw:hunter2@db:5432/aiogw'}\n")
    out = run_cli("check-config", str(path))
    assert out.returncode == 0, out.stderr
    assert "store: postgresql://aiogw:***@db:5432/aiogw\n" in out.stdout and "hunter2" not in out.stdout
    path.write_text("models: []\n")
    out = run_cli("check-config", str(path), env={**os.environ, "AIOGW_DATA_DIR": "/var/lib/aiogw"})
    assert "store: sqlite:////var/lib/aiogw/aiogw.db (the default; opened when keys or budgets need it)" in out.stdout
    path.write_text("store: {ledger_flush_ms: 100}\n")  # the section without a url: the same default file
    out = run_cli("check-config", str(path), env={**os.environ, "AIOGW_DATA_DIR": "/var/lib/aiogw"})
    assert "store: sqlite:////var/lib/aiogw/aiogw.db\n" in out.stdout, out.stdout + out.stderr


def test_a_store_url_of_another_kind_is_a_config_error(tmp_path):
    path = tmp_path / "aiogw.yaml"
    path.write_text("store: {url: 'mysql://aiogw:hunter2@db/aiogw'}\n")
    for args in (["check-config", str(path)], ["store", "migrate", "--config", str(path)]):
        out = run_cli(*args)
        assert out.returncode == 2
        assert out.stderr.startswith(f"aiogw: invalid config: {path}: store: expected sqlite:///PATH"), out.stderr
        assert "hunter2" not in out.stderr


def test_store_migrate_without_a_config_migrates_the_default_sqlite_file(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "AIOGW_CONFIG"}
    out = run_cli("store", "migrate", env={**env, "AIOGW_DATA_DIR": str(tmp_path / "data")})
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1].startswith(f"store sqlite:///{tmp_path}/data/aiogw.db: ")
    assert (tmp_path / "data" / "aiogw.db").is_file()
