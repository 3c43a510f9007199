"""Running `aiogw serve` as a real process in tests: its URL, its JSON log lines, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys


class Proc:
    def __init__(self, proc: asyncio.subprocess.Process, url: str, stderr_task: asyncio.Task, lines: list[bytes]):
        self.proc, self.url, self._stderr_task, self.stderr_lines = proc, url, stderr_task, lines

    signalled = False

    def signal(self, sig=signal.SIGTERM) -> None:
        self.signalled = True
        self.proc.send_signal(sig)

    async def stop(self, timeout=20.0) -> int:
        """SIGTERM (unless already sent) and the exit status."""
        if self.proc.returncode is None and not self.signalled:
            self.signal()
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await asyncio.wait_for(self._stderr_task, timeout)
        return code

    def logs(self) -> list[dict]:
        out = []
        for line in self.stderr_lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out


async def _serve(*args: str, env: dict | None) -> asyncio.subprocess.Process:
    """`aiogw serve` on loopback with JSON logs, both streams piped."""
    return await asyncio.create_subprocess_exec(
        *(sys.executable, "-P", "-m", "aiogw", "serve", "--host", "127.0.0.1", "--log-format", "json"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )


async def start_aiogw(*args: str, env: dict | None = None, timeout: float = 20.0) -> Proc:
    proc = await _serve("--port", "0", *args, env=env)
    lines: list[bytes] = []

    async def pump():
        async for line in proc.stderr:
            lines.append(line)

    task = asyncio.create_task(pump())
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout)
    except TimeoutError:
        proc.kill()
        raise
    assert line.startswith(b"aiogw listening on "), (line, b"".join(lines))
    url = line.split()[3].decode()
    return Proc(proc, url, task, lines)


async def run_aiogw(*args: str, env: dict | None = None, timeout: float = 30.0) -> tuple[int, str, str]:
    """`aiogw serve ...` expected to exit by itself: (exit status, stdout, stderr)."""
    proc = await _serve(*args, env=env)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.terminate()  # a --workers parent passes it on to its workers
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        raise AssertionError(f"aiogw serve {' '.join(args)} was still running after {timeout} s") from None
    return proc.returncode, out.decode(), err.decode()


def without_packages(tmp_path, *names: str) -> dict[str, str]:
    """Environment variables for a Python process in which `names` cannot be imported, as
    if not installed: a sitecustomize puts None in sys.modules for each, so importing one
    (or anything under it) raises ImportError and importlib's find_spec finds nothing."""
    folder = tmp_path / "without-packages"
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text("import sys\n" + "".join(f"sys.modules[{n!r}] = None\n" for n in names))
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH")) if p)}


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m aiogw ARGS` run to its end with exactly `env` (None: this process's), its
    output as text."""
    return subprocess.run(
        [sys.executable, "-P", "-m", "aiogw", *args], capture_output=True, text=True, env=env, check=False, timeout=60
    )


async def run_command(*args: str, env: dict | None = None, timeout: float = 60.0) -> tuple[int, str, str]:
    """`python -m aiogw ARGS` (any command) run to its end without blocking the event loop
    (the test's own servers keep serving it): (exit status, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-P", "-m", "aiogw", *args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"aiogw {' '.join(args)} was still running after {timeout} s") from None
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
