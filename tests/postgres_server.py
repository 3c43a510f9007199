"""A throwaway PostgreSQL cluster for the tests: initdb into a temporary folder, `postgres`
on a free loopback port, stopped and removed at the end. Debian's `postgresql` package
(tests/system-deps.sh) puts the programs in /usr/lib/postgresql/<N>/bin, off PATH.

PostgreSQL refuses to run as root, and the tests run as root in CI: then the cluster runs as
the `postgres` user (made by Debian's package) or `nobody`, owning its folder."""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

USER = "aiogw"  # the cluster's superuser, who makes each test's database


def _bin_dir() -> Path:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    assert versions, "PostgreSQL is missing (initdb): run tests/system-deps.sh"
    return versions[-1].parent


def _memory_folder(need: int = 1 << 30) -> str | None:
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return None
    return "/dev/shm" if st.f_bavail * st.f_frsize >= need and os.access("/dev/shm", os.W_OK | os.X_OK) else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.password = secrets.token_hex(8)
        self.finished: list[str] = []  # databases of tests that have ended, dropped by the next one
        self.port = _free_port()
        # In memory where there is a roomy tmpfs (a container's default 64 MiB is not: a
        # cluster takes 40): each test's CREATE DATABASE copies a template. A short path too:
        # a socket's path has a length limit.
        self.folder = Path(tempfile.mkdtemp(prefix="aiogw-pg-", dir=_memory_folder()))
        self.data = self.folder / "data"
        self.log = self.folder / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._as: dict = {}
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                owner = pwd.getpwnam("nobody")
            self._as = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        pwfile = self.folder / "pw"
        pwfile.write_text(self.password + "\n")
        if self._as:
            os.chown(pwfile, self._as["user"], self._as["group"])
        # No fsync anywhere: the cluster lives as long as the test session.
        subprocess.run(
            [self.bin / "initdb", "-D", self.data, "-U", USER, f"--pwfile={pwfile}", "--auth-local=trust",
             "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"],
            check=True, capture_output=True, timeout=120, **self._as,
        )  # fmt: skip
        self.launch()

    def launch(self) -> None:
        """Run the server on the initialised cluster (again, after `halt`) until it is ready."""
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.bin / "postgres", "-D", self.data, "-k", self.folder, "-p", str(self.port), "-h", "127.0.0.1",
                 "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                 "-c", "max_connections=300"],
                stdout=log, stderr=subprocess.STDOUT, **self._as,
            )  # fmt: skip
        self._wait_ready()

    def _wait_ready(self) -> None:
        """Until postmaster.pid's status line says `ready` (PostgreSQL writes it once it
        accepts connections), or the server exits."""
        pidfile = self.data / "postmaster.pid"
        assert self.proc is not None
        for _ in range(1500):
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {self.log.read_text()[-2000:]}")
            try:
                lines = pidfile.read_text().splitlines()
            except FileNotFoundError:
                lines = []
            if len(lines) >= 8 and re.match(r"ready\b", lines[7].strip()):
                return
            time.sleep(0.02)
        raise RuntimeError(f"postgres did not get ready: {self.log.read_text()[-2000:]}")

    def halt(self) -> None:
        """Stop the server, keeping the cluster (`launch` runs it again)."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)  # "fast" shutdown: clients are cut off
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        self.halt()
        shutil.rmtree(self.folder, ignore_errors=True)
